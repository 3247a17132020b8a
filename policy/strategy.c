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
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const char *r = reject(&c[i], need);
        ok[i] = r == NULL;
        k += r == NULL;
        if (why)
            why[i] = r;
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
    return v > 0 ? v : 0; /* negative and NaN -> 0 */
}

/* Maxima over the candidates that passed, shared by score and rank. */
struct maxima {
    double lat, cost, inflight;
};

static void
find_maxima(const struct air__pcand *c, size_t n, const int *ok, const struct air__need *need,
            struct maxima *m)
{
    int stream = need ? need->stream : 0;
    m->lat = m->cost = m->inflight = 0;
    for (size_t i = 0; i < n; i++) {
        if (!ok[i])
            continue;
        double l = latency_of(&c[i], stream);
        if (l > m->lat && l != HUGE_VAL)
            m->lat = l;
        double e = expected_cost(&c[i], need);
        if (e > m->cost)
            m->cost = e;
        if (c[i].max_inflight == 0 && c[i].inflight > m->inflight)
            m->inflight = c[i].inflight;
    }
}

static void
score_one(const struct air__pcand *c, const struct air__score_weights *w,
          const struct air__need *need, const struct maxima *m, struct air__score *s)
{
    double l = latency_of(c, need ? need->stream : 0);
    if (l < 0) {
        s->latency = 0; /* never tried: explore */
        s->latency_us = 0;
    } else if (l == HUGE_VAL) {
        s->latency = 1; /* tried, never succeeded */
        s->latency_us = 0;
    } else {
        s->latency = m->lat > 0 ? clamp01(l / m->lat) : 0;
        s->latency_us = l;
    }
    s->expected_usd = expected_cost(c, need);
    s->cost = m->cost > 0 ? clamp01(s->expected_usd / m->cost) : 0;
    s->health = c->st ? clamp01(1.0 - c->st->succ_ewma) : 0;
    if (c->max_inflight > 0)
        s->load = clamp01((double)c->inflight / (double)c->max_inflight);
    else
        s->load = m->inflight > 0 ? clamp01((double)c->inflight / m->inflight) : 0;
    s->total = weight_ok(w->latency) * s->latency + weight_ok(w->cost) * s->cost +
               weight_ok(w->health) * s->health + weight_ok(w->load) * s->load;
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
    struct maxima m;
    find_maxima(c, n, ok, need, &m);
    for (size_t i = 0; i < n; i++) {
        if (ok[i]) {
            score_one(&c[i], w, need, &m, &out[i]);
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

static size_t
rank_score(const struct air__pcand *c, size_t n, const int *ok,
           const struct air__score_weights *w, const struct air__need *need, uint64_t *rng,
           struct key *a)
{
    struct maxima m;
    find_maxima(c, n, ok, need, &m);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (!ok[i])
            continue;
        struct air__score s;
        score_one(&c[i], w, need, &m, &s);
        a[k].v = s.total;
        a[k].i = i;
        k++;
    }
    sort_keys(a, k);
    if (k < 2)
        return k;
    /* Power of two choices among the best min(3, k). */
    size_t top = k < 3 ? k : 3;
    uint64_t r = air__rand_next(rng);
    size_t x = (size_t)(r % top);
    size_t y = (size_t)((r >> 32) % (top - 1));
    if (y >= x)
        y++;
    /* a[] is sorted, so the lower position is the better; on a tie the
     * first draw (x) wins, which is random. */
    size_t win = a[x].v < a[y].v ? x : a[y].v < a[x].v ? y : x;
    if (win > 0) {
        struct key t = a[win];
        memmove(&a[1], &a[0], win * sizeof a[0]);
        a[0] = t;
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
    struct key stack[STACK_CANDS];
    struct key *a = stack;
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
    if (n > STACK_CANDS) {
        a = air__malloc(n * sizeof *a);
        if (a == NULL)
            s = AIR_S_PRIORITY; /* needs no scratch: written straight to order */
    }

    switch (s) {
    case AIR_S_PRIORITY:
        for (size_t i = 0; i < n; i++)
            if (ok[i])
                order[k++] = i;
        if (a != stack)
            air__free(a);
        return k;
    case AIR_S_ROUND_ROBIN:
        k = collect(ok, n, a, rng, 0);
        if (k > 0) {
            size_t start = (size_t)((*rr)++ % k);
            for (size_t j = 0; j < k; j++)
                order[j] = a[(start + j) % k].i;
        }
        if (a != stack)
            air__free(a);
        return k;
    case AIR_S_WEIGHTED:
        k = rank_weighted(c, n, ok, rng, a);
        break;
    case AIR_S_LEAST_BUSY:
    case AIR_S_LOWEST_LATENCY:
    case AIR_S_LOWEST_COST:
        k = rank_keyed(s, c, n, ok, need, rng, a);
        break;
    case AIR_S_SCORE:
    default:
        k = rank_score(c, n, ok, w, need, rng, a);
        break;
    }
    for (size_t j = 0; j < k; j++)
        order[j] = a[j].i;
    if (a != stack)
        air__free(a);
    return k;
}
