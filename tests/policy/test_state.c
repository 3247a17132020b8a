/*
 * test_state.c - policy/state.c: the local backend is exactly the bucket and
 * budget it wraps; the lease arithmetic of a shared backend against an
 * in-memory store that follows the lease script's rules (grants never exceed
 * what the store has, debt is charged unconditionally): slices are renewed
 * when low and shrunk when idle, usage and refunds are reported exactly,
 * oversized requests leave debt, fail-open and fail-closed when the store is
 * unhealthy (and fail-open usage is reported afterwards; a deployment's quota
 * follows its own switch, apart from client rate limits), budgets reserve
 * from the slice and settle to it, and the concurrency test: several threads
 * spending a lease while a sync thread renews it never spend more than the
 * store granted (run under TSan too).
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

#include "state.h"

/* A store holding `tokens` units for one limit, applying plans the way the
 * Lua script does (no refill: a fixed total makes the bounds exact). */
struct store {
    int64_t tokens; /* units left */
    int64_t used;   /* usage reported */
    int64_t granted;
};

static void
store_sync(struct store *s, struct air__slimit *l, int64_t now, int final)
{
    struct air__lease_req rq;
    if (!air__lease_plan(l, now, final, &rq))
        return;
    s->tokens += rq.ret;
    s->tokens -= rq.must;
    int64_t g = 0;
    if (rq.want > 0 && s->tokens > 0)
        g = rq.want < s->tokens ? rq.want : s->tokens;
    s->tokens -= g;
    s->used += rq.used;
    s->granted += rq.must + g;
    struct air__lease_reply rp = {.grant = rq.must + g, .level = s->tokens};
    air__lease_apply(l, &rq, &rp, now, now);
}

/* impl points at the test's nudge counter (or is NULL). */
static void
count_nudge(void *impl)
{
    if (impl != NULL)
        atomic_fetch_add((_Atomic int *)impl, 1);
}

static const struct air__state_ops fake_ops = {.name = "fake", .nudge = count_nudge};

static void
shared_state_n(struct air__state *st, uint32_t instances, double maxf, double minf,
               _Atomic int *nudges)
{
    struct air__lease_cfg lc = {.sync_ms = 50, .horizon_ms = 500, .max_fraction = maxf,
                                .min_fraction = minf};
    air__state_init_shared(st, &fake_ops, (void *)nudges, instances, AIR_FAIL_OPEN,
                           AIR_FAIL_OPEN, AIR_FAIL_CLOSED, &lc);
}

static void
shared_state(struct air__state *st, uint32_t instances, double maxf, double minf)
{
    shared_state_n(st, instances, maxf, minf, NULL);
}

static void
test_state_local_is_the_bucket(void **state)
{
    (void)state;
    struct air__state st;
    air__state_init_local(&st);
    assert_string_equal(air__state_name(&st), "local");
    struct air__slimit l;
    air__slim_init_rate(&l, &st, NULL, 10, 0);
    int64_t w;
    for (int i = 0; i < 10; i++)
        assert_int_equal(air__slim_take(&l, 1, 0, &w), AIR_SL_OK);
    assert_int_equal(air__slim_take(&l, 1, 0, &w), AIR_SL_LIMIT);
    assert_int_equal(w, 6000); /* one token per 6 s */
    air__slim_put(&l, 1, 0);
    assert_int_equal(air__slim_take(&l, 1, 0, &w), AIR_SL_OK);

    struct air__slimit b;
    air__slim_init_budget(&b, &st, NULL, 1.0, AIR_W_DAY, 0);
    int src = -1;
    int64_t ra;
    assert_int_equal(air__slim_reserve(&b, 0.6, 1000, &ra, &src), AIR_SL_OK);
    assert_int_equal(src, AIR_SRC_LOCAL);
    assert_int_equal(air__slim_reserve(&b, 0.6, 1000, &ra, &src), AIR_SL_LIMIT);
    assert_int_equal(ra, 86400000 - 1000);
    air__slim_settle(&b, 0.6, 0.25, src, 1000);
    assert_true(air__slim_spent(&b) > 0.2499 && air__slim_spent(&b) < 0.2501);
    assert_int_equal(air__slim_reserve(&b, 0.6, 1000, &ra, &src), AIR_SL_OK);
}

