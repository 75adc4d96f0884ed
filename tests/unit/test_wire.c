/*
 * Unit tests of the frame codec (net/wire.c): header layout byte by byte,
 * incremental reading in every chunking, limits and protocol errors.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "geoscale/errors.h"
#include "net/wire.h"

static struct wire_header sample_header(uint32_t body_len)
{
    struct wire_header h = {
        .version = WIRE_VERSION,
        .type = WIRE_TYPE_RESPONSE,
        .method = 0x0102,
        .request_id = 0x1112131415161718ull,
        .client_id = 0x2122232425262728ull,
        .client_seq = 0x3132333435363738ull,
        .deadline_ms = 0x41424344u,
        .status = 0x5152,
        .flags = 0x6162,
        .leader_id = 0x71727374u,
        .body_len = body_len,
    };
    return h;
}

/* Build header + body (body byte i = seed + i) into a malloc'd buffer. */
static uint8_t *make_frame(const struct wire_header *h, uint8_t seed, size_t *len)
{
    uint8_t *f = malloc(WIRE_HEADER_SIZE + h->body_len + 1);
    assert_non_null(f);
    wire_header_encode(h, f);
    for (uint32_t i = 0; i < h->body_len; i++) {
        f[WIRE_HEADER_SIZE + i] = (uint8_t)(seed + i);
    }
    *len = WIRE_HEADER_SIZE + h->body_len;
    return f;
}

static void assert_header_equal(const struct wire_header *a, const struct wire_header *b)
{
    assert_int_equal(a->version, b->version);
    assert_int_equal(a->type, b->type);
    assert_int_equal(a->method, b->method);
    assert_true(a->request_id == b->request_id);
    assert_true(a->client_id == b->client_id);
    assert_true(a->client_seq == b->client_seq);
    assert_int_equal(a->deadline_ms, b->deadline_ms);
    assert_int_equal(a->status, b->status);
    assert_int_equal(a->flags, b->flags);
    assert_int_equal(a->leader_id, b->leader_id);
    assert_int_equal(a->body_len, b->body_len);
}

/* Every field lands at its documented offset, big-endian, and decodes back. */
static void test_header_round_trip(void **state)
{
    struct wire_header h = sample_header(0x00000009), d;
    uint8_t b[WIRE_HEADER_SIZE];
    static const uint8_t expect[WIRE_HEADER_SIZE] = {
        0x47, 0x53, 0x50, 0x31,                         /* magic "GSP1" */
        0x01,                                           /* version */
        0x02,                                           /* type */
        0x01, 0x02,                                     /* method */
        0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, /* request_id */
        0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, /* client_id */
        0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, /* client_seq */
        0x41, 0x42, 0x43, 0x44,                         /* deadline_ms */
        0x51, 0x52,                                     /* status */
        0x61, 0x62,                                     /* flags */
        0x71, 0x72, 0x73, 0x74,                         /* leader_id */
        0x00, 0x00, 0x00, 0x09,                         /* body_len */
    };
    (void)state;

    wire_header_encode(&h, b);
    assert_memory_equal(b, expect, sizeof expect);
    assert_int_equal(wire_header_decode(b, 100, &d), 0);
    assert_header_equal(&h, &d);

    /* A request header with the other type value also round-trips. */
    h.type = WIRE_TYPE_REQUEST;
    wire_header_encode(&h, b);
    assert_int_equal(b[5], 1);
    assert_int_equal(wire_header_decode(b, 100, &d), 0);
    assert_header_equal(&h, &d);
}

/* One byte at a time: the frame is ready exactly at its last byte. */
static void test_feed_byte_by_byte(void **state)
{
    struct wire_header h = sample_header(300), got;
    struct wire_reader r;
    size_t len;
    uint8_t *f = make_frame(&h, 7, &len);
    uint8_t *body = NULL;
    (void)state;

    wire_reader_init(&r, 1000);
    for (size_t i = 0; i < len; i++) {
        int ready = -1;
        long n = wire_reader_feed(&r, f + i, 1, &ready);
        assert_int_equal(n, 1);
        assert_int_equal(ready, i == len - 1);
    }
    wire_reader_take(&r, &got, &body);
    assert_header_equal(&h, &got);
    assert_non_null(body);
    assert_memory_equal(body, f + WIRE_HEADER_SIZE, 300);
    free(body);
    /* The reader is reset: the same frame can follow. */
    {
        int ready;
        assert_int_equal(wire_reader_feed(&r, f, len, &ready), (long)len);
        assert_int_equal(ready, 1);
        wire_reader_take(&r, &got, &body);
        assert_memory_equal(body, f + WIRE_HEADER_SIZE, 300);
        free(body);
    }
    wire_reader_close(&r);
    free(f);
}

