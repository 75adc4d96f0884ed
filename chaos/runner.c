/*
 * geoscale-chaos: run a real 3-node GeoScale cell, inject faults while
 * client threads run operations, record every operation in a history
 * (chaos/history.h), and check it (chaos/checker.h): linearizability of
 * registers and no lost acknowledged writes. chaos/README.md ("Runner")
 * describes a run; --help lists the options.
 *
 * A run:
 *  1. network (runner_net.c): a namespace per node joined by a bridge, or
 *     loopback; the three nodes are geoscaled processes in lone-cell mode,
 *     started with PR_SET_PDEATHSIG(SIGKILL) so that none outlives us;
 *  2. setup: --keys register users (bio "v0", an init event each), then all
 *     replicas must agree (StateDigest) before any fault;
 *  3. --clients threads, each one history "process" at a time (a process
 *     whose operation ended "info" is retired: its operation may still take
 *     effect later, so the thread goes on as a new process). Thread t talks
 *     to any node (t % 4 == 0) or only to node (t % 4) (pinned): a read
 *     pinned to a node is what sees that node's stale state, if it has any;
 *  4. the fault schedule, a pure function of --seed and --duration, printed
 *     before the run: episodes of one fault each (kill, kill the leader,
 *     pause, isolate, split 1|2, and rarely a short quorum loss), each
 *     followed by its repair; one episode at a time, so never more than one
 *     node is down or cut off except in a quorum-loss episode;
 *  5. end: repair everything, stop the clients, SIGKILL all three nodes at
 *     once and restart them (durability), wait until the three report one
 *     StateDigest (60 s), read back every register, every created user and
 *     its followings, close the history and check it.
 *
 * Exit status: 0 when every check passed (with --unsafe-local-reads: when the
 * checker FOUND a violation, as it must), 1 otherwise, 2 for bad usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "chaos/checker.h"
#include "chaos/history.h"
#include "chaos/runner_net.h"
#include "engine/mono.h"
#include "geoscale.pb-c.h"
#include "geoscale/client.h"
#include "geoscale/errors.h"

#define N RNET_NODES
#define CALL_TIMEOUT_MS 1500
#define MAX_CLIENTS 64
#define MAX_KEYS 1000
#define MAX_CREATES 1500
#define MAX_EPISODES 1024
#define FINAL_PROCESS_BASE 1000000
#define CONVERGE_TIMEOUT_S 60.0

/* ------------------------------------------------------------ options */

enum scenario {
    SCENARIO_RANDOM,
    SCENARIO_STALE_READS,
};

struct options {
    uint64_t seed;
    unsigned duration_s;
    char out[PATH_MAX];
    unsigned clients;
    unsigned keys;
    bool unsafe_local_reads;
    int netns; /* -1 auto, 0 off, 1 on */
    enum scenario scenario;
    char geoscaled[PATH_MAX];
    bool schedule_only;
};

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: geoscale-chaos [OPTIONS]\n"
            "\n"
            "Run a real 3-node GeoScale cell (geoscaled processes in lone-cell mode),\n"
            "inject faults while client threads read, write, compare-and-set, create\n"
            "users and follow, record every operation in a history, then check it:\n"
            "every register linearizable, no acknowledged create or follow lost.\n"
            "Needs root for network namespaces (else falls back to loopback).\n"
            "\n"
            "Options:\n"
            "  -s, --seed N            seed of the fault schedule and the operations\n"
            "                          (default 1); the same seed and duration give\n"
            "                          the same schedule, printed at start\n"
            "  -d, --duration SECONDS  time under faults (default 60, at least 10)\n"
            "  -o, --out DIR           where history.jsonl, schedule.txt, the node\n"
            "                          configs, data and logs (nodeN.log) go\n"
            "                          (default /tmp/geoscale-chaos-PID); node data\n"
            "                          in DIR is replaced\n"
            "  -c, --clients N         client threads (default 8, 1-%d); thread t talks\n"
            "                          to any node if t %% 4 == 0, else only to node\n"
            "                          t %% 4\n"
            "  -k, --keys N            register users (default 8, 1-%d)\n"
            "      --unsafe-local-reads\n"
            "                          start the nodes with geoscaled\n"
            "                          --unsafe-local-reads (stale reads on purpose):\n"
            "                          the run is then EXPECTED to find a violation\n"
            "                          and exits 0 only if the checker found one\n"
            "      --netns auto|on|off network namespaces per node, partitions by\n"
            "                          blackhole routes (on); everything on loopback,\n"
            "                          partitions replaced by SIGSTOP of the node\n"
            "                          (off); on if permitted, else off (auto, the\n"
            "                          default)\n"
            "      --scenario random|stale-reads\n"
            "                          random: the seeded fault schedule (default);\n"
            "                          stale-reads: cut one follower off from its peers\n"
            "                          (clients still reach it) for most of the run,\n"
            "                          nothing else; needs namespaces\n"
            "      --geoscaled PATH    the node binary (default: ../geoscaled from this\n"
            "                          program's directory, else geoscaled beside it)\n"
            "      --schedule-only     print the fault schedule of --seed and\n"
            "                          --duration and exit (nothing is started)\n"
            "  -h, --help              print this help and exit\n"
            "\n"
            "Faults (random scenario): SIGKILL of a random node, SIGKILL of the\n"
            "leader (asked with CellStatus at fault time), SIGSTOP/SIGCONT pause\n"
            "longer than the election timeout, isolation of a node from peers and\n"
            "clients, a 1|2 split (the node cut from its peers only), and rarely a\n"
            "short quorum loss (every node cut from the others). Each is repaired\n"
            "(restart, SIGCONT, heal) before the next; progress lines go to stderr.\n"
            "\n"
            "Exit status: 0 when every check passed (with --unsafe-local-reads: when\n"
            "a violation was found), 1 otherwise, 2 for bad usage.\n",
            MAX_CLIENTS, MAX_KEYS);
}

/* ------------------------------------------------------------ small helpers */

static volatile sig_atomic_t g_stop_signal;

static void on_signal(int sig)
{
    g_stop_signal = sig;
}

static double g_t0;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "chaos [%7.1fs] %s\n", gs_mono_s() - g_t0, line);
}

/* splitmix64: the schedule's and the clients' random numbers. */
static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rand_unit(uint64_t *state)
{
    return (double)(splitmix64(state) >> 11) / (double)(1ull << 53);
}

/* ------------------------------------------------------------ schedule */

enum fault_kind {
    FAULT_KILL,
    FAULT_KILL_LEADER,
    FAULT_PAUSE,
    FAULT_ISOLATE,
    FAULT_SPLIT,
    FAULT_QUORUM_LOSS,
    FAULT_KINDS
};

static const char *const fault_names[FAULT_KINDS] = {
    "kill", "kill-leader", "pause", "isolate", "split", "quorum-loss",
};

#define NODE_LEADER (-1)
#define NODE_FOLLOWER (-2)

struct episode {
    double start_s; /* from the start of the faults */
    double hold_s;  /* how long the fault lasts before its repair */
    enum fault_kind kind;
    int node; /* 0..2, NODE_LEADER or NODE_FOLLOWER (resolved at fault time) */
};

struct schedule {
    struct episode ep[MAX_EPISODES];
    size_t n;
};