static void
test_state_lease_renews_and_reports_usage(void **state)
{
    (void)state;
    struct air__state st;
    _Atomic int nudges = 0;
    shared_state_n(&st, 2, 0.1, 0.01, &nudges);
    struct air__slimit l;
    air__slim_init_rate(&l, &st, NULL, 1000, 0); /* 1000 rpm: max slice 100, min 10 */
    assert_int_equal(l.max_slice, 100000);
    assert_int_equal(l.min_slice, 10000);
    struct store s = {.tokens = 1000000};
    int64_t w;
    /* No slice yet, the store has room: wait for the renewal, which was asked for. */
    assert_int_equal(air__slim_take(&l, 1, 0, &w), AIR_SL_SHORT);
    assert_true(w >= 1 && w <= 50);
    assert_true(atomic_load(&nudges) >= 1);
    store_sync(&s, &l, 10, 0);
    /* About the largest slice to start with (the demand average has just
     * begun to move). */
    assert_true(s.granted > 95000 && s.granted <= 100000);
    int n = 0;
    while (air__slim_take(&l, 1, 20, &w) == AIR_SL_OK)
        n++;
    assert_int_equal(n, s.granted / 1000);
    assert_int_equal(air__slim_take(&l, 1, 20, &w), AIR_SL_SHORT);
    /* Usage is reported in whole tokens; a refund nets out. */
    air__slim_put(&l, 3, 20);
    store_sync(&s, &l, 30, 0);
    assert_int_equal(s.used, n - 3);
    assert_true(air__slim_avail(&l) > 2.9);
    /* Debt: a request used more than estimated. */
    air__slim_put(&l, -500, 40);
    assert_true(air__slim_avail(&l) < 0);
    int64_t before = s.granted;
    store_sync(&s, &l, 50, 0);
    assert_true(s.granted - before >= 497000); /* the debt, charged whatever the room */
    assert_true(air__slim_avail(&l) >= 0);
    assert_int_equal(s.used, n - 3 + 500);
    /* Everything the store handed out is either used or held. */
    store_sync(&s, &l, 60, 1);
    assert_int_equal(air__slim_avail(&l), 0);
    assert_int_equal(s.tokens + s.used * 1000, 1000000);
}

static void
test_state_idle_slice_shrinks_to_min(void **state)
{
    (void)state;
    struct air__state st;
    shared_state(&st, 1, 0.2, 0.01);
    struct air__slimit l;
    air__slim_init_rate(&l, &st, NULL, 6000, 0); /* max slice 1200, min 60 */
    struct store s = {.tokens = 6000000};
    store_sync(&s, &l, 1, 0);
    assert_true(air__slim_avail(&l) >= 1190.0);
    /* Idle for 20 horizons: most of the slice goes back. */
    for (int64_t t = 50; t <= 10000; t += 50)
        store_sync(&s, &l, t, 0);
    assert_true(air__slim_slice(&l) <= 60.01);
    assert_true(air__slim_avail(&l) <= 2 * 60.01);
    assert_int_equal(s.used, 0);
    assert_int_equal(s.tokens + (int64_t)(air__slim_avail(&l) * 1000), 6000000);
}

static void
test_state_demand_grows_the_slice(void **state)
{
    (void)state;
    struct air__state st;
    shared_state(&st, 1, 0.5, 0.001);
    struct air__slimit l;
    air__slim_init_rate(&l, &st, NULL, 600000, 0); /* max slice 300000 */
    struct store s = {.tokens = 600000000};
    int64_t w;
    int64_t t = 0;
    /* Idle first: the slice shrinks. */
    for (; t < 5000; t += 50)
        store_sync(&s, &l, t, 0);
    double idle = air__slim_slice(&l);
    /* Then 200 requests per 50 ms = 4 per ms: about 2000 per horizon. */
    int refused = 0;
    for (; t < 10000; t += 50) {
        for (int i = 0; i < 200; i++)
            refused += air__slim_take(&l, 1, t, &w) != AIR_SL_OK;
        store_sync(&s, &l, t, 0);
    }
    assert_true(air__slim_slice(&l) > idle);
    assert_true(air__slim_slice(&l) >= 1500 && air__slim_slice(&l) <= 2600);
    assert_true(refused < 200 * 5); /* only while the slice was catching up */
}

