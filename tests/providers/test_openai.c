/*
 * test_openai.c - the OpenAI adapter: golden wire cases
 * (tests/providers/data/openai/), the model-splice scanner, the fast chunk
 * scanner against its cJSON reference, and allocation-failure sweeps.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "alloc.h"
#include "common.h"
#include "golden.h"
#include "openai.h"

static void
test_openai_golden_cases_pass(void **state)
{
    (void)state;
    air_test_golden_run_all(&air_provider_openai, "openai");
}

/* ---- model span scanner ------------------------------------------------ */

static int
span_of(const char *raw, char *out, size_t outsz)
{
    size_t a = 0, b = 0;
    int rc = air__openai_model_span(raw, strlen(raw), &a, &b);
    out[0] = '\0';
    if (rc == 1) {
        assert_true(b > a && b - a < outsz);
        memcpy(out, raw + a, b - a);
        out[b - a] = '\0';
    }
    return rc;
}

static void
test_openai_model_span_skips_nested_and_strings(void **state)
{
    (void)state;
    char v[128];
    assert_int_equal(
        span_of("{\"metadata\":{\"model\":\"inner\"},\"model\":\"outer\"}", v, sizeof v), 1);
    assert_string_equal(v, "\"outer\"");
    assert_int_equal(span_of("{\"messages\":[{\"content\":\"\\\"model\\\": \\\"x\\\"\"}],"
                             "\"model\":\"m\"}",
                             v, sizeof v),
                     1);
    assert_string_equal(v, "\"m\"");
    assert_int_equal(span_of("{\"a\":[[{\"model\":1}],{\"b\":{\"model\":2}}],\"model\" :  "
                             "\"esc\\\"aped\\\\\"  }",
                             v, sizeof v),
                     1);
    assert_string_equal(v, "\"esc\\\"aped\\\\\"");
    /* A key that only ends in "model" and a value that is the word. */
    assert_int_equal(span_of("{\"xmodel\":\"model\",\"model\":\"y\"}", v, sizeof v), 1);
    assert_string_equal(v, "\"y\"");
    /* Non-string model values are spans too. */
    assert_int_equal(span_of(" \r\n{ \"model\" : null }\n", v, sizeof v), 1);
    assert_string_equal(v, "null");
}

static void
test_openai_model_span_absent_is_zero(void **state)
{
    (void)state;
    char v[16];
    assert_int_equal(span_of("{\"messages\":[{\"model\":\"no\"}]}", v, sizeof v), 0);
    assert_int_equal(span_of("{}", v, sizeof v), 0);
}

static void
test_openai_model_span_odd_text_is_minus_one(void **state)
{
    (void)state;
    char v[16];
    static const char *const odd[] = {
        "{\"mod\\u0065l\":\"a\"}",           /* escaped key could spell model */
        "{\"model\":\"a\",\"model\":\"b\"}", /* duplicate */
        "[\"model\"]",                       /* not an object */
        "{\"model\":\"a\"} x",               /* trailing garbage */
        "{\"model\":\"a\"",                  /* cut */
        "{\"model\":\"a\nb\"}",              /* raw control character */
        "{\"model\":01}",                    /* leading zero */
        "{\"model\":1.}",                    /* bare decimal point */
        "{\"model\":\"\\ud800\"}",           /* lone surrogate */
        "{\"model\":tru}",
        "{\"model\":\"a\",}",
        "",
    };
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        print_message("odd[%zu] = %s\n", i, odd[i]);
        assert_int_equal(span_of(odd[i], v, sizeof v), -1);
    }
    /* Deep nesting is refused rather than recursed into without bound. */
    char deep[600];
    size_t n = 0;
    n += (size_t)snprintf(deep + n, sizeof deep - n, "{\"a\":");
    for (int i = 0; i < 200; i++)
        deep[n++] = '[';
    for (int i = 0; i < 200; i++)
        deep[n++] = ']';
    n += (size_t)snprintf(deep + n, sizeof deep - n, ",\"model\":\"m\"}");
    assert_int_equal(air__openai_model_span(deep, n, &(size_t){0}, &(size_t){0}), -1);
}

