/*
 * control.c - the control plane: run-time tuning by dotted path, explain,
 * reload, the effective configuration and the statistics snapshot.
 *
 * DESIGN
 * Control calls are serialised by r->ctl_mu and never block the data
 * plane. A tuning change copies the current tunables snapshot, applies and
 * validates the change on the copy, publishes it with one atomic pointer
 * store, waits for an epoch grace period and frees the old copy: no worker
 * ever sees half-applied settings. Limits (rpm, tpm, max_inflight,
 * budget_usd of deployments, routes and clients) are live state rather than
 * snapshot fields: a change is validated, then stored into the limit's
 * atomics (policy/limiter.h, budget.h), and applies from the next admission.
 * A reload builds a complete new world and swaps it the same way, after
 * carrying over the state of the local rate limits and budgets that keep
 * their names; workers move over at their next loop iteration and finish
 * their in-flight requests on the world those started with.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "engine.h"

static void
set_err(char *err, size_t errlen, const char *fmt, const char *a)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, fmt, a ? a : "");
}

/* The caller frees with free(): hand over a libc copy of a buffer. */
static char *
to_libc(air_buf_t *b)
{
    if (b->oom || b->data == NULL) {
        air__buf_free(b);
        return NULL;
    }
    char *out = malloc(b->len + 1); /* air-alloc-ok: documented free() ownership */
    if (out != NULL)
        memcpy(out, b->data, b->len + 1);
    air__buf_free(b);
    return out;
}

struct air__world *
air__router_world(struct air *r)
{
    pthread_mutex_lock(&r->ctl_mu);
    struct air__world *w = atomic_load_explicit(&r->world, memory_order_acquire);
    air__world_ref(w);
    pthread_mutex_unlock(&r->ctl_mu);
    return w;
}

uint32_t
air_queue_depth(air_t *r)
{
    return r ? ck_ring_size(&r->ingress) : 0;
}

static const char *
hstate_name(int s)
{
    switch (s) {
    case AIR_H_HEALTHY: return "healthy";
    case AIR_H_EJECTED: return "ejected";
    case AIR_H_PROBING: return "probing";
    case AIR_H_COOLDOWN: return "cooldown";
    case AIR_H_UNUSABLE: return "unusable";
    default: return "unknown";
    }
}

/* ------------------------------------------------------------- tuning */

/* Split "routes.<model>.<field>" where <model> may contain dots: match the
 * longest route name. Returns the route index or -1; *field points after it. */
static long
route_path(const struct air__world *w, const char *rest, const char **field)
{
    long best = -1;
    size_t best_len = 0;
    for (size_t i = 0; i < w->nroutes; i++) {
        const char *m = w->routes[i].cfg->model;
        size_t n = strlen(m);
        if (strncmp(rest, m, n) == 0 && rest[n] == '.' && n > best_len) {
            best = (long)i;
            best_len = n;
        }
    }
    if (best >= 0)
        *field = rest + best_len + 1;
    return best;
}

static long
dep_path(const struct air__world *w, const char *rest, const char **field)
{
    long best = -1;
    size_t best_len = 0;
    for (size_t i = 0; i < w->ndeps; i++) {
        const char *id = w->deps[i].id;
        size_t n = strlen(id);
        if (strncmp(rest, id, n) == 0 && rest[n] == '.' && n > best_len) {
            best = (long)i;
            best_len = n;
        }
    }
    if (best >= 0)
        *field = rest + best_len + 1;
    return best;
}

static long
client_path(const struct air__world *w, const char *rest, const char **field)
{
    long best = -1;
    size_t best_len = 0;
    for (size_t i = 0; i < w->nclients; i++) {
        const char *nm = w->clients[i].name;
        size_t n = strlen(nm);
        if (strncmp(rest, nm, n) == 0 && rest[n] == '.' && n > best_len) {
            best = (long)i;
            best_len = n;
        }
    }
    if (best >= 0)
        *field = rest + best_len + 1;
    return best;
}

/* Ranges of the limit tunables (the config's). */
#define RPM_MAX    1000000000
#define TPM_MAX    4000000000LL
#define MAXIN_MAX  1000000
#define BUDGET_MAX 1e12

/* Which limit a path names: 0 none, else the field. */
enum lim_field { LF_NONE, LF_RPM, LF_TPM, LF_MAXIN, LF_BUDGET };

static enum lim_field
lim_field(const char *field)
{
    if (strcmp(field, "rpm") == 0)
        return LF_RPM;
    if (strcmp(field, "tpm") == 0)
        return LF_TPM;
    if (strcmp(field, "max_inflight") == 0)
        return LF_MAXIN;
    if (strcmp(field, "budget_usd") == 0)
        return LF_BUDGET;
    return LF_NONE;
}

/* The limits one deployment, route or client has (any may be NULL). */
struct lims {
    _Atomic uint32_t *rpm, *tpm;
    struct air__slimit *rpm_lim, *tpm_lim, *budget;
    _Atomic int *has_budget;
    struct air__cap *cap;
};

static struct lims
dep_lims(struct air__dep *d)
{
    struct lims l = {&d->rpm, &d->tpm, &d->rpm_lim, &d->tpm_lim, NULL, NULL, &d->cap};
    return l;
}

static struct lims
route_lims(struct air__route *rt)
{
    struct lims l = {NULL, NULL, NULL, NULL, &rt->budget, &rt->has_budget, NULL};
    return l;
}

static struct lims
client_lims(struct air__client *cl)
{
    struct lims l = {&cl->rpm,    &cl->tpm,        &cl->rpm_lim, &cl->tpm_lim,
                     &cl->budget, &cl->has_budget, &cl->cap};
    return l;
}

/* Does l have field f? */
static int
lims_have(const struct lims *l, enum lim_field f)
{
    switch (f) {
    case LF_RPM: return l->rpm != NULL;
    case LF_TPM: return l->tpm != NULL;
    case LF_MAXIN: return l->cap != NULL;
    case LF_BUDGET: return l->budget != NULL;
    case LF_NONE: break;
    }
    return 0;
}

