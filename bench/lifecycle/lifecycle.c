/*
 * geoscale-lifecycle: measures how a GeoScale cell lives through the death
 * and the restart of its nodes, for three targets of the benchmark issue:
 *
 *   failover  leader SIGKILL -> first acknowledged write       target < 2 s
 *   restart   a node holding 1M users back in service           target < 5 s
 *   memory    RSS and disk bytes per stored user
 *
 * It starts its own lone cell of three real geoscaled processes on loopback
 * (bench/lifecycle/lc_cell.h, over tests/e2e/harness.h) in a temporary
 * directory, measures, prints one report, and removes the directory (or
 * keeps it with --keep). It measures and reports; it never judges, so that
 * the same run can be read against any target.
 *
 * Output. Everything that is not the report (progress, the harness's lines,
 * errors) goes to stderr: stdout is redirected to stderr at start and the
 * report is written to the original stdout at the end, so that with --json
 * stdout holds exactly one JSON object (and the human summary goes to
 * stderr).
 *
 * Timing. All durations are monotonic-clock milliseconds measured by this
 * process, except the phases inside a node's start (RocksDB open, raft
 * start), which are read from the node's log timestamps (UTC, 1 ms) against
 * the wall clock noted at the fork. CellStatus is answered from a copy of
 * the group's state refreshed every 50 ms (raft/group.c GROUP_TICK_MS), so
 * "leader seen" can lag the election by up to that much.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "engine/numparse.h"
#include "harness.h"
#include "raft/defaults.h"
#include "lc_cell.h"
#include "lc_load.h"
#include "lc_writer.h"

#define PROG "geoscale-lifecycle"
#define MAX_TRIALS 1000
#define MAX_WRITER_USERS 64

/* The engine's defaults when the config leaves a raft key out (raft/group.c
 * group_start, net/config.h). Reported as such; never written. */
#define ENGINE_ELECTION_MS GROUP_DEFAULT_ELECTION_TIMEOUT_MS
#define ENGINE_HEARTBEAT_MS GROUP_DEFAULT_HEARTBEAT_TIMEOUT_MS
#define ENGINE_SNAPSHOT_THRESHOLD 4096
#define ENGINE_SNAPSHOT_TRAILING 8192

enum mode { MODE_FAILOVER, MODE_RESTART };

struct options {
    enum mode mode;
    const char *geoscaled;
    int json;
    int keep;
    struct lc_raft_settings raft;
    unsigned start_timeout_ms;
    /* failover */
    unsigned trials;
    unsigned writer_users;
    unsigned interval_ms;
    unsigned max_outstanding;
    unsigned call_timeout_ms;
    unsigned min_delay_ms;
    unsigned max_delay_ms;
    unsigned seed;
    /* restart */
    uint64_t users;
    unsigned window;
    unsigned connections;
    unsigned bio_bytes;
    int whole_cell;
};

static void usage(FILE *f)
{
    /* The text is laid out as it prints. */
    // clang-format off
    fprintf(f,
"usage: " PROG " failover [options]\n"
"       " PROG " restart [options]\n"
"\n"
"Measures failover and restart of a GeoScale cell. Starts its own lone cell of\n"
"three geoscaled processes on loopback (127.0.0.1, free ports) in a directory\n"
"under $TMPDIR (or /tmp), removed at the end unless --keep. Progress goes to\n"
"stderr; the report to stdout (human summary, or one JSON object with --json).\n"
"Exit status: 0 measured, 1 the run failed (the cell did not start, a node did\n"
"not come back, ...), 2 bad usage. A slow result is reported, never an error.\n"
"\n"
"failover: a writer issues UpdateUser (the bio of one of --writer-users users)\n"
"every --interval-ms through the C client library (all three nodes as seeds,\n"
"per-call timeout --call-timeout-ms, the library's own retries). Each trial\n"
"waits a random --min-delay-ms..--max-delay-ms, SIGKILLs the current leader,\n"
"and measures from the kill to: a new leader reported by CellStatus of a\n"
"survivor (polled every 5 ms; the status is refreshed every 50 ms on the node);\n"
"the first acknowledged write of any kind; the first acknowledged write issued\n"
"after the kill (the failover time). Then it restarts the killed node, pauses\n"
"the writer and waits until all three nodes report the same applied index and\n"
"state digest before the next trial. Reports each trial and min/p50/max.\n"
"\n"
"restart: creates --users users (CreateUser pipelined, --window in flight over\n"
"--connections connections; progress with users/s and ETA), waits until the\n"
"three replicas converge (same leader and applied index in CellStatus; the\n"
"state digests are compared only after the load and at the end, each\n"
"StateDigest call timed, because it scans the whole database (on a worker\n"
"thread, over a RocksDB snapshot)), then reports for every node: VmRSS and VmHWM\n"
"(/proc/PID/status) before and after the load, on-disk bytes of its data\n"
"directory by part (db/ = RocksDB, raft/ = raft log and snapshot manifests,\n"
"checkpoints/, incoming/), and bytes per user. Then it restarts nodes, one\n"
"scenario at a time, waiting for convergence between them: a follower stopped\n"
"with SIGKILL, a follower stopped with SIGTERM, the leader with SIGKILL, the\n"
"leader with SIGTERM, and (unless --no-whole-cell) the whole cell with SIGKILL.\n"
"For each: stop time, exec -> RocksDB open / raft started / event=ready (from\n"
"the node's log), exec -> caught up (the node follows a leader and its applied\n"
"index reached every other node's), the RocksDB WAL bytes at the restart and\n"
"the WAL replay and level-0 flush times inside RocksDB's open (from db/LOG),\n"
"the raft log on disk at the restart (bytes, first index, newest snapshot\n"
"index), the state machine's applied index at open, and the raft settings in\n"
"use. For the whole cell: exec -> all ready, -> first acknowledged write (a\n"
"fresh client), -> leader agreed (checked after that write), -> converged.\n"
"Also the raft term before and after the load (a new term = an election).\n"
"In the human summary -1 means not measured; in JSON that is null.\n"
"\n"
"common options:\n"
"  --geoscaled PATH            node binary (default: the one built with this tool,\n"
"                              %s)\n"
"  --election-timeout-ms MS    raft.election_timeout_ms in the nodes' configs\n"
"                              (default: left out, engine default %u ms; libraft\n"
"                              randomises each timeout in [MS, 2*MS])\n"
"  --heartbeat-ms MS           raft.heartbeat_timeout_ms (default: engine default\n"
"                              %u ms; must be below the election timeout)\n"
"  --snapshot-threshold N      raft.snapshot_threshold (default: engine default %u)\n"
"  --snapshot-trailing N       raft.snapshot_trailing (default: engine default %u)\n"
"  --start-timeout-ms MS       bound on each node start and on convergence waits\n"
"                              (default 120000)\n"
"  --json                      print one JSON object on stdout\n"
"  --keep                      keep the directory (configs, data, node logs)\n"
"  -h, --help                  this text\n"
"\n"
"failover options:\n"
"  --trials N                  leader kills (default 10, at most %d)\n"
"  --writer-users N            users the writer updates, round robin (default 4)\n"
"  --interval-ms MS            one write issued every MS ms (default 5)\n"
"  --max-outstanding N         writes in flight at most (default 256)\n"
"  --call-timeout-ms MS        per-call timeout including retries (default 1000)\n"
"  --min-delay-ms MS           random wait before a kill, lower bound (default 500)\n"
"  --max-delay-ms MS           upper bound (default 2000)\n"
"  --seed N                    seed of the random waits (default: time)\n"
"\n"
"restart options:\n"
"  --users N                   users to create (default 1000000)\n"
"  --window N                  CreateUser calls in flight (default 2048)\n"
"  --connections N             client connections (default 2)\n"
"  --bio-bytes N               bio length of each user, random letters, 0..4096\n"
"                              (default 64; display name and e-mail are ~20 B each)\n"
"  --call-timeout-ms MS        per-call timeout of CreateUser (default 10000)\n"
"  --no-whole-cell             skip the restart of the whole cell\n"
"\n"
"examples:\n"
"  " PROG " failover --trials 20 --json > failover.json\n"
"  " PROG " failover --trials 20 --election-timeout-ms 300 --heartbeat-ms 50\n"
"  " PROG " restart --users 1000000 --json > restart.json\n",
            GEOSCALED_PATH, ENGINE_ELECTION_MS, ENGINE_HEARTBEAT_MS, ENGINE_SNAPSHOT_THRESHOLD,
            ENGINE_SNAPSHOT_TRAILING, MAX_TRIALS);
    // clang-format on
}

static int bad_usage(const char *fmt, const char *arg)
{
    fprintf(stderr, PROG ": ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(" PROG " --help lists the options)\n");
    return 2;
}

