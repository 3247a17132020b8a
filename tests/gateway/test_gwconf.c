/*
 * test_gwconf.c - the gateway's configuration keys (validation messages
 * with JSON paths, defaults, removal before the engine sees the document,
 * the served model list and its prices, redaction) and the per-key limits
 * (rpm/tpm token buckets, budgets over calendar windows).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "gateway.h"
#include "gwconf.h"
#include "gwlimits.h"

#define PROVIDERS                                                                                  \
    "\"providers\":[{\"name\":\"a\",\"kind\":\"openai\",\"base_url\":\"http://127.0.0.1:9/v1\","   \
    "\"models\":[{\"name\":\"x1\",\"input_price_per_mtok\":2,\"output_price_per_mtok\":8},"        \
    "{\"name\":\"x2\"}]},{\"name\":\"b\",\"kind\":\"openai\",\"base_url\":"                        \
    "\"http://127.0.0.1:9/v1\",\"models\":[{\"name\":\"y1\",\"input_price_per_mtok\":5,"           \
    "\"output_price_per_mtok\":3}]}],\"routes\":[{\"model\":\"chat\",\"targets\":[{\"provider\":"  \
    "\"a\",\"model\":\"x1\"},{\"provider\":\"b\",\"model\":\"y1\"}]}]"

static struct air__gw_conf *
parse_ok(const char *text)
{
    struct air__gw_conf *c = NULL;
    char err[512];
    air_status_t st = air__gw_conf_parse(text, strlen(text), &c, err, sizeof err);
    if (st != AIR_OK)
        fail_msg("parse failed: %s", err);
    return c;
}

static void
expect_error(const char *text, const char *want)
{
    struct air__gw_conf *c = NULL;
    char err[512];
    air_status_t st = air__gw_conf_parse(text, strlen(text), &c, err, sizeof err);
    if (st == AIR_OK) {
        air__gw_conf_unref(c);
        fail_msg("expected '%s', parsed fine: %s", want, text);
    }
    assert_int_equal(st, AIR_E_CONFIG);
    if (strcmp(err, want) != 0)
        fail_msg("got '%s', want '%s'", err, want);
}

static void
test_gwconf_defaults_and_engine_text_stripped(void **state)
{
    (void)state;
    struct air__gw_conf *c =
        parse_ok("{\"workers\":2,\"listen\":\"127.0.0.1:9999\",\"max_body_bytes\":2048,"
                 "\"access_log\":{\"level\":\"off\"}," PROVIDERS "}");
    assert_string_equal(c->listen.text, "127.0.0.1:9999");
    assert_true(c->listen.loopback);
    assert_int_equal(c->max_body_bytes, 2048);
    assert_int_equal(c->max_connections, 4096);
    assert_int_equal(c->client_timeout_ms, 60000);
    assert_int_equal(c->http_mode, AIR_GW_HTTP_WORKERS);
    assert_int_equal(c->nkeys, 0);
    assert_false(c->admin_enabled);
    assert_string_equal(c->admin_listen.text, "127.0.0.1:8081");
    assert_int_equal(c->log_level, AIR_GW_LOG_OFF);
    assert_int_equal(c->log_fd, -1);
    /* The engine's text keeps its keys and loses ours. */
    assert_non_null(strstr(c->engine_json, "\"workers\":2"));
    assert_non_null(strstr(c->engine_json, "\"providers\""));
    assert_null(strstr(c->engine_json, "listen"));
    assert_null(strstr(c->engine_json, "max_body_bytes"));
    assert_null(strstr(c->engine_json, "access_log"));
    air__gw_conf_unref(c);

    c = parse_ok("{" PROVIDERS "}");
    assert_string_equal(c->listen.text, "127.0.0.1:8080");
    assert_int_equal(c->max_body_bytes, 4194304);
    assert_int_equal(c->log_level, AIR_GW_LOG_INFO);
    air__gw_conf_unref(c);
}

