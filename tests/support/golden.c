/*
 * golden.c - generic golden wire-test runner for provider adapters.
 *
 * DESIGN: curl's tests/data idea applied to pure translators. A case is a
 * directory of canned files; the runner builds the exact inputs core would
 * build (air_provider_cfg_t, air_req_view_t, air_http_in_t, an SSE parser
 * feeding air_stream_ctx_t), calls the adapter, and compares what comes out
 * with the expected files. Streams are fed three ways (whole body, one byte
 * at a time, 7-byte pieces) and must give identical results, which proves
 * the adapter's translation is incremental and keeps no pointer into an
 * event after returning. Failures are collected per case (first reason
 * wins) so one broken case never hides the others. Format:
 * tests/providers/data/README.md.
 */
#include "golden.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <dirent.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "alloc.h"
#include "buf.h"
#include "common.h"
#include "sse.h"

#define SSE_MAX_EVENT  (1u << 20)
#define MAX_REPLY_HDRS 64
#define DEFAULT_NOW    1760000000LL
#define DEFAULT_REQ_ID "air-test-1"

/* ------------------------------------------------------------------------ */
/* Names (local tables, so the runner needs nothing from core)               */

static const char *
class_name(air_errclass_t c)
{
    switch (c) {
#define X(name, num, str)                                                                          \
    case AIR_ERR_##name:                                                                           \
        return str;
        AIR_ERRCLASS_MAP(X)
#undef X
    default:
        return "?";
    }
}

static const char *
status_name(air_status_t s)
{
    switch (s) {
#define X(name, num, str)                                                                          \
    case AIR_##name:                                                                               \
        return "AIR_" #name;
        AIR_STATUS_MAP(X)
#undef X
    default:
        return "?";
    }
}

/* ------------------------------------------------------------------------ */
/* Files                                                                     */

char *
air_test_read_file(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL)
        return NULL;
    air_buf_t b = AIR_BUF_INIT;
    char tmp[4096];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, fp)) > 0)
        air__buf_append(&b, tmp, n);
    fclose(fp);
    return air__buf_steal(&b, len);
}

char *
air_test_data_path(const char *rel)
{
    const char *root = getenv("AIR_TEST_DATA");
    air_buf_t b = AIR_BUF_INIT;
    air__buf_puts(&b, root != NULL && root[0] ? root : "tests");
    air__buf_putc(&b, '/');
    air__buf_puts(&b, rel);
    return air__buf_steal(&b, NULL);
}

static char *
join(const char *dir, const char *name)
{
    air_buf_t b = AIR_BUF_INIT;
    air__buf_puts(&b, dir);
    air__buf_putc(&b, '/');
    air__buf_puts(&b, name);
    return air__buf_steal(&b, NULL);
}

static char *
read_in(const char *dir, const char *name, size_t *len)
{
    char *p = join(dir, name);
    if (p == NULL)
        return NULL;
    char *s = air_test_read_file(p, len);
    air__free(p);
    return s;
}

/* ------------------------------------------------------------------------ */
/* One case                                                                  */

struct chunk {
    char *json;
    size_t len;
    unsigned flags;
};

struct chunk_list {
    struct chunk *v;
    size_t n, cap;
    int oom;
};

struct reply {
    char *buf; /* the file; names/values/body point into it */
    int status;
    const char *names[MAX_REPLY_HDRS];
    const char *values[MAX_REPLY_HDRS];
    size_t n;
    const char *body;
    size_t body_len;
};

struct gcase {
    const air_provider_ops_t *ops;
    const char *dir;
    char *err;
    size_t errlen;
    int failed;
    const char *api_key; /* what init got (AIR_TEST_GOLDEN_KEY unless meta says) */
    air_req_view_t req;
};

/* What one adapter call produced, in a form check_expect understands. */
struct outcome {
    const char *result; /* "ok", "done", "error" */
    air_status_t status;
    const char *body; /* decoded body or NULL */
    const struct chunk_list *chunks;
    const air_usage_t *usage;
    const char *model;
    const char *finish_reason;
    const air_fault_t *fault;
};

static int failf(struct gcase *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Record the first failure of a case; always returns -1. */
static int
failf(struct gcase *c, const char *fmt, ...)
{
    if (!c->failed && c->errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err, c->errlen, fmt, ap);
        va_end(ap);
    }
    c->failed = 1;
    return -1;
}

static char *
json_text(const cJSON *j)
{
    return j ? cJSON_PrintUnformatted(j) : NULL;
}

/* JSON-compare two values; on mismatch record both renderings. */
static int
json_equal(struct gcase *c, const char *what, const cJSON *exp, const cJSON *act)
{
    if (cJSON_Compare(exp, act, 1))
        return 0;
    char *e = json_text(exp), *a = json_text(act);
    failf(c, "%s differs\n  expected: %s\n  actual:   %s", what, e ? e : "(null)",
          a ? a : "(null)");
    cJSON_free(e);
    cJSON_free(a);
    return -1;
}

/* Load and parse an optional JSON file: 0 when absent (*out NULL), -1 when
 * present but not valid JSON. */
