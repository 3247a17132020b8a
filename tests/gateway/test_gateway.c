/*
 * test_gateway.c - the gateway over real sockets on 127.0.0.1: libcurl as
 * the client, the engine over in-process mock providers. Every endpoint,
 * streaming (relay, [DONE], error after the stream began), x-ai-provider,
 * each error case (400/404/405/413/429/502/503), client keys and their
 * limits, /metrics as valid Prometheus text that counts what was sent, the
 * access log, client hang-ups cancelling upstream work, and draining.
 */
#include "gwtest.h"

#include <cjson/cJSON.h>

#include <fcntl.h>
#include <stdatomic.h>

static char url_buf[256];

#define URL(gw, path) gwt_url(url_buf, sizeof url_buf, air__gw_port(gw), path)

/* Assert an OpenAI-shaped error body and return its parsed form. */
static cJSON *
expect_error(const struct http_resp *r, long status, const char *type)
{
    if (r->status != status)
        fail_msg("status %ld, want %ld (body %s)", r->status, status, r->body);
    cJSON *j = cJSON_Parse(r->body);
    assert_non_null(j);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    assert_true(cJSON_IsObject(e));
    assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(e, "message")));
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(e, "type");
    assert_true(cJSON_IsString(t));
    if (type != NULL && strcmp(t->valuestring, type) != 0)
        fail_msg("type %s, want %s (%s)", t->valuestring, type, r->body);
    assert_non_null(cJSON_GetObjectItemCaseSensitive(e, "param"));
    assert_non_null(cJSON_GetObjectItemCaseSensitive(e, "code"));
    return j;
}

static const char *
err_field(const cJSON *j, const char *f)
{
    const cJSON *v =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "error"), f);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double
engine_errors(struct air__gw *gw, const char *cls)
{
    char *s = air_stats_json(air__gw_engine(gw));
    cJSON *j = cJSON_Parse(s);
    free(s);
    const cJSON *v =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "errors"), cls);
    double n = cJSON_IsNumber(v) ? v->valuedouble : -1;
    cJSON_Delete(j);
    return n;
}

struct fixture {
    air_mock_t *m[2];
    int nm;
    struct air__gw *gw;
    char *cfg;
};

static void
fx_start(struct fixture *f, const air_mock_opts_t *o0, const air_mock_opts_t *o1, const char *extra)
{
    memset(f, 0, sizeof *f);
    air_mock_opts_t d;
    air_mock_opts_init(&d);
    f->m[0] = gwt_mock(o0 ? o0 : &d);
    f->nm = 1;
    if (o1 != NULL) {
        f->m[1] = gwt_mock(o1);
        f->nm = 2;
    }
    char ex[2048];
    snprintf(ex, sizeof ex, "\"access_log\":{\"level\":\"off\"}%s%s", extra ? "," : "",
             extra ? extra : "");
    f->cfg = gwt_config(f->m, f->nm, ex);
    f->gw = gwt_gateway(f->cfg);
}

static void
fx_stop(struct fixture *f)
{
    air__gw_stop(f->gw, 2000);
    for (int i = 0; i < f->nm; i++)
        air_mock_stop(f->m[i]);
    free(f->cfg);
}

/* ------------------------------------------------------------ endpoints */

static void
test_gateway_healthz_returns_ok(void **state)
{
    (void)state;
    struct fixture f;
    fx_start(&f, NULL, NULL, NULL);
    struct http_resp r = http_req("GET", URL(f.gw, "/healthz"), NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"status\":\"ok\"}");
    http_resp_free(&r);
    r = http_req("HEAD", URL(f.gw, "/healthz"), NULL, NULL);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    fx_stop(&f);
}

static void
test_gateway_models_list_and_retrieve(void **state)
{
    (void)state;
    struct fixture f;
    fx_start(&f, NULL, NULL, NULL);
    struct http_resp r = http_req("GET", URL(f.gw, "/v1/models"), NULL, NULL);
    assert_int_equal(r.status, 200);
    cJSON *j = cJSON_Parse(r.body);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "object")->valuestring, "list");
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(j, "data");
    assert_int_equal(cJSON_GetArraySize(data), 2); /* route m, provider model up-0 */
    const cJSON *m0 = cJSON_GetArrayItem(data, 0);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(m0, "id")->valuestring, "m");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(m0, "object")->valuestring, "model");
    assert_true(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(m0, "created")));
    assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(m0, "owned_by")));
    const cJSON *m1 = cJSON_GetArrayItem(data, 1);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(m1, "id")->valuestring, "up-0");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(m1, "owned_by")->valuestring, "p0");
    cJSON_Delete(j);
    http_resp_free(&r);

    r = http_req("GET", URL(f.gw, "/v1/models/up-0"), NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"id\":\"up-0\""));
    http_resp_free(&r);
    r = http_req("GET", URL(f.gw, "/v1/models/nope"), NULL, NULL);
    cJSON_Delete(expect_error(&r, 404, "not_found"));
    http_resp_free(&r);
    fx_stop(&f);
}

static void
test_gateway_chat_plain_returns_body_and_headers(void **state)
{
    (void)state;
    struct fixture f;
    fx_start(&f, NULL, NULL, NULL);
    struct http_resp r = http_req("POST", URL(f.gw, "/v1/chat/completions"), gwt_plain_body, NULL);
    assert_int_equal(r.status, 200);
    cJSON *j = cJSON_Parse(r.body);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "object")->valuestring,
                        "chat.completion");
    cJSON_Delete(j);
    assert_non_null(strstr(r.body, "tok0 tok1"));
    char v[128];
    assert_non_null(http_header(&r, "content-type", v, sizeof v));
    assert_string_equal(v, "application/json");
    assert_non_null(http_header(&r, "x-request-id", v, sizeof v));
    assert_int_equal(strncmp(v, "air-", 4), 0);
    assert_int_equal(strlen(v), 20);
    assert_non_null(http_header(&r, "x-airouter-provider", v, sizeof v));
    assert_string_equal(v, "p0");
    assert_non_null(http_header(&r, "x-airouter-model", v, sizeof v));
    assert_string_equal(v, "up-0");
    assert_non_null(http_header(&r, "x-airouter-attempts", v, sizeof v));
    assert_string_equal(v, "1");
    http_resp_free(&r);
    /* The short path works as well (OpenAI SDKs with a base URL ending in /v1
     * use the long one; some clients use the short one). */
    r = http_req("POST", URL(f.gw, "/chat/completions"), gwt_plain_body, NULL);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    fx_stop(&f);
}

static void
test_gateway_tools_request_reaches_provider(void **state)
{
    (void)state;
    struct fixture f;
    fx_start(&f, NULL, NULL, NULL);
    const char *body =
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"weather?\"}],"
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
        "\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}}}}}]}";
    struct http_resp r = http_req("POST", URL(f.gw, "/v1/chat/completions"), body, NULL);
    assert_int_equal(r.status, 200);
    char sent[4096];
    air_mock_last_request(f.m[0], sent, sizeof sent, NULL, 0);
    assert_non_null(strstr(sent, "get_weather"));
    http_resp_free(&r);
    fx_stop(&f);
}

/* ------------------------------------------------------------ streaming */

static int
count_events(const char *s, const char *prefix)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, prefix)) != NULL; p++)
        n++;
    return n;
}

