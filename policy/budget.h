/*
 * budget.h - spending limits per client key or route over a calendar window,
 * with reserve-before-send and settle-after, shared between threads without
 * locks.
 *
 * Windows are aligned to UTC: a minute, hour or day starts on its boundary;
 * a month is the calendar month (00:00 UTC on the 1st). A window rolls over
 * lazily, on the first reserve/settle that sees a newer window: spending
 * restarts at zero; reservations still in flight carry over and settle into
 * the new window.
 *
 * Money is held in integer micro-dollars. Reservations round up, settled
 * costs round to nearest.
 *
 * Concurrency: committed_micro (= spent + reserved) is the single atomic a
 * reservation CASes against the limit, so concurrent reservations can never
 * together exceed it. spent_micro and reserved_micro are maintained beside
 * it in an order that keeps spent + reserved <= committed at every instant
 * (reserve: committed first; settle: reserved down first, committed last).
 * Only an actual cost above its estimate can push spending past the limit,
 * and then the next reservation fails.
 *
 * Thread: reserve/settle/spent/peek/set_limit: any thread, concurrently.
 * init: before sharing. carry: dst not yet shared.
 */
#ifndef AIR_POLICY_BUDGET_H
#define AIR_POLICY_BUDGET_H

#include <stdatomic.h>
#include <stdint.h>

enum air__window { AIR_W_MINUTE, AIR_W_HOUR, AIR_W_DAY, AIR_W_MONTH };

/* "minute", "hour", "day", "month"; 0 ok, -1 unknown. */
int air__window_parse(const char *s, enum air__window *out);
const char *air__window_name(enum air__window w);
/* Start of the window holding now_unix_ms (UTC-aligned; month = calendar
 * month), and the start of the next one. */
int64_t air__window_start(enum air__window w, int64_t now_unix_ms);
int64_t air__window_end(enum air__window w, int64_t now_unix_ms);

struct air__budget {
    _Atomic double limit_usd; /* <= 0: unlimited (spending is still counted); may change at
                                 run time (air__budget_set_limit) */
    enum air__window w;
    _Atomic int64_t window_start_ms;
    _Atomic int64_t spent_micro;     /* settled in this window */
    _Atomic int64_t reserved_micro;  /* reserved, not yet settled */
    _Atomic int64_t committed_micro; /* spent + reserved: what the limit is checked against */
};

void air__budget_init(struct air__budget *b, double limit_usd, enum air__window w,
                      int64_t now_unix_ms);

/* Reserve est_usd before sending: 0 ok; -1 = the reservation would take the
 * window over the limit (nothing reserved), *retry_after_ms (when not NULL)
 * = ms until the window ends. */
int air__budget_reserve(struct air__budget *b, double est_usd, int64_t now_unix_ms,
                        int64_t *retry_after_ms);

/* After the response: release the reservation of est_usd (the same value
 * that was reserved) and record actual_usd. */
void air__budget_settle(struct air__budget *b, double est_usd, double actual_usd,
                        int64_t now_unix_ms);

/* Settled spending in the window the budget last saw (USD). */
double air__budget_spent(const struct air__budget *b);
/* Outstanding reservations (USD). */
double air__budget_reserved(const struct air__budget *b);
/* Spending in the window holding now (0 when that window has not been seen
 * yet, i.e. it rolled over since). */
double air__budget_spent_at(const struct air__budget *b, int64_t now_unix_ms);

/* The limit (USD, <= 0 unlimited), and changing it at run time: spending
 * and reservations stay; a limit below what is committed refuses every
 * reservation until the window rolls over or the limit is raised. */
double air__budget_limit(const struct air__budget *b);
void air__budget_set_limit(struct air__budget *b, double limit_usd);

/* Would air__budget_reserve(est_usd) succeed now? 0 yes, -1 no (with
 * *retry_after_ms as reserve would set it). Nothing is reserved. */
int air__budget_peek(struct air__budget *b, double est_usd, int64_t now_unix_ms,
                     int64_t *retry_after_ms);

/* Carry the spending of src (a budget being replaced, e.g. by a reload)
 * into dst, which nobody else uses yet, when both have the same window
 * kind: dst's spending = src's spending + src's outstanding reservations
 * (requests still in flight on src settle there; counting them at their
 * estimate errs on the side of the limit). */
void air__budget_carry(struct air__budget *dst, struct air__budget *src, int64_t now_unix_ms);

#endif
