/*
 * test_gemini.c - providers/gemini.c: the golden wire cases under
 * tests/providers/data/gemini/, plus what the golden format cannot express:
 * allocation failure, a consumer that stops the stream, out-of-range
 * candidates, hostile schemas, the ops table itself, every finishReason of
 * spec 6.7 mapped alike by decode and both stream paths, and the raw error
 * lines of a 200 stream that core hands to classify.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "alloc.h"
#include "buf.h"
#include "common.h"
#include "golden.h"

extern const air_provider_ops_t air_provider_gemini;

#define KEY "AIza-unit-test-key"

/* ------------------------------------------------------------------------ */
/* Fixtures and helpers                                                      */

static void *
make_state(const char *cfg_json)
{
    cJSON *json = cJSON_Parse(cfg_json != NULL ? cfg_json : "{\"name\":\"g\",\"kind\":\"gemini\"}");
    assert_non_null(json);
    air_provider_cfg_t cfg = {"g", "gemini", NULL, KEY, json};
    void *st = NULL;
    char err[128] = "";
    assert_int_equal(air_provider_gemini.init(&cfg, &st, err, sizeof err), AIR_OK);
    cJSON_Delete(json);
    assert_non_null(st);
    return st;
}

static int
setup(void **state)
{
    *state = make_state(NULL);
    return 0;
}

static int
teardown(void **state)
{
    air_provider_gemini.fini(*state);
    return 0;
}

static air_req_view_t
mk_req(const cJSON *body)
{
    air_req_view_t r;
    memset(&r, 0, sizeof r);
    r.body = body;
    r.model = "gemini-2.5-flash";
    r.now_unix = 1760000000;
    r.request_id = "air-unit";
    return r;
}

static const char *
no_header(const void *hctx, const char *name)
{
    (void)hctx;
    (void)name;
    return NULL;
}

static air_http_in_t
mk_in(int status, const char *body)
{
    air_http_in_t in;
    memset(&in, 0, sizeof in);
    in.status = status;
    in.body = body;
    in.body_len = strlen(body);
    in.header = no_header;
    in.now_unix_ms = 1760000000000LL;
    return in;
}

/* Stream harness: collects chunks, can refuse after `stop_after` chunks. */
struct sink {
    int n;
    int stop_after; /* -1: never */
    char last[4096];
    air_buf_t all; /* every chunk, newline-separated */
};

static int
sink_emit(void *ud, const char *json, size_t len, unsigned flags)
{
    (void)flags;
    struct sink *s = ud;
    if (s->stop_after >= 0 && s->n >= s->stop_after)
        return 1;
    s->n++;
    size_t k = len < sizeof s->last - 1 ? len : sizeof s->last - 1;
    memcpy(s->last, json, k);
    s->last[k] = '\0';
    air__buf_append(&s->all, json, len);
    air__buf_putc(&s->all, '\n');
    return 0;
}

struct stream_fx {
    unsigned char state[1024];
    air_stream_ctx_t sc;
    air_req_view_t req;
    struct sink sink;
};

static void
stream_fx_init(struct stream_fx *fx, const cJSON *body, int include_usage)
{
    memset(fx, 0, sizeof *fx);
    assert_true(air_provider_gemini.stream_state_size <= sizeof fx->state);
    fx->req = mk_req(body);
    fx->req.stream = 1;
    fx->req.include_usage = include_usage;
    fx->sink.stop_after = -1;
    fx->sc.state = fx->state;
    fx->sc.req = &fx->req;
    fx->sc.emit = sink_emit;
    fx->sc.emit_ud = &fx->sink;
    fx->sc.fault.retry_after_ms = -1;
}

