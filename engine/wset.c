/*
 * The write set of an entry being applied (contract in wset.h).
 *
 * Items live in an array in first-write order; an open-addressing table of
 * item indexes (linear probing, load at most 1/2) finds them by key. A
 * value is appended to the arena at every write, so a key written k times
 * in an entry uses k copies of arena space until the reset: bounded by the
 * bytes the entry wrote.
 */
#include "wset.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "geoscale/errors.h"

/* Between entries the set keeps at most this much: a larger table or arena
 * (left by an unusually large entry) is freed at the reset. */
#define WSET_KEEP_SLOTS ((size_t)1 << 14)
#define WSET_KEEP_ITEMS ((size_t)1 << 13)
#define WSET_KEEP_ARENA ((size_t)4 << 20)
#define WSET_MIN_SLOTS 64

/* Where an item's value is. A set whose values were all empty has no arena:
 * an empty value still needs a pointer, since NULL means a tombstone. */
static const uint8_t *item_value(const struct wset *w, const struct wset_item *it)
{
    static const uint8_t empty[1];
    if (it->deleted) {
        return NULL;
    }
    return w->arena != NULL ? w->arena + it->voff : empty;
}

void wset_init(struct wset *w)
{
    memset(w, 0, sizeof *w);
}

void wset_free(struct wset *w)
{
    free(w->items);
    free(w->slots);
    free(w->arena);
    free(w->order);
    wset_init(w);
}

void wset_reset(struct wset *w)
{
    if (w->n_slots > WSET_KEEP_SLOTS) {
        free(w->slots);
        w->slots = NULL;
        w->n_slots = 0;
    } else if (w->n_items > 0) {
        memset(w->slots, 0, w->n_slots * sizeof *w->slots);
    }
    if (w->cap_items > WSET_KEEP_ITEMS) {
        free(w->items);
        w->items = NULL;
        w->cap_items = 0;
    }
    if (w->cap_order > WSET_KEEP_ITEMS) {
        free(w->order);
        w->order = NULL;
        w->cap_order = 0;
    }
    if (w->arena_cap > WSET_KEEP_ARENA) {
        free(w->arena);
        w->arena = NULL;
        w->arena_cap = 0;
    }
    w->n_items = 0;
    w->arena_len = 0;
}

/* The slot holding key, or the empty slot where it would go. */
static size_t wset_probe(const struct wset *w, uint64_t h, const uint8_t *key, size_t klen)
{
    size_t mask = w->n_slots - 1;
    for (size_t s = (size_t)h & mask;; s = (s + 1) & mask) {
        uint32_t v = w->slots[s];
        if (v == 0) {
            return s;
        }
        const struct wset_item *it = &w->items[v - 1];
        if (it->hash == h && it->klen == klen && memcmp(it->key, key, klen) == 0) {
            return s;
        }
    }
}

/* Make room for one more item: a table at most half full afterwards. */
static int wset_grow(struct wset *w)
{
    if (w->n_items == w->cap_items) {
        size_t cap = w->cap_items > 0 ? w->cap_items * 2 : 32;
        struct wset_item *items = realloc(w->items, cap * sizeof *items);
        if (items == NULL) {
            return GS_ENOMEM;
        }
        w->items = items;
        w->cap_items = cap;
    }
    if ((w->n_items + 1) * 2 <= w->n_slots) {
        return 0;
    }
    size_t n = w->n_slots > 0 ? w->n_slots * 2 : WSET_MIN_SLOTS;
    uint32_t *slots = calloc(n, sizeof *slots);
    if (slots == NULL) {
        return GS_ENOMEM;
    }
    free(w->slots);
    w->slots = slots;
    w->n_slots = n;
    for (size_t i = 0; i < w->n_items; i++) {
        const struct wset_item *it = &w->items[i];
        size_t s = wset_probe(w, it->hash, it->key, it->klen);
        w->slots[s] = (uint32_t)(i + 1);
    }
    return 0;
}

