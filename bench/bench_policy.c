/*
 * bench_policy.c - microbenchmarks of the policy engine's hot paths
 * (issue 4 targets: a routing decision over 16 deployments under 200 ns
 * median; a stats update per completed request under 100 ns, no lock).
 *
 * Cases:
 *   policy_decide_score_{4,16,64}   filter + score + rank (power of two
 *                                   choices) over N deployments with live
 *                                   statistics: what core runs per attempt
 *   policy_decide_<strategy>_16     the same with the other strategies
 *   policy_dobs_record              air__dobs_record per completed request
 *                                   (a worker's private row: no atomics)
 *   policy_dstat_fold               folding one deployment's interval of
 *                                   100 requests (the aggregator, per
 *                                   deployment per stats.fold_ms)
 *
 * Method: warm-up, then --runs (default 101) short runs of a fixed number
 * of operations each (a few hundred microseconds, so that on a busy machine
 * most runs are not interrupted by the scheduler); ns/op is the median
 * run; p50/p99 are over per-op times measured in batches of 16 operations. The inputs vary from one operation
 * to the next (request needs, in-flight counts, latencies) so the branch
 * predictor does not see one repeated case. Single thread, pinned to the
 * CPU it started on.
 */
#include "bench.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "airouter/provider.h"
#include "retry.h"
#include "stats.h"
#include "strategy.h"

#define BATCH 16

static volatile uint64_t sink;

struct opts {
    const char *filter;
    int runs;
};

static int
wanted(const struct opts *o, const char *name)
{
    return o->filter == NULL || strstr(name, o->filter) != NULL;
}

static void
pin(void)
{
    int cpu = sched_getcpu();
    if (cpu < 0)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    (void)sched_setaffinity(0, sizeof set, &set);
}

/* One benchmark: fn(ctx, i) performs operation i. */
typedef void (*op_fn)(void *ctx, uint64_t i);

static void
measure(const struct opts *o, const char *name, op_fn fn, void *ctx, uint64_t ops_per_run)
{
    if (!wanted(o, name))
        return;
    uint64_t nb = ops_per_run / BATCH;
    double *runs = malloc((size_t)o->runs * sizeof *runs);
    double *samples = malloc((size_t)(nb * (uint64_t)o->runs) * sizeof *samples);
    if (runs == NULL || samples == NULL) {
        free(runs);
        free(samples);
        return;
    }
    for (uint64_t i = 0; i < 4 * ops_per_run; i++) /* warm-up */
        fn(ctx, i);
    size_t ns = 0;
    uint64_t i = 0;
    for (int r = 0; r < o->runs; r++) {
        uint64_t start = air__bench_ns(), prev = start;
        for (uint64_t b = 0; b < nb; b++) {
            for (int k = 0; k < BATCH; k++)
                fn(ctx, i++);
            uint64_t now = air__bench_ns();
            samples[ns++] = (double)(now - prev) / BATCH;
            prev = now;
        }
        runs[r] = (double)(prev - start) / (double)(nb * BATCH);
    }
    double med = air__bench_quantile(runs, (size_t)o->runs, 0.5);
    double p50 = air__bench_quantile(samples, ns, 0.50);
    double p99 = air__bench_quantile(samples, ns, 0.99);
    air__bench_line(name, 1, nb * BATCH * (uint64_t)o->runs, med, p50, p99);
    free(runs);
    free(samples);
}

/* ------------------------------------------------------------ decisions */

#define NVAR 8

struct decide {
    enum air__strategy s;
    size_t n;
    struct air__dstat *st;
    struct air__pcand *c;
    int *ok;
    size_t *order;
    struct air__need need[NVAR];
    struct air__score_weights w;
    uint64_t rr, rng;
};

static void
decide_op(void *ctx, uint64_t i)
{
    struct decide *d = ctx;
    const struct air__need *need = &d->need[i % NVAR];
    size_t k = air__policy_filter(d->c, d->n, need, d->ok, NULL);
    if (k == 0)
        return;
    k = air__policy_rank(d->s, d->c, d->n, d->ok, &d->w, need, &d->rr, &d->rng, d->order);
    /* the chosen one gets busier, another finishes: in-flight counts move */
    size_t pick = d->order[0];
    d->c[pick].inflight++;
    d->c[(pick + 1 + i) % d->n].inflight -= d->c[(pick + 1 + i) % d->n].inflight > 0;
    sink += pick + k;
}

