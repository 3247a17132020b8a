/*
 * keypool.h - several API keys for one provider (issue 4, "key pools").
 *
 * Requests spread across the keys round-robin. A key that gets 429 cools
 * down until its Retry-After (or a default); a key that gets 401/402/403 is
 * set aside until an operator resets it or the config changes. One exhausted
 * key therefore does not take the provider out: only when every key is set
 * aside or cooling does the deployment itself count as unusable or cooling.
 *
 * Pure: time is passed in. Shared between workers: the state is small and
 * is changed with atomics (the round-robin cursor) and per-key atomic
 * fields, so picking a key takes no lock.
 */
#ifndef AIR_POLICY_KEYPOOL_H
#define AIR_POLICY_KEYPOOL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define AIR_KEYPOOL_MAX 32

struct air__keyslot {
    _Atomic int64_t cool_until_ms; /* no use before this (429) */
    _Atomic int unusable;          /* 401/402/403: set aside */
    _Atomic uint64_t uses, rate_limited, rejected;
};

struct air__keypool {
    size_t n;
    _Atomic uint64_t cursor;
    struct air__keyslot k[AIR_KEYPOOL_MAX];
};

void air__keypool_init(struct air__keypool *p, size_t n);

/* The key for the next request: round-robin over usable keys that are not
 * cooling down. Returns its index, or -1 when none is; then *wait_ms is the
 * time until the first cooling key is back (-1 when every key is set
 * aside). */
long air__keypool_pick(struct air__keypool *p, int64_t now_ms, int64_t *wait_ms);

enum air__key_outcome { AIR_K_OK, AIR_K_RATE_LIMITED, AIR_K_REJECTED };

/* Report what happened with key i. retry_after_ms < 0: no hint (a 429 then
 * cools for default_cool_ms). */
void air__keypool_report(struct air__keypool *p, size_t i, enum air__key_outcome o,
                         int64_t retry_after_ms, int64_t default_cool_ms, int64_t now_ms);

/* How many keys are usable now (not set aside, not cooling). */
size_t air__keypool_available(const struct air__keypool *p, int64_t now_ms);

/* Operator reset: every key usable again. */
void air__keypool_reset(struct air__keypool *p);

#endif
