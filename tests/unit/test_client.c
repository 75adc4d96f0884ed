/*
 * Unit tests of the C client library (net/client.c).
 *
 * Each test runs one or two fake GeoScale nodes (fake_node.h) on the test's
 * own uv loop: a TCP listener on 127.0.0.1 port 0 that reads frames with wire_reader and
 * answers according to the node's `mode` (echo, hold and answer when the test
 * says so, fixed error status, close the connection, ...). Fake nodes record
 * every request header they receive, so tests assert what went over the wire
 * (idempotency keys, deadlines, which node a call reached). The blocking
 * client test runs its fake node on a second thread.
 *
 * Waiting is bounded: RUN_UNTIL runs the loop until a condition holds or a
 * guard timer fires, and the test then asserts the condition.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "geoscale.pb-c.h"
#include "geoscale/client.h"
#include "net/wire.h"

#include "fake_node.h"

/* ------------------------------------------------------------------ fixture */

struct fx {
    uv_loop_t loop;
    uv_timer_t guard;
    int fired;
    struct fake a, b;
    gs_client *c;
    int closed;
    int completions;
};

struct result {
    struct fx *fx;
    int calls;
    int status;
    uint32_t leader_id;
    uint8_t body[64];
    size_t len;
    int order;
    uint64_t done_at;
    int call_again; /* call gs_client_call from the callback; rv below */
    int again_rv;
};

static void on_result(int status, uint32_t leader_id, const uint8_t *body, size_t len, void *data)
{
    struct result *r = data;

    r->calls++;
    r->status = status;
    r->leader_id = leader_id;
    r->len = len < sizeof r->body ? len : sizeof r->body;
    if (r->len > 0) {
        memcpy(r->body, body, r->len);
    }
    r->order = r->fx->completions++;
    r->done_at = uv_now(&r->fx->loop);
    if (r->call_again) {
        static const uint8_t x = 1;
        r->again_rv =
            gs_client_call(r->fx->c, GEOSCALE__METHOD__METHOD_GET_USER, &x, 1, NULL, on_result, r);
    }
}

static int setup(void **state)
{
    struct fx *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    fake_loop_init(&fx->loop, &fx->guard, &fx->fired);
    fake_start(&fx->a, &fx->loop, FAKE_ECHO);
    fake_start(&fx->b, &fx->loop, FAKE_ECHO);
    *state = fx;
    return 0;
}

static void set_flag(void *data)
{
    *(int *)data = 1;
}

static void close_client(struct fx *fx, gs_client *c)
{
    int closed = 0;
    gs_client_close(c, set_flag, &closed);
    RUN_UNTIL(fx, closed, 2000);
    assert_true(closed);
}

static int teardown(void **state)
{
    struct fx *fx = *state;

    if (fx->c != NULL) {
        close_client(fx, fx->c);
    }
    fake_stop(&fx->a);
    fake_stop(&fx->b);
    uv_close((uv_handle_t *)&fx->guard, NULL);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&fx->loop), 0); /* no handle leaked */
    free(fx);
    return 0;
}

static void open_client(struct fx *fx, const char *s0, const char *s1,
                        const struct gs_client_options *opts)
{
    const char *seeds[2] = {s0, s1};
    assert_int_equal(gs_client_open(&fx->loop, seeds, s1 != NULL ? 2 : 1, opts, &fx->c), 0);
}

static void call(struct fx *fx, uint16_t method, const char *body,
                 const struct gs_call_options *opts, struct result *r)
{
    r->fx = fx;
    assert_int_equal(
        gs_client_call(fx->c, method, (const uint8_t *)body, strlen(body), opts, on_result, r), 0);
}

#define GET GEOSCALE__METHOD__METHOD_GET_USER
#define CREATE GEOSCALE__METHOD__METHOD_CREATE_USER

/* ------------------------------------------------------------------ tests */

/* Five calls on one connection, all in flight at once, answered in reverse
 * order: each callback gets its own body. */
