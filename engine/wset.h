/*
 * The write set of one Raft entry being applied: the keys the entry's
 * commands have written so far, each with its latest value or a tombstone.
 *
 * A command reads what earlier commands of the same entry wrote (a profile
 * created, an outbox sequence advanced), so reads during apply look here
 * first and go to RocksDB only for keys the entry has not touched. A key
 * written several times in one entry (the outbox sequence, a hot profile)
 * is held once, with its last value, and written to RocksDB once.
 *
 * This replaces RocksDB's WriteBatchWithIndex on the hot path: a hash
 * lookup instead of a skiplist search through the batch for every read,
 * and no index maintained for every write.
 *
 *   - keys are at most KEY_MAX bytes (struct key);
 *   - values are copied into one arena owned by the set;
 *   - wset_for_each() visits the keys in the order each was first written,
 *     wset_for_each_sorted() in bytewise key order (RocksDB's), the order
 *     in which a memtable takes a batch fastest: each insert starts next to
 *     the previous one instead of at the top of the skiplist;
 *   - wset_reset() empties the set and releases memory an unusually large
 *     entry made it grow to, so a set never holds more than a bounded amount
 *     between entries.
 *
 * Not thread-safe: owned by the rsm's thread.
 */
#ifndef GS_ENGINE_WSET_H
#define GS_ENGINE_WSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keys.h"

struct wset_item {
    uint64_t hash;
    size_t voff; /* offset of the value in the arena */
    uint32_t vlen;
    uint8_t klen;
    bool deleted;
    uint8_t key[KEY_MAX];
};

struct wset {
    struct wset_item *items; /* in first-write order */
    size_t n_items, cap_items;
    uint32_t *slots; /* open addressing: item index + 1, 0 = empty */
    size_t n_slots;  /* a power of two, or 0 before the first write */
    uint8_t *arena;
    size_t arena_len, arena_cap;
    const struct wset_item **order; /* scratch of wset_for_each_sorted */
    size_t cap_order;
};

/* An empty set (no allocation until the first write). */
void wset_init(struct wset *w);
void wset_free(struct wset *w);

/* Forget every key; keep the memory unless it grew beyond the set's bound. */
void wset_reset(struct wset *w);

static inline size_t wset_count(const struct wset *w)
{
    return w->n_items;
}

/* Record key = value (a copy), or a tombstone. 0 or GS_ENOMEM (the set is
 * unchanged). */
int wset_put(struct wset *w, const uint8_t *key, size_t klen, const void *val, size_t vlen);
int wset_delete(struct wset *w, const uint8_t *key, size_t klen);

/*
 * What the set says about a key: WSET_ABSENT (never written in this entry:
 * ask the DB), WSET_DELETED, or WSET_VALUE with *val pointing into the
 * arena (valid until the next write or reset) and *vlen.
 */
enum wset_lookup { WSET_ABSENT, WSET_DELETED, WSET_VALUE };
enum wset_lookup wset_get(const struct wset *w, const uint8_t *key, size_t klen,
                          const uint8_t **val, size_t *vlen);

/* Call fn for each key in first-write order; val is NULL for a tombstone. */
void wset_for_each(const struct wset *w,
                   void (*fn)(void *arg, const uint8_t *key, size_t klen, const uint8_t *val,
                              size_t vlen),
                   void *arg);

/* The same in bytewise key order (a shorter key first when one is a prefix
 * of the other). 0, or GS_ENOMEM with fn never called. */
int wset_for_each_sorted(struct wset *w,
                         void (*fn)(void *arg, const uint8_t *key, size_t klen, const uint8_t *val,
                                    size_t vlen),
                         void *arg);

#endif /* GS_ENGINE_WSET_H */
