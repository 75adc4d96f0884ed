/*
 * e2e_bad_input: malformed input from the network gets a clear error and
 * changes nothing.
 *
 * Against a live cell, on raw TCP connections to one node (a follower, and
 * for the request-validation cases also the leader):
 *   (a) 4 KiB of random bytes            -> closed, or an error frame
 *   (b) a truncated frame, then close    -> nothing
 *   (c) body_len of 1 GiB                -> TOO_BIG and/or close, no 1 GiB
 *                                           allocation in the node
 *   (d) unknown method ids               -> UNIMPLEMENTED, connection usable
 *   (e) CreateUser body that is not protobuf -> INVALID
 *   (f) CreateUser without username / with a bad one -> INVALID
 *   (g) 10 MB bio (frame over 4 MiB)     -> TOO_BIG;
 *       10 KiB bio in a legal frame      -> TOO_BIG from validation
 * After each case: every node still runs, the three nodes have the same
 * applied index and digest as before the case, and a well-formed CreateUser
 * on another connection to the same node succeeds.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "net/wire.h"

#define STATUS_OF(code) ((uint16_t)(-(code)))
#define N_CASES 7 /* tests in main(); the cluster dir is kept unless all pass */

struct bad_ctx {
    struct cluster c;
    int follower;
    int leader;
    int cases_passed;
    uint64_t client_id;
    uint64_t client_seq;
    unsigned ok_writes;
};

struct snapshot {
    uint64_t applied;
    uint8_t digest[32];
    uint64_t keys;
};

enum raw_result { RAW_FRAME, RAW_CLOSED, RAW_TIMEOUT, RAW_BAD };

static const char *raw_result_name(enum raw_result r)
{
    static const char *const names[] = {"frame", "closed", "timeout", "not a frame"};
    return names[r];
}

/* ------------------------------------------------------------ raw sockets */

static int raw_connect(const char *address)
{
    char host[64];
    const char *colon = strrchr(address, ':');
    struct sockaddr_in sa = {.sin_family = AF_INET};
    int one = 1;
    int fd;

    if (colon == NULL || (size_t)(colon - address) >= sizeof host) {
        return -1;
    }
    memcpy(host, address, (size_t)(colon - address));
    host[colon - address] = '\0';
    sa.sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        return -1;
    }
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        e2e_log("connect %s: %s", address, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* Send all of buf; returns 0 or -errno (EPIPE/ECONNRESET when the node closed). */
static int raw_send(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Read exactly len bytes before deadline. */
static enum raw_result raw_read_exact(int fd, uint8_t *buf, size_t len, double deadline)
{
    size_t have = 0;
    while (have < len) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        double left = deadline - e2e_now_ms();
        ssize_t n;
        if (left <= 0) {
            return RAW_TIMEOUT;
        }
        if (poll(&pfd, 1, (int)left + 1) == 0) {
            return RAW_TIMEOUT;
        }
        n = recv(fd, buf + have, len - have, 0);
        if (n == 0 || (n < 0 && (errno == ECONNRESET || errno == EPIPE))) {
            return have == 0 ? RAW_CLOSED : RAW_BAD;
        }
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                continue;
            }
            return RAW_BAD;
        }
        have += (size_t)n;
    }
    return RAW_FRAME;
}

/* Read one response frame; *body (malloc'd, may be NULL) is the caller's. */
static enum raw_result raw_read_frame(int fd, unsigned timeout_ms, struct wire_header *h,
                                      uint8_t **body)
{
    uint8_t hdr[WIRE_HEADER_SIZE];
    double deadline = e2e_now_ms() + timeout_ms;
    enum raw_result r;

    *body = NULL;
    r = raw_read_exact(fd, hdr, sizeof hdr, deadline);
    if (r != RAW_FRAME) {
        return r;
    }
    if (wire_header_decode(hdr, 64u << 20, h) != 0 || h->type != WIRE_TYPE_RESPONSE) {
        e2e_log("node sent bytes that are not a response header");
        return RAW_BAD;
    }
    if (h->body_len > 0) {
        *body = malloc(h->body_len);
        if (*body == NULL) {
            return RAW_BAD;
        }
        r = raw_read_exact(fd, *body, h->body_len, deadline);
        if (r != RAW_FRAME) {
            free(*body);
            *body = NULL;
            return RAW_BAD;
        }
    }
    return RAW_FRAME;
}

static void request_header(struct bad_ctx *b, struct wire_header *h, uint16_t method,
                           uint64_t request_id, uint32_t body_len)
{
    memset(h, 0, sizeof *h);
    h->version = WIRE_VERSION;
    h->type = WIRE_TYPE_REQUEST;
    h->method = method;
    h->request_id = request_id;
    h->client_id = b->client_id;
    h->client_seq = ++b->client_seq;
    h->deadline_ms = 5000;
    h->body_len = body_len;
}

