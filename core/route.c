/*
 * route.c - candidate resolution, filtering, ranking and admission for
 * every attempt (see route.h).
 *
 * DESIGN
 * The hot path (a healthy deployment, no limits configured) touches no lock
 * and no shared read-modify-write: health is looked at through an atomic
 * "dirty" flag, and only a deployment that is ejected, cooling down,
 * unusable, or has recent consecutive errors takes its mutex. Limits use the
 * policy's lock-free token buckets and caps, and only when configured; the
 * rpm/tpm buckets are policy/state.h limits, so with a shared state backend
 * they spend this instance's lease of the vendor quota (no round trip).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "pricing.h"
#include "route.h"

int
air__route_resolve(const struct air__world *w, const char *model, const char *pin, size_t *deps,
                   size_t *n, const struct air__route **rtp, air_buf_t *why)
{
    const struct air__config *cfg = w->cfg;
    const struct air__route *rt = air__world_route(w, model);
    *rtp = rt;
    *n = 0;
    long pinp = -1;
    if (pin != NULL) {
        pinp = air__config_provider_idx(cfg, pin);
        if (pinp < 0) {
            air__buf_printf(why, "provider '%s' is not configured; configured providers:", pin);
            for (size_t p = 0; p < cfg->nproviders; p++)
                air__buf_printf(why, "%s %s", p ? "," : "", cfg->providers[p].name);
            return -1;
        }
    }
    if (rt != NULL) {
        for (size_t i = 0; i < rt->ndeps && *n < AIR_MAX_CANDS; i++) {
            if (pinp >= 0 && w->deps[rt->deps[i]].prov != (size_t)pinp)
                continue;
            deps[(*n)++] = rt->deps[i];
        }
    } else {
        for (size_t i = 0; i < w->ndeps && *n < AIR_MAX_CANDS; i++) {
            const struct air__dep *d = &w->deps[i];
            if (pinp >= 0 && d->prov != (size_t)pinp)
                continue;
            if (strcmp(d->model, model) != 0)
                continue;
            /* Only deployments a provider lists in models[] (route targets
             * are reachable through their route's public name). */
            const struct air__provider_cfg *pc = w->prov[d->prov].cfg;
            for (size_t m = 0; m < pc->nmodels; m++)
                if (strcmp(pc->models[m].name, model) == 0) {
                    deps[(*n)++] = i;
                    break;
                }
        }
    }
    if (*n == 0 && pinp >= 0) {
        /* Pinned to a provider outside the route: the model as named. */
        long d = air__world_dep(w, cfg->providers[pinp].name, model);
        if (d < 0 && rt != NULL && rt->ndeps > 0) {
            air__buf_printf(why, "provider '%s' does not serve model '%s'", pin, model);
            return -1;
        }
        if (d < 0) {
            air__buf_printf(why, "provider '%s' does not list model '%s'", pin, model);
            return -1;
        }
        deps[(*n)++] = (size_t)d;
    }
    if (*n == 0) {
        air__buf_printf(why, "model '%s' is not served; served models:", model);
        int first = 1;
        for (size_t r = 0; r < w->nroutes; r++) {
            air__buf_printf(why, "%s %s", first ? "" : ",", w->routes[r].cfg->model);
            first = 0;
        }
        for (size_t p = 0; p < cfg->nproviders; p++)
            for (size_t m = 0; m < cfg->providers[p].nmodels; m++) {
                const char *name = cfg->providers[p].models[m].name;
                if (air__world_route(w, name) != NULL)
                    continue;
                air__buf_printf(why, "%s %s", first ? "" : ",", name);
                first = 0;
            }
        if (first)
            air__buf_puts(why, " (none)");
        return -1;
    }
    return 0;
}

static int
has_images(const cJSON *msgs)
{
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs)
    {
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (!cJSON_IsArray(content))
            continue;
        const cJSON *part;
        cJSON_ArrayForEach(part, content)
        {
            const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
            if (cJSON_IsString(type) && strcmp(type->valuestring, "image_url") == 0)
                return 1;
        }
    }
    return 0;
}

