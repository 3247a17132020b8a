/*
 * world.h - everything a configuration turns into: adapter instances,
 * deployments (one model at one provider) with their shared live state,
 * resolved routes, client limits, and the tunables snapshot.
 *
 * Lifetimes. A world is immutable except for the live state it owns
 * (health, limits, budgets, statistics), which is shared by the workers and
 * kept with atomics or per-deployment mutexes off the hot path. air_reload
 * builds a new world and swaps r->world; each worker holds a reference on the
 * world it routes with, plus one on each older world while it still has
 * requests on it, so a request never sees its world freed. The tunables
 * (struct air__tun) are replaced by air_ctl_set as a whole and reclaimed with
 * ck_epoch once no worker can be reading the old copy.
 */
#ifndef AIR_CORE_WORLD_H
#define AIR_CORE_WORLD_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "airouter/provider.h"
#include "budget.h"
#include "buf.h"
#include "config.h"
#include "ctl.h"
#include "health.h"
#include "keypool.h"
#include "limiter.h"
#include "state.h"
#include "stats.h"
#include "strategy.h"

struct air__redis; /* state_redis.h */

struct air__prov {
    const struct air__provider_cfg *cfg;
    const air_provider_ops_t *ops;
    void *state;      /* adapter instance of the first key (or of no key) */
    void **kstates;   /* one adapter instance per pooled key, [nkeys]; NULL when
                         the provider has at most one key */
    size_t nkeys;
    struct air__keypool keys; /* which key next; 429 cool-down; set aside on 401/403 */
};

/* Shared live state of one deployment. */
struct air__dep {
    size_t prov;        /* index into world->prov */
    const char *model;  /* upstream model, borrowed from the config */
    char *id;           /* "provider/model": ctl path component and stats name */
    double in_price, out_price, cached_price; /* USD per million tokens */
    int price_known;
    uint32_t context_tokens;
    uint32_t caps;
    /* Limits: 0 = unlimited. Tunable at run time (deployments.<id>.rpm/.tpm/
     * .max_inflight), so read them with air__lim; rpm_lim/tpm_lim are always
     * initialised (an unlimited bucket when 0) and taken only while the value
     * is > 0. */
    _Atomic uint32_t rpm, tpm;

    pthread_mutex_t mu;  /* health, pending observations */
    struct air__health health;
    _Atomic int hdirty;  /* 1 when health is not plain healthy: take mu to look */
    _Atomic int hstate;  /* mirror of health.state (enum air__hstate) */
    struct air__slimit rpm_lim, tpm_lim; /* vendor quota (local or shared, policy/state.h) */
    struct air__cap cap; /* max_inflight across workers (per instance) */
    struct air__dobs pending; /* merged worker observations awaiting a fold */
    struct air__dstat agg;    /* folded statistics (fold lock) */
} __attribute__((aligned(64)));

struct air__route {
    const struct air__route_cfg *cfg;
    size_t *deps; /* deployment indices, in target order */
    size_t ndeps;
    struct air__slimit budget; /* always initialised; reserved against while has_budget */
    _Atomic int has_budget;    /* budget_usd > 0 (tunable: routes.<model>.budget_usd) */
};

/* Limits of one client identity (air_req_set_client_key). Every limit is
 * tunable at run time (clients.<name>.*), like a deployment's. */
struct air__client {
    char *name;
    struct air__slimit rpm_lim, tpm_lim;
    _Atomic uint32_t rpm, tpm;
    struct air__cap cap; /* per instance */
    struct air__slimit budget;
    _Atomic int has_budget;
};

/* Running totals of one route or client, per worker (row w written by
 * worker w only, relaxed; air_stats_json sums the rows). Kept whether or not
 * a budget is set. */
struct air__wtot {
    _Atomic uint64_t requests; /* requests finished (any outcome) */
    _Atomic double cost_usd;   /* their cost from the reported usage */
};

/* A limit value that may change at run time (acquire: a reader that sees a
 * new value > 0 also sees the limit object it was set up with). */
static inline uint32_t
air__lim(const _Atomic uint32_t *v)
{
    return atomic_load_explicit(v, memory_order_acquire);
}

/* Published statistics: a copy of every deployment's folded statistics,
 * replaced at each fold (epoch-protected). */
struct air__view {
    size_t ndeps;
    int64_t at_ms;
    struct air__dstat d[];
};

/* Per-route and per-deployment tunables. */
struct air__rtun {
    enum air__strategy strategy;
    struct air__score_weights w;
    int hedge;  /* -1 = policy default, 0 off, 1 on */
};
struct air__dtun {
    int enabled;
    double weight;
};

/* The tunables snapshot: immutable once published. */
struct air__tun {
    struct air__params g;
    struct air__rtun *route; /* [nroutes] */
    struct air__dtun *dep;   /* [ndeps] */
};

struct air__world {
    _Atomic uint32_t refs;
    struct air__config *cfg;
    struct air__prov *prov;
    size_t nprov;
    struct air__dep *deps;
    size_t ndeps;
    struct air__route *routes;
    size_t nroutes;
    struct air__client *clients;
    size_t nclients;
    uint32_t nworkers;
    _Atomic(struct air__tun *) tun;   /* epoch-protected */
    _Atomic(struct air__view *) view; /* epoch-protected */
    struct air__dobs *wobs;           /* [nworkers][ndeps]: row w written by worker w only */
    _Atomic uint32_t *winfl;          /* [nworkers][ndeps]: in-flight attempts, same rule */
    _Atomic int64_t *wobs_due;        /* per worker: next merge time */
    struct air__wtot *wroute;         /* [nworkers][nroutes], same rule */
    struct air__wtot *wclient;        /* [nworkers][nclients], same rule */
    pthread_mutex_t fold_mu;
    int64_t last_fold_ms;
    /* Where limits and budgets keep their counts (config `state`): local,
     * or shared through Redis by leases. The Redis backend and its sync
     * thread belong to this world; lims lists every limit it syncs. */
    struct air__state state;
    struct air__redis *redis; /* NULL: local backend */
    struct air__slimit **lims;
    size_t nlims;
};

/* Build a world from a parsed config (takes ownership of cfg, also on
 * failure). err gets "<path>: reason". */
air_status_t air__world_new(struct air__config *cfg, uint32_t nworkers, int64_t now_ms,
                            struct air__world **out, char *err, size_t errlen);
void air__world_ref(struct air__world *w);
/* Before nw replaces old (air_reload): carry the state of the local rate
 * limits and budgets whose owner keeps its name (deployment id, route model,
 * client name) from old into nw, which nobody uses yet. Nothing for a
 * shared state backend, whose store keeps that state. Control thread. */
void air__world_carry(struct air__world *nw, struct air__world *old, int64_t now_ms);
/* Drop a reference; the last one frees the world. */
void air__world_unref(struct air__world *w);

/* Lookups (NULL / -1 when absent). */
const struct air__route *air__world_route(const struct air__world *w, const char *model);
long air__world_dep(const struct air__world *w, const char *provider, const char *model);
struct air__client *air__world_client(struct air__world *w, const char *name);

/* The members of the stats "state" object (backend, health, leases). */
void air__world_state_json(struct air__world *w, air_buf_t *b);

/* A fresh tunables snapshot from the config (defaults + config values). */
struct air__tun *air__tun_from_config(const struct air__world *w);
struct air__tun *air__tun_dup(const struct air__world *w, const struct air__tun *t);
void air__tun_free(struct air__tun *t);

#endif
