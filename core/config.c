/*
 * config.c - the router configuration, parsed from JSON (docs/CONFIG.md).
 *
 * DESIGN: table-driven, in the manner of nginx's ngx_command_t and redis's
 * standardConfig. Each object kind (top level, retry, provider, model, route,
 * target) has a static table of keys giving type, bounds, default and the
 * offset of the field it fills. One walker applies the defaults, visits the
 * members of a JSON object in document order, rejects unknown and repeated
 * keys, checks types and bounds, and then checks for missing required keys.
 * It keeps the JSON path of the member it is on, so every message reads
 * "<json path>: <reason>" ("providers[1].models[0].name: expected a string").
 * Checks that span objects (unique names, route targets naming a configured
 * provider) run after the walk of the array or of the whole document.
 *
 * Thread safety: no global state. The syntax error position comes from
 * cJSON_ParseWithLengthOpts's return_parse_end, never from
 * cJSON_GetErrorPtr, which is process-global.
 *
 * Secrets: api_key_env names an environment variable; its value goes into
 * provider->api_key and into nothing else. Messages name the variable, never
 * a value, and a string that does not look like a variable name (likely a
 * pasted key) is rejected without being echoed. The key is zeroed before its
 * memory is freed.
 */
#include "config.h"
#include "alloc.h"
#include "budget.h"
#include "builtin.h"
#include "state_redis.h"
#include "strategy.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ context */

struct pctx {
    char *err;
    size_t errlen;
    char path[256]; /* JSON path of the member being parsed, e.g. "providers[0].name" */
    size_t plen;
};

