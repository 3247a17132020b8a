/*
 * test_health.c - policy/health.c with a fake clock (plain integers):
 * ejection after N consecutive gateway errors (and not before, and not when
 * a success or a 4xx breaks the run), ejection time base x ejections capped
 * at the maximum, max_ejection_percent and never the last healthy one, the
 * half-open single probe (success -> healthy with the count reset; failure
 * -> ejected again for longer; a second caller is refused while the probe is
 * out; a lost probe times out), 4xx not counted, auth -> unusable until
 * reset, 429 with Retry-After cools down until then (and capped), 429
 * without a hint and a zero remaining quota cool down for the default, the
 * ejection multiplier forgotten after a calm period, readable reasons.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "health.h"

#define T0 1000000 /* an arbitrary start time, ms */

struct fx {
    struct air__health h;
    struct air__eject_cfg c;
    char why[160];
};

static int
setup(void **state)
{
    static struct fx f;
    memset(&f, 0, sizeof f);
    air__health_reset(&f.h);
    air__eject_cfg_default(&f.c);
    *state = &f;
    return 0;
}

/* n gateway errors at time t on a route of 10 with nothing ejected. */
static int
errors(struct fx *f, int n, int64_t t)
{
    int changed = 0;
    for (int i = 0; i < n; i++)
        changed |= air__health_on_outcome(&f->h, &f->c, AIR_O_GATEWAY_ERROR, -1, t, 0, 10);
    return changed;
}

static void
test_health_defaults_match_envoy(void **state)
{
    struct fx *f = *state;
    assert_int_equal(f->c.consecutive_errors, 5);
    assert_int_equal(f->c.base_ejection_ms, 30000);
    assert_int_equal(f->c.max_ejection_ms, 300000);
    assert_true(f->c.max_ejection_percent == 50);
    assert_int_equal(f->h.state, AIR_H_HEALTHY);
    assert_int_equal(air__health_admit(&f->h, T0, f->why, sizeof f->why), 1);
    assert_string_equal(air__hstate_name(AIR_H_EJECTED), "ejected");
    assert_string_equal(air__hstate_name(AIR_H_UNUSABLE), "unusable");
}

static void
test_health_consecutive_gateway_errors_eject(void **state)
{
    struct fx *f = *state;
    assert_int_equal(errors(f, 4, T0), 0);
    assert_int_equal(f->h.state, AIR_H_HEALTHY);
    assert_int_equal(f->h.consec_errors, 4);
    assert_int_equal(air__health_admit(&f->h, T0, f->why, sizeof f->why), 1);
    assert_int_equal(errors(f, 1, T0), 1); /* the fifth */
    assert_int_equal(f->h.state, AIR_H_EJECTED);
    assert_int_equal(f->h.ejections, 1);
    assert_int_equal(f->h.until_ms, T0 + 30000);
    assert_int_equal(air__health_admit(&f->h, T0 + 17700, f->why, sizeof f->why), 0);
    assert_string_equal(f->why, "ejected for 12.3 s more (ejection 1)");
    assert_int_equal(air__health_admit(&f->h, T0 + 29999, f->why, sizeof f->why), 0);
}

static void
test_health_success_or_4xx_breaks_the_run(void **state)
{
    struct fx *f = *state;
    errors(f, 4, T0);
    air__health_on_outcome(&f->h, &f->c, AIR_O_SUCCESS, -1, T0, 0, 10);
    assert_int_equal(f->h.consec_errors, 0);
    errors(f, 4, T0);
    /* a 4xx is not counted as an error... */
    assert_int_equal(air__health_on_outcome(&f->h, &f->c, AIR_O_OTHER_ERROR, -1, T0, 0, 10), 0);
    assert_int_equal(f->h.state, AIR_H_HEALTHY);
    /* ...and, as an answer from a live server, ends the run */
    assert_int_equal(f->h.consec_errors, 0);
    for (int i = 0; i < 100; i++)
        air__health_on_outcome(&f->h, &f->c, AIR_O_OTHER_ERROR, -1, T0, 0, 10);
    assert_int_equal(f->h.state, AIR_H_HEALTHY);
    assert_int_equal(f->h.ejections, 0);
}

