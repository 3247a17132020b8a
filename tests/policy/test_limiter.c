/*
 * test_limiter.c - policy/limiter.c with a fake clock: token bucket refill and
 * cap at the burst, the wait reported when short (and nothing taken),
 * separate burst, no loss of fractional refill over many small steps,
 * put (give back, clamp, negative = debt), sync from rate-limit headers,
 * oversized requests, unlimited buckets, time going backwards; the
 * concurrency cap; and several threads (pthreads, in this test only)
 * hammering take() and the cap: the bucket never grants more than its
 * capacity plus the refill of the elapsed fake time, the cap is never
 * exceeded. Changing the rate and the cap at run time (what was used stays
 * used), peeking without taking, carrying a bucket's state into a new one,
 * and threads taking while the rate changes. Thread counts and iterations
 * are small enough for TSan.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "limiter.h"

#define T0 5000000

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define ITERS 20000
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define ITERS 20000
#endif
#endif
#ifndef ITERS
#define ITERS 200000
#endif
#define NTHREADS 4

static void
test_limiter_bucket_starts_full_and_refills(void **state)
{
    (void)state;
    struct air__bucket b;
    air__bucket_init(&b, 60, 0, T0); /* 1 per second, burst 60 */
    for (int i = 0; i < 60; i++)
        assert_int_equal(air__bucket_take(&b, 1, T0), 0);
    assert_int_equal(air__bucket_take(&b, 1, T0), 1000);
    assert_int_equal(air__bucket_take(&b, 1, T0 + 999), 1);
    assert_int_equal(air__bucket_take(&b, 1, T0 + 1000), 0);
    assert_int_equal(air__bucket_take(&b, 1, T0 + 1000), 1000);
    /* a long idle period refills to the burst, not beyond */
    assert_true(air__bucket_tokens(&b, T0 + 3600000) == 60.0);
    for (int i = 0; i < 60; i++)
        assert_int_equal(air__bucket_take(&b, 1, T0 + 3600000), 0);
    assert_true(air__bucket_take(&b, 1, T0 + 3600000) > 0);
}

static void
test_limiter_bucket_wait_is_exact_and_takes_nothing(void **state)
{
    (void)state;
    struct air__bucket b;
    air__bucket_init(&b, 60, 0, T0);
    assert_int_equal(air__bucket_take(&b, 60, T0), 0);
    assert_int_equal(air__bucket_take(&b, 5, T0), 5000);
    assert_int_equal(air__bucket_take(&b, 5, T0 + 2500), 2500); /* 2.5 there, 2.5 to go */
    assert_true(fabs(air__bucket_tokens(&b, T0 + 2500) - 2.5) < 1e-9); /* nothing taken */
    assert_int_equal(air__bucket_take(&b, 5, T0 + 5000), 0);
    assert_true(fabs(air__bucket_tokens(&b, T0 + 5000)) < 1e-9);
    /* fractional token counts (token-per-minute buckets take estimates) */
    air__bucket_init(&b, 60000, 0, T0); /* 1 per ms */
    assert_int_equal(air__bucket_take(&b, 59999.5, T0), 0);
    assert_int_equal(air__bucket_take(&b, 1, T0), 1);
    assert_int_equal(air__bucket_take(&b, 0.5, T0), 0);
}

static void
test_limiter_bucket_separate_burst(void **state)
{
    (void)state;
    struct air__bucket b;
    air__bucket_init(&b, 600, 10, T0); /* 10 per second, at most 10 at once */
    for (int i = 0; i < 10; i++)
        assert_int_equal(air__bucket_take(&b, 1, T0), 0);
    assert_int_equal(air__bucket_take(&b, 1, T0), 100);
    assert_true(air__bucket_tokens(&b, T0 + 60000) == 10.0);
}

static void
test_limiter_bucket_fractional_refill_not_lost(void **state)
{
    (void)state;
    struct air__bucket b;
    air__bucket_init(&b, 7, 0, T0); /* 7 per minute: 0.1167 milli-tokens per ms */
    int granted = 0;
    for (int64_t t = T0; t <= T0 + 60000; t++)
        granted += air__bucket_take(&b, 1, t) == 0;
    assert_int_equal(granted, 14); /* the initial 7 and 7 refilled */
}

