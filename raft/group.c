/*
 * A Raft group: libraft (v0 API) over raft_uv + raft_uv_tcp, on a loop
 * thread of its own, over a state machine given as a table of functions
 * (group_sm.h): a cell's FSM, the directory's or the metadata group's.
 *
 * Threads. The group thread owns the uv loop and the raft instance. The
 * FSM belongs to the group's applier thread (raft/applier.h): libraft's
 * apply() copies each committed entry into the applier's queue and returns,
 * so an apply never delays the group thread's next log write or ack; the
 * group thread uses the FSM itself only after draining the applier
 * (snapshot, restore, digest). Other threads talk to the group only
 * through its inbox (a mailbox) and read its status through a
 * mutex-protected copy refreshed on the group thread. Completed requests go
 * back through the submitter's reply mailbox, from the group thread or,
 * for what the FSM answers, from the applier.
 *
 * Group commit. Every inbox wake-up drains all requests posted since the
 * last one. Writes wait in `pending` and are packed into entries of at most
 * max_batch_commands commands / max_batch_bytes bytes, with at most
 * max_inflight_entries entries proposed and not yet applied: while the log
 * is busy, the next batch grows, so throughput rises with load instead of
 * entries per second. Each entry is one raft_apply and, on every replica,
 * one RocksDB WriteBatch. An entry counts as in flight until libraft has
 * handed it to the applier.
 *
 * Results. libraft hands apply() no index and passes `result` only to the
 * proposer's callback. The group keeps its proposals in a FIFO ordered by
 * log index; apply() computes the index as raft_last_applied() + 1 and, if
 * the head proposal sits at that index, hands its requests and result slots
 * to the applier with the entry: the applier answers them once the FSM has
 * applied it. This is the same index matching libraft uses for its own
 * request callbacks: a proposal is pending only while this node leads the
 * term it was proposed in, and libraft fails every pending request when the
 * node steps down.
 *
 * Reads. Linearizable reads wait, in batches, for a proof that this node
 * still leads, then go to the applier behind every entry committed before
 * they arrived. The proof is a leader check (raft/leader_check.h, Raft's
 * ReadIndex): the commit index is noted and a quorum of voters confirms
 * that none has joined a newer term, one round trip and no log entry. It
 * needs an entry of the current term committed, so the first batch of a
 * term, and any batch whose check failed (a voter answered a newer term,
 * or too few answered), waits for a raft_barrier instead: an entry of the
 * leader's term committed by a quorum, which proves leadership and, once
 * applied, that every earlier entry is with the applier. One check or
 * barrier serves all the reads that arrived before it started; reads
 * arriving later wait for the next one, started at once while fewer than
 * GROUP_BARRIERS_INFLIGHT of each are in flight. The term this node
 * answers other leaders' checks with is the one it last made durable
 * (group_term()): it is published before libraft persists a new term,
 * hence before any vote or append answer of that term leaves.
 *
 * Outcomes. A write whose raft_apply was refused was never proposed
 * (NOT_LEADER / UNAVAILABLE, safe to retry). A write whose callback failed
 * (leadership lost, shutdown) may still be committed later: it completes
 * with GS_EUNKNOWN, and the client's retry with the same idempotency key is
 * applied at most once.
 *
 * Snapshots. snapshot() makes the FSM durable up to its applied index (one
 * WAL fsync), keeps a RocksDB checkpoint of that state (hard links and a WAL
 * copy, no memtable flush) for peers to pull, and returns a small manifest,
 * never the data, so libraft may then truncate its log. restore() ignores a
 * manifest that is not newer than the database; for a newer one it pulls a
 * peer's checkpoint, verifies it and swaps it in before returning
 * (raft/snapshot_pull.c). The log trailing (snapshot_trailing entries) is
 * kept long enough that ordinary lag and restarts never need that.
 */
#include "group.h"
#include "applier.h"
#include "defaults.h"
#include "leader_check.h"
#include "log_budget.h"
#include "snapshot_pull.h"
#include "tcp_nodelay.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <raft.h>
#include <raft/uv.h>
#include <sodium.h>

#include "../engine/checkpoint.h"
#include "../engine/entry.h"
#include "../engine/log.h"
#include "../engine/methods.h"
#include "geoscale/errors.h"

#define GROUP_TICK_MS 50
/* A tick this late is logged (half the default election timeout). */
#define GROUP_LATE_TICK_MS 250

/* At most one info line per this many ms about the log budget's counts. */
#define LOG_BUDGET_LOG_MS 10000

/* The applier's bounds: when applies fall this far behind, the group
 * thread waits in push (it blocks libraft meanwhile) until they catch up. */
#define APPLIER_MAX_ITEMS 64
#define APPLIER_MAX_BYTES ((size_t)32 << 20)
/* The applier's niceness above the group thread's (applier.h). A
 * leader's applies answer clients: same priority as the group thread. A
 * follower's answer no one: they use what CPU the machine has to spare,
 * and run at the group thread's priority once half the bound above is
 * queued or the group thread waits for them (measured in bench/RESULTS.md,
 * third and fourth rounds). A process that may not lower niceness again
 * does not renice its appliers. */
#define APPLIER_LEADER_NICE 0
#define APPLIER_FOLLOWER_NICE 19
#define MANIFEST_FORMAT 1

/* Barriers in flight at once, and leader checks in flight at once. With
 * one, a read arriving just after a barrier was proposed waits for it,
 * then for the next: two barrier times (bench/RESULTS.md, sixth round);
 * the same holds for checks. */
#define GROUP_BARRIERS_INFLIGHT 4

/* A raft_barrier and the reads that wait for it. */
struct group_barrier {
    struct raft_barrier req; /* req.data = the group_barrier */
    struct group *g;
    struct group_request *reads; /* linked by next_in_batch */
    uint64_t term;               /* proposed in */
    bool inflight;
};

/* A leader check and the reads that wait for it. */
struct group_check {
    struct leader_check_round round; /* round.data = the group_check */
    struct group *g;
    struct group_request *reads; /* linked by next_in_batch */
    uint64_t read_index;         /* the commit index when it started */
};

/* One raft_apply of a batch of writes. */
struct proposal {
    struct raft_apply apply; /* apply.data = the proposal */
    struct group *g;
    struct group_request *reqs;  /* linked by next_in_batch, in command order */
    size_t n;
    struct cell_result *results; /* n slots, for the applier to fill */
    bool handed;                 /* reqs and results went to the applier */
    struct proposal *next;   /* in-flight FIFO, by log index */
};

/* What the applier runs (raft/applier.h): a committed entry, with this
 * node's requests and result slots when this node proposed it; or reads,
 * which see every entry pushed before them. */
struct apply_item {
    struct applier_item base; /* must stay first */
    struct group *g;
    uint64_t index;               /* libraft's applied index once this has run:
                                   * the entry's, or the last before the reads */
    struct group_request *reqs;   /* linked by next_in_batch; NULL: none */
    size_t n_reqs;                /* entry of this node's proposal: its commands */
    struct cell_result *results;  /* and as many result slots */
    bool is_entry;
    size_t len;
    uint8_t data[];               /* the entry, copied */
};

struct group {
    struct group_config cfg;
    struct group_peer *peers;
    char *raft_dir;
    char *checkpoint_dir; /* NULL: none */
    char *incoming_dir;   /* NULL: none */
    char *region;
    char raft_address[GROUP_ADDRESS_MAX];
    int self_role; /* GROUP_ROLE_* of this node in the initial configuration */

    pthread_t thread;
    uv_loop_t loop;
    struct mailbox inbox;
    uv_async_t stop_async;
    uv_timer_t tick;

    struct raft_uv_transport transport;
    struct tcp_nodelay nodelay; /* wraps transport: TCP_NODELAY on */
    struct raft_io io;
    struct raft_fsm fsm;
    struct raft raft;
    bool raft_initialized;

    /* The state machine's thread (see "Applier" above). applier_done is
     * libraft's applied index as of the last item the applier finished. */
    struct applier applier;
    _Atomic uint64_t applier_done;

    /* Writes waiting for a batch slot. */
    struct group_request *pending_head, *pending_tail;
    size_t n_pending;
    /* Proposals in flight, oldest (lowest index) first. */
    struct proposal *inflight_head, *inflight_tail;
    unsigned n_inflight;
    uint64_t nonce;
    uint64_t next_proposal_seq;

