/*
 * Unit tests of the cell Raft entry format (engine/entry.h): round trip,
 * header layout, total size a multiple of 8 with zero padding, and strict
 * rejection (GS_EPROTO) of truncated, padded-wrong, mis-versioned and
 * garbage input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/entry.h"
#include "geoscale/errors.h"

/* A batch of n commands with bodies of growing size. The caller frees the
 * returned buffer (encoded entry) with free(). */
static uint8_t *encode_batch(size_t n, size_t *len, size_t *body_len)
{
    Geoscale__CellBatch batch = GEOSCALE__CELL_BATCH__INIT;
    Geoscale__CellCommand cmds[16];
    Geoscale__CellCommand *ptrs[16];
    uint8_t data[64];
    assert_true(n <= 16);
    for (size_t i = 0; i < sizeof data; i++) {
        data[i] = (uint8_t)(i * 7 + 1);
    }
    batch.proposer_id = 3;
    batch.proposer_nonce = 0xdeadbeef;
    batch.proposal_seq = 77;
    batch.timestamp_ms = 1700000000000;
    for (size_t i = 0; i < n; i++) {
        geoscale__cell_command__init(&cmds[i]);
        cmds[i].method = (uint32_t)(i % 11 + 1);
        cmds[i].client_id = 1000 + i;
        cmds[i].client_seq = i;
        cmds[i].body.data = data;
        cmds[i].body.len = i * 3;
        ptrs[i] = &cmds[i];
    }
    batch.n_commands = n;
    batch.commands = ptrs;
    size_t size = entry_encoded_size(&batch);
    uint8_t *buf = malloc(size);
    assert_non_null(buf);
    memset(buf, 0xaa, size);
    assert_int_equal(entry_encode(&batch, buf), size);
    *len = size;
    *body_len = protobuf_c_message_get_packed_size(&batch.base);
    return buf;
}

static void test_round_trip(void **state)
{
    (void)state;
    size_t len = 0, body = 0;
    uint8_t *buf = encode_batch(5, &len, &body);
    Geoscale__CellBatch *out = NULL;
    assert_int_equal(entry_decode(buf, len, &out), 0);
    assert_non_null(out);
    assert_int_equal(out->proposer_id, 3);
    assert_int_equal(out->proposer_nonce, 0xdeadbeef);
    assert_int_equal(out->proposal_seq, 77);
    assert_true(out->timestamp_ms == 1700000000000);
    assert_int_equal(out->n_commands, 5);
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(out->commands[i]->method, i % 11 + 1);
        assert_int_equal(out->commands[i]->client_id, 1000 + i);
        assert_int_equal(out->commands[i]->client_seq, i);
        assert_int_equal(out->commands[i]->body.len, i * 3);
        for (size_t j = 0; j < i * 3; j++) {
            assert_int_equal(out->commands[i]->body.data[j], (uint8_t)(j * 7 + 1));
        }
    }
    geoscale__cell_batch__free_unpacked(out, NULL);
    free(buf);
}

static void test_empty_batch(void **state)
{
    (void)state;
    Geoscale__CellBatch batch = GEOSCALE__CELL_BATCH__INIT;
    uint8_t buf[8];
    assert_int_equal(entry_encoded_size(&batch), 8);
    assert_int_equal(entry_encode(&batch, buf), 8);
    const uint8_t want[8] = {ENTRY_FORMAT_V1, 0, 0, 0, 0, 0, 0, 0};
    assert_memory_equal(buf, want, 8);
    Geoscale__CellBatch *out = NULL;
    assert_int_equal(entry_decode(buf, 8, &out), 0);
    assert_int_equal(out->n_commands, 0);
    geoscale__cell_batch__free_unpacked(out, NULL);
}

static void test_header_and_padding(void **state)
{
    (void)state;
    for (size_t n = 0; n <= 16; n++) {
        size_t len = 0, body = 0;
        uint8_t *buf = encode_batch(n, &len, &body);
        assert_int_equal(len % 8, 0);
        assert_true(len >= ENTRY_HEADER_SIZE + body);
        assert_true(len < ENTRY_HEADER_SIZE + body + 8);
        assert_int_equal(buf[0], ENTRY_FORMAT_V1);
        assert_int_equal(buf[1] | buf[2] | buf[3], 0);
        size_t got =
            (size_t)buf[4] | (size_t)buf[5] << 8 | (size_t)buf[6] << 16 | (size_t)buf[7] << 24;
        assert_int_equal(got, body);
        for (size_t i = ENTRY_HEADER_SIZE + body; i < len; i++) {
            assert_int_equal(buf[i], 0); /* the 0xaa fill was overwritten */
        }
        free(buf);
    }
}

static void test_truncated(void **state)
{
    (void)state;
    size_t len = 0, body = 0;
    uint8_t *buf = encode_batch(7, &len, &body);
    for (size_t cut = 0; cut < len; cut++) {
        Geoscale__CellBatch *out = (Geoscale__CellBatch *)1;
        assert_int_equal(entry_decode(buf, cut, &out), GS_EPROTO);
        assert_null(out);
    }
    /* Extra zero bytes (a longer buffer) are rejected too. */
    uint8_t *longer = calloc(1, len + 8);
    memcpy(longer, buf, len);
    Geoscale__CellBatch *out = NULL;
    assert_int_equal(entry_decode(longer, len + 8, &out), GS_EPROTO);
    free(longer);
    free(buf);
}

static void test_garbage(void **state)
{
    (void)state;
    size_t len = 0, body = 0;
    uint8_t *buf = encode_batch(3, &len, &body);
    Geoscale__CellBatch *out = NULL;
    uint8_t *copy = malloc(len);

    assert_int_equal(entry_decode(NULL, 0, &out), GS_EPROTO);

    memcpy(copy, buf, len);
    copy[0] = 2; /* unknown format */
    assert_int_equal(entry_decode(copy, len, &out), GS_EPROTO);

    memcpy(copy, buf, len);
    copy[2] = 1; /* reserved byte */
    assert_int_equal(entry_decode(copy, len, &out), GS_EPROTO);

    memcpy(copy, buf, len);
    copy[7] = 0x10; /* body length beyond the buffer */
    assert_int_equal(entry_decode(copy, len, &out), GS_EPROTO);

    if (ENTRY_HEADER_SIZE + body < len) {
        memcpy(copy, buf, len);
        copy[len - 1] = 1; /* non-zero padding */
        assert_int_equal(entry_decode(copy, len, &out), GS_EPROTO);
    }

    /* A valid header over a body that is not a CellBatch. */
    uint8_t junk[24] = {ENTRY_FORMAT_V1, 0, 0, 0, 16, 0, 0, 0};
    memset(junk + 8, 0xff, 16);
    assert_int_equal(entry_decode(junk, sizeof junk, &out), GS_EPROTO);
    assert_null(out);

    /* Random bytes never decode to anything but GS_EPROTO or a batch. */
    srand(42);
    for (int round = 0; round < 2000; round++) {
        uint8_t rnd[64];
        for (size_t i = 0; i < sizeof rnd; i++) {
            rnd[i] = (uint8_t)rand();
        }
        size_t n = (size_t)(rand() % 8 + 1) * 8;
        int rv = entry_decode(rnd, n, &out);
        assert_true(rv == GS_EPROTO || rv == 0);
        if (rv == 0) {
            geoscale__cell_batch__free_unpacked(out, NULL);
        } else {
            assert_null(out);
        }
    }
    free(copy);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_empty_batch),
        cmocka_unit_test(test_header_and_padding),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_garbage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
