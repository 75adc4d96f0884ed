/*
 * Route cache: the node's local copy of directory answers.
 *
 * Every request names a user; the node must find the user's home cell and
 * that cell's leader before it can forward the request. The directory group
 * is the source of truth; this cache keeps its recent answers so that the
 * common request costs two hash lookups and no network round trip:
 *
 *   user_id -> cell_id                                  (+ directory version)
 *   cell_id -> region, leader hint, up to 7 members     (+ directory version)
 *
 * Reads are lock-free and run on every request from the server's loop
 * threads: an RCU read-side section around a liburcu lock-free hash table
 * lookup (cds_lfht), and the caller gets a copy of the entry. Entries are
 * immutable once published; every change (put, leader hint) publishes a new
 * entry with cds_lfht_add_replace and frees the old one after a grace period
 * with call_rcu. A reader therefore sees either the old or the new entry,
 * never a mix of both. Writers serialize among themselves on one mutex
 * (writes are rare: a directory answer after a miss, a leader hint, a
 * version bump); readers never take it.
 *
 * RCU flavour: urcu-memb (liburcu.so, pkg-config liburcu). Its read side is a
 * per-thread counter update with compiler barriers only (the grace-period
 * side uses the membarrier system call to order readers; on a kernel without
 * it, a full fence per read-side section), it needs no
 * signal (urcu-signal reserves SIGUSR1 process-wide) and no explicit
 * quiescent states (urcu-qsbr would require every loop thread to announce
 * quiescence between callbacks and go offline before blocking in
 * epoll_wait; one forgotten call stalls every grace period and reclamation
 * with it). The price is registration: see "Threads" below.
 *
 * Invalidation: the cache holds a directory version. route_cache_set_version()
 * raises it; from then on every entry read at an older version is stale: a
 * lookup of it is a miss, it is the first victim of eviction, and a put of an
 * answer older than the cache's version is refused. Marking is O(1); stale
 * entries are reclaimed lazily (by eviction or by replacement), so memory
 * stays within max_entries at all times.
 *
 * Bounded memory: at most max_entries entries (users and cells together) are
 * ever in the cache. Past it, a put evicts one entry chosen by CLOCK (second
 * chance): entries sit in a ring of max_entries slots, a lookup hit sets the
 * entry's referenced bit (a relaxed store, only when the bit is clear, so a
 * hot entry costs one shared write per sweep, not one per request), and the
 * eviction hand skips and clears referenced entries and takes the first
 * unreferenced or stale one. CLOCK keeps the working set (active users, every
 * cell in use) at O(1) cost per eviction, where random eviction would throw
 * out hot cell entries as readily as one-off lookups; exact LRU would need a
 * list update, i.e. a write under a lock, on every read.
 *
 * Threads: every thread that calls a route_cache_* function other than
 * route_cache_new() and route_cache_stats() must have called
 * route_cache_thread_register() first, once, and must call
 * route_cache_thread_unregister() before it exits. Registration is per
 * thread and process-wide (it is liburcu's reader registry), not per cache.
 * A reader (route_cache_get_*) never blocks; the writers (put, drop,
 * set_leader, set_version) may be called from any registered thread
 * concurrently with each other and with readers. No call may be made from
 * inside a liburcu read-side section of the caller's own.
 *
 * Ownership: the cache owns its entries; readers receive copies into
 * caller-owned memory and keep no reference into the cache. The caller owns
 * the cache and frees it with route_cache_free() once no other thread uses
 * it.
 *
 * The cache holds ids, region names and addresses only: no PII.
 */
#ifndef GS_NET_ROUTE_CACHE_H
#define GS_NET_ROUTE_CACHE_H

#include <stddef.h>
#include <stdint.h>

#define ROUTE_MAX_MEMBERS 7
#define ROUTE_ADDRESS_MAX 64 /* bytes including the NUL; = CONFIG_ADDRESS_MAX */
#define ROUTE_REGION_MAX 64  /* bytes including the NUL; = CONFIG_NAME_MAX */
#define ROUTE_CACHE_MAX_ENTRIES (1u << 26)

struct route_cache;

struct route_member {
    uint64_t node_id;                       /* 1 .. 2^32-1 */
    char client_address[ROUTE_ADDRESS_MAX]; /* "host:port", NUL-terminated */
};

struct route_cell {
    uint32_t cell_id;              /* 1 .. 2^24-1 */
    char region[ROUTE_REGION_MAX]; /* non-empty, NUL-terminated */
    uint64_t leader_id;            /* 0 = unknown; else one of members[] */
    unsigned n_members;            /* 1 .. ROUTE_MAX_MEMBERS */
    struct route_member members[ROUTE_MAX_MEMBERS];
    uint64_t directory_version; /* version of the directory answer */
};

struct route_cache_stats {
    uint64_t hits;        /* lookups answered */
    uint64_t misses;      /* lookups not answered (absent or stale) */
    uint64_t evictions;   /* entries pushed out by the max_entries bound */
    uint64_t entries;     /* entries held now, stale ones included */
    uint64_t max_entries; /* as given to route_cache_new() */
    uint64_t version;     /* the cache's directory version */
};

