/*
 * strategy.h - filters and routing strategies: which deployments may serve a
 * request, and in what order to try them.
 *
 * Three steps, each usable alone (explain calls the first two):
 *   air__policy_filter  drop candidates that core excluded (ejected, cooling
 *                       down, over a rate limit or budget, disabled, already
 *                       failed for this request) or that lack what the request
 *                       needs (tools, images, streaming, JSON mode, context
 *                       length), with a reason for each;
 *   air__policy_score   the score components of each remaining candidate
 *                       (lower is better), for the score strategy and explain;
 *   air__policy_rank    the order to try the remaining candidates in,
 *                       according to the route's strategy.
 *
 * The score strategy (the default):
 *   total = w.latency * latency + w.cost * cost + w.health * health + w.load * load
 * with every component in [0, 1], lower is better:
 *   latency  the candidate's latency EWMA (TTFT EWMA for streams, when known)
 *            divided by the largest among the candidates; 0 for a deployment
 *            never tried (so it gets explored), 1 for one tried but without a
 *            single successful sample;
 *   cost     expected cost of this request (est_in_tokens * in_price +
 *            est_out_tokens * out_price; in_price + out_price when the request
 *            has no estimate) divided by the largest among the candidates;
 *   health   1 - success-rate EWMA;
 *   load     in-flight / max_inflight, or, without a cap, in-flight divided by
 *            the largest in-flight count among the candidates.
 * Default weights 0.4 0.3 0.2 0.1. Then power of two choices: two candidates
 * drawn at random among the best min(3, k), the better of the two first (a
 * tie is settled by the draw), then the others by score. So two equal
 * deployments share the traffic, and many routers with the same view do not
 * all herd onto the single best one.
 *
 * Thread: every function is reentrant; `rr` and `rng` belong to the caller.
 */
#ifndef AIR_POLICY_STRATEGY_H
#define AIR_POLICY_STRATEGY_H

#include <stddef.h>
#include <stdint.h>

#include "stats.h"

enum air__strategy {
    AIR_S_PRIORITY,
    AIR_S_WEIGHTED,
    AIR_S_ROUND_ROBIN,
    AIR_S_LEAST_BUSY,
    AIR_S_LOWEST_LATENCY,
    AIR_S_LOWEST_COST,
    AIR_S_SCORE
};
#define AIR_S__COUNT 7

/* "priority", "weighted", "round-robin", "least-busy", "lowest-latency",
 * "lowest-cost", "score" (fixed config names); "?" for an invalid value. */
const char *air__strategy_name(enum air__strategy s);
/* 0 ok, -1 unknown. Also accepts '_' for '-' ("round_robin"). */
int air__strategy_parse(const char *name, enum air__strategy *out);

struct air__score_weights {
    double latency, cost, health, load; /* defaults 0.4 0.3 0.2 0.1 */
};
void air__score_weights_default(struct air__score_weights *w);

/* What the request needs and how big it is. */
struct air__need {
    int tools, images, stream, json;
    uint64_t est_in_tokens, est_out_tokens;
};

/* One candidate as policy sees it. */
struct air__pcand {
    const struct air__dstat *st; /* may be NULL: no data yet */
    double in_price, out_price;  /* USD per million tokens */
    uint32_t caps;               /* AIR_CAP_* (include/airouter/provider.h) */
    uint32_t context_tokens;     /* 0 = unknown (never filtered on it) */
    double weight;               /* for weighted; default 1 */
    uint32_t inflight, max_inflight; /* max 0 = unlimited */
    int excluded;                    /* by core before policy: ejected, cooling, over limit,
                                        budget, disabled, already failed for this request */
    const char *excluded_why;        /* reason when excluded (borrowed) */
};

/* Filter on `excluded`, capabilities and context length. Writes ok[i] (1 or
 * 0) and, when why != NULL, why[i]: NULL for a candidate that passed, else
 * a static string ("does not support tools", "context window too small for
 * the request", ...) or c[i].excluded_why (borrowed). A candidate at its
 * max_inflight is NOT filtered (core decides whether to spill or wait); the
 * load component ranks it last. Returns how many passed. */
size_t air__policy_filter(const struct air__pcand *c, size_t n, const struct air__need *need,
                          int *ok, const char **why);

/* A longer reason for one candidate the filter rejected, with numbers where
 * they help ("needs ~12000 tokens, context window is 8192"); writes "" for a
 * candidate that passes. */
void air__policy_why(const struct air__pcand *c, const struct air__need *need, char *buf,
                     size_t n);

/* Score components (lower total is better). The raw values behind the
 * normalised components are included for explain. */
struct air__score {
    double latency, cost, health, load, total;
    double latency_us;   /* the latency used (TTFT for streams when known); 0 = none */
    double expected_usd; /* expected cost of this request */
};
/* Fills out[i] for every candidate; those with ok[i] == 0 get zeros and
 * total = HUGE_VAL. w NULL = default weights. */
void air__policy_score(const struct air__pcand *c, size_t n, const int *ok,
                       const struct air__score_weights *w, const struct air__need *need,
                       struct air__score *out);

/* Order the candidates that passed (ok[i]) into order[0..k), best first;
 * returns k. `order` must hold n entries.
 *   priority        index order (core passes candidates in config order);
 *   weighted        first by a weighted random draw (weights <= 0 are never
 *                   drawn unless all are), the rest by weight, descending;
 *   round-robin     index order rotated by (*rr)++ % k;
 *   least-busy      fewest in flight first (ties in random order);
 *   lowest-latency  lowest TTFT EWMA for streams (latency EWMA when no TTFT
 *                   is known), latency EWMA otherwise; deployments never tried
 *                   first (exploration), those tried without a single success
 *                   last; ties in random order;
 *   lowest-cost     lowest expected cost of this request (ties random);
 *   score           see the top of this file.
 * rr may be NULL (0 is used); rng may be NULL (a fixed seed is used).
 * Allocates only for n > 64 candidates; should that fail, the priority order
 * is returned. */
size_t air__policy_rank(enum air__strategy s, const struct air__pcand *c, size_t n,
                        const int *ok, const struct air__score_weights *w,
                        const struct air__need *need, uint64_t *rr, uint64_t *rng,
                        size_t *order);

#endif
