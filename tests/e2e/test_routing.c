/*
 * routing: the client library goes to a user's home cell by itself.
 *
 * 1. A cluster of three regions (us-east, eu, asia; one cell each), two users
 *    per region created through a node of their region.
 * 2. For each region, an application client (unpinned, seeded with that
 *    region's three nodes only) reads every user by id. A node never carries
 *    PII out of the user's home region: for a foreign user it answers
 *    WRONG_CELL with a RouteHint naming the home cell's members, and the
 *    client must follow it. Every read must succeed and return the user.
 *    Round 1 may take at most one redirect per foreign cell (the second user
 *    of a cell is routed from what the first taught).
 * 3. Round 2, same calls: no redirect at all, and every call about a
 *    foreign user goes to that user's cell directly (stats.direct).
 * 4. Writes follow the same route: UpdateUser of a foreign user and a
 *    Follow whose actor is foreign succeed, and the home region reads them
 *    back through a pinned node.
 * 5. A pinned client does not follow hints: it gets WRONG_CELL.
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

#include "cluster_harness.h"

#define N_REGIONS 3
#define USERS_PER_REGION 2
#define N_USERS (N_REGIONS * USERS_PER_REGION)
#define CALL_MS 10000

static const char *const regions[N_REGIONS] = {"us-east", "eu", "asia"};

struct user {
    uint64_t user_id;
    int region;
    char username[32];
};

static int setup(void **state)
{
    return mr_fixture_new(state, "routing", regions, N_REGIONS, 1, 1);
}

/* An unpinned application client seeded with every node of region r. */
static gs_sync *region_client(struct mr_cluster *c, int r)
{
    int idx[MR_MAX_NODES];
    const char *seeds[MR_MAX_NODES];
    int n = mr_region_nodes(c, r, idx, MR_MAX_NODES);
    struct gs_client_options o = {.timeout_ms = CALL_MS};
    gs_sync *s = NULL;

    for (int i = 0; i < n; i++) {
        seeds[i] = c->nodes[idx[i]].client_address;
    }
    assert_int_equal(gs_sync_open(seeds, (size_t)n, &o, &s), 0);
    return s;
}

static void get_user(gs_sync *s, const struct user *u)
{
    Geoscale__GetUserRequest req = GEOSCALE__GET_USER_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    Geoscale__GetUserResponse *gu;
    int rv;

    req.user_id = u->user_id;
    req.viewer_id = u->user_id;
    rv = gs_sync_call(s, GEOSCALE__METHOD__METHOD_GET_USER, &req.base, &resp, NULL);
    if (rv != 0) {
        e2e_log("GetUser %" PRIu64 " (%s) failed: %s", u->user_id, regions[u->region],
                gs_error_name(rv));
    }
    assert_int_equal(rv, 0);
    gu = (Geoscale__GetUserResponse *)resp;
    assert_non_null(gu->profile);
    assert_int_equal(gu->profile->user_id, u->user_id);
    assert_string_equal(gu->profile->username, u->username);
    protobuf_c_message_free_unpacked(resp, NULL);
}

static struct gs_client_stats stats_of(gs_sync *s)
{
    struct gs_client_stats st;
    memset(&st, 0, sizeof st);
    gs_client_get_stats(gs_sync_client(s), &st);
    return st;
}