static void
test_gateway_stream_relays_chunks_and_done(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.chunks = 5;
    o.chunk_delay_ms = 10;
    struct fixture f;
    fx_start(&f, &o, NULL, NULL);
    struct http_resp r = http_req("POST", URL(f.gw, "/v1/chat/completions"), gwt_stream_body, NULL);
    assert_int_equal(r.status, 200);
    char v[128];
    assert_non_null(http_header(&r, "content-type", v, sizeof v));
    assert_string_equal(v, "text/event-stream");
    assert_non_null(http_header(&r, "x-request-id", v, sizeof v));
    assert_non_null(http_header(&r, "x-airouter-model", v, sizeof v));
    assert_string_equal(v, "up-0");
    /* Provider and attempts come as headers or, when the stream started
     * before the engine finished, as trailers. */
    assert_non_null(http_header(&r, "x-airouter-provider", v, sizeof v));
    assert_string_equal(v, "p0");
    assert_non_null(http_header(&r, "x-airouter-attempts", v, sizeof v));
    assert_string_equal(v, "1");
    for (int i = 0; i < 5; i++) {
        char tok[32];
        snprintf(tok, sizeof tok, "\"content\":\"tok%d \"", i);
        assert_non_null(strstr(r.body, tok));
    }
    assert_non_null(strstr(r.body, "chat.completion.chunk"));
    /* Every event is "data: ...\n\n" and the last one is [DONE]. */
    assert_true(r.len > 14);
    assert_string_equal(r.body + r.len - 14, "data: [DONE]\n\n");
    assert_int_equal(count_events(r.body, "data: [DONE]"), 1);
    assert_null(strstr(r.body, "\"error\""));
    http_resp_free(&r);
    fx_stop(&f);
}

static void
test_gateway_stream_error_after_start_is_an_error_event_without_done(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.chunks = 8;
    o.chunk_delay_ms = 5;
    o.reset_rate = 1.0; /* cut after half the pieces */
    struct fixture f;
    fx_start(&f, &o, NULL, NULL);
    struct http_resp r = http_req("POST", URL(f.gw, "/v1/chat/completions"), gwt_stream_body, NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "tok0 "));
    assert_null(strstr(r.body, "[DONE]"));
    const char *ev = strstr(r.body, "data: {\"error\":");
    assert_non_null(ev);
    /* It is the last event, and well-formed. */
    const char *json = ev + 6;
    const char *end = strstr(json, "\n\n");
    assert_non_null(end);
    assert_string_equal(end, "\n\n");
    cJSON *j = cJSON_ParseWithLength(json, (size_t)(end - json));
    assert_non_null(j);
    assert_non_null(err_field(j, "message"));
    assert_non_null(err_field(j, "type"));
    cJSON_Delete(j);
    http_resp_free(&r);
    fx_stop(&f);
}

static void
test_gateway_stream_failure_before_content_gets_http_status(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.fail_rate = 1.0;
    o.fail_status = 500;
    struct fixture f;
    fx_start(&f, &o, NULL, "\"retry\":{\"max_attempts\":1}");
    struct http_resp r = http_req("POST", URL(f.gw, "/v1/chat/completions"), gwt_stream_body, NULL);
    cJSON_Delete(expect_error(&r, 502, "upstream"));
    http_resp_free(&r);
    fx_stop(&f);
}

/* ---------------------------------------------------------- x-ai-provider */

static void
test_gateway_x_ai_provider_pins_provider(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    struct fixture f;
    fx_start(&f, &o, &o, NULL);
    const char *h[] = {"x-ai-provider: p1", NULL};
    struct http_resp r = http_req("POST", URL(f.gw, "/v1/chat/completions"), gwt_plain_body, h);
    assert_int_equal(r.status, 200);
    char v[64];
    assert_non_null(http_header(&r, "x-airouter-provider", v, sizeof v));
    assert_string_equal(v, "p1");
    air_mock_stats_t s0, s1;
    air_mock_stats(f.m[0], &s0);
    air_mock_stats(f.m[1], &s1);
    assert_int_equal(s0.requests, 0);
    assert_int_equal(s1.requests, 1);
    http_resp_free(&r);
    /* Pinned again to the other one. */
    const char *h0[] = {"x-ai-provider: p0", NULL};
    r = http_req("POST", URL(f.gw, "/v1/chat/completions"), gwt_plain_body, h0);
    assert_non_null(http_header(&r, "x-airouter-provider", v, sizeof v));
    assert_string_equal(v, "p0");
    http_resp_free(&r);
    air_mock_stats(f.m[0], &s0);
    assert_int_equal(s0.requests, 1);
    /* An unknown provider is a 404 naming it. */
    const char *h2[] = {"x-ai-provider: nosuch", NULL};
    r = http_req("POST", URL(f.gw, "/v1/chat/completions"), gwt_plain_body, h2);
    cJSON_Delete(expect_error(&r, 404, "not_found"));
    http_resp_free(&r);
    fx_stop(&f);
}

/* ---------------------------------------------------------------- errors */

static void
test_gateway_malformed_json_400_names_position(void **state)
{
    (void)state;
    struct fixture f;
    fx_start(&f, NULL, NULL, NULL);
    struct http_resp r =
        http_req("POST", URL(f.gw, "/v1/chat/completions"), "{\"model\":\"m\",\n  \"x\" 1}", NULL);
    cJSON *j = expect_error(&r, 400, "invalid_request");
    assert_non_null(strstr(err_field(j, "message"), "line 2, column"));
    cJSON_Delete(j);
    http_resp_free(&r);
    fx_stop(&f);
}

static void
test_gateway_missing_or_wrong_field_400_names_field(void **state)
{
    (void)state;
    struct fixture f;
    fx_start(&f, NULL, NULL, NULL);
    struct http_resp r =
        http_req("POST", URL(f.gw, "/v1/chat/completions"), "{\"model\":\"m\"}", NULL);
    cJSON *j = expect_error(&r, 400, "invalid_request");
    assert_string_equal(err_field(j, "param"), "messages");
    cJSON_Delete(j);
    http_resp_free(&r);
    r = http_req("POST", URL(f.gw, "/v1/chat/completions"),
                 "{\"model\":\"m\",\"stream\":\"yes\",\"messages\":[{\"role\":\"user\","
                 "\"content\":\"x\"}]}",
                 NULL);
    j = expect_error(&r, 400, "invalid_request");
    assert_string_equal(err_field(j, "param"), "stream");
    assert_non_null(strstr(err_field(j, "message"), "stream"));
    cJSON_Delete(j);
    http_resp_free(&r);
    r = http_req("POST", URL(f.gw, "/v1/chat/completions"),
                 "{\"model\":7,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", NULL);
    j = expect_error(&r, 400, "invalid_request");
    assert_string_equal(err_field(j, "param"), "model");
    cJSON_Delete(j);
    http_resp_free(&r);
    /* The fields of the Chat Completions schema users get wrong: param is
     * the JSON path, the message says what was expected. */
    static const struct {
        const char *body, *param, *want;
    } cases[] = {
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":{\"t\":1}}]}",
         "messages[0].content", "string or an array of content parts"},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}]}", "messages[0].content", "missing"},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"tool\",\"content\":\"1\"}]}",
         "messages[0].tool_call_id", "missing"},
        {"{\"model\":\"m\",\"temperature\":\"0.2\",\"messages\":[{\"role\":\"user\","
         "\"content\":\"x\"}]}",
         "temperature", "number"},
        {"{\"model\":\"m\",\"n\":0,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", "n",
         ">= 1"},
        {"{\"model\":\"m\",\"stop\":[1],\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
         "stop[0]", "string"},
        {"{\"model\":\"m\",\"tools\":[{\"type\":\"function\",\"function\":{}}],\"messages\":"
         "[{\"role\":\"user\",\"content\":\"x\"}]}",
         "tools[0].function.name", "string"},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"c\","
         "\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":{}}}]}]}",
         "messages[0].tool_calls[0].function.arguments", "string"},
        {"{\"model\":\"m\",\"response_format\":{\"type\":1},\"messages\":[{\"role\":\"user\","
         "\"content\":\"x\"}]}",
         "response_format.type", "string"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        r = http_req("POST", URL(f.gw, "/v1/chat/completions"), cases[i].body, NULL);
        j = expect_error(&r, 400, "invalid_request");
        if (err_field(j, "param") == NULL || strcmp(err_field(j, "param"), cases[i].param) != 0)
            fail_msg("case %zu: param in %s, want %s", i, r.body, cases[i].param);
        assert_non_null(strstr(err_field(j, "message"), cases[i].want));
        cJSON_Delete(j);
        http_resp_free(&r);
    }
    /* Fields a vendor adds still pass. */
    r = http_req("POST", URL(f.gw, "/v1/chat/completions"),
                 "{\"model\":\"m\",\"top_k\":5,\"safe_prompt\":true,\"messages\":[{\"role\":"
                 "\"user\",\"content\":\"x\",\"x_vendor\":1}]}",
                 NULL);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    /* Nothing went upstream but the one valid request. */
    air_mock_stats_t s;
    air_mock_stats(f.m[0], &s);
    assert_int_equal(s.requests, 1);
    fx_stop(&f);
}