/* Whether field f can change at run time: caps always (they are per
 * instance); rates and budgets only with the local state backend (a shared
 * limit's size is part of what every instance shares). */
static int
lims_writable(const struct air__world *w, enum lim_field f)
{
    return f == LF_MAXIN || w->redis == NULL;
}

/* The current value of field f as JSON. */
static void
lims_value(const struct lims *l, enum lim_field f, air_buf_t *b)
{
    switch (f) {
    case LF_RPM: air__buf_printf(b, "%u", air__lim(l->rpm)); break;
    case LF_TPM: air__buf_printf(b, "%u", air__lim(l->tpm)); break;
    case LF_MAXIN: air__buf_printf(b, "%u", air__cap_max(l->cap)); break;
    case LF_BUDGET:
        air__buf_printf(b, "%g",
                        atomic_load_explicit(l->has_budget, memory_order_acquire)
                            ? air__slim_limit(l->budget)
                            : 0.0);
        break;
    case LF_NONE: air__buf_puts(b, "null"); break;
    }
}

/* Validate and apply a limit change to live state: it takes effect for the
 * next admission. What requests already took stays taken and is released by
 * what they took (see worker.c, route.c). */
static air_status_t
lims_set(struct air__world *w, const struct lims *l, enum lim_field f, const char *path,
         const cJSON *v, char *err, size_t errlen)
{
    if (!lims_writable(w, f)) {
        set_err(err, errlen,
                "%s: read-only while limits are shared through the state store (state.backend "
                "\"redis\"); change it in the configuration of every instance and reload",
                path);
        return AIR_E_READONLY;
    }
    int64_t now = air__wall_ms();
    air_status_t st;
    if (f == LF_BUDGET) {
        double usd = 0;
        if ((st = air__ctl_json_f64(v, path, 0, BUDGET_MAX, &usd, err, errlen)) != AIR_OK)
            return st;
        (void)air__slim_set_budget(l->budget, usd);
        /* Set before it is reserved against (release pairs with the
         * workers' acquire). */
        atomic_store_explicit(l->has_budget, usd > 0, memory_order_release);
        return AIR_OK;
    }
    int64_t max = f == LF_RPM ? RPM_MAX : f == LF_TPM ? TPM_MAX : MAXIN_MAX;
    int64_t n = 0;
    if ((st = air__ctl_json_i64(v, path, 0, max, &n, err, errlen)) != AIR_OK)
        return st;
    if (f == LF_MAXIN) {
        air__cap_set_max(l->cap, (uint32_t)n);
        return AIR_OK;
    }
    struct air__slimit *lim = f == LF_RPM ? l->rpm_lim : l->tpm_lim;
    _Atomic uint32_t *val = f == LF_RPM ? l->rpm : l->tpm;
    (void)air__slim_set_rate(lim, (double)n, now);
    atomic_store_explicit(val, (uint32_t)n, memory_order_release);
    return AIR_OK;
}

static air_status_t
want_unit(const cJSON *v, double *out, const char *path, char *err, size_t errlen)
{
    if (!cJSON_IsNumber(v)) {
        set_err(err, errlen, "%s: expected a number", path);
        return AIR_E_INVAL;
    }
    if (!(v->valuedouble >= 0 && v->valuedouble <= 1)) {
        set_err(err, errlen, "%s: must be between 0 and 1", path);
        return AIR_E_RANGE;
    }
    *out = v->valuedouble;
    return AIR_OK;
}

/* Apply one path to a tunables copy (and, for operator resets, to live
 * state). */
