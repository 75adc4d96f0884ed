/*
 * A byte budget for the Raft log a group keeps in memory.
 *
 * libraft holds in memory every entry since its last snapshot plus the
 * snapshot_trailing entries before it, so what the log costs is about
 * (snapshot_threshold + snapshot_trailing) times the size of an entry. Both
 * are counts of entries, and an entry is one batch of client commands: a few
 * hundred bytes when the cell is idle, tens of kilobytes under load with
 * 1 KiB values, up to max_batch_bytes. Fixed counts that suit small entries
 * hold hundreds of megabytes of large ones.
 *
 * The group feeds the size of every applied entry (log_budget_observe); its
 * tick asks for the counts that keep the log within the budget at the
 * running average size (log_budget_update): half of the budget for the
 * entries between snapshots, half for the trailing ones, each count between
 * LOG_BUDGET_MIN_ENTRIES and the configured one. The average follows larger
 * entries quickly (a burst of large entries is held to the budget within a
 * few dozen entries) and smaller ones slowly, and a change of a count by
 * less than a quarter is not made, so that entries of mixed sizes do not
 * move the counts back and forth.
 *
 * Smaller counts mean more frequent snapshots (each a WAL sync and a
 * checkpoint of hard links) and a shorter trailing log, after which a
 * replica that fell behind pulls a checkpoint instead of entries.
 *
 * Pure computation, no locking: used by the group's loop thread only.
 */
#ifndef GS_RAFT_LOG_BUDGET_H
#define GS_RAFT_LOG_BUDGET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LOG_BUDGET_MIN_ENTRIES 64u

/* Weight of a new entry in the running average: 1/LOG_BUDGET_GROW_WEIGHT
 * if it is larger than the average, 1/LOG_BUDGET_SHRINK_WEIGHT if smaller. */
#define LOG_BUDGET_GROW_WEIGHT 16u
#define LOG_BUDGET_SHRINK_WEIGHT 256u

struct log_budget {
    uint64_t bytes;          /* the budget */
    unsigned max_threshold;  /* the configured snapshot_threshold */
    unsigned max_trailing;   /* the configured snapshot_trailing */
    uint64_t avg_entry;      /* running average entry size, bytes; 0: none seen */
    unsigned threshold;      /* counts in force */
    unsigned trailing;
};

/* Start with the configured counts in force (nothing observed yet). */
void log_budget_init(struct log_budget *b, uint64_t bytes, unsigned max_threshold,
                     unsigned max_trailing);

/* One applied entry of len bytes. */
void log_budget_observe(struct log_budget *b, size_t len);

/* Recompute the counts for the average entry size; true if threshold or
 * trailing changed (the caller then sets them in libraft). */
bool log_budget_update(struct log_budget *b);

#endif /* GS_RAFT_LOG_BUDGET_H */
