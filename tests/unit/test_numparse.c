/* gs_parse_u64: strict decimals in a range; anything else refused with the
 * output untouched. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "engine/numparse.h"

static void test_accepts(void **state)
{
    (void)state;
    uint64_t v = 1;
    assert_int_equal(gs_parse_u64("0", 0, 10, &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(gs_parse_u64("007", 0, 10, &v), 0);
    assert_int_equal(v, 7);
    assert_int_equal(gs_parse_u64("10", 0, 10, &v), 0); /* max included */
    assert_int_equal(v, 10);
    assert_int_equal(gs_parse_u64("3", 3, 3, &v), 0); /* min included */
    assert_int_equal(v, 3);
    assert_int_equal(gs_parse_u64("18446744073709551615", 0, UINT64_MAX, &v), 0);
    assert_true(v == UINT64_MAX);
}

static void test_refuses(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",     " 5", "5 ",  "+5",  "-5",  "-0",
        "0x10", "5k", "1e3", "5.0", "\t5", "18446744073709551616", /* one past UINT64_MAX */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t v = 42;
        assert_int_equal(gs_parse_u64(bad[i], 0, UINT64_MAX, &v), -1);
        assert_int_equal(v, 42);
    }
    uint64_t v = 42;
    assert_int_equal(gs_parse_u64(NULL, 0, 10, &v), -1);
    assert_int_equal(gs_parse_u64("11", 0, 10, &v), -1); /* above max */
    assert_int_equal(gs_parse_u64("2", 3, 10, &v), -1);  /* below min */
    assert_int_equal(v, 42);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepts),
        cmocka_unit_test(test_refuses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