static air_status_t
apply(struct air__world *w, struct air__tun *t, const char *path, const cJSON *v, char *err,
      size_t errlen)
{
    const char *field = NULL;
    if (strncmp(path, "routes.", 7) == 0) {
        long ri = route_path(w, path + 7, &field);
        if (ri < 0) {
            set_err(err, errlen, "%s: no such route", path);
            return AIR_E_NONAME;
        }
        struct air__rtun *rt = &t->route[ri];
        if (strcmp(field, "strategy") == 0) {
            if (!cJSON_IsString(v)) {
                set_err(err, errlen, "%s: expected a string", path);
                return AIR_E_INVAL;
            }
            if (air__strategy_parse(v->valuestring, &rt->strategy) != 0) {
                set_err(err, errlen,
                        "%s: unknown strategy (priority, weighted, round-robin, least-busy, "
                        "lowest-latency, lowest-cost, score)",
                        path);
                return AIR_E_RANGE;
            }
            return AIR_OK;
        }
        if (strcmp(field, "hedge") == 0) {
            if (!cJSON_IsBool(v)) {
                set_err(err, errlen, "%s: expected true or false", path);
                return AIR_E_INVAL;
            }
            rt->hedge = cJSON_IsTrue(v);
            return AIR_OK;
        }
        if (strcmp(field, "weight.latency") == 0)
            return want_unit(v, &rt->w.latency, path, err, errlen);
        if (strcmp(field, "weight.cost") == 0)
            return want_unit(v, &rt->w.cost, path, err, errlen);
        if (strcmp(field, "weight.health") == 0)
            return want_unit(v, &rt->w.health, path, err, errlen);
        if (strcmp(field, "weight.load") == 0)
            return want_unit(v, &rt->w.load, path, err, errlen);
        if (lim_field(field) == LF_BUDGET) {
            struct lims l = route_lims(&w->routes[ri]);
            return lims_set(w, &l, LF_BUDGET, path, v, err, errlen);
        }
        set_err(err, errlen, "%s: unknown route setting", path);
        return AIR_E_NONAME;
    }
    if (strncmp(path, "deployments.", 12) == 0) {
        long di = dep_path(w, path + 12, &field);
        if (di < 0) {
            set_err(err, errlen, "%s: no such deployment", path);
            return AIR_E_NONAME;
        }
        if (strcmp(field, "enabled") == 0) {
            if (!cJSON_IsBool(v)) {
                set_err(err, errlen, "%s: expected true or false", path);
                return AIR_E_INVAL;
            }
            t->dep[di].enabled = cJSON_IsTrue(v);
            return AIR_OK;
        }
        if (strcmp(field, "weight") == 0) {
            if (!cJSON_IsNumber(v)) {
                set_err(err, errlen, "%s: expected a number", path);
                return AIR_E_INVAL;
            }
            if (!(v->valuedouble >= 0 && v->valuedouble <= 1000000)) {
                set_err(err, errlen, "%s: must be between 0 and 1000000", path);
                return AIR_E_RANGE;
            }
            t->dep[di].weight = v->valuedouble;
            return AIR_OK;
        }
        if (strcmp(field, "reset") == 0) {
            if (!cJSON_IsTrue(v)) {
                set_err(err, errlen, "%s: write true to reset the health state", path);
                return AIR_E_INVAL;
            }
            struct air__dep *d = &w->deps[di];
            pthread_mutex_lock(&d->mu);
            air__health_reset(&d->health);
            atomic_store_explicit(&d->hstate, (int)d->health.state, memory_order_relaxed);
            atomic_store_explicit(&d->hdirty, 0, memory_order_release);
            pthread_mutex_unlock(&d->mu);
            /* The provider's API keys set aside after 401/403 come back too. */
            if (w->prov[d->prov].kstates != NULL)
                air__keypool_reset(&w->prov[d->prov].keys);
            return AIR_OK;
        }
        enum lim_field lf = lim_field(field);
        struct lims l = dep_lims(&w->deps[di]);
        if (lf != LF_NONE && lims_have(&l, lf))
            return lims_set(w, &l, lf, path, v, err, errlen);
        set_err(err, errlen, "%s: unknown deployment setting", path);
        return AIR_E_NONAME;
    }
    if (strncmp(path, "clients.", 8) == 0) {
        long ci = client_path(w, path + 8, &field);
        if (ci < 0) {
            set_err(err, errlen, "%s: no such client", path);
            return AIR_E_NONAME;
        }
        enum lim_field lf = lim_field(field);
        struct lims l = client_lims(&w->clients[ci]);
        if (lf != LF_NONE && lims_have(&l, lf))
            return lims_set(w, &l, lf, path, v, err, errlen);
        set_err(err, errlen, "%s: unknown client setting", path);
        return AIR_E_NONAME;
    }
    air_status_t st = air__ctl_set_json(&t->g, path, v, err, errlen);
    if (st == AIR_OK && strcmp(path, "policy.strategy") == 0) {
        /* The global strategy applies to routes that did not set one. */
        for (size_t r = 0; r < w->nroutes; r++)
            if (w->routes[r].cfg->strategy == NULL)
                t->route[r].strategy = t->g.strategy;
    }
    return st;
}

air_status_t
air_ctl_set(air_t *r, const char *path, const char *json_value, char *err, size_t errlen)
{
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (r == NULL || path == NULL || json_value == NULL) {
        set_err(err, errlen, "air_ctl_set: NULL argument%s", "");
        return AIR_E_INVAL;
    }
    cJSON *v = cJSON_Parse(json_value);
    if (v == NULL) {
        set_err(err, errlen, "%s: value is not valid JSON", path);
        return AIR_E_INVAL;
    }
    pthread_mutex_lock(&r->ctl_mu);
    struct air__world *w = atomic_load_explicit(&r->world, memory_order_acquire);
    struct air__tun *old = atomic_load_explicit(&w->tun, memory_order_acquire);
    struct air__tun *t = air__tun_dup(w, old);
    air_status_t st = AIR_E_NOMEM;
    if (t != NULL)
        st = apply(w, t, path, v, err, errlen);
    /* The rules between fields (hedge.max_ms >= hedge.min_ms, ...) hold for
     * the whole snapshot before it is published. */
    if (st == AIR_OK)
        st = air__params_validate(&t->g, err, errlen);
    if (st == AIR_OK) {
        atomic_store_explicit(&w->tun, t, memory_order_release);
        /* No worker can still read `old` after the grace period. */
        air__epoch_synchronize(r->ctl_rec);
        air__tun_free(old);
    } else {
        air__tun_free(t);
    }
    pthread_mutex_unlock(&r->ctl_mu);
    cJSON_Delete(v);
    return st;
}

static air_status_t
set_item(air_t *r, const char *path, cJSON *v)
{
    if (v == NULL)
        return AIR_E_NOMEM;
    char *s = cJSON_PrintUnformatted(v);
    cJSON_Delete(v);
    if (s == NULL)
        return AIR_E_NOMEM;
    air_status_t st = air_ctl_set(r, path, s, NULL, 0);
    cJSON_free(s);
    return st;
}

air_status_t
air_ctl_set_f64(air_t *r, const char *path, double v)
{
    return set_item(r, path, cJSON_CreateNumber(v));
}

air_status_t
air_ctl_set_i64(air_t *r, const char *path, int64_t v)
{
    return set_item(r, path, cJSON_CreateNumber((double)v));
}

air_status_t
air_ctl_set_bool(air_t *r, const char *path, int v)
{
    return set_item(r, path, cJSON_CreateBool(v));
}

air_status_t
air_ctl_set_str(air_t *r, const char *path, const char *v)
{
    if (v == NULL)
        return AIR_E_INVAL;
    return set_item(r, path, cJSON_CreateString(v));
}

