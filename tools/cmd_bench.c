/*
 * cmd_bench.c - `airouter bench`: throughput and added latency of the
 * router against a direct libcurl baseline, measured in the same run
 * against the same mock provider(s).
 *
 * DESIGN
 * Two phases run back to back on the same in-process mocks: the baseline
 * (plain libcurl multi on one thread, the floor any HTTP client pays) and the
 * router (air_submit -> worker -> mock -> callback). Both use the same load
 * shape: a closed loop with --concurrency requests in flight, or an open
 * loop at --rate requests/s where latency is measured from the intended
 * send time, so queueing delay is not hidden (coordinated omission).
 * Latencies are recorded per request and reduced to percentiles after the
 * phase; CPU time is the process's (mock included, identical in both phases,
 * so the difference is what the router costs).
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "airouter.h"
#include "alloc.h"
#include "buf.h"
#include "cmds.h"
#include "gateway.h"
#include "mock.h"

#define MAX_PROVIDERS 16

struct opts {
    const char *mode; /* "engine" */
    const char *upstream;
    unsigned concurrency;
    double rate;
    double duration_s;
    double warmup_s;
    unsigned long requests;
    unsigned providers;
    unsigned latency_ms;
    unsigned jitter_ms;
    double tail_rate;
    unsigned tail_ms;
    int hedge_ms;      /* -1: no hedge phase; else hedge delay (0 = adaptive p95) */
    unsigned mock_threads;
    int http_mode; /* --mode gateway: AIR_GW_HTTP_*, 0 = the gateway's default */
    unsigned spin_us;
    const char *format; /* upstream wire format: openai (default), anthropic, gemini */
    const char *proxy_url; /* --mode proxy: drive this URL (a proxy in front of the mock) */
    const char *strategy;
    double fail_rate;
    int stream;
    unsigned chunks;
    unsigned workers;
    int json;
    int no_baseline;
    const char *state_redis; /* --state-redis URL: extra phase with the Redis state backend */
};

struct phase {
    const char *name;
    uint64_t *lat_us; /* recorded latencies */
    size_t nlat;
    size_t cap;
    uint64_t requests;
    uint64_t errors;
    double elapsed_s;
    double cpu_s;
    double rps;
    uint64_t p50, p90, p99, p999;
};

static uint64_t
mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static double
cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static long
peak_rss_bytes(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss * 1024L;
}

static long
current_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, rss = 0;
    if (f == NULL)
        return 0;
    if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
        rss = 0;
    fclose(f);
    return rss * sysconf(_SC_PAGESIZE);
}

static int
phase_record(struct phase *p, uint64_t us)
{
    if (p->nlat == p->cap) {
        size_t ncap = p->cap ? p->cap * 2 : 65536;
        uint64_t *n = air__realloc(p->lat_us, ncap * sizeof *n);
        if (n == NULL)
            return -1;
        p->lat_us = n;
        p->cap = ncap;
    }
    p->lat_us[p->nlat++] = us;
    return 0;
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t
pct(const uint64_t *v, size_t n, double q)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)ceil(q * (double)n) - 1;
    if (i >= n)
        i = n - 1;
    return v[i];
}

static void
phase_finish(struct phase *p)
{
    qsort(p->lat_us, p->nlat, sizeof *p->lat_us, cmp_u64);
    p->p50 = pct(p->lat_us, p->nlat, 0.50);
    p->p90 = pct(p->lat_us, p->nlat, 0.90);
    p->p99 = pct(p->lat_us, p->nlat, 0.99);
    p->p999 = pct(p->lat_us, p->nlat, 0.999);
    p->rps = p->elapsed_s > 0 ? (double)p->requests / p->elapsed_s : 0;
}

static char *
make_body(const struct opts *o)
{
    char *b = NULL;
    air_buf_t buf = AIR_BUF_INIT;
    air__buf_printf(&buf,
                    "{\"model\":\"bench\",\"messages\":[{\"role\":\"system\",\"content\":\"You "
                    "are a helpful assistant.\"},{\"role\":\"user\",\"content\":\"Write one "
                    "short sentence about routers.\"}],\"max_tokens\":64%s}",
                    o->stream ? ",\"stream\":true,\"stream_options\":{\"include_usage\":true}"
                              : "");
    b = air__buf_steal(&buf, NULL);
    return b;
}

/* ------------------------------------------------------------- progress */

struct progress {
    _Atomic uint64_t done;
    _Atomic uint64_t errors;
    _Atomic uint64_t last_us;
};

static void
progress_line(const char *name, struct progress *pr, uint64_t t0, int tty)
{
    if (!tty)
        return;
    double el = (double)(mono_us() - t0) / 1e6;
    uint64_t d = atomic_load(&pr->done);
    fprintf(stderr, "\r%-8s %6.1fs  %9llu req  %9.0f req/s  last %6.2f ms  errors %llu   ", name,
            el, (unsigned long long)d, el > 0 ? (double)d / el : 0.0,
            (double)atomic_load(&pr->last_us) / 1000.0,
            (unsigned long long)atomic_load(&pr->errors));
    fflush(stderr);
}

