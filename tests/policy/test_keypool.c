/*
 * test_keypool.c - API key pools: round-robin, 429 cool-down, set-aside on
 * 401/403, availability, reset; concurrent picks (run under TSan).
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "keypool.h"

static void
test_keypool_round_robin_spreads_evenly(void **state)
{
    (void)state;
    struct air__keypool p;
    air__keypool_init(&p, 3);
    int count[3] = {0};
    int64_t wait;
    for (int i = 0; i < 300; i++) {
        long k = air__keypool_pick(&p, 1000, &wait);
        assert_true(k >= 0 && k < 3);
        count[k]++;
    }
    assert_int_equal(count[0], 100);
    assert_int_equal(count[1], 100);
    assert_int_equal(count[2], 100);
}

static void
test_keypool_rate_limited_key_cools_down(void **state)
{
    (void)state;
    struct air__keypool p;
    air__keypool_init(&p, 2);
    air__keypool_report(&p, 0, AIR_K_RATE_LIMITED, 5000, 1000, 1000);
    int64_t wait;
    for (int i = 0; i < 10; i++)
        assert_int_equal(air__keypool_pick(&p, 2000, &wait), 1);
    assert_int_equal(air__keypool_available(&p, 2000), 1);
    /* Back after Retry-After. */
    int seen0 = 0;
    for (int i = 0; i < 4; i++)
        seen0 |= air__keypool_pick(&p, 6000, &wait) == 0;
    assert_true(seen0);
    /* No hint: the default cool-down applies. */
    air__keypool_report(&p, 1, AIR_K_RATE_LIMITED, -1, 1000, 10000);
    assert_int_equal(air__keypool_pick(&p, 10500, &wait), 0);
    assert_int_equal(air__keypool_available(&p, 11000), 2);
}

static void
test_keypool_rejected_key_is_set_aside(void **state)
{
    (void)state;
    struct air__keypool p;
    air__keypool_init(&p, 2);
    air__keypool_report(&p, 1, AIR_K_REJECTED, -1, 1000, 0);
    int64_t wait;
    for (int i = 0; i < 10; i++)
        assert_int_equal(air__keypool_pick(&p, 100000000, &wait), 0);
    air__keypool_report(&p, 0, AIR_K_REJECTED, -1, 1000, 0);
    assert_int_equal(air__keypool_pick(&p, 0, &wait), -1);
    assert_int_equal(wait, -1); /* waiting will not help */
    air__keypool_reset(&p);
    assert_int_equal(air__keypool_available(&p, 0), 2);
}

static void
test_keypool_all_cooling_reports_the_wait(void **state)
{
    (void)state;
    struct air__keypool p;
    air__keypool_init(&p, 2);
    air__keypool_report(&p, 0, AIR_K_RATE_LIMITED, 3000, 1000, 0);
    air__keypool_report(&p, 1, AIR_K_RATE_LIMITED, 1000, 1000, 0);
    int64_t wait;
    assert_int_equal(air__keypool_pick(&p, 500, &wait), -1);
    assert_int_equal(wait, 500);
    /* A later, shorter report does not shorten a cool-down. */
    air__keypool_report(&p, 0, AIR_K_RATE_LIMITED, 10, 1000, 500);
    assert_int_equal(air__keypool_pick(&p, 1500, &wait), 1);
    assert_int_equal(atomic_load(&p.k[0].cool_until_ms), 3000);
}

static void
test_keypool_empty_and_clamped(void **state)
{
    (void)state;
    struct air__keypool p;
    air__keypool_init(&p, 0);
    int64_t wait;
    assert_int_equal(air__keypool_pick(&p, 0, &wait), -1);
    air__keypool_init(&p, 1000);
    assert_int_equal(p.n, AIR_KEYPOOL_MAX);
    air__keypool_report(&p, 5000, AIR_K_REJECTED, -1, 0, 0); /* out of range: ignored */
    assert_int_equal(air__keypool_available(&p, 0), AIR_KEYPOOL_MAX);
}

struct mt {
    struct air__keypool *p;
    int count[4];
};

static void *
picker(void *arg)
{
    struct mt *m = arg;
    int64_t wait;
    for (int i = 0; i < 20000; i++) {
        long k = air__keypool_pick(m->p, 1000, &wait);
        if (k >= 0)
            m->count[k]++;
        if (i % 1000 == 0)
            air__keypool_report(m->p, (size_t)(i / 1000) % 4, AIR_K_OK, -1, 0, 1000);
    }
    return NULL;
}

static void
test_keypool_concurrent_picks_stay_in_range(void **state)
{
    (void)state;
    struct air__keypool p;
    air__keypool_init(&p, 4);
    struct mt m[4] = {{&p, {0}}, {&p, {0}}, {&p, {0}}, {&p, {0}}};
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, picker, &m[i]);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    long total = 0;
    for (int k = 0; k < 4; k++) {
        long per = 0;
        for (int i = 0; i < 4; i++)
            per += m[i].count[k];
        assert_int_equal(per, 20000); /* exactly even: one shared cursor */
        total += per;
    }
    assert_int_equal(total, 80000);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keypool_round_robin_spreads_evenly),
        cmocka_unit_test(test_keypool_rate_limited_key_cools_down),
        cmocka_unit_test(test_keypool_rejected_key_is_set_aside),
        cmocka_unit_test(test_keypool_all_cooling_reports_the_wait),
        cmocka_unit_test(test_keypool_empty_and_clamped),
        cmocka_unit_test(test_keypool_concurrent_picks_stay_in_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
