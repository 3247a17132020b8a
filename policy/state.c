/*
 * state.c - the state backend seen by limits and budgets: the in-process
 * implementation (a slimit is its bucket or budget) and the lease arithmetic
 * of a shared one (see state.h).
 *
 * DESIGN
 * The hot path of a shared limit is one CAS on lease.avail: a request spends
 * units the store already counted as taken, so it never waits on a round
 * trip. Everything else (settling usage, renewing or shrinking the slice,
 * covering debt) is decided by air__lease_plan on the backend's sync thread,
 * from counters the hot path leaves behind: consumption is derived as
 * granted - returned - avail (+ fail-open use), so spending needs no second
 * atomic; refused asks go to `want`, which makes the next slice bigger.
 * A slice never grows past max_slice, which is what bounds the overrun
 * (state.h). Memory orders: the counters protect no other data; relaxed
 * would do for them, acquire/release is used where a reader on another
 * thread derives one counter from another (plan reads avail after the
 * exchanges of the side counters).
 */
#include "state.h"

#include <math.h>
#include <stddef.h>

#include "fixed.h"

static const struct air__state_ops local_ops = {.name = "local", .nudge = NULL};

void
air__state_init_local(struct air__state *st)
{
    st->ops = &local_ops;
    st->impl = NULL;
    st->shared = 0;
    st->instances = 1;
    st->fail_rate = AIR_FAIL_OPEN;
    st->fail_quota = AIR_FAIL_OPEN;
    st->fail_budget = AIR_FAIL_CLOSED;
    st->lease.sync_ms = 50;
    st->lease.horizon_ms = 500;
    st->lease.max_fraction = 0;
    st->lease.min_fraction = 0.01;
    atomic_init(&st->healthy, 1);
}

void
air__state_init_shared(struct air__state *st, const struct air__state_ops *ops, void *impl,
                       uint32_t instances, enum air__fail_mode fail_rate,
                       enum air__fail_mode fail_quota, enum air__fail_mode fail_budget,
                       const struct air__lease_cfg *lc)
{
    air__state_init_local(st);
    st->ops = ops;
    st->impl = impl;
    st->shared = 1;
    st->instances = instances ? instances : 1;
    st->fail_rate = fail_rate;
    st->fail_quota = fail_quota;
    st->fail_budget = fail_budget;
    st->lease = *lc;
    if (st->lease.sync_ms < 1)
        st->lease.sync_ms = 1;
    if (st->lease.horizon_ms < 1)
        st->lease.horizon_ms = 1;
}

const char *
air__state_name(const struct air__state *st)
{
    return st->ops != NULL && st->ops->name != NULL ? st->ops->name : "local";
}

static void
nudge(const struct air__slimit *l)
{
    if (l->st->ops != NULL && l->st->ops->nudge != NULL)
        l->st->ops->nudge(l->st->impl);
}

/* Slice bounds of a limit of `units` (per minute, or per window). */
static void
init_lease(struct air__slimit *l, int64_t units, int64_t unit_floor, int64_t now_ms)
{
    const struct air__state *st = l->st;
    double maxf = st->lease.max_fraction > 0 ? st->lease.max_fraction
                                              : 1.0 / (4.0 * (double)st->instances);
    double minf = st->lease.min_fraction > 0 ? st->lease.min_fraction : 0;
    if (minf > maxf)
        minf = maxf;
    l->max_slice = (int64_t)floor((double)units * maxf);
    if (l->max_slice < unit_floor)
        l->max_slice = unit_floor;
    l->min_slice = (int64_t)floor((double)units * minf);
    if (l->min_slice < unit_floor)
        l->min_slice = unit_floor;
    if (l->min_slice > l->max_slice)
        l->min_slice = l->max_slice;
    struct air__lease *ls = &l->lease;
    atomic_init(&ls->avail, 0);
    atomic_init(&ls->want, 0);
    atomic_init(&ls->ask_max, 0);
    atomic_init(&ls->fb_used, 0);
    atomic_init(&ls->spent, 0);
    atomic_init(&ls->drop, 0);
    /* No demand known yet: start with the largest slice, so an instance
     * that starts under load is not starved; an idle one gives most of it
     * back within a few horizons. */
    atomic_init(&ls->target, l->max_slice);
    atomic_init(&ls->level, units);
    atomic_init(&ls->level_at_ms, now_ms);
    atomic_init(&ls->win_end_ms, 0);
    atomic_init(&ls->store_spent, 0);
    atomic_init(&ls->vsync_rem, -1);
    atomic_init(&ls->vsync_reset_ms, 0);
    atomic_init(&ls->vsync_seq, 0);
    ls->vsync_seen = 0;
    ls->win_start_store = 0;
    ls->granted = ls->returned = ls->fb_total = 0;
    ls->cons_last = 0;
    ls->unreported = 0;
    ls->rate_per_ms = (double)l->max_slice / (double)st->lease.horizon_ms;
    ls->last_plan_ms = now_ms;
}

