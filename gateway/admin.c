/*
 * admin.c - the admin API: its own listener (loopback by default), every
 * call behind the bearer token named by admin.token_env.
 *
 *   GET  /admin/config          effective configuration, secrets redacted
 *   GET  /admin/stats           engine stats plus the gateway's own
 *   GET  /admin/ctl             every tunable (path, type, range, mode, value)
 *   GET  /admin/ctl/{path}      one tunable's value
 *   PUT  /admin/ctl/{path}      set it (body: the JSON value)
 *   POST /admin/explain         how a chat body would be routed
 *   POST /admin/reload          re-read the config file (or take the body)
 *   GET  /metrics, GET /healthz as on the API listener
 *
 * DESIGN: control-plane calls are quick and rare, so this listener has one
 * internal thread and answers synchronously; it never suspends. The token is
 * kept as a SHA-256 digest and compared digest to digest in constant time.
 */
#include "gwint.h"

#include "alloc.h"

#include <cjson/cJSON.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

struct areq {
    air_buf_t body;
    int too_big;
};

static enum MHD_Result
aerror(struct MHD_Connection *c, unsigned status, const char *type, const char *msg,
       const char *code, const char *allow)
{
    air_buf_t b = AIR_BUF_INIT;
    air__gw_error_body(&b, msg, type, NULL, code);
    const char *hdrs[] = {MHD_HTTP_HEADER_ALLOW, allow, NULL};
    enum MHD_Result rc =
        b.oom ? MHD_NO : air__gw_respond(c, status, "application/json", b.data, b.len, hdrs);
    air__buf_free(&b);
    return rc;
}

static enum MHD_Result
ajson(struct MHD_Connection *c, unsigned status, const char *body)
{
    return air__gw_respond(c, status, "application/json", body, strlen(body), NULL);
}

/* Respond with a cJSON document (consumed). */
static enum MHD_Result
ajson_doc(struct MHD_Connection *c, cJSON *doc)
{
    char *s = doc != NULL ? cJSON_PrintUnformatted(doc) : NULL;
    cJSON_Delete(doc);
    if (s == NULL)
        return aerror(c, 500, "upstream", "out of memory", NULL, NULL);
    enum MHD_Result rc = ajson(c, 200, s);
    cJSON_free(s);
    return rc;
}

static int
authorized(struct air__gw *gw, struct MHD_Connection *c)
{
    size_t n = 0;
    const char *tok = air__gw_bearer(
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION), &n);
    if (tok == NULL)
        return 0;
    uint8_t d[AIR_SHA256_LEN];
    air__sha256(tok, n, d);
    struct air__gw_conf *conf = air__gw_conf_get(gw);
    int ok = conf->admin_enabled && air__sha256_equal(d, conf->admin_digest);
    air__gw_conf_unref(conf);
    return ok;
}

static enum MHD_Result
get_config(struct air__gw *gw, struct MHD_Connection *c)
{
    char *eng = air_config_json(gw->r);
    cJSON *doc = eng != NULL ? cJSON_Parse(eng) : NULL;
    air__free(eng); /* malloc'd by the library: air__free is free() */
    if (!cJSON_IsObject(doc)) {
        cJSON_Delete(doc);
        doc = cJSON_CreateObject();
    }
    struct air__gw_conf *conf = air__gw_conf_get(gw);
    char *mine = air__gw_conf_json(conf);
    air__gw_conf_unref(conf);
    cJSON *g = mine != NULL ? cJSON_Parse(mine) : NULL;
    air__free(mine);
    if (doc == NULL || g == NULL) {
        cJSON_Delete(doc);
        cJSON_Delete(g);
        return aerror(c, 500, "upstream", "out of memory", NULL, NULL);
    }
    /* The gateway's keys sit at the top level, as in the file. */
    while (g->child != NULL) {
        cJSON *it = cJSON_DetachItemViaPointer(g, g->child);
        cJSON_DeleteItemFromObjectCaseSensitive(doc, it->string);
        cJSON_AddItemToObject(doc, it->string, it);
    }
    cJSON_Delete(g);
    return ajson_doc(c, doc);
}