static air_stream_rc_t
feed(const void *st, struct stream_fx *fx, const char *data)
{
    return air_provider_gemini.stream_event(st, &fx->sc, "", 0, data, strlen(data));
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                     */

static void
test_gemini_golden_cases_pass(void **state)
{
    (void)state;
    air_test_golden_run_all(&air_provider_gemini, "gemini");
}

static void
test_gemini_ops_table_declares_kind(void **state)
{
    (void)state;
    const air_provider_ops_t *o = &air_provider_gemini;
    assert_int_equal(o->abi, AIR_PROVIDER_ABI);
    assert_string_equal(o->name, "gemini");
    assert_int_equal(o->caps, AIR_CAP_STREAM | AIR_CAP_TOOLS | AIR_CAP_IMAGES | AIR_CAP_JSON);
    assert_string_equal(o->default_base_url, "https://generativelanguage.googleapis.com");
    assert_non_null(o->stream_event);
    assert_non_null(o->stream_end);
    /* Fixed-size stream state: core has no hook to free anything in it. */
    assert_true(o->stream_state_size > 0 && o->stream_state_size <= 1024);
    assert_string_equal(o->config_keys[0], "safety_settings");
    assert_null(o->config_keys[1]);
}

static void
test_gemini_init_rejects_key_with_newline(void **state)
{
    (void)state;
    air_provider_cfg_t cfg = {"g", "gemini", NULL, "abc\r\nX-Evil: 1", NULL};
    void *st = NULL;
    char err[128] = "";
    assert_int_equal(air_provider_gemini.init(&cfg, &st, err, sizeof err), AIR_E_CONFIG);
    assert_null(st);
    assert_non_null(strstr(err, "api_key"));
    assert_null(strstr(err, "Evil"));
}

static void
test_gemini_encode_url_never_holds_key(void **state)
{
    cJSON *body = cJSON_Parse("{\"model\":\"m\",\"stream\":true,"
                              "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
    assert_non_null(body);
    air_req_view_t r = mk_req(body);
    r.stream = 1;
    air_http_out_t out;
    air_fault_t f;
    assert_int_equal(air_provider_gemini.encode(*state, &r, &out, &f), AIR_OK);
    assert_null(strstr(out.url, KEY));
    assert_null(strstr(out.url, "key="));
    assert_null(strstr(out.body, KEY));
    assert_string_equal(out.url, "https://generativelanguage.googleapis.com/v1beta/models/"
                                 "gemini-2.5-flash:streamGenerateContent?alt=sse");
    int found = 0;
    for (size_t i = 0; i < out.nheaders; i++)
        if (strcmp(out.headers[i], "x-goog-api-key: " KEY) == 0)
            found = 1;
    assert_true(found);
    air__http_out_clear(&out);
    cJSON_Delete(body);
}

static const char *const big_request =
    "{\"model\":\"m\",\"temperature\":0.5,\"stop\":[\"a\",\"b\"],\"n\":1,"
    "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\",\"schema\":"
    "{\"type\":\"object\",\"properties\":{\"a\":{\"$ref\":\"#/$defs/A\"}},\"$defs\":{\"A\":"
    "{\"anyOf\":[{\"type\":\"string\"},{\"type\":\"null\"}]}}}}},"
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":"
    "{\"type\":\"object\",\"properties\":{\"x\":{\"type\":[\"string\",\"null\"]}}}}}],"
    "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"f\"}},"
    "\"messages\":[{\"role\":\"system\",\"content\":\"s\"},"
    "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"t\"},{\"type\":\"image_url\","
    "\"image_url\":{\"url\":\"data:image/png;base64,AAAA\"}}]},"
    "{\"role\":\"assistant\",\"content\":\"c\",\"tool_calls\":[{\"id\":\"i1\",\"type\":"
    "\"function\","
    "\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"x\\\":1}\"}}]},"
    "{\"role\":\"tool\",\"tool_call_id\":\"i1\",\"content\":\"r\"}]}";

/* Fail the k-th air__ allocation for every k: encode must return OK or
 * AIR_E_NOMEM and leave nothing behind (ASan proves the latter). */
static void
test_gemini_encode_alloc_failure_is_clean(void **state)
{
    cJSON *body = cJSON_Parse(big_request);
    assert_non_null(body);
    air_req_view_t r = mk_req(body);
    int saw_ok = 0, saw_nomem = 0;
    for (unsigned long k = 1; k < 200; k++) {
        air_http_out_t out;
        air_fault_t f;
        air__alloc_fail_after(k);
        air_status_t st = air_provider_gemini.encode(*state, &r, &out, &f);
        air__alloc_fail_after(0);
        if (st == AIR_OK) {
            saw_ok = 1;
            assert_non_null(out.body);
            air__http_out_clear(&out);
            break;
        }
        assert_int_equal(st, AIR_E_NOMEM);
        assert_null(out.url);
        assert_null(out.body);
        assert_int_equal(out.nheaders, 0);
        saw_nomem = 1;
    }
    assert_true(saw_ok);
    assert_true(saw_nomem);
    cJSON_Delete(body);
}

static void
test_gemini_decode_alloc_failure_is_clean(void **state)
{
    static const char reply[] =
        "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\",\"thought\":true},"
        "{\"text\":\"b\"},{\"functionCall\":{\"name\":\"f\",\"args\":{\"x\":1}}}]},"
        "\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":1}}";
    cJSON *body = cJSON_Parse("{\"model\":\"m\",\"messages\":[]}");
    air_req_view_t r = mk_req(body);
    air_http_in_t in = mk_in(200, reply);
    int saw_ok = 0;
    for (unsigned long k = 1; k < 100; k++) {
        air_decoded_t d;
        air_fault_t f;
        air__alloc_fail_after(k);
        air_status_t st = air_provider_gemini.decode(*state, &r, &in, &d, &f);
        air__alloc_fail_after(0);
        if (st == AIR_OK) {
            saw_ok = 1;
            assert_non_null(strstr(d.body, "\"tool_calls\""));
            assert_string_equal(d.finish_reason, "tool_calls");
            air__decoded_clear(&d);
            break;
        }
        assert_int_equal(st, AIR_E_NOMEM);
        assert_null(d.body);
    }
    assert_true(saw_ok);
    cJSON_Delete(body);
}

