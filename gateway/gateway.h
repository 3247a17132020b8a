/*
 * gateway.h - the HTTP gateway in front of the engine: an OpenAI-compatible
 * API (POST /v1/chat/completions, GET /v1/models, GET /healthz, GET
 * /metrics), client keys with limits and budgets, an admin API on its own
 * listener, an access log. `airouter serve` is a thin program around it; the
 * benchmark and the tests start it in their own process with these calls.
 * docs/GATEWAY.md documents the HTTP surface.
 *
 * Threads: libmicrohttpd's internal epoll threads (one per core by default)
 * serve connections; a request that waits for the engine is suspended and
 * resumed from the engine's callback, so no thread waits per request. One
 * more thread watches suspended connections for clients that hang up, and
 * cancels their upstream requests.
 */
#ifndef AIR_GATEWAY_H
#define AIR_GATEWAY_H

#include <stdint.h>

#include "airouter.h"

struct air__gw;

/* Who runs the HTTP connections (config "http_mode", --http-mode):
 * WORKERS, each engine worker runs a listener on the shared port
 * (SO_REUSEPORT), so a request is read, routed, sent upstream and answered
 * on one thread; POOL, libmicrohttpd's own thread pool hands requests to the
 * workers and back. */
enum { AIR_GW_HTTP_DEFAULT = 0, AIR_GW_HTTP_WORKERS, AIR_GW_HTTP_POOL };

struct air__gw_opts {
    const char *config_text;  /* the JSON document; NULL: read config_path */
    const char *config_path;  /* re-read by reload; may be NULL when config_text is set */
    const char *listen;       /* overrides "listen" ("127.0.0.1:0" = any free port) */
    const char *admin_listen; /* overrides "admin.listen" */
    uint32_t threads;         /* http_mode "pool": HTTP threads; 0 = one per online CPU */
    int http_mode;            /* overrides "http_mode": AIR_GW_HTTP_WORKERS or _POOL; 0 =
                                 the config's (default "workers") */
    int quiet;                /* no start-up notices on stderr */
    const char *log_level;    /* overrides "access_log.level" ("off", "error", "info"),
                                 also across reloads; NULL: the config's */
};

/*
 * Parse the configuration, create the engine (air_new with the gateway's
 * keys removed) and start listening. Errors: AIR_E_CONFIG (err names the
 * JSON path, or says why the address cannot be used), AIR_E_TRANSPORT (the
 * listener could not start; err says why), AIR_E_NOMEM, plus air_new's.
 */
air_status_t air__gw_start(const struct air__gw_opts *o, struct air__gw **out, char *err,
                           size_t errlen);
/* The bound port of the API listener / of the admin listener (0 when the
 * admin API is disabled). */
uint16_t air__gw_port(const struct air__gw *gw);
uint16_t air__gw_admin_port(const struct air__gw *gw);
/* The engine behind the gateway (for tests and the benchmark). */
air_t *air__gw_engine(struct air__gw *gw);
/* Requests being served right now. */
long air__gw_inflight(struct air__gw *gw);
/*
 * Replace the configuration: `text`, or the file given at start when text
 * is NULL. Validated whole (gateway keys and engine); on error the running
 * configuration stays and err says why. Listen addresses, max_connections
 * and client_timeout_ms cannot change at run time.
 * Thread: any (reloads are serialised).
 */
air_status_t air__gw_reload(struct air__gw *gw, const char *text, char *err, size_t errlen);
/*
 * Stop: stop accepting connections, let requests in flight finish for up to
 * drain_ms, cancel what is left (the engine completes it with "shutdown"),
 * close every connection and free everything. NULL is a no-op.
 */
void air__gw_stop(struct air__gw *gw, uint32_t drain_ms);

#endif
