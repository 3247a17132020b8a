/*
 * gwint.h - the gateway's internal state, shared by gateway.c (API
 * listener, lifecycle), admin.c (admin listener) and promstats.c.
 */
#ifndef AIR_GW_INT_H
#define AIR_GW_INT_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "airouter.h"
#include "buf.h"
#include "gateway.h"
#include "gwconf.h"
#include "gwlimits.h"
#include "metrics.h"

struct air__gw {
    air_t *r;
    struct MHD_Daemon *d;     /* API listener (the first of dl[] in loop mode) */
    /* Loop mode: one listener per engine worker, run by that worker's loop
     * (air_worker_attach), all on one port through SO_REUSEPORT. */
    struct MHD_Daemon *dl[64];
    uint32_t ndl;
    struct MHD_Daemon *admin; /* admin listener, NULL when disabled */
    uint16_t port, admin_port;
    char *config_path;
    char listen_text[80], admin_listen_text[80]; /* as configured at start */
    int admin_enabled_at_start;
    uint32_t max_conn_at_start, client_to_at_start;
    int http_mode_at_start; /* the config's http_mode (the listeners are fixed) */
    char *log_level; /* --log-level, applied to every parse of the config; NULL: none */

    /* The configuration snapshot. Readers take a reference under the read
     * lock (a handful of instructions); a reload swaps it under the write
     * lock. ctl_mu serialises reloads and guards the key registry. */
    pthread_rwlock_t conf_lock;
    struct air__gw_conf *conf;
    pthread_mutex_t ctl_mu;
    struct air__gw_keystate *registry;

    struct air__gw_metrics *metrics;
    atomic_long inflight;
    atomic_long conns;                  /* open API connections (see on_accept) */
    atomic_uint_fast64_t conns_refused; /* closed at accept: over max_connections */
    atomic_uint_fast64_t seq;           /* ids of requests the engine never saw */
    atomic_uint_fast64_t disconnects;   /* clients gone before their response ended */
    atomic_uint_fast64_t reloads_ok, reloads_failed;
    atomic_int draining;
    time_t started;

    /* Hang-up watcher: an epoll set of the sockets of requests waiting for
     * the engine (EPOLLRDHUP, data = the engine request id). */
    int watch_ep, watch_wake;
    pthread_t watch_thr;
    int watch_running;
};

/* Take / drop a reference to the current configuration. */
struct air__gw_conf *air__gw_conf_get(struct air__gw *gw);

/* Bearer token of an Authorization header value, or NULL. *len gets its
 * length. */
const char *air__gw_bearer(const char *hdr, size_t *len);

/* Append the OpenAI-shaped error body. */
void air__gw_error_body(air_buf_t *b, const char *message, const char *type, const char *param,
                        const char *code);

/* Queue a response (copying body) with status, content type and the given
 * extra header pairs (NULL-terminated list of name, value). */
enum MHD_Result air__gw_respond(struct MHD_Connection *c, unsigned status, const char *ctype,
                                const char *body, size_t len, const char *const *hdrs);

/* The Prometheus text of GET /metrics. Ownership: air_buf_t the caller frees. */
void air__gw_metrics_text(struct air__gw *gw, air_buf_t *b);

/* Render the engine's stats JSON as Prometheus families. */
void air__gw_prom_engine_stats(air_buf_t *b, const char *stats_json);

/* The admin listener (admin.c). */
int air__gw_admin_start(struct air__gw *gw, const struct air__gw_addr *addr, char *err,
                        size_t errlen);

#endif
