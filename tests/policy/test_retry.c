/*
 * test_retry.c - policy/retry.c: full-jitter backoff (bounds for rounds
 * 1..10, the zero cases, the cap, overflow-free huge rounds, coverage of the
 * whole range), the failover candidate choice (priority order, wrap-around,
 * excluded skipped, untried preferred, the new-round flag, nothing usable,
 * a single candidate, a whole failover chain) and the xorshift64* generator
 * (reference values, determinism, never stuck at zero, bit coverage).
 * Everything is pure, so every input is chosen by the test.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "retry.h"

/* The backoff ceiling of a round, computed independently of retry.c:
 * min(cap, base * 2^(round-1)). */
static uint64_t
ceiling(uint32_t round, uint32_t base, uint32_t cap)
{
    uint64_t c = base;
    for (uint32_t i = 1; i < round; i++) {
        c *= 2;
        if (c >= cap)
            return cap;
    }
    return c < cap ? c : cap;
}

/* ------------------------------------------------------------------ backoff */

static void
test_retry_backoff_zero_inputs_return_zero(void **state)
{
    (void)state;
    const uint64_t rnds[] = {0, 1, 12345, UINT64_MAX};
    for (size_t i = 0; i < sizeof rnds / sizeof rnds[0]; i++) {
        /* round 0 is "no retry yet" */
        assert_int_equal(air__backoff_ms(0, 100, 1000, rnds[i]), 0);
        /* base 0 or cap 0 disables backoff */
        assert_int_equal(air__backoff_ms(1, 0, 1000, rnds[i]), 0);
        assert_int_equal(air__backoff_ms(5, 0, 1000, rnds[i]), 0);
        assert_int_equal(air__backoff_ms(1, 100, 0, rnds[i]), 0);
        assert_int_equal(air__backoff_ms(5, 100, 0, rnds[i]), 0);
    }
    /* rnd 0 is the low end of the jitter range */
    for (uint32_t round = 1; round <= 10; round++)
        assert_int_equal(air__backoff_ms(round, 100, 5000, 0), 0);
}

static void
test_retry_backoff_rounds_1_to_10_stay_within_ceiling(void **state)
{
    (void)state;
    const uint32_t base = 100, cap = 10000;
    /* ceilings: 100 200 400 800 1600 3200 6400 10000 10000 10000 */
    const uint64_t want[10] = {100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000, 10000};
    uint64_t rnd = 0x1234567887654321ull;
    for (uint32_t round = 1; round <= 10; round++) {
        uint64_t c = ceiling(round, base, cap);
        assert_int_equal(c, want[round - 1]);
        /* The top of the range is reachable and exact... */
        assert_int_equal(air__backoff_ms(round, base, cap, c), c);
        /* ...and one past it wraps to the bottom: the range is [0, c]. */
        assert_int_equal(air__backoff_ms(round, base, cap, c + 1), 0);
        assert_int_equal(air__backoff_ms(round, base, cap, c / 2), c / 2);
        /* Any rnd stays within [0, c]. */
        assert_true(air__backoff_ms(round, base, cap, UINT64_MAX) <= c);
        for (int k = 0; k < 1000; k++) {
            uint64_t v = air__backoff_ms(round, base, cap, air__rand_next(&rnd));
            assert_true(v <= c);
        }
    }
}

static void
test_retry_backoff_cap_limits_every_round(void **state)
{
    (void)state;
    /* From round 4 on, 100 * 2^(round-1) >= 800 > cap 700. */
    for (uint32_t round = 1; round <= 40; round++) {
        uint64_t c = ceiling(round, 100, 700);
        assert_true(c <= 700);
        assert_int_equal(air__backoff_ms(round, 100, 700, c), c);
        assert_true(air__backoff_ms(round, 100, 700, UINT64_MAX) <= 700);
        if (round >= 4)
            assert_int_equal(air__backoff_ms(round, 100, 700, 700), 700);
    }
    /* base above cap: even round 1 is capped. */
    assert_int_equal(air__backoff_ms(1, 500, 100, 100), 100);
    assert_int_equal(air__backoff_ms(1, 500, 100, 101), 0);
    assert_int_equal(air__backoff_ms(3, 500, 100, 100), 100);
    /* base == cap: constant ceiling. */
    for (uint32_t round = 1; round <= 10; round++)
        assert_int_equal(air__backoff_ms(round, 250, 250, 250), 250);
}