static void test_pipelined_out_of_order(void **state)
{
    struct fx *fx = *state;
    struct result r[5] = {{0}}, warm = {0};
    char body[5][4];
    int reads_before;

    /* Connect first, so that the burst below goes over an open connection. */
    open_client(fx, fx->a.addr, NULL, NULL);
    call(fx, GET, "warm", NULL, &warm);
    RUN_UNTIL(fx, warm.calls == 1, 2000);
    assert_int_equal(warm.status, 0);
    reads_before = fx->a.reads;
    fx->a.mode = FAKE_HOLD;
    for (int i = 0; i < 5; i++) {
        snprintf(body[i], sizeof body[i], "b%d", i);
        call(fx, GET, body[i], NULL, &r[i]);
    }
    RUN_UNTIL(fx, fx->a.nheld == 5, 2000);
    assert_int_equal(fx->a.nheld, 5);
    assert_int_equal(fx->a.accepts, 1);
    /* The five frames of one loop turn left in one write. */
    assert_int_equal(fx->a.reads - reads_before, 1);
    for (int i = 1; i <= 5; i++) {
        assert_true(fx->a.reqs[i].h.client_id == 0); /* reads carry no key */
        for (int j = 0; j < i; j++) {
            assert_true(fx->a.reqs[i].h.request_id != fx->a.reqs[j].h.request_id);
        }
    }
    for (int i = 0; i < 5; i++) {
        assert_int_equal(r[i].calls, 0);
    }
    fake_release(&fx->a); /* answers b4, b3, ..., b0 */
    RUN_UNTIL(fx, fx->completions == 6, 2000);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, 0);
        assert_int_equal(r[i].len, 2);
        assert_memory_equal(r[i].body, body[i], 2);
        assert_int_equal(r[i].order, 1 + 4 - i);
    }
}

/* With max_inflight 2, a third call waits in the queue until a slot frees. */
static void test_max_inflight_queue(void **state)
{
    struct fx *fx = *state;
    struct gs_client_options o = {.max_inflight = 2};
    struct result r[5] = {{0}};

    fx->a.mode = FAKE_HOLD;
    open_client(fx, fx->a.addr, NULL, &o);
    for (int i = 0; i < 5; i++) {
        call(fx, GET, "q", NULL, &r[i]);
    }
    RUN_UNTIL(fx, fx->a.nheld == 2, 2000);
    SETTLE(fx, 30);
    assert_int_equal(fx->a.nreq, 2); /* not a third one */
    fake_release(&fx->a);
    RUN_UNTIL(fx, fx->a.nheld == 2, 2000);
    SETTLE(fx, 30);
    assert_int_equal(fx->a.nreq, 4);
    fake_release(&fx->a);
    RUN_UNTIL(fx, fx->a.nheld == 1, 2000);
    fake_release(&fx->a);
    RUN_UNTIL(fx, fx->completions == 5, 2000);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, 0);
    }
}

/* A call with a short timeout expires with GS_ETIMEOUT while the others on
 * the same connection succeed; its late answer is dropped. */
static void test_timeout_while_others_succeed(void **state)
{
    struct fx *fx = *state;
    struct gs_call_options slow_opts = {.timeout_ms = 60};
    struct result slow = {0}, fast[3] = {{0}}, after = {0};
    uint64_t start;
    int slow_rec;

    fx->a.mode = FAKE_SLOW;
    open_client(fx, fx->a.addr, NULL, NULL);
    uv_update_time(&fx->loop);
    start = uv_now(&fx->loop);
    call(fx, GET, "slow", &slow_opts, &slow);
    for (int i = 0; i < 3; i++) {
        call(fx, GET, "fast", NULL, &fast[i]);
    }
    RUN_UNTIL(fx, fx->completions == 4, 3000);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(fast[i].calls, 1);
        assert_int_equal(fast[i].status, 0);
    }
    assert_int_equal(slow.calls, 1);
    assert_int_equal(slow.status, GS_ETIMEOUT);
    assert_true(slow.done_at - start >= 60);
    assert_true(slow.done_at - start < 1000);
    /* The header told the node how long the client waits. */
    assert_int_equal(fx->a.nheld, 1);
    slow_rec = fx->a.held[0];
    assert_true(fx->a.reqs[slow_rec].h.deadline_ms > 0);
    assert_true(fx->a.reqs[slow_rec].h.deadline_ms <= 60);
    assert_true(fx->a.reqs[slow_rec + 1].h.deadline_ms > 4000); /* default 5 s */

    /* Late answer: dropped; the connection stays usable. */
    fake_release(&fx->a);
    call(fx, GET, "fast", NULL, &after);
    RUN_UNTIL(fx, after.calls == 1, 2000);
    assert_int_equal(after.status, 0);
    SETTLE(fx, 20);
    assert_int_equal(slow.calls, 1);
    assert_int_equal(fx->a.accepts, 1);
}