static void
test_state_oversized_request_leaves_debt(void **state)
{
    (void)state;
    struct air__state st;
    shared_state(&st, 1, 0.01, 0.01);
    struct air__slimit l;
    air__slim_init_rate(&l, &st, NULL, 100000, 0); /* max slice 1000 tokens */
    struct store s = {.tokens = 100000000};
    int64_t w;
    store_sync(&s, &l, 1, 0);
    assert_int_equal(air__slim_take(&l, 5000, 2, &w), AIR_SL_OK);
    assert_true(air__slim_avail(&l) < -3999);
    store_sync(&s, &l, 3, 0);
    assert_true(air__slim_avail(&l) >= 0);
    assert_int_equal(s.used, 5000);
}

static void
test_state_unhealthy_fails_open_or_closed(void **state)
{
    (void)state;
    struct air__state st;
    shared_state(&st, 4, 0.1, 0.01);
    struct air__slimit l;
    air__slim_init_rate(&l, &st, NULL, 400, 0); /* fail-open share: 100/min */
    struct store s = {.tokens = 400000};
    int64_t w;
    store_sync(&s, &l, 1, 0);
    int slice = (int)air__slim_avail(&l);
    assert_true(slice >= 39 && slice <= 40);
    atomic_store(&st.healthy, 0);
    /* The slice is still good, then the local share (100). */
    int ok = 0;
    while (air__slim_take(&l, 1, 2, &w) == AIR_SL_OK && ok < 1000)
        ok++;
    assert_int_equal(ok, slice + 100);
    /* Usage while the store was away is reported when it is back. */
    atomic_store(&st.healthy, 1);
    store_sync(&s, &l, 3, 0);
    assert_int_equal(s.used, ok);

    st.fail_rate = AIR_FAIL_CLOSED;
    atomic_store(&st.healthy, 0);
    while (air__slim_take(&l, 1, 4, &w) == AIR_SL_OK)
        ;
    assert_int_equal(air__slim_take(&l, 1, 4, &w), AIR_SL_CLOSED);

    /* Budgets: closed by default. */
    struct air__slimit b;
    air__slim_init_budget(&b, &st, NULL, 10.0, AIR_W_DAY, 0);
    int src;
    int64_t ra;
    assert_int_equal(air__slim_reserve(&b, 0.01, 5, &ra, &src), AIR_SL_CLOSED);
    st.fail_budget = AIR_FAIL_OPEN;
    assert_int_equal(air__slim_reserve(&b, 2.0, 5, &ra, &src), AIR_SL_OK);
    assert_int_equal(src, AIR_SRC_LOCAL);
    assert_int_equal(air__slim_reserve(&b, 1.0, 5, &ra, &src), AIR_SL_LIMIT); /* share: 2.5 */
    air__slim_settle(&b, 2.0, 1.5, AIR_SRC_LOCAL, 6);
    assert_int_equal(air__slim_reserve(&b, 1.0, 7, &ra, &src), AIR_SL_OK);
    air__slim_settle(&b, 1.0, 0, src, 8);
    /* The fallback's spending is settled to the store once it is back. */
    struct air__lease_req rq;
    assert_true(air__lease_plan(&b, 9, 0, &rq));
    assert_int_equal(rq.used, 1500000);
    assert_int_equal(rq.must, 1500000); /* and charged to the window */
}

/* A deployment's quota (air__slim_init_quota) fails per fail_quota, a
 * client's rate limit per fail_rate, in either combination; while the
 * store answers they behave the same. */
