/*
 * strategy.c - candidate filtering, scoring and ranking. DESIGN: a routing
 * decision runs on the request path for every attempt, so everything here is
 * a few linear passes over a small array with no allocation (up to 64
 * candidates live on the stack) and no locks: the statistics are a published
 * snapshot, the round-robin counter and random state belong to the caller.
 * Normalising each score component by the largest value among the candidates
 * (not min-max) keeps nearly equal deployments nearly equal, so noise in the
 * EWMAs does not flip all traffic from one to the other; power of two
 * choices over the top three then spreads load among the good ones.
 */
#include "strategy.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "airouter/provider.h"
#include "alloc.h"
#include "retry.h"

#define STACK_CANDS 64

static const char *const names[AIR_S__COUNT] = {
    "priority",       "weighted",    "round-robin", "least-busy",
    "lowest-latency", "lowest-cost", "score",
};

const char *
air__strategy_name(enum air__strategy s)
{
    if ((unsigned)s >= AIR_S__COUNT)
        return "?";
    return names[s];
}

int
air__strategy_parse(const char *name, enum air__strategy *out)
{
    if (name == NULL)
        return -1;
    for (int i = 0; i < AIR_S__COUNT; i++) {
        const char *a = names[i], *b = name;
        while (*a && (*a == *b || (*a == '-' && *b == '_'))) {
            a++;
            b++;
        }
        if (*a == '\0' && *b == '\0') {
            *out = (enum air__strategy)i;
            return 0;
        }
    }
    return -1;
}

void
air__score_weights_default(struct air__score_weights *w)
{
    w->latency = 0.4;
    w->cost = 0.3;
    w->health = 0.2;
    w->load = 0.1;
}

/* ------------------------------------------------------------------ filter */

static const char *
reject(const struct air__pcand *c, const struct air__need *need)
{
    if (c->excluded)
        return c->excluded_why ? c->excluded_why : "excluded";
    if (need == NULL)
        return NULL;
    if (need->tools && !(c->caps & AIR_CAP_TOOLS))
        return "does not support tools";
    if (need->images && !(c->caps & AIR_CAP_IMAGES))
        return "does not support images";
    if (need->stream && !(c->caps & AIR_CAP_STREAM))
        return "does not support streaming";
    if (need->json && !(c->caps & AIR_CAP_JSON))
        return "does not support JSON mode";
    if (c->context_tokens > 0 && need->est_in_tokens + need->est_out_tokens > c->context_tokens)
        return "context window too small for the request";
    return NULL;
}

size_t
air__policy_filter(const struct air__pcand *c, size_t n, const struct air__need *need, int *ok,
                   const char **why)
{
    /* Fast path: one mask test and one comparison per candidate; the
     * reason is worked out only for a candidate that fails. */
    uint32_t mask = 0;
    uint64_t tokens = 0;
    if (need != NULL) {
        mask = (need->tools ? AIR_CAP_TOOLS : 0) | (need->images ? AIR_CAP_IMAGES : 0) |
               (need->stream ? AIR_CAP_STREAM : 0) | (need->json ? AIR_CAP_JSON : 0);
        tokens = need->est_in_tokens + need->est_out_tokens;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const struct air__pcand *p = &c[i];
        int pass = !p->excluded && (p->caps & mask) == mask &&
                   (p->context_tokens == 0 || tokens <= p->context_tokens);
        ok[i] = pass;
        k += (size_t)pass;
        if (why)
            why[i] = pass ? NULL : reject(p, need);
    }
    return k;
}

void
air__policy_why(const struct air__pcand *c, const struct air__need *need, char *buf, size_t n)
{
    if (n == 0)
        return;
    const char *r = reject(c, need);
    if (r == NULL) {
        buf[0] = '\0';
        return;
    }
    if (!c->excluded && c->context_tokens > 0 && need &&
        need->est_in_tokens + need->est_out_tokens > c->context_tokens) {
        snprintf(buf, n, "needs ~%llu tokens, context window is %u",
                 (unsigned long long)(need->est_in_tokens + need->est_out_tokens),
                 (unsigned)c->context_tokens);
        return;
    }
    snprintf(buf, n, "%s", r);
}

/* ------------------------------------------------------------------ score */

/* Latency of a candidate for this request: the value, or -1 when the
 * deployment was never tried, or HUGE_VAL when it was tried but never
 * produced a successful sample. */
static double
latency_of(const struct air__pcand *c, int stream)
{
    const struct air__dstat *st = c->st;
    if (st == NULL)
        return -1;
    if (stream && st->have_ttft)
        return st->ttft_ewma_us;
    if (st->have_samples)
        return st->lat_ewma_us;
    return st->requests > 0 ? HUGE_VAL : -1;
}

