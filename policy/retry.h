/*
 * retry.h - retry and failover decisions (pure: no clock, no I/O; time and
 * randomness are passed in, so every rule is unit-testable).
 */
#ifndef AIR_POLICY_RETRY_H
#define AIR_POLICY_RETRY_H

#include <stddef.h>
#include <stdint.h>

/* Full-jitter exponential backoff (AWS architecture blog's "full jitter"):
 * uniform in [0, min(cap, base * 2^(round-1))], round >= 1. `rnd` is a
 * uniformly distributed 64-bit random number. */
uint64_t air__backoff_ms(uint32_t round, uint32_t base_ms, uint32_t cap_ms, uint64_t rnd);

/* Per-request view of one candidate deployment. */
struct air__cand_state {
    uint8_t tried;     /* attempted at least once for this request */
    uint8_t excluded;  /* never again for this request (auth, not_found, ...) */
    int64_t not_before_ms; /* do not start an attempt before this time (Retry-After) */
};

/* Choose the candidate for the next attempt after candidate `cur` failed,
 * in priority order: the first candidate after `cur` (wrapping) that is not
 * excluded, preferring ones not yet tried. Returns the index, or -1 when all
 * are excluded. Sets *new_round when the choice was tried before (then the
 * caller applies backoff). */
long air__next_candidate(const struct air__cand_state *c, size_t n, size_t cur, int *new_round);

/* Xorshift64* step: a small, fast, seedable PRNG for jitter. */
uint64_t air__rand_next(uint64_t *state);

#endif