void
air__route_need(const cJSON *body, size_t raw_len, struct air__need *need)
{
    memset(need, 0, sizeof *need);
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(body, "tools");
    need->tools = cJSON_IsArray(tools) && cJSON_GetArraySize(tools) > 0;
    need->images = has_images(cJSON_GetObjectItemCaseSensitive(body, "messages"));
    need->stream = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(body, "stream"));
    const cJSON *rf = cJSON_GetObjectItemCaseSensitive(body, "response_format");
    const cJSON *rft = cJSON_GetObjectItemCaseSensitive(rf, "type");
    need->json = cJSON_IsString(rft) && strcmp(rft->valuestring, "text") != 0;
    need->est_in_tokens = air__estimate_tokens(raw_len);
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(body, "max_completion_tokens");
    if (!cJSON_IsNumber(mt))
        mt = cJSON_GetObjectItemCaseSensitive(body, "max_tokens");
    need->est_out_tokens = cJSON_IsNumber(mt) && mt->valuedouble > 0 ? (uint64_t)mt->valuedouble
                                                                      : 256;
}

double
air__route_est_cost(const struct air__dep *d, const struct air__need *need)
{
    return air__cost_usd(d->in_price, d->out_price, d->cached_price, need->est_in_tokens,
                         need->est_out_tokens, 0);
}

/* Non-mutating health look for filtering and explain. */
static int
health_blocked(struct air__dep *d, int64_t now_ms, char *why, size_t whylen, int64_t *wait)
{
    if (!atomic_load_explicit(&d->hdirty, memory_order_acquire))
        return 0;
    pthread_mutex_lock(&d->mu);
    int ok = air__health_peek(&d->health, now_ms, why, whylen);
    int64_t cu = d->health.cooldown_until_ms;
    pthread_mutex_unlock(&d->mu);
    if (!ok && cu > now_ms && (*wait < 0 || cu - now_ms < *wait))
        *wait = cu - now_ms;
    return !ok;
}

static void
mirror_health(struct air__dep *d)
{
    const struct air__health *h = &d->health;
    atomic_store_explicit(&d->hstate, (int)h->state, memory_order_relaxed);
    atomic_store_explicit(&d->hdirty, h->state != AIR_H_HEALTHY || h->consec_errors > 0,
                          memory_order_release);
}

struct cands {
    struct air__pcand pc[AIR_MAX_CANDS];
    int ok[AIR_MAX_CANDS];
    const char *why[AIR_MAX_CANDS];
    char whybuf[AIR_MAX_CANDS][112];
};

static void
build_cands(struct air__world *w, const struct air__tun *t, const struct air__view *v,
            const size_t *deps, size_t n, const struct air__cinfo *ci, int64_t now_ms,
            struct cands *c, int64_t *wait_ms)
{
    for (size_t i = 0; i < n; i++) {
        size_t di = deps[i];
        struct air__dep *d = &w->deps[di];
        struct air__pcand *p = &c->pc[i];
        memset(p, 0, sizeof *p);
        p->st = v != NULL && di < v->ndeps ? &v->d[di] : NULL;
        p->in_price = d->in_price;
        p->out_price = d->out_price;
        p->caps = d->caps;
        p->context_tokens = d->context_tokens;
        p->weight = t->dep[di].weight;
        p->inflight = p->st ? p->st->inflight : 0;
        uint32_t maxin = air__cap_max(&d->cap);
        p->max_inflight = maxin;
        c->whybuf[i][0] = '\0';
        const char *why = NULL;
        if (!t->dep[di].enabled) {
            why = "disabled by operator";
        } else if (ci != NULL && ci[i].excluded) {
            why = "excluded for this request (authentication, not found or bad request)";
        } else if (ci != NULL && ci[i].failed) {
            why = "already failed for this request";
        } else if (ci != NULL && ci[i].not_before_ms > now_ms) {
            snprintf(c->whybuf[i], sizeof c->whybuf[i], "Retry-After: %.1f s more",
                     (double)(ci[i].not_before_ms - now_ms) / 1000.0);
            why = c->whybuf[i];
            if (*wait_ms < 0 || ci[i].not_before_ms - now_ms < *wait_ms)
                *wait_ms = ci[i].not_before_ms - now_ms;
        } else if (health_blocked(d, now_ms, c->whybuf[i], sizeof c->whybuf[i], wait_ms)) {
            why = c->whybuf[i];
        } else if (maxin && air__cap_count(&d->cap) >= maxin) {
            snprintf(c->whybuf[i], sizeof c->whybuf[i], "at max_inflight (%u)", maxin);
            why = c->whybuf[i];
            if (*wait_ms < 0 || *wait_ms > 5)
                *wait_ms = 5;
        }
        p->excluded = why != NULL;
        p->excluded_why = why;
    }
}