/* ------------------------------------------------------------- baseline */

struct bconn {
    CURL *e;
    uint64_t t_intended;
    int busy;
};

static size_t
sink(char *p, size_t s, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return s * n;
}

static int
run_baseline(const struct opts *o, const char *url, const char *body, struct phase *ph, int tty)
{
    CURLM *m = curl_multi_init();
    unsigned conc = o->concurrency;
    struct bconn *c = air__calloc(conc, sizeof *c);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    h = curl_slist_append(h, "Expect:");
    if (o->format != NULL && strcmp(o->format, "anthropic") == 0) {
        h = curl_slist_append(h, "x-api-key: sk-bench");
        h = curl_slist_append(h, "anthropic-version: 2023-06-01");
    } else if (o->format != NULL && strcmp(o->format, "gemini") == 0) {
        h = curl_slist_append(h, "x-goog-api-key: sk-bench");
    }
    if (m == NULL || c == NULL || h == NULL)
        return -1;
    for (unsigned i = 0; i < conc; i++) {
        c[i].e = curl_easy_init();
        curl_easy_setopt(c[i].e, CURLOPT_URL, url);
        curl_easy_setopt(c[i].e, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c[i].e, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(c[i].e, CURLOPT_WRITEFUNCTION, sink);
        curl_easy_setopt(c[i].e, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c[i].e, CURLOPT_PRIVATE, &c[i]);
        curl_easy_setopt(c[i].e, CURLOPT_TCP_NODELAY, 1L);
    }
    struct progress pr = {0};
    uint64_t t_start = mono_us();
    uint64_t warm_end = t_start + (uint64_t)(o->warmup_s * 1e6);
    uint64_t end = warm_end + (uint64_t)(o->duration_s * 1e6);
    uint64_t t_meas = 0;
    double cpu0 = 0;
    uint64_t measured = 0;
    double interval_us = o->rate > 0 ? 1e6 / o->rate : 0;
    uint64_t next_send = t_start;
    uint64_t last_prog = t_start;
    int in_flight = 0;
    for (;;) {
        uint64_t now = mono_us();
        if (t_meas == 0 && now >= warm_end) {
            t_meas = now;
            cpu0 = cpu_seconds();
        }
        int stop_issue = now >= end || (o->requests && measured >= o->requests);
        /* Issue. */
        for (unsigned i = 0; i < conc && !stop_issue; i++) {
            if (c[i].busy)
                continue;
            if (o->rate > 0) {
                if (now < next_send)
                    break;
                c[i].t_intended = next_send;
                next_send += (uint64_t)interval_us;
            } else {
                c[i].t_intended = now;
            }
            c[i].busy = 1;
            curl_multi_add_handle(m, c[i].e);
            in_flight++;
        }
        if (stop_issue && in_flight == 0)
            break;
        int running;
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        int reaped = 0;
        while ((msg = curl_multi_info_read(m, &left)) != NULL) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            char *priv;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
            struct bconn *bc = (void *)priv;
            long code = 0;
            curl_easy_getinfo(bc->e, CURLINFO_RESPONSE_CODE, &code);
            uint64_t t = mono_us();
            int err = msg->data.result != CURLE_OK || code != 200;
            curl_multi_remove_handle(m, bc->e);
            bc->busy = 0;
            in_flight--;
            reaped++;
            atomic_fetch_add(&pr.done, 1);
            atomic_store(&pr.last_us, t - bc->t_intended);
            if (t_meas != 0 && bc->t_intended >= t_meas) {
                measured++;
                ph->requests++;
                if (err)
                    ph->errors++;
                else
                    phase_record(ph, t - bc->t_intended);
            }
        }
        if (tty && mono_us() - last_prog > 250000) {
            progress_line("baseline", &pr, t_start, tty);
            last_prog = mono_us();
        }
        if (reaped > 0 && o->rate <= 0)
            continue; /* closed loop: refill the freed slots at once */
        int timeout = 100;
        if (o->rate > 0) {
            uint64_t n2 = mono_us();
            timeout = next_send > n2 ? (int)((next_send - n2) / 1000) : 0;
        }
        curl_multi_poll(m, NULL, 0, timeout, NULL);
    }
    ph->elapsed_s = (double)(mono_us() - (t_meas ? t_meas : t_start)) / 1e6;
    ph->cpu_s = cpu_seconds() - cpu0;
    if (tty)
        fputc('\n', stderr);
    for (unsigned i = 0; i < conc; i++)
        curl_easy_cleanup(c[i].e);
    curl_slist_free_all(h);
    air__free(c);
    curl_multi_cleanup(m);
    return 0;
}

/* --------------------------------------------------------------- router */

struct rstate {
    air_t *r;
    const struct opts *o;
    const char *body;
    size_t body_len;
    struct phase *ph;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    _Atomic uint64_t t_meas;
    uint64_t end;
    _Atomic uint64_t measured;
    _Atomic int in_flight;
    _Atomic int stop;
    _Atomic uint64_t submit_fail;
    struct progress pr;
};

