/*
 * Unit tests of the committed-row cache (engine/rcache.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/keys.h"
#include "engine/rcache.h"

static void key_of(struct key *k, uint64_t id)
{
    key_id(k, KEY_PREFIX_USER, id);
}

static void put_id(struct rcache *c, uint64_t id, uint64_t v)
{
    struct key k;
    uint8_t b[8];
    key_of(&k, id);
    key_put_u64(b, v);
    rcache_put(c, k.b, k.len, b, sizeof b);
}

/* 1 and *v if cached as a row, else 0 (-1: cached as absent). */
static int get_id(struct rcache *c, uint64_t id, uint64_t *v)
{
    struct key k;
    const uint8_t *p = NULL;
    size_t n = 0;
    key_of(&k, id);
    enum rcache_found f = rcache_get(c, k.b, k.len, &p, &n);
    if (f == RCACHE_ABSENT) {
        return -1;
    }
    if (f == RCACHE_MISS) {
        return 0;
    }
    assert_int_equal(f, RCACHE_ROW);
    assert_int_equal(n, 8);
    *v = key_get_u64(p);
    return 1;
}

static void test_put_get_update(void **state)
{
    (void)state;
    struct rcache c;
    struct key k;
    uint64_t v = 0;
    rcache_init(&c);
    assert_int_equal(get_id(&c, 1, &v), 0);
    put_id(&c, 1, 10);
    assert_int_equal(get_id(&c, 1, &v), 1);
    assert_int_equal(v, 10);
    /* A committed write of a cached key replaces it ... */
    uint8_t b[8];
    key_of(&k, 1);
    key_put_u64(b, 11);
    rcache_update(&c, k.b, k.len, b, sizeof b);
    assert_int_equal(get_id(&c, 1, &v), 1);
    assert_int_equal(v, 11);
    /* ... of a key not cached adds nothing ... */
    key_of(&k, 2);
    rcache_update(&c, k.b, k.len, b, sizeof b);
    assert_int_equal(get_id(&c, 2, &v), 0);
    /* ... and a delete drops it. */
    key_of(&k, 1);
    rcache_update(&c, k.b, k.len, NULL, 0);
    assert_int_equal(get_id(&c, 1, &v), 0);
    assert_int_equal(c.n_rows, 0);
    /* A longer value than the one it replaces, then a shorter one. */
    rcache_put(&c, k.b, k.len, "ab", 2);
    rcache_put(&c, k.b, k.len, "abcdef", 6);
    rcache_put(&c, k.b, k.len, "xyz", 3);
    const uint8_t *p = NULL;
    size_t n = 0;
    assert_int_equal(rcache_get(&c, k.b, k.len, &p, &n), RCACHE_ROW);
    assert_int_equal(n, 3);
    assert_memory_equal(p, "xyz", 3);
    /* A value too large to cache replaces nothing stale. */
    char *big = calloc(1, RCACHE_MAX_VALUE + 1);
    rcache_put(&c, k.b, k.len, big, RCACHE_MAX_VALUE + 1);
    assert_int_equal(rcache_get(&c, k.b, k.len, &p, &n), RCACHE_MISS);
    free(big);
    /* Clear forgets everything. */
    put_id(&c, 3, 30);
    rcache_clear(&c);
    assert_int_equal(get_id(&c, 3, &v), 0);
    rcache_free(&c);
}

/* A key cached as absent answers so until a committed write of it, which
 * drops it (the row written is cached when it is read, not before), as a
 * delete does; a row read later replaces it; absences count against the
 * row limit like rows. */
