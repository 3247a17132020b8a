/*
 * test_policy2.c - the policy engine end to end against mock providers on
 * 127.0.0.1, second part: the retry budget's window and floor (also for
 * hedges and key-pool retries), hedge losers in the statistics, rate limits
 * and budgets refusing, queuing and changing at run time, per-route and
 * per-client totals, explain showing admission, the "no eligible
 * deployment" message, and what a reload keeps.
 *
 * Tests count outcomes rather than time them; where time matters the bound
 * follows from the limit's arithmetic (a slow machine only adds slack).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>

#include "airouter.h"
#include "mock.h"

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

static air_t *
router_for(const char *cfg)
{
    air_t *r = NULL;
    char err[512];
    if (air_new(cfg, &r, err, sizeof err) != AIR_OK)
        fail_msg("air_new: %s", err);
    return r;
}

static uint64_t
mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static const char *
body_for(const char *model)
{
    static char body[256]; /* main thread only */
    snprintf(body, sizeof body,
             "{\"model\":\"%s\",\"max_tokens\":10,\"messages\":[{\"role\":\"user\","
             "\"content\":\"hi\"}]}",
             model);
    return body;
}

/* One blocking request (streamed when stream); the caller frees the
 * response. */
static air_resp_t *
call_s(air_t *r, const char *model, const char *client, int stream)
{
    char sbody[256];
    snprintf(sbody, sizeof sbody,
             "{\"model\":\"%s\",\"stream\":true,\"messages\":[{\"role\":\"user\","
             "\"content\":\"hi\"}]}",
             model);
    const char *body = stream ? sbody : body_for(model);
    air_req_t *q = NULL;
    assert_int_equal(air_req_new(r, body, strlen(body), &q, NULL, 0), AIR_OK);
    if (client != NULL)
        assert_int_equal(air_req_set_client_key(q, client), AIR_OK);
    air_resp_t *resp = NULL;
    assert_int_equal(air_call(r, q, &resp), AIR_OK);
    return resp;
}

static air_resp_t *
call(air_t *r, const char *model, const char *client)
{
    return call_s(r, model, client, 0);
}

/* Asynchronous batches: submit n at once, wait for all. */
struct batch {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, ok, limited, attempts, over;
    char msg[256];
};

static void
batch_done(const air_resp_t *resp, void *ud)
{
    struct batch *b = ud;
    pthread_mutex_lock(&b->mu);
    b->done++;
    b->attempts += (int)air_resp_attempts(resp);
    if (air_resp_status(resp) == AIR_OK) {
        b->ok++;
    } else {
        if (air_resp_error_class(resp) == AIR_ERR_RATE_LIMITED)
            b->limited++;
        else
            b->over++;
        snprintf(b->msg, sizeof b->msg, "%s", air_resp_error_message(resp));
    }
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

/* Send n requests with at most conc in flight (conc >= n: all at once). */
static void
batch_run(air_t *r, const char *model, const char *client, int n, int conc, struct batch *b)
{
    memset(b, 0, sizeof *b);
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    const char *body = body_for(model);
    for (int i = 0; i < n; i++) {
        pthread_mutex_lock(&b->mu);
        while (i - b->done >= conc)
            pthread_cond_wait(&b->cv, &b->mu);
        pthread_mutex_unlock(&b->mu);
        air_req_t *q = NULL;
        assert_int_equal(air_req_new(r, body, strlen(body), &q, NULL, 0), AIR_OK);
        if (client != NULL)
            assert_int_equal(air_req_set_client_key(q, client), AIR_OK);
        assert_int_equal(air_req_set_done(q, batch_done, b), AIR_OK);
        assert_int_equal(air_submit(r, q, NULL), AIR_OK);
    }
    pthread_mutex_lock(&b->mu);
    while (b->done < n)
        pthread_cond_wait(&b->cv, &b->mu);
    pthread_mutex_unlock(&b->mu);
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
}

/* Retries spent by n sequential requests (each wants exactly one: two
 * failing targets, max_attempts 2). */
static int
retries_of(air_t *r, const char *model, int n)
{
    int retries = 0;
    for (int i = 0; i < n; i++) {
        air_resp_t *resp = call(r, model, NULL);
        assert_int_not_equal(air_resp_status(resp), AIR_OK);
        assert_true(air_resp_attempts(resp) >= 1 && air_resp_attempts(resp) <= 2);
        retries += (int)air_resp_attempts(resp) - 1;
        air_resp_free(resp);
    }
    return retries;
}

/* Two always-failing targets behind route "x" (priority, 2 attempts, no
 * backoff), with `extra` spliced into the top level. */
static char *
failing_config(const air_mock_t *a, const air_mock_t *b, const char *extra)
{
    static char buf[2048];
    snprintf(buf, sizeof buf,
             "{%s\"policy\":{\"eject\":{\"consecutive_errors\":1000}},"
             "\"providers\":[{\"name\":\"a\",\"kind\":\"openai\","
             "\"base_url\":\"http://127.0.0.1:%u/v1\"},{\"name\":\"b\",\"kind\":\"openai\","
             "\"base_url\":\"http://127.0.0.1:%u/v1\"}],\"routes\":[{\"model\":\"x\","
             "\"strategy\":\"priority\",\"max_attempts\":2,\"targets\":[{\"provider\":\"a\","
             "\"model\":\"m\"},{\"provider\":\"b\",\"model\":\"m\"}]}]}",
             extra, air_mock_port(a), air_mock_port(b));
    return buf;
}

/* The deployment object named id in air_stats_json, or NULL. */
static cJSON *
stats_dep(cJSON *stats, const char *id)
{
    cJSON *d;
    cJSON_ArrayForEach(d, cJSON_GetObjectItem(stats, "deployments"))
    {
        cJSON *n = cJSON_GetObjectItem(d, "deployment");
        if (cJSON_IsString(n) && strcmp(n->valuestring, id) == 0)
            return d;
    }
    return NULL;
}

/* The entry of array `arr` ("routes", "clients") whose `key` is name. */
static cJSON *
stats_entry(cJSON *stats, const char *arr, const char *key, const char *name)
{
    cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(stats, arr))
    {
        cJSON *n = cJSON_GetObjectItem(e, key);
        if (cJSON_IsString(n) && strcmp(n->valuestring, name) == 0)
            return e;
    }
    return NULL;
}