static double
expected_cost(const struct air__pcand *c, const struct air__need *need)
{
    if (need == NULL || (need->est_in_tokens == 0 && need->est_out_tokens == 0))
        return (c->in_price + c->out_price) * 1e-6;
    return ((double)need->est_in_tokens * c->in_price +
            (double)need->est_out_tokens * c->out_price) *
           1e-6;
}

static double
clamp01(double v)
{
    return v > 0 ? (v < 1 ? v : 1) : 0; /* NaN -> 0 */
}

static double
weight_ok(double v)
{
    /* negative and NaN -> 0; huge values capped so that weight x 0 stays 0 */
    return v > 0 ? (v < 1e9 ? v : 1e9) : 0;
}

/* What score_one needs besides the candidate: reciprocals of the maxima over
 * the candidates that passed (0 when the maximum is 0) and sanitised
 * weights. Shared by air__policy_score and the score strategy so explain
 * shows exactly the numbers the ranking used. */
struct norm {
    double inv_lat, inv_cost, inv_inflight;
    double wl, wc, wh, wload;
    int stream;
};

static void
norm_finish(struct norm *m, double max_lat, double max_cost, double max_inflight,
            const struct air__score_weights *w, const struct air__need *need)
{
    m->inv_lat = max_lat > 0 ? 1.0 / max_lat : 0;
    m->inv_cost = max_cost > 0 ? 1.0 / max_cost : 0;
    m->inv_inflight = max_inflight > 0 ? 1.0 / max_inflight : 0;
    m->wl = weight_ok(w->latency);
    m->wc = weight_ok(w->cost);
    m->wh = weight_ok(w->health);
    m->wload = weight_ok(w->load);
    m->stream = need ? need->stream : 0;
}

/* The components, each in [0, 1]. l is latency_of(), e expected_cost(). */
static inline double
comp_latency(double l, const struct norm *m)
{
    if (l < 0)
        return 0; /* never tried: explore */
    if (l == HUGE_VAL)
        return 1; /* tried, never succeeded */
    return clamp01(l * m->inv_lat);
}

static inline double
comp_health(const struct air__pcand *c)
{
    return c->st ? clamp01(1.0 - c->st->succ_ewma) : 0;
}

static inline double
comp_load(const struct air__pcand *c, const struct norm *m)
{
    if (c->max_inflight > 0)
        return clamp01((double)c->inflight / (double)c->max_inflight);
    return clamp01((double)c->inflight * m->inv_inflight);
}

/* The total, computed exactly as score_one computes it (same operations in
 * the same order, so explain and ranking agree to the bit). */
static inline double
total_of(const struct air__pcand *c, double l, double e, const struct norm *m)
{
    return m->wl * comp_latency(l, m) + m->wc * clamp01(e * m->inv_cost) +
           m->wh * comp_health(c) + m->wload * comp_load(c, m);
}

static void
score_one(const struct air__pcand *c, double l, double e, const struct norm *m,
          struct air__score *s)
{
    s->latency = comp_latency(l, m);
    s->latency_us = l >= 0 && l != HUGE_VAL ? l : 0;
    s->expected_usd = e;
    s->cost = clamp01(e * m->inv_cost);
    s->health = comp_health(c);
    s->load = comp_load(c, m);
    s->total = m->wl * s->latency + m->wc * s->cost + m->wh * s->health + m->wload * s->load;
}

void
air__policy_score(const struct air__pcand *c, size_t n, const int *ok,
                  const struct air__score_weights *w, const struct air__need *need,
                  struct air__score *out)
{
    struct air__score_weights dw;
    if (w == NULL) {
        air__score_weights_default(&dw);
        w = &dw;
    }
    int stream = need ? need->stream : 0;
    double max_lat = 0, max_cost = 0, max_inflight = 0;
    for (size_t i = 0; i < n; i++) {
        if (!ok[i])
            continue;
        double l = latency_of(&c[i], stream), e = expected_cost(&c[i], need);
        if (l > max_lat && l != HUGE_VAL)
            max_lat = l;
        if (e > max_cost)
            max_cost = e;
        if (c[i].max_inflight == 0 && c[i].inflight > max_inflight)
            max_inflight = c[i].inflight;
    }
    struct norm m;
    norm_finish(&m, max_lat, max_cost, max_inflight, w, need);
    for (size_t i = 0; i < n; i++) {
        if (ok[i]) {
            score_one(&c[i], latency_of(&c[i], stream), expected_cost(&c[i], need), &m, &out[i]);
        } else {
            memset(&out[i], 0, sizeof out[i]);
            out[i].total = HUGE_VAL;
        }
    }
}

/* ------------------------------------------------------------------ rank */

struct key {
    double v;
    size_t i;
};

