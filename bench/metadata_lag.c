/*
 * metadata-lag: metadata propagation lag under load.
 *
 *   metadata-lag --cluster DIR/cluster.json [--users N] [--updates M]
 *                [--load-clients C] [--json]
 *
 * 1. Creates N users (default 50), user i homed in region i % n_regions,
 *    through the nodes of that region.
 * 2. Starts C background threads (default 16), each with blocking clients
 *    (one per region, seeded with that region's nodes), that loop over
 *    UpdateUser (display_name) and Follow/Unfollow on random users, through
 *    the actor's home region, until the measurement ends.
 * 3. Runs M measured updates (default 500) one after the other: UpdateUser
 *    changing `plan` through the user's home region; t0 = the moment the
 *    acknowledgement is received; then MetadataGet is polled, every 2 ms,
 *    on one pinned client per region (the node hosting the region's
 *    metadata replica), until the replica answers profile_version >= the
 *    acknowledged version. Lag is recorded per region and as the max over
 *    regions ("every region"). An update not visible everywhere after 10 s
 *    counts as a timeout.
 *
 * Output: p50/p99/max of the every-region lag, p50/p99 per region, counts,
 * and the background throughput; a table, or JSON with --json. Progress on
 * stderr. Resolution: one polling round (the pinned calls of the regions not
 * yet seen, one after the other, then 2 ms).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/mono.h"
#include "engine/numparse.h"
#include "geoscale.pb-c.h"
#include "geoscale/client.h"
#include "geoscale/errors.h"
#include "metadata.pb-c.h"
#include "net/cluster_config.h"

#define POLL_INTERVAL_MS 2
#define GIVE_UP_MS 10000.0
#define CALL_TIMEOUT_MS 10000
#define POLL_CALL_TIMEOUT_MS 1000

struct user {
    uint64_t id;
    size_t region;
};

struct bench {
    struct cluster_config cfg;
    size_t n_users;
    size_t n_updates;
    size_t n_load;
    int json;
    struct user *users;
    /* Per region: client addresses of its nodes, and the replica host. */
    const char *seeds[CLUSTER_MAX_REGIONS][CLUSTER_MAX_NODES];
    size_t n_seeds[CLUSTER_MAX_REGIONS];
    const char *replica[CLUSTER_MAX_REGIONS];
    atomic_bool stop;
    atomic_uint_fast64_t load_ok;
    atomic_uint_fast64_t load_err;
};

