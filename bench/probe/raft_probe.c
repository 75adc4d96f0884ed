/*
 * raft-probe: the raw libraft floor of GeoScale's benchmarks.
 *
 * Three voters of libraft 0.22.1 (v0 API) over raft_uv and raft_uv_tcp on
 * loopback, each on a loop thread of its own with its own data directory,
 * in one process. The state machine only counts and checks entries: no
 * RocksDB, no client protocol, no batching. Once a leader is elected it
 * keeps --inflight proposals outstanding, each proposal ONE log entry of
 * --entry-size bytes (one raft_apply of one buffer): so the probe measures
 * what libraft itself does per entry, and GeoScale's group commit (many
 * commands per entry) is what can take a cell above it.
 *
 * Durability is raft_uv's, as in GeoScale: each replica writes and syncs
 * its log segment before it acknowledges the append; the leader applies an
 * entry once a majority (itself included) has it on disk. Raft timeouts and
 * snapshot thresholds are GeoScale's group defaults.
 *
 * Latency: from raft_apply to its callback on the leader (committed and
 * applied there). The first --warmup seconds are not recorded; proposals
 * started in the next --duration seconds and completed inside them are.
 * Closed loop: a completed proposal is replaced at once.
 *
 * After the run, every replica must have applied as many entries as the
 * leader (waited for, 30 s at most); otherwise the probe fails.
 *
 * --nodelay sets TCP_NODELAY on the raft connections through GeoScale's
 * wrapping transport (raft/tcp_nodelay.h, which GeoScale's groups use); by
 * default they are left as raft_uv_tcp makes them (Nagle on).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* nftw's FTW_PHYS, mkdtemp */
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <raft.h>
#include <raft/uv.h>
#include <uv.h>

#include "../hist.h"
#include "engine/mono.h"
#include "raft/tcp_nodelay.h"

#define PROBE_REPLICAS 3
#define PROBE_TICK_MS 10
#define PROBE_ELECTION_TIMEOUT_MS 1000 /* GeoScale's group defaults */
#define PROBE_HEARTBEAT_TIMEOUT_MS 100
#define PROBE_SNAPSHOT_THRESHOLD 4096
#define PROBE_SNAPSHOT_TRAILING 8192
#define PROBE_ENTRY_MAGIC 0x65626f7270746661ull /* the first 8 bytes of an entry */

enum probe_error { ERR_LEADERSHIP_LOST, ERR_SHUTDOWN, ERR_NOT_LEADER, ERR_OTHER, ERR_COUNT };
static const char *const probe_error_names[ERR_COUNT] = {"LeadershipLost", "Shutdown", "NotLeader",
                                                         "Other"};

struct probe_options {
    size_t entry_size; /* a multiple of 8, >= 8 */
    size_t requested_size;
    unsigned inflight;
    double duration_s;
    double warmup_s;
    const char *dir;    /* NULL: a fresh temporary directory, removed at the end */
    unsigned base_port; /* 0: three free ports */
    bool nodelay;       /* TCP_NODELAY on raft connections (raft_uv_tcp leaves it off) */
    bool json;
};

struct probe;

struct proposal {
    struct raft_apply req;
    struct replica *rep;
    uint64_t start_ns;
};

struct replica {
    struct probe *probe;
    unsigned id;
    char dir[1024];
    char address[32];
    uv_loop_t loop;
    uv_async_t stop_async;
    uv_timer_t tick;
    struct raft_uv_transport transport; /* raft_uv_tcp */
    struct tcp_nodelay nodelay;         /* wraps transport when --nodelay */
    struct raft_io io;
    struct raft_fsm fsm;
    struct raft raft;
    bool raft_initialized;
    pthread_t thread;
    _Atomic int ready;        /* 0 starting, 1 running, -1 setup failed */
    _Atomic uint64_t applied; /* entries of the probe applied by the FSM */
    _Atomic uint64_t bad;     /* entries applied with a wrong size or tag */
    char errmsg[256];

    /* Proposer state, used on the leader's loop thread only. */
    bool proposing;
    unsigned inflight;
    struct proposal *proposals; /* inflight of them */
    struct hist hist;
    uint64_t errors[ERR_COUNT];
};