void
air__slim_init_rate(struct air__slimit *l, struct air__state *st, char *key, double per_minute,
                    int64_t now_ms)
{
    l->st = st;
    l->kind = AIR_SL_RATE;
    l->quota = 0;
    l->key = key;
    l->limit = per_minute;
    l->w = AIR_W_MINUTE;
    l->rate_milli_per_ms = per_minute / 60.0;
    l->burst_milli = (int64_t)llround(per_minute * 1000.0);
    /* Local: the whole limit. Shared: the fail-open share of this instance. */
    air__bucket_init(&l->bucket, st->shared ? per_minute / (double)st->instances : per_minute, 0,
                     now_ms);
    air__budget_init(&l->budget, 0, AIR_W_DAY, now_ms);
    init_lease(l, l->burst_milli, 1000, now_ms);
}

void
air__slim_init_quota(struct air__slimit *l, struct air__state *st, char *key, double per_minute,
                     int64_t now_ms)
{
    air__slim_init_rate(l, st, key, per_minute, now_ms);
    l->quota = 1;
}

void
air__slim_init_budget(struct air__slimit *l, struct air__state *st, char *key, double usd,
                      enum air__window w, int64_t now_ms)
{
    l->st = st;
    l->kind = AIR_SL_BUDGET;
    l->quota = 0;
    l->key = key;
    l->limit = usd;
    l->w = w;
    l->rate_milli_per_ms = 0;
    l->burst_milli = 0;
    air__bucket_init(&l->bucket, 0, 0, now_ms);
    air__budget_init(&l->budget, st->shared ? usd / (double)st->instances : usd, w, now_ms);
    init_lease(l, air__micro_near(usd), 1, now_ms);
}

/* Take `need` units from the slice. A need above max_slice is granted
 * from a full slice, leaving debt. */
static int
lease_take(struct air__slimit *l, int64_t need)
{
    struct air__lease *ls = &l->lease;
    int64_t have_at_least = need > l->max_slice ? l->max_slice : need;
    int64_t a = atomic_load_explicit(&ls->avail, memory_order_acquire);
    while (a >= have_at_least) {
        if (atomic_compare_exchange_weak_explicit(&ls->avail, &a, a - need, memory_order_acq_rel,
                                                  memory_order_acquire)) {
            if (a - need < atomic_load_explicit(&ls->target, memory_order_relaxed) / 2)
                nudge(l);
            return 1;
        }
    }
    return 0;
}

/* The slice could not cover `need`: remember the demand, ask for a renewal. */
static void
lease_short(struct air__slimit *l, int64_t need)
{
    struct air__lease *ls = &l->lease;
    atomic_fetch_add_explicit(&ls->want, need, memory_order_relaxed);
    int64_t m = atomic_load_explicit(&ls->ask_max, memory_order_relaxed);
    while (need > m && !atomic_compare_exchange_weak_explicit(&ls->ask_max, &m, need,
                                                              memory_order_relaxed,
                                                              memory_order_relaxed))
        ;
    nudge(l);
}

static int64_t
short_wait(const struct air__slimit *l)
{
    int64_t w = l->st->lease.sync_ms / 10;
    return w < 1 ? 1 : w;
}

/* Shared rate limit whose slice cannot cover `need`, store reachable: is
 * there room in the shared bucket as the last sync saw it (refilled since)?
 * SHORT (renewal on its way) or LIMIT, with the wait. */