static void
test_retry_backoff_huge_round_does_not_overflow(void **state)
{
    (void)state;
    /* Doubling a 32-bit base 4 billion times must neither overflow nor spin
     * forever; the ceiling is the cap. */
    assert_int_equal(air__backoff_ms(UINT32_MAX, 1, UINT32_MAX, UINT32_MAX), UINT32_MAX);
    assert_int_equal(air__backoff_ms(UINT32_MAX, UINT32_MAX, UINT32_MAX, UINT32_MAX), UINT32_MAX);
    assert_int_equal(air__backoff_ms(1000, 1000, 30000, 30000), 30000);
    assert_int_equal(air__backoff_ms(1000, 1000, 30000, 30001), 0);
    assert_true(air__backoff_ms(64, 3, UINT32_MAX, UINT64_MAX) <= UINT32_MAX);
}

static void
test_retry_backoff_jitter_covers_whole_range(void **state)
{
    (void)state;
    /* round 3, base 4: ceiling 16, so 17 possible values. */
    const uint64_t c = 16;
    assert_int_equal(ceiling(3, 4, 1000), c);

    /* rnd = 0..c maps one to one onto 0..c (full jitter, no bias at the
     * ends). */
    for (uint64_t r = 0; r <= c; r++)
        assert_int_equal(air__backoff_ms(3, 4, 1000, r), r);

    /* With random rnd every value shows up, with roughly equal frequency. */
    unsigned hits[17] = {0};
    uint64_t rs = 42, sum = 0;
    const unsigned n = 17000;
    for (unsigned i = 0; i < n; i++) {
        uint64_t v = air__backoff_ms(3, 4, 1000, air__rand_next(&rs));
        assert_true(v <= c);
        hits[v]++;
        sum += v;
    }
    for (unsigned v = 0; v <= c; v++) {
        /* expected 1000 each; 700..1300 is far outside chance */
        assert_in_range(hits[v], 700, 1300);
    }
    /* mean of U{0..16} is 8 */
    assert_in_range(sum * 100 / n, 750, 850);

    /* A capped round covers [0, cap] too, both ends included. */
    int saw_zero = 0, saw_cap = 0;
    for (unsigned i = 0; i < 20000; i++) {
        uint64_t v = air__backoff_ms(10, 100, 1000, air__rand_next(&rs));
        assert_true(v <= 1000);
        saw_zero |= v == 0;
        saw_cap |= v == 1000;
    }
    assert_true(saw_zero && saw_cap);
}

/* ------------------------------------------------------------------ candidates */

#define NCAND 6

/* Build candidates from two strings of flags, one character per candidate:
 * tried "t." and excluded "x.". */
static void
cands(struct air__cand_state *c, const char *tried, const char *excluded)
{
    size_t n = strlen(tried);
    assert_int_equal(n, strlen(excluded));
    assert_true(n <= NCAND);
    memset(c, 0, sizeof(*c) * NCAND);
    for (size_t i = 0; i < n; i++) {
        c[i].tried = tried[i] == 't';
        c[i].excluded = excluded[i] == 'x';
        c[i].not_before_ms = 0;
    }
}

/* air__next_candidate with new_round primed to a wrong value, so a stale
 * flag is caught. */
static long
next(const struct air__cand_state *c, size_t n, size_t cur, int *new_round)
{
    *new_round = 12345;
    return air__next_candidate(c, n, cur, new_round);
}

static void
test_retry_candidate_priority_order_follows_index(void **state)
{
    (void)state;
    struct air__cand_state c[NCAND];
    int nr;
    cands(c, "t...", "....");
    assert_int_equal(next(c, 4, 0, &nr), 1);
    assert_int_equal(nr, 0);
    cands(c, "tt..", "....");
    assert_int_equal(next(c, 4, 1, &nr), 2);
    assert_int_equal(nr, 0);
    cands(c, "ttt.", "....");
    assert_int_equal(next(c, 4, 2, &nr), 3);
    assert_int_equal(nr, 0);
    /* Fresh candidates: the one after cur, not index 0. */
    cands(c, "....", "....");
    assert_int_equal(next(c, 4, 2, &nr), 3);
    assert_int_equal(nr, 0);
}

static void
test_retry_candidate_wraps_past_the_end(void **state)
{
    (void)state;
    struct air__cand_state c[NCAND];
    int nr;
    cands(c, "...t", "....");
    assert_int_equal(next(c, 4, 3, &nr), 0);
    assert_int_equal(nr, 0);
    /* cur 2 failed, 3 is excluded: wrap to 0. */
    cands(c, "..t.", "...x");
    assert_int_equal(next(c, 4, 2, &nr), 0);
    assert_int_equal(nr, 0);
    /* cur 3 failed, 0 and 1 already tried: the untried 2 after wrapping. */
    cands(c, "tt.t", "....");
    assert_int_equal(next(c, 4, 3, &nr), 2);
    assert_int_equal(nr, 0);
}

