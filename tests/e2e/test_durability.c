/*
 * e2e_durability: no acknowledged write is lost when a whole cell dies.
 *
 * 1. Create a base set of users (all must be acknowledged).
 * 2. Run a mixed stream of new users and follows among the base users, 64 in
 *    flight, recording exactly which requests were acknowledged (status 0).
 *    Part way through, SIGKILL all three nodes at once, with requests still
 *    in flight.
 * 3. Restart all three. Every acknowledged user is readable by id with its
 *    username, every acknowledged follow is in its actor's following list,
 *    and the three nodes converge to one applied index and one digest.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <signal.h>
#include <sys/wait.h>

#include "harness.h"

#define N_BASE 200
#define N_MIXED 2800    /* 2 of every 7 a CreateUser, the rest Follow */
#define KILL_AFTER 1000 /* completions of the mixed stream */
#define WINDOW 64

struct mixed_op {
    int is_create;
    char username[32];
    int actor;  /* base index, for follows */
    int target; /* base index, for follows */
};

struct kill_ctx {
    struct cluster *c;
    double killed_at;
    size_t inflight_at_kill;
};

static int kill_all_when_due(void *arg, size_t n_done, size_t n_inflight)
{
    struct kill_ctx *k = arg;
    if (n_done < KILL_AFTER) {
        return 0;
    }
    /* All three at once: signals first, reaping later. */
    for (int i = 0; i < CLUSTER_NODES; i++) {
        cluster_node_signal(k->c, i, SIGKILL);
    }
    k->killed_at = e2e_now_ms();
    k->inflight_at_kill = n_inflight;
    return 1;
}

