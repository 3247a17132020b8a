/*
 * gwlimits.c - per-key token buckets and budgets (see gwlimits.h).
 *
 * DESIGN: buckets refill lazily: each admission adds rate * elapsed, capped
 * at the capacity (one minute's worth), so an idle key costs nothing. A
 * bucket may go negative when reported usage exceeds the estimate (debt is
 * paid before the next request is admitted). Budget windows are calendar
 * windows in UTC, identified by a number; the first admission in a new
 * window starts it with nothing spent. All three checks run before anything
 * is taken, so a refusal by one limit never consumes another.
 */
#include "gwlimits.h"
#include "gwconf.h"

#include "alloc.h"

#include <math.h>
#include <string.h>

struct air__gw_keystate *
air__gw_keystate_new(const char *name)
{
    struct air__gw_keystate *s = air__calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->name = air__strdup(name);
    if (s->name == NULL) {
        air__free(s);
        return NULL;
    }
    atomic_init(&s->refs, 1);
    pthread_mutex_init(&s->mu, NULL);
    s->window_id = -1;
    return s;
}

void
air__gw_keystate_ref(struct air__gw_keystate *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

void
air__gw_keystate_unref(struct air__gw_keystate *s)
{
    if (s == NULL)
        return;
    if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    pthread_mutex_destroy(&s->mu);
    air__free(s->name);
    air__free(s);
}

int64_t
air__gw_window_id(int window, time_t t, uint32_t *secs_left)
{
    int64_t len;
    switch (window) {
    case AIR_GW_WIN_MINUTE:
        len = 60;
        break;
    case AIR_GW_WIN_HOUR:
        len = 3600;
        break;
    case AIR_GW_WIN_DAY:
        len = 86400;
        break;
    default: {
        struct tm tm;
        gmtime_r(&t, &tm);
        int64_t id = (int64_t)(tm.tm_year + 1900) * 12 + tm.tm_mon;
        struct tm next = {0};
        next.tm_year = tm.tm_mon == 11 ? tm.tm_year + 1 : tm.tm_year;
        next.tm_mon = (tm.tm_mon + 1) % 12;
        next.tm_mday = 1;
        time_t end = timegm(&next);
        if (secs_left != NULL)
            *secs_left = end > t ? (uint32_t)(end - t) : 1;
        return id;
    }
    }
    int64_t id = (int64_t)t / len;
    if (secs_left != NULL) {
        int64_t left = (id + 1) * len - (int64_t)t;
        *secs_left = left > 0 ? (uint32_t)left : 1;
    }
    return id;
}

static void
refill(struct air__gw_keystate *s, const struct air__gw_key *k, uint64_t now_us)
{
    if (!s->started) {
        s->req_tokens = (double)k->rpm;
        s->tok_tokens = (double)k->tpm;
        s->last_us = now_us;
        s->started = 1;
        return;
    }
    double dt = now_us > s->last_us ? (double)(now_us - s->last_us) / 1e6 : 0;
    s->last_us = now_us;
    /* A reload may have lowered a limit: never hold more than a minute. */
    s->req_tokens = fmin((double)k->rpm, s->req_tokens + dt * (double)k->rpm / 60.0);
    s->tok_tokens = fmin((double)k->tpm, s->tok_tokens + dt * (double)k->tpm / 60.0);
}

static uint32_t
wait_s(double need, double per_minute)
{
    if (per_minute <= 0)
        return 60;
    double s = ceil(need * 60.0 / per_minute);
    return s < 1 ? 1 : s > 86400 ? 86400 : (uint32_t)s;
}

static void
roll_window(struct air__gw_keystate *s, int64_t id)
{
    if (s->window_id != id) {
        s->window_id = id;
        s->spent_usd = 0;
        s->reserved_usd = 0;
    }
}

int
air__gw_limit_admit(const struct air__gw_key *k, uint64_t now_us, time_t wall, uint64_t est_tokens,
                    double est_usd, struct air__gw_reservation *res, uint32_t *retry_after_s)
{
    struct air__gw_keystate *s = k->st;
    memset(res, 0, sizeof *res);
    *retry_after_s = 0;
    if (s == NULL)
        return AIR_GW_LIMIT_OK;
    int why = AIR_GW_LIMIT_OK;
    pthread_mutex_lock(&s->mu);
    refill(s, k, now_us);
    uint32_t left = 0;
    int64_t win = air__gw_window_id(k->window, wall, &left);
    roll_window(s, win);
    double tok_need = fmin((double)est_tokens, (double)k->tpm);
    if (k->rpm > 0 && s->req_tokens < 1.0) {
        why = AIR_GW_LIMIT_RPM;
        *retry_after_s = wait_s(1.0 - s->req_tokens, (double)k->rpm);
    } else if (k->tpm > 0 && s->tok_tokens < tok_need) {
        why = AIR_GW_LIMIT_TPM;
        *retry_after_s = wait_s(tok_need - s->tok_tokens, (double)k->tpm);
    } else if (k->budget_usd > 0 && s->spent_usd + s->reserved_usd + est_usd > k->budget_usd) {
        why = AIR_GW_LIMIT_BUDGET;
        *retry_after_s = left;
    }
    if (why == AIR_GW_LIMIT_OK) {
        if (k->rpm > 0)
            s->req_tokens -= 1.0;
        if (k->tpm > 0)
            s->tok_tokens -= (double)est_tokens;
        if (k->budget_usd > 0)
            s->reserved_usd += est_usd;
        res->window_id = win;
        res->tokens = k->tpm > 0 ? est_tokens : 0;
        res->usd = k->budget_usd > 0 ? est_usd : 0;
        s->admitted++;
    } else {
        s->rejected++;
    }
    pthread_mutex_unlock(&s->mu);
    return why;
}

void
air__gw_limit_settle(const struct air__gw_key *k, const struct air__gw_reservation *res,
                     uint64_t now_us, time_t wall, uint64_t actual_tokens, double actual_usd)
{
    struct air__gw_keystate *s = k->st;
    if (s == NULL)
        return;
    pthread_mutex_lock(&s->mu);
    refill(s, k, now_us);
    if (k->tpm > 0 && res->tokens > 0) {
        /* Unknown usage (a failure): give the estimate back. Otherwise
         * charge the difference; the bucket may go into debt, down to one
         * minute's worth. */
        double adj =
            actual_tokens == 0 ? (double)res->tokens : (double)res->tokens - (double)actual_tokens;
        s->tok_tokens = fmax(-(double)k->tpm, fmin((double)k->tpm, s->tok_tokens + adj));
    }
    int64_t win = air__gw_window_id(k->window, wall, NULL);
    if (s->window_id == res->window_id && win == res->window_id) {
        s->reserved_usd -= res->usd;
        if (s->reserved_usd < 1e-12)
            s->reserved_usd = 0;
    } else {
        roll_window(s, win);
    }
    if (actual_usd > 0 && isfinite(actual_usd))
        s->spent_usd += actual_usd;
    pthread_mutex_unlock(&s->mu);
}