static void
test_retry_candidate_skips_excluded(void **state)
{
    (void)state;
    struct air__cand_state c[NCAND];
    int nr;
    cands(c, "t...", ".x..");
    assert_int_equal(next(c, 4, 0, &nr), 2);
    assert_int_equal(nr, 0);
    cands(c, "t...", ".xx.");
    assert_int_equal(next(c, 4, 0, &nr), 3);
    assert_int_equal(nr, 0);
    /* Excluded wins over untried... */
    cands(c, "t.....", ".xxxx.");
    assert_int_equal(next(c, 6, 0, &nr), 5);
    /* ...and over tried: an excluded, tried candidate is never chosen again. */
    cands(c, "ttt", ".x.");
    assert_int_equal(next(c, 3, 0, &nr), 2);
    assert_int_equal(nr, 1);
    cands(c, "ttt", "x.x");
    assert_int_equal(next(c, 3, 1, &nr), 1);
    assert_int_equal(nr, 1);
}

static void
test_retry_candidate_prefers_untried(void **state)
{
    (void)state;
    struct air__cand_state c[NCAND];
    int nr;
    /* 1 is next in order but was tried already; 2 is untried. */
    cands(c, "tt..", "....");
    assert_int_equal(next(c, 4, 0, &nr), 2);
    assert_int_equal(nr, 0);
    /* The only untried one is before cur: wrap to it rather than retrying
     * the tried ones after cur. */
    cands(c, ".ttt", "....");
    assert_int_equal(next(c, 4, 1, &nr), 0);
    assert_int_equal(nr, 0);
    /* The failing cur itself, if somehow untried, is the last resort of the
     * untried pass (k = n comes back to cur). */
    cands(c, "t.t", "...");
    assert_int_equal(next(c, 3, 1, &nr), 1);
    assert_int_equal(nr, 0);
}

static void
test_retry_candidate_all_tried_starts_new_round(void **state)
{
    (void)state;
    struct air__cand_state c[NCAND];
    int nr;
    cands(c, "tttt", "....");
    assert_int_equal(next(c, 4, 1, &nr), 2);
    assert_int_equal(nr, 1);
    cands(c, "tttt", "....");
    assert_int_equal(next(c, 4, 3, &nr), 0);
    assert_int_equal(nr, 1);
    /* Only cur is usable: retry it in a new round. */
    cands(c, "tttt", "xx.x");
    assert_int_equal(next(c, 4, 2, &nr), 2);
    assert_int_equal(nr, 1);
}

static void
test_retry_candidate_all_excluded_returns_minus_one(void **state)
{
    (void)state;
    struct air__cand_state c[NCAND];
    int nr;
    cands(c, "....", "xxxx");
    assert_int_equal(next(c, 4, 0, &nr), -1);
    assert_int_equal(nr, 0);
    cands(c, "tttt", "xxxx");
    assert_int_equal(next(c, 4, 3, &nr), -1);
    assert_int_equal(nr, 0);
    /* n == 0: nothing to choose. */
    assert_int_equal(next(c, 0, 0, &nr), -1);
    assert_int_equal(nr, 0);
}

static void
test_retry_candidate_single_candidate(void **state)
{
    (void)state;
    struct air__cand_state c[NCAND];
    int nr;
    /* Untried (first attempt about to start): itself, no new round. */
    cands(c, ".", ".");
    assert_int_equal(next(c, 1, 0, &nr), 0);
    assert_int_equal(nr, 0);
    /* Failed once: retry the same one, as a new round (backoff applies). */
    cands(c, "t", ".");
    assert_int_equal(next(c, 1, 0, &nr), 0);
    assert_int_equal(nr, 1);
    /* Excluded: nothing left. */
    cands(c, "t", "x");
    assert_int_equal(next(c, 1, 0, &nr), -1);
    assert_int_equal(nr, 0);
}