enum {
    OPT_GEOSCALED = 256,
    OPT_ELECTION,
    OPT_HEARTBEAT,
    OPT_SNAP_THRESHOLD,
    OPT_SNAP_TRAILING,
    OPT_START_TIMEOUT,
    OPT_JSON,
    OPT_KEEP,
    OPT_TRIALS,
    OPT_WRITER_USERS,
    OPT_INTERVAL,
    OPT_MAX_OUTSTANDING,
    OPT_CALL_TIMEOUT,
    OPT_MIN_DELAY,
    OPT_MAX_DELAY,
    OPT_SEED,
    OPT_USERS,
    OPT_WINDOW,
    OPT_CONNECTIONS,
    OPT_BIO_BYTES,
    OPT_NO_WHOLE_CELL,
};

/* Returns 0 to run, 1 after --help, 2 on bad usage. */
static int parse_options(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {
        {"geoscaled", required_argument, NULL, OPT_GEOSCALED},
        {"election-timeout-ms", required_argument, NULL, OPT_ELECTION},
        {"heartbeat-ms", required_argument, NULL, OPT_HEARTBEAT},
        {"snapshot-threshold", required_argument, NULL, OPT_SNAP_THRESHOLD},
        {"snapshot-trailing", required_argument, NULL, OPT_SNAP_TRAILING},
        {"start-timeout-ms", required_argument, NULL, OPT_START_TIMEOUT},
        {"json", no_argument, NULL, OPT_JSON},
        {"keep", no_argument, NULL, OPT_KEEP},
        {"trials", required_argument, NULL, OPT_TRIALS},
        {"writer-users", required_argument, NULL, OPT_WRITER_USERS},
        {"interval-ms", required_argument, NULL, OPT_INTERVAL},
        {"max-outstanding", required_argument, NULL, OPT_MAX_OUTSTANDING},
        {"call-timeout-ms", required_argument, NULL, OPT_CALL_TIMEOUT},
        {"min-delay-ms", required_argument, NULL, OPT_MIN_DELAY},
        {"max-delay-ms", required_argument, NULL, OPT_MAX_DELAY},
        {"seed", required_argument, NULL, OPT_SEED},
        {"users", required_argument, NULL, OPT_USERS},
        {"window", required_argument, NULL, OPT_WINDOW},
        {"connections", required_argument, NULL, OPT_CONNECTIONS},
        {"bio-bytes", required_argument, NULL, OPT_BIO_BYTES},
        {"no-whole-cell", no_argument, NULL, OPT_NO_WHOLE_CELL},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int call_timeout_given = 0;
    int ch;

    memset(o, 0, sizeof *o);
    o->geoscaled = GEOSCALED_PATH;
    o->start_timeout_ms = 120000;
    o->trials = 10;
    o->writer_users = 4;
    o->interval_ms = 5;
    o->max_outstanding = 256;
    o->call_timeout_ms = 1000;
    o->min_delay_ms = 500;
    o->max_delay_ms = 2000;
    o->seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    o->users = 1000000;
    o->window = 2048;
    o->connections = 2;
    o->bio_bytes = 64;
    o->whole_cell = 1;

    for (int k = 1; k < argc; k++) {
        if (strcmp(argv[k], "-h") == 0 || strcmp(argv[k], "--help") == 0) {
            usage(stdout);
            return 1;
        }
    }
    if (argc < 2 || argv[1][0] == '-') {
        return bad_usage("%sexpected a mode: failover or restart", "");
    }
    if (strcmp(argv[1], "failover") == 0) {
        o->mode = MODE_FAILOVER;
    } else if (strcmp(argv[1], "restart") == 0) {
        o->mode = MODE_RESTART;
    } else {
        return bad_usage("unknown mode '%s' (expected failover or restart)", argv[1]);
    }
    optind = 2;
    opterr = 0;
    for (;;) {
        int li = -1;
        ch = getopt_long(argc, argv, ":h", longopts, &li);
        if (ch == -1) {
            break;
        }
        uint64_t v = 0;
        char name[64];
        int bad = 0;
        if (li >= 0) {
            snprintf(name, sizeof name, "--%s", longopts[li].name);
        } else {
            snprintf(name, sizeof name, "%s",
                     optind > 0 && optind <= argc ? argv[optind - 1] : "?");
        }
        switch (ch) {
        case OPT_GEOSCALED:
            o->geoscaled = optarg;
            break;
        case OPT_ELECTION:
            bad = gs_parse_u64(optarg, 100, 60000, &v);
            o->raft.election_timeout_ms = (unsigned)v;
            break;
        case OPT_HEARTBEAT:
            bad = gs_parse_u64(optarg, 10, 10000, &v);
            o->raft.heartbeat_timeout_ms = (unsigned)v;
            break;
        case OPT_SNAP_THRESHOLD:
            bad = gs_parse_u64(optarg, 16, 1u << 30, &v);
            o->raft.snapshot_threshold = (unsigned)v;
            break;
        case OPT_SNAP_TRAILING:
            bad = gs_parse_u64(optarg, 16, 1u << 30, &v);
            o->raft.snapshot_trailing = (unsigned)v;
            break;
        case OPT_START_TIMEOUT:
            bad = gs_parse_u64(optarg, 1000, 3600000, &v);
            o->start_timeout_ms = (unsigned)v;
            break;
        case OPT_JSON:
            o->json = 1;
            break;
        case OPT_KEEP:
            o->keep = 1;
            break;
        case OPT_TRIALS:
            bad = gs_parse_u64(optarg, 1, MAX_TRIALS, &v);
            o->trials = (unsigned)v;
            break;
        case OPT_WRITER_USERS:
            bad = gs_parse_u64(optarg, 1, MAX_WRITER_USERS, &v);
            o->writer_users = (unsigned)v;
            break;
        case OPT_INTERVAL:
            bad = gs_parse_u64(optarg, 1, 10000, &v);
            o->interval_ms = (unsigned)v;
            break;
        case OPT_MAX_OUTSTANDING:
            bad = gs_parse_u64(optarg, 1, 100000, &v);
            o->max_outstanding = (unsigned)v;
            break;
        case OPT_CALL_TIMEOUT:
            bad = gs_parse_u64(optarg, 10, 600000, &v);
            o->call_timeout_ms = (unsigned)v;
            call_timeout_given = 1;
            break;
        case OPT_MIN_DELAY:
            bad = gs_parse_u64(optarg, 0, 600000, &v);
            o->min_delay_ms = (unsigned)v;
            break;
        case OPT_MAX_DELAY:
            bad = gs_parse_u64(optarg, 0, 600000, &v);
            o->max_delay_ms = (unsigned)v;
            break;
        case OPT_SEED:
            bad = gs_parse_u64(optarg, 0, UINT32_MAX, &v);
            o->seed = (unsigned)v;
            break;
        case OPT_USERS:
            bad = gs_parse_u64(optarg, 1, 100000000, &v);
            o->users = v;
            break;
        case OPT_WINDOW:
            bad = gs_parse_u64(optarg, 1, 65536, &v);
            o->window = (unsigned)v;
            break;
        case OPT_CONNECTIONS:
            bad = gs_parse_u64(optarg, 1, 64, &v);
            o->connections = (unsigned)v;
            break;
        case OPT_BIO_BYTES:
            bad = gs_parse_u64(optarg, 0, 4096, &v);
            o->bio_bytes = (unsigned)v;
            break;
        case OPT_NO_WHOLE_CELL:
            o->whole_cell = 0;
            break;
        case ':':
            return bad_usage("option %s needs a value", name);
        default:
            return bad_usage("unknown option %s", name);
        }
        if (bad) {
            char what[160];
            snprintf(what, sizeof what, "%s '%s'", name, optarg);
            return bad_usage("bad value for %s (see --help for the range)", what);
        }
    }
    if (optind < argc) {
        return bad_usage("unexpected argument '%s'", argv[optind]);
    }
    {
        unsigned e = o->raft.election_timeout_ms ? o->raft.election_timeout_ms : ENGINE_ELECTION_MS;
        unsigned h =
            o->raft.heartbeat_timeout_ms ? o->raft.heartbeat_timeout_ms : ENGINE_HEARTBEAT_MS;
        if (h >= e) {
            return bad_usage("%sthe heartbeat must be shorter than the election timeout", "");
        }
    }
    if (o->min_delay_ms > o->max_delay_ms) {
        return bad_usage("%s--min-delay-ms is above --max-delay-ms", "");
    }
    if (o->mode == MODE_RESTART && !call_timeout_given) {
        o->call_timeout_ms = 10000;
    }
    if (access(o->geoscaled, X_OK) != 0) {
        fprintf(stderr, PROG ": cannot execute %s: %s\n", o->geoscaled, strerror(errno));
        return 2;
    }
    return 0;
}

/* ------------------------------------------------------------ helpers */

static const char *const *cell_seeds(const struct lc_cell *lc, const char *out[CLUSTER_NODES])
{
    for (int i = 0; i < CLUSTER_NODES; i++) {
        out[i] = lc->c.nodes[i].client_address;
    }
    return out;
}

/* CellStatus of node i with a short timeout; 0 or a code. */
static int node_status(struct lc_cell *lc, int i, unsigned timeout_ms,
                       Geoscale__CellStatusResponse **st)
{
    return cluster_node_status(&lc->c, i, timeout_ms, st);
}

static json_t *raft_json(const struct lc_raft_settings *r)
{
#define SETTING(field, dflt)                                                                       \
    json_pack("{s:I,s:s}", "value", (json_int_t)(r->field != 0 ? r->field : (dflt)), "source",     \
              r->field != 0 ? "config" : "engine default")
    return json_pack("{s:o,s:o,s:o,s:o}", "election_timeout_ms",
                     SETTING(election_timeout_ms, ENGINE_ELECTION_MS), "heartbeat_timeout_ms",
                     SETTING(heartbeat_timeout_ms, ENGINE_HEARTBEAT_MS), "snapshot_threshold",
                     SETTING(snapshot_threshold, ENGINE_SNAPSHOT_THRESHOLD), "snapshot_trailing",
                     SETTING(snapshot_trailing, ENGINE_SNAPSHOT_TRAILING));
#undef SETTING
}

static void raft_human(FILE *f, const struct lc_raft_settings *r)
{
#define SHOW(label, field, dflt)                                                                   \
    fprintf(f, "%s%s %u%s", label[0] == 'e' ? "raft: " : ", ", label,                              \
            r->field != 0 ? r->field : (dflt), r->field != 0 ? "" : " (default)")
    SHOW("election_timeout_ms", election_timeout_ms, ENGINE_ELECTION_MS);
    SHOW("heartbeat_timeout_ms", heartbeat_timeout_ms, ENGINE_HEARTBEAT_MS);
    SHOW("snapshot_threshold", snapshot_threshold, ENGINE_SNAPSHOT_THRESHOLD);
    SHOW("snapshot_trailing", snapshot_trailing, ENGINE_SNAPSHOT_TRAILING);
#undef SHOW
    fputc('\n', f);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y ? 1 : 0;
}

struct stats {
    size_t n;
    double min, p50, max, mean;
};

/* Statistics of the values >= 0 among v[0..n). */
static struct stats stats_of(const double *v, size_t n)
{
    struct stats s = {0};
    double *tmp = malloc((n > 0 ? n : 1) * sizeof *tmp);
    double sum = 0;

    if (tmp == NULL) {
        return s;
    }
    for (size_t k = 0; k < n; k++) {
        if (v[k] >= 0) {
            tmp[s.n++] = v[k];
            sum += v[k];
        }
    }
    if (s.n > 0) {
        qsort(tmp, s.n, sizeof *tmp, cmp_double);
        s.min = tmp[0];
        s.max = tmp[s.n - 1];
        /* Nearest rank. */
        s.p50 = tmp[(size_t)ceil(0.5 * (double)s.n) - 1];
        s.mean = sum / (double)s.n;
    }
    free(tmp);
    return s;
}

static json_t *ms_or_null(double v);

static json_t *stats_json(struct stats s)
{
    if (s.n == 0) {
        return json_pack("{s:i}", "n", 0);
    }
    return json_pack("{s:I,s:o,s:o,s:o,s:o}", "n", (json_int_t)s.n, "min", ms_or_null(s.min), "p50",
                     ms_or_null(s.p50), "max", ms_or_null(s.max), "mean", ms_or_null(s.mean));
}

/* A number in JSON, or null when negative (= not measured). */
static json_t *ms_or_null(double v)
{
    return v >= 0 ? json_real(round(v * 10) / 10) : json_null();
}

/* Set once a report was written, so that main writes an error object
 * instead when a run ends without one. */
static int report_written;

/* Write the report: JSON on out (and the human text on stderr), or the
 * human text on out. */
static void emit(const struct options *o, FILE *out, json_t *report, const char *human)
{
    report_written = 1;
    if (o->json) {
        json_dumpf(report, out, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        fputc('\n', out);
        fputs(human, stderr);
    } else {
        fputs(human, out);
    }
    fflush(out);
}

/* Create k users for the writer through a blocking client; their ids go to
 * ids. */
static int create_writer_users(struct lc_cell *lc, unsigned k, uint64_t *ids)
{
    const char *seeds[CLUSTER_NODES];
    struct gs_client_options co = {.timeout_ms = 10000};
    gs_sync *s = NULL;
    int rv = gs_sync_open(cell_seeds(lc, seeds), CLUSTER_NODES, &co, &s);

    if (rv != 0) {
        fprintf(stderr, PROG ": gs_sync_open: %s\n", gs_error_name(rv));
        return rv;
    }
    for (unsigned u = 0; u < k && rv == 0; u++) {
        Geoscale__CreateUserRequest req = GEOSCALE__CREATE_USER_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        char name[32];
        snprintf(name, sizeof name, "lc_writer_%u", u);
        req.username = name;
        rv = gs_sync_call(s, GEOSCALE__METHOD__METHOD_CREATE_USER, &req.base, &resp, NULL);
        if (rv == 0) {
            ids[u] = ((Geoscale__CreateUserResponse *)resp)->user_id;
            protobuf_c_message_free_unpacked(resp, NULL);
        } else {
            fprintf(stderr, PROG ": CreateUser %s: %s\n", name, gs_error_name(rv));
        }
    }
    gs_sync_close(s);
    return rv;
}

/* ------------------------------------------------------------- failover */

struct trial {
    int ok;
    const char *error;
    unsigned delay_ms;
    unsigned old_leader, new_leader;
    uint64_t old_term, new_term;
    double leader_seen_ms;       /* kill -> a survivor says it leads a newer term */
    double first_ack_ms;         /* kill -> first ack of a write issued after the kill */
    double any_ack_ms;           /* kill -> first ack of any write */
    double first_ack_latency_ms; /* that write's own issue -> ack */
    double gap_ms;               /* last ack before the kill -> first ack after */
    uint64_t failures;           /* calls failed from the kill until the first ack */
    const char *last_failure;
    double restart_ready_ms;
    double converge_ms;
};

/* Kill the leader once and measure. Leaves the cell converged. */
static int failover_trial(const struct options *o, struct lc_cell *lc, struct lc_writer *w,
                          unsigned delay_ms, struct trial *t)
{
    Geoscale__CellStatusResponse *st = NULL;
    struct lc_writer_view v;
    double deadline;
    double t_kill;
    int leader = -1;
    int rv;

    memset(t, 0, sizeof *t);
    t->leader_seen_ms = t->first_ack_ms = t->any_ack_ms = t->gap_ms = -1;
    t->first_ack_latency_ms = t->restart_ready_ms = t->converge_ms = -1;
    t->delay_ms = delay_ms;

    /* The writer must be getting acknowledgements before the kill. */
    lc_writer_mark(w, 0);
    {
        uint64_t before;
        lc_writer_view(w, &v);
        before = v.total_acks;
        deadline = e2e_now_ms() + 15000;
        do {
            e2e_sleep_ms(20);
            lc_writer_view(w, &v);
        } while (v.total_acks < before + 5 && e2e_now_ms() < deadline);
        if (v.total_acks < before + 5) {
            t->error = "writer not acknowledged before the kill";
            return GS_ETIMEOUT;
        }
    }
    rv = cluster_wait_leader(&lc->c, 15000, &leader);
    if (rv != 0) {
        t->error = "no leader before the kill";
        return rv;
    }
    rv = node_status(lc, leader, 1000, &st);
    if (rv != 0) {
        t->error = "CellStatus of the leader failed";
        return rv;
    }
    t->old_term = st->term;
    geoscale__cell_status_response__free_unpacked(st, NULL);
    t->old_leader = lc->c.nodes[leader].node_id;
    e2e_sleep_ms(delay_ms);

    t_kill = e2e_now_ms();
    lc_writer_mark(w, t_kill);
    rv = cluster_node_signal(&lc->c, leader, SIGKILL);
    if (rv != 0) {
        t->error = "kill failed";
        return rv;
    }
    deadline = t_kill + 30000;
    for (;;) {
        double now = e2e_now_ms();
        if (t->leader_seen_ms < 0) {
            for (int i = 0; i < CLUSTER_NODES; i++) {
                if (i == leader) {
                    continue;
                }
                if (node_status(lc, i, 300, &st) == 0) {
                    if (strcmp(st->state, "leader") == 0 && st->term > t->old_term) {
                        t->leader_seen_ms = e2e_now_ms() - t_kill;
                        t->new_leader = (unsigned)st->node_id;
                        t->new_term = st->term;
                    }
                    geoscale__cell_status_response__free_unpacked(st, NULL);
                }
                if (t->leader_seen_ms >= 0) {
                    break;
                }
            }
        }
        lc_writer_view(w, &v);
        if (t->leader_seen_ms >= 0 && v.first_ack_issued_after_ms > 0) {
            break;
        }
        if (now >= deadline) {
            break;
        }
        e2e_sleep_ms(5);
    }
    lc_writer_view(w, &v);
    if (v.first_ack_issued_after_ms > 0) {
        t->first_ack_ms = v.first_ack_issued_after_ms - t_kill;
        t->first_ack_latency_ms = v.first_ack_issued_after_latency_ms;
    }
    if (v.first_ack_ms > 0) {
        t->any_ack_ms = v.first_ack_ms - t_kill;
        if (v.last_ack_before_ms > 0) {
            t->gap_ms = v.first_ack_ms - v.last_ack_before_ms;
        }
    }
    t->failures = v.failures;
    t->last_failure = v.failures > 0 ? gs_error_name(v.last_failure) : NULL;
    cluster_node_reap(&lc->c, leader, 5000, NULL);
    fprintf(stderr,
            PROG ": killed leader node %u: new leader node %u seen after %.0f ms, first write "
                 "acknowledged after %.0f ms\n",
            t->old_leader, t->new_leader, t->leader_seen_ms, t->first_ack_ms);
    if (t->first_ack_ms < 0 || t->leader_seen_ms < 0) {
        t->error = t->first_ack_ms < 0 ? "no write acknowledged within 30 s of the kill"
                                       : "no new leader seen within 30 s of the kill";
    }

    /* Bring the node back and let the cell converge before the next kill. */
    {
        double ready = 0;
        rv = lc_node_start(lc, leader);
        if (rv == 0) {
            rv = lc_node_wait_ready(lc, leader, o->start_timeout_ms, &ready);
        }
        if (rv != 0) {
            t->error = "the killed node did not restart";
            return rv;
        }
        t->restart_ready_ms = ready - lc->exec_mono_ms[leader];
    }
    rv = lc_writer_pause(w, 1, 30000);
    if (rv == 0) {
        rv = cluster_wait_converged(&lc->c, o->start_timeout_ms, NULL, NULL, NULL);
        t->converge_ms = e2e_now_ms() - lc->exec_mono_ms[leader];
    }
    lc_writer_pause(w, 0, 0);
    if (rv != 0) {
        t->error = "the cell did not converge after the restart";
        return rv;
    }
    t->ok = t->error == NULL;
    return 0;
}

static int run_failover(const struct options *o, struct lc_cell *lc, FILE *out)
{
    struct trial *trials = calloc(o->trials, sizeof *trials);
    double *col = calloc(o->trials, sizeof *col);
    uint64_t ids[MAX_WRITER_USERS];
    const char *seeds[CLUSTER_NODES];
    struct lc_writer *w = NULL;
    json_t *report = NULL, *jtrials;
    char *human = NULL;
    size_t human_len = 0;
    FILE *h = NULL;
    unsigned done = 0;
    int rv;

    if (trials == NULL || col == NULL) {
        rv = GS_ENOMEM;
        goto out;
    }
    srand(o->seed);
    rv = create_writer_users(lc, o->writer_users, ids);
    if (rv != 0) {
        goto out;
    }
    struct lc_writer_options wo = {
        .seeds = cell_seeds(lc, seeds),
        .n_seeds = CLUSTER_NODES,
        .user_ids = ids,
        .n_users = o->writer_users,
        .interval_ms = o->interval_ms,
        .max_outstanding = o->max_outstanding,
        .call_timeout_ms = o->call_timeout_ms,
    };
    rv = lc_writer_start(&wo, &w);
    if (rv != 0) {
        fprintf(stderr, PROG ": cannot start the writer: %s\n", gs_error_name(rv));
        goto out;
    }
    for (unsigned k = 0; k < o->trials; k++) {
        unsigned span = o->max_delay_ms - o->min_delay_ms;
        unsigned delay = o->min_delay_ms + (span > 0 ? (unsigned)rand() % (span + 1) : 0);
        fprintf(stderr, PROG ": trial %u/%u: kill the leader in %u ms\n", k + 1, o->trials, delay);
        rv = failover_trial(o, lc, w, delay, &trials[k]);
        done = k + 1;
        if (rv != 0) {
            fprintf(stderr, PROG ": trial %u failed: %s (%s)\n", k + 1,
                    trials[k].error != NULL ? trials[k].error : "error", gs_error_name(rv));
            break;
        }
    }
    lc_writer_stop(w);
    w = NULL;

    /* Report. */
    h = open_memstream(&human, &human_len);
    if (h == NULL) {
        rv = GS_ENOMEM;
        goto out;
    }
    fprintf(h, "geoscale-lifecycle failover: %u trial(s), writer every %u ms, call timeout %u ms\n",
            done, o->interval_ms, o->call_timeout_ms);
    raft_human(h, &lc->raft);
    fprintf(h, "%-5s %-9s %-10s %-10s %-10s %-9s %-8s %-9s %-9s\n", "trial", "killed", "leader_ms",
            "write_ms", "anyack_ms", "gap_ms", "failed", "ready_ms", "conv_ms");
    jtrials = json_array();
    for (unsigned k = 0; k < done; k++) {
        struct trial *t = &trials[k];
        fprintf(h, "%-5u node%-5u %-10.0f %-10.0f %-10.0f %-9.0f %-8llu %-9.0f %-9.0f%s%s\n", k + 1,
                t->old_leader, t->leader_seen_ms, t->first_ack_ms, t->any_ack_ms, t->gap_ms,
                (unsigned long long)t->failures, t->restart_ready_ms, t->converge_ms,
                t->error != NULL ? "  " : "", t->error != NULL ? t->error : "");
        json_array_append_new(
            jtrials,
            json_pack("{s:i,s:b,s:s?,s:i,s:i,s:I,s:i,s:I,s:o,s:o,s:o,s:o,s:o,s:I,s:s?,s:o,s:o}",
                      "trial", k + 1, "ok", t->ok, "error", t->error, "delay_ms", t->delay_ms,
                      "killed_node", t->old_leader, "old_term", (json_int_t)t->old_term,
                      "new_leader", t->new_leader, "new_term", (json_int_t)t->new_term,
                      "kill_to_leader_seen_ms", ms_or_null(t->leader_seen_ms),
                      "kill_to_first_write_ms", ms_or_null(t->first_ack_ms), "kill_to_any_ack_ms",
                      ms_or_null(t->any_ack_ms), "first_write_latency_ms",
                      ms_or_null(t->first_ack_latency_ms), "ack_gap_ms", ms_or_null(t->gap_ms),
                      "failed_calls", (json_int_t)t->failures, "last_failure", t->last_failure,
                      "restart_exec_to_ready_ms", ms_or_null(t->restart_ready_ms),
                      "restart_exec_to_converged_ms", ms_or_null(t->converge_ms)));
    }
#define COLUMN(field)                                                                              \
    for (unsigned k = 0; k < done; k++) {                                                          \
        col[k] = trials[k].field;                                                                  \
    }
    struct stats s_write, s_leader, s_any, s_ready;
    COLUMN(first_ack_ms);
    s_write = stats_of(col, done);
    COLUMN(leader_seen_ms);
    s_leader = stats_of(col, done);
    COLUMN(any_ack_ms);
    s_any = stats_of(col, done);
    COLUMN(restart_ready_ms);
    s_ready = stats_of(col, done);
#undef COLUMN
    fprintf(h,
            "kill -> first write acknowledged (issued after the kill): min %.0f p50 %.0f max "
            "%.0f ms (n=%zu)\n",
            s_write.min, s_write.p50, s_write.max, s_write.n);
    fprintf(h,
            "kill -> new leader seen by CellStatus:                  min %.0f p50 %.0f max "
            "%.0f ms\n",
            s_leader.min, s_leader.p50, s_leader.max);
    fprintf(h,
            "kill -> first acknowledgement of any write:             min %.0f p50 %.0f max "
            "%.0f ms\n",
            s_any.min, s_any.p50, s_any.max);
    fprintf(h,
            "killed node exec -> event=ready:                        min %.0f p50 %.0f max "
            "%.0f ms\n",
            s_ready.min, s_ready.p50, s_ready.max);
    fprintf(h, "target: failover under 2000 ms (measured here, not judged)\n");
    fclose(h);
    h = NULL;
    report = json_pack("{s:s,s:s,s:o,s:{s:i,s:i,s:i,s:i,s:i},s:i,s:I,s:i,s:o,s:{s:o,s:o,s:o,s:o}}",
                       "mode", "failover", "geoscaled", o->geoscaled, "raft", raft_json(&lc->raft),
                       "writer", "users", o->writer_users, "interval_ms", o->interval_ms,
                       "max_outstanding", o->max_outstanding, "call_timeout_ms", o->call_timeout_ms,
                       "client_backoff_ms_max", 200, "trials_requested", o->trials, "seed",
                       (json_int_t)o->seed, "trials_done", done, "trials", jtrials, "summary",
                       "kill_to_first_write_ms", stats_json(s_write), "kill_to_leader_seen_ms",
                       stats_json(s_leader), "kill_to_any_ack_ms", stats_json(s_any),
                       "restart_exec_to_ready_ms", stats_json(s_ready));
    if (report == NULL) {
        rv = GS_ENOMEM;
        goto out;
    }
    emit(o, out, report, human);
out:
    lc_writer_stop(w);
    if (h != NULL) {
        fclose(h);
    }
    free(human);
    json_decref(report);
    free(trials);
    free(col);
    return rv;
}

/* -------------------------------------------------------------- restart */

/*
 * Convergence for a cell holding many users. StateDigest hashes every key
 * on the node's group loop thread (raft/group.c group_state_digest), which
 * stalls that node's Raft for the whole scan: at a million users a digest
 * per poll would itself cause elections. So between scenarios "converged"
 * means every running node names the same leader and reports the same
 * applied index in CellStatus; the digests are compared only twice (after
 * the load and at the end), each call timed and reported.
 */
static int wait_applied_equal(struct lc_cell *lc, unsigned timeout_ms, uint64_t *applied)
{
    double deadline = e2e_now_ms() + timeout_ms;
    char last[256] = "";

    for (;;) {
        uint64_t first_applied = 0, leader_id = 0;
        int ok = 1, n = 0;
        size_t off = 0;
        for (int i = 0; i < CLUSTER_NODES; i++) {
            Geoscale__CellStatusResponse *st = NULL;
            if (!cluster_node_alive(&lc->c, i)) {
                continue;
            }
            if (node_status(lc, i, 1000, &st) != 0) {
                ok = 0;
                continue;
            }
            off += (size_t)snprintf(last + off, sizeof last - off, " node%llu=%llu/leader%llu",
                                    (unsigned long long)st->node_id,
                                    (unsigned long long)st->applied_index,
                                    (unsigned long long)st->leader_id);
            if (off >= sizeof last) {
                off = sizeof last - 1;
            }
            if (n++ == 0) {
                first_applied = st->applied_index;
                leader_id = st->leader_id;
            } else if (st->applied_index != first_applied || st->leader_id != leader_id) {
                ok = 0;
            }
            if (st->leader_id == 0) {
                ok = 0;
            }
            geoscale__cell_status_response__free_unpacked(st, NULL);
        }
        if (ok && n > 0) {
            if (applied != NULL) {
                *applied = first_applied;
            }
            return 0;
        }
        if (e2e_now_ms() >= deadline) {
            fprintf(stderr, PROG ": applied indexes not equal after %u ms:%s\n", timeout_ms, last);
            return GS_ETIMEOUT;
        }
        e2e_sleep_ms(50);
    }
}

struct digest_check {
    int done;
    int match; /* all digests and digest applied indexes equal */
    uint64_t keys;
    double ms[CLUSTER_NODES]; /* StateDigest call time per node, -1 = failed */
};

/* StateDigest of every node, one at a time, each timed. */
static void check_digests(struct lc_cell *lc, unsigned timeout_ms, struct digest_check *dc)
{
    Geoscale__StateDigestResponse *dg[CLUSTER_NODES] = {NULL};
    int first = -1;

    memset(dc, 0, sizeof *dc);
    dc->done = 1;
    dc->match = 1;
    for (int i = 0; i < CLUSTER_NODES; i++) {
        double t0 = e2e_now_ms();
        int rv = cluster_node_digest(&lc->c, i, timeout_ms, &dg[i]);
        dc->ms[i] = rv == 0 ? e2e_now_ms() - t0 : -1;
        if (rv != 0 || dg[i]->digest.len != 32) {
            fprintf(stderr, PROG ": StateDigest of node %u: %s\n", lc->c.nodes[i].node_id,
                    rv != 0 ? gs_error_name(rv) : "bad digest");
            dc->match = 0;
            continue;
        }
        if (first < 0) {
            first = i;
            dc->keys = dg[i]->keys;
        } else if (dg[i]->applied_index != dg[first]->applied_index ||
                   memcmp(dg[i]->digest.data, dg[first]->digest.data, 32) != 0) {
            dc->match = 0;
        }
    }
    for (int i = 0; i < CLUSTER_NODES; i++) {
        if (dg[i] != NULL) {
            geoscale__state_digest_response__free_unpacked(dg[i], NULL);
        }
    }
}

static json_t *digest_json(const struct digest_check *dc)
{
    if (!dc->done) {
        return json_null();
    }
    return json_pack("{s:b,s:I,s:[o,o,o]}", "match", dc->match, "keys", (json_int_t)dc->keys,
                     "state_digest_call_ms", ms_or_null(dc->ms[0]), ms_or_null(dc->ms[1]),
                     ms_or_null(dc->ms[2]));
}

struct node_snapshot {
    struct lc_proc_mem mem;
    struct lc_disk disk;
    struct lc_raft_dir raft;
};

struct scenario {
    const char *name;
    int leader; /* 1: the leader is restarted, 0: a follower */
    int sig;
    int ok;
    const char *error;
    unsigned node_id;
    double stop_ms;          /* signal -> process reaped */
    int exit_status;         /* exit code, or -signal */
    uint64_t last_log_index; /* CellStatus of the node before the stop */
    uint64_t applied_before;
    struct lc_raft_dir raft;    /* its raft directory at the restart */
    uint64_t wal_bytes;         /* RocksDB WAL files at the restart */
    uint64_t raft_bytes;        /* raft/ at the restart */
    struct lc_rocksdb_open rdb; /* RocksDB's account of the open */
    double open_ms, started_ms, ready_ms, caught_up_ms;
    uint64_t fsm_applied_at_open, applied_at_start, caught_up_index;
    unsigned snapshot_events, restore_events, install_events;
    struct lc_proc_mem mem_after;
};

static int exit_code(int wstatus)
{
    return WIFEXITED(wstatus)     ? WEXITSTATUS(wstatus)
           : WIFSIGNALED(wstatus) ? -WTERMSIG(wstatus)
                                  : 0;
}

/* Wait until node i follows (or is) a leader and its applied index reached
 * that of every other running node; *at_ms receives the monotonic time. */
static int wait_caught_up(struct lc_cell *lc, int i, unsigned timeout_ms, double *at_ms,
                          uint64_t *index)
{
    double deadline = e2e_now_ms() + timeout_ms;
    for (;;) {
        Geoscale__CellStatusResponse *st = NULL;
        uint64_t mine = 0, others = 0;
        int have_leader = 0, ok = 1;
        double now = e2e_now_ms();

        if (node_status(lc, i, 500, &st) == 0) {
            mine = st->applied_index;
            have_leader = st->leader_id != 0;
            geoscale__cell_status_response__free_unpacked(st, NULL);
        } else {
            ok = 0;
        }
        for (int k = 0; k < CLUSTER_NODES && ok; k++) {
            if (k == i || lc->c.nodes[k].pid == 0) {
                continue;
            }
            if (node_status(lc, k, 500, &st) == 0) {
                if (st->applied_index > others) {
                    others = st->applied_index;
                }
                geoscale__cell_status_response__free_unpacked(st, NULL);
            } else {
                ok = 0;
            }
        }
        if (ok && have_leader && mine >= others) {
            *at_ms = now;
            *index = mine;
            return 0;
        }
        if (now >= deadline) {
            fprintf(stderr,
                    PROG ": node %u not caught up after %u ms (applied %llu, others %llu)\n",
                    lc->c.nodes[i].node_id, timeout_ms, (unsigned long long)mine,
                    (unsigned long long)others);
            return GS_ETIMEOUT;
        }
        e2e_sleep_ms(10);
    }
}

static int restart_scenario(const struct options *o, struct lc_cell *lc, struct scenario *s)
{
    Geoscale__CellStatusResponse *st = NULL;
    int leader = -1, target;
    int wstatus = 0;
    double t0, ready = 0, caught = 0;
    int rv;

    rv = cluster_wait_leader(&lc->c, 30000, &leader);
    if (rv != 0) {
        s->error = "no leader before the stop";
        return rv;
    }
    target = s->leader ? leader : (leader + 1) % CLUSTER_NODES;
    s->node_id = lc->c.nodes[target].node_id;
    if (node_status(lc, target, 1000, &st) == 0) {
        s->last_log_index = st->last_log_index;
        s->applied_before = st->applied_index;
        geoscale__cell_status_response__free_unpacked(st, NULL);
    }
    fprintf(stderr, PROG ": %s: stopping node %u with %s\n", s->name, s->node_id,
            s->sig == SIGKILL ? "SIGKILL" : "SIGTERM");
    t0 = e2e_now_ms();
    rv = cluster_node_stop(&lc->c, target, s->sig, 60000, &wstatus);
    s->stop_ms = e2e_now_ms() - t0;
    s->exit_status = exit_code(wstatus);
    if (rv != 0) {
        s->error = "the node did not stop";
        return rv;
    }
    lc_node_raft_dir(lc, target, &s->raft);
    {
        struct lc_disk d;
        if (lc_node_disk(lc, target, &d) == 0) {
            s->wal_bytes = d.wal_bytes;
            s->raft_bytes = d.part_bytes[1];
        }
    }
    rv = lc_node_start(lc, target);
    if (rv == 0) {
        rv = lc_node_wait_ready(lc, target, o->start_timeout_ms, &ready);
    }
    if (rv != 0) {
        s->error = "the node did not restart";
        return rv;
    }
    s->ready_ms = ready - lc->exec_mono_ms[target];
    rv = wait_caught_up(lc, target, o->start_timeout_ms, &caught, &s->caught_up_index);
    if (rv != 0) {
        s->error = "the node did not catch up";
        return rv;
    }
    s->caught_up_ms = caught - lc->exec_mono_ms[target];
    s->open_ms =
        lc_node_event_ms(lc, target, "event=open ", "applied_index", &s->fsm_applied_at_open);
    s->started_ms =
        lc_node_event_ms(lc, target, "event=started kind=cell", "applied", &s->applied_at_start);
    s->snapshot_events = lc_node_count(lc, target, "event=snapshot ");
    s->restore_events = lc_node_count(lc, target, "event=restore_pull");
    s->install_events = lc_node_count(lc, target, "event=installed");
    lc_node_rocksdb_open(lc, target, &s->rdb);
    lc_node_mem(lc, target, &s->mem_after);
    fprintf(stderr,
            PROG ": %s: node %u ready %.0f ms, caught up %.0f ms after exec (rocksdb open at "
                 "%.0f ms, raft started at %.0f ms)\n",
            s->name, s->node_id, s->ready_ms, s->caught_up_ms, s->open_ms, s->started_ms);
    rv = wait_applied_equal(lc, o->start_timeout_ms, NULL);
    if (rv != 0) {
        s->error = "the cell did not converge after the restart";
        return rv;
    }
    s->ok = 1;
    return 0;
}

struct whole_cell {
    int ok;
    const char *error;
    double all_ready_ms, leader_ms, first_write_ms, converged_ms;
    double ready_ms[CLUSTER_NODES];
};

static int restart_whole_cell(const struct options *o, struct lc_cell *lc, uint64_t user_id,
                              struct whole_cell *wc)
{
    const char *seeds[CLUSTER_NODES];
    double t0;
    int leader = -1;
    int rv;

    memset(wc, 0, sizeof *wc);
    wc->all_ready_ms = wc->leader_ms = wc->first_write_ms = wc->converged_ms = -1;
    fprintf(stderr, PROG ": whole cell: SIGKILL all three nodes, start them again\n");
    cluster_kill_all(&lc->c);
    for (int i = 0; i < CLUSTER_NODES; i++) {
        rv = lc_node_start(lc, i);
        if (rv != 0) {
            wc->error = "a node did not start";
            return rv;
        }
    }
    t0 = lc->exec_mono_ms[0];
    for (int i = 0; i < CLUSTER_NODES; i++) {
        rv = lc_node_wait_ready(lc, i, o->start_timeout_ms, NULL);
        if (rv != 0) {
            wc->error = "a node did not get ready";
            return rv;
        }
    }
    /* The nodes were polled one after the other: take each one's ready time
     * from its own log instead. */
    for (int i = 0; i < CLUSTER_NODES; i++) {
        double at = lc_node_event_ms(lc, i, "event=ready", NULL, NULL);
        wc->ready_ms[i] = at;
        if (at >= 0 && lc->exec_mono_ms[i] - t0 + at > wc->all_ready_ms) {
            wc->all_ready_ms = lc->exec_mono_ms[i] - t0 + at;
        }
    }
    /* First write: a fresh client, as an application reconnecting. */
    {
        struct gs_client_options co = {.timeout_ms = 1000};
        double deadline = e2e_now_ms() + o->start_timeout_ms;
        gs_sync *s = NULL;
        rv = gs_sync_open(cell_seeds(lc, seeds), CLUSTER_NODES, &co, &s);
        if (rv != 0) {
            wc->error = "cannot open a client";
            return rv;
        }
        for (;;) {
            Geoscale__UpdateUserRequest req = GEOSCALE__UPDATE_USER_REQUEST__INIT;
            Geoscale__ProfileField fields[1] = {GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_BIO};
            ProtobufCMessage *resp = NULL;
            req.user_id = user_id;
            req.n_fields = 1;
            req.fields = fields;
            req.bio = "after the whole cell restarted";
            rv = gs_sync_call(s, GEOSCALE__METHOD__METHOD_UPDATE_USER, &req.base, &resp, NULL);
            if (rv == 0) {
                protobuf_c_message_free_unpacked(resp, NULL);
                wc->first_write_ms = e2e_now_ms() - t0;
                break;
            }
            if (e2e_now_ms() >= deadline) {
                break;
            }
        }
        gs_sync_close(s);
        if (rv != 0) {
            wc->error = "no write acknowledged after the whole cell restarted";
            return rv;
        }
    }
    rv = cluster_wait_leader(&lc->c, o->start_timeout_ms, &leader);
    wc->leader_ms = e2e_now_ms() - t0; /* an upper bound: after the first write */
    if (rv != 0) {
        wc->error = "no leader after the whole cell restarted";
        return rv;
    }
    rv = wait_applied_equal(lc, o->start_timeout_ms, NULL);
    wc->converged_ms = e2e_now_ms() - t0;
    if (rv != 0) {
        wc->error = "the cell did not converge after the whole cell restarted";
        return rv;
    }
    wc->ok = 1;
    return 0;
}

/* The highest term any running node reports (0 if none answers). */
static uint64_t cell_term(struct lc_cell *lc)
{
    uint64_t term = 0;
    for (int i = 0; i < CLUSTER_NODES; i++) {
        Geoscale__CellStatusResponse *st = NULL;
        if (lc->c.nodes[i].pid != 0 && node_status(lc, i, 1000, &st) == 0) {
            if (st->term > term) {
                term = st->term;
            }
            geoscale__cell_status_response__free_unpacked(st, NULL);
        }
    }
    return term;
}

static void node_take(struct lc_cell *lc, int i, struct node_snapshot *ns)
{
    memset(ns, 0, sizeof *ns);
    lc_node_mem(lc, i, &ns->mem);
    lc_node_disk(lc, i, &ns->disk);
    lc_node_raft_dir(lc, i, &ns->raft);
}

static json_t *raft_dir_json(const struct lc_raft_dir *r)
{
    return json_pack("{s:i,s:i,s:I,s:I,s:i,s:I,s:I}", "closed_segments", r->closed_segments,
                     "open_segments", r->open_segments, "first_index", (json_int_t)r->first_index,
                     "last_closed_index", (json_int_t)r->last_closed_index, "snapshots",
                     r->snapshots, "snapshot_index", (json_int_t)r->snapshot_index, "snapshot_term",
                     (json_int_t)r->snapshot_term);
}

static json_t *rocksdb_open_json(const struct lc_rocksdb_open *r)
{
    return json_pack("{s:i,s:o,s:o,s:o,s:o,s:I}", "wal_files_replayed", r->wal_files_replayed,
                     "open_ms", ms_or_null(r->open_ms), "recovery_ms", ms_or_null(r->recovery_ms),
                     "wal_replay_ms", ms_or_null(r->replay_ms), "level0_flush_ms",
                     ms_or_null(r->flush_ms), "level0_flush_bytes", (json_int_t)r->flush_bytes);
}

static double per_user(uint64_t bytes, uint64_t users)
{
    return users > 0 ? round((double)bytes / (double)users * 10) / 10 : 0;
}

static double mib(uint64_t b)
{
    return (double)b / (1024.0 * 1024.0);
}

static int run_restart(const struct options *o, struct lc_cell *lc, FILE *out)
{
    struct node_snapshot before[CLUSTER_NODES], after[CLUSTER_NODES];
    struct scenario sc[] = {
        {.name = "follower_sigkill", .leader = 0, .sig = SIGKILL},
        {.name = "follower_sigterm", .leader = 0, .sig = SIGTERM},
        {.name = "leader_sigkill", .leader = 1, .sig = SIGKILL},
        {.name = "leader_sigterm", .leader = 1, .sig = SIGTERM},
    };
    const size_t n_sc = sizeof sc / sizeof sc[0];
    struct whole_cell wc = {
        .all_ready_ms = -1, .leader_ms = -1, .first_write_ms = -1, .converged_ms = -1};
    int wc_run = 0;
    const char *seeds[CLUSTER_NODES];
    struct lc_load_result load;
    uint64_t applied = 0, keys = 0;
    uint64_t term_before, term_after, term_after_digest, term_end = 0;
    struct digest_check dg_load, dg_end = {0};
    double conv0, converge_ms;
    json_t *report = NULL, *jnodes, *jsc;
    char *human = NULL;
    size_t human_len = 0;
    FILE *h = NULL;
    size_t sc_done = 0;
    int rv;

    for (int i = 0; i < CLUSTER_NODES; i++) {
        node_take(lc, i, &before[i]);
    }
    term_before = cell_term(lc);
    fprintf(stderr, PROG ": creating %llu users (%u in flight over %u connections)\n",
            (unsigned long long)o->users, o->window, o->connections);
    struct lc_load_options lo = {
        .seeds = cell_seeds(lc, seeds),
        .n_seeds = CLUSTER_NODES,
        .first = 0,
        .n = o->users,
        .window = o->window,
        .connections = o->connections,
        .bio_bytes = o->bio_bytes,
        .call_timeout_ms = o->call_timeout_ms,
        .progress = 1,
    };
    rv = lc_load_users(&lo, &load);
    if (rv != 0) {
        fprintf(stderr, PROG ": load failed to start: %s\n", gs_error_name(rv));
        return rv;
    }
    if (load.created == 0) {
        fprintf(stderr, PROG ": no user created (last error %s)\n", gs_error_name(load.last_error));
        return GS_EUNAVAILABLE;
    }
    conv0 = e2e_now_ms();
    rv = wait_applied_equal(lc, o->start_timeout_ms, &applied);
    converge_ms = e2e_now_ms() - conv0;
    if (rv != 0) {
        fprintf(stderr, PROG ": the replicas did not converge after the load\n");
        return rv;
    }
    for (int i = 0; i < CLUSTER_NODES; i++) {
        node_take(lc, i, &after[i]);
    }
    term_after = cell_term(lc);
    check_digests(lc, o->start_timeout_ms, &dg_load);
    keys = dg_load.keys;
    term_after_digest = cell_term(lc);
    for (size_t k = 0; k < n_sc; k++) {
        rv = restart_scenario(o, lc, &sc[k]);
        sc_done = k + 1;
        if (rv != 0) {
            fprintf(stderr, PROG ": %s failed: %s (%s)\n", sc[k].name, sc[k].error,
                    gs_error_name(rv));
            break;
        }
    }
    if (rv == 0 && o->whole_cell && load.n_sample_ids == 0) {
        fprintf(stderr, PROG ": no user id known for the first write; whole cell skipped\n");
    } else if (rv == 0 && o->whole_cell) {
        wc_run = 1;
        rv = restart_whole_cell(o, lc, load.sample_ids[0], &wc);
        if (rv != 0) {
            fprintf(stderr, PROG ": whole cell restart failed: %s (%s)\n", wc.error,
                    gs_error_name(rv));
        }
    }

    if (rv == 0) {
        term_end = cell_term(lc);
        check_digests(lc, o->start_timeout_ms, &dg_end);
        if (!dg_end.match) {
            fprintf(stderr, PROG ": the replicas' state digests differ at the end\n");
            rv = GS_EINTERNAL;
        }
    }

    /* Report. */
    h = open_memstream(&human, &human_len);
    if (h == NULL) {
        return GS_ENOMEM;
    }
    fprintf(h,
            "geoscale-lifecycle restart: %llu users created (%llu failed) in %.1f s, %.0f "
            "users/s; replicas converged %.1f s later at applied index %llu, %llu keys\n",
            (unsigned long long)load.created, (unsigned long long)load.failed,
            load.elapsed_ms / 1000, load.users_per_s, converge_ms / 1000,
            (unsigned long long)applied, (unsigned long long)keys);
    fprintf(h,
            "raft term %llu before the load, %llu after, %llu after the digests (each new term is "
            "an election)\n",
            (unsigned long long)term_before, (unsigned long long)term_after,
            (unsigned long long)term_after_digest);
    fprintf(h,
            "state digests after the load: %s, StateDigest call %.0f/%.0f/%.0f ms (a full scan of "
            "a RocksDB snapshot on a worker thread)\n",
            dg_load.match ? "equal" : "DIFFER", dg_load.ms[0], dg_load.ms[1], dg_load.ms[2]);
    if (dg_end.done) {
        fprintf(h, "state digests at the end: %s\n", dg_end.match ? "equal" : "DIFFER");
    }
    raft_human(h, &lc->raft);
    fprintf(h, "user payload: CreateUser body %.0f B average (bio %u B)\n",
            load.created > 0 ? (double)load.request_bytes / (double)o->users : 0.0, o->bio_bytes);
    fprintf(h, "%-6s %-10s %-10s %-10s %-9s %-10s %-10s %-10s %-9s %-9s\n", "node", "rss0_MiB",
            "rss_MiB", "hwm_MiB", "rss_B/u", "db_MiB", "raft_MiB", "ckpt_MiB", "db_B/u",
            "raft_B/u");
    jnodes = json_array();
    for (int i = 0; i < CLUSTER_NODES; i++) {
        const struct node_snapshot *b = &before[i], *a = &after[i];
        uint64_t grown =
            a->mem.rss_bytes > b->mem.rss_bytes ? a->mem.rss_bytes - b->mem.rss_bytes : 0;
        json_t *parts = json_object();
        for (int p = 0; p < LC_DISK_PARTS; p++) {
            json_object_set_new(parts, lc_disk_part_names[p],
                                json_pack("{s:I,s:I}", "bytes", (json_int_t)a->disk.part_bytes[p],
                                          "files", (json_int_t)a->disk.part_files[p]));
        }
        fprintf(h,
                "node%-2u %-10.1f %-10.1f %-10.1f %-9.0f %-10.1f %-10.1f %-10.1f %-9.0f %-9.0f\n",
                lc->c.nodes[i].node_id, mib(b->mem.rss_bytes), mib(a->mem.rss_bytes),
                mib(a->mem.hwm_bytes), per_user(grown, load.created), mib(a->disk.part_bytes[0]),
                mib(a->disk.part_bytes[1]), mib(a->disk.part_bytes[2]),
                per_user(a->disk.part_bytes[0], load.created),
                per_user(a->disk.part_bytes[1], load.created));
        json_array_append_new(
            jnodes,
            json_pack("{s:i,s:{s:I,s:I},s:{s:I,s:I},s:f,s:f,s:o,s:I,s:I,s:I,s:f,s:f,s:f,s:o}",
                      "node_id", lc->c.nodes[i].node_id, "memory_before_load", "vm_rss_bytes",
                      (json_int_t)b->mem.rss_bytes, "vm_hwm_bytes", (json_int_t)b->mem.hwm_bytes,
                      "memory_after_load", "vm_rss_bytes", (json_int_t)a->mem.rss_bytes,
                      "vm_hwm_bytes", (json_int_t)a->mem.hwm_bytes, "rss_bytes_per_user",
                      per_user(a->mem.rss_bytes, load.created), "rss_growth_bytes_per_user",
                      per_user(grown, load.created), "disk_parts", parts, "disk_unique_bytes",
                      (json_int_t)a->disk.unique_bytes, "rocksdb_wal_bytes",
                      (json_int_t)a->disk.wal_bytes, "disk_allocated_bytes",
                      (json_int_t)a->disk.allocated_bytes, "rocksdb_bytes_per_user",
                      per_user(a->disk.part_bytes[0], load.created), "raft_bytes_per_user",
                      per_user(a->disk.part_bytes[1], load.created),
                      "disk_allocated_bytes_per_user",
                      per_user(a->disk.allocated_bytes, load.created), "raft_dir",
                      raft_dir_json(&a->raft)));
    }
    fprintf(h, "(rss0 = before the load; rss_B/u = RSS growth per user; raft = log segments "
               "and snapshot manifests; ckpt = checkpoints/, hard links into db/ mostly)\n");
    fprintf(h, "%-17s %-5s %-7s %-8s %-8s %-9s %-9s %-8s %-9s %-8s %-9s %-9s %-9s %-8s\n",
            "scenario", "node", "stop_ms", "open_ms", "raft_ms", "ready_ms", "caught_ms", "wal_MiB",
            "replay_ms", "l0fl_ms", "log_MiB", "log_first", "snap_idx", "fsm_open");
    jsc = json_array();
    for (size_t k = 0; k < sc_done; k++) {
        const struct scenario *s = &sc[k];
        fprintf(h,
                "%-17s %-5u %-7.0f %-8.0f %-8.0f %-9.0f %-9.0f %-8.1f %-9.0f %-8.0f %-9.1f %-9llu "
                "%-9llu %-8llu%s%s\n",
                s->name, s->node_id, s->stop_ms, s->open_ms, s->started_ms, s->ready_ms,
                s->caught_up_ms, mib(s->wal_bytes), s->rdb.replay_ms, s->rdb.flush_ms,
                mib(s->raft_bytes), (unsigned long long)s->raft.first_index,
                (unsigned long long)s->raft.snapshot_index,
                (unsigned long long)s->fsm_applied_at_open, s->error != NULL ? "  " : "",
                s->error != NULL ? s->error : "");
        json_array_append_new(
            jsc,
            json_pack(
                "{s:s,s:b,s:s?,s:i,s:s,s:o,s:i,s:I,s:I,s:o,s:o,s:o,s:o,s:o,s:I,s:I,s:I,"
                "s:I,s:i,s:i,s:i,s:I,s:I,s:I,s:o}",
                "name", s->name, "ok", s->ok, "error", s->error, "node_id", s->node_id, "signal",
                s->sig == SIGKILL ? "SIGKILL" : "SIGTERM", "stop_ms", ms_or_null(s->stop_ms),
                "exit_status", s->exit_status, "last_log_index_before",
                (json_int_t)s->last_log_index, "applied_index_before",
                (json_int_t)s->applied_before, "raft_dir_at_restart", raft_dir_json(&s->raft),
                "exec_to_rocksdb_open_ms", ms_or_null(s->open_ms), "exec_to_raft_started_ms",
                ms_or_null(s->started_ms), "exec_to_ready_ms", ms_or_null(s->ready_ms),
                "exec_to_caught_up_ms", ms_or_null(s->caught_up_ms), "fsm_applied_index_at_open",
                (json_int_t)s->fsm_applied_at_open, "raft_applied_at_start",
                (json_int_t)s->applied_at_start, "log_entries_on_disk_at_restart",
                (json_int_t)(s->raft.first_index > 0 && s->last_log_index >= s->raft.first_index
                                 ? s->last_log_index - s->raft.first_index + 1
                                 : 0),
                "entries_after_snapshot_at_restart",
                (json_int_t)(s->last_log_index > s->raft.snapshot_index
                                 ? s->last_log_index - s->raft.snapshot_index
                                 : 0),
                "snapshot_events", s->snapshot_events, "restore_pull_events", s->restore_events,
                "installed_events", s->install_events, "vm_rss_bytes_after_catch_up",
                (json_int_t)s->mem_after.rss_bytes, "rocksdb_wal_bytes_at_restart",
                (json_int_t)s->wal_bytes, "raft_dir_bytes_at_restart", (json_int_t)s->raft_bytes,
                "rocksdb_open", rocksdb_open_json(&s->rdb)));
    }
    fprintf(h, "(ms after exec: open = the cell's RocksDB opened (event=open), raft = raft group "
               "started (log loaded), ready = event=ready, caught = follows a leader and applied "
               "index reached the others'. At the restart: wal = RocksDB WAL files, replayed by "
               "DB open (replay_ms) then flushed to a level-0 table inside the open (l0fl_ms), "
               "both from db/LOG; log = raft/ bytes; log_first/snap_idx = first log index and "
               "newest snapshot on disk; fsm_open = state machine's applied index at open)\n");
    if (wc_run) {
        fprintf(h,
                "whole cell (SIGKILL x3): all ready %.0f ms, first write %.0f ms, leader agreed "
                "%.0f ms, converged %.0f ms after the first exec%s%s\n",
                wc.all_ready_ms, wc.first_write_ms, wc.leader_ms, wc.converged_ms,
                wc.error != NULL ? "  " : "", wc.error != NULL ? wc.error : "");
    }
    fprintf(h, "target: restart of a node holding 1M users under 5000 ms (measured here, not "
               "judged)\n");
    fclose(h);
    h = NULL;
    report = json_pack(
        "{s:s,s:s,s:o,s:{s:I,s:I,s:I,s:f,s:f,s:i,s:i,s:i,s:f,s:I,s:I,s:I},s:I,s:I,s:o,s:o,"
        "s:{s:I,s:I,s:f},s:o,s:o,s:o}",
        "mode", "restart", "geoscaled", o->geoscaled, "raft", raft_json(&lc->raft), "load",
        "users_requested", (json_int_t)o->users, "created", (json_int_t)load.created, "failed",
        (json_int_t)load.failed, "elapsed_ms", round(load.elapsed_ms), "users_per_s",
        round(load.users_per_s), "window", o->window, "connections", o->connections, "bio_bytes",
        o->bio_bytes, "request_bytes_per_user",
        load.created > 0 ? round((double)load.request_bytes / (double)o->users) : 0.0, "retries",
        (json_int_t)load.retries, "term_before", (json_int_t)term_before, "term_after",
        (json_int_t)term_after, "term_after_digest", (json_int_t)term_after_digest, "term_end",
        (json_int_t)term_end, "digest_after_load", digest_json(&dg_load), "digest_at_end",
        digest_json(&dg_end), "converged", "applied_index", (json_int_t)applied, "keys",
        (json_int_t)keys, "after_load_ms", round(converge_ms), "nodes", jnodes, "restarts", jsc,
        "whole_cell",
        wc_run ? json_pack("{s:b,s:s?,s:o,s:o,s:o,s:o,s:[o,o,o]}", "ok", wc.ok, "error", wc.error,
                           "exec_to_all_ready_ms", ms_or_null(wc.all_ready_ms),
                           "exec_to_first_write_ms", ms_or_null(wc.first_write_ms),
                           "exec_to_leader_agreed_ms", ms_or_null(wc.leader_ms),
                           "exec_to_converged_ms", ms_or_null(wc.converged_ms), "node_ready_ms",
                           ms_or_null(wc.ready_ms[0]), ms_or_null(wc.ready_ms[1]),
                           ms_or_null(wc.ready_ms[2]))
               : json_null());
    if (report == NULL) {
        free(human);
        return GS_ENOMEM;
    }
    emit(o, out, report, human);
    json_decref(report);
    free(human);
    return rv;
}

/* ----------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    struct options o;
    struct lc_cell lc;
    FILE *out;
    int out_fd;
    int rv;

    signal(SIGPIPE, SIG_IGN);
    rv = parse_options(argc, argv, &o);
    if (rv != 0) {
        return rv == 1 ? 0 : rv;
    }
    /* The report goes to the original stdout; everything else, the
     * harness's "# ..." lines included, to stderr. */
    fflush(stdout);
    out_fd = dup(STDOUT_FILENO);
    if (out_fd < 0 || dup2(STDERR_FILENO, STDOUT_FILENO) < 0 ||
        (out = fdopen(out_fd, "w")) == NULL) {
        fprintf(stderr, PROG ": cannot set up the output: %s\n", strerror(errno));
        return 1;
    }
    rv = lc_cell_init(&lc, o.geoscaled, &o.raft, 1);
    if (rv == 0) {
        fprintf(stderr, PROG ": starting a 3-node cell in %s\n", lc.c.dir);
        rv = lc_cell_start(&lc, o.start_timeout_ms);
        if (rv != 0) {
            fprintf(stderr, PROG ": the cell did not start (%s)\n", gs_error_name(rv));
            cluster_dump_logs(&lc.c, 20);
        }
    }
    if (rv == 0) {
        rv = o.mode == MODE_FAILOVER ? run_failover(&o, &lc, out) : run_restart(&o, &lc, out);
    }
    if (rv != 0 && o.json && !report_written) {
        /* Still one JSON object on stdout: what failed is on stderr. */
        json_t *err =
            json_pack("{s:s,s:b,s:s,s:s}", "mode", o.mode == MODE_FAILOVER ? "failover" : "restart",
                      "ok", 0, "error", gs_error_name(rv), "dir", lc.c.dir);
        if (err != NULL) {
            json_dumpf(err, out, JSON_PRESERVE_ORDER);
            fputc('\n', out);
            json_decref(err);
        }
    }
    lc_cell_destroy(&lc, o.keep || rv != 0);
    fclose(out);
    return rv == 0 ? 0 : 1;
}
