/*
 * limiter.c - lock-free token bucket and concurrency cap. DESIGN: the two
 * pieces of bucket state (tokens and the refill clock) are separate atomics,
 * kept consistent by an ordering rule instead of a lock: time is claimed
 * first (CAS on last_ms, so an interval is credited once), then its tokens
 * are added (CAS loop clamped to the capacity). A taker that runs between
 * the two may see too few tokens and report a wait: conservative, never
 * generous. Memory orders: the bucket protects no other data, so relaxed
 * CASes would do for the counts themselves; acq_rel is used so that a
 * thread that observes a refilled count also observes the claimed time
 * (keeps the wait estimate sane), at no measurable cost on x86. The rate
 * and the capacity are atomics as well, read once per operation, so the
 * operator can change them at run time (air__bucket_set_rate) without a
 * lock; an operation racing the change uses the old or the new pair, and the
 * refill arithmetic stays exact per interval because each interval is
 * credited at one rate.
 */
#include "limiter.h"

#include <math.h>

#include "fixed.h"

void
air__bucket_init(struct air__bucket *b, double per_minute, double burst, int64_t now_ms)
{
    int64_t bm = 0;
    double r = 0;
    if (per_minute > 0) {
        r = per_minute / 60.0;
        bm = (int64_t)llround((burst > 0 ? burst : per_minute) * 1000.0);
        if (bm < 1)
            bm = 1;
    }
    b->origin_ms = now_ms;
    atomic_init(&b->rate_milli_per_ms, r);
    atomic_init(&b->burst_milli, bm);
    atomic_init(&b->tokens_milli, bm);
    atomic_init(&b->last_ms, now_ms);
}

static double
rate_of(const struct air__bucket *b)
{
    return atomic_load_explicit(&b->rate_milli_per_ms, memory_order_relaxed);
}

static int64_t
burst_of(const struct air__bucket *b)
{
    return atomic_load_explicit(&b->burst_milli, memory_order_relaxed);
}

/* Credit of the interval (from, to], both absolute ms, at rate r. Relative
 * to a fixed origin, so fractions are not lost across many small steps. */
static int64_t
credit(const struct air__bucket *b, double r, int64_t from, int64_t to)
{
    return (int64_t)(floor((double)(to - b->origin_ms) * r) -
                     floor((double)(from - b->origin_ms) * r));
}

/* Add d milli-tokens, never above the capacity (d may be negative). */
static void
add(struct air__bucket *b, int64_t d)
{
    int64_t cap = burst_of(b);
    int64_t t = atomic_load_explicit(&b->tokens_milli, memory_order_acquire);
    for (;;) {
        int64_t nt = t + d;
        if (d > 0 && nt > cap)
            nt = t > cap ? t : cap;
        if (nt == t)
            return;
        if (atomic_compare_exchange_weak_explicit(&b->tokens_milli, &t, nt, memory_order_acq_rel,
                                                  memory_order_acquire))
            return;
    }
}

static void
refill(struct air__bucket *b, double r, int64_t now_ms)
{
    int64_t last = atomic_load_explicit(&b->last_ms, memory_order_acquire);
    while (now_ms > last) {
        if (atomic_compare_exchange_weak_explicit(&b->last_ms, &last, now_ms,
                                                  memory_order_acq_rel, memory_order_acquire)) {
            int64_t d = credit(b, r, last, now_ms);
            if (d > 0)
                add(b, d);
            return;
        }
    }
}

static int64_t
wait_for(int64_t have_at_least, int64_t t, double r)
{
    double wait = ceil((double)(have_at_least - t) / r);
    if (wait < 1)
        wait = 1;
    if (wait > 9.2e18)
        return INT64_MAX;
    return (int64_t)wait;
}

int64_t
air__bucket_take(struct air__bucket *b, double n, int64_t now_ms)
{
    double r = rate_of(b);
    if (r <= 0)
        return 0;
    int64_t need = air__to_milli(n);
    refill(b, r, now_ms);
    /* An oversized request needs a full bucket and leaves it in debt. */
    int64_t cap = burst_of(b);
    int64_t have_at_least = need > cap ? cap : need;
    int64_t t = atomic_load_explicit(&b->tokens_milli, memory_order_acquire);
    while (t >= have_at_least) {
        if (atomic_compare_exchange_weak_explicit(&b->tokens_milli, &t, t - need,
                                                  memory_order_acq_rel, memory_order_acquire))
            return 0;
    }
    return wait_for(have_at_least, t, r);
}

int64_t
air__bucket_peek(struct air__bucket *b, double n, int64_t now_ms)
{
    double r = rate_of(b);
    if (r <= 0)
        return 0;
    int64_t need = air__to_milli(n);
    refill(b, r, now_ms);
    int64_t cap = burst_of(b);
    int64_t have_at_least = need > cap ? cap : need;
    int64_t t = atomic_load_explicit(&b->tokens_milli, memory_order_acquire);
    return t >= have_at_least ? 0 : wait_for(have_at_least, t, r);
}

