/*
 * test_roundtrip.c - the engine against the mock speaking each vendor's wire
 * format (Anthropic, Gemini, Azure OpenAI), over real sockets on 127.0.0.1.
 *
 * DESIGN: each test starts mocks in-process with the format and a record
 * file (the library form of `airouter mock --format F --record FILE`), and a
 * router whose providers of the matching kind point at them, with keys read
 * from environment variables. It then checks both ends of the trip: the
 * unified result the caller gets (content, tool calls in OpenAI's shape,
 * finish reason, usage) and, from the record file, what went upstream (path
 * and query, the vendor's key header present and masked, the body translated:
 * Anthropic `system`/`max_tokens`/`tools`, Gemini `contents`/
 * `systemInstruction`/`functionDeclarations`, ...). Vendor errors are driven
 * through the mock's fault options: Anthropic's 529 fails over, Gemini's 429
 * is rate limiting, and an error event in the middle of a stream reaches the
 * caller as an error. Gemini's mid-stream error is a raw JSON object outside
 * any `data:` field (spec 3.4, 6.6 step 6); core hands those lines to the
 * adapter's classify. To pin those exact bytes, whatever the mock writes, a
 * tiny one-shot HTTP server in this file (rawsrv) also sends a canned stream.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>

#include "airouter.h"
#include "alloc.h"
#include "buf.h"
#include "mock.h"

#define CHUNKS 3

/* One vendor: the mock's format and the provider that talks to it. */
struct vendor {
    const char *format;     /* mock format = provider kind */
    const char *name;       /* provider name in the config */
    const char *model;      /* upstream model (Azure: the deployment) */
    const char *key_env;    /* environment variable with the key */
    const char *key;        /* its value */
    const char *key_header; /* where the key goes, as the record names it */
    const char *extra;      /* more provider config, or NULL */
};

static const struct vendor ANT = {
    .format = "anthropic",
    .name = "ant",
    .model = "claude-mock",
    .key_env = "AIR_RT_ANT_KEY",
    .key = "sk-ant-rt-secret-a1b2",
    .key_header = "x-api-key",
};
static const struct vendor GEM = {
    .format = "gemini",
    .name = "gem",
    .model = "gemini-mock",
    .key_env = "AIR_RT_GEM_KEY",
    .key = "AIzaRt-secret-c3d4",
    .key_header = "x-goog-api-key",
};
static const struct vendor AZ = {
    .format = "azure",
    .name = "az",
    .model = "gpt4o-dep",
    .key_env = "AIR_RT_AZ_KEY",
    .key = "az-rt-secret-e5f6",
    .key_header = "api-key",
    .extra = "\"api_version\":\"2024-10-21\"",
};

/* Fixture: up to two mocks with their record files, and the router. */
struct rt {
    char rec[2][64];
    air_mock_t *m[2];
    air_t *r;
};

static int
setup(void **state)
{
    struct rt *t = air__calloc(1, sizeof *t);
    assert_non_null(t);
    for (int i = 0; i < 2; i++) {
        snprintf(t->rec[i], sizeof t->rec[i], "/tmp/air-roundtrip-XXXXXX");
        int fd = mkstemp(t->rec[i]);
        assert_true(fd >= 0);
        close(fd);
    }
    *state = t;
    return 0;
}

static int
teardown(void **state)
{
    struct rt *t = *state;
    air_free(t->r, 1000);
    for (int i = 0; i < 2; i++) {
        air_mock_stop(t->m[i]);
        unlink(t->rec[i]);
    }
    air__free(t);
    return 0;
}

/* Start mock i for vendor v; base may carry fault options. */
static air_mock_t *
start_mock(struct rt *t, int i, const struct vendor *v, const air_mock_opts_t *base)
{
    air_mock_opts_t o;
    if (base != NULL) {
        o = *base;
    } else {
        air_mock_opts_init(&o);
        o.chunks = CHUNKS;
    }
    o.format = v->format;
    o.api_key = v->key;
    o.record_path = t->rec[i];
    char err[256] = "";
    if (air_mock_start(&o, &t->m[i], err, sizeof err) != 0)
        fail_msg("air_mock_start(%s): %s", v->format, err);
    return t->m[i];
}

static void
put_provider(air_buf_t *b, const struct vendor *v, unsigned port)
{
    air__buf_printf(b,
                    "{\"name\":\"%s\",\"kind\":\"%s\",\"base_url\":\"http://127.0.0.1:%u\","
                    "\"api_key_env\":\"%s\"%s%s}",
                    v->name, v->format, port, v->key_env, v->extra ? "," : "",
                    v->extra ? v->extra : "");
}

/* A router with route "chat" over v0 (and v1 after it, in priority order),
 * pointing at ports p0 and p1. */
static void
start_router_ports(struct rt *t, const struct vendor *v0, unsigned p0, const struct vendor *v1,
                   unsigned p1)
{
    air_buf_t b = AIR_BUF_INIT;
    air__buf_puts(&b, "{\"workers\":2,\"retry\":{\"max_attempts\":3,\"backoff_base_ms\":0,"
                      "\"backoff_cap_ms\":0},\"providers\":[");
    put_provider(&b, v0, p0);
    if (v1 != NULL) {
        air__buf_putc(&b, ',');
        put_provider(&b, v1, p1);
    }
    air__buf_printf(&b,
                    "],\"routes\":[{\"model\":\"chat\",\"strategy\":\"priority\",\"targets\":["
                    "{\"provider\":\"%s\",\"model\":\"%s\"}",
                    v0->name, v0->model);
    if (v1 != NULL)
        air__buf_printf(&b, ",{\"provider\":\"%s\",\"model\":\"%s\"}", v1->name, v1->model);
    air__buf_puts(&b, "]}]}");
    assert_false(b.oom);
    char err[512] = "";
    if (air_new(b.data, &t->r, err, sizeof err) != AIR_OK)
        fail_msg("air_new: %s (%s)", err, b.data);
    air__buf_free(&b);
}

/* The same over the fixture's mocks 0 and 1. */
static void
start_router(struct rt *t, const struct vendor *v0, const struct vendor *v1)
{
    start_router_ports(t, v0, (unsigned)air_mock_port(t->m[0]), v1,
                       v1 != NULL ? (unsigned)air_mock_port(t->m[1]) : 0);
}

/* ------------------------------------------------------------------ requests */

