/*
 * fuzz_gemini.c - libFuzzer target for providers/gemini.c.
 *
 * The first byte picks what runs:
 *   bits 0-1  0 decode, 1 classify, 2 stream, 3 encode (the rest is the request body)
 *   bit 2     stream_options.include_usage
 *   bit 3     the stream is fed in 1-byte pieces (else whole)
 * The second byte gives the classify status (400 + byte % 200). For classify
 * the first line of the rest is the Retry-After value, the remainder the
 * body. Streams go through core's SSE parser, as in production, so the
 * framing (CRLF, split events, comments) is exercised too.
 * Aborts when: a chunk is not a JSON object, a fault string is unterminated,
 * the API key shows up in a fault or a URL, a decoded body is not JSON, or
 * the stream functions return something outside the enum. (Response text
 * is the upstream's own data: if a hostile upstream echoes the key there,
 * it is passed on like any other text, so chunks and bodies are not
 * checked for it.)
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "airouter/provider.h"
#include "alloc.h"
#include "common.h"
#include "sse.h"

extern const air_provider_ops_t air_provider_gemini;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_KEY "AIza-fuzz-secret-key"

static const char *
hdr_fn(const void *hctx, const char *name)
{
    const char *ra = hctx;
    if (strcmp(name, "retry-after") == 0)
        return ra;
    return NULL;
}

static int
has_key(const char *s, size_t n)
{
    size_t kl = strlen(FUZZ_KEY);
    for (size_t i = 0; i + kl <= n; i++)
        if (memcmp(s + i, FUZZ_KEY, kl) == 0)
            return 1;
    return 0;
}

static void
check_fault(const air_fault_t *f)
{
    if (memchr(f->message, '\0', sizeof f->message) == NULL ||
        memchr(f->type, '\0', sizeof f->type) == NULL ||
        memchr(f->code, '\0', sizeof f->code) == NULL)
        abort();
    if (has_key(f->message, strlen(f->message)) || has_key(f->code, strlen(f->code)) ||
        has_key(f->type, strlen(f->type)))
        abort();
}

static int
emit_fn(void *ud, const char *json, size_t len, unsigned flags)
{
    (void)ud;
    (void)flags;
    cJSON *c = cJSON_ParseWithLength(json, len);
    if (!cJSON_IsObject(c))
        abort();
    cJSON_Delete(c);
    return 0;
}

struct run {
    const void *st;
    air_stream_ctx_t *sc;
    air_stream_rc_t rc;
};

static int
on_event(void *ud, const char *event, size_t event_len, const char *d, size_t dlen)
{
    struct run *r = ud;
    r->rc = air_provider_gemini.stream_event(r->st, r->sc, event, event_len, d, dlen);
    if (r->rc != AIR_STREAM_MORE && r->rc != AIR_STREAM_DONE && r->rc != AIR_STREAM_ERROR)
        abort();
    return r->rc != AIR_STREAM_MORE;
}

static void
run_stream(const void *st, const air_req_view_t *req, const char *p, size_t n, int bytewise)
{
    void *state = air__calloc(1, air_provider_gemini.stream_state_size);
    if (state == NULL)
        return;
    air_stream_ctx_t sc;
    memset(&sc, 0, sizeof sc);
    sc.state = state;
    sc.req = req;
    sc.emit = emit_fn;
    sc.fault.retry_after_ms = -1;
    struct run r = {st, &sc, AIR_STREAM_MORE};
    struct air__sse sse;
    air__sse_init(&sse, 1 << 20);
    air_status_t fs = AIR_OK;
    if (bytewise) {
        for (size_t i = 0; i < n && fs == AIR_OK && r.rc == AIR_STREAM_MORE; i++)
            fs = air__sse_feed(&sse, p + i, 1, on_event, &r);
    } else {
        fs = air__sse_feed(&sse, p, n, on_event, &r);
    }
    if (r.rc == AIR_STREAM_MORE && (fs == AIR_OK)) {
        (void)air__sse_finish(&sse);
        r.rc = air_provider_gemini.stream_end(st, &sc);
    }
    if (r.rc == AIR_STREAM_ERROR)
        check_fault(&sc.fault);
    else if (r.rc != AIR_STREAM_DONE && r.rc != AIR_STREAM_MORE)
        abort();
    air__sse_free(&sse);
    air__free(state);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    unsigned sel = data[0];
    int status = 400 + data[1] % 200;
    const char *rest = (const char *)data + 2;
    size_t n = size - 2;

    air_provider_cfg_t pc = {"p", "gemini", NULL, FUZZ_KEY, NULL};
    void *st = NULL;
    char err[128];
    if (air_provider_gemini.init(&pc, &st, err, sizeof err) != AIR_OK)
        return 0;

    cJSON *body = cJSON_Parse("{\"model\":\"m\",\"messages\":[]}");
    air_req_view_t req;
    memset(&req, 0, sizeof req);
    req.body = body;
    req.model = "gemini-2.5-flash";
    req.stream = (sel & 3) == 2;
    req.include_usage = (sel & 4) != 0;
    req.now_unix = 1760000000;
    req.request_id = "air-fuzz";

    /* NUL-terminated copy: core always hands adapters terminated bodies. */
    char *buf = air__strndup(rest, n);
    if (buf == NULL || body == NULL)
        goto out;

    switch (sel & 3) {
    case 0: {
        air_http_in_t in = {200, buf, n, hdr_fn, NULL, 1760000000000LL};
        air_decoded_t d;
        air_fault_t f;
        memset(&f, 0, sizeof f);
        air_status_t s = air_provider_gemini.decode(st, &req, &in, &d, &f);
        if (s == AIR_OK) {
            cJSON *c = cJSON_ParseWithLength(d.body, d.body_len);
            if (!cJSON_IsObject(c) || d.body[d.body_len] != '\0')
                abort();
            cJSON_Delete(c);
            air__decoded_clear(&d);
        } else {
            if (d.body != NULL)
                abort();
            check_fault(&f);
        }
        break;
    }
    case 1: {
        const char *nl = memchr(buf, '\n', n);
        char *ra = air__strndup(buf, nl != NULL ? (size_t)(nl - buf) : 0);
        const char *b = nl != NULL ? nl + 1 : buf;
        size_t blen = n - (size_t)(b - buf);
        air_http_in_t in = {status, b, blen, hdr_fn, ra, 1760000000000LL};
        air_fault_t f;
        memset(&f, 0, sizeof f);
        air_provider_gemini.classify(st, &in, &f);
        check_fault(&f);
        if (f.http_status != status)
            abort();
        air__free(ra);
        break;
    }
    case 2:
        run_stream(st, &req, buf, n, (sel & 8) != 0);
        break;
    default: {
        cJSON *rb = cJSON_ParseWithLength(buf, n);
        if (rb == NULL)
            break;
        air_req_view_t r2 = req;
        r2.body = rb;
        r2.raw = buf;
        r2.raw_len = n;
        air_http_out_t out;
        air_fault_t f;
        memset(&f, 0, sizeof f);
        air_status_t s = air_provider_gemini.encode(st, &r2, &out, &f);
        if (s == AIR_OK) {
            cJSON *c = cJSON_ParseWithLength(out.body, out.body_len);
            if (!cJSON_IsObject(c) || has_key(out.url, strlen(out.url)))
                abort();
            cJSON_Delete(c);
            air__http_out_clear(&out);
        } else if (s == AIR_E_BADREQ) {
            check_fault(&f);
        }
        cJSON_Delete(rb);
        break;
    }
    }
out:
    air__free(buf);
    cJSON_Delete(body);
    air_provider_gemini.fini(st);
    return 0;
}
