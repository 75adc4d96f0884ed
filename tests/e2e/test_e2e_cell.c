/*
 * e2e_cell: one three-node cell, end to end.
 *
 * 1. Through a client pinned to a FOLLOWER (so every request is forwarded by
 *    that follower to the leader), create 1,000 users and 5,000 follows, 64
 *    requests in flight, and count the acknowledgements.
 * 2. Through the same follower, read every user back and check every user's
 *    following list is exactly the set it was given.
 * 3. SIGKILL the leader and time until a write succeeds again through the
 *    survivors (must be under 5 s).
 * 4. Restart the killed node and wait (30 s at most) until the three nodes
 *    report the same applied index and the same state digest.
 * 5. SIGTERM every node: each must exit with status 0.
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

#define N_USERS 1000
#define FOLLOWS_PER_USER 5
#define N_FOLLOWS (N_USERS * FOLLOWS_PER_USER)
#define WINDOW 64

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a;
    uint64_t y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* followee[i][k]: the k-th user (index) that user i follows; distinct, != i. */
static void make_follow_graph(int followee[N_USERS][FOLLOWS_PER_USER])
{
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < N_USERS; i++) {
        for (int k = 0; k < FOLLOWS_PER_USER; k++) {
            int j;
            int dup;
            do {
                j = (int)(xorshift(&seed) % N_USERS);
                dup = j == i;
                for (int m = 0; m < k; m++) {
                    dup |= followee[i][m] == j;
                }
            } while (dup);
            followee[i][k] = j;
        }
    }
}