static air_status_t fail(struct pctx *x, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Write "<path>: <reason>" to the caller's buffer; AIR_E_CONFIG. */
static air_status_t
fail(struct pctx *x, const char *fmt, ...)
{
    if (x->err != NULL && x->errlen > 0) {
        char msg[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        snprintf(x->err, x->errlen, "%s: %s", x->plen ? x->path : "(top level)", msg);
    }
    return AIR_E_CONFIG;
}

static air_status_t
nomem(struct pctx *x)
{
    if (x->err != NULL && x->errlen > 0)
        snprintf(x->err, x->errlen, "out of memory");
    return AIR_E_NOMEM;
}

/* Append ".key" (or "key" at the top) to the path; returns the old length
 * for path_pop. Control bytes are shown as '?'; an overlong path is cut. */
static size_t
path_key(struct pctx *x, const char *k)
{
    size_t mark = x->plen;
    size_t room = sizeof x->path - 1;
    if (x->plen > 0 && x->plen < room)
        x->path[x->plen++] = '.';
    for (; *k != '\0' && x->plen < room; k++) {
        unsigned char c = (unsigned char)*k;
        x->path[x->plen++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    x->path[x->plen] = '\0';
    return mark;
}

static size_t
path_idx(struct pctx *x, size_t i)
{
    size_t mark = x->plen;
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "[%zu]", i);
    for (int j = 0; j < n && x->plen < sizeof x->path - 1; j++)
        x->path[x->plen++] = tmp[j];
    x->path[x->plen] = '\0';
    return mark;
}

static void
path_pop(struct pctx *x, size_t mark)
{
    x->plen = mark;
    x->path[mark] = '\0';
}

/* ------------------------------------------------------------------ tables */

enum ktype {
    K_U32,  /* integral JSON number in [min, max], stored as uint32_t */
    K_POW2, /* as K_U32, and a power of two */
    K_F64,  /* finite JSON number >= min, stored as double */
    K_STR,  /* JSON string, stored as an air__malloc'd char *; then `check` */
    K_SUB,  /* nested object whose keys (table `sub`) fill the same struct */
    K_FN,   /* anything else: `fn` parses the value */
};

#define KF_REQUIRED 1u
#define MAX_KEYS    32 /* upper bound on the entries of one table */

typedef air_status_t (*key_fn)(struct pctx *x, const cJSON *item, void *obj);
typedef air_status_t (*str_check_fn)(struct pctx *x, void *obj, char *s);

struct key {
    const char *name; /* NULL ends a table */
    enum ktype type;
    unsigned flags;
    double min, max, def;
    size_t off;
    const struct key *sub;
    key_fn fn;
    str_check_fn check;
};

/* clang-format off */
#define U32(n, lo, hi, d, st, f)  {n, K_U32, 0, lo, hi, d, offsetof(st, f), NULL, NULL, NULL}
#define POW2(n, lo, hi, d, st, f) {n, K_POW2, 0, lo, hi, d, offsetof(st, f), NULL, NULL, NULL}
#define F64(n, lo, d, st, f)      {n, K_F64, 0, lo, 0, d, offsetof(st, f), NULL, NULL, NULL}
#define F64R(n, lo, hi, d, st, f) {n, K_F64, 0, lo, hi, d, offsetof(st, f), NULL, NULL, NULL}
#define STR(n, fl, st, f, chk)    {n, K_STR, fl, 0, 0, 0, offsetof(st, f), NULL, NULL, chk}
#define SUB(n, tab)               {n, K_SUB, 0, 0, 0, 0, 0, tab, NULL, NULL}
#define FN(n, fl, fnc)            {n, K_FN, fl, 0, 0, 0, 0, NULL, fnc, NULL}
#define END                       {NULL, K_FN, 0, 0, 0, 0, 0, NULL, NULL, NULL}
/* clang-format on */

/* Sentinel default of cached_input_price_per_mtok: "same as the input
 * price". Never a valid value (the minimum is 0). */
#define PRICE_UNSET (-1.0)

static air_status_t parse_providers(struct pctx *x, const cJSON *item, void *obj);
static air_status_t parse_routes(struct pctx *x, const cJSON *item, void *obj);
static air_status_t parse_models(struct pctx *x, const cJSON *item, void *obj);
static air_status_t parse_targets(struct pctx *x, const cJSON *item, void *obj);
static air_status_t check_name(struct pctx *x, void *obj, char *s);
static air_status_t check_kind(struct pctx *x, void *obj, char *s);
static air_status_t check_url(struct pctx *x, void *obj, char *s);
static air_status_t parse_api_key_env(struct pctx *x, const cJSON *item, void *obj);
static air_status_t check_nonempty(struct pctx *x, void *obj, char *s);
static air_status_t check_strategy(struct pctx *x, void *obj, char *s);
static air_status_t check_window(struct pctx *x, void *obj, char *s);
static air_status_t keep_tuning(struct pctx *x, const cJSON *item, void *obj);
static air_status_t keep_retry_window(struct pctx *x, const cJSON *item, void *obj);
static air_status_t keep_route_weight(struct pctx *x, const cJSON *item, void *obj);
static air_status_t parse_route_hedge(struct pctx *x, const cJSON *item, void *obj);
static air_status_t parse_route_retry(struct pctx *x, const cJSON *item, void *obj);
static air_status_t parse_clients(struct pctx *x, const cJSON *item, void *obj);
static air_status_t check_backend(struct pctx *x, void *obj, char *s);
static air_status_t check_redis_url(struct pctx *x, void *obj, char *s);
static air_status_t check_state_env(struct pctx *x, void *obj, char *s);
static air_status_t check_prefix(struct pctx *x, void *obj, char *s);
static air_status_t check_failmode(struct pctx *x, void *obj, char *s);

#define CFG struct air__config
static const struct key retry_keys[] = {
    U32("max_attempts", 1, 10, 3, CFG, max_attempts),
    U32("backoff_base_ms", 0, 60000, 100, CFG, backoff_base_ms),
    U32("backoff_cap_ms", 0, 600000, 2000, CFG, backoff_cap_ms),
    U32("max_retry_after_ms", 0, 3600000, 60000, CFG, max_retry_after_ms),
    F64R("budget_ratio", 0, 1, 0.2, CFG, retry_budget_ratio),
    U32("budget_min_per_s", 0, 100000, 10, CFG, retry_budget_min_per_s),
    FN("budget_window_ms", 0, keep_retry_window),
    END,
};

/* state: shared limits and budgets (docs/CONFIG.md, docs/SCALING.md). */
static const struct key state_fail_keys[] = {
    STR("rate_limits", 0, CFG, state_fail_rate, check_failmode),
    STR("budgets", 0, CFG, state_fail_budget, check_failmode),
    STR("deployment_quotas", 0, CFG, state_fail_quota, check_failmode),
    END,
};

static const struct key state_lease_keys[] = {
    U32("sync_ms", 1, 60000, 50, CFG, state_sync_ms),
    U32("horizon_ms", 1, 3600000, 500, CFG, state_horizon_ms),
    F64R("max_fraction", 0, 1, 0, CFG, state_max_fraction),
    F64R("min_fraction", 0, 1, 0.01, CFG, state_min_fraction),
    END,
};

static const struct key state_keys[] = {
    STR("backend", 0, CFG, state_backend, check_backend),
    STR("url", 0, CFG, state_url, check_redis_url),
    STR("password_env", 0, CFG, state_password_env, check_state_env),
    STR("prefix", 0, CFG, state_prefix, check_prefix),
    U32("instances", 1, 100000, 1, CFG, state_instances),
    U32("timeout_ms", 1, 60000, 500, CFG, state_timeout_ms),
    U32("backoff_ms", 1, 60000, 100, CFG, state_backoff_ms),
    U32("backoff_max_ms", 1, 600000, 5000, CFG, state_backoff_max_ms),
    SUB("fail", state_fail_keys),
    SUB("lease", state_lease_keys),
    END,
};

static const struct key top_keys[] = {
    U32("workers", 1, 256, 2, CFG, workers),
    POW2("queue_capacity", 2, 16777216, 4096, CFG, queue_capacity),
    U32("max_inflight", 1, 4194304, 65536, CFG, max_inflight),
    U32("request_timeout_ms", 1, 86400000, 120000, CFG, request_timeout_ms),
    U32("max_event_bytes", 1024, 1073741824, 8388608, CFG, max_event_bytes),
    U32("spin_us", 0, 1000000, 0, CFG, spin_us),
    SUB("retry", retry_keys),
    FN("providers", KF_REQUIRED, parse_providers),
    FN("routes", 0, parse_routes),
    FN("policy", 0, keep_tuning),
    FN("hedge", 0, keep_tuning),
    FN("stats", 0, keep_tuning),
    FN("clients", 0, parse_clients),
    SUB("state", state_keys),
    END,
};
#undef CFG

#define PRV struct air__provider_cfg
static const struct key provider_keys[] = {
    STR("name", KF_REQUIRED, PRV, name, check_name),
    STR("kind", KF_REQUIRED, PRV, kind, check_kind),
    STR("base_url", 0, PRV, base_url, check_url),
    FN("api_key_env", 0, parse_api_key_env),
    U32("timeout_ms", 1, 86400000, 60000, PRV, timeout_ms),
    U32("connect_timeout_ms", 1, 86400000, 5000, PRV, connect_timeout_ms),
    U32("first_byte_timeout_ms", 1, 86400000, 30000, PRV, first_byte_timeout_ms),
    U32("idle_timeout_ms", 1, 86400000, 30000, PRV, idle_timeout_ms),
    U32("max_inflight", 0, 1000000, 0, PRV, max_inflight),
    U32("rpm", 0, 1000000000, 0, PRV, rpm),
    U32("tpm", 0, 4000000000.0, 0, PRV, tpm),
    FN("models", 0, parse_models),
    END,
};
#undef PRV

#define MDL struct air__model_cfg
static const struct key model_keys[] = {
    STR("name", KF_REQUIRED, MDL, name, check_nonempty),
    F64("input_price_per_mtok", 0, 0, MDL, input_price_per_mtok),
    F64("output_price_per_mtok", 0, 0, MDL, output_price_per_mtok),
    F64("cached_input_price_per_mtok", 0, PRICE_UNSET, MDL, cached_input_price_per_mtok),
    U32("context_tokens", 0, 4294967295.0, 0, MDL, context_tokens),
    U32("rpm", 0, 1000000000, 0, MDL, rpm),
    U32("tpm", 0, 4000000000.0, 0, MDL, tpm),
    U32("max_inflight", 0, 1000000, 0, MDL, max_inflight),
    END,
};
#undef MDL

#define RTE struct air__route_cfg
static const struct key route_keys[] = {
    STR("model", KF_REQUIRED, RTE, model, check_nonempty),
    STR("strategy", 0, RTE, strategy, check_strategy),
    FN("targets", KF_REQUIRED, parse_targets),
    U32("max_attempts", 0, 10, 0, RTE, max_attempts),
    FN("weight", 0, keep_route_weight),
    FN("hedge", 0, parse_route_hedge),
    FN("retry", 0, parse_route_retry),
    F64("budget_usd", 0, 0, RTE, budget_usd),
    STR("budget_window", 0, RTE, budget_window, check_window),
    END,
};
#undef RTE

#define CLI struct air__client_cfg
static const struct key client_keys[] = {
    STR("name", KF_REQUIRED, CLI, name, check_nonempty),
    U32("rpm", 0, 1000000000, 0, CLI, rpm),
    U32("tpm", 0, 4000000000.0, 0, CLI, tpm),
    U32("max_inflight", 0, 1000000, 0, CLI, max_inflight),
    F64("budget_usd", 0, 0, CLI, budget_usd),
    STR("budget_window", 0, CLI, budget_window, check_window),
    END,
};
#undef CLI

#define TGT struct air__target_cfg
static const struct key target_keys[] = {
    STR("provider", KF_REQUIRED, TGT, provider, check_nonempty),
    STR("model", 0, TGT, model, check_nonempty),
    F64("weight", 0, 1.0, TGT, weight),
    END,
};
#undef TGT

/* ------------------------------------------------------------------ walker */

static uint32_t *
u32_at(void *obj, size_t off)
{
    return (uint32_t *)(void *)((char *)obj + off);
}

static double *
f64_at(void *obj, size_t off)
{
    return (double *)(void *)((char *)obj + off);
}

static char **
str_at(void *obj, size_t off)
{
    return (char **)(void *)((char *)obj + off);
}

static void
apply_defaults(const struct key *tab, void *obj)
{
    for (const struct key *k = tab; k->name != NULL; k++) {
        switch (k->type) {
        case K_U32:
        case K_POW2:
            *u32_at(obj, k->off) = (uint32_t)k->def;
            break;
        case K_F64:
            *f64_at(obj, k->off) = k->def;
            break;
        case K_SUB:
            apply_defaults(k->sub, obj);
            break;
        case K_STR:
        case K_FN:
            break; /* zeroed by calloc: NULL / none */
        }
    }
}

/* Levenshtein distance for "did you mean" hints; large for long names. */
static size_t
edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t row[64];
    if (la >= 64 || lb >= 64)
        return 64;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

static air_status_t
unknown_key(struct pctx *x, const char *name, const struct key *tab, const char *const *extra)
{
    const char *best = NULL;
    size_t bestd = 3; /* suggest only for 1 or 2 edits */
    for (const struct key *k = tab; k->name != NULL; k++) {
        size_t d = edit_distance(name, k->name);
        if (d < bestd && strlen(k->name) > 3) {
            bestd = d;
            best = k->name;
        }
    }
    for (size_t i = 0; extra != NULL && extra[i] != NULL; i++) {
        size_t d = edit_distance(name, extra[i]);
        if (d < bestd && strlen(extra[i]) > 3) {
            bestd = d;
            best = extra[i];
        }
    }
    if (best != NULL)
        return fail(x, "unknown key (did you mean '%s'?)", best);
    return fail(x, "unknown key");
}

static int
in_list(const char *name, const char *const *list)
{
    for (size_t i = 0; list != NULL && list[i] != NULL; i++)
        if (strcmp(list[i], name) == 0)
            return 1;
    return 0;
}

static air_status_t walk(struct pctx *x, const cJSON *item, const struct key *tab, void *obj,
                         const char *const *extra);

/* One member whose key is in the table. The path names the member. */
static air_status_t
set_value(struct pctx *x, const struct key *k, const cJSON *m, void *obj)
{
    switch (k->type) {
    case K_U32:
    case K_POW2: {
        if (!cJSON_IsNumber(m))
            return fail(x, "expected an integer");
        double v = m->valuedouble;
        if (!isfinite(v) || v != floor(v))
            return fail(x, "expected an integer");
        if (k->type == K_POW2) {
            uint32_t u = v >= k->min && v <= k->max ? (uint32_t)v : 0;
            if (u == 0 || (u & (u - 1)) != 0)
                return fail(x, "must be a power of two between %.0f and %.0f", k->min, k->max);
        } else if (v < k->min || v > k->max) {
            return fail(x, "must be between %.0f and %.0f", k->min, k->max);
        }
        *u32_at(obj, k->off) = (uint32_t)v;
        return AIR_OK;
    }
    case K_F64: {
        if (!cJSON_IsNumber(m))
            return fail(x, "expected a number");
        double v = m->valuedouble;
        if (!isfinite(v))
            return fail(x, "expected a finite number");
        if (k->max > k->min && (v < k->min || v > k->max))
            return fail(x, "must be between %g and %g", k->min, k->max);
        if (v < k->min)
            return fail(x, "must be >= %g", k->min);
        *f64_at(obj, k->off) = v;
        return AIR_OK;
    }
    case K_STR: {
        if (!cJSON_IsString(m) || m->valuestring == NULL)
            return fail(x, "expected a string");
        char *s = air__strdup(m->valuestring);
        if (s == NULL)
            return nomem(x);
        *str_at(obj, k->off) = s;
        return k->check != NULL ? k->check(x, obj, s) : AIR_OK;
    }
    case K_SUB:
        return walk(x, m, k->sub, obj, NULL);
    case K_FN:
        return k->fn(x, m, obj);
    }
    return fail(x, "internal error: bad key type");
}

/*
 * Fill obj from a JSON object using tab: defaults first, then each member in
 * document order, then the required-key check. `extra` lists further keys
 * that are accepted as they are (a provider kind's own keys). Every object
 * may also carry a "comment" string, which is ignored.
 */
static air_status_t
walk(struct pctx *x, const cJSON *item, const struct key *tab, void *obj, const char *const *extra)
{
    if (!cJSON_IsObject(item))
        return fail(x, "expected an object");
    apply_defaults(tab, obj);

    unsigned char seen[MAX_KEYS] = {0};
    for (const cJSON *m = item->child; m != NULL; m = m->next) {
        const char *name = m->string ? m->string : "";
        size_t mark = path_key(x, name);
        air_status_t st = AIR_OK;
        size_t i = 0;
        while (tab[i].name != NULL && strcmp(tab[i].name, name) != 0)
            i++;
        if (tab[i].name != NULL) {
            if (seen[i])
                st = fail(x, "duplicate key");
            else {
                seen[i] = 1;
                st = set_value(x, &tab[i], m, obj);
            }
        } else if (strcmp(name, "comment") == 0) {
            if (!cJSON_IsString(m))
                st = fail(x, "expected a string");
        } else if (!in_list(name, extra)) {
            st = unknown_key(x, name, tab, extra);
        }
        if (st != AIR_OK)
            return st;
        path_pop(x, mark);
    }
    for (size_t i = 0; tab[i].name != NULL; i++) {
        if ((tab[i].flags & KF_REQUIRED) && !seen[i]) {
            path_key(x, tab[i].name);
            return fail(x, "required key is missing");
        }
    }
    return AIR_OK;
}

/* Common start of an array of objects: type, size, element storage. */
static air_status_t
alloc_array(struct pctx *x, const cJSON *item, int allow_empty, size_t elsize, void **arr,
            size_t *n)
{
    if (!cJSON_IsArray(item))
        return fail(x, "expected an array");
    int size = cJSON_GetArraySize(item);
    if (size <= 0) {
        if (!allow_empty)
            return fail(x, "must not be empty");
        return AIR_OK;
    }
    *arr = air__calloc((size_t)size, elsize);
    if (*arr == NULL)
        return nomem(x);
    *n = (size_t)size;
    return AIR_OK;
}

/* ------------------------------------------------------------------ checks */

static air_status_t
check_nonempty(struct pctx *x, void *obj, char *s)
{
    (void)obj;
    if (s[0] == '\0')
        return fail(x, "must not be empty");
    return AIR_OK;
}

static air_status_t
check_name(struct pctx *x, void *obj, char *s)
{
    (void)obj;
    if (s[0] == '\0')
        return fail(x, "must not be empty");
    for (const char *p = s; *p != '\0'; p++) {
        char c = *p;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '_' || c == '-';
        if (!ok)
            return fail(x, "may only contain letters, digits, '.', '_' and '-'");
    }
    return AIR_OK;
}

static air_status_t
unknown_kind(struct pctx *x, const char *kind)
{
    char known[256];
    size_t kl = 0;
    known[0] = '\0';
    for (size_t i = 0; air__provider_at(i) != NULL; i++) {
        int n = snprintf(known + kl, sizeof known - kl, "%s%s", i ? ", " : "",
                         air__provider_at(i)->name);
        if (n < 0 || (size_t)n >= sizeof known - kl)
            break;
        kl += (size_t)n;
    }
    return fail(x, "unknown kind '%s' (known: %s)", kind, known);
}

static air_status_t
check_kind(struct pctx *x, void *obj, char *s)
{
    struct air__provider_cfg *pc = obj;
    pc->ops = air__provider_find(s);
    if (pc->ops == NULL)
        return unknown_kind(x, s);
    return AIR_OK;
}

static air_status_t
check_url(struct pctx *x, void *obj, char *s)
{
    (void)obj;
    size_t skip;
    if (strncmp(s, "http://", 7) == 0)
        skip = 7;
    else if (strncmp(s, "https://", 8) == 0)
        skip = 8;
    else
        return fail(x, "must start with http:// or https://");
    size_t n = strlen(s);
    while (n > skip && s[n - 1] == '/')
        s[--n] = '\0';
    if (n == skip)
        return fail(x, "must name a host after the scheme");
    return AIR_OK;
}

/* Read the secret held by environment variable s into *out. */
static air_status_t
env_secret(struct pctx *x, const char *s, char **out)
{
    /* A variable name: [A-Za-z_][A-Za-z0-9_]*, at most 128 bytes. Anything
     * else is probably the key itself pasted in: say so without echoing it. */
    size_t n = strlen(s);
    int ok = n > 0 && n <= 128 && !(s[0] >= '0' && s[0] <= '9');
    for (size_t i = 0; ok && i < n; i++) {
        char c = s[i];
        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    }
    if (!ok)
        return fail(x, "must be the name of an environment variable (letters, digits and '_'), "
                       "not the key itself");
    const char *v = getenv(s);
    if (v == NULL)
        return fail(x, "environment variable %s is not set", s);
    if (v[0] == '\0')
        return fail(x, "environment variable %s is set but empty", s);
    *out = air__strdup(v);
    if (*out == NULL)
        return nomem(x);
    return AIR_OK;
}

/* "api_key_env": "NAME" or ["NAME1", "NAME2", ...] (a key pool: requests
 * spread across the keys; see docs/CONFIG.md). */
static air_status_t
parse_api_key_env(struct pctx *x, const cJSON *item, void *obj)
{
    struct air__provider_cfg *pc = obj;
    size_t n = cJSON_IsArray(item) ? (size_t)cJSON_GetArraySize(item) : 1;
    if (!cJSON_IsString(item) && !cJSON_IsArray(item))
        return fail(x, "expected a variable name or an array of them");
    if (n == 0)
        return fail(x, "expected at least one variable name");
    if (n > 32)
        return fail(x, "at most 32 keys per provider");
    pc->api_keys = air__calloc(n, sizeof *pc->api_keys);
    pc->api_key_envs = air__calloc(n, sizeof *pc->api_key_envs);
    if (pc->api_keys == NULL || pc->api_key_envs == NULL)
        return nomem(x);
    const cJSON *e = cJSON_IsArray(item) ? item->child : item;
    for (size_t i = 0; i < n; i++, e = e->next) {
        size_t mark = cJSON_IsArray(item) ? path_idx(x, i) : 0;
        if (!cJSON_IsString(e))
            return fail(x, "expected a variable name");
        pc->api_key_envs[i] = air__strdup(e->valuestring);
        if (pc->api_key_envs[i] == NULL)
            return nomem(x);
        pc->nkeys = i + 1;
        air_status_t st = env_secret(x, e->valuestring, &pc->api_keys[i]);
        if (st != AIR_OK)
            return st;
        if (cJSON_IsArray(item))
            path_pop(x, mark);
    }
    pc->api_key_env = air__strdup(pc->api_key_envs[0]);
    pc->api_key = air__strdup(pc->api_keys[0]);
    if (pc->api_key_env == NULL || pc->api_key == NULL)
        return nomem(x);
    return AIR_OK;
}

static air_status_t
check_state_env(struct pctx *x, void *obj, char *s)
{
    struct air__config *c = obj;
    return env_secret(x, s, &c->state_password);
}

static air_status_t
check_backend(struct pctx *x, void *obj, char *s)
{
    (void)obj;
    if (strcmp(s, "local") != 0 && strcmp(s, "redis") != 0)
        return fail(x, "unknown backend '%s' (local, redis)", s);
    return AIR_OK;
}

static air_status_t
check_redis_url(struct pctx *x, void *obj, char *s)
{
    (void)obj;
    struct air__redis_url u;
    char why[160];
    if (air__redis_url_parse(s, &u, why, sizeof why) != 0)
        return fail(x, "%s", why);
    return AIR_OK;
}

static air_status_t
check_prefix(struct pctx *x, void *obj, char *s)
{
    (void)obj;
    if (strlen(s) > 128)
        return fail(x, "must be at most 128 bytes");
    for (const char *p = s; *p != '\0'; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return fail(x, "must not contain spaces or control characters");
    return AIR_OK;
}

static air_status_t
check_failmode(struct pctx *x, void *obj, char *s)
{
    (void)obj;
    if (strcmp(s, "open") != 0 && strcmp(s, "closed") != 0)
        return fail(x, "must be \"open\" or \"closed\"");
    return AIR_OK;
}

static air_status_t
check_strategy(struct pctx *x, void *obj, char *s)
{
    (void)obj;
    enum air__strategy st;
    if (air__strategy_parse(s, &st) != 0)
        return fail(x,
                    "unknown strategy '%s' (supported: priority, weighted, round-robin, "
                    "least-busy, lowest-latency, lowest-cost, score)",
                    s);
    return AIR_OK;
}

static air_status_t
check_window(struct pctx *x, void *obj, char *s)
{
    (void)obj;
    enum air__window w;
    if (air__window_parse(s, &w) != 0)
        return fail(x, "unknown budget window '%s' (minute, hour, day, month)", s);
    return AIR_OK;
}

/* policy / hedge / stats objects: kept as JSON and applied through the ctl
 * table when the world is built, so config and run-time tuning share one
 * validator (and one set of names: config path == ctl path). */
static air_status_t
keep_tuning(struct pctx *x, const cJSON *item, void *obj)
{
    struct air__config *c = obj;
    if (!cJSON_IsObject(item))
        return fail(x, "expected an object");
    if (c->tuning == NULL && (c->tuning = cJSON_CreateObject()) == NULL)
        return nomem(x);
    cJSON *dup = cJSON_Duplicate(item, 1);
    if (dup == NULL || !cJSON_AddItemToObject(c->tuning, item->string, dup)) {
        cJSON_Delete(dup);
        return nomem(x);
    }
    return AIR_OK;
}

/* retry.budget_window_ms: a tunable only (no field of its own), checked
 * here with the config's messages and kept in `tuning` as
 * {"retry":{"budget_window_ms":N}}, applied through the ctl table with the
 * other tunables when the world is built. */
static air_status_t
keep_retry_window(struct pctx *x, const cJSON *item, void *obj)
{
    struct air__config *c = obj;
    if (!cJSON_IsNumber(item) || !isfinite(item->valuedouble) ||
        item->valuedouble != floor(item->valuedouble))
        return fail(x, "expected an integer");
    if (item->valuedouble < 1000 || item->valuedouble > 15000)
        return fail(x, "must be between 1000 and 15000");
    if (c->tuning == NULL && (c->tuning = cJSON_CreateObject()) == NULL)
        return nomem(x);
    cJSON *retry = cJSON_GetObjectItemCaseSensitive(c->tuning, "retry");
    if (retry == NULL) {
        retry = cJSON_AddObjectToObject(c->tuning, "retry");
        if (retry == NULL)
            return nomem(x);
    }
    if (cJSON_AddNumberToObject(retry, "budget_window_ms", item->valuedouble) == NULL)
        return nomem(x);
    return AIR_OK;
}

static air_status_t
keep_route_weight(struct pctx *x, const cJSON *item, void *obj)
{
    struct air__route_cfg *rc = obj;
    if (!cJSON_IsObject(item))
        return fail(x, "expected an object");
    static const char *const names[] = {"latency", "cost", "health", "load", NULL};
    for (const cJSON *m = item->child; m != NULL; m = m->next) {
        size_t mark = path_key(x, m->string ? m->string : "");
        if (!in_list(m->string ? m->string : "", names))
            return fail(x, "unknown key (latency, cost, health, load)");
        if (!cJSON_IsNumber(m) || !(m->valuedouble >= 0 && m->valuedouble <= 1))
            return fail(x, "must be a number between 0 and 1");
        path_pop(x, mark);
    }
    rc->weight = cJSON_Duplicate(item, 1);
    return rc->weight ? AIR_OK : nomem(x);
}

/* A route's own retry policy: attempts, backoff, and which error classes
 * may be retried or failed over ("on"). */
static air_status_t
parse_route_retry(struct pctx *x, const cJSON *item, void *obj)
{
    struct air__route_cfg *rc = obj;
    if (!cJSON_IsObject(item))
        return fail(x, "expected an object");
    for (const cJSON *m = item->child; m != NULL; m = m->next) {
        const char *k = m->string ? m->string : "";
        size_t mark = path_key(x, k);
        if (strcmp(k, "on") == 0) {
            if (!cJSON_IsArray(m))
                return fail(x, "expected an array of error classes");
            size_t i = 0;
            for (const cJSON *c = m->child; c != NULL; c = c->next, i++) {
                size_t cm = path_idx(x, i);
                int found = -1;
                for (int e = 1; e < AIR__ERR_LAST && cJSON_IsString(c); e++)
                    if (strcmp(air_errclass_name((air_errclass_t)e), c->valuestring) == 0)
                        found = e;
                if (found < 0)
                    return fail(x, "unknown error class (rate_limited, overloaded, upstream, "
                                   "timeout, connect, auth, not_found, invalid_request)");
                rc->retry_on |= 1u << found;
                path_pop(x, cm);
            }
        } else if (strcmp(k, "max_attempts") == 0 || strcmp(k, "backoff_base_ms") == 0 ||
                   strcmp(k, "backoff_cap_ms") == 0) {
            double lo = k[0] == 'm' ? 1 : 0, hi = k[0] == 'm' ? 10 : 600000;
            if (!cJSON_IsNumber(m) || m->valuedouble != floor(m->valuedouble) ||
                m->valuedouble < lo || m->valuedouble > hi)
                return fail(x, "must be an integer between %.0f and %.0f", lo, hi);
            uint32_t v = (uint32_t)m->valuedouble;
            if (k[0] == 'm')
                rc->max_attempts = v;
            else if (strcmp(k, "backoff_base_ms") == 0)
                rc->backoff_base_ms = v;
            else
                rc->backoff_cap_ms = v;
        } else if (strcmp(k, "comment") != 0) {
            return fail(x, "unknown key (max_attempts, backoff_base_ms, backoff_cap_ms, on)");
        }
        path_pop(x, mark);
    }
    return AIR_OK;
}

static air_status_t
parse_route_hedge(struct pctx *x, const cJSON *item, void *obj)
{
    struct air__route_cfg *rc = obj;
    if (!cJSON_IsBool(item))
        return fail(x, "expected true or false");
    rc->hedge = cJSON_IsTrue(item);
    return AIR_OK;
}

/* ------------------------------------------------------------------ arrays */

static air_status_t
parse_models(struct pctx *x, const cJSON *item, void *obj)
{
    struct air__provider_cfg *pc = obj;
    void *arr = NULL;
    air_status_t st = alloc_array(x, item, 1, sizeof *pc->models, &arr, &pc->nmodels);
    pc->models = arr;
    if (st != AIR_OK)
        return st;
    size_t i = 0;
    for (const cJSON *m = item->child; m != NULL; m = m->next, i++) {
        struct air__model_cfg *mc = &pc->models[i];
        size_t mark = path_idx(x, i);
        st = walk(x, m, model_keys, mc, NULL);
        if (st != AIR_OK)
            return st;
        if (mc->cached_input_price_per_mtok == PRICE_UNSET)
            mc->cached_input_price_per_mtok = mc->input_price_per_mtok;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(pc->models[j].name, mc->name) == 0) {
                path_key(x, "name");
                return fail(x, "duplicate model name '%s'", mc->name);
            }
        }
        path_pop(x, mark);
    }
    return AIR_OK;
}

static air_status_t
parse_provider(struct pctx *x, const cJSON *item, struct air__provider_cfg *prov, size_t i)
{
    struct air__provider_cfg *pc = &prov[i];
    if (!cJSON_IsObject(item))
        return fail(x, "expected an object");
    /* The kind decides which extra keys are accepted, so resolve it before
     * the walk; an unknown kind is reported before any key it would allow. */
    const char *const *extra = NULL;
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(item, "kind");
    if (cJSON_IsString(kind) && kind->valuestring != NULL) {
        const air_provider_ops_t *ops = air__provider_find(kind->valuestring);
        if (ops == NULL) {
            path_key(x, "kind");
            return unknown_kind(x, kind->valuestring);
        }
        extra = ops->config_keys;
    }
    air_status_t st = walk(x, item, provider_keys, pc, extra);
    if (st != AIR_OK)
        return st;
    for (size_t j = 0; j < i; j++) {
        if (strcmp(prov[j].name, pc->name) == 0) {
            path_key(x, "name");
            return fail(x, "duplicate provider name '%s'", pc->name);
        }
    }
    pc->json = cJSON_Duplicate(item, 1);
    if (pc->json == NULL)
        return nomem(x);
    return AIR_OK;
}

static air_status_t
parse_providers(struct pctx *x, const cJSON *item, void *obj)
{
    struct air__config *c = obj;
    void *arr = NULL;
    air_status_t st = alloc_array(x, item, 0, sizeof *c->providers, &arr, &c->nproviders);
    c->providers = arr;
    if (st != AIR_OK)
        return st;
    size_t i = 0;
    for (const cJSON *m = item->child; m != NULL; m = m->next, i++) {
        size_t mark = path_idx(x, i);
        st = parse_provider(x, m, c->providers, i);
        if (st != AIR_OK)
            return st;
        path_pop(x, mark);
    }
    return AIR_OK;
}

static air_status_t
parse_clients(struct pctx *x, const cJSON *item, void *obj)
{
    struct air__config *c = obj;
    void *arr = NULL;
    air_status_t st = alloc_array(x, item, 1, sizeof *c->clients, &arr, &c->nclients);
    c->clients = arr;
    if (st != AIR_OK)
        return st;
    size_t i = 0;
    for (const cJSON *m = item->child; m != NULL; m = m->next, i++) {
        size_t mark = path_idx(x, i);
        st = walk(x, m, client_keys, &c->clients[i], NULL);
        if (st != AIR_OK)
            return st;
        for (size_t j = 0; j < i; j++)
            if (strcmp(c->clients[j].name, c->clients[i].name) == 0) {
                path_key(x, "name");
                return fail(x, "duplicate client name '%s'", c->clients[i].name);
            }
        path_pop(x, mark);
    }
    return AIR_OK;
}

static air_status_t
parse_targets(struct pctx *x, const cJSON *item, void *obj)
{
    struct air__route_cfg *rc = obj;
    void *arr = NULL;
    air_status_t st = alloc_array(x, item, 0, sizeof *rc->targets, &arr, &rc->ntargets);
    rc->targets = arr;
    if (st != AIR_OK)
        return st;
    size_t i = 0;
    for (const cJSON *m = item->child; m != NULL; m = m->next, i++) {
        size_t mark = path_idx(x, i);
        st = walk(x, m, target_keys, &rc->targets[i], NULL);
        if (st != AIR_OK)
            return st;
        path_pop(x, mark);
    }
    return AIR_OK;
}

static air_status_t
parse_routes(struct pctx *x, const cJSON *item, void *obj)
{
    struct air__config *c = obj;
    void *arr = NULL;
    air_status_t st = alloc_array(x, item, 1, sizeof *c->routes, &arr, &c->nroutes);
    c->routes = arr;
    if (st != AIR_OK)
        return st;
    size_t i = 0;
    for (const cJSON *m = item->child; m != NULL; m = m->next, i++) {
        struct air__route_cfg *rc = &c->routes[i];
        size_t mark = path_idx(x, i);
        rc->hedge = -1;
        st = walk(x, m, route_keys, rc, NULL);
        if (st != AIR_OK)
            return st;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(c->routes[j].model, rc->model) == 0) {
                path_key(x, "model");
                return fail(x, "duplicate route for model '%s'", rc->model);
            }
        }
        /* A target without a model sends the route's model upstream. */
        for (size_t t = 0; t < rc->ntargets; t++)
            if (rc->targets[t].model == NULL &&
                (rc->targets[t].model = air__strdup(rc->model)) == NULL)
                return nomem(x);
        path_pop(x, mark);
    }
    return AIR_OK;
}