static const char tools_json[] =
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
    "\"description\":\"Current weather\",\"parameters\":{\"type\":\"object\","
    "\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"]}}}]";

/* The tool call the mock answers with, and its completion tokens
 * ((name + arguments bytes) / 4 + 1, mock.h). */
static const char want_args[] = "{\"city\":\"mock\"}";
#define TOOL_TOKENS ((sizeof "get_weather" - 1 + sizeof want_args - 1) / 4 + 1)

static void
make_body(air_buf_t *b, int stream, int tools)
{
    air__buf_reset(b);
    air__buf_puts(b, "{\"model\":\"chat\",\"messages\":["
                     "{\"role\":\"system\",\"content\":\"You are terse.\"},"
                     "{\"role\":\"user\",\"content\":\"What's the weather in Oslo?\"}],"
                     "\"stop\":[\"END\"],\"temperature\":0.5");
    if (stream)
        air__buf_puts(b, ",\"stream\":true,\"stream_options\":{\"include_usage\":true}");
    if (tools) {
        air__buf_putc(b, ',');
        air__buf_puts(b, tools_json);
    }
    air__buf_putc(b, '}');
    assert_false(b->oom);
}

/* What the chunk callback saw. No assertions in the callback: it runs on a
 * worker thread; the test checks these fields afterwards. */
struct got {
    pthread_mutex_t mu;
    air_buf_t text; /* content deltas, joined */
    air_buf_t args; /* tool_calls[0] argument deltas, joined */
    char tool_id[128], tool_name[64], finish[32];
    int nchunks, role_first, usage_chunks, ids, bad_json, tool_index_bad;
    double prompt, completion, total;
};

static void
on_chunk(const char *json, size_t len, void *ud)
{
    struct got *g = ud;
    pthread_mutex_lock(&g->mu);
    cJSON *j = cJSON_ParseWithLength(json, len);
    if (!cJSON_IsObject(j)) {
        g->bad_json++;
        goto out;
    }
    const cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    const cJSON *d = cJSON_GetObjectItem(c0, "delta");
    const cJSON *role = cJSON_GetObjectItem(d, "role");
    if (g->nchunks == 0 && cJSON_IsString(role) && strcmp(role->valuestring, "assistant") == 0)
        g->role_first = 1;
    const cJSON *content = cJSON_GetObjectItem(d, "content");
    if (cJSON_IsString(content))
        air__buf_puts(&g->text, content->valuestring);
    const cJSON *tc;
    cJSON_ArrayForEach(tc, cJSON_GetObjectItem(d, "tool_calls"))
    {
        const cJSON *idx = cJSON_GetObjectItem(tc, "index");
        if (!cJSON_IsNumber(idx) || idx->valueint != 0)
            g->tool_index_bad = 1;
        const cJSON *id = cJSON_GetObjectItem(tc, "id");
        if (cJSON_IsString(id) && id->valuestring[0]) {
            if (strcmp(g->tool_id, id->valuestring) != 0)
                g->ids++;
            snprintf(g->tool_id, sizeof g->tool_id, "%s", id->valuestring);
        }
        const cJSON *fn = cJSON_GetObjectItem(tc, "function");
        const cJSON *name = cJSON_GetObjectItem(fn, "name");
        if (cJSON_IsString(name) && name->valuestring[0])
            snprintf(g->tool_name, sizeof g->tool_name, "%s", name->valuestring);
        const cJSON *a = cJSON_GetObjectItem(fn, "arguments");
        if (cJSON_IsString(a))
            air__buf_puts(&g->args, a->valuestring);
    }
    const cJSON *fr = cJSON_GetObjectItem(c0, "finish_reason");
    if (cJSON_IsString(fr))
        snprintf(g->finish, sizeof g->finish, "%s", fr->valuestring);
    const cJSON *u = cJSON_GetObjectItem(j, "usage");
    if (cJSON_IsObject(u)) {
        g->usage_chunks++;
        g->prompt = cJSON_GetNumberValue(cJSON_GetObjectItem(u, "prompt_tokens"));
        g->completion = cJSON_GetNumberValue(cJSON_GetObjectItem(u, "completion_tokens"));
        g->total = cJSON_GetNumberValue(cJSON_GetObjectItem(u, "total_tokens"));
    }
out:
    g->nchunks++;
    cJSON_Delete(j);
    pthread_mutex_unlock(&g->mu);
}

static void
got_init(struct got *g)
{
    memset(g, 0, sizeof *g);
    pthread_mutex_init(&g->mu, NULL);
}

static void
got_fini(struct got *g)
{
    air__buf_free(&g->text);
    air__buf_free(&g->args);
    pthread_mutex_destroy(&g->mu);
}

static air_resp_t *
send_body(air_t *r, const char *body, struct got *g, uint32_t max_attempts)
{
    air_req_t *q = NULL;
    char err[256] = "";
    if (air_req_new(r, body, strlen(body), &q, err, sizeof err) != AIR_OK)
        fail_msg("air_req_new: %s", err);
    if (g != NULL)
        assert_int_equal(air_req_set_chunk(q, on_chunk, g), AIR_OK);
    if (max_attempts)
        assert_int_equal(air_req_set_max_attempts(q, max_attempts), AIR_OK);
    air_resp_t *resp = NULL;
    assert_int_equal(air_call(r, q, &resp), AIR_OK);
    assert_non_null(resp);
    return resp;
}

/* ------------------------------------------------------------------ the record file */

/* The whole file, NUL-terminated; free with air__free. */
static char *
read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    air_buf_t b = AIR_BUF_INIT;
    char tmp[4096];
    size_t k;
    while ((k = fread(tmp, 1, sizeof tmp, f)) > 0)
        air__buf_append(&b, tmp, k);
    fclose(f);
    air__buf_putc(&b, '\0');
    assert_false(b.oom);
    return air__buf_steal(&b, NULL);
}

/* Line i (0-based; -1 = the last) of a record file as JSON; *nlines gets the
 * number of lines. The file never holds a key in clear. */
