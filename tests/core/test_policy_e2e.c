/*
 * test_policy_e2e.c - the policy engine end to end, against three real mock
 * providers on 127.0.0.1 (fast and expensive, slow and cheap, flaky):
 * lowest-latency and lowest-cost splits, run-time tuning moving the split,
 * outlier ejection and probing back, limits and budgets, explain, ctl and
 * reload.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>

#include "airouter.h"
#include "mock.h"

struct trio {
    air_mock_t *fast, *slow, *flaky;
};

static air_mock_t *
mock_with(uint32_t latency_ms, double fail_rate)
{
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.latency_ms = latency_ms;
    o.fail_rate = fail_rate;
    o.fail_status = 503;
    air_mock_t *m = NULL;
    char err[256];
    if (air_mock_start(&o, &m, err, sizeof err) != 0)
        fail_msg("mock: %s", err);
    return m;
}

/* fast: 2 ms, $10/$30; slow: 60 ms, $0.1/$0.3; flaky: 2 ms, fails always. */
static char *
trio_config(const struct trio *t, const char *strategy, const char *extra)
{
    static char buf[4096];
    snprintf(buf, sizeof buf,
             "{\"workers\":2,%s\"providers\":["
             "{\"name\":\"fast\",\"kind\":\"openai\",\"base_url\":\"http://127.0.0.1:%u/v1\","
             "\"models\":[{\"name\":\"m-fast\",\"input_price_per_mtok\":10,"
             "\"output_price_per_mtok\":30}]},"
             "{\"name\":\"slow\",\"kind\":\"openai\",\"base_url\":\"http://127.0.0.1:%u/v1\","
             "\"models\":[{\"name\":\"m-slow\",\"input_price_per_mtok\":0.1,"
             "\"output_price_per_mtok\":0.3}]},"
             "{\"name\":\"flaky\",\"kind\":\"openai\",\"base_url\":\"http://127.0.0.1:%u/v1\","
             "\"models\":[{\"name\":\"m-flaky\",\"input_price_per_mtok\":1,"
             "\"output_price_per_mtok\":1}]}],"
             "\"routes\":[{\"model\":\"chat\",\"strategy\":\"%s\",\"targets\":["
             "{\"provider\":\"fast\",\"model\":\"m-fast\"},"
             "{\"provider\":\"slow\",\"model\":\"m-slow\"}]},"
             "{\"model\":\"all\",\"strategy\":\"%s\",\"targets\":["
             "{\"provider\":\"fast\",\"model\":\"m-fast\"},"
             "{\"provider\":\"slow\",\"model\":\"m-slow\"},"
             "{\"provider\":\"flaky\",\"model\":\"m-flaky\"}]}]}",
             extra ? extra : "", air_mock_port(t->fast), air_mock_port(t->slow),
             air_mock_port(t->flaky), strategy, strategy);
    return buf;
}

static void
trio_start(struct trio *t)
{
    t->fast = mock_with(2, 0);
    t->slow = mock_with(60, 0);
    t->flaky = mock_with(2, 1.0);
}

static void
trio_stop(struct trio *t)
{
    air_mock_stop(t->fast);
    air_mock_stop(t->slow);
    air_mock_stop(t->flaky);
}

static air_t *
router_for(const char *cfg)
{
    air_t *r = NULL;
    char err[512];
    if (air_new(cfg, &r, err, sizeof err) != AIR_OK)
        fail_msg("air_new: %s", err);
    return r;
}

struct tally {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, ok, fast, slow, flaky;
};