static enum MHD_Result
get_stats(struct air__gw *gw, struct MHD_Connection *c)
{
    char *eng = air_stats_json(gw->r);
    cJSON *doc = eng != NULL ? cJSON_Parse(eng) : NULL;
    air__free(eng);
    if (!cJSON_IsObject(doc)) {
        cJSON_Delete(doc);
        doc = cJSON_CreateObject();
    }
    cJSON *g = cJSON_CreateObject();
    cJSON_AddNumberToObject(g, "in_flight",
                            (double)atomic_load_explicit(&gw->inflight, memory_order_relaxed));
    cJSON_AddNumberToObject(g, "client_disconnects",
                            (double)atomic_load_explicit(&gw->disconnects, memory_order_relaxed));
    cJSON_AddNumberToObject(g, "reloads_ok",
                            (double)atomic_load_explicit(&gw->reloads_ok, memory_order_relaxed));
    cJSON_AddNumberToObject(
        g, "reloads_failed",
        (double)atomic_load_explicit(&gw->reloads_failed, memory_order_relaxed));
    cJSON *keys = cJSON_AddArrayToObject(g, "keys");
    struct air__gw_conf *conf = air__gw_conf_get(gw);
    for (size_t i = 0; i < conf->nkeys; i++) {
        struct air__gw_keystate *s = conf->keys[i].st;
        cJSON *k = cJSON_CreateObject();
        cJSON_AddStringToObject(k, "name", conf->keys[i].name);
        if (s != NULL) {
            pthread_mutex_lock(&s->mu);
            cJSON_AddNumberToObject(k, "admitted", (double)s->admitted);
            cJSON_AddNumberToObject(k, "rejected", (double)s->rejected);
            cJSON_AddNumberToObject(k, "spent_usd", s->spent_usd);
            cJSON_AddNumberToObject(k, "reserved_usd", s->reserved_usd);
            pthread_mutex_unlock(&s->mu);
        }
        cJSON_AddItemToArray(keys, k);
    }
    air__gw_conf_unref(conf);
    cJSON_AddItemToObject(doc, "gateway", g);
    return ajson_doc(c, doc);
}

static enum MHD_Result
ctl_error(struct MHD_Connection *c, air_status_t st, const char *msg)
{
    switch (st) {
    case AIR_E_NONAME:
        return aerror(c, 404, "not_found", msg, "unknown_path", NULL);
    case AIR_E_READONLY:
        return aerror(c, 409, "invalid_request", msg, "read_only", NULL);
    case AIR_E_RANGE:
        return aerror(c, 400, "invalid_request", msg, "out_of_range", NULL);
    case AIR_E_INVAL:
        return aerror(c, 400, "invalid_request", msg, "invalid_value", NULL);
    case AIR_E_CONFIG:
        return aerror(c, 400, "invalid_request", msg, "invalid_config", NULL);
    case AIR_E_NOMEM:
        return aerror(c, 500, "upstream", "out of memory", NULL, NULL);
    default:
        return aerror(c, 500, "upstream", msg, NULL, NULL);
    }
}

static enum MHD_Result
ctl_get(struct air__gw *gw, struct MHD_Connection *c, const char *path)
{
    char *v = NULL;
    air_status_t st = air_ctl_get(gw->r, path, &v);
    if (st != AIR_OK) {
        char msg[300];
        snprintf(msg, sizeof msg, "%.200s: %s", path, air_strerror(st));
        return ctl_error(c, st, msg);
    }
    air_buf_t b = AIR_BUF_INIT;
    air__buf_puts(&b, "{\"path\":");
    air__buf_json_str(&b, path, strlen(path));
    air__buf_puts(&b, ",\"value\":");
    air__buf_puts(&b, v != NULL ? v : "null");
    air__buf_putc(&b, '}');
    air__free(v);
    enum MHD_Result rc = b.oom ? MHD_NO : ajson(c, 200, b.data);
    air__buf_free(&b);
    return rc;
}

static enum MHD_Result
ctl_put(struct air__gw *gw, struct MHD_Connection *c, const char *path, struct areq *a)
{
    const char *val = a->body.data != NULL ? a->body.data : "";
    cJSON *j = cJSON_ParseWithLength(val, a->body.len);
    if (j == NULL)
        return aerror(c, 400, "invalid_request",
                      "the body must be one JSON value (e.g. 0.5, true, \"lowest-latency\")",
                      "invalid_value", NULL);
    cJSON_Delete(j);
    char err[512] = "";
    air_status_t st = air_ctl_set(gw->r, path, val, err, sizeof err);
    if (st != AIR_OK) {
        if (err[0] == '\0')
            snprintf(err, sizeof err, "%.200s: %s", path, air_strerror(st));
        return ctl_error(c, st, err);
    }
    return ctl_get(gw, c, path);
}

static enum MHD_Result
explain(struct air__gw *gw, struct MHD_Connection *c, struct areq *a)
{
    char err[512] = "";
    const char *body = a->body.data != NULL ? a->body.data : "";
    char *out = air_explain(gw->r, body, a->body.len, err, sizeof err);
    if (out == NULL)
        return aerror(c, 400, "invalid_request", err[0] ? err : "cannot explain this request", NULL,
                      NULL);
    enum MHD_Result rc = ajson(c, 200, out);
    air__free(out);
    return rc;
}

static enum MHD_Result
reload(struct air__gw *gw, struct MHD_Connection *c, struct areq *a)
{
    char err[512] = "";
    const char *text = a->body.len > 0 ? a->body.data : NULL;
    air_status_t st = air__gw_reload(gw, text, err, sizeof err);
    if (st != AIR_OK)
        return ctl_error(c, st == AIR_E_READONLY ? AIR_E_READONLY : AIR_E_CONFIG,
                         err[0] ? err : air_strerror(st));
    return ajson(c, 200, "{\"status\":\"reloaded\"}");
}