static enum air__slim_rc
shared_rate_level(const struct air__slimit *l, int64_t need, int64_t now_ms, int64_t *wait_ms)
{
    const struct air__lease *ls = &l->lease;
    double lvl = (double)atomic_load_explicit(&ls->level, memory_order_relaxed);
    int64_t at = atomic_load_explicit(&ls->level_at_ms, memory_order_relaxed);
    if (now_ms > at)
        lvl += (double)(now_ms - at) * l->rate_milli_per_ms;
    if (lvl > (double)l->burst_milli)
        lvl = (double)l->burst_milli;
    int64_t have_at_least = need > l->max_slice ? l->max_slice : need;
    if (lvl >= (double)have_at_least) {
        *wait_ms = short_wait(l);
        return AIR_SL_SHORT;
    }
    double wait = l->rate_milli_per_ms > 0
                      ? ceil(((double)have_at_least - lvl) / l->rate_milli_per_ms)
                      : 60000;
    *wait_ms = wait < 1 ? 1 : wait > 9.2e15 ? INT64_MAX / 4 : (int64_t)wait;
    return AIR_SL_LIMIT;
}

/* How a rate limit behaves while the store is unreachable: a deployment's
 * quota by its own switch, a client's rpm/tpm by the rate-limit one. */
static enum air__fail_mode
rate_fail_mode(const struct air__slimit *l)
{
    return l->quota ? l->st->fail_quota : l->st->fail_rate;
}

enum air__slim_rc
air__slim_take(struct air__slimit *l, double n, int64_t now_ms, int64_t *wait_ms)
{
    *wait_ms = 0;
    if (!l->st->shared) {
        int64_t w = air__bucket_take(&l->bucket, n, now_ms);
        if (w == 0)
            return AIR_SL_OK;
        *wait_ms = w;
        return AIR_SL_LIMIT;
    }
    int64_t need = air__to_milli(n);
    if (need == 0 || lease_take(l, need))
        return AIR_SL_OK;
    lease_short(l, need);
    if (!atomic_load_explicit(&l->st->healthy, memory_order_relaxed)) {
        if (rate_fail_mode(l) == AIR_FAIL_CLOSED)
            return AIR_SL_CLOSED;
        int64_t w = air__bucket_take(&l->bucket, n, now_ms);
        if (w == 0) {
            atomic_fetch_add_explicit(&l->lease.fb_used, need, memory_order_relaxed);
            return AIR_SL_OK;
        }
        *wait_ms = w;
        return AIR_SL_LIMIT;
    }
    return shared_rate_level(l, need, now_ms, wait_ms);
}

enum air__slim_rc
air__slim_peek(struct air__slimit *l, double n, int64_t now_ms, int64_t *wait_ms)
{
    *wait_ms = 0;
    if (!l->st->shared) {
        int64_t w = air__bucket_peek(&l->bucket, n, now_ms);
        *wait_ms = w;
        return w == 0 ? AIR_SL_OK : AIR_SL_LIMIT;
    }
    int64_t need = air__to_milli(n);
    int64_t have_at_least = need > l->max_slice ? l->max_slice : need;
    if (need == 0 || atomic_load_explicit(&l->lease.avail, memory_order_acquire) >= have_at_least)
        return AIR_SL_OK;
    if (!atomic_load_explicit(&l->st->healthy, memory_order_relaxed)) {
        if (rate_fail_mode(l) == AIR_FAIL_CLOSED)
            return AIR_SL_CLOSED;
        int64_t w = air__bucket_peek(&l->bucket, n, now_ms);
        *wait_ms = w;
        return w == 0 ? AIR_SL_OK : AIR_SL_LIMIT;
    }
    return shared_rate_level(l, need, now_ms, wait_ms);
}

void
air__slim_put(struct air__slimit *l, double n, int64_t now_ms)
{
    if (n == 0 || n != n)
        return;
    if (!l->st->shared) {
        air__bucket_put(&l->bucket, n, now_ms);
        return;
    }
    /* Always into the lease, whichever source the tokens came from: the
     * consumption reported to the store (granted - returned - avail +
     * fallback use) then nets out exactly. */
    int64_t d = n > 0 ? air__to_milli(n) : -air__to_milli(-n);
    atomic_fetch_add_explicit(&l->lease.avail, d, memory_order_acq_rel);
}