static void
test_gateway_unknown_model_404_lists_served_models(void **state)
{
    (void)state;
    struct fixture f;
    fx_start(&f, NULL, NULL, NULL);
    struct http_resp r =
        http_req("POST", URL(f.gw, "/v1/chat/completions"),
                 "{\"model\":\"nope\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", NULL);
    cJSON *j = expect_error(&r, 404, "not_found");
    const char *msg = err_field(j, "message");
    assert_non_null(strstr(msg, "nope"));
    assert_non_null(strstr(msg, "m")); /* the served list */
    cJSON_Delete(j);
    http_resp_free(&r);
    fx_stop(&f);
}

static void
test_gateway_body_over_limit_413(void **state)
{
    (void)state;
    struct fixture f;
    fx_start(&f, NULL, NULL, "\"max_body_bytes\":1024");
    char big[3000];
    int n = snprintf(big, sizeof big,
                     "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
                     "\"content\":\"");
    memset(big + n, 'x', 2500);
    snprintf(big + n + 2500, sizeof big - (size_t)n - 2500, "\"}]}");
    struct http_resp r = http_req("POST", URL(f.gw, "/v1/chat/completions"), big, NULL);
    cJSON *j = expect_error(&r, 413, "invalid_request");
    assert_string_equal(err_field(j, "code"), "body_too_large");
    cJSON_Delete(j);
    http_resp_free(&r);
    /* Without a Content-Length (chunked), the limit is enforced while
     * reading. */
    const char *h[] = {"Transfer-Encoding: chunked", NULL};
    r = http_req("POST", URL(f.gw, "/v1/chat/completions"), big, h);
    j = expect_error(&r, 413, "invalid_request");
    cJSON_Delete(j);
    http_resp_free(&r);
    /* A body under the limit still works. */
    r = http_req("POST", URL(f.gw, "/v1/chat/completions"), gwt_plain_body, NULL);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    fx_stop(&f);
}

static void
test_gateway_wrong_method_405_with_allow(void **state)
{
    (void)state;
    struct fixture f;
    fx_start(&f, NULL, NULL, NULL);
    struct http_resp r = http_req("GET", URL(f.gw, "/v1/chat/completions"), NULL, NULL);
    cJSON_Delete(expect_error(&r, 405, "invalid_request"));
    char v[64];
    assert_non_null(http_header(&r, "allow", v, sizeof v));
    assert_string_equal(v, "POST");
    http_resp_free(&r);
    r = http_req("DELETE", URL(f.gw, "/v1/models"), NULL, NULL);
    cJSON_Delete(expect_error(&r, 405, "invalid_request"));
    assert_non_null(http_header(&r, "allow", v, sizeof v));
    assert_string_equal(v, "GET, HEAD");
    http_resp_free(&r);
    r = http_req("GET", URL(f.gw, "/v2/nothing"), NULL, NULL);
    cJSON_Delete(expect_error(&r, 404, "not_found"));
    http_resp_free(&r);
    fx_stop(&f);
}

static void
test_gateway_upstream_errors_map_per_class(void **state)
{
    (void)state;
    static const struct {
        int upstream;
        long want;
        const char *type;
    } cases[] = {
        {500, 502, "upstream"},
        {401, 502, "auth"}, /* the provider's key: never a 401 to the client */
        {503, 503, "overloaded"},
        {429, 429, "rate_limited"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        air_mock_opts_t o;
        air_mock_opts_init(&o);
        o.fail_rate = 1.0;
        o.fail_status = cases[i].upstream;
        o.retry_after_s = cases[i].upstream == 429 ? 7 : -1;
        struct fixture f;
        fx_start(&f, &o, NULL, "\"retry\":{\"max_attempts\":1}");
        struct http_resp r =
            http_req("POST", URL(f.gw, "/v1/chat/completions"), gwt_plain_body, NULL);
        cJSON_Delete(expect_error(&r, cases[i].want, cases[i].type));
        char v[64];
        assert_non_null(http_header(&r, "x-request-id", v, sizeof v));
        if (cases[i].upstream == 429) {
            assert_non_null(http_header(&r, "retry-after", v, sizeof v));
            assert_string_equal(v, "7");
        }
        http_resp_free(&r);
        fx_stop(&f);
    }
}

struct busy_arg {
    uint16_t port;
    long status;
    char retry_after[16];
    char type[32];
};

static void *
busy_thread(void *p)
{
    struct busy_arg *a = p;
    char u[128];
    struct http_resp r = http_req("POST", gwt_url(u, sizeof u, a->port, "/v1/chat/completions"),
                                  gwt_plain_body, NULL);
    a->status = r.status;
    http_header(&r, "retry-after", a->retry_after, sizeof a->retry_after);
    cJSON *j = cJSON_Parse(r.body);
    const char *t = err_field(j, "type");
    snprintf(a->type, sizeof a->type, "%s", t ? t : "");
    cJSON_Delete(j);
    http_resp_free(&r);
    return NULL;
}

static void
test_gateway_engine_busy_503_with_retry_after(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.latency_ms = 300;
    struct fixture f;
    fx_start(&f, &o, NULL, "\"workers\":1,\"queue_capacity\":2,\"max_inflight\":1");
    enum { N = 8 };
    struct busy_arg a[N];
    pthread_t t[N];
    for (int i = 0; i < N; i++) {
        memset(&a[i], 0, sizeof a[i]);
        a[i].port = air__gw_port(f.gw);
        pthread_create(&t[i], NULL, busy_thread, &a[i]);
    }
    int ok = 0, busy = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        if (a[i].status == 200)
            ok++;
        if (a[i].status == 503) {
            busy++;
            assert_string_equal(a[i].retry_after, "1");
            assert_string_equal(a[i].type, "busy");
        }
    }
    assert_true(ok >= 1);
    assert_true(busy >= 1);
    assert_int_equal(ok + busy, N);
    fx_stop(&f);
}

/* ------------------------------------------------------------------ keys */

static char *
tmp_path(const char *tag)
{
    char *p = malloc(128);
    snprintf(p, 128, "/tmp/airouter-gwtest-%s-%d-XXXXXX", tag, (int)getpid());
    int fd = mkstemp(p);
    assert_true(fd >= 0);
    close(fd);
    return p;
}

static char *
slurp(const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL)
        return calloc(1, 1);
    char *b = calloc(1, 65536);
    size_t n = fread(b, 1, 65535, fp);
    b[n] = '\0';
    fclose(fp);
    return b;
}

