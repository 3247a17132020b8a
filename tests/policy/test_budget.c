/*
 * test_budget.c - policy/budget.c: UTC window alignment (minute, hour, day,
 * calendar month, checked against the C library's gmtime/timegm over
 * 1900..2200, plus December -> January and leap years 2000/2024 vs
 * 1900/2023/2100 by hand), window names, reserve/settle arithmetic and the
 * retry-after of a refusal, rollover (spending restarts, reservations carry
 * over), unlimited budgets, and the required concurrency test: several
 * threads reserving and settling at once never overrun the limit (a monitor
 * thread checks spent + reserved <= limit all along; the final spending is
 * within the limit and every reservation is released), run under TSan too.
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
#include <time.h>

#include "budget.h"
#include "retry.h"

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define ITERS 20000
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define ITERS 20000
#endif
#endif
#ifndef ITERS
#define ITERS 50000
#endif
#define NTHREADS 4

/* Unix ms of a UTC date-time. */
static int64_t
utc(int y, int mon, int d, int h, int mi, int s, int ms)
{
    struct tm tm = {0};
    tm.tm_year = y - 1900;
    tm.tm_mon = mon - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = s;
    return (int64_t)timegm(&tm) * 1000 + ms;
}

static void
test_budget_window_names(void **state)
{
    (void)state;
    static const char *const n[] = {"minute", "hour", "day", "month"};
    for (int i = 0; i < 4; i++) {
        enum air__window w;
        assert_int_equal(air__window_parse(n[i], &w), 0);
        assert_int_equal(w, i);
        assert_string_equal(air__window_name(w), n[i]);
    }
    enum air__window w;
    assert_int_equal(air__window_parse("week", &w), -1);
    assert_int_equal(air__window_parse("Month", &w), -1);
    assert_int_equal(air__window_parse(NULL, &w), -1);
}

static void
test_budget_windows_aligned_by_hand(void **state)
{
    (void)state;
    int64_t t = utc(2026, 11, 26, 12, 48, 7, 123);
    assert_int_equal(air__window_start(AIR_W_MINUTE, t), utc(2026, 11, 26, 12, 48, 0, 0));
    assert_int_equal(air__window_end(AIR_W_MINUTE, t), utc(2026, 11, 26, 12, 49, 0, 0));
    assert_int_equal(air__window_start(AIR_W_HOUR, t), utc(2026, 11, 26, 12, 0, 0, 0));
    assert_int_equal(air__window_end(AIR_W_HOUR, t), utc(2026, 11, 26, 13, 0, 0, 0));
    assert_int_equal(air__window_start(AIR_W_DAY, t), utc(2026, 11, 26, 0, 0, 0, 0));
    assert_int_equal(air__window_end(AIR_W_DAY, t), utc(2026, 11, 27, 0, 0, 0, 0));
    assert_int_equal(air__window_start(AIR_W_MONTH, t), utc(2026, 11, 1, 0, 0, 0, 0));
    assert_int_equal(air__window_end(AIR_W_MONTH, t), utc(2026, 12, 1, 0, 0, 0, 0));
    /* December -> January */
    t = utc(2025, 12, 31, 23, 59, 59, 999);
    assert_int_equal(air__window_start(AIR_W_MONTH, t), utc(2025, 12, 1, 0, 0, 0, 0));
    assert_int_equal(air__window_end(AIR_W_MONTH, t), utc(2026, 1, 1, 0, 0, 0, 0));
    assert_int_equal(air__window_start(AIR_W_MONTH, t + 1), utc(2026, 1, 1, 0, 0, 0, 0));
    assert_int_equal(air__window_end(AIR_W_DAY, t), t + 1);
    /* leap years: February has 29 days in 2000 and 2024, 28 in 1900, 2023, 2100 */
    static const struct {
        int y, days;
    } feb[] = {{2000, 29}, {2024, 29}, {1900, 28}, {2023, 28}, {2100, 28}, {1972, 29}};
    for (size_t i = 0; i < sizeof feb / sizeof feb[0]; i++) {
        int64_t mid = utc(feb[i].y, 2, 20, 6, 0, 0, 0);
        int64_t s = air__window_start(AIR_W_MONTH, mid), e = air__window_end(AIR_W_MONTH, mid);
        assert_int_equal(s, utc(feb[i].y, 2, 1, 0, 0, 0, 0));
        assert_int_equal(e, utc(feb[i].y, 3, 1, 0, 0, 0, 0));
        assert_int_equal((e - s) / 86400000, feb[i].days);
    }
    /* exactly on a boundary: that window */
    t = utc(2024, 3, 1, 0, 0, 0, 0);
    assert_int_equal(air__window_start(AIR_W_MONTH, t), t);
    assert_int_equal(air__window_start(AIR_W_MONTH, t - 1), utc(2024, 2, 1, 0, 0, 0, 0));
}