static int
load_json(struct gcase *c, const char *name, cJSON **out)
{
    *out = NULL;
    size_t len;
    char *s = read_in(c->dir, name, &len);
    if (s == NULL)
        return 0;
    *out = cJSON_ParseWithLength(s, len);
    air__free(s);
    if (*out == NULL)
        return failf(c, "%s: not valid JSON", name);
    return 0;
}

/* Replace every %API_KEY% in s[0..n) by the key; owned result. */
static char *
subst_key(const char *s, size_t n, const char *key, size_t *outlen)
{
    static const char tok[] = "%API_KEY%";
    const size_t tl = sizeof tok - 1;
    air_buf_t b = AIR_BUF_INIT;
    size_t i = 0;
    while (i < n) {
        if (n - i >= tl && memcmp(s + i, tok, tl) == 0) {
            air__buf_puts(&b, key ? key : "");
            i += tl;
        } else {
            air__buf_putc(&b, s[i++]);
        }
    }
    return air__buf_steal(&b, outlen);
}

/* Next line of a text buffer: returns its start, sets *len (without '\r\n'
 * or '\n') and advances *pos past the line end. NULL at the end. */
static const char *
next_line(const char *s, size_t n, size_t *pos, size_t *len)
{
    if (*pos >= n)
        return NULL;
    const char *start = s + *pos;
    const char *nl = memchr(start, '\n', n - *pos);
    size_t l = nl ? (size_t)(nl - start) : n - *pos;
    *pos += l + (nl ? 1 : 0);
    if (l > 0 && start[l - 1] == '\r')
        l--;
    *len = l;
    return start;
}

/* ---- request ----------------------------------------------------------- */

static int
check_request(struct gcase *c, const air_http_out_t *out, const char *exp_raw, size_t exp_len)
{
    size_t pos = 0, len;
    const char *line = next_line(exp_raw, exp_len, &pos, &len);
    if (line == NULL || len < 6 || memcmp(line, "POST ", 5) != 0)
        return failf(c, "expect-request.http: first line must be 'POST <url>'");
    int rc = -1;
    char *url = subst_key(line + 5, len - 5, c->api_key, NULL);
    if (url == NULL)
        return failf(c, "out of memory");
    if (out->url == NULL || strcmp(out->url, url) != 0) {
        failf(c, "URL differs\n  expected: %s\n  actual:   %s", url,
              out->url ? out->url : "(null)");
        goto done;
    }
    int passthrough = 0;
    size_t nh = 0;
    while ((line = next_line(exp_raw, exp_len, &pos, &len)) != NULL && len > 0) {
        if (line[0] == '#') {
            if (len == 13 && memcmp(line, "# passthrough", 13) == 0) {
                passthrough = 1;
                continue;
            }
            failf(c, "expect-request.http: unknown directive '%.*s'", (int)len, line);
            goto done;
        }
        char *h = subst_key(line, len, c->api_key, NULL);
        if (h == NULL) {
            failf(c, "out of memory");
            goto done;
        }
        if (nh >= out->nheaders) {
            failf(c, "header %zu missing: expected '%s'", nh, h);
            air__free(h);
            goto done;
        }
        int same = out->headers[nh] != NULL && strcmp(out->headers[nh], h) == 0;
        if (!same)
            failf(c, "header %zu differs\n  expected: %s\n  actual:   %s", nh, h,
                  out->headers[nh] ? out->headers[nh] : "(null)");
        air__free(h);
        if (!same)
            goto done;
        nh++;
    }
    if (nh != out->nheaders) {
        failf(c, "adapter emitted %zu headers, expected %zu (extra: '%s')", out->nheaders, nh,
              out->headers[nh] ? out->headers[nh] : "(null)");
        goto done;
    }

    /* Body. */
    const char *act = out->body_ref ? out->body_ref : out->body;
    if (out->body_ref != NULL) {
        if (out->body != NULL) {
            failf(c, "both body and body_ref set");
            goto done;
        }
        const char *lo = c->req.raw, *hi = c->req.raw + c->req.raw_len;
        if (out->body_ref < lo || out->body_ref + out->body_len > hi) {
            failf(c, "body_ref does not borrow the request's raw bytes");
            goto done;
        }
    } else if (act == NULL) {
        failf(c, "no body");
        goto done;
    } else if (act[out->body_len] != '\0' || strlen(act) != out->body_len) {
        failf(c, "body is not NUL-terminated at body_len (%zu)", out->body_len);
        goto done;
    }
    if (passthrough) {
        if (out->body_ref != c->req.raw || out->body_len != c->req.raw_len) {
            failf(c, "expected passthrough (body_ref = input.json bytes), adapter %s",
                  out->body_ref ? "borrowed a sub-range" : "built a new body");
            goto done;
        }
        rc = 0;
        goto done;
    }
    size_t blen;
    char *body = subst_key(exp_raw + pos, exp_len - pos, c->api_key, &blen);
    if (body == NULL) {
        failf(c, "out of memory");
        goto done;
    }
    cJSON *ej = cJSON_ParseWithLength(body, blen);
    if (ej != NULL) {
        cJSON *aj = cJSON_ParseWithLength(act, out->body_len);
        if (aj == NULL)
            failf(c, "request body is not JSON: %.*s", (int)out->body_len, act);
        else
            rc = json_equal(c, "request body", ej, aj);
        cJSON_Delete(aj);
        cJSON_Delete(ej);
    } else {
        if (blen > 0 && body[blen - 1] == '\n')
            blen--;
        if (blen > 0 && body[blen - 1] == '\r')
            blen--;
        if (blen != out->body_len || memcmp(body, act, blen) != 0)
            failf(c, "request body differs (bytes)\n  expected: %.*s\n  actual:   %.*s", (int)blen,
                  body, (int)out->body_len, act);
        else
            rc = 0;
    }
    air__free(body);
done:
    air__free(url);
    return rc;
}

