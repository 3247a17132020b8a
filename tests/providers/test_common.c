/*
 * test_common.c - providers/common.c: status table, error-body shapes,
 * Retry-After parsing, x-should-retry, small string helpers.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <cmocka.h>

#include "common.h"
#include "alloc.h"

/* A tiny header table for air_http_in_t: NULL-terminated name/value pairs. */
struct hdrs {
    const char *kv[16];
};

static const char *
hdr_lookup(const void *hctx, const char *name)
{
    const struct hdrs *h = hctx;
    for (size_t i = 0; h->kv[i] != NULL; i += 2)
        if (strcasecmp(h->kv[i], name) == 0)
            return h->kv[i + 1];
    return NULL;
}

static air_http_in_t
mk_in(const struct hdrs *h, int64_t now_ms)
{
    air_http_in_t in = {0};
    in.status = 429;
    in.body = "";
    in.header = hdr_lookup;
    in.hctx = h;
    in.now_unix_ms = now_ms;
    return in;
}

static air_fault_t
fault_for(int status)
{
    air_fault_t f;
    memset(&f, 0x5A, sizeof f); /* prove every flag gets written */
    f.code[0] = f.type[0] = f.message[0] = '\0';
    air__fault_from_status(&f, status);
    return f;
}

static void
check_status(int status, air_errclass_t cls, int retry, int failover, int unusable)
{
    air_fault_t f = fault_for(status);
    print_message("status %d\n", status);
    assert_int_equal(f.cls, cls);
    assert_int_equal(f.http_status, status);
    assert_int_equal(f.retry, retry);
    assert_int_equal(f.failover, failover);
    assert_int_equal(f.unusable, unusable);
    assert_int_equal(f.retry_after_ms, -1);
}

static void
test_common_status_table_matches_spec(void **state)
{
    (void)state;
    check_status(400, AIR_ERR_INVALID_REQUEST, 0, 0, 0);
    check_status(413, AIR_ERR_INVALID_REQUEST, 0, 0, 0);
    check_status(422, AIR_ERR_INVALID_REQUEST, 0, 0, 0);
    check_status(401, AIR_ERR_AUTH, 0, 1, 1);
    check_status(402, AIR_ERR_AUTH, 0, 1, 1);
    check_status(403, AIR_ERR_AUTH, 0, 1, 1);
    check_status(404, AIR_ERR_NOT_FOUND, 0, 1, 0);
    check_status(408, AIR_ERR_TIMEOUT, 1, 1, 0);
    check_status(409, AIR_ERR_UPSTREAM, 1, 1, 0);
    check_status(429, AIR_ERR_RATE_LIMITED, 1, 1, 0);
    check_status(503, AIR_ERR_OVERLOADED, 1, 1, 0);
    check_status(529, AIR_ERR_OVERLOADED, 1, 1, 0);
    check_status(504, AIR_ERR_TIMEOUT, 1, 1, 0);
    check_status(500, AIR_ERR_UPSTREAM, 1, 1, 0);
    check_status(502, AIR_ERR_UPSTREAM, 1, 1, 0);
    check_status(599, AIR_ERR_UPSTREAM, 1, 1, 0);
    check_status(418, AIR_ERR_INVALID_REQUEST, 0, 0, 0);
    check_status(451, AIR_ERR_INVALID_REQUEST, 0, 0, 0);
}

static void
test_common_status_keeps_vendor_fields(void **state)
{
    (void)state;
    air_fault_t f = {0};
    snprintf(f.code, sizeof f.code, "%s", "c");
    snprintf(f.type, sizeof f.type, "%s", "t");
    snprintf(f.message, sizeof f.message, "%s", "m");
    air__fault_from_status(&f, 429);
    assert_string_equal(f.code, "c");
    assert_string_equal(f.type, "t");
    assert_string_equal(f.message, "m");
}

static air_fault_t
parse(const char *body)
{
    air_fault_t f = {0};
    air__fault_parse_body(&f, body, strlen(body));
    return f;
}

static void
test_common_body_openai_shape_fills_all(void **state)
{
    (void)state;
    air_fault_t f = parse("{\"error\":{\"message\":\"too long\",\"type\":\"invalid_request_error\","
                          "\"param\":\"messages\",\"code\":\"context_length_exceeded\"}}");
    assert_string_equal(f.message, "too long");
    assert_string_equal(f.type, "invalid_request_error");
    assert_string_equal(f.code, "context_length_exceeded");
}

