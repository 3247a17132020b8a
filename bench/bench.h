/*
 * bench.h - shared pieces of the microbenchmark program `air_bench`
 * (STYLE.md 3.11): a monotonic clock, percentile helpers, the fixed output
 * format, and the list of benchmark entry points that bench_main.c
 * dispatches to.
 *
 * Every benchmark warms up, then runs a fixed number of iterations several
 * times and reports the median run, printing one line per case:
 *
 *   name threads ops ns/op p50_ns p99_ns
 *
 * ns/op is the median over runs of (run time / ops); p50_ns and p99_ns are
 * percentiles of per-operation times measured in small batches (one clock
 * read per batch, so the clock's own cost is amortised).
 */
#ifndef AIR_BENCH_H
#define AIR_BENCH_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* Entry points: parse their own arguments (argv[0] is the bench's name),
 * print result lines, return 0 on success. */
int air__bench_policy(int argc, char **argv);
int air__bench_core(int argc, char **argv);

static inline uint64_t
air__bench_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline int
air__bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* q-quantile of v[0..n) (sorts v). */
static inline double
air__bench_quantile(double *v, size_t n, double q)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof v[0], air__bench_cmp_double);
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

static inline void
air__bench_header(void)
{
    printf("%-36s %7s %12s %10s %10s %10s\n", "name", "threads", "ops", "ns/op", "p50_ns",
           "p99_ns");
}

static inline void
air__bench_line(const char *name, int threads, uint64_t ops, double ns_per_op, double p50,
                double p99)
{
    printf("%-36s %7d %12llu %10.1f %10.1f %10.1f\n", name, threads, (unsigned long long)ops,
           ns_per_op, p50, p99);
    fflush(stdout);
}

#endif