static void
test_budget_windows_match_libc_calendar(void **state)
{
    (void)state;
    uint64_t rng = 2026;
    int64_t lo = utc(1900, 1, 1, 0, 0, 0, 0), hi = utc(2200, 1, 1, 0, 0, 0, 0);
    for (int i = 0; i < 20000; i++) {
        int64_t t = lo + (int64_t)(air__rand_next(&rng) % (uint64_t)(hi - lo));
        time_t sec = (time_t)(t >= 0 ? t / 1000 : -((-t + 999) / 1000));
        struct tm tm;
        assert_non_null(gmtime_r(&sec, &tm));
        int y = tm.tm_year + 1900, m = tm.tm_mon + 1;
        assert_int_equal(air__window_start(AIR_W_MONTH, t), utc(y, m, 1, 0, 0, 0, 0));
        assert_int_equal(air__window_end(AIR_W_MONTH, t),
                         m == 12 ? utc(y + 1, 1, 1, 0, 0, 0, 0) : utc(y, m + 1, 1, 0, 0, 0, 0));
        assert_int_equal(air__window_start(AIR_W_DAY, t), utc(y, m, tm.tm_mday, 0, 0, 0, 0));
        assert_int_equal(air__window_start(AIR_W_HOUR, t),
                         utc(y, m, tm.tm_mday, tm.tm_hour, 0, 0, 0));
        assert_int_equal(air__window_start(AIR_W_MINUTE, t),
                         utc(y, m, tm.tm_mday, tm.tm_hour, tm.tm_min, 0, 0));
    }
}

static void
test_budget_reserve_settle_and_refusal(void **state)
{
    (void)state;
    struct air__budget b;
    int64_t now = utc(2026, 11, 26, 12, 0, 0, 0);
    int64_t ra = -1;
    air__budget_init(&b, 1.00, AIR_W_DAY, now);
    assert_int_equal(air__budget_reserve(&b, 0.40, now, &ra), 0);
    assert_int_equal(air__budget_reserve(&b, 0.40, now, &ra), 0);
    assert_int_equal(air__budget_reserve(&b, 0.30, now, &ra), -1);
    assert_int_equal(ra, 12 * 3600000LL); /* until midnight UTC */
    assert_true(fabs(air__budget_reserved(&b) - 0.80) < 1e-9);
    assert_true(air__budget_spent(&b) == 0);
    air__budget_settle(&b, 0.40, 0.10, now + 1000); /* cheaper than estimated */
    assert_true(fabs(air__budget_spent(&b) - 0.10) < 1e-9);
    assert_true(fabs(air__budget_reserved(&b) - 0.40) < 1e-9);
    assert_int_equal(air__budget_reserve(&b, 0.30, now + 2000, NULL), 0);
    assert_int_equal(air__budget_reserve(&b, 0.21, now + 2000, NULL), -1);
    assert_int_equal(air__budget_reserve(&b, 0.20, now + 2000, NULL), 0); /* exactly full */
    assert_int_equal(air__budget_reserve(&b, 0.000001, now + 2000, NULL), -1);
    assert_int_equal(atomic_load(&b.committed_micro), 1000000);
    /* an actual cost above the estimate can overrun; then nothing is admitted */
    air__budget_settle(&b, 0.30, 0.50, now + 3000);
    assert_int_equal(air__budget_reserve(&b, 0.000001, now + 3000, NULL), -1);
    assert_int_equal(air__budget_reserve(&b, 0, now + 3000, NULL), -1);
}

