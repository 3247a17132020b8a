/*
 * route.h - turning a request into an ordered choice of deployments: route
 * resolution, the request's needs, filtering (health, limits, capabilities)
 * and ranking through the policy strategies. Used by the workers for every
 * attempt and by air_explain, which runs the same code without side effects.
 */
#ifndef AIR_CORE_ROUTE_H
#define AIR_CORE_ROUTE_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "buf.h"
#include "world.h"

#define AIR_MAX_CANDS 64

/* Resolve the candidates of a request: the route's deployments in target
 * order; with a pin, only the pinned provider's (or the pinned provider with
 * the model as named when it is outside the route); without a route, every
 * provider that lists the model. Returns 0, or -1 with a message in why
 * (not found). *rt is NULL when no route applies. */
int air__route_resolve(const struct air__world *w, const char *model, const char *pin,
                       size_t *deps, size_t *n, const struct air__route **rt, air_buf_t *why);

/* What a request needs (tools, images, stream, JSON mode) and how big it is:
 * input tokens estimated as body bytes / 4, output tokens from
 * max_completion_tokens / max_tokens, else 256. */
void air__route_need(const cJSON *body, size_t raw_len, struct air__need *need);

/* Estimated cost of a request on deployment d (USD). */
double air__route_est_cost(const struct air__dep *d, const struct air__need *need);

/* Per-candidate state a request keeps across attempts. */
struct air__cinfo {
    uint8_t failed;        /* failed for this request: never again */
    uint8_t excluded;      /* excluded for this request (auth, not found, bad request) */
    int64_t not_before_ms; /* Retry-After for this request */
};

/* Admission taken for an attempt; release with air__route_release. */
struct air__admit {
    long dep;       /* -1 = none */
    int probe;      /* the attempt is a health probe */
    int capped;     /* entered the deployment's max_inflight cap (leave it on release) */
    double tpm_est; /* tokens taken from the deployment's tpm (0 = none) */
};

/*
 * Pick the deployment for the next attempt: filter (disabled, failed or
 * excluded for this request, ejected/cooling/unusable, over rpm/tpm or
 * max_inflight, missing capability, context too small), rank the rest with
 * the route's strategy, then admit the best one that passes the health gate
 * and takes its limits. Returns the index into `deps` (and fills *ad), or -1
 * with the reason per deployment in why_none ("openai/gpt-4o: ejected for
 * 12.0 s; ...") and *wait_ms set when waiting could help (limits, cool-down).
 */
long air__route_pick(struct air__world *w, const struct air__tun *t, const struct air__view *v,
                     const struct air__route *rt, const size_t *deps, size_t n,
                     const struct air__cinfo *ci, const struct air__need *need, int64_t now_ms,
                     uint64_t *rr, uint64_t *rng, struct air__admit *ad, air_buf_t *why_none,
                     int64_t *wait_ms);

/* Undo the limits an admission took (attempt finished). tokens_used: the
 * reported total tokens (reconciles tpm), or -1 when unknown. */
void air__route_release(struct air__world *w, struct air__admit *ad, int64_t tokens_used,
                        int64_t now_ms);

/* Report an attempt's outcome to the deployment's health. */
void air__route_outcome(struct air__world *w, const struct air__tun *t,
                        const struct air__route *rt, size_t dep, enum air__outcome o,
                        int64_t retry_after_ms, int64_t now_ms);

/* air_explain's JSON for a request: every candidate with its filter result,
 * including whether admission would be refused now by the deployment's
 * max_inflight, rpm or tpm (peeked, nothing taken), the limits' state, and
 * the route budget's. No side effects beyond crediting bucket refills. */
void air__route_explain(struct air__world *w, const struct air__tun *t, const struct air__view *v,
                        const cJSON *body, size_t raw_len, const char *pin, int64_t now_ms,
                        air_buf_t *out);

#endif