static int setup(void **state)
{
    struct cluster *c = calloc(1, sizeof *c);
    if (c == NULL) {
        return -1;
    }
    *state = c;
    if (cluster_init(c, "durability") != 0) {
        cluster_destroy(c);
        free(c);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    struct cluster *c = *state;
    cluster_destroy(c);
    free(c);
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a;
    uint64_t y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void test_durability(void **state)
{
    static char base_names[N_BASE][32];
    static uint64_t base_ids[N_BASE];
    static struct mixed_op mixed[N_MIXED];
    static uint64_t created_ids[N_MIXED];
    struct cluster *c = *state;
    const char *seeds[CLUSTER_NODES];
    struct e2e_op *ops;
    struct e2e_run_options ro;
    struct e2e_run_result rr;
    struct kill_ctx kc = {.c = c};
    size_t acked_creates = 0;
    size_t acked_follows = 0;
    size_t failed = 0;
    size_t n_acked_users = 0;
    size_t survived_unacked = 0;
    int leader;

    assert_int_equal(cluster_start(c, 60000), 0);
    for (int i = 0; i < CLUSTER_NODES; i++) {
        seeds[i] = c->nodes[i].client_address;
    }
    memset(&ro, 0, sizeof ro);
    ro.seeds = seeds;
    ro.n_seeds = CLUSTER_NODES;
    ro.client.timeout_ms = 10000;
    ro.window = WINDOW;
    ro.deadline_ms = 90000;

    ops = calloc(N_MIXED, sizeof *ops);
    assert_non_null(ops);

    /* ---- 1. base users */
    for (int i = 0; i < N_BASE; i++) {
        Geoscale__CreateUserRequest req = GEOSCALE__CREATE_USER_REQUEST__INIT;
        snprintf(base_names[i], sizeof base_names[i], "dur_base_%04d", i);
        req.username = base_names[i];
        ops[i].method = GEOSCALE__METHOD__METHOD_CREATE_USER;
        assert_int_equal(e2e_pack(&req.base, &ops[i].req, &ops[i].req_len), 0);
    }
    assert_int_equal(e2e_run(ops, N_BASE, &ro, &rr), 0);
    e2e_log("base: %zu of %d users acknowledged in %.0f ms", rr.ok, N_BASE, rr.elapsed_ms);
    assert_int_equal(rr.ok, N_BASE);
    for (int i = 0; i < N_BASE; i++) {
        Geoscale__CreateUserResponse *resp =
            geoscale__create_user_response__unpack(NULL, ops[i].resp_len, ops[i].resp);
        assert_non_null(resp);
        assert_true(resp->user_id != 0);
        base_ids[i] = resp->user_id;
        geoscale__create_user_response__free_unpacked(resp, NULL);
    }
    e2e_ops_free(ops, N_BASE);

    /* ---- 2. mixed stream, killed part way. Follow pair p: actor p % N_BASE
     * follows the actor + 1 + p / N_BASE (mod N_BASE): distinct pairs. */
    {
        int p = 0;
        for (int i = 0; i < N_MIXED; i++) {
            struct mixed_op *m = &mixed[i];
            if (i % 7 < 2) {
                Geoscale__CreateUserRequest req = GEOSCALE__CREATE_USER_REQUEST__INIT;
                m->is_create = 1;
                snprintf(m->username, sizeof m->username, "dur_new_%04d", i);
                req.username = m->username;
                req.bio = "durability";
                ops[i].method = GEOSCALE__METHOD__METHOD_CREATE_USER;
                assert_int_equal(e2e_pack(&req.base, &ops[i].req, &ops[i].req_len), 0);
            } else {
                Geoscale__EdgeRequest req = GEOSCALE__EDGE_REQUEST__INIT;
                m->actor = p % N_BASE;
                m->target = (m->actor + 1 + p / N_BASE) % N_BASE;
                p++;
                req.actor_id = base_ids[m->actor];
                req.target_id = base_ids[m->target];
                ops[i].method = GEOSCALE__METHOD__METHOD_FOLLOW;
                assert_int_equal(e2e_pack(&req.base, &ops[i].req, &ops[i].req_len), 0);
            }
        }
        assert_true(p / N_BASE < N_BASE - 1);
    }
    ro.client.timeout_ms = 3000; /* requests caught by the kill fail quickly */
    ro.on_done = kill_all_when_due;
    ro.arg = &kc;
    assert_int_equal(e2e_run(ops, N_MIXED, &ro, &rr), 0);
    assert_true(kc.killed_at > 0);
    for (int i = 0; i < N_MIXED; i++) {
        if (!ops[i].issued) {
            continue;
        }
        if (ops[i].status != 0) {
            failed++;
            continue;
        }
        if (mixed[i].is_create) {
            Geoscale__CreateUserResponse *resp =
                geoscale__create_user_response__unpack(NULL, ops[i].resp_len, ops[i].resp);
            assert_non_null(resp);
            assert_true(resp->user_id != 0);
            created_ids[i] = resp->user_id;
            geoscale__create_user_response__free_unpacked(resp, NULL);
            acked_creates++;
        } else {
            acked_follows++;
        }
    }
    e2e_log("mixed: issued %zu, acknowledged %zu creates + %zu follows, %zu failed; "
            "SIGKILL of all 3 with %zu in flight",
            rr.issued, acked_creates, acked_follows, failed, kc.inflight_at_kill);
    assert_true(kc.inflight_at_kill > 0);
    assert_true(acked_creates > 0 && acked_follows > 0);
    for (int i = 0; i < CLUSTER_NODES; i++) {
        if (c->nodes[i].pid != 0) {
            int ws = 0;
            assert_int_equal(cluster_node_reap(c, i, 10000, &ws), 0);
            assert_true(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL);
        }
    }

    /* ---- 3. restart; every acknowledged write is there */
    {
        double t0 = e2e_now_ms();
        for (int i = 0; i < CLUSTER_NODES; i++) {
            assert_int_equal(cluster_node_start(c, i), 0);
        }
        for (int i = 0; i < CLUSTER_NODES; i++) {
            assert_int_equal(cluster_node_wait_ready(c, i, 30000), 0);
        }
        assert_int_equal(cluster_wait_leader(c, 30000, &leader), 0);
        e2e_log("restarted 3 nodes; leader node %u after %.0f ms", c->nodes[leader].node_id,
                e2e_now_ms() - t0);
    }
    ro.client.timeout_ms = 10000;
    ro.on_done = NULL;
    ro.arg = NULL;
    {
        /* One GetUser per acknowledged user: base first, then mixed. */
        static struct e2e_op reads[N_BASE + N_MIXED];
        static int read_src[N_BASE + N_MIXED]; /* < N_BASE: base i; else mixed */
        memset(reads, 0, sizeof reads);
        for (int i = 0; i < N_BASE + N_MIXED; i++) {
            Geoscale__GetUserRequest req = GEOSCALE__GET_USER_REQUEST__INIT;
            if (i < N_BASE) {
                req.user_id = base_ids[i];
            } else if (mixed[i - N_BASE].is_create && created_ids[i - N_BASE] != 0) {
                req.user_id = created_ids[i - N_BASE];
            } else {
                continue;
            }
            req.viewer_id = req.user_id;
            read_src[n_acked_users] = i;
            reads[n_acked_users].method = GEOSCALE__METHOD__METHOD_GET_USER;
            assert_int_equal(
                e2e_pack(&req.base, &reads[n_acked_users].req, &reads[n_acked_users].req_len), 0);
            n_acked_users++;
        }
        assert_int_equal(e2e_run(reads, n_acked_users, &ro, &rr), 0);
        e2e_log("after restart: GetUser of %zu acknowledged users: %zu ok", n_acked_users, rr.ok);
        for (size_t r = 0; r < n_acked_users; r++) {
            int i = read_src[r];
            const char *want = i < N_BASE ? base_names[i] : mixed[i - N_BASE].username;
            uint64_t want_id = i < N_BASE ? base_ids[i] : created_ids[i - N_BASE];
            Geoscale__GetUserResponse *resp;
            if (reads[r].status != 0) {
                e2e_log("acknowledged user %llu lost: GetUser says %s", (unsigned long long)want_id,
                        gs_error_name(reads[r].status));
            }
            assert_int_equal(reads[r].status, 0);
            resp = geoscale__get_user_response__unpack(NULL, reads[r].resp_len, reads[r].resp);
            assert_non_null(resp);
            assert_non_null(resp->profile);
            assert_int_equal(resp->profile->user_id, want_id);
            assert_string_equal(resp->profile->username, want);
            geoscale__get_user_response__free_unpacked(resp, NULL);
        }
        e2e_ops_free(reads, n_acked_users);
    }
    {
        /* Following list of every base user: a superset of its acknowledged
         * follows (unacknowledged ones may or may not have been applied). */
        static struct e2e_op lists[N_BASE];
        size_t checked = 0;
        memset(lists, 0, sizeof lists);
        for (int a = 0; a < N_BASE; a++) {
            Geoscale__ListEdgesRequest req = GEOSCALE__LIST_EDGES_REQUEST__INIT;
            req.user_id = base_ids[a];
            req.limit = 1000;
            lists[a].method = GEOSCALE__METHOD__METHOD_LIST_FOLLOWING;
            assert_int_equal(e2e_pack(&req.base, &lists[a].req, &lists[a].req_len), 0);
        }
        assert_int_equal(e2e_run(lists, N_BASE, &ro, &rr), 0);
        assert_int_equal(rr.ok, N_BASE);
        for (int a = 0; a < N_BASE; a++) {
            Geoscale__ListEdgesResponse *resp =
                geoscale__list_edges_response__unpack(NULL, lists[a].resp_len, lists[a].resp);
            assert_non_null(resp);
            assert_int_equal(resp->next_cursor, 0);
            qsort(resp->user_ids, resp->n_user_ids, sizeof resp->user_ids[0], cmp_u64);
            for (int i = 0; i < N_MIXED; i++) {
                const struct mixed_op *m = &mixed[i];
                int found;
                if (m->is_create || m->actor != a || !ops[i].issued) {
                    continue;
                }
                found = bsearch(&base_ids[m->target], resp->user_ids, resp->n_user_ids,
                                sizeof resp->user_ids[0], cmp_u64) != NULL;
                if (ops[i].status == 0) {
                    if (!found) {
                        e2e_log("acknowledged follow %llu -> %llu lost",
                                (unsigned long long)base_ids[a],
                                (unsigned long long)base_ids[m->target]);
                    }
                    assert_true(found);
                    checked++;
                } else if (found) {
                    survived_unacked++;
                }
            }
            geoscale__list_edges_response__free_unpacked(resp, NULL);
        }
        e2e_ops_free(lists, N_BASE);
        e2e_log("after restart: %zu acknowledged follows present (%zu unacknowledged ones "
                "applied too)",
                checked, survived_unacked);
        assert_int_equal(checked, acked_follows);
    }
    e2e_ops_free(ops, N_MIXED);
    free(ops);

    {
        uint64_t applied = 0;
        uint64_t keys = 0;
        assert_int_equal(cluster_wait_converged(c, 30000, &applied, NULL, &keys), 0);
        e2e_log("converged: applied index %llu, %llu keys, same digest on 3 nodes",
                (unsigned long long)applied, (unsigned long long)keys);
    }
    c->passed = 1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_durability, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
