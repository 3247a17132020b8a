/*
 * health.c - outlier ejection, cool-down and unusable marking for one
 * deployment. DESIGN: a small state machine fed by attempt outcomes
 * (on_outcome) and queried before each attempt (admit), modelled on Envoy's
 * outlier detection (consecutive 5xx, ejection time = base x ejections,
 * max_ejection_percent) with one addition Envoy gets from active health
 * checks: after an ejection a single half-open probe request decides, so a
 * recovered deployment comes back after one good answer and a broken one
 * costs one request per (growing) ejection period. Time comes in as
 * now_ms; nothing here reads a clock.
 */
#include "health.h"

#include <stdio.h>
#include <string.h>

const char *
air__hstate_name(enum air__hstate s)
{
    switch (s) {
    case AIR_H_HEALTHY:
        return "healthy";
    case AIR_H_EJECTED:
        return "ejected";
    case AIR_H_PROBING:
        return "probing";
    case AIR_H_COOLDOWN:
        return "cooldown";
    case AIR_H_UNUSABLE:
        return "unusable";
    }
    return "unknown";
}

void
air__eject_cfg_default(struct air__eject_cfg *c)
{
    c->consecutive_errors = 5;
    c->base_ejection_ms = 30000;
    c->max_ejection_ms = 300000;
    c->max_ejection_percent = 50;
    c->cooldown_default_ms = 1000;
    c->cooldown_max_ms = 300000;
}

void
air__health_reset(struct air__health *h)
{
    memset(h, 0, sizeof *h);
    h->state = AIR_H_HEALTHY;
}

/* Eject for base x ejections (after the caller bumped ejections), capped. */
static void
eject(struct air__health *h, const struct air__eject_cfg *c, int64_t now_ms)
{
    uint64_t d = (uint64_t)c->base_ejection_ms * (h->ejections ? h->ejections : 1);
    if (c->max_ejection_ms > 0 && d > c->max_ejection_ms)
        d = c->max_ejection_ms;
    h->state = AIR_H_EJECTED;
    h->until_ms = now_ms + (int64_t)d;
    h->consec_errors = 0;
    h->probe_out = 0;
}

/* May one more deployment be ejected? (Envoy's max_ejection_percent, and
 * never the last one in rotation.) */
static int
may_eject(const struct air__eject_cfg *c, uint32_t ejected_now, uint32_t total)
{
    if ((uint64_t)ejected_now + 1 >= total)
        return 0;
    return ((double)ejected_now + 1) * 100.0 <= c->max_ejection_percent * (double)total;
}

/* Back in rotation after a good answer from a probe. */
static void
recover(struct air__health *h, int64_t now_ms)
{
    h->state = h->cooldown_until_ms > now_ms ? AIR_H_COOLDOWN : AIR_H_HEALTHY;
    h->probe_out = 0;
    h->consec_errors = 0;
    h->calm_since_ms = now_ms;
}

