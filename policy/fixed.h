/*
 * fixed.h - the fixed-point units the limiters keep their counts in:
 * thousandths of a token or request (token buckets) and micro-dollars
 * (budgets). Shared by limiter.c, budget.c and state.c so that a bucket and
 * its leased slice round the same way.
 */
#ifndef AIR_POLICY_FIXED_H
#define AIR_POLICY_FIXED_H

#include <math.h>
#include <stdint.h>

/* n in thousandths, rounded up (a fraction of a token still costs one
 * thousandth); 0 for n <= 0 or NaN; capped far below overflow. */
static inline int64_t
air__to_milli(double n)
{
    if (!(n > 0))
        return 0;
    if (n > 9e12)
        return INT64_MAX / 4;
    return (int64_t)ceil(n * 1000.0 - 1e-6);
}

/* usd in micro-dollars, rounded up (reservations never under-reserve). */
static inline int64_t
air__micro_up(double usd)
{
    if (!(usd > 0))
        return 0;
    if (usd > 9e12)
        return INT64_MAX / 4;
    return (int64_t)ceil(usd * 1e6 - 1e-9);
}

/* usd in micro-dollars, rounded to nearest (settling what was spent). */
static inline int64_t
air__micro_near(double usd)
{
    if (!(usd > 0))
        return 0;
    if (usd > 9e12)
        return INT64_MAX / 4;
    return llround(usd * 1e6);
}

#endif
