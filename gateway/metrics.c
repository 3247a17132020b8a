/*
 * metrics.c - lock-free request metrics (see metrics.h).
 *
 * DESIGN: a slot's state goes EMPTY -> CLAIMED (one CAS by the thread that
 * inserts) -> READY (a release store after the key strings are written).
 * Lookups compare the hash first and wait out the short CLAIMED window of a
 * slot whose hash matches. Slots are never removed, so a pointer to one
 * stays valid for the table's life. Histograms keep cumulative counts at
 * render time only: each observation increments exactly one bucket.
 */
#include "metrics.h"

#include "alloc.h"

#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define NSLOTS  512u /* power of two */
#define NSTATUS 16
#define KEYLEN  96
#define NB_LAT  14
#define NB_OVH  12

static const double lat_buckets[NB_LAT] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                           1,     2.5,  5,     10,   30,  60,   120};
static const double ovh_buckets[NB_OVH] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                           0.01,   0.025,   0.05,   0.1,   0.25,   1};

enum { S_EMPTY, S_CLAIMED, S_READY };

struct hist {
    atomic_uint_fast64_t b[NB_LAT + 1]; /* last: +Inf only */
    atomic_uint_fast64_t sum_us;
    atomic_uint_fast64_t count;
};

struct series {
    atomic_int state;
    uint64_t hash;
    char route[KEYLEN], provider[KEYLEN], model[KEYLEN];
    atomic_int status_code[NSTATUS];
    atomic_uint_fast64_t status_count[NSTATUS];
    struct hist dur, ttft, ovh;
    atomic_uint_fast64_t tok_in, tok_out, cost_nusd, retries, streams;
};

struct air__gw_metrics {
    struct series slots[NSLOTS];
    struct series other;
};

struct air__gw_metrics *
air__gw_metrics_new(void)
{
    struct air__gw_metrics *m = air__calloc(1, sizeof *m);
    if (m == NULL)
        return NULL;
    /* calloc zeroes: every atomic starts at 0 (S_EMPTY). */
    snprintf(m->other.route, KEYLEN, "_other");
    atomic_store_explicit(&m->other.state, S_READY, memory_order_relaxed);
    return m;
}

void
air__gw_metrics_free(struct air__gw_metrics *m)
{
    air__free(m);
}

static uint64_t
fnv(uint64_t h, const char *s)
{
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return (h ^ 0xff) * 1099511628211ull;
}

static void
copy_key(char *dst, const char *src)
{
    snprintf(dst, KEYLEN, "%s", src);
}

static int
same(const struct series *s, const char *r, const char *p, const char *mo)
{
    return strncmp(s->route, r, KEYLEN - 1) == 0 && strncmp(s->provider, p, KEYLEN - 1) == 0 &&
           strncmp(s->model, mo, KEYLEN - 1) == 0;
}

static struct series *
find(struct air__gw_metrics *m, const char *r, const char *p, const char *mo)
{
    uint64_t h = fnv(fnv(fnv(1469598103934665603ull, r), p), mo);
    for (uint32_t i = 0; i < NSLOTS; i++) {
        struct series *s = &m->slots[(h + i) & (NSLOTS - 1)];
        int st = atomic_load_explicit(&s->state, memory_order_acquire);
        if (st == S_EMPTY) {
            int exp = S_EMPTY;
            if (atomic_compare_exchange_strong_explicit(
                    &s->state, &exp, S_CLAIMED, memory_order_acq_rel, memory_order_acquire)) {
                s->hash = h;
                copy_key(s->route, r);
                copy_key(s->provider, p);
                copy_key(s->model, mo);
                /* release: the key strings are visible before READY is. */
                atomic_store_explicit(&s->state, S_READY, memory_order_release);
                return s;
            }
            st = exp;
        }
        while (st == S_CLAIMED) {
            sched_yield();
            st = atomic_load_explicit(&s->state, memory_order_acquire);
        }
        if (s->hash == h && same(s, r, p, mo))
            return s;
    }
    return &m->other;
}

static void
inc(atomic_uint_fast64_t *c, uint64_t by)
{
    atomic_fetch_add_explicit(c, by, memory_order_relaxed);
}

