/*
 * End-to-end harness: a cell of three real geoscaled processes on loopback.
 *
 * A `struct cluster` owns a temporary directory holding, per node, its JSON
 * config, its data directory and its log (the node's stderr and stdout,
 * appended across restarts). It starts, stops, kills and restarts nodes, asks
 * them for their status and state digest over the client protocol, and runs
 * many requests through the asynchronous client with a bounded window.
 *
 * Every wait is bounded by an explicit timeout; every child is reaped with
 * waitpid. Children get PR_SET_PDEATHSIG(SIGKILL), so a test process killed
 * by a timeout does not leave nodes behind.
 *
 * Failure handling: a test sets `c->passed = 1` as its last statement.
 * cluster_destroy() then kills what still runs and removes the directory; if
 * the flag is not set it keeps the directory and prints where the logs are and
 * the tail of each node log.
 *
 * Functions return 0 or a negative GS_E* code (GS_ETIMEOUT when a bounded wait
 * ran out) and print one short line saying what went wrong.
 */
#ifndef GS_TESTS_E2E_HARNESS_H
#define GS_TESTS_E2E_HARNESS_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "geoscale.pb-c.h"
#include "geoscale/client.h"
#include "geoscale/errors.h"

#define CLUSTER_NODES 3

struct cluster_node {
    uint32_t node_id;        /* 1..CLUSTER_NODES */
    char raft_address[32];   /* "127.0.0.1:P" */
    char client_address[32]; /* "127.0.0.1:Q" */
    char config_path[PATH_MAX];
    char data_dir[PATH_MAX];
    char log_path[PATH_MAX];
    pid_t pid;       /* 0 = not running */
    long log_offset; /* log size when the current process started */
    int starts;      /* how many times it was started */
};

struct cluster {
    char name[64];
    char dir[512]; /* short enough that every path below it fits */
    struct cluster_node nodes[CLUSTER_NODES];
    int passed; /* set by the test when it got to its end */
    char raft_extra[160]; /* appended inside the config's "raft" object, e.g.
                             ",\"snapshot_threshold\":64"; set before
                             cluster_init, which keeps it */
};

/* Progress line on stdout, prefixed with "# " and flushed. */
void e2e_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Milliseconds on the monotonic clock. */
double e2e_now_ms(void);

/* The contents of the file at path from byte offset on (a node's log since
 * its current start), NUL-terminated; NULL if unreadable. The caller frees. */
char *e2e_read_from(const char *path, long offset);

/* Sleep ms milliseconds. */
void e2e_sleep_ms(unsigned ms);

/* Print the last `lines` lines of the log at path (at most its last MiB),
 * headed "# --- last N lines of PATH LABEL:". */
void e2e_print_log_tail(const char *path, const char *label, int lines);

/* Remove dir and everything under it (symlinks not followed); says so if
 * it cannot. */
void e2e_remove_tree(const char *dir);

/*
 * Create the directory, pick six free loopback ports and write the three
 * configs. No process is started. Returns 0 or GS_EIO.
 */
int cluster_init(struct cluster *c, const char *name);

/* Start every node and wait (bounded by timeout_ms in total) until each
 * logged event=ready and all agree on one leader. */
int cluster_start(struct cluster *c, unsigned timeout_ms);

/* Fork/exec node i with its config (same data directory on a restart). Does
 * not wait for readiness. */
int cluster_node_start(struct cluster *c, int i);

/* Wait until node i's log, since its last start, has a line with
 * event=ready. Fails early if the process exits. */
int cluster_node_wait_ready(struct cluster *c, int i, unsigned timeout_ms);

/* Start node i again (same config and data directory) and wait until it
 * logged event=ready. */
int cluster_node_restart(struct cluster *c, int i, unsigned timeout_ms);

/* Send sig to node i (if running). */
int cluster_node_signal(struct cluster *c, int i, int sig);

/*
 * Wait until node i exits, reap it and put its wait status into *wstatus
 * (may be NULL). GS_ETIMEOUT if it is still running after timeout_ms.
 */
int cluster_node_reap(struct cluster *c, int i, unsigned timeout_ms, int *wstatus);