static double
num(cJSON *o, const char *k)
{
    cJSON *v = cJSON_GetObjectItem(o, k);
    if (!cJSON_IsNumber(v))
        fail_msg("no number '%s'", k);
    return v->valuedouble;
}

/* ------------------------------------------------------ retry budget */

/* retry.budget_window_ms decides how far back the retry budget looks, also
 * when changed at run time; the config accepts it too. */
static void
test_policy2_retry_budget_window_config_and_runtime(void **state)
{
    (void)state;
    air_mock_t *a = mock_with(0, 1.0), *b = mock_with(0, 1.0);
    air_t *r = router_for(
        failing_config(a, b,
                       "\"workers\":1,\"retry\":{\"budget_ratio\":0,\"budget_min_per_s\":2,"
                       "\"backoff_base_ms\":0,\"backoff_cap_ms\":0},"));
    /* Narrowed at run time to 1 s: at most 2 retries in each second. */
    assert_int_equal(air_ctl_set_i64(r, "retry.budget_window_ms", 1000), AIR_OK);
    uint64_t t0 = mono_ms();
    int ra = retries_of(r, "x", 30);
    uint64_t secs = (mono_ms() - t0) / 1000 + 2; /* seconds the burst can touch */
    print_message("window 1 s: %d retries in %llu ms\n", ra, (unsigned long long)(mono_ms() - t0));
    assert_true(ra >= 1);
    assert_true((uint64_t)ra <= 2 * secs);
    assert_true(ra < 20); /* the 10 s default would allow 20 */
    /* Back to 10 s: 2 x 10 retries in the window, counting those above. A
     * denial means the window already holds 20. */
    assert_int_equal(air_ctl_set_i64(r, "retry.budget_window_ms", 10000), AIR_OK);
    int rb = retries_of(r, "x", 30);
    print_message("window 10 s: %d more retries\n", rb);
    assert_true(ra + rb >= 20);
    air_free(r, 1000);

    /* From the config: readable, in the effective config, and in force. */
    r = router_for(
        failing_config(a, b,
                       "\"workers\":1,\"retry\":{\"budget_ratio\":0,\"budget_min_per_s\":2,"
                       "\"budget_window_ms\":1000,\"backoff_base_ms\":0,\"backoff_cap_ms\":0},"));
    char *v = NULL;
    assert_int_equal(air_ctl_get(r, "retry.budget_window_ms", &v), AIR_OK);
    assert_string_equal(v, "1000");
    free(v);
    char *c = air_config_json(r);
    assert_non_null(strstr(c, "\"budget_window_ms\":1000"));
    free(c);
    t0 = mono_ms();
    ra = retries_of(r, "x", 30);
    secs = (mono_ms() - t0) / 1000 + 2;
    assert_true(ra >= 1);
    assert_true((uint64_t)ra <= 2 * secs);
    air_free(r, 1000);
    air_mock_stop(a);
    air_mock_stop(b);
}

/* budget_min_per_s is a floor for the whole router, not per worker: two
 * workers busy at once still allow at most min_per_s x window retries. */
static void
test_policy2_retry_budget_floor_is_for_the_whole_router(void **state)
{
    (void)state;
    air_mock_t *a = mock_with(5, 1.0), *b = mock_with(5, 1.0);
    /* max_inflight 4: each worker takes at most 2 at a time, so both work. */
    air_t *r = router_for(failing_config(
        a, b,
        "\"workers\":2,\"max_inflight\":4,\"retry\":{\"budget_ratio\":0,\"budget_min_per_s\":1,"
        "\"backoff_base_ms\":0,\"backoff_cap_ms\":0},")); /* the default window: 10 s */
    struct batch bt;
    batch_run(r, "x", NULL, 60, 60, &bt);
    int retries = bt.attempts - 60;
    print_message("floor 1/s x 10 s over 2 workers: %d retries\n", retries);
    assert_int_equal(bt.done, 60);
    assert_true(retries >= 5);  /* at least one worker's share */
    assert_true(retries <= 10); /* 1/s x 10 s for the router */
    air_free(r, 1000);
    air_mock_stop(a);
    air_mock_stop(b);
}

/* A slow first target and a fast second, hedging after 30 ms. */
static char *
hedge_config(const air_mock_t *slow, const air_mock_t *fast, const char *extra)
{
    static char buf[2048];
    snprintf(buf, sizeof buf,
             "{\"workers\":1,%s\"hedge\":{\"delay_ms\":30},\"stats\":{\"fold_ms\":5},"
             "\"providers\":[{\"name\":\"slow\",\"kind\":\"openai\","
             "\"base_url\":\"http://127.0.0.1:%u/v1\"},{\"name\":\"fast\",\"kind\":\"openai\","
             "\"base_url\":\"http://127.0.0.1:%u/v1\"}],\"routes\":[{\"model\":\"h\","
             "\"strategy\":\"priority\",\"hedge\":true,\"targets\":[{\"provider\":\"slow\","
             "\"model\":\"m\"},{\"provider\":\"fast\",\"model\":\"m\"}]},{\"model\":\"f\","
             "\"targets\":[{\"provider\":\"fast\",\"model\":\"m\"}]}]}",
             extra, air_mock_port(slow), air_mock_port(fast));
    return buf;
}