struct rticket {
    struct rstate *s;
    uint64_t t_intended;
};

static void r_done(const air_resp_t *resp, void *ud);

static int
r_submit(struct rstate *s, uint64_t intended)
{
    air_req_t *q = NULL;
    if (air_req_new(s->r, s->body, s->body_len, &q, NULL, 0) != AIR_OK)
        return -1;
    struct rticket *t = air__malloc(sizeof *t);
    if (t == NULL) {
        air_req_free(q);
        return -1;
    }
    t->s = s;
    t->t_intended = intended;
    if (air_req_set_done(q, r_done, t) != AIR_OK ||
        (s->o->state_redis != NULL && air_req_set_client_key(q, "bench") != AIR_OK)) {
        air_req_free(q);
        air__free(t);
        return -1;
    }
    atomic_fetch_add(&s->in_flight, 1);
    if (air_submit(s->r, q, NULL) != AIR_OK) {
        atomic_fetch_sub(&s->in_flight, 1);
        atomic_fetch_add(&s->submit_fail, 1);
        air__free(t);
        return -1;
    }
    return 0;
}

static void
r_done(const air_resp_t *resp, void *ud)
{
    struct rticket *t = ud;
    struct rstate *s = t->s;
    uint64_t now = mono_us();
    int err = air_resp_status(resp) != AIR_OK;
    atomic_fetch_add(&s->pr.done, 1);
    atomic_store(&s->pr.last_us, now - t->t_intended);
    if (err)
        atomic_fetch_add(&s->pr.errors, 1);
    uint64_t tm = atomic_load(&s->t_meas);
    pthread_mutex_lock(&s->mu);
    if (tm != 0 && t->t_intended >= tm) {
        s->ph->requests++;
        if (err)
            s->ph->errors++;
        else
            phase_record(s->ph, now - t->t_intended);
        atomic_fetch_add(&s->measured, 1);
    }
    pthread_mutex_unlock(&s->mu);
    air__free(t);
    int stop = now >= s->end ||
               (s->o->requests && atomic_load(&s->measured) >= s->o->requests);
    if (stop)
        atomic_store(&s->stop, 1);
    /* Closed loop: replace the finished request from the callback. */
    if (!stop && s->o->rate <= 0)
        r_submit(s, now);
    if (atomic_fetch_sub(&s->in_flight, 1) == 1) {
        pthread_mutex_lock(&s->mu);
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
    }
}

static int
run_router(const struct opts *o, air_t *r, const char *body, struct phase *ph, int tty,
           long *rss_delta)
{
    struct rstate s;
    memset(&s, 0, sizeof s);
    s.r = r;
    s.o = o;
    s.body = body;
    s.body_len = strlen(body);
    s.ph = ph;
    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.cv, NULL);
    uint64_t t_start = mono_us();
    uint64_t warm_end = t_start + (uint64_t)(o->warmup_s * 1e6);
    s.end = warm_end + (uint64_t)(o->duration_s * 1e6);
    long rss0 = current_rss_bytes();
    long rss_max = rss0;
    double cpu0 = 0;
    if (o->rate <= 0) {
        for (unsigned i = 0; i < o->concurrency; i++)
            r_submit(&s, mono_us());
    }
    uint64_t next_send = t_start;
    double interval_us = o->rate > 0 ? 1e6 / o->rate : 0;
    uint64_t last_prog = t_start;
    while (!atomic_load(&s.stop)) {
        uint64_t now = mono_us();
        if (atomic_load(&s.t_meas) == 0 && now >= warm_end) {
            atomic_store(&s.t_meas, now);
            cpu0 = cpu_seconds();
        }
        if (now >= s.end)
            break;
        if (o->rate > 0) {
            while (next_send <= now) {
                r_submit(&s, next_send);
                next_send += (uint64_t)interval_us;
            }
            /* Sleep only while the next send is far; spin the last stretch,
             * as the baseline's loop does, so that timer slack in usleep
             * (tens of microseconds on a VM) is not charged to the router. */
            uint64_t n2 = mono_us();
            if (next_send > n2 + 300)
                usleep((useconds_t)((next_send - n2 - 200) < 2000 ? (next_send - n2 - 200) : 2000));
            else
                while (mono_us() < next_send)
                    sched_yield();
        } else {
            usleep(20000);
        }
        if (mono_us() - last_prog > 250000) {
            long cur = current_rss_bytes();
            if (cur > rss_max)
                rss_max = cur;
            progress_line("router", &s.pr, t_start, tty);
            last_prog = mono_us();
        }
    }
    atomic_store(&s.stop, 1);
    uint64_t t_stop = mono_us();
    pthread_mutex_lock(&s.mu);
    while (atomic_load(&s.in_flight) > 0)
        pthread_cond_wait(&s.cv, &s.mu);
    pthread_mutex_unlock(&s.mu);
    ph->elapsed_s = (double)(t_stop - (atomic_load(&s.t_meas) ? atomic_load(&s.t_meas) : t_start)) / 1e6;
    ph->cpu_s = cpu_seconds() - cpu0;
    if (tty)
        fputc('\n', stderr);
    *rss_delta = rss_max - rss0;
    pthread_cond_destroy(&s.cv);
    pthread_mutex_destroy(&s.mu);
    return 0;
}

