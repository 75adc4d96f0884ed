/*
 * Route cache: see route_cache.h for the contract.
 *
 * Layout. Two cds_lfht tables, one per key kind (users by user_id, cells by
 * cell_id), both on the urcu-memb flavour. Each entry starts with a common
 * header (struct route_entry): the table node, the rcu_head for deferred
 * free, its kind, its directory version, its slot in the CLOCK ring and its
 * referenced bit. Users and cells are allocated at their own sizes (a user
 * entry is ~80 bytes, a cell entry ~600), since users outnumber cells by
 * orders of magnitude.
 *
 * Publication. An entry is fully written before cds_lfht_add_replace()
 * publishes it (the call is a full barrier) and is never written again,
 * except for its referenced bit (an atomic) and its ring slot (written and
 * read by writers only, under write_lock). Replaced and evicted entries go to
 * call_rcu(); the callback frees the memory and touches nothing else, so a
 * callback may run after the cache itself is gone.
 *
 * Writers. write_lock serializes put, drop, set_leader, set_version and
 * eviction, which keeps the ring, the entry count and the bound exact: the
 * count never exceeds max_entries, even momentarily, because a victim is
 * unlinked before the new entry is linked.
 *
 * Ring. slots[0 .. used) hold every entry in the cache; entry->slot is its
 * index. While used < max_entries new entries append; at the bound a new
 * entry takes its victim's slot. A replacement takes over the old entry's
 * slot and referenced bit. A drop moves the last slot into the hole.
 *
 * liburcu calls. We call the library's exported read_lock/read_unlock (no
 * _LGPL_SOURCE): the inlined versions are LGPL code compiled into ours, a
 * licensing decision for the project, not for this file; the cost is two
 * function calls per lookup.
 *
 * Counters. hits and misses are bumped by every lookup on every loop thread;
 * one shared counter would bounce its cache line between cores on each
 * request, so they are striped over ROUTE_STRIPES cache lines picked by a
 * hash of the thread id and summed by route_cache_stats().
 */
#include "net/route_cache.h"

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <urcu/urcu-memb.h> /* the flavour, before rculfhash.h */
#include <urcu/rculfhash.h>

#include "geoscale/errors.h"
#include "net/config.h"

/*
 * ThreadSanitizer cannot see liburcu's ordering: publication (the barrier
 * inside cds_lfht_add_replace, the dependent load inside cds_lfht_lookup)
 * and the grace period happen in uninstrumented code. In TSan builds we
 * state RCU's two guarantees to it on the entry's address, and nothing
 * more: a writer releases an entry before publishing it and a reader
 * acquires it after finding it (publication); a reader releases it before
 * leaving its read-side section and the call_rcu callback acquires it before
 * freeing (grace period). A write to a published entry, or a free without a
 * grace period, is still reported.
 */
#if defined(__SANITIZE_THREAD__)
#define ROUTE_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define ROUTE_TSAN 1
#endif
#endif
#ifdef ROUTE_TSAN
#include <sanitizer/tsan_interface.h>
#define ROUTE_TSAN_RELEASE(p) __tsan_release(p)
#define ROUTE_TSAN_ACQUIRE(p) __tsan_acquire(p)
#else
#define ROUTE_TSAN_RELEASE(p) ((void)(p))
#define ROUTE_TSAN_ACQUIRE(p) ((void)(p))
#endif

_Static_assert(ROUTE_ADDRESS_MAX == CONFIG_ADDRESS_MAX, "addresses fit both");
_Static_assert(ROUTE_REGION_MAX == CONFIG_NAME_MAX, "region names fit both");

#define ROUTE_STRIPES 16
#define ROUTE_CACHE_LINE 64
/* The table grows by itself up to the bucket count that max_entries needs
 * and starts small, so a large bound costs nothing until it is used. */
#define ROUTE_INITIAL_BUCKETS 64

enum route_kind { ROUTE_USER = 1, ROUTE_CELL = 2 };

