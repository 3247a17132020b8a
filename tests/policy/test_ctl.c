/*
 * test_ctl.c - policy/ctl.c and ctl.def: defaults as documented; every
 * entry settable (rw) or refused as read-only (r-) and gettable by path,
 * with the value read back equal to the value set; ranges enforced at both
 * ends with messages naming the path and the params untouched on error;
 * wrong JSON types refused (string for a number, 1.5 for an integer, 1 for a
 * bool, a number or an unknown name for the strategy, null); unknown paths
 * AIR_E_NONAME; typed setters and getters; the text form; rules between
 * fields; the list output is valid JSON with path/type/min/max/default/mode/
 * value for every entry; the helpers core reuses for its own tunables; the
 * conversions to the other modules' structures.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "ctl.h"

static void
test_ctl_defaults_as_documented(void **state)
{
    (void)state;
    struct air__params p;
    air__params_default(&p);
    assert_int_equal(p.strategy, AIR_S_SCORE);
    assert_true(p.w_latency == 0.4 && p.w_cost == 0.3 && p.w_health == 0.2 && p.w_load == 0.1);
    assert_true(p.ewma_halflife_ms == 10000);
    assert_int_equal(p.eject_consecutive_errors, 5);
    assert_int_equal(p.eject_base_ms, 30000);
    assert_int_equal(p.eject_max_ms, 300000);
    assert_true(p.eject_max_percent == 50);
    assert_int_equal(p.retry_max_attempts, 3);
    assert_true(p.retry_budget_ratio == 0.2);
    assert_int_equal(p.retry_budget_min_per_s, 10);
    assert_int_equal(p.hedge_enabled, 0);
    assert_int_equal(p.hedge_delay_ms, 0);
    assert_int_equal(p.hedge_min_ms, 50);
    assert_int_equal(p.hedge_max_ms, 2000);
    assert_int_equal(p.stats_fold_ms, 20);
    assert_string_equal(p.prices_date, AIR_PRICES_DATE);
    char err[256];
    assert_int_equal(air__params_validate(&p, err, sizeof err), AIR_OK);
    /* the table's defaults are what air__params_default wrote */
    for (size_t i = 0; i < air__ctl_count(); i++) {
        const struct air__ctl_entry *e = air__ctl_at(i);
        if (e->type == AIR_CTL_STR)
            continue;
        double v;
        if (e->type == AIR_CTL_STRATEGY) {
            const char *s;
            assert_int_equal(air__ctl_get_str(&p, e->path, &s), AIR_OK);
            assert_string_equal(s, air__strategy_name((enum air__strategy)(int)e->def));
            continue;
        }
        assert_int_equal(air__ctl_get_f64(&p, e->path, &v), AIR_OK);
        assert_true(v == e->def);
        assert_true(e->def >= e->min && e->def <= e->max);
    }
    assert_null(air__ctl_at(air__ctl_count()));
}

/* Set v (JSON text) at path and check it reads back as want (JSON text). */
static void
set_get(struct air__params *p, const char *path, const char *v, const char *want)
{
    char err[256] = "";
    cJSON *j = cJSON_Parse(v);
    assert_non_null(j);
    air_status_t st = air__ctl_set_json(p, path, j, err, sizeof err);
    cJSON_Delete(j);
    if (st != AIR_OK)
        fail_msg("%s = %s: %s (%s)", path, v, air_status_name(st), err);
    char *got = air__ctl_get_json(p, path);
    assert_non_null(got);
    if (strcmp(got, want) != 0)
        fail_msg("%s: set %s, read %s", path, v, got);
    air__free(got);
}