static enum MHD_Result
dispatch(struct air__gw *gw, struct MHD_Connection *c, const char *url, const char *method,
         struct areq *a)
{
    int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    int put = strcmp(method, "PUT") == 0, post = strcmp(method, "POST") == 0;
    if (strcmp(url, "/healthz") == 0)
        return get ? ajson(c, 200, "{\"status\":\"ok\"}")
                   : aerror(c, 405, "invalid_request", "use GET", "method_not_allowed",
                            "GET, HEAD");
    if (!authorized(gw, c))
        return aerror(c, 401, "auth",
                      "Missing or invalid admin token: send \"Authorization: Bearer <token>\"",
                      "invalid_api_key", NULL);
    if (a->too_big)
        return aerror(c, 413, "invalid_request", "request body too large", "body_too_large", NULL);
    if (strcmp(url, "/metrics") == 0) {
        if (!get)
            return aerror(c, 405, "invalid_request", "use GET", "method_not_allowed", "GET, HEAD");
        air_buf_t b = AIR_BUF_INIT;
        air__gw_metrics_text(gw, &b);
        enum MHD_Result rc =
            b.oom ? MHD_NO
                  : air__gw_respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", b.data,
                                    b.len, NULL);
        air__buf_free(&b);
        return rc;
    }
    if (strcmp(url, "/admin/config") == 0 || strcmp(url, "/admin/stats") == 0 ||
        strcmp(url, "/admin/ctl") == 0) {
        if (!get)
            return aerror(c, 405, "invalid_request", "use GET", "method_not_allowed", "GET, HEAD");
        if (url[7] == 'c' && url[8] == 'o')
            return get_config(gw, c);
        if (url[7] == 's')
            return get_stats(gw, c);
        char *list = air_ctl_list(gw->r);
        if (list == NULL)
            return aerror(c, 500, "upstream", "out of memory", NULL, NULL);
        enum MHD_Result rc = ajson(c, 200, list);
        air__free(list);
        return rc;
    }
    if (strncmp(url, "/admin/ctl/", 11) == 0 && url[11] != '\0') {
        if (get)
            return ctl_get(gw, c, url + 11);
        if (put)
            return ctl_put(gw, c, url + 11, a);
        return aerror(c, 405, "invalid_request", "use GET or PUT", "method_not_allowed",
                      "GET, HEAD, PUT");
    }
    if (strcmp(url, "/admin/explain") == 0 || strcmp(url, "/admin/reload") == 0) {
        if (!post)
            return aerror(c, 405, "invalid_request", "use POST", "method_not_allowed", "POST");
        return url[7] == 'e' ? explain(gw, c, a) : reload(gw, c, a);
    }
    char msg[200];
    snprintf(msg, sizeof msg, "Unknown admin path %.120s", url);
    return aerror(c, 404, "not_found", msg, "unknown_path", NULL);
}

static enum MHD_Result
on_admin(void *cls, struct MHD_Connection *c, const char *url, const char *method,
         const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    struct air__gw *gw = cls;
    struct areq *a = *con_cls;
    (void)version;
    if (a == NULL) {
        a = air__calloc(1, sizeof *a);
        if (a == NULL)
            return MHD_NO;
        *con_cls = a;
        return MHD_YES;
    }
    if (*upload_size > 0) {
        struct air__gw_conf *conf = air__gw_conf_get(gw);
        uint64_t max = conf->max_body_bytes;
        air__gw_conf_unref(conf);
        if (a->body.len + *upload_size > max) {
            a->too_big = 1;
            air__buf_free(&a->body);
        } else if (!a->too_big) {
            air__buf_append(&a->body, upload, *upload_size);
            if (a->body.oom)
                return MHD_NO;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    return dispatch(gw, c, url, method, a);
}

static void
on_admin_done(void *cls, struct MHD_Connection *c, void **con_cls,
              enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    struct areq *a = *con_cls;
    if (a == NULL)
        return;
    air__buf_free(&a->body);
    air__free(a);
    *con_cls = NULL;
}

int
air__gw_admin_start(struct air__gw *gw, const struct air__gw_addr *addr, char *err, size_t errlen)
{
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL;
    if (addr->sa.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    gw->admin = MHD_start_daemon(flags, 0, NULL, NULL, on_admin, gw, MHD_OPTION_SOCK_ADDR,
                                 (const struct sockaddr *)&addr->sa, MHD_OPTION_NOTIFY_COMPLETED,
                                 on_admin_done, gw, MHD_OPTION_CONNECTION_LIMIT, 64u,
                                 MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_END);
    if (gw->admin == NULL) {
        snprintf(err, errlen, "admin.listen %s: cannot start the admin listener: %s", addr->text,
                 strerror(errno));
        return -1;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(gw->admin, MHD_DAEMON_INFO_BIND_PORT);
    gw->admin_port = di != NULL ? di->port : 0;
    return 0;
}
