/*
 * config.h - the router configuration, parsed from JSON (docs/CONFIG.md).
 *
 * The parser is table-driven: each object kind has a table of keys with
 * type, bounds and default, so unknown keys and wrong types are reported with
 * their JSON path ("providers[1].models[0].name: expected a string").
 * API keys are read from the environment variables the config names; a
 * missing variable is an error naming the variable, never a value.
 */
#ifndef AIR_CORE_CONFIG_H
#define AIR_CORE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "airouter.h"
#include "airouter/provider.h"

struct air__model_cfg {
    char *name;
    double input_price_per_mtok;        /* USD per million input tokens, default 0 */
    double output_price_per_mtok;       /* default 0 */
    double cached_input_price_per_mtok; /* default: input price */
    uint32_t context_tokens;            /* 0 = unknown */
    uint32_t rpm, tpm;                  /* deployment quota, 0 = provider's / unlimited */
    uint32_t max_inflight;              /* 0 = provider's */
};

struct air__provider_cfg {
    char *name;                     /* unique */
    char *kind;                     /* "openai", ... */
    const air_provider_ops_t *ops;  /* resolved from kind */
    char *base_url;                 /* NULL: the kind's default; trailing '/' stripped */
    char *api_key_env;              /* NULL when not configured (the first name of a list) */
    char *api_key;                  /* the secret read from api_key_env, or NULL (= api_keys[0]) */
    char **api_keys;                /* key pool: every key (api_key_env may be a list), or NULL */
    char **api_key_envs;            /* their variable names */
    size_t nkeys;
    uint32_t timeout_ms;            /* total per attempt, default 60000 */
    uint32_t connect_timeout_ms;    /* default 5000 */
    uint32_t first_byte_timeout_ms; /* default 30000 */
    uint32_t idle_timeout_ms;       /* between stream chunks, default 30000 */
    uint32_t max_inflight;          /* per deployment of this provider, 0 = unlimited */
    uint32_t rpm, tpm;              /* default quota per deployment, 0 = unlimited */
    struct air__model_cfg *models;
    size_t nmodels;
    cJSON *json; /* deep copy of the provider object (for ops->init) */
};

struct air__target_cfg {
    char *provider;      /* provider name */
    char *model;         /* upstream model name */
    size_t provider_idx; /* index into config->providers */
    double weight;       /* for the weighted strategy, default 1 */
};

struct air__route_cfg {
    char *model;    /* public model name (unique across routes) */
    char *strategy; /* NULL: policy.strategy */
    struct air__target_cfg *targets;
    size_t ntargets;
    uint32_t max_attempts; /* 0 = config retry.max_attempts */
    /* route "retry": {max_attempts, backoff_base_ms, backoff_cap_ms, on: [classes]} */
    uint32_t backoff_base_ms, backoff_cap_ms; /* 0 = the global ones */
    uint32_t retry_on; /* bit per air_errclass_t that may retry/fail over; 0 = default */
    cJSON *weight;         /* optional {"latency","cost","health","load"} (copy) */
    int hedge;             /* -1 unset, 0/1 */
    double budget_usd;     /* 0 = none */
    char *budget_window;   /* "minute" | "hour" | "day" | "month" */
};

/* Limits of one client identity (air_req_set_client_key). */
struct air__client_cfg {
    char *name;
    uint32_t rpm, tpm, max_inflight; /* 0 = unlimited */
    double budget_usd;               /* 0 = none */
    char *budget_window;
};

struct air__config {
    uint32_t workers;            /* default 2; 1..256 */
    uint32_t queue_capacity;     /* ingress ring slots, power of two, default 4096 */
    uint32_t max_inflight;       /* requests admitted at once, default 65536 */
    uint32_t request_timeout_ms; /* default deadline per request, default 120000 */
    uint32_t max_event_bytes;    /* largest SSE event / response body, default 8 MiB */
    uint32_t spin_us;            /* busy-poll this long before sleeping, default 0 */
    /* retry: {max_attempts, backoff_base_ms, backoff_cap_ms, max_retry_after_ms} */
    uint32_t max_attempts;       /* default 3 */
    uint32_t backoff_base_ms;    /* default 100 */
    uint32_t backoff_cap_ms;     /* default 2000 */
    uint32_t max_retry_after_ms; /* longest server delay honoured, default 60000 */
    double retry_budget_ratio;   /* retry.budget_ratio, default 0.2 */
    uint32_t retry_budget_min_per_s; /* retry.budget_min_per_s, default 10 */
    cJSON *tuning;               /* {"policy":{..},"hedge":{..},"stats":{..}} as given (copy) */
    struct air__client_cfg *clients;
    size_t nclients;
    struct air__provider_cfg *providers;
    size_t nproviders;
    struct air__route_cfg *routes;
    size_t nroutes;
    /* state: where limits and budgets keep their counts (docs/CONFIG.md
     * `state`, docs/SCALING.md). Strings are never NULL after parsing. */
    char *state_backend;         /* "local" (default) | "redis" */
    char *state_url;             /* default "redis://127.0.0.1:6379/0" */
    char *state_password_env;    /* NULL when not configured */
    char *state_password;        /* the secret read from it, or NULL */
    char *state_prefix;          /* key prefix, default "airouter:" */
    uint32_t state_instances;    /* expected instance count (fail-open share), default 1 */
    uint32_t state_timeout_ms;   /* connect and command timeout, default 500 */
    uint32_t state_backoff_ms;   /* first reconnect delay, default 100 */
    uint32_t state_backoff_max_ms; /* default 5000 */
    char *state_fail_rate;       /* "open" (default) | "closed": client rpm/tpm */
    char *state_fail_budget;     /* "open" | "closed" (default) */
    char *state_fail_quota;      /* fail.deployment_quotas: "open" | "closed"; default: the
                                    value of state_fail_rate (deployment rpm/tpm) */
    uint32_t state_sync_ms;      /* lease.sync_ms, default 50 */
    uint32_t state_horizon_ms;   /* lease.horizon_ms, default 500 */
    double state_max_fraction;   /* lease.max_fraction, default 0 = 1 / (4 x instances) */
    double state_min_fraction;   /* lease.min_fraction, default 0.01 */
};

/* Parse and validate. On failure returns AIR_E_CONFIG (or AIR_E_NOMEM) and
 * writes "<json path>: <reason>" to err. */
air_status_t air__config_parse(const char *json, size_t len, struct air__config **out, char *err,
                               size_t errlen);
void air__config_free(struct air__config *c);

/* Lookups; NULL / -1 when absent. */
const struct air__route_cfg *air__config_route(const struct air__config *c, const char *model);
long air__config_provider_idx(const struct air__config *c, const char *name);

#endif