static void schedule_make(struct schedule *s, const struct options *o)
{
    s->n = 0;
    uint64_t st = o->seed ^ 0x5eedfa17c0ffeeull;
    if (o->scenario == SCENARIO_STALE_READS) {
        double hold = o->duration_s > 20 ? (double)o->duration_s - 10.0 : 10.0;
        s->ep[s->n++] = (struct episode){4.0, hold, FAULT_SPLIT, NODE_FOLLOWER};
        return;
    }
    double t = 5.0;
    while (t < (double)o->duration_s - 8.0 && s->n < MAX_EPISODES) {
        double r = rand_unit(&st);
        struct episode e;
        e.start_s = t;
        e.node = (int)(splitmix64(&st) % N);
        e.hold_s = 2.0 + 6.0 * rand_unit(&st);
        if (r < 0.20) {
            e.kind = FAULT_KILL;
        } else if (r < 0.40) {
            e.kind = FAULT_KILL_LEADER;
            e.node = NODE_LEADER;
        } else if (r < 0.58) {
            e.kind = FAULT_PAUSE;
            e.hold_s = 2.5 + 4.0 * rand_unit(&st); /* > election timeout (1 s) */
        } else if (r < 0.75) {
            e.kind = FAULT_ISOLATE;
        } else if (r < 0.95) {
            e.kind = FAULT_SPLIT;
        } else {
            e.kind = FAULT_QUORUM_LOSS;
            e.hold_s = 2.0 + 2.0 * rand_unit(&st); /* rare and short */
        }
        if (e.start_s + e.hold_s > (double)o->duration_s - 2.0) {
            break;
        }
        s->ep[s->n++] = e;
        t = e.start_s + e.hold_s + 2.0 + 4.0 * rand_unit(&st);
    }
}

static void episode_describe(const struct episode *e, char *buf, size_t len)
{
    char node[24];
    if (e->kind == FAULT_QUORUM_LOSS) {
        snprintf(node, sizeof node, "all");
    } else if (e->node == NODE_LEADER) {
        snprintf(node, sizeof node, "leader");
    } else if (e->node == NODE_FOLLOWER) {
        snprintf(node, sizeof node, "a follower");
    } else {
        snprintf(node, sizeof node, "node %d", e->node + 1);
    }
    snprintf(buf, len, "t=%6.1fs %-11s %-10s for %4.1fs", e->start_s, fault_names[e->kind], node,
             e->hold_s);
}

/* ------------------------------------------------------------ nodes */

struct node {
    pid_t pid; /* 0 = not running */
    bool paused;
    int starts;
    char config_path[PATH_MAX];
    char log_path[PATH_MAX];
    char data_dir[PATH_MAX];
};

struct run {
    struct options o;
    struct rnet net;
    struct node nodes[N];
    struct chaos_history_writer *hist;
    uint64_t key_ids[MAX_KEYS];
    unsigned n_keys;

    /* created users (ok creates), shared by the client threads */
    pthread_mutex_t mu;
    uint64_t created[MAX_CREATES];
    size_t n_created;
    unsigned creates_started;

    atomic_bool clients_stop;
    atomic_long value_seq; /* unique register values */
    atomic_long n_ok, n_fail, n_info;
    atomic_long n_by_f[8][3]; /* [chaos_fn][ok, fail, info] */
    atomic_int unexpected_exits;
    unsigned faults[FAULT_KINDS];
};

static struct run *g_run; /* for the atexit cleanup only */

static void node_paths(struct run *r, int i)
{
    struct node *nd = &r->nodes[i];
    snprintf(nd->config_path, sizeof nd->config_path, "%.200s/node%d.json", r->o.out, i + 1);
    snprintf(nd->log_path, sizeof nd->log_path, "%.200s/node%d.log", r->o.out, i + 1);
    snprintf(nd->data_dir, sizeof nd->data_dir, "%.200s/node%d", r->o.out, i + 1);
}

static int write_configs(struct run *r)
{
    uint64_t st = r->o.seed ^ 0x6b6579ull;
    char key[65];
    for (int i = 0; i < 32; i += 8) {
        snprintf(key + 2 * i, sizeof key - 2 * (size_t)i, "%016" PRIx64, splitmix64(&st));
    }
    for (int i = 0; i < N; i++) {
        struct node *nd = &r->nodes[i];
        FILE *f = fopen(nd->config_path, "w");
        if (f == NULL) {
            fprintf(stderr, "chaos: cannot write %s: %s\n", nd->config_path, strerror(errno));
            return GS_EIO;
        }
        fprintf(f,
                "{\n  \"node_id\": %d,\n  \"region\": \"us-east\",\n  \"cell_id\": 1,\n"
                "  \"raft_address\": \"%s\",\n  \"client_address\": \"%s\",\n"
                "  \"data_dir\": \"%s\",\n  \"peers\": [\n",
                i + 1, r->net.raft_address[i], r->net.client_address[i], nd->data_dir);
        for (int j = 0; j < N; j++) {
            fprintf(f, "    {\"id\": %d, \"raft_address\": \"%s\", \"client_address\": \"%s\"}%s\n",
                    j + 1, r->net.raft_address[j], r->net.client_address[j], j < N - 1 ? "," : "");
        }
        fprintf(f,
                "  ],\n  \"username_hash_key\": \"%s\",\n"
                "  \"raft\": {\"election_timeout_ms\": 1000, \"heartbeat_timeout_ms\": 100}\n}\n",
                key);
        if (fclose(f) != 0) {
            return GS_EIO;
        }
    }
    return 0;
}

static int node_start(struct run *r, int i)
{
    struct node *nd = &r->nodes[i];
    if (nd->pid != 0) {
        return 0;
    }
    char *argv[6];
    int argc = 0;
    argv[argc++] = r->o.geoscaled;
    argv[argc++] = "--config";
    argv[argc++] = nd->config_path;
    if (r->o.unsafe_local_reads) {
        argv[argc++] = "--unsafe-local-reads";
    }
    argv[argc] = NULL;
    int log_fd = open(nd->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) {
        fprintf(stderr, "chaos: cannot open %s: %s\n", nd->log_path, strerror(errno));
        return GS_EIO;
    }
    dprintf(log_fd, "---- chaos: start %d of node %d\n", nd->starts + 1, i + 1);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        close(log_fd);
        return GS_EIO;
    }
    if (pid == 0) {
        /* Only async-signal-safe calls until exec (the parent has threads). */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) {
            _exit(127);
        }
        if (rnet_enter(&r->net, i) != 0) {
            _exit(126);
        }
        dup2(log_fd, STDOUT_FILENO);
        dup2(log_fd, STDERR_FILENO);
        execv(argv[0], argv);
        _exit(127);
    }
    close(log_fd);
    nd->pid = pid;
    nd->paused = false;
    nd->starts++;
    return 0;
}

/* SIGKILL node i and reap it. */
static void node_kill(struct run *r, int i)
{
    struct node *nd = &r->nodes[i];
    if (nd->pid == 0) {
        return;
    }
    kill(nd->pid, SIGKILL);
    int status;
    while (waitpid(nd->pid, &status, 0) < 0 && errno == EINTR) {
    }
    nd->pid = 0;
    nd->paused = false;
}

