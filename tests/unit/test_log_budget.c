/* The Raft log's memory budget: counts from the average entry size. */
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "raft/log_budget.h"

#define MIB ((uint64_t)1 << 20)

static void observe_n(struct log_budget *b, size_t len, int n)
{
    for (int i = 0; i < n; i++) {
        log_budget_observe(b, len);
    }
}

/* A budget of `bytes` over the counts max_threshold/max_trailing that has
 * seen n entries of len bytes; returns what log_budget_update() says. */
static bool budget_after(struct log_budget *b, uint64_t bytes, unsigned max_threshold,
                         unsigned max_trailing, size_t len, int n)
{
    log_budget_init(b, bytes, max_threshold, max_trailing);
    observe_n(b, len, n);
    return log_budget_update(b);
}

static void assert_counts(const struct log_budget *b, unsigned threshold, unsigned trailing)
{
    assert_int_equal(b->threshold, threshold);
    assert_int_equal(b->trailing, trailing);
}

static void test_nothing_observed(void **state)
{
    (void)state;
    struct log_budget b;
    assert_false(budget_after(&b, 256 * MIB, 4096, 8192, 0, 0));
    assert_int_equal(b.avg_entry, 0);
    assert_counts(&b, 4096, 8192);
}

static void test_small_entries_keep_the_configured_counts(void **state)
{
    (void)state;
    struct log_budget b;
    /* 8192 entries of 8 KiB are 64 MiB: within half of the budget. */
    assert_false(budget_after(&b, 256 * MIB, 4096, 8192, 8192, 10));
    assert_int_equal(b.avg_entry, 8192);
    assert_counts(&b, 4096, 8192);
}

static void test_large_entries_lower_the_counts(void **state)
{
    (void)state;
    struct log_budget b;
    assert_true(budget_after(&b, 256 * MIB, 4096, 8192, 64 * 1024, 1));
    /* 128 MiB for each half, 64 KiB entries. */
    assert_counts(&b, 2048, 2048);
    assert_false(log_budget_update(&b));
}

static void test_bounds(void **state)
{
    (void)state;
    struct log_budget b;
    /* 1 MiB entries in a 16 MiB budget: 8 would fit; never below the minimum. */
    assert_true(budget_after(&b, 16 * MIB, 4096, 8192, MIB, 1));
    assert_counts(&b, LOG_BUDGET_MIN_ENTRIES, LOG_BUDGET_MIN_ENTRIES);

    /* Configured counts below the minimum are kept as they are. */
    assert_false(budget_after(&b, 16 * MIB, 32, 16, MIB, 1));
    assert_counts(&b, 32, 16);
}

static void test_average_and_hysteresis(void **state)
{
    (void)state;
    struct log_budget b;
    assert_true(budget_after(&b, 256 * MIB, 4096, 8192, 64 * 1024, 1));
    assert_int_equal(b.threshold, 2048);

    /* A larger entry moves the average by 1/LOG_BUDGET_GROW_WEIGHT of the
     * gap, a smaller one by 1/LOG_BUDGET_SHRINK_WEIGHT. */
    log_budget_observe(&b, 64 * 1024 + 64 * LOG_BUDGET_GROW_WEIGHT);
    assert_int_equal(b.avg_entry, 64 * 1024 + 64);
    log_budget_observe(&b, 64 * 1024 + 64 - 64 * LOG_BUDGET_SHRINK_WEIGHT);
    assert_int_equal(b.avg_entry, 64 * 1024);

    /* 20% larger entries: 1706 would fit; less than a quarter off. */
    observe_n(&b, 80 * 1024, 200);
    assert_in_range(b.avg_entry, 79 * 1024, 80 * 1024);
    assert_false(log_budget_update(&b));
    assert_int_equal(b.threshold, 2048);

    /* Twice as large: the counts follow within a hundred entries. */
    observe_n(&b, 128 * 1024, 100);
    assert_true(log_budget_update(&b));
    assert_in_range(b.threshold, 1000, 1030);
    assert_int_equal(b.trailing, b.threshold);

    /* Entries alternating between 16 and 128 KiB: the average stays near
     * the large ones and the counts do not move. */
    for (int i = 0; i < 1000; i++) {
        log_budget_observe(&b, (i % 2) != 0 ? 16 * 1024 : 128 * 1024);
        assert_false(log_budget_update(&b));
    }
    assert_in_range(b.threshold, 1000, 1030);

    /* Small entries for long: back to exactly the configured counts. */
    observe_n(&b, 1024, 5000);
    assert_true(log_budget_update(&b));
    assert_counts(&b, 4096, 8192);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nothing_observed),
        cmocka_unit_test(test_small_entries_keep_the_configured_counts),
        cmocka_unit_test(test_large_entries_lower_the_counts),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_average_and_hysteresis),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
