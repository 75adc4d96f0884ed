/*
 * End-to-end harness for multi-region clusters: real geoscaled processes on
 * loopback, started from one generated cluster file (docs/CLUSTER.md).
 *
 * The layout is the one of `geoscale cluster up`: every region has
 * `cells_per_region` cells of three nodes; the first node of each of the
 * first three regions is a directory voter and a metadata voter; the first
 * node of every other region is a metadata standby. Cell ids are 1, 2, ...
 * in region order, node ids 1, 2, ... in cell order.
 *
 * The harness spawns the nodes itself (`geoscaled --cluster FILE --node N`)
 * rather than through `geoscale cluster up`, so that it owns their pids:
 * children are reaped with waitpid and get PR_SET_PDEATHSIG(SIGKILL), so a
 * test killed by its timeout leaves no node behind, and a single node or a
 * whole region can be stopped, killed and started again.
 *
 * A `struct mr_cluster` owns a temporary directory holding the cluster file,
 * one data directory per node and one log per node (stdout and stderr,
 * appended across restarts). Failure handling is that of harness.h: the test
 * sets `c->passed = 1` last; mr_destroy() kills what still runs and removes
 * the directory if the flag is set, else keeps it and prints the tail of
 * every node log.
 *
 * Every wait is bounded. Functions return 0 or a negative GS_E* code
 * (GS_ETIMEOUT when a wait ran out) and print one line saying what failed.
 */
#ifndef GS_TESTS_E2E_CLUSTER_HARNESS_H
#define GS_TESTS_E2E_CLUSTER_HARNESS_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "harness.h"
#include "metadata.pb-c.h"

#define MR_MAX_REGIONS 4
#define MR_MAX_CELLS_PER_REGION 2
#define MR_MAX_CELLS (MR_MAX_REGIONS * MR_MAX_CELLS_PER_REGION)
#define MR_MAX_NODES (MR_MAX_CELLS * 3)
#define MR_REGION_MAX 16

enum mr_group_kind {
    MR_GROUP_CELL,
    MR_GROUP_DIRECTORY,
    MR_GROUP_METADATA,
};

enum mr_role {
    MR_ROLE_NONE,
    MR_ROLE_VOTER,
    MR_ROLE_STANDBY,
};

struct mr_node {
    uint64_t id;
    int region;          /* index into mr_cluster.regions */
    uint32_t cell_id;    /* every node of this layout is in one cell */
    int directory_voter; /* 1: a directory voter */
    enum mr_role metadata;
    char client_address[32];
    char cell_raft_address[32];
    char directory_raft_address[32]; /* "" unless a directory voter */
    char metadata_raft_address[32];  /* "" unless a metadata voter or standby */
    char data_dir[PATH_MAX];
    char log_path[PATH_MAX];
    pid_t pid;       /* 0 = not running */
    long log_offset; /* log size when the current process started */
    int starts;
};

struct mr_cluster {
    char name[64];
    char dir[512];
    char file[600]; /* dir/cluster.json */
    char regions[MR_MAX_REGIONS][MR_REGION_MAX];
    int n_regions;
    int cells_per_region;
    int n_cells;
    int n_nodes;
    struct mr_node nodes[MR_MAX_NODES];
    int compression; /* "rocksdb": {"compression": ...} of the file */
    int passed;      /* set by the test when it got to its end */
};

/* One group of the cluster: a cell (id) or the directory or metadata group. */
struct mr_group {
    enum mr_group_kind kind;
    uint32_t cell_id; /* MR_GROUP_CELL only */
};

/*
 * Create the temporary directory, pick free loopback ports for every address
 * and write the cluster file: regions[0..n_regions) (3..MR_MAX_REGIONS),
 * cells_per_region cells of three nodes each, RocksDB compression as given.
 * No process is started. Returns 0, GS_EINVAL or GS_EIO.
 */
int mr_init(struct mr_cluster *c, const char *name, const char *const *regions, int n_regions,
            int cells_per_region, int compression);

/*
 * Start every node, wait until each logged event=ready, then until every
 * group has a leader that all its running members name. Bounded by
 * timeout_ms in total.
 */
int mr_start(struct mr_cluster *c, unsigned timeout_ms);

/* Fork/exec node i (same file and data directory on a restart). */
int mr_node_start(struct mr_cluster *c, int i);

/* Wait until node i's log, since its last start, has event=ready. */
int mr_node_wait_ready(struct mr_cluster *c, int i, unsigned timeout_ms);

/* 1 if node i runs (reaps and reports it if it has exited). */
int mr_node_alive(struct mr_cluster *c, int i);

/* Send sig to node i, reap it within timeout_ms; on a timeout SIGKILL it.
 * *wstatus (may be NULL) receives its wait status. */
int mr_node_stop(struct mr_cluster *c, int i, int sig, unsigned timeout_ms, int *wstatus);

/* Node indexes of region r into idx (at most cap); returns their number. */
int mr_region_nodes(const struct mr_cluster *c, int r, int *idx, int cap);

/* Index of a region name, or -1. */
int mr_region_index(const struct mr_cluster *c, const char *region);

/* Node index of node_id, or -1. */
int mr_index_of(const struct mr_cluster *c, uint64_t node_id);

/* Every group (cells in id order, then directory, metadata) into out
 * (room for MR_MAX_CELLS + 2); returns their number. */