static void
test_gateway_keys_401_for_missing_or_wrong_key(void **state)
{
    (void)state;
    setenv("GWT_KEY_A", "sk-gwtest-alpha-123", 1);
    struct fixture f;
    fx_start(&f, NULL, NULL, "\"keys\":[{\"name\":\"alpha\",\"key_env\":\"GWT_KEY_A\"}]");
    struct http_resp r = http_req("POST", URL(f.gw, "/v1/chat/completions"), gwt_plain_body, NULL);
    cJSON *j = expect_error(&r, 401, "auth");
    assert_string_equal(err_field(j, "code"), "invalid_api_key");
    cJSON_Delete(j);
    http_resp_free(&r);
    const char *wrong[] = {"Authorization: Bearer sk-gwtest-alpha-124", NULL};
    r = http_req("POST", URL(f.gw, "/v1/chat/completions"), gwt_plain_body, wrong);
    cJSON_Delete(expect_error(&r, 401, "auth"));
    http_resp_free(&r);
    const char *basic[] = {"Authorization: Basic c2stZ3d0ZXN0LWFscGhhLTEyMw==", NULL};
    r = http_req("POST", URL(f.gw, "/v1/chat/completions"), gwt_plain_body, basic);
    cJSON_Delete(expect_error(&r, 401, "auth"));
    http_resp_free(&r);
    const char *xkey[] = {"x-api-key: sk-gwtest-alpha-123", NULL};
    r = http_req("POST", URL(f.gw, "/v1/chat/completions"), gwt_plain_body, xkey);
    cJSON_Delete(expect_error(&r, 401, "auth"));
    http_resp_free(&r);
    r = http_req("GET", URL(f.gw, "/v1/models"), NULL, NULL);
    cJSON_Delete(expect_error(&r, 401, "auth"));
    http_resp_free(&r);
    const char *good[] = {"Authorization: Bearer sk-gwtest-alpha-123", NULL};
    r = http_req("POST", URL(f.gw, "/v1/chat/completions"), gwt_plain_body, good);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    /* Nothing but the good request went upstream, and the client's key is
     * never forwarded. */
    air_mock_stats_t s;
    air_mock_stats(f.m[0], &s);
    assert_int_equal(s.requests, 1);
    char auth[256];
    air_mock_last_request(f.m[0], NULL, 0, auth, sizeof auth);
    assert_null(strstr(auth, "sk-gwtest-alpha-123"));
    fx_stop(&f);
}

static void
test_gateway_key_in_query_refused_and_never_logged(void **state)
{
    (void)state;
    setenv("GWT_KEY_Q", "sk-gwtest-query-777", 1);
    char *log = tmp_path("qlog");
    char extra[512];
    snprintf(extra, sizeof extra,
             "\"keys\":[{\"name\":\"q\",\"key_env\":\"GWT_KEY_Q\"}],"
             "\"access_log\":{\"path\":\"%s\",\"level\":\"info\"}",
             log);
    air_mock_t *m = gwt_mock_plain();
    char *cfg = gwt_config(&m, 1, extra);
    struct air__gw *gw = gwt_gateway(cfg);
    struct http_resp r = http_req(
        "POST", URL(gw, "/v1/chat/completions?api_key=sk-gwtest-query-777"), gwt_plain_body, NULL);
    cJSON *j = expect_error(&r, 400, "invalid_request");
    assert_string_equal(err_field(j, "code"), "key_in_query");
    assert_null(strstr(r.body, "sk-gwtest-query-777"));
    cJSON_Delete(j);
    http_resp_free(&r);
    r = http_req("GET", URL(gw, "/v1/models?key=sk-gwtest-query-777"), NULL, NULL);
    cJSON_Delete(expect_error(&r, 400, "invalid_request"));
    http_resp_free(&r);
    /* A good request, so the log has something. */
    const char *good[] = {"Authorization: Bearer sk-gwtest-query-777", NULL};
    r = http_req("POST", URL(gw, "/v1/chat/completions"), gwt_plain_body, good);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    air__gw_stop(gw, 1000);
    char *text = slurp(log);
    assert_null(strstr(text, "sk-gwtest-query-777"));
    assert_non_null(strstr(text, "\"key\":\"q\""));
    free(text);
    unlink(log);
    free(log);
    free(cfg);
    air_mock_stop(m);
}

static void
test_gateway_key_sha256_is_accepted(void **state)
{
    (void)state;
    /* `printf %s sk-hashed-key | sha256sum` */
    struct fixture f;
    fx_start(&f, NULL, NULL,
             "\"keys\":[{\"name\":\"h\",\"key_sha256\":"
             "\"dc9bd087b73f2cb27d1429eaab83ab5aeb14e53a395cbc0077bf9dfeff6ae699\"}]");
    const char *good[] = {"Authorization: Bearer sk-hashed-key", NULL};
    struct http_resp r = http_req("POST", URL(f.gw, "/v1/chat/completions"), gwt_plain_body, good);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    const char *bad[] = {"Authorization: Bearer sk-hashed-kez", NULL};
    r = http_req("POST", URL(f.gw, "/v1/chat/completions"), gwt_plain_body, bad);
    assert_int_equal(r.status, 401);
    http_resp_free(&r);
    fx_stop(&f);
}

static void
test_gateway_rpm_limit_429_with_retry_after(void **state)
{
    (void)state;
    setenv("GWT_KEY_R", "sk-gwtest-rpm", 1);
    struct fixture f;
    fx_start(&f, NULL, NULL, "\"keys\":[{\"name\":\"r\",\"key_env\":\"GWT_KEY_R\",\"rpm\":2}]");
    const char *h[] = {"Authorization: Bearer sk-gwtest-rpm", NULL};
    for (int i = 0; i < 2; i++) {
        struct http_resp r = http_req("POST", URL(f.gw, "/v1/chat/completions"), gwt_plain_body, h);
        assert_int_equal(r.status, 200);
        http_resp_free(&r);
    }
    struct http_resp r = http_req("POST", URL(f.gw, "/v1/chat/completions"), gwt_plain_body, h);
    cJSON *j = expect_error(&r, 429, "rate_limited");
    assert_string_equal(err_field(j, "code"), "rate_limit_exceeded");
    cJSON_Delete(j);
    char v[16];
    assert_non_null(http_header(&r, "retry-after", v, sizeof v));
    assert_true(atoi(v) >= 29 && atoi(v) <= 30);
    http_resp_free(&r);
    air_mock_stats_t s;
    air_mock_stats(f.m[0], &s);
    assert_int_equal(s.requests, 2);
    fx_stop(&f);
}

static void
test_gateway_tpm_limit_429(void **state)
{
    (void)state;
    setenv("GWT_KEY_T", "sk-gwtest-tpm", 1);
    struct fixture f;
    fx_start(&f, NULL, NULL, "\"keys\":[{\"name\":\"t\",\"key_env\":\"GWT_KEY_T\",\"tpm\":10}]");
    const char *h[] = {"Authorization: Bearer sk-gwtest-tpm", NULL};
    struct http_resp r = http_req("POST", URL(f.gw, "/v1/chat/completions"), gwt_plain_body, h);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    r = http_req("POST", URL(f.gw, "/v1/chat/completions"), gwt_plain_body, h);
    cJSON *j = expect_error(&r, 429, "rate_limited");
    assert_non_null(strstr(err_field(j, "message"), "tokens"));
    cJSON_Delete(j);
    char v[16];
    assert_non_null(http_header(&r, "retry-after", v, sizeof v));
    assert_true(atoi(v) >= 1);
    http_resp_free(&r);
    fx_stop(&f);
}