/*
 * Register / unregister the calling thread as a liburcu (urcu-memb) reader.
 * Call route_cache_thread_register() once per thread before its first
 * route_cache_* call (other than new and stats), and
 * route_cache_thread_unregister() once before the thread exits. Registering
 * a thread twice, or unregistering it inside a route_cache_* call, is a bug.
 */
void route_cache_thread_register(void);
void route_cache_thread_unregister(void);

/*
 * Create an empty cache holding at most max_entries entries (users and cells
 * together), 1 .. ROUTE_CACHE_MAX_ENTRIES, at directory version 0. Returns 0
 * and sets *out, GS_EINVAL (max_entries out of range) or GS_ENOMEM; *out is
 * untouched on error. The caller owns *out and frees it with
 * route_cache_free(). Any thread may call it.
 */
int route_cache_new(size_t max_entries, struct route_cache **out);

/*
 * Free the cache and every entry in it, including entries awaiting their
 * grace period (it waits for them: liburcu's rcu_barrier). No other thread
 * may be using the cache. The calling thread must be registered and must
 * not be a call_rcu callback. NULL is a no-op.
 */
void route_cache_free(struct route_cache *cache);

/*
 * Look up user_id's home cell. Returns 0 and sets *cell_id, or GS_ENOTFOUND
 * if the cache holds no entry for the user at the cache's current version
 * (*cell_id untouched). Lock-free; counts a hit or a miss.
 */
int route_cache_get_user(struct route_cache *cache, uint64_t user_id, uint32_t *cell_id);

/*
 * Record that the directory, at version `version`, placed user_id in
 * cell_id. Replaces an entry of the same or an older version. Returns 0;
 * GS_EINVAL if user_id or cell_id is 0; GS_ECONFLICT (nothing changed) if
 * version is older than the cache's version or than the entry already held
 * for the user; GS_ENOMEM. May evict one entry.
 */
int route_cache_put_user(struct route_cache *cache, uint64_t user_id, uint32_t cell_id,
                         uint64_t version);

/*
 * Look up cell_id. Returns 0 and copies the whole entry into *out (the
 * caller's), or GS_ENOTFOUND if the cache holds no entry for the cell at the
 * cache's current version (*out untouched). Lock-free; counts a hit or miss.
 */
int route_cache_get_cell(struct route_cache *cache, uint32_t cell_id, struct route_cell *out);

/*
 * Record a directory answer about a cell (copied; *cell stays the caller's).
 * Replaces an entry of the same or an older directory_version. If
 * cell->leader_id is 0 and the entry being replaced knew a leader that is
 * still among cell->members, that leader is kept (a directory answer does
 * not know leaders; it must not erase a hint). Returns 0; GS_EINVAL if the
 * cell is malformed (cell_id 0, n_members not 1..7, a member id 0 or twice,
 * an address or region empty or not NUL-terminated within its array, a
 * non-zero leader_id that is not a member); GS_ECONFLICT (nothing changed)
 * if the answer is older than the cache's version or than the entry held;
 * GS_ENOMEM. May evict one entry.
 */
int route_cache_put_cell(struct route_cache *cache, const struct route_cell *cell);

/*
 * Apply a leader hint (from a NOT_LEADER answer or a response header):
 * leader_id is now cell_id's leader, 0 if unknown. Returns 0; GS_ENOTFOUND if
 * the cache holds no current entry for the cell, or if leader_id is not one
 * of its members: then the entry is provably out of date and is dropped so
 * that the next lookup asks the directory. A hint equal to the cached leader
 * costs one lock-free lookup and no write. GS_ENOMEM.
 */
int route_cache_set_leader(struct route_cache *cache, uint32_t cell_id, uint64_t leader_id);

/*
 * Raise the cache's directory version to version: every entry of an older
 * version becomes stale at once (lookups miss, puts of older answers are
 * refused). A version not above the current one changes nothing (versions
 * never go back). Returns 0.
 *
 * Only changes that invalidate existing routes (a user moved, a cell's
 * membership changed) should raise it: every raise makes every cached
 * route stale at once.
 */
int route_cache_set_version(struct route_cache *cache, uint64_t version);

/* The cache's current directory version. Lock-free. */
uint64_t route_cache_version(struct route_cache *cache);

/*
 * Forget one user's route or one cell (e.g. after a WRONG_CELL answer).
 * Returns 0, or GS_ENOTFOUND if there was no entry (stale or not).
 */
int route_cache_drop_user(struct route_cache *cache, uint64_t user_id);
int route_cache_drop_cell(struct route_cache *cache, uint32_t cell_id);

/* Counters since route_cache_new(), each read atomically (not one snapshot).
 * Any thread; no registration needed. */
void route_cache_stats(struct route_cache *cache, struct route_cache_stats *out);

#endif /* GS_NET_ROUTE_CACHE_H */