static void
test_limiter_bucket_put_gives_back_and_takes(void **state)
{
    (void)state;
    struct air__bucket b;
    air__bucket_init(&b, 60, 0, T0);
    assert_int_equal(air__bucket_take(&b, 10, T0), 0);
    air__bucket_put(&b, 4, T0); /* estimated 10, used 6 */
    assert_true(fabs(air__bucket_tokens(&b, T0) - 54) < 1e-9);
    air__bucket_put(&b, 100, T0);
    assert_true(air__bucket_tokens(&b, T0) == 60.0); /* never above the capacity */
    air__bucket_put(&b, -70, T0); /* used 70 more than estimated: debt */
    assert_true(fabs(air__bucket_tokens(&b, T0) + 10) < 1e-9);
    assert_int_equal(air__bucket_take(&b, 1, T0), 11000);
}

static void
test_limiter_bucket_sync_from_headers(void **state)
{
    (void)state;
    struct air__bucket b;
    air__bucket_init(&b, 60, 0, T0);
    air__bucket_sync(&b, 5, 0, T0);
    assert_true(fabs(air__bucket_tokens(&b, T0) - 5) < 1e-9);
    air__bucket_sync(&b, 1000, 0, T0);
    assert_true(air__bucket_tokens(&b, T0) == 60.0);
    air__bucket_sync(&b, 0, 3000, T0); /* exhausted, resets in 3 s */
    assert_int_equal(air__bucket_take(&b, 1, T0), 1000);
    air__bucket_sync(&b, 50, 30000, T0); /* not full before the vendor's reset */
    assert_true(fabs(air__bucket_tokens(&b, T0) - 30) < 1e-9);
    air__bucket_sync(&b, 0, 120000, T0); /* reset further away than one refill */
    assert_int_equal(air__bucket_take(&b, 1, T0), 61000);
}

static void
test_limiter_bucket_oversized_request_needs_full_bucket(void **state)
{
    (void)state;
    struct air__bucket b;
    air__bucket_init(&b, 60, 0, T0);
    assert_int_equal(air__bucket_take(&b, 1, T0), 0);
    assert_int_equal(air__bucket_take(&b, 100, T0), 1000); /* waits for a full bucket */
    assert_int_equal(air__bucket_take(&b, 100, T0 + 1000), 0); /* then goes into debt */
    assert_int_equal(air__bucket_take(&b, 1, T0 + 1000), 41000);
}

static void
test_limiter_bucket_unlimited_and_backwards_time(void **state)
{
    (void)state;
    struct air__bucket b;
    air__bucket_init(&b, 0, 0, T0);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(air__bucket_take(&b, 1e9, T0), 0);
    air__bucket_init(&b, 60, 0, T0);
    assert_int_equal(air__bucket_take(&b, 60, T0 + 1000), 0);
    /* a thread with a clock slightly behind refills nothing */
    assert_true(air__bucket_take(&b, 1, T0 + 500) > 0);
    assert_int_equal(air__bucket_take(&b, 1, T0 + 2000), 0);
}

static void
test_limiter_cap_enter_leave(void **state)
{
    (void)state;
    struct air__cap c;
    air__cap_init(&c, 3);
    assert_int_equal(air__cap_enter(&c), 1);
    assert_int_equal(air__cap_enter(&c), 1);
    assert_int_equal(air__cap_enter(&c), 1);
    assert_int_equal(air__cap_enter(&c), 0);
    air__cap_leave(&c);
    assert_int_equal(air__cap_enter(&c), 1);
    assert_int_equal(atomic_load(&c.n), 3);
    air__cap_init(&c, 0);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(air__cap_enter(&c), 1);
    assert_int_equal(atomic_load(&c.n), 1000);
    for (int i = 0; i < 1001; i++) /* an extra leave does not wrap */
        air__cap_leave(&c);
    assert_int_equal(atomic_load(&c.n), 0);
}

/* ------------------------------------------------------------ threads */

struct hammer {
    _Atomic int *go; /* start gate: every thread begins at once */
    struct air__bucket *b;
    struct air__cap *cap;
    _Atomic int *inside;
    _Atomic int *max_inside;
    int64_t step_div; /* fake clock: now = T0 + i / step_div (0 = frozen) */
    int granted;
    int64_t last_now;
};

