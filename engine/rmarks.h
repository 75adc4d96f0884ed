/*
 * Result marks: per client, an upper bound of the client_seq of the
 * outcomes an rsm has stored (its idempotency rows, 'R' client_id
 * client_seq, rsm.h).
 *
 * Every remembered command first looks for its own stored outcome, and
 * almost always finds none: it is new, not a retry. Without a mark that
 * lookup is a RocksDB Get that searches the memtable and every table's
 * filter, on every replica, for every command: after the counters were
 * cached (rcache.h), the only Gets left on the apply path of an update.
 * A client numbers its commands upwards, so a command above its client's
 * mark is new without a Get.
 *
 * Invariant: for every client with a mark m, the committed DB holds no
 * outcome of that client with client_seq > m. The rsm keeps it so: a mark
 * is learnt from the DB itself (the highest client_seq stored, or 0), a
 * committed outcome raises its client's mark (rmarks_raise), and whatever
 * changes the DB otherwise (a failed commit, a checkpoint install) forgets
 * every mark (rmarks_clear). Expiry deletes outcomes, which keeps a bound a
 * bound. The marks only spare Gets that would have found nothing, so the
 * state and the answers of every replica are the same with or without them.
 *
 * Bounded: at most RMARKS_MAX clients; when that is reached the marks are
 * forgotten and learnt again as commands come. The table (2 MiB) is
 * allocated at the first mark.
 *
 * Not thread-safe: owned by the rsm's thread.
 */
#ifndef GS_ENGINE_RMARKS_H
#define GS_ENGINE_RMARKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RMARKS_MAX ((size_t)1 << 16)

struct rmark_slot {
    uint64_t client_id; /* 0: empty (client 0 is never remembered) */
    uint64_t max_seq;
};

struct rmarks {
    struct rmark_slot *slots; /* 2 * RMARKS_MAX, NULL until the first mark */
    size_t n;
    uint64_t clears; /* counter, for tests and stats */
};

void rmarks_init(struct rmarks *m);
void rmarks_free(struct rmarks *m);
void rmarks_clear(struct rmarks *m);

/* true and *max_seq if client_id has a mark. */
bool rmarks_get(const struct rmarks *m, uint64_t client_id, uint64_t *max_seq);

/* Set client_id's mark to max_seq, learnt from the committed DB. Never
 * fails: without memory there are no marks. client_id 0 is ignored. */
void rmarks_set(struct rmarks *m, uint64_t client_id, uint64_t max_seq);

/* A committed outcome of (client_id, client_seq): a mark below client_seq
 * rises to it. A client without a mark stays without. */
void rmarks_raise(struct rmarks *m, uint64_t client_id, uint64_t client_seq);

#endif /* GS_ENGINE_RMARKS_H */
