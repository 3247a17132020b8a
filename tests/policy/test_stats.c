/*
 * test_stats.c - policy/stats.c: recording (latency only for successes,
 * TTFT and time per output token for streams, counters and cost for all),
 * merge equals recording into one, the EWMA half-life (after one half-life
 * of constant input the EWMA has moved half way, whatever the fold
 * interval), no change on empty intervals, the success-rate EWMA starting at
 * 1.0, and percentiles from the folded, decayed histogram.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "stats.h"

/* Two dobs and a dstat are ~5 KB: kept off the test's stack. */
struct fx {
    struct air__dobs o, o2;
    struct air__dstat s;
};

static int
setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    if (f == NULL)
        return -1;
    air__dstat_init(&f->s);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    free(*state);
    return 0;
}

static int
near(double got, double want, double rel)
{
    return fabs(got - want) <= rel * fabs(want) + 1e-9;
}

static void
test_stats_record_counts_and_latency_of_successes_only(void **state)
{
    struct fx *f = *state;
    air__dobs_record(&f->o, 1, 1000, 0, 10, 20, 0.5);
    air__dobs_record(&f->o, 0, 99999, 0, 0, 5, 0.25);
    air__dobs_record(&f->o, 1, 3000, 0, 30, 40, 0.25);
    assert_int_equal(f->o.requests, 3);
    assert_int_equal(f->o.successes, 2);
    assert_int_equal(f->o.failures, 1);
    assert_int_equal(f->o.lat_n, 2);
    assert_int_equal(f->o.lat_sum_us, 4000); /* the failure's 99999 is not counted */
    assert_true(f->o.lat.total == 2.0);
    assert_int_equal(f->o.tokens_in, 65);
    assert_int_equal(f->o.tokens_out, 40);
    assert_true(near(f->o.cost_usd, 1.0, 1e-12));
    assert_int_equal(f->o.ttft_n, 0);
    air__dobs_reset(&f->o);
    assert_int_equal(f->o.requests, 0);
    assert_true(f->o.lat.total == 0);
}

static void
test_stats_stream_records_ttft_and_time_per_token(void **state)
{
    struct fx *f = *state;
    /* first token after 100 ms, 11 tokens by 1100 ms: 100 ms per token */
    air__dobs_record(&f->o, 1, 1100000, 100000, 11, 50, 0);
    assert_int_equal(f->o.ttft_n, 1);
    assert_int_equal(f->o.ttft_sum_us, 100000);
    assert_int_equal(f->o.tpot_n, 1);
    assert_int_equal(f->o.tpot_sum_ns, 100000000);
    /* a single token gives no time-per-token sample */
    air__dobs_record(&f->o, 1, 200000, 150000, 1, 50, 0);
    assert_int_equal(f->o.ttft_n, 2);
    assert_int_equal(f->o.tpot_n, 1);
    air__dstat_fold(&f->s, &f->o, 20, 10000);
    assert_true(f->s.have_ttft);
    assert_true(f->s.have_tpot);
    assert_true(near(f->s.ttft_ewma_us, 125000, 1e-12)); /* first interval: its mean */
    assert_true(near(f->s.tpot_ewma_ns, 1e8, 1e-12));
}

static void
test_stats_merge_equals_recording_into_one(void **state)
{
    struct fx *f = *state;
    struct air__dobs *all = calloc(1, sizeof *all);
    assert_non_null(all);
    for (int i = 0; i < 100; i++) {
        struct air__dobs *w = i % 2 ? &f->o : &f->o2;
        uint64_t lat = 1000 + (uint64_t)i * 137, ttft = i % 3 ? 0 : 500 + (uint64_t)i;
        air__dobs_record(w, i % 5 != 0, lat, ttft, (uint64_t)i, 10, 0.001);
        air__dobs_record(all, i % 5 != 0, lat, ttft, (uint64_t)i, 10, 0.001);
    }
    air__dobs_merge(&f->o, &f->o2);
    assert_int_equal(f->o.requests, all->requests);
    assert_int_equal(f->o.successes, all->successes);
    assert_int_equal(f->o.failures, all->failures);
    assert_int_equal(f->o.lat_sum_us, all->lat_sum_us);
    assert_int_equal(f->o.lat_n, all->lat_n);
    assert_int_equal(f->o.ttft_sum_us, all->ttft_sum_us);
    assert_int_equal(f->o.tpot_sum_ns, all->tpot_sum_ns);
    assert_int_equal(f->o.tokens_out, all->tokens_out);
    assert_true(near(f->o.cost_usd, all->cost_usd, 1e-12));
    assert_memory_equal(&f->o.lat, &all->lat, sizeof all->lat);
    assert_memory_equal(&f->o.ttft, &all->ttft, sizeof all->ttft);
    free(all);
}

/* Feed constant latency `lat` for `total_ms` in folds of dt_ms. */
static void
feed(struct fx *f, uint64_t lat, double total_ms, double dt_ms, double halflife)
{
    for (double t = 0; t < total_ms - 1e-9; t += dt_ms) {
        air__dobs_reset(&f->o);
        air__dobs_record(&f->o, 1, lat, lat / 2, 5, 5, 0);
        air__dstat_fold(&f->s, &f->o, dt_ms, halflife);
    }
}

