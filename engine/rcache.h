/*
 * A bounded cache of committed rows of one rsm: key -> value as the DB holds
 * it after the last committed entry.
 *
 * The hot rows of a cell (the profiles, counters and outbox sequence that
 * every update reads) are read from RocksDB several times per command on
 * every replica, and each read searches the memtable's skiplist and the
 * tables' filters. The cache answers them from a hash table instead.
 *
 * It also remembers keys the DB does not hold: an update reads the counters
 * of its user, and most users of a social platform have never followed
 * anyone, so without it each of those reads searches the memtable and every
 * table's filter and finds nothing, command after command.
 *
 * Invariant: every row in the cache equals the DB's committed row, and
 * every key cached as absent is absent from the DB's committed state. The
 * rsm keeps it so: a row read from the DB is added (rcache_put), a key not
 * found is added as absent (rcache_put_absent); a committed
 * entry updates or drops the rows it wrote that are cached, drops the
 * absences of the keys it wrote (rcache_update), and adds no row (an entry
 * writes idempotency and outbox rows that are never read again, and a
 * signup writes the rows of a user it has just found absent: cached, they
 * would only push hot rows out; a row written is cached when it is read);
 * anything that changes the DB in another way (open, detach and
 * attach around a checkpoint install) empties the cache (rcache_clear).
 *
 * Bounded: at most RCACHE_MAX_ROWS rows and RCACHE_ARENA_BYTES of values;
 * when either is reached the cache is emptied and refills from the reads
 * that follow (a working set larger than the cache gets the hits its size
 * allows, and memory stays fixed). Values up to RCACHE_MAX_VALUE bytes are
 * cached; larger ones are read from the DB each time. Both are allocated at
 * the first row; the arena becomes resident as far as it fills, the table
 * (8 MiB) once a few thousand rows are in: a group that reads little, or
 * nothing, costs little.
 *
 * Keys of a first byte never cached since the last clear (idempotency,
 * outbox and time-index rows) are answered without a table probe.
 *
 * Not thread-safe: owned by the rsm's thread.
 */
#ifndef GS_ENGINE_RCACHE_H
#define GS_ENGINE_RCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keys.h"

#define RCACHE_MAX_ROWS ((size_t)1 << 16)
#define RCACHE_ARENA_BYTES ((size_t)32 << 20)
#define RCACHE_MAX_VALUE ((size_t)4096)

struct rcache_slot {
    uint64_t hash;
    uint32_t voff, vlen, vcap; /* the value's place in the arena */
    uint8_t klen;              /* 0: empty slot (keys are never empty here) */
    bool absent;               /* the DB has no row at key (no value) */
    uint8_t key[KEY_MAX];
};

struct rcache {
    struct rcache_slot *slots; /* 2 * RCACHE_MAX_ROWS, NULL until first put */
    size_t n_rows;
    uint8_t *arena;
    size_t arena_len;
    uint64_t prefixes[4]; /* bit b: a cached key may start with byte b */
    uint64_t hits, misses, clears; /* counters, for tests and stats */
};

void rcache_init(struct rcache *c);
void rcache_free(struct rcache *c);
void rcache_clear(struct rcache *c);

enum rcache_found {
    RCACHE_MISS = 0, /* not cached: read the DB */
    RCACHE_ROW,      /* *val and *vlen are the committed row */
    RCACHE_ABSENT,   /* the DB holds no row at this key */
};

/* Look key up. For RCACHE_ROW, *val (valid until the next put, update or
 * clear) and *vlen. Counts a hit (a row or an absence) or a miss. */
enum rcache_found rcache_get(struct rcache *c, const uint8_t *key, size_t klen,
                             const uint8_t **val, size_t *vlen);

/* Cache key = val (a copy), replacing a cached value. Keys of length 0 or
 * over KEY_MAX and values over RCACHE_MAX_VALUE are not cached. Never
 * fails: without memory the cache is emptied and stays so. */
void rcache_put(struct rcache *c, const uint8_t *key, size_t klen, const void *val, size_t vlen);

/* Cache key as absent from the DB (a read found no row), replacing a cached
 * row. Bounded and failing like rcache_put(). */
void rcache_put_absent(struct rcache *c, const uint8_t *key, size_t klen);

/* A committed write: if key is cached as a row, its value becomes val, or
 * (val NULL: a delete) it is dropped; if it is cached as absent, it is
 * dropped. A key not cached stays so. */
void rcache_update(struct rcache *c, const uint8_t *key, size_t klen, const void *val,
                   size_t vlen);

#endif /* GS_ENGINE_RCACHE_H */
