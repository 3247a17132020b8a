/*
 * test_pricing.c - policy/pricing.c: the dated default table (date format,
 * every row sane, the well-known models present), lookup by exact name, by
 * dated or versioned suffix (longest family wins: gpt-4o-mini-2024-07-18 is
 * gpt-4o-mini, not gpt-4o), after a vendor/ prefix, and the refusals
 * (different models sharing a prefix, empty, NULL); cost arithmetic with
 * cached tokens (cached billed at the cached price, clamped to the prompt,
 * negative cached price = input price); the bytes/4 token estimator.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "pricing.h"

static void
test_pricing_table_is_dated_and_sane(void **state)
{
    (void)state;
    assert_string_equal(air__prices_date, AIR_PRICES_DATE);
    assert_int_equal(strlen(air__prices_date), 10);
    assert_true(air__prices_date[4] == '-' && air__prices_date[7] == '-');
    size_t n;
    const struct air__price *t = air__price_table(&n);
    assert_true(n >= 12);
    for (size_t i = 0; i < n; i++) {
        assert_true(t[i].in > 0 && t[i].out > 0 && t[i].cached_in > 0);
        assert_true(t[i].cached_in <= t[i].in);
        assert_true(air__price_lookup(t[i].model) == &t[i]); /* names are unique */
    }
    static const char *const known[] = {
        "gpt-4o",          "gpt-4o-mini",      "gpt-4.1",          "o3-mini",
        "claude-3-5-sonnet", "claude-3-5-haiku", "claude-sonnet-4",  "gemini-1.5-flash",
        "gemini-2.0-flash", "gemini-2.5-pro",   "deepseek-chat",    "mistral-large",
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        assert_non_null(air__price_lookup(known[i]));
}

static void
test_pricing_lookup_exact(void **state)
{
    (void)state;
    const struct air__price *p = air__price_lookup("gpt-4o");
    assert_non_null(p);
    assert_string_equal(p->model, "gpt-4o");
    assert_true(p->in == 2.50 && p->out == 10.00 && p->cached_in == 1.25);
    p = air__price_lookup("gpt-4o-mini");
    assert_string_equal(p->model, "gpt-4o-mini");
    assert_true(p->in == 0.15);
}

static void
test_pricing_lookup_by_dated_suffix(void **state)
{
    (void)state;
    static const struct {
        const char *model, *family;
    } cases[] = {
        {"gpt-4o-2024-08-06", "gpt-4o"},
        {"gpt-4o-mini-2024-07-18", "gpt-4o-mini"},
        {"o3-mini-2025-01-31", "o3-mini"},
        {"claude-3-5-sonnet-20241022", "claude-3-5-sonnet"},
        {"claude-3-5-sonnet-latest", "claude-3-5-sonnet"},
        {"claude-3-5-sonnet@20241022", "claude-3-5-sonnet"},
        {"claude-sonnet-4-20250514", "claude-sonnet-4"},
        {"gemini-2.0-flash-001", "gemini-2.0-flash"},
        {"gemini-2.0-flash-lite-001", "gemini-2.0-flash-lite"},
        {"mistral-large-2411", "mistral-large"},
        {"openai/gpt-4o-mini", "gpt-4o-mini"},
        {"models/gemini-1.5-flash-002", "gemini-1.5-flash"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct air__price *p = air__price_lookup(cases[i].model);
        if (p == NULL || strcmp(p->model, cases[i].family) != 0)
            fail_msg("%s: got %s, want %s", cases[i].model, p ? p->model : "NULL",
                     cases[i].family);
    }
}

static void
test_pricing_lookup_refuses_other_models(void **state)
{
    (void)state;
    static const char *const unknown[] = {
        "gpt-4o-audio-preview", "gpt-4o-", "gpt-4", "gpt-4oo", "claude", "o3-pro",
        "my-finetune", "gpt-4o-mini-tts", "",
    };
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++)
        if (air__price_lookup(unknown[i]) != NULL)
            fail_msg("%s should be unknown", unknown[i]);
    assert_null(air__price_lookup(NULL));
}

static void
test_pricing_cost_with_cached_tokens(void **state)
{
    (void)state;
    /* gpt-4o: 10k prompt of which 8k cached, 1k completion:
     * 2k x 2.50 + 8k x 1.25 + 1k x 10.00 = 5000 + 10000 + 10000 = 25000 / 1e6 */
    assert_true(fabs(air__cost_usd(2.50, 10.00, 1.25, 10000, 1000, 8000) - 0.025) < 1e-12);
    /* no cache */
    assert_true(fabs(air__cost_usd(2.50, 10.00, 1.25, 1000000, 0, 0) - 2.50) < 1e-12);
    assert_true(fabs(air__cost_usd(2.50, 10.00, 1.25, 0, 1000000, 0) - 10.00) < 1e-12);
    /* cached clamped to the prompt */
    assert_true(fabs(air__cost_usd(2.0, 8.0, 0.5, 1000, 0, 5000) - 0.0005) < 1e-12);
    /* a negative cached price means: as input */
    assert_true(fabs(air__cost_usd(2.0, 8.0, -1, 1000, 0, 1000) - 0.002) < 1e-12);
    assert_true(air__cost_usd(2.0, 8.0, 0.5, 0, 0, 0) == 0);
}

static void
test_pricing_estimate_is_bytes_over_four(void **state)
{
    (void)state;
    assert_int_equal(air__estimate_tokens(0), 0);
    assert_int_equal(air__estimate_tokens(1), 1);
    assert_int_equal(air__estimate_tokens(4), 1);
    assert_int_equal(air__estimate_tokens(5), 2);
    assert_int_equal(air__estimate_tokens(4000), 1000);
    assert_int_equal(air__estimate_tokens(4001), 1001);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pricing_table_is_dated_and_sane),
        cmocka_unit_test(test_pricing_lookup_exact),
        cmocka_unit_test(test_pricing_lookup_by_dated_suffix),
        cmocka_unit_test(test_pricing_lookup_refuses_other_models),
        cmocka_unit_test(test_pricing_cost_with_cached_tokens),
        cmocka_unit_test(test_pricing_estimate_is_bytes_over_four),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
