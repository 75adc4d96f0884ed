/*
 * geoscale-bench: GeoScale's load generator, over the asynchronous client
 * library (include/geoscale/client.h). `geoscale-bench --help` documents
 * the options; bench/README.md the workloads and how to read the output.
 *
 * Design.
 *
 * Threads and connections. --threads T threads each run one libuv loop.
 * --connections M gs_client objects are spread over the threads (connection
 * j on thread j % T); a gs_client keeps one connection to the node it talks
 * to (normally the cell leader), so M is the number of TCP connections that
 * carry the load. --clients N logical clients ("workers") are spread over
 * the connections (worker i on connection i % M): each keeps at most one
 * request in flight, and the workers of one connection pipeline their
 * requests on it.
 *
 * Closed loop (no --rate): a worker sends its next request as soon as the
 * previous one completes (after a failure, 10 ms later, so that a fast error
 * does not spin). Open loop (--rate R): the run has a fixed arrival schedule
 * of R requests/s in total, arrival j at t_start + j / R; worker i owns
 * arrivals i, i + N, i + 2N, ... (as in bench/etcd). A worker sends an arrival
 * at its intended time (a timerfd with nanosecond resolution wakes the loop)
 * or, when it is behind because its previous request is slow, at once; the
 * latency counts from the intended time, so a slow server cannot hide its
 * queueing delay (no coordinated omission). Arrivals sent more than 1 ms
 * after their intended time are counted as late; arrivals of the measured
 * window never sent because the run ended are counted as dropped.
 *
 * Measurement. The first --warmup seconds are not recorded. A request is
 * recorded if its (intended) start is at or after the start of the window
 * and it completes before the end of the window (--duration s later), the
 * rule of bench/etcd. Successful requests go into the latency histogram
 * (bench/hist.h, one per thread, merged at the end); failures are counted by
 * error name. ops = successful recorded requests, throughput = ops /
 * duration.
 *
 * Setup. The user workloads choose among --users users and the kv ones
 * among --keys keys (one user per key, the value in the user's bio). A setup
 * phase creates them first with the same threads and workers; with --reuse
 * usernames are PREFIX_i and a user that already exists is looked up by
 * username (and, for kv, gets the value written) instead.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "engine/mono.h"
#include "engine/numparse.h"
#include "geoscale.pb-c.h"
#include "geoscale/client.h"
#include "geoscale/errors.h"
#include "hist.h"
#include "metadata.pb-c.h"
#include "zipf.h"

#define PROG "geoscale-bench"
#define MAX_SEEDS 64
#define MAX_THREADS 64
#define MAX_CLIENTS 100000
#define MAX_POPULATION 10000000
#define BIO_MAX 4096    /* the cell's limit on a bio (CELL_BIO_MAX) */
#define USERNAME_MAX 64 /* the cell's limit on a username */
#define PREFIX_MAX 24
#define TICK_MS 10                 /* housekeeping timer of each loop */
#define ERROR_PAUSE_NS 10000000ull /* closed loop: pause after a failure */
#define LATE_NS 1000000ull         /* open loop: an arrival sent later is late */
#define SETUP_ATTEMPTS 5           /* per setup item, before giving up */
#define NS 1000000000.0

/* Error kinds: -GS_E* codes, then our own. */
#define KIND_BAD_RESPONSE (-GS_ERROR_MIN + 1)
#define KIND_DROPPED (-GS_ERROR_MIN + 2)
#define N_KINDS (-GS_ERROR_MIN + 3)

enum workload {
    WL_SIGNUP,
    WL_PROFILE_READ,
    WL_META_READ,
    WL_PROFILE_UPDATE,
    WL_FOLLOW,
    WL_MIXED,
    WL_KV_PUT,
    WL_KV_GET,
};

static const char *const workload_names[] = {
    "signup", "profile-read", "meta-read", "profile-update", "follow", "mixed", "kv-put", "kv-get",
};
#define N_WORKLOADS (sizeof workload_names / sizeof workload_names[0])

enum op_kind {
    OP_CREATE,     /* CreateUser */
    OP_GET_USER,   /* GetUser by id (profile-read, kv-get) */
    OP_LOOKUP,     /* GetUser by username (setup with --reuse) */
    OP_META_GET,   /* MetadataGet */
    OP_UPDATE_BIO, /* UpdateUser of the bio (profile-update, kv-put, setup) */
    OP_FOLLOW,     /* Follow */
};

struct options {
    const char *seeds[MAX_SEEDS];
    size_t n_seeds;
    char *seeds_buf;
    enum workload workload;
    unsigned clients;
    unsigned connections;
    unsigned threads;
    double rate;
    double duration;
    double warmup;
    size_t users;
    size_t keys;
    size_t value_size;
    double zipf;
    bool reuse;
    const char *prefix;
    unsigned timeout_ms;
    bool json;
};

enum phase { PHASE_SETUP, PHASE_RUN };

struct bench;

struct worker {
    struct bench *b;
    struct thread *t;
    gs_client *conn;
    unsigned index; /* 0 .. clients-1 */
    uint64_t rng;
    bool busy;         /* a request in flight */
    bool done;         /* sends nothing more */
    enum op_kind op;   /* of the request in flight */
    uint64_t subject;  /* user id the request names */
    uint64_t start_ns; /* intended start of the request in flight */
    uint64_t wake_ns;  /* idle: send at this time (0 = not waiting) */
    size_t heap_idx;   /* in the thread's arrival heap, or SIZE_MAX */
    uint64_t arrival;  /* open loop: k of its next arrival i + k*N */
    uint64_t seq;      /* requests sent, for unique names and values */
    /* setup */
    size_t item; /* user index being set up, or SIZE_MAX */
    unsigned attempts;
};

struct thread {
    struct bench *b;
    unsigned index;
    pthread_t tid;
    uv_loop_t loop;
    uv_timer_t tick;
    uv_poll_t poll;
    int tfd;
    bool loop_inited;
    bool poll_inited;
    gs_client **conns;
    size_t n_conns;
    size_t conns_open;
    struct worker **workers;
    size_t n_workers;
    struct worker **heap; /* open loop: idle workers by wake_ns */
    size_t heap_len;
    uint64_t armed_ns; /* timerfd armed for this time (0 = disarmed) */
    size_t inflight;
    bool closing;
    uint8_t *pack; /* request encoding buffer */
    char *value;   /* value_size + 1 bytes, NUL-terminated */
    struct hist hist;
    uint64_t errors[N_KINDS];
    uint64_t late;
    uint64_t sent_in_window;
    int fatal; /* setup: the error that made an item give up */
};

