/*
 * metadata_everywhere: a user's metadata change is readable from the local
 * metadata replica of every region.
 *
 * 1. A cluster of four regions (us-east, us-west, eu, asia; one cell each):
 *    metadata voters in the first three, a standby in asia. Every node is
 *    asked: the first node of a region hosts its replica, the two others
 *    forward to it (docs/CLUSTER.md, "Metadata outbox").
 * 2. One user per region, created through a node of its region. Its
 *    metadata (home region, cell, status ACTIVE, plan "free") must appear on
 *    every node of every region.
 * 3. Round 1: through its home region, each user's plan and status change
 *    (UpdateUser PLAN + STATUS: a fresh plan name, SUSPENDED). Every node of
 *    every region must answer MetadataGet with the new plan, status and
 *    profile version. The propagation time (UpdateUser acknowledged -> row
 *    visible on that node) is reported per region.
 * 4. Round 2: only the status changes back (ACTIVE); the plan of round 1
 *    must stay. Same check, same report.
 *
 * Waits are bounded (PROPAGATION_MS per round); nodes are polled with one
 * pinned connection each, so the time resolution is one sweep (~10 ms).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <inttypes.h>
#include <signal.h>

#include "cluster_harness.h"

#define N_REGIONS 4
#define N_USERS N_REGIONS /* one per region */
#define APPEAR_MS 30000
#define PROPAGATION_MS 20000

static const char *const regions[N_REGIONS] = {"us-east", "us-west", "eu", "asia"};

struct want {
    uint64_t user_id;
    const char *region;
    uint32_t cell_id;
    int status; /* Geoscale__AccountStatus */
    char plan[32];
    uint64_t min_version;
};

static int setup(void **state)
{
    return mr_fixture_new(state, "metadata_everywhere", regions, N_REGIONS, 1, 1);
}

/* One pinned connection per node, kept across polls. */
struct pollers {
    struct mr_cluster *c;
    gs_sync *s[MR_MAX_NODES];
};

static int poll_get(struct pollers *p, int i, uint64_t user_id, Geoscale__MetadataGetResponse **out)
{
    Geoscale__MetadataGetRequest req = GEOSCALE__METADATA_GET_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    int rv;

    *out = NULL;
    if (p->s[i] == NULL && (rv = mr_node_sync(p->c, i, 1000, &p->s[i])) != 0) {
        return rv;
    }
    req.user_id = user_id;
    rv = gs_sync_call(p->s[i], GEOSCALE__METHOD__METHOD_METADATA_GET, &req.base, &resp, NULL);
    if (rv != 0) {
        if (rv != GS_ENOTFOUND) {
            gs_sync_close(p->s[i]); /* reconnect next time */
            p->s[i] = NULL;
        }
        return rv;
    }
    *out = (Geoscale__MetadataGetResponse *)resp;
    return 0;
}

static void pollers_close(struct pollers *p)
{
    for (int i = 0; i < MR_MAX_NODES; i++) {
        gs_sync_close(p->s[i]);
        p->s[i] = NULL;
    }
}