int mr_groups(const struct mr_cluster *c, struct mr_group *out);

/* Members (node indexes) of group g into idx; returns their number. */
int mr_group_members(const struct mr_cluster *c, struct mr_group g, int *idx, int cap);

/* "cell 3", "directory", "metadata". */
void mr_group_label(struct mr_group g, char *buf, size_t len);

/* A blocking client pinned to node i: no retry, timeout_ms per call. */
int mr_node_sync(struct mr_cluster *c, int i, unsigned timeout_ms, gs_sync **out);

/* One pinned call to node i. On 0, *resp is the unpacked answer (free with
 * protobuf_c_message_free_unpacked); resp may be NULL to drop it. */
int mr_call(struct mr_cluster *c, int i, unsigned timeout_ms, uint16_t method,
            const ProtobufCMessage *req, ProtobufCMessage **resp);

/* CreateUser through node i (pinned: that node runs the signup). On 0,
 * *user_id receives the new user's id. */
int mr_create_user(struct mr_cluster *c, int i, unsigned timeout_ms,
                   const Geoscale__CreateUserRequest *req, uint64_t *user_id);

/* NodeStatus of node i; free with geoscale__node_status_response__free_unpacked. */
int mr_node_status(struct mr_cluster *c, int i, unsigned timeout_ms,
                   Geoscale__NodeStatusResponse **out);

/* The GroupStatus of kind (and cell id) in st, or NULL. */
const Geoscale__GroupStatus *mr_find_group(const Geoscale__NodeStatusResponse *st,
                                           struct mr_group g);

/* MetadataGet of user_id on node i; free with
 * geoscale__metadata_get_response__free_unpacked. */
int mr_metadata_get(struct mr_cluster *c, int i, unsigned timeout_ms, uint64_t user_id,
                    Geoscale__MetadataGetResponse **out);

/*
 * Wait until every group has a member reporting itself leader and every
 * running member of the group names that leader. Groups with no running
 * member are skipped; groups with running members but no quorum fail the
 * wait by its timeout.
 */
int mr_wait_leaders(struct mr_cluster *c, unsigned timeout_ms);

/*
 * Wait until every group has converged over its running members: one
 * leader that all name, the same commit and applied index (NodeStatus), and
 * for cells the same StateDigest (applied index and digest). Prints the last
 * views on a timeout.
 */
int mr_wait_converged(struct mr_cluster *c, unsigned timeout_ms);

/*
 * Send sig to every running node of idx[0..n) (all nodes if idx is NULL) at
 * once, then reap them within timeout_ms in total; those still running are
 * SIGKILLed. Returns 0, or GS_ETIMEOUT if one had to be killed, or GS_EIO
 * if one exited with a non-zero status after SIGTERM.
 */
int mr_stop_nodes(struct mr_cluster *c, const int *idx, int n, int sig, unsigned timeout_ms);

/* A condition on a user's metadata as a replica answers it. */
typedef int (*mr_meta_pred)(void *arg, const Geoscale__UserMetadata *m);

/*
 * Ask node i for user_id's metadata (MetadataGet) until the answer has a
 * row satisfying pred (NULL: any row), at most timeout_ms. *elapsed_ms (may
 * be NULL) receives the time it took; *last_status (may be NULL) the status
 * of the last call (0 when a row came back that pred refused).
 */
int mr_wait_metadata(struct mr_cluster *c, int i, uint64_t user_id, mr_meta_pred pred, void *arg,
                     unsigned timeout_ms, double *elapsed_ms, int *last_status);

/* Kill every running node with SIGKILL and reap them. */
void mr_kill_all(struct mr_cluster *c);

/* Print where the logs are and the last `lines` lines of every node log. */
void mr_dump_logs(const struct mr_cluster *c, int lines);

/* Kill what still runs; remove the directory if c->passed, else keep it and
 * dump the logs. Safe on a zeroed or partly initialised cluster. */
void mr_destroy(struct mr_cluster *c);

/* cmocka fixtures: *state = a new cluster set up by mr_init() (0), or -1
 * with nothing left behind; and its mr_destroy() and free. */
int mr_fixture_new(void **state, const char *name, const char *const *regions, int n_regions,
                   int cells_per_region, int compression);
int mr_fixture_free(void **state);

/* ------------------------------------------------------------------ scans */

/*
 * Called for every occurrence of the needle: path of the file, offset of the
 * match, the bytes from the match to the end of the file (at least the
 * needle) for the caller to parse what follows.
 */
typedef void (*mr_scan_hit_cb)(void *arg, const char *path, size_t offset, const uint8_t *at,
                               size_t left);

struct mr_scan_stats {
    size_t files;
    uint64_t bytes;
    size_t hits;
    size_t unreadable; /* files that vanished or could not be read */
};

/*
 * Read every regular file under root (recursively, symlinks not followed)
 * and report every occurrence of needle[0..len) to cb. Stats are added to
 * *stats. Returns 0, or GS_EIO if root cannot be walked.
 */
int mr_scan_tree(const char *root, const uint8_t *needle, size_t len, mr_scan_hit_cb cb, void *arg,
                 struct mr_scan_stats *stats);

#endif /* GS_TESTS_E2E_CLUSTER_HARNESS_H */
