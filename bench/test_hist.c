/*
 * Unit test of the bench histogram (bench/hist.h): bucket layout, the
 * relative error bound, quantiles by nearest rank, exact count, mean and max,
 * and merging.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>
#include <math.h>

#include "hist.h"

static struct hist *new_hist(void)
{
    struct hist *h = malloc(sizeof *h);
    assert_non_null(h);
    hist_init(h);
    return h;
}

/* |got - want| <= rel * want */
static void assert_close(double got, double want, double rel)
{
    if (fabs(got - want) > rel * want) {
        fail_msg("got %.3f, want %.3f within %.2f%%", got, want, rel * 100);
    }
}

static void test_empty(void **state)
{
    (void)state;
    struct hist *h = new_hist();
    assert_int_equal(h->n, 0);
    assert_true(hist_quantile(h, 0.5) == 0);
    assert_true(hist_quantile(h, 1.0) == 0);
    assert_true(hist_mean(h) == 0);
    free(h);
}

/* Small values have a bucket each; every value lies in its bucket's range,
 * and buckets grow with the value, without gaps. */
static void test_buckets(void **state)
{
    (void)state;
    double lo, hi;

    for (uint64_t v = 0; v < 2 * HIST_SUB_COUNT; v++) {
        assert_int_equal(hist_bucket(v), v);
    }
    size_t prev = 0;
    double prev_hi = 1;
    for (uint64_t v = 1; v < (1ull << 40); v += 1 + v / 300) {
        size_t b = hist_bucket(v);
        assert_true(b < HIST_BUCKETS);
        assert_true(b >= prev);
        hist_bucket_range(b, &lo, &hi);
        assert_true((double)v >= lo && (double)v < hi);
        if (b == prev + 1) {
            assert_true(lo == prev_hi); /* contiguous */
        }
        prev = b;
        prev_hi = hi;
    }
    /* The extremes fit. */
    assert_true(hist_bucket(UINT64_MAX) == HIST_BUCKETS - 1);
    hist_bucket_range(hist_bucket(UINT64_MAX), &lo, &hi);
    assert_true((double)UINT64_MAX >= lo && (double)UINT64_MAX <= hi);
    /* Powers of two start a bucket. */
    for (unsigned e = HIST_SUB_BITS; e < 64; e++) {
        hist_bucket_range(hist_bucket(1ull << e), &lo, &hi);
        assert_true(lo == ldexp(1.0, (int)e));
    }
}

/* From 1 us to 60 s (in ns), the reported value of a lone value, i.e. the
 * middle of its bucket, is within 1% (in fact 0.4%) of it. */
static void test_relative_error(void **state)
{
    (void)state;
    double worst = 0;
    uint64_t seed = 12345;

    for (int i = 0; i < 200000; i++) {
        /* log-uniform in [1e3, 6e10] */
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        double u = (double)(seed >> 11) / 9007199254740992.0;
        uint64_t v = (uint64_t)exp(log(1e3) + u * (log(6e10) - log(1e3)));
        double lo, hi;
        hist_bucket_range(hist_bucket(v), &lo, &hi);
        double err = fabs((lo + hi) / 2 - (double)v) / (double)v;
        if (err > worst) {
            worst = err;
        }
        assert_true((hi - lo) / lo <= 1.0 / HIST_SUB_COUNT + 1e-12);
    }
    assert_true(worst < 0.004);
    assert_true(worst > 0.0001); /* the buckets do round */
}

/* 1 .. 100000 us: quantiles by nearest rank within 0.4%, exact max, mean. */
static void test_quantiles(void **state)
{
    (void)state;
    struct hist *h = new_hist();

    for (uint64_t us = 100000; us >= 1; us--) { /* order does not matter */
        hist_record(h, us * 1000);
    }
    assert_int_equal(h->n, 100000);
    assert_int_equal(h->max, 100000000);
    assert_int_equal(h->min, 1000);
    assert_close(hist_mean(h), 50000.5 * 1000, 1e-12);
    assert_close(hist_quantile(h, 0.50), 50000e3, 0.004);
    assert_close(hist_quantile(h, 0.90), 90000e3, 0.004);
    assert_close(hist_quantile(h, 0.99), 99000e3, 0.004);
    assert_close(hist_quantile(h, 0.999), 99900e3, 0.004);
    assert_true(hist_quantile(h, 1.0) <= 100000e3); /* clamped to the max */
    assert_close(hist_quantile(h, 1.0), 100000e3, 0.004);
    assert_close(hist_quantile(h, 0.00001), 1000, 0.004);
    free(h);
}

/* Nearest rank: 99 fast values and one slow one. */
static void test_tail(void **state)
{
    (void)state;
    struct hist *h = new_hist();

    for (int i = 0; i < 99; i++) {
        hist_record(h, 1000000); /* 1 ms */
    }
    hist_record(h, 1000000000); /* 1 s */
    assert_close(hist_quantile(h, 0.50), 1e6, 0.004);
    assert_close(hist_quantile(h, 0.99), 1e6, 0.004);  /* rank 99 */
    assert_close(hist_quantile(h, 0.999), 1e9, 0.004); /* rank 100 */
    assert_true(hist_quantile(h, 0.999) <= 1e9);
    assert_int_equal(h->max, 1000000000);
    assert_close(hist_mean(h), (99 * 1e6 + 1e9) / 100, 1e-12);
    free(h);
}

/* A single value is reported as itself by every quantile (the bucket
 * middle is clamped to the exact min and max). */
static void test_single(void **state)
{
    (void)state;
    struct hist *h = new_hist();

    hist_record(h, 123456789);
    assert_true(hist_quantile(h, 0.5) == 123456789.0);
    assert_true(hist_quantile(h, 0.999) == 123456789.0);
    assert_true(hist_mean(h) == 123456789.0);
    free(h);
}

/* Merging equals recording everything into one histogram. */
static void test_merge(void **state)
{
    (void)state;
    struct hist *a = new_hist(), *b = new_hist(), *all = new_hist(), *empty = new_hist();
    uint64_t seed = 7;

    for (int i = 0; i < 50000; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t v = 1000 + (seed >> 33) % 50000000;
        hist_record(i % 3 == 0 ? a : b, v);
        hist_record(all, v);
    }
    hist_merge(a, b);
    hist_merge(a, empty);
    assert_int_equal(a->n, all->n);
    assert_int_equal(a->max, all->max);
    assert_int_equal(a->min, all->min);
    assert_close(a->sum, all->sum, 1e-12);
    for (size_t i = 0; i < HIST_BUCKETS; i++) {
        assert_int_equal(a->counts[i], all->counts[i]);
    }
    assert_true(hist_quantile(a, 0.99) == hist_quantile(all, 0.99));
    /* Into an empty one: min/max taken from the source. */
    hist_merge(empty, all);
    assert_int_equal(empty->min, all->min);
    assert_int_equal(empty->max, all->max);
    free(a);
    free(b);
    free(all);
    free(empty);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),          cmocka_unit_test(test_buckets),
        cmocka_unit_test(test_relative_error), cmocka_unit_test(test_quantiles),
        cmocka_unit_test(test_tail),           cmocka_unit_test(test_single),
        cmocka_unit_test(test_merge),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