static void
test_gwconf_models_listed_with_dearest_prices(void **state)
{
    (void)state;
    struct air__gw_conf *c = parse_ok("{\"access_log\":{\"level\":\"off\"}," PROVIDERS "}");
    assert_int_equal(c->nmodels, 4); /* chat, x1, x2, y1 */
    assert_string_equal(c->models[0].id, "chat");
    assert_string_equal(c->models[0].owned_by, "airouter");
    /* The route is priced at the dearest of its targets, per direction. */
    assert_true(c->models[0].in_price == 5.0);
    assert_true(c->models[0].out_price == 8.0);
    const struct air__gw_model *m = air__gw_conf_model(c, "x1");
    assert_non_null(m);
    assert_string_equal(m->owned_by, "a");
    assert_true(m->in_price == 2.0);
    assert_non_null(air__gw_conf_model(c, "x2"));
    assert_null(air__gw_conf_model(c, "nope"));
    air__gw_conf_unref(c);
}

static void
test_gwconf_keys_parsed_and_secret_never_kept(void **state)
{
    (void)state;
    setenv("GW_TEST_KEY_A", "sk-client-a-123", 1);
    struct air__gw_conf *c = parse_ok(
        "{\"access_log\":{\"level\":\"off\"},\"keys\":[{\"name\":\"a\",\"key_env\":"
        "\"GW_TEST_KEY_A\",\"rpm\":5,\"tpm\":1000,\"budget_usd\":2.5,\"budget_window\":\"day\","
        "\"models\":[\"chat\"]},{\"name\":\"b\",\"key_sha256\":"
        "\"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\"}]," PROVIDERS "}");
    assert_int_equal(c->nkeys, 2);
    const struct air__gw_key *a = &c->keys[0];
    assert_string_equal(a->name, "a");
    assert_int_equal(a->rpm, 5);
    assert_int_equal(a->tpm, 1000);
    assert_true(a->budget_usd == 2.5);
    assert_int_equal(a->window, AIR_GW_WIN_DAY);
    uint8_t d[AIR_SHA256_LEN];
    air__sha256("sk-client-a-123", 15, d);
    assert_memory_equal(a->digest, d, AIR_SHA256_LEN);
    assert_true(air__gw_key_allows(a, "chat"));
    assert_false(air__gw_key_allows(a, "x1"));
    assert_true(air__gw_key_allows(&c->keys[1], "x1"));
    air__sha256("abc", 3, d);
    assert_memory_equal(c->keys[1].digest, d, AIR_SHA256_LEN);
    /* The redacted view names the variable, never the key or its hash. */
    char *j = air__gw_conf_json(c);
    assert_non_null(j);
    assert_non_null(strstr(j, "GW_TEST_KEY_A"));
    assert_null(strstr(j, "sk-client-a-123"));
    assert_null(strstr(j, "ba7816bf"));
    assert_non_null(strstr(j, "<redacted>"));
    free(j);
    air__gw_conf_unref(c);
}