static void node_pause(struct run *r, int i, bool pause)
{
    struct node *nd = &r->nodes[i];
    if (nd->pid == 0 || nd->paused == pause) {
        return;
    }
    kill(nd->pid, pause ? SIGSTOP : SIGCONT);
    nd->paused = pause;
}

/* Reap nodes that exited without being told to: a crash is a failed run. */
static void nodes_check_exits(struct run *r)
{
    for (int i = 0; i < N; i++) {
        struct node *nd = &r->nodes[i];
        if (nd->pid == 0) {
            continue;
        }
        int status;
        pid_t p = waitpid(nd->pid, &status, WNOHANG);
        if (p == nd->pid) {
            say("FAILURE node %d (pid %d) exited by itself: %s %d; see %s", i + 1, (int)p,
                WIFSIGNALED(status) ? "signal" : "status",
                WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status), nd->log_path);
            atomic_fetch_add(&r->unexpected_exits, 1);
            nd->pid = 0;
            node_start(r, i);
        }
    }
}

static void cleanup(void)
{
    struct run *r = g_run;
    if (r == NULL) {
        return;
    }
    g_run = NULL;
    for (int i = 0; i < N; i++) {
        node_kill(r, i);
    }
    rnet_teardown(&r->net);
}

/* ------------------------------------------------------------ client calls */

static gs_sync *open_client(struct run *r, int pinned_node, unsigned timeout_ms)
{
    const char *seeds[N];
    size_t n = 0;
    if (pinned_node >= 0) {
        seeds[n++] = r->net.client_address[pinned_node];
    } else {
        for (int i = 0; i < N; i++) {
            seeds[n++] = r->net.client_address[i];
        }
    }
    struct gs_client_options opts;
    memset(&opts, 0, sizeof opts);
    opts.timeout_ms = timeout_ms;
    opts.pin = pinned_node >= 0;
    gs_sync *s = NULL;
    if (gs_sync_open(seeds, n, &opts, &s) != 0) {
        return NULL;
    }
    return s;
}

/* Errors of every call by code (-code), for the progress lines and the
 * summary. The runner is a main program: this is its only shared counter
 * outside struct run, because call() serves setup, clients and checks. */
#define ERROR_CODES 32
static atomic_long g_errors[ERROR_CODES];

static int call(gs_sync *s, Geoscale__Method method, const void *req, void **resp)
{
    ProtobufCMessage *out = NULL;
    int rv = gs_sync_call(s, (uint16_t)method, (const ProtobufCMessage *)req, &out, NULL);
    *resp = out;
    if (rv < 0 && -rv < ERROR_CODES) {
        atomic_fetch_add(&g_errors[-rv], 1);
    }
    return rv;
}

/* "NAME=count ..." of every error code seen so far. */
static void errors_describe(char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int code = 1; code < ERROR_CODES && used < len; code++) {
        long n = atomic_load(&g_errors[code]);
        if (n > 0) {
            int w = snprintf(buf + used, len - used, " %s=%ld", gs_error_name(-code), n);
            used += w > 0 ? (size_t)w : 0;
        }
    }
    if (buf[0] == '\0') {
        snprintf(buf, len, " none");
    }
}

static void free_msg(void *m)
{
    if (m != NULL) {
        protobuf_c_message_free_unpacked((ProtobufCMessage *)m, NULL);
    }
}

/* CellStatus of node i (pinned); 0 and *state/leader or an error. */
static int cell_status(struct run *r, int i, char *state, size_t len, uint64_t *leader)
{
    gs_sync *s = open_client(r, i, 1000);
    if (s == NULL) {
        return GS_ENOMEM;
    }
    Geoscale__CellStatusRequest req = GEOSCALE__CELL_STATUS_REQUEST__INIT;
    Geoscale__CellStatusResponse *resp = NULL;
    int rv = call(s, GEOSCALE__METHOD__METHOD_CELL_STATUS, &req, (void **)&resp);
    if (rv == 0) {
        snprintf(state, len, "%s", resp->state);
        *leader = resp->leader_id;
    }
    free_msg(resp);
    gs_sync_close(s);
    return rv;
}

/* The leader as the running, unpaused nodes see it: node index or -1. */
static int find_leader(struct run *r)
{
    int votes[N] = {0};
    for (int i = 0; i < N; i++) {
        if (r->nodes[i].pid == 0 || r->nodes[i].paused) {
            continue;
        }
        char state[32];
        uint64_t leader = 0;
        if (cell_status(r, i, state, sizeof state, &leader) != 0) {
            continue;
        }
        if (strcmp(state, "leader") == 0) {
            return i;
        }
        if (leader >= 1 && leader <= N) {
            votes[leader - 1]++;
        }
    }
    for (int i = 0; i < N; i++) {
        if (votes[i] >= 2) {
            return i;
        }
    }
    return -1;
}

static int wait_leader(struct run *r, double timeout_s)
{
    double end = gs_mono_s() + timeout_s;
    while (gs_mono_s() < end && !g_stop_signal) {
        int l = find_leader(r);
        if (l >= 0) {
            return l;
        }
        gs_sleep_ms(200);
    }
    return -1;
}

/* Wait until every node reports the same StateDigest. 0 or GS_ETIMEOUT. */
static int wait_converged(struct run *r, double timeout_s)
{
    double end = gs_mono_s() + timeout_s;
    char last[256] = "";
    while (gs_mono_s() < end && !g_stop_signal) {
        uint8_t digest[N][32];
        uint64_t applied[N];
        bool all = true;
        for (int i = 0; i < N && all; i++) {
            gs_sync *s = open_client(r, i, 2000);
            Geoscale__StateDigestRequest req = GEOSCALE__STATE_DIGEST_REQUEST__INIT;
            Geoscale__StateDigestResponse *resp = NULL;
            int rv = s != NULL
                         ? call(s, GEOSCALE__METHOD__METHOD_STATE_DIGEST, &req, (void **)&resp)
                         : GS_ENOMEM;
            if (rv == 0 && resp->digest.len == 32) {
                memcpy(digest[i], resp->digest.data, 32);
                applied[i] = resp->applied_index;
            } else {
                all = false;
            }
            free_msg(resp);
            gs_sync_close(s);
        }
        if (all) {
            snprintf(last, sizeof last,
                     "applied_index %" PRIu64 "/%" PRIu64 "/%" PRIu64 " digests %s", applied[0],
                     applied[1], applied[2],
                     memcmp(digest[0], digest[1], 32) == 0 && memcmp(digest[0], digest[2], 32) == 0
                         ? "equal"
                         : "differ");
            if (applied[0] == applied[1] && applied[0] == applied[2] &&
                memcmp(digest[0], digest[1], 32) == 0 && memcmp(digest[0], digest[2], 32) == 0) {
                say("converged: %s", last);
                return 0;
            }
        }
        gs_sleep_ms(500);
    }
    say("FAILURE: replicas did not converge within %.0fs (last: %s)", timeout_s,
        last[0] != '\0' ? last : "no answer from every node");
    return GS_ETIMEOUT;
}

/* ------------------------------------------------------------ operations */

static void key_name(uint64_t user_id, char *buf, size_t len)
{
    snprintf(buf, len, "u:%" PRIu64, user_id);
}