    /* Reads waiting for a barrier, and the barriers in flight with the
     * reads behind each. */
    struct group_request *reads_waiting_head, *reads_waiting_tail;
    struct group_barrier barriers[GROUP_BARRIERS_INFLIGHT];
    unsigned n_barriers;
    struct group_check checks[GROUP_BARRIERS_INFLIGHT];
    unsigned n_checks;
    struct leader_check *checker; /* opened on this node's first check */
    /* The term in which this node, as leader, saw a barrier of that term
     * complete: leader checks serve reads only then. 0: none. */
    uint64_t term_committed;
    /* The term group_term() answers: set before libraft persists a new
     * one (group_set_term); 0 until raft has started. */
    _Atomic uint64_t term_seen;
    int (*io_set_term)(struct raft_io *io, raft_term term); /* raft_uv's */
    /* Read batches served, by leader check and by barrier: counted on
     * this thread, read by group_get_status() at once. */
    _Atomic uint64_t read_checks, read_barriers;

    bool stopping;
    /* A stopping leader hands leadership to a follower first, so that the
     * group does not wait an election timeout for a new leader. */
    struct raft_transfer transfer;
    bool transferring;          /* the transfer is under way */
    uint64_t transfer_deadline; /* loop time: close regardless after it */

    /* After a failed snapshot (sync or checkpoint) libraft asks again
     * after every applied entry; the group waits instead, doubling from
     * CKPT_RETRY_MIN_MS to CKPT_RETRY_MAX_MS (loop time). */
    uint64_t ckpt_retry_at;
    uint64_t ckpt_backoff_ms;
    /* Checkpoints for replicas that pull a snapshot: one at a snapshot at
     * most every GROUP_CHECKPOINT_EVERY_MS, and one on request when a puller
     * needs a newer one than the latest (group_want_checkpoint). */
    uint64_t ckpt_made_ms;          /* loop time of the last one; 0: none */
    uint64_t ckpt_made_index;       /* the applied index it holds */
    _Atomic uint64_t ckpt_wanted;   /* the lowest index a puller asked for
                                       and no checkpoint holds yet; 0: none */
    struct applier_deferral snapshot_defer;   /* a snapshot's drain put off */
    struct applier_deferral checkpoint_defer; /* an on-demand checkpoint's */

    /* Start handshake with group_start(). */
    pthread_mutex_t start_lock;
    pthread_cond_t start_cond;
    bool start_done;
    int start_rv;
    char start_errmsg[512];

    /* Status copy for other threads. */
    pthread_mutex_t status_lock;
    struct group_status status;
    /* What the last refresh logged: a change of state or leader is logged. */
    const char *logged_state;
    uint64_t logged_leader;
    /* Loop time of the last tick: a late tick means the loop was blocked. */
    uint64_t last_tick;
    uint64_t last_tick_push_wait_ns; /* applier_push_wait_ns() at last_tick */
    struct log_budget log_budget; /* loop thread */
    uint64_t log_budget_logged;   /* loop time of its last info line */
};

/* ------------------------------------------------------------ completion */

/* Answer a request: any thread (the applier answers what it ran). */
static void req_deliver(struct group_request *req, int status)
{
    assert(req->state != GROUP_REQ_DONE);
    if (status != 0) {
        free(req->result.body);
        req->result.body = NULL;
        req->result.len = 0;
    }
    req->result.status = status;
    req->state = GROUP_REQ_DONE;
    req->next_in_batch = NULL;
    if (!mailbox_post(req->reply_box, &req->item)) {
        /* The submitter closed its mailbox before the group finished: a
         * node shutdown ordering bug. Nothing safe to do but say so. */
        log_error("group", "event=reply_box_closed method=%u", req->method);
    }
}

/* Answer a request on the group thread, with the leader as known now. */
static void req_complete(struct group *g, struct group_request *req, int status)
{
    if (req->leader_id == 0 && g->raft_initialized) {
        raft_id leader_id = 0;
        const char *address = NULL;
        raft_leader(&g->raft, &leader_id, &address);
        req->leader_id = leader_id;
    }
    req_deliver(req, status);
}

static void req_list_complete(struct group *g, struct group_request *list, int status)
{
    while (list != NULL) {
        struct group_request *next = list->next_in_batch;
        req_complete(g, list, status);
        list = next;
    }
}

static uint64_t group_leader(struct group *g)
{
    raft_id leader_id = 0;
    const char *address = NULL;
    raft_leader(&g->raft, &leader_id, &address);
    return leader_id;
}

static void group_refresh_status(struct group *g)
{
    struct group_status s;
    memset(&s, 0, sizeof s);
    s.node_id = g->cfg.node_id;
    s.kind = g->cfg.ops->kind;
    s.group_id = g->cfg.group_id;
    s.role = g->self_role == GROUP_ROLE_STANDBY ? "standby" : "voter";
    if (g->raft_initialized) {
        switch (raft_state(&g->raft)) {
        case RAFT_LEADER:
            s.state = "leader";
            break;
        case RAFT_FOLLOWER:
            s.state = "follower";
            break;
        case RAFT_CANDIDATE:
            s.state = "candidate";
            break;
        default:
            s.state = "unavailable";
            break;
        }
        applier_set_nice(&g->applier, raft_state(&g->raft) == RAFT_LEADER
                                          ? APPLIER_LEADER_NICE
                                          : APPLIER_FOLLOWER_NICE);
        s.leader_id = group_leader(g);
        s.term = raft_current_term(&g->raft);
        s.commit_index = raft_commit_index(&g->raft);
        /* Applied by the state machine, not only handed to it: with
         * nothing queued, all libraft applied is. */
        s.applied_index = applier_pending(&g->applier) == 0
                              ? raft_last_applied(&g->raft)
                              : atomic_load(&g->applier_done);
        s.last_log_index = raft_last_index(&g->raft);
    } else {
        s.state = "unavailable";
    }
    if (s.state != g->logged_state || s.leader_id != g->logged_leader) {
        log_info("group",
                 "event=state kind=%s group_id=%u state=%s term=%" PRIu64 " leader_id=%" PRIu64
                 " commit_index=%" PRIu64,
                 s.kind, s.group_id, s.state, s.term, s.leader_id, s.commit_index);
        g->logged_state = s.state;
        g->logged_leader = s.leader_id;
    }
    pthread_mutex_lock(&g->status_lock);
    g->status = s;
    pthread_mutex_unlock(&g->status_lock);
}

/* ------------------------------------------------------------ the FSM */

/* On the applier thread: apply an entry and answer this node's requests,
 * or serve reads. */
static void apply_run(void *arg, struct applier_item *base)
{
    (void)arg;
    struct apply_item *it = (struct apply_item *)base;
    struct group *g = it->g;
    if (it->is_entry) {
        size_t n_results = 0;
        int rv = g->cfg.ops->apply(g->cfg.sm, it->index, it->data, it->len, it->results,
                                it->results != NULL ? it->n_reqs : 0, &n_results);
        if (rv != 0) {
            /* A storage failure: this replica cannot go on applying without
             * diverging. Fail-stop: a restart replays the log from the last
             * durable state. */
            log_error("group", "event=apply_failed index=%" PRIu64
                      " code=%s detail=\"stopping the node\"",
                      it->index, gs_error_name(rv));
            abort();
        }
        size_t i = 0;
        for (struct group_request *req = it->reqs; req != NULL; i++) {
            struct group_request *next = req->next_in_batch;
            if (i < n_results) {
                req->result = it->results[i];
                it->results[i].body = NULL;
                req_deliver(req, req->result.status);
            } else {
                /* Committed, but the FSM gave no result: an invariant broke. */
                log_error("group", "event=missing_result index=%" PRIu64, it->index);
                req_deliver(req, GS_EINTERNAL);
            }
            req = next;
        }
        for (i = 0; it->results != NULL && i < it->n_reqs; i++) {
            free(it->results[i].body); /* those not handed over above */
        }
        free(it->results);
    } else {
        for (struct group_request *req = it->reqs; req != NULL;) {
            struct group_request *next = req->next_in_batch;
            g->cfg.ops->read(g->cfg.sm, req->method, req->body, req->len, &req->result);
            req_deliver(req, req->result.status);
            req = next;
        }
    }
    atomic_store(&g->applier_done, it->index);
    free(it);
}

/* Hand reads to the applier (on the group thread): they run after every
 * entry handed to it before. The answers name leader_id as the leader. */