static void
test_common_body_null_code_left_empty(void **state)
{
    (void)state;
    air_fault_t f = parse("{\"error\":{\"message\":\"m\",\"type\":\"server_error\",\"param\":null,"
                          "\"code\":null}}");
    assert_string_equal(f.message, "m");
    assert_string_equal(f.type, "server_error");
    assert_string_equal(f.code, "");
}

static void
test_common_body_anthropic_shape_reads_inner(void **state)
{
    (void)state;
    air_fault_t f = parse("{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
                          "\"message\":\"Overloaded\"}}");
    assert_string_equal(f.type, "overloaded_error");
    assert_string_equal(f.message, "Overloaded");
}

static void
test_common_body_gemini_status_becomes_type(void **state)
{
    (void)state;
    air_fault_t f = parse("{\"error\":{\"code\":400,\"message\":\"bad key\","
                          "\"status\":\"INVALID_ARGUMENT\"}}");
    assert_string_equal(f.type, "INVALID_ARGUMENT");
    assert_string_equal(f.code, "400");
    assert_string_equal(f.message, "bad key");
}

static void
test_common_body_error_string_shape(void **state)
{
    (void)state;
    air_fault_t f = parse("{\"error\":\"model not found\"}");
    assert_string_equal(f.message, "model not found");
    assert_string_equal(f.type, "");
}

static void
test_common_body_flat_shape(void **state)
{
    (void)state;
    air_fault_t f = parse("{\"object\":\"error\",\"message\":\"Extra inputs\",\"type\":"
                          "\"invalid_request_error\",\"param\":null,\"code\":400}");
    assert_string_equal(f.message, "Extra inputs");
    assert_string_equal(f.type, "invalid_request_error");
    assert_string_equal(f.code, "400");
}

static void
test_common_body_flat_object_message_rendered(void **state)
{
    (void)state;
    air_fault_t f = parse("{\"object\":\"error\",\"message\":{\"detail\":[{\"msg\":\"x\"}]},"
                          "\"type\":\"invalid_request_error\"}");
    assert_string_equal(f.message, "{\"detail\":[{\"msg\":\"x\"}]}");
}

static void
test_common_body_message_only_shape(void **state)
{
    (void)state;
    air_fault_t f = parse("{\"message\":\"rate limit\",\"type\":\"rate_limit\"}");
    assert_string_equal(f.message, "rate limit");
    assert_string_equal(f.type, "rate_limit");
}

static void
test_common_body_array_shape_reads_first(void **state)
{
    (void)state;
    air_fault_t f = parse("  [{\"error\":{\"code\":429,\"message\":\"Resource exhausted\","
                          "\"status\":\"RESOURCE_EXHAUSTED\"}}]");
    assert_string_equal(f.message, "Resource exhausted");
    assert_string_equal(f.type, "RESOURCE_EXHAUSTED");
    assert_string_equal(f.code, "429");
}

static void
test_common_body_html_truncated_and_cleaned(void **state)
{
    (void)state;
    char html[600];
    snprintf(html, sizeof html, "%s", "\n<html>\r\n<head><title>502 Bad Gateway</title></head>\t");
    size_t n = strlen(html);
    memset(html + n, 'x', 400);
    html[n + 400] = '\0';
    air_fault_t f = parse(html);
    assert_int_equal(strlen(f.message), 200);
    assert_true(strncmp(f.message, "<html>  <head><title>502", 24) == 0);
    for (size_t i = 0; f.message[i]; i++)
        assert_true((unsigned char)f.message[i] >= 0x20);
}

static void
test_common_body_text_never_splits_utf8(void **state)
{
    (void)state;
    char text[400];
    memset(text, 'a', 199);
    /* "é" (2 bytes) straddles the 200-byte limit. */
    text[199] = (char)0xC3;
    text[200] = (char)0xA9;
    memset(text + 201, 'b', 50);
    text[251] = '\0';
    air_fault_t f = parse(text);
    assert_int_equal(strlen(f.message), 199);
}