void
air__slim_sync(struct air__slimit *l, double remaining, int64_t reset_in_ms, int64_t now_ms)
{
    if (remaining != remaining)
        return;
    if (!l->st->shared) {
        air__bucket_sync(&l->bucket, remaining, reset_in_ms, now_ms);
        return;
    }
    air__bucket_sync(&l->bucket, remaining / (double)l->st->instances, reset_in_ms, now_ms);
    struct air__lease *ls = &l->lease;
    int64_t rem = remaining > 0 ? air__to_milli(remaining) : 0;
    /* This instance cannot hold more than the vendor has left; what is cut
     * goes back to the store (and is capped there too). */
    int64_t a = atomic_load_explicit(&ls->avail, memory_order_acquire);
    while (a > rem) {
        if (atomic_compare_exchange_weak_explicit(&ls->avail, &a, rem, memory_order_acq_rel,
                                                  memory_order_acquire)) {
            atomic_fetch_add_explicit(&ls->drop, a - rem, memory_order_acq_rel);
            break;
        }
    }
    atomic_store_explicit(&ls->vsync_rem, rem, memory_order_relaxed);
    atomic_store_explicit(&ls->vsync_reset_ms, reset_in_ms > 0 ? reset_in_ms : 0,
                          memory_order_relaxed);
    atomic_fetch_add_explicit(&ls->vsync_seq, 1, memory_order_release);
    nudge(l);
}

/* Shared budget whose slice cannot cover e micro-dollars, store reachable:
 * SHORT when the window has room (renewal on its way), else LIMIT. */
static enum air__slim_rc
shared_budget_room(const struct air__slimit *l, int64_t e, int64_t now_ms, int64_t *retry_after_ms)
{
    const struct air__lease *ls = &l->lease;
    int64_t end = atomic_load_explicit(&ls->win_end_ms, memory_order_relaxed);
    int64_t room = atomic_load_explicit(&ls->level, memory_order_relaxed);
    if (end > 0 && now_ms >= end)
        room = air__micro_near(l->limit); /* a new window: the store will have it all */
    int64_t have_at_least = e > l->max_slice ? l->max_slice : e;
    if (room >= have_at_least) {
        if (retry_after_ms != NULL)
            *retry_after_ms = short_wait(l);
        return AIR_SL_SHORT;
    }
    if (retry_after_ms != NULL) {
        if (end <= now_ms)
            end = air__window_end(l->w, now_ms);
        *retry_after_ms = end > now_ms ? end - now_ms : 1;
    }
    return AIR_SL_LIMIT;
}

enum air__slim_rc
air__slim_reserve(struct air__slimit *l, double est_usd, int64_t now_ms, int64_t *retry_after_ms,
                  int *src)
{
    *src = AIR_SRC_LOCAL;
    if (retry_after_ms != NULL)
        *retry_after_ms = 0;
    if (!l->st->shared)
        return air__budget_reserve(&l->budget, est_usd, now_ms, retry_after_ms) == 0
                   ? AIR_SL_OK
                   : AIR_SL_LIMIT;
    int64_t e = air__micro_up(est_usd);
    if (e == 0 || lease_take(l, e)) {
        *src = AIR_SRC_LEASE;
        return AIR_SL_OK;
    }
    lease_short(l, e);
    if (!atomic_load_explicit(&l->st->healthy, memory_order_relaxed)) {
        if (l->st->fail_budget == AIR_FAIL_CLOSED)
            return AIR_SL_CLOSED;
        return air__budget_reserve(&l->budget, est_usd, now_ms, retry_after_ms) == 0
                   ? AIR_SL_OK
                   : AIR_SL_LIMIT;
    }
    return shared_budget_room(l, e, now_ms, retry_after_ms);
}

enum air__slim_rc
air__slim_peek_reserve(struct air__slimit *l, double est_usd, int64_t now_ms,
                       int64_t *retry_after_ms)
{
    if (retry_after_ms != NULL)
        *retry_after_ms = 0;
    if (!l->st->shared)
        return air__budget_peek(&l->budget, est_usd, now_ms, retry_after_ms) == 0
                   ? AIR_SL_OK
                   : AIR_SL_LIMIT;
    int64_t e = air__micro_up(est_usd);
    int64_t have_at_least = e > l->max_slice ? l->max_slice : e;
    if (e == 0 || atomic_load_explicit(&l->lease.avail, memory_order_acquire) >= have_at_least)
        return AIR_SL_OK;
    if (!atomic_load_explicit(&l->st->healthy, memory_order_relaxed)) {
        if (l->st->fail_budget == AIR_FAIL_CLOSED)
            return AIR_SL_CLOSED;
        return air__budget_peek(&l->budget, est_usd, now_ms, retry_after_ms) == 0
                   ? AIR_SL_OK
                   : AIR_SL_LIMIT;
    }
    return shared_budget_room(l, e, now_ms, retry_after_ms);
}