/* Append one route/deployment entry for air_ctl_list. */
static void
list_entry(air_buf_t *b, int *first, const char *prefix, const char *id, const char *field,
           const char *type, const char *min, const char *max, const char *mode,
           const char *value)
{
    air__buf_puts(b, *first ? "" : ",");
    *first = 0;
    air__buf_puts(b, "{\"path\":");
    air_buf_t p = AIR_BUF_INIT;
    air__buf_printf(&p, "%s%s.%s", prefix, id, field);
    air__buf_json_str(b, p.data ? p.data : "", p.len);
    air__buf_free(&p);
    air__buf_printf(b, ",\"type\":\"%s\",\"min\":%s,\"max\":%s,\"mode\":\"%s\",\"value\":%s}", type,
                    min, max, mode, value);
}

static void
route_value(const struct air__rtun *rt, const char *field, air_buf_t *b)
{
    if (strcmp(field, "strategy") == 0)
        air__buf_printf(b, "\"%s\"", air__strategy_name(rt->strategy));
    else if (strcmp(field, "hedge") == 0)
        air__buf_puts(b, rt->hedge < 0 ? "null" : (rt->hedge ? "true" : "false"));
    else if (strcmp(field, "weight.latency") == 0)
        air__buf_printf(b, "%g", rt->w.latency);
    else if (strcmp(field, "weight.cost") == 0)
        air__buf_printf(b, "%g", rt->w.cost);
    else if (strcmp(field, "weight.health") == 0)
        air__buf_printf(b, "%g", rt->w.health);
    else if (strcmp(field, "weight.load") == 0)
        air__buf_printf(b, "%g", rt->w.load);
}

static const char *const route_fields[] = {"strategy", "hedge", "weight.latency", "weight.cost",
                                           "weight.health", "weight.load", NULL};