/* A profile's register value: bio "v<N>" -> N. */
static bool bio_value(const Geoscale__Profile *p, int64_t *out)
{
    if (p == NULL || p->bio == NULL || p->bio[0] != 'v') {
        return false;
    }
    char *end = NULL;
    errno = 0;
    long long v = strtoll(p->bio + 1, &end, 10);
    if (errno != 0 || end == p->bio + 1 || *end != '\0') {
        return false;
    }
    *out = v;
    return true;
}

/* Whether a failed write may still have been applied. pinned: the client
 * never retries, so CONNECT means nothing was sent. */
static bool write_outcome_unknown(int rv, bool pinned)
{
    switch (rv) {
    case GS_EINVAL:
    case GS_ENOTFOUND:
    case GS_EEXIST:
    case GS_ECONFLICT:
    case GS_ETOOBIG:
    case GS_EBLOCKED:
    case GS_EUNIMPL:
    case GS_EWRONGCELL:
    case GS_EDENIED:
    case GS_ENOMEM:
        return false;
    case GS_ECONNECT:
        return !pinned;
    default:
        return true; /* TIMEOUT, OUTCOME_UNKNOWN, UNAVAILABLE, CLOSED, ... */
    }
}

struct client {
    struct run *r;
    int index;
    int pinned; /* node index, or -1 */
    int64_t process;
    uint64_t rng;
    gs_sync *s;
    unsigned creates;
};

static void count(struct run *r, enum chaos_fn f, enum chaos_event_type t)
{
    int k = t == CHAOS_OK ? 0 : t == CHAOS_FAIL ? 1 : 2;
    atomic_fetch_add(&r->n_by_f[f][k], 1);
    atomic_fetch_add(k == 0 ? &r->n_ok : k == 1 ? &r->n_fail : &r->n_info, 1);
}

static void complete(struct client *c, enum chaos_event_type t, enum chaos_fn f, const char *key,
                     struct chaos_value v)
{
    chaos_history_record(c->r->hist, c->process, t, f, key, v);
    count(c->r, f, t);
    if (t == CHAOS_INFO) {
        /* The operation stays open forever: go on as a new process. */
        c->process += (int64_t)c->r->o.clients;
    }
}

/* read: GetUser as the owner. Returns the version read (0 if none). */
static int op_read(struct client *c, uint64_t user_id, int64_t *value, uint64_t *version)
{
    char key[32];
    key_name(user_id, key, sizeof key);
    chaos_history_record(c->r->hist, c->process, CHAOS_INVOKE, CHAOS_F_READ, key,
                         chaos_value_null());
    Geoscale__GetUserRequest req = GEOSCALE__GET_USER_REQUEST__INIT;
    req.user_id = user_id;
    req.viewer_id = user_id;
    Geoscale__GetUserResponse *resp = NULL;
    int rv = call(c->s, GEOSCALE__METHOD__METHOD_GET_USER, &req, (void **)&resp);
    int64_t v = 0;
    if (rv == 0 && bio_value(resp->profile, &v)) {
        complete(c, CHAOS_OK, CHAOS_F_READ, key, chaos_value_int(v));
        *value = v;
        *version = resp->profile->version;
    } else if (rv == GS_ENOTFOUND || rv == 0) {
        /* The register's user exists since setup: reading no value is an
         * answer the checker must judge, not an error. */
        complete(c, CHAOS_OK, CHAOS_F_READ, key, chaos_value_null());
        rv = GS_ENOTFOUND;
    } else {
        complete(c, CHAOS_FAIL, CHAOS_F_READ, key, chaos_value_null());
    }
    free_msg(resp);
    return rv;
}

/* write (expected_version 0) or cas (expected_version = what was read). */
static void op_update(struct client *c, uint64_t user_id, bool is_cas, int64_t from,
                      uint64_t expected_version)
{
    struct run *r = c->r;
    char key[32], bio[32];
    key_name(user_id, key, sizeof key);
    int64_t to = atomic_fetch_add(&r->value_seq, 1);
    snprintf(bio, sizeof bio, "v%" PRId64, to);
    enum chaos_fn f = is_cas ? CHAOS_F_CAS : CHAOS_F_WRITE;
    struct chaos_value v = is_cas ? chaos_value_pair(from, to) : chaos_value_int(to);
    chaos_history_record(r->hist, c->process, CHAOS_INVOKE, f, key, v);
    Geoscale__UpdateUserRequest req = GEOSCALE__UPDATE_USER_REQUEST__INIT;
    Geoscale__ProfileField fields[1] = {GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_BIO};
    req.user_id = user_id;
    req.expected_version = is_cas ? expected_version : 0;
    req.n_fields = 1;
    req.fields = fields;
    req.bio = bio;
    Geoscale__UpdateUserResponse *resp = NULL;
    int rv = call(c->s, GEOSCALE__METHOD__METHOD_UPDATE_USER, &req, (void **)&resp);
    free_msg(resp);
    if (rv == 0) {
        complete(c, CHAOS_OK, f, key, v);
    } else if (write_outcome_unknown(rv, c->pinned >= 0)) {
        complete(c, CHAOS_INFO, f, key, v);
    } else {
        complete(c, CHAOS_FAIL, f, key, v);
    }
}

static void op_create(struct client *c)
{
    struct run *r = c->r;
    char username[64];
    snprintf(username, sizeof username, "c%d_%u", c->index, c->creates++);
    chaos_history_record(r->hist, c->process, CHAOS_INVOKE, CHAOS_F_CREATE, NULL,
                         chaos_value_null());
    Geoscale__CreateUserRequest req = GEOSCALE__CREATE_USER_REQUEST__INIT;
    req.username = username;
    req.bio = "created";
    Geoscale__CreateUserResponse *resp = NULL;
    int rv = call(c->s, GEOSCALE__METHOD__METHOD_CREATE_USER, &req, (void **)&resp);
    if (rv == 0 && resp->user_id != 0) {
        char key[32];
        key_name(resp->user_id, key, sizeof key);
        pthread_mutex_lock(&r->mu);
        if (r->n_created < MAX_CREATES) {
            r->created[r->n_created++] = resp->user_id;
        }
        pthread_mutex_unlock(&r->mu);
        complete(c, CHAOS_OK, CHAOS_F_CREATE, key, chaos_value_null());
    } else if (rv != 0 && write_outcome_unknown(rv, c->pinned >= 0)) {
        complete(c, CHAOS_INFO, CHAOS_F_CREATE, NULL, chaos_value_null());
    } else {
        complete(c, CHAOS_FAIL, CHAOS_F_CREATE, NULL, chaos_value_null());
    }
    free_msg(resp);
}