static int matches(const struct want *w, const Geoscale__UserMetadata *m)
{
    return m != NULL && m->user_id == w->user_id && m->home_region != NULL &&
           strcmp(m->home_region, w->region) == 0 && m->cell_id == w->cell_id &&
           (int)m->status == w->status && m->plan != NULL && strcmp(m->plan, w->plan) == 0 &&
           m->profile_version >= w->min_version;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/*
 * Poll every node for every user until each answers what wants[] says, at
 * most timeout_ms after t_acked[u]. seen_ms[u][i] receives the time from
 * t_acked[u] to the first matching answer of node i (-1: never). Returns the
 * number of (user, node) pairs that never matched.
 */
static int wait_everywhere(struct pollers *p, const struct want *wants, const double *t_acked,
                           unsigned timeout_ms, double seen_ms[N_USERS][MR_MAX_NODES])
{
    struct mr_cluster *c = p->c;
    int missing;
    int last_status[N_USERS][MR_MAX_NODES];
    double deadline = 0;

    for (int u = 0; u < N_USERS; u++) {
        if (t_acked[u] + timeout_ms > deadline) {
            deadline = t_acked[u] + timeout_ms;
        }
        for (int i = 0; i < c->n_nodes; i++) {
            seen_ms[u][i] = -1;
            last_status[u][i] = GS_ETIMEOUT;
        }
    }
    for (;;) {
        missing = 0;
        for (int u = 0; u < N_USERS; u++) {
            for (int i = 0; i < c->n_nodes; i++) {
                Geoscale__MetadataGetResponse *m = NULL;
                int rv;
                if (seen_ms[u][i] >= 0) {
                    continue;
                }
                rv = poll_get(p, i, wants[u].user_id, &m);
                last_status[u][i] = rv;
                if (rv == 0 && matches(&wants[u], m->meta)) {
                    seen_ms[u][i] = e2e_now_ms() - t_acked[u];
                    if (m->applied_index == 0) {
                        e2e_log("node %" PRIu64 " answered with applied_index 0", c->nodes[i].id);
                        seen_ms[u][i] = -1;
                        missing++;
                    }
                } else {
                    missing++;
                }
                if (m != NULL) {
                    geoscale__metadata_get_response__free_unpacked(m, NULL);
                }
            }
        }
        if (missing == 0 || e2e_now_ms() >= deadline) {
            break;
        }
        e2e_sleep_ms(5);
    }
    for (int u = 0, shown = 0; u < N_USERS; u++) {
        for (int i = 0; i < c->n_nodes; i++) {
            Geoscale__MetadataGetResponse *m = NULL;
            if (seen_ms[u][i] >= 0 || shown++ >= 12) {
                continue;
            }
            if (poll_get(p, i, wants[u].user_id, &m) == 0 && m->meta != NULL) {
                e2e_log("  user %" PRIu64 " on node %" PRIu64 " (%s): region %s cell %u status %d "
                        "plan %s version %" PRIu64 "; want %s %u %d %s >=%" PRIu64,
                        wants[u].user_id, c->nodes[i].id, regions[c->nodes[i].region],
                        m->meta->home_region, m->meta->cell_id, (int)m->meta->status, m->meta->plan,
                        m->meta->profile_version, wants[u].region, wants[u].cell_id,
                        wants[u].status, wants[u].plan, wants[u].min_version);
            } else {
                e2e_log("  user %" PRIu64 " on node %" PRIu64 " (%s): %s", wants[u].user_id,
                        c->nodes[i].id, regions[c->nodes[i].region],
                        gs_error_name(last_status[u][i] != 0 ? last_status[u][i] : GS_ENOTFOUND));
            }
            if (m != NULL) {
                geoscale__metadata_get_response__free_unpacked(m, NULL);
            }
        }
    }
    return missing;
}

/* One line per region: max propagation over its nodes and users; overall
 * p50 and max. */
static void report(const char *what, struct mr_cluster *c, double seen_ms[N_USERS][MR_MAX_NODES])
{
    static double all[N_USERS * MR_MAX_NODES];
    size_t n = 0;
    for (int r = 0; r < N_REGIONS; r++) {
        double max = -1;
        int seen = 0;
        int total = 0;
        for (int u = 0; u < N_USERS; u++) {
            for (int i = 0; i < c->n_nodes; i++) {
                if (c->nodes[i].region != r) {
                    continue;
                }
                total++;
                if (seen_ms[u][i] >= 0) {
                    seen++;
                    all[n++] = seen_ms[u][i];
                    if (seen_ms[u][i] > max) {
                        max = seen_ms[u][i];
                    }
                }
            }
        }
        if (seen > 0) {
            e2e_log("%s: %-7s %d of %d (user, node) pairs see it, the slowest after %.0f ms", what,
                    regions[r], seen, total, max);
        } else {
            e2e_log("%s: %-7s 0 of %d (user, node) pairs see it", what, regions[r], total);
        }
    }
    if (n > 0) {
        qsort(all, n, sizeof all[0], cmp_double);
        e2e_log("%s: propagation write acknowledged -> MetadataGet answers it: p50 %.0f ms, "
                "max %.0f ms over %zu (user, node) pairs",
                what, all[n / 2], all[n - 1], n);
    }
}

static void update_round(struct mr_cluster *c, const int *home_node, struct want *wants,
                         double *t_acked, int set_plan, const char *plan, int status)
{
    for (int u = 0; u < N_USERS; u++) {
        Geoscale__UpdateUserRequest req = GEOSCALE__UPDATE_USER_REQUEST__INIT;
        Geoscale__ProfileField fields[2];
        ProtobufCMessage *resp = NULL;
        Geoscale__UpdateUserResponse *uu;
        char plan_u[32];
        size_t nf = 0;
        int rv;

        req.user_id = wants[u].user_id;
        if (set_plan) {
            snprintf(plan_u, sizeof plan_u, "%s-%d", plan, u);
            fields[nf++] = GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_PLAN;
            req.plan = plan_u;
        }
        fields[nf++] = GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_STATUS;
        req.status = (Geoscale__AccountStatus)status;
        req.n_fields = nf;
        req.fields = fields;
        rv =
            mr_call(c, home_node[u], 10000, GEOSCALE__METHOD__METHOD_UPDATE_USER, &req.base, &resp);
        t_acked[u] = e2e_now_ms();
        if (rv != 0) {
            e2e_log("UpdateUser of user %" PRIu64 " through node %" PRIu64 " failed: %s",
                    wants[u].user_id, c->nodes[home_node[u]].id, gs_error_name(rv));
        }
        assert_int_equal(rv, 0);
        uu = (Geoscale__UpdateUserResponse *)resp;
        assert_non_null(uu);
        assert_non_null(uu->profile);
        assert_int_equal(uu->profile->status, status);
        if (set_plan) {
            assert_string_equal(uu->profile->plan, plan_u);
            snprintf(wants[u].plan, sizeof wants[u].plan, "%s", plan_u);
        }
        assert_true(uu->profile->version > wants[u].min_version);
        wants[u].min_version = uu->profile->version;
        wants[u].status = status;
        protobuf_c_message_free_unpacked(resp, NULL);
    }
}

static void test_metadata_everywhere(void **state)
{
    static double seen_ms[N_USERS][MR_MAX_NODES];
    struct mr_cluster *c = *state;
    struct pollers p = {.c = c};
    struct want wants[N_USERS];
    double t_acked[N_USERS];
    int home_node[N_USERS];
    double t0 = e2e_now_ms();
    int missing;

    assert_int_equal(mr_start(c, 120000), 0);

    /* ---- 2. one user per region; its metadata appears everywhere */
    for (int u = 0; u < N_USERS; u++) {
        Geoscale__CreateUserRequest req = GEOSCALE__CREATE_USER_REQUEST__INIT;
        int idx[3];
        char username[32];
        assert_int_equal(mr_region_nodes(c, u, idx, 3), 3);
        home_node[u] = idx[1]; /* not the replica host: a forwarding node */
        snprintf(username, sizeof username, "meta_user_%d", u);
        req.username = username;
        req.display_name = "Metadata Test";
        req.plan = "free";
        memset(&wants[u], 0, sizeof wants[u]);
        assert_int_equal(mr_create_user(c, home_node[u], 15000, &req, &wants[u].user_id), 0);
        t_acked[u] = e2e_now_ms();
        wants[u].region = regions[u];
        wants[u].cell_id = c->nodes[home_node[u]].cell_id;
        wants[u].status = GEOSCALE__ACCOUNT_STATUS__ACCOUNT_STATUS_ACTIVE;
        snprintf(wants[u].plan, sizeof wants[u].plan, "free");
        wants[u].min_version = 0;
        assert_int_equal(wants[u].user_id >> 40, wants[u].cell_id);
    }
    e2e_log("created %d users, one per region, %.0f ms since start", N_USERS, e2e_now_ms() - t0);
    missing = wait_everywhere(&p, wants, t_acked, APPEAR_MS, seen_ms);
    report("signup", c, seen_ms);
    if (missing != 0) {
        e2e_log("FAIL: %d (user, node) pairs never saw the new user's metadata within %d ms",
                missing, APPEAR_MS);
    }
    assert_int_equal(missing, 0);

    /* ---- 3. round 1: plan and status */
    update_round(c, home_node, wants, t_acked, 1, "pro",
                 GEOSCALE__ACCOUNT_STATUS__ACCOUNT_STATUS_SUSPENDED);
    missing = wait_everywhere(&p, wants, t_acked, PROPAGATION_MS, seen_ms);
    report("plan+status", c, seen_ms);
    if (missing != 0) {
        e2e_log("FAIL: %d (user, node) pairs never saw the plan and status change within %d ms",
                missing, PROPAGATION_MS);
    }
    assert_int_equal(missing, 0);

    /* ---- 4. round 2: status only; the plan stays */
    update_round(c, home_node, wants, t_acked, 0, NULL,
                 GEOSCALE__ACCOUNT_STATUS__ACCOUNT_STATUS_ACTIVE);
    missing = wait_everywhere(&p, wants, t_acked, PROPAGATION_MS, seen_ms);
    report("status", c, seen_ms);
    if (missing != 0) {
        e2e_log("FAIL: %d (user, node) pairs never saw the status change within %d ms", missing,
                PROPAGATION_MS);
    }
    assert_int_equal(missing, 0);

    pollers_close(&p);
    e2e_log("metadata_everywhere: done in %.0f ms", e2e_now_ms() - t0);
    c->passed = 1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_metadata_everywhere, setup, mr_fixture_free),
    };
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