struct probe {
    struct probe_options opt;
    struct replica replicas[PROBE_REPLICAS];
    _Atomic unsigned leader_id; /* the replica that proposes; 0 until one does */
    _Atomic uint64_t completed; /* proposals completed, warm-up included */
    _Atomic bool finished;      /* the proposer is done and has nothing in flight */
    _Atomic uint64_t t_start_ns, t_measure_ns, t_end_ns;
};

/* ------------------------------------------------------------------ FSM */

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
    struct replica *r = fsm->data;
    uint64_t magic = 0;
    if (buf->len >= sizeof magic) {
        memcpy(&magic, buf->base, sizeof magic);
    }
    if (buf->len != r->probe->opt.entry_size || magic != PROBE_ENTRY_MAGIC) {
        atomic_fetch_add(&r->bad, 1);
    }
    atomic_fetch_add(&r->applied, 1);
    *result = NULL;
    return 0;
}

/* The snapshot is the applied count (8 bytes). */
static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    struct replica *r = fsm->data;
    uint64_t applied = atomic_load(&r->applied);
    *bufs = raft_malloc(sizeof **bufs);
    if (*bufs == NULL) {
        return RAFT_NOMEM;
    }
    (*bufs)[0].base = raft_malloc(sizeof applied);
    if ((*bufs)[0].base == NULL) {
        raft_free(*bufs);
        *bufs = NULL;
        return RAFT_NOMEM;
    }
    memcpy((*bufs)[0].base, &applied, sizeof applied);
    (*bufs)[0].len = sizeof applied;
    *n_bufs = 1;
    return 0;
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    struct replica *r = fsm->data;
    uint64_t applied;
    if (buf->len != sizeof applied) {
        raft_free(buf->base);
        return RAFT_MALFORMED;
    }
    memcpy(&applied, buf->base, sizeof applied);
    atomic_store(&r->applied, applied);
    raft_free(buf->base);
    return 0;
}

/* ------------------------------------------------------------- proposer */

static void propose(struct replica *r, struct proposal *p);

/* The run is over for this replica once nothing is in flight and it may
 * not propose (end of the window reached, or leadership lost). */
static void proposer_maybe_finish(struct replica *r)
{
    if (r->inflight == 0 && (!r->proposing || gs_mono_ns() >= atomic_load(&r->probe->t_end_ns))) {
        r->proposing = false;
        atomic_store(&r->probe->finished, true);
    }
}

static void count_error(struct replica *r, int status)
{
    switch (status) {
    case RAFT_LEADERSHIPLOST:
        r->errors[ERR_LEADERSHIP_LOST]++;
        break;
    case RAFT_SHUTDOWN:
        r->errors[ERR_SHUTDOWN]++;
        break;
    case RAFT_NOTLEADER:
        r->errors[ERR_NOT_LEADER]++;
        break;
    default:
        r->errors[ERR_OTHER]++;
        break;
    }
}

static void proposal_cb(struct raft_apply *req, int status, void *result)
{
    (void)result;
    struct proposal *p = req->data;
    struct replica *r = p->rep;
    struct probe *pr = r->probe;
    uint64_t now = gs_mono_ns();
    r->inflight--;
    atomic_fetch_add(&pr->completed, 1);
    if (p->start_ns >= atomic_load(&pr->t_measure_ns) && now < atomic_load(&pr->t_end_ns)) {
        if (status == 0) {
            hist_record(&r->hist, now - p->start_ns);
        } else {
            count_error(r, status);
        }
    }
    if (status != 0) {
        r->proposing = false; /* leadership lost or shutting down */
    } else if (r->proposing && now < atomic_load(&pr->t_end_ns)) {
        propose(r, p);
    }
    proposer_maybe_finish(r);
}

static void propose(struct replica *r, struct proposal *p)
{
    size_t len = r->probe->opt.entry_size;
    void *entry = raft_malloc(len);
    if (entry == NULL) {
        r->errors[ERR_OTHER]++;
        r->proposing = false;
        proposer_maybe_finish(r);
        return;
    }
    uint64_t magic = PROBE_ENTRY_MAGIC;
    memcpy(entry, &magic, sizeof magic);
    memset((char *)entry + sizeof magic, 'x', len - sizeof magic);
    struct raft_buffer buf = {.base = entry, .len = len};
    p->req.data = p;
    p->start_ns = gs_mono_ns();
    int rv = raft_apply(&r->raft, &p->req, &buf, 1, proposal_cb);
    if (rv != 0) {
        if (rv == RAFT_NOTLEADER || rv == RAFT_NOSPACE) {
            raft_free(entry); /* refused before submission: still ours */
        }
        count_error(r, rv);
        r->proposing = false;
        proposer_maybe_finish(r);
        return;
    }
    r->inflight++;
}