static void
tally_done(const air_resp_t *resp, void *ud)
{
    struct tally *t = ud;
    pthread_mutex_lock(&t->mu);
    t->done++;
    if (air_resp_status(resp) == AIR_OK) {
        t->ok++;
        const char *p = air_resp_provider(resp);
        if (p && strcmp(p, "fast") == 0)
            t->fast++;
        else if (p && strcmp(p, "slow") == 0)
            t->slow++;
        else if (p && strcmp(p, "flaky") == 0)
            t->flaky++;
    }
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

/* Send n requests for `model` with at most `conc` in flight. */
static void
drive(air_t *r, const char *model, int n, int conc, struct tally *t)
{
    char body[256];
    snprintf(body, sizeof body,
             "{\"model\":\"%s\",\"max_tokens\":50,\"messages\":[{\"role\":\"user\","
             "\"content\":\"hi\"}]}",
             model);
    int base = t->done;
    for (int i = 0; i < n; i++) {
        pthread_mutex_lock(&t->mu);
        while ((i - (t->done - base)) >= conc)
            pthread_cond_wait(&t->cv, &t->mu);
        pthread_mutex_unlock(&t->mu);
        air_req_t *q = NULL;
        assert_int_equal(air_req_new(r, body, strlen(body), &q, NULL, 0), AIR_OK);
        assert_int_equal(air_req_set_done(q, tally_done, t), AIR_OK);
        assert_int_equal(air_submit(r, q, NULL), AIR_OK);
    }
    pthread_mutex_lock(&t->mu);
    while (t->done - base < n)
        pthread_cond_wait(&t->cv, &t->mu);
    pthread_mutex_unlock(&t->mu);
}

static void
tally_init(struct tally *t)
{
    memset(t, 0, sizeof *t);
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
}

static void
tally_fini(struct tally *t)
{
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->mu);
}

static void
test_policy_lowest_latency_prefers_fast(void **state)
{
    (void)state;
    struct trio m;
    trio_start(&m);
    air_t *r = router_for(trio_config(&m, "lowest-latency", "\"stats\":{\"fold_ms\":10},"));
    struct tally t;
    tally_init(&t);
    drive(r, "chat", 40, 4, &t); /* learn */
    struct tally t2;
    tally_init(&t2);
    drive(r, "chat", 300, 4, &t2);
    print_message("lowest-latency: fast=%d slow=%d\n", t2.fast, t2.slow);
    assert_int_equal(t2.ok, 300);
    assert_true(t2.fast >= 270); /* >= 90 % */
    tally_fini(&t);
    tally_fini(&t2);
    air_free(r, 2000);
    trio_stop(&m);
}

static void
test_policy_lowest_cost_prefers_cheap(void **state)
{
    (void)state;
    struct trio m;
    trio_start(&m);
    air_t *r = router_for(trio_config(&m, "lowest-cost", NULL));
    struct tally t;
    tally_init(&t);
    drive(r, "chat", 200, 16, &t);
    print_message("lowest-cost: fast=%d slow=%d\n", t.fast, t.slow);
    assert_int_equal(t.ok, 200);
    assert_true(t.slow >= 180);
    tally_fini(&t);
    air_free(r, 2000);
    trio_stop(&m);
}

static void
test_policy_tuning_moves_the_split(void **state)
{
    (void)state;
    struct trio m;
    trio_start(&m);
    air_t *r = router_for(trio_config(&m, "weighted", NULL));
    char err[256];
    /* 90/10 towards fast, then 10/90. */
    assert_int_equal(air_ctl_set(r, "deployments.fast/m-fast.weight", "9", err, sizeof err),
                     AIR_OK);
    assert_int_equal(air_ctl_set(r, "deployments.slow/m-slow.weight", "1", err, sizeof err),
                     AIR_OK);
    struct tally a;
    tally_init(&a);
    drive(r, "chat", 300, 16, &a);
    assert_int_equal(air_ctl_set_f64(r, "deployments.fast/m-fast.weight", 1), AIR_OK);
    assert_int_equal(air_ctl_set_f64(r, "deployments.slow/m-slow.weight", 9), AIR_OK);
    struct tally b;
    tally_init(&b);
    drive(r, "chat", 300, 16, &b);
    print_message("weighted 9:1 fast=%d slow=%d; 1:9 fast=%d slow=%d\n", a.fast, a.slow, b.fast,
                  b.slow);
    assert_true(a.fast > a.slow * 4);
    assert_true(b.slow > b.fast * 4);
    /* Strategy switch at run time, read back. */
    assert_int_equal(air_ctl_set(r, "routes.chat.strategy", "\"lowest-cost\"", err, sizeof err),
                     AIR_OK);
    char *v = NULL;
    assert_int_equal(air_ctl_get(r, "routes.chat.strategy", &v), AIR_OK);
    assert_string_equal(v, "\"lowest-cost\"");
    free(v);
    /* Bad values are refused with a message naming the path. */
    assert_int_equal(air_ctl_set(r, "routes.chat.strategy", "\"fastest\"", err, sizeof err),
                     AIR_E_RANGE);
    assert_non_null(strstr(err, "routes.chat.strategy"));
    assert_int_equal(air_ctl_set(r, "policy.weight.cost", "7", err, sizeof err), AIR_E_RANGE);
    assert_non_null(strstr(err, "policy.weight.cost"));
    assert_int_equal(air_ctl_set(r, "no.such.path", "1", err, sizeof err), AIR_E_NONAME);
    assert_int_equal(air_ctl_set(r, "policy.weight.cost", "\"x\"", err, sizeof err), AIR_E_INVAL);
    tally_fini(&a);
    tally_fini(&b);
    air_free(r, 2000);
    trio_stop(&m);
}