/* Append the limit entries of one deployment, route or client. */
static void
list_lims(air_buf_t *b, int *first, const struct air__world *w, const char *prefix, const char *id,
          const struct lims *l)
{
    static const struct {
        enum lim_field f;
        const char *name, *type, *max;
    } rows[] = {
        {LF_RPM, "rpm", "i64", "1000000000"},
        {LF_TPM, "tpm", "i64", "4000000000"},
        {LF_MAXIN, "max_inflight", "i64", "1000000"},
        {LF_BUDGET, "budget_usd", "f64", "1e+12"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        if (!lims_have(l, rows[i].f))
            continue;
        air_buf_t v = AIR_BUF_INIT;
        lims_value(l, rows[i].f, &v);
        list_entry(b, first, prefix, id, rows[i].name, rows[i].type, "0", rows[i].max,
                   lims_writable(w, rows[i].f) ? "rw" : "r-", v.data ? v.data : "null");
        air__buf_free(&v);
    }
}

char *
air_ctl_list(air_t *r)
{
    if (r == NULL)
        return NULL;
    air_buf_t b = AIR_BUF_INIT;
    pthread_mutex_lock(&r->ctl_mu);
    struct air__world *w = atomic_load_explicit(&r->world, memory_order_acquire);
    const struct air__tun *t = atomic_load_explicit(&w->tun, memory_order_acquire);
    air__buf_putc(&b, '[');
    size_t before = b.len;
    air__ctl_list_json(&t->g, &b);
    int first = b.len == before;
    for (size_t i = 0; i < w->nroutes; i++) {
        for (int k = 0; route_fields[k] != NULL; k++) {
            air_buf_t v = AIR_BUF_INIT;
            route_value(&t->route[i], route_fields[k], &v);
            int is_str = k == 0, is_bool = k == 1;
            list_entry(&b, &first, "routes.", w->routes[i].cfg->model, route_fields[k],
                       is_str ? "str" : (is_bool ? "bool" : "f64"), is_str || is_bool ? "null" : "0",
                       is_str || is_bool ? "null" : "1", "rw", v.data ? v.data : "null");
            air__buf_free(&v);
        }
        struct lims l = route_lims(&w->routes[i]);
        list_lims(&b, &first, w, "routes.", w->routes[i].cfg->model, &l);
    }
    for (size_t i = 0; i < w->ndeps; i++) {
        char val[64];
        list_entry(&b, &first, "deployments.", w->deps[i].id, "enabled", "bool", "null", "null",
                   "rw", t->dep[i].enabled ? "true" : "false");
        snprintf(val, sizeof val, "%g", t->dep[i].weight);
        list_entry(&b, &first, "deployments.", w->deps[i].id, "weight", "f64", "0", "1000000",
                   "rw", val);
        struct lims l = dep_lims(&w->deps[i]);
        list_lims(&b, &first, w, "deployments.", w->deps[i].id, &l);
        list_entry(&b, &first, "deployments.", w->deps[i].id, "reset", "bool", "null", "null",
                   "-w", "null");
    }
    for (size_t i = 0; i < w->nclients; i++) {
        struct lims l = client_lims(&w->clients[i]);
        list_lims(&b, &first, w, "clients.", w->clients[i].name, &l);
    }
    air__buf_putc(&b, ']');
    pthread_mutex_unlock(&r->ctl_mu);
    return to_libc(&b);
}

air_status_t
air_ctl_get(air_t *r, const char *path, char **out)
{
    if (r == NULL || path == NULL || out == NULL)
        return AIR_E_INVAL;
    *out = NULL;
    air_status_t st = AIR_OK;
    air_buf_t b = AIR_BUF_INIT;
    pthread_mutex_lock(&r->ctl_mu);
    struct air__world *w = atomic_load_explicit(&r->world, memory_order_acquire);
    const struct air__tun *t = atomic_load_explicit(&w->tun, memory_order_acquire);
    const char *field = NULL;
    if (strncmp(path, "routes.", 7) == 0) {
        long ri = route_path(w, path + 7, &field);
        size_t k = 0;
        while (ri >= 0 && route_fields[k] != NULL && strcmp(route_fields[k], field) != 0)
            k++;
        if (ri >= 0 && route_fields[k] == NULL && lim_field(field) == LF_BUDGET) {
            struct lims l = route_lims(&w->routes[ri]);
            lims_value(&l, LF_BUDGET, &b);
        } else if (ri < 0 || route_fields[k] == NULL) {
            st = AIR_E_NONAME;
        } else {
            route_value(&t->route[ri], field, &b);
        }
    } else if (strncmp(path, "deployments.", 12) == 0) {
        long di = dep_path(w, path + 12, &field);
        struct lims l = {0};
        if (di >= 0)
            l = dep_lims(&w->deps[di]);
        if (di < 0)
            st = AIR_E_NONAME;
        else if (strcmp(field, "enabled") == 0)
            air__buf_puts(&b, t->dep[di].enabled ? "true" : "false");
        else if (strcmp(field, "weight") == 0)
            air__buf_printf(&b, "%g", t->dep[di].weight);
        else if (strcmp(field, "reset") == 0)
            st = AIR_E_READONLY; /* write-only */
        else if (lim_field(field) != LF_NONE && lims_have(&l, lim_field(field)))
            lims_value(&l, lim_field(field), &b);
        else
            st = AIR_E_NONAME;
    } else if (strncmp(path, "clients.", 8) == 0) {
        long ci = client_path(w, path + 8, &field);
        if (ci < 0) {
            st = AIR_E_NONAME;
        } else {
            struct lims l = client_lims(&w->clients[ci]);
            if (lim_field(field) != LF_NONE && lims_have(&l, lim_field(field)))
                lims_value(&l, lim_field(field), &b);
            else
                st = AIR_E_NONAME;
        }
    } else {
        char *v = air__ctl_get_json(&t->g, path);
        if (v == NULL)
            st = AIR_E_NONAME;
        else
            air__buf_puts(&b, v);
        air__free(v);
    }
    pthread_mutex_unlock(&r->ctl_mu);
    if (st != AIR_OK) {
        air__buf_free(&b);
        return st;
    }
    *out = to_libc(&b);
    return *out != NULL ? AIR_OK : AIR_E_NOMEM;
}

/* ------------------------------------------------------------- explain */

char *
air_explain(air_t *r, const char *body, size_t len, char *err, size_t errlen)
{
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (r == NULL || body == NULL) {
        set_err(err, errlen, "air_explain: NULL argument%s", "");
        return NULL;
    }
    /* Same validation as a real request. */
    air_req_t *q = NULL;
    if (air_req_new(r, body, len, &q, err, errlen) != AIR_OK)
        return NULL;
    struct air__world *w = air__router_world(r);
    air_buf_t b = AIR_BUF_INIT;
    pthread_mutex_lock(&r->ctl_mu);
    const struct air__tun *t = atomic_load_explicit(&w->tun, memory_order_acquire);
    /* The view is replaced by workers under the epoch; the control record
     * protects our read. */
    air__epoch_begin(r->ctl_rec);
    const struct air__view *v = atomic_load_explicit(&w->view, memory_order_acquire);
    air__route_explain(w, t, v, q->body, q->raw_len, NULL, air__wall_ms(), &b);
    air__epoch_end(r->ctl_rec);
    pthread_mutex_unlock(&r->ctl_mu);
    air__world_unref(w);
    air_req_free(q);
    char *out = to_libc(&b);
    if (out == NULL)
        set_err(err, errlen, "out of memory%s", "");
    return out;
}

/* -------------------------------------------------------------- reload */

air_status_t
air_reload(air_t *r, const char *config_json, char *err, size_t errlen)
{
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (r == NULL || config_json == NULL) {
        set_err(err, errlen, "air_reload: NULL argument%s", "");
        return AIR_E_INVAL;
    }
    struct air__config *cfg = NULL;
    air_status_t st = air__config_parse(config_json, strlen(config_json), &cfg, err, errlen);
    if (st != AIR_OK)
        return st;
    if (cfg->workers != r->nworkers || cfg->queue_capacity != r->queue_capacity ||
        cfg->max_inflight != r->max_inflight) {
        set_err(err, errlen,
                "%sworkers, queue_capacity and max_inflight cannot change without a restart",
                "");
        air__config_free(cfg);
        return AIR_E_READONLY;
    }
    struct air__world *nw = NULL;
    st = air__world_new(cfg, r->nworkers, air__wall_ms(), &nw, err, errlen);
    if (st != AIR_OK)
        return st;
    pthread_mutex_lock(&r->ctl_mu);
    /* Rate limits and budgets of what keeps its name carry over (local
     * backend; docs/POLICY.md "Reload"). Under ctl_mu, so no run-time change
     * to the old limits races the copy. */
    air__world_carry(nw, atomic_load_explicit(&r->world, memory_order_acquire), air__wall_ms());
    struct air__world *old = atomic_exchange_explicit(&r->world, nw, memory_order_acq_rel);
    for (uint32_t i = 0; i < r->nworkers; i++)
        air__worker_wake(&r->workers[i]);
    /* A worker that loaded `old` took its reference inside an epoch
     * section; after the grace period nobody can be about to take one. */
    air__epoch_synchronize(r->ctl_rec);
    pthread_mutex_unlock(&r->ctl_mu);
    air__world_unref(old);
    return AIR_OK;
}

/* ------------------------------------------------------- effective config */

static void
kv_str(air_buf_t *b, const char *k, const char *v, int comma)
{
    air__buf_printf(b, "%s\"%s\":", comma ? "," : "", k);
    if (v == NULL)
        air__buf_puts(b, "null");
    else
        air__buf_json_str(b, v, strlen(v));
}

char *
air_config_json(air_t *r)
{
    if (r == NULL)
        return NULL;
    struct air__world *w = air__router_world(r);
    const struct air__config *c = w->cfg;
    /* The retry budget window is a tunable only: its configured value. */
    int64_t window_ms = 10000;
    const cJSON *rw = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(c->tuning, "retry"), "budget_window_ms");
    if (cJSON_IsNumber(rw))
        window_ms = (int64_t)rw->valuedouble;
    air_buf_t b = AIR_BUF_INIT;
    air__buf_printf(&b,
                    "{\"workers\":%u,\"queue_capacity\":%u,\"max_inflight\":%u,"
                    "\"request_timeout_ms\":%u,\"max_event_bytes\":%u,\"retry\":{"
                    "\"max_attempts\":%u,\"backoff_base_ms\":%u,\"backoff_cap_ms\":%u,"
                    "\"max_retry_after_ms\":%u,\"budget_ratio\":%g,\"budget_min_per_s\":%u,"
                    "\"budget_window_ms\":%lld},\"providers\":[",
                    c->workers, c->queue_capacity, c->max_inflight, c->request_timeout_ms,
                    c->max_event_bytes, c->max_attempts, c->backoff_base_ms, c->backoff_cap_ms,
                    c->max_retry_after_ms, c->retry_budget_ratio, c->retry_budget_min_per_s,
                    (long long)window_ms);
    for (size_t i = 0; i < c->nproviders; i++) {
        const struct air__provider_cfg *p = &c->providers[i];
        air__buf_puts(&b, i ? ",{" : "{");
        kv_str(&b, "name", p->name, 0);
        kv_str(&b, "kind", p->kind, 1);
        kv_str(&b, "base_url", p->base_url, 1);
        kv_str(&b, "api_key_env", p->api_key_env, 1);
        /* The key itself is never shown, only whether one is set. */
        air__buf_printf(&b,
                        ",\"api_key\":%s,\"timeout_ms\":%u,\"connect_timeout_ms\":%u,"
                        "\"first_byte_timeout_ms\":%u,\"idle_timeout_ms\":%u,"
                        "\"max_inflight\":%u,\"rpm\":%u,\"tpm\":%u,\"models\":[",
                        p->api_key ? "\"[redacted]\"" : "null", p->timeout_ms,
                        p->connect_timeout_ms, p->first_byte_timeout_ms, p->idle_timeout_ms,
                        p->max_inflight, p->rpm, p->tpm);
        for (size_t m = 0; m < p->nmodels; m++) {
            const struct air__model_cfg *mc = &p->models[m];
            air__buf_puts(&b, m ? ",{" : "{");
            kv_str(&b, "name", mc->name, 0);
            air__buf_printf(&b,
                            ",\"input_price_per_mtok\":%g,\"output_price_per_mtok\":%g,"
                            "\"cached_input_price_per_mtok\":%g,\"context_tokens\":%u,"
                            "\"rpm\":%u,\"tpm\":%u,\"max_inflight\":%u}",
                            mc->input_price_per_mtok, mc->output_price_per_mtok,
                            mc->cached_input_price_per_mtok, mc->context_tokens, mc->rpm, mc->tpm,
                            mc->max_inflight);
        }
        air__buf_puts(&b, "]}");
    }
    air__buf_puts(&b, "],\"routes\":[");
    for (size_t i = 0; i < c->nroutes; i++) {
        const struct air__route_cfg *rc = &c->routes[i];
        air__buf_puts(&b, i ? ",{" : "{");
        kv_str(&b, "model", rc->model, 0);
        kv_str(&b, "strategy", rc->strategy, 1);
        air__buf_printf(&b, ",\"max_attempts\":%u,\"budget_usd\":%g", rc->max_attempts,
                        rc->budget_usd);
        kv_str(&b, "budget_window", rc->budget_window, 1);
        air__buf_puts(&b, ",\"targets\":[");
        for (size_t k = 0; k < rc->ntargets; k++) {
            air__buf_puts(&b, k ? ",{" : "{");
            kv_str(&b, "provider", rc->targets[k].provider, 0);
            kv_str(&b, "model", rc->targets[k].model, 1);
            air__buf_printf(&b, ",\"weight\":%g}", rc->targets[k].weight);
        }
        air__buf_puts(&b, "]}");
    }
    air__buf_puts(&b, "],\"clients\":[");
    for (size_t i = 0; i < c->nclients; i++) {
        const struct air__client_cfg *cc = &c->clients[i];
        air__buf_puts(&b, i ? ",{" : "{");
        kv_str(&b, "name", cc->name, 0);
        air__buf_printf(&b, ",\"rpm\":%u,\"tpm\":%u,\"max_inflight\":%u,\"budget_usd\":%g",
                        cc->rpm, cc->tpm, cc->max_inflight, cc->budget_usd);
        kv_str(&b, "budget_window", cc->budget_window, 1);
        air__buf_puts(&b, "}");
    }
    /* The password itself is never shown, only the variable naming it. */
    air__buf_puts(&b, "],\"state\":{");
    kv_str(&b, "backend", c->state_backend, 0);
    kv_str(&b, "url", c->state_url, 1);
    kv_str(&b, "password_env", c->state_password_env, 1);
    kv_str(&b, "prefix", c->state_prefix, 1);
    air__buf_printf(&b,
                    ",\"instances\":%u,\"timeout_ms\":%u,\"backoff_ms\":%u,"
                    "\"backoff_max_ms\":%u,\"fail\":{",
                    c->state_instances, c->state_timeout_ms, c->state_backoff_ms,
                    c->state_backoff_max_ms);
    kv_str(&b, "rate_limits", c->state_fail_rate, 0);
    kv_str(&b, "budgets", c->state_fail_budget, 1);
    kv_str(&b, "deployment_quotas", c->state_fail_quota, 1);
    air__buf_printf(&b,
                    "},\"lease\":{\"sync_ms\":%u,\"horizon_ms\":%u,\"max_fraction\":%g,"
                    "\"min_fraction\":%g}}",
                    c->state_sync_ms, c->state_horizon_ms, c->state_max_fraction,
                    c->state_min_fraction);
    air__buf_puts(&b, ",\"tunables\":");
    air__world_unref(w);
    char *list = air_ctl_list(r);
    air__buf_puts(&b, list ? list : "[]");
    free(list); /* air-alloc-ok: from air_ctl_list (libc ownership) */
    air__buf_puts(&b, "}");
    return to_libc(&b);
}

