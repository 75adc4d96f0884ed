/*
 * Pulling a peer's checkpoint when a replica receives a snapshot manifest
 * newer than its database (see raft/group.c, "Snapshots").
 *
 * Runs on the group's loop thread, inside libraft's restore(): the group's
 * replication stalls while it runs, which is what a replica that needs the
 * whole state must do anyway; other groups of the node have their own loop
 * threads. Calls go through a blocking client with a private loop to each
 * peer's client address in turn (the leader first), pinned, and only to
 * members of this group (a cell's data is its users' PII; the directory's
 * and the metadata group's are replicated to their members only). Any kind
 * of group: the requests name it (ops->checkpoint_group and group_id) and
 * the requesting node (self_id).
 */
#ifndef GS_RAFT_SNAPSHOT_PULL_H
#define GS_RAFT_SNAPSHOT_PULL_H

#include <stddef.h>
#include <stdint.h>

#include "group.h"

struct snapshot_pull {
    const struct group_sm_ops *ops; /* with rsm */
    void *sm;
    uint32_t group_id; /* the cell id; 0 for directory/metadata */
    uint64_t self_id;
    uint64_t leader_id;             /* asked first; 0 = unknown */
    const struct group_peer *peers; /* the group's members, voters and standbys */
    size_t n_peers;
    const char *incoming_dir;
    uint64_t min_index;  /* the manifest's applied_index */
    unsigned timeout_ms; /* per call */
    unsigned rounds;     /* passes over the peers before giving up */
};

/* Pull a checkpoint with applied index >= min_index from a peer, verify it
 * and install it into the fsm. Returns 0 once installed (then
 * ops->applied_index(sm) >= min_index), or a GS_E* code with one line
 * in errmsg after every peer failed `rounds` times. */
int snapshot_pull(const struct snapshot_pull *p, char *errmsg, size_t errmsg_len);

#endif /* GS_RAFT_SNAPSHOT_PULL_H */
