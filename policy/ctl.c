/*
 * ctl.c - the policy tunables table. DESIGN: one X-macro list (ctl.def)
 * generates the parameter struct, the defaults and this lookup table, so a
 * new tunable is one line and cannot be forgotten by validation, listing or
 * docs (redis's standardConfig, jemalloc's dotted ctl names). Values are
 * validated before anything is written, so a failed set leaves the params
 * untouched; rules between fields are a separate pass (air__params_validate)
 * so an all-or-nothing apply can set several fields first.
 */
#include "ctl.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"

#define NUM_BOOL(d)     ((double)(d))
#define NUM_I64(d)      ((double)(d))
#define NUM_F64(d)      ((double)(d))
#define NUM_STRATEGY(d) ((double)(d))
#define NUM_STR(d)      0.0
#define SDEF_BOOL(d)     NULL
#define SDEF_I64(d)      NULL
#define SDEF_F64(d)      NULL
#define SDEF_STRATEGY(d) NULL
#define SDEF_STR(d)      (d)

static const struct air__ctl_entry entries[] = {
#define X(path, type, min, max, def, mode, field)                                                  \
    {path,         AIR_CTL_##type, (double)(min),                                                  \
     (double)(max), NUM_##type(def), SDEF_##type(def),                                             \
     AIR_CTL_##mode, offsetof(struct air__params, field)},
#include "ctl.def"
#undef X
};

#define NENTRIES (sizeof entries / sizeof entries[0])

const struct air__ctl_entry *
air__ctl_find(const char *path)
{
    if (path == NULL)
        return NULL;
    for (size_t i = 0; i < NENTRIES; i++)
        if (strcmp(entries[i].path, path) == 0)
            return &entries[i];
    return NULL;
}

size_t
air__ctl_count(void)
{
    return NENTRIES;
}

const struct air__ctl_entry *
air__ctl_at(size_t i)
{
    return i < NENTRIES ? &entries[i] : NULL;
}

const char *
air__ctl_type_name(enum air__ctl_type t)
{
    switch (t) {
    case AIR_CTL_BOOL:
        return "bool";
    case AIR_CTL_I64:
        return "i64";
    case AIR_CTL_F64:
        return "f64";
    case AIR_CTL_STRATEGY:
    case AIR_CTL_STR:
        return "str";
    }
    return "?";
}

const char *
air__ctl_mode_name(enum air__ctl_mode m)
{
    return m == AIR_CTL_RW ? "rw" : "r-";
}

void
air__params_default(struct air__params *p)
{
    memset(p, 0, sizeof *p);
#define X(path, type, min, max, def, mode, field) p->field = (AIR_CTL_CTYPE_##type)(def);
#include "ctl.def"
#undef X
}

/* ------------------------------------------------------------ validation */

static void
msg(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
msg(char *err, size_t n, const char *fmt, ...)
{
    if (err == NULL || n == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
}

/* Shortest text that reads back as the same double (valid JSON number). */
static void
fmt_f64(char *buf, size_t n, double v)
{
    snprintf(buf, n, "%.15g", v);
    if (strtod(buf, NULL) != v)
        snprintf(buf, n, "%.17g", v);
}

int
air__ctl_check_f64(double v, double min, double max)
{
    return v >= min && v <= max ? 0 : -1;
}

int
air__ctl_check_i64(int64_t v, int64_t min, int64_t max)
{
    return v >= min && v <= max ? 0 : -1;
}

static air_status_t
range_error(const char *path, double v, double min, double max, char *err, size_t n)
{
    char a[32], b[32], c[32];
    fmt_f64(a, sizeof a, v);
    fmt_f64(b, sizeof b, min);
    fmt_f64(c, sizeof c, max);
    msg(err, n, "%s: %s is out of range [%s, %s]", path, a, b, c);
    return AIR_E_RANGE;
}

air_status_t
air__ctl_json_f64(const cJSON *v, const char *path, double min, double max, double *out,
                  char *err, size_t n)
{
    if (!cJSON_IsNumber(v)) {
        msg(err, n, "%s: expected a number", path);
        return AIR_E_INVAL;
    }
    double d = v->valuedouble;
    if (air__ctl_check_f64(d, min, max) != 0)
        return range_error(path, d, min, max, err, n);
    *out = d;
    return AIR_OK;
}

/* An integral double that fits an int64_t. */
static int
as_i64(double d, int64_t *out)
{
    if (!(d == floor(d)) || d < -9.2e18 || d > 9.2e18)
        return -1;
    *out = (int64_t)d;
    return 0;
}

air_status_t
air__ctl_json_i64(const cJSON *v, const char *path, int64_t min, int64_t max, int64_t *out,
                  char *err, size_t n)
{
    int64_t i;
    if (!cJSON_IsNumber(v) || as_i64(v->valuedouble, &i) != 0) {
        msg(err, n, "%s: expected an integer", path);
        return AIR_E_INVAL;
    }
    if (air__ctl_check_i64(i, min, max) != 0)
        return range_error(path, (double)i, (double)min, (double)max, err, n);
    *out = i;
    return AIR_OK;
}

air_status_t
air__ctl_json_bool(const cJSON *v, const char *path, int *out, char *err, size_t n)
{
    if (!cJSON_IsBool(v)) {
        msg(err, n, "%s: expected true or false", path);
        return AIR_E_INVAL;
    }
    *out = cJSON_IsTrue(v) ? 1 : 0;
    return AIR_OK;
}

static air_status_t
strategy_error(const char *path, const char *name, char *err, size_t n)
{
    char list[160];
    size_t off = 0;
    list[0] = '\0';
    for (int i = 0; i < AIR_S__COUNT && off < sizeof list; i++) {
        int w = snprintf(list + off, sizeof list - off, "%s%s", i ? ", " : "",
                         air__strategy_name((enum air__strategy)i));
        if (w < 0)
            break;
        off += (size_t)w;
    }
    msg(err, n, "%s: unknown strategy \"%.64s\" (one of %s)", path, name, list);
    return AIR_E_INVAL;
}

air_status_t
air__ctl_json_strategy(const cJSON *v, const char *path, enum air__strategy *out, char *err,
                       size_t n)
{
    if (!cJSON_IsString(v) || v->valuestring == NULL) {
        msg(err, n, "%s: expected a strategy name (a string)", path);
        return AIR_E_INVAL;
    }
    if (air__strategy_parse(v->valuestring, out) != 0)
        return strategy_error(path, v->valuestring, err, n);
    return AIR_OK;
}

air_status_t
air__params_validate(const struct air__params *p, char *err, size_t n)
{
    if (p->eject_max_ms < p->eject_base_ms) {
        msg(err, n, "policy.eject.max_ms: %lld is below policy.eject.base_ms (%lld)",
            (long long)p->eject_max_ms, (long long)p->eject_base_ms);
        return AIR_E_RANGE;
    }
    if (p->retry_backoff_cap_ms < p->retry_backoff_base_ms) {
        msg(err, n, "retry.backoff_cap_ms: %lld is below retry.backoff_base_ms (%lld)",
            (long long)p->retry_backoff_cap_ms, (long long)p->retry_backoff_base_ms);
        return AIR_E_RANGE;
    }
    if (p->hedge_max_ms < p->hedge_min_ms) {
        msg(err, n, "hedge.max_ms: %lld is below hedge.min_ms (%lld)", (long long)p->hedge_max_ms,
            (long long)p->hedge_min_ms);
        return AIR_E_RANGE;
    }
    return AIR_OK;
}

/* ------------------------------------------------------------ set / get */

static void *
field(struct air__params *p, const struct air__ctl_entry *e)
{
    return (char *)p + e->offset;
}

static const void *
cfield(const struct air__params *p, const struct air__ctl_entry *e)
{
    return (const char *)p + e->offset;
}

/* Find a writable entry, or explain why not. */
static const struct air__ctl_entry *
writable(const char *path, air_status_t *st, char *err, size_t n)
{
    const struct air__ctl_entry *e = air__ctl_find(path);
    if (e == NULL) {
        msg(err, n, "unknown tunable \"%.100s\"", path ? path : "(null)");
        *st = AIR_E_NONAME;
        return NULL;
    }
    if (e->mode != AIR_CTL_RW) {
        msg(err, n, "%s: read-only", e->path);
        *st = AIR_E_READONLY;
        return NULL;
    }
    return e;
}

air_status_t
air__ctl_set_json(struct air__params *p, const char *path, const cJSON *v, char *err, size_t n)
{
    air_status_t st = AIR_OK;
    const struct air__ctl_entry *e = writable(path, &st, err, n);
    if (e == NULL)
        return st;
    switch (e->type) {
    case AIR_CTL_BOOL: {
        int b = 0;
        if ((st = air__ctl_json_bool(v, e->path, &b, err, n)) == AIR_OK)
            memcpy(field(p, e), &b, sizeof b);
        return st;
    }
    case AIR_CTL_I64: {
        int64_t i = 0;
        if ((st = air__ctl_json_i64(v, e->path, (int64_t)e->min, (int64_t)e->max, &i, err, n)) ==
            AIR_OK)
            memcpy(field(p, e), &i, sizeof i);
        return st;
    }
    case AIR_CTL_F64: {
        double d = 0;
        if ((st = air__ctl_json_f64(v, e->path, e->min, e->max, &d, err, n)) == AIR_OK)
            memcpy(field(p, e), &d, sizeof d);
        return st;
    }
    case AIR_CTL_STRATEGY: {
        enum air__strategy s;
        if ((st = air__ctl_json_strategy(v, e->path, &s, err, n)) == AIR_OK)
            memcpy(field(p, e), &s, sizeof s);
        return st;
    }
    case AIR_CTL_STR:
        break;
    }
    msg(err, n, "%s: read-only", e->path);
    return AIR_E_READONLY;
}

air_status_t
air__ctl_set_text(struct air__params *p, const char *path, const char *text, char *err, size_t n)
{
    air_status_t st = AIR_OK;
    const struct air__ctl_entry *e = writable(path, &st, err, n);
    if (e == NULL)
        return st;
    if (text == NULL) {
        msg(err, n, "%s: no value", e->path);
        return AIR_E_INVAL;
    }
    cJSON *v = cJSON_Parse(text);
    if (v == NULL) {
        if (e->type == AIR_CTL_STRATEGY)
            return air__ctl_set_str(p, path, text, err, n);
        msg(err, n, "%s: not a JSON value: \"%.64s\"", e->path, text);
        return AIR_E_INVAL;
    }
    st = air__ctl_set_json(p, path, v, err, n);
    cJSON_Delete(v);
    return st;
}

air_status_t
air__ctl_set_f64(struct air__params *p, const char *path, double v, char *err, size_t n)
{
    air_status_t st = AIR_OK;
    const struct air__ctl_entry *e = writable(path, &st, err, n);
    if (e == NULL)
        return st;
    if (e->type == AIR_CTL_F64) {
        if (air__ctl_check_f64(v, e->min, e->max) != 0)
            return range_error(e->path, v, e->min, e->max, err, n);
        memcpy(field(p, e), &v, sizeof v);
        return AIR_OK;
    }
    if (e->type == AIR_CTL_I64) {
        int64_t i = 0;
        if (as_i64(v, &i) != 0) {
            msg(err, n, "%s: expected an integer", e->path);
            return AIR_E_INVAL;
        }
        return air__ctl_set_i64(p, path, i, err, n);
    }
    msg(err, n, "%s: is a %s, not a number", e->path, air__ctl_type_name(e->type));
    return AIR_E_INVAL;
}

air_status_t
air__ctl_set_i64(struct air__params *p, const char *path, int64_t v, char *err, size_t n)
{
    air_status_t st = AIR_OK;
    const struct air__ctl_entry *e = writable(path, &st, err, n);
    if (e == NULL)
        return st;
    if (e->type == AIR_CTL_F64)
        return air__ctl_set_f64(p, path, (double)v, err, n);
    if (e->type != AIR_CTL_I64) {
        msg(err, n, "%s: is a %s, not a number", e->path, air__ctl_type_name(e->type));
        return AIR_E_INVAL;
    }
    if (air__ctl_check_i64(v, (int64_t)e->min, (int64_t)e->max) != 0)
        return range_error(e->path, (double)v, e->min, e->max, err, n);
    memcpy(field(p, e), &v, sizeof v);
    return AIR_OK;
}

air_status_t
air__ctl_set_bool(struct air__params *p, const char *path, int v, char *err, size_t n)
{
    air_status_t st = AIR_OK;
    const struct air__ctl_entry *e = writable(path, &st, err, n);
    if (e == NULL)
        return st;
    if (e->type != AIR_CTL_BOOL) {
        msg(err, n, "%s: is a %s, not a bool", e->path, air__ctl_type_name(e->type));
        return AIR_E_INVAL;
    }
    int b = v ? 1 : 0;
    memcpy(field(p, e), &b, sizeof b);
    return AIR_OK;
}

air_status_t
air__ctl_set_str(struct air__params *p, const char *path, const char *v, char *err, size_t n)
{
    air_status_t st = AIR_OK;
    const struct air__ctl_entry *e = writable(path, &st, err, n);
    if (e == NULL)
        return st;
    if (e->type != AIR_CTL_STRATEGY) {
        msg(err, n, "%s: is a %s, not a string", e->path, air__ctl_type_name(e->type));
        return AIR_E_INVAL;
    }
    enum air__strategy s;
    if (v == NULL || air__strategy_parse(v, &s) != 0)
        return strategy_error(e->path, v ? v : "(null)", err, n);
    memcpy(field(p, e), &s, sizeof s);
    return AIR_OK;
}

/* Append the value of e in p as JSON. */
static void
put_value(air_buf_t *b, const struct air__params *p, const struct air__ctl_entry *e)
{
    char num[40];
    switch (e->type) {
    case AIR_CTL_BOOL: {
        int v;
        memcpy(&v, cfield(p, e), sizeof v);
        air__buf_puts(b, v ? "true" : "false");
        return;
    }
    case AIR_CTL_I64: {
        int64_t v;
        memcpy(&v, cfield(p, e), sizeof v);
        air__buf_printf(b, "%lld", (long long)v);
        return;
    }
    case AIR_CTL_F64: {
        double v;
        memcpy(&v, cfield(p, e), sizeof v);
        fmt_f64(num, sizeof num, v);
        air__buf_puts(b, num);
        return;
    }
    case AIR_CTL_STRATEGY: {
        enum air__strategy v;
        memcpy(&v, cfield(p, e), sizeof v);
        const char *s = air__strategy_name(v);
        air__buf_json_str(b, s, strlen(s));
        return;
    }
    case AIR_CTL_STR: {
        const char *v;
        memcpy(&v, cfield(p, e), sizeof v);
        if (v == NULL)
            air__buf_puts(b, "null");
        else
            air__buf_json_str(b, v, strlen(v));
        return;
    }
    }
}

char *
air__ctl_get_json(const struct air__params *p, const char *path)
{
    const struct air__ctl_entry *e = air__ctl_find(path);
    if (e == NULL)
        return NULL;
    air_buf_t b = AIR_BUF_INIT;
    put_value(&b, p, e);
    return air__buf_steal(&b, NULL);
}

air_status_t
air__ctl_get_f64(const struct air__params *p, const char *path, double *out)
{
    const struct air__ctl_entry *e = air__ctl_find(path);
    if (e == NULL)
        return AIR_E_NONAME;
    switch (e->type) {
    case AIR_CTL_BOOL: {
        int v;
        memcpy(&v, cfield(p, e), sizeof v);
        *out = v;
        return AIR_OK;
    }
    case AIR_CTL_I64: {
        int64_t v;
        memcpy(&v, cfield(p, e), sizeof v);
        *out = (double)v;
        return AIR_OK;
    }
    case AIR_CTL_F64:
        memcpy(out, cfield(p, e), sizeof *out);
        return AIR_OK;
    case AIR_CTL_STRATEGY:
    case AIR_CTL_STR:
        break;
    }
    return AIR_E_INVAL;
}

air_status_t
air__ctl_get_i64(const struct air__params *p, const char *path, int64_t *out)
{
    const struct air__ctl_entry *e = air__ctl_find(path);
    if (e == NULL)
        return AIR_E_NONAME;
    if (e->type == AIR_CTL_I64) {
        memcpy(out, cfield(p, e), sizeof *out);
        return AIR_OK;
    }
    double d;
    air_status_t st = air__ctl_get_f64(p, path, &d);
    if (st != AIR_OK)
        return st;
    *out = (int64_t)llround(d);
    return AIR_OK;
}

air_status_t
air__ctl_get_str(const struct air__params *p, const char *path, const char **out)
{
    const struct air__ctl_entry *e = air__ctl_find(path);
    if (e == NULL)
        return AIR_E_NONAME;
    if (e->type == AIR_CTL_STRATEGY) {
        enum air__strategy v;
        memcpy(&v, cfield(p, e), sizeof v);
        *out = air__strategy_name(v);
        return AIR_OK;
    }
    if (e->type == AIR_CTL_STR) {
        memcpy(out, cfield(p, e), sizeof *out);
        return AIR_OK;
    }
    return AIR_E_INVAL;
}

void
air__ctl_list_json(const struct air__params *p, air_buf_t *out)
{
    char num[40];
    for (size_t i = 0; i < NENTRIES; i++) {
        const struct air__ctl_entry *e = &entries[i];
        if (out->len > 0 && out->data && out->data[out->len - 1] != '[' &&
            out->data[out->len - 1] != ',')
            air__buf_putc(out, ',');
        air__buf_puts(out, "{\"path\":");
        air__buf_json_str(out, e->path, strlen(e->path));
        air__buf_printf(out, ",\"type\":\"%s\"", air__ctl_type_name(e->type));
        if (e->type == AIR_CTL_I64 || e->type == AIR_CTL_F64) {
            fmt_f64(num, sizeof num, e->min);
            air__buf_printf(out, ",\"min\":%s", num);
            fmt_f64(num, sizeof num, e->max);
            air__buf_printf(out, ",\"max\":%s", num);
        } else {
            air__buf_puts(out, ",\"min\":null,\"max\":null");
        }
        air__buf_puts(out, ",\"default\":");
        switch (e->type) {
        case AIR_CTL_BOOL:
            air__buf_puts(out, e->def != 0 ? "true" : "false");
            break;
        case AIR_CTL_I64:
        case AIR_CTL_F64:
            fmt_f64(num, sizeof num, e->def);
            air__buf_puts(out, num);
            break;
        case AIR_CTL_STRATEGY: {
            const char *s = air__strategy_name((enum air__strategy)(int)e->def);
            air__buf_json_str(out, s, strlen(s));
            break;
        }
        case AIR_CTL_STR:
            if (e->def_str)
                air__buf_json_str(out, e->def_str, strlen(e->def_str));
            else
                air__buf_puts(out, "null");
            break;
        }
        air__buf_printf(out, ",\"mode\":\"%s\",\"value\":", air__ctl_mode_name(e->mode));
        put_value(out, p, e);
        air__buf_putc(out, '}');
    }
}

void
air__params_eject_cfg(const struct air__params *p, struct air__eject_cfg *c)
{
    air__eject_cfg_default(c);
    c->consecutive_errors = (uint32_t)p->eject_consecutive_errors;
    c->base_ejection_ms = (uint32_t)p->eject_base_ms;
    c->max_ejection_ms = (uint32_t)p->eject_max_ms;
    c->max_ejection_percent = p->eject_max_percent;
    c->cooldown_default_ms = (uint32_t)p->cooldown_default_ms;
    c->cooldown_max_ms = (uint32_t)p->cooldown_max_ms;
}

void
air__params_weights(const struct air__params *p, struct air__score_weights *w)
{
    w->latency = p->w_latency;
    w->cost = p->w_cost;
    w->health = p->w_health;
    w->load = p->w_load;
}