struct route_entry {
    struct cds_lfht_node node; /* first: 8-byte aligned as cds_lfht needs */
    struct rcu_head rcu;
    uint64_t version;        /* directory version of the answer */
    size_t slot;             /* index in cache->slots; writers only */
    atomic_uchar referenced; /* set by lookup hits, cleared by the hand */
    unsigned char kind;      /* enum route_kind */
};

struct route_user_entry {
    struct route_entry hdr;
    uint64_t user_id;
    uint32_t cell_id;
};

struct route_cell_entry {
    struct route_entry hdr;
    struct route_cell cell;
};

struct route_stripe {
    _Alignas(ROUTE_CACHE_LINE) atomic_uint_fast64_t hits;
    atomic_uint_fast64_t misses;
};

struct route_cache {
    struct cds_lfht *users;
    struct cds_lfht *cells;
    atomic_uint_fast64_t version; /* written under write_lock, read anywhere */

    pthread_mutex_t write_lock;
    struct route_entry **slots; /* the CLOCK ring; guarded by write_lock */
    size_t max_entries;
    size_t used;                  /* guarded by write_lock */
    size_t hand;                  /* guarded by write_lock */
    atomic_uint_fast64_t entries; /* = used, for route_cache_stats() */
    atomic_uint_fast64_t evictions;

    struct route_stripe stripes[ROUTE_STRIPES];
};

/* ------------------------------------------------------------- helpers */

/* splitmix64's finalizer: ids are dense small integers, and cds_lfht takes
 * the bucket from the low bits and orders chains by the bit-reversed hash,
 * so every bit of the hash must depend on every bit of the id. */
static unsigned long route_hash(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return (unsigned long)x;
}

static struct route_stripe *route_my_stripe(struct route_cache *cache)
{
    uint64_t self = (uint64_t)pthread_self();
    return &cache->stripes[route_hash(self) % ROUTE_STRIPES];
}

static void route_count(struct route_cache *cache, bool hit)
{
    struct route_stripe *s = route_my_stripe(cache);
    atomic_fetch_add_explicit(hit ? &s->hits : &s->misses, 1, memory_order_relaxed);
}

static void route_touch(struct route_entry *e)
{
    if (!atomic_load_explicit(&e->referenced, memory_order_relaxed)) {
        atomic_store_explicit(&e->referenced, 1, memory_order_relaxed);
    }
}

static bool route_is_current(struct route_cache *cache, const struct route_entry *e)
{
    return e->version >= atomic_load_explicit(&cache->version, memory_order_acquire);
}

static int route_match_user(struct cds_lfht_node *node, const void *key)
{
    struct route_user_entry *e = caa_container_of(node, struct route_user_entry, hdr.node);
    ROUTE_TSAN_ACQUIRE(e);
    int match = e->user_id == *(const uint64_t *)key;
    ROUTE_TSAN_RELEASE(e);
    return match;
}

static int route_match_cell(struct cds_lfht_node *node, const void *key)
{
    struct route_cell_entry *e = caa_container_of(node, struct route_cell_entry, hdr.node);
    ROUTE_TSAN_ACQUIRE(e);
    int match = e->cell.cell_id == *(const uint32_t *)key;
    ROUTE_TSAN_RELEASE(e);
    return match;
}

/* call_rcu callback: the entry's memory only, nothing of the cache. */
static void route_entry_free_rcu(struct rcu_head *head)
{
    struct route_entry *e = caa_container_of(head, struct route_entry, rcu);
    ROUTE_TSAN_ACQUIRE(e);
    free(e);
}

static struct cds_lfht *route_table_of(struct route_cache *cache, const struct route_entry *e)
{
    return e->kind == ROUTE_USER ? cache->users : cache->cells;
}

/* Look up within the caller's read-side section; NULL if absent. */
static struct route_user_entry *route_find_user(struct route_cache *cache, uint64_t user_id)
{
    struct cds_lfht_iter iter;
    cds_lfht_lookup(cache->users, route_hash(user_id), route_match_user, &user_id, &iter);
    struct cds_lfht_node *node = cds_lfht_iter_get_node(&iter);
    if (node == NULL) {
        return NULL;
    }
    struct route_user_entry *e = caa_container_of(node, struct route_user_entry, hdr.node);
    ROUTE_TSAN_ACQUIRE(e);
    return e;
}