static void
test_gateway_budget_estimate_over_budget_429(void **state)
{
    (void)state;
    setenv("GWT_KEY_B", "sk-gwtest-budget", 1);
    struct fixture f;
    /* Route m is priced 1000/2000 USD per Mtok: a request's estimate (its
     * prompt plus 1024 assumed output tokens) is about 2 USD. */
    fx_start(&f, NULL, NULL,
             "\"keys\":[{\"name\":\"b\",\"key_env\":\"GWT_KEY_B\",\"budget_usd\":1.0,"
             "\"budget_window\":\"hour\"}]");
    const char *h[] = {"Authorization: Bearer sk-gwtest-budget", NULL};
    struct http_resp r = http_req("POST", URL(f.gw, "/v1/chat/completions"), gwt_plain_body, h);
    cJSON *j = expect_error(&r, 429, "budget_exceeded");
    assert_string_equal(err_field(j, "code"), "budget_exceeded");
    cJSON_Delete(j);
    char v[16];
    assert_non_null(http_header(&r, "retry-after", v, sizeof v));
    assert_true(atoi(v) >= 1 && atoi(v) <= 3600);
    http_resp_free(&r);
    /* With max_tokens small enough the estimate fits. */
    const char *small = "{\"model\":\"m\",\"max_tokens\":10,\"messages\":[{\"role\":\"user\","
                        "\"content\":\"hi\"}]}";
    r = http_req("POST", URL(f.gw, "/v1/chat/completions"), small, h);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    fx_stop(&f);
}

static void
test_gateway_model_allow_list_403_and_filtered_models(void **state)
{
    (void)state;
    setenv("GWT_KEY_M", "sk-gwtest-models", 1);
    struct fixture f;
    fx_start(&f, NULL, NULL,
             "\"keys\":[{\"name\":\"mk\",\"key_env\":\"GWT_KEY_M\",\"models\":[\"up-0\"]}]");
    const char *h[] = {"Authorization: Bearer sk-gwtest-models", NULL};
    struct http_resp r = http_req("POST", URL(f.gw, "/v1/chat/completions"), gwt_plain_body, h);
    cJSON *j = expect_error(&r, 403, "auth");
    assert_string_equal(err_field(j, "code"), "model_not_allowed");
    cJSON_Delete(j);
    http_resp_free(&r);
    r = http_req("GET", URL(f.gw, "/v1/models"), NULL, h);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"id\":\"up-0\""));
    assert_null(strstr(r.body, "\"id\":\"m\""));
    http_resp_free(&r);
    air_mock_stats_t s;
    air_mock_stats(f.m[0], &s);
    assert_int_equal(s.requests, 0);
    fx_stop(&f);
}

static void
test_gateway_no_keys_refuses_non_loopback(void **state)
{
    (void)state;
    air_mock_t *m = gwt_mock_plain();
    char *cfg = gwt_config(&m, 1, "\"access_log\":{\"level\":\"off\"}");
    struct air__gw_opts o;
    memset(&o, 0, sizeof o);
    o.config_text = cfg;
    o.listen = "0.0.0.0:0";
    o.quiet = 1;
    struct air__gw *gw = NULL;
    char err[512];
    assert_int_equal(air__gw_start(&o, &gw, err, sizeof err), AIR_E_CONFIG);
    assert_null(gw);
    assert_non_null(strstr(err, "not a loopback address"));
    free(cfg);
    air_mock_stop(m);
}

/* --------------------------------------------------------------- metrics */

static char *
scrape(struct air__gw *gw)
{
    struct http_resp r = http_req("GET", URL(gw, "/metrics"), NULL, NULL);
    assert_int_equal(r.status, 200);
    char v[128];
    assert_non_null(http_header(&r, "content-type", v, sizeof v));
    assert_non_null(strstr(v, "text/plain"));
    char *body = r.body;
    r.body = NULL;
    http_resp_free(&r);
    return body;
}

static void
test_gateway_metrics_valid_prometheus_and_count_requests(void **state)
{
    (void)state;
    struct fixture f;
    fx_start(&f, NULL, NULL, NULL);
    for (int i = 0; i < 3; i++) {
        struct http_resp r =
            http_req("POST", URL(f.gw, "/v1/chat/completions"), gwt_plain_body, NULL);
        assert_int_equal(r.status, 200);
        http_resp_free(&r);
    }
    struct http_resp r = http_req("POST", URL(f.gw, "/v1/chat/completions"), gwt_stream_body, NULL);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    r = http_req("POST", URL(f.gw, "/v1/chat/completions"),
                 "{\"model\":\"nope\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", NULL);
    assert_int_equal(r.status, 404);
    http_resp_free(&r);
    r = http_req("POST", URL(f.gw, "/v1/chat/completions"), "{bad", NULL);
    assert_int_equal(r.status, 400);
    http_resp_free(&r);

    /* Requests are recorded when their last reference goes, which may be
     * just after the client has its answer: poll briefly. */
    char *text = NULL;
    uint64_t until = gwt_now_ms() + 3000;
    for (;;) {
        text = scrape(f.gw);
        double n = prom_sum(text, "airouter_request_duration_seconds_count{", NULL, NULL);
        if (n >= 6 || gwt_now_ms() > until)
            break;
        free(text);
        gwt_sleep_ms(20);
    }
    const char *why = prom_validate(text);
    if (why != NULL)
        fail_msg("invalid Prometheus text: %s\n%s", why, text);
    assert_true(prom_sum(text, "airouter_requests_total{", "provider=\"p0\"", "status=\"200\"") ==
                4);
    assert_true(prom_sum(text, "airouter_requests_total{", "status=\"404\"", NULL) == 1);
    assert_true(prom_sum(text, "airouter_requests_total{", "status=\"400\"", NULL) == 1);
    assert_true(prom_sum(text, "airouter_request_duration_seconds_count{", NULL, NULL) == 6);
    assert_true(prom_sum(text, "airouter_time_to_first_token_seconds_count{", NULL, NULL) == 4);
    assert_true(prom_sum(text, "airouter_router_overhead_seconds_count{", NULL, NULL) >= 4);
    /* The mock reports 8 completion tokens per answer. */
    assert_true(prom_sum(text, "airouter_tokens_total{", "direction=\"out\"", NULL) == 32);
    assert_true(prom_sum(text, "airouter_tokens_total{", "direction=\"in\"", NULL) > 0);
    assert_true(prom_sum(text, "airouter_streams_total{", NULL, NULL) == 1);
    assert_non_null(strstr(text, "\nairouter_in_flight_requests "));
    assert_non_null(strstr(text, "\nairouter_queue_depth "));
    /* Every request has completed: nothing in flight in the engine. */
    assert_non_null(strstr(text, "\nairouter_engine_in_flight_requests 0\n"));
    assert_non_null(strstr(text, "# TYPE airouter_request_duration_seconds histogram"));
    /* Per-provider figures from the engine's stats. */
    assert_non_null(strstr(text, "\nairouter_deployment_requests_total{deployment=\"p0/up-0\"} "));
    assert_non_null(strstr(text, "airouter_deployment_health_state{deployment=\"p0/up-0\""));
    assert_non_null(strstr(text, "\nairouter_deployment_inflight{deployment=\"p0/up-0\"} 0\n"));
    assert_null(strstr(text, "api_key"));
    free(text);
    fx_stop(&f);
}

static void
test_gateway_prom_validator_rejects_bad_text(void **state)
{
    (void)state;
    assert_null(prom_validate("# HELP a_total x\n# TYPE a_total counter\na_total{k=\"v\"} 1\n"));
    assert_non_null(prom_validate("a_total 1\n"));                                  /* no TYPE */
    assert_non_null(prom_validate("# TYPE a counter\na{k=v} 1\n"));                 /* unquoted */
    assert_non_null(prom_validate("# TYPE a counter\na 1\n# TYPE b gauge\na 2\n")); /* split */
    assert_non_null(prom_validate("# TYPE a counter\na x\n"));                      /* value */
    assert_non_null(prom_validate("# TYPE h histogram\nh_bucket{le=\"1\"} 2\n"
                                  "h_bucket{le=\"+Inf\"} 1\nh_count 1\nh_sum 0\n"));
    assert_non_null(prom_validate("# TYPE 1a gauge\n1a 1\n"));
}