static void
test_stats_ewma_moves_half_way_in_one_halflife(void **state)
{
    struct fx *f = *state;
    static const double dts[] = {5, 20, 100, 250, 1000};
    for (size_t k = 0; k < sizeof dts / sizeof dts[0]; k++) {
        air__dstat_init(&f->s);
        feed(f, 1000, dts[k], dts[k], 1000); /* one interval: sets it */
        assert_true(near(f->s.lat_ewma_us, 1000, 1e-12));
        feed(f, 3000, 1000, dts[k], 1000); /* one half-life of 3000 */
        if (!near(f->s.lat_ewma_us, 2000, 1e-9))
            fail_msg("dt %.0f: lat ewma %.6f, want 2000", dts[k], f->s.lat_ewma_us);
        assert_true(near(f->s.ttft_ewma_us, 1000, 1e-9));
        feed(f, 3000, 1000, dts[k], 1000); /* another: three quarters */
        assert_true(near(f->s.lat_ewma_us, 2500, 1e-9));
    }
}

static void
test_stats_empty_intervals_change_nothing(void **state)
{
    struct fx *f = *state;
    for (int i = 0; i < 50; i++) {
        air__dobs_reset(&f->o);
        for (int j = 0; j < 10; j++)
            air__dobs_record(&f->o, j != 0, 1000 + (uint64_t)j * 1000, 0, 1, 1, 0);
        air__dstat_fold(&f->s, &f->o, 20, 1000);
    }
    struct air__dstat before = f->s;
    air__dobs_reset(&f->o);
    for (int i = 0; i < 100; i++)
        air__dstat_fold(&f->s, &f->o, 20, 1000);
    assert_true(f->s.lat_ewma_us == before.lat_ewma_us);
    assert_true(f->s.succ_ewma == before.succ_ewma);
    assert_true(f->s.ttft_ewma_us == before.ttft_ewma_us);
    assert_int_equal(f->s.lat_p50_us, before.lat_p50_us);
    assert_int_equal(f->s.lat_p99_us, before.lat_p99_us);
    assert_int_equal(f->s.requests, before.requests);
    /* the histogram decayed (2 s = 2 half-lives), its shape did not */
    assert_true(near(f->s.lat.total, before.lat.total / 4, 1e-9));
    assert_int_equal(air__hist_quantile(&f->s.lat, 0.5), before.lat_p50_us);
}

static void
test_stats_success_ewma_starts_at_one_and_halves(void **state)
{
    struct fx *f = *state;
    assert_true(f->s.succ_ewma == 1.0);
    assert_false(f->s.have_samples);
    /* one half-life of nothing but failures */
    for (int i = 0; i < 50; i++) {
        air__dobs_reset(&f->o);
        air__dobs_record(&f->o, 0, 5000, 0, 0, 10, 0);
        air__dstat_fold(&f->s, &f->o, 20, 1000);
    }
    assert_true(near(f->s.succ_ewma, 0.5, 1e-9));
    assert_false(f->s.have_samples); /* failures carry no latency */
    assert_int_equal(f->s.requests, 50);
    assert_int_equal(f->s.failures, 50);
}

static void
test_stats_percentiles_from_folded_histogram(void **state)
{
    struct fx *f = *state;
    /* 1..1000 ms spread over 10 folds */
    for (int fold = 0; fold < 10; fold++) {
        air__dobs_reset(&f->o);
        for (int i = 0; i < 100; i++)
            air__dobs_record(&f->o, 1, (uint64_t)(fold + i * 10 + 1) * 1000, 0, 1, 1, 0);
        air__dstat_fold(&f->s, &f->o, 1, 1e9); /* practically no decay */
    }
    assert_true(near((double)f->s.lat_p50_us, 500000, 0.125));
    assert_true(near((double)f->s.lat_p95_us, 950000, 0.125));
    assert_true(near((double)f->s.lat_p99_us, 990000, 0.125));
    assert_int_equal(f->s.ttft_p50_us, 0); /* no stream samples */

    /* With a short half-life the recent (slow) interval dominates. */
    air__dobs_reset(&f->o);
    for (int i = 0; i < 1000; i++)
        air__dobs_record(&f->o, 1, 5000000, 0, 1, 1, 0);
    air__dstat_fold(&f->s, &f->o, 5000, 1000); /* old samples weigh 1/32 */
    assert_true(near((double)f->s.lat_p50_us, 5000000, 0.125));
}

static void
test_stats_cancelled_attempts_are_neither_success_nor_failure(void **state)
{
    struct fx *f = *state;
    air__dobs_record(&f->o, 1, 1000, 0, 10, 20, 0.5);
    air__dobs_cancel(&f->o);
    air__dobs_cancel(&f->o);
    assert_int_equal(f->o.requests, 1);
    assert_int_equal(f->o.cancelled, 2);
    struct air__dobs o2;
    air__dobs_reset(&o2);
    air__dobs_cancel(&o2);
    air__dobs_merge(&f->o, &o2);
    assert_int_equal(f->o.cancelled, 3);
    struct air__dstat s;
    air__dstat_init(&s);
    air__dstat_fold(&s, &f->o, 1000, 1000);
    assert_int_equal(s.cancelled, 3);
    assert_int_equal(s.failures, 0);
    assert_true(s.succ_ewma == 1.0);
    /* Only cancellations in an interval: the success rate does not move. */
    air__dobs_reset(&o2);
    air__dobs_cancel(&o2);
    air__dstat_fold(&s, &o2, 1000, 1000);
    assert_int_equal(s.cancelled, 4);
    assert_true(s.succ_ewma == 1.0);
    assert_int_equal(s.requests, 1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_stats_record_counts_and_latency_of_successes_only,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_stats_stream_records_ttft_and_time_per_token, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stats_merge_equals_recording_into_one, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stats_ewma_moves_half_way_in_one_halflife, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stats_empty_intervals_change_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stats_success_ewma_starts_at_one_and_halves, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stats_percentiles_from_folded_histogram, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_stats_cancelled_attempts_are_neither_success_nor_failure, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
