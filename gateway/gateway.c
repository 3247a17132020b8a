/*
 * gateway.c - the API listener and the gateway's lifecycle (see gateway.h).
 *
 * DESIGN
 *
 * Threads. libmicrohttpd runs its own epoll threads (a pool, one per core by
 * default). A chat request is read, checked (key, limits, body) and
 * submitted to the engine on that thread; then the connection is suspended
 * (MHD_suspend_connection) and the thread goes on serving others. The
 * engine's done or chunk callback, on an engine worker, stores what arrived
 * and resumes the connection (MHD_resume_connection, which is thread-safe);
 * libmicrohttpd then calls the access handler (plain reply) or the stream's
 * content reader again on its own thread. No thread ever waits for a request.
 *
 * Suspend/resume protocol. Each request has a small mutex. A connection is
 * suspended only on an MHD thread, under that mutex, after checking that
 * there is nothing to send; a callback sets its data under the mutex, takes
 * the "suspended" flag, and resumes after unlocking. So a connection is
 * never resumed twice or resumed when it was not suspended (undefined
 * behaviour in libmicrohttpd), and never left suspended with data waiting.
 *
 * Lifetimes. A request object has one reference for the connection
 * (dropped by the request-completed notification), one for the engine
 * (taken before air_submit, dropped at the end of the done callback), and
 * one for a stream's response object (dropped by its free callback). Either
 * side may finish first: a client that hangs up while the engine works
 * leaves the object to the engine callback, which must not touch the
 * connection then (it is not suspended, so it is not resumed). The last
 * reference records the metrics and the access log line and frees.
 *
 * Hang-ups. libmicrohttpd does not watch a suspended connection, so a
 * client that goes away while its request waits would not be noticed until
 * the engine answered. One watcher thread keeps an epoll set of those
 * sockets (EPOLLRDHUP, edge-triggered, data = the engine request id) and
 * calls air_cancel on a hang-up. Keying by id, not by pointer, makes a late
 * event harmless: air_cancel refuses ids that have completed. A request
 * whose stream is being written notices the hang-up through the failed
 * write, and its completion notification cancels the upstream request too.
 *
 * Configuration snapshots are reference counted; a request keeps the one it
 * started with (its key, limits and prices) until it ends.
 */
#include "gwint.h"

#include "alloc.h"

#include <cjson/cJSON.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/eventfd.h>
#include <sys/time.h>
#include <unistd.h>

#define STREAM_BUF_MAX   (8u * 1024u * 1024u) /* unsent SSE bytes before we give up */
#define SSE_BLOCK        (16u * 1024u)
#define DEFAULT_OUT_TOKS 1024u /* output tokens assumed for budgets without max_tokens */
#define MAX_PROVIDER_HDR 128

enum { EP_NONE, EP_CHAT, EP_MODELS, EP_MODEL, EP_HEALTH, EP_METRICS };
enum { P_NEW, P_HEAD, P_BODY, P_WAIT, P_STREAM, P_DONE };

struct gwreq {
    atomic_int refs;
    pthread_mutex_t mu;
    struct air__gw *gw;
    struct air__gw_conf *conf; /* reference */
    struct MHD_Connection *conn;
    int ep, phase;
    uint64_t t0_us;

    /* request body */
    air_buf_t body;
    uint64_t body_seen;
    int too_big;

    /* what the gateway answered */
    int status;
    const char *errclass; /* static string, NULL on success */
    char reqid[40];
    char route[96];

    /* client key and its reservation */
    const struct air__gw_key *key; /* lives in conf */
    struct air__gw_reservation res;
    int reserved;

    /* engine side; guarded by mu from submit on */
    uint64_t id;
    int stream;
    int suspended;
    int done;
    int conn_gone;
    int aborted; /* the client went away before the response ended */
    int overflow;
    air_resp_t *resp; /* our reference, once done */
    air_buf_t out;    /* SSE bytes not yet handed to libmicrohttpd */
    size_t out_off;
    size_t chunks;
    int tail; /* [DONE] or the error event has been queued */
    char up_model[96];
    struct MHD_Response *sse;
};

/* ------------------------------------------------------------- helpers */

static uint64_t
now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

struct air__gw_conf *
air__gw_conf_get(struct air__gw *gw)
{
    pthread_rwlock_rdlock(&gw->conf_lock);
    struct air__gw_conf *c = gw->conf;
    air__gw_conf_ref(c);
    pthread_rwlock_unlock(&gw->conf_lock);
    return c;
}

const char *
air__gw_bearer(const char *hdr, size_t *len)
{
    if (hdr == NULL || strncasecmp(hdr, "Bearer ", 7) != 0)
        return NULL;
    const char *t = hdr + 7;
    while (*t == ' ')
        t++;
    size_t n = strlen(t);
    while (n > 0 && (t[n - 1] == ' ' || t[n - 1] == '\t'))
        n--;
    if (n == 0)
        return NULL;
    *len = n;
    return t;
}

void
air__gw_error_body(air_buf_t *b, const char *message, const char *type, const char *param,
                   const char *code)
{
    air__buf_puts(b, "{\"error\":{\"message\":");
    air__buf_json_str(b, message ? message : "", strlen(message ? message : ""));
    air__buf_puts(b, ",\"type\":");
    air__buf_json_str(b, type, strlen(type));
    air__buf_puts(b, ",\"param\":");
    if (param != NULL)
        air__buf_json_str(b, param, strlen(param));
    else
        air__buf_puts(b, "null");
    air__buf_puts(b, ",\"code\":");
    if (code != NULL)
        air__buf_json_str(b, code, strlen(code));
    else
        air__buf_puts(b, "null");
    air__buf_puts(b, "}}");
}

enum MHD_Result
air__gw_respond(struct MHD_Connection *c, unsigned status, const char *ctype, const char *body,
                size_t len, const char *const *hdrs)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)(uintptr_t)body, MHD_RESPMEM_MUST_COPY);
    if (r == NULL)
        return MHD_NO;
    if (ctype != NULL)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    for (size_t i = 0; hdrs != NULL && hdrs[i] != NULL; i += 2)
        if (hdrs[i + 1] != NULL)
            MHD_add_response_header(r, hdrs[i], hdrs[i + 1]);
    enum MHD_Result rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rc;
}

/* The request's id header value: the engine's id once submitted. */
static void
set_reqid(struct gwreq *q)
{
    if (q->id != 0)
        snprintf(q->reqid, sizeof q->reqid, "air-%016llx", (unsigned long long)q->id);
    else
        snprintf(
            q->reqid, sizeof q->reqid, "gw-%016llx",
            (unsigned long long)(atomic_fetch_add_explicit(&q->gw->seq, 1, memory_order_relaxed) +
                                 1));
}

/* Send an error in OpenAI's shape. retry_after_s > 0 adds Retry-After;
 * allow adds Allow. */
static enum MHD_Result
send_error(struct gwreq *q, unsigned status, const char *type, const char *msg, const char *param,
           const char *code, uint32_t retry_after_s, const char *allow)
{
    air_buf_t b = AIR_BUF_INIT;
    air__gw_error_body(&b, msg, type, param, code);
    if (b.oom) {
        air__buf_free(&b);
        return MHD_NO;
    }
    if (q->reqid[0] == '\0')
        set_reqid(q);
    char ra[16];
    snprintf(ra, sizeof ra, "%u", retry_after_s);
    int drain = atomic_load_explicit(&q->gw->draining, memory_order_relaxed);
    const char *hdrs[] = {"x-request-id",
                          q->reqid,
                          MHD_HTTP_HEADER_RETRY_AFTER,
                          retry_after_s > 0 ? ra : NULL,
                          MHD_HTTP_HEADER_ALLOW,
                          allow,
                          MHD_HTTP_HEADER_CONNECTION,
                          drain ? "close" : NULL,
                          NULL};
    q->status = (int)status;
    q->errclass = type;
    q->phase = P_DONE;
    enum MHD_Result rc = air__gw_respond(q->conn, status, "application/json", b.data, b.len, hdrs);
    air__buf_free(&b);
    return rc;
}

static enum MHD_Result
send_ok_json(struct gwreq *q, const char *body, size_t len)
{
    if (q->reqid[0] == '\0')
        set_reqid(q);
    const char *hdrs[] = {"x-request-id", q->reqid, NULL};
    q->status = 200;
    q->phase = P_DONE;
    return air__gw_respond(q->conn, 200, "application/json", body, len, hdrs);
}

/* ------------------------------------------------------ request objects */

static void record(struct gwreq *q);

static struct gwreq *
req_new(struct air__gw *gw, struct MHD_Connection *c)
{
    struct gwreq *q = air__calloc(1, sizeof *q);
    if (q == NULL)
        return NULL;
    atomic_init(&q->refs, 1);
    pthread_mutex_init(&q->mu, NULL);
    q->gw = gw;
    q->conn = c;
    q->conf = air__gw_conf_get(gw);
    q->t0_us = now_us();
    atomic_fetch_add_explicit(&gw->inflight, 1, memory_order_relaxed);
    return q;
}