/* A consumer that refuses a chunk stops the stream; the fault is left for
 * core to fill. */
static void
test_gemini_stream_consumer_stop_returns_error(void **state)
{
    struct stream_fx fx;
    stream_fx_init(&fx, NULL, 0);
    fx.sink.stop_after = 1; /* accept the role chunk, refuse the content */
    air_stream_rc_t rc =
        feed(*state, &fx, "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"x\"}]}}]}");
    assert_int_equal(rc, AIR_STREAM_ERROR);
    assert_int_equal(fx.sink.n, 1);
    assert_int_equal(fx.sc.fault.cls, AIR_ERR_NONE);
    assert_string_equal(fx.sc.fault.message, "");
    air__buf_free(&fx.sink.all);
}

static void
test_gemini_stream_candidate_index_out_of_range_errors(void **state)
{
    struct stream_fx fx;
    stream_fx_init(&fx, NULL, 0);
    air_stream_rc_t rc = feed(*state, &fx,
                              "{\"candidates\":[{\"index\":8,\"content\":{\"parts\":"
                              "[{\"text\":\"x\"}]}}]}");
    assert_int_equal(rc, AIR_STREAM_ERROR);
    assert_int_equal(fx.sc.fault.cls, AIR_ERR_UPSTREAM);
    assert_int_equal(fx.sink.n, 0);
    air__buf_free(&fx.sink.all);
}

/* Two candidates interleaved: each gets its own role chunk, its own tool
 * numbering and its own finish; the stream is done once any finished. */
static void
test_gemini_stream_two_candidates_numbered_apart(void **state)
{
    struct stream_fx fx;
    stream_fx_init(&fx, NULL, 1);
    assert_int_equal(
        feed(*state, &fx,
             "{\"responseId\":\"r\",\"candidates\":["
             "{\"index\":0,\"content\":{\"parts\":[{\"functionCall\":{\"name\":\"a\"}}]}},"
             "{\"index\":1,\"content\":{\"parts\":[{\"functionCall\":{\"name\":\"b\"}}]}}"
             "]}"),
        AIR_STREAM_MORE);
    assert_int_equal(fx.sink.n, 4); /* role0, call0, role1, call1 */
    assert_non_null(strstr(fx.sink.last, "\"id\":\"call_r_1_0\""));
    assert_non_null(strstr(fx.sink.last, "\"index\":0,\"id\""));
    assert_int_equal(feed(*state, &fx,
                          "{\"candidates\":[{\"index\":1,\"finishReason\":\"STOP\"}],"
                          "\"usageMetadata\":{\"promptTokenCount\":3,\"totalTokenCount\":5}}"),
                     AIR_STREAM_MORE);
    assert_non_null(strstr(fx.sink.last, "\"finish_reason\":\"tool_calls\""));
    assert_non_null(strstr(fx.sink.last, "\"index\":1"));
    assert_int_equal(air_provider_gemini.stream_end(*state, &fx.sc), AIR_STREAM_DONE);
    assert_non_null(strstr(fx.sink.last, "\"choices\":[]"));
    assert_non_null(strstr(fx.sink.last, "\"total_tokens\":5"));
    assert_int_equal(fx.sc.usage.prompt, 3);
    assert_int_equal(fx.sc.usage.completion, 2);
    air__buf_free(&fx.sink.all);
}