/* ------------------------------------------------------------------ whole */

/* Checks that need the whole document: route targets name providers. */
/* The state object's string defaults, so users never see NULL. */
static air_status_t
state_defaults(struct pctx *x, struct air__config *c)
{
    struct {
        char **f;
        const char *def;
    } d[] = {
        {&c->state_backend, "local"},
        {&c->state_url, "redis://127.0.0.1:6379/0"},
        {&c->state_prefix, "airouter:"},
        {&c->state_fail_rate, "open"},
        {&c->state_fail_budget, "closed"},
    };
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++)
        if (*d[i].f == NULL && (*d[i].f = air__strdup(d[i].def)) == NULL)
            return nomem(x);
    /* Deployment quotas follow the rate-limit switch unless set apart
     * (before that switch existed they shared it). */
    if (c->state_fail_quota == NULL &&
        (c->state_fail_quota = air__strdup(c->state_fail_rate)) == NULL)
        return nomem(x);
    return AIR_OK;
}

static air_status_t
cross_check(struct pctx *x, struct air__config *c)
{
    air_status_t sst = state_defaults(x, c);
    if (sst != AIR_OK)
        return sst;
    if (c->backoff_cap_ms < c->backoff_base_ms) {
        path_key(x, "retry");
        path_key(x, "backoff_cap_ms");
        return fail(x, "must be >= retry.backoff_base_ms (%u)", (unsigned)c->backoff_base_ms);
    }
    for (size_t r = 0; r < c->nroutes; r++) {
        struct air__route_cfg *rc = &c->routes[r];
        for (size_t t = 0; t < rc->ntargets; t++) {
            long idx = air__config_provider_idx(c, rc->targets[t].provider);
            if (idx < 0) {
                path_pop(x, 0);
                path_key(x, "routes");
                path_idx(x, r);
                path_key(x, "targets");
                path_idx(x, t);
                path_key(x, "provider");
                return fail(x, "unknown provider '%s'", rc->targets[t].provider);
            }
            rc->targets[t].provider_idx = (size_t)idx;
        }
    }
    return AIR_OK;
}