static void
test_common_body_unknown_json_kept_as_text(void **state)
{
    (void)state;
    air_fault_t f = parse("{\"weird\":true}");
    assert_string_equal(f.message, "{\"weird\":true}");
}

static void
test_common_body_empty_or_truncated_never_fails(void **state)
{
    (void)state;
    air_fault_t f = parse("");
    assert_string_equal(f.message, "");
    f = parse("{\"error\":{\"message\":\"cut");
    assert_string_equal(f.message, "{\"error\":{\"message\":\"cut");
    f = parse("[]");
    assert_string_equal(f.message, "[]");
    air__fault_parse_body(&f, NULL, 0);
}

static int64_t
retry_after(const char *ms, const char *secs, int64_t now_ms)
{
    struct hdrs h = {{NULL}};
    size_t i = 0;
    if (ms != NULL) {
        h.kv[i++] = "Retry-After-Ms";
        h.kv[i++] = ms;
    }
    if (secs != NULL) {
        h.kv[i++] = "Retry-After";
        h.kv[i++] = secs;
    }
    air_http_in_t in = mk_in(&h, now_ms);
    return air__retry_after_ms(&in);
}

static void
test_common_retry_after_ms_wins(void **state)
{
    (void)state;
    assert_int_equal(retry_after("1500", "20", 0), 1500);
    assert_int_equal(retry_after("12.6", NULL, 0), 13);
    assert_int_equal(retry_after("-5", NULL, 0), 0);
}

static void
test_common_retry_after_seconds_fractional(void **state)
{
    (void)state;
    assert_int_equal(retry_after(NULL, "20", 0), 20000);
    assert_int_equal(retry_after(NULL, " 1.25 ", 0), 1250);
    assert_int_equal(retry_after(NULL, "0.0004", 0), 0);
    assert_int_equal(retry_after("garbage", "2", 0), 2000);
}

static void
test_common_retry_after_http_date_relative_to_now(void **state)
{
    (void)state;
    /* Sun, 06 Nov 1994 08:49:37 GMT = 784111777 */
    int64_t at = 784111777LL * 1000;
    assert_int_equal(retry_after(NULL, "Sun, 06 Nov 1994 08:49:37 GMT", at - 30000), 30000);
    assert_int_equal(retry_after(NULL, "Sun, 06 Nov 1994 08:49:37 GMT", at + 5000), 0);
    /* 2025-10-09T08:53:20Z = 1760000000 */
    assert_int_equal(retry_after(NULL, "Thu, 09 Oct 2025 08:53:30 GMT", 1760000000000LL), 10000);
    /* Leap day. 2024-02-29T00:00:00Z = 1709164800 */
    assert_int_equal(retry_after(NULL, "Thu, 29 Feb 2024 00:00:01 GMT", 1709164800000LL), 1000);
}

static void
test_common_retry_after_invalid_is_minus_one(void **state)
{
    (void)state;
    assert_int_equal(retry_after(NULL, NULL, 0), -1);
    assert_int_equal(retry_after(NULL, "soon", 0), -1);
    assert_int_equal(retry_after(NULL, "Sun, 06 Foo 1994 08:49:37 GMT", 0), -1);
    assert_int_equal(retry_after(NULL, "Sun, 06 Nov 1994 08:49:37 PST", 0), -1);
    assert_int_equal(retry_after(NULL, "", 0), -1);
    assert_int_equal(retry_after(NULL, ".", 0), -1);
    air_http_in_t in = {0};
    assert_int_equal(air__retry_after_ms(&in), -1);
    assert_int_equal(air__retry_after_ms(NULL), -1);
}

static void
test_common_retry_after_huge_is_clamped(void **state)
{
    (void)state;
    int64_t v = retry_after(NULL, "99999999999999999999999999", 0);
    assert_true(v > 0);
    assert_true(v <= 1000000000000LL);
}