static void test_absent(void **state)
{
    (void)state;
    struct rcache c;
    struct key k;
    uint8_t b[8];
    uint64_t v = 0;
    rcache_init(&c);
    key_of(&k, 5);
    rcache_put_absent(&c, k.b, k.len);
    assert_int_equal(c.n_rows, 1);
    assert_int_equal(get_id(&c, 5, &v), -1);
    assert_int_equal(get_id(&c, 6, &v), 0);
    uint64_t hits = c.hits;
    assert_int_equal(get_id(&c, 5, &v), -1);
    assert_int_equal(c.hits, hits + 1);
    /* A committed put of an absent key drops the absence, and adds no row. */
    key_put_u64(b, 50);
    rcache_update(&c, k.b, k.len, b, sizeof b);
    assert_int_equal(get_id(&c, 5, &v), 0);
    assert_int_equal(c.n_rows, 0);
    /* A row can become absent again (a read after a delete) ... */
    put_id(&c, 5, 50);
    assert_int_equal(get_id(&c, 5, &v), 1);
    rcache_put_absent(&c, k.b, k.len);
    assert_int_equal(get_id(&c, 5, &v), -1);
    /* ... and a row read replaces an absence. */
    put_id(&c, 5, 51);
    assert_int_equal(get_id(&c, 5, &v), 1);
    assert_int_equal(v, 51);
    /* A committed delete drops an absence like a row. */
    rcache_put_absent(&c, k.b, k.len);
    rcache_update(&c, k.b, k.len, NULL, 0);
    assert_int_equal(get_id(&c, 5, &v), 0);
    assert_int_equal(c.n_rows, 0);
    /* A committed empty value drops an absence too (an empty row is a row). */
    rcache_put_absent(&c, k.b, k.len);
    rcache_update(&c, k.b, k.len, "", 0);
    const uint8_t *p = NULL;
    size_t n = 1;
    assert_int_equal(rcache_get(&c, k.b, k.len, &p, &n), RCACHE_MISS);
    /* An empty row read is a row of length 0, not an absence. */
    rcache_put(&c, k.b, k.len, "", 0);
    assert_int_equal(rcache_get(&c, k.b, k.len, &p, &n), RCACHE_ROW);
    assert_int_equal(n, 0);
    /* Bounded: absences fill the table like rows. */
    rcache_clear(&c);
    uint64_t clears = c.clears;
    for (uint64_t i = 0; i < RCACHE_MAX_ROWS + 1; i++) {
        key_of(&k, i);
        rcache_put_absent(&c, k.b, k.len);
    }
    assert_int_equal(c.clears, clears + 1);
    assert_int_equal(c.n_rows, 1);
    assert_int_equal(c.arena_len, 0);
    rcache_free(&c);
}

/* Removals inside probe runs keep every other row reachable. */
static void test_removals_keep_rows_reachable(void **state)
{
    (void)state;
    enum { N = 20000 };
    struct rcache c;
    struct key k;
    uint64_t v = 0;
    rcache_init(&c);
    for (uint64_t i = 0; i < N; i++) {
        put_id(&c, i, i * 3);
    }
    assert_int_equal(c.n_rows, N);
    for (uint64_t i = 0; i < N; i += 3) {
        key_of(&k, i);
        rcache_update(&c, k.b, k.len, NULL, 0);
    }
    for (uint64_t i = 0; i < N; i++) {
        if (i % 3 == 0) {
            assert_int_equal(get_id(&c, i, &v), 0);
        } else {
            assert_int_equal(get_id(&c, i, &v), 1);
            assert_int_equal(v, i * 3);
        }
    }
    assert_int_equal(c.n_rows, N - (N + 2) / 3);
    rcache_free(&c);
}

/* The row limit and the arena limit each empty the cache; memory stays
 * bounded and the newest row is cached. */
static void test_bounds(void **state)
{
    (void)state;
    struct rcache c;
    uint64_t v = 0;
    rcache_init(&c);
    for (uint64_t i = 0; i < RCACHE_MAX_ROWS + 10; i++) {
        put_id(&c, i, i);
    }
    assert_int_equal(c.clears, 1);
    assert_int_equal(c.n_rows, 10);
    assert_int_equal(get_id(&c, RCACHE_MAX_ROWS + 9, &v), 1);
    assert_int_equal(get_id(&c, 0, &v), 0);

    rcache_clear(&c);
    uint64_t clears = c.clears;
    char *val = calloc(1, RCACHE_MAX_VALUE);
    struct key k;
    size_t per_fill = RCACHE_ARENA_BYTES / RCACHE_MAX_VALUE;
    for (uint64_t i = 0; i <= per_fill; i++) {
        key_of(&k, i);
        rcache_put(&c, k.b, k.len, val, RCACHE_MAX_VALUE);
    }
    assert_int_equal(c.clears, clears + 1);
    assert_int_equal(c.n_rows, 1);
    assert_true(c.arena_len <= RCACHE_ARENA_BYTES);
    const uint8_t *p = NULL;
    size_t n = 0;
    key_of(&k, per_fill);
    assert_int_equal(rcache_get(&c, k.b, k.len, &p, &n), RCACHE_ROW);
    assert_int_equal(n, RCACHE_MAX_VALUE);
    free(val);
    rcache_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_update),
        cmocka_unit_test(test_absent),
        cmocka_unit_test(test_removals_keep_rows_reachable),
        cmocka_unit_test(test_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