static void
req_ref(struct gwreq *q)
{
    atomic_fetch_add_explicit(&q->refs, 1, memory_order_relaxed);
}

static void
req_unref(struct gwreq *q)
{
    /* acq_rel: the last owner sees what the others wrote. */
    if (atomic_fetch_sub_explicit(&q->refs, 1, memory_order_acq_rel) != 1)
        return;
    struct air__gw *gw = q->gw;
    if (q->ep == EP_CHAT || q->ep == EP_MODELS || q->ep == EP_MODEL)
        record(q);
    air_resp_free(q->resp);
    air__buf_free(&q->body);
    air__buf_free(&q->out);
    air__gw_conf_unref(q->conf);
    pthread_mutex_destroy(&q->mu);
    air__free(q);
    atomic_fetch_sub_explicit(&gw->inflight, 1, memory_order_release);
}

/* ------------------------------------------------ metrics and access log */

static void
log_line(struct gwreq *q, int status, uint64_t lat_us)
{
    const struct air__gw_conf *c = q->conf;
    if (c->log_fd < 0 || c->log_level == AIR_GW_LOG_OFF ||
        (c->log_level == AIR_GW_LOG_ERROR && status < 400))
        return;
    const air_resp_t *p = q->resp;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    air_buf_t b = AIR_BUF_INIT;
    air__buf_printf(&b, "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\",\"request_id\":\"%s\"",
                    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                    (int)(tv.tv_usec / 1000), q->reqid[0] ? q->reqid : "-");
    air__buf_puts(&b, ",\"key\":");
    if (q->key != NULL)
        air__buf_json_str(&b, q->key->name, strlen(q->key->name));
    else
        air__buf_puts(&b, "null");
    const char *path = q->ep == EP_CHAT     ? "/v1/chat/completions"
                       : q->ep == EP_MODELS ? "/v1/models"
                                            : "/v1/models/{id}";
    air__buf_printf(&b, ",\"path\":\"%s\",\"route\":", path);
    const char *route = p != NULL && air_resp_route(p) != NULL ? air_resp_route(p) : q->route;
    air__buf_json_str(&b, route, strlen(route));
    const char *prov = p != NULL ? air_resp_provider(p) : NULL;
    const char *model = p != NULL ? air_resp_model(p) : NULL;
    air__buf_puts(&b, ",\"provider\":");
    if (prov != NULL)
        air__buf_json_str(&b, prov, strlen(prov));
    else
        air__buf_puts(&b, "null");
    air__buf_puts(&b, ",\"model\":");
    if (model != NULL)
        air__buf_json_str(&b, model, strlen(model));
    else
        air__buf_puts(&b, "null");
    air__buf_printf(&b, ",\"status\":%d,\"error_class\":", status);
    if (q->errclass != NULL)
        air__buf_printf(&b, "\"%s\"", q->errclass);
    else
        air__buf_puts(&b, "null");
    air__buf_printf(&b, ",\"stream\":%s,\"attempts\":%u,\"latency_ms\":%.3f,\"ttft_ms\":",
                    q->stream ? "true" : "false", p ? air_resp_attempts(p) : 0,
                    (double)lat_us / 1000.0);
    if (p != NULL && air_resp_ttft_us(p) > 0)
        air__buf_printf(&b, "%.3f", (double)air_resp_ttft_us(p) / 1000.0);
    else
        air__buf_puts(&b, "null");
    air__buf_printf(&b, ",\"tokens_in\":%llu,\"tokens_out\":%llu,\"cost_usd\":%.9g",
                    (unsigned long long)(p ? air_resp_prompt_tokens(p) : 0),
                    (unsigned long long)(p ? air_resp_completion_tokens(p) : 0),
                    p ? air_resp_cost_usd(p) : 0.0);
    uint32_t ntags = air_resp_tag_count(p);
    if (ntags > 0) {
        air__buf_puts(&b, ",\"tags\":[");
        for (uint32_t i = 0; i < ntags; i++) {
            const char *t = air_resp_tag(p, i);
            if (i > 0)
                air__buf_putc(&b, ',');
            air__buf_json_str(&b, t, strlen(t));
        }
        air__buf_putc(&b, ']');
    }
    air__buf_puts(&b, "}\n");
    if (!b.oom) {
        /* One write(2) per line on an O_APPEND descriptor: lines from
         * different threads never interleave, and no lock is taken. */
        ssize_t w = write(c->log_fd, b.data, b.len);
        (void)w;
    }
    air__buf_free(&b);
}

static void
record(struct gwreq *q)
{
    uint64_t lat = now_us() - q->t0_us;
    int status = q->aborted ? 499 : q->status ? q->status : 500;
    if (q->aborted)
        atomic_fetch_add_explicit(&q->gw->disconnects, 1, memory_order_relaxed);
    const air_resp_t *p = q->resp;
    if (q->ep == EP_CHAT) {
        struct air__gw_obs o = {0};
        /* The route label: the engine's, else the requested model once a
         * provider served it; never an unserved name (a client could make
         * up endless series). */
        o.route = p != NULL && air_resp_route(p) != NULL      ? air_resp_route(p)
                  : p != NULL && air_resp_provider(p) != NULL ? q->route
                                                              : "";
        o.provider = p ? air_resp_provider(p) : NULL;
        o.model = p ? air_resp_model(p) : NULL;
        o.status = status;
        o.latency_us = lat;
        if (p != NULL) {
            o.engine = 1;
            o.ttft_us = air_resp_ttft_us(p);
            o.upstream_us = air_resp_upstream_us(p);
            o.engine_us = air_resp_latency_us(p);
            o.tokens_in = air_resp_prompt_tokens(p);
            o.tokens_out = air_resp_completion_tokens(p);
            o.cost_usd = air_resp_cost_usd(p);
            o.attempts = air_resp_attempts(p);
            o.streamed = q->stream;
        }
        air__gw_metrics_record(q->gw->metrics, &o);
    }
    log_line(q, status, lat);
}

/* --------------------------------------------------------------- watcher */

/* Cancel an engine request; AIR_E_NOTFOUND (it already finished) is fine. */
static void
cancel_id(air_t *r, uint64_t id)
{
    air_status_t st = air_cancel(r, id);
    (void)st;
}

static void *
watch_main(void *arg)
{
    struct air__gw *gw = arg;
    struct epoll_event ev[64];
    for (;;) {
        int n = epoll_wait(gw->watch_ep, ev, 64, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (int i = 0; i < n; i++) {
            if (ev[i].data.u64 == 0) /* the wake-up eventfd: stop */
                return NULL;
            /* A stale id (request already done) is refused by the engine. */
            cancel_id(gw->r, ev[i].data.u64);
        }
    }
    return NULL;
}

/* Watch q's socket for a hang-up while its request is with the engine. */
static void
watch(struct gwreq *q)
{
    struct air__gw *gw = q->gw;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(q->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci == NULL || gw->watch_ep < 0)
        return;
    struct epoll_event ev = {.events = EPOLLRDHUP | EPOLLET, .data.u64 = q->id};
    if (epoll_ctl(gw->watch_ep, EPOLL_CTL_MOD, ci->connect_fd, &ev) != 0 && errno == ENOENT)
        (void)epoll_ctl(gw->watch_ep, EPOLL_CTL_ADD, ci->connect_fd, &ev);
}

/* ------------------------------------------------------- engine callbacks */

/* Take the suspended flag; the caller resumes after unlocking. */
static struct MHD_Connection *
take_suspended(struct gwreq *q)
{
    if (!q->suspended)
        return NULL;
    q->suspended = 0;
    return q->conn;
}

static void
on_chunk(const char *json, size_t len, void *ud)
{
    struct gwreq *q = ud;
    int cancel = 0;
    pthread_mutex_lock(&q->mu);
    if (!q->conn_gone && !q->overflow) {
        if (q->out.len - q->out_off + len > STREAM_BUF_MAX) {
            /* The client reads slower than the provider writes. */
            q->overflow = 1;
            cancel = 1;
        } else {
            if (q->chunks == 0) {
                cJSON *j = cJSON_ParseWithLength(json, len);
                const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "model");
                if (cJSON_IsString(m))
                    snprintf(q->up_model, sizeof q->up_model, "%s", m->valuestring);
                cJSON_Delete(j);
            }
            if (q->out_off > 0 && q->out_off == q->out.len) {
                air__buf_reset(&q->out);
                q->out_off = 0;
            }
            air__buf_puts(&q->out, "data: ");
            air__buf_append(&q->out, json, len);
            air__buf_puts(&q->out, "\n\n");
            q->chunks++;
        }
    }
    struct MHD_Connection *c = take_suspended(q);
    uint64_t id = q->id;
    pthread_mutex_unlock(&q->mu);
    if (c != NULL)
        MHD_resume_connection(c);
    if (cancel && id != 0)
        cancel_id(q->gw->r, id);
}