static void group_push_reads(struct group *g, struct group_request *list, uint64_t leader_id)
{
    if (list == NULL) {
        return;
    }
    struct apply_item *it = calloc(1, sizeof *it);
    if (it == NULL) {
        req_list_complete(g, list, GS_ENOMEM);
        return;
    }
    for (struct group_request *r = list; r != NULL; r = r->next_in_batch) {
        r->leader_id = leader_id;
    }
    it->base.bytes = sizeof *it;
    it->g = g;
    it->index = raft_last_applied(&g->raft); /* reads arrive after setup */
    it->reqs = list;
    applier_push(&g->applier, &it->base);
}

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
    struct group *g = fsm->data;
    raft_index index = raft_last_applied(&g->raft) + 1;

    *result = NULL;
    log_budget_observe(&g->log_budget, buf->len);
    struct apply_item *it = malloc(sizeof *it + buf->len);
    if (it == NULL) {
        /* Skipping the entry would diverge; returning an error into
         * libraft 0.22.1 is not an option (its receive path frees the
         * entries a second time). Fail-stop, as for a storage failure. */
        log_error("group", "event=apply_failed index=%llu code=NOMEM detail=\"stopping the node\"",
                  (unsigned long long)index);
        abort();
    }
    memset(it, 0, sizeof *it);
    it->base.bytes = sizeof *it + buf->len;
    it->g = g;
    it->index = index;
    it->is_entry = true;
    it->len = buf->len;
    memcpy(it->data, buf->base, buf->len);
    /* Only a leader has live proposals: when it steps down, libraft fails
     * them all before any entry of another leader can be applied here.
     * libraft applies several entries in one step and fires the callbacks
     * after, so proposals already applied may still head the FIFO. */
    if (raft_state(&g->raft) == RAFT_LEADER) {
        struct proposal *p = g->inflight_head;
        while (p != NULL && p->apply.index < index) {
            p = p->next;
        }
        if (p != NULL && p->apply.index == index) {
            assert(!p->handed);
            for (struct group_request *r = p->reqs; r != NULL; r = r->next_in_batch) {
                r->leader_id = g->cfg.node_id;
            }
            it->reqs = p->reqs;
            it->n_reqs = p->n;
            it->results = p->results;
            p->reqs = NULL;
            p->results = NULL;
            p->handed = true;
        }
    }
    applier_push(&g->applier, &it->base);
    return 0;
}

#define CKPT_RETRY_MIN_MS 1000
#define CKPT_RETRY_MAX_MS 60000
/* A snapshot makes a checkpoint only if the last is this old. Making one
 * copies RocksDB's live WAL (up to the memtables' size) on the loop thread:
 * 40-150 ms at every snapshot under load, every few seconds, on every node
 * at once. A replica that pulls a snapshot asks for a checkpoint at least as
 * new as its manifest, made then (group_want_checkpoint). */
#define GROUP_CHECKPOINT_EVERY_MS 30000

/* A snapshot waits on the loop thread for the applier to catch up with
 * libraft. With more than SNAPSHOT_DRAIN_BYTES queued (tens of ms of
 * applies) it is deferred instead, the applier boosted, and libraft tries
 * again at its next step; after SNAPSHOT_DEFER_MAX_MS of deferrals the
 * snapshot waits whatever is queued, so the log cannot grow without end.
 * An on-demand checkpoint is deferred alike, tried again at each tick. */
#define SNAPSHOT_DRAIN_BYTES ((size_t)1 << 20)
#define SNAPSHOT_DEFER_MAX_MS 2000

/* A snapshot attempt failed at loop time now: the next waits longer. */
static uint64_t snapshot_backoff(struct group *g, uint64_t now)
{
    g->ckpt_backoff_ms = g->ckpt_backoff_ms == 0 ? CKPT_RETRY_MIN_MS
                         : g->ckpt_backoff_ms >= CKPT_RETRY_MAX_MS / 2
                             ? CKPT_RETRY_MAX_MS
                             : 2 * g->ckpt_backoff_ms;
    g->ckpt_retry_at = now + g->ckpt_backoff_ms;
    return g->ckpt_backoff_ms;
}

/* Make a checkpoint of the state machine as it stands: on the loop thread,
 * the applier drained (nothing else writes the DB meanwhile). 0, or
 * GS_E* logged with the next try's wait. */
static int group_make_checkpoint(struct group *g, uint64_t now)
{
    char errmsg[256];
    int rv = checkpoint_create(g->cfg.ops->rsm(g->cfg.sm), g->checkpoint_dir, NULL, errmsg,
                               sizeof errmsg);
    if (rv != 0) {
        log_error("group", "event=checkpoint_failed code=%s detail=\"%s\" retry_in_ms=%" PRIu64,
                  gs_error_name(rv), errmsg, snapshot_backoff(g, now));
        return rv;
    }
    g->ckpt_backoff_ms = 0;
    g->ckpt_made_ms = now > 0 ? now : 1;
    g->ckpt_made_index = g->cfg.ops->applied_index(g->cfg.sm);
    /* Served. A puller asking meanwhile for more keeps its request. */
    uint64_t wanted = atomic_load(&g->ckpt_wanted);
    if (wanted != 0 && wanted <= g->ckpt_made_index) {
        atomic_compare_exchange_strong(&g->ckpt_wanted, &wanted, 0);
    }
    return 0;
}

static bool group_keeps_checkpoints(const struct group *g)
{
    return g->checkpoint_dir != NULL && g->cfg.ops->rsm != NULL;
}

void group_want_checkpoint(struct group *g, uint64_t min_index)
{
    /* The lowest index asked for: one checkpoint made for it serves every
     * puller at or below it, and one that asked for more (or for an index
     * never reached) asks again at its next try. */
    uint64_t cur = atomic_load(&g->ckpt_wanted);
    while (min_index != 0 && (cur == 0 || min_index < cur) &&
           !atomic_compare_exchange_weak(&g->ckpt_wanted, &cur, min_index)) {
    }
}

/* On the tick: a checkpoint a puller asked for, once this replica has
 * applied that far. */
static void group_checkpoint_on_demand(struct group *g, uint64_t now)
{
    uint64_t wanted = atomic_load(&g->ckpt_wanted);
    if (wanted == 0 || !group_keeps_checkpoints(g) || g->stopping ||
        now < g->ckpt_retry_at || raft_last_applied(&g->raft) < wanted) {
        return;
    }
    /* As a snapshot's: put off while the applier is busy, the next tick
     * tries again, so the loop thread waits tens of ms, not the queue. */
    uint64_t t0 = uv_hrtime();
    uint64_t deferred_ms = 0;
    if (!applier_drain_deferred(&g->applier, &g->checkpoint_defer, SNAPSHOT_DRAIN_BYTES, now,
                                SNAPSHOT_DEFER_MAX_MS, &deferred_ms)) {
        return;
    }
    uint64_t t1 = uv_hrtime();
    if (group_make_checkpoint(g, now) == 0) {
        /* Served even if the state machine's index is below it (entries
         * it does not apply, as the first configuration and barriers, count
         * in raft's): made again each tick otherwise. A lower request that
         * came meanwhile stays; a puller that needs more asks again. */
        atomic_compare_exchange_strong(&g->ckpt_wanted, &wanted, 0);
        log_info("group",
                 "event=checkpoint_on_demand kind=%s wanted_index=%" PRIu64
                 " applied_index=%" PRIu64 " deferred_ms=%" PRIu64 " drain_ms=%" PRIu64
                 " checkpoint_ms=%" PRIu64,
                 g->cfg.ops->kind, wanted, g->ckpt_made_index, deferred_ms, (t1 - t0) / 1000000,
                 (uv_hrtime() - t1) / 1000000);
    }
}