/* Send a request frame whose header and body agree. */
static int send_request(struct bad_ctx *b, int fd, uint16_t method, uint64_t request_id,
                        const uint8_t *body, size_t len)
{
    struct wire_header h;
    uint8_t hdr[WIRE_HEADER_SIZE];
    int rv;
    request_header(b, &h, method, request_id, (uint32_t)len);
    wire_header_encode(&h, hdr);
    rv = raw_send(fd, hdr, sizeof hdr);
    if (rv == 0 && len > 0) {
        rv = raw_send(fd, body, len);
    }
    return rv;
}

/* Send one request on a fresh connection to node i, read the response and
 * return its status; fails the test if there is no response frame or it
 * does not name the request. */
static uint16_t call_raw(struct bad_ctx *b, int i, uint16_t method, const uint8_t *body, size_t len)
{
    struct wire_header h;
    uint8_t *resp = NULL;
    enum raw_result r;
    int fd = raw_connect(b->c.nodes[i].client_address);
    assert_true(fd >= 0);
    assert_int_equal(send_request(b, fd, method, 4242, body, len), 0);
    r = raw_read_frame(fd, 10000, &h, &resp);
    close(fd);
    free(resp);
    if (r != RAW_FRAME) {
        e2e_log("node %u: expected a response frame, got %s", b->c.nodes[i].node_id,
                raw_result_name(r));
    }
    assert_int_equal(r, RAW_FRAME);
    assert_int_equal(h.request_id, 4242);
    return h.status;
}

static long vm_peak_kib(pid_t pid)
{
    char path[64];
    char line[256];
    long kib = -1;
    FILE *f;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    f = fopen(path, "r");
    if (f == NULL) {
        return -1;
    }
    while (fgets(line, sizeof line, f) != NULL) {
        if (sscanf(line, "VmPeak: %ld kB", &kib) == 1) {
            break;
        }
    }
    fclose(f);
    return kib;
}

/* ------------------------------------------------------------- checking */

static void take_snapshot(struct bad_ctx *b, struct snapshot *s)
{
    assert_int_equal(cluster_wait_converged(&b->c, 15000, &s->applied, s->digest, &s->keys), 0);
}

/* Every node runs, nothing changed, and node i still takes a good write on
 * a new connection. */
static void check_after(struct bad_ctx *b, int i, const struct snapshot *before, const char *what)
{
    struct snapshot after;
    Geoscale__CreateUserRequest req = GEOSCALE__CREATE_USER_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    gs_sync *s = NULL;
    char name[32];
    int rv;

    for (int n = 0; n < CLUSTER_NODES; n++) {
        if (!cluster_node_alive(&b->c, n)) {
            e2e_log("%s: node %u is not running any more", what, b->c.nodes[n].node_id);
        }
        assert_true(cluster_node_alive(&b->c, n));
    }
    /* Give a wrongly accepted write time to commit before comparing. */
    e2e_sleep_ms(500);
    take_snapshot(b, &after);
    if (after.applied != before->applied || memcmp(after.digest, before->digest, 32) != 0 ||
        after.keys != before->keys) {
        e2e_log("%s: state changed: applied %llu -> %llu, keys %llu -> %llu", what,
                (unsigned long long)before->applied, (unsigned long long)after.applied,
                (unsigned long long)before->keys, (unsigned long long)after.keys);
    }
    assert_int_equal(after.applied, before->applied);
    assert_int_equal(after.keys, before->keys);
    assert_memory_equal(after.digest, before->digest, 32);

    {
        const char *seed = b->c.nodes[i].client_address;
        struct gs_client_options o = {.timeout_ms = 10000, .pin = 1};
        assert_int_equal(gs_sync_open(&seed, 1, &o, &s), 0);
    }
    snprintf(name, sizeof name, "bad_input_ok_%u", b->ok_writes++);
    req.username = name;
    rv = gs_sync_call(s, GEOSCALE__METHOD__METHOD_CREATE_USER, &req.base, &resp, NULL);
    gs_sync_close(s);
    if (rv != 0) {
        e2e_log("%s: well-formed CreateUser on node %u failed: %s", what, b->c.nodes[i].node_id,
                gs_error_name(rv));
    }
    assert_int_equal(rv, 0);
    protobuf_c_message_free_unpacked(resp, NULL);
    e2e_log("%s: state unchanged (applied %llu), node %u still serves writes", what,
            (unsigned long long)before->applied, b->c.nodes[i].node_id);
}