static void
on_done(const air_resp_t *resp, void *ud)
{
    struct gwreq *q = ud;
    air_resp_t *keep = air_resp_dup(resp);
    if (q->reserved && q->key != NULL) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        air__gw_limit_settle(q->key, &q->res, now_us(), ts.tv_sec,
                             air_resp_prompt_tokens(resp) + air_resp_completion_tokens(resp),
                             air_resp_cost_usd(resp));
    }
    pthread_mutex_lock(&q->mu);
    q->resp = keep;
    q->done = 1;
    struct MHD_Connection *c = take_suspended(q);
    pthread_mutex_unlock(&q->mu);
    if (c != NULL)
        MHD_resume_connection(c);
    req_unref(q);
}

/* ------------------------------------------------------------ responses */

/* HTTP status for an engine error, per wire-formats.md section 7. */
static unsigned
status_for(const air_resp_t *p)
{
    int up = air_resp_http_status(p);
    switch (air_resp_error_class(p)) {
    case AIR_ERR_INVALID_REQUEST:
        return up == 413 || up == 422 ? (unsigned)up : 400;
    case AIR_ERR_AUTH:
        return 502; /* the provider's key, not the client's */
    case AIR_ERR_NOT_FOUND:
        return 404;
    case AIR_ERR_RATE_LIMITED:
        return 429;
    case AIR_ERR_BUDGET_EXCEEDED:
        return 429;
    case AIR_ERR_OVERLOADED:
        return 503;
    case AIR_ERR_UPSTREAM:
        return 502;
    case AIR_ERR_CONNECT:
        return 502;
    case AIR_ERR_TIMEOUT:
        return 504;
    case AIR_ERR_CANCELLED:
        return 499;
    case AIR_ERR_SHUTDOWN:
        return 503;
    case AIR_ERR_BUSY:
        return 503;
    default:
        return up >= 400 && up <= 599 ? (unsigned)up : 502;
    }
}

static uint32_t
retry_after_s(const air_resp_t *p)
{
    int64_t ms = air_resp_retry_after_ms(p);
    if (ms < 0)
        return air_resp_error_class(p) == AIR_ERR_RATE_LIMITED ||
                       air_resp_error_class(p) == AIR_ERR_OVERLOADED
                   ? 1
                   : 0;
    int64_t s = (ms + 999) / 1000;
    return s < 1 ? 1 : s > 86400 ? 86400 : (uint32_t)s;
}

static void
attempts_str(const air_resp_t *p, char *buf, size_t n)
{
    snprintf(buf, n, "%u", p ? air_resp_attempts(p) : 0);
}

/* The engine finished and nothing was streamed: a JSON body or an error. */
static enum MHD_Result
send_result(struct gwreq *q)
{
    const air_resp_t *p = q->resp;
    if (p == NULL)
        return send_error(q, 500, "upstream", "out of memory in the gateway", NULL, NULL, 0, NULL);
    char att[16];
    attempts_str(p, att, sizeof att);
    int drain = atomic_load_explicit(&q->gw->draining, memory_order_relaxed);
    if (air_resp_status(p) == AIR_OK) {
        size_t n = 0;
        const char *body = air_resp_body(p, &n);
        if (body == NULL) { /* a stream that ended without a chunk */
            body = "";
            n = 0;
        }
        const char *hdrs[] = {"x-request-id",
                              q->reqid,
                              "x-airouter-provider",
                              air_resp_provider(p),
                              "x-airouter-model",
                              air_resp_model(p),
                              "x-airouter-attempts",
                              att,
                              "Connection",
                              drain ? "close" : NULL,
                              NULL};
        q->status = 200;
        q->phase = P_DONE;
        return air__gw_respond(q->conn, 200, "application/json", body, n, hdrs);
    }
    unsigned st = status_for(p);
    air_buf_t b = AIR_BUF_INIT;
    const char *cls = air_errclass_name(air_resp_error_class(p));
    air__gw_error_body(&b, air_resp_error_message(p), cls, NULL, air_resp_error_code(p));
    uint32_t ra = retry_after_s(p);
    char ras[16];
    snprintf(ras, sizeof ras, "%u", ra);
    const char *hdrs[] = {"x-request-id",
                          q->reqid,
                          "x-airouter-provider",
                          air_resp_provider(p),
                          "x-airouter-model",
                          air_resp_model(p),
                          "x-airouter-attempts",
                          att,
                          "Retry-After",
                          ra > 0 ? ras : NULL,
                          "Connection",
                          drain ? "close" : NULL,
                          NULL};
    q->status = (int)st;
    q->errclass = cls;
    q->phase = P_DONE;
    enum MHD_Result rc =
        b.oom ? MHD_NO : air__gw_respond(q->conn, st, "application/json", b.data, b.len, hdrs);
    air__buf_free(&b);
    return rc;
}

/* The final SSE event: [DONE], or the error that ended the stream. Called
 * with q->mu held. */
static void
stream_tail(struct gwreq *q)
{
    const air_resp_t *p = q->resp;
    if (p != NULL && air_resp_status(p) == AIR_OK && !q->overflow) {
        air__buf_puts(&q->out, "data: [DONE]\n\n");
    } else {
        const char *msg = q->overflow ? "the client read the stream too slowly; upstream cancelled"
                          : p != NULL ? air_resp_error_message(p)
                                      : "out of memory in the gateway";
        const char *cls = p != NULL ? air_errclass_name(air_resp_error_class(p)) : "upstream";
        air__buf_puts(&q->out, "data: ");
        air__gw_error_body(&q->out, msg, cls, NULL, p ? air_resp_error_code(p) : NULL);
        air__buf_puts(&q->out, "\n\n");
        q->errclass = cls;
    }
    if (q->sse != NULL && p != NULL) {
        /* Known only now: sent as HTTP trailers of the chunked body. */
        char att[16];
        attempts_str(p, att, sizeof att);
        if (air_resp_provider(p) != NULL)
            MHD_add_response_footer(q->sse, "x-airouter-provider", air_resp_provider(p));
        MHD_add_response_footer(q->sse, "x-airouter-attempts", att);
    }
    q->tail = 1;
}

static ssize_t
sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct gwreq *q = cls;
    (void)pos;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        size_t avail = q->out.len - q->out_off;
        if (avail > 0) {
            size_t n = avail < max ? avail : max;
            memcpy(buf, q->out.data + q->out_off, n);
            q->out_off += n;
            if (q->out_off == q->out.len) {
                air__buf_reset(&q->out);
                q->out_off = 0;
            }
            pthread_mutex_unlock(&q->mu);
            return (ssize_t)n;
        }
        if (q->out.oom) {
            pthread_mutex_unlock(&q->mu);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        if (q->done) {
            if (!q->tail) {
                stream_tail(q);
                continue;
            }
            pthread_mutex_unlock(&q->mu);
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        /* Nothing to send yet: park the connection until a callback. */
        q->suspended = 1;
        MHD_suspend_connection(q->conn);
        pthread_mutex_unlock(&q->mu);
        return 0;
    }
}

static void
sse_free(void *cls)
{
    req_unref(cls);
}

/* Start the SSE response. `done` and `model` were read under q->mu; once
 * done, q->resp no longer changes. */
static enum MHD_Result
send_stream(struct gwreq *q, int done, const char *model)
{
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, SSE_BLOCK, sse_read, q, sse_free);
    if (r == NULL)
        return MHD_NO;
    req_ref(q); /* the response's, dropped by sse_free */
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(r, "x-request-id", q->reqid);
    MHD_add_response_header(r, "x-accel-buffering", "no");
    if (model[0])
        MHD_add_response_header(r, "x-airouter-model", model);
    if (done && q->resp != NULL) {
        char att[16];
        attempts_str(q->resp, att, sizeof att);
        if (air_resp_provider(q->resp) != NULL)
            MHD_add_response_header(r, "x-airouter-provider", air_resp_provider(q->resp));
        MHD_add_response_header(r, "x-airouter-attempts", att);
    } else {
        MHD_add_response_header(r, MHD_HTTP_HEADER_TRAILER,
                                "x-airouter-provider, x-airouter-attempts");
    }
    if (atomic_load_explicit(&q->gw->draining, memory_order_relaxed))
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    pthread_mutex_lock(&q->mu);
    q->sse = done ? NULL : r; /* trailers only when the headers lacked them */
    q->status = 200;
    q->phase = P_STREAM;
    pthread_mutex_unlock(&q->mu);
    enum MHD_Result rc = MHD_queue_response(q->conn, 200, r);
    MHD_destroy_response(r);
    return rc;
}

/* The engine has something for a waiting request (or libmicrohttpd called
 * again). Suspends again when there is nothing yet. */