/* ----------------------------------------------------------------- stats */

/* ",\"requests\":N,\"cost_usd\":X": entry i of per-worker totals rows
 * [nworkers][n], summed (each row is written by its worker only). */
static void
totals_json(air_buf_t *b, const struct air__wtot *rows, size_t n, size_t i, uint32_t nworkers)
{
    uint64_t req = 0;
    double cost = 0;
    for (uint32_t k = 0; k < nworkers; k++) {
        const struct air__wtot *t = &rows[(size_t)k * n + i];
        req += atomic_load_explicit(&t->requests, memory_order_relaxed);
        cost += atomic_load_explicit(&t->cost_usd, memory_order_relaxed);
    }
    air__buf_printf(b, ",\"requests\":%llu,\"cost_usd\":%.6f", (unsigned long long)req, cost);
}

/* Sum the workers' per-tag tables into one object keyed by tag. */
static void
tags_json(air_t *r, air_buf_t *b)
{
    struct tagsum {
        const char *name;
        uint64_t requests, failed, prompt, completion;
        double cost;
    };
    size_t cap = (size_t)r->nworkers * (AIR__TAG_SLOTS + 1), n = 0;
    struct tagsum *sum = air__calloc(cap, sizeof *sum);
    if (sum == NULL) {
        b->oom = 1;
        return;
    }
    for (uint32_t wi = 0; wi < r->nworkers; wi++) {
        const struct air__tagtot *tt = r->workers[wi].tagtot;
        for (size_t k = 0; tt != NULL && k <= AIR__TAG_SLOTS; k++) {
            const struct air__tagtot *t = &tt[k];
            uint64_t req = atomic_load_explicit(&t->requests, memory_order_relaxed);
            if (k < AIR__TAG_SLOTS && !atomic_load_explicit(&t->used, memory_order_acquire))
                continue;
            if (req == 0)
                continue;
            size_t j = 0;
            while (j < n && strcmp(sum[j].name, t->name) != 0)
                j++;
            if (j == n)
                sum[n++].name = t->name;
            sum[j].requests += req;
            sum[j].failed += atomic_load_explicit(&t->failed, memory_order_relaxed);
            sum[j].prompt += atomic_load_explicit(&t->prompt_tokens, memory_order_relaxed);
            sum[j].completion += atomic_load_explicit(&t->completion_tokens, memory_order_relaxed);
            sum[j].cost += atomic_load_explicit(&t->cost_usd, memory_order_relaxed);
        }
    }
    for (size_t j = 0; j < n; j++) {
        if (j > 0)
            air__buf_putc(b, ',');
        air__buf_json_str(b, sum[j].name, strlen(sum[j].name));
        air__buf_printf(b,
                        ":{\"requests\":%llu,\"failed\":%llu,\"prompt_tokens\":%llu,"
                        "\"completion_tokens\":%llu,\"cost_usd\":%.9g}",
                        (unsigned long long)sum[j].requests, (unsigned long long)sum[j].failed,
                        (unsigned long long)sum[j].prompt, (unsigned long long)sum[j].completion,
                        sum[j].cost);
    }
    air__free(sum);
}

