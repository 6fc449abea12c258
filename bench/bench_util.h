/* What the C benchmarks share: the library's monotonic clock (lib/base/clock.h, header
 * only), and a sorted summary of samples. */
#ifndef CDSM_BENCH_UTIL_H
#define CDSM_BENCH_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "clock.h"

static inline uint64_t now_ns(void)
{
    return cdsm__mono_ns();
}

static inline int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct summary {
    double med, min, p90, mean;
    int n;
} summary_t;

/* Sorts v. Median of an even count is the mean of the middle two; p90 is the smallest
 * sample with at least 90% of the samples at or below it. */
static inline summary_t summarize(double *v, int n)
{
    summary_t s = {NAN, NAN, NAN, NAN, n};
    if (n <= 0) return s;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    double sum = 0;
    for (int i = 0; i < n; i++) sum += v[i];
    s.mean = sum / n;
    s.min = v[0];
    s.med = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    int k = (int)ceil(0.9 * n) - 1;
    s.p90 = v[k < 0 ? 0 : k];
    return s;
}

#endif