/* Eject, wait it out, fail the probe; returns the new until_ms - now. */
static int64_t
eject_then_fail_probe(struct fx *f, int64_t *t)
{
    assert_int_equal(f->h.state, AIR_H_EJECTED);
    *t = f->h.until_ms;
    assert_int_equal(air__health_admit(&f->h, *t, f->why, sizeof f->why), 2);
    assert_int_equal(f->h.state, AIR_H_PROBING);
    assert_int_equal(air__health_on_outcome(&f->h, &f->c, AIR_O_GATEWAY_ERROR, -1, *t, 0, 10), 1);
    assert_int_equal(f->h.state, AIR_H_EJECTED);
    return f->h.until_ms - *t;
}

static void
test_health_ejection_time_grows_and_is_capped(void **state)
{
    struct fx *f = *state;
    int64_t t = T0;
    errors(f, 5, t);
    assert_int_equal(f->h.until_ms - t, 30000);
    static const int64_t want[] = {60000, 90000, 120000, 150000, 180000, 210000,
                                   240000, 270000, 300000, 300000, 300000};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        int64_t d = eject_then_fail_probe(f, &t);
        assert_int_equal(d, want[i]);
        assert_int_equal(f->h.ejections, i + 2);
    }
}

static void
test_health_probe_success_restores_and_resets(void **state)
{
    struct fx *f = *state;
    errors(f, 5, T0);
    int64_t t = f->h.until_ms;
    assert_int_equal(air__health_admit(&f->h, t, f->why, sizeof f->why), 2);
    assert_string_equal(f->why, "half-open probe after ejection 1");
    /* only one probe: a second caller is refused until the outcome */
    assert_int_equal(air__health_admit(&f->h, t + 5, f->why, sizeof f->why), 0);
    assert_non_null(strstr(f->why, "probe"));
    assert_int_equal(air__health_on_outcome(&f->h, &f->c, AIR_O_SUCCESS, -1, t + 900, 0, 10), 1);
    assert_int_equal(f->h.state, AIR_H_HEALTHY);
    assert_int_equal(f->h.consec_errors, 0);
    assert_int_equal(f->h.probe_out, 0);
    assert_int_equal(air__health_admit(&f->h, t + 901, f->why, sizeof f->why), 1);
    /* the count restarts: 4 errors do not eject, the 5th does, for 2 x base */
    errors(f, 4, t + 1000);
    assert_int_equal(f->h.state, AIR_H_HEALTHY);
    errors(f, 1, t + 1000);
    assert_int_equal(f->h.state, AIR_H_EJECTED);
    assert_int_equal(f->h.until_ms, t + 1000 + 60000);
}

static void
test_health_probe_4xx_counts_as_alive(void **state)
{
    struct fx *f = *state;
    errors(f, 5, T0);
    int64_t t = f->h.until_ms;
    assert_int_equal(air__health_admit(&f->h, t, NULL, 0), 2);
    air__health_on_outcome(&f->h, &f->c, AIR_O_OTHER_ERROR, -1, t, 0, 10);
    assert_int_equal(f->h.state, AIR_H_HEALTHY);
}

static void
test_health_lost_probe_times_out(void **state)
{
    struct fx *f = *state;
    errors(f, 5, T0);
    int64_t t = f->h.until_ms;
    assert_int_equal(air__health_admit(&f->h, t, NULL, 0), 2);
    assert_int_equal(air__health_admit(&f->h, t + AIR_HEALTH_PROBE_TIMEOUT_MS - 1, NULL, 0), 0);
    assert_int_equal(air__health_admit(&f->h, t + AIR_HEALTH_PROBE_TIMEOUT_MS, NULL, 0), 2);
}

static void
test_health_max_ejection_percent_respected(void **state)
{
    struct fx *f = *state;
    /* 4 deployments, 50 %: with 1 out, a second may go (2/4 = 50 %)... */
    for (int i = 0; i < 5; i++)
        air__health_on_outcome(&f->h, &f->c, AIR_O_GATEWAY_ERROR, -1, T0, 1, 4);
    assert_int_equal(f->h.state, AIR_H_EJECTED);
    /* ...but with 2 out, a third may not (3/4 = 75 %) */
    air__health_reset(&f->h);
    for (int i = 0; i < 20; i++)
        assert_int_equal(
            air__health_on_outcome(&f->h, &f->c, AIR_O_GATEWAY_ERROR, -1, T0, 2, 4), 0);
    assert_int_equal(f->h.state, AIR_H_HEALTHY);
    /* once another deployment is back, the next error ejects */
    assert_int_equal(air__health_on_outcome(&f->h, &f->c, AIR_O_GATEWAY_ERROR, -1, T0, 1, 4), 1);
    assert_int_equal(f->h.state, AIR_H_EJECTED);
    /* 0 % never ejects */
    air__health_reset(&f->h);
    f->c.max_ejection_percent = 0;
    for (int i = 0; i < 20; i++)
        air__health_on_outcome(&f->h, &f->c, AIR_O_GATEWAY_ERROR, -1, T0, 0, 100);
    assert_int_equal(f->h.state, AIR_H_HEALTHY);
}

