/*
 * state.h - where rate limits and budgets keep their counts: in this process
 * (the default), or shared by every router instance through a store such as
 * Redis, by leases. Pure policy: no I/O, no threads, no clock (time is passed
 * in). docs/SCALING.md explains the design and its bounds.
 *
 * One `struct air__state` per router world says which backend is in use; one
 * `struct air__slimit` per limit (a client's rpm or tpm, a deployment's rpm or
 * tpm, a client or route budget) is what core admits requests against. Core
 * calls the same air__slim_* functions whatever the backend:
 *
 *  - local backend (air__state_init_local): a slimit is exactly the
 *    in-process token bucket (limiter.h) or budget (budget.h) it wraps; the
 *    behaviour is the one documented in docs/POLICY.md.
 *
 *  - shared backend (air__state_init_shared): the authoritative count lives
 *    in the store. Each instance holds a *lease*: a slice of the limit (a
 *    batch of request or token permits in thousandths, or of micro-dollars)
 *    that the store has already counted as taken. Requests spend the slice
 *    locally with one CAS (no round trip); when it runs low the backend is
 *    nudged (ops->nudge) and its sync side renews it in the background with
 *    air__lease_plan / air__lease_apply, settling usage at the same time.
 *    Slice sizes follow the instance's traffic: target = demand rate x
 *    horizon, clamped to [min_slice, max_slice]. While the store is
 *    unreachable (healthy == 0) a limit whose slice is spent fails open (a
 *    local bucket or budget holding limit / instances) or closed
 *    (AIR_SL_CLOSED), per limit type (client rate limits, deployment quotas,
 *    budgets: fail_rate, fail_quota, fail_budget); usage taken meanwhile is
 *    settled when the store is back.
 *
 * Bound: an instance never holds more than max_slice unspent (plus, for tpm
 * and budgets, what its in-flight requests reserved beyond their actual
 * usage, as with one instance), and the store never grants more than its
 * limit, so across I instances a limit is exceeded by at most
 * I x max_slice over any interval (docs/SCALING.md).
 *
 * Thread: air__slim_take/put/sync/reserve/settle and the readers: any thread,
 * concurrently, lock-free. air__lease_plan/apply: one sync thread per state
 * (they may run concurrently with the hot-path functions). init: before
 * sharing.
 */
#ifndef AIR_POLICY_STATE_H
#define AIR_POLICY_STATE_H

#include <stdatomic.h>
#include <stdint.h>

#include "budget.h"
#include "limiter.h"

enum air__fail_mode { AIR_FAIL_OPEN, AIR_FAIL_CLOSED };

/* Outcome of a take or reserve. */
enum air__slim_rc {
    AIR_SL_OK = 0, /* granted */
    AIR_SL_LIMIT,  /* over the limit as far as this instance can tell: *wait_ms until room */
    AIR_SL_SHORT,  /* shared: this instance's slice is spent but the store has room; a
                      renewal is on its way: try again after *wait_ms */
    AIR_SL_CLOSED, /* shared: the store is unreachable and this limit type fails closed */
};

/* Where a reservation was taken from (give it back to the same place). */
enum air__slim_src {
    AIR_SRC_LOCAL = 0, /* the in-process bucket/budget (local backend or fail-open fallback) */
    AIR_SRC_LEASE = 1, /* the lease (shared backend) */
};

/* A shared backend, as seen from policy. The implementation (I/O, threads)
 * lives in core and is never called on the hot path except through nudge. */
struct air__state_ops {
    const char *name; /* "local", "redis" */
    /* A slice ran low or a request found it empty: renew soon. Any thread,
     * must not block (set a flag, signal a condition). NULL: nothing. */
    void (*nudge)(void *impl);
};

/* Lease tunables (docs/CONFIG.md `state.lease`). */
struct air__lease_cfg {
    int64_t sync_ms;     /* background sync interval; also the wait of AIR_SL_SHORT */
    int64_t horizon_ms;  /* a slice should last this long at the current demand */
    double max_fraction; /* largest slice, as a fraction of the limit (0 = 1 / (4 x instances)) */
    double min_fraction; /* smallest slice kept while idle, as a fraction of the limit */
};

struct air__state {
    const struct air__state_ops *ops;
    void *impl;
    int shared; /* 0: local backend */
    uint32_t instances;
    /* When the store is unreachable: client rate limits, deployment quotas
     * (a vendor's rpm/tpm, slimits made by air__slim_init_quota), budgets. */
    enum air__fail_mode fail_rate, fail_quota, fail_budget;
    struct air__lease_cfg lease;
    _Atomic int healthy; /* shared: 1 while the store answers (written by the sync side) */
};