static void
test_state_quota_fails_apart_from_rate_limits(void **state)
{
    (void)state;
    struct air__state st;
    struct air__lease_cfg lc = {.sync_ms = 50, .horizon_ms = 500, .max_fraction = 0.1,
                                .min_fraction = 0.01};
    air__state_init_shared(&st, &fake_ops, NULL, 4, AIR_FAIL_OPEN, AIR_FAIL_CLOSED,
                           AIR_FAIL_CLOSED, &lc);
    assert_int_equal(st.fail_rate, AIR_FAIL_OPEN);
    assert_int_equal(st.fail_quota, AIR_FAIL_CLOSED);
    assert_int_equal(st.fail_budget, AIR_FAIL_CLOSED);
    struct air__slimit cl, dq;
    air__slim_init_rate(&cl, &st, NULL, 400, 0);  /* a client's rpm: fail-open share 100 */
    air__slim_init_quota(&dq, &st, NULL, 400, 0); /* a deployment's rpm */
    assert_int_equal(cl.quota, 0);
    assert_int_equal(dq.quota, 1);
    assert_true(air__slim_limit(&dq) == 400);
    int64_t w;
    /* Healthy: both spend their slices alike. */
    struct store s1 = {.tokens = 400000}, s2 = {.tokens = 400000};
    store_sync(&s1, &cl, 1, 0);
    store_sync(&s2, &dq, 1, 0);
    assert_int_equal(air__slim_take(&cl, 1, 2, &w), AIR_SL_OK);
    assert_int_equal(air__slim_take(&dq, 1, 2, &w), AIR_SL_OK);

    atomic_store(&st.healthy, 0);
    while (air__slim_avail(&cl) >= 1 && air__slim_take(&cl, 1, 3, &w) == AIR_SL_OK)
        ;
    while (air__slim_avail(&dq) >= 1 && air__slim_take(&dq, 1, 3, &w) == AIR_SL_OK)
        ;
    /* Slices spent: the client limit serves from its local share, the
     * quota refuses (take and peek agree). */
    assert_int_equal(air__slim_peek(&cl, 1, 3, &w), AIR_SL_OK);
    assert_int_equal(air__slim_take(&cl, 1, 3, &w), AIR_SL_OK);
    assert_int_equal(air__slim_peek(&dq, 1, 3, &w), AIR_SL_CLOSED);
    assert_int_equal(air__slim_take(&dq, 1, 3, &w), AIR_SL_CLOSED);

    /* The reverse: client rate limits closed, deployment quotas open. */
    st.fail_rate = AIR_FAIL_CLOSED;
    st.fail_quota = AIR_FAIL_OPEN;
    assert_int_equal(air__slim_peek(&cl, 1, 4, &w), AIR_SL_CLOSED);
    assert_int_equal(air__slim_take(&cl, 1, 4, &w), AIR_SL_CLOSED);
    assert_int_equal(air__slim_peek(&dq, 1, 4, &w), AIR_SL_OK);
    int ok = 0;
    while (air__slim_take(&dq, 1, 4, &w) == AIR_SL_OK && ok < 1000)
        ok++;
    assert_int_equal(ok, 100); /* its local share: 400 / 4 */
    assert_int_equal(air__slim_take(&dq, 1, 4, &w), AIR_SL_LIMIT);

    /* The local backend: both open, as before the switch existed. */
    struct air__state loc;
    air__state_init_local(&loc);
    assert_int_equal(loc.fail_quota, AIR_FAIL_OPEN);
    assert_int_equal(loc.fail_rate, AIR_FAIL_OPEN);
}

static void
test_state_budget_lease_reserve_settle(void **state)
{
    (void)state;
    struct air__state st;
    shared_state(&st, 2, 0.1, 0.01);
    struct air__slimit b;
    air__slim_init_budget(&b, &st, NULL, 100.0, AIR_W_DAY, 0); /* slice $10 */
    struct air__lease_req rq;
    int src;
    int64_t ra;
    assert_int_equal(air__slim_reserve(&b, 1.0, 1, &ra, &src), AIR_SL_SHORT);
    assert_true(air__lease_plan(&b, 2, 0, &rq));
    assert_int_equal(rq.want, 10000000);
    struct air__lease_reply rp = {.grant = 10000000, .level = 90000000, .win_start = 0,
                                  .win_end = 86400000, .spent = 0};
    air__lease_apply(&b, &rq, &rp, 3, 3);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(air__slim_reserve(&b, 1.0, 4, &ra, &src), AIR_SL_OK);
        assert_int_equal(src, AIR_SRC_LEASE);
        air__slim_settle(&b, 1.0, 0.5, src, 5);
    }
    assert_true(air__slim_avail(&b) > 4.999 && air__slim_avail(&b) < 5.001);
    assert_true(air__lease_plan(&b, 6, 0, &rq));
    assert_int_equal(rq.used, 5000000);
    /* The store has no room left: the next shortfall is a real refusal,
     * retrying when the window ends. */
    rp.grant = 0;
    rp.level = 0;
    air__lease_apply(&b, &rq, &rp, 7, 7);
    for (int i = 0; i < 5; i++)
        assert_int_equal(air__slim_reserve(&b, 1.0, 8, &ra, &src), AIR_SL_OK);
    assert_int_equal(air__slim_reserve(&b, 1.0, 8, &ra, &src), AIR_SL_LIMIT);
    assert_int_equal(ra, 86400000 - 8);
    /* Window over: what is left goes back to the old window. */
    for (int i = 0; i < 5; i++)
        air__slim_settle(&b, 1.0, 0.25, AIR_SRC_LEASE, 9);
    assert_true(air__lease_plan(&b, 86400001, 0, &rq));
    assert_int_equal(rq.ret, 3750000);
    assert_int_equal(rq.ret_win, 0);
    assert_int_equal(rq.used, 1250000);
    assert_true(rq.want > 0);
}