void
air__slim_settle(struct air__slimit *l, double est_usd, double actual_usd, int src,
                 int64_t now_ms)
{
    if (!l->st->shared) {
        air__budget_settle(&l->budget, est_usd, actual_usd, now_ms);
        return;
    }
    int64_t a = air__micro_near(actual_usd);
    if (src == AIR_SRC_LEASE) {
        atomic_fetch_add_explicit(&l->lease.avail, air__micro_up(est_usd) - a, memory_order_acq_rel);
    } else {
        /* Spent from the fail-open share while the store was away: it is
         * debt of the lease, so the next sync charges it to the window's
         * committed amount (the fleet's budget shrinks by it) as well as
         * reporting it as spending. */
        air__budget_settle(&l->budget, est_usd, actual_usd, now_ms);
        atomic_fetch_sub_explicit(&l->lease.avail, a, memory_order_acq_rel);
    }
    /* Spending from either source is settled to the store, so what was
     * spent while it was unreachable is not lost. */
    atomic_fetch_add_explicit(&l->lease.spent, a, memory_order_acq_rel);
}

double
air__slim_spent(const struct air__slimit *l)
{
    if (!l->st->shared)
        return air__budget_spent(&l->budget);
    return (double)(atomic_load_explicit(&l->lease.store_spent, memory_order_relaxed) +
                    atomic_load_explicit(&l->lease.spent, memory_order_relaxed)) /
           1e6;
}

double
air__slim_available(struct air__slimit *l, int64_t now_ms)
{
    if (!l->st->shared)
        return air__bucket_tokens(&l->bucket, now_ms);
    return air__slim_avail(l);
}

double
air__slim_limit(const struct air__slimit *l)
{
    if (l->st->shared)
        return l->limit;
    return l->kind == AIR_SL_RATE ? air__bucket_per_minute(&l->bucket)
                                  : air__budget_limit(&l->budget);
}

int
air__slim_set_rate(struct air__slimit *l, double per_minute, int64_t now_ms)
{
    if (l->st->shared || l->kind != AIR_SL_RATE)
        return -1;
    air__bucket_set_rate(&l->bucket, per_minute, 0, now_ms);
    return 0;
}

int
air__slim_set_budget(struct air__slimit *l, double usd)
{
    if (l->st->shared || l->kind != AIR_SL_BUDGET)
        return -1;
    air__budget_set_limit(&l->budget, usd);
    return 0;
}

void
air__slim_carry(struct air__slimit *dst, struct air__slimit *src, int64_t now_ms)
{
    if (dst->st->shared || src->st->shared || dst->kind != src->kind)
        return;
    if (dst->kind == AIR_SL_RATE)
        air__bucket_carry(&dst->bucket, &src->bucket, now_ms);
    else
        air__budget_carry(&dst->budget, &src->budget, now_ms);
}

static double
units_out(const struct air__slimit *l, int64_t v)
{
    return (double)v / (l->kind == AIR_SL_RATE ? 1000.0 : 1e6);
}

double
air__slim_slice(const struct air__slimit *l)
{
    return units_out(l, atomic_load_explicit(&l->lease.target, memory_order_relaxed));
}

double
air__slim_avail(const struct air__slimit *l)
{
    return units_out(l, atomic_load_explicit(&l->lease.avail, memory_order_relaxed));
}

/* ------------------------------------------------------------- sync side */

