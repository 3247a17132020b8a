/*
 * fuzz_anthropic.c - libFuzzer target for providers/anthropic.c.
 *
 * The first byte picks what runs and how:
 *   bits 0-1  0 decode, 1 classify, 2 stream, 3 encode (the rest is the request body)
 *   bit 2     stream_options.include_usage
 *   bit 3     the request asks for response_format json_object (the tool fallback)
 *   bit 4     the deployment has structured_output
 *   bit 5     x-should-retry: true (else false); classify only
 * For classify, the second byte gives the status (400 + byte % 200) and the
 * first line of the rest is the Retry-After value, the remainder the body.
 * For streams the rest is split into events at "\n\n"; within an event the
 * part before the first '\n' is the event name and the remainder the data.
 * Every emitted chunk must be a JSON object and every fault message a
 * terminated string, or the target aborts.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "airouter/provider.h"
#include "alloc.h"
#include "common.h"

extern const air_provider_ops_t air_provider_anthropic;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct hdr {
    const char *retry_after;
    const char *should_retry;
};

static const char *
hdr_fn(const void *hctx, const char *name)
{
    const struct hdr *h = hctx;
    if (strcmp(name, "retry-after") == 0)
        return h->retry_after;
    if (strcmp(name, "x-should-retry") == 0)
        return h->should_retry;
    return NULL;
}

static int
emit_fn(void *ud, const char *json, size_t len, unsigned flags)
{
    (void)flags;
    size_t *n = ud;
    cJSON *c = cJSON_ParseWithLength(json, len);
    if (!cJSON_IsObject(c))
        abort();
    cJSON_Delete(c);
    (*n)++;
    return 0;
}

static void
check_fault(const air_fault_t *f)
{
    if (memchr(f->message, '\0', sizeof f->message) == NULL ||
        memchr(f->type, '\0', sizeof f->type) == NULL ||
        memchr(f->code, '\0', sizeof f->code) == NULL)
        abort();
}

static void
run_stream(const void *st, const air_req_view_t *req, const char *p, size_t n)
{
    void *state = air__calloc(1, air_provider_anthropic.stream_state_size);
    if (state == NULL)
        return;
    size_t chunks = 0;
    air_stream_ctx_t sc;
    memset(&sc, 0, sizeof sc);
    sc.state = state;
    sc.req = req;
    sc.emit = emit_fn;
    sc.emit_ud = &chunks;
    sc.fault.retry_after_ms = -1;
    air_stream_rc_t rc = AIR_STREAM_MORE;
    size_t off = 0;
    while (off < n && rc == AIR_STREAM_MORE) {
        const char *ev = p + off;
        size_t evlen = n - off;
        const char *end = NULL;
        for (size_t i = 0; i + 1 < evlen; i++)
            if (ev[i] == '\n' && ev[i + 1] == '\n') {
                end = ev + i;
                break;
            }
        if (end != NULL)
            evlen = (size_t)(end - ev);
        /* NUL-terminated copies, as the SSE parser delivers them. */
        const char *nl = memchr(ev, '\n', evlen);
        size_t namelen = nl ? (size_t)(nl - ev) : 0;
        const char *d = nl ? nl + 1 : ev;
        size_t dlen = evlen - (size_t)(d - ev);
        char *name = air__strndup(ev, namelen);
        char *dat = air__strndup(d, dlen);
        if (name != NULL && dat != NULL)
            rc = air_provider_anthropic.stream_event(st, &sc, name, namelen, dat, dlen);
        air__free(name);
        air__free(dat);
        off += evlen + 2;
    }
    if (rc == AIR_STREAM_MORE)
        rc = air_provider_anthropic.stream_end(st, &sc);
    if (rc == AIR_STREAM_ERROR)
        check_fault(&sc.fault);
    else if (rc != AIR_STREAM_DONE)
        abort();
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

    cJSON *cfg = cJSON_CreateObject();
    if (cfg == NULL)
        return 0;
    cJSON_AddBoolToObject(cfg, "structured_output", (sel & 16) != 0);
    air_provider_cfg_t pc = {"p", "anthropic", NULL, "sk-fuzz-key", cfg};
    void *st = NULL;
    char err[128];
    if (air_provider_anthropic.init(&pc, &st, err, sizeof err) != AIR_OK) {
        cJSON_Delete(cfg);
        return 0;
    }

    cJSON *body = cJSON_Parse((sel & 8) ? "{\"model\":\"m\",\"messages\":[],\"response_format\":"
                                          "{\"type\":\"json_object\"}}"
                                        : "{\"model\":\"m\",\"messages\":[]}");
    air_req_view_t req;
    memset(&req, 0, sizeof req);
    req.body = body;
    req.model = "m";
    req.stream = (sel & 3) == 2;
    req.include_usage = (sel & 4) != 0;
    req.now_unix = 1760000000;
    req.request_id = "air-fuzz";

    char *copy = air__strndup(rest, n); /* NUL-terminated, as core hands bodies over */
    if (copy != NULL && body != NULL) {
        switch (sel & 3) {
        case 0: {
            air_http_in_t in = {200, copy, n, hdr_fn, NULL, 0};
            struct hdr h = {NULL, NULL};
            in.hctx = &h;
            air_decoded_t d;
            air_fault_t f;
            air_status_t s = air_provider_anthropic.decode(st, &req, &in, &d, &f);
            if (s == AIR_OK) {
                if (d.body == NULL || strlen(d.body) != d.body_len)
                    abort();
                cJSON *o = cJSON_ParseWithLength(d.body, d.body_len);
                if (!cJSON_IsObject(o))
                    abort();
                cJSON_Delete(o);
            } else {
                if (d.body != NULL)
                    abort();
                check_fault(&f);
            }
            air__decoded_clear(&d);
            break;
        }
        case 1: {
            const char *nl = memchr(copy, '\n', n);
            struct hdr h = {NULL, (sel & 32) ? "true" : "false"};
            const char *b = copy;
            size_t blen = n;
            if (nl != NULL) {
                *(char *)nl = '\0';
                h.retry_after = copy;
                b = nl + 1;
                blen = n - (size_t)(b - copy);
            }
            air_http_in_t in = {status, b, blen, hdr_fn, &h, 1760000000000LL};
            air_fault_t f;
            air_provider_anthropic.classify(st, &in, &f);
            if (f.http_status != status)
                abort();
            check_fault(&f);
            break;
        }
        case 2:
            run_stream(st, &req, copy, n);
            break;
        default: {
            cJSON *rb = cJSON_ParseWithLength(copy, n);
            if (cJSON_IsObject(rb)) {
                air_req_view_t r2 = req;
                r2.body = rb;
                r2.raw = copy;
                r2.raw_len = n;
                air_http_out_t out;
                air_fault_t f;
                air_status_t s = air_provider_anthropic.encode(st, &r2, &out, &f);
                if (s == AIR_OK) {
                    cJSON *o = cJSON_ParseWithLength(out.body, out.body_len);
                    if (!cJSON_IsObject(o))
                        abort();
                    cJSON_Delete(o);
                } else if (s == AIR_E_BADREQ) {
                    check_fault(&f);
                }
                air__http_out_clear(&out);
            }
            cJSON_Delete(rb);
            break;
        }
        }
    }
    air__free(copy);
    cJSON_Delete(body);
    air_provider_anthropic.fini(st);
    cJSON_Delete(cfg);
    return 0;
}