static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    struct group *g = fsm->data;
    uint64_t now = uv_now(&g->loop);
    if (now < g->ckpt_retry_at) {
        return RAFT_BUSY; /* the log is kept until the next try */
    }
    /* libraft snapshots at its last applied index: wait until the state
     * machine holds every entry up to it. The loop thread waits for all of
     * this, so each step's time is logged. */
    uint64_t t0 = uv_hrtime();
    uint64_t deferred_ms = 0;
    if (!applier_drain_deferred(&g->applier, &g->snapshot_defer, SNAPSHOT_DRAIN_BYTES, now,
                                SNAPSHOT_DEFER_MAX_MS, &deferred_ms)) {
        return RAFT_BUSY;
    }
    uint64_t t1 = uv_hrtime();
    int rv = g->cfg.ops->sync(g->cfg.sm);
    uint64_t t2 = uv_hrtime();
    if (rv != 0) {
        log_error("group", "event=snapshot_sync_failed code=%s retry_in_ms=%" PRIu64,
                  gs_error_name(rv), snapshot_backoff(g, now));
        return RAFT_IOERR;
    }
    /* A checkpoint asked for counts once this one would hold it: an index
     * not applied here yet (or never, if asked in error) must not make
     * every snapshot copy the WAL again. */
    uint64_t wanted = atomic_load(&g->ckpt_wanted);
    uint64_t applied = g->cfg.ops->applied_index(g->cfg.sm);
    if (group_keeps_checkpoints(g) &&
        (g->ckpt_made_ms == 0 || now - g->ckpt_made_ms >= GROUP_CHECKPOINT_EVERY_MS ||
         (wanted != 0 && wanted <= applied))) {
        /* A checkpoint that cannot be made now will likely fail on
         * demand too: keep the log instead, for replicas to catch up from. */
        if (group_make_checkpoint(g, now) != 0) {
            return RAFT_IOERR;
        }
    }
    uint64_t t3 = uv_hrtime();
    g->ckpt_backoff_ms = 0;
    Geoscale__SnapshotManifest m = GEOSCALE__SNAPSHOT_MANIFEST__INIT;
    m.format = MANIFEST_FORMAT;
    m.applied_index = g->cfg.ops->applied_index(g->cfg.sm);
    m.cell_id = g->cfg.group_id;
    size_t len = geoscale__snapshot_manifest__get_packed_size(&m);
    *bufs = raft_malloc(sizeof **bufs);
    if (*bufs == NULL) {
        return RAFT_NOMEM;
    }
    (*bufs)[0].base = raft_malloc(len > 0 ? len : 1);
    if ((*bufs)[0].base == NULL) {
        raft_free(*bufs);
        *bufs = NULL;
        return RAFT_NOMEM;
    }
    (*bufs)[0].len = geoscale__snapshot_manifest__pack(&m, (*bufs)[0].base);
    *n_bufs = 1;
    log_info("group",
             "event=snapshot kind=%s applied_index=%" PRIu64 " deferred_ms=%" PRIu64
             " drain_ms=%" PRIu64 " sync_ms=%" PRIu64 " checkpoint_ms=%" PRIu64,
             g->cfg.ops->kind, (uint64_t)m.applied_index, deferred_ms, (t1 - t0) / 1000000,
             (t2 - t1) / 1000000, (t3 - t2) / 1000000);
    return 0;
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    struct group *g = fsm->data;
    Geoscale__SnapshotManifest *m =
        geoscale__snapshot_manifest__unpack(NULL, buf->len, buf->base);
    int rv = 0;
    if (m == NULL || m->format != MANIFEST_FORMAT || m->cell_id != g->cfg.group_id) {
        log_error("group", "event=restore_bad_manifest");
        rv = RAFT_MALFORMED;
        goto out;
    }
    applier_drain(&g->applier);
    uint64_t have = g->cfg.ops->applied_index(g->cfg.sm);
    if (m->applied_index <= have) {
        log_info("group", "event=restore_skipped manifest_index=%" PRIu64 " db_index=%" PRIu64,
                 (uint64_t)m->applied_index, have);
        goto out;
    }
    if (g->incoming_dir == NULL || g->cfg.ops->rsm == NULL) {
        log_error("group",
                  "event=restore_refused manifest_index=%" PRIu64 " db_index=%" PRIu64
                  " detail=\"no incoming directory configured\"",
                  (uint64_t)m->applied_index, have);
        rv = RAFT_IOERR;
        goto out;
    }
    log_info("group", "event=restore_pull kind=%s manifest_index=%" PRIu64 " db_index=%" PRIu64,
             g->cfg.ops->kind, (uint64_t)m->applied_index, have);
    struct snapshot_pull pull = {
        .ops = g->cfg.ops,
        .sm = g->cfg.sm,
        .group_id = g->cfg.group_id,
        .self_id = g->cfg.node_id,
        .leader_id = group_leader(g),
        .peers = g->peers,
        .n_peers = g->cfg.n_peers,
        .incoming_dir = g->incoming_dir,
        .min_index = m->applied_index,
        .timeout_ms = 10000,
        .rounds = 5,
    };
    char errmsg[256];
    int prv = snapshot_pull(&pull, errmsg, sizeof errmsg);
    if (prv != 0) {
        log_error("group", "event=restore_failed manifest_index=%" PRIu64 " code=%s detail=\"%s\"",
                  (uint64_t)m->applied_index, gs_error_name(prv), errmsg);
        rv = RAFT_IOERR;
    }
out:
    if (m != NULL) {
        geoscale__snapshot_manifest__free_unpacked(m, NULL);
    }
    raft_free(buf->base);
    return rv;
}

/* ------------------------------------------------------------ writes */

static void proposal_free(struct proposal *p)
{
    free(p->results);
    free(p);
}

static void group_flush_writes(struct group *g);

static void proposal_apply_cb(struct raft_apply *apply, int status, void *result)
{
    (void)result;
    struct proposal *p = apply->data;
    struct group *g = p->g;

    /* Unlink from the in-flight FIFO (callbacks normally come in order, but
     * failures may not). */
    struct proposal **link = &g->inflight_head;
    struct proposal *prev = NULL;
    while (*link != NULL && *link != p) {
        prev = *link;
        link = &(*link)->next;
    }
    assert(*link == p);
    *link = p->next;
    if (g->inflight_tail == p) {
        g->inflight_tail = prev;
    }
    g->n_inflight--;

    /* Applied here: the applier answers the requests. Otherwise they were
     * not applied by this node, whether or not the entry commits later. */
    struct group_request *req = p->handed ? NULL : p->reqs;
    while (req != NULL) {
        struct group_request *next = req->next_in_batch;
        if (status == 0) {
            /* Committed but not handed to this node's FSM: cannot happen
             * unless an invariant broke. */
            log_error("group", "event=missing_result index=%llu",
                      (unsigned long long)apply->index);
            req_complete(g, req, GS_EINTERNAL);
        } else {
            req_complete(g, req, GS_EUNKNOWN);
        }
        req = next;
    }
    if (status != 0) {
        log_info("group", "event=proposal_failed index=%llu status=%s commands=%zu",
                 (unsigned long long)apply->index, raft_strerror(status), p->n);
    }
    proposal_free(p);
    group_refresh_status(g);
    if (!g->stopping) {
        group_flush_writes(g);
    }
}

static int req_not_leader_status(struct group *g)
{
    return group_leader(g) != 0 ? GS_ENOTLEADER : GS_EUNAVAILABLE;
}

/* Propose one entry with up to max_batch_commands pending writes. */
static void group_propose_batch(struct group *g)
{
    size_t max_cmds = g->cfg.max_batch_commands;
    size_t max_bytes = g->cfg.max_batch_bytes;
    size_t n = 0;
    size_t bytes = 0;
    struct group_request *last = NULL;
    for (struct group_request *r = g->pending_head; r != NULL; r = r->next_in_batch) {
        size_t cost = r->len + 32;
        if (n > 0 && (n >= max_cmds || bytes + cost > max_bytes)) {
            break;
        }
        n++;
        bytes += cost;
        last = r;
    }
    assert(n > 0);

    struct proposal *p = calloc(1, sizeof *p);
    Geoscale__CellCommand *cmds = calloc(n, sizeof *cmds);
    Geoscale__CellCommand **cmd_ptrs = calloc(n, sizeof *cmd_ptrs);
    struct cell_result *results = calloc(n, sizeof *results);
    void *entry = NULL;
    int status = GS_ENOMEM;
    if (p == NULL || cmds == NULL || cmd_ptrs == NULL || results == NULL) {
        goto fail;
    }

    Geoscale__CellBatch batch = GEOSCALE__CELL_BATCH__INIT;
    batch.proposer_id = g->cfg.node_id;
    batch.proposer_nonce = g->nonce;
    batch.proposal_seq = ++g->next_proposal_seq;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    batch.timestamp_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    batch.n_commands = n;
    batch.commands = cmd_ptrs;
    size_t i = 0;
    for (struct group_request *r = g->pending_head; i < n; r = r->next_in_batch, i++) {
        geoscale__cell_command__init(&cmds[i]);
        cmds[i].method = r->method;
        cmds[i].client_id = r->client_id;
        cmds[i].client_seq = r->client_seq;
        cmds[i].body.data = (uint8_t *)r->body;
        cmds[i].body.len = r->len;
        cmd_ptrs[i] = &cmds[i];
    }
    size_t len = entry_encoded_size(&batch);
    entry = raft_malloc(len);
    if (entry == NULL) {
        goto fail;
    }
    size_t written = entry_encode(&batch, entry);
    assert(written == len && len % 8 == 0);

    p->g = g;
    p->apply.data = p;
    p->n = n;
    p->results = results;
    struct raft_buffer buf = {.base = entry, .len = len};
    int rv = raft_apply(&g->raft, &p->apply, &buf, 1, proposal_apply_cb);
    if (rv != 0) {
        /* NOTLEADER and NOSPACE are refusals before submission: the entry
         * is still ours and nothing was proposed. Any other error comes
         * after libraft took (and may have freed) the entry and maybe
         * appended it: not ours to free, and the outcome is unknown. */
        if (rv == RAFT_NOTLEADER || rv == RAFT_NOSPACE) {
            raft_free(entry);
            status = rv == RAFT_NOTLEADER ? req_not_leader_status(g) : GS_EUNAVAILABLE;
        } else {
            status = GS_EUNKNOWN;
        }
        entry = NULL;
        log_info("group", "event=propose_refused reason=%s commands=%zu", raft_strerror(rv), n);
        goto fail;
    }

    /* Detach the batch from the pending list into the proposal. */
    p->reqs = g->pending_head;
    g->pending_head = last->next_in_batch;
    if (g->pending_head == NULL) {
        g->pending_tail = NULL;
    }
    last->next_in_batch = NULL;
    g->n_pending -= n;
    for (struct group_request *r = p->reqs; r != NULL; r = r->next_in_batch) {
        r->state = GROUP_REQ_PROPOSED;
    }
    if (g->inflight_tail != NULL) {
        g->inflight_tail->next = p;
    } else {
        g->inflight_head = p;
    }
    g->inflight_tail = p;
    g->n_inflight++;
    free(cmds);
    free(cmd_ptrs);
    return;

fail:
    /* The n requests fail: retryably if nothing was proposed, else with
     * an unknown outcome (a retry with the same key is applied once). */
    free(cmds);
    free(cmd_ptrs);
    free(results);
    free(p);
    for (size_t k = 0; k < n; k++) {
        struct group_request *r = g->pending_head;
        g->pending_head = r->next_in_batch;
        g->n_pending--;
        req_complete(g, r, status);
    }
    if (g->pending_head == NULL) {
        g->pending_tail = NULL;
    }
}