/* --------------------------------------------------------------- fixture */

static int group_setup(void **state)
{
    struct bad_ctx *b = calloc(1, sizeof *b);
    if (b == NULL) {
        return -1;
    }
    b->client_id = 0x6261645f696e7075ull;
    if (cluster_init(&b->c, "bad_input") != 0 || cluster_start(&b->c, 60000) != 0 ||
        cluster_wait_leader(&b->c, 10000, &b->leader) != 0) {
        cluster_destroy(&b->c);
        free(b);
        return -1;
    }
    b->follower = (b->leader + 1) % CLUSTER_NODES;
    e2e_log("raw connections go to follower node %u (leader node %u)",
            b->c.nodes[b->follower].node_id, b->c.nodes[b->leader].node_id);
    *state = b;
    return 0;
}

static int group_teardown(void **state)
{
    struct bad_ctx *b = *state;
    b->c.passed = b->cases_passed == N_CASES;
    cluster_destroy(&b->c);
    free(b);
    return 0;
}

/* ------------------------------------------------------------------ cases */

static void test_random_bytes(void **state)
{
    struct bad_ctx *b = *state;
    struct snapshot before;
    uint8_t junk[4096];
    uint64_t x = 0x2545f4914f6cdd1dull ^ (uint64_t)getpid();
    struct wire_header h;
    uint8_t *body = NULL;
    enum raw_result r;
    int fd;

    take_snapshot(b, &before);
    for (size_t k = 0; k < sizeof junk; k++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        junk[k] = (uint8_t)x;
    }
    junk[0] = 0; /* never the magic */
    fd = raw_connect(b->c.nodes[b->follower].client_address);
    assert_true(fd >= 0);
    raw_send(fd, junk, sizeof junk); /* the node may close before all is sent */
    r = raw_read_frame(fd, 5000, &h, &body);
    close(fd);
    free(body);
    e2e_log("(a) 4 KiB random bytes: %s%s%s", raw_result_name(r), r == RAW_FRAME ? " status " : "",
            r == RAW_FRAME ? gs_error_name(h.status) : "");
    assert_true(r == RAW_CLOSED || r == RAW_FRAME);
    if (r == RAW_FRAME) {
        assert_true(h.status != 0);
    }
    check_after(b, b->follower, &before, "(a)");
    b->cases_passed++;
}

static void test_truncated_frame(void **state)
{
    struct bad_ctx *b = *state;
    struct snapshot before;
    struct wire_header h;
    uint8_t buf[WIRE_HEADER_SIZE + 10];
    int fd;

    take_snapshot(b, &before);
    request_header(b, &h, GEOSCALE__METHOD__METHOD_CREATE_USER, 1, 100);
    wire_header_encode(&h, buf);
    /* The start of a CreateUser body: field 1, 8 bytes of username. */
    memcpy(buf + WIRE_HEADER_SIZE, "\x0a\x08truncat", 10);
    fd = raw_connect(b->c.nodes[b->follower].client_address);
    assert_true(fd >= 0);
    assert_int_equal(raw_send(fd, buf, sizeof buf), 0);
    close(fd);
    e2e_log("(b) header says 100 bytes, sent 10, closed");
    check_after(b, b->follower, &before, "(b)");
    b->cases_passed++;
}

static void test_oversized_length(void **state)
{
    struct bad_ctx *b = *state;
    struct snapshot before;
    struct wire_header h;
    uint8_t hdr[WIRE_HEADER_SIZE];
    uint8_t *body = NULL;
    pid_t pid = b->c.nodes[b->follower].pid;
    long peak_before;
    long peak_after;
    enum raw_result r;
    int fd;

    take_snapshot(b, &before);
    peak_before = vm_peak_kib(pid);
    request_header(b, &h, GEOSCALE__METHOD__METHOD_CREATE_USER, 3, 1u << 30);
    wire_header_encode(&h, hdr);
    fd = raw_connect(b->c.nodes[b->follower].client_address);
    assert_true(fd >= 0);
    assert_int_equal(raw_send(fd, hdr, sizeof hdr), 0);
    r = raw_read_frame(fd, 5000, &h, &body);
    close(fd);
    free(body);
    e2e_sleep_ms(200);
    peak_after = vm_peak_kib(pid);
    e2e_log("(c) body_len 1 GiB: %s%s%s; node VmPeak %ld -> %ld KiB", raw_result_name(r),
            r == RAW_FRAME ? " status " : "", r == RAW_FRAME ? gs_error_name(h.status) : "",
            peak_before, peak_after);
    /* A timeout means the node is waiting for a 1 GiB body. */
    assert_true(r == RAW_CLOSED || r == RAW_FRAME);
    if (r == RAW_FRAME) {
        assert_int_equal(h.status, STATUS_OF(GS_ETOOBIG));
    }
    assert_true(peak_before > 0 && peak_after > 0);
    assert_true(peak_after - peak_before < 256L * 1024);
    check_after(b, b->follower, &before, "(c)");
    b->cases_passed++;
}