/* Why a deployment's rpm/tpm refused, and how long waiting could take. A
 * fail-closed refusal (shared store unreachable) sets no wait. */
static void
limit_why(char *why, size_t whylen, const char *what, uint32_t lim, enum air__slim_rc lr,
          int64_t wt, int64_t *wait_ms)
{
    if (lr == AIR_SL_CLOSED) {
        snprintf(why, whylen, "%s quota unknown: shared state store unreachable (fail-closed)",
                 what);
        return;
    }
    if (lr == AIR_SL_SHORT)
        snprintf(why, whylen, "%s lease of the shared quota is being renewed", what);
    else
        snprintf(why, whylen, "over %s (%u/min); room in %.1f s", what, lim, (double)wt / 1000);
    if (*wait_ms < 0 || wt < *wait_ms)
        *wait_ms = wt;
}

static int
admit(struct air__world *w, size_t di, const struct air__need *need, int64_t now_ms,
      struct air__admit *ad, char *why, size_t whylen, int64_t *wait_ms)
{
    struct air__dep *d = &w->deps[di];
    int probe = 0;
    if (atomic_load_explicit(&d->hdirty, memory_order_acquire)) {
        pthread_mutex_lock(&d->mu);
        int r = air__health_admit(&d->health, now_ms, why, whylen);
        mirror_health(d);
        pthread_mutex_unlock(&d->mu);
        if (r == 0)
            return 0;
        probe = r == 2;
    }
    int capped = 0;
    uint32_t maxin = air__cap_max(&d->cap);
    if (maxin) {
        if (!air__cap_enter(&d->cap)) {
            snprintf(why, whylen, "at max_inflight (%u)", maxin);
            goto undo_probe;
        }
        capped = 1;
    }
    int64_t wt = 0;
    enum air__slim_rc lr;
    uint32_t rpm = air__lim(&d->rpm), tpm = air__lim(&d->tpm);
    if (rpm && (lr = air__slim_take(&d->rpm_lim, 1, now_ms, &wt)) != AIR_SL_OK) {
        limit_why(why, whylen, "rpm", rpm, lr, wt, wait_ms);
        goto undo_cap;
    }
    double tok = (double)(need->est_in_tokens + need->est_out_tokens);
    if (tpm && (lr = air__slim_take(&d->tpm_lim, tok, now_ms, &wt)) != AIR_SL_OK) {
        limit_why(why, whylen, "tpm", tpm, lr, wt, wait_ms);
        if (rpm)
            air__slim_put(&d->rpm_lim, 1, now_ms);
        goto undo_cap;
    }
    ad->dep = (long)di;
    ad->probe = probe;
    ad->capped = capped;
    ad->tpm_est = tpm ? tok : 0;
    return 1;
undo_cap:
    if (capped)
        air__cap_leave(&d->cap);
undo_probe:
    if (probe) {
        pthread_mutex_lock(&d->mu);
        d->health.probe_out = 0;
        pthread_mutex_unlock(&d->mu);
    }
    return 0;
}

/* Would admission refuse deployment d now for its rpm or tpm? Peeks, takes
 * nothing. 1 with the reason in why, else 0. */
static int
limits_refuse(struct air__dep *d, const struct air__need *need, int64_t now_ms, char *why,
              size_t whylen)
{
    int64_t wt = 0, wait = -1;
    enum air__slim_rc lr;
    uint32_t rpm = air__lim(&d->rpm), tpm = air__lim(&d->tpm);
    if (rpm && (lr = air__slim_peek(&d->rpm_lim, 1, now_ms, &wt)) != AIR_SL_OK) {
        limit_why(why, whylen, "rpm", rpm, lr, wt, &wait);
        return 1;
    }
    double tok = (double)(need->est_in_tokens + need->est_out_tokens);
    if (tpm && (lr = air__slim_peek(&d->tpm_lim, tok, now_ms, &wt)) != AIR_SL_OK) {
        limit_why(why, whylen, "tpm", tpm, lr, wt, &wait);
        return 1;
    }
    return 0;
}

