/*
 * The cell under measurement: three real geoscaled processes on loopback,
 * on top of the end-to-end harness (tests/e2e/harness.h), which owns the
 * temporary directory, the ports, the node logs and the CellStatus /
 * StateDigest queries.
 *
 * What this adds to the harness, and why:
 *
 * - Configs with the raft settings under measurement. The harness writes
 *   election 1000 ms / heartbeat 100 ms literally, and a node's config
 *   parser rejects duplicate keys, so lc_cell_init() rewrites the three
 *   configs after cluster_init() with only the raft keys the caller set
 *   (absent keys = the engine's defaults, which is what a deployment gets).
 * - Starting a node from any geoscaled binary (--geoscaled PATH), noting the
 *   wall-clock and monotonic time of the fork so that the node's own log
 *   timestamps (UTC, millisecond) can be placed relative to it.
 * - Readiness polled every few milliseconds, reading only the bytes of the
 *   log added since the last poll (a node with a million users may write a
 *   long log).
 * - Per-node measurements: /proc/PID/status (VmRSS, VmHWM), on-disk bytes
 *   of the data directory by part, and the raft directory's segments and
 *   snapshots read from their file names (libraft's raft_uv layout).
 *
 * Functions return 0 or a negative GS_E* code and print one line on stderr
 * saying what went wrong.
 */
#ifndef GS_BENCH_LC_CELL_H
#define GS_BENCH_LC_CELL_H

#include <stdint.h>

#include "harness.h"

/* Raft settings written into each node's config; 0 = key left out (the
 * engine's default applies). */
struct lc_raft_settings {
    unsigned election_timeout_ms;
    unsigned heartbeat_timeout_ms;
    unsigned snapshot_threshold;
    unsigned snapshot_trailing;
};

struct lc_cell {
    struct cluster c;      /* the harness's view: dir, nodes, pids, logs */
    const char *geoscaled; /* binary started for every node */
    struct lc_raft_settings raft;
    int compression;                    /* RocksDB compression: 1 (node default) or 0 */
    double exec_mono_ms[CLUSTER_NODES]; /* monotonic time of the last fork */
    double exec_wall_ms[CLUSTER_NODES]; /* wall-clock (UTC epoch) ms of it */
    long scan_offset[CLUSTER_NODES];    /* log bytes already scanned */
};

/* Create the directory (under $TMPDIR or /tmp), pick ports, write configs.
 * Nothing is started. */
int lc_cell_init(struct lc_cell *lc, const char *geoscaled, const struct lc_raft_settings *raft,
                 int compression);

/* Fork and exec node i (its stdout and stderr appended to its log). */
int lc_node_start(struct lc_cell *lc, int i);

/* Wait until node i logged event=ready since its last start; *ready_ms (may
 * be NULL) receives the monotonic time it was seen. */
int lc_node_wait_ready(struct lc_cell *lc, int i, unsigned timeout_ms, double *ready_ms);

/* Start all nodes, wait until all are ready and agree on a leader. */
int lc_cell_start(struct lc_cell *lc, unsigned timeout_ms);

/* Time of an event in node i's log since its last start, in ms after the
 * fork (wall clock against the log's UTC timestamps, so +-1 ms), or -1 if
 * the event is not there. With field != NULL, *value receives the unsigned
 * integer after "field=" on that line (0 if absent). The first line whose
 * text contains `event` counts. */
double lc_node_event_ms(const struct lc_cell *lc, int i, const char *event, const char *field,
                        uint64_t *value);

/* How many lines of node i's log since its last start contain text. */
unsigned lc_node_count(const struct lc_cell *lc, int i, const char *text);

struct lc_proc_mem {
    uint64_t rss_bytes; /* VmRSS */
    uint64_t hwm_bytes; /* VmHWM, the peak RSS */
};

/* Memory of node i's running process. */
int lc_node_mem(const struct lc_cell *lc, int i, struct lc_proc_mem *out);

#define LC_DISK_PARTS 5
/* Parts of a data directory: db/ (RocksDB), raft/ (libraft log, metadata and
 * snapshot manifests), checkpoints/ (RocksDB checkpoints kept for peers;
 * hard links into db/ mostly), incoming/ (checkpoint being pulled), other. */
extern const char *const lc_disk_part_names[LC_DISK_PARTS];

struct lc_disk {
    uint64_t part_bytes[LC_DISK_PARTS]; /* apparent size of the files of each
                                           part (a hard-linked file counts in
                                           every part it appears in) */
    uint64_t part_files[LC_DISK_PARTS];
    uint64_t wal_bytes;       /* RocksDB write-ahead logs (db/NNNNNN.log):
                                 what the next open replays */
    uint64_t unique_bytes;    /* apparent size, each inode once */
    uint64_t allocated_bytes; /* st_blocks * 512, each inode once */
};

/* On-disk size of node i's data directory. */
int lc_node_disk(const struct lc_cell *lc, int i, struct lc_disk *out);

struct lc_raft_dir {
    unsigned closed_segments;
    unsigned open_segments;
    uint64_t first_index; /* lowest index of a closed segment; 0 = none */
    uint64_t last_closed_index;
    unsigned snapshots;
    uint64_t snapshot_index; /* newest snapshot's index; 0 = none */
    uint64_t snapshot_term;
};

/* The raft directory of node i as its file names describe it. */
int lc_node_raft_dir(const struct lc_cell *lc, int i, struct lc_raft_dir *out);

/* What RocksDB's own log (db/LOG, written at the node's last open) says
 * about its recovery: the WAL replay and the flush of the replayed memtable
 * to a level-0 table that RocksDB does inside DB::Open by default
 * (avoid_flush_during_recovery = false). Times in ms, -1 = not in the log. */
struct lc_rocksdb_open {
    unsigned wal_files_replayed; /* "Recovering log #N" lines */
    double open_ms;              /* first line of LOG -> "DB pointer" */
    double recovery_ms;          /* recovery_started -> recovery_finished */
    double replay_ms;            /* recovery_started -> the L0 flush start
                                    (or -> recovery_finished if none) */
    double flush_ms;             /* WriteLevel0TableForRecovery started -> OK */
    uint64_t flush_bytes;        /* size of the level-0 tables written */
};

/* Parse node i's db/LOG. GS_ENOTFOUND if there is none. */
int lc_node_rocksdb_open(const struct lc_cell *lc, int i, struct lc_rocksdb_open *out);

/* Kill every node, remove the directory unless keep (then say where it is). */
void lc_cell_destroy(struct lc_cell *lc, int keep);

/* Milliseconds on the wall clock (UTC epoch). */
double lc_wall_ms(void);

#endif /* GS_BENCH_LC_CELL_H */