static int
decide_init(struct decide *d, enum air__strategy s, size_t n)
{
    memset(d, 0, sizeof *d);
    d->s = s;
    d->n = n;
    d->st = calloc(n, sizeof *d->st);
    d->c = calloc(n, sizeof *d->c);
    d->ok = calloc(n, sizeof *d->ok);
    d->order = calloc(n, sizeof *d->order);
    if (!d->st || !d->c || !d->ok || !d->order)
        return -1;
    uint64_t rng = 0xbe7c4;
    for (size_t i = 0; i < n; i++) {
        struct air__dstat *st = &d->st[i];
        air__dstat_init(st);
        st->have_samples = 1;
        st->have_ttft = 1;
        st->requests = 1000;
        st->lat_ewma_us = 200000.0 + (double)(air__rand_next(&rng) % 2000000);
        st->ttft_ewma_us = st->lat_ewma_us / 4;
        st->succ_ewma = 0.9 + (double)(air__rand_next(&rng) % 100) / 1000.0;
        d->c[i].st = st;
        d->c[i].in_price = 0.1 + (double)(air__rand_next(&rng) % 500) / 100.0;
        d->c[i].out_price = d->c[i].in_price * 4;
        /* one in 8 lacks tools, one in 16 is excluded by core */
        d->c[i].caps = AIR_CAP_STREAM | AIR_CAP_JSON | AIR_CAP_IMAGES;
        if (i % 8 != 3)
            d->c[i].caps |= AIR_CAP_TOOLS;
        d->c[i].excluded = i % 16 == 5;
        d->c[i].excluded_why = "ejected";
        d->c[i].context_tokens = i % 4 == 1 ? 32768 : 128000;
        d->c[i].weight = (double)(1 + i % 5);
        d->c[i].max_inflight = i % 2 ? 64 : 0;
        d->c[i].inflight = (uint32_t)(air__rand_next(&rng) % 16);
    }
    for (int v = 0; v < NVAR; v++) {
        d->need[v].stream = v & 1;
        d->need[v].tools = (v & 6) == 2;
        d->need[v].json = v == 5;
        d->need[v].est_in_tokens = 200u + (uint64_t)v * 1500u;
        d->need[v].est_out_tokens = 256;
    }
    air__score_weights_default(&d->w);
    d->rng = 42;
    return 0;
}

static void
decide_free(struct decide *d)
{
    free(d->st);
    free(d->c);
    free(d->ok);
    free(d->order);
}

static void
bench_decide(const struct opts *o, enum air__strategy s, size_t n)
{
    char name[64];
    snprintf(name, sizeof name, "policy_decide_%s_%zu", air__strategy_name(s), n);
    for (char *p = name; *p; p++)
        if (*p == '-')
            *p = '_';
    if (!wanted(o, name))
        return;
    struct decide d;
    if (decide_init(&d, s, n) == 0)
        measure(o, name, decide_op, &d, n <= 16 ? 4096 : 1024);
    decide_free(&d);
}

/* ------------------------------------------------------------ stats */

#define NLAT 4096

struct rec {
    struct air__dobs *o;
    uint64_t lat[NLAT], ttft[NLAT];
};

static void
record_op(void *ctx, uint64_t i)
{
    struct rec *r = ctx;
    size_t j = i % NLAT;
    air__dobs_record(r->o, (j & 31) != 0, r->lat[j], r->ttft[j], 100 + j % 200, 500 + j % 1000,
                     0.0001);
}

struct fold {
    struct air__dstat s;
    struct air__dobs o;
};

static void
fold_op(void *ctx, uint64_t i)
{
    struct fold *f = ctx;
    f->s.requests = 0; /* keep counters small; the work is the same */
    air__dstat_fold(&f->s, &f->o, 20.0 + (double)(i & 3), 10000);
    sink += f->s.lat_p99_us;
}

int
air__bench_policy(int argc, char **argv)
{
    struct opts o = {NULL, 101};
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "--filter=", 9) == 0)
            o.filter = argv[i] + 9;
        else if (strncmp(argv[i], "--runs=", 7) == 0)
            o.runs = atoi(argv[i] + 7) > 0 ? atoi(argv[i] + 7) : 101;
    }
    pin();

    bench_decide(&o, AIR_S_SCORE, 4);
    bench_decide(&o, AIR_S_SCORE, 16);
    bench_decide(&o, AIR_S_SCORE, 64);
    static const enum air__strategy others[] = {AIR_S_PRIORITY,   AIR_S_WEIGHTED,
                                                AIR_S_ROUND_ROBIN, AIR_S_LEAST_BUSY,
                                                AIR_S_LOWEST_LATENCY, AIR_S_LOWEST_COST};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++)
        bench_decide(&o, others[i], 16);

    struct rec *r = calloc(1, sizeof *r);
    if (r != NULL && (r->o = calloc(1, sizeof *r->o)) != NULL) {
        uint64_t rng = 7;
        for (size_t j = 0; j < NLAT; j++) {
            r->lat[j] = 50000 + air__rand_next(&rng) % 3000000;
            r->ttft[j] = j & 1 ? r->lat[j] / 5 : 0;
        }
        measure(&o, "policy_dobs_record", record_op, r, 32768);
        free(r->o);
    }
    free(r);

    struct fold *f = calloc(1, sizeof *f);
    if (f != NULL) {
        air__dstat_init(&f->s);
        uint64_t rng = 9;
        for (int j = 0; j < 100; j++) {
            uint64_t lat = 50000 + air__rand_next(&rng) % 3000000;
            air__dobs_record(&f->o, 1, lat, lat / 5, 100, 500, 0.0001);
        }
        measure(&o, "policy_dstat_fold", fold_op, f, 1024);
    }
    free(f);
    return 0;
}