static cJSON *
record_line(const char *path, int i, int *nlines, const struct vendor *v)
{
    char *all = read_file(path);
    if (v != NULL)
        assert_null(strstr(all, v->key));
    int n = 0;
    for (const char *p = all; *p; p++)
        n += *p == '\n';
    if (nlines)
        *nlines = n;
    if (i < 0)
        i = n - 1;
    assert_true(i >= 0 && i < n);
    char *line = all;
    for (int k = 0; k < i; k++)
        line = strchr(line, '\n') + 1;
    char *e = strchr(line, '\n');
    cJSON *j = cJSON_ParseWithLength(line, (size_t)(e - line));
    air__free(all);
    assert_true(cJSON_IsObject(j));
    return j;
}

static const char *
sat(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static const cJSON *
jat(const cJSON *o, const char *k)
{
    return cJSON_GetObjectItemCaseSensitive(o, k);
}

/* Common upstream checks: method, path, query, the key header masked. */
static void
check_request_line(const cJSON *rec, const struct vendor *v, const char *path, const char *query)
{
    assert_string_equal(sat(rec, "method"), "POST");
    assert_string_equal(sat(rec, "path"), path);
    assert_string_equal(sat(rec, "query"), query);
    const cJSON *h = jat(rec, "headers");
    char masked[16];
    snprintf(masked, sizeof masked, "***%s", v->key + strlen(v->key) - 4);
    assert_string_equal(sat(h, v->key_header), masked);
    if (strcmp(v->key_header, "authorization") != 0)
        assert_null(jat(h, "authorization"));
    const char *ct = sat(h, "content-type");
    assert_non_null(ct);
    assert_non_null(strstr(ct, "application/json"));
    assert_true(cJSON_IsObject(jat(rec, "body")));
}

/* ------------------------------------------------------------------ one trip */

struct trip {
    air_resp_t *resp;
    struct got g;
    cJSON *body; /* the unified body (plain) */
    cJSON *rec;  /* what the mock recorded */
    size_t sent_len;
};

static void
trip_free(struct trip *tr)
{
    air_resp_free(tr->resp);
    cJSON_Delete(tr->body);
    cJSON_Delete(tr->rec);
    got_fini(&tr->g);
}

/* Send the standard request to route "chat" (v behind it), check the
 * unified result, and leave the upstream record in tr->rec. */
static void
trip(struct rt *t, const struct vendor *v, int stream, int tools, struct trip *tr)
{
    memset(tr, 0, sizeof *tr);
    got_init(&tr->g);
    air_buf_t body = AIR_BUF_INIT;
    make_body(&body, stream, tools);
    tr->resp = send_body(t->r, body.data, stream ? &tr->g : NULL, 0);
    air__buf_free(&body);
    air_resp_t *resp = tr->resp;
    if (air_resp_status(resp) != AIR_OK)
        fail_msg("%s: %s", v->format, air_resp_error_message(resp));
    assert_string_equal(air_resp_provider(resp), v->name);
    assert_int_equal(air_resp_attempts(resp), 1);

    /* Usage: the mock counts the upstream body's bytes / 4. */
    char *sent = air__malloc(65536);
    assert_non_null(sent);
    air_mock_last_request(t->m[0], sent, 65536, NULL, 0);
    tr->sent_len = strlen(sent);
    air__free(sent);
    uint64_t want_prompt = tr->sent_len / 4;
    uint64_t want_completion = tools ? TOOL_TOKENS : CHUNKS;
    assert_int_equal(air_resp_prompt_tokens(resp), want_prompt);
    assert_int_equal(air_resp_completion_tokens(resp), want_completion);
    const char *want_finish = tools ? "tool_calls" : "stop";

    if (!stream) {
        assert_false(air_resp_streamed(resp));
        const char *b = air_resp_body(resp, NULL);
        assert_non_null(b);
        tr->body = cJSON_Parse(b);
        assert_non_null(tr->body);
        assert_string_equal(sat(tr->body, "object"), "chat.completion");
        const cJSON *c0 = cJSON_GetArrayItem(jat(tr->body, "choices"), 0);
        assert_string_equal(sat(c0, "finish_reason"), want_finish);
        const cJSON *msg = jat(c0, "message");
        assert_string_equal(sat(msg, "role"), "assistant");
        if (tools) {
            assert_true(cJSON_IsNull(jat(msg, "content")));
            const cJSON *calls = jat(msg, "tool_calls");
            assert_int_equal(cJSON_GetArraySize(calls), 1);
            const cJSON *tc = cJSON_GetArrayItem(calls, 0);
            assert_non_null(sat(tc, "id"));
            assert_true(strlen(sat(tc, "id")) > 0);
            assert_string_equal(sat(tc, "type"), "function");
            assert_string_equal(sat(jat(tc, "function"), "name"), "get_weather");
            cJSON *args = cJSON_Parse(sat(jat(tc, "function"), "arguments"));
            assert_non_null(args);
            assert_string_equal(sat(args, "city"), "mock");
            assert_int_equal(cJSON_GetArraySize(args), 1);
            cJSON_Delete(args);
        } else {
            assert_string_equal(sat(msg, "content"), "tok0 tok1 tok2 ");
            assert_null(jat(msg, "tool_calls"));
        }
        const cJSON *u = jat(tr->body, "usage");
        assert_int_equal((uint64_t)cJSON_GetNumberValue(jat(u, "prompt_tokens")), want_prompt);
        assert_int_equal((uint64_t)cJSON_GetNumberValue(jat(u, "completion_tokens")),
                         want_completion);
        assert_int_equal((uint64_t)cJSON_GetNumberValue(jat(u, "total_tokens")),
                         want_prompt + want_completion);
    } else {
        struct got *g = &tr->g;
        assert_true(air_resp_streamed(resp));
        assert_true(air_resp_chunks_delivered(resp));
        assert_null(air_resp_body(resp, NULL));
        assert_int_equal(g->bad_json, 0);
        assert_true(g->role_first);
        assert_string_equal(g->finish, want_finish);
        if (tools) {
            assert_int_equal(g->tool_index_bad, 0);
            assert_int_equal(g->ids, 1); /* one call, its id given once or repeated */
            assert_string_equal(g->tool_name, "get_weather");
            assert_non_null(g->args.data);
            assert_string_equal(g->args.data, want_args);
            assert_int_equal(g->text.len, 0);
        } else {
            assert_non_null(g->text.data);
            assert_string_equal(g->text.data, "tok0 tok1 tok2 ");
            assert_int_equal(g->args.len, 0);
        }
        assert_int_equal(g->usage_chunks, 1);
        assert_int_equal((uint64_t)g->prompt, want_prompt);
        assert_int_equal((uint64_t)g->completion, want_completion);
        assert_int_equal((uint64_t)g->total, want_prompt + want_completion);
    }
    int n = 0;
    tr->rec = record_line(t->rec[0], -1, &n, v);
    assert_int_equal(n, 1);
}

/* The id of the unified tool call (plain or streamed). */
static const char *
trip_tool_id(const struct trip *tr)
{
    if (tr->body == NULL)
        return tr->g.tool_id;
    const cJSON *c0 = cJSON_GetArrayItem(jat(tr->body, "choices"), 0);
    return sat(cJSON_GetArrayItem(jat(jat(c0, "message"), "tool_calls"), 0), "id");
}

/* ------------------------------------------------------------------ Anthropic */

/* Anthropic's text of a content that may be a string or blocks. */
static const char *
ant_text(const cJSON *content)
{
    if (cJSON_IsString(content))
        return content->valuestring;
    const cJSON *b;
    cJSON_ArrayForEach(b, content)
    {
        if (sat(b, "type") && strcmp(sat(b, "type"), "text") == 0)
            return sat(b, "text");
    }
    return NULL;
}

static void
check_anthropic_upstream(const cJSON *rec, int stream, int tools)
{
    check_request_line(rec, &ANT, "/v1/messages", "");
    assert_string_equal(sat(jat(rec, "headers"), "anthropic-version"), "2023-06-01");
    const cJSON *b = jat(rec, "body");
    assert_string_equal(sat(b, "model"), "claude-mock");
    assert_int_equal((int)cJSON_GetNumberValue(jat(b, "max_tokens")), 4096); /* defaulted */
    assert_string_equal(ant_text(jat(b, "system")), "You are terse.");
    const cJSON *msgs = jat(b, "messages");
    assert_int_equal(cJSON_GetArraySize(msgs), 1); /* the system message was lifted */
    const cJSON *m0 = cJSON_GetArrayItem(msgs, 0);
    assert_string_equal(sat(m0, "role"), "user");
    assert_string_equal(ant_text(jat(m0, "content")), "What's the weather in Oslo?");
    const cJSON *ss = jat(b, "stop_sequences");
    assert_int_equal(cJSON_GetArraySize(ss), 1);
    assert_string_equal(cJSON_GetArrayItem(ss, 0)->valuestring, "END");
    assert_null(jat(b, "stop"));
    assert_true(cJSON_GetNumberValue(jat(b, "temperature")) == 0.5);
    assert_int_equal(cJSON_IsTrue(jat(b, "stream")), stream);
    assert_null(jat(b, "stream_options"));
    if (tools) {
        const cJSON *t0 = cJSON_GetArrayItem(jat(b, "tools"), 0);
        assert_string_equal(sat(t0, "name"), "get_weather");
        assert_string_equal(sat(t0, "description"), "Current weather");
        assert_null(jat(t0, "function"));
        const cJSON *req = jat(jat(t0, "input_schema"), "required");
        assert_string_equal(cJSON_GetArrayItem(req, 0)->valuestring, "city");
    } else {
        assert_null(jat(b, "tools"));
    }
}

static void
anthropic_case(void **state, int stream, int tools)
{
    struct rt *t = *state;
    start_mock(t, 0, &ANT, NULL);
    start_router(t, &ANT, NULL);
    struct trip tr;
    trip(t, &ANT, stream, tools, &tr);
    if (tools)
        assert_string_equal(trip_tool_id(&tr), "toolu_mock_1_0");
    assert_string_equal(air_resp_model(tr.resp), "claude-mock");
    check_anthropic_upstream(tr.rec, stream, tools);
    trip_free(&tr);
}

static void
test_roundtrip_anthropic_plain_text_translated_both_ways(void **state)
{
    anthropic_case(state, 0, 0);
}

static void
test_roundtrip_anthropic_plain_tool_use_becomes_tool_calls(void **state)
{
    anthropic_case(state, 0, 1);
}

static void
test_roundtrip_anthropic_stream_text_with_usage(void **state)
{
    anthropic_case(state, 1, 0);
}

static void
test_roundtrip_anthropic_stream_input_json_deltas_join(void **state)
{
    anthropic_case(state, 1, 1);
}

/* The second turn of a tool loop: the call and its result go upstream as
 * tool_use and tool_result blocks, and the mock answers in words. */
static const char tool_loop_body[] =
    "{\"model\":\"chat\",\"messages\":["
    "{\"role\":\"user\",\"content\":\"Weather in Oslo?\"},"
    "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"toolu_01\","
    "\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
    "\"arguments\":\"{\\\"city\\\":\\\"Oslo\\\"}\"}}]},"
    "{\"role\":\"tool\",\"tool_call_id\":\"toolu_01\",\"content\":\"4C, rain\"}],"
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
    "\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},"
    "\"required\":[\"city\"]}}}]}";

static void
assert_text_answer(const air_resp_t *resp)
{
    assert_int_equal(air_resp_status(resp), AIR_OK);
    cJSON *j = cJSON_Parse(air_resp_body(resp, NULL));
    assert_non_null(j);
    const cJSON *c0 = cJSON_GetArrayItem(jat(j, "choices"), 0);
    assert_string_equal(sat(c0, "finish_reason"), "stop");
    assert_string_equal(sat(jat(c0, "message"), "content"), "tok0 tok1 tok2 ");
    cJSON_Delete(j);
}

static void
test_roundtrip_anthropic_tool_result_goes_up_as_block(void **state)
{
    struct rt *t = *state;
    start_mock(t, 0, &ANT, NULL);
    start_router(t, &ANT, NULL);
    air_resp_t *resp = send_body(t->r, tool_loop_body, NULL, 0);
    assert_text_answer(resp);
    cJSON *rec = record_line(t->rec[0], -1, NULL, &ANT);
    const cJSON *msgs = jat(jat(rec, "body"), "messages");
    assert_int_equal(cJSON_GetArraySize(msgs), 3);
    const cJSON *a = cJSON_GetArrayItem(msgs, 1);
    assert_string_equal(sat(a, "role"), "assistant");
    const cJSON *use = NULL, *blk;
    cJSON_ArrayForEach(blk, jat(a, "content"))
    {
        if (strcmp(sat(blk, "type"), "tool_use") == 0)
            use = blk;
    }
    assert_non_null(use);
    assert_string_equal(sat(use, "id"), "toolu_01");
    assert_string_equal(sat(use, "name"), "get_weather");
    assert_string_equal(sat(jat(use, "input"), "city"), "Oslo");
    const cJSON *u = cJSON_GetArrayItem(msgs, 2);
    assert_string_equal(sat(u, "role"), "user");
    const cJSON *res = cJSON_GetArrayItem(jat(u, "content"), 0);
    assert_string_equal(sat(res, "type"), "tool_result");
    assert_string_equal(sat(res, "tool_use_id"), "toolu_01");
    cJSON_Delete(rec);
    air_resp_free(resp);
}

/* ------------------------------------------------------------------ Gemini */

static void
check_gemini_upstream(const cJSON *rec, int stream, int tools)
{
    check_request_line(rec, &GEM,
                       stream ? "/v1beta/models/gemini-mock:streamGenerateContent"
                              : "/v1beta/models/gemini-mock:generateContent",
                       stream ? "alt=sse" : ""); /* the key is never in the URL */
    const cJSON *b = jat(rec, "body");
    assert_null(jat(b, "model"));
    assert_null(jat(b, "messages"));
    assert_null(jat(b, "stream"));
    const cJSON *si = jat(b, "systemInstruction");
    assert_string_equal(sat(cJSON_GetArrayItem(jat(si, "parts"), 0), "text"), "You are terse.");
    const cJSON *contents = jat(b, "contents");
    assert_int_equal(cJSON_GetArraySize(contents), 1);
    const cJSON *c0 = cJSON_GetArrayItem(contents, 0);
    assert_string_equal(sat(c0, "role"), "user");
    assert_string_equal(sat(cJSON_GetArrayItem(jat(c0, "parts"), 0), "text"),
                        "What's the weather in Oslo?");
    const cJSON *gc = jat(b, "generationConfig");
    assert_string_equal(cJSON_GetArrayItem(jat(gc, "stopSequences"), 0)->valuestring, "END");
    assert_true(cJSON_GetNumberValue(jat(gc, "temperature")) == 0.5);
    if (tools) {
        const cJSON *fd = cJSON_GetArrayItem(
            jat(cJSON_GetArrayItem(jat(b, "tools"), 0), "functionDeclarations"), 0);
        assert_string_equal(sat(fd, "name"), "get_weather");
        assert_string_equal(sat(fd, "description"), "Current weather");
        const cJSON *req = jat(jat(fd, "parameters"), "required");
        assert_string_equal(cJSON_GetArrayItem(req, 0)->valuestring, "city");
    } else {
        assert_null(jat(b, "tools"));
    }
}

static void
gemini_case(void **state, int stream, int tools)
{
    struct rt *t = *state;
    start_mock(t, 0, &GEM, NULL);
    start_router(t, &GEM, NULL);
    struct trip tr;
    trip(t, &GEM, stream, tools, &tr);
    if (tools) /* Gemini gives no ids: the adapter makes one */
        assert_int_equal(strncmp(trip_tool_id(&tr), "call_", 5), 0);
    assert_string_equal(air_resp_model(tr.resp), "gemini-mock");
    check_gemini_upstream(tr.rec, stream, tools);
    trip_free(&tr);
}

static void
test_roundtrip_gemini_plain_text_translated_both_ways(void **state)
{
    gemini_case(state, 0, 0);
}

static void
test_roundtrip_gemini_plain_function_call_becomes_tool_calls(void **state)
{
    gemini_case(state, 0, 1);
}

static void
test_roundtrip_gemini_stream_sse_text_with_usage(void **state)
{
    gemini_case(state, 1, 0);
}

static void
test_roundtrip_gemini_stream_function_call(void **state)
{
    gemini_case(state, 1, 1);
}

static void
test_roundtrip_gemini_tool_result_goes_up_as_function_response(void **state)
{
    struct rt *t = *state;
    start_mock(t, 0, &GEM, NULL);
    start_router(t, &GEM, NULL);
    air_resp_t *resp = send_body(t->r, tool_loop_body, NULL, 0);
    assert_text_answer(resp);
    cJSON *rec = record_line(t->rec[0], -1, NULL, &GEM);
    const cJSON *contents = jat(jat(rec, "body"), "contents");
    assert_int_equal(cJSON_GetArraySize(contents), 3);
    const cJSON *m1 = cJSON_GetArrayItem(contents, 1);
    assert_string_equal(sat(m1, "role"), "model");
    const cJSON *fc = jat(cJSON_GetArrayItem(jat(m1, "parts"), 0), "functionCall");
    assert_string_equal(sat(fc, "name"), "get_weather");
    assert_string_equal(sat(jat(fc, "args"), "city"), "Oslo");
    const cJSON *m2 = cJSON_GetArrayItem(contents, 2);
    const cJSON *fr = jat(cJSON_GetArrayItem(jat(m2, "parts"), 0), "functionResponse");
    assert_string_equal(sat(fr, "name"), "get_weather");
    assert_true(cJSON_IsObject(jat(fr, "response")));
    char *resp_txt = cJSON_PrintUnformatted(jat(fr, "response"));
    assert_non_null(strstr(resp_txt, "4C, rain"));
    cJSON_free(resp_txt);
    cJSON_Delete(rec);
    air_resp_free(resp);
}

/* ------------------------------------------------------------------ Azure */

static void
check_azure_upstream(const cJSON *rec, int stream, int tools)
{
    check_request_line(rec, &AZ, "/openai/deployments/gpt4o-dep/chat/completions",
                       "api-version=2024-10-21");
    const cJSON *b = jat(rec, "body");
    const cJSON *msgs = jat(b, "messages");
    assert_int_equal(cJSON_GetArraySize(msgs), 2); /* OpenAI's shape, system kept */
    assert_string_equal(sat(cJSON_GetArrayItem(msgs, 0), "role"), "system");
    assert_string_equal(cJSON_GetArrayItem(jat(b, "stop"), 0)->valuestring, "END");
    assert_int_equal(cJSON_IsTrue(jat(b, "stream")), stream);
    if (stream)
        assert_true(cJSON_IsTrue(jat(jat(b, "stream_options"), "include_usage")));
    if (tools)
        assert_string_equal(sat(jat(cJSON_GetArrayItem(jat(b, "tools"), 0), "function"), "name"),
                            "get_weather");
}

static void
azure_case(void **state, int stream, int tools)
{
    struct rt *t = *state;
    start_mock(t, 0, &AZ, NULL);
    start_router(t, &AZ, NULL);
    struct trip tr;
    trip(t, &AZ, stream, tools, &tr);
    if (tools)
        assert_string_equal(trip_tool_id(&tr), "call_mock_1_0");
    if (stream) /* the prompt-annotation chunk was dropped: role came first */
        assert_true(tr.g.role_first);
    check_azure_upstream(tr.rec, stream, tools);
    trip_free(&tr);
}

static void
test_roundtrip_azure_plain_text_on_deployment_url(void **state)
{
    azure_case(state, 0, 0);
}

static void
test_roundtrip_azure_plain_tool_call(void **state)
{
    azure_case(state, 0, 1);
}

static void
test_roundtrip_azure_stream_drops_prompt_filter_chunk(void **state)
{
    azure_case(state, 1, 0);
}

static void
test_roundtrip_azure_stream_tool_call(void **state)
{
    azure_case(state, 1, 1);
}

/* ------------------------------------------------------------------ vendor errors */

static void
test_roundtrip_anthropic_529_overloaded_fails_over_to_gemini(void **state)
{
    struct rt *t = *state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.chunks = CHUNKS;
    o.fail_rate = 1.0;
    o.fail_status = 529;
    start_mock(t, 0, &ANT, &o);
    start_mock(t, 1, &GEM, NULL);
    start_router(t, &ANT, &GEM);
    air_buf_t body = AIR_BUF_INIT;
    make_body(&body, 0, 0);
    air_resp_t *resp = send_body(t->r, body.data, NULL, 0);
    air__buf_free(&body);
    assert_int_equal(air_resp_status(resp), AIR_OK);
    assert_string_equal(air_resp_provider(resp), "gem");
    uint32_t attempts = air_resp_attempts(resp);
    assert_true(attempts >= 2);
    cJSON *j = cJSON_Parse(air_resp_body(resp, NULL));
    const cJSON *c0 = cJSON_GetArrayItem(jat(j, "choices"), 0);
    assert_string_equal(sat(jat(c0, "message"), "content"), "tok0 tok1 tok2 ");
    cJSON_Delete(j);
    /* Anthropic was tried (and answered 529 overloaded_error) first. */
    air_mock_stats_t s;
    air_mock_stats(t->m[0], &s);
    assert_int_equal(s.failed, attempts - 1);
    assert_int_equal(s.ok, 0);
    int n = 0;
    cJSON *rec = record_line(t->rec[0], 0, &n, &ANT);
    assert_int_equal(n, (int)(attempts - 1));
    check_anthropic_upstream(rec, 0, 0);
    cJSON_Delete(rec);
    rec = record_line(t->rec[1], -1, &n, &GEM);
    assert_int_equal(n, 1);
    check_gemini_upstream(rec, 0, 0);
    cJSON_Delete(rec);
    air_resp_free(resp);
}

static void
test_roundtrip_gemini_429_resource_exhausted_is_rate_limited(void **state)
{
    struct rt *t = *state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.chunks = CHUNKS;
    o.fail_rate = 1.0;
    o.fail_status = 429;
    o.retry_after_s = 7; /* Gemini: RetryInfo.retryDelay "7s" in the body */
    start_mock(t, 0, &GEM, &o);
    start_router(t, &GEM, NULL);
    air_buf_t body = AIR_BUF_INIT;
    make_body(&body, 0, 0);
    air_resp_t *resp = send_body(t->r, body.data, NULL, 1);
    air__buf_free(&body);
    assert_int_equal(air_resp_status(resp), AIR_E_RATELIMITED);
    assert_int_equal(air_resp_error_class(resp), AIR_ERR_RATE_LIMITED);
    assert_int_equal(air_resp_http_status(resp), 429);
    assert_int_equal(air_resp_retry_after_ms(resp), 7000);
    assert_int_equal(air_resp_attempts(resp), 1);
    assert_non_null(strstr(air_resp_error_message(resp), "Resource has been exhausted"));
    assert_null(strstr(air_resp_error_message(resp), GEM.key));
    air_resp_free(resp);
}

/* A wrong key: each vendor's refusal is an auth error, never echoing a key. */
static void
test_roundtrip_wrong_key_is_auth_error_in_every_format(void **state)
{
    const struct vendor *vs[3] = {&ANT, &GEM, &AZ};
    for (int i = 0; i < 3; i++) {
        struct rt *t = *state;
        air_mock_opts_t o;
        air_mock_opts_init(&o);
        o.chunks = CHUNKS;
        struct vendor v = *vs[i];
        v.key = "the-mock-wants-this-key-9999"; /* the router sends vs[i]->key */
        start_mock(t, 0, &v, &o);
        start_router(t, vs[i], NULL);
        air_buf_t body = AIR_BUF_INIT;
        make_body(&body, 0, 0);
        air_resp_t *resp = send_body(t->r, body.data, NULL, 1);
        air__buf_free(&body);
        assert_int_equal(air_resp_error_class(resp), AIR_ERR_AUTH);
        assert_null(strstr(air_resp_error_message(resp), vs[i]->key));
        assert_null(strstr(air_resp_error_message(resp), v.key));
        air_mock_stats_t s;
        air_mock_stats(t->m[0], &s);
        assert_int_equal(s.unauthorized, 1);
        air_resp_free(resp);
        air_free(t->r, 1000);
        t->r = NULL;
        air_mock_stop(t->m[0]);
        t->m[0] = NULL;
    }
}

/* An error event in the middle of a stream (the mock sends it after half
 * the pieces: tok0 and tok1 of 4) reaches the caller as an error: the
 * content already delivered stays, and the request does not end cleanly. */
static void
test_roundtrip_mid_stream_error_event_reaches_caller(void **state)
{
    const struct vendor *vs[3] = {&ANT, &GEM, &AZ};
    const air_errclass_t want[3] = {AIR_ERR_OVERLOADED, AIR_ERR_UPSTREAM, AIR_ERR_UPSTREAM};
    const int status[3] = {529, 500, 500};
    for (int i = 0; i < 3; i++) {
        struct rt *t = *state;
        air_mock_opts_t o;
        air_mock_opts_init(&o);
        o.chunks = 4;
        o.stream_error_rate = 1.0;
        o.fail_status = status[i];
        start_mock(t, 0, vs[i], &o);
        start_router(t, vs[i], NULL);
        struct got g;
        got_init(&g);
        air_buf_t body = AIR_BUF_INIT;
        make_body(&body, 1, 0);
        air_resp_t *resp = send_body(t->r, body.data, &g, 0);
        air__buf_free(&body);
        print_message("%s: %s (%s)\n", vs[i]->format, air_resp_error_message(resp),
                      air_errclass_name(air_resp_error_class(resp)));
        assert_int_not_equal(air_resp_status(resp), AIR_OK);
        assert_int_equal(air_resp_error_class(resp), want[i]);
        assert_true(air_resp_chunks_delivered(resp));
        assert_int_equal(air_resp_attempts(resp), 1); /* content was out: no failover */
        assert_non_null(g.text.data);
        assert_string_equal(g.text.data, "tok0 tok1 ");
        assert_string_equal(g.finish, "");
        air_mock_stats_t s;
        air_mock_stats(t->m[0], &s);
        assert_int_equal(s.stream_errors, 1);
        got_fini(&g);
        air_resp_free(resp);
        air_free(t->r, 1000);
        t->r = NULL;
        air_mock_stop(t->m[0]);
        t->m[0] = NULL;
    }
}

/* ------------------------------------------------------------------ raw server */

/* A minimal HTTP/1.1 server on 127.0.0.1 for bytes the mock does not make:
 * it answers every request with the same canned reply and closes the
 * connection (no Content-Length, so the body ends at EOF, as a Gemini stream
 * does). It keeps the head of the first request so a test can check what
 * went upstream. */
struct rawsrv {
    int fd;
    unsigned port;
    const char *reply;
    atomic_int stop;
    atomic_int served;
    char head[4096]; /* request line and headers of the first request */
    pthread_t th;
};

/* Read one request (head, then Content-Length bytes of body) and answer. */
static void
raw_serve_one(struct rawsrv *s, int c)
{
    char buf[16384];
    size_t len = 0, want = 0;
    const char *hend = NULL;
    while (len < sizeof buf - 1) {
        struct pollfd pf = {.fd = c, .events = POLLIN};
        if (poll(&pf, 1, 3000) <= 0)
            break;
        ssize_t k = recv(c, buf + len, sizeof buf - 1 - len, 0);
        if (k <= 0)
            break;
        len += (size_t)k;
        buf[len] = '\0';
        if (hend == NULL && (hend = strstr(buf, "\r\n\r\n")) != NULL) {
            const char *cl = strcasestr(buf, "\r\ncontent-length:");
            want = (size_t)(hend + 4 - buf);
            if (cl != NULL && cl < hend)
                want += strtoul(cl + 17, NULL, 10);
        }
        if (hend != NULL && len >= want)
            break;
    }
    if (hend != NULL && atomic_load(&s->served) == 0) {
        size_t hl = (size_t)(hend - buf);
        if (hl >= sizeof s->head)
            hl = sizeof s->head - 1;
        memcpy(s->head, buf, hl);
        s->head[hl] = '\0';
    }
    atomic_fetch_add(&s->served, 1);
    size_t off = 0, n = strlen(s->reply);
    while (off < n) {
        ssize_t k = send(c, s->reply + off, n - off, MSG_NOSIGNAL);
        if (k <= 0)
            break;
        off += (size_t)k;
    }
    shutdown(c, SHUT_WR);
    /* Drain until the client closes, so the reply is not cut by a reset. */
    for (;;) {
        struct pollfd pf = {.fd = c, .events = POLLIN};
        if (poll(&pf, 1, 1000) <= 0 || recv(c, buf, sizeof buf, 0) <= 0)
            break;
    }
    close(c);
}

static void *
raw_main(void *arg)
{
    struct rawsrv *s = arg;
    while (!atomic_load(&s->stop)) {
        struct pollfd pf = {.fd = s->fd, .events = POLLIN};
        if (poll(&pf, 1, 50) <= 0)
            continue;
        int c = accept(s->fd, NULL, NULL);
        if (c >= 0)
            raw_serve_one(s, c);
    }
    return NULL;
}

static void
raw_start(struct rawsrv *s, const char *reply)
{
    memset(s, 0, sizeof *s);
    s->reply = reply;
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s->fd >= 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    assert_int_equal(bind(s->fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(s->fd, 8), 0);
    assert_int_equal(getsockname(s->fd, (struct sockaddr *)&a, &al), 0);
    s->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&s->th, NULL, raw_main, s), 0);
}