/* ----------------------------------------------------------------- main */

static void
bench_usage(FILE *f)
{
    fprintf(f,
            "usage: airouter bench [options]\n"
            "  --mode engine|gateway    what to drive: engine = the library in-process;\n"
            "                           gateway = HTTP clients -> airouter serve -> mock;\n"
            "                           proxy = HTTP clients -> --proxy-url URL (e.g. HAProxy\n"
            "                           in front of the same --upstream mock)\n"
            "  --concurrency N          closed loop with N requests in flight (default 64)\n"
            "  --rate R                 open loop at R requests/s instead (latency from the\n"
            "                           intended send time)\n"
            "  --duration S             measured seconds (default 5)\n"
            "  --warmup S               unmeasured seconds first (default 1)\n"
            "  --requests N             stop each phase after N measured requests\n"
            "  --workers N              router worker threads (default 2)\n"
            "  --providers K            built-in mock providers (default 1)\n"
            "  --latency-ms L --jitter-ms J --fail-rate F   mock behaviour\n"
            "  --tail-rate X --tail-ms T  a latency tail: fraction X of requests waits T ms more\n"
            "  --state-redis URL        add a phase: the router with its limits and budgets\n"
            "                           shared through Redis at URL (both router phases then\n"
            "                           carry the same client, route and deployment limits)\n"
            "  --hedge-ms D             add a third phase: the router with hedging after D ms\n"
            "                           (0 = adaptive, the deployment's p95), to compare p99\n"
            "  --strategy S             route strategy (default priority)\n"
            "  --mock-threads N         event-loop threads of each built-in mock (default 1)\n"
            "  --http-mode M            --mode gateway: workers (default) or pool, see\n"
            "                           airouter serve --help\n"
            "  --spin-us N              workers busy-poll N us before sleeping (config spin_us)\n"
            "  --format F               upstream speaks openai (default), anthropic or gemini:\n"
            "                           the router translates; the baseline sends the vendor's\n"
            "                           own request format straight to the mock\n"
            "  --stream --chunks N      streamed responses with N chunks\n"
            "  --upstream URL           drive this OpenAI-compatible base URL instead of mocks\n"
            "  --no-baseline            skip the direct libcurl phase\n"
            "  --json                   one JSON object on stdout instead of a table\n");
}

static int
parse_num(const char *flag, const char *v, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || *end || end == v || d < lo || d > hi) {
        fprintf(stderr, "airouter bench: %s: expected a number between %g and %g\n", flag, lo,
                hi);
        return -1;
    }
    *out = d;
    return 0;
}