static void group_flush_writes(struct group *g)
{
    while (g->pending_head != NULL && g->n_inflight < g->cfg.max_inflight_entries) {
        if (raft_state(&g->raft) != RAFT_LEADER) {
            struct group_request *list = g->pending_head;
            g->pending_head = g->pending_tail = NULL;
            g->n_pending = 0;
            req_list_complete(g, list, req_not_leader_status(g));
            return;
        }
        group_propose_batch(g);
    }
}

/* ------------------------------------------------------------ reads */

static void group_maybe_read(struct group *g);

static void barrier_cb(struct raft_barrier *barrier, int status)
{
    struct group_barrier *b = barrier->data;
    struct group *g = b->g;
    struct group_request *list = b->reads;
    b->reads = NULL;
    b->inflight = false;
    assert(g->n_barriers > 0);
    g->n_barriers--;
    if (status == 0) {
        /* An entry of this term is committed: leader checks may serve the
         * term's next reads. */
        if (b->term == raft_current_term(&g->raft)) {
            g->term_committed = b->term;
        }
        atomic_fetch_add_explicit(&g->read_barriers, 1, memory_order_relaxed);
        /* Every entry committed before the barrier is with the applier. */
        group_push_reads(g, list, g->cfg.node_id);
    } else {
        req_list_complete(g, list, g->stopping ? GS_ESHUTDOWN : req_not_leader_status(g));
    }
    if (!g->stopping) {
        group_maybe_read(g);
    }
}

/* Propose a barrier for the reads waiting, if a slot is free. */
static void group_read_barrier(struct group *g)
{
    if (g->n_barriers >= GROUP_BARRIERS_INFLIGHT) {
        return; /* the next barrier_cb comes back here */
    }
    struct group_request *list = g->reads_waiting_head;
    g->reads_waiting_head = g->reads_waiting_tail = NULL;
    struct group_barrier *b = NULL;
    for (unsigned i = 0; i < GROUP_BARRIERS_INFLIGHT && b == NULL; i++) {
        if (!g->barriers[i].inflight) {
            b = &g->barriers[i];
        }
    }
    assert(b != NULL);
    b->g = g;
    b->req.data = b;
    b->term = raft_current_term(&g->raft);
    int rv = raft_barrier(&g->raft, &b->req, barrier_cb);
    if (rv != 0) {
        req_list_complete(g, list, rv == RAFT_NOTLEADER ? req_not_leader_status(g)
                                                         : GS_EUNAVAILABLE);
        return;
    }
    for (struct group_request *r = list; r != NULL; r = r->next_in_batch) {
        r->state = GROUP_REQ_PROPOSED;
    }
    b->reads = list;
    b->inflight = true;
    g->n_barriers++;
}

/* A leader check of `term` settled. Confirmed, and this node still leads
 * that term with read_index applied: the reads go to the applier. Else a
 * barrier decides for them (it fails if this node no longer leads). */
static void group_check_settled(struct group *g, uint64_t term, uint64_t read_index,
                                struct group_request *list, bool confirmed)
{
    if (confirmed && raft_state(&g->raft) == RAFT_LEADER &&
        raft_current_term(&g->raft) == term && raft_last_applied(&g->raft) >= read_index) {
        atomic_fetch_add_explicit(&g->read_checks, 1, memory_order_relaxed);
        group_push_reads(g, list, g->cfg.node_id);
        return;
    }
    log_debug("group", "event=leader_check_fallback kind=%s term=%" PRIu64 " confirmed=%d",
              g->cfg.ops->kind, term, confirmed);
    /* Ahead of the reads waiting: they arrived first. */
    struct group_request *tail = list;
    while (tail != NULL && tail->next_in_batch != NULL) {
        tail = tail->next_in_batch;
    }
    if (tail != NULL) {
        tail->next_in_batch = g->reads_waiting_head;
        if (g->reads_waiting_head == NULL) {
            g->reads_waiting_tail = tail;
        }
        g->reads_waiting_head = list;
    }
    g->term_committed = 0; /* the next batch takes a barrier */
}

static void check_cb(struct leader_check_round *round, bool confirmed)
{
    struct group_check *c = round->data;
    struct group *g = c->g;
    struct group_request *list = c->reads;
    c->reads = NULL;
    assert(g->n_checks > 0);
    g->n_checks--;
    group_check_settled(g, round->term, c->read_index, list, confirmed);
    if (!g->stopping) {
        group_maybe_read(g);
    }
}

/* Start a leader check for the reads waiting, if a slot is free. */
static void group_read_check(struct group *g)
{
    if (g->n_checks >= GROUP_BARRIERS_INFLIGHT) {
        return; /* the next check_cb comes back here */
    }
    struct group_check *c = NULL;
    for (unsigned i = 0; i < GROUP_BARRIERS_INFLIGHT && c == NULL; i++) {
        if (!g->checks[i].round.inflight) {
            c = &g->checks[i];
        }
    }
    assert(c != NULL);
    struct group_request *list = g->reads_waiting_head;
    g->reads_waiting_head = g->reads_waiting_tail = NULL;
    for (struct group_request *r = list; r != NULL; r = r->next_in_batch) {
        r->state = GROUP_REQ_PROPOSED;
    }
    uint64_t term = raft_current_term(&g->raft);
    c->g = g;
    c->round.data = c;
    c->read_index = raft_commit_index(&g->raft);
    int rv = leader_check_ask(g->checker, &c->round, &g->raft.configuration, term, check_cb);
    if (rv == 0) {
        c->reads = list;
        g->n_checks++;
        return;
    }
    group_check_settled(g, term, c->read_index, list, rv == 1);
}

static void group_maybe_read(struct group *g)
{
    if (g->reads_waiting_head == NULL) {
        return;
    }
    if (raft_state(&g->raft) != RAFT_LEADER) {
        struct group_request *list = g->reads_waiting_head;
        g->reads_waiting_head = g->reads_waiting_tail = NULL;
        req_list_complete(g, list, req_not_leader_status(g));
        return;
    }
    /* A configuration change in flight: its two quorums differ, the
     * barrier has no such question. */
    bool check = g->term_committed == raft_current_term(&g->raft) &&
                 g->raft.configuration_uncommitted_index == 0;
    if (check && g->checker == NULL) {
        int rv = leader_check_init(&g->checker, &g->loop, g->cfg.node_id, g->peers,
                                   g->cfg.n_peers, g->cfg.ops->checkpoint_group, g->cfg.group_id,
                                   g->cfg.election_timeout_ms);
        check = rv == 0;
    }
    if (!check) {
        group_read_barrier(g);
        return;
    }
    group_read_check(g);
    if (g->reads_waiting_head != NULL && g->term_committed == 0) {
        group_read_barrier(g); /* the check could not be made */
    }
}