/* ------------------------------------------------------------ access log */

static void
test_gateway_access_log_one_json_line_per_request(void **state)
{
    (void)state;
    char *log = tmp_path("alog");
    char extra[512];
    snprintf(extra, sizeof extra, "\"access_log\":{\"path\":\"%s\",\"level\":\"info\"}", log);
    air_mock_t *m = gwt_mock_plain();
    char *cfg = gwt_config(&m, 1, extra);
    struct air__gw *gw = gwt_gateway(cfg);
    struct http_resp r = http_req("POST", URL(gw, "/v1/chat/completions"), gwt_plain_body, NULL);
    assert_int_equal(r.status, 200);
    char id[64];
    assert_non_null(http_header(&r, "x-request-id", id, sizeof id));
    http_resp_free(&r);
    r = http_req("POST", URL(gw, "/v1/chat/completions"),
                 "{\"model\":\"nope\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", NULL);
    http_resp_free(&r);
    air__gw_stop(gw, 1000);
    char *text = slurp(log);
    int lines = 0;
    int saw_ok = 0, saw_404 = 0;
    for (char *p = text; *p;) {
        char *e = strchr(p, '\n');
        assert_non_null(e);
        *e = '\0';
        cJSON *j = cJSON_Parse(p);
        if (j == NULL)
            fail_msg("not JSON: %s", p);
        lines++;
        static const char *const fields[] = {"ts",         "request_id", "key",     "route",
                                             "provider",   "model",      "status",  "error_class",
                                             "attempts",   "latency_ms", "ttft_ms", "tokens_in",
                                             "tokens_out", "cost_usd"};
        for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
            if (cJSON_GetObjectItemCaseSensitive(j, fields[i]) == NULL)
                fail_msg("field %s missing in %s", fields[i], p);
        int st = cJSON_GetObjectItemCaseSensitive(j, "status")->valueint;
        if (st == 200) {
            saw_ok = 1;
            assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "request_id")->valuestring, id);
            assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "provider")->valuestring, "p0");
            assert_int_equal(cJSON_GetObjectItemCaseSensitive(j, "tokens_out")->valueint, 8);
            assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "error_class")));
        } else if (st == 404) {
            saw_404 = 1;
            assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "error_class")->valuestring,
                                "not_found");
        }
        cJSON_Delete(j);
        p = e + 1;
    }
    assert_int_equal(lines, 2);
    assert_true(saw_ok && saw_404);
    free(text);
    unlink(log);
    free(log);
    free(cfg);
    air_mock_stop(m);
}

static void
test_gateway_access_log_level_error_writes_only_failures(void **state)
{
    (void)state;
    char *log = tmp_path("alogerr");
    char extra[512];
    snprintf(extra, sizeof extra, "\"access_log\":{\"path\":\"%s\",\"level\":\"error\"}", log);
    air_mock_t *m = gwt_mock_plain();
    char *cfg = gwt_config(&m, 1, extra);
    struct air__gw *gw = gwt_gateway(cfg);
    for (int i = 0; i < 2; i++) {
        struct http_resp r =
            http_req("POST", URL(gw, "/v1/chat/completions"), gwt_plain_body, NULL);
        assert_int_equal(r.status, 200);
        http_resp_free(&r);
    }
    struct http_resp r = http_req("GET", URL(gw, "/v1/models"), NULL, NULL);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    r = http_req("POST", URL(gw, "/v1/chat/completions"),
                 "{\"model\":\"nope\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", NULL);
    assert_int_equal(r.status, 404);
    http_resp_free(&r);
    r = http_req("POST", URL(gw, "/v1/chat/completions"), "{\"model\":\"m\"}", NULL);
    assert_int_equal(r.status, 400);
    http_resp_free(&r);
    air__gw_stop(gw, 1000);
    char *text = slurp(log);
    int lines = 0, saw_404 = 0, saw_400 = 0;
    for (char *p = text; *p;) {
        char *e = strchr(p, '\n');
        assert_non_null(e);
        *e = '\0';
        cJSON *j = cJSON_Parse(p);
        if (j == NULL)
            fail_msg("not JSON: %s", p);
        int st = cJSON_GetObjectItemCaseSensitive(j, "status")->valueint;
        if (st < 400)
            fail_msg("level \"error\" logged a success: %s", p);
        saw_404 |= st == 404;
        saw_400 |= st == 400;
        assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "error_class")));
        cJSON_Delete(j);
        lines++;
        p = e + 1;
    }
    assert_int_equal(lines, 2);
    assert_true(saw_404 && saw_400);
    free(text);
    unlink(log);
    free(log);
    free(cfg);
    air_mock_stop(m);
}

/* x-airouter-tags: the tags reach the engine (its per-tag totals), the
 * access log and nobody upstream; too many or too long is a 400. */
static void
test_gateway_tags_header_counts_logs_and_stays_local(void **state)
{
    (void)state;
    char *log = tmp_path("alogtags");
    char extra[512];
    snprintf(extra, sizeof extra, "\"access_log\":{\"path\":\"%s\",\"level\":\"info\"}", log);
    air_mock_t *m = gwt_mock_plain();
    char *cfg = gwt_config(&m, 1, extra);
    struct air__gw *gw = gwt_gateway(cfg);
    const char *const hdrs[] = {"x-airouter-tags:  team=search ,, feature=sum-7 ", NULL};
    struct http_resp r = http_req("POST", URL(gw, "/v1/chat/completions"), gwt_plain_body, hdrs);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    char sent[4096];
    air_mock_last_request(m, sent, sizeof sent, NULL, 0);
    assert_null(strstr(sent, "team=search"));
    char hv[256];
    assert_int_equal(air_mock_last_header(m, "x-airouter-tags", hv, sizeof hv), 0);

    char *js = air_stats_json(air__gw_engine(gw));
    cJSON *st = cJSON_Parse(js);
    free(js);
    const cJSON *tags = cJSON_GetObjectItemCaseSensitive(st, "tags");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(tags, "team=search");
    assert_non_null(t);
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(t, "requests")->valueint, 1);
    assert_non_null(cJSON_GetObjectItemCaseSensitive(tags, "feature=sum-7"));
    assert_int_equal(cJSON_GetArraySize(tags), 2);
    cJSON_Delete(st);
    /* ... and on /metrics, one sample per tag. */
    char *text0 = scrape(gw);
    const char *why = prom_validate(text0);
    if (why != NULL)
        fail_msg("invalid Prometheus text: %s\n%s", why, text0);
    assert_true(prom_sum(text0, "airouter_tag_requests_total{", "tag=\"team=search\"", NULL) == 1);
    assert_true(prom_sum(text0, "airouter_tag_completion_tokens_total{", "tag=\"feature=sum-7\"",
                         NULL) == 8);
    free(text0);

    char many[1024] = "x-airouter-tags: ";
    for (int i = 0; i < 17; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "t%d,", i);
    const char *const h2[] = {many, NULL};
    r = http_req("POST", URL(gw, "/v1/chat/completions"), gwt_plain_body, h2);
    cJSON *e = expect_error(&r, 400, "invalid_request");
    assert_string_equal(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(e, "error"), "param")
            ->valuestring,
        "x-airouter-tags");
    cJSON_Delete(e);
    http_resp_free(&r);
    air__gw_stop(gw, 1000);

    char *text = slurp(log);
    cJSON *line = cJSON_Parse(text); /* the first line: the tagged request */
    assert_non_null(line);
    const cJSON *lt = cJSON_GetObjectItemCaseSensitive(line, "tags");
    assert_int_equal(cJSON_GetArraySize(lt), 2);
    assert_string_equal(cJSON_GetArrayItem(lt, 0)->valuestring, "team=search");
    assert_string_equal(cJSON_GetArrayItem(lt, 1)->valuestring, "feature=sum-7");
    cJSON_Delete(line);
    free(text);
    unlink(log);
    free(log);
    free(cfg);
    air_mock_stop(m);
}