static void
test_ctl_every_entry_settable_and_gettable(void **state)
{
    (void)state;
    struct air__params p;
    air__params_default(&p);
    char buf[64];
    size_t rw = 0;
    for (size_t i = 0; i < air__ctl_count(); i++) {
        const struct air__ctl_entry *e = air__ctl_at(i);
        assert_ptr_equal(air__ctl_find(e->path), e);
        if (e->mode == AIR_CTL_RO) {
            char err[128];
            cJSON *j = cJSON_CreateString("x");
            assert_int_equal(air__ctl_set_json(&p, e->path, j, err, sizeof err),
                             AIR_E_READONLY);
            cJSON_Delete(j);
            assert_non_null(strstr(err, e->path));
            char *got = air__ctl_get_json(&p, e->path);
            assert_non_null(got);
            air__free(got);
            continue;
        }
        rw++;
        switch (e->type) {
        case AIR_CTL_BOOL:
            set_get(&p, e->path, "true", "true");
            set_get(&p, e->path, "false", "false");
            break;
        case AIR_CTL_I64:
        case AIR_CTL_F64: {
            const double vals[3] = {e->min, e->max,
                                    e->type == AIR_CTL_I64 ? floor((e->min + e->max) / 2)
                                                           : (e->min + e->max) / 2};
            for (int k = 0; k < 3; k++) {
                snprintf(buf, sizeof buf, "%.15g", vals[k]);
                set_get(&p, e->path, buf, buf);
            }
            break;
        }
        case AIR_CTL_STRATEGY:
            for (int s = 0; s < AIR_S__COUNT; s++) {
                char want[40];
                snprintf(want, sizeof want, "\"%s\"", air__strategy_name((enum air__strategy)s));
                set_get(&p, e->path, want, want);
            }
            break;
        case AIR_CTL_STR:
            fail_msg("%s: a writable string entry", e->path);
        }
    }
    assert_true(rw >= 20);
}

static void
test_ctl_ranges_enforced_with_path_in_message(void **state)
{
    (void)state;
    struct air__params p, before;
    air__params_default(&p);
    for (size_t i = 0; i < air__ctl_count(); i++) {
        const struct air__ctl_entry *e = air__ctl_at(i);
        if (e->mode != AIR_CTL_RW || (e->type != AIR_CTL_I64 && e->type != AIR_CTL_F64))
            continue;
        const double bad[2] = {e->min - 1, e->max + 1};
        for (int k = 0; k < 2; k++) {
            char err[256] = "";
            before = p;
            cJSON *j = cJSON_CreateNumber(bad[k]);
            assert_int_equal(air__ctl_set_json(&p, e->path, j, err, sizeof err), AIR_E_RANGE);
            cJSON_Delete(j);
            assert_memory_equal(&p, &before, sizeof p); /* untouched */
            if (strncmp(err, e->path, strlen(e->path)) != 0 || !strstr(err, "out of range"))
                fail_msg("message for %s: \"%s\"", e->path, err);
            assert_int_equal(air__ctl_set_f64(&p, e->path, bad[k], err, sizeof err),
                             AIR_E_RANGE);
        }
    }
    char err[256];
    cJSON *j = cJSON_CreateNumber(1.5);
    assert_int_equal(air__ctl_set_json(&p, "policy.weight.cost", j, err, sizeof err),
                     AIR_E_RANGE);
    cJSON_Delete(j);
    assert_string_equal(err, "policy.weight.cost: 1.5 is out of range [0, 1]");
}

static void
expect_inval(struct air__params *p, const char *path, const char *json, const char *needle)
{
    char err[256] = "";
    struct air__params before = *p;
    cJSON *j = cJSON_Parse(json);
    assert_non_null(j);
    air_status_t st = air__ctl_set_json(p, path, j, err, sizeof err);
    cJSON_Delete(j);
    if (st != AIR_E_INVAL)
        fail_msg("%s = %s: %s, want AIR_E_INVAL", path, json, air_status_name(st));
    assert_memory_equal(p, &before, sizeof *p);
    if (strncmp(err, path, strlen(path)) != 0 || !strstr(err, needle))
        fail_msg("%s = %s: message \"%s\" lacks \"%s\"", path, json, err, needle);
}

static void
test_ctl_wrong_json_types_refused(void **state)
{
    (void)state;
    struct air__params p;
    air__params_default(&p);
    expect_inval(&p, "policy.weight.latency", "\"0.5\"", "expected a number");
    expect_inval(&p, "policy.weight.latency", "true", "expected a number");
    expect_inval(&p, "policy.weight.latency", "null", "expected a number");
    expect_inval(&p, "policy.weight.latency", "[0.5]", "expected a number");
    expect_inval(&p, "retry.max_attempts", "2.5", "expected an integer");
    expect_inval(&p, "retry.max_attempts", "\"3\"", "expected an integer");
    expect_inval(&p, "hedge.enabled", "1", "expected true or false");
    expect_inval(&p, "hedge.enabled", "\"true\"", "expected true or false");
    expect_inval(&p, "policy.strategy", "3", "expected a strategy name");
    expect_inval(&p, "policy.strategy", "{\"a\":1}", "expected a strategy name");
    expect_inval(&p, "policy.strategy", "\"fastest\"",
                 "unknown strategy \"fastest\" (one of priority, weighted, round-robin, "
                 "least-busy, lowest-latency, lowest-cost, score)");
}

