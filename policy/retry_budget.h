/*
 * retry_budget.h - retries (and hedged attempts) allowed only up to a
 * fraction of recent requests plus a small floor, so that a provider outage
 * cannot multiply the traffic sent to it (Finagle's and Linkerd's retry
 * budget).
 *
 * Over the last window_ms (rounded to whole seconds, 1..15 s) a retry is
 * allowed when, counting it,
 *     retries <= ratio x requests + min_per_s x window_seconds
 * so over any run of whole windows, retries <= ratio x requests + min_per_s x
 * seconds. `requests` are original requests (air__rbudget_on_request, once
 * per request, not per attempt); every retry or hedge asks
 * air__rbudget_try_retry first.
 *
 * Counts live in a ring of 16 one-second slots, keyed by the second they
 * belong to; a slot is reused when its second falls out of the window.
 *
 * Thread: none; one owner. Core keeps one per worker: the ratios add up to
 * the same overall ratio, and each worker holds min_per_s / workers of the
 * floor, so the floor holds for the whole router (docs/POLICY.md).
 */
#ifndef AIR_POLICY_RETRY_BUDGET_H
#define AIR_POLICY_RETRY_BUDGET_H

#include <stdint.h>

#define AIR_RBUDGET_SLOTS 16

struct air__rbudget {
    double ratio;       /* 0.2 */
    double min_per_s;   /* 10 (may be a fraction: one owner's share of a floor) */
    uint32_t window_ms; /* 10000 */
    /* ring of per-second counts of requests and retries */
    uint32_t req[AIR_RBUDGET_SLOTS], ret[AIR_RBUDGET_SLOTS];
    int64_t sec[AIR_RBUDGET_SLOTS];
};

/* ratio < 0 and min_per_s < 0 count as 0; window_ms is clamped to
 * 1000..15000. */
void air__rbudget_init(struct air__rbudget *b, double ratio, double min_per_s,
                       uint32_t window_ms);
/* Change the parameters, keeping the counts: the next try_retry sums the
 * last window_ms (clamped as for init) of them. */
void air__rbudget_set(struct air__rbudget *b, double ratio, double min_per_s, uint32_t window_ms);
void air__rbudget_on_request(struct air__rbudget *b, int64_t now_ms);
/* 1 allowed (and counted), 0 denied. */
int air__rbudget_try_retry(struct air__rbudget *b, int64_t now_ms);

#endif