/* ---- encode ------------------------------------------------------------ */

struct enc {
    void *state;
    cJSON *body;
    air_req_view_t req;
    air_http_out_t out;
    air_fault_t f;
};

static void
enc_setup(struct enc *e, const char *raw, const char *model)
{
    memset(e, 0, sizeof *e);
    air_provider_cfg_t cfg = {.name = "p", .kind = "openai", .api_key = "sk-x"};
    char err[128];
    assert_int_equal(air_provider_openai.init(&cfg, &e->state, err, sizeof err), AIR_OK);
    e->body = cJSON_Parse(raw);
    assert_non_null(e->body);
    e->req.body = e->body;
    e->req.raw = raw;
    e->req.raw_len = strlen(raw);
    e->req.model = model;
    e->req.stream = cJSON_IsTrue(cJSON_GetObjectItem(e->body, "stream"));
    e->req.include_usage = cJSON_IsTrue(
        cJSON_GetObjectItem(cJSON_GetObjectItem(e->body, "stream_options"), "include_usage"));
}

static void
enc_teardown(struct enc *e)
{
    air__http_out_clear(&e->out);
    air_provider_openai.fini(e->state);
    cJSON_Delete(e->body);
}

static void
test_openai_encode_splice_keeps_other_bytes(void **state)
{
    (void)state;
    const char *raw = "{ \"messages\" : [ {\"role\":\"user\", \"content\":\"\\\"model\\\":1\"} ],\n"
                      "  \"model\":\t\"alias\" , \"temperature\" : 1.50 }\n";
    struct enc e;
    enc_setup(&e, raw, "gpt-4o \"q\" é");
    assert_int_equal(air_provider_openai.encode(e.state, &e.req, &e.out, &e.f), AIR_OK);
    assert_null(e.out.body_ref);
    assert_non_null(e.out.body);
    assert_string_equal(
        e.out.body, "{ \"messages\" : [ {\"role\":\"user\", \"content\":\"\\\"model\\\":1\"} ],\n"
                    "  \"model\":\t\"gpt-4o \\\"q\\\" é\" , \"temperature\" : 1.50 }\n");
    assert_int_equal(e.out.body_len, strlen(e.out.body));
    enc_teardown(&e);
}

static void
test_openai_encode_same_model_is_passthrough(void **state)
{
    (void)state;
    const char *raw = "{\"model\":\"gpt-4o\",\"messages\":[]}";
    struct enc e;
    enc_setup(&e, raw, "gpt-4o");
    assert_int_equal(air_provider_openai.encode(e.state, &e.req, &e.out, &e.f), AIR_OK);
    assert_ptr_equal(e.out.body_ref, raw);
    assert_int_equal(e.out.body_len, strlen(raw));
    assert_null(e.out.body);
    assert_string_equal(e.out.url, "https://api.openai.com/v1/chat/completions");
    assert_int_equal(e.out.nheaders, 3);
    assert_string_equal(e.out.headers[1], "Authorization: Bearer sk-x");
    enc_teardown(&e);
}

static void
test_openai_encode_escaped_key_falls_back_to_rebuild(void **state)
{
    (void)state;
    const char *raw = "{\"mod\\u0065l\":\"alias\",\"messages\":[]}";
    struct enc e;
    enc_setup(&e, raw, "gpt-4o");
    assert_int_equal(air_provider_openai.encode(e.state, &e.req, &e.out, &e.f), AIR_OK);
    cJSON *b = cJSON_Parse(e.out.body);
    assert_non_null(b);
    assert_string_equal(cJSON_GetObjectItem(b, "model")->valuestring, "gpt-4o");
    assert_int_equal(cJSON_GetArraySize(b), 2);
    cJSON_Delete(b);
    enc_teardown(&e);
}

