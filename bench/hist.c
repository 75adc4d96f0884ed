/*
 * The log-bucketed histogram of hist.h. Bucket index of v >= 2^S (S =
 * HIST_SUB_BITS), with e = floor(log2 v): (e - S + 1) * 2^S + (v >> (e - S))
 * - 2^S, i.e. group e - S + 1 of 2^S buckets, the sub-bucket given by the S
 * bits below the leading one. Values below 2^S form group 0, one per bucket.
 */
#include "hist.h"

#include <assert.h>
#include <math.h>
#include <string.h>

void hist_init(struct hist *h)
{
    memset(h, 0, sizeof *h);
    h->min = UINT64_MAX;
}

size_t hist_bucket(uint64_t v)
{
    if (v < HIST_SUB_COUNT) {
        return (size_t)v;
    }
    unsigned e = 63u - (unsigned)__builtin_clzll(v); /* 2^e <= v, e >= S */
    unsigned shift = e - HIST_SUB_BITS;
    size_t b =
        (size_t)(e - HIST_SUB_BITS + 1) * HIST_SUB_COUNT + (size_t)((v >> shift) - HIST_SUB_COUNT);
    assert(b < HIST_BUCKETS);
    return b;
}

void hist_bucket_range(size_t b, double *lo, double *hi)
{
    assert(b < HIST_BUCKETS);
    if (b < HIST_SUB_COUNT) {
        *lo = (double)b;
        *hi = (double)b + 1;
        return;
    }
    int group = (int)(b / HIST_SUB_COUNT) - 1; /* e - S */
    double width = ldexp(1.0, group);
    *lo = (double)(HIST_SUB_COUNT + b % HIST_SUB_COUNT) * width;
    *hi = *lo + width;
}

void hist_record(struct hist *h, uint64_t v)
{
    h->counts[hist_bucket(v)]++;
    h->n++;
    h->sum += (double)v;
    if (v < h->min) {
        h->min = v;
    }
    if (v > h->max) {
        h->max = v;
    }
}

void hist_merge(struct hist *dst, const struct hist *src)
{
    for (size_t b = 0; b < HIST_BUCKETS; b++) {
        dst->counts[b] += src->counts[b];
    }
    dst->n += src->n;
    dst->sum += src->sum;
    if (src->min < dst->min) {
        dst->min = src->min;
    }
    if (src->max > dst->max) {
        dst->max = src->max;
    }
}

double hist_quantile(const struct hist *h, double q)
{
    if (h->n == 0) {
        return 0;
    }
    double r = ceil(q * (double)h->n);
    uint64_t rank = r < 1 ? 1 : r >= (double)h->n ? h->n : (uint64_t)r;
    uint64_t seen = 0;
    for (size_t b = 0; b < HIST_BUCKETS; b++) {
        seen += h->counts[b];
        if (seen >= rank) {
            double lo, hi, mid;
            hist_bucket_range(b, &lo, &hi);
            mid = (lo + hi) / 2;
            if (mid > (double)h->max) {
                mid = (double)h->max;
            }
            if (mid < (double)h->min) {
                mid = (double)h->min;
            }
            return mid;
        }
    }
    return (double)h->max; /* not reached: the counts add up to n */
}

double hist_mean(const struct hist *h)
{
    return h->n == 0 ? 0 : h->sum / (double)h->n;
}