/* ---- reply ------------------------------------------------------------- */

static const char *
reply_header(const void *hctx, const char *name)
{
    const struct reply *r = hctx;
    for (size_t i = 0; i < r->n; i++)
        if (strcasecmp(r->names[i], name) == 0)
            return r->values[i];
    return NULL;
}

static int
parse_reply(struct gcase *c, struct reply *r)
{
    size_t n;
    r->buf = read_in(c->dir, "reply.http", &n);
    if (r->buf == NULL)
        return 0;
    size_t pos = 0, len;
    char *line = (char *)next_line(r->buf, n, &pos, &len);
    int status = 0;
    if (line == NULL || len < 12 || strncmp(line, "HTTP/", 5) != 0)
        return failf(c, "reply.http: first line must be 'HTTP/1.1 <status> <text>'");
    const char *sp = memchr(line, ' ', len);
    if (sp == NULL || sscanf(sp + 1, "%3d", &status) != 1 || status < 100 || status > 599)
        return failf(c, "reply.http: bad status line");
    r->status = status;
    while ((line = (char *)next_line(r->buf, n, &pos, &len)) != NULL && len > 0) {
        line[len] = '\0'; /* the line end is ours to overwrite: the body starts after it */
        char *colon = strchr(line, ':');
        if (colon == NULL || r->n >= MAX_REPLY_HDRS)
            return failf(c, "reply.http: bad header line '%s'", line);
        *colon = '\0';
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        char *e = v + strlen(v);
        while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
            *--e = '\0';
        r->names[r->n] = line;
        r->values[r->n] = v;
        r->n++;
    }
    r->body = r->buf + (pos < n ? pos : n);
    r->body_len = n - (pos < n ? pos : n);
    return 0;
}

static int
is_event_stream(const struct reply *r)
{
    const char *ct = reply_header(r, "content-type");
    return ct != NULL && strncasecmp(ct, "text/event-stream", 17) == 0;
}

/* ---- streaming --------------------------------------------------------- */

struct stream_run {
    const air_provider_ops_t *ops;
    const void *state;
    air_stream_ctx_t sc;
    struct chunk_list chunks;
    air_stream_rc_t rc;
    int sse_error;
};

static int
emit_cb(void *ud, const char *json, size_t len, unsigned flags)
{
    struct chunk_list *l = ud;
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 16;
        struct chunk *v = air__realloc(l->v, ncap * sizeof *v);
        if (v == NULL) {
            l->oom = 1;
            return 1;
        }
        l->v = v;
        l->cap = ncap;
    }
    char *copy = air__strndup(json, len);
    if (copy == NULL) {
        l->oom = 1;
        return 1;
    }
    l->v[l->n].json = copy;
    l->v[l->n].len = len;
    l->v[l->n].flags = flags;
    l->n++;
    return 0;
}

static void
chunks_free(struct chunk_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        air__free(l->v[i].json);
    air__free(l->v);
    memset(l, 0, sizeof *l);
}

static int
on_event(void *ud, const char *event, size_t event_len, const char *data, size_t data_len)
{
    struct stream_run *r = ud;
    r->rc = r->ops->stream_event(r->state, &r->sc, event, event_len, data, data_len);
    return r->rc != AIR_STREAM_MORE;
}

/* Feed body in pieces of `piece` bytes (0 = all at once), then finish the
 * way core does. */
static int
run_stream(struct gcase *c, const void *state, const struct reply *rep, size_t piece,
           struct stream_run *r)
{
    memset(r, 0, sizeof *r);
    r->ops = c->ops;
    r->state = state;
    r->rc = AIR_STREAM_MORE;
    r->sc.state = air__calloc(1, c->ops->stream_state_size ? c->ops->stream_state_size : 1);
    if (r->sc.state == NULL)
        return failf(c, "out of memory");
    r->sc.req = &c->req;
    r->sc.emit = emit_cb;
    r->sc.emit_ud = &r->chunks;
    r->sc.fault.retry_after_ms = -1;