/* Three frames back to back in one buffer, one with an empty body; the reader
 * stops at each frame's end. */
static void test_multiple_frames_in_one_buffer(void **state)
{
    uint32_t lens[3] = {5, 0, 17};
    uint8_t all[3 * WIRE_HEADER_SIZE + 22];
    size_t total = 0, off = 0;
    struct wire_reader r;
    int frames = 0;
    (void)state;

    for (int i = 0; i < 3; i++) {
        struct wire_header h = sample_header(lens[i]);
        size_t len;
        uint8_t *f;
        h.request_id = (uint64_t)i + 1;
        f = make_frame(&h, (uint8_t)(i * 50), &len);
        memcpy(all + total, f, len);
        total += len;
        free(f);
    }
    assert_int_equal(total, sizeof all);
    wire_reader_init(&r, 64);
    while (off < total) {
        int ready;
        long n = wire_reader_feed(&r, all + off, total - off, &ready);
        assert_true(n > 0);
        off += (size_t)n;
        if (ready) {
            struct wire_header h;
            uint8_t *body;
            int rv;
            /* Without take, the reader consumes nothing more. */
            rv = (int)wire_reader_feed(&r, all + off, total - off, &ready);
            assert_int_equal(rv, 0);
            assert_int_equal(ready, 1);
            wire_reader_take(&r, &h, &body);
            assert_true(h.request_id == (uint64_t)frames + 1);
            assert_int_equal(h.body_len, lens[frames]);
            if (lens[frames] == 0) {
                assert_null(body);
            } else {
                assert_int_equal(body[0], (uint8_t)(frames * 50));
                assert_int_equal(body[lens[frames] - 1], (uint8_t)(frames * 50 + lens[frames] - 1));
            }
            free(body);
            frames++;
        }
    }
    assert_int_equal(frames, 3);
    wire_reader_close(&r);
}

/* An oversized body_len is refused from the header alone: nothing allocated,
 * error sticky, request_id still readable for the error response. */
static void test_oversize_rejected_before_allocation(void **state)
{
    struct wire_header h = sample_header(0xFFFFFFF0u), d;
    uint8_t b[WIRE_HEADER_SIZE + 4] = {0};
    struct wire_reader r;
    int ready = 7;
    (void)state;

    wire_header_encode(&h, b);
    assert_int_equal(wire_header_decode(b, 16, &d), GS_ETOOBIG);
    assert_true(d.request_id == h.request_id);

    wire_reader_init(&r, 16);
    assert_int_equal(wire_reader_feed(&r, b, sizeof b, &ready), GS_ETOOBIG);
    assert_int_equal(ready, 0);
    assert_null(r.body);
    assert_true(r.header.request_id == h.request_id);
    /* Sticky. */
    assert_int_equal(wire_reader_feed(&r, b, 1, &ready), GS_ETOOBIG);
    assert_null(r.body);
    wire_reader_close(&r);

    /* Exactly max_body is accepted. */
    h = sample_header(16);
    wire_header_encode(&h, b);
    assert_int_equal(wire_header_decode(b, 16, &d), 0);
}