static void
test_gwconf_errors_name_the_path(void **state)
{
    (void)state;
    setenv("GW_TEST_KEY_B", "sk-b", 1);
    unsetenv("GW_TEST_UNSET");
    expect_error("{\"keys\":[{\"name\":\"a\",\"key_env\":\"GW_TEST_KEY_B\",\"rpm\":-1}]}",
                 "keys[0].rpm: expected a positive integer");
    expect_error("{\"keys\":[{\"name\":\"a\",\"key_env\":\"GW_TEST_KEY_B\",\"rpm\":1.5}]}",
                 "keys[0].rpm: expected a positive integer");
    expect_error("{\"keys\":[{\"name\":\"a\",\"key_env\":\"GW_TEST_KEY_B\",\"rmp\":1}]}",
                 "keys[0].rmp: unknown key (did you mean 'rpm'?)");
    expect_error("{\"keys\":[{\"name\":\"a\",\"key_env\":\"GW_TEST_UNSET\"}]}",
                 "keys[0].key_env: environment variable GW_TEST_UNSET is not set");
    expect_error("{\"keys\":[{\"name\":\"a\"}]}",
                 "keys[0]: exactly one of key_env and key_sha256 is required");
    expect_error("{\"keys\":[{\"key_env\":\"GW_TEST_KEY_B\"}]}",
                 "keys[0].name: required key is missing");
    expect_error("{\"keys\":[{\"name\":\"a\",\"key_sha256\":\"abc\"}]}",
                 "keys[0].key_sha256: expected the key's SHA-256 as 64 hex digits");
    expect_error("{\"keys\":[{\"name\":\"a\",\"key_env\":\"GW_TEST_KEY_B\",\"budget_usd\":1,"
                 "\"budget_window\":\"week\"}]}",
                 "keys[0].budget_window: expected one of \"minute\", \"hour\", \"day\", "
                 "\"month\"");
    expect_error("{\"keys\":[{\"name\":\"a\",\"key_env\":\"GW_TEST_KEY_B\"},{\"name\":\"a\","
                 "\"key_sha256\":"
                 "\"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\"}]}",
                 "keys[1].name: duplicate key name 'a'");
    expect_error("{\"keys\":[{\"name\":\"a\",\"key_env\":\"GW_TEST_KEY_B\",\"models\":[]}]}",
                 "keys[0].models: expected a non-empty array of model names");
    expect_error("{\"listen\":\"localhost\"}",
                 "listen: expected \"host:port\" with an IP address literal (e.g. "
                 "\"127.0.0.1:8080\", \"[::1]:8080\", \"0.0.0.0:8080\") and a port 0..65535");
    expect_error("{\"max_body_bytes\":\"big\"}", "max_body_bytes: expected an integer");
    expect_error("{\"max_connections\":0}", "max_connections: must be between 1 and 1000000");
    expect_error("{\"admin\":{\"token_env\":\"GW_TEST_UNSET\"}}",
                 "admin.token_env: environment variable GW_TEST_UNSET is not set");
    expect_error("{\"admin\":{\"token\":\"x\"}}", "admin.token: unknown key");
    expect_error("{\"access_log\":{\"level\":\"debug\"}}",
                 "access_log.level: expected one of \"off\", \"error\", \"info\"");
    expect_error("{\"listen\":\"127.0.0.1:1\",\"listen\":\"127.0.0.1:2\"}",
                 "listen: duplicate key");
    /* A key pasted where the variable name goes is refused without echo. */
    struct air__gw_conf *c = NULL;
    char err[512];
    const char *pasted = "{\"keys\":[{\"name\":\"a\",\"key_env\":\"sk-live-XYZ987\"}]}";
    assert_int_equal(air__gw_conf_parse(pasted, strlen(pasted), &c, err, sizeof err), AIR_E_CONFIG);
    assert_null(strstr(err, "sk-live-XYZ987"));
    assert_non_null(strstr(err, "keys[0].key_env"));
}

static void
test_gwconf_invalid_json_left_to_the_engine(void **state)
{
    (void)state;
    struct air__gw_conf *c = NULL;
    char err[256];
    const char *bad = "{\"workers\": 2,,}";
    assert_int_equal(air__gw_conf_parse(bad, strlen(bad), &c, err, sizeof err), AIR_OK);
    assert_true(c->invalid);
    assert_string_equal(c->engine_json, bad);
    air__gw_conf_unref(c);
}

static void
test_gwconf_addr_parse_forms(void **state)
{
    (void)state;
    struct air__gw_addr a;
    assert_int_equal(air__gw_addr_parse("127.0.0.1:80", &a), 0);
    assert_true(a.loopback);
    assert_int_equal(air__gw_addr_parse("127.9.9.9:0", &a), 0);
    assert_true(a.loopback);
    assert_int_equal(air__gw_addr_parse("0.0.0.0:8080", &a), 0);
    assert_false(a.loopback);
    assert_int_equal(air__gw_addr_parse("[::1]:8080", &a), 0);
    assert_true(a.loopback);
    assert_int_equal(air__gw_addr_parse("localhost:1", &a), 0);
    assert_true(a.loopback);
    assert_int_equal(air__gw_addr_parse("127.0.0.1", &a), -1);
    assert_int_equal(air__gw_addr_parse("127.0.0.1:70000", &a), -1);
    assert_int_equal(air__gw_addr_parse("example.com:80", &a), -1);
    assert_int_equal(air__gw_addr_parse("127.0.0.1:-1", &a), -1);
}