/* Seed A answers UNAVAILABLE; the write is retried on seed B with the same
 * idempotency key. Later writes get the next client_seq; imposed keys and
 * flags are sent as given. */
static void test_retry_same_key(void **state)
{
    struct fx *fx = *state;
    struct result r1 = {0}, r2 = {0}, r3 = {0}, r4 = {0};
    struct gs_call_options fwd = {.client_id = 77, .client_seq = 9, .flags = WIRE_FLAG_FORWARDED};
    const struct wire_header *ha, *hb;

    fx->a.mode = FAKE_STATUS;
    fx->a.status = (uint16_t)-GS_EUNAVAILABLE;
    open_client(fx, fx->a.addr, fx->b.addr, NULL);
    call(fx, CREATE, "w1", NULL, &r1);
    RUN_UNTIL(fx, r1.calls == 1, 3000);
    assert_int_equal(r1.status, 0);
    assert_int_equal(fx->a.nreq, 1);
    assert_int_equal(fx->b.nreq, 1);
    ha = &fx->a.reqs[0].h;
    hb = &fx->b.reqs[0].h;
    assert_true(ha->client_id != 0);
    assert_true(ha->client_id == hb->client_id);
    assert_true(ha->client_seq == 1);
    assert_true(hb->client_seq == 1);

    /* The client now starts at B. */
    call(fx, CREATE, "w2", NULL, &r2);
    call(fx, GET, "r", NULL, &r3);
    call(fx, CREATE, "w3", &fwd, &r4);
    RUN_UNTIL(fx, fx->completions == 4, 3000);
    assert_int_equal(r2.status, 0);
    assert_int_equal(r3.status, 0);
    assert_int_equal(r4.status, 0);
    assert_int_equal(fx->a.nreq, 1);
    assert_int_equal(fx->b.nreq, 4);
    assert_true(fx->b.reqs[1].h.client_id == ha->client_id);
    assert_true(fx->b.reqs[1].h.client_seq == 2);
    assert_true(fx->b.reqs[2].h.client_id == 0 && fx->b.reqs[2].h.client_seq == 0);
    assert_true(fx->b.reqs[3].h.client_id == 77 && fx->b.reqs[3].h.client_seq == 9);
    assert_int_equal(fx->b.reqs[3].h.flags, WIRE_FLAG_FORWARDED);
    assert_int_equal(fx->b.reqs[1].h.flags, 0);
}

/* A non-retryable status is reported at once, converted to a negative code;
 * a retryable one is reported after the deadline when every node fails, and
 * with no_retry after the first attempt. */
static void test_status_codes(void **state)
{
    struct fx *fx = *state;
    struct gs_call_options shortt = {.timeout_ms = 150};
    struct result r1 = {0}, r2 = {0};
    gs_client *c2;
    struct gs_client_options nr = {.no_retry = 1};
    const char *seed[1] = {fx->b.addr};

    fx->a.mode = FAKE_STATUS;
    fx->a.status = (uint16_t)-GS_ECONFLICT;
    open_client(fx, fx->a.addr, NULL, NULL);
    call(fx, CREATE, "x", NULL, &r1);
    RUN_UNTIL(fx, r1.calls == 1, 2000);
    assert_int_equal(r1.status, GS_ECONFLICT);
    assert_int_equal(fx->a.nreq, 1);

    fx->a.status = (uint16_t)-GS_EUNAVAILABLE;
    call(fx, CREATE, "x", &shortt, &r2);
    RUN_UNTIL(fx, r2.calls == 1, 2000);
    assert_int_equal(r2.status, GS_EUNAVAILABLE);
    assert_true(fx->a.nreq >= 3); /* retried with backoff until the deadline */
    assert_true(fx->a.nreq <= 8);

    fx->b.mode = FAKE_STATUS;
    fx->b.status = (uint16_t)-GS_EUNAVAILABLE;
    assert_int_equal(gs_client_open(&fx->loop, seed, 1, &nr, &c2), 0);
    r1.calls = 0;
    assert_int_equal(gs_client_call(c2, CREATE, (const uint8_t *)"x", 1, NULL, on_result, &r1), 0);
    RUN_UNTIL(fx, r1.calls == 1, 2000);
    assert_int_equal(r1.status, GS_EUNAVAILABLE);
    assert_int_equal(fx->b.nreq, 1);
    close_client(fx, c2);
}

