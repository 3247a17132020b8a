/*
 * test_hist.c - policy/hist.c: bucket layout (contiguous, monotonic, each
 * bucket at most a quarter as wide as its lower bound), quantiles within the
 * stated relative error of 1/8 on known distributions (uniform, log-normal
 * from a seeded generator, a point mass, two modes), the empty histogram,
 * decay (counts scale, quantiles stay, tiny counts are cleared, new samples
 * then dominate) and merge (bucket-exact union).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "hist.h"
#include "retry.h"

static const double qs[] = {0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0};
#define NQ (sizeof qs / sizeof qs[0])

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The exact q-quantile the histogram approximates: the sample of rank
 * ceil(q * n) (rank 1 for q = 0). */
static uint64_t
exact_quantile(const uint64_t *sorted, size_t n, double q)
{
    size_t r = (size_t)ceil(q * (double)n);
    if (r == 0)
        r = 1;
    return sorted[r - 1];
}

static void
check_quantiles(uint64_t *v, size_t n)
{
    struct air__hist *h = calloc(1, sizeof *h);
    assert_non_null(h);
    for (size_t i = 0; i < n; i++)
        air__hist_add(h, v[i], 1.0);
    qsort(v, n, sizeof v[0], cmp_u64);
    for (size_t k = 0; k < NQ; k++) {
        double want = (double)exact_quantile(v, n, qs[k]);
        double got = (double)air__hist_quantile(h, qs[k]);
        double err = want > 0 ? fabs(got - want) / want : fabs(got - want);
        if (err > 0.125 + 1e-12)
            fail_msg("q=%.3f: got %.0f want %.0f (rel err %.4f)", qs[k], got, want, err);
    }
    free(h);
}

static void
test_hist_buckets_contiguous_and_monotonic(void **state)
{
    (void)state;
    assert_int_equal(air__hist_bucket_lower(0), 0);
    for (size_t i = 0; i + 1 < AIR_HIST_BUCKETS; i++) {
        uint64_t lo = air__hist_bucket_lower(i), hi = air__hist_bucket_upper(i);
        assert_true(lo <= hi);
        assert_int_equal(air__hist_bucket_lower(i + 1), hi + 1);
        assert_int_equal(air__hist_bucket(lo), i);
        assert_int_equal(air__hist_bucket(hi), i);
        if (i >= 8) /* width at most a quarter of the lower bound */
            assert_true((hi - lo + 1) * 4 <= lo);
    }
    assert_int_equal(air__hist_bucket_upper(AIR_HIST_BUCKETS - 1), UINT64_MAX);
    assert_int_equal(air__hist_bucket(UINT64_MAX), AIR_HIST_BUCKETS - 1);
    /* ~2^31 us (35 min) is still resolved by a proper bucket */
    assert_true(air__hist_bucket((uint64_t)1 << 31) < AIR_HIST_BUCKETS - 1);

    /* bucket() never decreases over a sweep of values, exact for 0..7 */
    size_t prev = 0;
    uint64_t rng = 7;
    for (uint64_t v = 0; v < 8; v++)
        assert_int_equal(air__hist_bucket(v), v);
    for (int i = 0; i < 200000; i++) {
        uint64_t v = (uint64_t)i * (uint64_t)i * 37u + (air__rand_next(&rng) & 15);
        size_t b = air__hist_bucket(v);
        assert_true(b >= prev); /* the values increase strictly */
        assert_true(air__hist_bucket_lower(b) <= v && v <= air__hist_bucket_upper(b));
        prev = b;
    }
}

static void
test_hist_empty_quantile_returns_zero(void **state)
{
    (void)state;
    struct air__hist h;
    air__hist_clear(&h);
    for (size_t k = 0; k < NQ; k++)
        assert_int_equal(air__hist_quantile(&h, qs[k]), 0);
}

static void
test_hist_uniform_quantiles_within_one_eighth(void **state)
{
    (void)state;
    size_t n = 100000;
    uint64_t *v = malloc(n * sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < n; i++)
        v[i] = 1 + i * 3; /* 1 us .. 300 ms */
    check_quantiles(v, n);
    free(v);
}

