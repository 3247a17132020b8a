/*
 * test_reqcheck.c - the request validation in air_req_new: every field of
 * the OpenAI Chat Completions request that users get wrong is refused with
 * AIR_E_BADREQ and a message that starts with its JSON path; valid
 * requests (tool round trips, content parts, nulls for optional fields,
 * fields a vendor adds) still pass. No network: the router is never
 * started on a request.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "airouter.h"

static int
setup(void **state)
{
    air_t *r = NULL;
    char err[256];
    /* A provider on the discard port: nothing is ever sent. */
    air_status_t st = air_new("{\"providers\":[{\"name\":\"p\",\"kind\":\"openai\","
                              "\"base_url\":\"http://127.0.0.1:9/v1\"}],"
                              "\"routes\":[{\"model\":\"m\",\"targets\":[{\"provider\":\"p\","
                              "\"model\":\"up\"}]}]}",
                              &r, err, sizeof err);
    if (st != AIR_OK)
        fail_msg("air_new: %s", err);
    *state = r;
    return 0;
}

static int
teardown(void **state)
{
    air_free(*state, 0);
    return 0;
}

/* air_req_new on body; returns its status and leaves the message in err. */
static air_status_t
try_body(air_t *r, const char *body, char *err, size_t errlen)
{
    air_req_t *q = NULL;
    air_status_t st = air_req_new(r, body, strlen(body), &q, err, errlen);
    if (st == AIR_OK) {
        assert_non_null(q);
        air_req_free(q);
    } else {
        assert_null(q);
    }
    return st;
}

#define MSG_USER "{\"role\":\"user\",\"content\":\"hi\"}"

static void
test_reqcheck_valid_requests_pass(void **state)
{
    air_t *r = *state;
    static const char *const ok[] = {
        /* The minimum. */
        "{\"model\":\"m\",\"messages\":[" MSG_USER "]}",
        /* Every checked field, with a good value. */
        "{\"model\":\"m\",\"messages\":[" MSG_USER "],\"temperature\":0.7,\"top_p\":1,"
        "\"presence_penalty\":-0.5,\"frequency_penalty\":2,\"max_tokens\":100,"
        "\"max_completion_tokens\":0,\"n\":1,\"seed\":-42,\"stop\":[\"\\n\",\"END\"],"
        "\"logprobs\":true,\"top_logprobs\":3,\"parallel_tool_calls\":false,\"user\":\"u-1\","
        "\"metadata\":{\"team\":\"search\"},\"logit_bias\":{\"50256\":-100},"
        "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\","
        "\"schema\":{\"type\":\"object\"}}},\"stream\":true,"
        "\"stream_options\":{\"include_usage\":true},"
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":"
        "{\"type\":\"object\"}}}],\"tool_choice\":{\"type\":\"function\",\"function\":"
        "{\"name\":\"f\"}}}",
        /* stop as a string, tool_choice as a string. */
        "{\"model\":\"m\",\"messages\":[" MSG_USER "],\"stop\":\"END\",\"tool_choice\":\"auto\"}",
        /* null for optional fields means unset. */
        "{\"model\":\"m\",\"messages\":[" MSG_USER "],\"temperature\":null,\"max_tokens\":null,"
        "\"stop\":null,\"tools\":null,\"tool_choice\":null,\"user\":null,\"metadata\":null,"
        "\"stream\":null,\"stream_options\":null,\"response_format\":null,\"seed\":null}",
        /* A whole tool round trip: assistant with tool_calls and null (or no)
         * content, then the tool's answer. */
        "{\"model\":\"m\",\"messages\":[" MSG_USER ",{\"role\":\"assistant\",\"content\":null,"
        "\"tool_calls\":[{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"f\","
        "\"arguments\":\"{}\"}}]},{\"role\":\"tool\",\"tool_call_id\":\"call_1\","
        "\"content\":\"42\"},{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"c2\","
        "\"function\":{\"name\":\"g\",\"arguments\":\"\"}}]},{\"role\":\"tool\","
        "\"tool_call_id\":\"c2\",\"content\":[{\"type\":\"text\",\"text\":\"ok\"}]}]}",
        /* Content parts, system/developer roles, names, refusal. */
        "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"
        "{\"role\":\"developer\",\"content\":[{\"type\":\"text\",\"text\":\"x\"}],\"name\":\"d\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"what is it?\"},"
        "{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://example.com/a.png\"}}]},"
        "{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},"
        "{\"role\":\"assistant\",\"content\":[{\"type\":\"refusal\",\"refusal\":\"no\"}]},"
        "{\"role\":\"user\",\"content\":[]}]}",
        /* Legacy function calling. */
        "{\"model\":\"m\",\"messages\":[" MSG_USER ",{\"role\":\"assistant\",\"content\":null,"
        "\"function_call\":{\"name\":\"f\",\"arguments\":\"{}\"}},{\"role\":\"function\","
        "\"name\":\"f\",\"content\":\"1\"}]}",
        /* Fields a vendor adds, and tool types other than "function", pass
         * through untouched. */
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\",\"x_extra\":{}}],"
        "\"reasoning_effort\":\"low\",\"safe_prompt\":true,\"top_k\":\"any\","
        "\"tools\":[{\"type\":\"custom\",\"custom\":{\"name\":\"grammar\"}}]}",
        /* Large but integral seed, exponent notation integers. */
        "{\"model\":\"m\",\"messages\":[" MSG_USER "],\"seed\":9007199254740993,"
        "\"max_tokens\":1e3}",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char err[256] = "";
        air_status_t st = try_body(r, ok[i], err, sizeof err);
        if (st != AIR_OK)
            fail_msg("case %zu refused (%s): %s", i, air_status_name(st), err);
        assert_string_equal(err, "");
    }
}

