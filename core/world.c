/*
 * world.c - turning a parsed configuration into adapter instances,
 * deployments, routes and client limits, and the tunables snapshot built
 * from it. See world.h for the lifetimes.
 *
 * DESIGN
 * Deployments are the distinct (provider, upstream model) pairs named by
 * the routes' targets and by the providers' models[] lists. Their prices come
 * from the provider's models[] entry, else from the built-in price table,
 * else they are unknown (cost 0, and lowest-cost treats them as free but
 * last among equals is not promised). Limits (rpm, tpm, max_inflight) come
 * from the models[] entry, else from the provider object.
 *
 * Every rate limit and budget is a policy/state.h slimit named for the
 * store ("client:<name>:rpm", "deployment:<provider>/<model>:tpm",
 * "route:<model>"); with `state.backend` "redis" the world owns the Redis
 * backend that syncs them (core/state_redis.c), created before the limits
 * (they size their fail-open share from it) and started after them. Each
 * one exists even when its value is 0 (unlimited; taken only while the
 * value, an atomic beside it, is > 0), so that the operator can set it at
 * run time without allocating or publishing anything (core/control.c); only
 * the configured ones are synced with the store. air__world_carry moves the
 * local ones' state into the world of a reload.
 */
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "buf.h"
#include "pricing.h"
#include "state_redis.h"
#include "world.h"

static void
set_err(char *err, size_t errlen, const char *msg)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s", msg);
}

static const struct air__model_cfg *
model_cfg(const struct air__provider_cfg *pc, const char *model)
{
    for (size_t m = 0; m < pc->nmodels; m++)
        if (strcmp(pc->models[m].name, model) == 0)
            return &pc->models[m];
    return NULL;
}

long
air__world_dep(const struct air__world *w, const char *provider, const char *model)
{
    for (size_t i = 0; i < w->ndeps; i++) {
        const struct air__dep *d = &w->deps[i];
        if (strcmp(d->model, model) == 0 && strcmp(w->prov[d->prov].cfg->name, provider) == 0)
            return (long)i;
    }
    return -1;
}

static long
find_or_add_dep(struct air__world *w, size_t prov, const char *model, size_t cap)
{
    for (size_t i = 0; i < w->ndeps; i++)
        if (w->deps[i].prov == prov && strcmp(w->deps[i].model, model) == 0)
            return (long)i;
    if (w->ndeps >= cap)
        return -1;
    struct air__dep *d = &w->deps[w->ndeps];
    d->prov = prov;
    d->model = model;
    return (long)w->ndeps++;
}

/* "<a><b><c>" as an owned string, or NULL. */
static char *
lim_key(const char *a, const char *b, const char *c)
{
    air_buf_t k = AIR_BUF_INIT;
    air__buf_printf(&k, "%s%s%s", a, b, c);
    return air__buf_steal(&k, NULL);
}