static void
observe(struct hist *h, const double *bounds, int n, uint64_t us)
{
    double s = (double)us / 1e6;
    int i = 0;
    while (i < n && s > bounds[i])
        i++;
    inc(&h->b[i], 1);
    inc(&h->sum_us, us);
    inc(&h->count, 1);
}

void
air__gw_metrics_record(struct air__gw_metrics *m, const struct air__gw_obs *o)
{
    struct series *s =
        find(m, o->route ? o->route : "", o->provider ? o->provider : "", o->model ? o->model : "");
    int slot = NSTATUS - 1; /* the last slot also takes overflow */
    for (int i = 0; i < NSTATUS; i++) {
        int code = atomic_load_explicit(&s->status_code[i], memory_order_acquire);
        if (code == o->status) {
            slot = i;
            break;
        }
        if (code == 0) {
            int exp = 0;
            if (atomic_compare_exchange_strong_explicit(&s->status_code[i], &exp, o->status,
                                                        memory_order_acq_rel,
                                                        memory_order_acquire) ||
                exp == o->status) {
                slot = i;
                break;
            }
        }
    }
    inc(&s->status_count[slot], 1);
    observe(&s->dur, lat_buckets, NB_LAT, o->latency_us);
    if (o->ttft_us > 0)
        observe(&s->ttft, lat_buckets, NB_LAT, o->ttft_us);
    if (o->engine) {
        uint64_t ovh = o->engine_us > o->upstream_us ? o->engine_us - o->upstream_us : 0;
        observe(&s->ovh, ovh_buckets, NB_OVH, ovh);
    }
    if (o->tokens_in)
        inc(&s->tok_in, o->tokens_in);
    if (o->tokens_out)
        inc(&s->tok_out, o->tokens_out);
    if (o->cost_usd > 0)
        inc(&s->cost_nusd, (uint64_t)(o->cost_usd * 1e9 + 0.5));
    if (o->attempts > 1)
        inc(&s->retries, o->attempts - 1);
    if (o->streamed)
        inc(&s->streams, 1);
}

void
air__gw_prom_label(air_buf_t *b, const char *v)
{
    air__buf_putc(b, '"');
    for (; v != NULL && *v; v++) {
        if (*v == '\\')
            air__buf_puts(b, "\\\\");
        else if (*v == '"')
            air__buf_puts(b, "\\\"");
        else if (*v == '\n')
            air__buf_puts(b, "\\n");
        else
            air__buf_putc(b, *v);
    }
    air__buf_putc(b, '"');
}

static void
labels(air_buf_t *b, const struct series *s)
{
    air__buf_puts(b, "route=");
    air__gw_prom_label(b, s->route);
    air__buf_puts(b, ",provider=");
    air__gw_prom_label(b, s->provider);
    air__buf_puts(b, ",model=");
    air__gw_prom_label(b, s->model);
}