static enum MHD_Result
on_ready(struct gwreq *q)
{
    pthread_mutex_lock(&q->mu);
    if (q->stream &&
        (q->chunks > 0 || (q->done && q->resp != NULL && air_resp_status(q->resp) == AIR_OK))) {
        /* Snapshot what the headers need; the response is built unlocked
         * (libmicrohttpd may call the reader, which takes q->mu). */
        int done = q->done;
        char model[sizeof q->up_model];
        memcpy(model, q->up_model, sizeof model);
        pthread_mutex_unlock(&q->mu);
        return send_stream(q, done, model);
    }
    if (!q->done) {
        q->suspended = 1;
        MHD_suspend_connection(q->conn);
        pthread_mutex_unlock(&q->mu);
        return MHD_YES;
    }
    pthread_mutex_unlock(&q->mu);
    return send_result(q);
}

/* ---------------------------------------------------------- chat requests */

/* x-airouter-tags: "team=search, feature=summary" -> one tag each (trimmed,
 * empty items skipped). AIR_OK, AIR_E_INVAL with msg (more than 16 tags,
 * one longer than 128 bytes) or AIR_E_NOMEM. */
static air_status_t
add_tags(air_req_t *areq, const char *hdr, char *msg, size_t msglen)
{
    enum { MAX_TAG_LEN = 128 };
    for (const char *p = hdr; *p != '\0';) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *start = p;
        while (*p != '\0' && *p != ',')
            p++;
        const char *end = p;
        while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        if (end == start)
            continue;
        if (end - start > MAX_TAG_LEN) {
            snprintf(msg, msglen, "x-airouter-tags: a tag is longer than %d bytes", MAX_TAG_LEN);
            return AIR_E_INVAL;
        }
        char tag[MAX_TAG_LEN + 1];
        memcpy(tag, start, (size_t)(end - start));
        tag[end - start] = '\0';
        /* The engine holds the count (16 per request, airouter.h). */
        air_status_t st = air_req_add_tag(areq, tag);
        if (st == AIR_E_RANGE) {
            snprintf(msg, msglen, "x-airouter-tags: at most 16 tags");
            return AIR_E_INVAL;
        }
        if (st != AIR_OK)
            return st;
    }
    return AIR_OK;
}

/* "messages[0].role: expected a string" -> "messages[0].role". */
static void
param_of(const char *msg, char *out, size_t n)
{
    out[0] = '\0';
    const char *c = strstr(msg, ": ");
    if (c == NULL || strncmp(msg, "invalid JSON", 12) == 0 || strncmp(msg, "request body", 12) == 0)
        return;
    size_t l = (size_t)(c - msg);
    if (l >= n || memchr(msg, ' ', l) != NULL)
        return;
    memcpy(out, msg, l);
    out[l] = '\0';
}

static uint64_t
max_tokens_of(const cJSON *j)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "max_completion_tokens");
    if (!cJSON_IsNumber(m))
        m = cJSON_GetObjectItemCaseSensitive(j, "max_tokens");
    if (cJSON_IsNumber(m) && m->valuedouble >= 1 && m->valuedouble < 1e9)
        return (uint64_t)m->valuedouble;
    return DEFAULT_OUT_TOKS;
}

static enum MHD_Result
chat(struct gwreq *q)
{
    struct air__gw *gw = q->gw;
    if (q->too_big) {
        char msg[128];
        snprintf(msg, sizeof msg, "request body is larger than %llu bytes",
                 (unsigned long long)q->conf->max_body_bytes);
        return send_error(q, 413, "invalid_request", msg, NULL, "body_too_large", 0, NULL);
    }
    const char *body = q->body.data ? q->body.data : "";
    size_t blen = q->body.len;
    char err[512];
    air_req_t *areq = NULL;
    air_status_t st = air_req_new(gw->r, body, blen, &areq, err, sizeof err);
    if (st != AIR_OK) {
        if (st != AIR_E_BADREQ)
            return send_error(q, 500, "upstream", air_strerror(st), NULL, NULL, 0, NULL);
        char param[96];
        param_of(err, param, sizeof param);
        return send_error(q, 400, "invalid_request", err, param[0] ? param : NULL, NULL, 0, NULL);
    }
    /* The fields the gateway itself needs (air_req_new checked the shape). */
    cJSON *j = cJSON_ParseWithLength(body, blen);
    const cJSON *mj = cJSON_GetObjectItemCaseSensitive(j, "model");
    snprintf(q->route, sizeof q->route, "%s", cJSON_IsString(mj) ? mj->valuestring : "");
    q->stream = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "stream"));
    uint64_t out_toks = max_tokens_of(j);
    cJSON_Delete(j);

    if (q->key != NULL && !air__gw_key_allows(q->key, q->route)) {
        air_req_free(areq);
        char msg[256];
        snprintf(msg, sizeof msg, "the key '%s' may not use model '%.96s'", q->key->name, q->route);
        return send_error(q, 403, "auth", msg, "model", "model_not_allowed", 0, NULL);
    }
    if (q->key != NULL && q->key->st != NULL) {
        uint64_t est_tokens = blen / 4 ? blen / 4 : 1;
        const struct air__gw_model *m = air__gw_conf_model(q->conf, q->route);
        double est_usd =
            m != NULL ? ((double)est_tokens * m->in_price + (double)out_toks * m->out_price) / 1e6
                      : 0;
        uint32_t ra = 0;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int why =
            air__gw_limit_admit(q->key, now_us(), ts.tv_sec, est_tokens, est_usd, &q->res, &ra);
        if (why != AIR_GW_LIMIT_OK) {
            air_req_free(areq);
            char msg[256];
            if (why == AIR_GW_LIMIT_BUDGET) {
                snprintf(msg, sizeof msg,
                         "the key '%s' has reached its budget of $%g per %s; it resets in %u s",
                         q->key->name, q->key->budget_usd,
                         q->key->window == AIR_GW_WIN_MINUTE ? "minute"
                         : q->key->window == AIR_GW_WIN_HOUR ? "hour"
                         : q->key->window == AIR_GW_WIN_DAY  ? "day"
                                                             : "month",
                         ra);
                return send_error(q, 429, "budget_exceeded", msg, NULL, "budget_exceeded", ra,
                                  NULL);
            }
            snprintf(msg, sizeof msg, "the key '%s' is over its %s limit (%lld per minute)",
                     q->key->name, why == AIR_GW_LIMIT_RPM ? "requests" : "tokens",
                     (long long)(why == AIR_GW_LIMIT_RPM ? q->key->rpm : q->key->tpm));
            return send_error(q, 429, "rate_limited", msg, NULL, "rate_limit_exceeded", ra, NULL);
        }
        q->reserved = 1;
    }

    int ok = 1;
    const char *pin = MHD_lookup_connection_value(q->conn, MHD_HEADER_KIND, "x-ai-provider");
    if (pin != NULL && pin[0] != '\0') {
        if (strlen(pin) > MAX_PROVIDER_HDR) {
            air_req_free(areq);
            if (q->reserved)
                air__gw_limit_settle(q->key, &q->res, now_us(), time(NULL), 0, 0);
            return send_error(q, 400, "invalid_request", "x-ai-provider: value too long",
                              "x-ai-provider", NULL, 0, NULL);
        }
        ok &= air_req_set_provider(areq, pin) == AIR_OK;
    }
    const char *tags = MHD_lookup_connection_value(q->conn, MHD_HEADER_KIND, "x-airouter-tags");
    if (tags != NULL) {
        char bad[160];
        air_status_t ts = add_tags(areq, tags, bad, sizeof bad);
        if (ts == AIR_E_INVAL) {
            air_req_free(areq);
            if (q->reserved)
                air__gw_limit_settle(q->key, &q->res, now_us(), time(NULL), 0, 0);
            return send_error(q, 400, "invalid_request", bad, "x-airouter-tags", NULL, 0, NULL);
        }
        ok &= ts == AIR_OK;
    }
    if (q->key != NULL)
        ok &= air_req_set_client_key(areq, q->key->name) == AIR_OK;
    ok &= air_req_set_done(areq, on_done, q) == AIR_OK;
    if (q->stream)
        ok &= air_req_set_chunk(areq, on_chunk, q) == AIR_OK;
    if (!ok) {
        air_req_free(areq);
        if (q->reserved)
            air__gw_limit_settle(q->key, &q->res, now_us(), time(NULL), 0, 0);
        return send_error(q, 500, "upstream", "out of memory in the gateway", NULL, NULL, 0, NULL);
    }

    req_ref(q); /* the engine's, dropped by on_done */
    q->phase = P_WAIT;
    uint64_t id = 0;
    /* The callbacks may run before air_submit returns; they only resume a
     * connection that on_ready below has suspended, under q->mu. */
    st = air_submit(gw->r, areq, &id);
    if (st != AIR_OK) {
        atomic_fetch_sub_explicit(&q->refs, 1, memory_order_relaxed); /* never called back */
        if (q->reserved)
            air__gw_limit_settle(q->key, &q->res, now_us(), time(NULL), 0, 0);
        if (st == AIR_E_BUSY)
            return send_error(q, 503, "busy", "the router's queue is full; retry shortly", NULL,
                              "busy", 1, NULL);
        if (st == AIR_E_SHUTDOWN)
            return send_error(q, 503, "shutdown", "the gateway is shutting down", NULL, NULL, 1,
                              NULL);
        return send_error(q, 500, "upstream", air_strerror(st), NULL, NULL, 0, NULL);
    }
    pthread_mutex_lock(&q->mu);
    q->id = id;
    int overflow = q->overflow; /* on_chunk could not cancel without the id */
    pthread_mutex_unlock(&q->mu);
    if (overflow)
        cancel_id(gw->r, id);
    set_reqid(q);
    watch(q);
    return on_ready(q);
}