static int
init_dep(struct air__world *w, struct air__dep *d, int64_t now_ms)
{
    const struct air__provider_cfg *pc = w->prov[d->prov].cfg;
    const struct air__model_cfg *mc = model_cfg(pc, d->model);
    air_buf_t b = AIR_BUF_INIT;
    air__buf_printf(&b, "%s/%s", pc->name, d->model);
    d->id = air__buf_steal(&b, NULL);
    if (d->id == NULL)
        return -1;
    d->caps = w->prov[d->prov].ops->caps;
    if (mc != NULL) {
        d->in_price = mc->input_price_per_mtok;
        d->out_price = mc->output_price_per_mtok;
        d->cached_price = mc->cached_input_price_per_mtok;
        d->context_tokens = mc->context_tokens;
        d->price_known = mc->input_price_per_mtok > 0 || mc->output_price_per_mtok > 0;
    }
    if (!d->price_known) {
        const struct air__price *p = air__price_lookup(d->model);
        if (p != NULL) {
            d->in_price = p->in;
            d->out_price = p->out;
            d->cached_price = p->cached_in;
            d->price_known = 1;
        }
    }
    uint32_t rpm = mc && mc->rpm ? mc->rpm : pc->rpm;
    uint32_t tpm = mc && mc->tpm ? mc->tpm : pc->tpm;
    uint32_t maxin = mc && mc->max_inflight ? mc->max_inflight : pc->max_inflight;
    pthread_mutex_init(&d->mu, NULL);
    atomic_init(&d->hdirty, 0);
    atomic_init(&d->hstate, 0);
    atomic_init(&d->rpm, rpm);
    atomic_init(&d->tpm, tpm);
    /* The limits exist even when unlimited (0), so that the operator can
     * set one at run time. */
    char *k = lim_key("deployment:", d->id, ":rpm");
    if (k == NULL)
        return -1;
    air__slim_init_quota(&d->rpm_lim, &w->state, k, rpm, now_ms);
    k = lim_key("deployment:", d->id, ":tpm");
    if (k == NULL)
        return -1;
    air__slim_init_quota(&d->tpm_lim, &w->state, k, tpm, now_ms);
    air__cap_init(&d->cap, maxin);
    air__dstat_init(&d->agg);
    air__dobs_reset(&d->pending);
    return 0;
}

static air_status_t
init_providers(struct air__world *w, char *err, size_t errlen)
{
    w->nprov = w->cfg->nproviders;
    w->prov = air__calloc(w->nprov, sizeof *w->prov);
    if (w->prov == NULL)
        return AIR_E_NOMEM;
    for (size_t i = 0; i < w->nprov; i++) {
        const struct air__provider_cfg *pc = &w->cfg->providers[i];
        w->prov[i].cfg = pc;
        w->prov[i].ops = pc->ops;
        if (pc->ops->abi != AIR_PROVIDER_ABI) {
            if (err != NULL && errlen > 0)
                snprintf(err, errlen, "providers[%zu]: adapter ABI mismatch", i);
            return AIR_E_ABI;
        }
        if (pc->ops->init == NULL)
            continue;
        air_provider_cfg_t c = {
            .name = pc->name,
            .kind = pc->kind,
            .base_url = pc->base_url,
            .api_key = pc->api_key,
            .json = pc->json,
        };
        char perr[256] = "";
        air_status_t st = pc->ops->init(&c, &w->prov[i].state, perr, sizeof perr);
        if (st != AIR_OK) {
            if (err != NULL && errlen > 0)
                snprintf(err, errlen, "providers[%zu]: %s", i, perr[0] ? perr : air_strerror(st));
            w->prov[i].state = NULL;
            return st == AIR_E_NOMEM ? st : AIR_E_CONFIG;
        }
        if (pc->nkeys > 1) {
            /* A key pool: one adapter instance per key (the key lives in the
             * adapter's state and goes into the headers it builds). */
            struct air__prov *pv = &w->prov[i];
            pv->kstates = air__calloc(pc->nkeys, sizeof *pv->kstates);
            if (pv->kstates == NULL)
                return AIR_E_NOMEM;
            pv->kstates[0] = pv->state;
            pv->nkeys = 1;
            for (size_t k = 1; k < pc->nkeys; k++) {
                c.api_key = pc->api_keys[k];
                st = pc->ops->init(&c, &pv->kstates[k], perr, sizeof perr);
                if (st != AIR_OK) {
                    if (err != NULL && errlen > 0)
                        snprintf(err, errlen, "providers[%zu]: %s", i,
                                 perr[0] ? perr : air_strerror(st));
                    return st == AIR_E_NOMEM ? st : AIR_E_CONFIG;
                }
                pv->nkeys = k + 1;
            }
            air__keypool_init(&pv->keys, pv->nkeys);
        }
    }
    return AIR_OK;
}

/* Apply every leaf of the config's policy/hedge/stats objects through the
 * ctl table, so the config accepts exactly what run-time tuning accepts. */
