/*
 * retry_budget.c - retry budget over a sliding window of one-second slots.
 * DESIGN: a sliding window (not a token bucket refilled by requests) so the
 * bound is easy to state and test: within any window, retries never exceed
 * ratio x requests + floor. A ring of 16 slots covers the longest window
 * (15 s) plus the current second.
 */
#include "retry_budget.h"

#include <string.h>

static int64_t
second_of(int64_t ms)
{
    return ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
}

static uint32_t
window_s(const struct air__rbudget *b)
{
    return (b->window_ms + 999) / 1000;
}

void
air__rbudget_set(struct air__rbudget *b, double ratio, double min_per_s, uint32_t window_ms)
{
    b->ratio = ratio > 0 ? ratio : 0;
    b->min_per_s = min_per_s > 0 ? min_per_s : 0;
    if (window_ms < 1000)
        window_ms = 1000;
    if (window_ms > (AIR_RBUDGET_SLOTS - 1) * 1000)
        window_ms = (AIR_RBUDGET_SLOTS - 1) * 1000;
    b->window_ms = window_ms;
}

void
air__rbudget_init(struct air__rbudget *b, double ratio, double min_per_s, uint32_t window_ms)
{
    memset(b, 0, sizeof *b);
    air__rbudget_set(b, ratio, min_per_s, window_ms);
    for (int i = 0; i < AIR_RBUDGET_SLOTS; i++)
        b->sec[i] = INT64_MIN;
}

/* The slot of second s, emptied if it held an older second. */
static unsigned
slot(struct air__rbudget *b, int64_t s)
{
    unsigned i = (unsigned)(((s % AIR_RBUDGET_SLOTS) + AIR_RBUDGET_SLOTS) % AIR_RBUDGET_SLOTS);
    if (b->sec[i] != s) {
        b->sec[i] = s;
        b->req[i] = 0;
        b->ret[i] = 0;
    }
    return i;
}

void
air__rbudget_on_request(struct air__rbudget *b, int64_t now_ms)
{
    unsigned i = slot(b, second_of(now_ms));
    if (b->req[i] < UINT32_MAX)
        b->req[i]++;
}

int
air__rbudget_try_retry(struct air__rbudget *b, int64_t now_ms)
{
    int64_t now_s = second_of(now_ms);
    uint32_t w = window_s(b);
    unsigned cur = slot(b, now_s);
    double req = 0, ret = 0;
    for (int i = 0; i < AIR_RBUDGET_SLOTS; i++) {
        if (b->sec[i] > now_s - (int64_t)w && b->sec[i] <= now_s) {
            req += b->req[i];
            ret += b->ret[i];
        }
    }
    double allowed = b->ratio * req + b->min_per_s * (double)w;
    if (ret + 1 > allowed + 1e-9)
        return 0;
    if (b->ret[cur] < UINT32_MAX)
        b->ret[cur]++;
    return 1;
}
