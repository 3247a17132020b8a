/*
 * retry.c - retry and failover arithmetic. DESIGN: kept pure so the rules
 * (full jitter, candidate order, exclusion) are tested with fixed inputs; the
 * worker owns the clock and the random state.
 */
#include "retry.h"

uint64_t
air__rand_next(uint64_t *state)
{
    uint64_t x = *state ? *state : 0x9e3779b97f4a7c15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545f4914f6cdd1dull;
}

uint64_t
air__backoff_ms(uint32_t round, uint32_t base_ms, uint32_t cap_ms, uint64_t rnd)
{
    if (round == 0 || base_ms == 0 || cap_ms == 0)
        return 0;
    uint64_t ceil = base_ms;
    for (uint32_t i = 1; i < round && ceil < cap_ms; i++)
        ceil *= 2;
    if (ceil > cap_ms)
        ceil = cap_ms;
    return rnd % (ceil + 1);
}

long
air__next_candidate(const struct air__cand_state *c, size_t n, size_t cur, int *new_round)
{
    *new_round = 0;
    if (n == 0)
        return -1;
    /* First pass: an untried, usable candidate after cur, in priority order. */
    for (size_t k = 1; k <= n; k++) {
        size_t i = (cur + k) % n;
        if (!c[i].excluded && !c[i].tried)
            return (long)i;
    }
    /* Everything usable was tried: start a new round after cur. */
    for (size_t k = 1; k <= n; k++) {
        size_t i = (cur + k) % n;
        if (!c[i].excluded) {
            *new_round = 1;
            return (long)i;
        }
    }
    return -1;
}