static struct route_cell_entry *route_find_cell(struct route_cache *cache, uint32_t cell_id)
{
    struct cds_lfht_iter iter;
    cds_lfht_lookup(cache->cells, route_hash(cell_id), route_match_cell, &cell_id, &iter);
    struct cds_lfht_node *node = cds_lfht_iter_get_node(&iter);
    if (node == NULL) {
        return NULL;
    }
    struct route_cell_entry *e = caa_container_of(node, struct route_cell_entry, hdr.node);
    ROUTE_TSAN_ACQUIRE(e);
    return e;
}

/* ------------------------------------------------- writers (write_lock) */

/* Unlink e from its table and hand it to call_rcu. Under write_lock and a
 * read-side section. */
static void route_retire(struct route_cache *cache, struct route_entry *e)
{
    int rv = cds_lfht_del(route_table_of(cache, e), &e->node);
    assert(rv == 0); /* writers are serialized: nobody else removed it */
    (void)rv;
    ROUTE_TSAN_RELEASE(e);
    urcu_memb_call_rcu(&e->rcu, route_entry_free_rcu);
}

/*
 * Pick and retire the CLOCK victim; return its (now empty) slot. Stale
 * entries go first whatever their referenced bit. Readers may set bits
 * again while the hand sweeps, so after two full turns the hand takes
 * whatever it points at: the sweep is bounded even under constant hits.
 */
static size_t route_evict(struct route_cache *cache)
{
    assert(cache->used == cache->max_entries);
    uint64_t version = atomic_load_explicit(&cache->version, memory_order_relaxed);
    struct route_entry *victim = NULL;
    for (size_t step = 0; victim == NULL; step++) {
        struct route_entry *e = cache->slots[cache->hand];
        if (e->version < version || step >= 2 * cache->used ||
            !atomic_exchange_explicit(&e->referenced, 0, memory_order_relaxed)) {
            victim = e;
        } else {
            cache->hand = (cache->hand + 1) % cache->used;
        }
    }
    size_t slot = cache->hand;
    cache->hand = (cache->hand + 1) % cache->used;
    cache->slots[slot] = NULL;
    route_retire(cache, victim);
    atomic_fetch_add_explicit(&cache->evictions, 1, memory_order_relaxed);
    return slot;
}

/*
 * Publish fresh (not yet visible), replacing old (NULL if the key is new).
 * Under write_lock and a read-side section.
 */
static void route_publish(struct route_cache *cache, struct route_entry *fresh,
                          struct route_entry *old, const void *key, unsigned long hash,
                          cds_lfht_match_fct match)
{
    struct cds_lfht *table = route_table_of(cache, fresh);
    if (old != NULL) {
        fresh->slot = old->slot;
        atomic_store_explicit(&fresh->referenced,
                              atomic_load_explicit(&old->referenced, memory_order_relaxed),
                              memory_order_relaxed);
    } else if (cache->used < cache->max_entries) {
        fresh->slot = cache->used++;
    } else {
        fresh->slot = route_evict(cache);
    }
    cache->slots[fresh->slot] = fresh;
    ROUTE_TSAN_RELEASE(fresh);
    struct cds_lfht_node *replaced = cds_lfht_add_replace(table, hash, match, key, &fresh->node);
    assert(replaced == (old == NULL ? NULL : &old->node));
    if (replaced != NULL) {
        ROUTE_TSAN_RELEASE(old);
        urcu_memb_call_rcu(&old->rcu, route_entry_free_rcu);
    }
    atomic_store_explicit(&cache->entries, cache->used, memory_order_relaxed);
}

/* Remove e for good and close the hole in the ring. Under write_lock and a
 * read-side section. */
static void route_remove(struct route_cache *cache, struct route_entry *e)
{
    size_t slot = e->slot;
    assert(cache->slots[slot] == e);
    route_retire(cache, e);
    cache->used--;
    if (slot != cache->used) {
        cache->slots[slot] = cache->slots[cache->used];
        cache->slots[slot]->slot = slot;
    }
    cache->slots[cache->used] = NULL;
    if (cache->hand >= cache->used) {
        cache->hand = 0;
    }
    atomic_store_explicit(&cache->entries, cache->used, memory_order_relaxed);
}

