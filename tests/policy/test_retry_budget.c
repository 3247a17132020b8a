/*
 * test_retry_budget.c - policy/retry_budget.c with a fake clock: the ratio
 * part (exactly ratio x requests within a window when the floor is 0), the
 * floor (min_per_s x window seconds with no traffic at all), expiry of old
 * seconds, window clamping, and the required outage simulation: every
 * request fails and wants up to two retries, for 60 s at several request
 * rates; retries stay <= ratio x requests + floor x seconds, and the budget
 * is actually spent (not simply refusing everything).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "retry_budget.h"

#define T0 1700000000000LL

static void
test_retry_budget_ratio_of_requests(void **state)
{
    (void)state;
    struct air__rbudget b;
    air__rbudget_init(&b, 0.2, 0, 10000);
    for (int i = 0; i < 1000; i++)
        air__rbudget_on_request(&b, T0 + i); /* all within one second */
    int allowed = 0;
    for (int i = 0; i < 1000; i++)
        allowed += air__rbudget_try_retry(&b, T0 + 1000 + i);
    assert_int_equal(allowed, 200);
    /* 10 s later those requests are out of the window: nothing left */
    assert_int_equal(air__rbudget_try_retry(&b, T0 + 10000), 0);
    /* once the retries have left the window too, new requests bring new
     * budget */
    for (int i = 0; i < 10; i++)
        air__rbudget_on_request(&b, T0 + 11000);
    assert_int_equal(air__rbudget_try_retry(&b, T0 + 11000), 1);
    assert_int_equal(air__rbudget_try_retry(&b, T0 + 11000), 1);
    assert_int_equal(air__rbudget_try_retry(&b, T0 + 11000), 0);
}

static void
test_retry_budget_floor_without_traffic(void **state)
{
    (void)state;
    struct air__rbudget b;
    air__rbudget_init(&b, 0.2, 10, 10000);
    int allowed = 0;
    for (int i = 0; i < 500; i++)
        allowed += air__rbudget_try_retry(&b, T0 + i);
    assert_int_equal(allowed, 100); /* 10 per second over the 10 s window */
    /* still inside the window of those retries: nothing more */
    assert_int_equal(air__rbudget_try_retry(&b, T0 + 9999), 0);
    /* once they fall out of the window, the floor is there again */
    allowed = 0;
    for (int i = 0; i < 500; i++)
        allowed += air__rbudget_try_retry(&b, T0 + 10000 + i);
    assert_int_equal(allowed, 100);
}

static void
test_retry_budget_window_is_clamped(void **state)
{
    (void)state;
    struct air__rbudget b;
    air__rbudget_init(&b, 0, 1, 60000); /* at most 15 s */
    assert_int_equal(b.window_ms, 15000);
    int allowed = 0;
    for (int i = 0; i < 100; i++)
        allowed += air__rbudget_try_retry(&b, T0);
    assert_int_equal(allowed, 15);
    air__rbudget_init(&b, -1, 1, 10); /* at least 1 s; a negative ratio is 0 */
    assert_int_equal(b.window_ms, 1000);
    assert_true(b.ratio == 0);
    air__rbudget_on_request(&b, T0);
    assert_int_equal(air__rbudget_try_retry(&b, T0), 1);
    assert_int_equal(air__rbudget_try_retry(&b, T0), 0);
    assert_int_equal(air__rbudget_try_retry(&b, T0 + 1000), 1);
}