/* A answers and names leader 2; the client asks A for CellStatus, learns
 * that node 2 is B, and sends later calls to B. */
static void test_leader_redirect(void **state)
{
    struct fx *fx = *state;
    struct result r1 = {0}, r2 = {0}, r3 = {0};

    fx->a.leader_id = 2;
    fx->b.leader_id = 2;
    fx->a.nmembers = 2;
    fx->a.member_ids[0] = 1;
    fx->a.member_addrs[0] = fx->a.addr;
    fx->a.member_ids[1] = 2;
    fx->a.member_addrs[1] = fx->b.addr;
    open_client(fx, fx->a.addr, NULL, NULL);
    call(fx, GET, "one", NULL, &r1);
    RUN_UNTIL(fx, r1.calls == 1 && fx->a.cell_status == 1 && fx->a.replies_done == 2, 2000);
    assert_int_equal(r1.status, 0);
    assert_int_equal(r1.leader_id, 2);
    assert_int_equal(fx->a.cell_status, 1);
    SETTLE(fx, 20); /* the CellStatus answer is on the socket: let it be read */

    call(fx, GET, "two", NULL, &r2);
    call(fx, CREATE, "three", NULL, &r3);
    RUN_UNTIL(fx, r2.calls == 1 && r3.calls == 1, 2000);
    assert_int_equal(r2.status, 0);
    assert_int_equal(r3.status, 0);
    assert_int_equal(r3.leader_id, 2);
    assert_int_equal(fx->b.nreq, 2);
    assert_int_equal(fx->a.nreq, 2); /* "one" and CellStatus */
    assert_int_equal(fx->a.reqs[1].h.method, GEOSCALE__METHOD__METHOD_CELL_STATUS);
}

/* With pin, a response naming another leader changes nothing. */
static void test_pin_never_redirects(void **state)
{
    struct fx *fx = *state;
    struct gs_client_options o = {.pin = 1};
    struct result r1 = {0}, r2 = {0};

    fx->a.leader_id = 2;
    fx->a.nmembers = 1;
    fx->a.member_ids[0] = 2;
    fx->a.member_addrs[0] = fx->b.addr;
    open_client(fx, fx->a.addr, fx->b.addr, &o);
    call(fx, GET, "one", NULL, &r1);
    RUN_UNTIL(fx, r1.calls == 1, 2000);
    SETTLE(fx, 20);
    call(fx, GET, "two", NULL, &r2);
    RUN_UNTIL(fx, r2.calls == 1, 2000);
    assert_int_equal(r2.status, 0);
    assert_int_equal(fx->a.nreq, 2);
    assert_int_equal(fx->a.cell_status, 0);
    assert_int_equal(fx->b.nreq, 0);
}

/* The node closes the connection with the call in flight: the client
 * reconnects and retries with the same key. With no_retry the caller gets
 * GS_ECLOSED. */
static void test_connection_closed_mid_call(void **state)
{
    struct fx *fx = *state;
    struct result r = {0}, r2 = {0};
    struct gs_client_options nr = {.no_retry = 1};
    const char *seed[1] = {fx->b.addr};
    gs_client *c2;

    fx->a.mode = FAKE_CLOSE_FIRST;
    open_client(fx, fx->a.addr, NULL, NULL);
    call(fx, CREATE, "w", NULL, &r);
    RUN_UNTIL(fx, r.calls == 1, 3000);
    assert_int_equal(r.status, 0);
    assert_int_equal(fx->a.accepts, 2);
    assert_int_equal(fx->a.nreq, 2);
    assert_true(fx->a.reqs[0].h.client_id != 0);
    assert_true(fx->a.reqs[0].h.client_id == fx->a.reqs[1].h.client_id);
    assert_true(fx->a.reqs[0].h.client_seq == fx->a.reqs[1].h.client_seq);

    fx->b.mode = FAKE_CLOSE_FIRST;
    assert_int_equal(gs_client_open(&fx->loop, seed, 1, &nr, &c2), 0);
    r2.fx = fx;
    assert_int_equal(gs_client_call(c2, CREATE, (const uint8_t *)"w", 1, NULL, on_result, &r2), 0);
    RUN_UNTIL(fx, r2.calls == 1, 2000);
    assert_int_equal(r2.status, GS_ECLOSED);
    close_client(fx, c2);
}

