/*
 * test_ratelimit.c - rate-limit headers in the common form
 * (providers/ratelimit.c): Go durations, RFC 3339 times, the OpenAI,
 * Azure and Anthropic header families, and the ratelimit slot of every
 * built-in kind.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>
#include <cmocka.h>

#include "builtin.h"
#include "ratelimit.h"

#define NOW_MS 1760000000000LL /* 2025-10-09T08:53:20Z */

struct hdrs {
    const char *const *kv; /* name, value, ..., NULL */
};

static const char *
lookup(const void *hctx, const char *name)
{
    const struct hdrs *h = hctx;
    for (size_t i = 0; h->kv[i] != NULL; i += 2)
        if (strcasecmp(h->kv[i], name) == 0)
            return h->kv[i + 1];
    return NULL;
}

static air_http_in_t
http_in(const struct hdrs *h, int status)
{
    air_http_in_t in = {
        .status = status, .body = "", .header = lookup, .hctx = h, .now_unix_ms = NOW_MS};
    return in;
}

static int64_t
dur(const char *s)
{
    int64_t v = -7;
    if (air__ratelimit_duration_ms(s, &v) != 0)
        return -1;
    return v;
}

static void
test_ratelimit_go_durations_parse_to_ms(void **state)
{
    (void)state;
    assert_int_equal(dur("12ms"), 12);
    assert_int_equal(dur("1s"), 1000);
    assert_int_equal(dur("6m0s"), 360000);
    assert_int_equal(dur("1h2m3.5s"), 3723500);
    assert_int_equal(dur("0"), 0);
    assert_int_equal(dur("0s"), 0);
    assert_int_equal(dur("2m59.56s"), 179560);
    assert_int_equal(dur("7.66s"), 7660);
    assert_int_equal(dur(".5s"), 500);
    assert_int_equal(dur("1.5h"), 5400000);
    assert_int_equal(dur(" 20ms "), 20);
    assert_int_equal(dur("+1s"), 1000);
    /* Sub-millisecond parts round up: "in 300us" is not "now". */
    assert_int_equal(dur("300us"), 1);
    assert_int_equal(dur("1ns"), 1);
    assert_int_equal(dur("1000000ns"), 1);
    assert_int_equal(dur("1\xc2\xb5s"), 1);
    assert_int_equal(dur("1s500ms"), 1500);
    /* Plain seconds from compatible vendors (extension). */
    assert_int_equal(dur("2"), 2000);
    assert_int_equal(dur("0.25"), 250);
}

static void
test_ratelimit_go_durations_reject_junk(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",      " ",    "s",    "ms",   "-1s", "1x", "1s2", "1 s",
        "1s 2m", "1e3s", "..5s", "1.s.", "abc", "1d", "1s,", "2 3",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        print_message("bad[%zu] = '%s'\n", i, bad[i]);
        assert_int_equal(dur(bad[i]), -1);
    }
    assert_int_equal(air__ratelimit_duration_ms(NULL, &(int64_t){0}), -1);
}

static void
test_ratelimit_go_durations_saturate(void **state)
{
    (void)state;
    int64_t huge = dur("99999999999999999999999h");
    assert_true(huge > 0);
    assert_int_equal(huge, dur("99999999999999999999999999999h1s"));
    assert_true(dur("9223372036854775807h9223372036854775807h") > 0);
}

static void
test_ratelimit_rfc3339_parses_offsets_and_fractions(void **state)
{
    (void)state;
    int64_t v = 0;
    assert_int_equal(air__ratelimit_rfc3339_ms("2025-10-09T08:53:20Z", &v), 0);
    assert_int_equal(v, NOW_MS);
    assert_int_equal(air__ratelimit_rfc3339_ms("2025-10-09t08:53:21.25z", &v), 0);
    assert_int_equal(v, NOW_MS + 1250);
    assert_int_equal(air__ratelimit_rfc3339_ms("2025-10-09T10:53:20+02:00", &v), 0);
    assert_int_equal(v, NOW_MS);
    assert_int_equal(air__ratelimit_rfc3339_ms("2025-10-09 03:23:20-05:30", &v), 0);
    assert_int_equal(v, NOW_MS);
    assert_int_equal(air__ratelimit_rfc3339_ms("1970-01-01T00:00:00Z", &v), 0);
    assert_int_equal(v, 0);
    static const char *const bad[] = {
        "2025-10-09T09:33:20",   "2025-13-09T09:33:20Z",          "2025-10-09T24:00:00Z",
        "2025-10-9T09:33:20Z",   "2025-10-09T09:33:20.Z",         "2025-10-09T09:33:20+0200",
        "2025-10-09T09:33:20Zx", "Thu, 09 Oct 2025 09:33:20 GMT", "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        print_message("bad[%zu] = '%s'\n", i, bad[i]);
        assert_int_equal(air__ratelimit_rfc3339_ms(bad[i], &v), -1);
    }
}