static void *
hammer_bucket(void *arg)
{
    struct hammer *h = arg;
    while (!atomic_load(h->go))
        sched_yield();
    for (int i = 0; i < ITERS; i++) {
        int64_t now = h->step_div ? T0 + i / h->step_div : T0;
        if (air__bucket_take(h->b, 1, now) == 0)
            h->granted++;
        h->last_now = now;
    }
    return NULL;
}

static void
run_bucket(struct air__bucket *b, int64_t step_div, int *total, int64_t *max_now)
{
    pthread_t t[NTHREADS];
    struct hammer h[NTHREADS] = {{0}};
    _Atomic int go = 0;
    for (int i = 0; i < NTHREADS; i++) {
        h[i].go = &go;
        h[i].b = b;
        h[i].step_div = step_div;
        assert_int_equal(pthread_create(&t[i], NULL, hammer_bucket, &h[i]), 0);
    }
    atomic_store(&go, 1);
    *total = 0;
    *max_now = T0;
    for (int i = 0; i < NTHREADS; i++) {
        pthread_join(t[i], NULL);
        *total += h[i].granted;
        if (h[i].last_now > *max_now)
            *max_now = h[i].last_now;
    }
}

static void
test_limiter_threads_never_grant_more_than_capacity(void **state)
{
    (void)state;
    struct air__bucket b;
    int total;
    int64_t max_now;
    /* frozen clock: exactly the burst is granted, never more */
    air__bucket_init(&b, 1000, 0, T0);
    run_bucket(&b, 0, &total, &max_now);
    assert_int_equal(total, 1000);
    assert_true(air__bucket_tokens(&b, T0) == 0.0);

    /* moving clocks (each thread its own, unsynchronised): at most the
     * burst plus the refill of the elapsed time */
    air__bucket_init(&b, 6000, 0, T0); /* 0.1 per ms */
    run_bucket(&b, 50, &total, &max_now);
    double bound = 6000 + 0.1 * (double)(max_now - T0);
    assert_true(total <= (int)bound);
    assert_true(total >= 6000); /* and the burst itself was all handed out */
}

static void *
hammer_cap(void *arg)
{
    struct hammer *h = arg;
    while (!atomic_load(h->go))
        sched_yield();
    for (int i = 0; i < ITERS / 4; i++) {
        if (!air__cap_enter(h->cap))
            continue;
        int in = atomic_fetch_add(h->inside, 1) + 1;
        int m = atomic_load(h->max_inside);
        while (in > m && !atomic_compare_exchange_weak(h->max_inside, &m, in))
            ;
        atomic_fetch_sub(h->inside, 1);
        air__cap_leave(h->cap);
    }
    return NULL;
}

static void
test_limiter_threads_never_exceed_cap(void **state)
{
    (void)state;
    struct air__cap cap;
    air__cap_init(&cap, 2);
    _Atomic int inside = 0, max_inside = 0;
    pthread_t t[NTHREADS];
    struct hammer h[NTHREADS] = {{0}};
    _Atomic int go = 0;
    for (int i = 0; i < NTHREADS; i++) {
        h[i].go = &go;
        h[i].cap = &cap;
        h[i].inside = &inside;
        h[i].max_inside = &max_inside;
        assert_int_equal(pthread_create(&t[i], NULL, hammer_cap, &h[i]), 0);
    }
    atomic_store(&go, 1);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(t[i], NULL);
    assert_true(atomic_load(&max_inside) <= 2);
    assert_true(atomic_load(&max_inside) >= 1);
    assert_int_equal(atomic_load(&cap.n), 0);
}

