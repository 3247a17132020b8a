/*
 * hist.c - log-bucket histogram. DESIGN: the bucket index comes from the
 * position of the highest set bit plus the next two bits, so add() is a
 * count-leading-zeros, two shifts and a floating-point add: cheap enough for
 * every completed request (policy/stats.c calls it on the hot path). Counts
 * are doubles so the aggregator can decay old samples instead of keeping a
 * ring of time windows.
 *
 * Layout: value v < 8 -> bucket v (exact). For v >= 8 with highest bit e
 * (2^e <= v < 2^(e+1), e >= 3... and also e = 2 which gives 4..7 exactly):
 * bucket = 4 * (e - 1) + ((v >> (e - 2)) & 3). Bucket i >= 4 therefore spans
 * [(4 + s) << k, ((5 + s) << k) - 1] with s = i % 4 and k = i / 4 - 1, whose
 * width 2^k is a quarter of 4 << k: the relative error of the midpoint is at
 * most (2^k / 2) / (4 << k) = 1/8.
 */
#include "hist.h"

#include <string.h>

#define HIST_MAX_EXP 32 /* bucket 127: e = 32 */

size_t
air__hist_bucket(uint64_t us)
{
    if (us < 8)
        return (size_t)us;
    unsigned e = 63u - (unsigned)__builtin_clzll(us);
    if (e > HIST_MAX_EXP)
        return AIR_HIST_BUCKETS - 1;
    size_t i = 4 * (size_t)(e - 1) + (size_t)((us >> (e - 2)) & 3u);
    return i;
}

uint64_t
air__hist_bucket_lower(size_t i)
{
    if (i < 8)
        return i;
    if (i >= AIR_HIST_BUCKETS)
        i = AIR_HIST_BUCKETS - 1;
    unsigned k = (unsigned)(i / 4) - 1;
    return (uint64_t)(4 + i % 4) << k;
}

uint64_t
air__hist_bucket_upper(size_t i)
{
    if (i < 8)
        return i;
    if (i >= AIR_HIST_BUCKETS - 1)
        return UINT64_MAX;
    unsigned k = (unsigned)(i / 4) - 1;
    return ((uint64_t)(5 + i % 4) << k) - 1;
}

void
air__hist_add(struct air__hist *h, uint64_t us, double weight)
{
    h->c[air__hist_bucket(us)] += weight;
    h->total += weight;
}

void
air__hist_merge(struct air__hist *dst, const struct air__hist *src)
{
    if (src->total <= 0)
        return;
    for (size_t i = 0; i < AIR_HIST_BUCKETS; i++)
        dst->c[i] += src->c[i];
    dst->total += src->total;
}

void
air__hist_decay(struct air__hist *h, double factor)
{
    if (h->total <= 0 || factor == 1.0)
        return;
    double total = 0;
    for (size_t i = 0; i < AIR_HIST_BUCKETS; i++) {
        double v = h->c[i] * factor;
        if (v < 1e-9)
            v = 0;
        h->c[i] = v;
        total += v;
    }
    h->total = total;
}

void
air__hist_clear(struct air__hist *h)
{
    memset(h, 0, sizeof *h);
}

/* Midpoint of bucket i: the estimate that keeps the relative error <= 1/8. */
static uint64_t
mid(size_t i)
{
    if (i < 8)
        return i;
    if (i >= AIR_HIST_BUCKETS - 1)
        return air__hist_bucket_lower(AIR_HIST_BUCKETS - 1);
    uint64_t lo = air__hist_bucket_lower(i), hi = air__hist_bucket_upper(i);
    return lo + (hi - lo + 1) / 2;
}

void
air__hist_quantiles(const struct air__hist *h, const double *qs, size_t nq, uint64_t *out)
{
    size_t qi = 0;
    if (h->total <= 0) {
        for (; qi < nq; qi++)
            out[qi] = 0;
        return;
    }
    /* Rank of the wanted sample, with a little slack against the rounding of
     * decayed (non-integer) counts. */
    double cum = 0;
    size_t last = 0;
    for (size_t i = 0; i < AIR_HIST_BUCKETS && qi < nq; i++) {
        if (h->c[i] <= 0)
            continue;
        last = i;
        cum += h->c[i];
        while (qi < nq) {
            double q = qs[qi] < 0 ? 0 : qs[qi] > 1 ? 1 : qs[qi];
            double want = q * h->total;
            if (cum + 1e-9 * h->total < want)
                break;
            out[qi++] = mid(i);
        }
    }
    for (; qi < nq; qi++)
        out[qi] = mid(last); /* q = 1 with rounding: the highest bucket */
}

uint64_t
air__hist_quantile(const struct air__hist *h, double q)
{
    uint64_t v;
    air__hist_quantiles(h, &q, 1, &v);
    return v;
}