static void expect_proto_error(uint8_t *b, int check_request_id)
{
    struct wire_header d;
    struct wire_reader r;
    int ready;

    assert_int_equal(wire_header_decode(b, 100, &d), GS_EPROTO);
    if (check_request_id) {
        assert_true(d.request_id == 0x1112131415161718ull);
    }
    wire_reader_init(&r, 100);
    /* Byte by byte: the error shows when the header is complete. */
    for (int i = 0; i < WIRE_HEADER_SIZE - 1; i++) {
        assert_int_equal(wire_reader_feed(&r, b + i, 1, &ready), 1);
    }
    assert_int_equal(wire_reader_feed(&r, b + WIRE_HEADER_SIZE - 1, 1, &ready), GS_EPROTO);
    assert_int_equal(r.error, GS_EPROTO);
    assert_int_equal(wire_reader_feed(&r, b, WIRE_HEADER_SIZE, &ready), GS_EPROTO);
    assert_int_equal(ready, 0);
    assert_null(r.body);
    wire_reader_close(&r);
}

static void test_bad_magic_version_type(void **state)
{
    struct wire_header h = sample_header(4);
    uint8_t b[WIRE_HEADER_SIZE];
    (void)state;

    wire_header_encode(&h, b);
    b[3] = '2'; /* "GSP2" */
    expect_proto_error(b, 0);

    wire_header_encode(&h, b);
    b[4] = 2; /* version */
    expect_proto_error(b, 1);

    wire_header_encode(&h, b);
    b[4] = 0;
    expect_proto_error(b, 1);

    wire_header_encode(&h, b);
    b[5] = 3; /* type */
    expect_proto_error(b, 1);

    wire_header_encode(&h, b);
    b[5] = 0;
    expect_proto_error(b, 1);
}

/* body_len 0: ready right after the header, body NULL. */
static void test_zero_length_body(void **state)
{
    struct wire_header h = sample_header(0), got;
    uint8_t b[WIRE_HEADER_SIZE + 3];
    struct wire_reader r;
    uint8_t *body = (uint8_t *)&r;
    int ready;
    (void)state;

    wire_header_encode(&h, b);
    memset(b + WIRE_HEADER_SIZE, 0xAA, 3); /* start of a next frame */
    wire_reader_init(&r, 0);
    assert_int_equal(wire_reader_feed(&r, b, sizeof b, &ready), WIRE_HEADER_SIZE);
    assert_int_equal(ready, 1);
    wire_reader_take(&r, &got, &body);
    assert_null(body);
    assert_header_equal(&h, &got);
    wire_reader_close(&r);
}

/* A truncated header yields no frame and no error, and completes later. */
static void test_truncated_header(void **state)
{
    struct wire_header h = sample_header(2), got;
    uint8_t b[WIRE_HEADER_SIZE + 2] = {0};
    struct wire_reader r;
    uint8_t *body;
    int ready;
    (void)state;

    wire_header_encode(&h, b);
    wire_reader_init(&r, 100);
    assert_int_equal(wire_reader_feed(&r, b, WIRE_HEADER_SIZE - 1, &ready), WIRE_HEADER_SIZE - 1);
    assert_int_equal(ready, 0);
    assert_int_equal(r.error, 0);
    assert_null(r.body);
    /* Empty feeds change nothing. */
    assert_int_equal(wire_reader_feed(&r, b, 0, &ready), 0);
    assert_int_equal(ready, 0);
    /* Last header byte, then the body. */
    assert_int_equal(wire_reader_feed(&r, b + WIRE_HEADER_SIZE - 1, 1, &ready), 1);
    assert_int_equal(ready, 0);
    assert_int_equal(wire_reader_feed(&r, b + WIRE_HEADER_SIZE, 2, &ready), 2);
    assert_int_equal(ready, 1);
    wire_reader_take(&r, &got, &body);
    assert_header_equal(&h, &got);
    free(body);
    /* Closing a reader with a partial frame frees its body. */
    assert_int_equal(wire_reader_feed(&r, b, WIRE_HEADER_SIZE + 1, &ready), WIRE_HEADER_SIZE + 1);
    assert_non_null(r.body);
    wire_reader_close(&r);
    assert_null(r.body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_round_trip),
        cmocka_unit_test(test_feed_byte_by_byte),
        cmocka_unit_test(test_multiple_frames_in_one_buffer),
        cmocka_unit_test(test_oversize_rejected_before_allocation),
        cmocka_unit_test(test_bad_magic_version_type),
        cmocka_unit_test(test_zero_length_body),
        cmocka_unit_test(test_truncated_header),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