static void
test_budget_rollover_resets_spending_keeps_reservations(void **state)
{
    (void)state;
    struct air__budget b;
    int64_t now = utc(2025, 12, 31, 23, 59, 0, 0);
    air__budget_init(&b, 5.0, AIR_W_MONTH, now);
    assert_int_equal(air__budget_reserve(&b, 4.0, now, NULL), 0);
    air__budget_settle(&b, 4.0, 4.0, now);
    assert_int_equal(air__budget_reserve(&b, 0.5, now, NULL), 0); /* in flight over midnight */
    int64_t ra = 0;
    assert_int_equal(air__budget_reserve(&b, 1.0, now, &ra), -1);
    assert_int_equal(ra, 60000); /* a minute to the new month */
    int64_t jan = utc(2026, 1, 1, 0, 0, 1, 0);
    assert_true(air__budget_spent_at(&b, jan) == 0);
    assert_true(fabs(air__budget_spent_at(&b, now) - 4.0) < 1e-9);
    /* new month: spending restarts; the 0.5 reservation still counts */
    assert_int_equal(air__budget_reserve(&b, 4.5, jan, NULL), 0);
    assert_int_equal(air__budget_reserve(&b, 0.01, jan, NULL), -1);
    assert_true(air__budget_spent(&b) == 0);
    air__budget_settle(&b, 0.5, 0.25, jan); /* settles into January */
    assert_true(fabs(air__budget_spent(&b) - 0.25) < 1e-9);
    assert_int_equal(air__budget_reserve(&b, 0.25, jan, NULL), 0);
    assert_int_equal(air__budget_reserve(&b, 0.01, jan, NULL), -1);
}

static void
test_budget_unlimited_counts_but_never_refuses(void **state)
{
    (void)state;
    struct air__budget b;
    air__budget_init(&b, 0, AIR_W_HOUR, 0);
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(air__budget_reserve(&b, 100.0, 1000, NULL), 0);
        air__budget_settle(&b, 100.0, 1.0, 1000);
    }
    assert_true(fabs(air__budget_spent(&b) - 1000.0) < 1e-6);
    assert_true(air__budget_reserved(&b) == 0);
}

/* ------------------------------------------------------------ threads */

struct shared {
    struct air__budget b;
    _Atomic int go; /* start gate: every thread begins at once */
    _Atomic int stop;
    _Atomic int violations;
    _Atomic int admitted;
    int64_t limit_micro;
};

struct worker {
    struct shared *s;
    uint64_t rng;
    int exact; /* actual == estimate (else a random part of it) */
};

static void *
reserver(void *arg)
{
    struct worker *w = arg;
    int64_t now = 1000;
    while (!atomic_load(&w->s->go))
        sched_yield();
    for (int i = 0; i < ITERS; i++) {
        double est = 0.001 * (double)(1 + air__rand_next(&w->rng) % 20); /* 0.1 .. 2 cents */
        if (air__budget_reserve(&w->s->b, est, now, NULL) != 0)
            continue;
        atomic_fetch_add(&w->s->admitted, 1);
        double actual = w->exact ? est : est * (double)(air__rand_next(&w->rng) % 101) / 100.0;
        air__budget_settle(&w->s->b, est, actual, now);
    }
    return NULL;
}

static void *
monitor(void *arg)
{
    struct shared *s = arg;
    while (!atomic_load(&s->stop)) {
        /* spent only grows within a window, so reading it first gives a
         * sum no larger than some true instant's */
        int64_t spent = atomic_load(&s->b.spent_micro);
        int64_t reserved = atomic_load(&s->b.reserved_micro);
        int64_t committed = atomic_load(&s->b.committed_micro);
        if (spent + reserved > s->limit_micro || committed > s->limit_micro)
            atomic_fetch_add(&s->violations, 1);
    }
    return NULL;
}

static void
run_concurrent(int exact)
{
    static struct shared s;
    /* A limit the threads fill about three quarters of the way through
     * (mean estimate 1.05 cents), so they contend for a long time, both
     * while there is room and at the edge. */
    double limit = (double)(ITERS * NTHREADS) * 0.0105 * (exact ? 0.75 : 0.4);
    limit = floor(limit);
    air__budget_init(&s.b, limit, AIR_W_MONTH, 1000);
    atomic_store(&s.go, 0);
    atomic_store(&s.stop, 0);
    atomic_store(&s.violations, 0);
    atomic_store(&s.admitted, 0);
    s.limit_micro = (int64_t)limit * 1000000;
    pthread_t mon, t[NTHREADS];
    struct worker w[NTHREADS];
    assert_int_equal(pthread_create(&mon, NULL, monitor, &s), 0);
    for (int i = 0; i < NTHREADS; i++) {
        w[i] = (struct worker){&s, (uint64_t)(i + 1) * 7919, exact};
        assert_int_equal(pthread_create(&t[i], NULL, reserver, &w[i]), 0);
    }
    atomic_store(&s.go, 1);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(t[i], NULL);
    atomic_store(&s.stop, 1);
    pthread_join(mon, NULL);
    assert_int_equal(atomic_load(&s.violations), 0);
    assert_true(atomic_load(&s.b.spent_micro) <= s.limit_micro);
    assert_int_equal(atomic_load(&s.b.reserved_micro), 0);
    assert_int_equal(atomic_load(&s.b.committed_micro), atomic_load(&s.b.spent_micro));
    assert_true(atomic_load(&s.admitted) > 0);
    if (exact) /* the budget ends (nearly) full: at most one 2-cent step short */
        assert_true(atomic_load(&s.b.spent_micro) > s.limit_micro - 20000);
}