static void
test_health_never_ejects_the_last_healthy_one(void **state)
{
    struct fx *f = *state;
    f->c.max_ejection_percent = 100;
    /* alone on its route */
    for (int i = 0; i < 50; i++)
        air__health_on_outcome(&f->h, &f->c, AIR_O_GATEWAY_ERROR, -1, T0, 0, 1);
    assert_int_equal(f->h.state, AIR_H_HEALTHY);
    /* the other two are out already */
    for (int i = 0; i < 50; i++)
        air__health_on_outcome(&f->h, &f->c, AIR_O_GATEWAY_ERROR, -1, T0, 2, 3);
    assert_int_equal(f->h.state, AIR_H_HEALTHY);
    assert_int_equal(air__health_admit(&f->h, T0, NULL, 0), 1);
    /* one other is still in: this one may go */
    air__health_on_outcome(&f->h, &f->c, AIR_O_GATEWAY_ERROR, -1, T0, 1, 3);
    assert_int_equal(f->h.state, AIR_H_EJECTED);
}

static void
test_health_auth_unusable_until_reset(void **state)
{
    struct fx *f = *state;
    assert_int_equal(air__health_on_outcome(&f->h, &f->c, AIR_O_AUTH, -1, T0, 0, 10), 1);
    assert_int_equal(f->h.state, AIR_H_UNUSABLE);
    assert_int_equal(air__health_admit(&f->h, T0 + 86400000, f->why, sizeof f->why), 0);
    assert_string_equal(f->why,
                        "unusable: authentication failed (reset by operator or config change)");
    /* nothing but a reset brings it back */
    assert_int_equal(air__health_on_outcome(&f->h, &f->c, AIR_O_SUCCESS, -1, T0, 0, 10), 0);
    assert_int_equal(f->h.state, AIR_H_UNUSABLE);
    air__health_reset(&f->h);
    assert_int_equal(f->h.state, AIR_H_HEALTHY);
    assert_int_equal(air__health_admit(&f->h, T0, NULL, 0), 1);
}

static void
test_health_429_retry_after_cools_down_until_then(void **state)
{
    struct fx *f = *state;
    assert_int_equal(
        air__health_on_outcome(&f->h, &f->c, AIR_O_RATE_LIMITED, 2500, T0, 0, 10), 1);
    assert_int_equal(f->h.state, AIR_H_COOLDOWN);
    assert_int_equal(air__health_admit(&f->h, T0 + 1300, f->why, sizeof f->why), 0);
    assert_string_equal(f->why, "cooling down after 429 for 1.2 s more");
    assert_int_equal(air__health_admit(&f->h, T0 + 2499, NULL, 0), 0);
    assert_int_equal(air__health_admit(&f->h, T0 + 2500, NULL, 0), 1);
    assert_int_equal(f->h.state, AIR_H_HEALTHY);
    assert_int_equal(f->h.consec_errors, 0); /* a 429 is not a gateway error */
    assert_int_equal(f->h.ejections, 0);
}

static void
test_health_429_without_hint_and_capped_hint(void **state)
{
    struct fx *f = *state;
    air__health_on_outcome(&f->h, &f->c, AIR_O_RATE_LIMITED, -1, T0, 0, 10);
    assert_int_equal(f->h.cooldown_until_ms, T0 + 1000); /* the default */
    air__health_reset(&f->h);
    air__health_on_outcome(&f->h, &f->c, AIR_O_RATE_LIMITED, 86400000, T0, 0, 10);
    assert_int_equal(f->h.cooldown_until_ms, T0 + 300000); /* capped */
    /* a shorter hint does not shorten a cool-down in progress */
    air__health_on_outcome(&f->h, &f->c, AIR_O_RATE_LIMITED, 10, T0 + 1, 0, 10);
    assert_int_equal(f->h.cooldown_until_ms, T0 + 300000);
}