static void route_write_begin(struct route_cache *cache)
{
    pthread_mutex_lock(&cache->write_lock);
    urcu_memb_read_lock();
}

static void route_write_end(struct route_cache *cache)
{
    urcu_memb_read_unlock();
    pthread_mutex_unlock(&cache->write_lock);
}

/* ---------------------------------------------------------- lifecycle */

void route_cache_thread_register(void)
{
    urcu_memb_register_thread();
}

void route_cache_thread_unregister(void)
{
    urcu_memb_unregister_thread();
}

int route_cache_new(size_t max_entries, struct route_cache **out)
{
    if (max_entries == 0 || max_entries > ROUTE_CACHE_MAX_ENTRIES) {
        return GS_EINVAL;
    }
    struct route_cache *cache = aligned_alloc(_Alignof(struct route_cache), sizeof(*cache));
    if (cache == NULL) {
        return GS_ENOMEM;
    }
    memset(cache, 0, sizeof(*cache));
    cache->max_entries = max_entries;
    cache->slots = calloc(max_entries, sizeof(cache->slots[0]));
    if (cache->slots == NULL) {
        goto err_cache;
    }
    /* Buckets: a power of two at least max_entries (load factor <= 1). */
    unsigned long max_buckets = 1;
    while (max_buckets < max_entries) {
        max_buckets <<= 1;
    }
    unsigned long initial =
        max_buckets < ROUTE_INITIAL_BUCKETS ? max_buckets : ROUTE_INITIAL_BUCKETS;
    cache->users = cds_lfht_new_flavor(initial, initial, max_buckets, CDS_LFHT_AUTO_RESIZE,
                                       &urcu_memb_flavor, NULL);
    if (cache->users == NULL) {
        goto err_slots;
    }
    cache->cells = cds_lfht_new_flavor(initial, initial, max_buckets, CDS_LFHT_AUTO_RESIZE,
                                       &urcu_memb_flavor, NULL);
    if (cache->cells == NULL) {
        goto err_users;
    }
    if (pthread_mutex_init(&cache->write_lock, NULL) != 0) {
        goto err_cells;
    }
    *out = cache;
    return 0;

err_cells:
    cds_lfht_destroy(cache->cells, NULL);
err_users:
    cds_lfht_destroy(cache->users, NULL);
err_slots:
    free(cache->slots);
err_cache:
    free(cache);
    return GS_ENOMEM;
}

void route_cache_free(struct route_cache *cache)
{
    if (cache == NULL) {
        return;
    }
    route_write_begin(cache);
    while (cache->used > 0) {
        route_remove(cache, cache->slots[cache->used - 1]);
    }
    route_write_end(cache);
    /* Every entry is now queued on call_rcu; wait for them (and for any
     * replaced earlier) so that nothing of this cache outlives the call. */
    urcu_memb_barrier();
    int rv = cds_lfht_destroy(cache->users, NULL);
    assert(rv == 0);
    rv = cds_lfht_destroy(cache->cells, NULL);
    assert(rv == 0);
    (void)rv;
    pthread_mutex_destroy(&cache->write_lock);
    free(cache->slots);
    free(cache);
}

/* ------------------------------------------------------------- users */

int route_cache_get_user(struct route_cache *cache, uint64_t user_id, uint32_t *cell_id)
{
    int rv = GS_ENOTFOUND;
    urcu_memb_read_lock();
    struct route_user_entry *e = route_find_user(cache, user_id);
    if (e != NULL && route_is_current(cache, &e->hdr)) {
        *cell_id = e->cell_id;
        route_touch(&e->hdr);
        rv = 0;
    }
    if (e != NULL) {
        ROUTE_TSAN_RELEASE(e);
    }
    urcu_memb_read_unlock();
    route_count(cache, rv == 0);
    return rv;
}