static air_status_t
apply_tuning_json(struct air__params *p, const cJSON *obj, air_buf_t *path, char *err,
                  size_t errlen)
{
    for (const cJSON *m = obj->child; m != NULL; m = m->next) {
        size_t mark = path->len;
        if (path->len)
            air__buf_putc(path, '.');
        air__buf_puts(path, m->string ? m->string : "");
        if (path->oom)
            return AIR_E_NOMEM;
        air_status_t st;
        if (cJSON_IsObject(m)) {
            st = apply_tuning_json(p, m, path, err, errlen);
        } else if (m->string != NULL && strcmp(m->string, "comment") == 0) {
            st = AIR_OK;
        } else {
            st = air__ctl_set_json(p, path->data, m, err, errlen);
            if (st == AIR_E_READONLY)
                st = AIR_OK; /* read-only at run time, fine in a config */
        }
        if (st != AIR_OK)
            return st;
        path->len = mark;
        path->data[mark] = '\0';
    }
    return AIR_OK;
}

static void
weights_from(struct air__score_weights *w, const cJSON *o)
{
    const cJSON *v;
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "latency")) && cJSON_IsNumber(v))
        w->latency = v->valuedouble;
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "cost")) && cJSON_IsNumber(v))
        w->cost = v->valuedouble;
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "health")) && cJSON_IsNumber(v))
        w->health = v->valuedouble;
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "load")) && cJSON_IsNumber(v))
        w->load = v->valuedouble;
}

static struct air__tun *
tun_alloc(const struct air__world *w)
{
    struct air__tun *t = air__calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    t->route = air__calloc(w->nroutes ? w->nroutes : 1, sizeof *t->route);
    t->dep = air__calloc(w->ndeps ? w->ndeps : 1, sizeof *t->dep);
    if (t->route == NULL || t->dep == NULL) {
        air__tun_free(t);
        return NULL;
    }
    return t;
}

void
air__tun_free(struct air__tun *t)
{
    if (t == NULL)
        return;
    air__free(t->route);
    air__free(t->dep);
    air__free(t);
}

struct air__tun *
air__tun_dup(const struct air__world *w, const struct air__tun *src)
{
    struct air__tun *t = tun_alloc(w);
    if (t == NULL)
        return NULL;
    t->g = src->g;
    memcpy(t->route, src->route, w->nroutes * sizeof *t->route);
    memcpy(t->dep, src->dep, w->ndeps * sizeof *t->dep);
    return t;
}

/* Build the first snapshot. Errors go through err (the caller checks
 * validity with the same function at world creation). */
static struct air__tun *
tun_build(const struct air__world *w, air_status_t *st, char *err, size_t errlen)
{
    const struct air__config *c = w->cfg;
    struct air__tun *t = tun_alloc(w);
    *st = AIR_E_NOMEM;
    if (t == NULL)
        return NULL;
    air__params_default(&t->g);
    /* The retry object is parsed by the config; mirror it into the params. */
    t->g.retry_max_attempts = c->max_attempts;
    t->g.retry_backoff_base_ms = c->backoff_base_ms;
    t->g.retry_backoff_cap_ms = c->backoff_cap_ms;
    t->g.retry_max_retry_after_ms = c->max_retry_after_ms;
    t->g.retry_budget_ratio = c->retry_budget_ratio;
    t->g.retry_budget_min_per_s = c->retry_budget_min_per_s;
    if (c->tuning != NULL) {
        air_buf_t path = AIR_BUF_INIT;
        *st = apply_tuning_json(&t->g, c->tuning, &path, err, errlen);
        air__buf_free(&path);
        if (*st != AIR_OK) {
            air__tun_free(t);
            return NULL;
        }
    }
    /* The same rules between fields as for a run-time change. */
    if ((*st = air__params_validate(&t->g, err, errlen)) != AIR_OK) {
        air__tun_free(t);
        return NULL;
    }
    enum air__strategy def = t->g.strategy;
    for (size_t r = 0; r < w->nroutes; r++) {
        const struct air__route_cfg *rc = w->routes[r].cfg;
        struct air__rtun *rt = &t->route[r];
        rt->strategy = def;
        if (rc->strategy != NULL)
            (void)air__strategy_parse(rc->strategy, &rt->strategy);
        rt->w.latency = t->g.w_latency;
        rt->w.cost = t->g.w_cost;
        rt->w.health = t->g.w_health;
        rt->w.load = t->g.w_load;
        if (rc->weight != NULL)
            weights_from(&rt->w, rc->weight);
        rt->hedge = rc->hedge;
    }
    for (size_t i = 0; i < w->ndeps; i++) {
        t->dep[i].enabled = 1;
        t->dep[i].weight = 1.0;
    }
    /* Target weights (weighted strategy) set their deployment's weight. */
    for (size_t r = 0; r < w->nroutes; r++) {
        const struct air__route_cfg *rc = w->routes[r].cfg;
        for (size_t k = 0; k < w->routes[r].ndeps; k++)
            t->dep[w->routes[r].deps[k]].weight = rc->targets[k].weight;
    }
    *st = AIR_OK;
    return t;
}