static int wset_arena_append(struct wset *w, const void *val, size_t vlen, size_t *off)
{
    if (vlen > w->arena_cap - w->arena_len) {
        size_t cap = w->arena_cap > 0 ? w->arena_cap : 4096;
        while (cap - w->arena_len < vlen) {
            cap *= 2;
        }
        uint8_t *a = realloc(w->arena, cap);
        if (a == NULL) {
            return GS_ENOMEM;
        }
        w->arena = a;
        w->arena_cap = cap;
    }
    if (vlen > 0) {
        memcpy(w->arena + w->arena_len, val, vlen);
    }
    *off = w->arena_len;
    w->arena_len += vlen;
    return 0;
}

static int wset_set(struct wset *w, const uint8_t *key, size_t klen, bool deleted,
                    const void *val, size_t vlen)
{
    assert(klen <= KEY_MAX);
    assert(vlen <= UINT32_MAX);
    uint64_t h = key_hash64(key, klen);
    size_t off = 0;
    int rv = wset_grow(w);
    if (rv != 0) {
        return rv;
    }
    if (!deleted) {
        rv = wset_arena_append(w, val, vlen, &off);
        if (rv != 0) {
            return rv;
        }
    }
    size_t s = wset_probe(w, h, key, klen);
    struct wset_item *it;
    if (w->slots[s] != 0) {
        it = &w->items[w->slots[s] - 1];
    } else {
        it = &w->items[w->n_items];
        it->hash = h;
        it->klen = (uint8_t)klen;
        memcpy(it->key, key, klen);
        w->n_items++;
        w->slots[s] = (uint32_t)w->n_items;
    }
    it->deleted = deleted;
    it->voff = off;
    it->vlen = deleted ? 0 : (uint32_t)vlen;
    return 0;
}

int wset_put(struct wset *w, const uint8_t *key, size_t klen, const void *val, size_t vlen)
{
    return wset_set(w, key, klen, false, val, vlen);
}

int wset_delete(struct wset *w, const uint8_t *key, size_t klen)
{
    return wset_set(w, key, klen, true, NULL, 0);
}

enum wset_lookup wset_get(const struct wset *w, const uint8_t *key, size_t klen,
                          const uint8_t **val, size_t *vlen)
{
    if (w->n_items == 0 || klen > KEY_MAX) {
        return WSET_ABSENT;
    }
    size_t s = wset_probe(w, key_hash64(key, klen), key, klen);
    if (w->slots[s] == 0) {
        return WSET_ABSENT;
    }
    const struct wset_item *it = &w->items[w->slots[s] - 1];
    if (it->deleted) {
        return WSET_DELETED;
    }
    *val = item_value(w, it);
    *vlen = it->vlen;
    return WSET_VALUE;
}

void wset_for_each(const struct wset *w,
                   void (*fn)(void *arg, const uint8_t *key, size_t klen, const uint8_t *val,
                              size_t vlen),
                   void *arg)
{
    for (size_t i = 0; i < w->n_items; i++) {
        const struct wset_item *it = &w->items[i];
        fn(arg, it->key, it->klen, item_value(w, it), it->vlen);
    }
}

static int item_cmp(const void *a, const void *b)
{
    const struct wset_item *x = *(const struct wset_item *const *)a;
    const struct wset_item *y = *(const struct wset_item *const *)b;
    size_t n = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(x->key, y->key, n);
    if (c != 0) {
        return c;
    }
    return (int)x->klen - (int)y->klen;
}

int wset_for_each_sorted(struct wset *w,
                         void (*fn)(void *arg, const uint8_t *key, size_t klen, const uint8_t *val,
                                    size_t vlen),
                         void *arg)
{
    if (w->n_items == 0) {
        return 0;
    }
    if (w->n_items > w->cap_order) {
        const struct wset_item **order = realloc(w->order, w->cap_items * sizeof *order);
        if (order == NULL) {
            return GS_ENOMEM;
        }
        w->order = order;
        w->cap_order = w->cap_items;
    }
    for (size_t i = 0; i < w->n_items; i++) {
        w->order[i] = &w->items[i];
    }
    qsort(w->order, w->n_items, sizeof *w->order, item_cmp);
    for (size_t i = 0; i < w->n_items; i++) {
        const struct wset_item *it = w->order[i];
        fn(arg, it->key, it->klen, item_value(w, it), it->vlen);
    }
    return 0;
}