static void
test_health_zero_remaining_quota_cools_down(void **state)
{
    struct fx *f = *state;
    /* a successful answer with remaining-requests: 0 and a reset in 4 s */
    assert_int_equal(air__health_on_outcome(&f->h, &f->c, AIR_O_SUCCESS, 4000, T0, 0, 10), 1);
    assert_int_equal(f->h.state, AIR_H_COOLDOWN);
    assert_int_equal(air__health_admit(&f->h, T0 + 1000, f->why, sizeof f->why), 0);
    assert_string_equal(f->why, "cooling down (rate-limit quota exhausted) for 3.0 s more");
    assert_int_equal(air__health_admit(&f->h, T0 + 4000, NULL, 0), 1);
    /* remaining 0 without a reset time (pass 0): the default cool-down */
    air__health_on_outcome(&f->h, &f->c, AIR_O_SUCCESS, 0, T0 + 5000, 0, 10);
    assert_int_equal(air__health_admit(&f->h, T0 + 5999, NULL, 0), 0);
    assert_int_equal(air__health_admit(&f->h, T0 + 6000, NULL, 0), 1);
    /* no hint on a success: nothing */
    assert_int_equal(air__health_on_outcome(&f->h, &f->c, AIR_O_SUCCESS, -1, T0 + 7000, 0, 10), 0);
    assert_int_equal(air__health_admit(&f->h, T0 + 7000, NULL, 0), 1);
}

static void
test_health_cooling_deployment_can_still_be_ejected(void **state)
{
    struct fx *f = *state;
    air__health_on_outcome(&f->h, &f->c, AIR_O_RATE_LIMITED, 500, T0, 0, 10);
    errors(f, 5, T0 + 1);
    assert_int_equal(f->h.state, AIR_H_EJECTED);
    assert_int_equal(air__health_admit(&f->h, T0 + 600, f->why, sizeof f->why), 0);
    assert_non_null(strstr(f->why, "ejected"));
}

static void
test_health_ejections_forgotten_after_calm_period(void **state)
{
    struct fx *f = *state;
    int64_t t = T0;
    errors(f, 5, t);
    eject_then_fail_probe(f, &t); /* ejections = 2 */
    t = f->h.until_ms;
    assert_int_equal(air__health_admit(&f->h, t, NULL, 0), 2);
    air__health_on_outcome(&f->h, &f->c, AIR_O_SUCCESS, -1, t, 0, 10);
    assert_int_equal(f->h.ejections, 2);
    /* healthy for less than max_ejection_ms: remembered */
    air__health_on_outcome(&f->h, &f->c, AIR_O_SUCCESS, -1, t + 299999, 0, 10);
    assert_int_equal(f->h.ejections, 2);
    air__health_on_outcome(&f->h, &f->c, AIR_O_SUCCESS, -1, t + 300000, 0, 10);
    assert_int_equal(f->h.ejections, 1);
    air__health_on_outcome(&f->h, &f->c, AIR_O_SUCCESS, -1, t + 600000, 0, 10);
    assert_int_equal(f->h.ejections, 0);
    errors(f, 5, t + 600001);
    assert_int_equal(f->h.until_ms, t + 600001 + 30000); /* back to the base time */
}

static void
test_health_late_error_while_ejected_is_ignored(void **state)
{
    struct fx *f = *state;
    errors(f, 5, T0);
    int64_t until = f->h.until_ms;
    assert_int_equal(errors(f, 10, T0 + 10), 0);
    assert_int_equal(f->h.until_ms, until);
    assert_int_equal(f->h.ejections, 1);
}

int
main(void)
{
#define T(name) cmocka_unit_test_setup(name, setup)
    const struct CMUnitTest tests[] = {
        T(test_health_defaults_match_envoy),
        T(test_health_consecutive_gateway_errors_eject),
        T(test_health_success_or_4xx_breaks_the_run),
        T(test_health_ejection_time_grows_and_is_capped),
        T(test_health_probe_success_restores_and_resets),
        T(test_health_probe_4xx_counts_as_alive),
        T(test_health_lost_probe_times_out),
        T(test_health_max_ejection_percent_respected),
        T(test_health_never_ejects_the_last_healthy_one),
        T(test_health_auth_unusable_until_reset),
        T(test_health_429_retry_after_cools_down_until_then),
        T(test_health_429_without_hint_and_capped_hint),
        T(test_health_zero_remaining_quota_cools_down),
        T(test_health_cooling_deployment_can_still_be_ejected),
        T(test_health_ejections_forgotten_after_calm_period),
        T(test_health_late_error_while_ejected_is_ignored),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