int
air__health_on_outcome(struct air__health *h, const struct air__eject_cfg *c, enum air__outcome o,
                       int64_t retry_after_ms, int64_t now_ms, uint32_t ejected_now,
                       uint32_t total)
{
    enum air__hstate before = h->state;
    if (h->state == AIR_H_UNUSABLE)
        return 0;
    if (o == AIR_O_AUTH) {
        h->state = AIR_H_UNUSABLE;
        h->probe_out = 0;
        return 1;
    }

    /* The server's timing hint first: it applies whatever the outcome. */
    int64_t cool = -1;
    if (retry_after_ms > 0)
        cool = retry_after_ms;
    else if (retry_after_ms == 0 || o == AIR_O_RATE_LIMITED)
        cool = c->cooldown_default_ms;
    if (cool > 0) {
        if (c->cooldown_max_ms > 0 && cool > (int64_t)c->cooldown_max_ms)
            cool = c->cooldown_max_ms;
        if (now_ms + cool > h->cooldown_until_ms) {
            h->cooldown_until_ms = now_ms + cool;
            h->cool_429 = o == AIR_O_RATE_LIMITED;
        }
        if (h->state == AIR_H_HEALTHY)
            h->state = AIR_H_COOLDOWN;
    }

    switch (o) {
    case AIR_O_SUCCESS:
    case AIR_O_OTHER_ERROR:
    case AIR_O_RATE_LIMITED:
        /* An answer from a live server: ends a run of gateway errors and
         * settles a probe in the deployment's favour. */
        h->consec_errors = 0;
        if (h->state == AIR_H_PROBING) {
            recover(h, now_ms);
        } else if (o == AIR_O_SUCCESS && h->state == AIR_H_HEALTHY && h->ejections > 0 &&
                   c->max_ejection_ms > 0 && now_ms - h->calm_since_ms >= c->max_ejection_ms) {
            /* Forget one ejection per max_ejection_ms of good health. */
            h->ejections--;
            h->calm_since_ms = now_ms;
        }
        break;
    case AIR_O_GATEWAY_ERROR:
        if (h->state == AIR_H_PROBING) {
            /* The probe failed: out again, for longer. It was already out
             * of rotation, so the percentage is not consulted. */
            h->ejections++;
            eject(h, c, now_ms);
        } else if (h->state == AIR_H_HEALTHY || h->state == AIR_H_COOLDOWN) {
            h->consec_errors++;
            if (h->consec_errors >= c->consecutive_errors && may_eject(c, ejected_now, total)) {
                h->ejections++;
                eject(h, c, now_ms);
            }
        }
        /* EJECTED: a late answer to a request sent before the ejection. */
        break;
    case AIR_O_AUTH:
        break;
    }
    return h->state != before;
}

/* The admission decision without side effects. */
static int
decide(const struct air__health *h, int64_t now_ms, char *why, size_t whylen)
{
    char tmp[8];
    if (why == NULL) {
        why = tmp;
        whylen = sizeof tmp;
    }
    switch (h->state) {
    case AIR_H_UNUSABLE:
        snprintf(why, whylen,
                 "unusable: authentication failed (reset by operator or config change)");
        return 0;
    case AIR_H_EJECTED:
        if (now_ms < h->until_ms) {
            snprintf(why, whylen, "ejected for %.1f s more (ejection %u)",
                     (double)(h->until_ms - now_ms) / 1000.0, (unsigned)h->ejections);
            return 0;
        }
        break;
    case AIR_H_PROBING:
        if (h->probe_out && now_ms - h->probe_since_ms < AIR_HEALTH_PROBE_TIMEOUT_MS) {
            snprintf(why, whylen, "half-open: waiting for the probe request's outcome");
            return 0;
        }
        break;
    case AIR_H_COOLDOWN:
    case AIR_H_HEALTHY:
        break;
    }
    if (now_ms < h->cooldown_until_ms) {
        snprintf(why, whylen, "cooling down %s for %.1f s more",
                 h->cool_429 ? "after 429" : "(rate-limit quota exhausted)",
                 (double)(h->cooldown_until_ms - now_ms) / 1000.0);
        return 0;
    }
    if (h->state == AIR_H_EJECTED || h->state == AIR_H_PROBING) {
        snprintf(why, whylen, "half-open probe after ejection %u", (unsigned)h->ejections);
        return 2;
    }
    if (whylen)
        why[0] = '\0';
    return 1;
}

int
air__health_peek(const struct air__health *h, int64_t now_ms, char *why, size_t whylen)
{
    return decide(h, now_ms, why, whylen);
}

int
air__health_admit(struct air__health *h, int64_t now_ms, char *why, size_t whylen)
{
    int r = decide(h, now_ms, why, whylen);
    if (r == 2) {
        h->state = AIR_H_PROBING;
        h->probe_out = 1;
        h->probe_since_ms = now_ms;
    } else if (r == 1 && h->state == AIR_H_COOLDOWN) {
        h->state = AIR_H_HEALTHY;
    }
    return r;
}
