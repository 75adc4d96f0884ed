/*
 * Applier: the thread that owns a group's state machine.
 *
 * A Raft group's loop thread does the consensus work: it receives
 * AppendEntries, starts log writes, answers followers and counts acks. If it
 * also applied each committed entry to RocksDB, an apply (hundreds of
 * microseconds for an entry of a few dozen commands) would sit between a
 * follower's log write completing and its ack leaving, and between a
 * leader's commit and its next append: the apply would be on the critical
 * path of the *next* entry's commit. The applier takes the state machine off
 * that path: the loop thread pushes each committed entry (a copy) and each
 * batch of reads into an ordered queue, and returns to Raft at once; the
 * applier thread runs them in order.
 *
 *   - Order: items run in push order, one at a time, so reads pushed after
 *     an entry see it (a linearizable read is pushed once its barrier
 *     completes, behind every entry committed before it).
 *   - Bound: push blocks while the queue holds max_items items or
 *     max_bytes bytes, so a slow state machine slows Raft instead of
 *     growing memory without bound.
 *   - Ownership: while items are queued or running, the state machine
 *     belongs to the applier thread. applier_drain() waits until every item
 *     pushed so far has run; the pusher may then use the state machine
 *     itself (snapshot, restore, digest) until it pushes again. Only one
 *     thread pushes.
 *   - Priority: the owner may run the applier at a lower CPU priority
 *     (nice) than the loop thread, so that on a busy machine Raft's short,
 *     latency-critical steps (acks, log writes, heartbeats) preempt applies
 *     rather than wait for them (a group does so on followers). The lower
 *     priority only uses slack: once the queue is half full, or the pusher
 *     waits for the applier (a full queue, a drain), the applier runs at
 *     its base priority until the queue is empty. Otherwise a machine kept
 *     busy would starve the applier, fill the queue and block the loop
 *     thread in push, long enough to miss heartbeats.
 */
#ifndef GS_RAFT_APPLIER_H
#define GS_RAFT_APPLIER_H

#include <pthread.h>
#include <stdbool.h>
#include <sys/types.h>
#include <stddef.h>
#include <stdint.h>

struct applier_item {
    struct applier_item *next; /* applier's */
    size_t bytes;              /* counted against max_bytes */
};

/* Runs one item on the applier thread. The item stays the caller's to free
 * (typically run frees it). */
typedef void (*applier_run_fn)(void *arg, struct applier_item *item);

struct applier {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t work;  /* items pushed, or stop */
    pthread_cond_t room;  /* an item finished: room, or drained */
    struct applier_item *head, *tail; /* guarded by lock */
    size_t n_items;       /* queued and running, guarded by lock */
    size_t n_bytes;       /* guarded by lock */
    size_t max_items, max_bytes;
    bool stop;            /* guarded by lock */
    bool started;
    int nice;             /* guarded by lock, as the two below */
    int base_nice;        /* the thread's niceness when it started */
    pid_t tid;            /* 0 until the thread runs */
    bool renice_ok;       /* it may go back down to base_nice (applier.c) */
    bool boosted;         /* at base_nice until the queue is empty */
    uint64_t push_wait_ns; /* guarded by lock: time pushes waited for room */
    applier_run_fn run;
    void *arg;
};

/* Start the thread. nice: added to the thread's niceness (0: none; a
 * failure to set it is logged, not fatal). 0 or GS_ENOMEM. */
int applier_start(struct applier *a, applier_run_fn run, void *arg, size_t max_items,
                  size_t max_bytes, int nice);

/* Run at niceness `nice` above the thread's original one from now on.
 * Without the privilege to lower a thread's niceness again, the applier
 * is not reniced at all (logged once), after at most one step up. */
void applier_set_nice(struct applier *a, int nice);

/* Queue an item (blocks while the queue is full). item->bytes must be set. */
void applier_push(struct applier *a, struct applier_item *item);

/* Wait until every item pushed so far has run. */
void applier_drain(struct applier *a);

/* applier_drain() if at most max_bytes are queued or running, and true.
 * Otherwise false at once, the applier boosted (its base priority until
 * its queue is empty), so that a later call finds less to wait for. */
bool applier_drain_within(struct applier *a, size_t max_bytes);

/* A drain the caller may put off while the applier is busy: a snapshot, a
 * checkpoint. Tries are made at loop times; a try more than max_ms after
 * the previous one starts a new series (the caller stopped trying). */
struct applier_deferral {
    uint64_t first; /* loop time of the series' first deferral; 0: none */
    uint64_t last;  /* loop time of its latest */
};

/* applier_drain_within(max_bytes), and true. Otherwise false (try again
 * later), until max_ms after the series' first deferral, when it waits for
 * whatever is queued (applier_drain()) and returns true: a busy applier
 * delays the drain, never forever. On true, *deferred_ms (if not NULL) is
 * how long the series put it off, and the series ends. */
bool applier_drain_deferred(struct applier *a, struct applier_deferral *d, size_t max_bytes,
                            uint64_t now, uint64_t max_ms, uint64_t *deferred_ms);

/* Total time applier_push() has waited for room, in nanoseconds. */
uint64_t applier_push_wait_ns(struct applier *a);

/* Items queued or running (0: the state machine is the pusher's). */
size_t applier_pending(struct applier *a);

/* Run what is queued, then stop and join the thread. Safe on an applier
 * never started. */
void applier_stop(struct applier *a);

#endif /* GS_RAFT_APPLIER_H */
