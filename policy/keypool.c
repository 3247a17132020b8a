/*
 * keypool.c - round-robin over an API key pool with per-key cool-down and
 * set-aside (see keypool.h).
 */
#include "keypool.h"

void
air__keypool_init(struct air__keypool *p, size_t n)
{
    p->n = n > AIR_KEYPOOL_MAX ? AIR_KEYPOOL_MAX : n;
    atomic_init(&p->cursor, 0);
    for (size_t i = 0; i < AIR_KEYPOOL_MAX; i++) {
        atomic_init(&p->k[i].cool_until_ms, 0);
        atomic_init(&p->k[i].unusable, 0);
        atomic_init(&p->k[i].uses, 0);
        atomic_init(&p->k[i].rate_limited, 0);
        atomic_init(&p->k[i].rejected, 0);
    }
}

long
air__keypool_pick(struct air__keypool *p, int64_t now_ms, int64_t *wait_ms)
{
    *wait_ms = -1;
    if (p->n == 0)
        return -1;
    uint64_t start = atomic_fetch_add_explicit(&p->cursor, 1, memory_order_relaxed);
    for (size_t k = 0; k < p->n; k++) {
        size_t i = (size_t)((start + k) % p->n);
        struct air__keyslot *s = &p->k[i];
        if (atomic_load_explicit(&s->unusable, memory_order_acquire))
            continue;
        int64_t cu = atomic_load_explicit(&s->cool_until_ms, memory_order_acquire);
        if (cu > now_ms) {
            if (*wait_ms < 0 || cu - now_ms < *wait_ms)
                *wait_ms = cu - now_ms;
            continue;
        }
        atomic_fetch_add_explicit(&s->uses, 1, memory_order_relaxed);
        return (long)i;
    }
    return -1;
}

void
air__keypool_report(struct air__keypool *p, size_t i, enum air__key_outcome o,
                    int64_t retry_after_ms, int64_t default_cool_ms, int64_t now_ms)
{
    if (i >= p->n)
        return;
    struct air__keyslot *s = &p->k[i];
    switch (o) {
    case AIR_K_OK:
        break;
    case AIR_K_RATE_LIMITED: {
        int64_t until = now_ms + (retry_after_ms >= 0 ? retry_after_ms : default_cool_ms);
        /* Keep the later deadline if two reports race. */
        int64_t cur = atomic_load_explicit(&s->cool_until_ms, memory_order_relaxed);
        while (cur < until && !atomic_compare_exchange_weak_explicit(
                                  &s->cool_until_ms, &cur, until, memory_order_release,
                                  memory_order_relaxed))
            ;
        atomic_fetch_add_explicit(&s->rate_limited, 1, memory_order_relaxed);
        break;
    }
    case AIR_K_REJECTED:
        atomic_store_explicit(&s->unusable, 1, memory_order_release);
        atomic_fetch_add_explicit(&s->rejected, 1, memory_order_relaxed);
        break;
    }
}

size_t
air__keypool_available(const struct air__keypool *p, int64_t now_ms)
{
    size_t n = 0;
    for (size_t i = 0; i < p->n; i++)
        if (!atomic_load_explicit(&p->k[i].unusable, memory_order_acquire) &&
            atomic_load_explicit(&p->k[i].cool_until_ms, memory_order_acquire) <= now_ms)
            n++;
    return n;
}

void
air__keypool_reset(struct air__keypool *p)
{
    for (size_t i = 0; i < p->n; i++) {
        atomic_store_explicit(&p->k[i].unusable, 0, memory_order_release);
        atomic_store_explicit(&p->k[i].cool_until_ms, 0, memory_order_release);
    }
}
