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
 * The rate and capacity may change at run time (air__bucket_set_rate); they
 * are atomics, each operation reads them once.
 *
 * Thread: take/put/sync/tokens/peek/set_rate: any thread, concurrently.
 * init: before sharing. carry: dst not yet shared.
 *
 * (Named limiter.h, not limits.h: the policy directory is on the -I path,
 * where a limits.h would replace the C library's <limits.h>.)
 */
#ifndef AIR_POLICY_LIMITER_H
#define AIR_POLICY_LIMITER_H

#include <stdatomic.h>
#include <stdint.h>

struct air__bucket {
    _Atomic int64_t tokens_milli;      /* current tokens x 1000 (negative = debt) */
    _Atomic int64_t last_ms;           /* refill credited up to here */
    _Atomic int64_t burst_milli;       /* capacity x 1000 */
    _Atomic double rate_milli_per_ms;  /* tokens x 1000 per ms; 0 = unlimited */
    int64_t origin_ms;                 /* time origin of the refill arithmetic (fixed) */
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

/* Would take(n) be granted at now_ms? 0 yes, else the wait in ms, as take
 * would answer; nothing is taken (refill is credited, which changes no
 * outcome). For explain. */
int64_t air__bucket_peek(struct air__bucket *b, double n, int64_t now_ms);

/* Change the rate at run time (per_minute <= 0: unlimited; burst 0 =
 * per_minute). What was used stays used: the tokens move by the change in
 * capacity (a smaller bucket may be left in debt), and refill goes on at the
 * new rate from now. A bucket that was unlimited starts full. Any thread,
 * concurrently with take/put (a take racing the change sees the old or the
 * new parameters, off by at most one refill step). */
void air__bucket_set_rate(struct air__bucket *b, double per_minute, double burst, int64_t now_ms);

/* The rate in tokens per minute (0 = unlimited). */
double air__bucket_per_minute(const struct air__bucket *b);

/* Carry the state of src (a bucket being replaced, e.g. by a reload) into
 * dst, which nobody else uses yet: what was used from src stays used in dst
 * (tokens = src's + dst's capacity - src's capacity, at most dst's
 * capacity). Nothing happens when either bucket is unlimited. */
void air__bucket_carry(struct air__bucket *dst, struct air__bucket *src, int64_t now_ms);

/* Concurrency cap: a lock-free counter. max 0 = unlimited (still counted).
 * The cap may change at run time (air__cap_set_max): entries already in
 * stay counted and leave normally; a lower cap refuses until the count is
 * below it. */
struct air__cap {
    _Atomic uint32_t n;
    _Atomic uint32_t max;
};
void air__cap_init(struct air__cap *c, uint32_t max);
int air__cap_enter(struct air__cap *c); /* 1 entered, 0 full */
void air__cap_leave(struct air__cap *c);
uint32_t air__cap_max(const struct air__cap *c);
uint32_t air__cap_count(const struct air__cap *c);
void air__cap_set_max(struct air__cap *c, uint32_t max);

#endif