static void test_client_follows_home_cells(void **state)
{
    struct mr_cluster *c = *state;
    struct user users[N_USERS];
    int first[N_REGIONS];

    assert_int_equal(mr_start(c, 90000), 0);
    for (int r = 0; r < N_REGIONS; r++) {
        int idx[MR_MAX_NODES];
        assert_true(mr_region_nodes(c, r, idx, MR_MAX_NODES) >= 1);
        first[r] = idx[0];
    }
    for (int u = 0; u < N_USERS; u++) {
        Geoscale__CreateUserRequest req = GEOSCALE__CREATE_USER_REQUEST__INIT;
        users[u].region = u % N_REGIONS;
        snprintf(users[u].username, sizeof users[u].username, "route_%d", u);
        req.username = users[u].username;
        req.display_name = "Routed";
        assert_int_equal(mr_create_user(c, first[users[u].region], 15000, &req, &users[u].user_id),
                         0);
        assert_int_equal(GS_USER_CELL(users[u].user_id), c->nodes[first[users[u].region]].cell_id);
    }
    e2e_log("created %d users in %d regions", N_USERS, N_REGIONS);

    for (int r = 0; r < N_REGIONS; r++) {
        gs_sync *s = region_client(c, r);
        struct gs_client_stats st1, st2;
        int foreign = 0;

        /* Round 1: learn. */
        for (int u = 0; u < N_USERS; u++) {
            get_user(s, &users[u]);
            foreign += users[u].region != r;
        }
        st1 = stats_of(s);
        e2e_log("region %s round 1: redirects %" PRIu64 " direct %" PRIu64 " cells %" PRIu64,
                regions[r], st1.redirects, st1.direct, st1.cells);
        assert_true(st1.redirects <= N_REGIONS - 1);
        assert_true(st1.cells >= N_REGIONS - 1);

        /* Round 2: straight to the home cells, no hint needed. */
        for (int u = 0; u < N_USERS; u++) {
            get_user(s, &users[u]);
        }
        st2 = stats_of(s);
        e2e_log("region %s round 2: redirects %" PRIu64 " direct %" PRIu64, regions[r],
                st2.redirects, st2.direct);
        assert_int_equal(st2.redirects, st1.redirects);
        assert_true(st2.direct - st1.direct >= (uint64_t)foreign);

        /* Writes take the same route: a profile update and a follow whose
         * actor lives in another region. */
        {
            const struct user *fu = &users[(r + 1) % N_REGIONS];
            const struct user *lu = &users[r];
            Geoscale__UpdateUserRequest up = GEOSCALE__UPDATE_USER_REQUEST__INIT;
            Geoscale__EdgeRequest fo = GEOSCALE__EDGE_REQUEST__INIT;
            Geoscale__GetUserRequest get = GEOSCALE__GET_USER_REQUEST__INIT;
            Geoscale__ProfileField field = GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_BIO;
            ProtobufCMessage *resp = NULL;
            Geoscale__GetUserResponse *gu;
            char bio[64];
            int idx[MR_MAX_NODES];

            assert_int_not_equal(fu->region, r);
            snprintf(bio, sizeof bio, "updated from %s", regions[r]);
            up.user_id = fu->user_id;
            up.n_fields = 1;
            up.fields = &field;
            up.bio = bio;
            assert_int_equal(
                gs_sync_call(s, GEOSCALE__METHOD__METHOD_UPDATE_USER, &up.base, &resp, NULL), 0);
            protobuf_c_message_free_unpacked(resp, NULL);
            fo.actor_id = fu->user_id;
            fo.target_id = lu->user_id;
            assert_int_equal(
                gs_sync_call(s, GEOSCALE__METHOD__METHOD_FOLLOW, &fo.base, &resp, NULL), 0);
            protobuf_c_message_free_unpacked(resp, NULL);

            /* Read back in the home region, through another of its nodes. */
            assert_int_equal(mr_region_nodes(c, fu->region, idx, MR_MAX_NODES), 3);
            get.user_id = fu->user_id;
            get.viewer_id = fu->user_id;
            assert_int_equal(
                mr_call(c, idx[2], CALL_MS, GEOSCALE__METHOD__METHOD_GET_USER, &get.base, &resp),
                0);
            gu = (Geoscale__GetUserResponse *)resp;
            assert_string_equal(gu->profile->bio, bio);
            assert_true(gu->profile->following_count >= 1);
            protobuf_c_message_free_unpacked(resp, NULL);
        }
        assert_int_equal(stats_of(s).redirects, st1.redirects);
        gs_sync_close(s);
    }

    /* A pinned client is told where to go but does not go. */
    {
        Geoscale__GetUserRequest req = GEOSCALE__GET_USER_REQUEST__INIT;
        req.user_id = users[1].user_id; /* homed in eu */
        req.viewer_id = users[1].user_id;
        assert_int_equal(users[1].region, 1);
        assert_int_equal(
            mr_call(c, first[0], CALL_MS, GEOSCALE__METHOD__METHOD_GET_USER, &req.base, NULL),
            GS_EWRONGCELL);
    }
    c->passed = 1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_client_follows_home_cells, setup, mr_fixture_free),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