static void
test_policy_flaky_is_ejected_then_probed_back(void **state)
{
    (void)state;
    struct trio m;
    trio_start(&m);
    air_t *r = router_for(trio_config(
        &m, "round-robin",
        "\"policy\":{\"eject\":{\"consecutive_errors\":3,\"base_ms\":300,\"max_percent\":50}},"));
    struct tally t;
    tally_init(&t);
    drive(r, "all", 60, 1, &t);
    /* Every request still succeeds (failover), and the flaky one is out. */
    assert_int_equal(t.ok, 60);
    air_mock_stats_t fs;
    air_mock_stats(m.flaky, &fs);
    assert_true(fs.requests >= 3);
    assert_true(fs.requests <= 10); /* ejected after 3 in a row, not tried 20 times */
    char *stats = air_stats_json(r);
    assert_non_null(strstr(stats, "\"health\":\"ejected\""));
    free(stats);
    /* After the ejection time one probe goes out (it fails again: longer). */
    usleep(400 * 1000);
    struct tally t2;
    tally_init(&t2);
    drive(r, "all", 20, 1, &t2);
    air_mock_stats_t fs2;
    air_mock_stats(m.flaky, &fs2);
    assert_true(fs2.requests > fs.requests);     /* probed */
    assert_true(fs2.requests <= fs.requests + 2); /* one probe, not a flood */
    /* An operator reset makes it eligible at once. */
    assert_int_equal(air_ctl_set_bool(r, "deployments.flaky/m-flaky.reset", 1), AIR_OK);
    stats = air_stats_json(r);
    assert_null(strstr(stats, "\"deployment\":\"flaky/m-flaky\",\"provider\":\"flaky\","
                              "\"model\":\"m-flaky\",\"health\":\"ejected\""));
    free(stats);
    tally_fini(&t);
    tally_fini(&t2);
    air_free(r, 2000);
    trio_stop(&m);
}

/* A deployment that recovers: ejected after its errors, then the half-open
 * probe succeeds and it takes traffic again. */