static void test_unknown_method(void **state)
{
    struct bad_ctx *b = *state;
    static const uint16_t unknown[] = {0, 250, 999, 0xffff};
    struct snapshot before;
    struct wire_header h;
    uint8_t *body = NULL;
    Geoscale__CellStatusResponse *st;
    enum raw_result r;
    int fd;

    take_snapshot(b, &before);
    fd = raw_connect(b->c.nodes[b->follower].client_address);
    assert_true(fd >= 0);
    for (size_t k = 0; k < sizeof unknown / sizeof unknown[0]; k++) {
        assert_int_equal(send_request(b, fd, unknown[k], 100 + k, (const uint8_t *)"\x08\x01", 2),
                         0);
        r = raw_read_frame(fd, 5000, &h, &body);
        free(body);
        e2e_log("(d) method %u: %s%s%s", unknown[k], raw_result_name(r),
                r == RAW_FRAME ? " status " : "", r == RAW_FRAME ? gs_error_name(h.status) : "");
        assert_int_equal(r, RAW_FRAME);
        assert_int_equal(h.request_id, 100 + k);
        assert_int_equal(h.status, STATUS_OF(GS_EUNIMPL));
    }
    /* The same connection still works. */
    assert_int_equal(send_request(b, fd, GEOSCALE__METHOD__METHOD_CELL_STATUS, 200, NULL, 0), 0);
    r = raw_read_frame(fd, 5000, &h, &body);
    close(fd);
    assert_int_equal(r, RAW_FRAME);
    assert_int_equal(h.request_id, 200);
    assert_int_equal(h.status, 0);
    st = geoscale__cell_status_response__unpack(NULL, h.body_len, body);
    free(body);
    assert_non_null(st);
    assert_int_equal(st->node_id, b->c.nodes[b->follower].node_id);
    geoscale__cell_status_response__free_unpacked(st, NULL);
    e2e_log("(d) CellStatus on the same connection: ok");
    check_after(b, b->follower, &before, "(d)");
    b->cases_passed++;
}

static void test_not_protobuf(void **state)
{
    struct bad_ctx *b = *state;
    /* Field 1 (username), length-delimited, with a length far beyond the
     * body; and a field with an invalid wire type. */
    static const uint8_t truncated_len[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 'a'};
    static const uint8_t bad_wire_type[] = {0x0f, 0x01, 0x02, 0x03};
    const uint8_t *bodies[] = {truncated_len, bad_wire_type};
    size_t lens[] = {sizeof truncated_len, sizeof bad_wire_type};
    int nodes[] = {b->follower, b->leader};
    struct snapshot before;

    for (int n = 0; n < 2; n++) {
        take_snapshot(b, &before);
        for (int k = 0; k < 2; k++) {
            uint16_t st =
                call_raw(b, nodes[n], GEOSCALE__METHOD__METHOD_CREATE_USER, bodies[k], lens[k]);
            e2e_log("(e) CreateUser with a non-protobuf body #%d to node %u: %s", k,
                    b->c.nodes[nodes[n]].node_id, gs_error_name(st));
            /* INVALID per the test plan; errors.h names PROTOCOL for bad
             * protobuf, so either is a clear rejection. */
            assert_true(st == STATUS_OF(GS_EINVAL) || st == STATUS_OF(GS_EPROTO));
        }
        check_after(b, nodes[n], &before, "(e)");
    }
    b->cases_passed++;
}