int
air__lease_plan(struct air__slimit *l, int64_t now_ms, int final, struct air__lease_req *rq)
{
    struct air__lease *ls = &l->lease;
    rq->must = rq->want = rq->ret = rq->used = 0;
    rq->ret_win = ls->win_start_store;
    rq->vsync_rem = -1;
    rq->vsync_reset_ms = 0;

    /* Side counters first, avail last (acquire): a unit a vendor sync cut
     * from avail is already in `drop` when we see avail without it, except
     * in a race, where it shows as consumption now and nets out next time. */
    int64_t drop = atomic_exchange_explicit(&ls->drop, 0, memory_order_acq_rel);
    int64_t fb = atomic_exchange_explicit(&ls->fb_used, 0, memory_order_acq_rel);
    int64_t wanted = atomic_exchange_explicit(&ls->want, 0, memory_order_acq_rel);
    int64_t ask = atomic_exchange_explicit(&ls->ask_max, 0, memory_order_acq_rel);
    rq->ret += drop;
    ls->returned += drop;
    ls->fb_total += fb;
    int64_t a = atomic_load_explicit(&ls->avail, memory_order_acquire);
    int64_t cons = ls->granted - ls->returned - a + ls->fb_total;
    int64_t delta = cons - ls->cons_last;
    ls->cons_last = cons;
    if (l->kind == AIR_SL_RATE) {
        ls->unreported += delta;
        rq->used = ls->unreported / 1000; /* whole tokens; the rest stays for later */
        ls->unreported -= rq->used * 1000;
    } else {
        rq->used = atomic_exchange_explicit(&ls->spent, 0, memory_order_acq_rel);
    }

    /* Demand: what was consumed plus what was refused, as an EWMA per ms
     * with a half-life of one horizon. */
    int64_t dt = now_ms - ls->last_plan_ms;
    if (dt < 1)
        dt = 1;
    ls->last_plan_ms = now_ms;
    double horizon = (double)l->st->lease.horizon_ms;
    double inst = (double)((delta > 0 ? delta : 0) + wanted) / (double)dt;
    double alpha = 1.0 - exp2(-(double)dt / horizon);
    ls->rate_per_ms += alpha * (inst - ls->rate_per_ms);
    double tg = ls->rate_per_ms * horizon;
    int64_t target = tg > (double)l->max_slice ? l->max_slice : (int64_t)ceil(tg);
    if (target < l->min_slice)
        target = l->min_slice;
    if (ask > target)
        target = ask < l->max_slice ? ask : l->max_slice;
    atomic_store_explicit(&ls->target, final ? 0 : target, memory_order_relaxed);

    if (final) {
        int64_t x = atomic_exchange_explicit(&ls->avail, 0, memory_order_acq_rel);
        if (x > 0) {
            rq->ret += x;
            ls->returned += x;
        } else {
            rq->must += -x; /* debt: charge it, nothing more */
        }
    } else {
        int64_t end = atomic_load_explicit(&ls->win_end_ms, memory_order_relaxed);
        if (l->kind == AIR_SL_BUDGET && end > 0 && now_ms >= end) {
            /* The slice's window is over: give back what is left to it and
             * lease from the new one. */
            int64_t x = atomic_exchange_explicit(&ls->avail, 0, memory_order_acq_rel);
            if (x > 0) {
                rq->ret += x;
                ls->returned += x;
            } else {
                rq->must += -x;
            }
            atomic_store_explicit(&ls->win_end_ms, 0, memory_order_relaxed);
        }
        a = atomic_load_explicit(&ls->avail, memory_order_acquire);
        if (a < 0)
            rq->must += -a; /* granted on apply, which brings avail back to 0 + want */
        int64_t have = a > 0 ? a : 0;
        if (have < target / 2 || have < ask || (have == 0 && target > 0)) {
            rq->want = target > have ? target - have : 0;
        } else if (have > 2 * target) {
            int64_t r = have - target;
            if (atomic_compare_exchange_strong_explicit(&ls->avail, &a, a - r,
                                                        memory_order_acq_rel,
                                                        memory_order_acquire)) {
                rq->ret += r;
                ls->returned += r;
            }
        }
    }
    uint64_t vs = atomic_load_explicit(&ls->vsync_seq, memory_order_acquire);
    if (l->kind == AIR_SL_RATE && vs != ls->vsync_seen) {
        ls->vsync_seen = vs;
        rq->vsync_rem = atomic_load_explicit(&ls->vsync_rem, memory_order_relaxed);
        rq->vsync_reset_ms = atomic_load_explicit(&ls->vsync_reset_ms, memory_order_relaxed);
    }
    return rq->must != 0 || rq->want != 0 || rq->ret != 0 || rq->used != 0 || rq->vsync_rem >= 0;
}

void
air__lease_apply(struct air__slimit *l, const struct air__lease_req *rq,
                 const struct air__lease_reply *rp, int64_t now_ms, int64_t store_ms)
{
    struct air__lease *ls = &l->lease;
    (void)rq;
    if (rp->grant != 0) {
        atomic_fetch_add_explicit(&ls->avail, rp->grant, memory_order_acq_rel);
        ls->granted += rp->grant;
    }
    atomic_store_explicit(&ls->level, rp->level, memory_order_relaxed);
    atomic_store_explicit(&ls->level_at_ms, now_ms, memory_order_relaxed);
    if (l->kind == AIR_SL_BUDGET && rp->win_end > 0) {
        ls->win_start_store = rp->win_start;
        atomic_store_explicit(&ls->win_end_ms, rp->win_end - (store_ms - now_ms),
                              memory_order_relaxed);
        atomic_store_explicit(&ls->store_spent, rp->spent, memory_order_relaxed);
    }
}