static void
test_retry_candidate_failover_chain_visits_all_then_rounds(void **state)
{
    (void)state;
    /* Simulate a worker: start at 0, every attempt fails, candidate 2 is
     * excluded after its failure (e.g. auth). Expect 1, 2, 3, 4, then a new
     * round 0, 1, 3, 4, 0 ... never 2 again. */
    struct air__cand_state c[NCAND];
    cands(c, ".....", ".....");
    size_t cur = 0;
    int nr;
    const long want[] = {1, 2, 3, 4, 0, 1, 3, 4, 0, 1, 3};
    const int want_nr[] = {0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1};
    c[0].tried = 1;
    for (size_t step = 0; step < sizeof want / sizeof want[0]; step++) {
        long i = next(c, 5, cur, &nr);
        assert_int_equal(i, want[step]);
        assert_int_equal(nr, want_nr[step]);
        cur = (size_t)i;
        c[cur].tried = 1;
        if (cur == 2)
            c[cur].excluded = 1;
    }
}

/* ------------------------------------------------------------------ rand */

static void
test_retry_rand_matches_xorshift64star_reference(void **state)
{
    (void)state;
    /* Values from an independent xorshift64* (12, 25, 27,
     * 0x2545F4914F6CDD1D) implementation. */
    uint64_t s = 1;
    assert_int_equal(air__rand_next(&s), 0x47e4ce4b896cdd1dull);
    assert_int_equal(air__rand_next(&s), 0xabcfa6a8e079651dull);
    assert_int_equal(air__rand_next(&s), 0xb9d10d8feb731f57ull);
    assert_int_equal(s, 0xd004003202803ull);

    s = 0xdeadbeef;
    assert_int_equal(air__rand_next(&s), 0x46151251b681badaull);
    assert_int_equal(air__rand_next(&s), 0x7db211d8263ef2a6ull);
    assert_int_equal(air__rand_next(&s), 0x4bfdeea98d3b4d52ull);
    assert_int_equal(s, 0x32785d6ef9cdabfaull);
}

static void
test_retry_rand_same_seed_same_sequence(void **state)
{
    (void)state;
    uint64_t a = 0x0123456789abcdefull, b = a, c = a + 1;
    int differs = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t va = air__rand_next(&a);
        uint64_t vb = air__rand_next(&b);
        uint64_t vc = air__rand_next(&c);
        assert_int_equal(va, vb);
        assert_int_equal(a, b);
        differs |= va != vc;
    }
    /* A different seed gives a different sequence. */
    assert_true(differs);
}

static void
test_retry_rand_zero_seed_is_never_stuck(void **state)
{
    (void)state;
    /* A zero state would make plain xorshift return 0 forever; it is
     * replaced by a fixed nonzero seed, reproducibly. */
    uint64_t s = 0, t = 0;
    uint64_t v = air__rand_next(&s);
    assert_int_equal(v, 0x0d83b3e29a21487aull);
    assert_int_equal(s, 0x03f721dffe39b342ull);
    assert_int_equal(air__rand_next(&t), v);

    uint64_t prev = v, or_bits = 0, and_bits = UINT64_MAX;
    for (int i = 0; i < 100000; i++) {
        uint64_t x = air__rand_next(&s);
        assert_true(x != 0);
        assert_true(s != 0);
        assert_true(x != prev);
        prev = x;
        or_bits |= x;
        and_bits &= x;
    }
    /* Every bit is sometimes set and sometimes clear. */
    assert_int_equal(or_bits, UINT64_MAX);
    assert_int_equal(and_bits, 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_retry_backoff_zero_inputs_return_zero),
        cmocka_unit_test(test_retry_backoff_rounds_1_to_10_stay_within_ceiling),
        cmocka_unit_test(test_retry_backoff_cap_limits_every_round),
        cmocka_unit_test(test_retry_backoff_huge_round_does_not_overflow),
        cmocka_unit_test(test_retry_backoff_jitter_covers_whole_range),
        cmocka_unit_test(test_retry_candidate_priority_order_follows_index),
        cmocka_unit_test(test_retry_candidate_wraps_past_the_end),
        cmocka_unit_test(test_retry_candidate_skips_excluded),
        cmocka_unit_test(test_retry_candidate_prefers_untried),
        cmocka_unit_test(test_retry_candidate_all_tried_starts_new_round),
        cmocka_unit_test(test_retry_candidate_all_excluded_returns_minus_one),
        cmocka_unit_test(test_retry_candidate_single_candidate),
        cmocka_unit_test(test_retry_candidate_failover_chain_visits_all_then_rounds),
        cmocka_unit_test(test_retry_rand_matches_xorshift64star_reference),
        cmocka_unit_test(test_retry_rand_same_seed_same_sequence),
        cmocka_unit_test(test_retry_rand_zero_seed_is_never_stuck),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