/* A mid-stream error that echoes the key never hands it on. */
static void
test_gemini_stream_error_redacts_key(void **state)
{
    struct stream_fx fx;
    stream_fx_init(&fx, NULL, 0);
    air_stream_rc_t rc = feed(*state, &fx,
                              "{\"error\":{\"code\":400,\"status\":\"INVALID_ARGUMENT\","
                              "\"message\":\"bad key " KEY "\"}}");
    assert_int_equal(rc, AIR_STREAM_ERROR);
    assert_int_equal(fx.sc.fault.cls, AIR_ERR_INVALID_REQUEST);
    assert_int_equal(fx.sc.fault.http_status, 400);
    assert_null(strstr(fx.sc.fault.message, KEY));
    assert_non_null(strstr(fx.sc.fault.message, "[REDACTED]"));
    air__buf_free(&fx.sink.all);
}

/* A long vendor message is cut on a character boundary (it ends up in JSON
 * error bodies, which must stay valid UTF-8). */
static void
test_gemini_classify_long_message_cut_on_utf8_boundary(void **state)
{
    air_buf_t b = AIR_BUF_INIT;
    air__buf_puts(&b, "{\"error\":{\"code\":500,\"status\":\"INTERNAL\",\"message\":\"");
    for (int i = 0; i < 400; i++)
        air__buf_puts(&b, "\xc3\xa9"); /* U+00E9, two bytes */
    air__buf_puts(&b, "\"}}");
    assert_false(b.oom);
    air_http_in_t in = mk_in(500, b.data);
    air_fault_t f;
    air_provider_gemini.classify(*state, &in, &f);
    air__buf_free(&b);
    assert_int_equal(f.cls, AIR_ERR_UPSTREAM);
    size_t n = strlen(f.message);
    assert_true(n > 400 && n < sizeof f.message);
    assert_int_equal(n % 2, 0);
    assert_int_equal((unsigned char)f.message[n - 1], 0xA9);
}

/* Mutually referencing $defs ("billion laughs"): bounded, refused. */
static void
test_gemini_encode_schema_expansion_bomb_rejected(void **state)
{
    air_buf_t b = AIR_BUF_INIT;
    air__buf_puts(&b, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                      "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":"
                      "\"b\",\"schema\":{\"$ref\":\"#/$defs/d0\",\"$defs\":{");
    for (int i = 0; i < 15; i++)
        air__buf_printf(&b,
                        "\"d%d\":{\"type\":\"object\",\"properties\":{\"a\":{\"$ref\":"
                        "\"#/$defs/d%d\"},\"b\":{\"$ref\":\"#/$defs/d%d\"}}},",
                        i, i + 1, i + 1);
    air__buf_puts(&b, "\"d15\":{\"type\":\"string\"}}}}}}");
    assert_false(b.oom);
    cJSON *body = cJSON_Parse(b.data);
    air__buf_free(&b);
    assert_non_null(body);
    air_req_view_t r = mk_req(body);
    air_http_out_t out;
    air_fault_t f;
    assert_int_equal(air_provider_gemini.encode(*state, &r, &out, &f), AIR_E_BADREQ);
    assert_int_equal(f.cls, AIR_ERR_INVALID_REQUEST);
    assert_non_null(strstr(f.message, "too large"));
    assert_null(out.body);
    cJSON_Delete(body);
}