static void op_follow(struct client *c)
{
    struct run *r = c->r;
    uint64_t actor = 0, target = 0;
    pthread_mutex_lock(&r->mu);
    if (r->n_created >= 2) {
        size_t a = (size_t)(splitmix64(&c->rng) % r->n_created);
        size_t b = (size_t)(splitmix64(&c->rng) % (r->n_created - 1));
        if (b >= a) {
            b++;
        }
        actor = r->created[a];
        target = r->created[b];
    }
    pthread_mutex_unlock(&r->mu);
    if (actor == 0) {
        return;
    }
    char key[32];
    key_name(actor, key, sizeof key);
    struct chaos_value v = chaos_value_int((int64_t)target);
    chaos_history_record(r->hist, c->process, CHAOS_INVOKE, CHAOS_F_FOLLOW, key, v);
    Geoscale__EdgeRequest req = GEOSCALE__EDGE_REQUEST__INIT;
    req.actor_id = actor;
    req.target_id = target;
    Geoscale__EdgeResponse *resp = NULL;
    int rv = call(c->s, GEOSCALE__METHOD__METHOD_FOLLOW, &req, (void **)&resp);
    free_msg(resp);
    if (rv == 0) {
        complete(c, CHAOS_OK, CHAOS_F_FOLLOW, key, v);
    } else if (write_outcome_unknown(rv, c->pinned >= 0)) {
        complete(c, CHAOS_INFO, CHAOS_F_FOLLOW, key, v);
    } else {
        complete(c, CHAOS_FAIL, CHAOS_F_FOLLOW, key, v);
    }
}

static void *client_main(void *arg)
{
    struct client *c = arg;
    struct run *r = c->r;
    c->s = open_client(r, c->pinned, CALL_TIMEOUT_MS);
    if (c->s == NULL) {
        say("client %d: cannot open a client", c->index);
        return NULL;
    }
    while (!atomic_load(&r->clients_stop)) {
        uint64_t user_id = r->key_ids[splitmix64(&c->rng) % r->n_keys];
        double p = rand_unit(&c->rng);
        long before_fail = atomic_load(&r->n_fail) + atomic_load(&r->n_info);
        if (p < 0.40) {
            int64_t v;
            uint64_t ver;
            op_read(c, user_id, &v, &ver);
        } else if (p < 0.65) {
            op_update(c, user_id, false, 0, 0);
        } else if (p < 0.80) {
            int64_t v = 0;
            uint64_t ver = 0;
            if (op_read(c, user_id, &v, &ver) == 0) {
                op_update(c, user_id, true, v, ver);
            }
        } else if (p < 0.90) {
            pthread_mutex_lock(&r->mu);
            bool more = r->creates_started < MAX_CREATES;
            r->creates_started += more ? 1 : 0;
            pthread_mutex_unlock(&r->mu);
            if (more) {
                op_create(c);
            } else {
                op_follow(c);
            }
        } else {
            op_follow(c);
        }
        if (atomic_load(&r->n_fail) + atomic_load(&r->n_info) != before_fail) {
            gs_sleep_ms(50); /* do not spin against a node that is down */
        }
    }
    gs_sync_close(c->s);
    c->s = NULL;
    return NULL;
}

/* ------------------------------------------------------------ setup */

static int setup_keys(struct run *r)
{
    gs_sync *s = open_client(r, -1, 5000);
    if (s == NULL) {
        return GS_ENOMEM;
    }
    int rv = 0;
    for (unsigned k = 0; k < r->o.keys; k++) {
        char username[32];
        snprintf(username, sizeof username, "k%u", k);
        Geoscale__CreateUserRequest req = GEOSCALE__CREATE_USER_REQUEST__INIT;
        req.username = username;
        req.bio = "v0";
        Geoscale__CreateUserResponse *resp = NULL;
        for (int attempt = 0; attempt < 10; attempt++) {
            rv = call(s, GEOSCALE__METHOD__METHOD_CREATE_USER, &req, (void **)&resp);
            if (rv != GS_EUNAVAILABLE && rv != GS_ETIMEOUT && rv != GS_ECONNECT) {
                break;
            }
            gs_sleep_ms(500);
        }
        if (rv != 0) {
            say("setup: creating register user %u failed: %s", k, gs_error_name(rv));
            break;
        }
        r->key_ids[k] = resp->user_id;
        free_msg(resp);
        char key[32];
        key_name(r->key_ids[k], key, sizeof key);
        struct chaos_event ev;
        memset(&ev, 0, sizeof ev);
        ev.type = CHAOS_INIT;
        ev.f = CHAOS_F_NONE;
        snprintf(ev.key, sizeof ev.key, "%s", key);
        ev.value = chaos_value_int(0);
        ev.time_ns = 0;
        rv = chaos_history_append(r->hist, &ev);
        if (rv != 0) {
            say("setup: history append failed: %s", gs_error_name(rv));
            break;
        }
    }
    r->n_keys = r->o.keys;
    gs_sync_close(s);
    return rv;
}

/* ------------------------------------------------------------ faults */

static void heal_all(struct run *r)
{
    if (r->net.mode == RNET_NETNS && rnet_heal(&r->net) != 0) {
        say("warning: some cut could not be removed");
    }
    for (int i = 0; i < N; i++) {
        node_pause(r, i, false);
        if (r->nodes[i].pid == 0) {
            node_start(r, i);
        }
    }
}

/* Cut node i off from its peers (both directions), and from the clients
 * too if clients is set. Without namespaces: pause it. */
static void isolate(struct run *r, int i, bool clients)
{
    if (r->net.mode != RNET_NETNS) {
        node_pause(r, i, true);
        return;
    }
    for (int j = 0; j < N; j++) {
        if (j != i) {
            rnet_set_cut(&r->net, i, j, true);
            rnet_set_cut(&r->net, j, i, true);
        }
    }
    if (clients) {
        rnet_set_cut_clients(&r->net, i, true);
    }
}

/* Apply episode e. Returns the node it hit (for the log) or -1. */
static int episode_apply(struct run *r, const struct episode *e)
{
    int node = e->node;
    if (node == NODE_LEADER || node == NODE_FOLLOWER) {
        int leader = find_leader(r);
        if (node == NODE_LEADER) {
            node = leader;
            if (node < 0) {
                node = 0;
                say("no leader known: killing node 1 instead");
            }
        } else {
            node = leader >= 0 ? (leader + 1) % N : 0;
        }
    }
    r->faults[e->kind]++;
    switch (e->kind) {
    case FAULT_KILL:
    case FAULT_KILL_LEADER:
        node_kill(r, node);
        say("fault: SIGKILL node %d%s", node + 1, e->kind == FAULT_KILL_LEADER ? " (leader)" : "");
        break;
    case FAULT_PAUSE:
        node_pause(r, node, true);
        say("fault: SIGSTOP node %d", node + 1);
        break;
    case FAULT_ISOLATE:
        isolate(r, node, true);
        say("fault: isolate node %d from peers and clients%s", node + 1,
            r->net.mode == RNET_NETNS ? "" : " (loopback: SIGSTOP)");
        break;
    case FAULT_SPLIT:
        isolate(r, node, false);
        say("fault: split node %d | the other two (clients reach all)%s", node + 1,
            r->net.mode == RNET_NETNS ? "" : " (loopback: SIGSTOP)");
        break;
    case FAULT_QUORUM_LOSS:
        if (r->net.mode == RNET_NETNS) {
            for (int i = 0; i < N; i++) {
                for (int j = 0; j < N; j++) {
                    if (i != j) {
                        rnet_set_cut(&r->net, i, j, true);
                    }
                }
            }
            say("fault: quorum loss, every node cut from the others");
        } else {
            node_pause(r, 1, true);
            node_pause(r, 2, true);
            say("fault: quorum loss, SIGSTOP nodes 2 and 3 (loopback)");
        }
        break;
    case FAULT_KINDS:
        break;
    }
    return node;
}