/* ---------------------------------------------------------- concurrency */

#define SPENDERS 4
#define TOTAL    200000 /* tokens in the store */

struct race {
    _Atomic int next; /* spender index */
    struct air__state st;
    struct air__slimit l;
    struct store s;
    _Atomic int stop;
    _Atomic int64_t taken[SPENDERS];
    _Atomic int sync_done;
};

static void *
spender(void *arg)
{
    struct race *r = arg;
    int me = atomic_fetch_add(&r->next, 1) % SPENDERS;
    int64_t w, n = 0, takes = 0;
    while (!atomic_load(&r->sync_done)) {
        if (air__slim_take(&r->l, 1, 0, &w) == AIR_SL_OK) {
            n++;
            if ((++takes & 63) == 0) {
                air__slim_put(&r->l, 1, 0); /* refunds race with plans too */
                n--;
            }
        }
    }
    atomic_store(&r->taken[me], n);
    return NULL;
}

static void *
syncer(void *arg)
{
    struct race *r = arg;
    int64_t t = 0;
    while (r->s.tokens > 0 || air__slim_avail(&r->l) >= 1) {
        store_sync(&r->s, &r->l, t += 10, 0);
        sched_yield();
    }
    atomic_store(&r->sync_done, 1);
    return NULL;
}

static void
test_state_concurrent_spend_never_exceeds_grants(void **state)
{
    (void)state;
    static struct race r; /* large; zeroed */
    shared_state(&r.st, 1, 0.01, 0.001);
    air__slim_init_rate(&r.l, &r.st, NULL, 6000000, 0); /* slices up to 60000 tokens */
    r.s.tokens = (int64_t)TOTAL * 1000;
    pthread_t th[SPENDERS + 1];
    for (int i = 0; i < SPENDERS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, spender, &r), 0);
    assert_int_equal(pthread_create(&th[SPENDERS], NULL, syncer, &r), 0);
    for (int i = 0; i <= SPENDERS; i++)
        pthread_join(th[i], NULL);
    int64_t taken = 0;
    for (int i = 0; i < SPENDERS; i++)
        taken += atomic_load(&r.taken[i]);
    /* Every token spent was granted by the store; none was spent twice. */
    assert_true(taken <= TOTAL);
    store_sync(&r.s, &r.l, 1000000000, 1);
    assert_int_equal(r.s.used, taken);
    assert_int_equal(r.s.tokens + r.s.used * 1000, (int64_t)TOTAL * 1000);
}

/* Peeking says what take/reserve would, without taking, reserving or
 * nudging the store; local limits change at run time, shared ones refuse
 * to; carry copies a local limit's use into a new one. */
