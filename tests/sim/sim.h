/*
 * Deterministic simulation of one cell: libraft's raft_fixture (N servers in
 * one thread on a simulated clock) over the real cell state machine
 * (engine/cell_fsm.h, one RocksDB per server).
 *
 * One run is a function of its seed: the seed picks the cluster size, the
 * fault schedule (partitions, one-way loss, latencies, kills and revivals,
 * disk faults) and the workload (CreateUser, Follow, Unfollow, Block,
 * Unblock, UpdateUser with expected_version, SetSettings, and retries of
 * commands whose outcome was unknown, under the same idempotency key).
 *
 * Checks of a run (a failed one is a violation in the report; the run goes
 * on to the end so the report is complete):
 *   - log: every server applies entries at consecutive indexes (a snapshot
 *     install may skip ahead) and every entry it applies at an index has the
 *     bytes every other server applied at that index (State Machine Safety);
 *   - ack: the entry a leader applied for its own proposal is that proposal;
 *     an acknowledged CreateUser is readable by username with the acked
 *     user_id on every live server at the end, an acknowledged UpdateUser's
 *     version is not undone, and an idempotent retry gets the first answer;
 *   - convergence: once every fault is healed, every server that can still
 *     serve reaches the same applied index and the same cell_fsm_digest, and
 *     a fresh database that applies the committed log in order (the
 *     reference replay) has that digest too.
 */
#ifndef GS_TESTS_SIM_H
#define GS_TESTS_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What a test may break on purpose, to prove the checks catch it. */
enum sim_corruption {
    SIM_CORRUPT_NONE = 0,
    /* Server 0 records the first command entry it applies at index >= 8 but
     * does not apply it to its database: the log check passes and the
     * convergence check must fail. */
    SIM_CORRUPT_SKIP_APPLY,
    /* Server 0 records a wrong hash for that entry (and applies it): the log
     * check must fail. */
    SIM_CORRUPT_LOG_HASH,
};

struct sim_config {
    uint64_t seed;
    unsigned n_servers;          /* 3 or 5; 0 = chosen by the seed */
    unsigned duration_ms;        /* simulated time under faults; 0 = by seed */
    unsigned snapshot_threshold; /* entries between snapshots; 0 = default */
    unsigned snapshot_trailing;  /* entries kept after a snapshot; 0 = default */
    bool faults;                 /* inject faults (else: a healthy cluster) */
    /* Also make one raft I/O call fail now and then (raft_fixture_io_fault).
     * Off by default: libraft 0.22.1's legacy layer does not survive a
     * failed append on the receive path (double free of the entries, then
     * assert(rv == 0) in recvCb), so such a run aborts in libraft. */
    bool io_faults;
    enum sim_corruption corrupt;
    const char *base_dir;        /* where the run's temp dir goes; NULL = default */
    bool verbose;                /* print the fault schedule as it happens */
};

#define SIM_MAX_VIOLATIONS 8

enum sim_check {
    SIM_CHECK_LOG = 1 << 0,         /* state machine safety of applied entries */
    SIM_CHECK_ACK = 1 << 1,         /* acknowledged commands */
    SIM_CHECK_CONVERGENCE = 1 << 2, /* applied index and digests after healing */
    SIM_CHECK_HARNESS = 1 << 3,     /* the simulation itself failed (I/O, ...) */
};

struct sim_report {
    /* What happened. */
    unsigned n_servers;
    uint64_t sim_ms;          /* simulated time of the whole run */
    uint64_t proposed;        /* entries handed to raft_apply */
    uint64_t acked;           /* of which acknowledged (status 0) */
    uint64_t commands_acked;  /* commands in acknowledged entries */
    uint64_t applied_entries; /* entries applied, summed over servers */
    uint64_t snapshots;       /* snapshots taken, summed over servers */
    uint64_t installs;        /* checkpoints installed by restore() */
    uint64_t restores_skipped;/* restore() calls with a manifest not newer */
    uint64_t faults;          /* fault events injected */
    uint64_t kills;
    uint64_t late_apply_failures; /* raft_apply failed after taking the entry */
    uint64_t elections;       /* terms in which some server became leader */
    uint64_t final_index;     /* common applied index at the end */
    unsigned unavailable;     /* servers lost to injected disk faults */

    /* What was wrong: a bitmask of enum sim_check and the first violations. */
    unsigned failed;
    unsigned n_violations;
    char violations[SIM_MAX_VIOLATIONS][256];
};

/*
 * Run one simulation. Everything lives in a fresh directory under
 * cfg->base_dir (default: $GEOSCALE_SIM_DIR, else $TMPDIR, else /tmp),
 * removed at the end unless the run failed (then its path is printed). Returns 0 if every check passed, else 1 with
 * report->failed set; report may not be NULL.
 */
int sim_run(const struct sim_config *cfg, struct sim_report *report);

/* Print the report's summary and violations to stderr in one block. */
void sim_report_print(const struct sim_config *cfg, const struct sim_report *report);

#endif /* GS_TESTS_SIM_H */