/* ------------------------------------------------------- other endpoints */

static void
model_obj(air_buf_t *b, const struct air__gw_model *m, long long created)
{
    air__buf_puts(b, "{\"id\":");
    air__buf_json_str(b, m->id, strlen(m->id));
    air__buf_printf(b, ",\"object\":\"model\",\"created\":%lld,\"owned_by\":", created);
    air__buf_json_str(b, m->owned_by, strlen(m->owned_by));
    air__buf_putc(b, '}');
}

static enum MHD_Result
models(struct gwreq *q, const char *one)
{
    const struct air__gw_conf *c = q->conf;
    air_buf_t b = AIR_BUF_INIT;
    if (one != NULL) {
        const struct air__gw_model *m = air__gw_conf_model(c, one);
        if (m == NULL || !air__gw_key_allows(q->key, one)) {
            char msg[200];
            snprintf(msg, sizeof msg, "The model '%.128s' does not exist", one);
            return send_error(q, 404, "not_found", msg, "model", "model_not_found", 0, NULL);
        }
        model_obj(&b, m, (long long)q->gw->started);
    } else {
        air__buf_puts(&b, "{\"object\":\"list\",\"data\":[");
        int first = 1;
        for (size_t i = 0; i < c->nmodels; i++) {
            if (!air__gw_key_allows(q->key, c->models[i].id))
                continue;
            if (!first)
                air__buf_putc(&b, ',');
            first = 0;
            model_obj(&b, &c->models[i], (long long)q->gw->started);
        }
        air__buf_puts(&b, "]}");
    }
    enum MHD_Result rc = b.oom ? MHD_NO : send_ok_json(q, b.data, b.len);
    air__buf_free(&b);
    return rc;
}

static enum MHD_Result
metrics(struct gwreq *q)
{
    air_buf_t b = AIR_BUF_INIT;
    air__gw_metrics_text(q->gw, &b);
    q->status = 200;
    q->phase = P_DONE;
    enum MHD_Result rc =
        b.oom ? MHD_NO
              : air__gw_respond(q->conn, 200, "text/plain; version=0.0.4; charset=utf-8", b.data,
                                b.len, NULL);
    air__buf_free(&b);
    return rc;
}

/* Check the client key; 1 when the request may go on (q->key set, or no
 * keys configured). */
static int
authorize(struct gwreq *q)
{
    const struct air__gw_conf *c = q->conf;
    if (c->nkeys == 0)
        return 1;
    size_t n = 0;
    const char *hdr =
        MHD_lookup_connection_value(q->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    const char *tok = air__gw_bearer(hdr, &n);
    if (tok == NULL)
        return 0;
    uint8_t d[AIR_SHA256_LEN];
    air__sha256(tok, n, d);
    /* Compare against every key, without an early exit. */
    const struct air__gw_key *found = NULL;
    for (size_t i = 0; i < c->nkeys; i++)
        if (air__sha256_equal(d, c->keys[i].digest))
            found = &c->keys[i];
    q->key = found;
    return found != NULL;
}

/* The first call for a request: route it, check what can be checked from
 * the head alone. */
static enum MHD_Result
first_call(struct gwreq *q, const char *url, const char *method)
{
    struct MHD_Connection *c = q->conn;
    int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    int post = strcmp(method, "POST") == 0;
    const char *allow = "GET, HEAD";
    if (strcmp(url, "/v1/chat/completions") == 0 || strcmp(url, "/chat/completions") == 0) {
        q->ep = EP_CHAT;
        allow = "POST";
    } else if (strcmp(url, "/v1/models") == 0 || strcmp(url, "/models") == 0) {
        q->ep = EP_MODELS;
    } else if (strncmp(url, "/v1/models/", 11) == 0 && url[11] != '\0') {
        q->ep = EP_MODEL;
    } else if (strcmp(url, "/healthz") == 0) {
        q->ep = EP_HEALTH;
    } else if (strcmp(url, "/metrics") == 0) {
        q->ep = EP_METRICS;
    }
    /* A key in the query string is refused, whatever the path, and never
     * logged (the access log has the path only). */
    if (MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "api_key") != NULL ||
        MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "key") != NULL)
        return send_error(q, 400, "invalid_request",
                          "API keys are not accepted in the URL; send \"Authorization: Bearer "
                          "<key>\"",
                          "api_key", "key_in_query", 0, NULL);
    if (q->ep == EP_NONE) {
        char msg[200];
        snprintf(msg, sizeof msg, "Unknown path %.120s", url);
        return send_error(q, 404, "not_found", msg, NULL, "unknown_path", 0, NULL);
    }
    if ((q->ep == EP_CHAT && !post) || (q->ep != EP_CHAT && !get)) {
        char msg[160];
        snprintf(msg, sizeof msg, "Method %.16s is not allowed here; use %s", method,
                 q->ep == EP_CHAT ? "POST" : "GET");
        return send_error(q, 405, "invalid_request", msg, NULL, "method_not_allowed", 0, allow);
    }
    if (q->ep == EP_HEALTH) {
        q->status = 200;
        q->phase = P_DONE;
        return air__gw_respond(c, 200, "application/json", "{\"status\":\"ok\"}", 15, NULL);
    }
    if (atomic_load_explicit(&q->gw->draining, memory_order_relaxed))
        return send_error(q, 503, "shutdown", "the gateway is shutting down", NULL, NULL, 1, NULL);
    if (q->ep == EP_METRICS)
        return metrics(q);
    if (!authorize(q))
        return send_error(q, 401, "auth",
                          "Missing or invalid API key: send \"Authorization: Bearer <key>\"", NULL,
                          "invalid_api_key", 0, NULL);
    if (q->ep == EP_MODELS)
        return models(q, NULL);
    if (q->ep == EP_MODEL)
        return models(q, url + 11);
    const char *cl =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl != NULL) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(cl, &end, 10);
        if (errno == 0 && *end == '\0' && v > q->conf->max_body_bytes) {
            q->too_big = 1;
            return chat(q);
        }
    }
    q->phase = P_BODY;
    return MHD_YES;
}

static enum MHD_Result
on_access(void *cls, struct MHD_Connection *c, const char *url, const char *method,
          const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    struct air__gw *gw = cls;
    struct gwreq *q = *con_cls;
    (void)version;
    if (q == NULL) {
        q = req_new(gw, c);
        if (q == NULL)
            return MHD_NO;
        *con_cls = q;
        /* A request without a body is answered on the next call, once
         * libmicrohttpd has read all of it: a response queued while a
         * request may still have a body to read makes it close the
         * connection after the response (no keep-alive). */
        if (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0) {
            q->phase = P_HEAD;
            return MHD_YES;
        }
        return first_call(q, url, method);
    }
    switch (q->phase) {
    case P_HEAD:
        if (*upload_size > 0) { /* a GET with a body: ignored */
            *upload_size = 0;
            return MHD_YES;
        }
        q->phase = P_NEW;
        return first_call(q, url, method);
    case P_BODY:
        if (*upload_size > 0) {
            size_t n = *upload_size;
            q->body_seen += n;
            if (q->body_seen > q->conf->max_body_bytes) {
                q->too_big = 1;
                air__buf_free(&q->body);
                /* Read (and drop) a little more so the 413 can be sent; a
                 * client that keeps going is cut off. */
                if (q->body_seen > q->conf->max_body_bytes + (1u << 20))
                    return MHD_NO;
            } else {
                air__buf_append(&q->body, upload, n);
                if (q->body.oom)
                    return MHD_NO;
            }
            *upload_size = 0;
            return MHD_YES;
        }
        return chat(q);
    case P_WAIT:
        return on_ready(q);
    default:
        /* Already answered; extra body bytes are dropped. */
        *upload_size = 0;
        return MHD_YES;
    }
}

