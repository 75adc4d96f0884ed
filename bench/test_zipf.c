/*
 * Unit test of the bench's Zipf choice (bench/zipf.h): the uniform case, the
 * edges of the table, and the empirical frequencies against the exact
 * probabilities.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>
#include <math.h>

#include "zipf.h"

static double next_unit(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(*s >> 11) / 9007199254740992.0;
}

static void test_uniform(void **state)
{
    (void)state;
    struct zipf z;

    assert_int_equal(zipf_init(&z, 10, 0), 0);
    assert_null(z.cdf);
    assert_int_equal(zipf_draw(&z, 0.0), 0);
    assert_int_equal(zipf_draw(&z, 0.35), 3);
    assert_int_equal(zipf_draw(&z, 0.9999999), 9);
    zipf_free(&z);
    /* One item: always it. */
    assert_int_equal(zipf_init(&z, 1, 0.99), 0);
    assert_int_equal(zipf_draw(&z, 0.5), 0);
    zipf_free(&z);
}

static void test_edges(void **state)
{
    (void)state;
    struct zipf z;
    size_t prev = 0;

    assert_int_equal(zipf_init(&z, 1000, 0.99), 0);
    assert_non_null(z.cdf);
    assert_true(z.cdf[999] == 1.0);
    assert_int_equal(zipf_draw(&z, 0.0), 0);
    assert_int_equal(zipf_draw(&z, 0.999999999999), 999);
    for (double u = 0; u < 1; u += 0.001) { /* monotone in u */
        size_t r = zipf_draw(&z, u);
        assert_true(r >= prev && r < 1000);
        prev = r;
    }
    zipf_free(&z);
    assert_null(z.cdf);
}

/* s = 1 over 10 items: P(r) = 1 / ((r + 1) H_10). 400,000 draws: each
 * frequency within 2% of its probability (several standard deviations). */
static void test_frequencies(void **state)
{
    (void)state;
    struct zipf z;
    size_t counts[10] = {0};
    double h = 0;
    uint64_t seed = 42;
    const int draws = 400000;

    assert_int_equal(zipf_init(&z, 10, 1.0), 0);
    for (int r = 1; r <= 10; r++) {
        h += 1.0 / r;
    }
    for (int i = 0; i < draws; i++) {
        counts[zipf_draw(&z, next_unit(&seed))]++;
    }
    for (int r = 0; r < 10; r++) {
        double want = 1.0 / ((r + 1) * h);
        double got = (double)counts[r] / draws;
        if (fabs(got - want) > 0.02 * want) {
            fail_msg("rank %d: frequency %.5f, probability %.5f", r, got, want);
        }
    }
    /* The head is heavier than the tail by the ratio of the probabilities. */
    assert_true(counts[0] > 9 * counts[9]);
    zipf_free(&z);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uniform),
        cmocka_unit_test(test_edges),
        cmocka_unit_test(test_frequencies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
