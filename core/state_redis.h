/*
 * state_redis.h - the Redis state backend: shared rate limits and budgets
 * across router instances, by leases (policy/state.h), through hiredis.
 *
 * One `struct air__redis` per router world: a connection and a background
 * thread that, every lease.sync_ms or when a slice runs low (nudge), plans
 * every limit (air__lease_plan), sends one batch to Redis as a single
 * EVALSHA of the lease script (atomic on the server, exactly once per batch
 * through a per-instance sequence number), and applies the replies. The
 * hot path never touches the connection. When Redis is unreachable or slow
 * (a reply later than timeout_ms), the thread marks the state unhealthy
 * (limits then fail open or closed, per type: client rate limits, deployment
 * quotas, budgets), logs the transition once to
 * stderr, reconnects with capped exponential backoff and resends the batch
 * it could not confirm, which the script recognises if it was applied.
 * docs/SCALING.md has the key layout and the bounds.
 *
 * Thread: prepare/start/free: the thread that creates or destroys the
 * router world (free joins the sync thread, then makes a final flush that
 * gives every slice back, bounded by timeout_ms; after air_reload that is
 * whichever thread drops the old world's last reference, possibly a
 * worker). nudge (through the state ops): any thread. stats_json: any
 * thread. sync_now/flush_final: only on a backend created with no_thread
 * (tests), or after the thread stopped.
 *
 * Clocks: backoff, heartbeats and the time since the last sync run on the
 * monotonic clock, so a wall-clock step cannot stall a reconnect; only what
 * is handed to the limits (their `now`) uses the wall clock.
 */
#ifndef AIR_CORE_STATE_REDIS_H
#define AIR_CORE_STATE_REDIS_H

#include <stddef.h>
#include <stdint.h>

#include "airouter.h"
#include "buf.h"
#include "state.h"

struct air__redis;

/* A parsed redis:// URL. */
struct air__redis_url {
    char host[256];
    int port; /* default 6379 */
    int db;   /* default 0 */
    char user[128]; /* ACL user ("" = none) */
};

/* Parse "redis://[user@]host[:port][/db]". A password in the URL is refused
 * (passwords come from password_env); the message never echoes the URL's
 * userinfo. Returns 0, or -1 with a reason in why. */
int air__redis_url_parse(const char *url, struct air__redis_url *out, char *why, size_t whylen);

struct air__redis_opts {
    const char *url;
    const char *password; /* or NULL */
    const char *prefix;   /* key prefix, e.g. "airouter:" */
    uint32_t timeout_ms;
    uint32_t backoff_ms, backoff_max_ms;
    int no_thread; /* tests: no background thread; drive it with air__redis_sync_now */
    int quiet;     /* no stderr lines */
    /* Tests: this instance's clock runs this far ahead of the real one (ms,
     * may be negative), to show that refill and windows follow Redis's
     * clock. Pass the same skew in the now_ms given to the limits. */
    int64_t clock_skew_ms;
};

/*
 * Connect, prime every limit's slice with one synchronous sync (bounded by
 * timeout_ms; an unreachable Redis is not an error: the state starts
 * unhealthy and the thread keeps trying), then start the sync thread. The
 * limits must already be initialised with st; st is set to the shared
 * backend by this call (air__state_init_shared) using `lc`, `instances` and
 * the fail modes (client rate limits, deployment quotas, budgets), and the
 * slimits must have been initialised after that: call air__redis_prepare
 * first.
 */
air_status_t air__redis_prepare(struct air__state *st, const struct air__redis_opts *o,
                                uint32_t instances, enum air__fail_mode fail_rate,
                                enum air__fail_mode fail_quota, enum air__fail_mode fail_budget,
                                const struct air__lease_cfg *lc, struct air__redis **out,
                                char *err, size_t errlen);
/* Hand over the limits (borrowed; they must outlive the backend) and start. */
air_status_t air__redis_start(struct air__redis *rs, struct air__slimit **lims, size_t nlims,
                              char *err, size_t errlen);
/* Final flush (give every slice back, settle usage), stop and free. NULL
 * is a no-op. */
void air__redis_free(struct air__redis *rs);

/* One sync now (no_thread backends): plan, send, apply. Returns 0 when the
 * batch was confirmed (or there was nothing to send), -1 otherwise. */
int air__redis_sync_now(struct air__redis *rs);
/* Same, giving every slice back (as on shutdown). */
int air__redis_flush_final(struct air__redis *rs);

/* The members of the stats "state" object (without braces): health, RTT,
 * time since the last confirmed sync, counters, and one entry per lease. */
void air__redis_stats_json(struct air__redis *rs, air_buf_t *b);

/* The instance id (16 hex digits) this backend writes to Redis under. */
const char *air__redis_instance(const struct air__redis *rs);

/* Tests: step this instance's wall clock to clock_skew_ms off the real one,
 * as NTP or a resumed VM would. Any thread. */
void air__redis_set_clock_skew(struct air__redis *rs, int64_t skew_ms);

#endif