/* Hedges spend the retry budget as configured from the first request on
 * (not the built-in defaults until some ordinary retry happened). */
static void
test_policy2_hedges_held_back_by_the_retry_budget(void **state)
{
    (void)state;
    air_mock_t *slow = mock_with(250, 0), *fast = mock_with(1, 0);
    air_t *r = router_for(
        hedge_config(slow, fast, "\"retry\":{\"budget_ratio\":0,\"budget_min_per_s\":0},"));
    for (int i = 0; i < 3; i++) {
        air_resp_t *resp = call(r, "h", NULL);
        assert_int_equal(air_resp_status(resp), AIR_OK);
        assert_string_equal(air_resp_provider(resp), "slow"); /* waited, no hedge */
        assert_int_equal(air_resp_attempts(resp), 1);
        air_resp_free(resp);
    }
    char *st = air_stats_json(r);
    assert_non_null(strstr(st, "\"hedges\":0"));
    free(st);
    air_mock_stats_t fs;
    air_mock_stats(fast, &fs);
    assert_int_equal(fs.requests, 0);
    /* With a budget again (run time), the hedge goes out. */
    assert_int_equal(air_ctl_set_i64(r, "retry.budget_min_per_s", 10), AIR_OK);
    air_resp_t *resp = call(r, "h", NULL);
    assert_int_equal(air_resp_status(resp), AIR_OK);
    assert_string_equal(air_resp_provider(resp), "fast");
    assert_int_equal(air_resp_attempts(resp), 2);
    air_resp_free(resp);
    air_free(r, 1000);
    air_mock_stop(slow);
    air_mock_stop(fast);
}

/* A key-pool retry asks the configured retry budget too. */
static void
test_policy2_key_pool_retry_obeys_the_retry_budget(void **state)
{
    (void)state;
    setenv("AIR_P2_BAD", "sk-p2-bad-key", 1);
    setenv("AIR_P2_GOOD", "sk-p2-good-key", 1);
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.api_key = "sk-p2-good-key";
    air_mock_t *m = NULL;
    char err[256];
    if (air_mock_start(&o, &m, err, sizeof err) != 0)
        fail_msg("mock: %s", err);
    char cfg[1024];
    snprintf(cfg, sizeof cfg,
             "{\"workers\":1,\"retry\":{\"budget_ratio\":0,\"budget_min_per_s\":0},"
             "\"providers\":[{\"name\":\"pool\",\"kind\":\"openai\","
             "\"base_url\":\"http://127.0.0.1:%u/v1\",\"api_key_env\":[\"AIR_P2_BAD\","
             "\"AIR_P2_GOOD\"]}],\"routes\":[{\"model\":\"k\",\"targets\":[{\"provider\":"
             "\"pool\",\"model\":\"m\"}]}]}",
             air_mock_port(m));
    air_t *r = router_for(cfg);
    /* The bad key answers 401; moving to the next key is a retry, and the
     * budget has none. */
    air_resp_t *resp = call(r, "k", NULL);
    assert_int_equal(air_resp_error_class(resp), AIR_ERR_AUTH);
    assert_int_equal(air_resp_attempts(resp), 1);
    assert_null(strstr(air_resp_error_message(resp), "sk-p2"));
    air_resp_free(resp);
    /* The bad key is set aside: the next request goes to the good one. */
    resp = call(r, "k", NULL);
    assert_int_equal(air_resp_status(resp), AIR_OK);
    air_resp_free(resp);
    air_mock_stats_t s;
    air_mock_stats(m, &s);
    assert_int_equal(s.unauthorized, 1);
    assert_int_equal(s.ok, 1);
    air_free(r, 1000);
    air_mock_stop(m);
}

/* ------------------------------------------------------------- hedges */

/* A hedge's loser is cancelled, not failed: the slow but healthy
 * deployment keeps a perfect success rate and no failures. Streams whose
 * winner takes a while after its first byte, so the loser is cancelled
 * while the winner still runs (and also plain requests, where the winner
 * may finish first). */
static void
test_policy2_hedge_loser_is_not_a_failure(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.latency_ms = 1;
    o.chunks = 4;
    o.chunk_delay_ms = 20;
    air_mock_t *slow = mock_with(400, 0), *fast = NULL;
    char err[256];
    if (air_mock_start(&o, &fast, err, sizeof err) != 0)
        fail_msg("mock: %s", err);
    air_t *r = router_for(hedge_config(slow, fast, ""));
    for (int i = 0; i < 4; i++) {
        air_resp_t *resp = call_s(r, "h", NULL, i < 2);
        assert_int_equal(air_resp_status(resp), AIR_OK);
        assert_string_equal(air_resp_provider(resp), "fast");
        assert_int_equal(air_resp_attempts(resp), 2);
        air_resp_free(resp);
    }
    /* Statistics are folded while the worker runs: keep it busy with
     * requests elsewhere until the losers show up. */
    cJSON *j = NULL, *d = NULL;
    for (int i = 0; i < 200; i++) {
        air_resp_free(call(r, "f", NULL));
        usleep(10 * 1000);
        char *st = air_stats_json(r);
        cJSON_Delete(j);
        j = cJSON_Parse(st);
        free(st);
        d = stats_dep(j, "slow/m");
        cJSON *cn = cJSON_GetObjectItem(d, "cancelled");
        if (d != NULL && (num(d, "failures") > 0 || (cJSON_IsNumber(cn) && cn->valuedouble >= 4)))
            break;
    }
    assert_non_null(d);
    assert_int_equal((int)num(d, "failures"), 0);
    assert_int_equal((int)num(d, "cancelled"), 4);
    assert_true(num(d, "success_ewma") == 1.0);
    assert_string_equal(cJSON_GetObjectItem(d, "health")->valuestring, "healthy");
    assert_int_equal((int)num(d, "consecutive_errors"), 0);
    cJSON_Delete(j);
    air_free(r, 1000);
    air_mock_stop(slow);
    air_mock_stop(fast);
}

