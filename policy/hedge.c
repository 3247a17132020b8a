/*
 * hedge.c - hedging delay. DESIGN: derived from the live percentile rather
 * than a fixed number, so the extra load stays near 5 % as the deployment's
 * speed changes (Dean and Barroso, "The Tail at Scale"); the clamp keeps a
 * cold or pathological histogram from hedging instantly or never.
 */
#include "hedge.h"

uint64_t
air__hedge_delay_ms(const struct air__dstat *st, int stream, uint32_t fixed_ms, uint32_t min_ms,
                    uint32_t max_ms, uint32_t dflt_ms)
{
    if (fixed_ms > 0)
        return fixed_ms;
    if (st == NULL || !st->have_samples)
        return dflt_ms;
    uint64_t p95_us = stream && st->have_ttft ? st->ttft_p95_us : st->lat_p95_us;
    if (p95_us == 0)
        return dflt_ms;
    uint64_t ms = (p95_us + 999) / 1000;
    if (max_ms < min_ms)
        max_ms = min_ms;
    if (ms < min_ms)
        ms = min_ms;
    if (ms > max_ms)
        ms = max_ms;
    return ms;
}