static void
raw_stop(struct rawsrv *s)
{
    atomic_store(&s->stop, 1);
    pthread_join(s->th, NULL);
    close(s->fd);
}

/* A Gemini stream that sends "tok0 tok1 " in two data: events (CRLF-framed,
 * as Gemini does), then the bytes `tail`, then closes. */
static char *
gem_raw_stream(const char *tail)
{
    air_buf_t b = AIR_BUF_INIT;
    air__buf_puts(&b, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                      "Connection: close\r\n\r\n");
    for (int i = 0; i < 2; i++)
        air__buf_printf(&b,
                        "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":"
                        "[{\"text\":\"tok%d \"}]},\"index\":0}],\"modelVersion\":\"gemini-mock\","
                        "\"responseId\":\"raw-1\"}\r\n\r\n",
                        i);
    air__buf_puts(&b, tail);
    assert_false(b.oom);
    return air__buf_steal(&b, NULL);
}

/* Gemini's failure after the stream began: a raw JSON error object, not a
 * data: field (spec 3.4, 6.6 step 6): on one line, spread over several (as
 * the SDK's brace counting expects), and without a "status" member. Core
 * hands those lines to the adapter's classify: the error must come out as
 * rate_limited, with its RetryInfo delay when given and its own code as
 * HTTP status,
 * exactly as the same object in a data: event would. Without that
 * classification the request would end as the generic "stream ended before
 * finishReason" (upstream). */
