/*
 * metrics.h - the gateway's request metrics, rendered as Prometheus text.
 *
 * Series are keyed by (route, provider, model) in a fixed-size, lock-free
 * open-addressing table: a slot is claimed with one compare-and-swap, and
 * every counter and histogram bucket is a relaxed atomic, so recording a
 * request takes no lock. When the table is full, further series fold into
 * one with route="_other". Status codes are counted per series in a small
 * set of slots claimed the same way.
 */
#ifndef AIR_GW_METRICS_H
#define AIR_GW_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

struct air__gw_metrics;

/* One finished request. Strings may be NULL (rendered as ""). */
struct air__gw_obs {
    const char *route, *provider, *model;
    int status;           /* HTTP status sent (499: client went away) */
    uint64_t latency_us;  /* gateway: request start to end */
    uint64_t ttft_us;     /* 0: none */
    uint64_t upstream_us; /* time in upstream attempts */
    uint64_t engine_us;   /* engine latency (0 when it never ran) */
    uint64_t tokens_in, tokens_out;
    double cost_usd;
    uint32_t attempts;
    int streamed;
    int engine; /* 1 when the engine handled it */
};

struct air__gw_metrics *air__gw_metrics_new(void);
void air__gw_metrics_free(struct air__gw_metrics *m);
void air__gw_metrics_record(struct air__gw_metrics *m, const struct air__gw_obs *o);
/* Append every family (HELP, TYPE, samples) to b. */
void air__gw_metrics_render(struct air__gw_metrics *m, air_buf_t *b);
/* Append `v` as a Prometheus label value (quotes included, escaped). */
void air__gw_prom_label(air_buf_t *b, const char *v);

#endif
