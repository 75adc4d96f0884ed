/*
 * A Raft group (a cell, the directory or the metadata group): one libraft
 * instance over raft_uv + raft_uv_tcp on
 * its own loop thread, over a state machine given as a group_sm_ops table.
 *
 * Life of a request (see struct group_request; not "group_req", which
 * <netinet/in.h> already defines): a server thread fills a
 * group_req and calls group_submit(); the group thread takes it from its
 * mailbox, and
 *   - a write (METHOD_KIND_WRITE) is packed with the other writes that arrived
 *     meanwhile into one Raft entry (group commit, bounded by count and
 *     bytes) and completes when that entry is applied (or fails);
 *   - a read (METHOD_KIND_READ) waits, with the other reads that arrived
 *     meanwhile, for a leader check (Raft's ReadIndex) or a raft_barrier,
 *     then runs against the FSM (linearizable);
 *   - a local method (CellStatus, StateDigest) is answered at once.
 * On a node that is not the leader, writes and reads complete at once with
 * GS_ENOTLEADER and leader_id set to the leader it knows (0 = none known).
 * Then the request is posted to req->reply_box, and req->done runs on that
 * mailbox's loop. The group never frees a group_request.
 *
 * The process must ignore SIGPIPE (raft_uv writes to peers that may have
 * closed their connection).
 */
#ifndef GS_RAFT_GROUP_H
#define GS_RAFT_GROUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "group_sm.h"
#include "mailbox.h"

struct group;

#define GROUP_ADDRESS_MAX 64

#define GROUP_ROLE_VOTER 0   /* counts in the quorum */
#define GROUP_ROLE_STANDBY 1 /* replicates the log, never votes (RAFT_STANDBY) */

struct group_peer {
    uint64_t id;
    int role; /* GROUP_ROLE_* */
    char raft_address[GROUP_ADDRESS_MAX];
    char client_address[GROUP_ADDRESS_MAX];
};

struct group_config {
    uint64_t node_id;
    const char *region;
    uint32_t group_id;                /* the cell id; 0 for directory/metadata */
    const char *raft_dir;             /* raft_uv directory; must exist */
    const char *checkpoint_dir;       /* where snapshots keep a RocksDB
                                         checkpoint for peers to pull; on the
                                         DB's file system. NULL: none kept */
    const char *incoming_dir;         /* where a pulled checkpoint is received
                                         (a sibling of the DB). NULL: a replica
                                         that needs a snapshot cannot catch up */
    const struct group_peer *peers;   /* the initial members, self included */
    size_t n_peers;
    const struct group_sm_ops *ops;   /* the state machine's functions */
    void *sm;                         /* used only by the group thread once
                                         started; closed by the caller after
                                         group_stop() */
    unsigned election_timeout_ms;     /* 0 = GROUP_DEFAULT_... (defaults.h) */
    unsigned heartbeat_timeout_ms;    /* 0 = GROUP_DEFAULT_... (defaults.h) */
    unsigned snapshot_threshold;      /* 0 = 4096 entries */
    unsigned snapshot_trailing;       /* 0 = 8192 entries */
    unsigned log_memory_mib;          /* 0 = 512: the Raft log kept in memory
                                         is held to this by lowering the two
                                         counts above as entries grow
                                         (raft/log_budget.h) */
    unsigned max_batch_commands;      /* 0 = 512 per entry */
    unsigned max_batch_bytes;         /* 0 = 1 MiB per entry */
    unsigned max_inflight_entries;    /* 0 = 32 entries proposed, unapplied */
    bool unsafe_local_reads;          /* TESTING ONLY: serve linearizable
                                         READ methods from this replica's
                                         local state, without a barrier and
                                         on followers too. Breaks
                                         linearizability; exists so that the
                                         chaos checker can be shown to catch
                                         stale reads (geoscaled
                                         --unsafe-local-reads) */
};

enum group_request_state {
    GROUP_REQ_NEW = 0,   /* filled by the submitter */
    GROUP_REQ_QUEUED,    /* in the group's mailbox or pending batch */
    GROUP_REQ_PROPOSED,  /* in a raft_apply / waiting on a barrier */
    GROUP_REQ_DONE,      /* result set, posted to reply_box */
};

struct group_request {
    struct mailbox_item item;  /* must stay first */
    /* in (owned by the submitter, unchanged until done runs) */
    uint32_t method;
    uint64_t client_id;
    uint64_t client_seq;
    const uint8_t *body;
    size_t len;
    struct mailbox *reply_box;
    void (*done)(struct group_request *req);
    void *data;
    /* out */
    enum group_request_state state;
    struct cell_result result; /* result.body is the submitter's to free */
    uint64_t leader_id;
    /* private to the group */
    struct group_request *next_in_batch;
};

/* Start the group thread: open raft_uv in raft_dir, bootstrap the initial
 * configuration if the directory is pristine, start raft. Returns 0 once the
 * thread runs, or a GS_E* code with one line in errmsg. */
int group_start(const struct group_config *cfg,
                struct group **out,
                char *errmsg,
                size_t errmsg_len);

/* Hand a request to the group (any thread). If the group is stopping, the
 * request completes with GS_ESHUTDOWN (done still runs on reply_box). */
void group_submit(struct group *g, struct group_request *req);

/* A replica pulling a snapshot needs a checkpoint holding at least
 * min_index: make one on the group's thread at its next tick, once this
 * replica has applied that far (any thread; the answer is the checkpoint
 * found by the puller's next try). Of several requests the lowest is kept:
 * a puller that needs more asks again. */
void group_want_checkpoint(struct group *g, uint64_t min_index);

/* A snapshot of the group's state, safe to call from any thread. */
struct group_status {
    uint64_t node_id;
    const char *kind;         /* "cell", "directory", "metadata" */
    uint32_t group_id;
    const char *role;         /* this node's: "voter", "standby" */
    const char *state;        /* "leader", "follower", "candidate", "unavailable" */
    uint64_t leader_id;
    uint64_t term;
    uint64_t commit_index;
    uint64_t applied_index;
    uint64_t last_log_index;
    uint64_t read_checks;   /* read batches served as leader after a leader
                               check (raft/leader_check.h) */
    uint64_t read_barriers; /* ... after a barrier entry */
};
void group_get_status(struct group *g, struct group_status *out);

/* This node's current Raft term in the group, as last made durable or
 * about to be (any thread): what it answers a LeaderCheck with. 0 until
 * the group has loaded its log. */
uint64_t group_term(struct group *g);

/* Stop raft, fail every pending request with GS_ESHUTDOWN (posting them to
 * their reply boxes), join the thread and free the group. Call from a thread
 * other than the group's. */
void group_stop(struct group *g);

#endif /* GS_RAFT_GROUP_H */