/* ------------------------------------------------- limits and budgets */

/* A route budget refuses with budget_exceeded once spent (nothing is
 * sent), can be raised at run time, and its spending survives a reload. */
static void
test_policy2_route_budget_refuses_once_spent(void **state)
{
    (void)state;
    air_mock_t *m = mock_with(0, 0);
    char cfg[1024];
    /* $1000 per million tokens = $0.001 a token: a request is ~35 tokens. */
    snprintf(cfg, sizeof cfg,
             "{\"workers\":1,\"providers\":[{\"name\":\"p\",\"kind\":\"openai\","
             "\"base_url\":\"http://127.0.0.1:%u/v1\",\"models\":[{\"name\":\"m\","
             "\"input_price_per_mtok\":1000,\"output_price_per_mtok\":1000}]}],"
             "\"routes\":[{\"model\":\"b\",\"budget_usd\":0.1,\"budget_window\":\"day\","
             "\"targets\":[{\"provider\":\"p\",\"model\":\"m\"}]}]}",
             air_mock_port(m));
    air_t *r = router_for(cfg);
    int ok = 0, refused = 0;
    for (int i = 0; i < 8 && refused == 0; i++) {
        air_resp_t *resp = call(r, "b", NULL);
        if (air_resp_status(resp) == AIR_OK) {
            ok++;
            assert_true(air_resp_cost_usd(resp) > 0.01);
        } else {
            refused++;
            assert_int_equal(air_resp_error_class(resp), AIR_ERR_BUDGET_EXCEEDED);
            assert_int_equal(air_resp_http_status(resp), 429);
            assert_int_equal(air_resp_attempts(resp), 0);
            assert_true(air_resp_retry_after_ms(resp) > 0);
            assert_non_null(
                strstr(air_resp_error_message(resp), "route 'b' budget of $0.10 is exhausted"));
        }
        air_resp_free(resp);
    }
    assert_true(ok >= 1 && ok <= 3);
    assert_int_equal(refused, 1);
    air_mock_stats_t s;
    air_mock_stats(m, &s);
    assert_int_equal((int)s.requests, ok); /* the refused one was never sent */
    char *st = air_stats_json(r);
    cJSON *j = cJSON_Parse(st);
    cJSON *rt = stats_entry(j, "routes", "model", "b");
    assert_non_null(rt);
    assert_true(num(rt, "spent_usd") > 0.01 * ok);
    assert_int_equal((int)num(rt, "requests"), ok + refused);
    assert_true(num(rt, "cost_usd") > 0.01 * ok);
    cJSON_Delete(j);
    free(st);
    /* Explain says the reservation would be refused now. */
    const char *body = body_for("b");
    char err[256];
    char *ex = air_explain(r, body, strlen(body), err, sizeof err);
    assert_non_null(ex);
    j = cJSON_Parse(ex);
    cJSON *bj = cJSON_GetObjectItem(j, "budget");
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(bj, "admit")));
    assert_non_null(strstr(cJSON_GetObjectItem(bj, "reason")->valuestring, "exhausted"));
    cJSON_Delete(j);
    free(ex);
    /* A reload of the same configuration keeps the day's spending. */
    assert_int_equal(air_reload(r, cfg, err, sizeof err), AIR_OK);
    air_resp_t *resp = call(r, "b", NULL);
    assert_int_equal(air_resp_error_class(resp), AIR_ERR_BUDGET_EXCEEDED);
    air_resp_free(resp);
    /* Raised at run time: admitted again at once. */
    assert_int_equal(air_ctl_set(r, "routes.b.budget_usd", "10", err, sizeof err), AIR_OK);
    char *v = NULL;
    assert_int_equal(air_ctl_get(r, "routes.b.budget_usd", &v), AIR_OK);
    assert_string_equal(v, "10");
    free(v);
    resp = call(r, "b", NULL);
    assert_int_equal(air_resp_status(resp), AIR_OK);
    air_resp_free(resp);
    /* Validation: a negative or non-numeric budget is refused, naming the
     * path; the old value stays. */
    assert_int_equal(air_ctl_set(r, "routes.b.budget_usd", "-1", err, sizeof err), AIR_E_RANGE);
    assert_non_null(strstr(err, "routes.b.budget_usd"));
    assert_int_equal(air_ctl_set(r, "routes.b.budget_usd", "\"lots\"", err, sizeof err),
                     AIR_E_INVAL);
    assert_non_null(strstr(err, "routes.b.budget_usd: expected a number"));
    assert_int_equal(air_ctl_get(r, "routes.b.budget_usd", &v), AIR_OK);
    assert_string_equal(v, "10");
    free(v);
    air_free(r, 1000);
    air_mock_stop(m);
}