static void
on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
             enum MHD_RequestTerminationCode toe)
{
    struct air__gw *gw = cls;
    struct gwreq *q = *con_cls;
    (void)c;
    if (q == NULL)
        return;
    *con_cls = NULL;
    pthread_mutex_lock(&q->mu);
    q->conn_gone = 1;
    q->conn = NULL;
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
        q->aborted = 1;
    int cancel = toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && q->id != 0 && !q->done;
    uint64_t id = q->id;
    pthread_mutex_unlock(&q->mu);
    if (cancel)
        cancel_id(gw->r, id);
    req_unref(q);
}

/* ------------------------------------------------------------- /metrics */

void
air__gw_metrics_text(struct air__gw *gw, air_buf_t *b)
{
    air__gw_metrics_render(gw->metrics, b);
    air__buf_printf(b,
                    "# HELP airouter_in_flight_requests Requests being served by the gateway.\n"
                    "# TYPE airouter_in_flight_requests gauge\n"
                    "airouter_in_flight_requests %ld\n",
                    atomic_load_explicit(&gw->inflight, memory_order_relaxed));
    air__buf_printf(b,
                    "# HELP airouter_open_connections Open client connections to the API "
                    "listener.\n"
                    "# TYPE airouter_open_connections gauge\n"
                    "airouter_open_connections %ld\n",
                    atomic_load_explicit(&gw->conns, memory_order_relaxed));
    air__buf_printf(
        b,
        "# HELP airouter_connections_refused_total Connections closed at accept because "
        "max_connections were open.\n"
        "# TYPE airouter_connections_refused_total counter\n"
        "airouter_connections_refused_total %llu\n",
        (unsigned long long)atomic_load_explicit(&gw->conns_refused, memory_order_relaxed));
    air__buf_printf(b,
                    "# HELP airouter_queue_depth Requests waiting in the engine's ingress queue.\n"
                    "# TYPE airouter_queue_depth gauge\n"
                    "airouter_queue_depth %u\n",
                    air_queue_depth(gw->r));
    air__buf_printf(
        b,
        "# HELP airouter_client_disconnects_total Requests whose client went away before the "
        "response ended (their upstream request is cancelled).\n"
        "# TYPE airouter_client_disconnects_total counter\n"
        "airouter_client_disconnects_total %llu\n",
        (unsigned long long)atomic_load_explicit(&gw->disconnects, memory_order_relaxed));
    air__buf_printf(
        b,
        "# HELP airouter_config_reloads_total Configuration reloads, by result.\n"
        "# TYPE airouter_config_reloads_total counter\n"
        "airouter_config_reloads_total{result=\"ok\"} %llu\n"
        "airouter_config_reloads_total{result=\"error\"} %llu\n",
        (unsigned long long)atomic_load_explicit(&gw->reloads_ok, memory_order_relaxed),
        (unsigned long long)atomic_load_explicit(&gw->reloads_failed, memory_order_relaxed));
    air__buf_printf(b,
                    "# HELP airouter_build_info The running version.\n"
                    "# TYPE airouter_build_info gauge\n"
                    "airouter_build_info{version=\"%s\"} 1\n",
                    air_version());
    struct air__gw_conf *c = air__gw_conf_get(gw);
    if (c->nkeys > 0) {
        air__buf_puts(b, "# HELP airouter_key_spent_usd Cost settled in the current budget "
                         "window, per client key.\n# TYPE airouter_key_spent_usd gauge\n");
        for (size_t i = 0; i < c->nkeys; i++) {
            struct air__gw_keystate *s = c->keys[i].st;
            double spent = 0;
            if (s != NULL) {
                pthread_mutex_lock(&s->mu);
                spent = s->spent_usd;
                pthread_mutex_unlock(&s->mu);
            }
            air__buf_puts(b, "airouter_key_spent_usd{key=");
            air__gw_prom_label(b, c->keys[i].name);
            air__buf_printf(b, "} %.9f\n", spent);
        }
        air__buf_puts(b, "# HELP airouter_key_rejected_total Requests refused by a key's rate "
                         "limits or budget.\n# TYPE airouter_key_rejected_total counter\n");
        for (size_t i = 0; i < c->nkeys; i++) {
            struct air__gw_keystate *s = c->keys[i].st;
            uint64_t rej = 0;
            if (s != NULL) {
                pthread_mutex_lock(&s->mu);
                rej = s->rejected;
                pthread_mutex_unlock(&s->mu);
            }
            air__buf_puts(b, "airouter_key_rejected_total{key=");
            air__gw_prom_label(b, c->keys[i].name);
            air__buf_printf(b, "} %llu\n", (unsigned long long)rej);
        }
    }
    air__gw_conf_unref(c);
    char *stats = air_stats_json(gw->r);
    if (stats != NULL) {
        air__gw_prom_engine_stats(b, stats);
        air__free(stats); /* malloc'd by the library; air__free is free() */
    }
}

/* ------------------------------------------------------------ lifecycle */

/* Give every key of c its limiter state: the registry's one of the same
 * name, or a new one. Called with ctl_mu held. */
static int
attach_states(struct air__gw *gw, struct air__gw_conf *c)
{
    for (size_t i = 0; i < c->nkeys; i++) {
        struct air__gw_keystate *s = gw->registry;
        while (s != NULL && strcmp(s->name, c->keys[i].name) != 0)
            s = s->next;
        if (s == NULL) {
            s = air__gw_keystate_new(c->keys[i].name);
            if (s == NULL)
                return -1;
            s->next = gw->registry;
            gw->registry = s;
        }
        air__gw_keystate_ref(s);
        c->keys[i].st = s;
    }
    return 0;
}

/* Drop registry entries no key of c uses. Called with ctl_mu held. */
static void
prune_registry(struct air__gw *gw, const struct air__gw_conf *c)
{
    struct air__gw_keystate **pp = &gw->registry;
    while (*pp != NULL) {
        struct air__gw_keystate *s = *pp;
        int used = 0;
        for (size_t i = 0; c != NULL && i < c->nkeys && !used; i++)
            used = c->keys[i].st == s;
        if (used) {
            pp = &s->next;
        } else {
            *pp = s->next;
            air__gw_keystate_unref(s);
        }
    }
}

static char *
read_file(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    air_buf_t b = AIR_BUF_INIT;
    int rerr = air__buf_read(&b, f);
    fclose(f);
    if (rerr != 0) {
        air__buf_free(&b);
        snprintf(err, errlen, "%s: read error", path);
        return NULL;
    }
    char *s = air__buf_steal(&b, NULL);
    if (s == NULL)
        s = air__strdup("");
    return s;
}

static int
loopback_check(const struct air__gw_conf *c, const struct air__gw_addr *listen, char *err,
               size_t errlen)
{
    if (c->nkeys == 0 && !listen->loopback) {
        snprintf(err, errlen,
                 "listen: %s is not a loopback address and no client keys are configured; add "
                 "\"keys\" or listen on 127.0.0.1",
                 listen->text);
        return -1;
    }
    return 0;
}

/* Accept policy. Once draining, a new connection is closed as soon as it is
 * accepted, so clients fail fast and go elsewhere (see air__gw_stop). Past
 * max_connections open connections, likewise: the client sees its
 * connection closed before any response, instead of waiting unanswered in
 * the kernel's listen queue (which is what libmicrohttpd's own limit does:
 * a thread at its limit stops accepting). The count is kept by on_conn;
 * accepts racing on different HTTP threads can pass the cap by at most one
 * per thread, and libmicrohttpd's own limit, set that much higher, stays a
 * hard backstop. */
static enum MHD_Result
on_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
    (void)addr;
    (void)addrlen;
    struct air__gw *gw = cls;
    if (atomic_load_explicit(&gw->draining, memory_order_relaxed))
        return MHD_NO;
    if (atomic_load_explicit(&gw->conns, memory_order_relaxed) >= (long)gw->max_conn_at_start) {
        atomic_fetch_add_explicit(&gw->conns_refused, 1, memory_order_relaxed);
        return MHD_NO;
    }
    return MHD_YES;
}

/* Count open connections for on_accept. */
static void
on_conn(void *cls, struct MHD_Connection *c, void **socket_ctx,
        enum MHD_ConnectionNotificationCode code)
{
    (void)c;
    (void)socket_ctx;
    struct air__gw *gw = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED)
        atomic_fetch_add_explicit(&gw->conns, 1, memory_order_relaxed);
    else if (code == MHD_CONNECTION_NOTIFY_CLOSED)
        atomic_fetch_sub_explicit(&gw->conns, 1, memory_order_relaxed);
}

