/*
 * A bounded cache of committed rows (contract in rcache.h).
 *
 * Open addressing with linear probing over a table twice the row limit;
 * removal shifts the following run back (no tombstones). Values live in one
 * arena: a new value that fits the space of the one it replaces is written
 * in place (a profile rewritten with a field changed usually does), else it
 * is appended. A full table or arena empties the whole cache: a memset and
 * an arena reset, no per-row work.
 */
#include "rcache.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#define RCACHE_SLOTS (2 * RCACHE_MAX_ROWS)

void rcache_init(struct rcache *c)
{
    memset(c, 0, sizeof *c);
}

void rcache_free(struct rcache *c)
{
    free(c->slots);
    free(c->arena);
    rcache_init(c);
}

void rcache_clear(struct rcache *c)
{
    if (c->slots != NULL && c->n_rows > 0) {
        memset(c->slots, 0, RCACHE_SLOTS * sizeof *c->slots);
    }
    c->n_rows = 0;
    c->arena_len = 0;
    memset(c->prefixes, 0, sizeof c->prefixes);
    c->clears++;
}

static bool prefix_cached(const struct rcache *c, const uint8_t *key)
{
    return (c->prefixes[key[0] >> 6] >> (key[0] & 63)) & 1;
}

/* The slot of key, or the empty slot ending its probe run. */
static size_t rcache_probe(const struct rcache *c, uint64_t h, const uint8_t *key, size_t klen)
{
    const size_t mask = RCACHE_SLOTS - 1;
    for (size_t s = (size_t)h & mask;; s = (s + 1) & mask) {
        const struct rcache_slot *sl = &c->slots[s];
        if (sl->klen == 0) {
            return s;
        }
        if (sl->hash == h && sl->klen == klen && memcmp(sl->key, key, klen) == 0) {
            return s;
        }
    }
}

enum rcache_found rcache_get(struct rcache *c, const uint8_t *key, size_t klen,
                             const uint8_t **val, size_t *vlen)
{
    if (c->n_rows == 0 || klen == 0 || klen > KEY_MAX || !prefix_cached(c, key)) {
        c->misses++;
        return RCACHE_MISS;
    }
    const struct rcache_slot *sl = &c->slots[rcache_probe(c, key_hash64(key, klen), key, klen)];
    if (sl->klen == 0) {
        c->misses++;
        return RCACHE_MISS;
    }
    c->hits++;
    if (sl->absent) {
        return RCACHE_ABSENT;
    }
    *val = c->arena + sl->voff;
    *vlen = sl->vlen;
    return RCACHE_ROW;
}

/* Remove the row in slot s and shift the rest of its run back, so that
 * every row stays reachable from its home slot. */
static void rcache_remove_at(struct rcache *c, size_t s)
{
    const size_t mask = RCACHE_SLOTS - 1;
    size_t hole = s;
    for (size_t i = (s + 1) & mask; c->slots[i].klen != 0; i = (i + 1) & mask) {
        size_t home = (size_t)c->slots[i].hash & mask;
        /* The row at i may move to the hole if its home is not in the
         * cyclic range (hole, i]. */
        bool in_range = hole <= i ? (home > hole && home <= i) : (home > hole || home <= i);
        if (!in_range) {
            c->slots[hole] = c->slots[i];
            hole = i;
        }
    }
    memset(&c->slots[hole], 0, sizeof c->slots[hole]);
    c->n_rows--;
}

/* Write val into slot sl: in place if it fits, else appended to the arena.
 * false if the arena is full. */
static bool rcache_store(struct rcache *c, struct rcache_slot *sl, bool fresh, const void *val,
                         size_t vlen)
{
    if (!fresh && vlen <= sl->vcap) {
        if (vlen > 0) {
            memcpy(c->arena + sl->voff, val, vlen);
        }
        sl->vlen = (uint32_t)vlen;
        return true;
    }
    if (vlen > RCACHE_ARENA_BYTES - c->arena_len) {
        return false;
    }
    if (vlen > 0) {
        memcpy(c->arena + c->arena_len, val, vlen);
    }
    sl->voff = (uint32_t)c->arena_len;
    sl->vlen = sl->vcap = (uint32_t)vlen;
    c->arena_len += vlen;
    return true;
}

/* rcache_put() and rcache_put_absent(): val NULL caches an absence. */
static void rcache_insert(struct rcache *c, const uint8_t *key, size_t klen, const void *val,
                          size_t vlen)
{
    if (klen == 0 || klen > KEY_MAX) {
        return;
    }
    if (vlen > RCACHE_MAX_VALUE) {
        rcache_update(c, key, klen, NULL, 0); /* no stale row of this key */
        return;
    }
    if (c->slots == NULL) {
        c->slots = calloc(RCACHE_SLOTS, sizeof *c->slots);
        c->arena = malloc(RCACHE_ARENA_BYTES);
        if (c->slots == NULL || c->arena == NULL) {
            free(c->slots);
            free(c->arena);
            c->slots = NULL;
            c->arena = NULL;
            return; /* no cache, every read goes to the DB */
        }
    }
    uint64_t h = key_hash64(key, klen);
    size_t s = rcache_probe(c, h, key, klen);
    bool fresh = c->slots[s].klen == 0;
    if (fresh && c->n_rows >= RCACHE_MAX_ROWS) {
        rcache_clear(c);
        s = rcache_probe(c, h, key, klen);
    }
    struct rcache_slot *sl = &c->slots[s];
    if (!rcache_store(c, sl, fresh, val, vlen)) {
        rcache_clear(c);
        s = rcache_probe(c, h, key, klen);
        sl = &c->slots[s];
        fresh = true;
        bool ok = rcache_store(c, sl, fresh, val, vlen);
        assert(ok); /* vlen <= RCACHE_MAX_VALUE < RCACHE_ARENA_BYTES */
        (void)ok;
    }
    sl->absent = val == NULL;
    if (fresh) {
        c->prefixes[key[0] >> 6] |= UINT64_C(1) << (key[0] & 63);
        sl->hash = h;
        sl->klen = (uint8_t)klen;
        memcpy(sl->key, key, klen);
        c->n_rows++;
    }
}

void rcache_put(struct rcache *c, const uint8_t *key, size_t klen, const void *val, size_t vlen)
{
    static const uint8_t empty[1];
    rcache_insert(c, key, klen, val != NULL ? val : empty, vlen);
}

void rcache_put_absent(struct rcache *c, const uint8_t *key, size_t klen)
{
    rcache_insert(c, key, klen, NULL, 0);
}

void rcache_update(struct rcache *c, const uint8_t *key, size_t klen, const void *val,
                   size_t vlen)
{
    if (c->n_rows == 0 || klen == 0 || klen > KEY_MAX || !prefix_cached(c, key)) {
        return;
    }
    size_t s = rcache_probe(c, key_hash64(key, klen), key, klen);
    if (c->slots[s].klen == 0) {
        return;
    }
    if (val == NULL || vlen > RCACHE_MAX_VALUE || c->slots[s].absent) {
        rcache_remove_at(c, s);
        return;
    }
    rcache_put(c, key, klen, val, vlen);
}