/* The default: in-process counts, today's behaviour. */
void air__state_init_local(struct air__state *st);
/* A shared store; starts healthy. instances >= 1. */
void air__state_init_shared(struct air__state *st, const struct air__state_ops *ops, void *impl,
                            uint32_t instances, enum air__fail_mode fail_rate,
                            enum air__fail_mode fail_quota, enum air__fail_mode fail_budget,
                            const struct air__lease_cfg *lc);
const char *air__state_name(const struct air__state *st);

enum air__slim_kind { AIR_SL_RATE, AIR_SL_BUDGET };

/* One instance's lease on a shared limit. Units: thousandths of a token
 * (rates) or micro-dollars (budgets). */
struct air__lease {
    /* hot path and sync side */
    _Atomic int64_t avail;   /* leased, not spent; negative = debt (a request took more) */
    _Atomic int64_t want;    /* units refused since the last plan (demand the slice missed) */
    _Atomic int64_t ask_max; /* largest single refused ask since the last plan */
    _Atomic int64_t fb_used; /* rates: units taken from the fail-open fallback, not yet planned */
    _Atomic int64_t spent;   /* budgets: micro-dollars settled, not yet planned */
    _Atomic int64_t drop;    /* rates: units removed by a vendor sync, to give back */
    _Atomic int64_t target;  /* slice target (sync side writes) */
    _Atomic int64_t level;   /* the store's view at the last sync: rates: tokens left in the
                                shared bucket; budgets: room left in the window */
    _Atomic int64_t level_at_ms;
    _Atomic int64_t win_end_ms;    /* budgets: end of the slice's window (local clock), 0 unknown */
    _Atomic int64_t store_spent;   /* budgets: window spending in the store at the last sync */
    _Atomic int64_t vsync_rem;     /* rates: vendor's remaining (units), latest */
    _Atomic int64_t vsync_reset_ms;
    _Atomic uint64_t vsync_seq;
    /* sync side only */
    uint64_t vsync_seen;
    int64_t win_start_store; /* budgets: window start of the slice (store clock), 0 unknown */
    int64_t granted, returned, fb_total; /* totals, units */
    int64_t cons_last;       /* consumption at the last plan */
    int64_t unreported;      /* rates: consumption not yet reported (units) */
    double rate_per_ms;      /* demand EWMA, units per ms */
    int64_t last_plan_ms;
};

struct air__slimit {
    struct air__state *st;
    enum air__slim_kind kind;
    int quota;   /* rates: a deployment's quota (fails per st->fail_quota, not fail_rate) */
    char *key;   /* store key suffix, e.g. "client:alice:rpm"; owned by whoever set it */
    double limit;          /* per minute (rates) or USD per window (budgets); > 0 */
    enum air__window w;    /* budgets */
    int64_t max_slice, min_slice; /* units (shared) */
    double rate_milli_per_ms;     /* rates: the limit's refill, thousandths per ms */
    int64_t burst_milli;          /* rates: the limit's capacity */
    /* Rates: the whole limit (local backend) or limit / instances (fail-open
     * fallback). Budgets: likewise with `budget`. */
    struct air__bucket bucket;
    struct air__budget budget;
    struct air__lease lease; /* shared backend only */
};

/* A rate limit of per_minute with a burst of one minute's worth
 * (per_minute <= 0: unlimited, local backend only). */
void air__slim_init_rate(struct air__slimit *l, struct air__state *st, char *key, double per_minute,
                         int64_t now_ms);
/* The same for a deployment's quota (a vendor's rpm or tpm): it differs
 * only in failing open or closed per st->fail_quota while the store is
 * unreachable. */
void air__slim_init_quota(struct air__slimit *l, struct air__state *st, char *key,
                          double per_minute, int64_t now_ms);
/* A budget of usd per window (usd <= 0: unlimited, spending counted;
 * local backend only). */
void air__slim_init_budget(struct air__slimit *l, struct air__state *st, char *key, double usd,
                           enum air__window w, int64_t now_ms);

/* Rates: take n tokens. AIR_SL_OK, or LIMIT / SHORT with *wait_ms, or
 * CLOSED; nothing is taken unless OK. As with the local bucket, a request
 * larger than the largest slice is granted once the slice is full, leaving
 * it in debt. */
enum air__slim_rc air__slim_take(struct air__slimit *l, double n, int64_t now_ms,
                                 int64_t *wait_ms);
/* Rates: give n tokens back (n < 0 takes -n more, possibly into debt), to
 * reconcile an estimate with the reported usage. */
