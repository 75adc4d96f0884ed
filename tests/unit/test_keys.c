/*
 * Unit tests of the cell key layout (engine/keys.h): exact byte encoding,
 * decode round trips and rejection of foreign keys, byte order == numeric
 * order (what the prefix scans rely on), distinct prefixes per family, and
 * that a username never appears in its key.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/keys.h"

static int key_cmp(const struct key *a, const struct key *b)
{
    size_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->b, b->b, n);
    if (c != 0) {
        return c;
    }
    return a->len < b->len ? -1 : a->len > b->len ? 1 : 0;
}

static void test_u64_big_endian(void **state)
{
    (void)state;
    uint8_t buf[8];
    key_put_u64(buf, UINT64_C(0x0102030405060708));
    const uint8_t want[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    assert_memory_equal(buf, want, 8);
    assert_int_equal(key_get_u64(buf), UINT64_C(0x0102030405060708));
    key_put_u64(buf, UINT64_MAX);
    assert_true(key_get_u64(buf) == UINT64_MAX);
}

static void test_id_key(void **state)
{
    (void)state;
    struct key k;
    uint64_t id = 0;
    key_id(&k, KEY_PREFIX_USER, (UINT64_C(7) << 40) | 42);
    assert_int_equal(k.len, KEY_ID_LEN);
    const uint8_t want[KEY_ID_LEN] = {'U', 0, 0, 7, 0, 0, 0, 0, 42};
    assert_memory_equal(k.b, want, KEY_ID_LEN);
    assert_true(key_decode_id(k.b, k.len, KEY_PREFIX_USER, &id));
    assert_true(id == ((UINT64_C(7) << 40) | 42));
    /* Wrong prefix or length: rejected, output untouched. */
    id = 99;
    assert_false(key_decode_id(k.b, k.len, KEY_PREFIX_COUNTS, &id));
    assert_false(key_decode_id(k.b, k.len - 1, KEY_PREFIX_USER, &id));
    assert_int_equal(id, 99);
}

static void test_pair_key(void **state)
{
    (void)state;
    struct key k;
    uint64_t a = 0, b = 0;
    key_pair(&k, KEY_PREFIX_FOLLOWER, 0x1122, 0x3344);
    assert_int_equal(k.len, KEY_PAIR_LEN);
    assert_int_equal(k.b[0], 'F');
    assert_int_equal(k.b[7], 0x11);
    assert_int_equal(k.b[8], 0x22);
    assert_int_equal(k.b[15], 0x33);
    assert_int_equal(k.b[16], 0x44);
    assert_true(key_decode_pair(k.b, k.len, KEY_PREFIX_FOLLOWER, &a, &b));
    assert_int_equal(a, 0x1122);
    assert_int_equal(b, 0x3344);
    assert_false(key_decode_pair(k.b, k.len, KEY_PREFIX_FOLLOWING, &a, &b));
    assert_false(key_decode_pair(k.b, KEY_ID_LEN, KEY_PREFIX_FOLLOWER, &a, &b));
}

/* Byte order of pair keys is (a, b) numeric order, across byte boundaries. */
static void test_pair_ordering(void **state)
{
    (void)state;
    const uint64_t ids[] = {0,
                            1,
                            2,
                            255,
                            256,
                            257,
                            65535,
                            65536,
                            UINT64_C(1) << 40,
                            (UINT64_C(1) << 40) + 1,
                            UINT64_C(0xff00000000),
                            UINT64_MAX - 1,
                            UINT64_MAX};
    const size_t n = sizeof ids / sizeof ids[0];
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < n; j++) {
            for (size_t x = 0; x < n; x++) {
                struct key k1, k2;
                key_pair(&k1, KEY_PREFIX_FOLLOWING, ids[i], ids[x]);
                key_pair(&k2, KEY_PREFIX_FOLLOWING, ids[j], ids[(x + 3) % n]);
                int want;
                if (ids[i] != ids[j]) {
                    want = ids[i] < ids[j] ? -1 : 1;
                } else if (ids[x] != ids[(x + 3) % n]) {
                    want = ids[x] < ids[(x + 3) % n] ? -1 : 1;
                } else {
                    want = 0;
                }
                int got = key_cmp(&k1, &k2);
                got = got < 0 ? -1 : got > 0 ? 1 : 0;
                assert_int_equal(got, want);
            }
        }
    }
    /* The id scan start key ('F' + a) sorts before every pair under a and
     * after every pair under a - 1. */
    struct key start, before, first;
    key_id(&start, KEY_PREFIX_FOLLOWER, 256);
    key_pair(&before, KEY_PREFIX_FOLLOWER, 255, UINT64_MAX);
    key_pair(&first, KEY_PREFIX_FOLLOWER, 256, 0);
    assert_true(key_cmp(&before, &start) < 0);
    assert_true(key_cmp(&start, &first) < 0);
}