static void
test_policy_recovered_deployment_is_probed_back_in(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.fail_first = 3;
    o.fail_status = 503;
    air_mock_t *sick = NULL, *well = mock_with(2, 0);
    char err[256];
    if (air_mock_start(&o, &sick, err, sizeof err) != 0)
        fail_msg("mock: %s", err);
    char cfg[2048];
    snprintf(cfg, sizeof cfg,
             "{\"policy\":{\"eject\":{\"consecutive_errors\":3,\"base_ms\":300}},"
             "\"providers\":[{\"name\":\"sick\",\"kind\":\"openai\","
             "\"base_url\":\"http://127.0.0.1:%u/v1\"},{\"name\":\"well\",\"kind\":\"openai\","
             "\"base_url\":\"http://127.0.0.1:%u/v1\"}],\"routes\":[{\"model\":\"r\","
             "\"strategy\":\"priority\",\"targets\":[{\"provider\":\"sick\",\"model\":\"m\"},"
             "{\"provider\":\"well\",\"model\":\"m\"}]}]}",
             air_mock_port(sick), air_mock_port(well));
    air_t *r = router_for(cfg);
    struct tally t;
    tally_init(&t);
    drive(r, "r", 10, 1, &t);
    assert_int_equal(t.ok, 10);
    char *st = air_stats_json(r);
    assert_non_null(strstr(st, "\"health\":\"ejected\""));
    free(st);
    air_mock_stats_t s1;
    air_mock_stats(sick, &s1);
    assert_int_equal(s1.requests, 3); /* ejected: no more traffic */
    usleep(400 * 1000);
    struct tally t2;
    tally_init(&t2);
    drive(r, "r", 10, 1, &t2);
    /* The probe succeeded: priority traffic is back on the first target. */
    assert_true(t2.slow == 0);
    air_mock_stats_t s2;
    air_mock_stats(sick, &s2);
    assert_true(s2.ok >= 9);
    st = air_stats_json(r);
    assert_null(strstr(st, "\"health\":\"ejected\""));
    free(st);
    tally_fini(&t);
    tally_fini(&t2);
    air_free(r, 1000);
    air_mock_stop(sick);
    air_mock_stop(well);
}

static void
test_policy_client_limits_and_budgets(void **state)
{
    (void)state;
    struct trio m;
    trio_start(&m);
    air_t *r = router_for(trio_config(
        &m, "priority",
        "\"clients\":[{\"name\":\"batch\",\"rpm\":3},{\"name\":\"poor\",\"budget_usd\":0.0006,"
        "\"budget_window\":\"day\"}],"));
    const char *body = "{\"model\":\"chat\",\"max_tokens\":10,\"messages\":[{\"role\":\"user\","
                       "\"content\":\"hi\"}]}";
    int limited = 0, ok = 0;
    for (int i = 0; i < 5; i++) {
        air_req_t *q = NULL;
        assert_int_equal(air_req_new(r, body, strlen(body), &q, NULL, 0), AIR_OK);
        assert_int_equal(air_req_set_client_key(q, "batch"), AIR_OK);
        air_resp_t *resp = NULL;
        assert_int_equal(air_call(r, q, &resp), AIR_OK);
        if (air_resp_status(resp) == AIR_OK)
            ok++;
        else if (air_resp_error_class(resp) == AIR_ERR_RATE_LIMITED) {
            limited++;
            assert_int_equal(air_resp_http_status(resp), 429);
            assert_true(air_resp_retry_after_ms(resp) > 0);
            assert_int_equal(air_resp_attempts(resp), 0);
        }
        air_resp_free(resp);
    }
    assert_int_equal(ok, 3);
    assert_int_equal(limited, 2);
    /* Budget: each request on "fast" costs ~ (22*10 + 8*30)/1e6 = $0.00046;
     * the reservation (est. 10 in + 10 out tokens... bounded by the price)
     * lets the first through and refuses once the budget is spent. */
    int budget_refused = 0;
    ok = 0;
    for (int i = 0; i < 4; i++) {
        air_req_t *q = NULL;
        assert_int_equal(air_req_new(r, body, strlen(body), &q, NULL, 0), AIR_OK);
        assert_int_equal(air_req_set_client_key(q, "poor"), AIR_OK);
        air_resp_t *resp = NULL;
        assert_int_equal(air_call(r, q, &resp), AIR_OK);
        if (air_resp_status(resp) == AIR_OK) {
            ok++;
            assert_true(air_resp_cost_usd(resp) > 0);
        } else if (air_resp_error_class(resp) == AIR_ERR_BUDGET_EXCEEDED) {
            budget_refused++;
        }
        air_resp_free(resp);
    }
    assert_true(ok >= 1);
    assert_true(budget_refused >= 1);
    assert_int_equal(ok + budget_refused, 4);
    air_free(r, 2000);
    trio_stop(&m);
}

