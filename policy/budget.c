/*
 * budget.c - budgets over calendar windows. DESIGN: one atomic
 * (committed_micro) carries the invariant "reservations plus spending never
 * exceed the limit", so the check-and-reserve is a single CAS and needs no
 * lock; the separate spent/reserved counters are for reporting and are
 * updated in an order that keeps them within the committed amount. Calendar
 * arithmetic uses Howard Hinnant's days_from_civil / civil_from_days (exact
 * for the proleptic Gregorian calendar, so leap years and December ->
 * January need no special cases).
 */
#include "budget.h"

#include <math.h>
#include <string.h>

#include "fixed.h"

#define MS_PER_DAY 86400000LL

static const char *const wnames[] = {"minute", "hour", "day", "month"};

int
air__window_parse(const char *s, enum air__window *out)
{
    if (s == NULL)
        return -1;
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, wnames[i]) == 0) {
            *out = (enum air__window)i;
            return 0;
        }
    }
    return -1;
}

const char *
air__window_name(enum air__window w)
{
    return (unsigned)w < 4 ? wnames[w] : "?";
}

static int64_t
floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* Days since 1970-01-01 of y-m-d (m 1..12). */
static int64_t
days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = floor_div(y, 400);
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void
civil_from_days(int64_t z, int64_t *y, unsigned *m)
{
    z += 719468;
    int64_t era = floor_div(z, 146097);
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

int64_t
air__window_start(enum air__window w, int64_t now)
{
    switch (w) {
    case AIR_W_MINUTE:
        return floor_div(now, 60000) * 60000;
    case AIR_W_HOUR:
        return floor_div(now, 3600000) * 3600000;
    case AIR_W_DAY:
        return floor_div(now, MS_PER_DAY) * MS_PER_DAY;
    case AIR_W_MONTH: {
        int64_t y;
        unsigned m;
        civil_from_days(floor_div(now, MS_PER_DAY), &y, &m);
        return days_from_civil(y, m, 1) * MS_PER_DAY;
    }
    }
    return now;
}

int64_t
air__window_end(enum air__window w, int64_t now)
{
    int64_t s = air__window_start(w, now);
    switch (w) {
    case AIR_W_MINUTE:
        return s + 60000;
    case AIR_W_HOUR:
        return s + 3600000;
    case AIR_W_DAY:
        return s + MS_PER_DAY;
    case AIR_W_MONTH: {
        int64_t y;
        unsigned m;
        civil_from_days(floor_div(s, MS_PER_DAY), &y, &m);
        if (m == 12)
            return days_from_civil(y + 1, 1, 1) * MS_PER_DAY;
        return days_from_civil(y, m + 1, 1) * MS_PER_DAY;
    }
    }
    return now;
}

void
air__budget_init(struct air__budget *b, double limit_usd, enum air__window w, int64_t now)
{
    atomic_init(&b->limit_usd, limit_usd);
    b->w = w;
    atomic_init(&b->window_start_ms, air__window_start(w, now));
    atomic_init(&b->spent_micro, 0);
    atomic_init(&b->reserved_micro, 0);
    atomic_init(&b->committed_micro, 0);
}

/* Move to the window holding now, once, whoever gets there first: spending
 * restarts at zero, reservations carry over. */
static void
roll(struct air__budget *b, int64_t now)
{
    int64_t ws = air__window_start(b->w, now);
    int64_t cur = atomic_load_explicit(&b->window_start_ms, memory_order_acquire);
    while (ws > cur) {
        if (atomic_compare_exchange_weak_explicit(&b->window_start_ms, &cur, ws,
                                                  memory_order_acq_rel, memory_order_acquire)) {
            int64_t s = atomic_exchange_explicit(&b->spent_micro, 0, memory_order_acq_rel);
            atomic_fetch_sub_explicit(&b->committed_micro, s, memory_order_acq_rel);
            return;
        }
    }
}

int
air__budget_reserve(struct air__budget *b, double est_usd, int64_t now, int64_t *retry_after_ms)
{
    roll(b, now);
    int64_t e = air__micro_up(est_usd);
    double limit = air__budget_limit(b);
    if (!(limit > 0)) {
        atomic_fetch_add_explicit(&b->committed_micro, e, memory_order_acq_rel);
        atomic_fetch_add_explicit(&b->reserved_micro, e, memory_order_acq_rel);
        return 0;
    }
    int64_t lim = air__micro_near(limit);
    int64_t c = atomic_load_explicit(&b->committed_micro, memory_order_acquire);
    for (;;) {
        if (e > lim - c) {
            if (retry_after_ms) {
                int64_t ws = atomic_load_explicit(&b->window_start_ms, memory_order_acquire);
                int64_t end = air__window_end(b->w, ws);
                *retry_after_ms = end > now ? end - now : 0;
            }
            return -1;
        }
        /* acq_rel: the reserved/spent updates below may not be reordered
         * before the CAS that admitted them (spent + reserved <= committed). */
        if (atomic_compare_exchange_weak_explicit(&b->committed_micro, &c, c + e,
                                                  memory_order_acq_rel, memory_order_acquire))
            break;
    }
    atomic_fetch_add_explicit(&b->reserved_micro, e, memory_order_acq_rel);
    return 0;
}

void
air__budget_settle(struct air__budget *b, double est_usd, double actual_usd, int64_t now)
{
    roll(b, now);
    int64_t e = air__micro_up(est_usd);
    int64_t a = air__micro_near(actual_usd);
    /* Order keeps spent + reserved <= committed at every instant (when
     * a <= e): release the reservation, add the spending, then move the
     * committed amount by the difference. */
    atomic_fetch_sub_explicit(&b->reserved_micro, e, memory_order_acq_rel);
    atomic_fetch_add_explicit(&b->spent_micro, a, memory_order_acq_rel);
    atomic_fetch_add_explicit(&b->committed_micro, a - e, memory_order_acq_rel);
}

double
air__budget_spent(const struct air__budget *b)
{
    return (double)atomic_load_explicit(&b->spent_micro, memory_order_acquire) / 1e6;
}

double
air__budget_reserved(const struct air__budget *b)
{
    return (double)atomic_load_explicit(&b->reserved_micro, memory_order_acquire) / 1e6;
}

double
air__budget_spent_at(const struct air__budget *b, int64_t now)
{
    int64_t ws = atomic_load_explicit(&b->window_start_ms, memory_order_acquire);
    if (air__window_start(b->w, now) > ws)
        return 0;
    return air__budget_spent(b);
}

double
air__budget_limit(const struct air__budget *b)
{
    return atomic_load_explicit(&b->limit_usd, memory_order_relaxed);
}

void
air__budget_set_limit(struct air__budget *b, double limit_usd)
{
    atomic_store_explicit(&b->limit_usd, limit_usd > 0 ? limit_usd : 0.0, memory_order_relaxed);
}

int
air__budget_peek(struct air__budget *b, double est_usd, int64_t now, int64_t *retry_after_ms)
{
    roll(b, now);
    double limit = air__budget_limit(b);
    if (!(limit > 0))
        return 0;
    int64_t e = air__micro_up(est_usd);
    int64_t c = atomic_load_explicit(&b->committed_micro, memory_order_acquire);
    if (e <= air__micro_near(limit) - c)
        return 0;
    if (retry_after_ms) {
        int64_t ws = atomic_load_explicit(&b->window_start_ms, memory_order_acquire);
        int64_t end = air__window_end(b->w, ws);
        *retry_after_ms = end > now ? end - now : 0;
    }
    return -1;
}

void
air__budget_carry(struct air__budget *dst, struct air__budget *src, int64_t now)
{
    if (dst->w != src->w)
        return;
    roll(src, now);
    roll(dst, now);
    int64_t ws = atomic_load_explicit(&src->window_start_ms, memory_order_acquire);
    if (ws != atomic_load_explicit(&dst->window_start_ms, memory_order_acquire))
        return;
    int64_t s = atomic_load_explicit(&src->spent_micro, memory_order_acquire) +
                atomic_load_explicit(&src->reserved_micro, memory_order_acquire);
    if (s < 0)
        s = 0;
    int64_t r = atomic_load_explicit(&dst->reserved_micro, memory_order_acquire);
    atomic_store_explicit(&dst->spent_micro, s, memory_order_release);
    atomic_store_explicit(&dst->committed_micro, s + r, memory_order_release);
}