static void test_result_time_key(void **state)
{
    (void)state;
    struct key k1, k2;
    int64_t ts = 0;
    uint64_t cid = 0, seq = 0;
    key_result_time(&k1, 1700000000123, 5, 6);
    assert_int_equal(k1.len, KEY_RESULT_TIME_LEN);
    assert_int_equal(k1.b[0], 'r');
    assert_true(key_decode_result_time(k1.b, k1.len, &ts, &cid, &seq));
    assert_true(ts == 1700000000123);
    assert_int_equal(cid, 5);
    assert_int_equal(seq, 6);
    /* Time order is byte order, negative times included. */
    const int64_t times[] = {INT64_MIN, -5, -1, 0, 1, 1000, INT64_MAX};
    for (size_t i = 0; i + 1 < sizeof times / sizeof times[0]; i++) {
        key_result_time(&k1, times[i], UINT64_MAX, UINT64_MAX);
        key_result_time(&k2, times[i + 1], 0, 0);
        assert_true(key_cmp(&k1, &k2) < 0);
        assert_true(key_decode_result_time(k1.b, k1.len, &ts, &cid, &seq));
        assert_true(ts == times[i]);
    }
    assert_false(key_decode_result_time(k1.b, k1.len - 1, &ts, &cid, &seq));
    k1.b[0] = 'R';
    assert_false(key_decode_result_time(k1.b, k1.len, &ts, &cid, &seq));
}

static void test_system_keys(void **state)
{
    (void)state;
    struct key k;
    key_system(&k, KEY_SYS_APPLIED_INDEX);
    assert_int_equal(k.len, 1 + strlen("applied_index"));
    assert_int_equal(k.b[0], 'S');
    assert_memory_equal(k.b + 1, "applied_index", k.len - 1);
    assert_true(key_is_system(k.b, k.len, KEY_SYS_APPLIED_INDEX));
    assert_false(key_is_system(k.b, k.len, KEY_SYS_SCHEMA));
    assert_false(key_is_system(k.b, k.len - 1, KEY_SYS_APPLIED_INDEX));
    key_system(&k, KEY_SYS_NEXT_USER_SEQ);
    assert_false(key_is_system(k.b, k.len, KEY_SYS_APPLIED_INDEX));
}

static void test_prefixes_distinct(void **state)
{
    (void)state;
    const uint8_t p[] = {KEY_PREFIX_SYSTEM, KEY_PREFIX_USER,       KEY_PREFIX_USERNAME,
                         KEY_PREFIX_COUNTS, KEY_PREFIX_FOLLOWER,   KEY_PREFIX_FOLLOWING,
                         KEY_PREFIX_BLOCK,  KEY_PREFIX_BLOCKED_BY, KEY_PREFIX_SETTINGS,
                         KEY_PREFIX_RESULT, KEY_PREFIX_RESULT_TIME};
    for (size_t i = 0; i < sizeof p; i++) {
        for (size_t j = i + 1; j < sizeof p; j++) {
            assert_int_not_equal(p[i], p[j]);
        }
    }
}

static void test_username_hash(void **state)
{
    (void)state;
    const uint8_t key1[32] = {1, 2, 3};
    const uint8_t key2[32] = {1, 2, 4};
    const char *name = "alice.canary_zz";
    uint8_t h1[32], h2[32], h3[32], h4[32];
    key_username_hash(key1, sizeof key1, name, strlen(name), h1);
    key_username_hash(key1, sizeof key1, name, strlen(name), h2);
    key_username_hash(key2, sizeof key2, name, strlen(name), h3);
    key_username_hash(key1, sizeof key1, "alice.canary_zy", strlen(name), h4);
    assert_memory_equal(h1, h2, 32);     /* deterministic */
    assert_memory_not_equal(h1, h3, 32); /* keyed */
    assert_memory_not_equal(h1, h4, 32); /* name-dependent */

    struct key k;
    key_username(&k, h1);
    assert_int_equal(k.len, KEY_USERNAME_LEN);
    assert_int_equal(k.b[0], 'N');
    assert_memory_equal(k.b + 1, h1, 32);
    /* No trace of the name in the key. */
    assert_null(memmem(k.b, k.len, "alice", 5));
    assert_null(memmem(k.b, k.len, "canary", 6));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_u64_big_endian),    cmocka_unit_test(test_id_key),
        cmocka_unit_test(test_pair_key),          cmocka_unit_test(test_pair_ordering),
        cmocka_unit_test(test_result_time_key),   cmocka_unit_test(test_system_keys),
        cmocka_unit_test(test_prefixes_distinct), cmocka_unit_test(test_username_hash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