/* "line L, column C" of byte offset pos (columns count UTF-8 characters). */
static void
position(const char *s, size_t pos, size_t *line, size_t *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < pos; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') {
            (*line)++;
            *col = 1;
        } else if ((c & 0xC0) != 0x80) {
            (*col)++;
        }
    }
}

air_status_t
air__config_parse(const char *json, size_t len, struct air__config **out, char *err, size_t errlen)
{
    struct pctx x;
    memset(&x, 0, sizeof x);
    x.err = err;
    x.errlen = errlen;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (out != NULL)
        *out = NULL;
    if (json == NULL || out == NULL) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "invalid argument");
        return AIR_E_INVAL;
    }

    size_t skip = 0; /* a UTF-8 byte order mark is allowed */
    if (len >= 3 && memcmp(json, "\xEF\xBB\xBF", 3) == 0)
        skip = 3;
    const char *end = json + skip;
    cJSON *root = cJSON_ParseWithLengthOpts(json + skip, len - skip, &end, 0);
    size_t pos = (size_t)(end - json);
    if (root != NULL) {
        /* Only whitespace (or NULs) may follow the value. */
        while (pos < len && strchr(" \t\r\n", json[pos]) != NULL && json[pos] != '\0')
            pos++;
        while (pos < len && json[pos] == '\0')
            pos++;
        if (pos < len) {
            cJSON_Delete(root);
            root = NULL;
        }
    }
    if (root == NULL) {
        size_t line, col;
        if (pos > len)
            pos = len;
        position(json, pos, &line, &col);
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "line %zu, column %zu: invalid JSON", line, col);
        return AIR_E_CONFIG;
    }

    air_status_t st;
    struct air__config *c = air__calloc(1, sizeof *c);
    if (c == NULL) {
        st = nomem(&x);
    } else {
        st = walk(&x, root, top_keys, c, NULL);
        if (st == AIR_OK)
            st = cross_check(&x, c);
    }
    cJSON_Delete(root);
    if (st != AIR_OK) {
        air__config_free(c);
        return st;
    }
    *out = c;
    return AIR_OK;
}