static void
test_common_should_retry_header_overrides(void **state)
{
    (void)state;
    struct hdrs no = {{"x-should-retry", "false", NULL}};
    struct hdrs yes = {{"X-Should-Retry", "TRUE", NULL}};
    air_http_in_t in_no = mk_in(&no, 0), in_yes = mk_in(&yes, 0);

    air_fault_t f = fault_for(503);
    air__fault_apply_should_retry(&f, &in_no);
    assert_int_equal(f.retry, 0);
    assert_int_equal(f.failover, 1);

    f = fault_for(404);
    air__fault_apply_should_retry(&f, &in_yes);
    assert_int_equal(f.retry, 1);

    f = fault_for(400);
    air__fault_apply_should_retry(&f, &in_yes);
    assert_int_equal(f.retry, 0);

    struct hdrs none = {{NULL}};
    air_http_in_t in_none = mk_in(&none, 0);
    f = fault_for(500);
    air__fault_apply_should_retry(&f, &in_none);
    assert_int_equal(f.retry, 1);
}

static void
test_common_strlcpy_truncates_and_terminates(void **state)
{
    (void)state;
    char b[4];
    air__strlcpy(b, "abcdef", sizeof b);
    assert_string_equal(b, "abc");
    air__strlcpy(b, "x", sizeof b);
    assert_string_equal(b, "x");
    air__strlcpy(b, NULL, sizeof b);
    assert_string_equal(b, "");
}

static void
test_common_url_join_strips_trailing_slashes(void **state)
{
    (void)state;
    char *u = air__url_join("https://api.openai.com/v1//", "/chat/completions");
    assert_string_equal(u, "https://api.openai.com/v1/chat/completions");
    air__free(u);
    u = air__url_join("http://127.0.0.1:9", "/x");
    assert_string_equal(u, "http://127.0.0.1:9/x");
    air__free(u);
}

static void
test_common_header_formats_and_empty_value(void **state)
{
    (void)state;
    char *h = air__header("Authorization", "Bearer k");
    assert_string_equal(h, "Authorization: Bearer k");
    air__free(h);
    h = air__header("Expect", "");
    assert_string_equal(h, "Expect:");
    air__free(h);
}

static void
test_common_clear_releases_and_zeroes(void **state)
{
    (void)state;
    air_http_out_t out = {0};
    out.url = air__strdup("u");
    out.headers[0] = air__strdup("A: b");
    out.headers[1] = air__strdup("C: d");
    out.nheaders = 2;
    out.body = air__strdup("{}");
    out.body_len = 2;
    air__http_out_clear(&out);
    assert_null(out.url);
    assert_null(out.body);
    assert_int_equal(out.nheaders, 0);
    air__http_out_clear(NULL);

    air_decoded_t d = {0};
    d.body = air__strdup("{}");
    d.usage.prompt = 3;
    air__decoded_clear(&d);
    assert_null(d.body);
    assert_int_equal(d.usage.prompt, 0);
    air__decoded_clear(NULL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_common_status_table_matches_spec),
        cmocka_unit_test(test_common_status_keeps_vendor_fields),
        cmocka_unit_test(test_common_body_openai_shape_fills_all),
        cmocka_unit_test(test_common_body_null_code_left_empty),
        cmocka_unit_test(test_common_body_anthropic_shape_reads_inner),
        cmocka_unit_test(test_common_body_gemini_status_becomes_type),
        cmocka_unit_test(test_common_body_error_string_shape),
        cmocka_unit_test(test_common_body_flat_shape),
        cmocka_unit_test(test_common_body_flat_object_message_rendered),
        cmocka_unit_test(test_common_body_message_only_shape),
        cmocka_unit_test(test_common_body_array_shape_reads_first),
        cmocka_unit_test(test_common_body_html_truncated_and_cleaned),
        cmocka_unit_test(test_common_body_text_never_splits_utf8),
        cmocka_unit_test(test_common_body_unknown_json_kept_as_text),
        cmocka_unit_test(test_common_body_empty_or_truncated_never_fails),
        cmocka_unit_test(test_common_retry_after_ms_wins),
        cmocka_unit_test(test_common_retry_after_seconds_fractional),
        cmocka_unit_test(test_common_retry_after_http_date_relative_to_now),
        cmocka_unit_test(test_common_retry_after_invalid_is_minus_one),
        cmocka_unit_test(test_common_retry_after_huge_is_clamped),
        cmocka_unit_test(test_common_should_retry_header_overrides),
        cmocka_unit_test(test_common_strlcpy_truncates_and_terminates),
        cmocka_unit_test(test_common_url_join_strips_trailing_slashes),
        cmocka_unit_test(test_common_header_formats_and_empty_value),
        cmocka_unit_test(test_common_clear_releases_and_zeroes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