static void
test_budget_threads_never_overrun_exact_costs(void **state)
{
    (void)state;
    run_concurrent(1);
}

static void
test_budget_threads_never_overrun_cheaper_costs(void **state)
{
    (void)state;
    run_concurrent(0);
}

static void
test_budget_limit_changes_at_run_time_spending_stays(void **state)
{
    (void)state;
    struct air__budget b;
    int64_t now = utc(2026, 11, 26, 12, 0, 0, 0);
    int64_t ra = -1;
    air__budget_init(&b, 1.00, AIR_W_DAY, now);
    assert_int_equal(air__budget_reserve(&b, 0.60, now, &ra), 0);
    air__budget_settle(&b, 0.60, 0.60, now);
    assert_int_equal(air__budget_peek(&b, 0.50, now, &ra), -1);
    assert_int_equal(ra, 12 * 3600000LL);
    air__budget_set_limit(&b, 2.00);
    assert_true(air__budget_limit(&b) == 2.00);
    assert_int_equal(air__budget_peek(&b, 0.50, now, NULL), 0); /* peek reserves nothing */
    assert_int_equal(air__budget_peek(&b, 1.40, now, NULL), 0);
    assert_int_equal(air__budget_reserve(&b, 1.40, now, NULL), 0);
    assert_int_equal(air__budget_reserve(&b, 0.01, now, NULL), -1);
    /* Lowered under what is committed: nothing until the window rolls. */
    air__budget_set_limit(&b, 0.50);
    air__budget_settle(&b, 1.40, 0, now);
    assert_int_equal(air__budget_peek(&b, 0.01, now, NULL), -1);
    assert_int_equal(air__budget_peek(&b, 0.01, now + 12 * 3600000LL, NULL), 0);
    /* 0 = unlimited. */
    air__budget_set_limit(&b, 0);
    assert_int_equal(air__budget_reserve(&b, 1000, now + 12 * 3600000LL, NULL), 0);
}

static void
test_budget_carry_counts_reservations_as_spent(void **state)
{
    (void)state;
    struct air__budget old, nw;
    int64_t now = utc(2026, 11, 26, 12, 0, 0, 0);
    air__budget_init(&old, 1.00, AIR_W_DAY, now);
    assert_int_equal(air__budget_reserve(&old, 0.30, now, NULL), 0);
    air__budget_settle(&old, 0.30, 0.20, now);
    assert_int_equal(air__budget_reserve(&old, 0.25, now, NULL), 0); /* still in flight */
    air__budget_init(&nw, 1.00, AIR_W_DAY, now + 1000);
    air__budget_carry(&nw, &old, now + 1000);
    assert_true(fabs(air__budget_spent(&nw) - 0.45) < 1e-9);
    assert_int_equal(air__budget_reserve(&nw, 0.56, now + 1000, NULL), -1);
    assert_int_equal(air__budget_reserve(&nw, 0.55, now + 1000, NULL), 0);
    /* The next day the old window's spending is over; only the reservation
     * still in flight carries (it settles into the window it ends in). */
    air__budget_init(&nw, 1.00, AIR_W_DAY, now + 86400000LL);
    air__budget_carry(&nw, &old, now + 86400000LL);
    assert_true(fabs(air__budget_spent(&nw) - 0.25) < 1e-9);
    /* Nor across window kinds. */
    air__budget_init(&nw, 1.00, AIR_W_MONTH, now);
    air__budget_carry(&nw, &old, now);
    assert_true(air__budget_spent(&nw) == 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_budget_window_names),
        cmocka_unit_test(test_budget_windows_aligned_by_hand),
        cmocka_unit_test(test_budget_windows_match_libc_calendar),
        cmocka_unit_test(test_budget_reserve_settle_and_refusal),
        cmocka_unit_test(test_budget_rollover_resets_spending_keeps_reservations),
        cmocka_unit_test(test_budget_unlimited_counts_but_never_refuses),
        cmocka_unit_test(test_budget_threads_never_overrun_exact_costs),
        cmocka_unit_test(test_budget_threads_never_overrun_cheaper_costs),
        cmocka_unit_test(test_budget_limit_changes_at_run_time_spending_stays),
        cmocka_unit_test(test_budget_carry_counts_reservations_as_spent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
