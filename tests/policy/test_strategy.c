/*
 * test_strategy.c - policy/strategy.c with injected statistics and a seeded
 * random source: the filter and its reasons (tools, images, streaming, JSON
 * mode, context length, excluded by core), names, and each strategy:
 * priority order; weighted 70/30 over 10,000 picks within +-2 % (and weight
 * 0 never first); round-robin exactly even; least-busy; lowest-latency
 * (TTFT for streams, unexplored first, never-successful last); lowest-cost
 * from estimated tokens and prices; score (components by the formula, the
 * better total preferred, power of two choices spreading among equals,
 * filtered candidates never ranked at all), and more than 64 candidates.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "airouter/provider.h"
#include "strategy.h"

#define ALLCAPS (AIR_CAP_STREAM | AIR_CAP_TOOLS | AIR_CAP_IMAGES | AIR_CAP_JSON)

struct fx {
    struct air__dstat st[8];
    struct air__pcand c[8];
    int ok[8];
    const char *why[8];
    size_t order[8];
    struct air__need need;
    struct air__score_weights w;
    uint64_t rng, rr;
};

static int
setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    if (f == NULL)
        return -1;
    for (int i = 0; i < 8; i++) {
        air__dstat_init(&f->st[i]);
        f->c[i].caps = ALLCAPS;
        f->c[i].weight = 1;
        f->c[i].in_price = 1;
        f->c[i].out_price = 1;
    }
    air__score_weights_default(&f->w);
    f->rng = 42;
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    free(*state);
    return 0;
}

/* A deployment with samples: latency/TTFT EWMA in us, success rate. */
static void
stat(struct fx *f, int i, double lat_us, double ttft_us, double succ)
{
    struct air__dstat *s = &f->st[i];
    s->lat_ewma_us = lat_us;
    s->ttft_ewma_us = ttft_us;
    s->have_samples = 1;
    s->have_ttft = ttft_us > 0;
    s->succ_ewma = succ;
    s->requests = 100;
    f->c[i].st = s;
}

/* How often each candidate comes first over `runs` ranks. */
static void
firsts(struct fx *f, enum air__strategy s, size_t n, int runs, int *count)
{
    memset(count, 0, n * sizeof *count);
    air__policy_filter(f->c, n, &f->need, f->ok, NULL);
    for (int r = 0; r < runs; r++) {
        size_t k = air__policy_rank(s, f->c, n, f->ok, &f->w, &f->need, &f->rr, &f->rng,
                                    f->order);
        assert_true(k > 0);
        count[f->order[0]]++;
    }
}

static void
test_strategy_names_round_trip(void **state)
{
    (void)state;
    static const char *const want[] = {"priority",       "weighted",    "round-robin",
                                       "least-busy",     "lowest-latency", "lowest-cost",
                                       "score"};
    for (int i = 0; i < AIR_S__COUNT; i++) {
        enum air__strategy s;
        assert_string_equal(air__strategy_name((enum air__strategy)i), want[i]);
        assert_int_equal(air__strategy_parse(want[i], &s), 0);
        assert_int_equal(s, i);
    }
    enum air__strategy s = AIR_S_SCORE;
    assert_int_equal(air__strategy_parse("round_robin", &s), 0);
    assert_int_equal(s, AIR_S_ROUND_ROBIN);
    assert_int_equal(air__strategy_parse("fastest", &s), -1);
    assert_int_equal(air__strategy_parse("score ", &s), -1);
    assert_int_equal(air__strategy_parse("", &s), -1);
    assert_int_equal(air__strategy_parse(NULL, &s), -1);
}

