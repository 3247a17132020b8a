/*
 * fuzz_presets.c - libFuzzer target for the OpenAI-compatible presets
 * (deepseek, mistral, groq, together, openrouter, xai, ollama, vllm) and
 * Azure.
 *
 * The first input byte picks the kind; the rest is used, like
 * fuzz_openai.c does, as: a 2xx body (decode), an error body (classify,
 * with a status from the input), a stream (each line one data event), a
 * request body (encode, when it is a JSON object), and header values (the
 * ratelimit slot and Retry-After). Each kind is set up with a config that
 * turns its optional rules on. Properties checked besides "no crash, no
 * leak":
 *  - decode returns a NUL-terminated body exactly when it succeeds;
 *  - classify keeps the status; faults never contain the key;
 *  - every emitted chunk is a JSON object; a stream ends DONE or ERROR;
 *  - an encoded body is a JSON object with one "model", the upstream
 *    model core asked for (Azure v1: the deployment); Mistral bodies
 *    have only valid 9-character tool-call ids and no stream_options; Groq
 *    bodies have no logprobs/logit_bias/top_logprobs and no message names;
 *  - the ratelimit slot leaves every field -1 or non-negative.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "builtin.h"
#include "common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define KEY "sk-fuzz-presets"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c))                                                                                  \
            abort();                                                                               \
    } while (0)

static const struct {
    const char *kind;
    const char *cfg;
    const char *deployment; /* the model an encoded body must carry, NULL: req.model */
} kinds[] = {
    {"deepseek", "{\"replay_reasoning\":\"tool_calls\",\"drop_fields\":[\"user\"]}", NULL},
    {"mistral", "{\"allow_fields\":[\"guardrails\"]}", NULL},
    {"groq", "{}", NULL},
    {"together", "{}", NULL},
    {"openrouter", "{\"http_referer\":\"https://x.test\",\"x_title\":\"X\"}", NULL},
    {"xai", "{}", NULL},
    {"ollama", "{}", NULL},
    {"vllm", "{\"drop_fields\":[\"store\"]}", NULL},
    {"azure", "{\"api_version\":\"2024-10-21\"}", NULL},
    {"azure", "{\"api_version\":\"v1\",\"deployment\":\"dep\"}", "dep"},
};

struct hctx {
    const char *s;
    size_t n;
};

/* Every header asked for gets a slice of the input chosen by its name, so
 * the rate-limit and Retry-After parsers see fuzzed values. */
static const char *
header(const void *hctx, const char *name)
{
    static _Thread_local char buf[8][40];
    static _Thread_local unsigned next;
    const struct hctx *h = hctx;
    if (h->n == 0)
        return NULL;
    unsigned hash = 5381;
    for (const char *p = name; *p; p++)
        hash = hash * 33 + (unsigned char)*p;
    size_t off = hash % h->n, len = h->n - off < 39 ? h->n - off : 39;
    char *b = buf[next++ % 8];
    memcpy(b, h->s + off, len);
    b[len] = '\0';
    char *nl = strpbrk(b, "\r\n");
    if (nl != NULL)
        *nl = '\0';
    return b;
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

static int
mistral_id_ok(const cJSON *id)
{
    if (!cJSON_IsString(id))
        return 1; /* not ours to fix */
    const char *s = id->valuestring;
    if (strlen(s) != 9)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9')))
            return 0;
    return 1;
}

static void
check_body(const char *kind, const cJSON *j, const char *model)
{
    CHECK(cJSON_IsObject(j));
    int nmodel = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, j)
    {
        if (it->string != NULL && strcmp(it->string, "model") == 0) {
            nmodel++;
            CHECK(cJSON_IsString(it) && strcmp(it->valuestring, model) == 0);
        }
    }
    CHECK(nmodel == 1);
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(j, "messages");
    if (strcmp(kind, "mistral") == 0) {
        CHECK(cJSON_GetObjectItemCaseSensitive(j, "stream_options") == NULL);
        CHECK(cJSON_GetObjectItemCaseSensitive(j, "seed") == NULL);
        const cJSON *m;
        cJSON_ArrayForEach(m, (cJSON_IsArray(msgs) ? msgs : NULL))
        {
            if (!cJSON_IsObject(m))
                continue;
            const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
            if (cJSON_IsString(role) && strcmp(role->valuestring, "tool") == 0)
                CHECK(mistral_id_ok(cJSON_GetObjectItemCaseSensitive(m, "tool_call_id")));
            const cJSON *tc = cJSON_GetObjectItemCaseSensitive(m, "tool_calls");
            const cJSON *c;
            if (cJSON_IsString(role) && strcmp(role->valuestring, "assistant") == 0)
                cJSON_ArrayForEach(c, (cJSON_IsArray(tc) ? tc : NULL))
                {
                    if (cJSON_IsObject(c))
                        CHECK(mistral_id_ok(cJSON_GetObjectItemCaseSensitive(c, "id")));
                }
        }
    }
    if (strcmp(kind, "groq") == 0) {
        CHECK(cJSON_GetObjectItemCaseSensitive(j, "logprobs") == NULL);
        CHECK(cJSON_GetObjectItemCaseSensitive(j, "logit_bias") == NULL);
        CHECK(cJSON_GetObjectItemCaseSensitive(j, "top_logprobs") == NULL);
        const cJSON *m;
        cJSON_ArrayForEach(m, (cJSON_IsArray(msgs) ? msgs : NULL))
        {
            if (cJSON_IsObject(m))
                CHECK(cJSON_GetObjectItemCaseSensitive(m, "name") == NULL);
        }
    }
}