static void
test_ratelimit_openai_headers_fill_every_field(void **state)
{
    (void)state;
    static const char *const kv[] = {
        "x-ratelimit-limit-requests",
        "10000",
        "x-ratelimit-remaining-requests",
        "9999",
        "x-ratelimit-reset-requests",
        "6ms",
        "x-ratelimit-limit-tokens",
        "30000000",
        "X-RateLimit-Remaining-Tokens",
        "29999",
        "x-ratelimit-reset-tokens",
        "1m0.5s",
        NULL,
    };
    struct hdrs h = {kv};
    air_http_in_t in = http_in(&h, 200);
    air_ratelimit_t rl;
    air__ratelimit_openai(&in, 0, &rl);
    assert_int_equal(rl.present, 1);
    assert_int_equal(rl.limit_requests, 10000);
    assert_int_equal(rl.remaining_requests, 9999);
    assert_int_equal(rl.reset_requests_ms, 6);
    assert_int_equal(rl.limit_tokens, 30000000);
    assert_int_equal(rl.remaining_tokens, 29999);
    assert_int_equal(rl.reset_tokens_ms, 60500);
}

static void
test_ratelimit_openai_absent_or_odd_values_are_unknown(void **state)
{
    (void)state;
    static const char *const kv[] = {
        "x-ratelimit-limit-requests",
        "lots",
        "x-ratelimit-remaining-requests",
        "-1",
        "x-ratelimit-reset-requests",
        "soon",
        "x-ratelimit-remaining-tokens",
        "0",
        NULL,
    };
    struct hdrs h = {kv};
    air_http_in_t in = http_in(&h, 429);
    air_ratelimit_t rl;
    air__ratelimit_openai(&in, 0, &rl);
    assert_int_equal(rl.present, 1); /* remaining tokens 0 is real information */
    assert_int_equal(rl.remaining_tokens, 0);
    assert_int_equal(rl.limit_requests, -1);
    assert_int_equal(rl.remaining_requests, -1);
    assert_int_equal(rl.reset_requests_ms, -1);
    assert_int_equal(rl.limit_tokens, -1);
    assert_int_equal(rl.reset_tokens_ms, -1);

    static const char *const none[] = {"content-type", "application/json", NULL};
    struct hdrs h2 = {none};
    in = http_in(&h2, 200);
    air__ratelimit_openai(&in, 0, &rl);
    assert_int_equal(rl.present, 0);
    assert_int_equal(rl.limit_requests, -1);
    assert_int_equal(rl.reset_tokens_ms, -1);
    /* No header callback at all. */
    in.header = NULL;
    air__ratelimit_openai(&in, 0, &rl);
    assert_int_equal(rl.present, 0);
}

static void
test_ratelimit_azure_ignores_nonpositive_values(void **state)
{
    (void)state;
    static const char *const kv[] = {
        "x-ratelimit-limit-requests",
        "0",
        "x-ratelimit-remaining-requests",
        "-1",
        "x-ratelimit-reset-requests",
        "0s",
        "x-ratelimit-limit-tokens",
        "120000",
        "x-ratelimit-remaining-tokens",
        "0",
        "x-ratelimit-reset-tokens",
        "12s",
        NULL,
    };
    struct hdrs h = {kv};
    air_http_in_t in = http_in(&h, 200);
    air_ratelimit_t rl;
    air__ratelimit_azure_op(NULL, &in, &rl);
    assert_int_equal(rl.present, 1);
    assert_int_equal(rl.limit_requests, -1);
    assert_int_equal(rl.remaining_requests, -1);
    assert_int_equal(rl.reset_requests_ms, -1);
    assert_int_equal(rl.limit_tokens, 120000);
    assert_int_equal(rl.remaining_tokens, -1);
    assert_int_equal(rl.reset_tokens_ms, 12000);

    static const char *const zero[] = {"x-ratelimit-remaining-requests", "0", NULL};
    struct hdrs h2 = {zero};
    in = http_in(&h2, 200);
    air__ratelimit_azure_op(NULL, &in, &rl);
    assert_int_equal(rl.present, 0);
}

static void
test_ratelimit_anthropic_prefers_tokens_group(void **state)
{
    (void)state;
    static const char *const kv[] = {
        "anthropic-ratelimit-requests-limit",
        "50",
        "anthropic-ratelimit-requests-remaining",
        "49",
        "anthropic-ratelimit-requests-reset",
        "2025-10-09T08:53:21Z",
        "anthropic-ratelimit-tokens-limit",
        "90000",
        "anthropic-ratelimit-tokens-remaining",
        "80000",
        "anthropic-ratelimit-tokens-reset",
        "2025-10-09T08:54:20.5Z",
        "anthropic-ratelimit-input-tokens-remaining",
        "1",
        NULL,
    };
    struct hdrs h = {kv};
    air_http_in_t in = http_in(&h, 200);
    air_ratelimit_t rl;
    air__ratelimit_anthropic_op(NULL, &in, &rl);
    assert_int_equal(rl.present, 1);
    assert_int_equal(rl.limit_requests, 50);
    assert_int_equal(rl.remaining_requests, 49);
    assert_int_equal(rl.reset_requests_ms, 1000);
    assert_int_equal(rl.limit_tokens, 90000);
    assert_int_equal(rl.remaining_tokens, 80000);
    assert_int_equal(rl.reset_tokens_ms, 60500);
}