static void
test_strategy_filter_reasons(void **state)
{
    struct fx *f = *state;
    f->c[0].caps = ALLCAPS & ~AIR_CAP_TOOLS;
    f->c[1].caps = ALLCAPS & ~AIR_CAP_IMAGES;
    f->c[2].caps = ALLCAPS & ~AIR_CAP_STREAM;
    f->c[3].caps = ALLCAPS & ~AIR_CAP_JSON;
    f->c[4].context_tokens = 8192;
    f->c[5].excluded = 1;
    f->c[5].excluded_why = "ejected for 3.0 s more (ejection 1)";
    f->c[6].excluded = 1; /* no reason given */
    f->c[7].context_tokens = 0; /* unknown: never filtered on it */
    f->need = (struct air__need){1, 1, 1, 1, 10000, 2000};
    assert_int_equal(air__policy_filter(f->c, 8, &f->need, f->ok, f->why), 1);
    assert_string_equal(f->why[0], "does not support tools");
    assert_string_equal(f->why[1], "does not support images");
    assert_string_equal(f->why[2], "does not support streaming");
    assert_string_equal(f->why[3], "does not support JSON mode");
    assert_string_equal(f->why[4], "context window too small for the request");
    assert_string_equal(f->why[5], "ejected for 3.0 s more (ejection 1)");
    assert_string_equal(f->why[6], "excluded");
    assert_null(f->why[7]);
    for (int i = 0; i < 7; i++)
        assert_int_equal(f->ok[i], 0);
    assert_int_equal(f->ok[7], 1);
    char buf[96];
    air__policy_why(&f->c[4], &f->need, buf, sizeof buf);
    assert_string_equal(buf, "needs ~12000 tokens, context window is 8192");
    air__policy_why(&f->c[7], &f->need, buf, sizeof buf);
    assert_string_equal(buf, "");

    /* a plain request needs none of the capabilities */
    f->need = (struct air__need){0, 0, 0, 0, 100, 100};
    assert_int_equal(air__policy_filter(f->c, 8, &f->need, f->ok, f->why), 6);
    /* at max in-flight is not filtered (core spills or waits) */
    f->c[0].inflight = 4;
    f->c[0].max_inflight = 4;
    assert_int_equal(air__policy_filter(f->c, 1, &f->need, f->ok, NULL), 1);
}

static void
test_strategy_priority_keeps_order_and_skips_filtered(void **state)
{
    struct fx *f = *state;
    f->c[1].excluded = 1;
    air__policy_filter(f->c, 5, &f->need, f->ok, NULL);
    for (int r = 0; r < 10; r++) {
        size_t k = air__policy_rank(AIR_S_PRIORITY, f->c, 5, f->ok, &f->w, &f->need, NULL,
                                    &f->rng, f->order);
        assert_int_equal(k, 4);
        assert_int_equal(f->order[0], 0);
        assert_int_equal(f->order[1], 2);
        assert_int_equal(f->order[2], 3);
        assert_int_equal(f->order[3], 4);
    }
}

static void
test_strategy_weighted_70_30_within_2_percent(void **state)
{
    struct fx *f = *state;
    f->c[0].weight = 7;
    f->c[1].weight = 3;
    int count[2];
    firsts(f, AIR_S_WEIGHTED, 2, 10000, count);
    assert_true(abs(count[0] - 7000) <= 200);
    assert_true(abs(count[1] - 3000) <= 200);
    /* the other one is always second (failover) */
    size_t k = air__policy_rank(AIR_S_WEIGHTED, f->c, 2, f->ok, &f->w, &f->need, NULL, &f->rng,
                                f->order);
    assert_int_equal(k, 2);
    assert_int_not_equal(f->order[0], f->order[1]);
}

static void
test_strategy_weighted_zero_weight_only_as_fallback(void **state)
{
    struct fx *f = *state;
    f->c[0].weight = 0; /* drained */
    f->c[1].weight = 1;
    f->c[2].weight = 2;
    int count[3];
    firsts(f, AIR_S_WEIGHTED, 3, 3000, count);
    assert_int_equal(count[0], 0);
    assert_true(abs(count[2] - 2000) <= 150);
    size_t k = air__policy_rank(AIR_S_WEIGHTED, f->c, 3, f->ok, &f->w, &f->need, NULL, &f->rng,
                                f->order);
    assert_int_equal(k, 3);
    assert_int_equal(f->order[2], 0); /* last */
    /* all zero: uniform */
    f->c[1].weight = 0;
    f->c[2].weight = 0;
    firsts(f, AIR_S_WEIGHTED, 3, 3000, count);
    for (int i = 0; i < 3; i++)
        assert_true(abs(count[i] - 1000) <= 120);
}