static void sleep_ms(double ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000),
                          .tv_nsec = (long)((ms - (double)(time_t)(ms / 1000) * 1000) * 1e6)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void progress(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("metadata-lag: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* A client routed through the nodes of one region (retries, follows the
 * leader and WRONG_CELL hints). */
static int region_client(struct bench *b, size_t r, gs_sync **out)
{
    struct gs_client_options o = {.timeout_ms = CALL_TIMEOUT_MS};
    return gs_sync_open(b->seeds[r], b->n_seeds[r], &o, out);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted v[0..n). */
static double pct(const double *v, size_t n, double p)
{
    if (n == 0) {
        return -1;
    }
    size_t k = (size_t)(p / 100.0 * (double)n + 0.999999);
    if (k < 1) {
        k = 1;
    }
    if (k > n) {
        k = n;
    }
    return v[k - 1];
}

/* ------------------------------------------------------------ setup */

static int create_users(struct bench *b)
{
    gs_sync *s[CLUSTER_MAX_REGIONS] = {0};
    unsigned tag = (unsigned)time(NULL) ^ ((unsigned)getpid() << 16);
    int rv = 0;

    for (size_t r = 0; r < b->cfg.n_regions && rv == 0; r++) {
        rv = region_client(b, r, &s[r]);
    }
    for (size_t i = 0; i < b->n_users && rv == 0; i++) {
        Geoscale__CreateUserRequest req = GEOSCALE__CREATE_USER_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        char username[64];
        size_t r = i % b->cfg.n_regions;

        snprintf(username, sizeof username, "lag_%x_%zu", tag, i);
        req.username = username;
        req.display_name = "Lag Bench";
        req.plan = "free";
        req.region = b->cfg.regions[r];
        rv = gs_sync_call(s[r], GEOSCALE__METHOD__METHOD_CREATE_USER, &req.base, &resp, NULL);
        if (rv == 0) {
            Geoscale__CreateUserResponse *cu = (Geoscale__CreateUserResponse *)resp;
            if (cu == NULL || cu->user_id == 0) {
                rv = GS_EPROTO;
            } else {
                b->users[i].id = cu->user_id;
                b->users[i].region = r;
            }
        }
        if (resp != NULL) {
            protobuf_c_message_free_unpacked(resp, NULL);
        }
        if (rv != 0) {
            progress("CreateUser %s in %s failed: %s", username, b->cfg.regions[r],
                     gs_error_name(rv));
        }
    }
    for (size_t r = 0; r < b->cfg.n_regions; r++) {
        gs_sync_close(s[r]);
    }
    return rv;
}

/* ------------------------------------------------------------ load */

struct loader {
    struct bench *b;
    unsigned seed;
    pthread_t thread;
};

static void *load_main(void *arg)
{
    struct loader *l = arg;
    struct bench *b = l->b;
    gs_sync *s[CLUSTER_MAX_REGIONS] = {0};
    uint64_t n = 0;

    for (size_t r = 0; r < b->cfg.n_regions; r++) {
        if (region_client(b, r, &s[r]) != 0) {
            atomic_fetch_add(&b->load_err, 1);
            goto out;
        }
    }
    while (!atomic_load(&b->stop)) {
        const struct user *a = &b->users[(size_t)rand_r(&l->seed) % b->n_users];
        const struct user *t = &b->users[(size_t)rand_r(&l->seed) % b->n_users];
        ProtobufCMessage *resp = NULL;
        int op = rand_r(&l->seed) % 3;
        int rv;
        n++;
        if (op == 0) {
            Geoscale__UpdateUserRequest req = GEOSCALE__UPDATE_USER_REQUEST__INIT;
            Geoscale__ProfileField f = GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_DISPLAY_NAME;
            char name[48];
            snprintf(name, sizeof name, "Load %u %" PRIu64, l->seed % 1000, n);
            req.user_id = a->id;
            req.n_fields = 1;
            req.fields = &f;
            req.display_name = name;
            rv = gs_sync_call(s[a->region], GEOSCALE__METHOD__METHOD_UPDATE_USER, &req.base, &resp,
                              NULL);
        } else {
            Geoscale__EdgeRequest req = GEOSCALE__EDGE_REQUEST__INIT;
            if (a == t) {
                t = &b->users[(size_t)(t - b->users + 1) % b->n_users];
            }
            req.actor_id = a->id;
            req.target_id = t->id;
            rv = gs_sync_call(s[a->region],
                              op == 1 ? GEOSCALE__METHOD__METHOD_FOLLOW
                                      : GEOSCALE__METHOD__METHOD_UNFOLLOW,
                              &req.base, &resp, NULL);
        }
        if (resp != NULL) {
            protobuf_c_message_free_unpacked(resp, NULL);
        }
        atomic_fetch_add(rv == 0 ? &b->load_ok : &b->load_err, 1);
    }
out:
    for (size_t r = 0; r < b->cfg.n_regions; r++) {
        gs_sync_close(s[r]);
    }
    return NULL;
}

/* ------------------------------------------------------------ measure */

struct poller {
    const char *address;
    gs_sync *s;
};

/* MetadataGet on one region's replica: the profile version, or -1. */
static int64_t poll_version(struct poller *p, uint64_t user_id)
{
    Geoscale__MetadataGetRequest req = GEOSCALE__METADATA_GET_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    struct gs_client_options o = {.timeout_ms = POLL_CALL_TIMEOUT_MS, .pin = 1, .no_retry = 1};
    int64_t v = -1;
    int rv;

    if (p->s == NULL && gs_sync_open(&p->address, 1, &o, &p->s) != 0) {
        return -1;
    }
    req.user_id = user_id;
    rv = gs_sync_call(p->s, GEOSCALE__METHOD__METHOD_METADATA_GET, &req.base, &resp, NULL);
    if (rv == 0) {
        Geoscale__MetadataGetResponse *m = (Geoscale__MetadataGetResponse *)resp;
        if (m != NULL && m->meta != NULL) {
            v = (int64_t)m->meta->profile_version;
        }
    } else if (rv != GS_ENOTFOUND) {
        gs_sync_close(p->s); /* reconnect next time */
        p->s = NULL;
    }
    if (resp != NULL) {
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return v;
}

struct results {
    double *every; /* n_every */
    size_t n_every;
    double *region[CLUSTER_MAX_REGIONS]; /* n_region[r] */
    size_t n_region[CLUSTER_MAX_REGIONS];
    size_t timeouts;
    size_t update_errors;
    double elapsed_s;
    uint64_t load_ok;
    uint64_t load_err;
};

static int measure(struct bench *b, struct results *res)
{
    struct poller pollers[CLUSTER_MAX_REGIONS] = {0};
    gs_sync *s[CLUSTER_MAX_REGIONS] = {0};
    size_t nr = b->cfg.n_regions;
    int rv = 0;

    for (size_t r = 0; r < nr && rv == 0; r++) {
        pollers[r].address = b->replica[r];
        rv = region_client(b, r, &s[r]);
    }
    for (size_t i = 0; i < b->n_updates && rv == 0; i++) {
        const struct user *u = &b->users[i % b->n_users];
        Geoscale__UpdateUserRequest req = GEOSCALE__UPDATE_USER_REQUEST__INIT;
        Geoscale__ProfileField f = GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_PLAN;
        ProtobufCMessage *resp = NULL;
        double seen[CLUSTER_MAX_REGIONS];
        size_t left = nr;
        uint64_t version;
        double t0;
        char plan[32];
        int err;

        snprintf(plan, sizeof plan, "plan-%zu", i);
        req.user_id = u->id;
        req.n_fields = 1;
        req.fields = &f;
        req.plan = plan;
        err = gs_sync_call(s[u->region], GEOSCALE__METHOD__METHOD_UPDATE_USER, &req.base, &resp,
                           NULL);
        t0 = gs_mono_ms();
        if (err != 0 || resp == NULL || ((Geoscale__UpdateUserResponse *)resp)->profile == NULL) {
            progress("update %zu (user %" PRIu64 "): %s", i, u->id,
                     gs_error_name(err != 0 ? err : GS_EPROTO));
            res->update_errors++;
            if (resp != NULL) {
                protobuf_c_message_free_unpacked(resp, NULL);
            }
            continue;
        }
        version = ((Geoscale__UpdateUserResponse *)resp)->profile->version;
        protobuf_c_message_free_unpacked(resp, NULL);

        for (size_t r = 0; r < nr; r++) {
            seen[r] = -1;
        }
        for (;;) {
            for (size_t r = 0; r < nr; r++) {
                if (seen[r] < 0) {
                    int64_t v = poll_version(&pollers[r], u->id);
                    if (v >= 0 && (uint64_t)v >= version) {
                        seen[r] = gs_mono_ms() - t0;
                        left--;
                    }
                }
            }
            if (left == 0 || gs_mono_ms() - t0 >= GIVE_UP_MS) {
                break;
            }
            sleep_ms(POLL_INTERVAL_MS);
        }
        double max = 0;
        for (size_t r = 0; r < nr; r++) {
            if (seen[r] >= 0) {
                res->region[r][res->n_region[r]++] = seen[r];
                if (seen[r] > max) {
                    max = seen[r];
                }
            }
        }
        if (left == 0) {
            res->every[res->n_every++] = max;
        } else {
            res->timeouts++;
            progress("update %zu (user %" PRIu64 " version %" PRIu64
                     "): not visible in %zu region(s) after %.0f ms",
                     i, u->id, version, left, GIVE_UP_MS);
        }
        if ((i + 1) % 50 == 0) {
            progress("%zu/%zu updates measured (last: %.1f ms to every region), load %" PRIu64
                     " ops ok, %" PRIu64 " failed",
                     i + 1, b->n_updates, left == 0 ? max : -1.0,
                     (uint64_t)atomic_load(&b->load_ok), (uint64_t)atomic_load(&b->load_err));
        }
    }
    for (size_t r = 0; r < nr; r++) {
        gs_sync_close(s[r]);
        gs_sync_close(pollers[r].s);
    }
    return rv;
}

/* ------------------------------------------------------------ report */

static void report(const struct bench *b, struct results *res)
{
    size_t nr = b->cfg.n_regions;
    double tput = res->elapsed_s > 0 ? (double)res->load_ok / res->elapsed_s : 0;

    qsort(res->every, res->n_every, sizeof(double), cmp_double);
    for (size_t r = 0; r < nr; r++) {
        qsort(res->region[r], res->n_region[r], sizeof(double), cmp_double);
    }
    if (b->json) {
        printf("{\"users\": %zu, \"updates\": %zu, \"load_clients\": %zu,\n", b->n_users,
               b->n_updates, b->n_load);
        printf(" \"measured\": %zu, \"timeouts\": %zu, \"update_errors\": %zu,\n", res->n_every,
               res->timeouts, res->update_errors);
        printf(" \"every_region_ms\": {\"p50\": %.2f, \"p99\": %.2f, \"max\": %.2f},\n",
               pct(res->every, res->n_every, 50), pct(res->every, res->n_every, 99),
               res->n_every > 0 ? res->every[res->n_every - 1] : -1.0);
        printf(" \"regions\": [");
        for (size_t r = 0; r < nr; r++) {
            printf("%s\n  {\"region\": \"%s\", \"replica\": \"%s\", \"n\": %zu, \"p50_ms\": %.2f, "
                   "\"p99_ms\": %.2f, \"max_ms\": %.2f}",
                   r > 0 ? "," : "", b->cfg.regions[r], b->replica[r], res->n_region[r],
                   pct(res->region[r], res->n_region[r], 50),
                   pct(res->region[r], res->n_region[r], 99),
                   res->n_region[r] > 0 ? res->region[r][res->n_region[r] - 1] : -1.0);
        }
        printf("],\n \"load\": {\"ops_ok\": %" PRIu64 ", \"ops_failed\": %" PRIu64
               ", \"seconds\": %.2f, \"ops_per_s\": %.1f}}\n",
               res->load_ok, res->load_err, res->elapsed_s, tput);
        return;
    }
    printf("metadata propagation lag (UpdateUser acknowledged -> MetadataGet on the region's "
           "replica answers profile_version >= acked)\n");
    printf("users %zu, updates %zu, load clients %zu; measured %zu, timeouts (>%.0f s) %zu, "
           "update errors %zu\n\n",
           b->n_users, b->n_updates, b->n_load, res->n_every, GIVE_UP_MS / 1000, res->timeouts,
           res->update_errors);
    printf("%-14s %-17s %6s %9s %9s %9s\n", "to", "replica", "n", "p50 ms", "p99 ms", "max ms");
    printf("%-14s %-17s %6zu %9.1f %9.1f %9.1f\n", "every region", "-", res->n_every,
           pct(res->every, res->n_every, 50), pct(res->every, res->n_every, 99),
           res->n_every > 0 ? res->every[res->n_every - 1] : -1.0);
    for (size_t r = 0; r < nr; r++) {
        printf("%-14s %-17s %6zu %9.1f %9.1f %9.1f\n", b->cfg.regions[r], b->replica[r],
               res->n_region[r], pct(res->region[r], res->n_region[r], 50),
               pct(res->region[r], res->n_region[r], 99),
               res->n_region[r] > 0 ? res->region[r][res->n_region[r] - 1] : -1.0);
    }
    printf("\nbackground load: %" PRIu64 " ops ok, %" PRIu64 " failed in %.1f s = %.1f ops/s "
           "(UpdateUser display_name / Follow / Unfollow, 1:1:1)\n",
           res->load_ok, res->load_err, res->elapsed_s, tput);
}

/* ------------------------------------------------------------ main */

static int parse_size(const char *flag, const char *v, size_t min, size_t *out)
{
    uint64_t x = 0;
    if (gs_parse_u64(v, min, 1000000, &x) != 0) {
        fprintf(stderr, "metadata-lag: %s: want an integer %zu..1000000\n", flag, min);
        return -1;
    }
    *out = (size_t)x;
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: metadata-lag --cluster DIR/cluster.json [--users N] [--updates M] "
                    "[--load-clients C] [--json]\n");
}

int main(int argc, char **argv)
{
    static struct bench b;
    struct results res = {0};
    struct loader *loaders = NULL;
    const char *file = NULL;
    char err[512];
    int rv;

    signal(SIGPIPE, SIG_IGN);
    b.n_users = 50;
    b.n_updates = 500;
    b.n_load = 16;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--cluster") == 0 && v != NULL) {
            file = v;
            i++;
        } else if (strcmp(a, "--users") == 0) {
            if (parse_size(a, v, 1, &b.n_users) != 0) {
                return 2;
            }
            i++;
        } else if (strcmp(a, "--updates") == 0) {
            if (parse_size(a, v, 1, &b.n_updates) != 0) {
                return 2;
            }
            i++;
        } else if (strcmp(a, "--load-clients") == 0) {
            if (parse_size(a, v, 0, &b.n_load) != 0) {
                return 2;
            }
            i++;
        } else if (strcmp(a, "--json") == 0) {
            b.json = 1;
        } else {
            usage();
            return 2;
        }
    }
    if (file == NULL) {
        usage();
        return 2;
    }
    if (cluster_config_load(file, &b.cfg, err, sizeof err) != 0) {
        fprintf(stderr, "metadata-lag: %s\n", err);
        return 1;
    }
    /* Seeds per region; the replica host: a metadata voter or standby. */
    for (size_t i = 0; i < b.cfg.n_nodes; i++) {
        const struct cluster_node *n = &b.cfg.nodes[i];
        b.seeds[n->region][b.n_seeds[n->region]++] = n->client_address;
        if (n->metadata != CLUSTER_ROLE_NONE && b.replica[n->region] == NULL) {
            b.replica[n->region] = n->client_address;
        }
    }
    for (size_t r = 0; r < b.cfg.n_regions; r++) {
        if (b.n_seeds[r] == 0) {
            fprintf(stderr, "metadata-lag: region %s has no nodes\n", b.cfg.regions[r]);
            return 1;
        }
        if (b.replica[r] == NULL) { /* forwarded to the region's replica */
            b.replica[r] = b.seeds[r][0];
        }
    }
    b.users = calloc(b.n_users, sizeof *b.users);
    res.every = calloc(b.n_updates, sizeof(double));
    for (size_t r = 0; r < b.cfg.n_regions; r++) {
        res.region[r] = calloc(b.n_updates, sizeof(double));
        if (res.region[r] == NULL) {
            return 1;
        }
    }
    if (b.users == NULL || res.every == NULL) {
        return 1;
    }

    double t = gs_mono_ms();
    progress("creating %zu users over %zu regions", b.n_users, b.cfg.n_regions);
    if ((rv = create_users(&b)) != 0) {
        return 1;
    }
    progress("created %zu users in %.0f ms; starting %zu load clients", b.n_users, gs_mono_ms() - t,
             b.n_load);

    loaders = calloc(b.n_load + 1, sizeof *loaders);
    if (loaders == NULL) {
        return 1;
    }
    for (size_t i = 0; i < b.n_load; i++) {
        loaders[i].b = &b;
        loaders[i].seed = (unsigned)(i * 7919u + (unsigned)getpid());
        if (pthread_create(&loaders[i].thread, NULL, load_main, &loaders[i]) != 0) {
            fprintf(stderr, "metadata-lag: cannot start load thread %zu\n", i);
            return 1;
        }
    }
    sleep_ms(500); /* let the load get going */
    uint64_t ok0 = atomic_load(&b.load_ok);
    uint64_t err0 = atomic_load(&b.load_err);
    t = gs_mono_ms();
    rv = measure(&b, &res);
    res.elapsed_s = (gs_mono_ms() - t) / 1000;
    res.load_ok = atomic_load(&b.load_ok) - ok0;
    res.load_err = atomic_load(&b.load_err) - err0;
    atomic_store(&b.stop, true);
    for (size_t i = 0; i < b.n_load; i++) {
        pthread_join(loaders[i].thread, NULL);
    }
    if (rv != 0) {
        fprintf(stderr, "metadata-lag: %s\n", gs_error_name(rv));
        return 1;
    }
    report(&b, &res);
    free(loaders);
    free(b.users);
    free(res.every);
    for (size_t r = 0; r < b.cfg.n_regions; r++) {
        free(res.region[r]);
    }
    cluster_config_free(&b.cfg);
    return res.n_every > 0 ? 0 : 1;
}