static void
test_hist_lognormal_quantiles_within_one_eighth(void **state)
{
    (void)state;
    size_t n = 50000;
    uint64_t *v = malloc(n * sizeof *v);
    assert_non_null(v);
    uint64_t rng = 12345;
    for (size_t i = 0; i < n; i++) {
        /* Box-Muller: median ~ 200 ms, sigma 1 (heavy right tail) */
        double u1 = ((double)(air__rand_next(&rng) >> 11) + 1) * 0x1.0p-53;
        double u2 = (double)(air__rand_next(&rng) >> 11) * 0x1.0p-53;
        double z = sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
        v[i] = (uint64_t)(200000.0 * exp(z));
    }
    check_quantiles(v, n);
    free(v);
}

static void
test_hist_point_mass_and_two_modes_within_one_eighth(void **state)
{
    (void)state;
    uint64_t v[3000];
    for (size_t i = 0; i < 3000; i++)
        v[i] = 12345;
    check_quantiles(v, 3000);
    /* 90 % fast (5 ms), 10 % slow (2 s): p50 fast, p95/p99 slow */
    for (size_t i = 0; i < 3000; i++)
        v[i] = i % 10 == 0 ? 2000000 : 5000;
    check_quantiles(v, 3000);
    struct air__hist h;
    air__hist_clear(&h);
    for (size_t i = 0; i < 3000; i++)
        air__hist_add(&h, i % 10 == 0 ? 2000000 : 5000, 1.0);
    assert_true(air__hist_quantile(&h, 0.5) < 6000);
    assert_true(air__hist_quantile(&h, 0.95) > 1700000);
}

static void
test_hist_decay_scales_counts_and_keeps_quantiles(void **state)
{
    (void)state;
    struct air__hist h;
    air__hist_clear(&h);
    for (int i = 0; i < 100; i++)
        air__hist_add(&h, 1000 + (uint64_t)i * 10, 1.0);
    uint64_t p50 = air__hist_quantile(&h, 0.5), p99 = air__hist_quantile(&h, 0.99);
    air__hist_decay(&h, 0.5);
    assert_true(fabs(h.total - 50.0) < 1e-9);
    double sum = 0;
    for (size_t i = 0; i < AIR_HIST_BUCKETS; i++)
        sum += h.c[i];
    assert_true(fabs(sum - h.total) < 1e-9);
    assert_int_equal(air__hist_quantile(&h, 0.5), p50);
    assert_int_equal(air__hist_quantile(&h, 0.99), p99);

    /* After decay, 100 new slow samples outweigh the 50 (decayed) old ones. */
    for (int i = 0; i < 100; i++)
        air__hist_add(&h, 50000, 1.0);
    uint64_t m = air__hist_quantile(&h, 0.5);
    assert_true(m > 50000 * 7 / 8 && m < 50000 * 9 / 8);

    /* Repeated decay clears the histogram instead of leaving denormals. */
    for (int i = 0; i < 100; i++)
        air__hist_decay(&h, 0.5);
    assert_true(h.total == 0.0);
    assert_int_equal(air__hist_quantile(&h, 0.5), 0);
}

static void
test_hist_merge_equals_union(void **state)
{
    (void)state;
    struct air__hist a, b, u;
    air__hist_clear(&a);
    air__hist_clear(&b);
    air__hist_clear(&u);
    uint64_t rng = 99;
    for (int i = 0; i < 5000; i++) {
        uint64_t x = air__rand_next(&rng) % 1000000, y = air__rand_next(&rng) % 5000;
        air__hist_add(&a, x, 1.0);
        air__hist_add(&b, y, 2.0);
        air__hist_add(&u, x, 1.0);
        air__hist_add(&u, y, 2.0);
    }
    air__hist_merge(&a, &b);
    assert_true(a.total == u.total);
    for (size_t i = 0; i < AIR_HIST_BUCKETS; i++)
        assert_true(a.c[i] == u.c[i]);
    for (size_t k = 0; k < NQ; k++)
        assert_int_equal(air__hist_quantile(&a, qs[k]), air__hist_quantile(&u, qs[k]));
    /* merging an empty histogram changes nothing */
    struct air__hist e;
    air__hist_clear(&e);
    air__hist_merge(&a, &e);
    assert_true(a.total == u.total);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hist_buckets_contiguous_and_monotonic),
        cmocka_unit_test(test_hist_empty_quantile_returns_zero),
        cmocka_unit_test(test_hist_uniform_quantiles_within_one_eighth),
        cmocka_unit_test(test_hist_lognormal_quantiles_within_one_eighth),
        cmocka_unit_test(test_hist_point_mass_and_two_modes_within_one_eighth),
        cmocka_unit_test(test_hist_decay_scales_counts_and_keeps_quantiles),
        cmocka_unit_test(test_hist_merge_equals_union),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