    struct air__sse p;
    air__sse_init(&p, SSE_MAX_EVENT);
    size_t len = rep->body_len, step = piece ? piece : (len ? len : 1);
    for (size_t off = 0; off < len && r->rc == AIR_STREAM_MORE; off += step) {
        size_t n = len - off < step ? len - off : step;
        air_status_t st = air__sse_feed(&p, rep->body + off, n, on_event, r);
        if (st == AIR_E_CANCELLED)
            break;
        if (st != AIR_OK) {
            r->sse_error = 1;
            r->rc = AIR_STREAM_ERROR;
            r->sc.fault.cls = AIR_ERR_UPSTREAM;
            snprintf(r->sc.fault.message, sizeof r->sc.fault.message, "SSE parse error: %s",
                     status_name(st));
            break;
        }
    }
    if (r->rc == AIR_STREAM_MORE) {
        (void)air__sse_finish(&p);
        if (c->ops->stream_end != NULL) {
            r->rc = c->ops->stream_end(state, &r->sc);
        } else {
            r->rc = AIR_STREAM_ERROR;
            r->sc.fault.cls = AIR_ERR_UPSTREAM;
            snprintf(r->sc.fault.message, sizeof r->sc.fault.message, "stream ended early");
        }
    }
    air__sse_free(&p);
    air__free(r->sc.state);
    r->sc.state = NULL;
    if (r->chunks.oom)
        return failf(c, "out of memory collecting chunks");
    return 0;
}

static int
faults_equal(const air_fault_t *a, const air_fault_t *b)
{
    return a->cls == b->cls && a->http_status == b->http_status && a->retry == b->retry &&
           a->failover == b->failover && a->unusable == b->unusable &&
           a->retry_after_ms == b->retry_after_ms && strcmp(a->code, b->code) == 0 &&
           strcmp(a->type, b->type) == 0 && strcmp(a->message, b->message) == 0;
}

static int
usage_equal(const air_usage_t *a, const air_usage_t *b)
{
    return a->prompt == b->prompt && a->completion == b->completion && a->cached == b->cached &&
           a->cache_write == b->cache_write && a->reasoning == b->reasoning &&
           a->present == b->present;
}

/* Runs a and b must agree on everything. */
static int
same_runs(struct gcase *c, const char *how, const struct stream_run *a, const struct stream_run *b)
{
    if (a->rc != b->rc)
        return failf(c, "stream fed %s ended with rc %d, whole body with rc %d", how, b->rc, a->rc);
    if (a->chunks.n != b->chunks.n)
        return failf(c, "stream fed %s emitted %zu chunks, whole body %zu", how, b->chunks.n,
                     a->chunks.n);
    for (size_t i = 0; i < a->chunks.n; i++) {
        const struct chunk *x = &a->chunks.v[i], *y = &b->chunks.v[i];
        if (x->len != y->len || memcmp(x->json, y->json, x->len) != 0 || x->flags != y->flags)
            return failf(c, "stream fed %s: chunk %zu differs\n  whole: %s\n  %s: %s", how, i,
                         x->json, how, y->json);
    }
    if (!usage_equal(&a->sc.usage, &b->sc.usage))
        return failf(c, "stream fed %s: usage differs", how);
    if (strcmp(a->sc.model, b->sc.model) != 0 ||
        strcmp(a->sc.finish_reason, b->sc.finish_reason) != 0)
        return failf(c, "stream fed %s: model or finish_reason differs", how);
    if (a->rc == AIR_STREAM_ERROR && !faults_equal(&a->sc.fault, &b->sc.fault))
        return failf(c, "stream fed %s: fault differs", how);
    return 0;
}

/* ---- expectations ------------------------------------------------------ */

static int
check_str(struct gcase *c, const cJSON *exp, const char *key, const char *actual)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(exp, key);
    if (it == NULL)
        return 0;
    if (!cJSON_IsString(it))
        return failf(c, "expect-output.json: %s must be a string", key);
    if (actual == NULL || strcmp(it->valuestring, actual) != 0)
        return failf(c, "%s: expected \"%s\", got \"%s\"", key, it->valuestring,
                     actual ? actual : "(none)");
    return 0;
}

static int
check_num(struct gcase *c, const char *what, const cJSON *obj, const char *key, int64_t actual)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (it == NULL)
        return 0;
    if (!cJSON_IsNumber(it))
        return failf(c, "expect-output.json: %s.%s must be a number", what, key);
    if ((int64_t)it->valuedouble != actual)
        return failf(c, "%s.%s: expected %lld, got %lld", what, key, (long long)it->valuedouble,
                     (long long)actual);
    return 0;
}

static int
check_bool(struct gcase *c, const char *what, const cJSON *obj, const char *key, int actual)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (it == NULL)
        return 0;
    if (!cJSON_IsBool(it))
        return failf(c, "expect-output.json: %s.%s must be a boolean", what, key);
    if (cJSON_IsTrue(it) != (actual != 0))
        return failf(c, "%s.%s: expected %s, got %s", what, key,
                     cJSON_IsTrue(it) ? "true" : "false", actual ? "true" : "false");
    return 0;
}