static uint64_t
ld(atomic_uint_fast64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

static void
family(air_buf_t *b, const char *name, const char *type, const char *help)
{
    air__buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Each ready series, the overflow one last (when used). */
static struct series *
next_series(struct air__gw_metrics *m, uint32_t *i)
{
    while (*i < NSLOTS) {
        struct series *s = &m->slots[(*i)++];
        if (atomic_load_explicit(&s->state, memory_order_acquire) == S_READY)
            return s;
    }
    if (*i == NSLOTS) {
        (*i)++;
        if (ld(&m->other.dur.count) > 0)
            return &m->other;
    }
    return NULL;
}

static void
render_hist(air_buf_t *b, struct air__gw_metrics *m, const char *name, size_t off,
            const double *bounds, int n)
{
    uint32_t it = 0;
    struct series *s;
    while ((s = next_series(m, &it)) != NULL) {
        struct hist *h = (struct hist *)(void *)((char *)s + off);
        uint64_t count = ld(&h->count);
        if (count == 0)
            continue;
        uint64_t cum = 0;
        for (int i = 0; i <= n; i++) {
            cum += ld(&h->b[i]);
            air__buf_printf(b, "%s_bucket{", name);
            labels(b, s);
            if (i < n)
                air__buf_printf(b, ",le=\"%g\"} %llu\n", bounds[i], (unsigned long long)cum);
            else
                air__buf_printf(b, ",le=\"+Inf\"} %llu\n", (unsigned long long)count);
        }
        air__buf_printf(b, "%s_sum{", name);
        labels(b, s);
        air__buf_printf(b, "} %.6f\n%s_count{", (double)ld(&h->sum_us) / 1e6, name);
        labels(b, s);
        air__buf_printf(b, "} %llu\n", (unsigned long long)count);
    }
}

static void
render_counter(air_buf_t *b, struct air__gw_metrics *m, const char *name, size_t off,
               const char *extra, double scale)
{
    uint32_t it = 0;
    struct series *s;
    while ((s = next_series(m, &it)) != NULL) {
        uint64_t v = ld((atomic_uint_fast64_t *)(void *)((char *)s + off));
        if (v == 0)
            continue;
        air__buf_printf(b, "%s{", name);
        labels(b, s);
        if (scale != 1)
            air__buf_printf(b, "%s} %.9f\n", extra, (double)v * scale);
        else
            air__buf_printf(b, "%s} %llu\n", extra, (unsigned long long)v);
    }
}

void
air__gw_metrics_render(struct air__gw_metrics *m, air_buf_t *b)
{
    uint32_t it = 0;
    struct series *s;
    family(b, "airouter_requests_total", "counter",
           "Chat completion requests answered by the gateway, by route, provider, upstream "
           "model and HTTP status (499: the client went away).");
    while ((s = next_series(m, &it)) != NULL) {
        for (int i = 0; i < NSTATUS; i++) {
            int code = atomic_load_explicit(&s->status_code[i], memory_order_acquire);
            uint64_t v = ld(&s->status_count[i]);
            if (code == 0 || v == 0)
                continue;
            air__buf_puts(b, "airouter_requests_total{");
            labels(b, s);
            air__buf_printf(b, ",status=\"%d\"} %llu\n", code, (unsigned long long)v);
        }
    }
    family(b, "airouter_request_duration_seconds", "histogram",
           "Time from the request's arrival at the gateway to its last byte being handed to "
           "the client.");
    render_hist(b, m, "airouter_request_duration_seconds", offsetof(struct series, dur),
                lat_buckets, NB_LAT);
    family(b, "airouter_time_to_first_token_seconds", "histogram",
           "Time from submission to the first byte of the winning attempt's response body "
           "(streams: first content chunk).");
    render_hist(b, m, "airouter_time_to_first_token_seconds", offsetof(struct series, ttft),
                lat_buckets, NB_LAT);
    family(b, "airouter_router_overhead_seconds", "histogram",
           "Engine latency minus the time spent in upstream attempts: queueing, routing, "
           "translation and backoff waits.");
    render_hist(b, m, "airouter_router_overhead_seconds", offsetof(struct series, ovh), ovh_buckets,
                NB_OVH);
    family(b, "airouter_tokens_total", "counter",
           "Tokens reported by providers, direction=\"in\" (prompt) or \"out\" (completion).");
    render_counter(b, m, "airouter_tokens_total", offsetof(struct series, tok_in),
                   ",direction=\"in\"", 1);
    render_counter(b, m, "airouter_tokens_total", offsetof(struct series, tok_out),
                   ",direction=\"out\"", 1);
    family(b, "airouter_cost_usd_total", "counter",
           "Cost of the requests in US dollars, from reported usage and configured prices.");
    render_counter(b, m, "airouter_cost_usd_total", offsetof(struct series, cost_nusd), "", 1e-9);
    family(b, "airouter_retries_total", "counter",
           "Attempts beyond the first (retries and failovers).");
    render_counter(b, m, "airouter_retries_total", offsetof(struct series, retries), "", 1);
    family(b, "airouter_streams_total", "counter", "Requests answered as a stream (SSE).");
    render_counter(b, m, "airouter_streams_total", offsetof(struct series, streams), "", 1);
}