int route_cache_put_user(struct route_cache *cache, uint64_t user_id, uint32_t cell_id,
                         uint64_t version)
{
    if (user_id == 0 || cell_id == 0) {
        return GS_EINVAL;
    }
    struct route_user_entry *fresh = malloc(sizeof(*fresh));
    if (fresh == NULL) {
        return GS_ENOMEM;
    }
    memset(fresh, 0, sizeof(*fresh));
    cds_lfht_node_init(&fresh->hdr.node);
    fresh->hdr.kind = ROUTE_USER;
    fresh->hdr.version = version;
    fresh->user_id = user_id;
    fresh->cell_id = cell_id;

    int rv = 0;
    route_write_begin(cache);
    struct route_user_entry *old = route_find_user(cache, user_id);
    if (version < atomic_load_explicit(&cache->version, memory_order_relaxed) ||
        (old != NULL && version < old->hdr.version)) {
        rv = GS_ECONFLICT;
        goto out;
    }
    route_publish(cache, &fresh->hdr, old == NULL ? NULL : &old->hdr, &user_id, route_hash(user_id),
                  route_match_user);
    fresh = NULL;
out:
    route_write_end(cache);
    free(fresh); /* never published on error */
    return rv;
}

int route_cache_drop_user(struct route_cache *cache, uint64_t user_id)
{
    int rv = GS_ENOTFOUND;
    route_write_begin(cache);
    struct route_user_entry *e = route_find_user(cache, user_id);
    if (e != NULL) {
        route_remove(cache, &e->hdr);
        rv = 0;
    }
    route_write_end(cache);
    return rv;
}

/* ------------------------------------------------------------- cells */

static bool route_string_ok(const char *s, size_t size)
{
    return s[0] != '\0' && memchr(s, '\0', size) != NULL;
}

static bool route_is_member(const struct route_cell *cell, uint64_t node_id)
{
    for (unsigned i = 0; i < cell->n_members; i++) {
        if (cell->members[i].node_id == node_id) {
            return true;
        }
    }
    return false;
}

static bool route_cell_ok(const struct route_cell *cell)
{
    if (cell->cell_id == 0 || cell->n_members == 0 || cell->n_members > ROUTE_MAX_MEMBERS ||
        !route_string_ok(cell->region, sizeof(cell->region))) {
        return false;
    }
    for (unsigned i = 0; i < cell->n_members; i++) {
        const struct route_member *m = &cell->members[i];
        if (m->node_id == 0 || !route_string_ok(m->client_address, sizeof(m->client_address))) {
            return false;
        }
        for (unsigned j = 0; j < i; j++) {
            if (cell->members[j].node_id == m->node_id) {
                return false;
            }
        }
    }
    return cell->leader_id == 0 || route_is_member(cell, cell->leader_id);
}

/* A fresh, unpublished cell entry holding a copy of *cell. */
static struct route_cell_entry *route_cell_entry_new(const struct route_cell *cell)
{
    struct route_cell_entry *e = malloc(sizeof(*e));
    if (e == NULL) {
        return NULL;
    }
    memset(&e->hdr, 0, sizeof(e->hdr));
    cds_lfht_node_init(&e->hdr.node);
    e->hdr.kind = ROUTE_CELL;
    e->hdr.version = cell->directory_version;
    e->cell = *cell;
    return e;
}

int route_cache_get_cell(struct route_cache *cache, uint32_t cell_id, struct route_cell *out)
{
    int rv = GS_ENOTFOUND;
    urcu_memb_read_lock();
    struct route_cell_entry *e = route_find_cell(cache, cell_id);
    if (e != NULL && route_is_current(cache, &e->hdr)) {
        *out = e->cell;
        route_touch(&e->hdr);
        rv = 0;
    }
    if (e != NULL) {
        ROUTE_TSAN_RELEASE(e);
    }
    urcu_memb_read_unlock();
    route_count(cache, rv == 0);
    return rv;
}