void
air__bucket_put(struct air__bucket *b, double n, int64_t now_ms)
{
    double r = rate_of(b);
    if (r <= 0 || n == 0 || n != n)
        return;
    refill(b, r, now_ms);
    add(b, n > 0 ? air__to_milli(n) : -air__to_milli(-n));
}

void
air__bucket_sync(struct air__bucket *b, double remaining, int64_t reset_in_ms, int64_t now_ms)
{
    double r = rate_of(b);
    if (r <= 0 || remaining != remaining)
        return;
    refill(b, r, now_ms);
    int64_t cap = burst_of(b);
    double target = remaining * 1000.0;
    if (target < 0)
        target = 0;
    if (reset_in_ms > 0) {
        double full_at_reset = (double)cap - (double)reset_in_ms * r;
        if (full_at_reset < target)
            target = full_at_reset;
    }
    if (target > (double)cap)
        target = (double)cap;
    atomic_store_explicit(&b->tokens_milli, (int64_t)floor(target), memory_order_release);
}

double
air__bucket_tokens(struct air__bucket *b, int64_t now_ms)
{
    double r = rate_of(b);
    if (r <= 0)
        return INFINITY;
    refill(b, r, now_ms);
    return (double)atomic_load_explicit(&b->tokens_milli, memory_order_acquire) / 1000.0;
}

double
air__bucket_per_minute(const struct air__bucket *b)
{
    return rate_of(b) * 60.0;
}

void
air__bucket_set_rate(struct air__bucket *b, double per_minute, double burst, int64_t now_ms)
{
    double old_r = rate_of(b);
    int64_t old_cap = old_r > 0 ? burst_of(b) : 0;
    /* Credit the time so far at the old rate; an unlimited bucket credits
     * nothing, it only moves its clock. */
    if (old_r > 0)
        refill(b, old_r, now_ms);
    else
        atomic_store_explicit(&b->last_ms, now_ms, memory_order_release);
    if (!(per_minute > 0)) {
        /* Unlimited: take grants without looking; a later limit starts full. */
        atomic_store_explicit(&b->rate_milli_per_ms, 0.0, memory_order_release);
        atomic_store_explicit(&b->burst_milli, 0, memory_order_release);
        atomic_store_explicit(&b->tokens_milli, 0, memory_order_release);
        return;
    }
    int64_t cap = (int64_t)llround((burst > 0 ? burst : per_minute) * 1000.0);
    if (cap < 1)
        cap = 1;
    if (old_r <= 0)
        atomic_store_explicit(&b->tokens_milli, 0, memory_order_release);
    atomic_store_explicit(&b->burst_milli, cap, memory_order_release);
    atomic_store_explicit(&b->rate_milli_per_ms, per_minute / 60.0, memory_order_release);
    /* What was used stays used: move the tokens by the change in capacity. */
    if (cap != old_cap)
        add(b, cap - old_cap);
}

void
air__bucket_carry(struct air__bucket *dst, struct air__bucket *src, int64_t now_ms)
{
    double rs = rate_of(src), rd = rate_of(dst);
    if (rs <= 0 || rd <= 0)
        return;
    refill(src, rs, now_ms);
    int64_t t = atomic_load_explicit(&src->tokens_milli, memory_order_acquire);
    int64_t nt = t + (burst_of(dst) - burst_of(src));
    if (nt > burst_of(dst))
        nt = burst_of(dst);
    atomic_store_explicit(&dst->tokens_milli, nt, memory_order_release);
    int64_t last = atomic_load_explicit(&dst->last_ms, memory_order_relaxed);
    if (now_ms > last)
        atomic_store_explicit(&dst->last_ms, now_ms, memory_order_release);
}

void
air__cap_init(struct air__cap *c, uint32_t max)
{
    atomic_init(&c->n, 0);
    atomic_init(&c->max, max);
}

uint32_t
air__cap_max(const struct air__cap *c)
{
    return atomic_load_explicit(&c->max, memory_order_relaxed);
}

uint32_t
air__cap_count(const struct air__cap *c)
{
    return atomic_load_explicit(&c->n, memory_order_relaxed);
}

void
air__cap_set_max(struct air__cap *c, uint32_t max)
{
    atomic_store_explicit(&c->max, max, memory_order_relaxed);
}

int
air__cap_enter(struct air__cap *c)
{
    uint32_t max = air__cap_max(c);
    if (max == 0) {
        atomic_fetch_add_explicit(&c->n, 1, memory_order_relaxed);
        return 1;
    }
    uint32_t v = atomic_load_explicit(&c->n, memory_order_relaxed);
    while (v < max) {
        if (atomic_compare_exchange_weak_explicit(&c->n, &v, v + 1, memory_order_acquire,
                                                  memory_order_relaxed))
            return 1;
    }
    return 0;
}

void
air__cap_leave(struct air__cap *c)
{
    uint32_t v = atomic_load_explicit(&c->n, memory_order_relaxed);
    while (v > 0) {
        if (atomic_compare_exchange_weak_explicit(&c->n, &v, v - 1, memory_order_release,
                                                  memory_order_relaxed))
            return;
    }
}