/* ------------------------------------------------------------ local methods */

static void group_digest_reply(struct group *g, struct group_request *req, uint64_t applied_index,
                               uint8_t digest[32], uint64_t n_keys)
{
    Geoscale__StateDigestResponse resp = GEOSCALE__STATE_DIGEST_RESPONSE__INIT;
    resp.node_id = g->cfg.node_id;
    resp.applied_index = applied_index;
    resp.digest.data = digest;
    resp.digest.len = 32;
    resp.keys = n_keys;
    size_t len = geoscale__state_digest_response__get_packed_size(&resp);
    req->result.body = malloc(len);
    if (req->result.body == NULL) {
        req_complete(g, req, GS_ENOMEM);
        return;
    }
    req->result.len = geoscale__state_digest_response__pack(&resp, req->result.body);
    req_complete(g, req, 0);
}

/* A digest scanned on libuv's thread pool: the scan of a large state takes
 * seconds, which on the group's thread would stall heartbeats and cost
 * elections. */
struct digest_work {
    uv_work_t work;
    struct group *g;
    struct group_request *req;
    struct rsm_digest_job job;
};

static void digest_work_cb(uv_work_t *w)
{
    struct digest_work *dw = w->data;
    rsm_digest_run(&dw->job);
}

static void digest_after_cb(uv_work_t *w, int status)
{
    struct digest_work *dw = w->data;
    (void)status; /* never cancelled */
    if (dw->job.status != 0) {
        req_complete(dw->g, dw->req, dw->job.status);
    } else {
        group_digest_reply(dw->g, dw->req, dw->job.applied_index, dw->job.digest,
                           dw->job.n_keys);
    }
    free(dw);
}

static void group_state_digest(struct group *g, struct group_request *req)
{
    /* The state machine is this thread's once the applier is idle. */
    applier_drain(&g->applier);
    struct rsm *r = g->cfg.ops->rsm != NULL ? g->cfg.ops->rsm(g->cfg.sm) : NULL;
    if (r != NULL) {
        struct digest_work *dw = calloc(1, sizeof *dw);
        if (dw == NULL || rsm_digest_begin(r, &dw->job) != 0) {
            free(dw);
            req_complete(g, req, GS_ENOMEM);
            return;
        }
        dw->work.data = dw;
        dw->g = g;
        dw->req = req;
        int rv = uv_queue_work(&g->loop, &dw->work, digest_work_cb, digest_after_cb);
        assert(rv == 0); /* fails only for a NULL callback */
        (void)rv;
        return;
    }
    uint8_t digest[32];
    uint64_t n_keys = 0;
    int rv = g->cfg.ops->digest(g->cfg.sm, digest, &n_keys);
    if (rv != 0) {
        req_complete(g, req, rv);
        return;
    }
    group_digest_reply(g, req, g->cfg.ops->applied_index(g->cfg.sm), digest, n_keys);
}

/* ------------------------------------------------------------ inbox */

static void group_inbox_deliver(struct mailbox *box, struct mailbox_item *items)
{
    struct group *g = box->data;
    bool is_leader = raft_state(&g->raft) == RAFT_LEADER;
    struct group_request *local_head = NULL, *local_tail = NULL;
    while (items != NULL) {
        struct group_request *req = (struct group_request *)items;
        items = items->next;
        req->state = GROUP_REQ_QUEUED;
        req->next_in_batch = NULL;
        memset(&req->result, 0, sizeof req->result);
        req->leader_id = 0;
        if (g->stopping) {
            req_complete(g, req, GS_ESHUTDOWN);
            continue;
        }
        const struct method_info *m = method_lookup(req->method);
        if (m == NULL) {
            req_complete(g, req, GS_EUNIMPL);
            continue;
        }
        if (m->kind == METHOD_KIND_LOCAL) {
            if (req->method == GEOSCALE__METHOD__METHOD_STATE_DIGEST) {
                group_state_digest(g, req);
            } else {
                req_complete(g, req, GS_EUNIMPL);
            }
            continue;
        }
        if (m->kind == METHOD_KIND_READ_ANY ||
            (m->kind == METHOD_KIND_READ && g->cfg.unsafe_local_reads)) {
            /* Any replica, voter or standby, answers from its own state:
             * metadata reads are local in every region. With the testing
             * switch unsafe_local_reads, linearizable reads are served the
             * same way: possibly stale, on purpose. */
            if (local_tail != NULL) {
                local_tail->next_in_batch = req;
            } else {
                local_head = req;
            }
            local_tail = req;
            continue;
        }
        if (!is_leader) {
            req_complete(g, req, req_not_leader_status(g));
            continue;
        }
        if (m->kind == METHOD_KIND_WRITE) {
            if (g->pending_tail != NULL) {
                g->pending_tail->next_in_batch = req;
            } else {
                g->pending_head = req;
            }
            g->pending_tail = req;
            g->n_pending++;
        } else {
            if (g->reads_waiting_tail != NULL) {
                g->reads_waiting_tail->next_in_batch = req;
            } else {
                g->reads_waiting_head = req;
            }
            g->reads_waiting_tail = req;
        }
    }
    group_push_reads(g, local_head, group_leader(g));
    if (!g->stopping) {
        group_flush_writes(g);
        group_maybe_read(g);
    }
}

void group_submit(struct group *g, struct group_request *req)
{
    req->state = GROUP_REQ_NEW;
    if (!mailbox_post(&g->inbox, &req->item)) {
        /* The group is stopping: answer from the caller's thread. */
        memset(&req->result, 0, sizeof req->result);
        req->result.status = GS_ESHUTDOWN;
        req->leader_id = 0;
        req->state = GROUP_REQ_DONE;
        if (!mailbox_post(req->reply_box, &req->item)) {
            log_error("group", "event=reply_box_closed method=%u", req->method);
        }
    }
}

/* ------------------------------------------------------------ tick */

static void group_stop_close(struct group *g);

static void group_tick_cb(uv_timer_t *timer)
{
    struct group *g = timer->data;
    uint64_t now = uv_now(&g->loop);
    uint64_t push_wait_ns = applier_push_wait_ns(&g->applier);
    if (g->last_tick != 0 && now - g->last_tick >= GROUP_LATE_TICK_MS) {
        /* Nothing on this thread may block for long: libraft's timers run
         * here, and a leader that misses its heartbeats is replaced. Part
         * of it may be pushes waiting for a full applier queue; the
         * snapshots' waits are logged with each snapshot. */
        log_warn("group", "event=loop_blocked kind=%s ms=%" PRIu64 " push_wait_ms=%" PRIu64,
                 g->cfg.ops->kind, now - g->last_tick,
                 (push_wait_ns - g->last_tick_push_wait_ns) / 1000000);
    }
    g->last_tick = now;
    g->last_tick_push_wait_ns = push_wait_ns;
    group_checkpoint_on_demand(g, now);
    if (log_budget_update(&g->log_budget)) {
        raft_set_snapshot_threshold(&g->raft, g->log_budget.threshold);
        raft_set_snapshot_trailing(&g->raft, g->log_budget.trailing);
        /* Entries of varying size under load move the counts every few
         * seconds: one info line per LOG_BUDGET_LOG_MS at most. */
        bool info = g->log_budget_logged == 0 || now - g->log_budget_logged >= LOG_BUDGET_LOG_MS;
        log_emit(info ? LOG_INFO : LOG_DEBUG, "group",
               "event=log_budget kind=%s avg_entry_bytes=%" PRIu64
               " snapshot_threshold=%u snapshot_trailing=%u",
               g->cfg.ops->kind, g->log_budget.avg_entry, g->log_budget.threshold,
               g->log_budget.trailing);
        if (info) {
            g->log_budget_logged = now;
        }
    }
    if (g->transferring &&
        (raft_state(&g->raft) != RAFT_LEADER || now >= g->transfer_deadline)) {
        /* libraft does not call back when the leader steps down meanwhile
         * (no quorum left, e.g. the last node of a group to stop). */
        log_info("group", "event=transfer_abandoned node_id=%" PRIu64, g->cfg.node_id);
        group_stop_close(g);
        return;
    }
    group_refresh_status(g);
    /* Requests queued while leader must not wait forever after a step-down:
     * the next tick answers them. */
    if (raft_state(&g->raft) != RAFT_LEADER) {
        if (g->pending_head != NULL) {
            struct group_request *list = g->pending_head;
            g->pending_head = g->pending_tail = NULL;
            g->n_pending = 0;
            req_list_complete(g, list, req_not_leader_status(g));
        }
        if (g->reads_waiting_head != NULL) {
            struct group_request *list = g->reads_waiting_head;
            g->reads_waiting_head = g->reads_waiting_tail = NULL;
            req_list_complete(g, list, req_not_leader_status(g));
        }
    }
}