/* Tool-call ids are the same whether the reply is streamed or not. */
static void
test_gemini_tool_ids_match_between_decode_and_stream(void **state)
{
    static const char resp[] =
        "{\"responseId\":\"xyz\",\"candidates\":[{\"content\":{\"parts\":["
        "{\"functionCall\":{\"name\":\"f\",\"args\":{}}},"
        "{\"functionCall\":{\"name\":\"g\",\"args\":{}}}]},\"finishReason\":\"STOP\"}]}";
    cJSON *body = cJSON_Parse("{\"model\":\"m\",\"messages\":[]}");
    air_req_view_t r = mk_req(body);
    air_http_in_t in = mk_in(200, resp);
    air_decoded_t d;
    air_fault_t f;
    assert_int_equal(air_provider_gemini.decode(*state, &r, &in, &d, &f), AIR_OK);
    assert_non_null(strstr(d.body, "\"id\":\"call_xyz_0_0\""));
    assert_non_null(strstr(d.body, "\"id\":\"call_xyz_0_1\""));
    air__decoded_clear(&d);

    struct stream_fx fx;
    stream_fx_init(&fx, body, 0);
    assert_int_equal(feed(*state, &fx, resp), AIR_STREAM_MORE);
    assert_int_equal(fx.sink.n, 3); /* role, both calls in one delta, finish */
    assert_non_null(strstr(fx.sink.all.data, "\"index\":0,\"id\":\"call_xyz_0_0\""));
    assert_non_null(strstr(fx.sink.all.data, "\"index\":1,\"id\":\"call_xyz_0_1\""));
    assert_int_equal(air_provider_gemini.stream_end(*state, &fx.sc), AIR_STREAM_DONE);
    assert_string_equal(fx.sc.finish_reason, "tool_calls");
    air__buf_free(&fx.sink.all);
    cJSON_Delete(body);
}

/* Spec 6.7, every Gemini row (and an unknown value): decode, the stream's
 * fast scanner and its cJSON path (the same event wrapped in an array, the
 * tolerated non-SSE form) all give the same unified finish_reason. */
static void
test_gemini_finish_reason_table_same_in_every_path(void **state)
{
    static const struct {
        const char *vendor, *unified;
    } rows[] = {
        {"STOP", "stop"},
        {"FINISH_REASON_UNSPECIFIED", "stop"},
        {"MAX_TOKENS", "length"},
        {"SAFETY", "content_filter"},
        {"RECITATION", "content_filter"},
        {"LANGUAGE", "content_filter"},
        {"OTHER", "content_filter"},
        {"BLOCKLIST", "content_filter"},
        {"PROHIBITED_CONTENT", "content_filter"},
        {"SPII", "content_filter"},
        {"MALFORMED_FUNCTION_CALL", "stop"},
        {"IMAGE_SAFETY", "content_filter"},
        {"UNEXPECTED_TOOL_CALL", "stop"},
        {"TOO_MANY_TOOL_CALLS", "stop"},
        {"IMAGE_PROHIBITED_CONTENT", "content_filter"},
        {"NO_IMAGE", "content_filter"},
        {"IMAGE_RECITATION", "content_filter"},
        {"IMAGE_OTHER", "content_filter"},
        {"A_REASON_FROM_THE_FUTURE", "stop"},
        /* Longer than the fast scanner keeps: the cJSON path either way. */
        {"A_REASON_FROM_THE_FUTURE_WITH_A_NAME_LONGER_THAN_SIXTY_FOUR_CHARACTERS", "stop"},
    };
    cJSON *body = cJSON_Parse("{\"model\":\"m\",\"messages\":[]}");
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char ev[512], arr[520], want[64];
        snprintf(ev, sizeof ev,
                 "{\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"x\"}]},"
                 "\"finishReason\":\"%s\",\"index\":0}],\"responseId\":\"r%zu\"}",
                 rows[i].vendor, i);
        snprintf(arr, sizeof arr, "[%s]", ev);
        snprintf(want, sizeof want, "\"finish_reason\":\"%s\"", rows[i].unified);

        air_req_view_t r = mk_req(body);
        air_http_in_t in = mk_in(200, ev);
        air_decoded_t d;
        air_fault_t f;
        assert_int_equal(air_provider_gemini.decode(*state, &r, &in, &d, &f), AIR_OK);
        if (strcmp(d.finish_reason, rows[i].unified) != 0)
            fail_msg("decode %s: got %s, want %s", rows[i].vendor, d.finish_reason,
                     rows[i].unified);
        assert_non_null(strstr(d.body, want));
        air__decoded_clear(&d);

        const char *forms[2] = {ev, arr};
        for (int k = 0; k < 2; k++) {
            struct stream_fx fx;
            stream_fx_init(&fx, body, 0);
            assert_int_equal(feed(*state, &fx, forms[k]), AIR_STREAM_MORE);
            assert_int_equal(air_provider_gemini.stream_end(*state, &fx.sc), AIR_STREAM_DONE);
            if (strcmp(fx.sc.finish_reason, rows[i].unified) != 0)
                fail_msg("stream (%s) %s: got %s, want %s", k ? "array" : "object", rows[i].vendor,
                         fx.sc.finish_reason, rows[i].unified);
            assert_int_equal(fx.sink.n, 3); /* role, "x", finish */
            assert_non_null(strstr(fx.sink.last, want));
            air__buf_free(&fx.sink.all);
        }
    }
    cJSON_Delete(body);
}