static void
test_reqcheck_wrong_fields_name_their_path(void **state)
{
    air_t *r = *state;
    static const struct {
        const char *body;
        const char *path; /* the message starts with "<path>: " */
        const char *also; /* and contains this */
    } cases[] = {
        /* messages[i].content */
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":5}]}",
         "messages[0].content", "string or an array of content parts"},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":{\"text\":\"x\"}}]}",
         "messages[0].content", "string or an array"},
        {"{\"model\":\"m\",\"messages\":[" MSG_USER ",{\"role\":\"user\"}]}", "messages[1].content",
         "missing"},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"system\"}]}", "messages[0].content",
         "missing"},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"developer\",\"content\":null}]}",
         "messages[0].content", "null"},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":null}]}",
         "messages[0].content", "only in an assistant message with tool_calls"},
        {"{\"model\":\"m\",\"messages\":[" MSG_USER ",{\"role\":\"assistant\",\"content\":null}]}",
         "messages[1].content", "tool_calls"},
        {"{\"model\":\"m\",\"messages\":[" MSG_USER ",{\"role\":\"assistant\"}]}",
         "messages[1].content", "tool_calls"},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[\"hi\"]}]}",
         "messages[0].content[0]", "content part"},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\","
         "\"text\":\"a\"},{\"text\":\"b\"}]}]}",
         "messages[0].content[1].type", "missing"},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":1}]}]}",
         "messages[0].content[0].type", "string"},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\","
         "\"text\":7}]}]}",
         "messages[0].content[0].text", "string"},
        /* roles, names */
        {"{\"model\":\"m\",\"messages\":[{\"role\":1,\"content\":\"x\"}]}", "messages[0].role",
         "string"},
        {"{\"model\":\"m\",\"messages\":[\"hello\"]}", "messages[0]", "object"},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\",\"name\":3}]}",
         "messages[0].name", "string"},
        /* tool messages and tool calls */
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"tool\",\"content\":\"42\"}]}",
         "messages[0].tool_call_id", "missing"},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"tool\",\"content\":\"42\","
         "\"tool_call_id\":7}]}",
         "messages[0].tool_call_id", "string"},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"assistant\",\"tool_calls\":{}}]}",
         "messages[0].tool_calls", "array"},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"type\":"
         "\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}]}",
         "messages[0].tool_calls[0].id", "string"},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"c\","
         "\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":{\"a\":1}}}]}]}",
         "messages[0].tool_calls[0].function.arguments", "JSON text"},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"c\","
         "\"type\":\"function\",\"function\":{\"arguments\":\"{}\"}}]}]}",
         "messages[0].tool_calls[0].function.name", "string"},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"c\","
         "\"type\":\"function\"}]}]}",
         "messages[0].tool_calls[0].function", "object"},
        /* sampling numbers */
        {"{\"model\":\"m\",\"messages\":[" MSG_USER "],\"temperature\":\"0.7\"}", "temperature",
         "number"},
        {"{\"model\":\"m\",\"messages\":[" MSG_USER "],\"top_p\":true}", "top_p", "number"},
        {"{\"model\":\"m\",\"messages\":[" MSG_USER "],\"presence_penalty\":[]}",
         "presence_penalty", "number"},
        {"{\"model\":\"m\",\"messages\":[" MSG_USER "],\"frequency_penalty\":\"x\"}",
         "frequency_penalty", "number"},
        /* counts */
        {"{\"model\":\"m\",\"messages\":[" MSG_USER "],\"max_tokens\":\"100\"}", "max_tokens",
         "integer"},
        {"{\"model\":\"m\",\"messages\":[" MSG_USER "],\"max_tokens\":10.5}", "max_tokens",
         "integer"},
        {"{\"model\":\"m\",\"messages\":[" MSG_USER "],\"max_completion_tokens\":-1}",
         "max_completion_tokens", ">= 0"},
        {"{\"model\":\"m\",\"messages\":[" MSG_USER "],\"n\":0}", "n", ">= 1"},
        {"{\"model\":\"m\",\"messages\":[" MSG_USER "],\"seed\":1.5}", "seed", "integer"},
        {"{\"model\":\"m\",\"messages\":[" MSG_USER "],\"top_logprobs\":\"3\"}", "top_logprobs",
         "integer"},
        {"{\"model\":\"m\",\"messages\":[" MSG_USER "],\"logprobs\":1}", "logprobs", "boolean"},
        {"{\"model\":\"m\",\"messages\":[" MSG_USER "],\"parallel_tool_calls\":\"no\"}",
         "parallel_tool_calls", "boolean"},
        /* stop */
        {"{\"model\":\"m\",\"messages\":[" MSG_USER "],\"stop\":5}", "stop",
         "string or an array of strings"},
        {"{\"model\":\"m\",\"messages\":[" MSG_USER "],\"stop\":[\"a\",2]}", "stop[1]", "string"},
        /* tools */
        {"{\"model\":\"m\",\"messages\":[" MSG_USER "],\"tools\":{}}", "tools", "array"},
        {"{\"model\":\"m\",\"messages\":[" MSG_USER "],\"tools\":[\"f\"]}", "tools[0]", "object"},
        {"{\"model\":\"m\",\"messages\":[" MSG_USER "],\"tools\":[{\"function\":{\"name\":"
         "\"f\"}}]}",
         "tools[0].type", "string"},
        {"{\"model\":\"m\",\"messages\":[" MSG_USER "],\"tools\":[{\"type\":\"function\","
         "\"function\":{\"name\":\"f\"}},{\"type\":\"function\",\"function\":{\"description\":"
         "\"no name\"}}]}",
         "tools[1].function.name", "string"},
        {"{\"model\":\"m\",\"messages\":[" MSG_USER "],\"tools\":[{\"type\":\"function\","
         "\"name\":\"f\"}]}",
         "tools[0].function", "object"},
        {"{\"model\":\"m\",\"messages\":[" MSG_USER "],\"tools\":[{\"type\":\"function\","
         "\"function\":{\"name\":\"f\",\"parameters\":\"{}\"}}]}",
         "tools[0].function.parameters", "object"},
        {"{\"model\":\"m\",\"messages\":[" MSG_USER "],\"tool_choice\":1}", "tool_choice",
         "string"},
        {"{\"model\":\"m\",\"messages\":[" MSG_USER "],\"tool_choice\":{\"function\":{}}}",
         "tool_choice.type", "string"},
        /* response_format */
        {"{\"model\":\"m\",\"messages\":[" MSG_USER "],\"response_format\":\"json\"}",
         "response_format", "object"},
        {"{\"model\":\"m\",\"messages\":[" MSG_USER "],\"response_format\":{}}",
         "response_format.type", "string"},
        {"{\"model\":\"m\",\"messages\":[" MSG_USER "],\"response_format\":{\"type\":"
         "\"json_schema\",\"json_schema\":{\"schema\":{}}}}",
         "response_format.json_schema.name", "string"},
        /* user, metadata, logit_bias, stream */
        {"{\"model\":\"m\",\"messages\":[" MSG_USER "],\"user\":42}", "user", "string"},
        {"{\"model\":\"m\",\"messages\":[" MSG_USER "],\"metadata\":[1]}", "metadata", "object"},
        {"{\"model\":\"m\",\"messages\":[" MSG_USER "],\"logit_bias\":[1]}", "logit_bias",
         "object"},
        {"{\"model\":\"m\",\"messages\":[" MSG_USER "],\"logit_bias\":{\"50256\":\"-100\"}}",
         "logit_bias", "50256"},
        {"{\"model\":\"m\",\"messages\":[" MSG_USER "],\"stream\":1}", "stream", "boolean"},
        {"{\"model\":\"m\",\"messages\":[" MSG_USER "],\"stream_options\":true}", "stream_options",
         "object"},
        {"{\"model\":\"m\",\"messages\":[" MSG_USER "],\"stream_options\":{\"include_usage\":"
         "\"yes\"}}",
         "stream_options.include_usage", "boolean"},
        /* the required ones */
        {"{\"messages\":[" MSG_USER "]}", "model", "missing"},
        {"{\"model\":\"\",\"messages\":[" MSG_USER "]}", "model", "non-empty string"},
        {"{\"model\":\"m\"}", "messages", "missing"},
        {"{\"model\":\"m\",\"messages\":[]}", "messages", "non-empty array"},
        {"{\"model\":\"m\",\"messages\":null}", "messages", "non-empty array"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[256] = "";
        air_status_t st = try_body(r, cases[i].body, err, sizeof err);
        if (st != AIR_E_BADREQ)
            fail_msg("case %zu (%s): got %s, want AIR_E_BADREQ", i, cases[i].body,
                     air_status_name(st));
        size_t pl = strlen(cases[i].path);
        if (strncmp(err, cases[i].path, pl) != 0 || strncmp(err + pl, ": ", 2) != 0)
            fail_msg("case %zu: '%s' does not start with '%s: '", i, err, cases[i].path);
        if (strstr(err, cases[i].also) == NULL)
            fail_msg("case %zu: '%s' does not contain '%s'", i, err, cases[i].also);
    }
}