static int
check_fault(struct gcase *c, const cJSON *exp, const air_fault_t *f)
{
    if (!cJSON_IsObject(exp))
        return failf(c, "expect-output.json: fault must be an object");
    if (f == NULL)
        return failf(c, "a fault was expected, but the adapter succeeded");
    const cJSON *cls = cJSON_GetObjectItemCaseSensitive(exp, "class");
    if (cls != NULL && (!cJSON_IsString(cls) || strcmp(cls->valuestring, class_name(f->cls)) != 0))
        return failf(c, "fault.class: expected %s, got %s (message: %s)",
                     cJSON_IsString(cls) ? cls->valuestring : "?", class_name(f->cls), f->message);
    if (check_num(c, "fault", exp, "http_status", f->http_status) ||
        check_bool(c, "fault", exp, "retry", f->retry) ||
        check_bool(c, "fault", exp, "failover", f->failover) ||
        check_bool(c, "fault", exp, "unusable", f->unusable) ||
        check_num(c, "fault", exp, "retry_after_ms", f->retry_after_ms))
        return -1;
    const cJSON *it;
    if ((it = cJSON_GetObjectItemCaseSensitive(exp, "code")) != NULL &&
        (!cJSON_IsString(it) || strcmp(it->valuestring, f->code) != 0))
        return failf(c, "fault.code: expected \"%s\", got \"%s\"",
                     cJSON_IsString(it) ? it->valuestring : "?", f->code);
    if ((it = cJSON_GetObjectItemCaseSensitive(exp, "type")) != NULL &&
        (!cJSON_IsString(it) || strcmp(it->valuestring, f->type) != 0))
        return failf(c, "fault.type: expected \"%s\", got \"%s\"",
                     cJSON_IsString(it) ? it->valuestring : "?", f->type);
    if ((it = cJSON_GetObjectItemCaseSensitive(exp, "message_contains")) != NULL &&
        (!cJSON_IsString(it) || strstr(f->message, it->valuestring) == NULL))
        return failf(c, "fault.message: expected to contain \"%s\", got \"%s\"",
                     cJSON_IsString(it) ? it->valuestring : "?", f->message);
    return 0;
}

static int
check_usage(struct gcase *c, const cJSON *exp, const air_usage_t *u)
{
    if (u == NULL)
        return failf(c, "usage expected, but this outcome has none");
    if (cJSON_IsNull(exp)) {
        if (u->present)
            return failf(c, "usage: expected none, got prompt=%llu", (unsigned long long)u->prompt);
        return 0;
    }
    if (!cJSON_IsObject(exp))
        return failf(c, "expect-output.json: usage must be an object or null");
    if (!u->present)
        return failf(c, "usage: expected usage, adapter reported none (present = 0)");
    return check_num(c, "usage", exp, "prompt", (int64_t)u->prompt) ||
                   check_num(c, "usage", exp, "completion", (int64_t)u->completion) ||
                   check_num(c, "usage", exp, "cached", (int64_t)u->cached) ||
                   check_num(c, "usage", exp, "cache_write", (int64_t)u->cache_write) ||
                   check_num(c, "usage", exp, "reasoning", (int64_t)u->reasoning)
               ? -1
               : 0;
}

static int
check_chunks(struct gcase *c, const cJSON *exp, const struct chunk_list *l)
{
    if (l == NULL)
        return failf(c, "chunks expected, but the reply was not a stream");
    if (!cJSON_IsArray(exp))
        return failf(c, "expect-output.json: chunks must be an array");
    size_t n = (size_t)cJSON_GetArraySize(exp);
    size_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, exp)
    {
        if (i >= l->n)
            return failf(c, "chunks: expected %zu, adapter emitted %zu", n, l->n);
        cJSON *a = cJSON_ParseWithLength(l->v[i].json, l->v[i].len);
        char what[32];
        snprintf(what, sizeof what, "chunk %zu", i);
        int rc = json_equal(c, what, e, a);
        cJSON_Delete(a);
        if (rc)
            return -1;
        i++;
    }
    if (n != l->n)
        return failf(c, "chunks: expected %zu, adapter emitted %zu (next: %s)", n, l->n,
                     l->v[n].json);
    return 0;
}

static int
check_flags(struct gcase *c, const cJSON *exp, const struct chunk_list *l)
{
    if (l == NULL)
        return failf(c, "content_flags expected, but the reply was not a stream");
    if (!cJSON_IsArray(exp))
        return failf(c, "expect-output.json: content_flags must be an array");
    size_t n = (size_t)cJSON_GetArraySize(exp);
    if (n != l->n)
        return failf(c, "content_flags: %zu listed, adapter emitted %zu chunks", n, l->n);
    size_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, exp)
    {
        int want = cJSON_IsNumber(e) ? e->valueint != 0 : cJSON_IsTrue(e);
        int got = (l->v[i].flags & AIR_CHUNK_CONTENT) != 0;
        if (want != got)
            return failf(c, "content_flags[%zu]: expected %d, got %d (chunk %s)", i, want, got,
                         l->v[i].json);
        i++;
    }
    return 0;
}

/* The API key must never leak into anything the adapter hands back. */
static int
check_no_secret(struct gcase *c, const struct outcome *o)
{
    const char *k = c->api_key;
    if (k == NULL || k[0] == '\0')
        return 0;
    if (o->fault &&
        (strstr(o->fault->message, k) || strstr(o->fault->code, k) || strstr(o->fault->type, k)))
        return failf(c, "the API key leaked into a fault");
    if (o->body && strstr(o->body, k))
        return failf(c, "the API key leaked into the decoded body");
    for (size_t i = 0; o->chunks && i < o->chunks->n; i++)
        if (strstr(o->chunks->v[i].json, k))
            return failf(c, "the API key leaked into chunk %zu", i);
    return 0;
}