/* ------------------------------------------------------ connection limits */

/* Milliseconds until the gateway closes fd (by EOF or reset), or -1 when it
 * neither closes nor answers within limit_ms (or answers). */
static long
ms_until_closed(int fd, uint64_t since, int limit_ms)
{
    char buf[512];
    ssize_t got = gwt_recv(fd, buf, sizeof buf, limit_ms);
    if (got > 0 || got == -2)
        return -1;
    return (long)(gwt_now_ms() - since);
}

static void
test_gateway_idle_client_is_timed_out(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.latency_ms = 1600; /* longer than the client timeout */
    struct fixture f;
    fx_start(&f, &o, NULL, "\"client_timeout_ms\":1000");
    uint16_t port = air__gw_port(f.gw);
    uint64_t t0 = gwt_now_ms();
    /* A connection that never sends a byte, */
    int silent = gwt_connect(port);
    /* one that stops half-way through the request head, */
    int slow = gwt_connect(port);
    assert_true(silent >= 0 && slow >= 0);
    const char *part = "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    assert_int_equal(send(slow, part, strlen(part), MSG_NOSIGNAL), (ssize_t)strlen(part));
    /* and a kept-alive one idle after its response. */
    int kept = gwt_connect(port);
    assert_true(kept >= 0);
    char body[4096];
    assert_int_equal(gwt_raw_request(kept, "GET", "/healthz", NULL, body, sizeof body), 200);
    uint64_t t_kept = gwt_now_ms();
    long a = ms_until_closed(silent, t0, 5000);
    long b = ms_until_closed(slow, t0, 5000);
    long c = ms_until_closed(kept, t_kept, 5000);
    close(silent);
    close(slow);
    close(kept);
    if (a < 0 || b < 0 || c < 0)
        fail_msg("not closed: silent %ld ms, slow %ld ms, kept-alive %ld ms", a, b, c);
    /* About the timeout (rounded to seconds), not at once. */
    assert_true(a >= 900 && a < 4000);
    assert_true(b >= 900 && b < 4000);
    assert_true(c >= 900 && c < 4000);
    /* A request waiting for the engine is not an idle client. */
    struct http_resp r = http_req("POST", URL(f.gw, "/v1/chat/completions"), gwt_plain_body, NULL);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    fx_stop(&f);
}

static void
test_gateway_max_connections_refuses_at_accept(void **state)
{
    (void)state;
    struct fixture f;
    fx_start(&f, NULL, NULL, "\"max_connections\":2");
    uint16_t port = air__gw_port(f.gw);
    char body[65536];
    int a = gwt_connect(port), b = gwt_connect(port);
    assert_true(a >= 0 && b >= 0);
    assert_int_equal(gwt_raw_request(a, "GET", "/healthz", NULL, body, sizeof body), 200);
    assert_int_equal(gwt_raw_request(b, "GET", "/healthz", NULL, body, sizeof body), 200);
    /* The third is accepted by the kernel, then closed without a response,
     * at once (not left waiting in the listen queue). */
    for (int k = 0; k < 2; k++) {
        int c = gwt_connect(port);
        assert_true(c >= 0);
        uint64_t t0 = gwt_now_ms();
        const char *req = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
        ssize_t sent = send(c, req, strlen(req), MSG_NOSIGNAL);
        (void)sent; /* may already fail with a reset */
        long ms = ms_until_closed(c, t0, 3000);
        close(c);
        if (ms < 0)
            fail_msg("connection %d over the limit was not closed", k + 3);
        assert_true(ms < 1000);
    }
    /* The two open ones still work; the refusals are counted. */
    assert_int_equal(gwt_raw_request(b, "GET", "/healthz", NULL, body, sizeof body), 200);
    assert_int_equal(gwt_raw_request(a, "GET", "/metrics", NULL, body, sizeof body), 200);
    assert_null(prom_validate(body));
    assert_true(prom_sum(body, "airouter_connections_refused_total", NULL, NULL) == 2);
    assert_true(prom_sum(body, "airouter_open_connections", NULL, NULL) == 2);
    /* Once one closes, a new connection is served again. */
    close(a);
    int st = 0;
    uint64_t t0 = gwt_now_ms();
    while (st != 200 && gwt_now_ms() - t0 < 3000) {
        int d = gwt_connect(port);
        assert_true(d >= 0);
        st = gwt_raw_request(d, "GET", "/healthz", NULL, body, sizeof body);
        close(d);
        if (st != 200)
            gwt_sleep_ms(20);
    }
    assert_int_equal(st, 200);
    close(b);
    fx_stop(&f);
}

/* --------------------------------------------------------------- hang-ups */

struct abort_ctx {
    int got_content;
};

static size_t
abort_on_content(char *d, size_t sz, size_t n, void *ud)
{
    struct abort_ctx *c = ud;
    if (memmem(d, sz * n, "tok0", 4) != NULL) {
        c->got_content = 1;
        return 0; /* abort the transfer: curl closes the connection */
    }
    return sz * n;
}

static void
test_gateway_client_disconnect_mid_stream_cancels_upstream(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.chunks = 20;
    o.chunk_delay_ms = 60; /* the whole stream takes 1200 ms */
    struct fixture f;
    fx_start(&f, &o, NULL, NULL);
    uint64_t t0 = gwt_now_ms();
    CURL *e = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    struct abort_ctx ac = {0};
    curl_easy_setopt(e, CURLOPT_URL, URL(f.gw, "/v1/chat/completions"));
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, gwt_stream_body);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, abort_on_content);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &ac);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    CURLcode rc = curl_easy_perform(e);
    curl_slist_free_all(h);
    curl_easy_cleanup(e); /* closes the connection */
    assert_int_equal(rc, CURLE_WRITE_ERROR);
    assert_true(ac.got_content);
    /* The engine cancels the upstream request long before it would end. */
    while (engine_errors(f.gw, "cancelled") < 1 && gwt_now_ms() - t0 < 2000)
        gwt_sleep_ms(10);
    assert_true(engine_errors(f.gw, "cancelled") == 1);
    assert_true(gwt_now_ms() - t0 < 1000);
    /* After the time the stream would have taken, the mock never finished
     * it: its connection was closed under it. */
    while (gwt_now_ms() - t0 < 1500)
        gwt_sleep_ms(20);
    air_mock_stats_t s;
    air_mock_stats(f.m[0], &s);
    assert_int_equal(s.streams, 1);
    assert_int_equal(s.ok, 0);
    char *text = scrape(f.gw);
    assert_true(prom_sum(text, "airouter_client_disconnects_total", NULL, NULL) == 1);
    free(text);
    fx_stop(&f);
}

