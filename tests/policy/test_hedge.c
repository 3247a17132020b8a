/*
 * test_hedge.c - policy/hedge.c delay rules: a fixed delay wins; otherwise
 * the live p95 (TTFT for streams, latency for non-streams and for streams
 * without a TTFT sample), rounded up to ms and clamped to [min, max]; the
 * default without samples or statistics; max < min treated as min.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>

#include "hedge.h"

static void
test_hedge_fixed_delay_wins(void **state)
{
    (void)state;
    struct air__dstat *s = calloc(1, sizeof *s);
    assert_non_null(s);
    air__dstat_init(s);
    s->have_samples = 1;
    s->lat_p95_us = 900000;
    assert_int_equal(air__hedge_delay_ms(s, 0, 250, 50, 2000, 700), 250);
    assert_int_equal(air__hedge_delay_ms(NULL, 1, 250, 50, 2000, 700), 250);
    /* not clamped: the operator asked for it */
    assert_int_equal(air__hedge_delay_ms(s, 0, 5000, 50, 2000, 700), 5000);
    free(s);
}

static void
test_hedge_adaptive_p95_clamped(void **state)
{
    (void)state;
    struct air__dstat *s = calloc(1, sizeof *s);
    assert_non_null(s);
    air__dstat_init(s);
    s->have_samples = 1;
    s->have_ttft = 1;
    s->lat_p95_us = 900000;
    s->ttft_p95_us = 300400;
    assert_int_equal(air__hedge_delay_ms(s, 0, 0, 50, 2000, 700), 900);
    assert_int_equal(air__hedge_delay_ms(s, 1, 0, 50, 2000, 700), 301); /* rounded up */
    s->ttft_p95_us = 10000;
    assert_int_equal(air__hedge_delay_ms(s, 1, 0, 50, 2000, 700), 50); /* min */
    s->lat_p95_us = 9000000;
    assert_int_equal(air__hedge_delay_ms(s, 0, 0, 50, 2000, 700), 2000); /* max */
    assert_int_equal(air__hedge_delay_ms(s, 0, 0, 3000, 2000, 700), 3000); /* max < min */
    s->have_ttft = 0; /* a stream without TTFT samples: the latency p95 */
    assert_int_equal(air__hedge_delay_ms(s, 1, 0, 50, 20000, 700), 9000);
    free(s);
}

static void
test_hedge_default_without_samples(void **state)
{
    (void)state;
    struct air__dstat *s = calloc(1, sizeof *s);
    assert_non_null(s);
    air__dstat_init(s);
    assert_int_equal(air__hedge_delay_ms(s, 0, 0, 50, 2000, 700), 700);
    assert_int_equal(air__hedge_delay_ms(s, 1, 0, 50, 2000, 700), 700);
    assert_int_equal(air__hedge_delay_ms(NULL, 0, 0, 50, 2000, 700), 700);
    free(s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hedge_fixed_delay_wins),
        cmocka_unit_test(test_hedge_adaptive_p95_clamped),
        cmocka_unit_test(test_hedge_default_without_samples),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
