/*
 * limiter.h - token buckets (requests or tokens per minute) and concurrency
 * caps, shared between worker threads without locks.
 *
 * Token bucket: capacity `burst` tokens, refilled continuously at
 * per_minute / 60000 tokens per ms, starting full. take(n) grants n tokens
 * or says how long to wait; put(n) gives tokens back (or, with n < 0, takes
 * more) to reconcile an estimate with the usage the provider reported; sync
 * adopts a vendor's view of the quota from its rate-limit headers.
 *
 * Estimating tokens before sending: policy/pricing.h air__estimate_tokens
 * (request bytes / 4, rounded up), reconciled after the response with
 * put(estimate - reported).
 *
 * Representation: tokens_milli (tokens x 1000, may go negative = debt) and
 * last_ms (the time up to which refill has been credited), both atomic. A
 * refill first claims the interval (last_ms, now] with a CAS on last_ms, so
 * every millisecond is credited exactly once however many threads race;
 * grants are CASes on tokens_milli that never take it below zero (except the
 * oversized case below). Hence, over any run, granted <= initial + refill:
 * the bucket never grants more than its capacity allows. The credit for
 * (a, b] is floor(b' * r) - floor(a' * r) with times relative to the
 * bucket's origin, so fractional milli-tokens are not lost across many small
 * refills. Times that go backwards (threads with slightly different clocks)
 * refill nothing.
 *
 * A request for more than `burst` tokens could never be granted; it is
 * granted when the bucket is full, leaving it in debt (negative), so a single
 * huge request waits for a full bucket instead of failing forever.
 *
 * Thread: take/put/sync/tokens: any thread, concurrently. init: before
 * sharing.
 *
 * (Named limiter.h, not limits.h: the policy directory is on the -I path,
 * where a limits.h would replace the C library's <limits.h>.)
 */
#ifndef AIR_POLICY_LIMITER_H
#define AIR_POLICY_LIMITER_H

#include <stdatomic.h>
#include <stdint.h>

struct air__bucket {
    _Atomic int64_t tokens_milli; /* current tokens x 1000 (negative = debt) */
    _Atomic int64_t last_ms;      /* refill credited up to here */
    double rate_per_ms;           /* tokens per ms; 0 = unlimited */
    int64_t burst_milli;          /* capacity x 1000 */
    int64_t origin_ms;            /* time origin of the refill arithmetic */
    double rate_milli_per_ms;     /* rate_per_ms x 1000 */
};

/* per_minute <= 0 makes an unlimited bucket (take always grants). burst 0 =
 * per_minute. The bucket starts full. */
void air__bucket_init(struct air__bucket *b, double per_minute, double burst, int64_t now_ms);

/* Take n tokens at now_ms: returns 0 when granted, else the wait in ms
 * (>= 1) until n would be available, and nothing is taken. */
int64_t air__bucket_take(struct air__bucket *b, double n, int64_t now_ms);

/* Give n tokens back (never above the capacity); n < 0 takes -n more,
 * possibly into debt (the provider reported more usage than estimated). */
void air__bucket_put(struct air__bucket *b, double n, int64_t now_ms);

/* Learn the vendor's view from rate-limit headers: `remaining` tokens now
 * and the quota fully reset in reset_in_ms (<= 0: unknown). Sets the bucket
 * to min(remaining, burst - reset_in_ms x rate): no more than the vendor has
 * left, and not full before the vendor's reset. */
void air__bucket_sync(struct air__bucket *b, double remaining, int64_t reset_in_ms,
                      int64_t now_ms);

/* Tokens available at now_ms (after refill; may be negative). */
double air__bucket_tokens(struct air__bucket *b, int64_t now_ms);

/* Concurrency cap: a lock-free counter. max 0 = unlimited (still counted). */
struct air__cap {
    _Atomic uint32_t n;
    uint32_t max;
};
void air__cap_init(struct air__cap *c, uint32_t max);
int air__cap_enter(struct air__cap *c); /* 1 entered, 0 full */
void air__cap_leave(struct air__cap *c);

#endif