/* Stable insertion sort, ascending by v: k is small (a route's
 * deployments), and this beats qsort's call overhead up to a few dozen. */
static void
sort_keys(struct key *a, size_t k)
{
    for (size_t i = 1; i < k; i++) {
        struct key x = a[i];
        size_t j = i;
        while (j > 0 && a[j - 1].v > x.v) {
            a[j] = a[j - 1];
            j--;
        }
        a[j] = x;
    }
}

/* Uniform in [0, 1). */
static double
unit(uint64_t *rng)
{
    return (double)(air__rand_next(rng) >> 11) * 0x1.0p-53;
}

/* Keys of the passing candidates with the given value function, starting at
 * a random rotation so that ties come out in random order after the stable
 * sort. */
static size_t
collect(const int *ok, size_t n, struct key *a, uint64_t *rng, int rotate)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (ok[i])
            a[k++].i = i;
    if (rotate && k > 1) {
        size_t r = (size_t)(air__rand_next(rng) % k);
        if (r) {
            /* rotate left by r: reverse three times */
            for (size_t x = 0, y = r - 1; x < y; x++, y--) {
                size_t t = a[x].i;
                a[x].i = a[y].i;
                a[y].i = t;
            }
            for (size_t x = r, y = k - 1; x < y; x++, y--) {
                size_t t = a[x].i;
                a[x].i = a[y].i;
                a[y].i = t;
            }
            for (size_t x = 0, y = k - 1; x < y; x++, y--) {
                size_t t = a[x].i;
                a[x].i = a[y].i;
                a[y].i = t;
            }
        }
    }
    return k;
}

/* The score strategy's sort key: the total's bit pattern (a non-negative
 * double's bits order like the double) with the candidate index in the low
 * 16 bits, so the sort moves single integers. Dropping the 16 lowest
 * mantissa bits merges totals within 2^-36 of each other: a tie. */
#define IDX_BITS 16
#define IDX_MASK ((1ull << IDX_BITS) - 1)

static uint64_t
pack(double total, size_t i)
{
    uint64_t b;
    memcpy(&b, &total, sizeof b);
    return (b & ~IDX_MASK) | (uint64_t)i;
}

static void
sort_u64(uint64_t *a, size_t k)
{
    for (size_t i = 1; i < k; i++) {
        uint64_t x = a[i];
        size_t j = i;
        while (j > 0 && a[j - 1] > x) {
            a[j] = a[j - 1];
            j--;
        }
        a[j] = x;
    }
}

/* Score strategy over at most STACK_CANDS candidates (65535 with heap
 * scratch): raw latency and cost in one pass with their maxima, totals in a
 * second, one integer sort, then power of two choices among the top 3. */
static size_t
rank_score(const struct air__pcand *c, size_t n, const int *ok,
           const struct air__score_weights *w, const struct air__need *need, uint64_t *rng,
           uint64_t *keys, double *lat, double *cost)
{
    int stream = need ? need->stream : 0;
    double max_lat = 0, max_cost = 0, max_inflight = 0;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (!ok[i])
            continue;
        const struct air__pcand *p = &c[i];
        double l = latency_of(p, stream), e = expected_cost(p, need);
        if (l > max_lat && l != HUGE_VAL)
            max_lat = l;
        if (e > max_cost)
            max_cost = e;
        if (p->max_inflight == 0 && p->inflight > max_inflight)
            max_inflight = p->inflight;
        lat[k] = l;
        cost[k] = e;
        keys[k] = i; /* index only, for now */
        k++;
    }
    struct norm m;
    norm_finish(&m, max_lat, max_cost, max_inflight, w, need);
    for (size_t j = 0; j < k; j++) {
        size_t i = (size_t)keys[j];
        keys[j] = pack(total_of(&c[i], lat[j], cost[j], &m), i);
    }
    sort_u64(keys, k);
    if (k < 2)
        return k;
    /* Power of two choices among the best min(3, k). */
    size_t top = k < 3 ? k : 3;
    uint64_t r = air__rand_next(rng);
    size_t x = (size_t)(r % top);
    size_t y = (size_t)((r >> 32) % (top - 1));
    if (y >= x)
        y++;
    /* keys[] is sorted, so the lower position is the better; on a tie the
     * first draw (x) wins, which is random. */
    uint64_t kx = keys[x] >> IDX_BITS, ky = keys[y] >> IDX_BITS;
    size_t win = kx < ky ? x : ky < kx ? y : x;
    if (win > 0) {
        uint64_t t = keys[win];
        memmove(&keys[1], &keys[0], win * sizeof keys[0]);
        keys[0] = t;
    }
    return k;
}