int
air__cmd_bench(int argc, char **argv)
{
    struct opts o = {
        .mode = "engine",
        .concurrency = 64,
        .duration_s = 5,
        .warmup_s = 1,
        .providers = 1,
        .chunks = 8,
        .workers = 2,
        .hedge_ms = -1,
        .strategy = "priority",
    };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        double d;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            bench_usage(stdout);
            return 0;
        } else if (strcmp(a, "--json") == 0) {
            o.json = 1;
        } else if (strcmp(a, "--stream") == 0) {
            o.stream = 1;
        } else if (strcmp(a, "--no-baseline") == 0) {
            o.no_baseline = 1;
        } else if (v == NULL) {
            fprintf(stderr, "airouter bench: unknown or incomplete option '%s'\n", a);
            return 2;
        } else if (strcmp(a, "--mode") == 0) {
            if (strcmp(v, "engine") != 0 && strcmp(v, "gateway") != 0 &&
                strcmp(v, "proxy") != 0) {
                fprintf(stderr,
                        "airouter bench: --mode: '%s' is not a mode (engine, gateway, proxy)\n",
                        v);
                return 2;
            }
            o.mode = v;
            i++;
        } else if (strcmp(a, "--upstream") == 0) {
            o.upstream = v;
            i++;
        } else if (strcmp(a, "--format") == 0) {
            if (strcmp(v, "openai") != 0 && strcmp(v, "anthropic") != 0 &&
                strcmp(v, "gemini") != 0) {
                fprintf(stderr, "airouter bench: --format: '%s' (openai, anthropic, gemini)\n", v);
                return 2;
            }
            o.format = v;
            i++;
        } else if (strcmp(a, "--proxy-url") == 0) {
            o.proxy_url = v;
            i++;
        } else if (strcmp(a, "--state-redis") == 0) {
            o.state_redis = v;
            i++;
        } else if (strcmp(a, "--strategy") == 0) {
            o.strategy = v;
            i++;
        } else if (strcmp(a, "--http-mode") == 0) {
            if (strcmp(v, "workers") == 0) {
                o.http_mode = AIR_GW_HTTP_WORKERS;
            } else if (strcmp(v, "pool") == 0) {
                o.http_mode = AIR_GW_HTTP_POOL;
            } else {
                fprintf(stderr, "airouter bench: --http-mode: expected workers or pool\n");
                return 2;
            }
            i++;
        } else {
            struct {
                const char *flag;
                double lo, hi;
            } nums[] = {
                {"--concurrency", 1, 100000},  {"--rate", 0.1, 10000000}, {"--duration", 0.1, 86400},
                {"--warmup", 0, 3600},         {"--requests", 1, 1e9},    {"--workers", 1, 256},
                {"--providers", 1, MAX_PROVIDERS}, {"--latency-ms", 0, 600000},
                {"--jitter-ms", 0, 600000},    {"--fail-rate", 0, 1},     {"--chunks", 1, 100000},
                {"--tail-rate", 0, 1},         {"--tail-ms", 0, 600000},  {"--hedge-ms", 0, 600000},
                {"--mock-threads", 1, 64},     {"--spin-us", 0, 1000000},
            };
            size_t k;
            for (k = 0; k < sizeof nums / sizeof nums[0]; k++)
                if (strcmp(a, nums[k].flag) == 0)
                    break;
            if (k == sizeof nums / sizeof nums[0]) {
                fprintf(stderr, "airouter bench: unknown option '%s'\n", a);
                bench_usage(stderr);
                return 2;
            }
            if (parse_num(a, v, nums[k].lo, nums[k].hi, &d) != 0)
                return 2;
            i++;
            switch (k) {
            case 0: o.concurrency = (unsigned)d; break;
            case 1: o.rate = d; break;
            case 2: o.duration_s = d; break;
            case 3: o.warmup_s = d; break;
            case 4: o.requests = (unsigned long)d; break;
            case 5: o.workers = (unsigned)d; break;
            case 6: o.providers = (unsigned)d; break;
            case 7: o.latency_ms = (unsigned)d; break;
            case 8: o.jitter_ms = (unsigned)d; break;
            case 9: o.fail_rate = d; break;
            case 10: o.chunks = (unsigned)d; break;
            case 11: o.tail_rate = d; break;
            case 12: o.tail_ms = (unsigned)d; break;
            case 13: o.hedge_ms = (int)d; break;
            case 14: o.mock_threads = (unsigned)d; break;
            case 15: o.spin_us = (unsigned)d; break;
            }
        }
    }
    if (o.rate > 0 && o.concurrency < 1024)
        o.concurrency = 4096; /* open loop: enough connections for the baseline */
    int tty = isatty(STDERR_FILENO) && !o.json;
    curl_global_init(CURL_GLOBAL_DEFAULT);

    air_mock_t *mocks[MAX_PROVIDERS] = {0};
    char urls[MAX_PROVIDERS][256];
    unsigned np = o.upstream ? 1 : o.providers;
    for (unsigned i = 0; i < np; i++) {
        if (o.upstream) {
            snprintf(urls[i], sizeof urls[i], "%s", o.upstream);
            continue;
        }
        air_mock_opts_t mo;
        air_mock_opts_init(&mo);
        mo.latency_ms = o.latency_ms;
        mo.jitter_ms = o.jitter_ms;
        mo.tail_rate = o.tail_rate;
        mo.threads = o.mock_threads ? o.mock_threads : 1;
        mo.tail_ms = o.tail_ms;
        mo.fail_rate = o.fail_rate;
        mo.chunks = o.chunks;
        mo.seed = 1000 + i;
        mo.format = o.format;
        char err[256];
        if (air_mock_start(&mo, &mocks[i], err, sizeof err) != 0) {
            fprintf(stderr, "airouter bench: mock: %s\n", err);
            return 1;
        }
        snprintf(urls[i], sizeof urls[i], "http://127.0.0.1:%u/v1", air_mock_port(mocks[i]));
    }
    /* Trailing slash is ignored by the router; keep the baseline URL exact. */
    char base_url[300];
    snprintf(base_url, sizeof base_url, "%s", urls[0]);
    size_t bl = strlen(base_url);
    while (bl > 0 && base_url[bl - 1] == '/')
        base_url[--bl] = '\0';
    char chat_url[1024];
    snprintf(chat_url, sizeof chat_url, "%s/chat/completions", base_url);
    int vendor = o.format != NULL && strcmp(o.format, "openai") != 0;
    char root[300];
    snprintf(root, sizeof root, "%s", base_url);
    if (vendor && bl >= 3 && strcmp(root + strlen(root) - 3, "/v1") == 0)
        root[strlen(root) - 3] = '\0'; /* anthropic/gemini base URLs have no /v1 */
    char *vbody = NULL;
    if (vendor && strcmp(o.format, "anthropic") == 0) {
        snprintf(chat_url, sizeof chat_url, "%s/v1/messages", root);
        air_buf_t vb = AIR_BUF_INIT;
        air__buf_printf(&vb,
                        "{\"model\":\"mock-model\",\"max_tokens\":64,\"system\":\"You are a "
                        "helpful assistant.\",\"messages\":[{\"role\":\"user\",\"content\":\"Write "
                        "one short sentence about routers.\"}]%s}",
                        o.stream ? ",\"stream\":true" : "");
        vbody = air__buf_steal(&vb, NULL);
    } else if (vendor) {
        snprintf(chat_url, sizeof chat_url, "%s/v1beta/models/mock-model:%s", root,
                 o.stream ? "streamGenerateContent?alt=sse" : "generateContent");
        vbody = air__strdup("{\"systemInstruction\":{\"parts\":[{\"text\":\"You are a helpful "
                            "assistant.\"}]},\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":"
                            "\"Write one short sentence about routers.\"}]}],\"generationConfig\":"
                            "{\"maxOutputTokens\":64}}");
    }

    char *body = make_body(&o);
    air_buf_t cfg = AIR_BUF_INIT, hcfg = AIR_BUF_INIT, scfg = AIR_BUF_INIT;
    unsigned maxinf = o.concurrency * 2 > 65536 ? o.concurrency * 2 : 65536;
    unsigned qcap = 2;
    while (qcap < o.concurrency * 2 && qcap < (1u << 20))
        qcap <<= 1;
    if (qcap < 4096)
        qcap = 4096;
    /* --state-redis (engine mode): the router and redis phases carry the
     * same limits (a client's rpm, tpm and budget, a route budget, a
     * deployment's rpm and tpm), all far above the load, so both measure
     * admission cost, not refusals; only the state backend differs. */
    static const char lim_prov[] = ",\"rpm\":1000000000,\"tpm\":4000000000,\"models\":[{"
                                   "\"name\":\"mock-model\",\"input_price_per_mtok\":1,"
                                   "\"output_price_per_mtok\":2}]";
    for (int h = 0; h < 3; h++) {
        air_buf_t *c = h == 2 ? &scfg : h ? &hcfg : &cfg;
        int lim = o.state_redis != NULL && h != 1 && strcmp(o.mode, "engine") == 0;
        if (h == 2 && !lim)
            continue;
        air__buf_printf(c,
                        "{\"workers\":%u,\"queue_capacity\":%u,\"max_inflight\":%u,"
                        "\"spin_us\":%u,\"retry\":{\"max_attempts\":%u},",
                        o.workers, qcap, maxinf, o.spin_us, h == 1 ? 2u : 1u);
        /* The gateway's keys (stripped before the engine sees them): no
         * access log in a benchmark, and room for every client. */
        if (strcmp(o.mode, "gateway") == 0)
            air__buf_printf(c, "\"access_log\":{\"level\":\"off\"},\"max_connections\":%u,",
                            o.concurrency + 1024);
        if (h == 1)
            air__buf_printf(c, "\"hedge\":{\"delay_ms\":%d},", o.hedge_ms);
        if (lim)
            air__buf_puts(c, "\"clients\":[{\"name\":\"bench\",\"rpm\":1000000000,"
                             "\"tpm\":4000000000,\"budget_usd\":1e9}],");
        if (h == 2) {
            air__buf_puts(c, "\"state\":{\"backend\":\"redis\",\"url\":");
            air__buf_json_str(c, o.state_redis, strlen(o.state_redis));
            air__buf_printf(c, ",\"prefix\":\"airouter-bench:%d:\"},", (int)getpid());
        }
        air__buf_puts(c, "\"providers\":[");
        for (unsigned i = 0; i < np; i++) {
            air__buf_printf(c, "%s{\"name\":\"mock%u\",\"kind\":\"%s\",\"base_url\":",
                            i ? "," : "", i, vendor ? o.format : "openai");
            if (vendor) {
                char ru[4096];
                snprintf(ru, sizeof ru, "%s", urls[i]);
                size_t rl = strlen(ru);
                if (rl >= 3 && strcmp(ru + rl - 3, "/v1") == 0)
                    ru[rl - 3] = '\0';
                air__buf_json_str(c, ru, strlen(ru));
                air__buf_printf(c, ",\"api_key_env\":\"AIR_BENCH_KEY\"%s}", lim ? lim_prov : "");
            } else {
                air__buf_json_str(c, urls[i], strlen(urls[i]));
                air__buf_printf(c, "%s}", lim ? lim_prov : "");
            }
        }
        air__buf_puts(c, "],\"routes\":[{\"model\":\"bench\",\"strategy\":");
        air__buf_json_str(c, o.strategy, strlen(o.strategy));
        air__buf_printf(c, ",\"hedge\":%s,%s\"targets\":[", h == 1 ? "true" : "false",
                        lim ? "\"budget_usd\":1e9," : "");
        for (unsigned i = 0; i < np; i++)
            air__buf_printf(c, "%s{\"provider\":\"mock%u\",\"model\":\"mock-model\"}",
                            i ? "," : "", i);
        air__buf_puts(c, "]}]}");
    }

    struct phase base = {.name = "baseline"}, rout = {.name = "router"},
                 hedg = {.name = "hedged"}, red = {.name = "redis"};
    int rc = 0;
    if (vendor)
        setenv("AIR_BENCH_KEY", "sk-bench", 1);
    if (!o.no_baseline && run_baseline(&o, chat_url, vendor ? vbody : body, &base, tty) != 0) {
        fprintf(stderr, "airouter bench: baseline failed to start\n");
        rc = 1;
    }
    air_t *r = NULL;
    char err[512];
    long rss_delta = 0;
    if (rc == 0 && strcmp(o.mode, "proxy") == 0) {
        if (o.proxy_url == NULL) {
            fprintf(stderr, "airouter bench: --mode proxy needs --proxy-url URL\n");
            rc = 2;
        } else if (run_baseline(&o, o.proxy_url, body, &rout, tty) != 0) {
            rc = 1;
        }
    } else if (rc == 0 && strcmp(o.mode, "gateway") == 0) {
        /* The gateway in this process, driven over HTTP by the same client
         * loop as the baseline. */
        struct air__gw_opts go = {.config_text = cfg.data, .listen = "127.0.0.1:0",
                                  .admin_listen = NULL, .threads = 0, .quiet = 1,
                                  .http_mode = o.http_mode};
        struct air__gw *gw = NULL;
        if (air__gw_start(&go, &gw, err, sizeof err) != AIR_OK) {
            fprintf(stderr, "airouter bench: gateway: %s\n", err);
            rc = 1;
        } else {
            char gurl[128];
            snprintf(gurl, sizeof gurl, "http://127.0.0.1:%u/v1/chat/completions",
                     air__gw_port(gw));
            long rss0 = current_rss_bytes();
            if (run_baseline(&o, gurl, body, &rout, tty) != 0)
                rc = 1;
            rss_delta = current_rss_bytes() - rss0;
            air__gw_stop(gw, 5000);
        }
    } else if (rc == 0) {
        if (air_new(cfg.data, &r, err, sizeof err) != AIR_OK) {
            fprintf(stderr, "airouter bench: router: %s\n", err);
            rc = 1;
        }
        if (rc == 0)
            run_router(&o, r, body, &rout, tty, &rss_delta);
        air_free(r, 5000);
        r = NULL;
    }
    if (rc == 0 && scfg.data != NULL) {
        long rd3 = 0;
        if (air_new(scfg.data, &r, err, sizeof err) != AIR_OK) {
            fprintf(stderr, "airouter bench: router with the redis state backend: %s\n", err);
            rc = 1;
        } else {
            run_router(&o, r, body, &red, tty, &rd3);
            air_free(r, 5000);
            r = NULL;
        }
    }
    if (rc == 0 && o.hedge_ms >= 0) {
        long rd2 = 0;
        if (air_new(hcfg.data, &r, err, sizeof err) != AIR_OK) {
            fprintf(stderr, "airouter bench: hedged router: %s\n", err);
            rc = 1;
        } else {
            run_router(&o, r, body, &hedg, tty, &rd2);
            air_free(r, 5000);
        }
    }
    air__buf_free(&cfg);
    air__buf_free(&hcfg);
    air__buf_free(&scfg);
    air__free(body);
    for (unsigned i = 0; i < np; i++)
        air_mock_stop(mocks[i]);
    if (rc != 0)
        return rc;
    phase_finish(&base);
    phase_finish(&rout);
    phase_finish(&hedg);
    phase_finish(&red);
    int have_red = red.requests > 0;
    double red_ratio = rout.rps > 0 ? red.rps / rout.rps : 0;

    double ratio = base.rps > 0 ? rout.rps / base.rps : 0;
    long added_p50 = (long)rout.p50 - (long)base.p50;
    long added_p99 = (long)rout.p99 - (long)base.p99;
    double cpu_r = rout.requests ? rout.cpu_s * 1e6 / (double)rout.requests : 0;
    double cpu_b = base.requests ? base.cpu_s * 1e6 / (double)base.requests : 0;
    long bpi = o.concurrency ? rss_delta / (long)o.concurrency : 0;
    if (bpi < 0)
        bpi = 0;
    if (o.json) {
        printf("{\"router\":{\"requests\":%llu,\"errors\":%llu,\"rps\":%.1f,\"p50_us\":%llu,"
               "\"p90_us\":%llu,\"p99_us\":%llu,\"p999_us\":%llu,\"cpu_us_per_request\":%.2f},",
               (unsigned long long)rout.requests, (unsigned long long)rout.errors, rout.rps,
               (unsigned long long)rout.p50, (unsigned long long)rout.p90,
               (unsigned long long)rout.p99, (unsigned long long)rout.p999, cpu_r);
        printf("\"baseline\":{\"requests\":%llu,\"errors\":%llu,\"rps\":%.1f,\"p50_us\":%llu,"
               "\"p90_us\":%llu,\"p99_us\":%llu,\"p999_us\":%llu,\"cpu_us_per_request\":%.2f},",
               (unsigned long long)base.requests, (unsigned long long)base.errors, base.rps,
               (unsigned long long)base.p50, (unsigned long long)base.p90,
               (unsigned long long)base.p99, (unsigned long long)base.p999, cpu_b);
        if (o.hedge_ms >= 0)
            printf("\"router_hedged\":{\"requests\":%llu,\"errors\":%llu,\"rps\":%.1f,"
                   "\"p50_us\":%llu,\"p90_us\":%llu,\"p99_us\":%llu,\"p999_us\":%llu,"
                   "\"cpu_us_per_request\":%.2f},",
                   (unsigned long long)hedg.requests, (unsigned long long)hedg.errors, hedg.rps,
                   (unsigned long long)hedg.p50, (unsigned long long)hedg.p90,
                   (unsigned long long)hedg.p99, (unsigned long long)hedg.p999,
                   hedg.requests ? hedg.cpu_s * 1e6 / (double)hedg.requests : 0);
        if (have_red)
            printf("\"router_redis\":{\"requests\":%llu,\"errors\":%llu,\"rps\":%.1f,"
                   "\"p50_us\":%llu,\"p90_us\":%llu,\"p99_us\":%llu,\"p999_us\":%llu,"
                   "\"cpu_us_per_request\":%.2f},\"redis_vs_local\":{\"throughput_ratio\":%.3f,"
                   "\"added_p50_us\":%ld,\"added_p99_us\":%ld},",
                   (unsigned long long)red.requests, (unsigned long long)red.errors, red.rps,
                   (unsigned long long)red.p50, (unsigned long long)red.p90,
                   (unsigned long long)red.p99, (unsigned long long)red.p999,
                   red.cpu_s * 1e6 / (double)red.requests, red_ratio,
                   (long)red.p50 - (long)rout.p50, (long)red.p99 - (long)rout.p99);
        printf("\"added_p50_us\":%ld,\"added_p99_us\":%ld,\"throughput_ratio\":%.3f,"
               "\"peak_rss_bytes\":%ld,\"bytes_per_inflight\":%ld,",
               added_p50, added_p99, ratio, peak_rss_bytes(), bpi);
        printf("\"params\":{\"mode\":\"%s\",\"concurrency\":%u,\"rate\":%.1f,\"duration_s\":%.1f,"
               "\"warmup_s\":%.1f,\"requests\":%lu,\"workers\":%u,\"providers\":%u,"
               "\"latency_ms\":%u,\"jitter_ms\":%u,\"fail_rate\":%.3f,\"stream\":%s,"
               "\"chunks\":%u,\"tail_rate\":%.3f,\"tail_ms\":%u,\"hedge_ms\":%d,"
               "\"strategy\":\"%s\",\"upstream\":%s}}\n",
               o.mode, o.concurrency, o.rate, o.duration_s, o.warmup_s, o.requests, o.workers,
               np, o.latency_ms, o.jitter_ms, o.fail_rate, o.stream ? "true" : "false", o.chunks,
               o.tail_rate, o.tail_ms, o.hedge_ms, o.strategy,
               o.upstream ? "\"external\"" : "null");
    } else {
        printf("airouter bench: mode=%s %s=%g workers=%u providers=%u latency=%ums%s\n", o.mode,
               o.rate > 0 ? "rate" : "concurrency", o.rate > 0 ? o.rate : (double)o.concurrency,
               o.workers, np, o.latency_ms, o.stream ? " stream" : "");
        printf("%-9s %10s %8s %10s %9s %9s %9s %9s %10s\n", "phase", "requests", "errors",
               "req/s", "p50 us", "p90 us", "p99 us", "p99.9 us", "cpu us/req");
        struct phase *ps[3] = {&base, &rout, &hedg};
        for (int i = 0; i < (o.hedge_ms >= 0 ? 3 : 2); i++)
            printf("%-9s %10llu %8llu %10.0f %9llu %9llu %9llu %9llu %10.1f\n", ps[i]->name,
                   (unsigned long long)ps[i]->requests, (unsigned long long)ps[i]->errors,
                   ps[i]->rps, (unsigned long long)ps[i]->p50, (unsigned long long)ps[i]->p90,
                   (unsigned long long)ps[i]->p99, (unsigned long long)ps[i]->p999,
                   i == 0 ? cpu_b
                   : i == 1 ? cpu_r
                            : (hedg.requests ? hedg.cpu_s * 1e6 / (double)hedg.requests : 0));
        printf("added latency: p50 %+ld us, p99 %+ld us; throughput router/direct %.3f\n",
               added_p50, added_p99, ratio);
        if (have_red) {
            printf("%-9s %10llu %8llu %10.0f %9llu %9llu %9llu %9llu %10.1f\n", red.name,
                   (unsigned long long)red.requests, (unsigned long long)red.errors, red.rps,
                   (unsigned long long)red.p50, (unsigned long long)red.p90,
                   (unsigned long long)red.p99, (unsigned long long)red.p999,
                   red.cpu_s * 1e6 / (double)red.requests);
            printf("redis state vs in-process (same limits): throughput %.3f, p50 %+ld us, "
                   "p99 %+ld us\n",
                   red_ratio, (long)red.p50 - (long)rout.p50, (long)red.p99 - (long)rout.p99);
        }
        printf("peak RSS %.1f MiB; ~%ld bytes per in-flight request\n",
               (double)peak_rss_bytes() / 1048576.0, bpi);
    }
    air__free(vbody);
    air__free(base.lat_us);
    air__free(rout.lat_us);
    air__free(hedg.lat_us);
    air__free(red.lat_us);
    return 0;
}
