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
 * (keeps the wait estimate sane), at no measurable cost on x86.
 */
#include "limiter.h"

#include <math.h>

void
air__bucket_init(struct air__bucket *b, double per_minute, double burst, int64_t now_ms)
{
    if (!(per_minute > 0)) {
        b->rate_per_ms = 0;
        b->rate_milli_per_ms = 0;
        b->burst_milli = 0;
    } else {
        b->rate_per_ms = per_minute / 60000.0;
        b->rate_milli_per_ms = per_minute / 60.0;
        b->burst_milli = (int64_t)llround((burst > 0 ? burst : per_minute) * 1000.0);
        if (b->burst_milli < 1)
            b->burst_milli = 1;
    }
    b->origin_ms = now_ms;
    atomic_init(&b->tokens_milli, b->burst_milli);
    atomic_init(&b->last_ms, now_ms);
}

/* Credit of the interval (from, to], both absolute ms. */
static int64_t
credit(const struct air__bucket *b, int64_t from, int64_t to)
{
    double r = b->rate_milli_per_ms;
    return (int64_t)(floor((double)(to - b->origin_ms) * r) -
                     floor((double)(from - b->origin_ms) * r));
}

/* Add d milli-tokens, never above the capacity (d may be negative). */
static void
add(struct air__bucket *b, int64_t d)
{
    int64_t t = atomic_load_explicit(&b->tokens_milli, memory_order_acquire);
    for (;;) {
        int64_t nt = t + d;
        if (d > 0 && nt > b->burst_milli)
            nt = t > b->burst_milli ? t : b->burst_milli;
        if (nt == t)
            return;
        if (atomic_compare_exchange_weak_explicit(&b->tokens_milli, &t, nt, memory_order_acq_rel,
                                                  memory_order_acquire))
            return;
    }
}

static void
refill(struct air__bucket *b, int64_t now_ms)
{
    int64_t last = atomic_load_explicit(&b->last_ms, memory_order_acquire);
    while (now_ms > last) {
        if (atomic_compare_exchange_weak_explicit(&b->last_ms, &last, now_ms,
                                                  memory_order_acq_rel, memory_order_acquire)) {
            int64_t d = credit(b, last, now_ms);
            if (d > 0)
                add(b, d);
            return;
        }
    }
}

static int64_t
to_milli(double n)
{
    if (!(n > 0))
        return 0;
    if (n > 9e12)
        return INT64_MAX / 4;
    return (int64_t)ceil(n * 1000.0 - 1e-6);
}

int64_t
air__bucket_take(struct air__bucket *b, double n, int64_t now_ms)
{
    if (b->rate_milli_per_ms <= 0)
        return 0;
    int64_t need = to_milli(n);
    refill(b, now_ms);
    /* An oversized request needs a full bucket and leaves it in debt. */
    int64_t have_at_least = need > b->burst_milli ? b->burst_milli : need;
    int64_t t = atomic_load_explicit(&b->tokens_milli, memory_order_acquire);
    while (t >= have_at_least) {
        if (atomic_compare_exchange_weak_explicit(&b->tokens_milli, &t, t - need,
                                                  memory_order_acq_rel, memory_order_acquire))
            return 0;
    }
    double wait = ceil((double)(have_at_least - t) / b->rate_milli_per_ms);
    if (wait < 1)
        wait = 1;
    if (wait > 9.2e18)
        return INT64_MAX;
    return (int64_t)wait;
}

void
air__bucket_put(struct air__bucket *b, double n, int64_t now_ms)
{
    if (b->rate_milli_per_ms <= 0 || n == 0 || n != n)
        return;
    refill(b, now_ms);
    add(b, n > 0 ? to_milli(n) : -to_milli(-n));
}

void
air__bucket_sync(struct air__bucket *b, double remaining, int64_t reset_in_ms, int64_t now_ms)
{
    if (b->rate_milli_per_ms <= 0 || remaining != remaining)
        return;
    refill(b, now_ms);
    double target = remaining * 1000.0;
    if (target < 0)
        target = 0;
    if (reset_in_ms > 0) {
        double full_at_reset = (double)b->burst_milli - (double)reset_in_ms * b->rate_milli_per_ms;
        if (full_at_reset < target)
            target = full_at_reset;
    }
    if (target > (double)b->burst_milli)
        target = (double)b->burst_milli;
    atomic_store_explicit(&b->tokens_milli, (int64_t)floor(target), memory_order_release);
}

double
air__bucket_tokens(struct air__bucket *b, int64_t now_ms)
{
    if (b->rate_milli_per_ms <= 0)
        return INFINITY;
    refill(b, now_ms);
    return (double)atomic_load_explicit(&b->tokens_milli, memory_order_acquire) / 1000.0;
}

void
air__cap_init(struct air__cap *c, uint32_t max)
{
    atomic_init(&c->n, 0);
    c->max = max;
}

int
air__cap_enter(struct air__cap *c)
{
    if (c->max == 0) {
        atomic_fetch_add_explicit(&c->n, 1, memory_order_relaxed);
        return 1;
    }
    uint32_t v = atomic_load_explicit(&c->n, memory_order_relaxed);
    while (v < c->max) {
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