static void
test_ctl_unknown_path_is_noname(void **state)
{
    (void)state;
    struct air__params p;
    air__params_default(&p);
    char err[256];
    cJSON *j = cJSON_CreateNumber(1);
    assert_int_equal(air__ctl_set_json(&p, "policy.weight.speed", j, err, sizeof err),
                     AIR_E_NONAME);
    assert_non_null(strstr(err, "policy.weight.speed"));
    assert_int_equal(air__ctl_set_json(&p, "policy.weight", j, err, sizeof err), AIR_E_NONAME);
    assert_int_equal(air__ctl_set_json(&p, "", j, err, sizeof err), AIR_E_NONAME);
    assert_int_equal(air__ctl_set_json(&p, NULL, j, err, sizeof err), AIR_E_NONAME);
    cJSON_Delete(j);
    assert_int_equal(air__ctl_set_f64(&p, "nope", 1, err, sizeof err), AIR_E_NONAME);
    assert_int_equal(air__ctl_set_text(&p, "nope", "1", err, sizeof err), AIR_E_NONAME);
    assert_null(air__ctl_get_json(&p, "nope"));
    double d;
    assert_int_equal(air__ctl_get_f64(&p, "nope", &d), AIR_E_NONAME);
    assert_null(air__ctl_find("POLICY.STRATEGY"));
}

static void
test_ctl_typed_and_text_setters(void **state)
{
    (void)state;
    struct air__params p;
    air__params_default(&p);
    char err[256];
    assert_int_equal(air__ctl_set_f64(&p, "retry.max_attempts", 4.0, err, sizeof err), AIR_OK);
    assert_int_equal(p.retry_max_attempts, 4);
    assert_int_equal(air__ctl_set_f64(&p, "retry.max_attempts", 4.5, err, sizeof err),
                     AIR_E_INVAL);
    assert_int_equal(air__ctl_set_i64(&p, "policy.weight.load", 1, err, sizeof err), AIR_OK);
    assert_true(p.w_load == 1.0);
    assert_int_equal(air__ctl_set_i64(&p, "policy.weight.load", 2, err, sizeof err),
                     AIR_E_RANGE);
    assert_int_equal(air__ctl_set_bool(&p, "hedge.enabled", 1, err, sizeof err), AIR_OK);
    assert_int_equal(p.hedge_enabled, 1);
    assert_int_equal(air__ctl_set_bool(&p, "policy.weight.load", 1, err, sizeof err),
                     AIR_E_INVAL);
    assert_int_equal(air__ctl_set_f64(&p, "hedge.enabled", 1, err, sizeof err), AIR_E_INVAL);
    assert_int_equal(air__ctl_set_str(&p, "policy.strategy", "lowest-cost", err, sizeof err),
                     AIR_OK);
    assert_int_equal(p.strategy, AIR_S_LOWEST_COST);
    assert_int_equal(air__ctl_set_str(&p, "policy.weight.load", "x", err, sizeof err),
                     AIR_E_INVAL);
    assert_int_equal(air__ctl_set_str(&p, "pricing.defaults_date", "x", err, sizeof err),
                     AIR_E_READONLY);
    /* text: JSON, or a bare strategy name */
    assert_int_equal(air__ctl_set_text(&p, "policy.strategy", "weighted", err, sizeof err),
                     AIR_OK);
    assert_int_equal(p.strategy, AIR_S_WEIGHTED);
    assert_int_equal(air__ctl_set_text(&p, "policy.strategy", "\"score\"", err, sizeof err),
                     AIR_OK);
    assert_int_equal(p.strategy, AIR_S_SCORE);
    assert_int_equal(air__ctl_set_text(&p, "policy.weight.cost", "0.75", err, sizeof err),
                     AIR_OK);
    assert_true(p.w_cost == 0.75);
    assert_int_equal(air__ctl_set_text(&p, "policy.weight.cost", "abc", err, sizeof err),
                     AIR_E_INVAL);
    assert_int_equal(air__ctl_set_text(&p, "hedge.enabled", "false", err, sizeof err), AIR_OK);
    assert_int_equal(p.hedge_enabled, 0);
    /* typed getters */
    int64_t i;
    const char *s;
    double d;
    assert_int_equal(air__ctl_get_i64(&p, "retry.max_attempts", &i), AIR_OK);
    assert_int_equal(i, 4);
    assert_int_equal(air__ctl_get_f64(&p, "policy.weight.cost", &d), AIR_OK);
    assert_true(d == 0.75);
    assert_int_equal(air__ctl_get_str(&p, "policy.strategy", &s), AIR_OK);
    assert_string_equal(s, "score");
    assert_int_equal(air__ctl_get_str(&p, "pricing.defaults_date", &s), AIR_OK);
    assert_string_equal(s, air__prices_date);
    assert_int_equal(air__ctl_get_str(&p, "policy.weight.cost", &s), AIR_E_INVAL);
    assert_int_equal(air__ctl_get_f64(&p, "policy.strategy", &d), AIR_E_INVAL);
}

