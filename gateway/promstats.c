/*
 * promstats.c - the engine's stats JSON (air_stats_json) as Prometheus
 * families, so /metrics carries per-provider and per-deployment figures
 * (requests, errors, tokens, in-flight, health, latency percentiles, ...)
 * without the gateway knowing each field in advance.
 *
 * DESIGN: the mapping is by shape. A top-level number `x` becomes
 * `airouter_engine_x` (known counters get their `_total` names); the
 * `errors` object becomes `airouter_engine_errors_total{class=...}`; an array
 * of objects `things` becomes one family per numeric member,
 * `airouter_thing_<member>{thing="<name>"}` (a nested object's numbers are
 * flattened as `<member>_<sub>`), and a string member named `health` or
 * `state` becomes `airouter_thing_health_state{thing=...,state="..."} 1`.
 * A family is emitted once with all its samples, as the format requires.
 * The `state` object (where limits keep their counts, docs/SCALING.md)
 * becomes `airouter_state_<member>` gauges (its counters `_total`), its
 * `fail` modes `airouter_state_fail_mode{limit,mode} 1`, an
 * `airouter_state_backend_info{backend=...} 1`, and its `leases` array the
 * per-lease families `airouter_lease_<member>{lease="client:alice:rpm"}`.
 */
#include "gwint.h"

#include <cjson/cJSON.h>

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

struct known {
    const char *field, *name, *type, *help;
};

static const struct known top_known[] = {
    {"workers", "airouter_engine_workers", "gauge", "Engine worker threads."},
    {"queued", "airouter_engine_queued_requests", "gauge", "Requests in the ingress queue."},
    {"started", "airouter_engine_requests_started_total", "counter",
     "Requests the engine started."},
    {"completed", "airouter_engine_requests_completed_total", "counter",
     "Requests the engine completed."},
    {"ok", "airouter_engine_requests_ok_total", "counter", "Requests completed successfully."},
    {"failed", "airouter_engine_requests_failed_total", "counter",
     "Requests completed with an error."},
    {"attempts", "airouter_engine_attempts_total", "counter", "Upstream attempts made."},
    {"retries", "airouter_engine_retries_total", "counter",
     "Attempts beyond the first (retries and failovers)."},
    {"hedges", "airouter_engine_hedges_total", "counter", "Hedged (duplicate) attempts started."},
    {"in_flight", "airouter_engine_in_flight_requests", "gauge",
     "Requests in flight in the engine."},
    {"inflight", "airouter_engine_in_flight_requests", "gauge",
     "Requests in flight in the engine."},
};

static const struct known member_known[] = {
    {"requests", "requests_total", "counter", "Upstream requests"},
    {"errors", "errors_total", "counter", "Upstream errors"},
    {"prompt_tokens", "prompt_tokens_total", "counter", "Prompt tokens reported"},
    {"completion_tokens", "completion_tokens_total", "counter", "Completion tokens reported"},
    {"cost_usd", "cost_usd_total", "counter", "Cost in US dollars"},
    {"hedges", "hedges_total", "counter", "Hedged attempts"},
    {"failures", "failures_total", "counter", "Failed upstream requests"},
    {"tokens_in", "tokens_in_total", "counter", "Prompt tokens reported"},
    {"tokens_out", "tokens_out_total", "counter", "Completion tokens reported"},
};

static void
sanitize(char *out, size_t n, const char *in)
{
    size_t j = 0;
    for (; *in && j + 1 < n; in++)
        out[j++] = isalnum((unsigned char)*in) ? (char)tolower((unsigned char)*in) : '_';
    out[j] = '\0';
}

static void
num(air_buf_t *b, double v)
{
    if (v == floor(v) && fabs(v) < 1e15)
        air__buf_printf(b, "%.0f", v);
    else
        air__buf_printf(b, "%.9g", v);
}

static int
is_num(const cJSON *v)
{
    return cJSON_IsNumber(v) || cJSON_IsBool(v);
}

static double
val(const cJSON *v)
{
    return cJSON_IsBool(v) ? (cJSON_IsTrue(v) ? 1 : 0) : v->valuedouble;
}

static const char *
name_of(const cJSON *o)
{
    static const char *const keys[] = {"name", "id", "deployment", "provider", "model"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, keys[i]);
        if (cJSON_IsString(v))
            return v->valuestring;
    }
    return NULL;
}

/* Member `m` (or m.sub) of an element, as a number; NULL when absent. */
static const cJSON *
member(const cJSON *el, const char *m, const char *sub)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(el, m);
    if (sub != NULL)
        v = cJSON_IsObject(v) ? cJSON_GetObjectItemCaseSensitive(v, sub) : NULL;
    return v != NULL && is_num(v) ? v : NULL;
}

/* Whether family (m, sub) was already emitted for an earlier element. */
static int
seen_before(const cJSON *arr, const cJSON *upto, const char *m, const char *sub)
{
    for (const cJSON *el = arr->child; el != NULL && el != upto; el = el->next)
        if (cJSON_IsObject(el) && name_of(el) != NULL && member(el, m, sub) != NULL)
            return 1;
    return 0;
}