/* A dead seed yields GS_ECONNECT and the next seed is tried. */
static void test_connect_failure(void **state)
{
    struct fx *fx = *state;
    struct result r = {0}, r2 = {0};
    char dead[64];
    struct gs_client_options pin = {.pin = 1};
    const char *seed[1] = {dead};
    gs_client *c2;

    /* A port that was just free: nothing listens there. */
    strcpy(dead, fx->b.addr);
    fake_stop(&fx->b);
    SETTLE(fx, 5);

    open_client(fx, dead, fx->a.addr, NULL);
    call(fx, GET, "x", NULL, &r);
    RUN_UNTIL(fx, r.calls == 1, 3000);
    assert_int_equal(r.status, 0);
    assert_int_equal(fx->a.nreq, 1);

    assert_int_equal(gs_client_open(&fx->loop, seed, 1, &pin, &c2), 0);
    r2.fx = fx;
    assert_int_equal(gs_client_call(c2, GET, (const uint8_t *)"x", 1, NULL, on_result, &r2), 0);
    RUN_UNTIL(fx, r2.calls == 1, 2000);
    assert_int_equal(r2.status, GS_ECONNECT);
    close_client(fx, c2);
}

/* A response body above max_body is a protocol error: that call fails with
 * GS_ETOOBIG, the connection is dropped, later calls reconnect. */
static void test_oversize_response(void **state)
{
    struct fx *fx = *state;
    struct gs_client_options o = {.max_body = 64};
    struct result r = {0}, r2 = {0};

    fx->a.mode = FAKE_BIG;
    open_client(fx, fx->a.addr, NULL, &o);
    call(fx, GET, "big", NULL, &r);
    RUN_UNTIL(fx, r.calls == 1, 2000);
    assert_int_equal(r.status, GS_ETOOBIG);
    call(fx, GET, "small", NULL, &r2);
    RUN_UNTIL(fx, r2.calls == 1, 2000);
    assert_int_equal(r2.status, 0);
    assert_int_equal(fx->a.accepts, 2);
}

/* Closing with calls in flight and queued: each callback runs once with
 * GS_ESHUTDOWN, calls made from those callbacks are refused. */
static void test_close_with_pending(void **state)
{
    struct fx *fx = *state;
    struct gs_client_options o = {.max_inflight = 2};
    struct result r[4] = {{0}};
    int closed = 0;

    fx->a.mode = FAKE_SILENT;
    open_client(fx, fx->a.addr, NULL, &o);
    for (int i = 0; i < 4; i++) {
        call(fx, i % 2 ? GET : CREATE, "p", NULL, &r[i]);
    }
    r[3].call_again = 1;
    RUN_UNTIL(fx, fx->a.nreq == 2, 2000);
    assert_int_equal(fx->a.nreq, 2); /* two sent, two queued */
    gs_client_close(fx->c, set_flag, &closed);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, GS_ESHUTDOWN);
    }
    assert_int_equal(r[3].again_rv, GS_ESHUTDOWN);
    assert_int_equal(gs_client_call(fx->c, GET, (const uint8_t *)"x", 1, NULL, on_result, &r[0]),
                     GS_ESHUTDOWN);
    gs_client_close(fx->c, set_flag, &closed); /* a second close is a no-op */
    fx->c = NULL;
    assert_int_equal(closed, 0); /* freed only once its handles closed */
    RUN_UNTIL(fx, closed, 2000);
    assert_true(closed);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(r[i].calls, 1);
    }
}

static void test_bad_arguments(void **state)
{
    struct fx *fx = *state;
    static const char *const bad[] = {"example.com:80",  "127.0.0.1", "127.0.0.1:", "127.0.0.1:0",
                                      "127.0.0.1:70000", ":80",       "1.2.3:4"};
    static const char *const good[] = {"localhost:1", "[::1]:8080", "::1:9", "10.0.0.1:65535"};
    struct result r = {0};
    gs_client *c;

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        c = (gs_client *)&r;
        assert_int_equal(gs_client_open(&fx->loop, &bad[i], 1, NULL, &c), GS_EINVAL);
        assert_null(c);
    }
    assert_int_equal(gs_client_open(&fx->loop, good, 0, NULL, &c), GS_EINVAL);
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        assert_int_equal(gs_client_open(&fx->loop, &good[i], 1, NULL, &c), 0);
        close_client(fx, c);
    }
    open_client(fx, fx->a.addr, NULL, NULL);
    assert_int_equal(gs_client_call(fx->c, 0, NULL, 0, NULL, on_result, &r), GS_EINVAL);
    assert_int_equal(gs_client_call(fx->c, 99, NULL, 0, NULL, on_result, &r), GS_EINVAL);
    assert_int_equal(gs_client_call(fx->c, GET, (const uint8_t *)"x", WIRE_DEFAULT_MAX_BODY + 1,
                                    NULL, on_result, &r),
                     GS_ETOOBIG);
    SETTLE(fx, 5);
    assert_int_equal(r.calls, 0);
    assert_int_equal(fx->a.accepts, 0); /* connections are lazy */
}