static void
test_openai_encode_duplicate_model_never_passthrough(void **state)
{
    (void)state;
    /* cJSON (and so the router) reads the first "model"; an upstream parser
     * may read the last. Such a body must not go out verbatim. */
    const char *raw = "{\"model\":\"cheap\",\"messages\":[],\"model\":\"expensive\"}";
    struct enc e;
    enc_setup(&e, raw, "cheap");
    assert_int_equal(air_provider_openai.encode(e.state, &e.req, &e.out, &e.f), AIR_OK);
    assert_null(e.out.body_ref);
    cJSON *b = cJSON_Parse(e.out.body);
    assert_non_null(b);
    int n = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, b)
    {
        if (strcmp(it->string, "model") == 0) {
            n++;
            assert_string_equal(it->valuestring, "cheap");
        }
    }
    assert_int_equal(n, 1);
    cJSON_Delete(b);
    enc_teardown(&e);
}

static void
test_openai_encode_stream_usage_inserted_first(void **state)
{
    (void)state;
    const char *raw = "{\"model\":\"m\",\"stream\":true,\"messages\":[]}";
    struct enc e;
    enc_setup(&e, raw, "m");
    assert_int_equal(air_provider_openai.encode(e.state, &e.req, &e.out, &e.f), AIR_OK);
    assert_string_equal(e.out.body, "{\"stream_options\":{\"include_usage\":true},\"model\":\"m\","
                                    "\"stream\":true,\"messages\":[]}");
    enc_teardown(&e);
}

static void
test_openai_encode_oom_sweep_is_clean(void **state)
{
    (void)state;
    const char *raws[] = {
        "{\"model\":\"alias\",\"stream\":true,\"messages\":[]}",
        "{\"model\":\"alias\",\"stream\":true,\"stream_options\":{},\"messages\":[]}",
    };
    for (size_t r = 0; r < 2; r++) {
        int ok = 0;
        for (unsigned long k = 1; k < 64 && !ok; k++) {
            struct enc e;
            enc_setup(&e, raws[r], "gpt-4o");
            air__alloc_fail_after(k);
            air_status_t st = air_provider_openai.encode(e.state, &e.req, &e.out, &e.f);
            air__alloc_fail_after(0);
            if (st == AIR_OK) {
                ok = 1;
                assert_non_null(e.out.body);
            } else {
                assert_int_equal(st, AIR_E_NOMEM);
                assert_null(e.out.url);
                assert_int_equal(e.out.nheaders, 0);
                assert_null(e.out.body);
            }
            enc_teardown(&e);
        }
        assert_true(ok);
    }
}

/* ---- chunk scanner ------------------------------------------------------ */

static void
check_scan_agrees(const char *chunk, int expect_fast)
{
    struct air__openai_chunk_info a, b;
    int used_fast = -1;
    print_message("chunk: %s\n", chunk);
    air_status_t sa = air__openai_chunk_scan(chunk, strlen(chunk), 1, &a, &used_fast);
    air_status_t sb = air__openai_chunk_scan(chunk, strlen(chunk), 0, &b, NULL);
    assert_int_equal(sa, sb);
    assert_int_equal(used_fast, expect_fast);
    if (sa != AIR_OK)
        return;
    assert_int_equal(a.is_error, b.is_error);
    assert_int_equal(a.content, b.content);
    assert_int_equal(a.finished, b.finished);
    assert_int_equal(a.nchoices, b.nchoices);
    assert_int_equal(a.has_usage, b.has_usage);
    assert_memory_equal(&a.usage, &b.usage, sizeof a.usage);
    assert_string_equal(a.model, b.model);
    assert_string_equal(a.finish_reason, b.finish_reason);
}