/* Every PROBE_TICK_MS: the first replica to find itself leader starts the
 * run. */
static void tick_cb(uv_timer_t *t)
{
    struct replica *r = t->data;
    struct probe *pr = r->probe;
    if (atomic_load(&pr->leader_id) != 0 || raft_state(&r->raft) != RAFT_LEADER) {
        return;
    }
    unsigned expected = 0;
    if (!atomic_compare_exchange_strong(&pr->leader_id, &expected, r->id)) {
        return;
    }
    uint64_t t0 = gs_mono_ns();
    atomic_store(&pr->t_start_ns, t0);
    atomic_store(&pr->t_measure_ns, t0 + (uint64_t)(pr->opt.warmup_s * 1e9));
    atomic_store(&pr->t_end_ns, t0 + (uint64_t)((pr->opt.warmup_s + pr->opt.duration_s) * 1e9));
    r->proposing = true;
    for (unsigned i = 0; i < pr->opt.inflight && r->proposing; i++) {
        r->proposals[i].rep = r;
        propose(r, &r->proposals[i]);
    }
}

/* ---------------------------------------------------- TCP_NODELAY wrapper */

/* --nodelay hands raft_uv GeoScale's TCP_NODELAY transport
 * (raft/tcp_nodelay.h), as raft/group.c does; without it, raft_uv_tcp's
 * connections keep Nagle on: the comparison shows what that costs. */

/* ------------------------------------------------------------ lifecycle */

static void handle_closed_cb(uv_handle_t *h)
{
    (void)h;
}

static void raft_closed_cb(struct raft *raft)
{
    struct replica *r = raft->data;
    raft_uv_close(&r->io);
    raft_uv_tcp_close(&r->transport);
    r->raft_initialized = false;
}

static void replica_close_handles(struct replica *r)
{
    if (!uv_is_closing((uv_handle_t *)&r->tick)) {
        uv_close((uv_handle_t *)&r->tick, handle_closed_cb);
    }
    if (!uv_is_closing((uv_handle_t *)&r->stop_async)) {
        uv_close((uv_handle_t *)&r->stop_async, handle_closed_cb);
    }
}

static void stop_cb(uv_async_t *a)
{
    struct replica *r = a->data;
    replica_close_handles(r);
    if (r->raft_initialized) {
        raft_close(&r->raft, raft_closed_cb);
    }
}

/* Set up raft on the replica's loop thread, as raft/group.c does. */
static int replica_setup(struct replica *r, const struct raft_configuration *conf)
{
    int rv;
    r->transport.version = 1;
    r->transport.data = r;
    rv = raft_uv_tcp_init(&r->transport, &r->loop);
    if (rv != 0) {
        snprintf(r->errmsg, sizeof r->errmsg, "raft_uv_tcp_init: %s", raft_strerror(rv));
        return rv;
    }
    struct raft_uv_transport *transport = &r->transport;
    if (r->probe->opt.nodelay) {
        tcp_nodelay_wrap(&r->nodelay, &r->transport);
        transport = &r->nodelay.outer;
    }
    rv = raft_uv_init(&r->io, &r->loop, r->dir, transport);
    if (rv != 0) {
        snprintf(r->errmsg, sizeof r->errmsg, "raft_uv_init: %.200s", r->io.errmsg);
        raft_uv_tcp_close(&r->transport);
        return rv;
    }
    r->fsm.version = 1;
    r->fsm.data = r;
    r->fsm.apply = fsm_apply;
    r->fsm.snapshot = fsm_snapshot;
    r->fsm.restore = fsm_restore;
    rv = raft_init(&r->raft, &r->io, &r->fsm, r->id, r->address);
    if (rv != 0) {
        snprintf(r->errmsg, sizeof r->errmsg, "raft_init: %s %.200s", raft_strerror(rv),
                 raft_errmsg(&r->raft));
        raft_uv_close(&r->io);
        raft_uv_tcp_close(&r->transport);
        return rv;
    }
    r->raft.data = r;
    r->raft_initialized = true;
    rv = raft_bootstrap(&r->raft, conf);
    if (rv != 0) {
        snprintf(r->errmsg, sizeof r->errmsg, "raft_bootstrap: %s %.200s", raft_strerror(rv),
                 raft_errmsg(&r->raft));
        return rv;
    }
    raft_seed(&r->raft, (unsigned)gs_mono_ns() ^ (r->id * 2654435761u));
    raft_set_election_timeout(&r->raft, PROBE_ELECTION_TIMEOUT_MS);
    raft_set_heartbeat_timeout(&r->raft, PROBE_HEARTBEAT_TIMEOUT_MS);
    raft_set_snapshot_threshold(&r->raft, PROBE_SNAPSHOT_THRESHOLD);
    raft_set_snapshot_trailing(&r->raft, PROBE_SNAPSHOT_TRAILING);
    raft_set_pre_vote(&r->raft, true);
    rv = raft_start(&r->raft);
    if (rv != 0) {
        snprintf(r->errmsg, sizeof r->errmsg, "raft_start: %s %.200s", raft_strerror(rv),
                 raft_errmsg(&r->raft));
        return rv;
    }
    uv_timer_start(&r->tick, tick_cb, PROBE_TICK_MS, PROBE_TICK_MS);
    return 0;
}

