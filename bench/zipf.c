/* Zipf-distributed choice by an exact cumulative table (zipf.h). */
#include "zipf.h"

#include <math.h>
#include <stdlib.h>

#include "geoscale/errors.h"

int zipf_init(struct zipf *z, size_t n, double s)
{
    double sum = 0;

    z->n = n;
    z->cdf = NULL;
    if (s <= 0 || n <= 1) {
        return 0;
    }
    z->cdf = malloc(n * sizeof(double));
    if (z->cdf == NULL) {
        return GS_ENOMEM;
    }
    for (size_t r = 0; r < n; r++) {
        sum += 1.0 / pow((double)(r + 1), s);
        z->cdf[r] = sum;
    }
    for (size_t r = 0; r < n; r++) {
        z->cdf[r] /= sum;
    }
    z->cdf[n - 1] = 1.0; /* rounding must not leave a gap at the top */
    return 0;
}

size_t zipf_draw(const struct zipf *z, double u)
{
    size_t lo = 0, hi = z->n - 1;

    if (z->cdf == NULL) {
        size_t r = (size_t)(u * (double)z->n);
        return r < z->n ? r : z->n - 1;
    }
    /* The first rank whose cumulative probability exceeds u. */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (z->cdf[mid] > u) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return lo;
}

void zipf_free(struct zipf *z)
{
    free(z->cdf);
    z->cdf = NULL;
}