static void
test_roundtrip_gemini_raw_json_error_mid_stream_is_rate_limited(void **state)
{
    static const char *const tails[3] = {
        "{\"error\":{\"code\":429,\"message\":\"Resource has been exhausted (e.g. check "
        "quota).\",\"status\":\"RESOURCE_EXHAUSTED\",\"details\":[{\"@type\":\"type.googleapis."
        "com/google.rpc.RetryInfo\",\"retryDelay\":\"7s\"}]}}\r\n",
        "{\n  \"error\": {\n    \"code\": 429,\n    \"message\": \"Resource has been exhausted "
        "(e.g. check quota).\",\n    \"status\": \"RESOURCE_EXHAUSTED\",\n    \"details\": [\n"
        "      {\n        \"@type\": \"type.googleapis.com/google.rpc.RetryInfo\",\n"
        "        \"retryDelay\": \"7s\"\n      }\n    ]\n  }\n}\n",
        /* No "status": the error's own code decides, as for a data: event. */
        "{\"error\":{\"code\":429,\"message\":\"Resource has been exhausted (e.g. check "
        "quota).\"}}\r\n",
    };
    for (int i = 0; i < 3; i++) {
        struct rt *t = *state;
        struct rawsrv srv;
        char *reply = gem_raw_stream(tails[i]);
        raw_start(&srv, reply);
        start_router_ports(t, &GEM, srv.port, NULL, 0);
        struct got g;
        got_init(&g);
        air_buf_t body = AIR_BUF_INIT;
        make_body(&body, 1, 0);
        air_resp_t *resp = send_body(t->r, body.data, &g, 0);
        air__buf_free(&body);
        print_message("raw %d: %s (%s) http %d\n", i, air_resp_error_message(resp),
                      air_errclass_name(air_resp_error_class(resp)), air_resp_http_status(resp));
        assert_int_equal(air_resp_status(resp), AIR_E_RATELIMITED);
        assert_int_equal(air_resp_error_class(resp), AIR_ERR_RATE_LIMITED);
        assert_non_null(strstr(air_resp_error_message(resp), "Resource has been exhausted"));
        assert_int_equal(air_resp_retry_after_ms(resp), i < 2 ? 7000 : -1);
        assert_int_equal(air_resp_http_status(resp), 429); /* the error's code, not the 200 */
        /* Content was out: the caller keeps it, nothing is retried. */
        assert_true(air_resp_chunks_delivered(resp));
        assert_int_equal(air_resp_attempts(resp), 1);
        assert_int_equal(g.bad_json, 0);
        assert_true(g.role_first);
        assert_non_null(g.text.data);
        assert_string_equal(g.text.data, "tok0 tok1 ");
        assert_string_equal(g.finish, "");
        assert_int_equal(g.usage_chunks, 0);
        /* What went up: the stream URL, the key in its header only. */
        assert_int_equal(atomic_load(&srv.served), 1);
        assert_non_null(strstr(srv.head, "POST /v1beta/models/gemini-mock:streamGenerateContent"
                                         "?alt=sse HTTP/1.1\r\n"));
        char want_key[96];
        snprintf(want_key, sizeof want_key, "\r\nx-goog-api-key: %s", GEM.key);
        assert_non_null(strcasestr(srv.head, want_key));
        assert_null(strstr(srv.head, "key="));
        got_fini(&g);
        air_resp_free(resp);
        air_free(t->r, 1000);
        t->r = NULL;
        raw_stop(&srv);
        air__free(reply);
    }
}