/* ------------------------------------------------------------------ free */

/* Overwrite a secret before its memory goes back to the allocator; the
 * volatile stores are not optimised away. */
static void
wipe(char *s)
{
    if (s == NULL)
        return;
    volatile char *p = s;
    while (*p != '\0')
        *p++ = '\0';
}

void
air__config_free(struct air__config *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->nproviders && c->providers != NULL; i++) {
        struct air__provider_cfg *pc = &c->providers[i];
        air__free(pc->name);
        air__free(pc->kind);
        air__free(pc->base_url);
        air__free(pc->api_key_env);
        wipe(pc->api_key);
        air__free(pc->api_key);
        for (size_t k = 0; k < pc->nkeys; k++) {
            if (pc->api_keys != NULL) {
                wipe(pc->api_keys[k]);
                air__free(pc->api_keys[k]);
            }
            if (pc->api_key_envs != NULL)
                air__free(pc->api_key_envs[k]);
        }
        air__free(pc->api_keys);
        air__free(pc->api_key_envs);
        for (size_t m = 0; m < pc->nmodels && pc->models != NULL; m++)
            air__free(pc->models[m].name);
        air__free(pc->models);
        cJSON_Delete(pc->json);
    }
    air__free(c->providers);
    for (size_t r = 0; r < c->nroutes && c->routes != NULL; r++) {
        struct air__route_cfg *rc = &c->routes[r];
        air__free(rc->model);
        air__free(rc->strategy);
        for (size_t t = 0; t < rc->ntargets && rc->targets != NULL; t++) {
            air__free(rc->targets[t].provider);
            air__free(rc->targets[t].model);
        }
        air__free(rc->targets);
        cJSON_Delete(rc->weight);
        air__free(rc->budget_window);
    }
    air__free(c->routes);
    for (size_t i = 0; i < c->nclients && c->clients != NULL; i++) {
        air__free(c->clients[i].name);
        air__free(c->clients[i].budget_window);
    }
    air__free(c->clients);
    cJSON_Delete(c->tuning);
    air__free(c->state_backend);
    air__free(c->state_url);
    air__free(c->state_password_env);
    wipe(c->state_password);
    air__free(c->state_password);
    air__free(c->state_prefix);
    air__free(c->state_fail_rate);
    air__free(c->state_fail_budget);
    air__free(c->state_fail_quota);
    air__free(c);
}

/* ------------------------------------------------------------------ lookup */

const struct air__route_cfg *
air__config_route(const struct air__config *c, const char *model)
{
    if (c == NULL || model == NULL)
        return NULL;
    for (size_t i = 0; i < c->nroutes; i++)
        if (c->routes[i].model != NULL && strcmp(c->routes[i].model, model) == 0)
            return &c->routes[i];
    return NULL;
}

long
air__config_provider_idx(const struct air__config *c, const char *name)
{
    if (c == NULL || name == NULL)
        return -1;
    for (size_t i = 0; i < c->nproviders; i++)
        if (c->providers[i].name != NULL && strcmp(c->providers[i].name, name) == 0)
            return (long)i;
    return -1;
}