static void
test_strategy_round_robin_even(void **state)
{
    struct fx *f = *state;
    f->c[3].excluded = 1;
    int count[5];
    firsts(f, AIR_S_ROUND_ROBIN, 5, 4000, count);
    assert_int_equal(count[0], 1000);
    assert_int_equal(count[1], 1000);
    assert_int_equal(count[2], 1000);
    assert_int_equal(count[3], 0);
    assert_int_equal(count[4], 1000);
    assert_int_equal(f->rr, 4000);
}

static void
test_strategy_least_busy_prefers_fewest_inflight(void **state)
{
    struct fx *f = *state;
    f->c[0].inflight = 5;
    f->c[1].inflight = 1;
    f->c[2].inflight = 3;
    air__policy_filter(f->c, 3, &f->need, f->ok, NULL);
    size_t k = air__policy_rank(AIR_S_LEAST_BUSY, f->c, 3, f->ok, &f->w, &f->need, NULL,
                                &f->rng, f->order);
    assert_int_equal(k, 3);
    assert_int_equal(f->order[0], 1);
    assert_int_equal(f->order[1], 2);
    assert_int_equal(f->order[2], 0);
    /* ties are broken at random, not always by index */
    f->c[0].inflight = 2;
    f->c[1].inflight = 2;
    f->c[2].inflight = 9;
    int count[3];
    firsts(f, AIR_S_LEAST_BUSY, 3, 1000, count);
    assert_int_equal(count[2], 0);
    assert_true(count[0] > 350 && count[1] > 350);
}

static void
test_strategy_lowest_latency_picks_fast_and_ttft_for_streams(void **state)
{
    struct fx *f = *state;
    stat(f, 0, 900000, 400000, 1); /* quick overall, slow first token */
    stat(f, 1, 1500000, 100000, 1); /* slow overall, quick first token */
    stat(f, 2, 3000000, 900000, 1);
    int count[3];
    firsts(f, AIR_S_LOWEST_LATENCY, 3, 100, count);
    assert_int_equal(count[0], 100);
    f->need.stream = 1;
    firsts(f, AIR_S_LOWEST_LATENCY, 3, 100, count);
    assert_int_equal(count[1], 100);
    /* a stream on a deployment with no TTFT sample uses its latency */
    f->st[1].have_ttft = 0;
    firsts(f, AIR_S_LOWEST_LATENCY, 3, 100, count);
    assert_int_equal(count[0], 100);
}

static void
test_strategy_lowest_latency_explores_new_and_sinks_failing(void **state)
{
    struct fx *f = *state;
    stat(f, 0, 100000, 0, 1);
    f->c[1].st = NULL; /* never seen */
    stat(f, 2, 50000, 0, 0.1);
    f->st[2].have_samples = 0; /* tried, never a success */
    air__policy_filter(f->c, 3, &f->need, f->ok, NULL);
    size_t k = air__policy_rank(AIR_S_LOWEST_LATENCY, f->c, 3, f->ok, &f->w, &f->need, NULL,
                                &f->rng, f->order);
    assert_int_equal(k, 3);
    assert_int_equal(f->order[0], 1);
    assert_int_equal(f->order[1], 0);
    assert_int_equal(f->order[2], 2);
}

static void
test_strategy_lowest_cost_uses_estimated_tokens(void **state)
{
    struct fx *f = *state;
    f->c[0].in_price = 0.15; /* cheap input, dear output */
    f->c[0].out_price = 10;
    f->c[1].in_price = 3; /* dear input, cheap output */
    f->c[1].out_price = 0.6;
    f->c[2].in_price = 5;
    f->c[2].out_price = 15;
    int count[3];
    f->need.est_in_tokens = 10000; /* a long prompt, short answer */
    f->need.est_out_tokens = 100;
    firsts(f, AIR_S_LOWEST_COST, 3, 100, count);
    assert_int_equal(count[0], 100);
    f->need.est_in_tokens = 100; /* a short prompt, long answer */
    f->need.est_out_tokens = 10000;
    firsts(f, AIR_S_LOWEST_COST, 3, 100, count);
    assert_int_equal(count[1], 100);
    size_t k = air__policy_rank(AIR_S_LOWEST_COST, f->c, 3, f->ok, &f->w, &f->need, NULL,
                                &f->rng, f->order);
    assert_int_equal(k, 3);
    assert_int_equal(f->order[1], 0);
    assert_int_equal(f->order[2], 2);
}

