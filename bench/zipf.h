/*
 * Zipf-distributed choice among n items, for the load generator: item r
 * (0-based rank) with probability proportional to 1 / (r + 1)^s. The
 * cumulative table is exact for any s >= 0 (8 bytes per item); a draw is a
 * binary search. s = 0 is uniform and needs no table.
 */
#ifndef GS_BENCH_ZIPF_H
#define GS_BENCH_ZIPF_H

#include <stddef.h>

struct zipf {
    size_t n;
    double *cdf; /* n entries, the last 1.0; NULL when uniform */
};

/* Prepare z for n >= 1 items and exponent s >= 0. Returns 0 or GS_ENOMEM;
 * release with zipf_free(). */
int zipf_init(struct zipf *z, size_t n, double s);

/* The item for u uniform in [0, 1): 0 .. n-1. */
size_t zipf_draw(const struct zipf *z, double u);

void zipf_free(struct zipf *z);

#endif /* GS_BENCH_ZIPF_H */