static void *replica_thread(void *arg)
{
    struct replica *r = arg;
    struct probe *pr = r->probe;
    struct raft_configuration conf;
    raft_configuration_init(&conf);
    int rv = 0;
    r->tick.data = r;
    uv_timer_init(&r->loop, &r->tick);
    for (unsigned i = 0; i < PROBE_REPLICAS && rv == 0; i++) {
        rv = raft_configuration_add(&conf, pr->replicas[i].id, pr->replicas[i].address, RAFT_VOTER);
    }
    if (rv != 0) {
        snprintf(r->errmsg, sizeof r->errmsg, "raft_configuration_add: %s", raft_strerror(rv));
    } else {
        rv = replica_setup(r, &conf);
    }
    raft_configuration_close(&conf);
    if (rv != 0) {
        atomic_store(&r->ready, -1);
        if (r->raft_initialized) {
            raft_close(&r->raft, raft_closed_cb);
        }
        replica_close_handles(r);
    } else {
        atomic_store(&r->ready, 1);
    }
    uv_run(&r->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&r->loop) != 0) {
        fprintf(stderr, "raft-probe: replica %u: handles left open at exit\n", r->id);
    }
    return NULL;
}

/* ------------------------------------------------------------- helpers */

static int remove_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Three distinct free loopback ports: bound to port 0, read back, closed. */
static int free_ports(unsigned ports[PROBE_REPLICAS])
{
    int fds[PROBE_REPLICAS] = {-1, -1, -1};
    int rv = -1;
    for (int i = 0; i < PROBE_REPLICAS; i++) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof a;
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (fds[i] < 0 || bind(fds[i], (struct sockaddr *)&a, sizeof a) != 0 ||
            getsockname(fds[i], (struct sockaddr *)&a, &len) != 0) {
            goto out;
        }
        ports[i] = ntohs(a.sin_port);
    }
    rv = 0;
out:
    for (int i = 0; i < PROBE_REPLICAS; i++) {
        if (fds[i] >= 0) {
            close(fds[i]);
        }
    }
    return rv;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: raft-probe [options]\n"
               "\n"
               "Three libraft voters on loopback in one process; the leader keeps\n"
               "--inflight one-entry proposals outstanding and reports entries/s and\n"
               "the latency of raft_apply to its callback.\n"
               "\n"
               "  --entry-size N   bytes per entry (rounded up to a multiple of 8; default 128)\n"
               "  --inflight K     proposals outstanding (default 64)\n"
               "  --duration S     measured seconds (default 10)\n"
               "  --warmup S       unmeasured seconds first (default 2)\n"
               "  --dir DIR        data directories DIR/node1..3 (must not exist yet);\n"
               "                   default: a fresh temporary directory, removed at the end\n"
               "  --port P         raft ports P, P+1, P+2 (default: three free ports)\n"
               "  --nodelay        set TCP_NODELAY on the raft connections, as GeoScale's\n"
               "                   groups do (raft_uv_tcp alone leaves Nagle's algorithm on)\n"
               "  --json           one JSON object on stdout instead of a table\n");
}