/* The first error in document order is the one reported, and a duplicate
 * key is checked too (a later bad copy is not hidden by a good first one). */
static void
test_reqcheck_duplicates_and_order(void **state)
{
    air_t *r = *state;
    char err[256] = "";
    assert_int_equal(try_body(r,
                              "{\"temperature\":\"hot\",\"model\":5,\"messages\":[" MSG_USER "]}",
                              err, sizeof err),
                     AIR_E_BADREQ);
    assert_non_null(strstr(err, "temperature: "));
    assert_int_equal(
        try_body(r, "{\"model\":\"m\",\"model\":7,\"messages\":[" MSG_USER "]}", err, sizeof err),
        AIR_E_BADREQ);
    assert_non_null(strstr(err, "model: "));
    /* A short error buffer is truncated, never overrun. */
    char tiny[8];
    memset(tiny, 'x', sizeof tiny);
    assert_int_equal(
        try_body(r, "{\"model\":\"m\",\"messages\":[" MSG_USER "],\"n\":0}", tiny, sizeof tiny),
        AIR_E_BADREQ);
    assert_int_equal(tiny[sizeof tiny - 1], '\0');
    /* And no buffer at all is fine. */
    air_req_t *q = NULL;
    const char *b = "{\"model\":\"m\",\"messages\":[" MSG_USER "],\"n\":0}";
    assert_int_equal(air_req_new(r, b, strlen(b), &q, NULL, 0), AIR_E_BADREQ);
    assert_null(q);
}