static void test_missing_username(void **state)
{
    struct bad_ctx *b = *state;
    int nodes[] = {b->follower, b->leader};
    const char *bad_names[] = {
        NULL, "", "Not Valid!",
        "a_name_that_is_much_longer_than_sixty_four_bytes_which_is_the_limit"};
    struct snapshot before;

    for (int n = 0; n < 2; n++) {
        take_snapshot(b, &before);
        for (size_t k = 0; k < sizeof bad_names / sizeof bad_names[0]; k++) {
            Geoscale__CreateUserRequest req = GEOSCALE__CREATE_USER_REQUEST__INIT;
            uint8_t *body;
            size_t len;
            uint16_t st;
            if (bad_names[k] != NULL) {
                req.username = (char *)bad_names[k];
            }
            req.display_name = "No Username";
            req.email = "nobody@example.com";
            assert_int_equal(e2e_pack(&req.base, &body, &len), 0);
            st = call_raw(b, nodes[n], GEOSCALE__METHOD__METHOD_CREATE_USER, body, len);
            free(body);
            e2e_log("(f) CreateUser username %s%s%s to node %u: %s",
                    bad_names[k] == NULL ? "missing" : "\"", bad_names[k] ? bad_names[k] : "",
                    bad_names[k] == NULL ? "" : "\"", b->c.nodes[nodes[n]].node_id,
                    gs_error_name(st));
            if (k == 3) {
                /* Over the length limit: a field too big is also a clear
                 * answer. */
                assert_true(st == STATUS_OF(GS_EINVAL) || st == STATUS_OF(GS_ETOOBIG));
            } else {
                assert_int_equal(st, STATUS_OF(GS_EINVAL));
            }
        }
        check_after(b, nodes[n], &before, "(f)");
    }
    b->cases_passed++;
}

static void test_big_bio(void **state)
{
    struct bad_ctx *b = *state;
    int nodes[] = {b->follower, b->leader};
    Geoscale__CreateUserRequest req = GEOSCALE__CREATE_USER_REQUEST__INIT;
    struct snapshot before;
    struct wire_header h;
    uint8_t hdr[WIRE_HEADER_SIZE];
    uint8_t *body = NULL;
    uint8_t *resp = NULL;
    char *bio;
    size_t len;
    enum raw_result r;
    int fd;

    /* 10 MB bio: the frame is over the 4 MiB limit. */
    take_snapshot(b, &before);
    bio = malloc(10 * 1000 * 1000 + 1);
    assert_non_null(bio);
    memset(bio, 'x', 10 * 1000 * 1000);
    bio[10 * 1000 * 1000] = '\0';
    req.username = "big_bio_frame";
    req.bio = bio;
    assert_int_equal(e2e_pack(&req.base, &body, &len), 0);
    free(bio);
    assert_true(len > WIRE_DEFAULT_MAX_BODY);
    fd = raw_connect(b->c.nodes[b->follower].client_address);
    assert_true(fd >= 0);
    request_header(b, &h, GEOSCALE__METHOD__METHOD_CREATE_USER, 7, (uint32_t)len);
    wire_header_encode(&h, hdr);
    assert_int_equal(raw_send(fd, hdr, sizeof hdr), 0);
    /* A node that checks the length answers after the header; send the body
     * only if it waits for it. */
    r = raw_read_frame(fd, 3000, &h, &resp);
    if (r == RAW_TIMEOUT) {
        e2e_log("(g) no answer to the header alone; sending the 10 MB body");
        raw_send(fd, body, len);
        r = raw_read_frame(fd, 10000, &h, &resp);
    }
    close(fd);
    free(body);
    free(resp);
    e2e_log("(g) 10 MB bio (%zu byte frame): %s%s%s", len, raw_result_name(r),
            r == RAW_FRAME ? " status " : "", r == RAW_FRAME ? gs_error_name(h.status) : "");
    assert_int_equal(r, RAW_FRAME);
    assert_int_equal(h.request_id, 7);
    assert_int_equal(h.status, STATUS_OF(GS_ETOOBIG));
    check_after(b, b->follower, &before, "(g) 10 MB");

    /* 10 KiB bio: a legal frame, rejected by validation. */
    bio = malloc(10 * 1024 + 1);
    assert_non_null(bio);
    memset(bio, 'y', 10 * 1024);
    bio[10 * 1024] = '\0';
    req.username = "big_bio_field";
    req.bio = bio;
    assert_int_equal(e2e_pack(&req.base, &body, &len), 0);
    free(bio);
    for (int n = 0; n < 2; n++) {
        uint16_t st;
        take_snapshot(b, &before);
        st = call_raw(b, nodes[n], GEOSCALE__METHOD__METHOD_CREATE_USER, body, len);
        e2e_log("(g) 10 KiB bio to node %u: %s", b->c.nodes[nodes[n]].node_id, gs_error_name(st));
        assert_int_equal(st, STATUS_OF(GS_ETOOBIG));
        check_after(b, nodes[n], &before, "(g) 10 KiB");
    }
    free(body);
    b->cases_passed++;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_bytes),     cmocka_unit_test(test_truncated_frame),
        cmocka_unit_test(test_oversized_length), cmocka_unit_test(test_unknown_method),
        cmocka_unit_test(test_not_protobuf),     cmocka_unit_test(test_missing_username),
        cmocka_unit_test(test_big_bio),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