static void
test_openai_chunk_scan_fast_matches_reference(void **state)
{
    (void)state;
    static const char *const fast[] = {
        "{\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
        "\"finish_reason\":null}],\"usage\":null,\"model\":\"m\"}",
        "{\"choices\":[{\"delta\":{\"content\":\"\\u0000x\"}}]}",
        "{\"choices\":[{\"delta\":{\"content\":\"\\u00e9\"}}]}",
        "{\"choices\":[{\"index\":0.0,\"delta\":{},\"finish_reason\":\"st\\u006fp\"}]}",
        "{\"choices\":[{\"index\":1e-400,\"delta\":{},\"finish_reason\":\"stop\"}]}",
        "{\"choices\":[{\"index\":2,\"delta\":{\"tool_calls\":[ ]},\"finish_reason\":\"x\"}]}",
        "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0}]}}]}",
        "{\"choices\":[{\"delta\":{\"function_call\":{}}}],\"model\":\"a\\\"b\"}",
        "{\"choices\":[1,\"x\",null,{\"delta\":[]}],\"error\":null}",
        "{\"choices\":{},\"error\":false}",
        "{\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,"
        "\"prompt_tokens_details\":{\"cached_tokens\":2}}}",
        "{\"choices\":[],\"x_groq\":{\"id\":\"q\",\"usage\":{\"prompt_tokens\":7}}}",
        "  {\"error\":{\"message\":\"m\"}}  ",
    };
    for (size_t i = 0; i < sizeof fast / sizeof fast[0]; i++)
        check_scan_agrees(fast[i], 1);
    static const char *const slow[] = {
        "{\"choices\":[{\"delta\":{\"c\\u006fntent\":\"x\"}}]}",
        "{\"choices\":[],\"choices\":[{\"finish_reason\":\"stop\"}]}",
        "{\"choices\":[{\"delta\":{\"content\":\"a\",\"content\":\"\"}}]}",
        "{\"usage\":{\"prompt_tokens\":1.},\"choices\":[]}",
        "{\"a\":1} trailing",
        "[1]",
        "nope",
        "",
    };
    for (size_t i = 0; i < sizeof slow / sizeof slow[0]; i++)
        check_scan_agrees(slow[i], 0);
}

/* ---- stream_event details ---------------------------------------------- */

static int
emit_refuse(void *ud, const char *json, size_t len, unsigned flags)
{
    (void)json;
    (void)len;
    (void)flags;
    ++*(int *)ud;
    return 1;
}

static void
test_openai_stream_emit_refusal_stops_with_error(void **state)
{
    (void)state;
    struct air__openai_stream ss = {0};
    air_req_view_t req = {0};
    req.stream = 1;
    req.include_usage = 1;
    int calls = 0;
    air_stream_ctx_t sc = {0};
    sc.state = &ss;
    sc.req = &req;
    sc.emit = emit_refuse;
    sc.emit_ud = &calls;
    void *st = NULL;
    air_provider_cfg_t cfg = {.name = "p", .kind = "openai"};
    char err[64];
    assert_int_equal(air_provider_openai.init(&cfg, &st, err, sizeof err), AIR_OK);
    const char *d = "{\"choices\":[{\"delta\":{\"content\":\"x\"}}]}";
    assert_int_equal(air_provider_openai.stream_event(st, &sc, "", 0, d, strlen(d)),
                     AIR_STREAM_ERROR);
    assert_int_equal(calls, 1);
    assert_int_equal(sc.fault.cls, AIR_ERR_NONE);
    /* Blank data is ignored, [DONE] ends even without a finish reason. */
    assert_int_equal(air_provider_openai.stream_event(st, &sc, "", 0, " ", 1), AIR_STREAM_MORE);
    assert_int_equal(air_provider_openai.stream_event(st, &sc, "", 0, "[DONE]", 6),
                     AIR_STREAM_DONE);
    air_provider_openai.fini(st);
}