static int
check_expect(struct gcase *c, const cJSON *exp, const struct outcome *o)
{
    if (check_no_secret(c, o))
        return -1;
    /* Every emitted chunk must be a JSON object, whatever the case checks. */
    for (size_t i = 0; o->chunks && i < o->chunks->n; i++) {
        cJSON *j = cJSON_ParseWithLength(o->chunks->v[i].json, o->chunks->v[i].len);
        int ok = cJSON_IsObject(j);
        cJSON_Delete(j);
        if (!ok)
            return failf(c, "chunk %zu is not a JSON object: %s", i, o->chunks->v[i].json);
    }
    if (exp == NULL)
        return 0;
    if (!cJSON_IsObject(exp))
        return failf(c, "expect-output.json must hold one object");
    static const char *const known[] = {
        "body",          "chunks", "content_flags", "result", "usage",
        "finish_reason", "model",  "fault",         "status", NULL};
    const cJSON *it;
    cJSON_ArrayForEach(it, exp)
    {
        size_t k = 0;
        while (known[k] && strcmp(known[k], it->string) != 0)
            k++;
        if (known[k] == NULL)
            return failf(c, "expect-output.json: unknown key \"%s\"", it->string);
    }
    if (check_str(c, exp, "result", o->result))
        return -1;
    if (check_str(c, exp, "status", status_name(o->status)))
        return -1;
    if ((it = cJSON_GetObjectItemCaseSensitive(exp, "body")) != NULL) {
        if (o->body == NULL)
            return failf(c, "body expected, but there is no decoded body (result %s, %s)",
                         o->result, o->fault ? o->fault->message : "");
        cJSON *a = cJSON_Parse(o->body);
        if (a == NULL)
            return failf(c, "decoded body is not JSON: %s", o->body);
        int rc = json_equal(c, "decoded body", it, a);
        cJSON_Delete(a);
        if (rc)
            return -1;
    }
    if ((it = cJSON_GetObjectItemCaseSensitive(exp, "chunks")) != NULL &&
        check_chunks(c, it, o->chunks))
        return -1;
    if ((it = cJSON_GetObjectItemCaseSensitive(exp, "content_flags")) != NULL &&
        check_flags(c, it, o->chunks))
        return -1;
    if ((it = cJSON_GetObjectItemCaseSensitive(exp, "usage")) != NULL &&
        check_usage(c, it, o->usage))
        return -1;
    if (check_str(c, exp, "finish_reason", o->finish_reason) ||
        check_str(c, exp, "model", o->model))
        return -1;
    if ((it = cJSON_GetObjectItemCaseSensitive(exp, "fault")) != NULL &&
        check_fault(c, it, o->fault))
        return -1;
    return 0;
}

/* ---- the case ---------------------------------------------------------- */

static int
run_reply(struct gcase *c, const void *state, const cJSON *exp)
{
    struct reply rep;
    memset(&rep, 0, sizeof rep);
    int rc = parse_reply(c, &rep);
    if (rc != 0 || rep.buf == NULL) {
        air__free(rep.buf);
        return rc;
    }
    air_http_in_t in;
    memset(&in, 0, sizeof in);
    in.status = rep.status;
    in.body = rep.body;
    in.body_len = rep.body_len;
    in.header = reply_header;
    in.hctx = &rep;
    in.now_unix_ms = c->req.now_unix * 1000;

    struct outcome o;
    memset(&o, 0, sizeof o);
    air_fault_t f;
    memset(&f, 0, sizeof f);
    f.retry_after_ms = -1;

    if (rep.status >= 200 && rep.status <= 299 && is_event_stream(&rep)) {
        if (c->ops->stream_event == NULL) {
            rc = failf(c, "stream reply, but the adapter has no stream_event");
            goto out;
        }
        static const size_t pieces[3] = {0, 1, 7};
        static const char *const names[3] = {"whole", "one byte at a time", "in 7-byte pieces"};
        struct stream_run runs[3];
        memset(runs, 0, sizeof runs);
        rc = 0;
        for (int i = 0; i < 3 && rc == 0; i++) {
            rc = run_stream(c, state, &rep, pieces[i], &runs[i]);
            if (rc == 0 && i > 0)
                rc = same_runs(c, names[i], &runs[0], &runs[i]);
        }
        if (rc == 0) {
            const struct stream_run *r = &runs[0];
            o.result = r->rc == AIR_STREAM_DONE ? "done" : "error";
            o.status = r->rc == AIR_STREAM_DONE ? AIR_OK : AIR_E_UPSTREAM;
            o.chunks = &r->chunks;
            o.usage = &r->sc.usage;
            o.model = r->sc.model;
            o.finish_reason = r->sc.finish_reason;
            o.fault = r->rc == AIR_STREAM_ERROR ? &r->sc.fault : NULL;
            rc = check_expect(c, exp, &o);
        }
        for (int i = 0; i < 3; i++)
            chunks_free(&runs[i].chunks);
    } else if (rep.status >= 200 && rep.status <= 299) {
        air_decoded_t d;
        memset(&d, 0, sizeof d);
        air_status_t st = c->ops->decode(state, &c->req, &in, &d, &f);
        o.status = st;
        if (st == AIR_OK) {
            if (d.body == NULL || d.body[d.body_len] != '\0' || strlen(d.body) != d.body_len) {
                rc = failf(c, "decoded body missing or not NUL-terminated at body_len");
                air__free(d.body);
                goto out;
            }
            o.result = "ok";
            o.body = d.body;
            o.usage = &d.usage;
            o.model = d.model;
            o.finish_reason = d.finish_reason;
        } else {
            o.result = "error";
            o.fault = &f;
            if (d.body != NULL) {
                rc = failf(c, "decode failed (%s) but left a body behind", status_name(st));
                air__free(d.body);
                goto out;
            }
        }
        rc = check_expect(c, exp, &o);
        air__free(d.body);
    } else {
        c->ops->classify(state, &in, &f);
        o.result = "error";
        o.status = AIR_E_UPSTREAM;
        o.fault = &f;
        if (f.http_status != rep.status) {
            rc = failf(c, "classify: fault.http_status %d, reply status %d", f.http_status,
                       rep.status);
            goto out;
        }
        rc = check_expect(c, exp, &o);
    }
out:
    air__free(rep.buf);
    return rc;
}

