/*
 * health.h - per-deployment health: Envoy-style outlier ejection, cool-down
 * after rate limiting, and "unusable" after an authentication failure.
 *
 * States:
 *   HEALTHY   takes traffic.
 *   EJECTED   consecutive_errors gateway errors in a row (5xx, connect
 *             failure, timeout) took it out until until_ms; the ejection
 *             time is base_ejection_ms x ejections, capped at
 *             max_ejection_ms. At most max_ejection_percent of a route's
 *             deployments are ejected at once, and never the last healthy
 *             one.
 *   PROBING   the ejection time is over and ONE request (the half-open
 *             probe) is in flight; its outcome decides: success (or any
 *             answer that proves the deployment is up, e.g. a 4xx) ->
 *             HEALTHY with the error count reset; gateway error -> EJECTED
 *             again, for longer (ejections + 1).
 *   COOLDOWN  rate limited (429, or a zero remaining-requests quota): no
 *             traffic until cooldown_until_ms, then HEALTHY again.
 *   UNUSABLE  401/403/billing: the key or the deployment is wrong; no
 *             traffic until air__health_reset (config change or operator).
 *
 * The ejection multiplier (ejections) is not forgotten at once on recovery:
 * it goes down by one for every max_ejection_ms spent healthy (checked on
 * each success), as Envoy decrements it while a host stays healthy, so a
 * deployment that flaps keeps getting longer ejections.
 *
 * A 4xx other than 401/403/429 (AIR_O_OTHER_ERROR) is not counted as an
 * error, but as an answer from a live server it ends a run of consecutive
 * gateway errors (Envoy's consecutive_5xx does the same) and settles a probe
 * as a success.
 *
 * Thread: nothing here synchronises. One deployment's air__health must be
 * updated by one thread at a time (core serialises; e.g. the aggregator, or
 * a per-deployment lock on this cold path).
 */
#ifndef AIR_POLICY_HEALTH_H
#define AIR_POLICY_HEALTH_H

#include <stddef.h>
#include <stdint.h>

enum air__hstate { AIR_H_HEALTHY = 0, AIR_H_EJECTED, AIR_H_PROBING, AIR_H_COOLDOWN, AIR_H_UNUSABLE };

/* "healthy", "ejected", "probing", "cooldown", "unusable". */
const char *air__hstate_name(enum air__hstate s);

struct air__eject_cfg {
    uint32_t consecutive_errors;  /* 5 */
    uint32_t base_ejection_ms;    /* 30000 */
    uint32_t max_ejection_ms;     /* 300000 */
    double max_ejection_percent;  /* 50 */
    uint32_t cooldown_default_ms; /* 1000: a 429 without Retry-After, or a zero
                                     remaining quota without a reset time */
    uint32_t cooldown_max_ms;     /* 300000: longest cool-down honoured; 0 = no cap */
};

struct air__health {
    enum air__hstate state;
    uint32_t consec_errors;    /* gateway errors in a row */
    uint32_t ejections;        /* ejection multiplier */
    int64_t until_ms;          /* EJECTED: end of the ejection */
    int probe_out;             /* PROBING: the probe was handed out */
    int64_t cooldown_until_ms; /* no traffic before this (any state) */
    int64_t probe_since_ms;    /* when the probe was handed out */
    int64_t calm_since_ms;     /* healthy since (for forgetting ejections) */
    int cool_429;              /* cool-down came from a 429 (else from a quota) */
};

/* A probe that is never reported (lost by the caller) no longer blocks the
 * deployment after this long: admit hands out a new probe. */
#define AIR_HEALTH_PROBE_TIMEOUT_MS 120000

void air__eject_cfg_default(struct air__eject_cfg *c);

enum air__outcome {
    AIR_O_SUCCESS,
    AIR_O_GATEWAY_ERROR, /* 5xx, connect, timeout */
    AIR_O_OTHER_ERROR,   /* 4xx etc: not counted */
    AIR_O_AUTH,          /* 401/403/billing: unusable */
    AIR_O_RATE_LIMITED   /* 429 */
};

/* Apply one attempt's outcome at now_ms.
 *
 * ejected_now / total: how many deployments of the route(s) this one serves
 * are out of rotation now (ejected, probing or unusable; not counting this
 * one) / exist (counting this one). An ejection happens only when
 * (ejected_now + 1) * 100 <= max_ejection_percent * total and
 * ejected_now + 1 < total (never the last healthy one); otherwise the
 * deployment stays in and the next gateway error tries again.
 *
 * retry_after_ms: the server's hint, for any outcome except AIR_O_AUTH:
 *   > 0  cool down until now + retry_after_ms (capped at cooldown_max_ms);
 *   = 0  cool down for cooldown_default_ms (e.g. a zero remaining-requests
 *        header without a reset time);
 *   < 0  no hint: only AIR_O_RATE_LIMITED cools down (cooldown_default_ms).
 *
 * Returns 1 when the state changed (core logs/publishes it), else 0. */
int air__health_on_outcome(struct air__health *h, const struct air__eject_cfg *c,
                           enum air__outcome o, int64_t retry_after_ms, int64_t now_ms,
                           uint32_t ejected_now, uint32_t total);

/* May a request be sent now?
 *   0  no; the reason is written to why (when why != NULL), e.g. "ejected for
 *      12.3 s more (ejection 2)", "cooling down after 429 for 1.2 s more",
 *      "unusable: authentication failed (reset by operator or config change)";
 *   1  yes;
 *   2  yes, as the single half-open probe: the caller must report its
 *      outcome with air__health_on_outcome; until then (or until
 *      AIR_HEALTH_PROBE_TIMEOUT_MS) every other caller gets 0.
 * May change the state (EJECTED -> PROBING, COOLDOWN -> HEALTHY). */
int air__health_admit(struct air__health *h, int64_t now_ms, char *why, size_t whylen);

/* Like admit, but never changes anything: would a request be admitted now?
 * (For explain and for counting deployments out of rotation.) Same return
 * values; 2 means "a probe would be handed out". */
int air__health_peek(const struct air__health *h, int64_t now_ms, char *why, size_t whylen);

/* Operator reset / config change: HEALTHY, all counters zero. */
void air__health_reset(struct air__health *h);

#endif
