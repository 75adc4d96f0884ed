/* The Raft log's memory budget (contract in log_budget.h). */
#include "log_budget.h"

void log_budget_init(struct log_budget *b, uint64_t bytes, unsigned max_threshold,
                     unsigned max_trailing)
{
    b->bytes = bytes;
    b->max_threshold = max_threshold;
    b->max_trailing = max_trailing;
    b->avg_entry = 0;
    b->threshold = max_threshold;
    b->trailing = max_trailing;
}

void log_budget_observe(struct log_budget *b, size_t len)
{
    uint64_t n = len > 0 ? (uint64_t)len : 1;
    if (b->avg_entry == 0) {
        b->avg_entry = n;
    } else if (n >= b->avg_entry) {
        b->avg_entry += (n - b->avg_entry) / LOG_BUDGET_GROW_WEIGHT;
    } else {
        b->avg_entry -= (b->avg_entry - n) / LOG_BUDGET_SHRINK_WEIGHT;
    }
}

/* Entries of avg bytes that fit in share bytes, within [min, max]. */
static unsigned fit(uint64_t share, uint64_t avg, unsigned max)
{
    uint64_t n = share / avg;
    unsigned min = LOG_BUDGET_MIN_ENTRIES < max ? LOG_BUDGET_MIN_ENTRIES : max;
    return n < min ? min : n > max ? max : (unsigned)n;
}

/* Whether to move from cur to want: a change of at least a quarter, or to
 * a bound (so the configured count is reached again exactly). */
static bool worth(unsigned cur, unsigned want, unsigned max)
{
    unsigned diff = cur > want ? cur - want : want - cur;
    return diff > 0 && (diff >= cur / 4 || want == max || want == LOG_BUDGET_MIN_ENTRIES);
}

bool log_budget_update(struct log_budget *b)
{
    if (b->avg_entry == 0 || b->bytes == 0) {
        return false;
    }
    unsigned threshold = fit(b->bytes / 2, b->avg_entry, b->max_threshold);
    unsigned trailing = fit(b->bytes / 2, b->avg_entry, b->max_trailing);
    bool changed = false;
    if (worth(b->threshold, threshold, b->max_threshold)) {
        b->threshold = threshold;
        changed = true;
    }
    if (worth(b->trailing, trailing, b->max_trailing)) {
        b->trailing = trailing;
        changed = true;
    }
    return changed;
}