struct air__tun *
air__tun_from_config(const struct air__world *w)
{
    air_status_t st;
    return tun_build(w, &st, NULL, 0);
}

/* Choose the state backend from the config (before any limit exists). */
static air_status_t
init_state(struct air__world *w, char *err, size_t errlen)
{
    const struct air__config *c = w->cfg;
    if (strcmp(c->state_backend, "redis") != 0) {
        air__state_init_local(&w->state);
        return AIR_OK;
    }
    struct air__redis_opts o = {
        .url = c->state_url,
        .password = c->state_password,
        .prefix = c->state_prefix,
        .timeout_ms = c->state_timeout_ms,
        .backoff_ms = c->state_backoff_ms,
        .backoff_max_ms = c->state_backoff_max_ms,
    };
    struct air__lease_cfg lc = {
        .sync_ms = c->state_sync_ms,
        .horizon_ms = c->state_horizon_ms,
        .max_fraction = c->state_max_fraction,
        .min_fraction = c->state_min_fraction,
    };
    enum air__fail_mode fr = strcmp(c->state_fail_rate, "closed") == 0 ? AIR_FAIL_CLOSED
                                                                        : AIR_FAIL_OPEN;
    enum air__fail_mode fq = strcmp(c->state_fail_quota, "closed") == 0 ? AIR_FAIL_CLOSED
                                                                         : AIR_FAIL_OPEN;
    enum air__fail_mode fb = strcmp(c->state_fail_budget, "open") == 0 ? AIR_FAIL_OPEN
                                                                       : AIR_FAIL_CLOSED;
    return air__redis_prepare(&w->state, &o, c->state_instances, fr, fq, fb, &lc, &w->redis, err,
                              errlen);
}

/* List every limit and start the Redis backend (no-op when local). */
static air_status_t
start_state(struct air__world *w, char *err, size_t errlen)
{
    if (w->redis == NULL)
        return AIR_OK;
    size_t n = 0;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            w->lims = air__calloc(n ? n : 1, sizeof *w->lims);
            if (w->lims == NULL)
                return AIR_E_NOMEM;
            n = 0;
        }
#define ADD(cond, l)                                                                               \
    do {                                                                                           \
        if (cond) {                                                                                \
            if (pass == 1)                                                                         \
                w->lims[n] = (l);                                                                  \
            n++;                                                                                   \
        }                                                                                          \
    } while (0)
        for (size_t i = 0; i < w->ndeps; i++) {
            ADD(air__lim(&w->deps[i].rpm), &w->deps[i].rpm_lim);
            ADD(air__lim(&w->deps[i].tpm), &w->deps[i].tpm_lim);
        }
        for (size_t i = 0; i < w->nroutes; i++)
            ADD(atomic_load(&w->routes[i].has_budget), &w->routes[i].budget);
        for (size_t i = 0; i < w->nclients; i++) {
            ADD(air__lim(&w->clients[i].rpm), &w->clients[i].rpm_lim);
            ADD(air__lim(&w->clients[i].tpm), &w->clients[i].tpm_lim);
            ADD(atomic_load(&w->clients[i].has_budget), &w->clients[i].budget);
        }