/* Signal, then reap within timeout_ms; on a timeout, SIGKILL and reap. */
int cluster_node_stop(struct cluster *c, int i, int sig, unsigned timeout_ms, int *wstatus);

/* 1 if node i's process is running (reaps it if it has exited, and logs
 * how it exited). */
int cluster_node_alive(struct cluster *c, int i);

/* Node index of node_id, or -1. */
int cluster_index_of(const struct cluster *c, uint64_t node_id);

/* CellStatus of node i over a pinned connection. The caller frees *out with
 * geoscale__cell_status_response__free_unpacked(*out, NULL). */
int cluster_node_status(struct cluster *c, int i, unsigned timeout_ms,
                        Geoscale__CellStatusResponse **out);

/* StateDigest of node i; free with geoscale__state_digest_response__free_unpacked. */
int cluster_node_digest(struct cluster *c, int i, unsigned timeout_ms,
                        Geoscale__StateDigestResponse **out);

/*
 * Wait until one running node says it is the leader and every running node
 * names it as leader; *leader receives its index. Bounded by timeout_ms.
 */
int cluster_wait_leader(struct cluster *c, unsigned timeout_ms, int *leader);

/*
 * Wait until every running node reports the same applied index in CellStatus,
 * the same applied index in StateDigest and the same digest. On success
 * *applied_index (may be NULL) receives the common CellStatus index, digest
 * (may be NULL, 32 bytes) the digest, *keys (may be NULL) the key count. On a
 * timeout the last views are printed.
 */
int cluster_wait_converged(struct cluster *c, unsigned timeout_ms, uint64_t *applied_index,
                           uint8_t digest[32], uint64_t *keys);

/* Kill every running node with SIGKILL and reap them. */
void cluster_kill_all(struct cluster *c);

/* Print the log directory and the last `lines` lines of every node log. */
void cluster_dump_logs(const struct cluster *c, int lines);

/* Kill what still runs; remove the directory if c->passed, else keep it and
 * dump the logs. Safe on a zeroed or partly initialised cluster. */
void cluster_destroy(struct cluster *c);

/* ------------------------------------------------------------ request runs */

/* One request of a run. The run owns nothing: req is the caller's, resp is
 * malloc'd by the run and freed by e2e_ops_free(). */
struct e2e_op {
    uint16_t method;
    uint8_t *req;
    size_t req_len;
    int issued; /* the request was handed to the client */
    int done;   /* its callback ran */
    int status; /* 0 or a negative GS_E* code, valid when done */
    uint32_t leader_id;
    uint8_t *resp; /* packed response message when status == 0 */
    size_t resp_len;
    void *user; /* free for the caller */
};

struct e2e_run_options {
    const char *const *seeds;
    size_t n_seeds;
    struct gs_client_options client;
    unsigned window;      /* requests in flight at most; 0 = 64 */
    unsigned deadline_ms; /* bound for the whole run */
    /* Called after each completion with the number of completions so far;
     * return 1 to stop issuing new requests (those in flight still finish). */
    int (*on_done)(void *arg, size_t n_done, size_t n_inflight);
    void *arg;
};

struct e2e_run_result {
    size_t issued;
    size_t done;
    size_t ok;               /* completed with status 0 */
    size_t stopped_inflight; /* requests in flight when on_done said stop */
    double elapsed_ms;
    int deadline_hit;
};

/*
 * Run ops in order through one asynchronous client on a private loop, at most
 * `window` in flight. Returns 0 when the run ended (every issued request
 * completed, the remaining ones not issued if on_done stopped it), or a
 * negative code if the client could not be opened. Never longer than
 * deadline_ms plus the client's close.
 */
int e2e_run(struct e2e_op *ops, size_t n, const struct e2e_run_options *opts,
            struct e2e_run_result *res);

/* Pack a message into a malloc'd buffer. */
int e2e_pack(const ProtobufCMessage *m, uint8_t **buf, size_t *len);

/* Free the req and resp buffers of n ops (not the array). */
void e2e_ops_free(struct e2e_op *ops, size_t n);

/* A blocking client pinned to node i (timeout_ms per call, no retry). */
int cluster_node_sync(struct cluster *c, int i, unsigned timeout_ms, gs_sync **out);

#endif /* GS_TESTS_E2E_HARNESS_H */