static void
test_state_peek_set_and_carry(void **state)
{
    (void)state;
    struct air__state st;
    air__state_init_local(&st);
    struct air__slimit l;
    air__slim_init_rate(&l, &st, NULL, 2, 0);
    int64_t w;
    for (int i = 0; i < 5; i++)
        assert_int_equal(air__slim_peek(&l, 1, 0, &w), AIR_SL_OK);
    assert_true(air__slim_available(&l, 0) == 2.0);
    assert_int_equal(air__slim_take(&l, 2, 0, &w), AIR_SL_OK);
    assert_int_equal(air__slim_peek(&l, 1, 0, &w), AIR_SL_LIMIT);
    assert_int_equal(w, 30000);
    assert_true(air__slim_limit(&l) == 2.0);
    assert_int_equal(air__slim_set_rate(&l, 4, 0), 0);
    assert_true(air__slim_limit(&l) == 4.0);
    assert_int_equal(air__slim_peek(&l, 2, 0, &w), AIR_SL_OK); /* 2 used of 4 */
    assert_int_equal(air__slim_peek(&l, 3, 0, &w), AIR_SL_LIMIT);
    /* An unlimited local rate (0) grants everything until set. */
    struct air__slimit u;
    air__slim_init_rate(&u, &st, NULL, 0, 0);
    assert_true(air__slim_limit(&u) == 0.0);
    assert_int_equal(air__slim_take(&u, 1e6, 0, &w), AIR_SL_OK);

    struct air__slimit b, b2;
    air__slim_init_budget(&b, &st, NULL, 1.0, AIR_W_DAY, 0);
    int src;
    assert_int_equal(air__slim_reserve(&b, 0.7, 0, &w, &src), AIR_SL_OK);
    assert_int_equal(air__slim_peek_reserve(&b, 0.3, 0, &w), AIR_SL_OK);
    assert_int_equal(air__slim_peek_reserve(&b, 0.31, 0, &w), AIR_SL_LIMIT);
    assert_int_equal(w, 86400000);
    assert_int_equal(air__slim_set_budget(&b, 2.0), 0);
    assert_true(air__slim_limit(&b) == 2.0);
    assert_int_equal(air__slim_peek_reserve(&b, 1.3, 0, &w), AIR_SL_OK);
    air__slim_settle(&b, 0.7, 0.5, src, 10);
    /* Carry: the new budget starts with the old one's spending. */
    air__slim_init_budget(&b2, &st, NULL, 1.0, AIR_W_DAY, 20);
    air__slim_carry(&b2, &b, 20);
    assert_true(fabs(air__slim_spent(&b2) - 0.5) < 1e-9);
    assert_int_equal(air__slim_peek_reserve(&b2, 0.6, 20, &w), AIR_SL_LIMIT);
    /* A different window kind starts afresh. */
    air__slim_init_budget(&b2, &st, NULL, 1.0, AIR_W_HOUR, 20);
    air__slim_carry(&b2, &b, 20);
    assert_true(air__slim_spent(&b2) == 0);

    /* Shared: sizes are not set at run time; peeks do not nudge. */
    struct air__state sh;
    _Atomic int nudges = 0;
    shared_state_n(&sh, 2, 0.1, 0.01, &nudges);
    struct air__slimit sl;
    air__slim_init_rate(&sl, &sh, NULL, 1000, 0);
    assert_int_equal(air__slim_set_rate(&sl, 10, 0), -1);
    assert_true(air__slim_limit(&sl) == 1000.0);
    assert_int_equal(air__slim_peek(&sl, 1, 0, &w), AIR_SL_SHORT);
    assert_int_equal(atomic_load(&nudges), 0);
    assert_true(air__slim_avail(&sl) == 0);
    struct air__slimit sb;
    air__slim_init_budget(&sb, &sh, NULL, 5.0, AIR_W_DAY, 0);
    assert_int_equal(air__slim_set_budget(&sb, 1.0), -1);
    assert_int_equal(air__slim_peek_reserve(&sb, 0.1, 0, &w), AIR_SL_SHORT);
    atomic_store(&sh.healthy, 0);
    assert_int_equal(air__slim_peek_reserve(&sb, 0.1, 0, &w), AIR_SL_CLOSED);
    assert_int_equal(atomic_load(&nudges), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_local_is_the_bucket),
        cmocka_unit_test(test_state_lease_renews_and_reports_usage),
        cmocka_unit_test(test_state_idle_slice_shrinks_to_min),
        cmocka_unit_test(test_state_demand_grows_the_slice),
        cmocka_unit_test(test_state_oversized_request_leaves_debt),
        cmocka_unit_test(test_state_unhealthy_fails_open_or_closed),
        cmocka_unit_test(test_state_quota_fails_apart_from_rate_limits),
        cmocka_unit_test(test_state_budget_lease_reserve_settle),
        cmocka_unit_test(test_state_concurrent_spend_never_exceeds_grants),
        cmocka_unit_test(test_state_peek_set_and_carry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