static void
test_policy_explain_lists_candidates_and_scores(void **state)
{
    (void)state;
    struct trio m;
    trio_start(&m);
    air_t *r = router_for(trio_config(&m, "score", NULL));
    char err[256];
    assert_int_equal(air_ctl_set_bool(r, "deployments.slow/m-slow.enabled", 0), AIR_OK);
    const char *body = "{\"model\":\"all\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}";
    char *ex = air_explain(r, body, strlen(body), err, sizeof err);
    assert_non_null(ex);
    cJSON *j = cJSON_Parse(ex);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "route")->valuestring, "all");
    assert_string_equal(cJSON_GetObjectItem(j, "strategy")->valuestring, "score");
    cJSON *c = cJSON_GetObjectItem(j, "candidates");
    assert_int_equal(cJSON_GetArraySize(c), 3);
    cJSON *slow = cJSON_GetArrayItem(c, 1);
    assert_string_equal(cJSON_GetObjectItem(slow, "deployment")->valuestring, "slow/m-slow");
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(slow, "eligible")));
    assert_non_null(strstr(cJSON_GetObjectItem(slow, "reason")->valuestring, "disabled"));
    assert_non_null(cJSON_GetObjectItem(cJSON_GetArrayItem(c, 0), "score"));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "order")), 2);
    cJSON_Delete(j);
    free(ex);
    /* Nothing was sent. */
    air_mock_stats_t s;
    air_mock_stats(m.fast, &s);
    assert_int_equal(s.requests, 0);
    /* Bad body: NULL with the reason. */
    assert_null(air_explain(r, "{", 1, err, sizeof err));
    assert_non_null(strstr(err, "JSON"));
    /* The tunables list is valid JSON with every route and deployment path. */
    char *list = air_ctl_list(r);
    cJSON *l = cJSON_Parse(list);
    assert_non_null(l);
    assert_true(cJSON_GetArraySize(l) > 20);
    assert_non_null(strstr(list, "\"routes.all.strategy\""));
    assert_non_null(strstr(list, "\"policy.weight.latency\""));
    cJSON_Delete(l);
    free(list);
    air_free(r, 2000);
    trio_stop(&m);
}

static void
test_policy_reload_swaps_config_atomically(void **state)
{
    (void)state;
    struct trio m;
    trio_start(&m);
    air_t *r = router_for(trio_config(&m, "priority", NULL));
    char err[512];
    /* A bad config is refused and the old one keeps serving. */
    char *ml0 = air_models_json(r);
    assert_non_null(strstr(ml0, "\"id\":\"chat\""));
    assert_non_null(strstr(ml0, "\"id\":\"all\""));
    assert_non_null(strstr(ml0, "\"id\":\"m-fast\",\"object\":\"model\",\"created\":0,"
                                "\"owned_by\":\"fast\""));
    free(ml0);
    assert_int_equal(air_reload(r, "{\"providers\":[]}", err, sizeof err), AIR_E_CONFIG);
    assert_non_null(strstr(err, "providers"));
    assert_int_equal(air_reload(r, "{\"workers\":7,\"providers\":[{\"name\":\"a\","
                                   "\"kind\":\"openai\"}]}",
                                err, sizeof err),
                     AIR_E_READONLY);
    const char *body = "{\"model\":\"chat\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}";
    air_req_t *q = NULL;
    air_resp_t *resp = NULL;
    assert_int_equal(air_req_new(r, body, strlen(body), &q, NULL, 0), AIR_OK);
    assert_int_equal(air_call(r, q, &resp), AIR_OK);
    assert_string_equal(air_resp_provider(resp), "fast");
    air_resp_free(resp);
    /* Reload with slow first: requests now go there, no restart. */
    char cfg[2048];
    snprintf(cfg, sizeof cfg,
             "{\"workers\":2,\"providers\":[{\"name\":\"slow\",\"kind\":\"openai\","
             "\"base_url\":\"http://127.0.0.1:%u/v1\"}],\"routes\":[{\"model\":\"chat\","
             "\"strategy\":\"priority\",\"targets\":[{\"provider\":\"slow\",\"model\":\"m\"}]}]}",
             air_mock_port(m.slow));
    assert_int_equal(air_reload(r, cfg, err, sizeof err), AIR_OK);
    assert_int_equal(air_req_new(r, body, strlen(body), &q, NULL, 0), AIR_OK);
    assert_int_equal(air_call(r, q, &resp), AIR_OK);
    assert_int_equal(air_resp_status(resp), AIR_OK);
    assert_string_equal(air_resp_provider(resp), "slow");
    air_resp_free(resp);
    char *c = air_config_json(r);
    assert_non_null(c);
    cJSON *j = cJSON_Parse(c);
    assert_non_null(j);
    cJSON_Delete(j);
    free(c);
    /* The model list follows the reload too. */
    char *ml = air_models_json(r);
    cJSON *mj = cJSON_Parse(ml);
    assert_non_null(mj);
    cJSON *data = cJSON_GetObjectItem(mj, "data");
    assert_int_equal(cJSON_GetArraySize(data), 1);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(data, 0), "id")->valuestring,
                        "chat");
    cJSON_Delete(mj);
    free(ml);
    air_free(r, 2000);
    trio_stop(&m);
}