static size_t
rank_weighted(const struct air__pcand *c, size_t n, const int *ok, uint64_t *rng, struct key *a)
{
    size_t k = collect(ok, n, a, rng, 0);
    if (k == 0)
        return 0;
    double total = 0;
    for (size_t j = 0; j < k; j++) {
        a[j].v = -weight_ok(c[a[j].i].weight); /* descending weight after the sort */
        total -= a[j].v;
    }
    size_t pick = 0;
    if (total > 0) {
        double r = unit(rng) * total, acc = 0;
        pick = k - 1;
        for (size_t j = 0; j < k; j++) {
            acc -= a[j].v;
            if (r < acc && a[j].v < 0) {
                pick = j;
                break;
            }
        }
        while (a[pick].v == 0 && pick > 0) /* rounding at the end: last positive */
            pick--;
    } else {
        pick = (size_t)(air__rand_next(rng) % k);
    }
    struct key first = a[pick];
    memmove(&a[pick], &a[pick + 1], (k - pick - 1) * sizeof a[0]);
    sort_keys(a, k - 1);
    memmove(&a[1], &a[0], (k - 1) * sizeof a[0]);
    a[0] = first;
    return k;
}

static size_t
rank_keyed(enum air__strategy s, const struct air__pcand *c, size_t n, const int *ok,
           const struct air__need *need, uint64_t *rng, struct key *a)
{
    size_t k = collect(ok, n, a, rng, 1);
    int stream = need ? need->stream : 0;
    for (size_t j = 0; j < k; j++) {
        const struct air__pcand *p = &c[a[j].i];
        switch (s) {
        case AIR_S_LEAST_BUSY:
            a[j].v = (double)p->inflight;
            break;
        case AIR_S_LOWEST_LATENCY:
            a[j].v = latency_of(p, stream);
            break;
        case AIR_S_LOWEST_COST:
        default:
            a[j].v = expected_cost(p, need);
            break;
        }
    }
    sort_keys(a, k);
    return k;
}

size_t
air__policy_rank(enum air__strategy s, const struct air__pcand *c, size_t n, const int *ok,
                 const struct air__score_weights *w, const struct air__need *need, uint64_t *rr,
                 uint64_t *rng, size_t *order)
{
    /* Scratch: on the stack up to STACK_CANDS candidates, else one heap
     * block. The score strategy uses keys/lat/cost, the others a. */
    struct key a_stack[STACK_CANDS];
    uint64_t keys_stack[STACK_CANDS];
    double lat_stack[STACK_CANDS], cost_stack[STACK_CANDS];
    struct key *a = a_stack;
    uint64_t *keys = keys_stack;
    double *lat = lat_stack, *cost = cost_stack;
    void *heap = NULL;
    uint64_t local_rng = 0x853c49e6748fea9bull;
    uint64_t local_rr = 0;
    struct air__score_weights dw;
    size_t k = 0;

    if (rng == NULL)
        rng = &local_rng;
    if (rr == NULL)
        rr = &local_rr;
    if (w == NULL) {
        air__score_weights_default(&dw);
        w = &dw;
    }
    if (n > STACK_CANDS && s != AIR_S_PRIORITY) {
        if (n <= IDX_MASK && n <= SIZE_MAX / (sizeof *a + 3 * sizeof(double)))
            heap = air__malloc(n * (sizeof *a + 3 * sizeof(double)));
        if (heap == NULL) {
            s = AIR_S_PRIORITY; /* needs no scratch: written straight to order */
        } else {
            a = heap;
            keys = (uint64_t *)(void *)(a + n);
            lat = (double *)(void *)(keys + n);
            cost = lat + n;
        }
    }

    switch (s) {
    case AIR_S_PRIORITY:
        for (size_t i = 0; i < n; i++)
            if (ok[i])
                order[k++] = i;
        break;
    case AIR_S_ROUND_ROBIN:
        k = collect(ok, n, a, rng, 0);
        if (k > 0) {
            size_t start = (size_t)((*rr)++ % k);
            for (size_t j = 0; j < k; j++)
                order[j] = a[(start + j) % k].i;
        }
        break;
    case AIR_S_WEIGHTED:
        k = rank_weighted(c, n, ok, rng, a);
        for (size_t j = 0; j < k; j++)
            order[j] = a[j].i;
        break;
    case AIR_S_LEAST_BUSY:
    case AIR_S_LOWEST_LATENCY:
    case AIR_S_LOWEST_COST:
        k = rank_keyed(s, c, n, ok, need, rng, a);
        for (size_t j = 0; j < k; j++)
            order[j] = a[j].i;
        break;
    case AIR_S_SCORE:
    default:
        k = rank_score(c, n, ok, w, need, rng, keys, lat, cost);
        for (size_t j = 0; j < k; j++)
            order[j] = (size_t)(keys[j] & IDX_MASK);
        break;
    }
    air__free(heap);
    return k;
}