/* ------------------------------------------------------------------ blocking client */

struct server_thread {
    uv_thread_t tid;
    uv_loop_t loop;
    uv_async_t stop;
    uv_sem_t ready;
    struct fake f;
};

static void server_stop_cb(uv_async_t *a)
{
    struct server_thread *st = a->data;
    fake_stop(&st->f);
    uv_close((uv_handle_t *)&st->stop, NULL);
}

static void server_main(void *arg)
{
    struct server_thread *st = arg;

    assert_int_equal(uv_loop_init(&st->loop), 0);
    assert_int_equal(uv_async_init(&st->loop, &st->stop, server_stop_cb), 0);
    st->stop.data = st;
    fake_start(&st->f, &st->loop, FAKE_PROTO);
    st->f.leader_id = 3;
    uv_sem_post(&st->ready);
    uv_run(&st->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&st->loop), 0);
}

static void test_sync_round_trip(void **state)
{
    struct server_thread st;
    const char *seeds[1];
    gs_sync *s;
    Geoscale__GetUserRequest req = GEOSCALE__GET_USER_REQUEST__INIT;
    Geoscale__GetSettingsRequest sreq = GEOSCALE__GET_SETTINGS_REQUEST__INIT;
    ProtobufCMessage *resp = (ProtobufCMessage *)&st;
    uint32_t leader = 0;
    Geoscale__GetUserResponse *u;
    (void)state;

    memset(&st, 0, sizeof st);
    assert_int_equal(uv_sem_init(&st.ready, 0), 0);
    assert_int_equal(uv_thread_create(&st.tid, server_main, &st), 0);
    uv_sem_wait(&st.ready);
    seeds[0] = st.f.addr;

    assert_int_equal(gs_sync_open(seeds, 1, NULL, &s), 0);
    req.user_id = 42;
    assert_int_equal(gs_sync_call(s, GEOSCALE__METHOD__METHOD_GET_USER, &req.base, &resp, &leader),
                     0);
    assert_non_null(resp);
    assert_int_equal(leader, 3);
    u = (Geoscale__GetUserResponse *)resp;
    assert_ptr_equal(resp->descriptor, &geoscale__get_user_response__descriptor);
    assert_non_null(u->profile);
    assert_true(u->profile->user_id == 42);
    assert_true(u->profile->version == 7);
    protobuf_c_message_free_unpacked(resp, NULL);

    /* An undecodable response body is a protocol error. */
    sreq.user_id = 1;
    assert_int_equal(
        gs_sync_call(s, GEOSCALE__METHOD__METHOD_GET_SETTINGS, &sreq.base, &resp, NULL), GS_EPROTO);
    assert_null(resp);
    /* The request message must be the method's. */
    assert_int_equal(gs_sync_call(s, GEOSCALE__METHOD__METHOD_GET_USER, &sreq.base, &resp, NULL),
                     GS_EINVAL);
    assert_null(resp);
    gs_sync_close(s);
    gs_sync_close(NULL);

    uv_async_send(&st.stop);
    assert_int_equal(uv_thread_join(&st.tid), 0);
    uv_sem_destroy(&st.ready);
    /* GetUser, the CellStatus asked to learn leader 3, GetSettings. */
    assert_int_equal(st.f.nreq, 3);
    assert_int_equal(st.f.cell_status, 1);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_pipelined_out_of_order),
        T(test_max_inflight_queue),
        T(test_timeout_while_others_succeed),
        T(test_retry_same_key),
        T(test_status_codes),
        T(test_leader_redirect),
        T(test_pin_never_redirects),
        T(test_connection_closed_mid_call),
        T(test_connect_failure),
        T(test_oversize_response),
        T(test_close_with_pending),
        T(test_bad_arguments),
        cmocka_unit_test(test_sync_round_trip),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