/* With nothing admissible, the error names each deployment and why; explain
 * shows a deployment over its rpm as not eligible, without taking tokens. */
static void
test_policy2_no_eligible_names_a_reason_per_deployment(void **state)
{
    (void)state;
    air_mock_t *m = mock_with(0, 0);
    char cfg[1024];
    snprintf(cfg, sizeof cfg,
             "{\"workers\":1,\"request_timeout_ms\":2000,\"providers\":[{\"name\":\"a\","
             "\"kind\":\"openai\",\"base_url\":\"http://127.0.0.1:%u/v1\"},{\"name\":\"b\","
             "\"kind\":\"openai\",\"base_url\":\"http://127.0.0.1:%u/v1\","
             "\"models\":[{\"name\":\"m\",\"rpm\":1}]}],\"routes\":[{\"model\":\"n\","
             "\"strategy\":\"priority\",\"targets\":[{\"provider\":\"a\",\"model\":\"m\"},"
             "{\"provider\":\"b\",\"model\":\"m\"}]}]}",
             air_mock_port(m), air_mock_port(m));
    air_t *r = router_for(cfg);
    assert_int_equal(air_ctl_set_bool(r, "deployments.a/m.enabled", 0), AIR_OK);
    const char *body = body_for("n");
    char err[256];
    /* Before: b is eligible, with one request of its rpm left; explaining
     * twice takes nothing. */
    for (int i = 0; i < 2; i++) {
        char *ex = air_explain(r, body, strlen(body), err, sizeof err);
        cJSON *j = cJSON_Parse(ex);
        cJSON *b = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "candidates"), 1);
        assert_true(cJSON_IsTrue(cJSON_GetObjectItem(b, "eligible")));
        cJSON *rpm = cJSON_GetObjectItem(cJSON_GetObjectItem(b, "limits"), "rpm");
        assert_int_equal((int)num(rpm, "limit"), 1);
        assert_true(num(rpm, "available") >= 0.99);
        cJSON_Delete(j);
        free(ex);
    }
    air_resp_t *resp = call(r, "n", NULL);
    assert_int_equal(air_resp_status(resp), AIR_OK);
    assert_string_equal(air_resp_provider(resp), "b");
    air_resp_free(resp);
    /* Now b is over its rpm: explain says so. */
    char *ex = air_explain(r, body, strlen(body), err, sizeof err);
    cJSON *j = cJSON_Parse(ex);
    cJSON *c = cJSON_GetObjectItem(j, "candidates");
    cJSON *a = cJSON_GetArrayItem(c, 0), *b = cJSON_GetArrayItem(c, 1);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(a, "eligible")));
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(b, "eligible")));
    assert_non_null(strstr(cJSON_GetObjectItem(b, "reason")->valuestring, "over rpm (1/min)"));
    assert_true(num(cJSON_GetObjectItem(cJSON_GetObjectItem(b, "limits"), "rpm"), "available") < 1);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "order")), 0);
    cJSON_Delete(j);
    free(ex);
    /* A request fails with a reason for each deployment (waiting a minute
     * for the rpm does not fit the 2 s deadline). */
    resp = call(r, "n", NULL);
    assert_int_not_equal(air_resp_status(resp), AIR_OK);
    const char *msg = air_resp_error_message(resp);
    print_message("%s\n", msg);
    assert_non_null(strstr(msg, "no eligible deployment: "));
    assert_non_null(strstr(msg, "a/m: disabled by operator"));
    assert_non_null(strstr(msg, "b/m: over rpm (1/min)"));
    assert_int_equal(air_resp_attempts(resp), 0);
    air_resp_free(resp);
    air_mock_stats_t s;
    air_mock_stats(m, &s);
    assert_int_equal(s.requests, 1);
    air_free(r, 1000);
    air_mock_stop(m);
}

/* A deployment's rpm in local mode: requests over it wait for the bucket
 * (within their deadline) instead of failing, and no more go out than the
 * bucket allows. */
static void
test_policy2_deployment_rpm_queues_requests(void **state)
{
    (void)state;
    air_mock_t *m = mock_with(0, 0);
    char cfg[1024];
    snprintf(cfg, sizeof cfg,
             "{\"workers\":2,\"request_timeout_ms\":15000,\"providers\":[{\"name\":\"p\","
             "\"kind\":\"openai\",\"base_url\":\"http://127.0.0.1:%u/v1\",\"rpm\":120}],"
             "\"routes\":[{\"model\":\"q\",\"targets\":[{\"provider\":\"p\",\"model\":\"m\"}]}]}",
             air_mock_port(m));
    air_t *r = router_for(cfg);
    uint64_t t0 = mono_ms();
    struct batch b;
    batch_run(r, "q", NULL, 124, 16, &b);
    uint64_t took = mono_ms() - t0;
    print_message("124 requests at 120 rpm: ok %d in %llu ms\n", b.ok, (unsigned long long)took);
    assert_int_equal(b.ok, 124); /* queued, none refused */
    /* A full bucket of 120 plus 2 a second: 124 need at least 2 s. */
    assert_true(took >= 1500);
    air_mock_stats_t s;
    air_mock_stats(m, &s);
    assert_int_equal(s.requests, 124);
    air_free(r, 1000);
    air_mock_stop(m);
}

/* Deployment limits are tunable by name at run time, validated, and take
 * effect for the next request. */