#undef ADD
    }
    w->nlims = n;
    return air__redis_start(w->redis, w->lims, w->nlims, err, errlen);
}

void
air__world_state_json(struct air__world *w, air_buf_t *b)
{
    if (w->redis != NULL)
        air__redis_stats_json(w->redis, b);
    else
        air__buf_puts(b, "\"backend\":\"local\",\"healthy\":true");
}

static void
world_destroy(struct air__world *w)
{
    if (w == NULL)
        return;
    /* The backend goes first: its final flush reads the limits. */
    air__redis_free(w->redis);
    w->redis = NULL;
    air__free(w->lims);
    if (w->prov != NULL) {
        for (size_t i = 0; i < w->nprov; i++) {
            struct air__prov *pv = &w->prov[i];
            if (pv->ops != NULL && pv->ops->fini != NULL && pv->state)
                pv->ops->fini(pv->state);
            /* kstates[0] is `state`, finished above. */
            for (size_t k = 1; pv->kstates != NULL && k < pv->nkeys; k++)
                if (pv->ops->fini != NULL && pv->kstates[k] != NULL)
                    pv->ops->fini(pv->kstates[k]);
            air__free(pv->kstates);
        }
        air__free(w->prov);
    }
    if (w->deps != NULL) {
        for (size_t i = 0; i < w->ndeps; i++) {
            air__free(w->deps[i].id);
            air__free(w->deps[i].rpm_lim.key);
            air__free(w->deps[i].tpm_lim.key);
            pthread_mutex_destroy(&w->deps[i].mu); /* zeroed = never initialised: fine */
        }
        air__free(w->deps);
    }
    if (w->routes != NULL) {
        for (size_t r = 0; r < w->nroutes; r++) {
            air__free(w->routes[r].deps);
            air__free(w->routes[r].budget.key);
        }
        air__free(w->routes);
    }
    if (w->clients != NULL) {
        for (size_t i = 0; i < w->nclients; i++) {
            air__free(w->clients[i].rpm_lim.key);
            air__free(w->clients[i].tpm_lim.key);
            air__free(w->clients[i].budget.key);
        }
        air__free(w->clients);
    }
    air__tun_free(atomic_load_explicit(&w->tun, memory_order_relaxed));
    air__free(atomic_load_explicit(&w->view, memory_order_relaxed));
    air__free(w->wobs);
    air__free(w->wroute);
    air__free(w->wclient);
    air__free((void *)w->wobs_due);
    air__free((void *)w->winfl);
    pthread_mutex_destroy(&w->fold_mu);
    air__config_free(w->cfg);
    air__free(w);
}

air_status_t
air__world_new(struct air__config *cfg, uint32_t nworkers, int64_t now_ms,
               struct air__world **out, char *err, size_t errlen)
{
    *out = NULL;
    struct air__world *w = air__calloc(1, sizeof *w);
    if (w == NULL) {
        air__config_free(cfg);
        return AIR_E_NOMEM;
    }
    w->cfg = cfg;
    w->nworkers = nworkers;
    atomic_init(&w->refs, 1);
    atomic_init(&w->tun, NULL);
    atomic_init(&w->view, NULL);
    pthread_mutex_init(&w->fold_mu, NULL);
    w->last_fold_ms = now_ms;