static void
test_strategy_score_components_follow_formula(void **state)
{
    struct fx *f = *state;
    stat(f, 0, 1000000, 0, 0.9);
    stat(f, 1, 500000, 0, 1.0);
    f->c[0].in_price = 1;
    f->c[0].out_price = 1;
    f->c[1].in_price = 4;
    f->c[1].out_price = 4;
    f->c[0].inflight = 2;
    f->c[1].inflight = 8;
    f->c[1].max_inflight = 16;
    f->need.est_in_tokens = 1000;
    f->need.est_out_tokens = 1000;
    struct air__score s[2];
    air__policy_filter(f->c, 2, &f->need, f->ok, NULL);
    air__policy_score(f->c, 2, f->ok, &f->w, &f->need, s);
    assert_true(fabs(s[0].latency - 1.0) < 1e-12);
    assert_true(fabs(s[1].latency - 0.5) < 1e-12);
    assert_true(fabs(s[0].cost - 0.25) < 1e-12);
    assert_true(fabs(s[1].cost - 1.0) < 1e-12);
    assert_true(fabs(s[0].health - 0.1) < 1e-12);
    assert_true(fabs(s[1].health - 0.0) < 1e-12);
    assert_true(fabs(s[0].load - 1.0) < 1e-12); /* 2 of the uncapped max 2 */
    assert_true(fabs(s[1].load - 0.5) < 1e-12); /* 8 of its cap 16 */
    assert_true(fabs(s[0].total - (0.4 * 1 + 0.3 * 0.25 + 0.2 * 0.1 + 0.1 * 1)) < 1e-12);
    assert_true(fabs(s[1].total - (0.4 * 0.5 + 0.3 * 1 + 0.2 * 0 + 0.1 * 0.5)) < 1e-12);
    assert_true(fabs(s[0].expected_usd - 0.002) < 1e-15);
    assert_true(fabs(s[1].latency_us - 500000) < 1e-9);
    /* a filtered candidate scores infinitely bad */
    f->ok[1] = 0;
    air__policy_score(f->c, 2, f->ok, NULL, &f->need, s);
    assert_true(isinf(s[1].total));
    assert_true(s[0].latency == 1.0); /* normalised among the passing only */
}

static void
test_strategy_score_prefers_better_total(void **state)
{
    struct fx *f = *state;
    stat(f, 0, 2000000, 0, 0.95);
    stat(f, 1, 400000, 0, 1.0); /* best on every axis */
    stat(f, 2, 1000000, 0, 0.99);
    f->c[1].in_price = f->c[1].out_price = 0.5;
    int count[3];
    /* two candidates: the better is always first */
    firsts(f, AIR_S_SCORE, 2, 1000, count);
    assert_int_equal(count[1], 1000);
    /* three: P2C draws a pair among the top 3; the best wins any pair it
     * is in (2/3), the runner-up only the pair without the best (1/3) */
    firsts(f, AIR_S_SCORE, 3, 9000, count);
    assert_true(abs(count[1] - 6000) <= 250);
    assert_true(abs(count[2] - 3000) <= 250);
    assert_int_equal(count[0], 0);
    /* the rest follow by score */
    size_t k = air__policy_rank(AIR_S_SCORE, f->c, 3, f->ok, &f->w, &f->need, NULL, &f->rng,
                                f->order);
    assert_int_equal(k, 3);
    assert_int_equal(f->order[2], 0);
    /* weights move the preference: cost only, and 1 is the dearest now */
    f->c[1].in_price = f->c[1].out_price = 50;
    f->w = (struct air__score_weights){0, 1, 0, 0};
    firsts(f, AIR_S_SCORE, 2, 1000, count);
    assert_int_equal(count[0], 1000);
}