struct bench {
    struct options o;
    enum phase phase;
    uint64_t *ids; /* population user ids */
    size_t population;
    struct zipf zipf; /* over the population */
    char tag[12];     /* random per run: fresh usernames */
    uint64_t t_start; /* ns, CLOCK_MONOTONIC */
    uint64_t t_measure;
    uint64_t t_end;
    struct thread *threads;
    struct worker *workers;
    atomic_uint_fast64_t completed; /* every completion, for progress */
    atomic_uint_fast64_t failed;
    atomic_size_t next_item; /* setup */
    atomic_size_t items_done;
    atomic_size_t items_reused;
    atomic_int setup_error;
    atomic_uint threads_left;
};

static atomic_bool interrupted;

/* ------------------------------------------------------------ helpers */

__attribute__((format(printf, 1, 2))) static void note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs(PROG ": ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

__attribute__((format(printf, 1, 2), noreturn)) static void usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs(PROG ": ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs(" (see --help)\n", stderr);
    va_end(ap);
    exit(2);
}

/* xorshift64*: a worker's own generator. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* Uniform in [0, 1). */
static double rng_unit(uint64_t *s)
{
    return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

static size_t rng_below(uint64_t *s, size_t n)
{
    return (size_t)(rng_unit(s) * (double)n);
}

/* ------------------------------------------------------------ choice of users */

/* A Zipf-chosen user index (zipf.h); rank r is user index r: the hottest
 * users are the first ones created. */
static size_t pick_zipf(struct worker *w)
{
    return zipf_draw(&w->b->zipf, rng_unit(&w->rng));
}

static bool is_kv(enum workload wl)
{
    return wl == WL_KV_PUT || wl == WL_KV_GET;
}

/* ------------------------------------------------------------ requests */

static void make_username(const struct bench *b, size_t item, const struct worker *w, char *out,
                          size_t cap)
{
    if (w != NULL) { /* signup: fresh per request */
        snprintf(out, cap, "%s_%s_%u_%" PRIu64, b->o.prefix, b->tag, w->index, w->seq);
    } else if (b->o.reuse) {
        snprintf(out, cap, "%s_%zu", b->o.prefix, item);
    } else {
        snprintf(out, cap, "%s_%s_%zu", b->o.prefix, b->tag, item);
    }
}

static void op_done(int status, uint32_t leader_id, const uint8_t *body, size_t len, void *data);

/* Index in the error counters of a negative status. */
static int kind_of(int status)
{
    if (status == -KIND_BAD_RESPONSE) {
        return KIND_BAD_RESPONSE;
    }
    if (status < GS_ERROR_MIN || status >= 0) {
        return -GS_EINTERNAL; /* not a code of errors.h: a bug somewhere */
    }
    return -status;
}

/*
 * Encode and send worker w's request `op` on `subject` (and `other`). On a
 * synchronous failure, returns the error and nothing is in flight.
 */
static int send_op(struct worker *w, enum op_kind op, uint64_t subject, uint64_t other,
                   const char *text)
{
    struct thread *t = w->t;
    ProtobufCMessage *msg;
    uint16_t method;
    Geoscale__CreateUserRequest create = GEOSCALE__CREATE_USER_REQUEST__INIT;
    Geoscale__GetUserRequest get = GEOSCALE__GET_USER_REQUEST__INIT;
    Geoscale__MetadataGetRequest meta = GEOSCALE__METADATA_GET_REQUEST__INIT;
    Geoscale__UpdateUserRequest update = GEOSCALE__UPDATE_USER_REQUEST__INIT;
    Geoscale__EdgeRequest edge = GEOSCALE__EDGE_REQUEST__INIT;
    Geoscale__ProfileField bio_field = GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_BIO;

    switch (op) {
    case OP_CREATE:
        create.username = (char *)text;
        create.display_name = "Bench User";
        create.plan = "free";
        create.bio = t->value;
        method = GEOSCALE__METHOD__METHOD_CREATE_USER;
        msg = &create.base;
        break;
    case OP_GET_USER:
        get.user_id = subject;
        get.viewer_id = other;
        method = GEOSCALE__METHOD__METHOD_GET_USER;
        msg = &get.base;
        break;
    case OP_LOOKUP:
        get.username = (char *)text;
        method = GEOSCALE__METHOD__METHOD_GET_USER;
        msg = &get.base;
        break;
    case OP_META_GET:
        meta.user_id = subject;
        method = GEOSCALE__METHOD__METHOD_METADATA_GET;
        msg = &meta.base;
        break;
    case OP_UPDATE_BIO:
        update.user_id = subject;
        update.n_fields = 1;
        update.fields = &bio_field;
        update.bio = (char *)text;
        method = GEOSCALE__METHOD__METHOD_UPDATE_USER;
        msg = &update.base;
        break;
    case OP_FOLLOW:
    default:
        edge.actor_id = subject;
        edge.target_id = other;
        method = GEOSCALE__METHOD__METHOD_FOLLOW;
        msg = &edge.base;
        break;
    }
    size_t len = protobuf_c_message_pack(msg, t->pack);
    w->op = op;
    w->subject = subject;
    int rv = gs_client_call(w->conn, method, t->pack, len, NULL, op_done, w);
    if (rv == 0) {
        w->busy = true;
        w->seq++;
        t->inflight++;
    }
    return rv;
}

/* A value of value_size bytes that differs from request to request: the
 * worker's sequence number over the start of the thread's value. */
static const char *fresh_value(struct worker *w, char *buf)
{
    size_t n = w->b->o.value_size;
    memcpy(buf, w->t->value, n + 1);
    if (n > 0) {
        char num[48];
        int k = snprintf(num, sizeof num, "%u.%" PRIu64 ".", w->index, w->seq);
        memcpy(buf, num, (size_t)k < n ? (size_t)k : n);
    }
    return buf;
}

/* Start the next measured request of worker w, intended at start_ns. */
static int start_run_op(struct worker *w, uint64_t start_ns)
{
    struct bench *b = w->b;
    char text[BIO_MAX + 1];
    enum workload wl = b->o.workload;
    size_t user, other;

    w->start_ns = start_ns;
    if (wl == WL_MIXED) {
        double r = rng_unit(&w->rng);
        wl = r < 0.80 ? WL_PROFILE_READ : r < 0.95 ? WL_FOLLOW : WL_PROFILE_UPDATE;
    }
    switch (wl) {
    case WL_SIGNUP:
        make_username(b, 0, w, text, sizeof text);
        return send_op(w, OP_CREATE, 0, 0, text);
    case WL_PROFILE_READ:
        /* A popular profile, read by any user (privacy rules apply). */
        user = pick_zipf(w);
        other = rng_below(&w->rng, b->population);
        return send_op(w, OP_GET_USER, b->ids[user], b->ids[other], NULL);
    case WL_META_READ:
        return send_op(w, OP_META_GET, b->ids[pick_zipf(w)], 0, NULL);
    case WL_PROFILE_UPDATE:
        return send_op(w, OP_UPDATE_BIO, b->ids[pick_zipf(w)], 0, fresh_value(w, text));
    case WL_FOLLOW:
        /* Any user follows a popular one. */
        user = rng_below(&w->rng, b->population);
        other = pick_zipf(w);
        if (other == user) {
            other = (other + 1) % b->population;
        }
        return send_op(w, OP_FOLLOW, b->ids[user], b->ids[other], NULL);
    case WL_KV_PUT:
        return send_op(w, OP_UPDATE_BIO, b->ids[rng_below(&w->rng, b->population)], 0, w->t->value);
    case WL_KV_GET:
    default:
        return send_op(w, OP_GET_USER, b->ids[rng_below(&w->rng, b->population)], 0, NULL);
    }
}

/*
 * Check a response; on success of a setup step, note the user id. Returns 0
 * or KIND_BAD_RESPONSE as a negative number.
 */
static int check_response(struct worker *w, const uint8_t *body, size_t len, uint64_t *user_id)
{
    const struct bench *b = w->b;
    int rv = 0;

    *user_id = 0;
    switch (w->op) {
    case OP_CREATE: {
        Geoscale__CreateUserResponse *r = geoscale__create_user_response__unpack(NULL, len, body);
        if (r == NULL || r->user_id == 0) {
            rv = -KIND_BAD_RESPONSE;
        } else {
            *user_id = r->user_id;
        }
        geoscale__create_user_response__free_unpacked(r, NULL);
        break;
    }
    case OP_GET_USER:
    case OP_LOOKUP: {
        Geoscale__GetUserResponse *r = geoscale__get_user_response__unpack(NULL, len, body);
        if (r == NULL || r->profile == NULL || r->profile->user_id == 0 ||
            (w->op == OP_GET_USER && r->profile->user_id != w->subject)) {
            rv = -KIND_BAD_RESPONSE;
        } else if (w->op == OP_GET_USER && b->phase == PHASE_RUN && is_kv(b->o.workload) &&
                   strlen(r->profile->bio) != b->o.value_size) {
            rv = -KIND_BAD_RESPONSE; /* the preloaded value is not there */
        } else {
            *user_id = r->profile->user_id;
        }
        geoscale__get_user_response__free_unpacked(r, NULL);
        break;
    }
    case OP_META_GET: {
        Geoscale__MetadataGetResponse *r = geoscale__metadata_get_response__unpack(NULL, len, body);
        if (r == NULL || r->meta == NULL || r->meta->user_id != w->subject) {
            rv = -KIND_BAD_RESPONSE;
        }
        geoscale__metadata_get_response__free_unpacked(r, NULL);
        break;
    }
    case OP_UPDATE_BIO:
    case OP_FOLLOW:
        break; /* the status says it all */
    }
    return rv;
}

/* ------------------------------------------------------------ scheduling */

static void heap_swap(struct thread *t, size_t i, size_t j)
{
    struct worker *x = t->heap[i];
    t->heap[i] = t->heap[j];
    t->heap[j] = x;
    t->heap[i]->heap_idx = i;
    t->heap[j]->heap_idx = j;
}

static void heap_push(struct thread *t, struct worker *w)
{
    size_t i = t->heap_len++;
    t->heap[i] = w;
    w->heap_idx = i;
    while (i > 0 && t->heap[(i - 1) / 2]->wake_ns > t->heap[i]->wake_ns) {
        heap_swap(t, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static struct worker *heap_pop(struct thread *t)
{
    struct worker *top = t->heap[0];
    size_t i = 0;
    t->heap_len--;
    if (t->heap_len > 0) {
        t->heap[0] = t->heap[t->heap_len];
        t->heap[0]->heap_idx = 0;
        for (;;) {
            size_t l = 2 * i + 1, r = l + 1, m = i;
            if (l < t->heap_len && t->heap[l]->wake_ns < t->heap[m]->wake_ns) {
                m = l;
            }
            if (r < t->heap_len && t->heap[r]->wake_ns < t->heap[m]->wake_ns) {
                m = r;
            }
            if (m == i) {
                break;
            }
            heap_swap(t, i, m);
            i = m;
        }
    }
    top->heap_idx = SIZE_MAX;
    return top;
}

/* Arm the timerfd for the earliest waiting worker. */
static void arm_timer(struct thread *t)
{
    uint64_t at = t->heap_len > 0 ? t->heap[0]->wake_ns : 0;
    struct itimerspec its = {0};

    if (at == t->armed_ns || t->tfd < 0) {
        return;
    }
    its.it_value.tv_sec = (time_t)(at / 1000000000ull);
    its.it_value.tv_nsec = (long)(at % 1000000000ull);
    /* at == 0 disarms. */
    timerfd_settime(t->tfd, TFD_TIMER_ABSTIME, &its, NULL);
    t->armed_ns = at;
}

/* Intended time of worker w's arrival number k (open loop). */
static uint64_t arrival_ns(const struct worker *w, uint64_t k)
{
    const struct bench *b = w->b;
    double j = (double)w->index + (double)k * (double)b->o.clients;
    return b->t_start + (uint64_t)(j / b->o.rate * NS);
}

static void thread_maybe_close(struct thread *t);
static void worker_next(struct worker *w);

/* The worker's turn has come (wake time reached, or at once). */
static void worker_go(struct worker *w)
{
    struct thread *t = w->t;
    struct bench *b = w->b;
    uint64_t now = gs_mono_ns();
    int rv;

    w->wake_ns = 0;
    if (b->phase == PHASE_SETUP) {
        worker_next(w);
        return;
    }
    if (b->o.rate > 0) {
        uint64_t intended = arrival_ns(w, w->arrival);
        /* The run is over at t_end: the arrivals of a worker still behind
         * then are never sent (dropped), as they could not count anyway. */
        if (intended >= b->t_end || now >= b->t_end || atomic_load(&interrupted)) {
            w->done = true;
            thread_maybe_close(t);
            return;
        }
        w->arrival++;
        if (now > intended + LATE_NS && intended >= b->t_measure) {
            t->late++;
        }
        if (intended >= b->t_measure) {
            t->sent_in_window++;
        }
        rv = start_run_op(w, intended);
    } else {
        if (now >= b->t_end || atomic_load(&interrupted)) {
            w->done = true;
            thread_maybe_close(t);
            return;
        }
        rv = start_run_op(w, now);
    }
    if (rv != 0) {
        /* Not sent: count it like a failed request and pause (through the
         * heap, never recursing into another attempt). */
        if (w->start_ns >= b->t_measure && now < b->t_end) {
            t->errors[kind_of(rv)]++;
        }
        atomic_fetch_add(&b->failed, 1);
        w->wake_ns = now + ERROR_PAUSE_NS;
        heap_push(t, w);
        arm_timer(t);
    }
}

/*
 * Decide what idle worker w does next: wait for its wake time, go now, or
 * (setup) take the next item.
 */
static void worker_next(struct worker *w)
{
    struct thread *t = w->t;
    struct bench *b = w->b;

    if (w->done) {
        thread_maybe_close(t);
        return;
    }
    if (b->phase == PHASE_SETUP) {
        char name[USERNAME_MAX + 8];
        if (w->wake_ns != 0) {
            heap_push(t, w); /* retry after a pause */
            arm_timer(t);
            return;
        }
        if (w->item == SIZE_MAX) {
            size_t i = atomic_fetch_add(&b->next_item, 1);
            if (i >= b->population || atomic_load(&b->setup_error) != 0 ||
                atomic_load(&interrupted)) {
                w->done = true;
                thread_maybe_close(t);
                return;
            }
            w->item = i;
            w->attempts = 0;
        }
        w->attempts++;
        make_username(b, w->item, NULL, name, sizeof name);
        int rv = send_op(w, OP_CREATE, 0, 0, name);
        if (rv != 0) {
            atomic_store(&b->setup_error, rv);
            w->done = true;
            thread_maybe_close(t);
        }
        return;
    }
    if (b->o.rate > 0) {
        w->wake_ns = arrival_ns(w, w->arrival);
    }
    if (w->wake_ns != 0 && w->wake_ns > gs_mono_ns()) {
        heap_push(t, w);
        arm_timer(t);
        return;
    }
    worker_go(w);
}

/* Setup: the response to a step of item w->item. */
static void setup_done(struct worker *w, int status, const uint8_t *body, size_t len)
{
    struct bench *b = w->b;
    uint64_t user_id = 0;
    char name[USERNAME_MAX + 8];
    enum op_kind op = w->op;
    int rv;

    if (status == 0) {
        status = check_response(w, body, len, &user_id);
    }
    if (status == 0 && op == OP_CREATE) {
        b->ids[w->item] = user_id;
    } else if (status == 0 && op == OP_LOOKUP) {
        b->ids[w->item] = user_id;
        atomic_fetch_add(&b->items_reused, 1);
        if (is_kv(b->o.workload)) { /* the value may be another size */
            rv = send_op(w, OP_UPDATE_BIO, user_id, 0, w->t->value);
            if (rv == 0) {
                return;
            }
            status = rv;
        }
    } else if (status == GS_EEXIST && op == OP_CREATE && (b->o.reuse || w->attempts > 1)) {
        /* Reuse, or an earlier attempt of ours that timed out did create
         * the user (a new attempt is a new request, with a new key). */
        make_username(b, w->item, NULL, name, sizeof name);
        rv = send_op(w, OP_LOOKUP, 0, 0, name);
        if (rv == 0) {
            return;
        }
        status = rv;
    }
    if (status == 0) {
        w->item = SIZE_MAX;
        atomic_fetch_add(&b->items_done, 1);
        atomic_fetch_add(&b->completed, 1);
        worker_next(w);
        return;
    }
    atomic_fetch_add(&b->failed, 1);
    w->t->errors[kind_of(status)]++;
    if (status == GS_EEXIST || w->attempts >= SETUP_ATTEMPTS) {
        note("setup: user %zu failed %u time(s), last: %s", w->item, w->attempts,
             gs_error_name(status == -KIND_BAD_RESPONSE ? GS_EPROTO : status));
        atomic_store(&b->setup_error, status == -KIND_BAD_RESPONSE ? GS_EPROTO : status);
        w->done = true;
        thread_maybe_close(w->t);
        return;
    }
    w->wake_ns = gs_mono_ns() + 100 * 1000000ull; /* retry the item from CreateUser */
    worker_next(w);
}

static void op_done(int status, uint32_t leader_id, const uint8_t *body, size_t len, void *data)
{
    struct worker *w = data;
    struct thread *t = w->t;
    struct bench *b = w->b;
    uint64_t user_id, end;

    (void)leader_id;
    w->busy = false;
    t->inflight--;
    if (b->phase == PHASE_SETUP) {
        setup_done(w, status, body, len);
        return;
    }
    if (status == 0) {
        status = check_response(w, body, len, &user_id);
    }
    end = gs_mono_ns();
    if (w->start_ns >= b->t_measure && end < b->t_end) {
        if (status == 0) {
            hist_record(&t->hist, end - w->start_ns);
        } else {
            t->errors[kind_of(status)]++;
        }
    }
    atomic_fetch_add(status == 0 ? &b->completed : &b->failed, 1);
    if (status != 0 && b->o.rate <= 0) {
        w->wake_ns = end + ERROR_PAUSE_NS;
    }
    worker_next(w);
}

/* ------------------------------------------------------------ loop */

static void on_conn_closed(void *data)
{
    struct thread *t = data;
    t->conns_open--;
}

static void on_tfd_closed(uv_handle_t *h)
{
    struct thread *t = h->data;
    close(t->tfd);
    t->tfd = -1;
}

/* When every worker is done and nothing is in flight, close everything so
 * that the loop ends. */
static void thread_maybe_close(struct thread *t)
{
    if (t->closing || t->inflight > 0) {
        return;
    }
    for (size_t i = 0; i < t->n_workers; i++) {
        if (!t->workers[i]->done) {
            return;
        }
    }
    t->closing = true;
    for (size_t i = 0; i < t->n_conns; i++) {
        gs_client_close(t->conns[i], on_conn_closed, t);
    }
    uv_close((uv_handle_t *)&t->tick, NULL);
    uv_poll_stop(&t->poll);
    uv_close((uv_handle_t *)&t->poll, on_tfd_closed);
}

/* Wake the workers whose time has come. */
static void wake_due(struct thread *t)
{
    uint64_t now = gs_mono_ns();
    while (t->heap_len > 0 && t->heap[0]->wake_ns <= now) {
        worker_go(heap_pop(t));
    }
    arm_timer(t);
}

static void on_tfd(uv_poll_t *p, int status, int events)
{
    struct thread *t = p->data;
    uint64_t expirations;

    (void)status;
    (void)events;
    if (read(t->tfd, &expirations, sizeof expirations) < 0 && errno != EAGAIN) {
        note("timerfd read: %s", strerror(errno));
    }
    t->armed_ns = 0; /* a fired absolute timer is disarmed */
    wake_due(t);
}

/* Housekeeping: the end of the run or an interruption reaches idle workers
 * waiting far ahead; a lost timerfd edge is caught up. */
static void on_tick(uv_timer_t *tm)
{
    struct thread *t = tm->data;
    struct bench *b = t->b;
    uint64_t now = gs_mono_ns();
    bool ending = atomic_load(&interrupted) ||
                  (b->phase == PHASE_SETUP && atomic_load(&b->setup_error) != 0) ||
                  (b->phase == PHASE_RUN && now >= b->t_end);

    if (ending) {
        while (t->heap_len > 0) {
            struct worker *w = heap_pop(t);
            w->done = true;
        }
        for (size_t i = 0; i < t->n_workers; i++) {
            if (!t->workers[i]->busy) {
                t->workers[i]->done = true;
            }
        }
        arm_timer(t);
        thread_maybe_close(t);
        return;
    }
    wake_due(t);
}

static void *thread_main(void *arg)
{
    struct thread *t = arg;
    struct bench *b = t->b;

    for (size_t i = 0; i < t->n_workers; i++) {
        worker_next(t->workers[i]);
    }
    uv_run(&t->loop, UV_RUN_DEFAULT);
    atomic_fetch_sub(&b->threads_left, 1);
    return NULL;
}

/* Create the threads' loops, connections and workers. */
static int threads_init(struct bench *b)
{
    const struct options *o = &b->o;
    struct gs_client_options copts = {0};
    unsigned per_conn = (o->clients + o->connections - 1) / o->connections;
    int rv;

    copts.timeout_ms = o->timeout_ms;
    copts.max_inflight = per_conn > 1024 ? per_conn : 1024;
    b->threads = calloc(o->threads, sizeof *b->threads);
    b->workers = calloc(o->clients, sizeof *b->workers);
    if (b->threads == NULL || b->workers == NULL) {
        return GS_ENOMEM;
    }
    for (unsigned i = 0; i < o->threads; i++) {
        struct thread *t = &b->threads[i];
        t->b = b;
        t->index = i;
        t->tfd = -1;
        hist_init(&t->hist);
        t->conns = calloc(o->connections, sizeof *t->conns);
        t->workers = calloc(o->clients, sizeof *t->workers);
        t->heap = calloc(o->clients, sizeof *t->heap);
        t->pack = malloc(2 * BIO_MAX + 1024);
        t->value = malloc(o->value_size + 1);
        if (t->conns == NULL || t->workers == NULL || t->heap == NULL || t->pack == NULL ||
            t->value == NULL) {
            return GS_ENOMEM;
        }
        uint64_t vr = 0x9E3779B97F4A7C15ull * (i + 1);
        for (size_t k = 0; k < o->value_size; k++) {
            t->value[k] = (char)('a' + rng_next(&vr) % 26);
        }
        t->value[o->value_size] = '\0';
        if (uv_loop_init(&t->loop) != 0) {
            return GS_ENOMEM;
        }
        t->loop_inited = true;
        uv_timer_init(&t->loop, &t->tick);
        t->tick.data = t;
        uv_timer_start(&t->tick, on_tick, TICK_MS, TICK_MS);
        t->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (t->tfd < 0 || uv_poll_init(&t->loop, &t->poll, t->tfd) != 0) {
            note("timerfd: %s", strerror(errno));
            return GS_EIO;
        }
        t->poll_inited = true;
        t->poll.data = t;
        uv_poll_start(&t->poll, UV_READABLE, on_tfd);
    }
    for (unsigned j = 0; j < o->connections; j++) {
        struct thread *t = &b->threads[j % o->threads];
        rv = gs_client_open(&t->loop, o->seeds, o->n_seeds, &copts, &t->conns[t->n_conns]);
        if (rv != 0) {
            note("cannot open a client on %s: %s", o->seeds[0], gs_error_name(rv));
            return rv;
        }
        t->n_conns++;
        t->conns_open++;
    }
    for (unsigned i = 0; i < o->clients; i++) {
        struct worker *w = &b->workers[i];
        unsigned j = i % o->connections;
        struct thread *t = &b->threads[j % o->threads];
        w->b = b;
        w->t = t;
        w->conn = t->conns[j / o->threads];
        w->index = i;
        w->rng = 0x2545F4914F6CDD1Dull ^ ((uint64_t)(i + 1) * 0x9E3779B97F4A7C15ull) ^
                 (uint64_t)gs_mono_ns();
        w->heap_idx = SIZE_MAX;
        w->item = SIZE_MAX;
        t->workers[t->n_workers++] = w;
    }
    return 0;
}

/* After a failed threads_init: close what it opened, running each loop
 * until its handles are closed. */
static void threads_abort(struct bench *b)
{
    for (unsigned i = 0; b->threads != NULL && i < b->o.threads; i++) {
        struct thread *t = &b->threads[i];
        if (!t->loop_inited) {
            continue;
        }
        for (size_t j = 0; j < t->n_conns; j++) {
            gs_client_close(t->conns[j], on_conn_closed, t);
        }
        uv_close((uv_handle_t *)&t->tick, NULL);
        if (t->poll_inited) {
            uv_close((uv_handle_t *)&t->poll, on_tfd_closed);
        } else if (t->tfd >= 0) {
            close(t->tfd);
            t->tfd = -1;
        }
        uv_run(&t->loop, UV_RUN_DEFAULT);
    }
}

static void threads_free(struct bench *b)
{
    if (b->threads != NULL) {
        for (unsigned i = 0; i < b->o.threads; i++) {
            struct thread *t = &b->threads[i];
            if (t->loop_inited) {
                uv_loop_close(&t->loop); /* every handle was closed in the run */
            }
            free(t->conns);
            free(t->workers);
            free(t->heap);
            free(t->pack);
            free(t->value);
        }
    }
    free(b->threads);
    free(b->workers);
    b->threads = NULL;
    b->workers = NULL;
}

/* Run one phase on fresh threads: returns when every thread has finished;
 * prints progress once a second meanwhile. */
static int run_phase(struct bench *b, enum phase phase)
{
    uint64_t last_done = 0, last_failed = 0, t0 = gs_mono_ns(), last_t = t0;
    int rv;

    b->phase = phase;
    atomic_store(&b->completed, 0);
    atomic_store(&b->failed, 0);
    rv = threads_init(b);
    if (rv != 0) {
        threads_abort(b);
        return rv;
    }
    if (phase == PHASE_RUN) {
        b->t_start = gs_mono_ns();
        b->t_measure = b->t_start + (uint64_t)(b->o.warmup * NS);
        b->t_end = b->t_measure + (uint64_t)(b->o.duration * NS);
    }
    atomic_store(&b->threads_left, b->o.threads);
    for (unsigned i = 0; i < b->o.threads; i++) {
        if (pthread_create(&b->threads[i].tid, NULL, thread_main, &b->threads[i]) != 0) {
            note("pthread_create failed");
            exit(1);
        }
    }
    while (atomic_load(&b->threads_left) > 0) {
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
        uint64_t now = gs_mono_ns();
        if (now - last_t < 1000000000ull) {
            continue;
        }
        uint64_t done = atomic_load(&b->completed), failed = atomic_load(&b->failed);
        double dt = (double)(now - last_t) / NS;
        if (phase == PHASE_SETUP) {
            note("setup: %zu/%zu users ready (%zu reused), %.0f/s, %" PRIu64 " failed attempts",
                 atomic_load(&b->items_done), b->population, atomic_load(&b->items_reused),
                 (double)(done - last_done) / dt, failed);
        } else {
            const char *what = now < b->t_measure ? "warmup" : now < b->t_end ? "run" : "drain";
            note("%5.1f s %-6s %9.0f ops/s, %" PRIu64 " errors in the last second (%" PRIu64
                 " in all)",
                 (double)(now - b->t_start) / NS, what, (double)(done - last_done) / dt,
                 failed - last_failed, failed);
        }
        last_done = done;
        last_failed = failed;
        last_t = now;
    }
    for (unsigned i = 0; i < b->o.threads; i++) {
        pthread_join(b->threads[i].tid, NULL);
    }
    return 0;
}

/* ------------------------------------------------------------ setup */

/* meta-read: the metadata of the users reaches the local replica through
 * each cell's outbox, after the signup. Wait until a sample of them is
 * readable (at most 60 s). */
static int wait_metadata(struct bench *b)
{
    struct gs_client_options copts = {.timeout_ms = 2000};
    gs_sync *s = NULL;
    size_t step = b->population > 100 ? b->population / 100 : 1;
    uint64_t deadline = gs_mono_ns() + 60ull * 1000000000ull;
    int rv = gs_sync_open(b->o.seeds, b->o.n_seeds, &copts, &s);

    for (size_t i = 0; rv == 0 && i < b->population; i += step) {
        Geoscale__MetadataGetRequest req = GEOSCALE__METADATA_GET_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        req.user_id = b->ids[i];
        rv = gs_sync_call(s, GEOSCALE__METHOD__METHOD_METADATA_GET, &req.base, &resp, NULL);
        if (resp != NULL) {
            protobuf_c_message_free_unpacked(resp, NULL);
        }
        if (rv == GS_ENOTFOUND && gs_mono_ns() < deadline && !atomic_load(&interrupted)) {
            struct timespec ts = {0, 50 * 1000000L};
            nanosleep(&ts, NULL);
            i -= step; /* again */
            rv = 0;
        } else if (rv != 0) {
            note("setup: MetadataGet of user %" PRIu64 ": %s%s", b->ids[i], gs_error_name(rv),
                 rv == GS_ENOTFOUND ? " after 60 s"
                                    : " (meta-read needs a multi-region cluster: "
                                      "`geoscale cluster up`)");
        }
    }
    gs_sync_close(s);
    return rv;
}

static int setup(struct bench *b)
{
    uint64_t t0 = gs_mono_ns();
    int rv;

    if (b->population == 0) {
        return 0;
    }
    b->ids = calloc(b->population, sizeof *b->ids);
    if (b->ids == NULL) {
        return GS_ENOMEM;
    }
    note("setup: %s %zu users through %u clients", b->o.reuse ? "creating or reusing" : "creating",
         b->population, b->o.clients);
    rv = run_phase(b, PHASE_SETUP);
    threads_free(b);
    if (rv == 0) {
        rv = atomic_load(&b->setup_error);
    }
    if (rv == 0 && atomic_load(&interrupted)) {
        rv = GS_ESHUTDOWN;
    }
    if (rv != 0) {
        note("setup failed: %s", gs_error_name(rv));
        return rv;
    }
    note("setup: %zu users ready (%zu reused) in %.1f s", b->population,
         atomic_load(&b->items_reused), (double)(gs_mono_ns() - t0) / NS);
    if (b->o.workload == WL_META_READ) {
        rv = wait_metadata(b);
    }
    return rv;
}

/* ------------------------------------------------------------ report */

struct result {
    struct hist hist;
    uint64_t errors[N_KINDS];
    uint64_t late;
    uint64_t scheduled; /* open loop: arrivals in the window */
    uint64_t sent;
    double duration;
};

static const char *kind_name(int kind)
{
    if (kind == KIND_BAD_RESPONSE) {
        return "BAD_RESPONSE";
    }
    if (kind == KIND_DROPPED) {
        return "DROPPED";
    }
    return gs_error_name(-kind);
}

static void collect(struct bench *b, struct result *r)
{
    hist_init(&r->hist);
    for (unsigned i = 0; i < b->o.threads; i++) {
        struct thread *t = &b->threads[i];
        hist_merge(&r->hist, &t->hist);
        for (int k = 0; k < N_KINDS; k++) {
            r->errors[k] += t->errors[k];
        }
        r->late += t->late;
        r->sent += t->sent_in_window;
    }
    r->duration = b->o.duration;
    if (b->o.rate > 0) {
        /* Arrivals j with t_measure <= t_start + j / rate < t_end. */
        double first = ceil((double)(b->t_measure - b->t_start) / NS * b->o.rate);
        double end = ceil((double)(b->t_end - b->t_start) / NS * b->o.rate);
        r->scheduled = end > first ? (uint64_t)(end - first) : 0;
        if (r->scheduled > r->sent && !atomic_load(&interrupted)) {
            r->errors[KIND_DROPPED] = r->scheduled - r->sent;
        }
    }
    if (atomic_load(&interrupted)) {
        double d = (double)(gs_mono_ns() - b->t_measure) / NS;
        r->duration = d < 0 ? 0 : d < b->o.duration ? d : b->o.duration;
    }
}

static double us(double ns)
{
    return round(ns / 100.0) / 10.0; /* one decimal */
}

/* A JSON number as bench/etcd writes it: one decimal when integral. */
static const char *json_num(double v, char *buf, size_t cap)
{
    snprintf(buf, cap, v == trunc(v) && fabs(v) < 1e15 ? "%.1f" : "%.6g", v);
    return buf;
}

static void print_json(const struct bench *b, const struct result *r)
{
    const struct options *o = &b->o;
    const struct hist *h = &r->hist;
    double tput = r->duration > 0 ? (double)h->n / r->duration : 0;
    bool first = true;
    char dur[32];

    printf("{\"system\":\"geoscale\",\"workload\":\"%s\",\"mode\":\"%s\",\"clients\":%u,"
           "\"connections\":%u,\"rate\":%g,\"keys\":%zu,\"value_size\":%zu,\"duration_s\":%s,"
           "\"ops\":%" PRIu64 ",\"throughput\":%.1f,",
           workload_names[o->workload], o->rate > 0 ? "open" : "closed", o->clients, o->connections,
           o->rate, b->population, o->value_size, json_num(r->duration, dur, sizeof dur), h->n,
           round(tput * 10) / 10);
    printf("\"latency_us\":{\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f,"
           "\"mean\":%.1f},\"errors\":{",
           us(hist_quantile(h, 0.50)), us(hist_quantile(h, 0.90)), us(hist_quantile(h, 0.99)),
           us(hist_quantile(h, 0.999)), us((double)(h->n > 0 ? h->max : 0)), us(hist_mean(h)));
    /* Sorted by name, as bench/etcd prints them. */
    for (;;) {
        int best = -1;
        static bool printed[N_KINDS];
        for (int k = 0; k < N_KINDS; k++) {
            if (r->errors[k] > 0 && !printed[k] &&
                (best < 0 || strcmp(kind_name(k), kind_name(best)) < 0)) {
                best = k;
            }
        }
        if (best < 0) {
            break;
        }
        printed[best] = true;
        printf("%s\"%s\":%" PRIu64, first ? "" : ",", kind_name(best), r->errors[best]);
        first = false;
    }
    printf("}}\n");
}

static void print_table(const struct bench *b, const struct result *r)
{
    const struct options *o = &b->o;
    const struct hist *h = &r->hist;
    double tput = r->duration > 0 ? (double)h->n / r->duration : 0;
    uint64_t n_err = 0;

    printf("geoscale-bench  %s, %s loop", workload_names[o->workload],
           o->rate > 0 ? "open" : "closed");
    if (o->rate > 0) {
        printf(" at %g ops/s", o->rate);
    }
    printf(", %u clients over %u connections (%u threads)\n", o->clients, o->connections,
           o->threads);
    if (o->workload != WL_SIGNUP) {
        printf("%-12s %zu %s, %s, value %zu bytes\n", "data", b->population,
               is_kv(o->workload) ? "keys (one user each)" : "users",
               is_kv(o->workload) || o->zipf <= 0 ? "uniform" : "zipf", o->value_size);
        if (!is_kv(o->workload) && o->zipf > 0) {
            printf("%-12s s = %g\n", "zipf", o->zipf);
        }
    }
    printf("%-12s %.1f s measured after %.1f s of warm-up%s\n", "duration", r->duration, o->warmup,
           atomic_load(&interrupted) ? " (interrupted)" : "");
    printf("%-12s %" PRIu64 "\n", "ops", h->n);
    printf("%-12s %.1f ops/s\n", "throughput", tput);
    printf("%-12s %10s %10s %10s %10s %10s %10s\n", "latency us", "p50", "p90", "p99", "p99.9",
           "max", "mean");
    printf("%-12s %10.1f %10.1f %10.1f %10.1f %10.1f %10.1f\n", "", us(hist_quantile(h, 0.50)),
           us(hist_quantile(h, 0.90)), us(hist_quantile(h, 0.99)), us(hist_quantile(h, 0.999)),
           us((double)(h->n > 0 ? h->max : 0)), us(hist_mean(h)));
    for (int k = 0; k < N_KINDS; k++) {
        n_err += r->errors[k];
    }
    printf("%-12s %" PRIu64 "\n", "errors", n_err);
    for (int k = 0; k < N_KINDS; k++) {
        if (r->errors[k] > 0) {
            printf("%-12s   %-14s %" PRIu64 "\n", "", kind_name(k), r->errors[k]);
        }
    }
    if (o->rate > 0) {
        printf("%-12s %" PRIu64 " scheduled in the window, %" PRIu64 " sent, %" PRIu64
               " sent more than 1 ms late, %" PRIu64 " dropped (never sent)\n",
               "arrivals", r->scheduled, r->sent, r->late, r->errors[KIND_DROPPED]);
    }
}

/* ------------------------------------------------------------ options */

static void print_help(void)
{
    printf(
        "usage: geoscale-bench --seeds HOST:PORT[,HOST:PORT...] [options]\n"
        "\n"
        "Load generator for GeoScale, over the asynchronous C client library.\n"
        "\n"
        "Target:\n"
        "  --seeds LIST        client addresses of nodes, comma-separated (required): the 3\n"
        "                      nodes of a lone cell, or nodes of ONE region of a cluster\n"
        "                      (users are created in the region of the node reached)\n"
        "\n"
        "Workload (--workload NAME, default kv-put):\n"
        "  signup              CreateUser with a fresh username per request\n"
        "  profile-read        GetUser (linearizable) of a Zipf-chosen user, as a random viewer\n"
        "  meta-read           MetadataGet of a Zipf-chosen user from the local metadata\n"
        "                      replica (multi-region clusters only)\n"
        "  profile-update      UpdateUser of a Zipf-chosen user's bio (--value-size bytes)\n"
        "  follow              Follow: a random user follows a Zipf-chosen one\n"
        "  mixed               80%% profile-read, 15%% follow, 5%% profile-update\n"
        "  kv-put              plain key/value put: UpdateUser of the bio of user-key i\n"
        "  kv-get              plain key/value get: GetUser (linearizable) of user-key i\n"
        "                      (one user per key, value in its bio; see bench/README.md)\n"
        "\n"
        "Data:\n"
        "  --users N           users for the user workloads, created first (default 1000)\n"
        "  --keys N            keys for kv-put and kv-get, created with their value first\n"
        "                      (default 10000); keys are chosen uniformly\n"
        "  --value-size B      bytes of the bio written (kv value, profile-update, and the\n"
        "                      users created); 0..%d (the cell's bio limit), default 128\n"
        "  --zipf S            Zipf exponent of the user choice (default 0.99; 0 = uniform)\n"
        "  --reuse             usernames PREFIX_0 .. PREFIX_N-1: users that exist already\n"
        "                      (an earlier run on the same cluster) are looked up and reused\n"
        "                      instead of created (kv: their value is rewritten)\n"
        "  --prefix NAME       username prefix, [a-z0-9_], at most %d bytes (default\n"
        "                      \"bench\", or \"kv\" for kv-*); without --reuse a random tag\n"
        "                      per run is added, so every run creates new users\n"
        "\n"
        "Load:\n"
        "  --clients N         concurrent requests: each client keeps one in flight\n"
        "                      (default 64)\n"
        "  --connections M     client connections the clients share, pipelining their\n"
        "                      requests (default 8; at most --clients)\n"
        "  --threads T         event-loop threads the connections are spread over\n"
        "                      (default min(connections, 2))\n"
        "  --rate R            open loop: R requests/s in total on a fixed schedule, latency\n"
        "                      counted from each request's intended start (default 0: closed\n"
        "                      loop, each client sends its next request when the last ends)\n"
        "  --duration S        measured seconds (default 10)\n"
        "  --warmup S          unmeasured seconds before (default 2)\n"
        "  --timeout MS        per request, retries included (default 5000)\n"
        "\n"
        "Output:\n"
        "  --json              one JSON object on stdout instead of the table:\n"
        "                      "
        "{\"system\":\"geoscale\",\"workload\":...,\"mode\":\"closed\"|\"open\",\n"
        "                      \"clients\",\"connections\",\"rate\",\"keys\",\"value_size\",\n"
        "                      "
        "\"duration_s\",\"ops\",\"throughput\",\"latency_us\":{\"p50\",\"p90\",\n"
        "                      \"p99\",\"p999\",\"max\",\"mean\"},\"errors\":{NAME:count}}\n"
        "                      (\"keys\": the users or keys chosen from; 0 for signup)\n"
        "  --help              this text\n"
        "\n"
        "Progress goes to stderr once a second. Latencies are of successful requests;\n"
        "failures are counted by error name (GS_E* names such as TIMEOUT, and\n"
        "BAD_RESPONSE for an answer that does not check out, DROPPED for open-loop\n"
        "arrivals that were never sent). Exit status: 0 after a run (errors included),\n"
        "1 if the setup failed, 2 on bad usage.\n",
        BIO_MAX, PREFIX_MAX);
}

static double parse_number(const char *opt, const char *v, double lo, double hi)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno != 0 || end == v || *end != '\0' || !(d >= lo && d <= hi)) {
        usage_error("%s: expected a number from %g to %g, got '%s'", opt, lo, hi, v);
    }
    return d;
}

static unsigned long parse_count(const char *opt, const char *v, unsigned long lo, unsigned long hi)
{
    uint64_t n = 0;
    if (gs_parse_u64(v, lo, hi, &n) != 0) {
        usage_error("%s: expected an integer from %lu to %lu, got '%s'", opt, lo, hi, v);
    }
    return (unsigned long)n;
}

static void parse_options(int argc, char **argv, struct options *o)
{
    bool threads_set = false;
    const char *seeds = NULL;

    memset(o, 0, sizeof *o);
    o->workload = WL_KV_PUT;
    o->clients = 64;
    o->connections = 8;
    o->duration = 10;
    o->warmup = 2;
    o->users = 1000;
    o->keys = 10000;
    o->value_size = 128;
    o->zipf = 0.99;
    o->timeout_ms = 5000;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            print_help();
            exit(0);
        }
        if (strcmp(a, "--json") == 0) {
            o->json = true;
            continue;
        }
        if (strcmp(a, "--reuse") == 0) {
            o->reuse = true;
            continue;
        }
        if (i + 1 >= argc) {
            usage_error("%s: unknown option or missing value", a);
        }
        const char *v = argv[++i];
        if (strcmp(a, "--seeds") == 0) {
            seeds = v;
        } else if (strcmp(a, "--workload") == 0) {
            size_t k;
            for (k = 0; k < N_WORKLOADS && strcmp(v, workload_names[k]) != 0; k++) {
            }
            if (k == N_WORKLOADS) {
                usage_error("--workload: unknown workload '%s'", v);
            }
            o->workload = (enum workload)k;
        } else if (strcmp(a, "--clients") == 0) {
            o->clients = (unsigned)parse_count(a, v, 1, MAX_CLIENTS);
        } else if (strcmp(a, "--connections") == 0) {
            o->connections = (unsigned)parse_count(a, v, 1, MAX_CLIENTS);
        } else if (strcmp(a, "--threads") == 0) {
            o->threads = (unsigned)parse_count(a, v, 1, MAX_THREADS);
            threads_set = true;
        } else if (strcmp(a, "--rate") == 0) {
            o->rate = parse_number(a, v, 0, 1e9);
        } else if (strcmp(a, "--duration") == 0) {
            o->duration = parse_number(a, v, 0.001, 86400);
        } else if (strcmp(a, "--warmup") == 0) {
            o->warmup = parse_number(a, v, 0, 86400);
        } else if (strcmp(a, "--users") == 0) {
            o->users = parse_count(a, v, 2, MAX_POPULATION);
        } else if (strcmp(a, "--keys") == 0) {
            o->keys = parse_count(a, v, 1, MAX_POPULATION);
        } else if (strcmp(a, "--value-size") == 0) {
            o->value_size = parse_count(a, v, 0, BIO_MAX);
        } else if (strcmp(a, "--zipf") == 0) {
            o->zipf = parse_number(a, v, 0, 10);
        } else if (strcmp(a, "--prefix") == 0) {
            size_t n = strlen(v);
            if (n == 0 || n > PREFIX_MAX ||
                strspn(v, "abcdefghijklmnopqrstuvwxyz0123456789_") != n) {
                usage_error("--prefix: 1-%d bytes of [a-z0-9_], got '%s'", PREFIX_MAX, v);
            }
            o->prefix = v;
        } else if (strcmp(a, "--timeout") == 0) {
            o->timeout_ms = (unsigned)parse_count(a, v, 1, 3600000);
        } else {
            usage_error("%s: unknown option", a);
        }
    }
    if (seeds == NULL) {
        usage_error("--seeds is required");
    }
    o->seeds_buf = strdup(seeds);
    if (o->seeds_buf == NULL) {
        exit(1);
    }
    for (char *save = NULL, *s = strtok_r(o->seeds_buf, ",", &save); s != NULL;
         s = strtok_r(NULL, ",", &save)) {
        if (o->n_seeds == MAX_SEEDS) {
            usage_error("--seeds: more than %d addresses", MAX_SEEDS);
        }
        o->seeds[o->n_seeds++] = s;
    }
    if (o->n_seeds == 0) {
        usage_error("--seeds: no address");
    }
    if (o->connections > o->clients) {
        note("--connections %u > --clients %u: using %u connections", o->connections, o->clients,
             o->clients);
        o->connections = o->clients;
    }
    if (!threads_set) {
        o->threads = o->connections < 2 ? o->connections : 2;
    }
    if (o->threads > o->connections) {
        o->threads = o->connections;
    }
    if (o->prefix == NULL) {
        o->prefix = is_kv(o->workload) ? "kv" : "bench";
    }
}

static void on_sigint(int sig)
{
    (void)sig;
    if (atomic_load(&interrupted)) {
        _exit(130); /* a second ^C */
    }
    atomic_store(&interrupted, true);
}

int main(int argc, char **argv)
{
    struct bench *b;
    struct result *r;
    int status = 1;
    int rv;

    signal(SIGPIPE, SIG_IGN);
    b = calloc(1, sizeof *b);
    r = calloc(1, sizeof *r);
    if (b == NULL || r == NULL) {
        note("out of memory");
        goto out;
    }
    parse_options(argc, argv, &b->o);
    signal(SIGINT, on_sigint);
    signal(SIGTERM, on_sigint);

    uint64_t seed = gs_mono_ns() ^ ((uint64_t)getpid() << 32);
    snprintf(b->tag, sizeof b->tag, "%08" PRIx64, (uint64_t)(rng_next(&seed) & 0xffffffffu));
    b->population = b->o.workload == WL_SIGNUP ? 0 : is_kv(b->o.workload) ? b->o.keys : b->o.users;
    if (b->o.workload == WL_FOLLOW || b->o.workload == WL_MIXED) {
        if (b->population < 2) {
            usage_error("--users: follow needs at least 2 users");
        }
    }
    rv = setup(b);
    if (rv != 0) {
        goto out; /* said why */
    }
    rv = b->population > 0 ? zipf_init(&b->zipf, b->population, b->o.zipf) : 0;
    if (rv == 0) {
        rv = run_phase(b, PHASE_RUN);
    }
    if (rv != 0) {
        note("run failed: %s", gs_error_name(rv));
        goto out;
    }
    collect(b, r);
    if (b->o.json) {
        print_json(b, r);
    } else {
        print_table(b, r);
    }
    status = 0;
out:
    if (b != NULL) {
        threads_free(b);
        free(b->ids);
        zipf_free(&b->zipf);
        free(b->o.seeds_buf);
    }
    free(b);
    free(r);
    return status;
}