static void
test_policy2_deployment_limits_tunable_at_run_time(void **state)
{
    (void)state;
    air_mock_t *m = mock_with(0, 0);
    char cfg[1024];
    snprintf(cfg, sizeof cfg,
             "{\"workers\":1,\"request_timeout_ms\":1000,\"providers\":[{\"name\":\"p\","
             "\"kind\":\"openai\",\"base_url\":\"http://127.0.0.1:%u/v1\"}],"
             "\"routes\":[{\"model\":\"t\",\"targets\":[{\"provider\":\"p\",\"model\":\"m\"}]}]}",
             air_mock_port(m));
    air_t *r = router_for(cfg);
    char err[256], *v = NULL;
    assert_int_equal(air_ctl_get(r, "deployments.p/m.rpm", &v), AIR_OK);
    assert_string_equal(v, "0");
    free(v);
    assert_int_equal(air_ctl_set(r, "deployments.p/m.rpm", "2", err, sizeof err), AIR_OK);
    assert_int_equal(air_ctl_get(r, "deployments.p/m.rpm", &v), AIR_OK);
    assert_string_equal(v, "2");
    free(v);
    int ok = 0, refused = 0;
    for (int i = 0; i < 4; i++) {
        air_resp_t *resp = call(r, "t", NULL);
        if (air_resp_status(resp) == AIR_OK)
            ok++;
        else if (strstr(air_resp_error_message(resp), "over rpm (2/min)") != NULL)
            refused++;
        air_resp_free(resp);
    }
    assert_int_equal(ok, 2);
    assert_int_equal(refused, 2);
    /* Raised: the two more that a bigger bucket holds go at once. */
    assert_int_equal(air_ctl_set_i64(r, "deployments.p/m.rpm", 4), AIR_OK);
    for (int i = 0; i < 2; i++) {
        air_resp_t *resp = call(r, "t", NULL);
        assert_int_equal(air_resp_status(resp), AIR_OK);
        air_resp_free(resp);
    }
    /* tpm: a request estimates ~30 tokens; 10 a minute refuses at once. */
    assert_int_equal(air_ctl_set_i64(r, "deployments.p/m.rpm", 0), AIR_OK);
    assert_int_equal(air_ctl_set_i64(r, "deployments.p/m.tpm", 10), AIR_OK);
    air_resp_t *resp = call(r, "t", NULL);
    assert_int_equal(air_resp_status(resp), AIR_OK); /* a full bucket takes one oversized */
    air_resp_free(resp);
    resp = call(r, "t", NULL);
    assert_non_null(strstr(air_resp_error_message(resp), "over tpm (10/min)"));
    air_resp_free(resp);
    assert_int_equal(air_ctl_set_i64(r, "deployments.p/m.tpm", 0), AIR_OK);
    resp = call(r, "t", NULL);
    assert_int_equal(air_resp_status(resp), AIR_OK);
    air_resp_free(resp);
    /* max_inflight: 0 leaves it unlimited; 1 is read back. */
    assert_int_equal(air_ctl_set_i64(r, "deployments.p/m.max_inflight", 1), AIR_OK);
    assert_int_equal(air_ctl_get(r, "deployments.p/m.max_inflight", &v), AIR_OK);
    assert_string_equal(v, "1");
    free(v);
    resp = call(r, "t", NULL);
    assert_int_equal(air_resp_status(resp), AIR_OK);
    air_resp_free(resp);
    /* Validation names the path; nothing changes. */
    assert_int_equal(air_ctl_set(r, "deployments.p/m.rpm", "-1", err, sizeof err), AIR_E_RANGE);
    assert_non_null(strstr(err, "deployments.p/m.rpm"));
    assert_int_equal(air_ctl_set(r, "deployments.p/m.rpm", "1.5", err, sizeof err), AIR_E_INVAL);
    assert_non_null(strstr(err, "deployments.p/m.rpm: expected an integer"));
    assert_int_equal(air_ctl_set(r, "deployments.p/m.tpm", "\"x\"", err, sizeof err), AIR_E_INVAL);
    assert_int_equal(air_ctl_set(r, "deployments.p/m.max_inflight", "true", err, sizeof err),
                     AIR_E_INVAL);
    assert_int_equal(air_ctl_set(r, "deployments.p/m.max_inflight", "2000000", err, sizeof err),
                     AIR_E_RANGE);
    assert_int_equal(air_ctl_set(r, "deployments.p/m.nonsense", "1", err, sizeof err),
                     AIR_E_NONAME);
    assert_int_equal(air_ctl_get(r, "deployments.p/m.rpm", &v), AIR_OK);
    assert_string_equal(v, "0");
    free(v);
    /* Every path is listed with its mode. */
    char *list = air_ctl_list(r);
    cJSON *l = cJSON_Parse(list);
    assert_non_null(l);
    int seen = 0;
    cJSON *e;
    cJSON_ArrayForEach(e, l)
    {
        const char *p = cJSON_GetObjectItem(e, "path")->valuestring;
        const char *mode = cJSON_GetObjectItem(e, "mode")->valuestring;
        assert_true(strcmp(mode, "rw") == 0 || strcmp(mode, "r-") == 0 || strcmp(mode, "-w") == 0);
        if (strcmp(p, "deployments.p/m.rpm") == 0 || strcmp(p, "deployments.p/m.tpm") == 0 ||
            strcmp(p, "deployments.p/m.max_inflight") == 0 ||
            strcmp(p, "routes.t.budget_usd") == 0) {
            assert_string_equal(mode, "rw");
            seen++;
        }
        if (strcmp(p, "deployments.p/m.reset") == 0)
            assert_string_equal(mode, "-w");
        if (strcmp(p, "pricing.defaults_date") == 0)
            assert_string_equal(mode, "r-");
    }
    assert_int_equal(seen, 4);
    cJSON_Delete(l);
    free(list);
    air_free(r, 1000);
    air_mock_stop(m);
}