long
air__route_pick(struct air__world *w, const struct air__tun *t, const struct air__view *v,
                const struct air__route *rt, const size_t *deps, size_t n,
                const struct air__cinfo *ci, const struct air__need *need, int64_t now_ms,
                uint64_t *rr, uint64_t *rng, struct air__admit *ad, air_buf_t *why_none,
                int64_t *wait_ms)
{
    struct cands c;
    *wait_ms = -1;
    ad->dep = -1;
    ad->probe = 0;
    ad->capped = 0;
    ad->tpm_est = 0;
    build_cands(w, t, v, deps, n, ci, now_ms, &c, wait_ms);
    size_t k = air__policy_filter(c.pc, n, need, c.ok, c.why);
    size_t order[AIR_MAX_CANDS];
    size_t m = 0;
    if (k > 0) {
        enum air__strategy s = AIR_S_SCORE;
        struct air__score_weights wts = {t->g.w_latency, t->g.w_cost,
                                         t->g.w_health, t->g.w_load};
        if (rt != NULL) {
            s = t->route[rt - w->routes].strategy;
            wts = t->route[rt - w->routes].w;
        } else {
            s = t->g.strategy;
        }
        m = air__policy_rank(s, c.pc, n, c.ok, &wts, need, rr, rng, order);
    }
    for (size_t j = 0; j < m; j++) {
        size_t i = order[j];
        char why[112];
        if (admit(w, deps[i], need, now_ms, ad, why, sizeof why, wait_ms))
            return (long)i;
        snprintf(c.whybuf[i], sizeof c.whybuf[i], "%s", why);
        c.ok[i] = 0;
        c.why[i] = c.whybuf[i];
    }
    if (why_none != NULL) {
        air__buf_puts(why_none, "no eligible deployment: ");
        for (size_t i = 0; i < n; i++)
            air__buf_printf(why_none, "%s%s: %s", i ? "; " : "", w->deps[deps[i]].id,
                            c.why[i] ? c.why[i] : "not chosen");
    }
    return -1;
}

void
air__route_release(struct air__world *w, struct air__admit *ad, int64_t tokens_used,
                   int64_t now_ms)
{
    if (ad->dep < 0)
        return;
    struct air__dep *d = &w->deps[ad->dep];
    if (ad->capped)
        air__cap_leave(&d->cap);
    /* By what this admission took, not by the limits now (an operator may
     * have changed them since). */
    if (ad->tpm_est > 0 && tokens_used >= 0 && (double)tokens_used < ad->tpm_est)
        air__slim_put(&d->tpm_lim, ad->tpm_est - (double)tokens_used, now_ms);
    if (ad->probe) {
        /* A probe that ended without an outcome (cancelled) frees the slot. */
        pthread_mutex_lock(&d->mu);
        d->health.probe_out = 0;
        pthread_mutex_unlock(&d->mu);
    }
    ad->dep = -1;
    ad->probe = 0;
    ad->capped = 0;
    ad->tpm_est = 0;
}

void
air__route_outcome(struct air__world *w, const struct air__tun *t, const struct air__route *rt,
                   size_t di, enum air__outcome o, int64_t retry_after_ms, int64_t now_ms)
{
    struct air__dep *d = &w->deps[di];
    if (o == AIR_O_SUCCESS && retry_after_ms < 0 &&
        !atomic_load_explicit(&d->hdirty, memory_order_acquire))
        return; /* the common case: nothing to change, no lock */
    uint32_t ejected = 0, total = 1;
    if (rt != NULL) {
        total = (uint32_t)rt->ndeps;
        for (size_t i = 0; i < rt->ndeps; i++) {
            int hs = atomic_load_explicit(&w->deps[rt->deps[i]].hstate, memory_order_relaxed);
            if (hs == AIR_H_EJECTED || hs == AIR_H_PROBING || hs == AIR_H_UNUSABLE)
                ejected++; /* out of rotation */
        }
    }
    struct air__eject_cfg ec;
    air__params_eject_cfg(&t->g, &ec);
    pthread_mutex_lock(&d->mu);
    air__health_on_outcome(&d->health, &ec, o, retry_after_ms, now_ms, ejected, total);
    mirror_health(d);
    pthread_mutex_unlock(&d->mu);
}

/* A JSON number, or null for NaN and infinities (JSON has neither). */
static void
json_num(air_buf_t *b, const char *key, double v)
{
    if (isfinite(v))
        air__buf_printf(b, "\"%s\":%.6g", key, v);
    else
        air__buf_printf(b, "\"%s\":null", key);
}