static void
encode_check(const air_provider_ops_t *ops, const void *st, const char *s, size_t n,
             const char *deployment)
{
    cJSON *root = cJSON_ParseWithLength(s, n);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return;
    }
    air_req_view_t req;
    memset(&req, 0, sizeof req);
    req.body = root;
    req.raw = s;
    req.raw_len = n;
    /* Core always names the upstream model (the route's). */
    req.model = (n & 2) ? "grok-4-\"x\"" : "mistral-small";
    req.stream = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "stream"));
    req.include_usage = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(root, "stream_options"), "include_usage"));
    air_http_out_t out;
    air_fault_t f;
    memset(&f, 0, sizeof f);
    air_status_t rc = ops->encode(st, &req, &out, &f);
    if (rc == AIR_OK) {
        CHECK(out.url != NULL);
        const char *body = out.body_ref ? out.body_ref : out.body;
        cJSON *j = cJSON_ParseWithLength(body, out.body_len);
        /* A passthrough forwards the caller's bytes, which cJSON accepted. */
        check_body(ops->name, j, deployment != NULL ? deployment : req.model);
        cJSON_Delete(j);
        air__http_out_clear(&out);
    } else {
        CHECK(out.url == NULL && out.body == NULL && out.nheaders == 0);
        if (rc == AIR_E_BADREQ)
            CHECK(f.cls == AIR_ERR_INVALID_REQUEST && f.message[0] != '\0');
    }
    cJSON_Delete(root);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t k = data[0] % (sizeof kinds / sizeof kinds[0]);
    const char *s = (const char *)data + 1;
    size--;
    const air_provider_ops_t *ops = air__provider_find(kinds[k].kind);
    CHECK(ops != NULL);

    cJSON *cj = cJSON_Parse(kinds[k].cfg);
    air_provider_cfg_t cfg = {.name = "p",
                              .kind = kinds[k].kind,
                              .api_key = KEY,
                              .base_url = "https://fuzz.example/v1",
                              .json = cj};
    void *st = NULL;
    char err[128];
    air_status_t ist = ops->init(&cfg, &st, err, sizeof err);
    cJSON_Delete(cj);
    if (ist != AIR_OK)
        return 0;

    char *body = air__strndup(s, size);
    if (body == NULL)
        goto out;
    struct hctx h = {body, size};
    air_http_in_t in = {.status = 200,
                        .body = body,
                        .body_len = size,
                        .header = header,
                        .hctx = &h,
                        .now_unix_ms = 1760000000000LL};

    air_ratelimit_t rl;
    ops->ratelimit(st, &in, &rl);
    CHECK(rl.limit_requests >= -1 && rl.remaining_requests >= -1 && rl.reset_requests_ms >= -1);
    CHECK(rl.limit_tokens >= -1 && rl.remaining_tokens >= -1 && rl.reset_tokens_ms >= -1);

    air_decoded_t d;
    air_fault_t f;
    air_status_t rc = ops->decode(st, NULL, &in, &d, &f);
    if (rc == AIR_OK) {
        CHECK(d.body != NULL && d.body[d.body_len] == '\0');
        /* cJSON takes a raw NUL inside a string, and openai.c returns an
         * unchanged body as the upstream's bytes: only NUL-free input is
         * held to strlen (reported; openai.c's to decide). */
        if (memchr(body, '\0', size) == NULL)
            CHECK(strlen(d.body) == d.body_len);
        cJSON *j = cJSON_ParseWithLength(d.body, d.body_len);
        CHECK(cJSON_IsObject(j));
        cJSON_Delete(j);
    } else {
        CHECK(d.body == NULL);
        CHECK(strstr(f.message, KEY) == NULL);
    }
    air__decoded_clear(&d);

    in.status = size ? 400 + (unsigned char)s[0] % 200 : 500;
    ops->classify(st, &in, &f);
    CHECK(f.http_status == in.status);
    CHECK(f.retry_after_ms >= -1);
    CHECK(strlen(f.message) < sizeof f.message);
    CHECK(strstr(f.message, KEY) == NULL && strstr(f.type, KEY) == NULL);

    /* Stream: every line is one data event. */
    void *ss = air__calloc(1, ops->stream_state_size);
    if (ss == NULL)
        goto out_body;
    air_req_view_t req;
    memset(&req, 0, sizeof req);
    req.stream = 1;
    req.include_usage = size & 1;
    air_stream_ctx_t sc;
    memset(&sc, 0, sizeof sc);
    sc.state = ss;
    sc.req = &req;
    sc.emit = emit;
    sc.fault.retry_after_ms = -1;
    air_stream_rc_t src = AIR_STREAM_MORE;
    size_t pos = 0;
    while (pos < size && src == AIR_STREAM_MORE) {
        const char *nl = memchr(body + pos, '\n', size - pos);
        size_t len = nl ? (size_t)(nl - (body + pos)) : size - pos;
        const char *ln = body + pos;
        size_t ll = len;
        if (ll >= 5 && memcmp(ln, "data:", 5) == 0) {
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
        src = ops->stream_event(st, &sc, "", 0, ev, ll);
        air__free(ev);
        pos += len + 1;
    }
    if (src == AIR_STREAM_MORE)
        src = ops->stream_end(st, &sc);
    CHECK(src == AIR_STREAM_DONE || src == AIR_STREAM_ERROR);
    if (src == AIR_STREAM_ERROR)
        CHECK(strstr(sc.fault.message, KEY) == NULL);
    air__free(ss);

    encode_check(ops, st, body, size, kinds[k].deployment);
out_body:
    air__free(body);
out:
    ops->fini(st);
    return 0;
}