static int
run_case(struct gcase *c)
{
    const air_provider_ops_t *ops = c->ops;
    cJSON *prov = NULL, *meta = NULL, *body = NULL, *exp = NULL;
    char *raw = NULL, *exp_req = NULL;
    void *state = NULL;
    int inited = 0, rc = -1;
    air_http_out_t out;
    memset(&out, 0, sizeof out);

    if (load_json(c, "provider.json", &prov) || load_json(c, "meta.json", &meta) ||
        load_json(c, "expect-output.json", &exp))
        goto done;
    if (prov == NULL) {
        prov = cJSON_CreateObject();
        if (prov == NULL || !cJSON_AddStringToObject(prov, "name", "p") ||
            !cJSON_AddStringToObject(prov, "kind", ops->name)) {
            failf(c, "out of memory");
            goto done;
        }
    }
    if (!cJSON_IsObject(prov)) {
        failf(c, "provider.json must hold an object");
        goto done;
    }
    if (meta != NULL && !cJSON_IsObject(meta)) {
        failf(c, "meta.json must hold an object");
        goto done;
    }

    /* init */
    const cJSON *it;
    air_provider_cfg_t cfg;
    memset(&cfg, 0, sizeof cfg);
    it = cJSON_GetObjectItemCaseSensitive(prov, "name");
    cfg.name = cJSON_IsString(it) ? it->valuestring : "p";
    it = cJSON_GetObjectItemCaseSensitive(prov, "kind");
    cfg.kind = cJSON_IsString(it) ? it->valuestring : ops->name;
    it = cJSON_GetObjectItemCaseSensitive(prov, "base_url");
    cfg.base_url = cJSON_IsString(it) ? it->valuestring : NULL;
    c->api_key = AIR_TEST_GOLDEN_KEY;
    it = cJSON_GetObjectItemCaseSensitive(meta, "api_key");
    if (cJSON_IsNull(it))
        c->api_key = NULL;
    else if (cJSON_IsString(it))
        c->api_key = it->valuestring;
    cfg.api_key = c->api_key;
    cfg.json = prov;
    const cJSON *init_err = cJSON_GetObjectItemCaseSensitive(meta, "expect_init_error");
    if (ops->init != NULL) {
        char err[256] = "";
        air_status_t st = ops->init(&cfg, &state, err, sizeof err);
        if (cJSON_IsString(init_err)) {
            if (st == AIR_OK) {
                inited = 1;
                failf(c, "init succeeded, expected failure containing \"%s\"",
                      init_err->valuestring);
            } else if (st != AIR_E_CONFIG || strstr(err, init_err->valuestring) == NULL) {
                failf(c, "init: expected AIR_E_CONFIG with \"%s\", got %s \"%s\"",
                      init_err->valuestring, status_name(st), err);
            } else {
                rc = 0;
            }
            goto done;
        }
        if (st != AIR_OK) {
            failf(c, "init failed: %s: %s", status_name(st), err);
            goto done;
        }
        inited = 1;
    } else if (init_err != NULL) {
        failf(c, "meta.json expects an init error, but the adapter has no init");
        goto done;
    }

    /* request view */
    size_t raw_len;
    raw = read_in(c->dir, "input.json", &raw_len);
    if (raw == NULL) {
        failf(c, "input.json missing");
        goto done;
    }
    body = cJSON_ParseWithLength(raw, raw_len);
    if (!cJSON_IsObject(body)) {
        failf(c, "input.json: not a JSON object");
        goto done;
    }
    memset(&c->req, 0, sizeof c->req);
    c->req.body = body;
    c->req.raw = raw;
    c->req.raw_len = raw_len;
    it = cJSON_GetObjectItemCaseSensitive(meta, "model");
    if (!cJSON_IsString(it))
        it = cJSON_GetObjectItemCaseSensitive(body, "model");
    c->req.model = cJSON_IsString(it) ? it->valuestring : "";
    c->req.stream = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(body, "stream"));
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(body, "stream_options");
    c->req.include_usage = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(so, "include_usage"));
    it = cJSON_GetObjectItemCaseSensitive(meta, "now_unix");
    c->req.now_unix = cJSON_IsNumber(it) ? (int64_t)it->valuedouble : DEFAULT_NOW;
    it = cJSON_GetObjectItemCaseSensitive(meta, "request_id");
    c->req.request_id = cJSON_IsString(it) ? it->valuestring : DEFAULT_REQ_ID;

    /* encode */
    air_fault_t f;
    memset(&f, 0, sizeof f);
    f.retry_after_ms = -1;
    air_status_t st = ops->encode(state, &c->req, &out, &f);
    size_t exp_req_len;
    exp_req = read_in(c->dir, "expect-request.http", &exp_req_len);
    if (exp_req == NULL) {
        if (st == AIR_OK) {
            failf(c, "encode succeeded, but the case has no expect-request.http (so it must fail)");
            goto done;
        }
        struct outcome o;
        memset(&o, 0, sizeof o);
        o.result = "error";
        o.status = st;
        o.fault = &f;
        rc = check_expect(c, exp, &o);
        goto done;
    }
    if (st != AIR_OK) {
        failf(c, "encode failed: %s (%s: %s)", status_name(st), class_name(f.cls), f.message);
        goto done;
    }
    if (out.nheaders > AIR_HTTP_MAX_HEADERS) {
        failf(c, "nheaders %zu > AIR_HTTP_MAX_HEADERS", out.nheaders);
        goto done;
    }
    if (check_request(c, &out, exp_req, exp_req_len))
        goto done;

    /* reply */
    char *rp = join(c->dir, "reply.http");
    struct stat sb;
    int has_reply = rp != NULL && stat(rp, &sb) == 0;
    air__free(rp);
    if (has_reply)
        rc = run_reply(c, state, exp);
    else if (exp != NULL)
        failf(c, "expect-output.json has nothing to check: no reply.http, and encode succeeded");
    else
        rc = 0;