/* A client's max_inflight end to end: a burst gets exactly that many
 * through at once; the cap changes at run time. Totals are kept per client
 * and per route without any budget. */
static void
test_policy2_client_max_inflight_end_to_end(void **state)
{
    (void)state;
    air_mock_t *m = mock_with(300, 0);
    char cfg[1024];
    snprintf(cfg, sizeof cfg,
             "{\"workers\":2,\"providers\":[{\"name\":\"p\",\"kind\":\"openai\","
             "\"base_url\":\"http://127.0.0.1:%u/v1\",\"models\":[{\"name\":\"m\","
             "\"input_price_per_mtok\":1,\"output_price_per_mtok\":1}]}],"
             "\"routes\":[{\"model\":\"c\",\"targets\":[{\"provider\":\"p\",\"model\":\"m\"}]}],"
             "\"clients\":[{\"name\":\"batch\",\"max_inflight\":2}]}",
             air_mock_port(m));
    air_t *r = router_for(cfg);
    struct batch b;
    batch_run(r, "c", "batch", 5, 5, &b);
    assert_int_equal(b.ok, 2);
    assert_int_equal(b.limited, 3);
    assert_non_null(strstr(b.msg, "client 'batch' has 2 requests in flight (max_inflight)"));
    char err[256];
    assert_int_equal(air_ctl_set(r, "clients.batch.max_inflight", "4", err, sizeof err), AIR_OK);
    batch_run(r, "c", "batch", 5, 5, &b);
    assert_int_equal(b.ok, 4);
    assert_int_equal(b.limited, 1);
    /* Validation and unknown names. */
    assert_int_equal(air_ctl_set(r, "clients.batch.max_inflight", "-3", err, sizeof err),
                     AIR_E_RANGE);
    assert_non_null(strstr(err, "clients.batch.max_inflight"));
    assert_int_equal(air_ctl_set(r, "clients.nobody.rpm", "1", err, sizeof err), AIR_E_NONAME);
    assert_int_equal(air_ctl_set(r, "clients.batch.colour", "1", err, sizeof err), AIR_E_NONAME);
    char *v = NULL;
    assert_int_equal(air_ctl_get(r, "clients.batch.max_inflight", &v), AIR_OK);
    assert_string_equal(v, "4");
    free(v);
    /* Totals without budgets: 10 requests of this client on route c, 6 of
     * them served (with a cost). */
    char *st = air_stats_json(r);
    cJSON *j = cJSON_Parse(st);
    free(st);
    cJSON *cl = stats_entry(j, "clients", "name", "batch");
    cJSON *rt = stats_entry(j, "routes", "model", "c");
    assert_int_equal((int)num(cl, "requests"), 10);
    assert_int_equal((int)num(rt, "requests"), 10);
    assert_true(num(cl, "cost_usd") > 0);
    assert_true(num(rt, "cost_usd") == num(cl, "cost_usd"));
    assert_int_equal((int)num(cl, "inflight"), 0);
    assert_null(cJSON_GetObjectItem(rt, "budget_usd")); /* none set */
    cJSON_Delete(j);
    air_free(r, 1000);
    air_mock_stop(m);
}

/* Client rate limits and budgets are tunable at run time, and a reload
 * keeps what was used of them. */
static void
test_policy2_client_limits_tunable_and_kept_by_reload(void **state)
{
    (void)state;
    air_mock_t *m = mock_with(0, 0);
    char cfg[1024];
    snprintf(cfg, sizeof cfg,
             "{\"workers\":1,\"providers\":[{\"name\":\"p\",\"kind\":\"openai\","
             "\"base_url\":\"http://127.0.0.1:%u/v1\"}],"
             "\"routes\":[{\"model\":\"c\",\"targets\":[{\"provider\":\"p\",\"model\":\"m\"}]}],"
             "\"clients\":[{\"name\":\"k\",\"rpm\":3}]}",
             air_mock_port(m));
    air_t *r = router_for(cfg);
    for (int i = 0; i < 3; i++) {
        air_resp_t *resp = call(r, "c", "k");
        assert_int_equal(air_resp_status(resp), AIR_OK);
        air_resp_free(resp);
    }
    /* The same config reloaded: the minute's three are still used. */
    char err[256];
    assert_int_equal(air_reload(r, cfg, err, sizeof err), AIR_OK);
    air_resp_t *resp = call(r, "c", "k");
    assert_int_equal(air_resp_error_class(resp), AIR_ERR_RATE_LIMITED);
    assert_non_null(
        strstr(air_resp_error_message(resp), "client 'k' is over its rpm limit (3/min)"));
    air_resp_free(resp);
    /* Raised at run time to 5: two more now. */
    assert_int_equal(air_ctl_set_i64(r, "clients.k.rpm", 5), AIR_OK);
    int ok = 0;
    for (int i = 0; i < 3; i++) {
        resp = call(r, "c", "k");
        ok += air_resp_status(resp) == AIR_OK;
        air_resp_free(resp);
    }
    assert_int_equal(ok, 2);
    /* A budget set at run time on a client without one. */
    assert_int_equal(air_ctl_set_i64(r, "clients.k.rpm", 0), AIR_OK);
    assert_int_equal(air_ctl_set(r, "clients.k.budget_usd", "0.5", err, sizeof err), AIR_OK);
    char *v = NULL;
    assert_int_equal(air_ctl_get(r, "clients.k.budget_usd", &v), AIR_OK);
    assert_string_equal(v, "0.5");
    free(v);
    resp = call(r, "c", "k");
    assert_int_equal(air_resp_status(resp), AIR_OK);
    air_resp_free(resp);
    char *st = air_stats_json(r);
    assert_non_null(strstr(st, "\"name\":\"k\""));
    assert_non_null(strstr(st, "\"budget_usd\":0.5"));
    free(st);
    air_free(r, 1000);
    air_mock_stop(m);
}