/* The check is one pass without allocation: a large valid request (many
 * messages, parts and tools) costs little over parsing it. */
static void
test_reqcheck_large_request_is_fast(void **state)
{
    air_t *r = *state;
    size_t cap = 4u << 20;
    char *b = malloc(cap);
    assert_non_null(b);
    size_t off = (size_t)snprintf(b, cap, "{\"model\":\"m\",\"tools\":[");
    for (int i = 0; i < 200; i++)
        off += (size_t)snprintf(b + off, cap - off,
                                "%s{\"type\":\"function\",\"function\":{\"name\":\"f%d\","
                                "\"parameters\":{\"type\":\"object\"}}}",
                                i ? "," : "", i);
    off += (size_t)snprintf(b + off, cap - off, "],\"messages\":[");
    for (int i = 0; i < 5000; i++)
        off += (size_t)snprintf(b + off, cap - off,
                                "%s{\"role\":\"user\",\"content\":[{\"type\":\"text\","
                                "\"text\":\"message %d\"}]},{\"role\":\"assistant\","
                                "\"content\":null,\"tool_calls\":[{\"id\":\"c%d\",\"type\":"
                                "\"function\",\"function\":{\"name\":\"f1\",\"arguments\":"
                                "\"{}\"}}]},{\"role\":\"tool\",\"tool_call_id\":\"c%d\","
                                "\"content\":\"ok\"}",
                                i ? "," : "", i, i, i);
    snprintf(b + off, cap - off, "]}");
    char err[256] = "";
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int k = 0; k < 5; k++)
        if (try_body(r, b, err, sizeof err) != AIR_OK)
            fail_msg("refused: %s", err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    /* ~1.5 MB of JSON, five times: generous even under sanitizers. */
    assert_true(ms < 5000);
    free(b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reqcheck_valid_requests_pass),
        cmocka_unit_test(test_reqcheck_wrong_fields_name_their_path),
        cmocka_unit_test(test_reqcheck_duplicates_and_order),
        cmocka_unit_test(test_reqcheck_large_request_is_fast),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