    air_status_t st = init_providers(w, err, errlen);
    if (st != AIR_OK)
        goto fail;
    st = init_state(w, err, errlen);
    if (st != AIR_OK)
        goto fail;
    st = AIR_E_NOMEM;
    size_t cap = 0;
    for (size_t r = 0; r < cfg->nroutes; r++)
        cap += cfg->routes[r].ntargets;
    for (size_t p = 0; p < cfg->nproviders; p++)
        cap += cfg->providers[p].nmodels;
    w->deps = air__calloc(cap ? cap : 1, sizeof *w->deps);
    w->routes = air__calloc(cfg->nroutes ? cfg->nroutes : 1, sizeof *w->routes);
    if (w->deps == NULL || w->routes == NULL)
        goto fail;
    w->nroutes = cfg->nroutes;
    for (size_t r = 0; r < cfg->nroutes; r++) {
        struct air__route *rt = &w->routes[r];
        const struct air__route_cfg *rc = &cfg->routes[r];
        rt->cfg = rc;
        rt->deps = air__calloc(rc->ntargets ? rc->ntargets : 1, sizeof *rt->deps);
        if (rt->deps == NULL)
            goto fail;
        for (size_t t = 0; t < rc->ntargets; t++) {
            long d = find_or_add_dep(w, rc->targets[t].provider_idx, rc->targets[t].model, cap);
            if (d < 0)
                goto fail;
            rt->deps[rt->ndeps++] = (size_t)d;
        }
        /* Always set up (unlimited when budget_usd is 0), so that a budget
         * can be set at run time; reserved against only while has_budget. */
        enum air__window win = AIR_W_DAY;
        if (rc->budget_window != NULL)
            (void)air__window_parse(rc->budget_window, &win);
        char *k = lim_key("route:", rc->model, "");
        if (k == NULL)
            goto fail;
        air__slim_init_budget(&rt->budget, &w->state, k, rc->budget_usd, win, now_ms);
        atomic_init(&rt->has_budget, rc->budget_usd > 0);
    }
    for (size_t p = 0; p < cfg->nproviders; p++)
        for (size_t m = 0; m < cfg->providers[p].nmodels; m++)
            if (find_or_add_dep(w, p, cfg->providers[p].models[m].name, cap) < 0)
                goto fail;
    for (size_t i = 0; i < w->ndeps; i++)
        if (init_dep(w, &w->deps[i], now_ms) != 0)
            goto fail;

    w->nclients = cfg->nclients;
    w->clients = air__calloc(cfg->nclients ? cfg->nclients : 1, sizeof *w->clients);
    if (w->clients == NULL)
        goto fail;
    for (size_t i = 0; i < cfg->nclients; i++) {
        const struct air__client_cfg *cc = &cfg->clients[i];
        struct air__client *cl = &w->clients[i];
        cl->name = cc->name;
        atomic_init(&cl->rpm, cc->rpm);
        atomic_init(&cl->tpm, cc->tpm);
        char *k = lim_key("client:", cc->name, ":rpm");
        if (k == NULL)
            goto fail;
        air__slim_init_rate(&cl->rpm_lim, &w->state, k, cc->rpm, now_ms);
        k = lim_key("client:", cc->name, ":tpm");
        if (k == NULL)
            goto fail;
        air__slim_init_rate(&cl->tpm_lim, &w->state, k, cc->tpm, now_ms);
        air__cap_init(&cl->cap, cc->max_inflight);
        enum air__window win = AIR_W_DAY;
        if (cc->budget_window != NULL)
            (void)air__window_parse(cc->budget_window, &win);
        k = lim_key("client:", cc->name, "");
        if (k == NULL)
            goto fail;
        air__slim_init_budget(&cl->budget, &w->state, k, cc->budget_usd, win, now_ms);
        atomic_init(&cl->has_budget, cc->budget_usd > 0);
    }

