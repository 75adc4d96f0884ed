/*
 * Unit tests of the result marks (engine/rmarks.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "engine/rmarks.h"

static void test_set_get_raise(void **state)
{
    (void)state;
    struct rmarks m;
    uint64_t v = 0;
    rmarks_init(&m);
    assert_false(rmarks_get(&m, 1, &v));
    /* A client without a mark stays without when an outcome commits. */
    rmarks_raise(&m, 1, 5);
    assert_false(rmarks_get(&m, 1, &v));
    rmarks_set(&m, 1, 0);
    assert_true(rmarks_get(&m, 1, &v));
    assert_int_equal(v, 0);
    rmarks_raise(&m, 1, 5);
    assert_true(rmarks_get(&m, 1, &v));
    assert_int_equal(v, 5);
    /* Never lowered by an older outcome ... */
    rmarks_raise(&m, 1, 3);
    assert_true(rmarks_get(&m, 1, &v));
    assert_int_equal(v, 5);
    /* ... only set again from the DB. */
    rmarks_set(&m, 1, 2);
    assert_true(rmarks_get(&m, 1, &v));
    assert_int_equal(v, 2);
    /* Client 0 is never remembered. */
    rmarks_set(&m, 0, 9);
    assert_false(rmarks_get(&m, 0, &v));
    assert_int_equal(m.n, 1);
    rmarks_clear(&m);
    assert_false(rmarks_get(&m, 1, &v));
    rmarks_free(&m);
}

/* Many clients, colliding probe runs included, each keep their own mark;
 * the client limit forgets every mark, and memory stays bounded. */
static void test_many_and_bounded(void **state)
{
    (void)state;
    struct rmarks m;
    uint64_t v = 0;
    rmarks_init(&m);
    for (uint64_t c = 1; c <= RMARKS_MAX; c++) {
        rmarks_set(&m, c, c * 2);
    }
    assert_int_equal(m.n, RMARKS_MAX);
    assert_int_equal(m.clears, 0);
    for (uint64_t c = 1; c <= RMARKS_MAX; c++) {
        rmarks_raise(&m, c, c * 2 + (c % 2));
    }
    for (uint64_t c = 1; c <= RMARKS_MAX; c++) {
        assert_true(rmarks_get(&m, c, &v));
        assert_int_equal(v, c * 2 + (c % 2));
    }
    /* Setting an existing client adds nothing; a new one past the limit
     * forgets the rest. */
    rmarks_set(&m, 1, 7);
    assert_int_equal(m.n, RMARKS_MAX);
    rmarks_set(&m, RMARKS_MAX + 1, 1);
    assert_int_equal(m.clears, 1);
    assert_int_equal(m.n, 1);
    assert_false(rmarks_get(&m, 1, &v));
    assert_true(rmarks_get(&m, RMARKS_MAX + 1, &v));
    assert_int_equal(v, 1);
    rmarks_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_get_raise),
        cmocka_unit_test(test_many_and_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