static int setup(void **state)
{
    struct cluster *c = calloc(1, sizeof *c);
    if (c == NULL) {
        return -1;
    }
    *state = c;
    if (cluster_init(c, "cell") != 0) {
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

static void test_e2e_cell(void **state)
{
    static int followee[N_USERS][FOLLOWS_PER_USER];
    static char usernames[N_USERS][32];
    static uint64_t user_ids[N_USERS];
    struct cluster *c = *state;
    struct e2e_op *ops;
    struct e2e_run_options ro;
    struct e2e_run_result rr;
    Geoscale__CellStatusResponse *st = NULL;
    int leader = -1;
    int follower;
    const char *seed;
    size_t forwarded_leader_named = 0;

    assert_int_equal(cluster_start(c, 60000), 0);
    assert_int_equal(cluster_wait_leader(c, 10000, &leader), 0);
    follower = (leader + 1) % CLUSTER_NODES;
    assert_int_equal(cluster_node_status(c, follower, 2000, &st), 0);
    e2e_log("client pinned to node %u (state %s, leader %llu)", c->nodes[follower].node_id,
            st->state, (unsigned long long)st->leader_id);
    assert_string_equal(st->state, "follower");
    geoscale__cell_status_response__free_unpacked(st, NULL);

    seed = c->nodes[follower].client_address;
    memset(&ro, 0, sizeof ro);
    ro.seeds = &seed;
    ro.n_seeds = 1;
    ro.client.pin = 1;
    ro.client.timeout_ms = 10000;
    ro.window = WINDOW;
    ro.deadline_ms = 90000;

    ops = calloc(N_FOLLOWS, sizeof *ops);
    assert_non_null(ops);

    /* ---- 1a. create users through the follower */
    for (int i = 0; i < N_USERS; i++) {
        Geoscale__CreateUserRequest req = GEOSCALE__CREATE_USER_REQUEST__INIT;
        snprintf(usernames[i], sizeof usernames[i], "e2e_user_%04d", i);
        req.username = usernames[i];
        req.display_name = "E2E User";
        req.bio = "end-to-end test user";
        ops[i].method = GEOSCALE__METHOD__METHOD_CREATE_USER;
        assert_int_equal(e2e_pack(&req.base, &ops[i].req, &ops[i].req_len), 0);
    }
    assert_int_equal(e2e_run(ops, N_USERS, &ro, &rr), 0);
    e2e_log("CreateUser x%d via follower: %zu acknowledged in %.0f ms (%.0f/s)", N_USERS, rr.ok,
            rr.elapsed_ms, rr.ok * 1000.0 / (rr.elapsed_ms > 0 ? rr.elapsed_ms : 1));
    for (int i = 0; i < N_USERS; i++) {
        Geoscale__CreateUserResponse *resp;
        if (ops[i].status != 0) {
            e2e_log("CreateUser %d failed: %s", i, gs_error_name(ops[i].status));
        }
        assert_int_equal(ops[i].status, 0);
        resp = geoscale__create_user_response__unpack(NULL, ops[i].resp_len, ops[i].resp);
        assert_non_null(resp);
        assert_true(resp->user_id != 0);
        if (resp->profile != NULL) {
            assert_int_equal(resp->profile->user_id, resp->user_id);
            assert_string_equal(resp->profile->username, usernames[i]);
        }
        user_ids[i] = resp->user_id;
        if (ops[i].leader_id != 0 && ops[i].leader_id != c->nodes[follower].node_id) {
            forwarded_leader_named++;
        }
        geoscale__create_user_response__free_unpacked(resp, NULL);
    }
    assert_int_equal(rr.ok, N_USERS);
    e2e_log("%zu of %d responses named a leader other than the pinned follower",
            forwarded_leader_named, N_USERS);
    {
        uint64_t sorted[N_USERS];
        memcpy(sorted, user_ids, sizeof sorted);
        qsort(sorted, N_USERS, sizeof sorted[0], cmp_u64);
        for (int i = 1; i < N_USERS; i++) {
            assert_true(sorted[i] != sorted[i - 1]);
        }
    }
    e2e_ops_free(ops, N_USERS);

    /* ---- 1b. follows through the follower; k-major order spreads the
     * requests in flight over many users */
    make_follow_graph(followee);
    for (int k = 0; k < FOLLOWS_PER_USER; k++) {
        for (int i = 0; i < N_USERS; i++) {
            Geoscale__EdgeRequest req = GEOSCALE__EDGE_REQUEST__INIT;
            struct e2e_op *op = &ops[k * N_USERS + i];
            req.actor_id = user_ids[i];
            req.target_id = user_ids[followee[i][k]];
            op->method = GEOSCALE__METHOD__METHOD_FOLLOW;
            assert_int_equal(e2e_pack(&req.base, &op->req, &op->req_len), 0);
        }
    }
    assert_int_equal(e2e_run(ops, N_FOLLOWS, &ro, &rr), 0);
    e2e_log("Follow x%d via follower: %zu acknowledged in %.0f ms (%.0f/s)", N_FOLLOWS, rr.ok,
            rr.elapsed_ms, rr.ok * 1000.0 / (rr.elapsed_ms > 0 ? rr.elapsed_ms : 1));
    for (int n = 0; n < N_FOLLOWS; n++) {
        Geoscale__EdgeResponse *resp;
        if (ops[n].status != 0) {
            e2e_log("Follow %d failed: %s", n, gs_error_name(ops[n].status));
        }
        assert_int_equal(ops[n].status, 0);
        resp = geoscale__edge_response__unpack(NULL, ops[n].resp_len, ops[n].resp);
        assert_non_null(resp);
        assert_true(resp->changed); /* every edge is new */
        geoscale__edge_response__free_unpacked(resp, NULL);
    }
    assert_int_equal(rr.ok, N_FOLLOWS);
    e2e_ops_free(ops, N_FOLLOWS);

    /* ---- 2a. read every user back through the follower */
    {
        static uint64_t in_degree[N_USERS];
        memset(in_degree, 0, sizeof in_degree);
        for (int i = 0; i < N_USERS; i++) {
            for (int k = 0; k < FOLLOWS_PER_USER; k++) {
                in_degree[followee[i][k]]++;
            }
        }
        for (int i = 0; i < N_USERS; i++) {
            Geoscale__GetUserRequest req = GEOSCALE__GET_USER_REQUEST__INIT;
            req.user_id = user_ids[i];
            req.viewer_id = user_ids[i]; /* the owner sees every field */
            ops[i].method = GEOSCALE__METHOD__METHOD_GET_USER;
            assert_int_equal(e2e_pack(&req.base, &ops[i].req, &ops[i].req_len), 0);
        }
        assert_int_equal(e2e_run(ops, N_USERS, &ro, &rr), 0);
        e2e_log("GetUser x%d via follower: %zu ok in %.0f ms", N_USERS, rr.ok, rr.elapsed_ms);
        for (int i = 0; i < N_USERS; i++) {
            Geoscale__GetUserResponse *resp;
            if (ops[i].status != 0) {
                e2e_log("GetUser %d failed: %s", i, gs_error_name(ops[i].status));
            }
            assert_int_equal(ops[i].status, 0);
            resp = geoscale__get_user_response__unpack(NULL, ops[i].resp_len, ops[i].resp);
            assert_non_null(resp);
            assert_non_null(resp->profile);
            assert_int_equal(resp->profile->user_id, user_ids[i]);
            assert_string_equal(resp->profile->username, usernames[i]);
            assert_string_equal(resp->profile->display_name, "E2E User");
            assert_int_equal(resp->profile->following_count, FOLLOWS_PER_USER);
            assert_int_equal(resp->profile->follower_count, in_degree[i]);
            geoscale__get_user_response__free_unpacked(resp, NULL);
        }
        e2e_ops_free(ops, N_USERS);
    }

    /* ---- 2b. every following list is exactly the set given */
    for (int i = 0; i < N_USERS; i++) {
        Geoscale__ListEdgesRequest req = GEOSCALE__LIST_EDGES_REQUEST__INIT;
        req.user_id = user_ids[i];
        req.limit = 1000;
        ops[i].method = GEOSCALE__METHOD__METHOD_LIST_FOLLOWING;
        assert_int_equal(e2e_pack(&req.base, &ops[i].req, &ops[i].req_len), 0);
    }
    assert_int_equal(e2e_run(ops, N_USERS, &ro, &rr), 0);
    e2e_log("ListFollowing x%d via follower: %zu ok in %.0f ms", N_USERS, rr.ok, rr.elapsed_ms);
    for (int i = 0; i < N_USERS; i++) {
        Geoscale__ListEdgesResponse *resp;
        uint64_t want[FOLLOWS_PER_USER];
        if (ops[i].status != 0) {
            e2e_log("ListFollowing %d failed: %s", i, gs_error_name(ops[i].status));
        }
        assert_int_equal(ops[i].status, 0);
        resp = geoscale__list_edges_response__unpack(NULL, ops[i].resp_len, ops[i].resp);
        assert_non_null(resp);
        for (int k = 0; k < FOLLOWS_PER_USER; k++) {
            want[k] = user_ids[followee[i][k]];
        }
        qsort(want, FOLLOWS_PER_USER, sizeof want[0], cmp_u64);
        if (resp->n_user_ids != FOLLOWS_PER_USER) {
            e2e_log("user %llu follows %zu users, expected %d", (unsigned long long)user_ids[i],
                    resp->n_user_ids, FOLLOWS_PER_USER);
        }
        assert_int_equal(resp->n_user_ids, FOLLOWS_PER_USER);
        qsort(resp->user_ids, resp->n_user_ids, sizeof resp->user_ids[0], cmp_u64);
        for (int k = 0; k < FOLLOWS_PER_USER; k++) {
            assert_int_equal(resp->user_ids[k], want[k]);
        }
        assert_int_equal(resp->next_cursor, 0);
        assert_int_equal(resp->total, FOLLOWS_PER_USER);
        geoscale__list_edges_response__free_unpacked(resp, NULL);
    }
    e2e_ops_free(ops, N_USERS);
    free(ops);

    assert_int_equal(cluster_node_status(c, follower, 2000, &st), 0);
    if (strcmp(st->state, "follower") != 0) {
        e2e_log("note: the pinned node is now %s (leadership moved during the run)", st->state);
    }
    geoscale__cell_status_response__free_unpacked(st, NULL);

    /* The reads were served as batches, each confirmed by the leader: by
     * a barrier entry for the first batch of a term, by a leader check
     * (ReadIndex, no log entry) afterwards. */
    {
        uint64_t checks = 0, barriers = 0;
        for (int i = 0; i < CLUSTER_NODES; i++) {
            assert_int_equal(cluster_node_status(c, i, 2000, &st), 0);
            checks += st->read_checks;
            barriers += st->read_barriers;
            geoscale__cell_status_response__free_unpacked(st, NULL);
        }
        e2e_log("read batches: %llu by leader check, %llu by barrier",
                (unsigned long long)checks, (unsigned long long)barriers);
        assert_true(barriers >= 1);
        assert_true(checks > barriers);
    }

    /* ---- 3. kill the leader; time until a write succeeds again */
    assert_int_equal(cluster_wait_leader(c, 10000, &leader), 0);
    {
        const char *survivors[CLUSTER_NODES - 1];
        struct gs_client_options o = {.timeout_ms = 1000};
        gs_sync *s = NULL;
        double t0;
        double t_ok = -1;
        int attempts = 0;
        int last_rv = 0;
        int n = 0;

        for (int i = 0; i < CLUSTER_NODES; i++) {
            if (i != leader) {
                survivors[n++] = c->nodes[i].client_address;
            }
        }
        assert_int_equal(gs_sync_open(survivors, n, &o, &s), 0);
        e2e_log("SIGKILL leader node %u", c->nodes[leader].node_id);
        assert_int_equal(cluster_node_signal(c, leader, SIGKILL), 0);
        t0 = e2e_now_ms();
        assert_int_equal(cluster_node_reap(c, leader, 5000, NULL), 0);
        while (e2e_now_ms() - t0 < 15000) {
            Geoscale__CreateUserRequest req = GEOSCALE__CREATE_USER_REQUEST__INIT;
            ProtobufCMessage *resp = NULL;
            char name[32];
            snprintf(name, sizeof name, "e2e_failover_%d", attempts++);
            req.username = name;
            last_rv = gs_sync_call(s, GEOSCALE__METHOD__METHOD_CREATE_USER, &req.base, &resp, NULL);
            if (last_rv == 0) {
                t_ok = e2e_now_ms();
                protobuf_c_message_free_unpacked(resp, NULL);
                break;
            }
            e2e_sleep_ms(20);
        }
        gs_sync_close(s);
        if (t_ok < 0) {
            e2e_log("no write succeeded within 15 s of the kill (%d attempts, last %s)", attempts,
                    gs_error_name(last_rv));
        }
        assert_true(t_ok >= 0);
        e2e_log("first write after leader kill succeeded after %.0f ms (%d attempts)", t_ok - t0,
                attempts);
        assert_true(t_ok - t0 < 5000);
    }

    /* ---- 4. restart the killed node; all three converge */
    {
        uint64_t applied = 0;
        uint64_t keys = 0;
        double t0 = e2e_now_ms();
        assert_int_equal(cluster_node_restart(c, leader, 30000), 0);
        assert_int_equal(cluster_wait_converged(c, 30000, &applied, NULL, &keys), 0);
        e2e_log("after restart of node %u: 3 nodes at applied index %llu, %llu keys, same digest, "
                "in %.0f ms",
                c->nodes[leader].node_id, (unsigned long long)applied, (unsigned long long)keys,
                e2e_now_ms() - t0);
    }

    /* ---- NodeStatus: each node reports its one group, a cell, agreeing on
     * the leader that CellStatus names. */
    {
        Geoscale__CellStatusResponse *cs = NULL;
        assert_int_equal(cluster_node_status(c, 0, 5000, &cs), 0);
        uint64_t cell_leader = cs->leader_id;
        geoscale__cell_status_response__free_unpacked(cs, NULL);
        for (int i = 0; i < CLUSTER_NODES; i++) {
            const char *seeds[1] = {c->nodes[i].client_address};
            struct gs_client_options o = {.timeout_ms = 5000, .pin = 1};
            gs_sync *s = NULL;
            assert_int_equal(gs_sync_open(seeds, 1, &o, &s), 0);
            Geoscale__NodeStatusRequest rq = GEOSCALE__NODE_STATUS_REQUEST__INIT;
            ProtobufCMessage *resp = NULL;
            assert_int_equal(
                gs_sync_call(s, GEOSCALE__METHOD__METHOD_NODE_STATUS, &rq.base, &resp, NULL), 0);
            Geoscale__NodeStatusResponse *ns = (Geoscale__NodeStatusResponse *)resp;
            assert_int_equal(ns->node_id, c->nodes[i].node_id);
            assert_string_equal(ns->region, "us-east");
            assert_int_equal(ns->n_groups, 1);
            assert_string_equal(ns->groups[0]->kind, "cell");
            assert_int_equal(ns->groups[0]->group_id, 1);
            assert_string_equal(ns->groups[0]->role, "voter");
            assert_int_equal(ns->groups[0]->leader_id, cell_leader);
            uint64_t status_term = ns->groups[0]->term;
            protobuf_c_message_free_unpacked(resp, NULL);

            /* LeaderCheck answers the node's live term of the group named
             * (NodeStatus's copy may lag it by a tick), and NOT_FOUND for
             * a group the node does not host. */
            Geoscale__LeaderCheckRequest lc = GEOSCALE__LEADER_CHECK_REQUEST__INIT;
            lc.group = GEOSCALE__CHECKPOINT_INFO_REQUEST__GROUP__CELL;
            lc.cell_id = 1;
            lc.term = status_term;
            assert_int_equal(
                gs_sync_call(s, GEOSCALE__METHOD__METHOD_LEADER_CHECK, &lc.base, &resp, NULL), 0);
            Geoscale__LeaderCheckResponse *lr = (Geoscale__LeaderCheckResponse *)resp;
            assert_int_equal(lr->node_id, c->nodes[i].node_id);
            assert_true(lr->term >= status_term && status_term > 0);
            protobuf_c_message_free_unpacked(resp, NULL);
            lc.cell_id = 2;
            assert_int_equal(
                gs_sync_call(s, GEOSCALE__METHOD__METHOD_LEADER_CHECK, &lc.base, &resp, NULL),
                GS_ENOTFOUND);
            lc.group = GEOSCALE__CHECKPOINT_INFO_REQUEST__GROUP__DIRECTORY;
            lc.cell_id = 0;
            assert_int_equal(
                gs_sync_call(s, GEOSCALE__METHOD__METHOD_LEADER_CHECK, &lc.base, &resp, NULL),
                GS_ENOTFOUND);
            gs_sync_close(s);
        }
        e2e_log("NodeStatus: 3 nodes report one cell group led by node %llu; LeaderCheck "
                "answers their terms",
                (unsigned long long)cell_leader);
    }

    /* ---- 5. clean stop */
    for (int i = 0; i < CLUSTER_NODES; i++) {
        int ws = 0;
        assert_int_equal(cluster_node_stop(c, i, SIGTERM, 15000, &ws), 0);
        if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0) {
            e2e_log("node %u did not exit 0 on SIGTERM (wait status 0x%x)", c->nodes[i].node_id,
                    (unsigned)ws);
        }
        assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    }
    e2e_log("SIGTERM: 3 nodes exited 0");
    c->passed = 1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_e2e_cell, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