static void
emit_family(air_buf_t *b, const cJSON *arr, const char *single, const char *m, const char *sub)
{
    char fam[160], sm[64], ss[64];
    sanitize(sm, sizeof sm, m);
    const struct known *k = NULL;
    if (sub == NULL)
        for (size_t i = 0; i < sizeof member_known / sizeof member_known[0]; i++)
            if (strcmp(member_known[i].field, m) == 0)
                k = &member_known[i];
    if (sub != NULL) {
        sanitize(ss, sizeof ss, sub);
        snprintf(fam, sizeof fam, "airouter_%s_%s_%s", single, sm, ss);
    } else {
        snprintf(fam, sizeof fam, "airouter_%s_%s", single, k != NULL ? k->name : sm);
    }
    if (k != NULL)
        air__buf_printf(b, "# HELP %s %s per %s (engine stats).\n# TYPE %s counter\n", fam, k->help,
                        single, fam);
    else
        air__buf_printf(b,
                        "# HELP %s Engine stats field %s%s%s of each %s (see GET "
                        "/admin/stats).\n# TYPE %s gauge\n",
                        fam, m, sub ? "." : "", sub ? sub : "", single, fam);
    for (const cJSON *el = arr->child; el != NULL; el = el->next) {
        const char *nm = cJSON_IsObject(el) ? name_of(el) : NULL;
        const cJSON *v = nm != NULL ? member(el, m, sub) : NULL;
        if (v == NULL)
            continue;
        air__buf_printf(b, "%s{%s=", fam, single);
        air__gw_prom_label(b, nm);
        air__buf_puts(b, "} ");
        num(b, val(v));
        air__buf_putc(b, '\n');
    }
}

static void
emit_array(air_buf_t *b, const char *arrname, const cJSON *arr)
{
    char single[64];
    sanitize(single, sizeof single, arrname);
    size_t l = strlen(single);
    if (l > 1 && single[l - 1] == 's')
        single[l - 1] = '\0';
    /* Health / state strings. */
    int hdr = 0;
    for (const cJSON *el = arr->child; el != NULL; el = el->next) {
        const char *nm = cJSON_IsObject(el) ? name_of(el) : NULL;
        const cJSON *h = nm ? cJSON_GetObjectItemCaseSensitive(el, "health") : NULL;
        if (!cJSON_IsString(h))
            h = nm ? cJSON_GetObjectItemCaseSensitive(el, "state") : NULL;
        if (!cJSON_IsString(h))
            continue;
        if (!hdr) {
            air__buf_printf(b,
                            "# HELP airouter_%s_health_state Health state of each %s (1 for its "
                            "current state).\n# TYPE airouter_%s_health_state gauge\n",
                            single, single, single);
            hdr = 1;
        }
        air__buf_printf(b, "airouter_%s_health_state{%s=", single, single);
        air__gw_prom_label(b, nm);
        air__buf_puts(b, ",state=");
        air__gw_prom_label(b, h->valuestring);
        air__buf_puts(b, "} 1\n");
    }
    /* One family per numeric member (one level of nesting). */
    for (const cJSON *el = arr->child; el != NULL; el = el->next) {
        if (!cJSON_IsObject(el) || name_of(el) == NULL)
            continue;
        for (const cJSON *m = el->child; m != NULL; m = m->next) {
            if (is_num(m)) {
                if (!seen_before(arr, el, m->string, NULL))
                    emit_family(b, arr, single, m->string, NULL);
            } else if (cJSON_IsObject(m)) {
                for (const cJSON *s = m->child; s != NULL; s = s->next)
                    if (is_num(s) && !seen_before(arr, el, m->string, s->string))
                        emit_family(b, arr, single, m->string, s->string);
            }
        }
    }
}