static void
test_policy_config_json_redacts_keys(void **state)
{
    (void)state;
    setenv("AIR_E2E_SECRET", "sk-e2e-very-secret", 1);
    air_t *r = router_for("{\"providers\":[{\"name\":\"p\",\"kind\":\"openai\","
                          "\"api_key_env\":\"AIR_E2E_SECRET\"}]}");
    char *c = air_config_json(r);
    assert_non_null(c);
    assert_null(strstr(c, "sk-e2e-very-secret"));
    assert_non_null(strstr(c, "AIR_E2E_SECRET"));
    assert_non_null(strstr(c, "[redacted]"));
    free(c);
    char *s = air_stats_json(r);
    assert_null(strstr(s, "sk-e2e-very-secret"));
    free(s);
    air_free(r, 100);
}

static uint64_t
mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* A slow first choice is hedged to the next deployment after the delay; the
 * first to answer wins and the other is cancelled. */
static void
test_policy_hedge_beats_a_slow_attempt(void **state)
{
    (void)state;
    air_mock_t *slow = mock_with(1500, 0);
    air_mock_t *fast = mock_with(5, 0);
    char cfg[2048];
    snprintf(cfg, sizeof cfg,
             "{\"workers\":1,\"hedge\":{\"delay_ms\":100},"
             "\"providers\":[{\"name\":\"slow\",\"kind\":\"openai\","
             "\"base_url\":\"http://127.0.0.1:%u/v1\"},{\"name\":\"fast\",\"kind\":\"openai\","
             "\"base_url\":\"http://127.0.0.1:%u/v1\"}],\"routes\":[{\"model\":\"h\","
             "\"strategy\":\"priority\",\"hedge\":true,\"targets\":[{\"provider\":\"slow\","
             "\"model\":\"m\"},{\"provider\":\"fast\",\"model\":\"m\"}]}]}",
             air_mock_port(slow), air_mock_port(fast));
    air_t *r = router_for(cfg);
    for (int stream = 0; stream < 2; stream++) {
        const char *body = stream ? "{\"model\":\"h\",\"stream\":true,\"messages\":[{\"role\":"
                                    "\"user\",\"content\":\"x\"}]}"
                                  : "{\"model\":\"h\",\"messages\":[{\"role\":\"user\","
                                    "\"content\":\"x\"}]}";
        air_req_t *q = NULL;
        assert_int_equal(air_req_new(r, body, strlen(body), &q, NULL, 0), AIR_OK);
        air_resp_t *resp = NULL;
        uint64_t t0 = mono_ms();
        assert_int_equal(air_call(r, q, &resp), AIR_OK);
        uint64_t took = mono_ms() - t0;
        assert_int_equal(air_resp_status(resp), AIR_OK);
        assert_string_equal(air_resp_provider(resp), "fast");
        assert_int_equal(air_resp_attempts(resp), 2);
        assert_true(took >= 90);
        assert_true(took < 1000); /* did not wait for the slow one */
        air_resp_free(resp);
    }
    char *st = air_stats_json(r);
    assert_non_null(strstr(st, "\"hedges\":2"));
    free(st);
    air_free(r, 100);
    air_mock_stop(slow);
    air_mock_stop(fast);
}

