/*
 * The state machine under a Raft group, as the group sees it.
 *
 * A node hosts several groups (its cell, a directory replica, a metadata
 * replica); each runs the same group code (raft/group.c) over its own state
 * machine through this table. Every function runs on the group's loop
 * thread only. Entries are raft entries in engine/entry.h's format (a
 * geoscale.CellBatch of commands: method, idempotency key, request body),
 * whatever the group: each state machine interprets the methods it owns.
 */
#ifndef GS_RAFT_GROUP_SM_H
#define GS_RAFT_GROUP_SM_H

#include <stddef.h>
#include <stdint.h>

#include "../engine/cell_fsm.h" /* struct cell_result */
#include "geoscale.pb-c.h"

struct group_sm_ops {
    const char *kind; /* "cell", "directory", "metadata" (logs, status) */

    /* Highest log index whose effects are in the state machine. */
    uint64_t (*applied_index)(void *sm);

    /* Apply the entry at `index` (skip it if index <= applied_index) as
     * cell_fsm_apply() specifies. Non-zero: the replica must stop. */
    int (*apply)(void *sm, uint64_t index, const void *entry, size_t len,
                 struct cell_result *results, size_t max_results, size_t *n_results);

    /* Serve a read-only method from the current state. */
    int (*read)(void *sm, uint32_t method, const uint8_t *body, size_t len,
                struct cell_result *out);

    /* Digest of the replicated state (StateDigest). */
    int (*digest)(void *sm, uint8_t digest[32], uint64_t *n_keys);

    /* Make everything applied durable (before libraft truncates its log). */
    int (*sync)(void *sm);

    /* The state machine's base (engine/rsm.h): the group keeps RocksDB
     * checkpoints of it for peers to pull (engine/checkpoint.h,
     * checkpoint_create() at a snapshot at most every 30 s, and when a
     * puller asks for a newer one) and installs a peer's into it
     * (checkpoint_install()) when restore() gets a manifest newer than its
     * state. The same for every kind of group. NULL (test tables only): no
     * checkpoints, and a replica sent a snapshot newer than its state cannot
     * catch up. */
    struct rsm *(*rsm)(void *sm);

    /* How the checkpoint transfer requests name this kind of group
     * (CheckpointInfoRequest.group, geoscale.proto). */
    Geoscale__CheckpointInfoRequest__Group checkpoint_group;
};

/* The table for a cell (engine/cell_fsm.h); sm is a struct cell_fsm *. */
extern const struct group_sm_ops cell_sm_ops;

#endif /* GS_RAFT_GROUP_SM_H */
