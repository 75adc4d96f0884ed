/*
 * Unit tests of the leader check (raft/leader_check.c, Raft's ReadIndex):
 * a real leader_check with real clients on the test's loop, asking fake
 * nodes (fake_node.h) that answer LeaderCheck with the term and node id
 * each test sets, or with an error, or never. The tests assert the quorum
 * arithmetic (the asking leader counts itself; standbys are never asked),
 * that a newer term, a wrong node or an unreachable voter refuses, what
 * goes over the wire, and that an abandoned round never calls back.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fake_node.h"
#include "geoscale.pb-c.h"
#include "geoscale/errors.h"
#include "raft/leader_check.h"

#define SELF 1
#define TERM 7
#define MAX_PEERS 5
#define TIMEOUT_MS 300
#define GUARD_MS 5000

/* How a fake voter answers. */
struct answer {
    uint64_t node_id; /* in the response; 0: its own id */
    uint64_t term;
    uint16_t status; /* nonzero: this error, no body */
    int silent;      /* never answer */
    /* what it was asked */
    int asked;
    uint64_t asked_term;
    int asked_group;
    uint32_t asked_cell;
};

struct fx {
    uv_loop_t loop;
    uv_timer_t guard;
    int fired;
    struct fake fakes[MAX_PEERS];
    struct answer answers[MAX_PEERS];
    struct group_peer peers[MAX_PEERS + 1]; /* [0] is this node */
    size_t n_peers;
    struct raft_configuration conf;
    struct leader_check *lc;
    struct leader_check_round round;
    int calls;
    bool confirmed;
};

static void on_check(struct fake *f, int i, const uint8_t *body)
{
    struct answer *a = f->data;
    const struct rec *q = &f->reqs[i];
    assert_int_equal(q->h.method, GEOSCALE__METHOD__METHOD_LEADER_CHECK);
    Geoscale__LeaderCheckRequest *req =
        geoscale__leader_check_request__unpack(NULL, q->h.body_len, body);
    assert_non_null(req);
    a->asked++;
    a->asked_term = req->term;
    a->asked_group = req->group;
    a->asked_cell = req->cell_id;
    geoscale__leader_check_request__free_unpacked(req, NULL);
    if (a->silent) {
        return;
    }
    if (a->status != 0) {
        fake_reply(f, i, a->status, NULL, 0);
        return;
    }
    Geoscale__LeaderCheckResponse resp = GEOSCALE__LEADER_CHECK_RESPONSE__INIT;
    resp.node_id = a->node_id;
    resp.term = a->term;
    uint8_t buf[32];
    size_t len = geoscale__leader_check_response__pack(&resp, buf);
    fake_reply(f, i, 0, buf, len);
}

static int setup(void **state)
{
    struct fx *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    fake_loop_init(&fx->loop, &fx->guard, &fx->fired);
    raft_configuration_init(&fx->conf);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fx *fx = *state;
    leader_check_close(fx->lc);
    for (size_t i = 0; i + 1 < fx->n_peers; i++) {
        fake_stop(&fx->fakes[i]);
    }
    uv_close((uv_handle_t *)&fx->guard, NULL);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    /* Every client, connection and timer closed. */
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    raft_configuration_close(&fx->conf);
    free(fx);
    return 0;
}

/* A checker over fx->peers, for cell 42. */
static void checker_open(struct fx *fx)
{
    assert_int_equal(leader_check_init(&fx->lc, &fx->loop, SELF, fx->peers, fx->n_peers,
                                       GEOSCALE__CHECKPOINT_INFO_REQUEST__GROUP__CELL, 42,
                                       TIMEOUT_MS),
                     0);
}

/* This node (SELF, a voter) and n other voters, fakes answering TERM with
 * their own ids; then nstandby standbys (fakes too). */
static void members(struct fx *fx, size_t n, size_t nstandby)
{
    assert_true(n + nstandby <= MAX_PEERS);
    fx->peers[0].id = SELF;
    snprintf(fx->peers[0].client_address, sizeof fx->peers[0].client_address, "127.0.0.1:1");
    assert_int_equal(raft_configuration_add(&fx->conf, SELF, "127.0.0.1:2", RAFT_VOTER), 0);
    for (size_t i = 0; i < n + nstandby; i++) {
        struct fake *f = &fx->fakes[i];
        fake_start(f, &fx->loop, FAKE_FN);
        f->on_request = on_check;
        f->data = &fx->answers[i];
        uint64_t id = 10 + i;
        fx->answers[i].node_id = id;
        fx->answers[i].term = TERM;
        struct group_peer *p = &fx->peers[i + 1];
        p->id = id;
        snprintf(p->client_address, sizeof p->client_address, "%s", f->addr);
        char raft_address[32];
        snprintf(raft_address, sizeof raft_address, "127.0.0.1:%zu", 3 + i);
        assert_int_equal(raft_configuration_add(&fx->conf, id, raft_address,
                                                i < n ? RAFT_VOTER : RAFT_STANDBY),
                         0);
    }
    fx->n_peers = n + nstandby + 1;
    checker_open(fx);
}

