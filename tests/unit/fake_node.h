/*
 * A fake GeoScale node for unit tests, on the test's own uv loop: a TCP
 * listener on 127.0.0.1 port 0 that reads frames with wire_reader and
 * answers according to its `mode` (echo, hold and answer when the test
 * says so, fixed error status, close the connection, a test's own
 * function, ...). It records every request header it receives, so tests
 * assert what went over the wire. CellStatus is always answered with the
 * members and leader the test set.
 *
 * RUN_UNTIL runs a fixture's loop until a condition holds or a guard
 * timer fires (the fixture has `loop`, `guard` and `fired`); the test then
 * asserts the condition.
 */
#ifndef GS_TESTS_FAKE_NODE_H
#define GS_TESTS_FAKE_NODE_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "net/wire.h"

#define MAX_RECS 64

/* ------------------------------------------------------------------ fake node */

enum fake_mode {
    FAKE_ECHO,        /* status 0, body = request body */
    FAKE_HOLD,        /* hold every request until fake_release */
    FAKE_STATUS,      /* answer `status`, no body */
    FAKE_SILENT,      /* never answer */
    FAKE_CLOSE_FIRST, /* close the connection on the first request, then echo */
    FAKE_SLOW,        /* hold requests whose body is "slow", echo others */
    FAKE_BIG,         /* answer body "big" with 1000 bytes, echo others */
    FAKE_PROTO,       /* GetUser answered with a real GetUserResponse, other
                         methods with an undecodable body */
    FAKE_FN,          /* the test's on_request answers (or not) */
};

struct fake;

struct fake_conn {
    struct fake *f;
    int id;
    uv_tcp_t tcp;
    struct wire_reader r;
    int closed;
    struct fake_conn *next;
    char rbuf[65536];
};

struct rec {
    struct wire_header h;
    uint8_t body[64];
    size_t len;
    int conn_id;
};

struct fake {
    uv_loop_t *loop;
    uv_tcp_t listener;
    char addr[64];
    enum fake_mode mode;
    uint16_t status;
    uint32_t leader_id;
    int accepts;
    int reads;
    int nreq;
    int cell_status;
    int replies_done;
    int closed_first;
    struct rec reqs[MAX_RECS];
    int held[MAX_RECS];
    int nheld;
    uint64_t member_ids[4];
    const char *member_addrs[4];
    int nmembers;
    int next_conn_id;
    struct fake_conn *conns;
    /* FAKE_FN: called with the record index and the whole body. */
    void (*on_request)(struct fake *f, int i, const uint8_t *body);
    void *data; /* the test's */
};

struct fake_write {
    uv_write_t req;
    struct fake *f;
    uint8_t data[];
};

/* Answer request record i with status/leader/body, if its connection lives. */
void fake_reply(struct fake *f, int i, uint16_t status, const void *body, size_t len);
/* Answer every held request, last received first, with its own body. */
void fake_release(struct fake *f);
void fake_start(struct fake *f, uv_loop_t *loop, enum fake_mode mode);
void fake_stop(struct fake *f);

#define RUN_UNTIL(fx, cond, ms)                                                                    \
    do {                                                                                           \
        (fx)->fired = 0;                                                                           \
        uv_timer_start(&(fx)->guard, fake_on_guard, (ms), 0);                                      \
        while (!(cond) && !(fx)->fired) {                                                          \
            uv_run(&(fx)->loop, UV_RUN_ONCE);                                                      \
        }                                                                                          \
        uv_timer_stop(&(fx)->guard);                                                               \
    } while (0)

/* Let the loop run for ms (used only where the test asserts that something
 * does NOT happen, or that a reply already on the socket was processed). */
#define SETTLE(fx, ms) RUN_UNTIL(fx, 0, ms)

/* The guard timer's callback: sets *(int *)guard->data. */
void fake_on_guard(uv_timer_t *guard);

/* Initialise a fixture's loop and its guard timer, which sets *fired. */
void fake_loop_init(uv_loop_t *loop, uv_timer_t *guard, int *fired);

#endif /* GS_TESTS_FAKE_NODE_H */
