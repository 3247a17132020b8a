/*
 * stats.h - live statistics per deployment.
 *
 * Two levels, so that the hot path touches no shared cache line:
 *
 *   struct air__dobs   what ONE worker observed for one deployment since its
 *                      last fold. Single writer (that worker); plain
 *                      integers, no atomics. air__dobs_record is the per-
 *                      request update (a few adds and two histogram adds).
 *   struct air__dstat  the aggregated snapshot strategies read: EWMAs,
 *                      decayed histograms and their percentiles, counters.
 *                      Built by one aggregator every stats.fold_ms from the
 *                      workers' dobs (merged with air__dobs_merge), then
 *                      published read-only by core.
 *
 * Latency is recorded for successful attempts only: a failure's duration
 * says nothing about how fast the deployment serves (a fast 500 would make a
 * broken deployment look quick, a timeout only measures the deadline);
 * failures are reflected in succ_ewma and, through policy/health.c, in
 * ejection.
 *
 * Thread: no function here synchronises. dobs: one writer, folded by the
 * aggregator after the worker handed it over (core's business). dstat:
 * written by the aggregator only, read through published snapshots.
 */
#ifndef AIR_POLICY_STATS_H
#define AIR_POLICY_STATS_H

#include <stdint.h>

#include "hist.h"

/* Observations one worker made since its last fold (single writer). */
struct air__dobs {
    uint64_t requests, successes, failures;   /* completed attempts */
    uint64_t cancelled;                       /* attempts cancelled unfinished (a hedge's
                                                 loser): neither success nor failure */
    uint64_t lat_sum_us, ttft_sum_us, ttft_n; /* ttft only for streams with a first token */
    uint64_t tpot_sum_ns, tpot_n;             /* time per output token (streams) */
    uint64_t tokens_in, tokens_out;
    double cost_usd;
    struct air__hist lat, ttft; /* latency / TTFT of attempts in this interval */
    uint64_t lat_n;             /* latency samples (= successful attempts) */
};

/* Record one completed attempt.
 *   success     1 when the attempt produced a usable answer;
 *   lat_us      total duration of the attempt (used only when success);
 *   ttft_us     time to the first content byte of a stream, 0 = none
 *               (non-stream, or no token arrived); used only when success;
 *   out_tokens, in_tokens, cost_usd: the usage and cost of the attempt
 *               (counted for failures too: a provider may bill them).
 * Time per output token = (lat - ttft) / (out_tokens - 1) when ttft_us > 0
 * and out_tokens >= 2. Thread: the dobs's owner. Never fails. */
void air__dobs_record(struct air__dobs *o, int success, uint64_t lat_us, uint64_t ttft_us,
                      uint64_t out_tokens, uint64_t in_tokens, double cost_usd);
/* Record one attempt cancelled before it finished (it lost a hedge race):
 * counted apart, it is no evidence about the deployment's success rate or
 * latency. Thread: the dobs's owner. */
void air__dobs_cancel(struct air__dobs *o);
/* Zero everything (after a fold). */
void air__dobs_reset(struct air__dobs *o);
/* dst += src (counters and histograms). */
void air__dobs_merge(struct air__dobs *dst, const struct air__dobs *src);

/* Aggregated snapshot of one deployment (what strategies read). */
struct air__dstat {
    double lat_ewma_us, ttft_ewma_us, tpot_ewma_ns, succ_ewma; /* succ_ewma starts at 1.0 */
    uint64_t lat_p50_us, lat_p95_us, lat_p99_us, ttft_p50_us, ttft_p95_us, ttft_p99_us;
    uint64_t requests, failures, tokens_in, tokens_out;
    uint64_t cancelled;         /* attempts cancelled unfinished (hedge losers) */
    double cost_usd;
    uint32_t inflight;          /* filled by core */
    int have_samples;           /* any latency sample yet */
    struct air__hist lat, ttft; /* decayed histograms behind the percentiles */
    int have_ttft, have_tpot;   /* any TTFT / time-per-token sample yet */
    uint64_t successes;
};

/* All zero, succ_ewma = 1.0 (a new deployment is presumed healthy). */
void air__dstat_init(struct air__dstat *s);

/* Fold one interval's observations (already merged over workers) into s.
 * With alpha = 1 - 2^(-dt_ms / halflife_ms):
 *   - each EWMA moves alpha of the way towards the interval's mean (latency,
 *     TTFT, time per token: mean over the interval's samples; success: the
 *     interval's success ratio); an EWMA with no sample yet starts at the
 *     first interval's mean; an interval without samples leaves it alone;
 *   - the histograms are decayed by 2^(-dt/halflife) (= 1 - alpha), then the
 *     interval's are added, and the percentiles recomputed;
 *   - counters (requests, failures, successes, cancelled, tokens, cost) are
 *     added.
 * So after one half-life of constant input an EWMA has moved half way to it,
 * whatever the fold interval. dt_ms <= 0 counts as no time (alpha 0) except
 * for first samples; halflife_ms <= 0 means "no memory" (alpha 1). */
void air__dstat_fold(struct air__dstat *s, const struct air__dobs *o, double dt_ms,
                     double halflife_ms);

#endif