/* ------------------------------------------------------------ start/stop */

static void group_start_signal(struct group *g, int rv)
{
    pthread_mutex_lock(&g->start_lock);
    g->start_done = true;
    g->start_rv = rv;
    pthread_cond_signal(&g->start_cond);
    pthread_mutex_unlock(&g->start_lock);
}

static void group_raft_close_cb(struct raft *r)
{
    struct group *g = r->data;
    raft_uv_close(&g->io);
    raft_uv_tcp_close(&g->transport);
    g->raft_initialized = false;
}

/* The last step of a stop: close raft. Proposals and the barrier in flight
 * complete through their callbacks (with RAFT_SHUTDOWN) during raft_close. */
static void group_stop_close(struct group *g)
{
    g->transferring = false;
    uv_close((uv_handle_t *)&g->tick, NULL);
    uv_close((uv_handle_t *)&g->stop_async, NULL);
    group_refresh_status(g);
    raft_close(&g->raft, group_raft_close_cb);
}

static void group_transferred_cb(struct raft_transfer *req)
{
    struct group *g = req->data;
    if (!g->transferring) {
        return; /* given up on by the tick, raft is closing */
    }
    log_info("group", "event=transferred node_id=%" PRIu64 " leader_id=%" PRIu64,
             g->cfg.node_id, group_leader(g));
    group_stop_close(g);
}

static void group_stop_cb(uv_async_t *async)
{
    struct group *g = async->data;
    if (g->stopping) {
        return;
    }
    g->stopping = true;
    log_info("group", "event=stopping node_id=%" PRIu64, g->cfg.node_id);
    /* Requests not yet proposed were never applied: SHUTDOWN. */
    struct group_request *list = g->pending_head;
    g->pending_head = g->pending_tail = NULL;
    g->n_pending = 0;
    req_list_complete(g, list, GS_ESHUTDOWN);
    list = g->reads_waiting_head;
    g->reads_waiting_head = g->reads_waiting_tail = NULL;
    req_list_complete(g, list, GS_ESHUTDOWN);
    /* Reads waiting on a leader check: its answers are not waited for. */
    for (unsigned i = 0; i < GROUP_BARRIERS_INFLIGHT; i++) {
        struct group_check *c = &g->checks[i];
        if (c->round.inflight) {
            leader_check_abandon(&c->round);
            list = c->reads;
            c->reads = NULL;
            req_list_complete(g, list, GS_ESHUTDOWN);
        }
    }
    g->n_checks = 0;
    leader_check_close(g->checker);
    g->checker = NULL;
    mailbox_close(&g->inbox, NULL);
    /* A leader first hands over to the most up-to-date voter (libraft calls
     * back once the target leads, or after an election timeout), so a
     * planned stop costs the group no election timeout. */
    g->transfer.data = g;
    if (raft_state(&g->raft) == RAFT_LEADER &&
        raft_transfer(&g->raft, &g->transfer, 0, group_transferred_cb) == 0) {
        log_info("group", "event=transfer_leadership node_id=%" PRIu64, g->cfg.node_id);
        g->transferring = true;
        g->transfer_deadline = uv_now(&g->loop) + 2 * (uint64_t)g->cfg.election_timeout_ms;
        return;
    }
    group_stop_close(g);
}

/* raft_io.set_term, wrapped: group_term() answers the new term before it
 * is persisted, hence before this node votes or appends in it. */
static int group_set_term(struct raft_io *io, raft_term term)
{
    struct group *g = (struct group *)(void *)((char *)io - offsetof(struct group, io));
    atomic_store(&g->term_seen, term);
    return g->io_set_term(io, term);
}

uint64_t group_term(struct group *g)
{
    return atomic_load(&g->term_seen);
}

static int group_mkdir(const char *path)
{
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        return -errno;
    }
    return 0;
}

/* Set up raft on the group thread. Returns 0 or a GS_E* code with detail in
 * g->start_errmsg. */
static int group_setup(struct group *g)
{
    char *errmsg = g->start_errmsg;
    size_t errlen = sizeof g->start_errmsg;
    struct raft_configuration conf;
    int rv;

    rv = group_mkdir(g->raft_dir);
    if (rv != 0) {
        snprintf(errmsg, errlen, "cannot create raft dir %s: %s", g->raft_dir, strerror(-rv));
        return GS_EIO;
    }
    g->transport.version = 1;
    rv = raft_uv_tcp_init(&g->transport, &g->loop);
    if (rv != 0) {
        snprintf(errmsg, errlen, "raft_uv_tcp_init: %s", raft_strerror(rv));
        return GS_EIO;
    }
    /* Without TCP_NODELAY, pipelined appends wait for delayed ACKs. */
    tcp_nodelay_wrap(&g->nodelay, &g->transport);
    rv = raft_uv_init(&g->io, &g->loop, g->raft_dir, &g->nodelay.outer);
    if (rv != 0) {
        snprintf(errmsg, errlen, "raft_uv_init: %s", g->io.errmsg);
        raft_uv_tcp_close(&g->transport);
        return GS_EIO;
    }
    /* A torn write at the tail of the open segment after a crash is dropped
     * and the log loads; the entries lost were never acknowledged by this
     * node (appends complete only once durable). */
    raft_uv_set_auto_recovery(&g->io, true);
    g->io_set_term = g->io.set_term;
    g->io.set_term = group_set_term;
    /* Closing a segment written with kernel AIO destroys its AIO context
     * on this thread, which waits 40-70 ms for the kernel (measured in
     * bench/RESULTS.md, sixth round): larger segments close less often.
     * But raft_uv reports its free segment space (two prepared segments
     * plus what the open ones have left) to libraft in KiB in 16 bits, and
     * libraft refuses writes when that reads under 4 MiB: the space must
     * stay under 64 MiB, or it wraps. An open segment is followed by
     * another only once the next append does not fit in it, so all but
     * the last open segment are full up to less than one append (at most
     * max_batch_bytes, 1 MiB, on a leader): with 15 MiB segments the space
     * is at most 2 x 15 MiB + 15 MiB plus those remainders. */
    raft_uv_set_segment_size(&g->io, GROUP_SEGMENT_BYTES);

    g->fsm.version = 1;
    g->fsm.data = g;
    g->fsm.apply = fsm_apply;
    g->fsm.snapshot = fsm_snapshot;
    g->fsm.restore = fsm_restore;

    rv = raft_init(&g->raft, &g->io, &g->fsm, g->cfg.node_id, g->raft_address);
    if (rv != 0) {
        snprintf(errmsg, errlen, "raft_init: %s", raft_errmsg(&g->raft));
        raft_uv_close(&g->io);
        raft_uv_tcp_close(&g->transport);
        return GS_EIO;
    }
    g->raft.data = g;
    g->raft_initialized = true;

    raft_configuration_init(&conf);
    for (size_t i = 0; i < g->cfg.n_peers; i++) {
        int role = g->peers[i].role == GROUP_ROLE_STANDBY ? RAFT_STANDBY : RAFT_VOTER;
        rv = raft_configuration_add(&conf, g->peers[i].id, g->peers[i].raft_address, role);
        if (rv != 0) {
            raft_configuration_close(&conf);
            snprintf(errmsg, errlen, "raft configuration: peer %" PRIu64 ": %s", g->peers[i].id,
                     raft_strerror(rv));
            return GS_EINVAL;
        }
    }
    rv = raft_bootstrap(&g->raft, &conf);
    raft_configuration_close(&conf);
    if (rv != 0 && rv != RAFT_CANTBOOTSTRAP) {
        snprintf(errmsg, errlen, "raft_bootstrap: %s", raft_errmsg(&g->raft));
        return GS_EIO;
    }
    if (rv == 0) {
        log_info("group", "event=bootstrapped voters=%zu", g->cfg.n_peers);
    }

    unsigned seed;
    randombytes_buf(&seed, sizeof seed);
    raft_seed(&g->raft, seed);
    raft_set_election_timeout(&g->raft, g->cfg.election_timeout_ms);
    raft_set_heartbeat_timeout(&g->raft, g->cfg.heartbeat_timeout_ms);
    log_budget_init(&g->log_budget, (uint64_t)g->cfg.log_memory_mib << 20,
                    g->cfg.snapshot_threshold, g->cfg.snapshot_trailing);
    raft_set_snapshot_threshold(&g->raft, g->log_budget.threshold);
    raft_set_snapshot_trailing(&g->raft, g->log_budget.trailing);
    raft_set_pre_vote(&g->raft, true);
    raft_set_install_snapshot_timeout(&g->raft, GROUP_INSTALL_SNAPSHOT_TIMEOUT_MS);

    rv = raft_start(&g->raft);
    if (rv != 0) {
        snprintf(errmsg, errlen, "raft_start: %s", raft_errmsg(&g->raft));
        return GS_EIO;
    }
    /* The term loaded; later ones pass through group_set_term. */
    atomic_store(&g->term_seen, raft_current_term(&g->raft));
    return 0;
}