static void
test_ratelimit_anthropic_binding_token_group_and_past_reset(void **state)
{
    (void)state;
    static const char *const kv[] = {
        "anthropic-ratelimit-input-tokens-limit",
        "40000",
        "anthropic-ratelimit-input-tokens-remaining",
        "39000",
        "anthropic-ratelimit-input-tokens-reset",
        "2025-10-09T08:53:30Z",
        "anthropic-ratelimit-output-tokens-limit",
        "8000",
        "anthropic-ratelimit-output-tokens-remaining",
        "100",
        "anthropic-ratelimit-output-tokens-reset",
        "2025-10-09T08:53:00Z", /* past */
        "anthropic-ratelimit-requests-reset",
        "not a date",
        NULL,
    };
    struct hdrs h = {kv};
    air_http_in_t in = http_in(&h, 200);
    air_ratelimit_t rl;
    air__ratelimit_anthropic(&in, &rl);
    assert_int_equal(rl.present, 1);
    assert_int_equal(rl.limit_requests, -1);
    assert_int_equal(rl.reset_requests_ms, -1);
    /* Output tokens run out first. */
    assert_int_equal(rl.limit_tokens, 8000);
    assert_int_equal(rl.remaining_tokens, 100);
    assert_int_equal(rl.reset_tokens_ms, 0); /* already past: clamped */

    /* Input only. */
    static const char *const kv2[] = {"anthropic-ratelimit-input-tokens-remaining", "5", NULL};
    struct hdrs h2 = {kv2};
    in = http_in(&h2, 200);
    air__ratelimit_anthropic(&in, &rl);
    assert_int_equal(rl.remaining_tokens, 5);
    assert_int_equal(rl.limit_tokens, -1);

    /* Without a clock the resets are unknown. */
    in = http_in(&h, 200);
    in.now_unix_ms = 0;
    air__ratelimit_anthropic(&in, &rl);
    assert_int_equal(rl.reset_tokens_ms, -1);
    assert_int_equal(rl.remaining_tokens, 100);
}

static void
test_ratelimit_every_builtin_kind_has_the_slot(void **state)
{
    (void)state;
    static const char *const kv[] = {
        "x-ratelimit-remaining-requests", "7", "anthropic-ratelimit-requests-remaining", "3", NULL,
    };
    struct hdrs h = {kv};
    air_http_in_t in = http_in(&h, 200);
    static const struct {
        const char *kind;
        int64_t remaining; /* -1: the kind reads neither family */
    } want[] = {
        {"openai", 7},  {"anthropic", 3}, {"gemini", -1},  {"deepseek", 7},
        {"mistral", 7}, {"groq", 7},      {"together", 7}, {"openrouter", 7},
        {"xai", 7},     {"ollama", 7},    {"vllm", 7},     {"azure", 7},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const air_provider_ops_t *ops = air__provider_find(want[i].kind);
        print_message("kind %s\n", want[i].kind);
        assert_non_null(ops);
        assert_non_null(ops->ratelimit);
        air_ratelimit_t rl;
        memset(&rl, 0x5a, sizeof rl);
        ops->ratelimit(NULL, &in, &rl);
        assert_int_equal(rl.remaining_requests, want[i].remaining);
        assert_int_equal(rl.present, want[i].remaining >= 0);
        assert_int_equal(rl.limit_tokens, -1);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ratelimit_go_durations_parse_to_ms),
        cmocka_unit_test(test_ratelimit_go_durations_reject_junk),
        cmocka_unit_test(test_ratelimit_go_durations_saturate),
        cmocka_unit_test(test_ratelimit_rfc3339_parses_offsets_and_fractions),
        cmocka_unit_test(test_ratelimit_openai_headers_fill_every_field),
        cmocka_unit_test(test_ratelimit_openai_absent_or_odd_values_are_unknown),
        cmocka_unit_test(test_ratelimit_azure_ignores_nonpositive_values),
        cmocka_unit_test(test_ratelimit_anthropic_prefers_tokens_group),
        cmocka_unit_test(test_ratelimit_anthropic_binding_token_group_and_past_reset),
        cmocka_unit_test(test_ratelimit_every_builtin_kind_has_the_slot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