/* ---------------------------------------------------------------- limits */

static struct air__gw_key
key_with(int64_t rpm, int64_t tpm, double budget, int window)
{
    struct air__gw_key k;
    memset(&k, 0, sizeof k);
    k.name = "k";
    k.rpm = rpm;
    k.tpm = tpm;
    k.budget_usd = budget;
    k.window = window;
    k.st = air__gw_keystate_new("k");
    assert_non_null(k.st);
    return k;
}

static void
test_limits_rpm_bucket_refuses_then_refills(void **state)
{
    (void)state;
    struct air__gw_key k = key_with(2, 0, 0, AIR_GW_WIN_MONTH);
    struct air__gw_reservation r;
    uint32_t ra;
    uint64_t t = 1000000;
    assert_int_equal(air__gw_limit_admit(&k, t, 0, 10, 0, &r, &ra), AIR_GW_LIMIT_OK);
    assert_int_equal(air__gw_limit_admit(&k, t, 0, 10, 0, &r, &ra), AIR_GW_LIMIT_OK);
    assert_int_equal(air__gw_limit_admit(&k, t, 0, 10, 0, &r, &ra), AIR_GW_LIMIT_RPM);
    assert_int_equal(ra, 30); /* one request per 30 s */
    /* 30 s later one request's worth has come back. */
    assert_int_equal(air__gw_limit_admit(&k, t + 30000000, 0, 10, 0, &r, &ra), AIR_GW_LIMIT_OK);
    assert_int_equal(air__gw_limit_admit(&k, t + 30000000, 0, 10, 0, &r, &ra), AIR_GW_LIMIT_RPM);
    air__gw_keystate_unref(k.st);
}

static void
test_limits_tpm_reconciles_with_reported_usage(void **state)
{
    (void)state;
    struct air__gw_key k = key_with(0, 100, 0, AIR_GW_WIN_MONTH);
    struct air__gw_reservation r1, r2;
    uint32_t ra;
    assert_int_equal(air__gw_limit_admit(&k, 1, 0, 60, 0, &r1, &ra), AIR_GW_LIMIT_OK);
    /* 40 left: a 60-token estimate does not fit. */
    assert_int_equal(air__gw_limit_admit(&k, 1, 0, 60, 0, &r2, &ra), AIR_GW_LIMIT_TPM);
    assert_true(ra >= 1);
    /* The provider reported only 10 tokens: 50 come back. */
    air__gw_limit_settle(&k, &r1, 1, 0, 10, 0);
    assert_int_equal(air__gw_limit_admit(&k, 1, 0, 60, 0, &r2, &ra), AIR_GW_LIMIT_OK);
    /* Reported more than estimated: the bucket goes into debt. */
    air__gw_limit_settle(&k, &r2, 1, 0, 200, 0);
    assert_int_equal(air__gw_limit_admit(&k, 1, 0, 1, 0, &r1, &ra), AIR_GW_LIMIT_TPM);
    air__gw_keystate_unref(k.st);
}

static void
test_limits_budget_reserves_so_concurrent_requests_cannot_overrun(void **state)
{
    (void)state;
    struct air__gw_key k = key_with(0, 0, 1.0, AIR_GW_WIN_HOUR);
    time_t wall = 7200 + 600; /* 10 minutes into an hour */
    struct air__gw_reservation r1, r2, r3;
    uint32_t ra;
    assert_int_equal(air__gw_limit_admit(&k, 1, wall, 1, 0.4, &r1, &ra), AIR_GW_LIMIT_OK);
    assert_int_equal(air__gw_limit_admit(&k, 1, wall, 1, 0.4, &r2, &ra), AIR_GW_LIMIT_OK);
    /* Both still in flight: a third estimate would overrun the budget. */
    assert_int_equal(air__gw_limit_admit(&k, 1, wall, 1, 0.4, &r3, &ra), AIR_GW_LIMIT_BUDGET);
    assert_int_equal(ra, 3000); /* until the end of the hour */
    /* The first cost less than estimated: room for another. */
    air__gw_limit_settle(&k, &r1, 2, wall, 10, 0.1);
    assert_int_equal(air__gw_limit_admit(&k, 2, wall, 1, 0.4, &r3, &ra), AIR_GW_LIMIT_OK);
    air__gw_limit_settle(&k, &r2, 3, wall, 10, 0.4);
    air__gw_limit_settle(&k, &r3, 3, wall, 10, 0.4);
    /* Spent 0.9 of 1.0. */
    assert_int_equal(air__gw_limit_admit(&k, 3, wall, 1, 0.2, &r1, &ra), AIR_GW_LIMIT_BUDGET);
    /* A new hour starts from zero. */
    assert_int_equal(air__gw_limit_admit(&k, 4, wall + 3000, 1, 0.2, &r1, &ra), AIR_GW_LIMIT_OK);
    air__gw_keystate_unref(k.st);
}