/* A provider with a key pool: a rejected key steps aside and the request
 * goes on with the next key of the same provider. */
static void
test_policy_key_pool_sets_a_rejected_key_aside(void **state)
{
    (void)state;
    setenv("AIR_KP_BAD", "sk-pool-bad-key-1", 1);
    setenv("AIR_KP_GOOD", "sk-pool-good-key", 1);
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.api_key = "sk-pool-good-key";
    air_mock_t *m = NULL;
    char err[256];
    if (air_mock_start(&o, &m, err, sizeof err) != 0)
        fail_msg("mock: %s", err);
    char cfg[1024];
    snprintf(cfg, sizeof cfg,
             "{\"providers\":[{\"name\":\"pool\",\"kind\":\"openai\","
             "\"base_url\":\"http://127.0.0.1:%u/v1\",\"api_key_env\":[\"AIR_KP_BAD\","
             "\"AIR_KP_GOOD\"]}],\"routes\":[{\"model\":\"k\",\"targets\":[{\"provider\":"
             "\"pool\",\"model\":\"m\"}]}]}",
             air_mock_port(m));
    air_t *r = router_for(cfg);
    const char *body = "{\"model\":\"k\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}";
    for (int i = 0; i < 10; i++) {
        air_req_t *q = NULL;
        air_resp_t *resp = NULL;
        assert_int_equal(air_req_new(r, body, strlen(body), &q, NULL, 0), AIR_OK);
        assert_int_equal(air_call(r, q, &resp), AIR_OK);
        assert_int_equal(air_resp_status(resp), AIR_OK);
        assert_null(strstr(air_resp_error_message(resp), "sk-pool"));
        air_resp_free(resp);
    }
    air_mock_stats_t s;
    air_mock_stats(m, &s);
    assert_int_equal(s.ok, 10);
    assert_int_equal(s.unauthorized, 1); /* the bad key was tried once */
    char *st = air_stats_json(r);
    assert_null(strstr(st, "sk-pool"));
    free(st);
    /* An operator reset brings the rejected key back. */
    assert_int_equal(air_ctl_set_bool(r, "deployments.pool/m.reset", 1), AIR_OK);
    for (int i = 0; i < 2; i++) {
        air_req_t *q = NULL;
        air_resp_t *resp = NULL;
        assert_int_equal(air_req_new(r, body, strlen(body), &q, NULL, 0), AIR_OK);
        assert_int_equal(air_call(r, q, &resp), AIR_OK);
        assert_int_equal(air_resp_status(resp), AIR_OK);
        air_resp_free(resp);
    }
    air_mock_stats(m, &s);
    assert_int_equal(s.unauthorized, 2);
    air_free(r, 1000);
    air_mock_stop(m);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_policy_lowest_latency_prefers_fast),
        cmocka_unit_test(test_policy_lowest_cost_prefers_cheap),
        cmocka_unit_test(test_policy_tuning_moves_the_split),
        cmocka_unit_test(test_policy_flaky_is_ejected_then_probed_back),
        cmocka_unit_test(test_policy_recovered_deployment_is_probed_back_in),
        cmocka_unit_test(test_policy_client_limits_and_budgets),
        cmocka_unit_test(test_policy_explain_lists_candidates_and_scores),
        cmocka_unit_test(test_policy_reload_swaps_config_atomically),
        cmocka_unit_test(test_policy_config_json_redacts_keys),
        cmocka_unit_test(test_policy_hedge_beats_a_slow_attempt),
        cmocka_unit_test(test_policy_key_pool_sets_a_rejected_key_aside),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