static int parse_double(const char *s, double min, double max, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v >= min && v <= max)) {
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_options(int argc, char **argv, struct probe_options *o)
{
    static const struct option longopts[] = {{"entry-size", required_argument, NULL, 's'},
                                             {"inflight", required_argument, NULL, 'k'},
                                             {"duration", required_argument, NULL, 'd'},
                                             {"warmup", required_argument, NULL, 'w'},
                                             {"dir", required_argument, NULL, 'D'},
                                             {"port", required_argument, NULL, 'p'},
                                             {"json", no_argument, NULL, 'j'},
                                             {"help", no_argument, NULL, 'h'},
                                             {"nodelay", no_argument, NULL, 'n'},
                                             {NULL, 0, NULL, 0}};
    *o = (struct probe_options){
        .requested_size = 128, .inflight = 64, .duration_s = 10, .warmup_s = 2};
    int c;
    double v;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 's':
            if (parse_double(optarg, 8, 64 << 20, &v) != 0 || v != (double)(size_t)v) {
                fprintf(stderr, "raft-probe: --entry-size must be an integer from 8 to %d\n",
                        64 << 20);
                return 2;
            }
            o->requested_size = (size_t)v;
            break;
        case 'k':
            if (parse_double(optarg, 1, 65536, &v) != 0 || v != (double)(unsigned)v) {
                fprintf(stderr, "raft-probe: --inflight must be an integer from 1 to 65536\n");
                return 2;
            }
            o->inflight = (unsigned)v;
            break;
        case 'd':
            if (parse_double(optarg, 0.001, 86400, &o->duration_s) != 0) {
                fprintf(stderr, "raft-probe: --duration must be seconds in (0, 86400]\n");
                return 2;
            }
            break;
        case 'w':
            if (parse_double(optarg, 0, 86400, &o->warmup_s) != 0) {
                fprintf(stderr, "raft-probe: --warmup must be seconds in [0, 86400]\n");
                return 2;
            }
            break;
        case 'D':
            o->dir = optarg;
            break;
        case 'p':
            if (parse_double(optarg, 1, 65535 - 2, &v) != 0 || v != (double)(unsigned)v) {
                fprintf(stderr, "raft-probe: --port must be an integer from 1 to 65533\n");
                return 2;
            }
            o->base_port = (unsigned)v;
            break;
        case 'j':
            o->json = true;
            break;
        case 'n':
            o->nodelay = true;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "raft-probe: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    o->entry_size = (o->requested_size + 7) & ~(size_t)7;
    return 0;
}

static void print_result(const struct probe *pr, const struct replica *leader)
{
    const struct probe_options *o = &pr->opt;
    const struct hist *h = &leader->hist;
    double thr = (double)h->n / o->duration_s;
    double us[6] = {hist_quantile(h, 0.50) / 1e3,          hist_quantile(h, 0.90) / 1e3,
                    hist_quantile(h, 0.99) / 1e3,          hist_quantile(h, 0.999) / 1e3,
                    (h->n > 0 ? (double)h->max : 0) / 1e3, hist_mean(h) / 1e3};
    if (o->json) {
        printf("{\"system\":\"%s\",\"workload\":\"append\",\"mode\":\"closed\","
               "\"clients\":%u,\"connections\":0,\"rate\":0.0,\"keys\":0,\"value_size\":%zu,"
               "\"duration_s\":%.1f,\"ops\":%" PRIu64 ",\"throughput\":%.1f,"
               "\"latency_us\":{\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,"
               "\"max\":%.1f,\"mean\":%.1f},\"errors\":{",
               o->nodelay ? "raft-probe-nodelay" : "raft-probe", o->inflight, o->entry_size,
               o->duration_s, h->n, thr, us[0], us[1], us[2], us[3], us[4], us[5]);
        bool first = true;
        for (int i = 0; i < ERR_COUNT; i++) {
            if (leader->errors[i] > 0) {
                printf("%s\"%s\":%" PRIu64, first ? "" : ",", probe_error_names[i],
                       leader->errors[i]);
                first = false;
            }
        }
        printf("}}\n");
        return;
    }
    printf("system      raft-probe (libraft, 3 voters on loopback, one entry per proposal%s)\n",
           o->nodelay ? ", TCP_NODELAY" : "");
    printf("workload    append (closed loop)\n");
    printf("in flight   %u proposals\n", o->inflight);
    printf("entries     %zu bytes%s\n", o->entry_size,
           o->entry_size != o->requested_size ? " (padded to a multiple of 8)" : "");
    printf("duration    %.1f s\n", o->duration_s);
    printf("entries     %" PRIu64 "\n", h->n);
    printf("throughput  %.1f entries/s, %.2f MB/s\n", thr, thr * (double)o->entry_size / 1e6);
    printf("latency us  p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f  mean %.1f\n", us[0],
           us[1], us[2], us[3], us[4], us[5]);
    printf("errors     ");
    bool any = false;
    for (int i = 0; i < ERR_COUNT; i++) {
        if (leader->errors[i] > 0) {
            printf(" %s=%" PRIu64, probe_error_names[i], leader->errors[i]);
            any = true;
        }
    }
    printf("%s\n", any ? "" : " none");
}

/* ----------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    struct probe *pr = NULL;
    char tmpdir[256] = "";
    char basedir[400];
    unsigned ports[PROBE_REPLICAS];
    int started = 0;
    int status = 1;

    signal(SIGPIPE, SIG_IGN);
    pr = calloc(1, sizeof *pr);
    if (pr == NULL) {
        fprintf(stderr, "raft-probe: out of memory\n");
        return 1;
    }
    int rv = parse_options(argc, argv, &pr->opt);
    if (rv != 0) {
        free(pr);
        return rv;
    }

    if (pr->opt.dir == NULL) {
        const char *t = getenv("TMPDIR");
        snprintf(tmpdir, sizeof tmpdir, "%s/raft-probe.XXXXXX", t != NULL && *t ? t : "/tmp");
        if (mkdtemp(tmpdir) == NULL) {
            fprintf(stderr, "raft-probe: mkdtemp %s: %s\n", tmpdir, strerror(errno));
            goto out;
        }
        snprintf(basedir, sizeof basedir, "%s", tmpdir);
    } else {
        snprintf(basedir, sizeof basedir, "%s", pr->opt.dir);
        if (mkdir(basedir, 0755) != 0 && errno != EEXIST) {
            fprintf(stderr, "raft-probe: mkdir %s: %s\n", basedir, strerror(errno));
            goto out;
        }
    }
    if (pr->opt.base_port != 0) {
        for (unsigned i = 0; i < PROBE_REPLICAS; i++) {
            ports[i] = pr->opt.base_port + i;
        }
    } else if (free_ports(ports) != 0) {
        fprintf(stderr, "raft-probe: cannot find free loopback ports: %s\n", strerror(errno));
        goto out;
    }

    for (unsigned i = 0; i < PROBE_REPLICAS; i++) {
        struct replica *r = &pr->replicas[i];
        r->probe = pr;
        r->id = i + 1;
        snprintf(r->address, sizeof r->address, "127.0.0.1:%u", ports[i]);
        snprintf(r->dir, sizeof r->dir, "%s/node%u", basedir, r->id);
        if (mkdir(r->dir, 0755) != 0) {
            fprintf(stderr, "raft-probe: mkdir %s: %s (a fresh directory is needed)\n", r->dir,
                    strerror(errno));
            goto out;
        }
        r->proposals = calloc(pr->opt.inflight, sizeof *r->proposals);
        if (r->proposals == NULL) {
            fprintf(stderr, "raft-probe: out of memory\n");
            goto out;
        }
        hist_init(&r->hist);
    }
    /* The loops and their stop handles exist before the threads run, so
     * that main can always signal a started thread. */
    for (unsigned i = 0; i < PROBE_REPLICAS; i++) {
        struct replica *r = &pr->replicas[i];
        if ((rv = uv_loop_init(&r->loop)) != 0 ||
            (rv = uv_async_init(&r->loop, &r->stop_async, stop_cb)) != 0) {
            fprintf(stderr, "raft-probe: libuv: %s\n", uv_strerror(rv));
            goto out;
        }
        r->stop_async.data = r;
        if ((rv = pthread_create(&r->thread, NULL, replica_thread, r)) != 0) {
            fprintf(stderr, "raft-probe: pthread_create: %s\n", strerror(rv));
            uv_close((uv_handle_t *)&r->stop_async, NULL);
            uv_run(&r->loop, UV_RUN_DEFAULT);
            uv_loop_close(&r->loop);
            goto out;
        }
        started++;
    }

    /* Wait for setup, then for a leader (10 s), then for the run. */
    uint64_t t0 = gs_mono_ns();
    for (unsigned i = 0; i < PROBE_REPLICAS; i++) {
        while (atomic_load(&pr->replicas[i].ready) == 0) {
            usleep(1000);
        }
        if (atomic_load(&pr->replicas[i].ready) < 0) {
            fprintf(stderr, "raft-probe: replica %u: %s\n", i + 1, pr->replicas[i].errmsg);
            goto out;
        }
    }
    while (atomic_load(&pr->leader_id) == 0) {
        if (gs_mono_ns() - t0 > 10000000000ull) {
            fprintf(stderr, "raft-probe: no leader within 10 s\n");
            goto out;
        }
        usleep(1000);
    }
    uint64_t limit = (uint64_t)((pr->opt.warmup_s + pr->opt.duration_s + 30) * 1e9);
    uint64_t last = 0, last_t = gs_mono_ns(), next_report = last_t + 1000000000u;
    while (!atomic_load(&pr->finished)) {
        uint64_t now = gs_mono_ns();
        if (now - atomic_load(&pr->t_start_ns) > limit) {
            fprintf(stderr, "raft-probe: the run did not end within 30 s of its end\n");
            goto out;
        }
        if (now >= next_report) {
            uint64_t c = atomic_load(&pr->completed);
            fprintf(stderr, "raft-probe: %5.1fs %-6s %9.0f entries/s\n",
                    (double)(now - atomic_load(&pr->t_start_ns)) / 1e9,
                    now < atomic_load(&pr->t_measure_ns) ? "warmup" : "run",
                    (double)(c - last) / ((double)(now - last_t) / 1e9));
            last = c;
            last_t = now;
            next_report += 1000000000u;
        }
        usleep(2000);
    }

    /* Every replica applies what the leader applied (bounded wait). */
    struct replica *leader = &pr->replicas[atomic_load(&pr->leader_id) - 1];
    uint64_t want = atomic_load(&leader->applied);
    uint64_t deadline = gs_mono_ns() + 30000000000ull;
    bool agree = false;
    while (!agree && gs_mono_ns() < deadline) {
        agree = true;
        for (unsigned i = 0; i < PROBE_REPLICAS; i++) {
            agree = agree && atomic_load(&pr->replicas[i].applied) >= want;
        }
        if (!agree) {
            usleep(1000);
        }
    }
    for (unsigned i = 0; i < PROBE_REPLICAS; i++) {
        struct replica *r = &pr->replicas[i];
        if (atomic_load(&r->bad) != 0) {
            fprintf(stderr, "raft-probe: replica %u applied %" PRIu64 " malformed entries\n", r->id,
                    atomic_load(&r->bad));
            agree = false;
        }
    }
    if (!agree) {
        fprintf(stderr,
                "raft-probe: the replicas did not all apply the leader's %" PRIu64
                " entries within 30 s; applied:",
                want);
        for (unsigned i = 0; i < PROBE_REPLICAS; i++) {
            fprintf(stderr, " %" PRIu64, atomic_load(&pr->replicas[i].applied));
        }
        fprintf(stderr, "\n");
        goto out;
    }
    if (leader->hist.n == 0) {
        fprintf(stderr, "raft-probe: no entry completed in the measured window\n");
        goto out;
    }
    fprintf(stderr, "raft-probe: leader %u; every replica applied %" PRIu64 " entries\n",
            leader->id, want);
    print_result(pr, leader);
    status = 0;

out:
    /* A replica whose setup failed has closed its handles and stops alone. */
    for (int i = 0; i < started; i++) {
        while (atomic_load(&pr->replicas[i].ready) == 0) {
            usleep(1000);
        }
        if (atomic_load(&pr->replicas[i].ready) > 0) {
            uv_async_send(&pr->replicas[i].stop_async);
        }
    }
    for (int i = 0; i < started; i++) {
        pthread_join(pr->replicas[i].thread, NULL);
    }
    for (unsigned i = 0; i < PROBE_REPLICAS; i++) {
        free(pr->replicas[i].proposals);
    }
    if (tmpdir[0] != '\0') {
        nftw(tmpdir, remove_cb, 16, FTW_DEPTH | FTW_PHYS);
    }
    free(pr);
    return status;
}