static void
test_strategy_score_p2c_spreads_among_equals(void **state)
{
    struct fx *f = *state;
    stat(f, 0, 500000, 0, 1);
    stat(f, 1, 500000, 0, 1);
    stat(f, 2, 5000000, 0, 0.5);
    int count[3];
    firsts(f, AIR_S_SCORE, 2, 2000, count);
    assert_true(count[0] > 800 && count[1] > 800); /* ~50/50, never 100 % */
    firsts(f, AIR_S_SCORE, 3, 3000, count);
    assert_true(abs(count[0] - 1500) <= 150);
    assert_true(abs(count[1] - 1500) <= 150);
    assert_int_equal(count[2], 0);
}

static void
test_strategy_filtered_never_ranked(void **state)
{
    struct fx *f = *state;
    for (int i = 0; i < 6; i++)
        stat(f, i, 100000.0 * (i + 1), 0, 1);
    f->c[0].excluded = 1; /* the best by far is excluded */
    f->c[3].caps = 0;
    f->need.tools = 1;
    air__policy_filter(f->c, 6, &f->need, f->ok, NULL);
    for (int s = 0; s < AIR_S__COUNT; s++) {
        for (int r = 0; r < 200; r++) {
            size_t k = air__policy_rank((enum air__strategy)s, f->c, 6, f->ok, &f->w, &f->need,
                                        &f->rr, &f->rng, f->order);
            assert_int_equal(k, 4);
            int seen[6] = {0};
            for (size_t j = 0; j < k; j++) {
                assert_true(f->order[j] != 0 && f->order[j] != 3);
                seen[f->order[j]]++;
            }
            for (int i = 0; i < 6; i++)
                assert_true(seen[i] <= 1); /* a permutation */
        }
    }
    /* nothing passes: nothing ranked */
    memset(f->ok, 0, sizeof f->ok);
    assert_int_equal(air__policy_rank(AIR_S_SCORE, f->c, 6, f->ok, &f->w, &f->need, NULL, NULL,
                                      f->order),
                     0);
}

static void
test_strategy_many_candidates_use_heap_scratch(void **state)
{
    (void)state;
    size_t n = 100;
    struct air__pcand *c = calloc(n, sizeof *c);
    struct air__dstat *st = calloc(n, sizeof *st);
    int *ok = calloc(n, sizeof *ok);
    size_t *order = calloc(n, sizeof *order);
    assert_true(c && st && ok && order);
    for (size_t i = 0; i < n; i++) {
        air__dstat_init(&st[i]);
        st[i].have_samples = 1;
        st[i].requests = 1;
        st[i].lat_ewma_us = 1000.0 * (double)(n - i); /* the last is fastest */
        c[i].st = &st[i];
        c[i].caps = ALLCAPS;
        c[i].weight = 1;
    }
    struct air__need need = {0};
    assert_int_equal(air__policy_filter(c, n, &need, ok, NULL), n);
    uint64_t rng = 1;
    size_t k = air__policy_rank(AIR_S_LOWEST_LATENCY, c, n, ok, NULL, &need, NULL, &rng, order);
    assert_int_equal(k, n);
    for (size_t j = 0; j < n; j++)
        assert_int_equal(order[j], n - 1 - j);
    k = air__policy_rank(AIR_S_SCORE, c, n, ok, NULL, &need, NULL, &rng, order);
    assert_int_equal(k, n);
    assert_true(order[0] >= n - 3);
    free(c);
    free(st);
    free(ok);
    free(order);
}

int
main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_strategy_names_round_trip),
        T(test_strategy_filter_reasons),
        T(test_strategy_priority_keeps_order_and_skips_filtered),
        T(test_strategy_weighted_70_30_within_2_percent),
        T(test_strategy_weighted_zero_weight_only_as_fallback),
        T(test_strategy_round_robin_even),
        T(test_strategy_least_busy_prefers_fewest_inflight),
        T(test_strategy_lowest_latency_picks_fast_and_ttft_for_streams),
        T(test_strategy_lowest_latency_explores_new_and_sinks_failing),
        T(test_strategy_lowest_cost_uses_estimated_tokens),
        T(test_strategy_score_components_follow_formula),
        T(test_strategy_score_prefers_better_total),
        T(test_strategy_score_p2c_spreads_among_equals),
        T(test_strategy_filtered_never_ranked),
        T(test_strategy_many_candidates_use_heap_scratch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
