/*
 * A log-bucketed latency histogram (HdrHistogram-like), for the load
 * generator.
 *
 * Values are unsigned integers (the bench records nanoseconds). Values below
 * 2^HIST_SUB_BITS have a bucket each; a value v >= 2^HIST_SUB_BITS with
 * 2^e <= v < 2^(e+1) falls in one of 2^HIST_SUB_BITS equal buckets of that
 * power of two, of width 2^(e - HIST_SUB_BITS). A bucket is thus at most
 * 1/128 of its lower bound wide, and its middle, which is what a quantile
 * reports, is within 0.4% of every value in it: from 1 us to 60 s (and
 * beyond, up to 2^64-1 ns) the relative error is below 1%. The count, sum
 * and maximum are exact.
 *
 * The layout is the one of bench/etcd's histogram, so both drivers round the
 * same way. One histogram per thread, merged at the end; no locking.
 */
#ifndef GS_BENCH_HIST_H
#define GS_BENCH_HIST_H

#include <stddef.h>
#include <stdint.h>

#define HIST_SUB_BITS 7
#define HIST_SUB_COUNT (1u << HIST_SUB_BITS)
#define HIST_BUCKETS ((64 - HIST_SUB_BITS + 1) * HIST_SUB_COUNT)

struct hist {
    uint64_t counts[HIST_BUCKETS];
    uint64_t n;   /* values recorded */
    double sum;   /* of the values */
    uint64_t min; /* exact; UINT64_MAX while empty */
    uint64_t max; /* exact; 0 while empty */
};

/* Empty h. */
void hist_init(struct hist *h);

/* The bucket of value v (< HIST_BUCKETS). */
size_t hist_bucket(uint64_t v);

/* The values of bucket b: [*lo, *hi) (hi may be 2^64 as a double). */
void hist_bucket_range(size_t b, double *lo, double *hi);

/* Record one value. */
void hist_record(struct hist *h, uint64_t v);

/* Add every value of src to dst. */
void hist_merge(struct hist *dst, const struct hist *src);

/*
 * The value at quantile q (0 < q <= 1): the middle of the bucket holding the
 * ceil(q * n)-th smallest value, clamped to [min, max]. 0 when empty.
 */
double hist_quantile(const struct hist *h, double q);

/* The exact mean; 0 when empty. */
double hist_mean(const struct hist *h);

#endif /* GS_BENCH_HIST_H */