static void
test_ctl_rules_between_fields(void **state)
{
    (void)state;
    struct air__params p;
    char err[256];
    air__params_default(&p);
    p.eject_max_ms = 1000; /* below base 30000 */
    assert_int_equal(air__params_validate(&p, err, sizeof err), AIR_E_RANGE);
    assert_non_null(strstr(err, "policy.eject.max_ms"));
    air__params_default(&p);
    p.retry_backoff_cap_ms = 10;
    assert_int_equal(air__params_validate(&p, err, sizeof err), AIR_E_RANGE);
    assert_non_null(strstr(err, "retry.backoff_cap_ms"));
    air__params_default(&p);
    p.hedge_max_ms = 10;
    assert_int_equal(air__params_validate(&p, err, sizeof err), AIR_E_RANGE);
    assert_non_null(strstr(err, "hedge.max_ms"));
}

static void
test_ctl_list_is_valid_json_with_every_entry(void **state)
{
    (void)state;
    struct air__params p;
    air__params_default(&p);
    char err[128];
    assert_int_equal(air__ctl_set_f64(&p, "policy.weight.health", 0.125, err, sizeof err),
                     AIR_OK);
    air_buf_t b = AIR_BUF_INIT;
    air__buf_puts(&b, "[{\"path\":\"core.entry\"}");
    air__ctl_list_json(&p, &b); /* appended after an element: comma first */
    air__buf_putc(&b, ']');
    assert_false(b.oom);
    cJSON *a = cJSON_Parse(b.data);
    if (a == NULL)
        fail_msg("not JSON: %s", b.data);
    assert_true(cJSON_IsArray(a));
    assert_int_equal(cJSON_GetArraySize(a), (int)air__ctl_count() + 1);
    for (size_t i = 0; i < air__ctl_count(); i++) {
        const struct air__ctl_entry *e = air__ctl_at(i);
        cJSON *o = cJSON_GetArrayItem(a, (int)i + 1);
        cJSON *path = cJSON_GetObjectItemCaseSensitive(o, "path");
        assert_true(cJSON_IsString(path));
        assert_string_equal(path->valuestring, e->path);
        static const char *const keys[] = {"type", "min", "max", "default", "mode", "value"};
        for (size_t k = 0; k < 6; k++)
            assert_non_null(cJSON_GetObjectItemCaseSensitive(o, keys[k]));
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(o, "type")->valuestring,
                            air__ctl_type_name(e->type));
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(o, "mode")->valuestring,
                            e->mode == AIR_CTL_RW ? "rw" : "r-");
        if (e->type == AIR_CTL_I64 || e->type == AIR_CTL_F64) {
            assert_true(cJSON_GetObjectItemCaseSensitive(o, "min")->valuedouble == e->min);
            assert_true(cJSON_GetObjectItemCaseSensitive(o, "max")->valuedouble == e->max);
        }
        /* "value" is exactly what get_json returns */
        char *v = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(o, "value"));
        char *g = air__ctl_get_json(&p, e->path);
        cJSON *gj = cJSON_Parse(g);
        char *gv = cJSON_PrintUnformatted(gj);
        assert_string_equal(v, gv);
        cJSON_free(v);
        cJSON_free(gv);
        cJSON_Delete(gj);
        air__free(g);
    }
    cJSON *h = cJSON_GetArrayItem(a, 1 + (int)(air__ctl_find("policy.weight.health") -
                                               air__ctl_at(0)));
    assert_true(cJSON_GetObjectItemCaseSensitive(h, "value")->valuedouble == 0.125);
    assert_true(cJSON_GetObjectItemCaseSensitive(h, "default")->valuedouble == 0.2);
    cJSON_Delete(a);

    /* into an empty buffer: no leading comma */
    air__buf_reset(&b);
    air__ctl_list_json(&p, &b);
    assert_true(b.data[0] == '{');
    air__buf_free(&b);
}