static void on_round(struct leader_check_round *round, bool confirmed)
{
    struct fx *fx = round->data;
    assert_ptr_equal(round, &fx->round);
    fx->calls++;
    fx->confirmed = confirmed;
}

/* Ask, and wait for the callback. */
static void check(struct fx *fx)
{
    fx->calls = 0;
    fx->round.data = fx;
    assert_int_equal(leader_check_ask(fx->lc, &fx->round, &fx->conf, TERM, on_round), 0);
    assert_int_equal(fx->calls, 0); /* never from within the call */
    RUN_UNTIL(fx, fx->calls > 0, GUARD_MS);
    assert_int_equal(fx->calls, 1);
}

static void test_quorum_confirms(void **state)
{
    struct fx *fx = *state;
    members(fx, 2, 0);
    check(fx);
    assert_true(fx->confirmed);
    /* Both asked, with the term, the group and the cell. */
    RUN_UNTIL(fx, fx->answers[0].asked && fx->answers[1].asked, GUARD_MS);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(fx->answers[i].asked, 1);
        assert_int_equal(fx->answers[i].asked_term, TERM);
        assert_int_equal(fx->answers[i].asked_group, GEOSCALE__CHECKPOINT_INFO_REQUEST__GROUP__CELL);
        assert_int_equal(fx->answers[i].asked_cell, 42);
    }
    /* A voter behind in term has not joined a newer one either. */
    fx->answers[0].term = TERM - 2;
    fx->answers[1].silent = 1;
    check(fx);
    assert_true(fx->confirmed);
    SETTLE(fx, 50);
    assert_int_equal(fx->calls, 1); /* the late answer changes nothing */
}

static void test_newer_term_refuses(void **state)
{
    struct fx *fx = *state;
    members(fx, 2, 0);
    /* One voter in a newer term: the other and this node still make two
     * of three. */
    fx->answers[0].term = TERM + 1;
    check(fx);
    assert_true(fx->confirmed);
    /* Both: a newer leader may have committed without this one. */
    fx->answers[1].term = TERM + 1;
    check(fx);
    assert_false(fx->confirmed);
}

static void test_wrong_node_or_error_refuses(void **state)
{
    struct fx *fx = *state;
    members(fx, 2, 0);
    fx->answers[0].node_id = 99; /* another node at that address */
    fx->answers[1].status = (uint16_t)-GS_ENOTFOUND;
    check(fx);
    assert_false(fx->confirmed);
}

static void test_silent_voters_time_out(void **state)
{
    struct fx *fx = *state;
    members(fx, 2, 0);
    fx->answers[0].silent = 1;
    fx->answers[1].silent = 1;
    uint64_t t0 = uv_now(&fx->loop);
    check(fx);
    assert_false(fx->confirmed);
    uv_update_time(&fx->loop);
    assert_true(uv_now(&fx->loop) - t0 >= TIMEOUT_MS);
}

static void test_unreachable_voter(void **state)
{
    struct fx *fx = *state;
    members(fx, 2, 0);
    /* Nothing listens on port 1. */
    snprintf(fx->peers[1].client_address, sizeof fx->peers[1].client_address, "127.0.0.1:1");
    leader_check_close(fx->lc);
    checker_open(fx);
    check(fx);
    assert_true(fx->confirmed); /* the other voter answers */
    fx->answers[1].term = TERM + 3;
    check(fx);
    assert_false(fx->confirmed);
}

static void test_five_voters_and_standbys(void **state)
{
    struct fx *fx = *state;
    members(fx, 4, 1);
    /* Two of the four others and this node: three of five. */
    fx->answers[0].term = TERM + 1;
    fx->answers[1].silent = 1;
    check(fx);
    assert_true(fx->confirmed);
    /* Three of the others refuse: two of five. */
    fx->answers[2].term = TERM + 1;
    check(fx);
    assert_false(fx->confirmed);
    SETTLE(fx, 20);
    assert_int_equal(fx->answers[4].asked, 0); /* the standby */
}

static void test_single_voter(void **state)
{
    struct fx *fx = *state;
    members(fx, 0, 1);
    fx->round.data = fx;
    fx->calls = 0;
    assert_int_equal(leader_check_ask(fx->lc, &fx->round, &fx->conf, TERM, on_round), 1);
    SETTLE(fx, 20);
    assert_int_equal(fx->calls, 0);
    assert_int_equal(fx->answers[0].asked, 0);
}

static void test_abandoned_round(void **state)
{
    struct fx *fx = *state;
    members(fx, 2, 0);
    fx->round.data = fx;
    fx->calls = 0;
    assert_int_equal(leader_check_ask(fx->lc, &fx->round, &fx->conf, TERM, on_round), 0);
    leader_check_abandon(&fx->round);
    RUN_UNTIL(fx, fx->answers[0].asked && fx->answers[1].asked, GUARD_MS);
    SETTLE(fx, 50);
    assert_int_equal(fx->calls, 0);
    /* The slot is free for the next round. */
    check(fx);
    assert_true(fx->confirmed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_quorum_confirms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newer_term_refuses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_node_or_error_refuses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_silent_voters_time_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unreachable_voter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_five_voters_and_standbys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_single_voter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abandoned_round, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