char *
air_stats_json(air_t *r)
{
    if (r == NULL)
        return NULL;
    uint64_t started = 0, completed = 0, ok = 0, failed = 0, attempts = 0, retries = 0,
             hedges = 0;
    uint64_t by_class[AIR__ERR_LAST] = {0};
    for (uint32_t i = 0; i < r->nworkers; i++) {
        struct air__wstats *s = &r->workers[i].stats;
        started += atomic_load_explicit(&s->started, memory_order_relaxed);
        completed += atomic_load_explicit(&s->completed, memory_order_relaxed);
        ok += atomic_load_explicit(&s->ok, memory_order_relaxed);
        failed += atomic_load_explicit(&s->failed, memory_order_relaxed);
        attempts += atomic_load_explicit(&s->attempts, memory_order_relaxed);
        retries += atomic_load_explicit(&s->retries, memory_order_relaxed);
        hedges += atomic_load_explicit(&s->hedges, memory_order_relaxed);
        for (int c = 0; c < AIR__ERR_LAST; c++)
            by_class[c] += atomic_load_explicit(&s->by_class[c], memory_order_relaxed);
    }
    air_buf_t b = AIR_BUF_INIT;
    air__buf_printf(&b,
                    "{\"workers\":%u,\"queued\":%u,\"in_flight\":%llu,\"started\":%llu,"
                    "\"completed\":%llu,"
                    "\"ok\":%llu,\"failed\":%llu,\"attempts\":%llu,\"retries\":%llu,"
                    "\"hedges\":%llu,\"errors\":{",
                    r->nworkers, ck_ring_size(&r->ingress),
                    /* the sums are read one worker at a time: clamp */
                    (unsigned long long)(started > completed ? started - completed : 0),
                    (unsigned long long)started, (unsigned long long)completed,
                    (unsigned long long)ok,
                    (unsigned long long)failed, (unsigned long long)attempts,
                    (unsigned long long)retries, (unsigned long long)hedges);
    for (int c = 1; c < AIR__ERR_LAST; c++)
        air__buf_printf(&b, "%s\"%s\":%llu", c > 1 ? "," : "", air_errclass_name(c),
                        (unsigned long long)by_class[c]);
    air__buf_puts(&b, "},\"deployments\":[");
    struct air__world *w = air__router_world(r);
    pthread_mutex_lock(&r->ctl_mu);
    air__epoch_begin(r->ctl_rec);
    const struct air__view *v = atomic_load_explicit(&w->view, memory_order_acquire);
    for (size_t i = 0; i < w->ndeps; i++) {
        struct air__dep *d = &w->deps[i];
        const struct air__dstat *st = v != NULL && i < v->ndeps ? &v->d[i] : NULL;
        pthread_mutex_lock(&d->mu);
        struct air__health h = d->health;
        pthread_mutex_unlock(&d->mu);
        air__buf_puts(&b, i ? ",{" : "{");
        kv_str(&b, "deployment", d->id, 0);
        kv_str(&b, "provider", w->prov[d->prov].cfg->name, 1);
        kv_str(&b, "model", d->model, 1);
        air__buf_printf(&b,
                        ",\"health\":\"%s\",\"consecutive_errors\":%u,\"ejections\":%u,"
                        "\"health_until_ms\":%lld",
                        hstate_name(h.state), h.consec_errors, h.ejections,
                        (long long)(h.state == AIR_H_COOLDOWN ? h.cooldown_until_ms : h.until_ms));
        if (st != NULL)
            air__buf_printf(
                &b,
                ",\"inflight\":%u,\"requests\":%llu,\"failures\":%llu,\"success_ewma\":%.4f,"
                "\"latency_ewma_us\":%.0f,\"latency_p50_us\":%llu,\"latency_p95_us\":%llu,"
                "\"latency_p99_us\":%llu,\"ttft_ewma_us\":%.0f,\"ttft_p50_us\":%llu,"
                "\"ttft_p95_us\":%llu,\"ttft_p99_us\":%llu,\"tpot_ewma_ns\":%.0f,"
                "\"tokens_in\":%llu,\"tokens_out\":%llu,\"cost_usd\":%.6f,\"cancelled\":%llu",
                st->inflight, (unsigned long long)st->requests, (unsigned long long)st->failures,
                st->succ_ewma, st->lat_ewma_us, (unsigned long long)st->lat_p50_us,
                (unsigned long long)st->lat_p95_us, (unsigned long long)st->lat_p99_us,
                st->ttft_ewma_us, (unsigned long long)st->ttft_p50_us,
                (unsigned long long)st->ttft_p95_us, (unsigned long long)st->ttft_p99_us,
                st->tpot_ewma_ns, (unsigned long long)st->tokens_in,
                (unsigned long long)st->tokens_out, st->cost_usd,
                (unsigned long long)st->cancelled);
        air__buf_puts(&b, "}");
    }
    air__epoch_end(r->ctl_rec);
    pthread_mutex_unlock(&r->ctl_mu);
    air__buf_puts(&b, "],\"routes\":[");
    for (size_t i = 0; i < w->nroutes; i++) {
        struct air__route *rt = &w->routes[i];
        air__buf_puts(&b, i ? ",{" : "{");
        kv_str(&b, "model", rt->cfg->model, 0);
        totals_json(&b, w->wroute, w->nroutes, i, w->nworkers);
        if (atomic_load_explicit(&rt->has_budget, memory_order_acquire))
            air__buf_printf(&b, ",\"budget_usd\":%g,\"spent_usd\":%.6f",
                            air__slim_limit(&rt->budget), air__slim_spent(&rt->budget));
        air__buf_puts(&b, "}");
    }
    air__buf_puts(&b, "],\"clients\":[");
    for (size_t i = 0; i < w->nclients; i++) {
        struct air__client *cl = &w->clients[i];
        air__buf_puts(&b, i ? ",{" : "{");
        kv_str(&b, "name", cl->name, 0);
        air__buf_printf(&b, ",\"inflight\":%u", air__cap_count(&cl->cap));
        totals_json(&b, w->wclient, w->nclients, i, w->nworkers);
        if (atomic_load_explicit(&cl->has_budget, memory_order_acquire))
            air__buf_printf(&b, ",\"budget_usd\":%g,\"spent_usd\":%.6f",
                            air__slim_limit(&cl->budget), air__slim_spent(&cl->budget));
        air__buf_puts(&b, "}");
    }
    air__buf_puts(&b, "],\"tags\":{");
    tags_json(r, &b);
    /* Where limits keep their counts: backend, health, leases. */
    air__buf_puts(&b, "},\"state\":{");
    air__world_state_json(w, &b);
    air__buf_puts(&b, "}}");
    air__world_unref(w);
    return to_libc(&b);
}