void air__slim_put(struct air__slimit *l, double n, int64_t now_ms);
/* Rates: a vendor's view from rate-limit headers (see air__bucket_sync). In
 * shared mode it caps this instance's slice and, at the next sync, the
 * store's bucket. */
void air__slim_sync(struct air__slimit *l, double remaining, int64_t reset_in_ms, int64_t now_ms);
/* Budgets: reserve est_usd before sending. *src says where from (pass it to
 * settle). LIMIT: *retry_after_ms until the window ends. */
enum air__slim_rc air__slim_reserve(struct air__slimit *l, double est_usd, int64_t now_ms,
                                    int64_t *retry_after_ms, int *src);
/* Budgets: release est_usd reserved from src and record actual_usd. */
void air__slim_settle(struct air__slimit *l, double est_usd, double actual_usd, int src,
                      int64_t now_ms);

/* Budgets: spending in the current window (USD): local backend: this
 * process's; shared: the store's at the last sync plus what this instance
 * settled since. */
double air__slim_spent(const struct air__slimit *l);

/* Would a take of n (rates) / a reservation of est_usd (budgets) be granted
 * now? The same answer and wait as air__slim_take / air__slim_reserve, with
 * nothing taken, reserved or asked of the store (for explain). */
enum air__slim_rc air__slim_peek(struct air__slimit *l, double n, int64_t now_ms,
                                 int64_t *wait_ms);
enum air__slim_rc air__slim_peek_reserve(struct air__slimit *l, double est_usd, int64_t now_ms,
                                         int64_t *retry_after_ms);

/* Rates: tokens this instance could take now (local: the bucket after
 * refill; shared: what is left of its slice). */
double air__slim_available(struct air__slimit *l, int64_t now_ms);

/* The limit now: per minute (rates) or USD per window (budgets); 0 means
 * unlimited (local backend only; a shared limit is always > 0). */
double air__slim_limit(const struct air__slimit *l);

/* Change a local limit at run time (per_minute or usd <= 0: unlimited):
 * what was used or spent stays counted (air__bucket_set_rate,
 * air__budget_set_limit). Any thread. Returns -1, changing nothing, for a
 * shared limit: its size is part of the state every instance shares, so it
 * changes with the configuration of all of them. */
int air__slim_set_rate(struct air__slimit *l, double per_minute, int64_t now_ms);
int air__slim_set_budget(struct air__slimit *l, double usd);

/* Carry a local limit's state from src (being replaced, e.g. by a reload)
 * into dst, which nobody else uses yet (air__bucket_carry,
 * air__budget_carry). Nothing for shared limits (the store holds their
 * state) or limits of different kinds. */
void air__slim_carry(struct air__slimit *dst, struct air__slimit *src, int64_t now_ms);
/* Shared: slice target and what is left of it, in tokens or USD. */
double air__slim_slice(const struct air__slimit *l);
double air__slim_avail(const struct air__slimit *l);

/* ---- sync side (shared backend): one batch entry per limit ---- */

struct air__lease_req {
    int64_t must;     /* units to take whatever the limit says (debt to cover) */
    int64_t want;     /* units wanted, granted as far as the limit allows */
    int64_t ret;      /* units given back */
    int64_t used;     /* rates: tokens consumed since the last report (whole tokens, may be
                         negative: refunds); budgets: micro-dollars spent */
    int64_t ret_win;  /* budgets: window start (store clock) `ret` and `used` belong to; 0 =
                         the current one */
    int64_t vsync_rem;      /* rates: vendor's remaining (units), -1 = none */
    int64_t vsync_reset_ms; /* rates: vendor's reset time, 0 = unknown */
};

struct air__lease_reply {
    int64_t grant;     /* units granted (must + part of want) */
    int64_t level;     /* rates: units left in the shared bucket; budgets: room left in the
                          window (micro-dollars) */
    int64_t win_start; /* budgets: the store's current window (store clock, ms) */
    int64_t win_end;
    int64_t spent;     /* budgets: spending in that window (micro-dollars) */
};

/* Decide what to send for l at now_ms: settle usage, renew or shrink the
 * slice, cover debt; with `final`, give the whole slice back. Takes what it
 * returns out of the slice at once. Returns 1 when *rq carries anything. */
int air__lease_plan(struct air__slimit *l, int64_t now_ms, int final, struct air__lease_req *rq);
/* The store answered rq with rp at local time now_ms; its clock read
 * store_ms. */
void air__lease_apply(struct air__slimit *l, const struct air__lease_req *rq,
                      const struct air__lease_reply *rp, int64_t now_ms, int64_t store_ms);

#endif