/* The same through `airouter mock --format gemini`, which writes its
 * injected mid-stream failure as bare (multi-line) JSON too: a 429 there is
 * rate limiting, not the generic upstream error. */
static void
test_roundtrip_gemini_mock_mid_stream_429_is_rate_limited(void **state)
{
    struct rt *t = *state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.chunks = 4;
    o.stream_error_rate = 1.0;
    o.fail_status = 429;
    start_mock(t, 0, &GEM, &o);
    start_router(t, &GEM, NULL);
    struct got g;
    got_init(&g);
    air_buf_t body = AIR_BUF_INIT;
    make_body(&body, 1, 0);
    air_resp_t *resp = send_body(t->r, body.data, &g, 0);
    air__buf_free(&body);
    assert_int_equal(air_resp_error_class(resp), AIR_ERR_RATE_LIMITED);
    assert_non_null(strstr(air_resp_error_message(resp), "Resource has been exhausted"));
    assert_null(strstr(air_resp_error_message(resp), GEM.key));
    assert_int_equal(air_resp_attempts(resp), 1);
    assert_non_null(g.text.data);
    assert_string_equal(g.text.data, "tok0 tok1 ");
    assert_string_equal(g.finish, "");
    air_mock_stats_t s;
    air_mock_stats(t->m[0], &s);
    assert_int_equal(s.stream_errors, 1);
    got_fini(&g);
    air_resp_free(resp);
}