static struct MHD_Daemon *
start_daemon(struct air__gw *gw, const struct air__gw_addr *a, uint32_t threads,
             const struct air__gw_conf *c)
{
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME;
    if (a->sa.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    unsigned timeout_s = (c->client_timeout_ms + 999) / 1000;
    /* Above the cap on_accept enforces; see there. */
    unsigned limit = (unsigned)c->max_connections + (threads > 1 ? threads : 1);
    if (threads > 1)
        return MHD_start_daemon(flags, 0, on_accept, gw, on_access, gw, MHD_OPTION_SOCK_ADDR,
                                (const struct sockaddr *)&a->sa, MHD_OPTION_NOTIFY_COMPLETED,
                                on_completed, gw, MHD_OPTION_NOTIFY_CONNECTION, on_conn, gw,
                                MHD_OPTION_CONNECTION_LIMIT, limit, MHD_OPTION_CONNECTION_TIMEOUT,
                                timeout_s, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)threads,
                                MHD_OPTION_END);
    return MHD_start_daemon(flags, 0, on_accept, gw, on_access, gw, MHD_OPTION_SOCK_ADDR,
                            (const struct sockaddr *)&a->sa, MHD_OPTION_NOTIFY_COMPLETED,
                            on_completed, gw, MHD_OPTION_NOTIFY_CONNECTION, on_conn, gw,
                            MHD_OPTION_CONNECTION_LIMIT, limit, MHD_OPTION_CONNECTION_TIMEOUT,
                            timeout_s, MHD_OPTION_END);
}

/* Loop mode: run one listener on the calling worker's thread. */
static int64_t
loop_run(void *ud)
{
    struct MHD_Daemon *d = ud;
    MHD_run(d);
    MHD_UNSIGNED_LONG_LONG to;
    if (MHD_get_timeout(d, &to) == MHD_YES)
        return to > 1000 ? 1000 : (int64_t)to;
    return -1;
}

/* A listening socket on ss that shares its port (SO_REUSEPORT), or -1. */
static int
reuseport_socket(const struct sockaddr_storage *ss, socklen_t len)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
        bind(fd, (const struct sockaddr *)ss, len) != 0 || listen(fd, 1024) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* Start the per-worker listeners and attach them. 0, or -1 (errno). */
static int
start_loop_daemons(struct air__gw *gw, const struct air__gw_addr *a, const struct air__gw_conf *c)
{
    uint32_t n = air_workers(gw->r);
    if (n > 64)
        n = 64;
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME;
    if (a->sa.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    unsigned timeout_s = (c->client_timeout_ms + 999) / 1000;
    /* Above the cap on_accept enforces (see there). */
    unsigned limit = (unsigned)c->max_connections + n;
    /* The first socket binds as configured (port 0: any); the others bind
     * to the address it got. */
    struct sockaddr_storage ss = a->sa;
    socklen_t len = a->len;
    for (uint32_t i = 0; i < n; i++) {
        int fd = reuseport_socket(&ss, len);
        if (fd < 0)
            return -1;
        if (i == 0) {
            len = sizeof ss;
            if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) {
                close(fd);
                return -1;
            }
        }
        struct MHD_Daemon *d =
            MHD_start_daemon(flags, 0, on_accept, gw, on_access, gw, MHD_OPTION_LISTEN_SOCKET, fd,
                             MHD_OPTION_NOTIFY_COMPLETED, on_completed, gw,
                             MHD_OPTION_NOTIFY_CONNECTION, on_conn, gw, MHD_OPTION_CONNECTION_LIMIT,
                             limit, MHD_OPTION_CONNECTION_TIMEOUT, timeout_s, MHD_OPTION_END);
        if (d == NULL) {
            close(fd);
            return -1;
        }
        gw->dl[gw->ndl++] = d;
        const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_EPOLL_FD);
        if (di == NULL || air_worker_attach(gw->r, i, di->epoll_fd, loop_run, d) != AIR_OK)
            return -1;
    }
    gw->d = gw->dl[0];
    return 0;
}

static void
stop_loop_daemons(struct air__gw *gw)
{
    for (uint32_t i = 0; i < gw->ndl; i++)
        (void)air_worker_detach(gw->r, i);
}

/* Stop the API listeners (after stop_loop_daemons in workers mode: no
 * worker runs them any more). Closes their listening sockets. */
static void
stop_listeners(struct air__gw *gw)
{
    if (gw->ndl > 0) {
        for (uint32_t i = 0; i < gw->ndl; i++)
            MHD_stop_daemon(gw->dl[i]);
        gw->ndl = 0;
    } else if (gw->d != NULL) {
        MHD_stop_daemon(gw->d);
    }
    gw->d = NULL;
}

static uint16_t
bound_port(struct MHD_Daemon *d)
{
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    return di != NULL ? di->port : 0;
}

static void
gw_free(struct air__gw *gw)
{
    if (gw->watch_running) {
        uint64_t one = 1;
        ssize_t w = write(gw->watch_wake, &one, sizeof one);
        (void)w;
        pthread_join(gw->watch_thr, NULL);
    }
    if (gw->watch_ep >= 0)
        close(gw->watch_ep);
    if (gw->watch_wake >= 0)
        close(gw->watch_wake);
    air__gw_conf_unref(gw->conf);
    prune_registry(gw, NULL);
    air__gw_metrics_free(gw->metrics);
    pthread_rwlock_destroy(&gw->conf_lock);
    pthread_mutex_destroy(&gw->ctl_mu);
    air__free(gw->config_path);
    air__free(gw->log_level);
    air__free(gw);
}

air_status_t
air__gw_start(const struct air__gw_opts *o, struct air__gw **out, char *err, size_t errlen)
{
    char dummy[8];
    if (err == NULL || errlen == 0) {
        err = dummy;
        errlen = sizeof dummy;
    }
    err[0] = '\0';
    *out = NULL;
    if (o == NULL || (o->config_text == NULL && o->config_path == NULL)) {
        snprintf(err, errlen, "no configuration given");
        return AIR_E_INVAL;
    }
    struct air__gw *gw = air__calloc(1, sizeof *gw);
    if (gw == NULL)
        return AIR_E_NOMEM;
    gw->watch_ep = gw->watch_wake = -1;
    pthread_rwlock_init(&gw->conf_lock, NULL);
    pthread_mutex_init(&gw->ctl_mu, NULL);
    gw->started = time(NULL);
    gw->metrics = air__gw_metrics_new();
    if (o->config_path != NULL)
        gw->config_path = air__strdup(o->config_path);
    if (gw->metrics == NULL || (o->config_path != NULL && gw->config_path == NULL)) {
        gw_free(gw);
        return AIR_E_NOMEM;
    }
    char *text = o->config_text != NULL ? air__strdup(o->config_text)
                                        : read_file(o->config_path, err, errlen);
    if (text == NULL) {
        gw_free(gw);
        return err[0] ? AIR_E_CONFIG : AIR_E_NOMEM;
    }
    struct air__gw_conf *c = NULL;
    if (o->log_level != NULL && (gw->log_level = air__strdup(o->log_level)) == NULL) {
        air__free(text);
        gw_free(gw);
        return AIR_E_NOMEM;
    }
    air_status_t st = air__gw_conf_parse_ex(text, strlen(text), gw->log_level, &c, err, errlen);
    air__free(text);
    if (st != AIR_OK) {
        gw_free(gw);
        return st;
    }
    gw->conf = c;
    if (attach_states(gw, c) != 0) {
        gw_free(gw);
        return AIR_E_NOMEM;
    }
    struct air__gw_addr listen = c->listen, alisten = c->admin_listen;
    snprintf(gw->listen_text, sizeof gw->listen_text, "%s", c->listen.text);
    snprintf(gw->admin_listen_text, sizeof gw->admin_listen_text, "%s", c->admin_listen.text);
    gw->admin_enabled_at_start = c->admin_enabled;
    gw->max_conn_at_start = c->max_connections;
    gw->client_to_at_start = c->client_timeout_ms;
    gw->http_mode_at_start = c->http_mode;
    if (o->listen != NULL && air__gw_addr_parse(o->listen, &listen) != 0) {
        snprintf(err, errlen, "--listen %s: expected host:port with an IP address", o->listen);
        gw_free(gw);
        return AIR_E_CONFIG;
    }
    if (o->admin_listen != NULL && air__gw_addr_parse(o->admin_listen, &alisten) != 0) {
        snprintf(err, errlen, "--admin-listen %s: expected host:port with an IP address",
                 o->admin_listen);
        gw_free(gw);
        return AIR_E_CONFIG;
    }
    if (!c->invalid && loopback_check(c, &listen, err, errlen) != 0) {
        gw_free(gw);
        return AIR_E_CONFIG;
    }
    st = air_new(c->engine_json, &gw->r, err, errlen);
    if (st != AIR_OK) {
        gw_free(gw);
        return st;
    }
    if (c->invalid) { /* the engine accepted what cJSON did not */
        snprintf(err, errlen, "(top level): expected a JSON object");
        air_free(gw->r, 0);
        gw_free(gw);
        return AIR_E_CONFIG;
    }
    gw->watch_ep = epoll_create1(EPOLL_CLOEXEC);
    gw->watch_wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (gw->watch_ep >= 0 && gw->watch_wake >= 0) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0};
        if (epoll_ctl(gw->watch_ep, EPOLL_CTL_ADD, gw->watch_wake, &ev) == 0 &&
            pthread_create(&gw->watch_thr, NULL, watch_main, gw) == 0)
            gw->watch_running = 1;
    }
    if (!gw->watch_running) {
        snprintf(err, errlen, "cannot start the hang-up watcher: %s", strerror(errno));
        air_free(gw->r, 0);
        gw_free(gw);
        return AIR_E_NOMEM;
    }
    uint32_t threads = o->threads;
    if (threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 && n < 256 ? (uint32_t)n : 1;
    }
    int mode = o->http_mode != AIR_GW_HTTP_DEFAULT ? o->http_mode : c->http_mode;
    if (mode == AIR_GW_HTTP_WORKERS) {
        threads = air_workers(gw->r);
        if (start_loop_daemons(gw, &listen, c) != 0) {
            int e = errno;
            stop_loop_daemons(gw);
            stop_listeners(gw);
            errno = e;
        }
    } else {
        gw->d = start_daemon(gw, &listen, threads, c);
    }
    if (gw->d == NULL) {
        snprintf(err, errlen, "listen %s: cannot start the HTTP listener: %s", listen.text,
                 strerror(errno));
        air_free(gw->r, 0);
        gw_free(gw);
        return AIR_E_TRANSPORT;
    }
    gw->port = bound_port(gw->d);
    if (c->admin_enabled && air__gw_admin_start(gw, &alisten, err, errlen) != 0) {
        stop_loop_daemons(gw);
        stop_listeners(gw);
        air_free(gw->r, 0);
        gw_free(gw);
        return AIR_E_TRANSPORT;
    }
    if (!o->quiet) {
        fprintf(stderr, "airouter serve: listening on %s, port %u (%u HTTP threads, %s)\n",
                listen.text, (unsigned)gw->port, threads,
                gw->ndl > 0 ? "the engine's workers" : "a pool of their own");
        if (c->nkeys == 0)
            fprintf(stderr, "airouter serve: no client keys configured: the gateway is "
                            "UNAUTHENTICATED and serves on loopback only\n");
        else
            fprintf(stderr, "airouter serve: %zu client key(s) configured\n", c->nkeys);
        if (gw->admin != NULL)
            fprintf(stderr, "airouter serve: admin API on port %u (token from $%s)\n",
                    (unsigned)gw->admin_port, c->admin_token_env);
        else
            fprintf(stderr, "airouter serve: admin API disabled (set admin.token_env to "
                            "enable it)\n");
    }
    *out = gw;
    return AIR_OK;
}