static int
closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    close(fd); /* nothing listens there now */
    return ntohs(a.sin_port);
}

/* With limits shared through Redis, their size is not a run-time tunable
 * (every instance must agree): read-only, and listed so; caps stay
 * writable. (No Redis needed: an unreachable one fails open.) */
static void
test_policy2_shared_limits_are_read_only_at_run_time(void **state)
{
    (void)state;
    char cfg[1024], err[256];
    snprintf(cfg, sizeof cfg,
             "{\"workers\":1,\"providers\":[{\"name\":\"p\",\"kind\":\"openai\","
             "\"base_url\":\"http://127.0.0.1:9/v1\",\"models\":[{\"name\":\"m\",\"rpm\":60}]}],"
             "\"routes\":[{\"model\":\"s\",\"budget_usd\":1,\"targets\":[{\"provider\":\"p\","
             "\"model\":\"m\"}]}],\"state\":{\"backend\":\"redis\","
             "\"url\":\"redis://127.0.0.1:%d\",\"timeout_ms\":100,\"backoff_ms\":50,"
             "\"backoff_max_ms\":100}}",
             closed_port());
    air_t *r = router_for(cfg);
    assert_int_equal(air_ctl_set(r, "deployments.p/m.rpm", "10", err, sizeof err), AIR_E_READONLY);
    assert_non_null(strstr(err, "deployments.p/m.rpm: read-only while limits are shared"));
    assert_int_equal(air_ctl_set(r, "routes.s.budget_usd", "5", err, sizeof err), AIR_E_READONLY);
    assert_int_equal(air_ctl_set(r, "deployments.p/m.max_inflight", "3", err, sizeof err), AIR_OK);
    char *v = NULL;
    assert_int_equal(air_ctl_get(r, "deployments.p/m.rpm", &v), AIR_OK);
    assert_string_equal(v, "60");
    free(v);
    char *list = air_ctl_list(r);
    assert_non_null(strstr(list, "\"path\":\"deployments.p/m.rpm\",\"type\":\"i64\",\"min\":0,"
                                 "\"max\":1000000000,\"mode\":\"r-\""));
    assert_non_null(strstr(list, "\"path\":\"deployments.p/m.max_inflight\",\"type\":\"i64\","
                                 "\"min\":0,\"max\":1000000,\"mode\":\"rw\""));
    free(list);
    air_free(r, 500);
}

/* The rules between tunables (hedge.max_ms >= hedge.min_ms, eject.max_ms >=
 * eject.base_ms, ...) hold for a config and for a run-time change. */
static void
test_policy2_rules_between_tunables_are_enforced(void **state)
{
    (void)state;
    air_t *r = NULL;
    char err[512];
    assert_int_equal(air_new("{\"hedge\":{\"max_ms\":10},\"providers\":[{\"name\":\"p\","
                             "\"kind\":\"openai\"}]}",
                             &r, err, sizeof err),
                     AIR_E_CONFIG);
    assert_null(r);
    assert_non_null(strstr(err, "hedge.max_ms: 10 is below hedge.min_ms (50)"));
    r = router_for("{\"providers\":[{\"name\":\"p\",\"kind\":\"openai\"}]}");
    assert_int_equal(air_ctl_set(r, "policy.eject.max_ms", "1000", err, sizeof err), AIR_E_RANGE);
    assert_non_null(strstr(err, "policy.eject.max_ms: 1000 is below policy.eject.base_ms"));
    char *v = NULL;
    assert_int_equal(air_ctl_get(r, "policy.eject.max_ms", &v), AIR_OK);
    assert_string_equal(v, "300000"); /* unchanged */
    free(v);
    assert_int_equal(air_ctl_set(r, "policy.eject.base_ms", "500", err, sizeof err), AIR_OK);
    assert_int_equal(air_ctl_set(r, "policy.eject.max_ms", "1000", err, sizeof err), AIR_OK);
    air_free(r, 100);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_policy2_retry_budget_window_config_and_runtime),
        cmocka_unit_test(test_policy2_retry_budget_floor_is_for_the_whole_router),
        cmocka_unit_test(test_policy2_hedges_held_back_by_the_retry_budget),
        cmocka_unit_test(test_policy2_key_pool_retry_obeys_the_retry_budget),
        cmocka_unit_test(test_policy2_hedge_loser_is_not_a_failure),
        cmocka_unit_test(test_policy2_route_budget_refuses_once_spent),
        cmocka_unit_test(test_policy2_no_eligible_names_a_reason_per_deployment),
        cmocka_unit_test(test_policy2_deployment_rpm_queues_requests),
        cmocka_unit_test(test_policy2_deployment_limits_tunable_at_run_time),
        cmocka_unit_test(test_policy2_client_max_inflight_end_to_end),
        cmocka_unit_test(test_policy2_client_limits_tunable_and_kept_by_reload),
        cmocka_unit_test(test_policy2_shared_limits_are_read_only_at_run_time),
        cmocka_unit_test(test_policy2_rules_between_tunables_are_enforced),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
