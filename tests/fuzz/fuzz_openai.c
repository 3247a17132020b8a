/*
 * fuzz_openai.c - libFuzzer target for the OpenAI adapter.
 *
 * The same bytes are used as: a 2xx body (decode), an error body with a
 * status and a Retry-After value taken from the input (classify), a stream
 * (each line one SSE data event, a "data: " prefix stripped), a request body (encode, when the
 * bytes are a JSON object), and a chunk for the fast/reference scanner differential. Properties
 * checked besides "no crash, no leak":
 *  - every chunk the adapter emits is a JSON object cJSON accepts;
 *  - when the fast chunk scanner answers, it agrees with the cJSON reference;
 *  - air__openai_model_span agrees with cJSON on the "model" member;
 *  - an encoded body is JSON with exactly one "model", the requested one.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "common.h"
#include "openai.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c))                                                                                  \
            abort();                                                                               \
    } while (0)

struct hctx {
    char retry_after[48];
};

static const char *
header(const void *hctx, const char *name)
{
    const struct hctx *h = hctx;
    if (strcmp(name, "retry-after") == 0 || strcmp(name, "x-should-retry") == 0)
        return h->retry_after;
    return NULL;
}

static int
emit(void *ud, const char *json, size_t len, unsigned flags)
{
    (void)ud;
    (void)flags;
    cJSON *j = cJSON_ParseWithLength(json, len);
    CHECK(cJSON_IsObject(j));
    cJSON_Delete(j);
    return 0;
}

static void
differential(const char *s, size_t n)
{
    struct air__openai_chunk_info a, b;
    int fast = 0;
    air_status_t sa = air__openai_chunk_scan(s, n, 1, &a, &fast);
    if (!fast)
        return;
    CHECK(sa == AIR_OK);
    CHECK(air__openai_chunk_scan(s, n, 0, &b, NULL) == AIR_OK);
    CHECK(a.is_error == b.is_error && a.content == b.content && a.finished == b.finished);
    CHECK(a.nchoices == b.nchoices && a.has_usage == b.has_usage);
    CHECK(memcmp(&a.usage, &b.usage, sizeof a.usage) == 0);
    CHECK(strcmp(a.model, b.model) == 0 && strcmp(a.finish_reason, b.finish_reason) == 0);
}

static void
span_check(const char *s, size_t n, const cJSON *root)
{
    size_t a = 0, b = 0;
    int rc = air__openai_model_span(s, n, &a, &b);
    if (rc < 0)
        return;
    /* The scanner accepted the text: cJSON must have too. */
    CHECK(cJSON_IsObject(root));
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "model");
    CHECK((rc == 1) == (m != NULL));
    if (rc == 1) {
        cJSON *v = cJSON_ParseWithLength(s + a, b - a);
        CHECK(v != NULL && cJSON_Compare(v, m, 1));
        cJSON_Delete(v);
    }
}

static void
encode_check(const void *st, const char *s, size_t n, const cJSON *root)
{
    if (!cJSON_IsObject(root))
        return;
    air_req_view_t req;
    memset(&req, 0, sizeof req);
    req.body = root;
    req.raw = s;
    req.raw_len = n;
    req.model = (n & 1) ? "gpt-\"4o\"" : "m";
    req.stream = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "stream"));
    req.include_usage = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(root, "stream_options"), "include_usage"));
    air_http_out_t out;
    air_fault_t f;
    memset(&f, 0, sizeof f);
    if (air_provider_openai.encode(st, &req, &out, &f) != AIR_OK)
        return;
    const char *body = out.body_ref ? out.body_ref : out.body;
    cJSON *j = cJSON_ParseWithLength(body, out.body_len);
    CHECK(cJSON_IsObject(j));
    int nmodel = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, j)
    {
        if (it->string != NULL && strcmp(it->string, "model") == 0) {
            nmodel++;
            CHECK(cJSON_IsString(it) && strcmp(it->valuestring, req.model) == 0);
        }
    }
    CHECK(nmodel == 1);
    if (req.stream && !req.include_usage) {
        const cJSON *so = cJSON_GetObjectItemCaseSensitive(j, "stream_options");
        CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(so, "include_usage")));
    }
    cJSON_Delete(j);
    air__http_out_clear(&out);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    void *st = NULL;
    air_provider_cfg_t cfg = {.name = "p", .kind = "openai", .api_key = "sk-fuzz"};
    char err[64];
    if (air_provider_openai.init(&cfg, &st, err, sizeof err) != AIR_OK)
        return 0;

    /* The body as core hands it over: NUL-terminated. */
    char *body = air__strndup(s, size);
    if (body == NULL)
        goto out;

    struct hctx h;
    size_t hl = size < sizeof h.retry_after - 1 ? size : sizeof h.retry_after - 1;
    memcpy(h.retry_after, s, hl);
    h.retry_after[hl] = '\0';
    air_http_in_t in = {.status = 200,
                        .body = body,
                        .body_len = size,
                        .header = header,
                        .hctx = &h,
                        .now_unix_ms = 1760000000000LL};

    air_decoded_t d;
    air_fault_t f;
    air_status_t rc = air_provider_openai.decode(st, NULL, &in, &d, &f);
    if (rc == AIR_OK)
        CHECK(d.body != NULL && strlen(d.body) == d.body_len);
    else
        CHECK(d.body == NULL);
    air__decoded_clear(&d);

    in.status = size ? 400 + data[0] % 200 : 500;
    air_provider_openai.classify(st, &in, &f);
    CHECK(f.http_status == in.status);
    CHECK(f.retry_after_ms >= -1);
    CHECK(strlen(f.message) < sizeof f.message);
    CHECK(strstr(f.message, "sk-fuzz") == NULL);

    /* Stream: every line is one data event. */
    struct air__openai_stream ss;
    memset(&ss, 0, sizeof ss);
    air_req_view_t req;
    memset(&req, 0, sizeof req);
    req.stream = 1;
    req.include_usage = size & 1;
    air_stream_ctx_t sc;
    memset(&sc, 0, sizeof sc);
    sc.state = &ss;
    sc.req = &req;
    sc.emit = emit;
    air_stream_rc_t src = AIR_STREAM_MORE;
    size_t pos = 0;
    while (pos < size && src == AIR_STREAM_MORE) {
        const char *nl = memchr(body + pos, '\n', size - pos);
        size_t len = nl ? (size_t)(nl - (body + pos)) : size - pos;
        const char *ln = body + pos;
        size_t ll = len;
        if (ll >= 5 && memcmp(ln, "data:", 5) == 0) { /* corpus files are SSE */
            ln += 5;
            ll -= 5;
            if (ll > 0 && *ln == ' ') {
                ln++;
                ll--;
            }
        }
        char *ev = air__strndup(ln, ll);
        if (ev == NULL)
            break;
        differential(ev, ll);
        src = air_provider_openai.stream_event(st, &sc, "", 0, ev, ll);
        air__free(ev);
        pos += len + 1;
    }
    if (src == AIR_STREAM_MORE)
        src = air_provider_openai.stream_end(st, &sc);
    CHECK(src == AIR_STREAM_DONE || src == AIR_STREAM_ERROR);
    if (src == AIR_STREAM_ERROR)
        CHECK(strstr(sc.fault.message, "sk-fuzz") == NULL);

    /* Request side. */
    const char *pend = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, size, &pend, 0);
    differential(body, size);
    span_check(body, size, root);
    encode_check(st, body, size, root);
    cJSON_Delete(root);
    air__free(body);
out:
    air_provider_openai.fini(st);
    return 0;
}