static void
test_limiter_set_rate_keeps_what_was_used(void **state)
{
    (void)state;
    struct air__bucket b;
    air__bucket_init(&b, 60, 0, T0); /* burst 60 */
    for (int i = 0; i < 50; i++)
        assert_int_equal(air__bucket_take(&b, 1, T0), 0);
    /* Raised to 100: the 50 used stay used, 50 left (not a fresh 100). */
    air__bucket_set_rate(&b, 100, 0, T0);
    assert_true(air__bucket_per_minute(&b) == 100.0);
    assert_true(fabs(air__bucket_tokens(&b, T0) - 50.0) < 1e-9);
    /* Lowered to 20: 50 used of 20 leaves 30 of debt; the wait is at the
     * new rate (20 a minute = 1 per 3 s): 31 tokens short = 93 s. */
    air__bucket_set_rate(&b, 20, 0, T0);
    assert_true(fabs(air__bucket_tokens(&b, T0) + 30.0) < 1e-9);
    assert_int_equal(air__bucket_take(&b, 1, T0), 93000);
    /* Refill after the change is at the new rate. */
    assert_true(fabs(air__bucket_tokens(&b, T0 + 30000) + 20.0) < 1e-6);
}

static void
test_limiter_set_rate_to_and_from_unlimited(void **state)
{
    (void)state;
    struct air__bucket b;
    air__bucket_init(&b, 0, 0, T0); /* unlimited */
    assert_int_equal(air__bucket_take(&b, 1e9, T0), 0);
    /* Limited from unlimited: starts full. */
    air__bucket_set_rate(&b, 3, 0, T0 + 1000);
    for (int i = 0; i < 3; i++)
        assert_int_equal(air__bucket_take(&b, 1, T0 + 1000), 0);
    assert_true(air__bucket_take(&b, 1, T0 + 1000) > 0);
    /* Unlimited again: grants anything, and put is a no-op. */
    air__bucket_set_rate(&b, 0, 0, T0 + 2000);
    assert_true(air__bucket_per_minute(&b) == 0.0);
    for (int i = 0; i < 100; i++)
        assert_int_equal(air__bucket_take(&b, 1, T0 + 2000), 0);
    air__bucket_put(&b, 5, T0 + 2000);
    /* And limited once more: full again. */
    air__bucket_set_rate(&b, 2, 0, T0 + 3000);
    assert_true(fabs(air__bucket_tokens(&b, T0 + 3000) - 2.0) < 1e-9);
}

static void
test_limiter_peek_answers_like_take_and_takes_nothing(void **state)
{
    (void)state;
    struct air__bucket b;
    air__bucket_init(&b, 60, 0, T0);
    for (int i = 0; i < 100; i++)
        assert_int_equal(air__bucket_peek(&b, 60, T0), 0);
    assert_true(fabs(air__bucket_tokens(&b, T0) - 60.0) < 1e-9);
    for (int i = 0; i < 59; i++)
        assert_int_equal(air__bucket_take(&b, 1, T0), 0);
    assert_int_equal(air__bucket_peek(&b, 2, T0), 1000); /* same wait as take */
    assert_int_equal(air__bucket_take(&b, 2, T0), 1000);
    assert_int_equal(air__bucket_peek(&b, 1, T0), 0);
    assert_int_equal(air__bucket_peek(&b, 1000, T0 + 59000), 0); /* oversized: needs full */
    air__bucket_init(&b, 0, 0, T0);
    assert_int_equal(air__bucket_peek(&b, 1e9, T0), 0);
}

static void
test_limiter_carry_moves_used_tokens_to_a_new_bucket(void **state)
{
    (void)state;
    struct air__bucket old, nw;
    air__bucket_init(&old, 60, 0, T0);
    for (int i = 0; i < 40; i++)
        assert_int_equal(air__bucket_take(&old, 1, T0), 0);
    /* Same size: 20 left. */
    air__bucket_init(&nw, 60, 0, T0 + 1000);
    air__bucket_carry(&nw, &old, T0 + 1000);
    assert_true(fabs(air__bucket_tokens(&nw, T0 + 1000) - 21.0) < 1e-9); /* +1 s refill */
    /* A bigger new bucket: the 40 used (less the refill) stay used. */
    air__bucket_init(&nw, 120, 0, T0 + 1000);
    air__bucket_carry(&nw, &old, T0 + 1000);
    assert_true(fabs(air__bucket_tokens(&nw, T0 + 1000) - 81.0) < 1e-9);
    /* Unlimited on either side: the new bucket stays as it was (full). */
    struct air__bucket un;
    air__bucket_init(&un, 0, 0, T0);
    air__bucket_init(&nw, 10, 0, T0 + 1000);
    air__bucket_carry(&nw, &un, T0 + 1000);
    assert_true(fabs(air__bucket_tokens(&nw, T0 + 1000) - 10.0) < 1e-9);
}