static void progress(struct run *r, double *last_t, long *last_ops)
{
    long ok = atomic_load(&r->n_ok), fail = atomic_load(&r->n_fail), info = atomic_load(&r->n_info);
    double t = gs_mono_s();
    long ops = ok + fail + info;
    char errors[512];
    errors_describe(errors, sizeof errors);
    say("progress: %.0f ops/s; ok %ld fail %ld info %ld; errors so far:%s",
        (double)(ops - *last_ops) / (t - *last_t), ok, fail, info, errors);
    *last_t = t;
    *last_ops = ops;
}

/* Sleep until time `until` (now_s clock), checking nodes and printing
 * progress. false if a stop signal came. */
static bool wait_until(struct run *r, double until, double *last_t, long *last_ops)
{
    while (gs_mono_s() < until) {
        if (g_stop_signal) {
            return false;
        }
        nodes_check_exits(r);
        if (gs_mono_s() - *last_t >= 5.0) {
            progress(r, last_t, last_ops);
        }
        gs_sleep_ms(100);
    }
    return true;
}

/* ------------------------------------------------------------ final reads */

/* One final read with retries until it succeeds (each attempt an operation
 * of the history). 0 or the last error. */
static int final_exists(struct run *r, gs_sync *s, int64_t *process, uint64_t user_id)
{
    char key[32];
    key_name(user_id, key, sizeof key);
    int rv = GS_ETIMEOUT;
    for (int attempt = 0; attempt < 5; attempt++) {
        chaos_history_record(r->hist, *process, CHAOS_INVOKE, CHAOS_F_FINAL_EXISTS, key,
                             chaos_value_null());
        Geoscale__GetUserRequest req = GEOSCALE__GET_USER_REQUEST__INIT;
        req.user_id = user_id;
        req.viewer_id = user_id;
        Geoscale__GetUserResponse *resp = NULL;
        rv = call(s, GEOSCALE__METHOD__METHOD_GET_USER, &req, (void **)&resp);
        free_msg(resp);
        if (rv == 0 || rv == GS_ENOTFOUND) {
            chaos_history_record(r->hist, *process, CHAOS_OK, CHAOS_F_FINAL_EXISTS, key,
                                 chaos_value_bool(rv == 0));
            count(r, CHAOS_F_FINAL_EXISTS, CHAOS_OK);
            return 0;
        }
        chaos_history_record(r->hist, *process, CHAOS_FAIL, CHAOS_F_FINAL_EXISTS, key,
                             chaos_value_null());
        count(r, CHAOS_F_FINAL_EXISTS, CHAOS_FAIL);
        gs_sleep_ms(500);
    }
    return rv;
}

static int final_following(struct run *r, gs_sync *s, int64_t *process, uint64_t user_id)
{
    char key[32];
    key_name(user_id, key, sizeof key);
    int rv = GS_ETIMEOUT;
    for (int attempt = 0; attempt < 5; attempt++) {
        chaos_history_record(r->hist, *process, CHAOS_INVOKE, CHAOS_F_FINAL_FOLLOWING, key,
                             chaos_value_null());
        int64_t *ids = NULL;
        size_t n = 0, cap = 0;
        uint64_t cursor = 0;
        do {
            Geoscale__ListEdgesRequest req = GEOSCALE__LIST_EDGES_REQUEST__INIT;
            req.user_id = user_id;
            req.cursor = cursor;
            req.limit = 1000;
            Geoscale__ListEdgesResponse *resp = NULL;
            rv = call(s, GEOSCALE__METHOD__METHOD_LIST_FOLLOWING, &req, (void **)&resp);
            if (rv == 0) {
                if (n + resp->n_user_ids > cap) {
                    cap = (n + resp->n_user_ids) * 2 + 16;
                    int64_t *grown = realloc(ids, cap * sizeof *ids);
                    if (grown == NULL) {
                        rv = GS_ENOMEM;
                    } else {
                        ids = grown;
                    }
                }
                for (size_t k = 0; rv == 0 && k < resp->n_user_ids; k++) {
                    ids[n++] = (int64_t)resp->user_ids[k];
                }
                cursor = resp->next_cursor;
            }
            free_msg(resp);
        } while (rv == 0 && cursor != 0);
        if (rv == 0) {
            chaos_history_record(r->hist, *process, CHAOS_OK, CHAOS_F_FINAL_FOLLOWING, key,
                                 chaos_value_list(ids, n));
            count(r, CHAOS_F_FINAL_FOLLOWING, CHAOS_OK);
            free(ids);
            return 0;
        }
        free(ids);
        chaos_history_record(r->hist, *process, CHAOS_FAIL, CHAOS_F_FINAL_FOLLOWING, key,
                             chaos_value_null());
        count(r, CHAOS_F_FINAL_FOLLOWING, CHAOS_FAIL);
        gs_sleep_ms(500);
    }
    return rv;
}

static int final_reads(struct run *r)
{
    gs_sync *s = open_client(r, -1, 5000);
    if (s == NULL) {
        return GS_ENOMEM;
    }
    struct client fc = {.r = r, .index = -1, .pinned = -1, .process = FINAL_PROCESS_BASE, .s = s};
    int failures = 0;
    for (unsigned k = 0; k < r->n_keys; k++) {
        int64_t v;
        uint64_t ver;
        int rv = GS_ETIMEOUT;
        for (int attempt = 0; attempt < 5 && rv != 0 && rv != GS_ENOTFOUND; attempt++) {
            rv = op_read(&fc, r->key_ids[k], &v, &ver);
        }
        failures += rv != 0;
    }
    int64_t process = FINAL_PROCESS_BASE + 1;
    for (size_t i = 0; i < r->n_created; i++) {
        failures += final_exists(r, s, &process, r->created[i]) != 0;
        failures += final_following(r, s, &process, r->created[i]) != 0;
    }
    gs_sync_close(s);
    if (failures > 0) {
        say("FAILURE: %d final reads could not be made", failures);
        return GS_EUNAVAILABLE;
    }
    return 0;
}

/* ------------------------------------------------------------ main */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    return (flag == FTW_DP ? rmdir(path) : unlink(path)) == 0 || errno == ENOENT ? 0 : -1;
}

/* Remove the tree at path (absent is fine). 0 or GS_EIO. */
static int rm_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        return 0;
    }
    return nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) == 0 ? 0 : GS_EIO;
}