int route_cache_put_cell(struct route_cache *cache, const struct route_cell *cell)
{
    if (!route_cell_ok(cell)) {
        return GS_EINVAL;
    }
    struct route_cell_entry *fresh = route_cell_entry_new(cell);
    if (fresh == NULL) {
        return GS_ENOMEM;
    }
    uint32_t cell_id = cell->cell_id;
    int rv = 0;
    route_write_begin(cache);
    struct route_cell_entry *old = route_find_cell(cache, cell_id);
    if (cell->directory_version < atomic_load_explicit(&cache->version, memory_order_relaxed) ||
        (old != NULL && cell->directory_version < old->hdr.version)) {
        rv = GS_ECONFLICT;
        goto out;
    }
    if (fresh->cell.leader_id == 0 && old != NULL && old->cell.leader_id != 0 &&
        route_is_member(&fresh->cell, old->cell.leader_id)) {
        fresh->cell.leader_id = old->cell.leader_id;
    }
    route_publish(cache, &fresh->hdr, old == NULL ? NULL : &old->hdr, &cell_id, route_hash(cell_id),
                  route_match_cell);
    fresh = NULL;
out:
    route_write_end(cache);
    free(fresh);
    return rv;
}

int route_cache_set_leader(struct route_cache *cache, uint32_t cell_id, uint64_t leader_id)
{
    /* Fast path: most hints repeat what the cache already knows. */
    bool same = false;
    urcu_memb_read_lock();
    struct route_cell_entry *e = route_find_cell(cache, cell_id);
    if (e != NULL && route_is_current(cache, &e->hdr) && e->cell.leader_id == leader_id) {
        same = true;
    }
    if (e != NULL) {
        ROUTE_TSAN_RELEASE(e);
    }
    urcu_memb_read_unlock();
    if (same) {
        return 0;
    }

    int rv = 0;
    struct route_cell_entry *fresh = NULL;
    route_write_begin(cache);
    e = route_find_cell(cache, cell_id);
    if (e == NULL || !route_is_current(cache, &e->hdr)) {
        rv = GS_ENOTFOUND;
        goto out;
    }
    if (leader_id != 0 && !route_is_member(&e->cell, leader_id)) {
        route_remove(cache, &e->hdr);
        rv = GS_ENOTFOUND;
        goto out;
    }
    if (e->cell.leader_id == leader_id) {
        goto out;
    }
    /* Allocating under the lock is rare (the leader changed) and keeps the
     * copy consistent with the entry it replaces. */
    fresh = route_cell_entry_new(&e->cell);
    if (fresh == NULL) {
        rv = GS_ENOMEM;
        goto out;
    }
    fresh->cell.leader_id = leader_id;
    route_publish(cache, &fresh->hdr, &e->hdr, &cell_id, route_hash(cell_id), route_match_cell);
out:
    route_write_end(cache);
    return rv;
}

int route_cache_drop_cell(struct route_cache *cache, uint32_t cell_id)
{
    int rv = GS_ENOTFOUND;
    route_write_begin(cache);
    struct route_cell_entry *e = route_find_cell(cache, cell_id);
    if (e != NULL) {
        route_remove(cache, &e->hdr);
        rv = 0;
    }
    route_write_end(cache);
    return rv;
}

/* ------------------------------------------------------ version, stats */

int route_cache_set_version(struct route_cache *cache, uint64_t version)
{
    pthread_mutex_lock(&cache->write_lock);
    if (version > atomic_load_explicit(&cache->version, memory_order_relaxed)) {
        atomic_store_explicit(&cache->version, version, memory_order_release);
    }
    pthread_mutex_unlock(&cache->write_lock);
    return 0;
}

uint64_t route_cache_version(struct route_cache *cache)
{
    return atomic_load_explicit(&cache->version, memory_order_acquire);
}

void route_cache_stats(struct route_cache *cache, struct route_cache_stats *out)
{
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < ROUTE_STRIPES; i++) {
        out->hits += atomic_load_explicit(&cache->stripes[i].hits, memory_order_relaxed);
        out->misses += atomic_load_explicit(&cache->stripes[i].misses, memory_order_relaxed);
    }
    out->evictions = atomic_load_explicit(&cache->evictions, memory_order_relaxed);
    out->entries = atomic_load_explicit(&cache->entries, memory_order_relaxed);
    out->max_entries = cache->max_entries;
    out->version = atomic_load_explicit(&cache->version, memory_order_acquire);
}