done:
    air__http_out_clear(&out);
    if (inited && ops->fini != NULL)
        ops->fini(state);
    air__free(exp_req);
    air__free(raw);
    cJSON_Delete(body);
    cJSON_Delete(exp);
    cJSON_Delete(meta);
    cJSON_Delete(prov);
    return c->failed ? -1 : rc;
}

int
air_test_golden_run_case(const air_provider_ops_t *ops, const char *case_dir, char *err,
                         size_t errlen)
{
    struct gcase c;
    memset(&c, 0, sizeof c);
    c.ops = ops;
    c.dir = case_dir;
    c.err = err;
    c.errlen = errlen;
    if (errlen > 0)
        err[0] = '\0';
    int rc = run_case(&c);
    if (rc != 0 && !c.failed)
        failf(&c, "failed");
    return c.failed ? -1 : 0;
}

/* ------------------------------------------------------------------------ */
/* All cases of a kind                                                       */

static int
cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void
air_test_golden_run_all(const air_provider_ops_t *ops, const char *kind_dir)
{
    assert_non_null(ops);
    assert_non_null(kind_dir);
    air_buf_t rel = AIR_BUF_INIT;
    air__buf_puts(&rel, "providers/data/");
    air__buf_puts(&rel, kind_dir);
    char *relp = air__buf_steal(&rel, NULL);
    assert_non_null(relp);
    char *dir = air_test_data_path(relp);
    air__free(relp);
    assert_non_null(dir);

    DIR *d = opendir(dir);
    if (d == NULL) {
        print_error("golden: cannot open %s (set AIR_TEST_DATA)\n", dir);
        air__free(dir);
        fail();
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char *p = join(dir, de->d_name);
        struct stat sb;
        int isdir = p != NULL && stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
        air__free(p);
        if (!isdir)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 32;
            char **nn = air__realloc(names, cap * sizeof *nn);
            assert_non_null(nn);
            names = nn;
        }
        names[n] = air__strdup(de->d_name);
        assert_non_null(names[n]);
        n++;
    }
    closedir(d);
    if (n > 1)
        qsort(names, n, sizeof *names, cmp_names);

    air_buf_t failed = AIR_BUF_INIT;
    size_t nfail = 0;
    for (size_t i = 0; i < n; i++) {
        char *cd = join(dir, names[i]);
        assert_non_null(cd);
        char err[4096];
        if (air_test_golden_run_case(ops, cd, err, sizeof err) == 0) {
            print_message("[golden] ok   %s/%s\n", kind_dir, names[i]);
        } else {
            print_error("[golden] FAIL %s/%s: %s\n", kind_dir, names[i], err);
            air__buf_puts(&failed, nfail ? ", " : "");
            air__buf_puts(&failed, names[i]);
            nfail++;
        }
        air__free(cd);
        air__free(names[i]);
    }
    air__free(names);
    air__free(dir);
    if (n == 0) {
        air__buf_free(&failed);
        fail_msg("golden: no cases under providers/data/%s", kind_dir);
    }
    if (nfail > 0) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%zu of %zu golden cases failed: %s", nfail, n,
                 failed.data ? failed.data : "");
        air__buf_free(&failed);
        fail_msg("%s", msg);
    }
    air__buf_free(&failed);
}