static int parse_uint(const char *s, unsigned long long max, unsigned long long *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v > max) {
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_options(int argc, char **argv, struct options *o)
{
    static const struct option options[] = {
        {"seed", required_argument, NULL, 's'},
        {"duration", required_argument, NULL, 'd'},
        {"out", required_argument, NULL, 'o'},
        {"clients", required_argument, NULL, 'c'},
        {"keys", required_argument, NULL, 'k'},
        {"unsafe-local-reads", no_argument, NULL, 'U'},
        {"netns", required_argument, NULL, 'N'},
        {"scenario", required_argument, NULL, 'S'},
        {"geoscaled", required_argument, NULL, 'G'},
        {"schedule-only", no_argument, NULL, 'P'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    memset(o, 0, sizeof *o);
    o->seed = 1;
    o->duration_s = 60;
    o->clients = 8;
    o->keys = 8;
    o->netns = -1;
    snprintf(o->out, sizeof o->out, "/tmp/geoscale-chaos-%d", (int)getpid());
    int opt;
    unsigned long long v;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":s:d:o:c:k:h", options, NULL)) != -1) {
        switch (opt) {
        case 's':
            if (parse_uint(optarg, UINT64_MAX, &v) != 0) {
                fprintf(stderr, "geoscale-chaos: --seed: expected an integer, got '%s'\n", optarg);
                return 2;
            }
            o->seed = v;
            break;
        case 'd':
            if (parse_uint(optarg, 86400, &v) != 0 || v < 10) {
                fprintf(stderr, "geoscale-chaos: --duration: expected 10-86400 seconds, got '%s'\n",
                        optarg);
                return 2;
            }
            o->duration_s = (unsigned)v;
            break;
        case 'o':
            if (strlen(optarg) >= 200 || strchr(optarg, '"') != NULL ||
                strchr(optarg, '\\') != NULL || strchr(optarg, '\'') != NULL) {
                fprintf(stderr, "geoscale-chaos: --out: at most 199 bytes, without quotes or "
                                "backslashes\n");
                return 2;
            }
            snprintf(o->out, sizeof o->out, "%s", optarg);
            break;
        case 'c':
            if (parse_uint(optarg, MAX_CLIENTS, &v) != 0 || v < 1) {
                fprintf(stderr, "geoscale-chaos: --clients: expected 1-%d, got '%s'\n", MAX_CLIENTS,
                        optarg);
                return 2;
            }
            o->clients = (unsigned)v;
            break;
        case 'k':
            if (parse_uint(optarg, MAX_KEYS, &v) != 0 || v < 1) {
                fprintf(stderr, "geoscale-chaos: --keys: expected 1-%d, got '%s'\n", MAX_KEYS,
                        optarg);
                return 2;
            }
            o->keys = (unsigned)v;
            break;
        case 'U':
            o->unsafe_local_reads = true;
            break;
        case 'N':
            if (strcmp(optarg, "auto") == 0) {
                o->netns = -1;
            } else if (strcmp(optarg, "on") == 0) {
                o->netns = 1;
            } else if (strcmp(optarg, "off") == 0) {
                o->netns = 0;
            } else {
                fprintf(stderr, "geoscale-chaos: --netns: expected auto, on or off, got '%s'\n",
                        optarg);
                return 2;
            }
            break;
        case 'S':
            if (strcmp(optarg, "random") == 0) {
                o->scenario = SCENARIO_RANDOM;
            } else if (strcmp(optarg, "stale-reads") == 0) {
                o->scenario = SCENARIO_STALE_READS;
            } else {
                fprintf(stderr,
                        "geoscale-chaos: --scenario: expected random or stale-reads, got '%s'\n",
                        optarg);
                return 2;
            }
            break;
        case 'P':
            o->schedule_only = true;
            break;
        case 'G':
            snprintf(o->geoscaled, sizeof o->geoscaled, "%s", optarg);
            break;
        case 'h':
            usage(stdout);
            return 0;
        case ':':
            fprintf(stderr, "geoscale-chaos: option %s needs an argument\n", argv[optind - 1]);
            fprintf(stderr, "Try 'geoscale-chaos --help'.\n");
            return 2;
        default:
            fprintf(stderr, "geoscale-chaos: unknown option %s\n", argv[optind - 1]);
            fprintf(stderr, "Try 'geoscale-chaos --help'.\n");
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "geoscale-chaos: unexpected argument '%s'\n", argv[optind]);
        fprintf(stderr, "Try 'geoscale-chaos --help'.\n");
        return 2;
    }
    if (o->geoscaled[0] == '\0') {
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n > 0) {
            self[n] = '\0';
            char *slash = strrchr(self, '/');
            if (slash != NULL) {
                *slash = '\0';
            }
            snprintf(o->geoscaled, sizeof o->geoscaled, "%.*s/../geoscaled", PATH_MAX - 16, self);
            if (!o->schedule_only && access(o->geoscaled, X_OK) != 0) {
                snprintf(o->geoscaled, sizeof o->geoscaled, "%.*s/geoscaled", PATH_MAX - 16, self);
            }
        }
    }
    if (access(o->geoscaled, X_OK) != 0) {
        fprintf(stderr, "geoscale-chaos: no geoscaled at '%s'; give --geoscaled PATH\n",
                o->geoscaled);
        return 2;
    }
    return -1; /* go on */
}