uint16_t
air__gw_port(const struct air__gw *gw)
{
    return gw->port;
}

uint16_t
air__gw_admin_port(const struct air__gw *gw)
{
    return gw->admin != NULL ? gw->admin_port : 0;
}

air_t *
air__gw_engine(struct air__gw *gw)
{
    return gw->r;
}

long
air__gw_inflight(struct air__gw *gw)
{
    return atomic_load_explicit(&gw->inflight, memory_order_acquire);
}

air_status_t
air__gw_reload(struct air__gw *gw, const char *text, char *err, size_t errlen)
{
    char dummy[8];
    if (err == NULL || errlen == 0) {
        err = dummy;
        errlen = sizeof dummy;
    }
    err[0] = '\0';
    pthread_mutex_lock(&gw->ctl_mu);
    air_status_t st = AIR_E_CONFIG;
    char *owned = NULL;
    struct air__gw_conf *c = NULL;
    if (text == NULL) {
        if (gw->config_path == NULL) {
            snprintf(err, errlen, "no configuration file to re-read (started from text)");
            goto out;
        }
        owned = read_file(gw->config_path, err, errlen);
        if (owned == NULL)
            goto out;
        text = owned;
    }
    st = air__gw_conf_parse_ex(text, strlen(text), gw->log_level, &c, err, errlen);
    if (st != AIR_OK)
        goto out;
    if (c->invalid) {
        st = air_reload(gw->r, c->engine_json, err, errlen);
        if (st == AIR_OK || err[0] == '\0')
            snprintf(err, errlen, "(top level): expected a JSON object");
        st = AIR_E_CONFIG;
        goto out;
    }
    st = AIR_E_CONFIG;
    if (strcmp(c->listen.text, gw->listen_text) != 0) {
        snprintf(err, errlen, "listen: cannot change at run time (restart the gateway)");
        goto out;
    }
    if (strcmp(c->admin_listen.text, gw->admin_listen_text) != 0) {
        snprintf(err, errlen, "admin.listen: cannot change at run time (restart the gateway)");
        goto out;
    }
    if (c->admin_enabled != gw->admin_enabled_at_start) {
        snprintf(err, errlen,
                 "admin.token_env: the admin API cannot be turned on or off at run time "
                 "(restart the gateway)");
        goto out;
    }
    if (c->max_connections != gw->max_conn_at_start) {
        snprintf(err, errlen, "max_connections: cannot change at run time (restart the gateway)");
        goto out;
    }
    if (c->client_timeout_ms != gw->client_to_at_start) {
        snprintf(err, errlen, "client_timeout_ms: cannot change at run time (restart the gateway)");
        goto out;
    }
    if (c->http_mode != gw->http_mode_at_start) {
        snprintf(err, errlen, "http_mode: cannot change at run time (restart the gateway)");
        goto out;
    }
    {
        /* The listener's actual address: refuse to drop all keys while
         * listening beyond loopback. */
        struct air__gw_addr cur;
        if (air__gw_addr_parse(gw->listen_text, &cur) == 0 &&
            loopback_check(c, &cur, err, errlen) != 0)
            goto out;
    }
    if (attach_states(gw, c) != 0) {
        st = AIR_E_NOMEM;
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    st = air_reload(gw->r, c->engine_json, err, errlen);
    if (st != AIR_OK)
        goto out;
    pthread_rwlock_wrlock(&gw->conf_lock);
    struct air__gw_conf *old = gw->conf;
    gw->conf = c;
    pthread_rwlock_unlock(&gw->conf_lock);
    c = NULL;
    air__gw_conf_unref(old);
    prune_registry(gw, gw->conf);
out:
    if (c != NULL) {
        air__gw_conf_unref(c);
        prune_registry(gw, gw->conf);
    }
    air__free(owned);
    atomic_fetch_add_explicit(st == AIR_OK ? &gw->reloads_ok : &gw->reloads_failed, 1,
                              memory_order_relaxed);
    pthread_mutex_unlock(&gw->ctl_mu);
    return st;
}

static void
sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

void
air__gw_stop(struct air__gw *gw, uint32_t drain_ms)
{
    if (gw == NULL)
        return;
    uint64_t deadline = now_us() + (uint64_t)drain_ms * 1000u;
    /* Stop accepting: from here on_accept closes every new connection at
     * once, and requests on kept-alive connections get 503 "shutdown".
     * MHD_quiesce_daemon is not used: in libmicrohttpd 0.9.75 it races with
     * the epoll worker threads, which remove the listening socket from their
     * epoll sets themselves, and the loser of that race aborts the process
     * ("Failed to remove listen FD from epoll set"). The listening socket
     * closes in MHD_stop_daemon below. */
    atomic_store_explicit(&gw->draining, 1, memory_order_relaxed);
    if (gw->admin != NULL) {
        MHD_stop_daemon(gw->admin);
        gw->admin = NULL;
    }
    /* Drain: requests in flight finish on their own until the deadline. */
    while (atomic_load_explicit(&gw->inflight, memory_order_acquire) > 0 && now_us() < deadline)
        sleep_ms(5);
    uint64_t now = now_us();
    uint32_t left = deadline > now ? (uint32_t)((deadline - now) / 1000u) : 0;
    /* The watcher uses the engine: stop it first. */
    uint64_t one = 1;
    ssize_t w = write(gw->watch_wake, &one, sizeof one);
    (void)w;
    pthread_join(gw->watch_thr, NULL);
    gw->watch_running = 0;
    /* Every accepted request completes (with "shutdown" past the deadline),
     * so every suspended connection has been resumed when this returns. */
    /* Loop mode: the workers stop running the listeners; this thread runs
     * them from here on. */
    stop_loop_daemons(gw);
    air_free(gw->r, left);
    gw->r = NULL;
    /* Let the resumed connections send their last bytes (bounded). */
    uint64_t until = now_us() + 1000000u;
    while (atomic_load_explicit(&gw->inflight, memory_order_acquire) > 0 && now_us() < until) {
        for (uint32_t i = 0; i < gw->ndl; i++)
            MHD_run(gw->dl[i]);
        sleep_ms(gw->ndl ? 1 : 5);
    }
    stop_listeners(gw);
    gw_free(gw);
}