static void
emit_state(air_buf_t *b, const cJSON *st)
{
    static const char *const counters[] = {"syncs", "sync_errors", "transitions", "connects",
                                           "dropped_batches"};
    const cJSON *be = cJSON_GetObjectItemCaseSensitive(st, "backend");
    if (cJSON_IsString(be)) {
        air__buf_puts(b, "# HELP airouter_state_backend_info Where rate limits and budgets keep "
                         "their counts.\n# TYPE airouter_state_backend_info gauge\n"
                         "airouter_state_backend_info{backend=");
        air__gw_prom_label(b, be->valuestring);
        air__buf_puts(b, "} 1\n");
    }
    for (const cJSON *m = st->child; m != NULL; m = m->next) {
        if (m->string == NULL)
            continue;
        if (is_num(m)) {
            char sn[64];
            sanitize(sn, sizeof sn, m->string);
            int ctr = 0;
            for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++)
                ctr |= strcmp(counters[i], m->string) == 0;
            const char *sfx = ctr ? "_total" : "";
            air__buf_printf(b,
                            "# HELP airouter_state_%s%s State backend field %s (see GET "
                            "/admin/stats).\n# TYPE airouter_state_%s%s %s\nairouter_state_%s%s ",
                            sn, sfx, m->string, sn, sfx, ctr ? "counter" : "gauge", sn, sfx);
            num(b, val(m));
            air__buf_putc(b, '\n');
        } else if (cJSON_IsArray(m) && strlen(m->string) > 1) {
            emit_array(b, m->string, m);
        } else if (cJSON_IsObject(m) && strcmp(m->string, "fail") == 0) {
            /* {"rate_limits":"open",...}: one sample per limit type. */
            air__buf_puts(b, "# HELP airouter_state_fail_mode What each limit type does while "
                             "the state store is unreachable (1 for its mode).\n"
                             "# TYPE airouter_state_fail_mode gauge\n");
            for (const cJSON *f = m->child; f != NULL; f = f->next) {
                if (!cJSON_IsString(f) || f->string == NULL)
                    continue;
                air__buf_puts(b, "airouter_state_fail_mode{limit=");
                air__gw_prom_label(b, f->string);
                air__buf_puts(b, ",mode=");
                air__gw_prom_label(b, f->valuestring);
                air__buf_puts(b, "} 1\n");
            }
        }
    }
}

/* The engine's per-tag totals ({"team=a":{"requests":..,...}}): one family
 * per figure, labelled by tag (at most 64 tags per worker plus "_other", so
 * the label set stays bounded). */
static void
emit_tags(air_buf_t *b, const cJSON *tags)
{
    static const struct {
        const char *field, *name, *type, *help;
    } fams[] = {
        {"requests", "airouter_tag_requests_total", "counter", "Requests finished, by tag."},
        {"failed", "airouter_tag_failed_total", "counter", "Requests that failed, by tag."},
        {"prompt_tokens", "airouter_tag_prompt_tokens_total", "counter", "Prompt tokens, by tag."},
        {"completion_tokens", "airouter_tag_completion_tokens_total", "counter",
         "Completion tokens, by tag."},
        {"cost_usd", "airouter_tag_cost_usd_total", "counter", "Cost in USD, by tag."},
    };
    if (tags->child == NULL)
        return;
    for (size_t f = 0; f < sizeof fams / sizeof fams[0]; f++) {
        air__buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", fams[f].name, fams[f].help, fams[f].name,
                        fams[f].type);
        for (const cJSON *t = tags->child; t != NULL; t = t->next) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(t, fams[f].field);
            if (t->string == NULL || !is_num(v))
                continue;
            air__buf_printf(b, "%s{tag=", fams[f].name);
            air__gw_prom_label(b, t->string);
            air__buf_puts(b, "} ");
            num(b, val(v));
            air__buf_putc(b, '\n');
        }
    }
}

void
air__gw_prom_engine_stats(air_buf_t *b, const char *stats_json)
{
    cJSON *j = cJSON_Parse(stats_json);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return;
    }
    int emitted_inflight = 0;
    for (const cJSON *it = j->child; it != NULL; it = it->next) {
        if (is_num(it)) {
            const struct known *k = NULL;
            for (size_t i = 0; i < sizeof top_known / sizeof top_known[0]; i++)
                if (strcmp(top_known[i].field, it->string) == 0)
                    k = &top_known[i];
            char fam[128], sn[64];
            if (k != NULL && strcmp(k->name, "airouter_engine_in_flight_requests") == 0) {
                if (emitted_inflight++)
                    continue;
            }
            sanitize(sn, sizeof sn, it->string);
            snprintf(fam, sizeof fam, "%s", k != NULL ? k->name : "");
            if (k == NULL)
                snprintf(fam, sizeof fam, "airouter_engine_%s", sn);
            air__buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s ", fam,
                            k != NULL ? k->help : "Engine stats field (see GET /admin/stats).", fam,
                            k != NULL ? k->type : "gauge", fam);
            num(b, val(it));
            air__buf_putc(b, '\n');
        } else if (cJSON_IsObject(it) && strcmp(it->string, "errors") == 0) {
            air__buf_puts(b, "# HELP airouter_engine_errors_total Requests the engine completed "
                             "with an error, by error class.\n"
                             "# TYPE airouter_engine_errors_total counter\n");
            for (const cJSON *e = it->child; e != NULL; e = e->next) {
                if (!is_num(e))
                    continue;
                air__buf_puts(b, "airouter_engine_errors_total{class=");
                air__gw_prom_label(b, e->string);
                air__buf_puts(b, "} ");
                num(b, val(e));
                air__buf_putc(b, '\n');
            }
        } else if (cJSON_IsObject(it) && strcmp(it->string, "state") == 0) {
            emit_state(b, it);
        } else if (cJSON_IsObject(it) && strcmp(it->string, "tags") == 0) {
            emit_tags(b, it);
        } else if (cJSON_IsArray(it) && strlen(it->string) > 1) {
            emit_array(b, it->string, it);
        }
    }
    cJSON_Delete(j);
}