int main(int argc, char **argv)
{
    static struct run run; /* large; lives as long as the process */
    struct run *r = &run;
    int rv = parse_options(argc, argv, &r->o);
    if (rv >= 0) {
        return rv;
    }
    const struct options *o = &r->o;
    static struct schedule sched;
    schedule_make(&sched, o);
    if (o->schedule_only) {
        printf("seed %" PRIu64 ", %us: %zu episodes\n", o->seed, o->duration_s, sched.n);
        for (size_t i = 0; i < sched.n; i++) {
            char line[128];
            episode_describe(&sched.ep[i], line, sizeof line);
            printf("  %s\n", line);
        }
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    g_t0 = gs_mono_s();
    pthread_mutex_init(&r->mu, NULL);
    atomic_store(&r->value_seq, 1);

    if (mkdir(o->out, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "geoscale-chaos: cannot create %s: %s\n", o->out, strerror(errno));
        return 1;
    }
    for (int i = 0; i < N; i++) {
        node_paths(r, i);
        if (rm_tree(r->nodes[i].data_dir) != 0) {
            fprintf(stderr, "geoscale-chaos: cannot remove %s\n", r->nodes[i].data_dir);
            return 1;
        }
        unlink(r->nodes[i].log_path);
    }

    /* Network. */
    rnet_cleanup_stale();
    enum rnet_mode mode = RNET_LOOPBACK;
    if (o->netns != 0) {
        if (rnet_probe()) {
            mode = RNET_NETNS;
        } else if (o->netns == 1) {
            fprintf(stderr, "geoscale-chaos: --netns on: cannot create network namespaces "
                            "(not root?)\n");
            return 1;
        }
    }
    if (o->scenario == SCENARIO_STALE_READS && mode != RNET_NETNS) {
        fprintf(stderr, "geoscale-chaos: --scenario stale-reads needs network namespaces "
                        "(root, --netns auto|on)\n");
        return 1;
    }
    g_run = r;
    atexit(cleanup);
    if (rnet_setup(&r->net, mode) != 0) {
        if (o->netns == 1) {
            return 1;
        }
        say("network namespaces could not be set up; falling back to loopback");
        mode = RNET_LOOPBACK;
        if (rnet_setup(&r->net, mode) != 0) {
            return 1;
        }
    }

    /* Schedule (made above). */
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/schedule.txt", o->out);
    FILE *sf = fopen(path, "w");
    fprintf(stderr, "geoscale-chaos: seed %" PRIu64 ", %us of faults, %u clients, %u keys, %s%s\n",
            o->seed, o->duration_s, o->clients, o->keys,
            mode == RNET_NETNS ? "network namespaces (partitions by blackhole routes)"
                               : "loopback (NO network partitions: isolate, split and quorum "
                                 "loss are replaced by SIGSTOP)",
            o->unsafe_local_reads ? ", nodes with --unsafe-local-reads (a violation is EXPECTED)"
                                  : "");
    fprintf(stderr, "geoscale-chaos: out %s; nodes: %s %s %s\n", o->out, r->net.client_address[0],
            r->net.client_address[1], r->net.client_address[2]);
    fprintf(stderr, "geoscale-chaos: schedule (%zu episodes):\n", sched.n);
    for (size_t i = 0; i < sched.n; i++) {
        char line[128];
        episode_describe(&sched.ep[i], line, sizeof line);
        fprintf(stderr, "  %s\n", line);
        if (sf != NULL) {
            fprintf(sf, "%s\n", line);
        }
    }
    if (sf != NULL) {
        fclose(sf);
    }

    /* Nodes. */
    int exit_status = 1;
    bool converged = false, finals_ok = false, setup_ok = false;
    int check_rv = -1;
    struct chaos_check_summary sum;
    memset(&sum, 0, sizeof sum);
    pthread_t threads[MAX_CLIENTS];
    static struct client clients[MAX_CLIENTS];
    unsigned n_threads = 0;

    if (write_configs(r) != 0) {
        goto out;
    }
    snprintf(path, sizeof path, "%s/history.jsonl", o->out);
    char errmsg[256];
    if (chaos_history_writer_open(path, &r->hist, errmsg, sizeof errmsg) != 0) {
        fprintf(stderr, "geoscale-chaos: %s\n", errmsg);
        goto out;
    }
    for (int i = 0; i < N; i++) {
        if (node_start(r, i) != 0) {
            goto out;
        }
    }
    if (wait_leader(r, 30.0) < 0) {
        say("FAILURE: no leader within 30s; see %s/node*.log", o->out);
        goto out;
    }
    if (setup_keys(r) != 0 || wait_converged(r, 30.0) != 0) {
        goto out;
    }
    setup_ok = true;
    say("setup: %u register users created, replicas agree", r->n_keys);

    /* Clients. */
    for (unsigned t = 0; t < o->clients; t++) {
        struct client *c = &clients[t];
        c->r = r;
        c->index = (int)t;
        c->pinned = t % 4 == 0 ? -1 : (int)(t % 4) - 1;
        c->process = t;
        c->rng = o->seed * 0x100000001b3ull + t + 1;
        if (pthread_create(&threads[t], NULL, client_main, c) != 0) {
            say("cannot start client thread %u", t);
            break;
        }
        n_threads++;
    }

    /* Faults. */
    double start = gs_mono_s(), last_t = start;
    long last_ops = 0;
    bool interrupted = false;
    for (size_t i = 0; i < sched.n && !interrupted; i++) {
        const struct episode *e = &sched.ep[i];
        if (!wait_until(r, start + e->start_s, &last_t, &last_ops)) {
            interrupted = true;
            break;
        }
        episode_apply(r, e);
        if (!wait_until(r, start + e->start_s + e->hold_s, &last_t, &last_ops)) {
            interrupted = true;
        }
        heal_all(r);
        say("repair: healed, resumed and restarted every node");
    }
    if (!interrupted && !wait_until(r, start + o->duration_s, &last_t, &last_ops)) {
        interrupted = true;
    }
    heal_all(r);
    atomic_store(&r->clients_stop, true);
    for (unsigned t = 0; t < n_threads; t++) {
        pthread_join(threads[t], NULL);
    }
    n_threads = 0;
    progress(r, &last_t, &last_ops);
    if (interrupted) {
        say("interrupted by signal %d", (int)g_stop_signal);
        goto out;
    }

    /* Durability: the whole cell killed at once, then restarted. */
    say("end: SIGKILL all three nodes at once, restart, wait for one state digest");
    for (int i = 0; i < N; i++) {
        node_kill(r, i);
    }
    for (int i = 0; i < N; i++) {
        node_start(r, i);
    }
    if (wait_leader(r, 30.0) < 0) {
        say("FAILURE: no leader within 30s after the restart");
        goto out;
    }
    converged = wait_converged(r, CONVERGE_TIMEOUT_S) == 0;
    finals_ok = final_reads(r) == 0;
    nodes_check_exits(r);

out:
    if (n_threads > 0) {
        atomic_store(&r->clients_stop, true);
        for (unsigned t = 0; t < n_threads; t++) {
            pthread_join(threads[t], NULL);
        }
    }
    if (r->hist != NULL) {
        chaos_history_writer_close(r->hist);
        r->hist = NULL;
    }
    cleanup();
    if (setup_ok && !g_stop_signal) {
        snprintf(path, sizeof path, "%s/history.jsonl", o->out);
        fprintf(stdout, "---- checker: %s\n", path);
        fflush(stdout);
        check_rv = chaos_check_file(path, stdout, &sum);
        fflush(stdout);
    }

    /* Summary. */
    printf("---- summary (seed %" PRIu64 ", %us, %s)\n", o->seed, o->duration_s,
           mode == RNET_NETNS ? "netns" : "loopback");
    printf("faults:");
    for (int k = 0; k < FAULT_KINDS; k++) {
        printf(" %s=%u", fault_names[k], r->faults[k]);
    }
    printf("\noperations: ok=%ld fail=%ld info=%ld\n", atomic_load(&r->n_ok),
           atomic_load(&r->n_fail), atomic_load(&r->n_info));
    for (int f = CHAOS_F_READ; f <= CHAOS_F_FINAL_EXISTS; f++) {
        printf("  %-16s ok=%ld fail=%ld info=%ld\n", chaos_fn_name((enum chaos_fn)f),
               atomic_load(&r->n_by_f[f][0]), atomic_load(&r->n_by_f[f][1]),
               atomic_load(&r->n_by_f[f][2]));
    }
    char errors[512];
    errors_describe(errors, sizeof errors);
    printf("call errors (all calls, retries inside the client not counted):%s\n", errors);
    printf("users created: %zu; unexpected node exits: %d; converged: %s; final reads: %s\n",
           r->n_created, atomic_load(&r->unexpected_exits), converged ? "yes" : "NO",
           finals_ok ? "ok" : "FAILED");
    printf("checker: %s (events %zu, ops %zu, keys %zu, info %zu, linearizability violations "
           "%zu, lost writes %zu, undecided %d)\n",
           check_rv == 0   ? "PASS"
           : check_rv == 1 ? "ANOMALY OR UNDECIDED"
                           : "NOT RUN OR ERROR",
           sum.events, sum.ops, sum.keys, sum.info_ops, sum.lin_violations, sum.lost_writes,
           sum.unknown);
    bool run_ok = setup_ok && converged && finals_ok && atomic_load(&r->unexpected_exits) == 0;
    if (o->unsafe_local_reads) {
        bool found = check_rv == 1 && sum.lin_violations > 0;
        exit_status = found ? 0 : 1;
        printf("RESULT: %s (--unsafe-local-reads: a violation was %s, and was expected)\n",
               found ? "PASS" : "FAIL", found ? "found" : "NOT found");
    } else {
        exit_status = run_ok && check_rv == 0 ? 0 : 1;
        printf("RESULT: %s\n", exit_status == 0 ? "PASS" : "FAIL");
    }
    printf("history, schedule and node logs: %s\n", o->out);
    return exit_status;
}