/* ---------------------------------------------------------------- models */

char *
air_models_json(air_t *r)
{
    if (r == NULL)
        return NULL;
    struct air__world *w = air__router_world(r);
    const struct air__config *c = w->cfg;
    air_buf_t b = AIR_BUF_INIT;
    air__buf_puts(&b, "{\"object\":\"list\",\"data\":[");
    int first = 1;
    for (size_t i = 0; i < c->nroutes; i++) {
        air__buf_puts(&b, first ? "{" : ",{");
        first = 0;
        kv_str(&b, "id", c->routes[i].model, 0);
        air__buf_puts(&b, ",\"object\":\"model\",\"created\":0,\"owned_by\":\"airouter\"}");
    }
    for (size_t p = 0; p < c->nproviders; p++)
        for (size_t m = 0; m < c->providers[p].nmodels; m++) {
            const char *name = c->providers[p].models[m].name;
            if (air__config_route(c, name) != NULL)
                continue;
            /* A model two providers list appears once. */
            int dup = 0;
            for (size_t q = 0; q < p && !dup; q++)
                for (size_t k = 0; k < c->providers[q].nmodels; k++)
                    if (strcmp(c->providers[q].models[k].name, name) == 0)
                        dup = 1;
            if (dup)
                continue;
            air__buf_puts(&b, first ? "{" : ",{");
            first = 0;
            kv_str(&b, "id", name, 0);
            air__buf_puts(&b, ",\"object\":\"model\",\"created\":0");
            kv_str(&b, "owned_by", c->providers[p].name, 1);
            air__buf_puts(&b, "}");
        }
    air__buf_puts(&b, "]}");
    air__world_unref(w);
    return to_libc(&b);
}