    w->wobs = air__calloc((size_t)nworkers * (w->ndeps ? w->ndeps : 1), sizeof *w->wobs);
    w->wobs_due = air__calloc(nworkers ? nworkers : 1, sizeof *w->wobs_due);
    w->winfl = air__calloc((size_t)nworkers * (w->ndeps ? w->ndeps : 1), sizeof *w->winfl);
    w->wroute = air__calloc((size_t)nworkers * (w->nroutes ? w->nroutes : 1), sizeof *w->wroute);
    w->wclient =
        air__calloc((size_t)nworkers * (w->nclients ? w->nclients : 1), sizeof *w->wclient);
    if (w->wobs == NULL || w->wobs_due == NULL || w->winfl == NULL || w->wroute == NULL ||
        w->wclient == NULL)
        goto fail;
    struct air__view *v =
        air__calloc(1, sizeof *v + (w->ndeps ? w->ndeps : 1) * sizeof v->d[0]);
    if (v == NULL)
        goto fail;
    v->ndeps = w->ndeps;
    for (size_t i = 0; i < w->ndeps; i++)
        air__dstat_init(&v->d[i]);
    atomic_store_explicit(&w->view, v, memory_order_relaxed);

    char terr[256] = "";
    struct air__tun *t = tun_build(w, &st, terr, sizeof terr);
    if (t == NULL) {
        if (st == AIR_E_NOMEM)
            goto fail;
        set_err(err, errlen, terr);
        if (st != AIR_E_NOMEM)
            st = AIR_E_CONFIG;
        goto fail;
    }
    atomic_store_explicit(&w->tun, t, memory_order_relaxed);
    st = start_state(w, err, errlen);
    if (st != AIR_OK)
        goto fail;
    *out = w;
    return AIR_OK;

fail:
    if (st == AIR_E_NOMEM)
        set_err(err, errlen, "out of memory");
    world_destroy(w);
    return st;
}

void
air__world_ref(struct air__world *w)
{
    atomic_fetch_add_explicit(&w->refs, 1, memory_order_relaxed);
}

void
air__world_unref(struct air__world *w)
{
    if (w != NULL && atomic_fetch_sub_explicit(&w->refs, 1, memory_order_acq_rel) == 1)
        world_destroy(w);
}

void
air__world_carry(struct air__world *nw, struct air__world *old, int64_t now_ms)
{
    if (nw->redis != NULL || old->redis != NULL)
        return; /* shared: the store holds the counts */
    for (size_t i = 0; i < nw->ndeps; i++) {
        struct air__dep *d = &nw->deps[i];
        for (size_t j = 0; j < old->ndeps; j++) {
            struct air__dep *o = &old->deps[j];
            if (strcmp(o->id, d->id) != 0)
                continue;
            air__slim_carry(&d->rpm_lim, &o->rpm_lim, now_ms);
            air__slim_carry(&d->tpm_lim, &o->tpm_lim, now_ms);
            break;
        }
    }
    for (size_t i = 0; i < nw->nroutes; i++) {
        struct air__route *rt = &nw->routes[i];
        const struct air__route *o = air__world_route(old, rt->cfg->model);
        if (o != NULL)
            air__slim_carry(&rt->budget, (struct air__slimit *)&o->budget, now_ms);
    }
    for (size_t i = 0; i < nw->nclients; i++) {
        struct air__client *cl = &nw->clients[i];
        struct air__client *o = air__world_client(old, cl->name);
        if (o == NULL)
            continue;
        air__slim_carry(&cl->rpm_lim, &o->rpm_lim, now_ms);
        air__slim_carry(&cl->tpm_lim, &o->tpm_lim, now_ms);
        air__slim_carry(&cl->budget, &o->budget, now_ms);
    }
}

const struct air__route *
air__world_route(const struct air__world *w, const char *model)
{
    for (size_t r = 0; r < w->nroutes; r++)
        if (strcmp(w->routes[r].cfg->model, model) == 0)
            return &w->routes[r];
    return NULL;
}

struct air__client *
air__world_client(struct air__world *w, const char *name)
{
    for (size_t i = 0; i < w->nclients; i++)
        if (strcmp(w->clients[i].name, name) == 0)
            return &w->clients[i];
    return NULL;
}
