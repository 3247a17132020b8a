/*
 * hedge.h - when to start a hedged second attempt.
 *
 * A hedged request starts a second attempt on the next-best deployment when
 * the first has produced no byte after a delay; the first to produce a byte
 * wins and the other is cancelled. The delay is the deployment's p95 time to
 * first byte, so about 5 % of requests hedge (bounded again by the retry
 * budget), or a fixed delay when configured.
 *
 * Thread: pure.
 */
#ifndef AIR_POLICY_HEDGE_H
#define AIR_POLICY_HEDGE_H

#include <stdint.h>

#include "stats.h"

/* Delay before the hedged second attempt, in ms:
 *   fixed_ms > 0       -> fixed_ms;
 *   live samples       -> the TTFT p95 for streams (the latency p95 when no
 *                         TTFT sample exists, and for non-streams, whose
 *                         first byte is the whole answer), rounded up to ms
 *                         and clamped to [min_ms, max_ms];
 *   no samples (or st NULL) -> dflt_ms.
 * max_ms < min_ms is treated as max_ms = min_ms. */
uint64_t air__hedge_delay_ms(const struct air__dstat *st, int stream, uint32_t fixed_ms,
                             uint32_t min_ms, uint32_t max_ms, uint32_t dflt_ms);

#endif