static void
json_str(air_buf_t *b, const char *s)
{
    air__buf_json_str(b, s ? s : "", s ? strlen(s) : 0);
}

void
air__route_explain(struct air__world *w, const struct air__tun *t, const struct air__view *v,
                   const cJSON *body, size_t raw_len, const char *pin, int64_t now_ms,
                   air_buf_t *out)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(body, "model");
    const char *model = cJSON_IsString(m) ? m->valuestring : "";
    size_t deps[AIR_MAX_CANDS], n = 0;
    const struct air__route *rt = NULL;
    air_buf_t why = AIR_BUF_INIT;
    air__buf_puts(out, "{\"model\":");
    json_str(out, model);
    if (air__route_resolve(w, model, pin, deps, &n, &rt, &why) != 0) {
        air__buf_puts(out, ",\"route\":null,\"error\":");
        json_str(out, why.data);
        air__buf_puts(out, ",\"candidates\":[],\"order\":[]}");
        air__buf_free(&why);
        return;
    }
    air__buf_free(&why);
    struct air__need need;
    air__route_need(body, raw_len, &need);
    enum air__strategy s = AIR_S_SCORE;
    struct air__score_weights wts = {t->g.w_latency, t->g.w_cost, t->g.w_health,
                                     t->g.w_load};
    if (rt != NULL) {
        s = t->route[rt - w->routes].strategy;
        wts = t->route[rt - w->routes].w;
    } else {
        s = t->g.strategy;
    }
    struct cands c;
    int64_t wait = -1;
    build_cands(w, t, v, deps, n, NULL, now_ms, &c, &wait);
    /* What admission would say now (max_inflight is in build_cands). */
    for (size_t i = 0; i < n; i++) {
        if (c.pc[i].excluded)
            continue;
        if (limits_refuse(&w->deps[deps[i]], &need, now_ms, c.whybuf[i], sizeof c.whybuf[i])) {
            c.pc[i].excluded = 1;
            c.pc[i].excluded_why = c.whybuf[i];
        }
    }
    size_t k = air__policy_filter(c.pc, n, &need, c.ok, c.why);
    struct air__score sc[AIR_MAX_CANDS];
    memset(sc, 0, sizeof sc);
    air__policy_score(c.pc, n, c.ok, &wts, &need, sc);
    size_t order[AIR_MAX_CANDS];
    size_t mo = 0;
    uint64_t rr = 0, rng = 0x5eed;
    if (k > 0)
        mo = air__policy_rank(s, c.pc, n, c.ok, &wts, &need, &rr, &rng, order);
    air__buf_puts(out, ",\"route\":");
    if (rt != NULL)
        json_str(out, rt->cfg->model);
    else
        air__buf_puts(out, "null");
    /* The route budget: would the reservation (the most expensive
     * candidate's estimate, as for a real request) be refused now? */
    air__buf_puts(out, ",\"budget\":");
    if (rt != NULL && atomic_load_explicit(&rt->has_budget, memory_order_acquire)) {
        double est = 0;
        for (size_t i = 0; i < n; i++) {
            double ec = air__route_est_cost(&w->deps[deps[i]], &need);
            if (ec > est)
                est = ec;
        }
        struct air__slimit *bl = (struct air__slimit *)&rt->budget;
        int64_t ra = 0;
        enum air__slim_rc br = air__slim_peek_reserve(bl, est, now_ms, &ra);
        int admit_ok = br == AIR_SL_OK || br == AIR_SL_SHORT;
        air__buf_printf(out,
                        "{\"limit_usd\":%g,\"window\":\"%s\",\"spent_usd\":%.6f,"
                        "\"est_cost_usd\":%.8f,\"admit\":%s,\"reason\":",
                        air__slim_limit(bl), air__window_name(bl->w), air__slim_spent(bl), est,
                        admit_ok ? "true" : "false");
        if (admit_ok)
            air__buf_puts(out, "null");
        else if (br == AIR_SL_CLOSED)
            json_str(out, "budget cannot be checked: shared state store unreachable "
                          "(fail-closed)");
        else
            air__buf_printf(out, "\"budget exhausted; the window ends in %.1f s\"",
                            (double)ra / 1000.0);
        air__buf_putc(out, '}');
    } else {
        air__buf_puts(out, "null");
    }
    air__buf_printf(out,
                    ",\"strategy\":\"%s\",\"weights\":{\"latency\":%g,\"cost\":%g,\"health\":%g,"
                    "\"load\":%g},\"need\":{\"tools\":%s,\"images\":%s,\"stream\":%s,"
                    "\"json\":%s,\"est_in_tokens\":%llu,\"est_out_tokens\":%llu},\"candidates\":[",
                    air__strategy_name(s), wts.latency, wts.cost, wts.health, wts.load,
                    need.tools ? "true" : "false", need.images ? "true" : "false",
                    need.stream ? "true" : "false", need.json ? "true" : "false",
                    (unsigned long long)need.est_in_tokens,
                    (unsigned long long)need.est_out_tokens);
    for (size_t i = 0; i < n; i++) {
        const struct air__dep *d = &w->deps[deps[i]];
        const struct air__dstat *st = c.pc[i].st;
        air__buf_printf(out, "%s{\"deployment\":", i ? "," : "");
        json_str(out, d->id);
        air__buf_puts(out, ",\"provider\":");
        json_str(out, w->prov[d->prov].cfg->name);
        air__buf_puts(out, ",\"model\":");
        json_str(out, d->model);
        air__buf_printf(out, ",\"eligible\":%s,\"reason\":", c.ok[i] ? "true" : "false");
        if (c.ok[i])
            air__buf_puts(out, "null");
        else
            json_str(out, c.why[i] ? c.why[i] : "filtered");
        air__buf_puts(out, ",\"score\":{");
        json_num(out, "latency", sc[i].latency);
        air__buf_putc(out, ',');
        json_num(out, "cost", sc[i].cost);
        air__buf_putc(out, ',');
        json_num(out, "health", sc[i].health);
        air__buf_putc(out, ',');
        json_num(out, "load", sc[i].load);
        air__buf_putc(out, ',');
        json_num(out, "total", sc[i].total);
        air__buf_printf(out,
                        "},\"price\":{\"input_per_mtok\":%g,"
                        "\"output_per_mtok\":%g,\"known\":%s},\"est_cost_usd\":%.8f,"
                        "\"weight\":%g,\"enabled\":%s",
                        d->in_price, d->out_price, d->price_known ? "true" : "false",
                        air__route_est_cost(d, &need), t->dep[deps[i]].weight,
                        t->dep[deps[i]].enabled ? "true" : "false");
        /* Limits as admission sees them now (null = unlimited). */
        struct air__dep *dm = &w->deps[deps[i]];
        uint32_t rpm = air__lim(&dm->rpm), tpm = air__lim(&dm->tpm);
        uint32_t maxin = air__cap_max(&dm->cap);
        air__buf_puts(out, ",\"limits\":{\"rpm\":");
        if (rpm)
            air__buf_printf(out, "{\"limit\":%u,\"available\":%.3f}", rpm,
                            air__slim_available(&dm->rpm_lim, now_ms));
        else
            air__buf_puts(out, "null");
        air__buf_puts(out, ",\"tpm\":");
        if (tpm)
            air__buf_printf(out, "{\"limit\":%u,\"available\":%.3f,\"need\":%llu}", tpm,
                            air__slim_available(&dm->tpm_lim, now_ms),
                            (unsigned long long)(need.est_in_tokens + need.est_out_tokens));
        else
            air__buf_puts(out, "null");
        air__buf_puts(out, ",\"max_inflight\":");
        if (maxin)
            air__buf_printf(out, "{\"limit\":%u,\"inflight\":%u}", maxin,
                            air__cap_count(&dm->cap));
        else
            air__buf_puts(out, "null");
        air__buf_putc(out, '}');
        if (st != NULL)
            air__buf_printf(out,
                            ",\"stats\":{\"latency_ewma_us\":%.0f,\"ttft_ewma_us\":%.0f,"
                            "\"success_ewma\":%.4f,\"p95_us\":%llu,\"inflight\":%u,"
                            "\"requests\":%llu}",
                            st->lat_ewma_us, st->ttft_ewma_us, st->succ_ewma,
                            (unsigned long long)st->lat_p95_us, st->inflight,
                            (unsigned long long)st->requests);
        air__buf_puts(out, "}");
    }
    air__buf_puts(out, "],\"order\":[");
    for (size_t j = 0; j < mo; j++) {
        if (j)
            air__buf_putc(out, ',');
        json_str(out, w->deps[deps[order[j]]].id);
    }
    air__buf_puts(out, "]}");
}