static void
outage(int rate_per_s, double ratio, uint32_t floor_per_s)
{
    struct air__rbudget b;
    air__rbudget_init(&b, ratio, floor_per_s, 10000);
    const int seconds = 60;
    long requests = 0, retries = 0;
    for (int s = 0; s < seconds; s++) {
        for (int r = 0; r < rate_per_s; r++) {
            int64_t now = T0 + (int64_t)s * 1000 + (int64_t)r * 1000 / rate_per_s;
            air__rbudget_on_request(&b, now);
            requests++;
            /* the attempt fails; the router wants up to 2 retries (at
             * once: the fake clock stays inside the 60 s) */
            for (int a = 0; a < 2; a++) {
                if (!air__rbudget_try_retry(&b, now))
                    break;
                retries++;
            }
        }
    }
    double bound = ratio * (double)requests + (double)floor_per_s * seconds;
    if ((double)retries > bound)
        fail_msg("rate %d: %ld retries > bound %.0f (%ld requests)", rate_per_s, retries, bound,
                 requests);
    /* the budget is used, not just refused: at least the ratio part */
    assert_true((double)retries >= ratio * (double)requests * 0.9);
}

static void
test_retry_budget_outage_caps_retries(void **state)
{
    (void)state;
    outage(1, 0.2, 10);
    outage(50, 0.2, 10);
    outage(1000, 0.2, 10);
    outage(1000, 0.1, 0);
    outage(5000, 0.2, 10);
}

static void
test_retry_budget_set_keeps_counts_and_moves_the_window(void **state)
{
    (void)state;
    struct air__rbudget b;
    air__rbudget_init(&b, 0, 2, 10000);
    int allowed = 0;
    for (int i = 0; i < 100; i++)
        allowed += air__rbudget_try_retry(&b, T0 + i);
    assert_int_equal(allowed, 20); /* 2/s x 10 s */
    /* Narrowed to 1 s, two seconds later: only this second counts. */
    air__rbudget_set(&b, 0, 2, 1000);
    assert_int_equal(b.window_ms, 1000);
    allowed = 0;
    for (int i = 0; i < 100; i++)
        allowed += air__rbudget_try_retry(&b, T0 + 2000 + i);
    assert_int_equal(allowed, 2);
    /* Widened back: the retries above are still in the window. */
    air__rbudget_set(&b, 0, 2, 10000);
    assert_int_equal(air__rbudget_try_retry(&b, T0 + 3000), 0);
    /* Clamped like init. */
    air__rbudget_set(&b, -1, -5, 99999);
    assert_int_equal(b.window_ms, 15000);
    assert_true(b.ratio == 0 && b.min_per_s == 0);
}

static void
test_retry_budget_fractional_floor_share(void **state)
{
    (void)state;
    /* A worker's share of a router floor of 1/s over 4 workers: 0.25/s,
     * 2.5 retries per 10 s window, so 2 whole retries. */
    struct air__rbudget b;
    air__rbudget_init(&b, 0, 0.25, 10000);
    int allowed = 0;
    for (int i = 0; i < 100; i++)
        allowed += air__rbudget_try_retry(&b, T0 + i);
    assert_int_equal(allowed, 2);
    /* Four such shares together stay within the router's 10. */
    struct air__rbudget w[4];
    allowed = 0;
    for (int k = 0; k < 4; k++) {
        air__rbudget_init(&w[k], 0, 0.25, 10000);
        for (int i = 0; i < 100; i++)
            allowed += air__rbudget_try_retry(&w[k], T0 + i);
    }
    assert_true(allowed <= 10);
    /* With traffic the ratio adds to the share. */
    air__rbudget_init(&b, 0.1, 0.25, 10000);
    for (int i = 0; i < 100; i++)
        air__rbudget_on_request(&b, T0 + i);
    allowed = 0;
    for (int i = 0; i < 100; i++)
        allowed += air__rbudget_try_retry(&b, T0 + 500 + i);
    assert_int_equal(allowed, 12); /* 0.1 x 100 + 2.5 */
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_retry_budget_ratio_of_requests),
        cmocka_unit_test(test_retry_budget_floor_without_traffic),
        cmocka_unit_test(test_retry_budget_window_is_clamped),
        cmocka_unit_test(test_retry_budget_outage_caps_retries),
        cmocka_unit_test(test_retry_budget_set_keeps_counts_and_moves_the_window),
        cmocka_unit_test(test_retry_budget_fractional_floor_share),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