static void
test_ctl_helpers_for_core_tunables(void **state)
{
    (void)state;
    char err[256];
    double d = -1;
    int64_t i = -1;
    int bo = -1;
    enum air__strategy s = AIR_S_SCORE;
    cJSON *n = cJSON_CreateNumber(250);
    assert_int_equal(air__ctl_json_f64(n, "deployments.openai/gpt-4o.weight", 0, 1000, &d, err,
                                       sizeof err),
                     AIR_OK);
    assert_true(d == 250);
    assert_int_equal(air__ctl_json_i64(n, "deployments.openai/gpt-4o.rpm", 0, 100, &i, err,
                                       sizeof err),
                     AIR_E_RANGE);
    assert_string_equal(err, "deployments.openai/gpt-4o.rpm: 250 is out of range [0, 100]");
    assert_int_equal(i, -1);
    assert_int_equal(air__ctl_json_bool(n, "routes.chat.hedge.enabled", &bo, err, sizeof err),
                     AIR_E_INVAL);
    cJSON_Delete(n);
    cJSON *str = cJSON_CreateString("lowest-latency");
    assert_int_equal(air__ctl_json_strategy(str, "routes.chat.strategy", &s, err, sizeof err),
                     AIR_OK);
    assert_int_equal(s, AIR_S_LOWEST_LATENCY);
    cJSON_Delete(str);
    assert_int_equal(air__ctl_check_f64(0.5, 0, 1), 0);
    assert_int_equal(air__ctl_check_f64(NAN, 0, 1), -1);
    assert_int_equal(air__ctl_check_f64(1.0000001, 0, 1), -1);
    assert_int_equal(air__ctl_check_i64(-1, 0, 10), -1);
    assert_int_equal(air__ctl_check_i64(10, 0, 10), 0);
}

static void
test_ctl_params_convert_to_module_structs(void **state)
{
    (void)state;
    struct air__params p;
    air__params_default(&p);
    p.eject_consecutive_errors = 7;
    p.eject_max_percent = 25;
    p.cooldown_default_ms = 1500;
    p.w_cost = 0.9;
    struct air__eject_cfg c;
    struct air__score_weights w;
    air__params_eject_cfg(&p, &c);
    air__params_weights(&p, &w);
    assert_int_equal(c.consecutive_errors, 7);
    assert_int_equal(c.base_ejection_ms, 30000);
    assert_int_equal(c.max_ejection_ms, 300000);
    assert_true(c.max_ejection_percent == 25);
    assert_int_equal(c.cooldown_default_ms, 1500);
    assert_true(w.latency == 0.4 && w.cost == 0.9 && w.health == 0.2 && w.load == 0.1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ctl_defaults_as_documented),
        cmocka_unit_test(test_ctl_every_entry_settable_and_gettable),
        cmocka_unit_test(test_ctl_ranges_enforced_with_path_in_message),
        cmocka_unit_test(test_ctl_wrong_json_types_refused),
        cmocka_unit_test(test_ctl_unknown_path_is_noname),
        cmocka_unit_test(test_ctl_typed_and_text_setters),
        cmocka_unit_test(test_ctl_rules_between_fields),
        cmocka_unit_test(test_ctl_list_is_valid_json_with_every_entry),
        cmocka_unit_test(test_ctl_helpers_for_core_tunables),
        cmocka_unit_test(test_ctl_params_convert_to_module_structs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