static void
test_limits_windows_are_calendar_utc(void **state)
{
    (void)state;
    uint32_t left;
    assert_int_equal(air__gw_window_id(AIR_GW_WIN_MINUTE, 125, &left), 2);
    assert_int_equal(left, 55);
    assert_int_equal(air__gw_window_id(AIR_GW_WIN_DAY, 86400 * 3 + 10, &left), 3);
    assert_int_equal(left, 86390);
    /* 2024-02-29 23:00:00 UTC: a leap February ends in one hour. */
    time_t t = 1709247600;
    int64_t feb = air__gw_window_id(AIR_GW_WIN_MONTH, t, &left);
    assert_int_equal(left, 3600);
    assert_int_equal(air__gw_window_id(AIR_GW_WIN_MONTH, t + 3600, &left), feb + 1);
    /* December rolls into January. */
    time_t dec = 1735686000; /* 2024-12-31 23:00:00 UTC */
    int64_t d = air__gw_window_id(AIR_GW_WIN_MONTH, dec, &left);
    assert_int_equal(left, 3600);
    assert_int_equal(air__gw_window_id(AIR_GW_WIN_MONTH, dec + 3600, NULL), d + 1);
}

static void
test_gwconf_http_mode_values(void **state)
{
    (void)state;
    struct air__gw_conf *c = parse_ok("{\"http_mode\":\"pool\"," PROVIDERS "}");
    assert_int_equal(c->http_mode, AIR_GW_HTTP_POOL);
    assert_null(strstr(c->engine_json, "http_mode"));
    char *js = air__gw_conf_json(c);
    assert_non_null(strstr(js, "\"http_mode\":\"pool\""));
    free(js);
    air__gw_conf_unref(c);
    c = parse_ok("{\"http_mode\":\"workers\"," PROVIDERS "}");
    assert_int_equal(c->http_mode, AIR_GW_HTTP_WORKERS);
    js = air__gw_conf_json(c);
    assert_non_null(strstr(js, "\"http_mode\":\"workers\""));
    free(js);
    air__gw_conf_unref(c);
    expect_error("{\"http_mode\":\"threads\"}", "http_mode: expected \"workers\" or \"pool\"");
    expect_error("{\"http_mode\":1}", "http_mode: expected \"workers\" or \"pool\"");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gwconf_defaults_and_engine_text_stripped),
        cmocka_unit_test(test_gwconf_http_mode_values),
        cmocka_unit_test(test_gwconf_models_listed_with_dearest_prices),
        cmocka_unit_test(test_gwconf_keys_parsed_and_secret_never_kept),
        cmocka_unit_test(test_gwconf_errors_name_the_path),
        cmocka_unit_test(test_gwconf_invalid_json_left_to_the_engine),
        cmocka_unit_test(test_gwconf_addr_parse_forms),
        cmocka_unit_test(test_limits_rpm_bucket_refuses_then_refills),
        cmocka_unit_test(test_limits_tpm_reconciles_with_reported_usage),
        cmocka_unit_test(test_limits_budget_reserves_so_concurrent_requests_cannot_overrun),
        cmocka_unit_test(test_limits_windows_are_calendar_utc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
