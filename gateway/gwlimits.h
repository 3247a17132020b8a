/*
 * gwlimits.h - per client key admission: requests-per-minute and
 * tokens-per-minute token buckets, and a spending budget over a calendar
 * window (UTC minute, hour, day or month).
 *
 * A request is admitted against estimates (tokens = request bytes / 4; cost
 * = those tokens plus max_tokens, priced at the route's most expensive
 * target) which are reserved at once, so concurrent requests cannot overrun a
 * limit; when the request ends the reservation is settled against what the
 * provider reported. The state of a key outlives configuration reloads (it
 * is found again by the key's name) and is guarded by a mutex of its own:
 * two clients never share a lock.
 */
#ifndef AIR_GW_LIMITS_H
#define AIR_GW_LIMITS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

struct air__gw_key;

struct air__gw_keystate {
    atomic_long refs;
    pthread_mutex_t mu;
    char *name;
    int started;         /* buckets filled on first use */
    double req_tokens;   /* rpm bucket */
    double tok_tokens;   /* tpm bucket */
    uint64_t last_us;    /* last refill (monotonic) */
    int64_t window_id;   /* budget window the amounts below belong to */
    double spent_usd;    /* settled cost in the window */
    double reserved_usd; /* estimates of requests in flight */
    uint64_t admitted, rejected;
    struct air__gw_keystate *next; /* gateway registry */
};

enum { AIR_GW_LIMIT_OK, AIR_GW_LIMIT_RPM, AIR_GW_LIMIT_TPM, AIR_GW_LIMIT_BUDGET };

/* What one admitted request reserved; give it back to settle. */
struct air__gw_reservation {
    int64_t window_id;
    uint64_t tokens;
    double usd;
};

struct air__gw_keystate *air__gw_keystate_new(const char *name);
void air__gw_keystate_ref(struct air__gw_keystate *s);
void air__gw_keystate_unref(struct air__gw_keystate *s);

/* The id of the budget window that contains wall-clock time t, and the
 * seconds left until it ends (>= 1). */
int64_t air__gw_window_id(int window, time_t t, uint32_t *secs_left);

/*
 * Admit one request of key k: returns AIR_GW_LIMIT_OK and fills *res, or
 * the limit that refused it with *retry_after_s (>= 1) set. now_us is a
 * monotonic clock, wall the wall clock (for budget windows).
 */
int air__gw_limit_admit(const struct air__gw_key *k, uint64_t now_us, time_t wall,
                        uint64_t est_tokens, double est_usd, struct air__gw_reservation *res,
                        uint32_t *retry_after_s);
/* Settle an admitted request with the tokens and cost the provider
 * reported (0 tokens: unknown, the token reservation is given back). */
void air__gw_limit_settle(const struct air__gw_key *k, const struct air__gw_reservation *res,
                          uint64_t now_us, time_t wall, uint64_t actual_tokens, double actual_usd);

#endif