static void
test_limiter_cap_max_changes_at_run_time(void **state)
{
    (void)state;
    struct air__cap c;
    air__cap_init(&c, 2);
    assert_int_equal(air__cap_enter(&c), 1);
    assert_int_equal(air__cap_enter(&c), 1);
    assert_int_equal(air__cap_enter(&c), 0);
    air__cap_set_max(&c, 3);
    assert_int_equal(air__cap_max(&c), 3);
    assert_int_equal(air__cap_enter(&c), 1);
    assert_int_equal(air__cap_enter(&c), 0);
    /* Lowered below the count: refuses until enough have left. */
    air__cap_set_max(&c, 1);
    air__cap_leave(&c);
    assert_int_equal(air__cap_enter(&c), 0);
    air__cap_leave(&c);
    air__cap_leave(&c);
    assert_int_equal(air__cap_count(&c), 0);
    assert_int_equal(air__cap_enter(&c), 1);
    air__cap_set_max(&c, 0); /* unlimited, still counted */
    assert_int_equal(air__cap_enter(&c), 1);
    assert_int_equal(air__cap_count(&c), 2);
}

/* Threads taking while the rate changes under them: no crash, no race
 * (TSan), and never more granted than the largest bucket's capacity plus
 * the largest rate's refill. */
struct setrate_ctx {
    struct air__bucket *b;
    _Atomic int64_t granted;
    _Atomic int stop;
};

static void *
setrate_taker(void *arg)
{
    struct setrate_ctx *c = arg;
    for (int i = 0; i < ITERS / 10; i++)
        if (air__bucket_take(c->b, 1, T0 + i / 10) == 0)
            atomic_fetch_add(&c->granted, 1);
    return NULL;
}

static void
test_limiter_threads_take_while_the_rate_changes(void **state)
{
    (void)state;
    struct air__bucket b;
    air__bucket_init(&b, 600, 0, T0);
    struct setrate_ctx c = {.b = &b};
    atomic_init(&c.granted, 0);
    atomic_init(&c.stop, 0);
    pthread_t th[NTHREADS];
    for (int i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, setrate_taker, &c), 0);
    for (int i = 0; i < 200; i++)
        air__bucket_set_rate(&b, i % 2 ? 600 : 60, 0, T0);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    /* Capacity 600 at most, a change never adds more than the difference in
     * capacity to what is left, and every change to 60 takes it back. */
    int64_t fake_ms = ITERS / 100;
    assert_true(atomic_load(&c.granted) <= 600 + 100 * 540 + fake_ms * 10 + 1);
    assert_true(atomic_load(&c.granted) >= 1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_limiter_bucket_starts_full_and_refills),
        cmocka_unit_test(test_limiter_bucket_wait_is_exact_and_takes_nothing),
        cmocka_unit_test(test_limiter_bucket_separate_burst),
        cmocka_unit_test(test_limiter_bucket_fractional_refill_not_lost),
        cmocka_unit_test(test_limiter_bucket_put_gives_back_and_takes),
        cmocka_unit_test(test_limiter_bucket_sync_from_headers),
        cmocka_unit_test(test_limiter_bucket_oversized_request_needs_full_bucket),
        cmocka_unit_test(test_limiter_bucket_unlimited_and_backwards_time),
        cmocka_unit_test(test_limiter_cap_enter_leave),
        cmocka_unit_test(test_limiter_threads_never_grant_more_than_capacity),
        cmocka_unit_test(test_limiter_threads_never_exceed_cap),
        cmocka_unit_test(test_limiter_set_rate_keeps_what_was_used),
        cmocka_unit_test(test_limiter_set_rate_to_and_from_unlimited),
        cmocka_unit_test(test_limiter_peek_answers_like_take_and_takes_nothing),
        cmocka_unit_test(test_limiter_carry_moves_used_tokens_to_a_new_bucket),
        cmocka_unit_test(test_limiter_cap_max_changes_at_run_time),
        cmocka_unit_test(test_limiter_threads_take_while_the_rate_changes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