static void
test_openai_fault_from_vendor_maps_codes(void **state)
{
    (void)state;
    air_fault_t f = {0};
    snprintf(f.type, sizeof f.type, "%s", "invalid_request_error");
    snprintf(f.code, sizeof f.code, "%s", "context_length_exceeded");
    air__openai_fault_from_vendor(&f);
    assert_int_equal(f.cls, AIR_ERR_INVALID_REQUEST);
    assert_int_equal(f.failover, 1);

    memset(&f, 0, sizeof f);
    snprintf(f.code, sizeof f.code, "%s", "503");
    f.http_status = 200;
    air__openai_fault_from_vendor(&f);
    assert_int_equal(f.cls, AIR_ERR_OVERLOADED);
    assert_int_equal(f.http_status, 200);

    memset(&f, 0, sizeof f);
    snprintf(f.type, sizeof f.type, "%s", "insufficient_quota");
    air__openai_fault_from_vendor(&f);
    assert_int_equal(f.cls, AIR_ERR_AUTH);
    assert_int_equal(f.unusable, 1);
    assert_int_equal(f.retry, 0);

    memset(&f, 0, sizeof f);
    snprintf(f.type, sizeof f.type, "%s", "server_error");
    air__openai_fault_from_vendor(&f);
    assert_int_equal(f.cls, AIR_ERR_UPSTREAM);
    assert_int_equal(f.retry, 1);
}

static void
test_openai_init_rejects_line_breaks(void **state)
{
    (void)state;
    void *st = NULL;
    char err[128] = "";
    air_provider_cfg_t cfg = {.name = "p", .kind = "openai", .api_key = "sk-a\r\nX-Evil: 1"};
    assert_int_equal(air_provider_openai.init(&cfg, &st, err, sizeof err), AIR_E_CONFIG);
    assert_null(st);
    assert_null(strstr(err, "sk-a"));
    cJSON *j = cJSON_Parse("{\"project\":\"a\\nb\"}");
    air_provider_cfg_t cfg2 = {.name = "p", .kind = "openai", .json = j};
    assert_int_equal(air_provider_openai.init(&cfg2, &st, err, sizeof err), AIR_E_CONFIG);
    assert_non_null(strstr(err, "project"));
    cJSON_Delete(j);
}

static void
test_openai_decode_oom_sweep_is_clean(void **state)
{
    (void)state;
    void *st = NULL;
    air_provider_cfg_t cfg = {.name = "p", .kind = "openai", .api_key = "k"};
    char err[64];
    assert_int_equal(air_provider_openai.init(&cfg, &st, err, sizeof err), AIR_OK);
    const char *body = "{\"choices\":[{\"finish_reason\":\"stop\"}],\"model\":\"m\"}";
    air_http_in_t in = {.status = 200, .body = body, .body_len = strlen(body)};
    int ok = 0;
    for (unsigned long k = 1; k < 16 && !ok; k++) {
        air_decoded_t d;
        air_fault_t f;
        air__alloc_fail_after(k);
        air_status_t s = air_provider_openai.decode(st, NULL, &in, &d, &f);
        air__alloc_fail_after(0);
        if (s == AIR_OK) {
            ok = 1;
            assert_string_equal(d.body, body);
            assert_string_equal(d.finish_reason, "stop");
        } else {
            assert_null(d.body);
        }
        air__decoded_clear(&d);
    }
    assert_true(ok);
    air_provider_openai.fini(st);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_openai_golden_cases_pass),
        cmocka_unit_test(test_openai_model_span_skips_nested_and_strings),
        cmocka_unit_test(test_openai_model_span_absent_is_zero),
        cmocka_unit_test(test_openai_model_span_odd_text_is_minus_one),
        cmocka_unit_test(test_openai_encode_splice_keeps_other_bytes),
        cmocka_unit_test(test_openai_encode_same_model_is_passthrough),
        cmocka_unit_test(test_openai_encode_escaped_key_falls_back_to_rebuild),
        cmocka_unit_test(test_openai_encode_duplicate_model_never_passthrough),
        cmocka_unit_test(test_openai_encode_stream_usage_inserted_first),
        cmocka_unit_test(test_openai_encode_oom_sweep_is_clean),
        cmocka_unit_test(test_openai_chunk_scan_fast_matches_reference),
        cmocka_unit_test(test_openai_stream_emit_refusal_stops_with_error),
        cmocka_unit_test(test_openai_fault_from_vendor_maps_codes),
        cmocka_unit_test(test_openai_init_rejects_line_breaks),
        cmocka_unit_test(test_openai_decode_oom_sweep_is_clean),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