static void
test_gateway_client_disconnect_while_waiting_cancels_upstream(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.latency_ms = 1500;
    struct fixture f;
    fx_start(&f, &o, NULL, NULL);
    uint64_t t0 = gwt_now_ms();
    CURL *e = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(e, CURLOPT_URL, URL(f.gw, "/v1/chat/completions"));
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, gwt_plain_body);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 150L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    struct http_resp sink;
    memset(&sink, 0, sizeof sink);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, gwt_on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &sink);
    CURLcode rc = curl_easy_perform(e);
    curl_slist_free_all(h);
    curl_easy_cleanup(e);
    http_resp_free(&sink);
    assert_int_equal(rc, CURLE_OPERATION_TIMEDOUT);
    /* The suspended request noticed the hang-up and cancelled. */
    while (engine_errors(f.gw, "cancelled") < 1 && gwt_now_ms() - t0 < 2000)
        gwt_sleep_ms(10);
    assert_true(engine_errors(f.gw, "cancelled") == 1);
    assert_true(gwt_now_ms() - t0 < 1200);
    while (gwt_now_ms() - t0 < 1800)
        gwt_sleep_ms(20);
    air_mock_stats_t s;
    air_mock_stats(f.m[0], &s);
    assert_int_equal(s.requests, 1);
    assert_int_equal(s.ok, 0);
    assert_int_equal(air__gw_inflight(f.gw), 0);
    fx_stop(&f);
}

/* -------------------------------------------------------------- draining */

struct bg {
    uint16_t port;
    long status;
    char type[32];
};

static void *
bg_request(void *p)
{
    struct bg *b = p;
    char u[128];
    struct http_resp r = http_req("POST", gwt_url(u, sizeof u, b->port, "/v1/chat/completions"),
                                  gwt_plain_body, NULL);
    b->status = r.status;
    cJSON *j = cJSON_Parse(r.body);
    const char *t = err_field(j, "type");
    snprintf(b->type, sizeof b->type, "%s", t ? t : "");
    cJSON_Delete(j);
    http_resp_free(&r);
    return NULL;
}

static void
test_gateway_stop_drains_in_flight_requests(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.latency_ms = 300;
    air_mock_t *m = gwt_mock(&o);
    char *cfg = gwt_config(&m, 1, "\"access_log\":{\"level\":\"off\"}");
    struct air__gw *gw = gwt_gateway(cfg);
    struct bg b = {.port = air__gw_port(gw)};
    pthread_t t;
    pthread_create(&t, NULL, bg_request, &b);
    while (air__gw_inflight(gw) == 0)
        gwt_sleep_ms(5);
    air__gw_stop(gw, 3000);
    pthread_join(t, NULL);
    assert_int_equal(b.status, 200);
    /* The listener is gone. */
    struct http_resp r =
        http_req("GET", gwt_url(url_buf, sizeof url_buf, b.port, "/healthz"), NULL, NULL);
    assert_int_equal(r.status, 0);
    http_resp_free(&r);
    free(cfg);
    air_mock_stop(m);
}

struct stopper {
    struct air__gw *gw;
    atomic_int started;
};

static void *
bg_stop(void *p)
{
    struct stopper *s = p;
    atomic_store(&s->started, 1);
    air__gw_stop(s->gw, 3000);
    return NULL;
}

static void
test_gateway_draining_refuses_new_connections(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.latency_ms = 800;
    air_mock_t *m = gwt_mock(&o);
    char *cfg = gwt_config(&m, 1, "\"access_log\":{\"level\":\"off\"}");
    struct air__gw *gw = gwt_gateway(cfg);
    struct bg b = {.port = air__gw_port(gw)};
    pthread_t t, st;
    pthread_create(&t, NULL, bg_request, &b);
    while (air__gw_inflight(gw) == 0)
        gwt_sleep_ms(5);
    struct stopper s = {.gw = gw};
    pthread_create(&st, NULL, bg_stop, &s);
    while (atomic_load(&s.started) == 0)
        gwt_sleep_ms(1);
    gwt_sleep_ms(100);
    /* The request in flight is still draining, but a new connection is
     * closed without an answer. */
    struct http_resp r =
        http_req("GET", gwt_url(url_buf, sizeof url_buf, b.port, "/healthz"), NULL, NULL);
    assert_int_equal(r.status, 0);
    http_resp_free(&r);
    pthread_join(t, NULL);
    pthread_join(st, NULL);
    assert_int_equal(b.status, 200);
    free(cfg);
    air_mock_stop(m);
}

static void
test_gateway_stop_past_deadline_answers_shutdown(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.latency_ms = 3000;
    air_mock_t *m = gwt_mock(&o);
    char *cfg = gwt_config(&m, 1, "\"access_log\":{\"level\":\"off\"}");
    struct air__gw *gw = gwt_gateway(cfg);
    struct bg b = {.port = air__gw_port(gw)};
    pthread_t t;
    pthread_create(&t, NULL, bg_request, &b);
    while (air__gw_inflight(gw) == 0)
        gwt_sleep_ms(5);
    gwt_sleep_ms(50);
    uint64_t t0 = gwt_now_ms();
    air__gw_stop(gw, 100);
    assert_true(gwt_now_ms() - t0 < 2000);
    pthread_join(t, NULL);
    assert_int_equal(b.status, 503);
    assert_string_equal(b.type, "shutdown");
    free(cfg);
    air_mock_stop(m);
}

int
main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gateway_healthz_returns_ok),
        cmocka_unit_test(test_gateway_models_list_and_retrieve),
        cmocka_unit_test(test_gateway_chat_plain_returns_body_and_headers),
        cmocka_unit_test(test_gateway_tools_request_reaches_provider),
        cmocka_unit_test(test_gateway_stream_relays_chunks_and_done),
        cmocka_unit_test(test_gateway_stream_error_after_start_is_an_error_event_without_done),
        cmocka_unit_test(test_gateway_stream_failure_before_content_gets_http_status),
        cmocka_unit_test(test_gateway_x_ai_provider_pins_provider),
        cmocka_unit_test(test_gateway_malformed_json_400_names_position),
        cmocka_unit_test(test_gateway_missing_or_wrong_field_400_names_field),
        cmocka_unit_test(test_gateway_unknown_model_404_lists_served_models),
        cmocka_unit_test(test_gateway_body_over_limit_413),
        cmocka_unit_test(test_gateway_wrong_method_405_with_allow),
        cmocka_unit_test(test_gateway_upstream_errors_map_per_class),
        cmocka_unit_test(test_gateway_engine_busy_503_with_retry_after),
        cmocka_unit_test(test_gateway_keys_401_for_missing_or_wrong_key),
        cmocka_unit_test(test_gateway_key_in_query_refused_and_never_logged),
        cmocka_unit_test(test_gateway_key_sha256_is_accepted),
        cmocka_unit_test(test_gateway_rpm_limit_429_with_retry_after),
        cmocka_unit_test(test_gateway_tpm_limit_429),
        cmocka_unit_test(test_gateway_budget_estimate_over_budget_429),
        cmocka_unit_test(test_gateway_model_allow_list_403_and_filtered_models),
        cmocka_unit_test(test_gateway_no_keys_refuses_non_loopback),
        cmocka_unit_test(test_gateway_metrics_valid_prometheus_and_count_requests),
        cmocka_unit_test(test_gateway_prom_validator_rejects_bad_text),
        cmocka_unit_test(test_gateway_access_log_one_json_line_per_request),
        cmocka_unit_test(test_gateway_access_log_level_error_writes_only_failures),
        cmocka_unit_test(test_gateway_tags_header_counts_logs_and_stays_local),
        cmocka_unit_test(test_gateway_idle_client_is_timed_out),
        cmocka_unit_test(test_gateway_max_connections_refuses_at_accept),
        cmocka_unit_test(test_gateway_client_disconnect_mid_stream_cancels_upstream),
        cmocka_unit_test(test_gateway_client_disconnect_while_waiting_cancels_upstream),
        cmocka_unit_test(test_gateway_stop_drains_in_flight_requests),
        cmocka_unit_test(test_gateway_draining_refuses_new_connections),
        cmocka_unit_test(test_gateway_stop_past_deadline_answers_shutdown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