/* Core hands classify the raw JSON lines of a 200 stream (spec 3.4, 6.6
 * step 6): the error object decides, exactly as the same object in a data:
 * event (golden 620), not the stream's 200. */
static void
test_gemini_classify_error_lines_of_200_stream_use_own_code(void **state)
{
    static const struct {
        const char *body;
        air_errclass_t cls;
        int http, retry;
        int64_t retry_after_ms;
    } rows[] = {
        {"{\n  \"error\": {\n    \"code\": 429,\n    \"message\": \"Resource has been "
         "exhausted\",\n"
         "    \"status\": \"RESOURCE_EXHAUSTED\",\n    \"details\": [{\"@type\": "
         "\"type.googleapis.com/google.rpc.RetryInfo\", \"retryDelay\": \"2.5s\"}]\n  }\n}\n",
         AIR_ERR_RATE_LIMITED, 429, 1, 2500},
        {"{\"error\":{\"code\":429,\"message\":\"no status member\"}}\n", AIR_ERR_RATE_LIMITED, 429,
         1, -1},
        {"{\"error\":{\"code\":503,\"message\":\"overloaded\",\"status\":\"UNAVAILABLE\"}}\n",
         AIR_ERR_OVERLOADED, 503, 1, -1},
        {"[{\"error\":{\"code\":500,\"message\":\"boom\",\"status\":\"INTERNAL\"}}]\n",
         AIR_ERR_UPSTREAM, 500, 1, -1},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        air_http_in_t in = mk_in(200, rows[i].body);
        air_fault_t f;
        memset(&f, 0, sizeof f);
        air_provider_gemini.classify(*state, &in, &f);
        if (f.cls != rows[i].cls)
            fail_msg("row %zu: class %s", i, air_errclass_name(f.cls));
        assert_int_equal(f.http_status, rows[i].http);
        assert_int_equal(f.retry, rows[i].retry);
        assert_int_equal(f.retry_after_ms, rows[i].retry_after_ms);
        assert_true(f.message[0] != '\0');
    }
    /* Lines that are no error object keep the generic class. */
    air_http_in_t in = mk_in(200, "<html>oops</html>\n");
    air_fault_t f;
    memset(&f, 0, sizeof f);
    air_provider_gemini.classify(*state, &in, &f);
    assert_int_equal(f.cls, AIR_ERR_UPSTREAM);
    assert_int_equal(f.http_status, 200);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemini_golden_cases_pass),
        cmocka_unit_test(test_gemini_ops_table_declares_kind),
        cmocka_unit_test(test_gemini_init_rejects_key_with_newline),
        cmocka_unit_test_setup_teardown(test_gemini_encode_url_never_holds_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gemini_encode_alloc_failure_is_clean, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gemini_decode_alloc_failure_is_clean, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gemini_stream_consumer_stop_returns_error, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_gemini_stream_candidate_index_out_of_range_errors,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_gemini_stream_two_candidates_numbered_apart, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_gemini_stream_error_redacts_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gemini_classify_long_message_cut_on_utf8_boundary,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_gemini_encode_schema_expansion_bomb_rejected, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_gemini_tool_ids_match_between_decode_and_stream, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_gemini_finish_reason_table_same_in_every_path, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_gemini_classify_error_lines_of_200_stream_use_own_code,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