static void group_close_after_failed_setup(struct group *g)
{
    if (g->raft_initialized) {
        raft_close(&g->raft, group_raft_close_cb);
    }
    mailbox_close(&g->inbox, NULL);
    uv_close((uv_handle_t *)&g->tick, NULL);
    uv_close((uv_handle_t *)&g->stop_async, NULL);
    uv_run(&g->loop, UV_RUN_DEFAULT);
    uv_loop_close(&g->loop);
}

/* Name a thread "<what>-<kind>" (at most 15 characters, truncated), so
 * that top -H, perf and gdb tell a group's threads apart. */
static void group_name_thread(pthread_t t, const char *what, const char *kind)
{
    char name[16];
    snprintf(name, sizeof name, "%s-%s", what, kind);
    pthread_setname_np(t, name); /* best effort: only the name is lost */
}

static void *group_thread_main(void *arg)
{
    struct group *g = arg;
    group_name_thread(pthread_self(), "raft", g->cfg.ops->kind);
    int rv = uv_loop_init(&g->loop);
    if (rv != 0) {
        snprintf(g->start_errmsg, sizeof g->start_errmsg, "uv_loop_init: %s", uv_strerror(rv));
        group_start_signal(g, GS_ENOMEM);
        return NULL;
    }
    mailbox_init(&g->loop, &g->inbox, group_inbox_deliver);
    g->inbox.data = g;
    uv_async_init(&g->loop, &g->stop_async, group_stop_cb);
    g->stop_async.data = g;
    uv_timer_init(&g->loop, &g->tick);
    g->tick.data = g;

    /* Read before the applier owns the state machine. */
    uint64_t applied = g->cfg.ops->applied_index(g->cfg.sm);
    rv = applier_start(&g->applier, apply_run, g, APPLIER_MAX_ITEMS, APPLIER_MAX_BYTES,
                       APPLIER_FOLLOWER_NICE);
    if (rv != 0) {
        snprintf(g->start_errmsg, sizeof g->start_errmsg, "cannot start the applier thread");
    } else {
        group_name_thread(g->applier.thread, "apply", g->cfg.ops->kind);
        rv = group_setup(g);
    }
    if (rv != 0) {
        group_close_after_failed_setup(g);
        applier_stop(&g->applier);
        group_start_signal(g, rv);
        return NULL;
    }
    uv_timer_start(&g->tick, group_tick_cb, GROUP_TICK_MS, GROUP_TICK_MS);
    group_refresh_status(g);
    log_info("group",
             "event=started kind=%s group_id=%u node_id=%" PRIu64 " raft_address=%s applied=%" PRIu64,
             g->cfg.ops->kind, g->cfg.group_id, g->cfg.node_id, g->raft_address, applied);
    group_start_signal(g, 0);

    uv_run(&g->loop, UV_RUN_DEFAULT);
    /* Entries committed and handed over are applied and answered. */
    applier_stop(&g->applier);
    rv = uv_loop_close(&g->loop);
    if (rv != 0) {
        log_error("group", "event=loop_close_failed reason=%s", uv_strerror(rv));
    }
    return NULL;
}

static void group_free(struct group *g)
{
    pthread_mutex_destroy(&g->start_lock);
    pthread_cond_destroy(&g->start_cond);
    pthread_mutex_destroy(&g->status_lock);
    free(g->peers);
    free(g->raft_dir);
    free(g->checkpoint_dir);
    free(g->incoming_dir);
    free(g->region);
    free(g);
}

int group_start(const struct group_config *cfg, struct group **out, char *errmsg, size_t errmsg_len)
{
    struct group *g = calloc(1, sizeof *g);
    if (g == NULL) {
        snprintf(errmsg, errmsg_len, "out of memory");
        return GS_ENOMEM;
    }
    g->cfg = *cfg;
    g->peers = calloc(cfg->n_peers, sizeof *g->peers);
    g->raft_dir = strdup(cfg->raft_dir);
    g->region = strdup(cfg->region != NULL ? cfg->region : "");
    g->checkpoint_dir = cfg->checkpoint_dir != NULL ? strdup(cfg->checkpoint_dir) : NULL;
    g->incoming_dir = cfg->incoming_dir != NULL ? strdup(cfg->incoming_dir) : NULL;
    pthread_mutex_init(&g->start_lock, NULL);
    pthread_cond_init(&g->start_cond, NULL);
    pthread_mutex_init(&g->status_lock, NULL);
    if (g->peers == NULL || g->raft_dir == NULL || g->region == NULL ||
        (cfg->checkpoint_dir != NULL && g->checkpoint_dir == NULL) ||
        (cfg->incoming_dir != NULL && g->incoming_dir == NULL)) {
        group_free(g);
        snprintf(errmsg, errmsg_len, "out of memory");
        return GS_ENOMEM;
    }
    memcpy(g->peers, cfg->peers, cfg->n_peers * sizeof *g->peers);
    g->cfg.peers = g->peers;
    g->cfg.raft_dir = g->raft_dir;
    g->cfg.region = g->region;
    g->cfg.checkpoint_dir = g->checkpoint_dir;
    g->cfg.incoming_dir = g->incoming_dir;
    bool found = false;
    for (size_t i = 0; i < cfg->n_peers; i++) {
        if (cfg->peers[i].id == cfg->node_id) {
            snprintf(g->raft_address, sizeof g->raft_address, "%s", cfg->peers[i].raft_address);
            g->self_role = cfg->peers[i].role;
            found = true;
        }
    }
    if (!found) {
        group_free(g);
        snprintf(errmsg, errmsg_len, "node %" PRIu64 " is not among the group's peers",
                 cfg->node_id);
        return GS_EINVAL;
    }
#define DEFAULT(field, value)  \
    if (g->cfg.field == 0) {   \
        g->cfg.field = value;  \
    }
    DEFAULT(election_timeout_ms, GROUP_DEFAULT_ELECTION_TIMEOUT_MS);
    DEFAULT(heartbeat_timeout_ms, GROUP_DEFAULT_HEARTBEAT_TIMEOUT_MS);
    DEFAULT(snapshot_threshold, 4096);
    DEFAULT(snapshot_trailing, 8192);
    DEFAULT(log_memory_mib, 512);
    DEFAULT(max_batch_commands, 512);
    DEFAULT(max_batch_bytes, 1024 * 1024);
    DEFAULT(max_inflight_entries, 32);
#undef DEFAULT
    randombytes_buf(&g->nonce, sizeof g->nonce);
    g->status.node_id = cfg->node_id;
    g->status.state = "unavailable";
    g->status.kind = cfg->ops->kind;
    g->status.group_id = cfg->group_id;
    g->status.role = g->self_role == GROUP_ROLE_STANDBY ? "standby" : "voter";

    int rv = pthread_create(&g->thread, NULL, group_thread_main, g);
    if (rv != 0) {
        group_free(g);
        snprintf(errmsg, errmsg_len, "cannot start group thread: %s", strerror(rv));
        return GS_ENOMEM;
    }
    pthread_mutex_lock(&g->start_lock);
    while (!g->start_done) {
        pthread_cond_wait(&g->start_cond, &g->start_lock);
    }
    rv = g->start_rv;
    pthread_mutex_unlock(&g->start_lock);
    if (rv != 0) {
        pthread_join(g->thread, NULL);
        snprintf(errmsg, errmsg_len, "%s", g->start_errmsg);
        group_free(g);
        return rv;
    }
    *out = g;
    return 0;
}

void group_get_status(struct group *g, struct group_status *out)
{
    pthread_mutex_lock(&g->status_lock);
    *out = g->status;
    pthread_mutex_unlock(&g->status_lock);
    out->read_checks = atomic_load_explicit(&g->read_checks, memory_order_relaxed);
    out->read_barriers = atomic_load_explicit(&g->read_barriers, memory_order_relaxed);
}

void group_stop(struct group *g)
{
    if (g == NULL) {
        return;
    }
    uv_async_send(&g->stop_async);
    pthread_join(g->thread, NULL);
    log_info("group", "event=stopped node_id=%" PRIu64, g->cfg.node_id);
    group_free(g);
}