int
main(void)
{
    /* Before any thread exists: setenv is not thread-safe. */
    setenv(ANT.key_env, ANT.key, 1);
    setenv(GEM.key_env, GEM.key, 1);
    setenv(AZ.key_env, AZ.key, 1);
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_roundtrip_anthropic_plain_text_translated_both_ways),
        T(test_roundtrip_anthropic_plain_tool_use_becomes_tool_calls),
        T(test_roundtrip_anthropic_stream_text_with_usage),
        T(test_roundtrip_anthropic_stream_input_json_deltas_join),
        T(test_roundtrip_anthropic_tool_result_goes_up_as_block),
        T(test_roundtrip_gemini_plain_text_translated_both_ways),
        T(test_roundtrip_gemini_plain_function_call_becomes_tool_calls),
        T(test_roundtrip_gemini_stream_sse_text_with_usage),
        T(test_roundtrip_gemini_stream_function_call),
        T(test_roundtrip_gemini_tool_result_goes_up_as_function_response),
        T(test_roundtrip_azure_plain_text_on_deployment_url),
        T(test_roundtrip_azure_plain_tool_call),
        T(test_roundtrip_azure_stream_drops_prompt_filter_chunk),
        T(test_roundtrip_azure_stream_tool_call),
        T(test_roundtrip_anthropic_529_overloaded_fails_over_to_gemini),
        T(test_roundtrip_gemini_429_resource_exhausted_is_rate_limited),
        T(test_roundtrip_wrong_key_is_auth_error_in_every_format),
        T(test_roundtrip_mid_stream_error_event_reaches_caller),
        T(test_roundtrip_gemini_raw_json_error_mid_stream_is_rate_limited),
        T(test_roundtrip_gemini_mock_mid_stream_429_is_rate_limited),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
