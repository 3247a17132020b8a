/*
 * test_engine.c - integration tests of the engine against real mock
 * providers on 127.0.0.1: plain and streamed requests, failover (also of a
 * stream that breaks after its held-back role chunk), Retry-After,
 * deadlines, per-attempt connect and total timeouts, cancel, backpressure,
 * shutdown (and submits racing with it), stream resets, no spinning when
 * idle, the completion queue, and a mixed-fault soak where every request
 * must complete exactly once.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "airouter.h"
#include "mock.h"

static uint64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static air_mock_t *
mock_start(const air_mock_opts_t *o)
{
    air_mock_t *m = NULL;
    char err[256];
    int rc = air_mock_start(o, &m, err, sizeof err);
    if (rc != 0)
        fail_msg("mock: %s", err);
    return m;
}

static air_mock_t *
mock_plain(void)
{
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    return mock_start(&o);
}

/* A config with one provider per mock (named p0, p1, ...) and one route
 * "m" over them in order, plus `extra` top-level members. */
static char *
config_for(air_mock_t **mocks, int n, const char *extra, const char *provider_extra)
{
    static char buf[8192];
    int off = snprintf(buf, sizeof buf, "{%s%s\"providers\":[", extra ? extra : "",
                       extra && extra[0] ? "," : "");
    for (int i = 0; i < n; i++)
        off += snprintf(buf + off, sizeof buf - (size_t)off,
                        "%s{\"name\":\"p%d\",\"kind\":\"openai\","
                        "\"base_url\":\"http://127.0.0.1:%u/v1\"%s%s}",
                        i ? "," : "", i, air_mock_port(mocks[i]),
                        provider_extra ? "," : "", provider_extra ? provider_extra : "");
    off += snprintf(buf + off, sizeof buf - (size_t)off,
                    "],\"routes\":[{\"model\":\"m\",\"strategy\":\"priority\",\"targets\":[");
    for (int i = 0; i < n; i++)
        off += snprintf(buf + off, sizeof buf - (size_t)off,
                        "%s{\"provider\":\"p%d\",\"model\":\"up-%d\"}", i ? "," : "", i, i);
    snprintf(buf + off, sizeof buf - (size_t)off, "]}]}");
    return buf;
}

static air_t *
router_for(const char *cfg)
{
    air_t *r = NULL;
    char err[512];
    air_status_t st = air_new(cfg, &r, err, sizeof err);
    if (st != AIR_OK)
        fail_msg("air_new: %s (%s)", err, cfg);
    return r;
}

static const char *plain_body = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
                                "\"content\":\"hello there\"}]}";
static const char *stream_body = "{\"model\":\"m\",\"stream\":true,\"stream_options\":"
                                 "{\"include_usage\":true},\"messages\":[{\"role\":\"user\","
                                 "\"content\":\"hello there\"}]}";

static air_req_t *
req_for(air_t *r, const char *body)
{
    air_req_t *q = NULL;
    char err[256];
    air_status_t st = air_req_new(r, body, strlen(body), &q, err, sizeof err);
    if (st != AIR_OK)
        fail_msg("air_req_new: %s", err);
    return q;
}

static air_resp_t *
call(air_t *r, air_req_t *q)
{
    air_resp_t *resp = NULL;
    assert_int_equal(air_call(r, q, &resp), AIR_OK);
    assert_non_null(resp);
    return resp;
}

/* ---------------------------------------------------------------- plain */

static void
test_engine_plain_request_returns_unified_body(void **state)
{
    (void)state;
    air_mock_t *m = mock_plain();
    air_t *r = router_for(config_for(&m, 1, NULL, NULL));
    air_resp_t *resp = call(r, req_for(r, plain_body));
    assert_int_equal(air_resp_status(resp), AIR_OK);
    assert_int_equal(air_resp_error_class(resp), AIR_ERR_NONE);
    assert_int_equal(air_resp_http_status(resp), 200);
    size_t n = 0;
    const char *b = air_resp_body(resp, &n);
    assert_non_null(b);
    assert_true(n > 0);
    assert_non_null(strstr(b, "\"chat.completion\""));
    assert_non_null(strstr(b, "tok0 tok1"));
    assert_string_equal(air_resp_provider(resp), "p0");
    assert_string_equal(air_resp_model(resp), "up-0");
    assert_int_equal(air_resp_attempts(resp), 1);
    assert_int_equal(air_resp_completion_tokens(resp), 8);
    assert_true(air_resp_prompt_tokens(resp) > 0);
    assert_true(air_resp_latency_us(resp) > 0);
    assert_true(air_resp_ttft_us(resp) > 0);
    assert_true(air_resp_ttft_us(resp) <= air_resp_latency_us(resp));
    assert_true(air_resp_id(resp) != 0);
    /* The router replaced the model name and sent the provider's key. */
    char sent[4096], auth[256];
    air_mock_last_request(m, sent, sizeof sent, auth, sizeof auth);
    assert_non_null(strstr(sent, "\"up-0\""));
    air_resp_free(resp);
    air_free(r, 1000);
    air_mock_stop(m);
}

static void
test_engine_api_key_from_env_is_sent(void **state)
{
    (void)state;
    setenv("AIR_TEST_ENGINE_KEY", "sk-engine-test-123", 1);
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.api_key = "sk-engine-test-123";
    air_mock_t *m = mock_start(&o);
    air_t *r = router_for(config_for(&m, 1, NULL, "\"api_key_env\":\"AIR_TEST_ENGINE_KEY\""));
    air_resp_t *resp = call(r, req_for(r, plain_body));
    assert_int_equal(air_resp_status(resp), AIR_OK);
    char auth[256];
    air_mock_last_request(m, NULL, 0, auth, sizeof auth);
    assert_string_equal(auth, "Bearer sk-engine-test-123");
    air_resp_free(resp);
    air_free(r, 1000);
    air_mock_stop(m);
}

/* --------------------------------------------------------------- stream */

struct chunks {
    pthread_mutex_t mu;
    char text[4096];
    int n;
    int first_has_role;
    int roles; /* chunks that open the assistant message */
    int saw_usage;
    int after_done; /* a chunk arrived after the done callback: a bug */
    int done;
};

static void
collect_chunk(const char *json, size_t len, void *ud)
{
    struct chunks *c = ud;
    pthread_mutex_lock(&c->mu);
    assert_int_equal(json[len], '\0');
    if (c->done)
        c->after_done = 1;
    if (strstr(json, "\"role\":\"assistant\"") != NULL) {
        if (c->n == 0)
            c->first_has_role = 1;
        c->roles++;
    }
    if (strstr(json, "\"usage\":{") != NULL)
        c->saw_usage = 1;
    const char *p = strstr(json, "\"content\":\"");
    if (p != NULL) {
        p += strlen("\"content\":\"");
        const char *e = strchr(p, '"');
        size_t have = strlen(c->text);
        if (e != NULL && have + (size_t)(e - p) < sizeof c->text - 1)
            strncat(c->text, p, (size_t)(e - p));
    }
    c->n++;
    pthread_mutex_unlock(&c->mu);
}

static void
test_engine_stream_chunks_arrive_in_order(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.chunks = 5;
    air_mock_t *m = mock_start(&o);
    air_t *r = router_for(config_for(&m, 1, NULL, NULL));
    struct chunks c;
    memset(&c, 0, sizeof c);
    pthread_mutex_init(&c.mu, NULL);
    air_req_t *q = req_for(r, stream_body);
    assert_int_equal(air_req_set_chunk(q, collect_chunk, &c), AIR_OK);
    air_resp_t *resp = call(r, q);
    assert_int_equal(air_resp_status(resp), AIR_OK);
    assert_true(air_resp_streamed(resp));
    assert_true(air_resp_chunks_delivered(resp));
    assert_null(air_resp_body(resp, NULL));
    assert_true(c.first_has_role);
    assert_string_equal(c.text, "tok0 tok1 tok2 tok3 tok4 ");
    assert_true(c.saw_usage);
    assert_int_equal(air_resp_completion_tokens(resp), 5);
    assert_true(air_resp_ttft_us(resp) > 0);
    air_resp_free(resp);
    air_free(r, 1000);
    air_mock_stop(m);
    pthread_mutex_destroy(&c.mu);
}

static void
test_engine_stream_reset_midway_is_an_error(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.chunks = 8;
    o.reset_rate = 1.0;
    air_mock_t *bad = mock_start(&o);
    air_mock_t *good = mock_plain();
    air_mock_t *ms[2] = {bad, good};
    air_t *r = router_for(config_for(ms, 2, NULL, NULL));
    struct chunks c;
    memset(&c, 0, sizeof c);
    pthread_mutex_init(&c.mu, NULL);
    air_req_t *q = req_for(r, stream_body);
    assert_int_equal(air_req_set_chunk(q, collect_chunk, &c), AIR_OK);
    air_resp_t *resp = call(r, q);
    /* Content reached the caller before the reset: no failover, an error. */
    assert_int_not_equal(air_resp_status(resp), AIR_OK);
    assert_true(air_resp_chunks_delivered(resp));
    assert_int_equal(air_resp_attempts(resp), 1);
    assert_string_equal(air_resp_provider(resp), "p0");
    assert_true(strlen(air_resp_error_message(resp)) > 0);
    assert_true(strlen(c.text) > 0);
    air_resp_free(resp);
    air_free(r, 1000);
    air_mock_stop(bad);
    air_mock_stop(good);
    pthread_mutex_destroy(&c.mu);
}

static void
test_engine_stream_fails_over_before_content(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.fail_rate = 1.0;
    o.fail_status = 503;
    air_mock_t *bad = mock_start(&o);
    air_mock_t *good = mock_plain();
    air_mock_t *ms[2] = {bad, good};
    air_t *r = router_for(config_for(ms, 2, NULL, NULL));
    struct chunks c;
    memset(&c, 0, sizeof c);
    pthread_mutex_init(&c.mu, NULL);
    air_req_t *q = req_for(r, stream_body);
    assert_int_equal(air_req_set_chunk(q, collect_chunk, &c), AIR_OK);
    air_resp_t *resp = call(r, q);
    assert_int_equal(air_resp_status(resp), AIR_OK);
    assert_int_equal(air_resp_attempts(resp), 2);
    assert_string_equal(air_resp_provider(resp), "p1");
    assert_true(c.first_has_role);
    assert_string_equal(c.text, "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7 ");
    air_resp_free(resp);
    air_free(r, 1000);
    air_mock_stop(bad);
    air_mock_stop(good);
    pthread_mutex_destroy(&c.mu);
}

/* The opening role chunk is held back until content: a stream that breaks
 * after it and before any content still fails over, and the caller sees
 * exactly one role chunk (the winner's), not one per attempt. With one
 * chunk the mock resets the connection right after the opening (role)
 * event, before the first content piece. */
static void
test_engine_stream_break_after_role_chunk_fails_over_with_one_role(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.chunks = 1;
    o.reset_rate = 1.0;
    air_mock_t *bad = mock_start(&o);
    air_mock_t *good = mock_plain();
    air_mock_t *ms[2] = {bad, good};
    air_t *r = router_for(config_for(ms, 2, NULL, NULL));
    struct chunks c;
    memset(&c, 0, sizeof c);
    pthread_mutex_init(&c.mu, NULL);
    air_req_t *q = req_for(r, stream_body);
    assert_int_equal(air_req_set_chunk(q, collect_chunk, &c), AIR_OK);
    air_resp_t *resp = call(r, q);
    assert_int_equal(air_resp_status(resp), AIR_OK);
    assert_int_equal(air_resp_attempts(resp), 2);
    assert_string_equal(air_resp_provider(resp), "p1");
    air_mock_stats_t s;
    air_mock_stats(bad, &s);
    assert_int_equal(s.streams, 1); /* the first attempt did open a stream */
    assert_int_equal(s.resets, 1);
    assert_true(c.first_has_role);
    assert_int_equal(c.roles, 1);
    assert_string_equal(c.text, "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7 ");
    assert_true(c.saw_usage);
    air_resp_free(resp);
    air_free(r, 1000);
    air_mock_stop(bad);
    air_mock_stop(good);
    pthread_mutex_destroy(&c.mu);
}

/* ------------------------------------------------------------- failover */

static void
test_engine_failover_to_healthy_provider(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.fail_rate = 1.0;
    o.fail_status = 500;
    air_mock_t *bad = mock_start(&o);
    air_mock_t *good = mock_plain();
    air_mock_t *ms[2] = {bad, good};
    air_t *r = router_for(config_for(ms, 2, NULL, NULL));
    air_resp_t *resp = call(r, req_for(r, plain_body));
    assert_int_equal(air_resp_status(resp), AIR_OK);
    assert_int_equal(air_resp_attempts(resp), 2);
    assert_string_equal(air_resp_provider(resp), "p1");
    assert_string_equal(air_resp_model(resp), "up-1");
    air_mock_stats_t s;
    air_mock_stats(bad, &s);
    assert_int_equal(s.failed, 1);
    air_resp_free(resp);
    air_free(r, 1000);
    air_mock_stop(bad);
    air_mock_stop(good);
}

static void
test_engine_connect_failure_fails_over(void **state)
{
    (void)state;
    air_mock_t *good = mock_plain();
    char cfg[2048];
    snprintf(cfg, sizeof cfg,
             "{\"providers\":[{\"name\":\"dead\",\"kind\":\"openai\","
             "\"base_url\":\"http://127.0.0.1:1/v1\"},"
             "{\"name\":\"live\",\"kind\":\"openai\",\"base_url\":\"http://127.0.0.1:%u/v1\"}],"
             "\"routes\":[{\"model\":\"m\",\"strategy\":\"priority\",\"targets\":[{\"provider\":\"dead\"},"
             "{\"provider\":\"live\"}]}]}",
             air_mock_port(good));
    air_t *r = router_for(cfg);
    air_resp_t *resp = call(r, req_for(r, plain_body));
    assert_int_equal(air_resp_status(resp), AIR_OK);
    assert_string_equal(air_resp_provider(resp), "live");
    assert_string_equal(air_resp_model(resp), "m");
    assert_int_equal(air_resp_attempts(resp), 2);
    air_resp_free(resp);
    air_free(r, 1000);
    air_mock_stop(good);
}

static void
test_engine_invalid_request_is_not_retried(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.fail_rate = 1.0;
    o.fail_status = 400;
    air_mock_t *bad = mock_start(&o);
    air_mock_t *good = mock_plain();
    air_mock_t *ms[2] = {bad, good};
    air_t *r = router_for(config_for(ms, 2, NULL, NULL));
    air_resp_t *resp = call(r, req_for(r, plain_body));
    assert_int_equal(air_resp_error_class(resp), AIR_ERR_INVALID_REQUEST);
    assert_int_equal(air_resp_http_status(resp), 400);
    assert_int_equal(air_resp_attempts(resp), 1);
    air_mock_stats_t s;
    air_mock_stats(good, &s);
    assert_int_equal(s.requests, 0);
    air_resp_free(resp);
    air_free(r, 1000);
    air_mock_stop(bad);
    air_mock_stop(good);
}

/* A route's retry policy lists the classes that may be retried: a 503 is
 * not one of them here, so the request does not fail over. */
static void
test_engine_route_retry_classes_limit_failover(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.fail_rate = 1.0;
    o.fail_status = 503;
    air_mock_t *bad = mock_start(&o);
    air_mock_t *good = mock_plain();
    char cfg[2048];
    snprintf(cfg, sizeof cfg,
             "{\"providers\":[{\"name\":\"a\",\"kind\":\"openai\",\"base_url\":"
             "\"http://127.0.0.1:%u/v1\"},{\"name\":\"b\",\"kind\":\"openai\",\"base_url\":"
             "\"http://127.0.0.1:%u/v1\"}],\"routes\":[{\"model\":\"m\",\"strategy\":"
             "\"priority\",\"retry\":{\"max_attempts\":3,\"on\":[\"rate_limited\"]},"
             "\"targets\":[{\"provider\":\"a\"},{\"provider\":\"b\"}]},"
             "{\"model\":\"m2\",\"strategy\":\"priority\",\"retry\":{\"on\":[\"overloaded\"]},"
             "\"targets\":[{\"provider\":\"a\"},{\"provider\":\"b\"}]}]}",
             air_mock_port(bad), air_mock_port(good));
    air_t *r = router_for(cfg);
    air_resp_t *resp = call(r, req_for(r, plain_body));
    assert_int_equal(air_resp_error_class(resp), AIR_ERR_OVERLOADED);
    assert_int_equal(air_resp_attempts(resp), 1);
    air_resp_free(resp);
    const char *b2 = "{\"model\":\"m2\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}";
    resp = call(r, req_for(r, b2));
    assert_int_equal(air_resp_status(resp), AIR_OK);
    assert_int_equal(air_resp_attempts(resp), 2);
    air_resp_free(resp);
    /* A bad class name is a config error naming the path. */
    air_t *r2 = NULL;
    char err[256];
    assert_int_equal(air_new("{\"providers\":[{\"name\":\"a\",\"kind\":\"openai\"}],"
                             "\"routes\":[{\"model\":\"m\",\"retry\":{\"on\":[\"oops\"]},"
                             "\"targets\":[{\"provider\":\"a\"}]}]}",
                             &r2, err, sizeof err),
                     AIR_E_CONFIG);
    assert_non_null(strstr(err, "routes[0].retry.on[0]"));
    air_free(r, 1000);
    air_mock_stop(bad);
    air_mock_stop(good);
}

static void
test_engine_auth_error_fails_over_and_keeps_key_secret(void **state)
{
    (void)state;
    setenv("AIR_TEST_WRONG_KEY", "sk-wrong-secret-999", 1);
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.api_key = "sk-right";
    air_mock_t *locked = mock_start(&o);
    air_t *r = router_for(config_for(&locked, 1, NULL, "\"api_key_env\":\"AIR_TEST_WRONG_KEY\""));
    air_resp_t *resp = call(r, req_for(r, plain_body));
    assert_int_equal(air_resp_error_class(resp), AIR_ERR_AUTH);
    assert_int_equal(air_resp_attempts(resp), 1); /* never retried on the same key */
    assert_null(strstr(air_resp_error_message(resp), "sk-wrong-secret-999"));
    air_resp_free(resp);
    air_free(r, 1000);
    air_mock_stop(locked);
}

static void
test_engine_retry_after_is_honoured(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.fail_first = 1;
    o.fail_status = 429;
    o.retry_after_s = 1;
    air_mock_t *m = mock_start(&o);
    air_t *r = router_for(config_for(&m, 1, NULL, NULL));
    uint64_t t0 = now_ms();
    air_resp_t *resp = call(r, req_for(r, plain_body));
    uint64_t took = now_ms() - t0;
    assert_int_equal(air_resp_status(resp), AIR_OK);
    assert_int_equal(air_resp_attempts(resp), 2);
    assert_true(took >= 950);
    assert_true(took < 5000);
    air_resp_free(resp);
    air_free(r, 1000);
    air_mock_stop(m);
}

static void
test_engine_retry_after_beyond_deadline_fails_now(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.fail_first = 1;
    o.fail_status = 429;
    o.retry_after_s = 30;
    air_mock_t *m = mock_start(&o);
    air_t *r = router_for(config_for(&m, 1, NULL, NULL));
    air_req_t *q = req_for(r, plain_body);
    assert_int_equal(air_req_set_deadline_ms(q, 2000), AIR_OK);
    uint64_t t0 = now_ms();
    air_resp_t *resp = call(r, q);
    assert_true(now_ms() - t0 < 1500);
    assert_int_equal(air_resp_error_class(resp), AIR_ERR_RATE_LIMITED);
    assert_int_equal(air_resp_http_status(resp), 429);
    assert_int_equal(air_resp_retry_after_ms(resp), 30000);
    air_resp_free(resp);
    air_free(r, 1000);
    air_mock_stop(m);
}

/* ------------------------------------------------------ deadline, cancel */

static void
test_engine_deadline_expires(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.latency_ms = 3000;
    air_mock_t *m = mock_start(&o);
    air_t *r = router_for(config_for(&m, 1, NULL, NULL));
    air_req_t *q = req_for(r, plain_body);
    assert_int_equal(air_req_set_deadline_ms(q, 200), AIR_OK);
    uint64_t t0 = now_ms();
    air_resp_t *resp = call(r, q);
    uint64_t took = now_ms() - t0;
    assert_int_equal(air_resp_status(resp), AIR_E_TIMEOUT);
    assert_int_equal(air_resp_error_class(resp), AIR_ERR_TIMEOUT);
    assert_int_equal(air_resp_http_status(resp), 504);
    assert_true(took >= 190);
    assert_true(took < 1500);
    air_resp_free(resp);
    air_free(r, 1000);
    air_mock_stop(m);
}

static void
test_engine_first_byte_timeout_fails_over(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.latency_ms = 3000;
    air_mock_t *slow = mock_start(&o);
    air_mock_t *good = mock_plain();
    air_mock_t *ms[2] = {slow, good};
    air_t *r = router_for(config_for(ms, 2, NULL, "\"first_byte_timeout_ms\":200"));
    uint64_t t0 = now_ms();
    air_resp_t *resp = call(r, req_for(r, plain_body));
    assert_int_equal(air_resp_status(resp), AIR_OK);
    assert_string_equal(air_resp_provider(resp), "p1");
    assert_true(now_ms() - t0 < 2000);
    air_resp_free(resp);
    air_free(r, 1000);
    air_mock_stop(slow);
    air_mock_stop(good);
}

static void
test_engine_stream_idle_timeout_is_an_error(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.chunks = 4;
    o.chunk_delay_ms = 2000;
    air_mock_t *m = mock_start(&o);
    air_t *r = router_for(config_for(&m, 1, NULL, "\"idle_timeout_ms\":300"));
    struct chunks c;
    memset(&c, 0, sizeof c);
    pthread_mutex_init(&c.mu, NULL);
    air_req_t *q = req_for(r, stream_body);
    assert_int_equal(air_req_set_chunk(q, collect_chunk, &c), AIR_OK);
    assert_int_equal(air_req_set_max_attempts(q, 1), AIR_OK);
    uint64_t t0 = now_ms();
    air_resp_t *resp = call(r, q);
    assert_true(now_ms() - t0 < 1800); /* did not wait for the 2 s gap */
    assert_int_equal(air_resp_error_class(resp), AIR_ERR_TIMEOUT);
    air_resp_free(resp);
    air_free(r, 1000);
    air_mock_stop(m);
    pthread_mutex_destroy(&c.mu);
}

/* A TCP port on 127.0.0.1 where connecting hangs: a listener with a
 * backlog of 0 that never accepts, its accept queue filled by our own
 * connections, so the kernel drops further SYNs (tcp_abort_on_overflow=0,
 * the default) and a connect only ends by timing out. */
#define BLACKHOLE_FILL 4

struct blackhole {
    int lfd;
    int fill[BLACKHOLE_FILL];
    uint16_t port;
};

static int
connect_nb(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int rc = connect(fd, (struct sockaddr *)&a, sizeof a);
    assert_true(rc == 0 || errno == EINPROGRESS);
    return fd;
}

/* Returns 0 when the port really hangs (a probe connect does not complete
 * within 150 ms), -1 when this kernel refuses or accepts instead. */
static int
blackhole_open(struct blackhole *b)
{
    b->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(b->lfd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(b->lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(b->lfd, 0), 0);
    socklen_t al = sizeof a;
    assert_int_equal(getsockname(b->lfd, (struct sockaddr *)&a, &al), 0);
    b->port = ntohs(a.sin_port);
    for (int i = 0; i < BLACKHOLE_FILL; i++)
        b->fill[i] = connect_nb(b->port);
    usleep(50 * 1000); /* let the handshakes that can complete, complete */
    int probe = connect_nb(b->port);
    struct pollfd p = {.fd = probe, .events = POLLOUT};
    int rc = poll(&p, 1, 150);
    close(probe);
    return rc == 0 ? 0 : -1;
}

static void
blackhole_close(struct blackhole *b)
{
    for (int i = 0; i < BLACKHOLE_FILL; i++)
        close(b->fill[i]);
    close(b->lfd);
}

/* connect_timeout_ms bounds each attempt's connect: the request neither
 * waits for the 60 s total nor for the 30 s first-byte timeout; the attempt
 * fails as a timeout and the next target serves the request. */
static void
test_engine_connect_timeout_bounds_each_attempt(void **state)
{
    (void)state;
    struct blackhole bh;
    if (blackhole_open(&bh) != 0) {
        blackhole_close(&bh);
        print_message("connect-timeout: a full backlog does not hang connects here\n");
        skip();
    }
    air_mock_t *good = mock_plain();
    char cfg[2048];
    snprintf(cfg, sizeof cfg,
             "{\"providers\":[{\"name\":\"hang\",\"kind\":\"openai\","
             "\"base_url\":\"http://127.0.0.1:%u/v1\",\"connect_timeout_ms\":200},"
             "{\"name\":\"live\",\"kind\":\"openai\",\"base_url\":\"http://127.0.0.1:%u/v1\"}],"
             "\"routes\":[{\"model\":\"m\",\"strategy\":\"priority\",\"targets\":"
             "[{\"provider\":\"hang\"},{\"provider\":\"live\"}]},"
             "{\"model\":\"only-hang\",\"targets\":[{\"provider\":\"hang\"}]}]}",
             (unsigned)bh.port, (unsigned)air_mock_port(good));
    air_t *r = router_for(cfg);

    /* Alone, with one attempt: a timeout after about connect_timeout_ms. */
    const char *b1 = "{\"model\":\"only-hang\",\"messages\":[{\"role\":\"user\","
                     "\"content\":\"x\"}]}";
    air_req_t *q = req_for(r, b1);
    assert_int_equal(air_req_set_max_attempts(q, 1), AIR_OK);
    uint64_t t0 = now_ms();
    air_resp_t *resp = call(r, q);
    uint64_t took = now_ms() - t0;
    print_message("connect-timeout: one attempt took %llu ms\n", (unsigned long long)took);
    assert_int_equal(air_resp_status(resp), AIR_E_TIMEOUT);
    assert_int_equal(air_resp_error_class(resp), AIR_ERR_TIMEOUT);
    assert_int_equal(air_resp_attempts(resp), 1);
    assert_string_equal(air_resp_provider(resp), "hang");
    assert_true(took >= 180);
    assert_true(took < 3000);
    air_resp_free(resp);

    /* On a route with a second target: fails over after the connect timeout. */
    t0 = now_ms();
    resp = call(r, req_for(r, plain_body));
    took = now_ms() - t0;
    assert_int_equal(air_resp_status(resp), AIR_OK);
    assert_string_equal(air_resp_provider(resp), "live");
    assert_int_equal(air_resp_attempts(resp), 2);
    assert_true(took >= 180);
    assert_true(took < 3000);
    air_resp_free(resp);
    air_free(r, 1000);
    air_mock_stop(good);
    blackhole_close(&bh);
}

/* The provider's timeout_ms bounds one attempt's total time even while
 * bytes keep flowing: a stream that sends a chunk every 100 ms (so neither
 * the first-byte nor the idle timeout fires) is cut at timeout_ms and ends
 * with a timeout error after content; a slow plain answer is cut at
 * timeout_ms and fails over to the next target. */
static void
test_engine_provider_timeout_bounds_the_whole_attempt(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.chunks = 30;
    o.chunk_delay_ms = 100; /* 3 s in all */
    air_mock_t *trickle = mock_start(&o);
    air_t *r = router_for(config_for(&trickle, 1, NULL, "\"timeout_ms\":500"));
    struct chunks c;
    memset(&c, 0, sizeof c);
    pthread_mutex_init(&c.mu, NULL);
    air_req_t *q = req_for(r, stream_body);
    assert_int_equal(air_req_set_chunk(q, collect_chunk, &c), AIR_OK);
    uint64_t t0 = now_ms();
    air_resp_t *resp = call(r, q);
    uint64_t took = now_ms() - t0;
    print_message("total-timeout: stream cut after %llu ms\n", (unsigned long long)took);
    assert_int_equal(air_resp_error_class(resp), AIR_ERR_TIMEOUT);
    assert_true(air_resp_chunks_delivered(resp));
    assert_int_equal(air_resp_attempts(resp), 1); /* content was out: no failover */
    assert_true(strlen(c.text) > 0);
    assert_null(strstr(c.text, "tok29"));
    assert_true(took >= 450);
    assert_true(took < 2500);
    air_resp_free(resp);
    air_free(r, 1000);
    air_mock_stop(trickle);
    pthread_mutex_destroy(&c.mu);

    air_mock_opts_init(&o);
    o.latency_ms = 3000;
    air_mock_t *slow = mock_start(&o);
    air_mock_t *good = mock_plain();
    air_mock_t *ms[2] = {slow, good};
    r = router_for(config_for(ms, 2, NULL, "\"timeout_ms\":300"));
    t0 = now_ms();
    resp = call(r, req_for(r, plain_body));
    took = now_ms() - t0;
    assert_int_equal(air_resp_status(resp), AIR_OK);
    assert_string_equal(air_resp_provider(resp), "p1");
    assert_int_equal(air_resp_attempts(resp), 2);
    assert_true(took >= 280);
    assert_true(took < 2500);
    air_resp_free(resp);
    air_free(r, 1000);
    air_mock_stop(slow);
    air_mock_stop(good);
}

struct once {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int calls;
    air_status_t st;
};

static void
once_done(const air_resp_t *resp, void *ud)
{
    struct once *o = ud;
    pthread_mutex_lock(&o->mu);
    o->calls++;
    o->st = air_resp_status(resp);
    pthread_cond_broadcast(&o->cv);
    pthread_mutex_unlock(&o->mu);
}

static void
once_wait(struct once *o, int n)
{
    pthread_mutex_lock(&o->mu);
    while (o->calls < n)
        pthread_cond_wait(&o->cv, &o->mu);
    pthread_mutex_unlock(&o->mu);
}

static void
test_engine_cancel_completes_once_with_cancelled(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.latency_ms = 3000;
    air_mock_t *m = mock_start(&o);
    air_t *r = router_for(config_for(&m, 1, NULL, NULL));
    struct once on = {.calls = 0};
    pthread_mutex_init(&on.mu, NULL);
    pthread_cond_init(&on.cv, NULL);
    air_req_t *q = req_for(r, plain_body);
    assert_int_equal(air_req_set_done(q, once_done, &on), AIR_OK);
    uint64_t id = 0;
    uint64_t t0 = now_ms();
    assert_int_equal(air_submit(r, q, &id), AIR_OK);
    assert_true(id != 0);
    usleep(100 * 1000);
    assert_int_equal(air_cancel(r, id), AIR_OK);
    once_wait(&on, 1);
    assert_true(now_ms() - t0 < 1500);
    assert_int_equal(on.st, AIR_E_CANCELLED);
    /* Completed: the id is stale now. */
    assert_int_equal(air_cancel(r, id), AIR_E_NOTFOUND);
    assert_int_equal(air_cancel(r, 0), AIR_E_NOTFOUND);
    assert_int_equal(air_cancel(r, ((uint64_t)7 << 32) | 1u), AIR_E_NOTFOUND);
    air_free(r, 1000);
    assert_int_equal(on.calls, 1);
    air_mock_stop(m);
    pthread_cond_destroy(&on.cv);
    pthread_mutex_destroy(&on.mu);
}

/* ---------------------------------------------------- backpressure etc. */

struct counter {
    _Atomic int calls;
    _Atomic int ok;
    _Atomic int shutdown;
};

static void
count_done(const air_resp_t *resp, void *ud)
{
    struct counter *c = ud;
    atomic_fetch_add(&c->calls, 1);
    if (air_resp_status(resp) == AIR_OK)
        atomic_fetch_add(&c->ok, 1);
    if (air_resp_status(resp) == AIR_E_SHUTDOWN)
        atomic_fetch_add(&c->shutdown, 1);
}

static void
test_engine_full_ring_returns_busy(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.latency_ms = 300;
    air_mock_t *m = mock_start(&o);
    air_t *r = router_for(
        config_for(&m, 1, "\"workers\":1,\"queue_capacity\":4,\"max_inflight\":2", NULL));
    struct counter c = {0};
    int accepted = 0, busy = 0;
    for (int i = 0; i < 50; i++) {
        air_req_t *q = req_for(r, plain_body);
        assert_int_equal(air_req_set_done(q, count_done, &c), AIR_OK);
        air_status_t st = air_submit(r, q, NULL);
        if (st == AIR_OK)
            accepted++;
        else if (st == AIR_E_BUSY)
            busy++;
        else
            fail_msg("unexpected %s", air_strerror(st));
    }
    assert_true(busy > 0);
    assert_true(accepted >= 3);   /* ring (3) + in flight (2) at most */
    assert_true(accepted <= 2 + 3 + 2);
    for (int i = 0; i < 100 && atomic_load(&c.calls) < accepted; i++)
        usleep(50 * 1000);
    assert_int_equal(atomic_load(&c.calls), accepted);
    assert_int_equal(atomic_load(&c.ok), accepted);
    air_free(r, 1000);
    assert_int_equal(atomic_load(&c.calls), accepted);
    air_mock_stop(m);
}

static void
test_engine_shutdown_completes_inflight_requests(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.latency_ms = 5000;
    air_mock_t *m = mock_start(&o);
    air_t *r = router_for(config_for(&m, 1, NULL, NULL));
    struct counter c = {0};
    for (int i = 0; i < 20; i++) {
        air_req_t *q = req_for(r, plain_body);
        assert_int_equal(air_req_set_done(q, count_done, &c), AIR_OK);
        assert_int_equal(air_submit(r, q, NULL), AIR_OK);
    }
    usleep(100 * 1000);
    uint64_t t0 = now_ms();
    air_free(r, 200);
    uint64_t took = now_ms() - t0;
    assert_true(took >= 150);
    assert_true(took < 2000);
    assert_int_equal(atomic_load(&c.calls), 20);
    assert_int_equal(atomic_load(&c.shutdown), 20);
    air_mock_stop(m);
}

static void
test_engine_shutdown_drains_when_requests_finish_in_time(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.latency_ms = 100;
    air_mock_t *m = mock_start(&o);
    air_t *r = router_for(config_for(&m, 1, NULL, NULL));
    struct counter c = {0};
    for (int i = 0; i < 20; i++) {
        air_req_t *q = req_for(r, plain_body);
        assert_int_equal(air_req_set_done(q, count_done, &c), AIR_OK);
        assert_int_equal(air_submit(r, q, NULL), AIR_OK);
    }
    air_free(r, 3000);
    assert_int_equal(atomic_load(&c.calls), 20);
    assert_int_equal(atomic_load(&c.ok), 20);
    air_mock_stop(m);
}

static void
test_engine_null_submit_is_refused(void **state)
{
    (void)state;
    /* A NULL router or request is refused without a callback. */
    assert_int_equal(air_submit(NULL, NULL, NULL), AIR_E_INVAL);
}

static void
test_engine_provider_max_inflight_spills_to_next_target(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.latency_ms = 300;
    air_mock_t *a = mock_start(&o);
    air_mock_t *b = mock_start(&o);
    air_mock_t *ms[2] = {a, b};
    air_t *r = router_for(config_for(ms, 2, "\"workers\":1", "\"max_inflight\":1"));
    struct counter c = {0};
    for (int i = 0; i < 3; i++) {
        air_req_t *q = req_for(r, plain_body);
        assert_int_equal(air_req_set_done(q, count_done, &c), AIR_OK);
        assert_int_equal(air_submit(r, q, NULL), AIR_OK);
    }
    uint64_t t0 = now_ms();
    while (atomic_load(&c.calls) < 3 && now_ms() - t0 < 5000)
        usleep(10 * 1000);
    assert_int_equal(atomic_load(&c.ok), 3);
    /* p0 and p1 each take one at a time; the third waits for room. */
    air_mock_stats_t sa, sb;
    air_mock_stats(a, &sa);
    air_mock_stats(b, &sb);
    assert_int_equal(sa.requests + sb.requests, 3);
    assert_true(sa.requests >= 1 && sb.requests >= 1);
    assert_true(now_ms() - t0 >= 550); /* the third needed a second round */
    air_free(r, 1000);
    air_mock_stop(a);
    air_mock_stop(b);
}

/* Idle workers sleep in curl_multi_poll (up to 10 s) and must be woken by
 * every submit: submit from two threads with idle gaps in between, so that
 * submits keep landing just as workers go to sleep. A lost wake-up would
 * show up as a request that takes seconds. */
struct wake_ctx {
    air_t *r;
    int n;
    uint64_t worst_ms;
};

static void *
wake_submitter(void *arg)
{
    struct wake_ctx *c = arg;
    unsigned seed = 7u + (unsigned)c->n;
    for (int i = 0; i < c->n; i++) {
        usleep((useconds_t)(rand_r(&seed) % 2000));
        air_req_t *q = req_for(c->r, plain_body);
        uint64_t t0 = now_ms();
        air_resp_t *resp = NULL;
        assert_int_equal(air_call(c->r, q, &resp), AIR_OK);
        assert_int_equal(air_resp_status(resp), AIR_OK);
        uint64_t took = now_ms() - t0;
        if (took > c->worst_ms)
            c->worst_ms = took;
        air_resp_free(resp);
    }
    return NULL;
}

static void
test_engine_no_lost_wakeups(void **state)
{
    (void)state;
    air_mock_t *m = mock_plain();
    air_t *r = router_for(config_for(&m, 1, "\"workers\":2", NULL));
    struct wake_ctx a = {r, 150, 0}, b = {r, 151, 0};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, wake_submitter, &a);
    pthread_create(&tb, NULL, wake_submitter, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    print_message("no-lost-wakeups: worst %llu ms\n",
                  (unsigned long long)(a.worst_ms > b.worst_ms ? a.worst_ms : b.worst_ms));
    /* Far below the 10 s idle poll: nobody waited for a timeout. */
    assert_true(a.worst_ms < 2000);
    assert_true(b.worst_ms < 2000);
    air_free(r, 1000);
    air_mock_stop(m);
}

/* Idle workers sleep in curl_multi_poll: with nothing to do, the whole
 * process (router workers and the mock's event loop) uses next to no CPU.
 * A worker that spins would burn the full 300 ms of a core. */
static uint64_t
cpu_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void
test_engine_idle_router_does_not_spin(void **state)
{
    (void)state;
    air_mock_t *m = mock_plain();
    air_t *r = router_for(config_for(&m, 1, "\"workers\":2", NULL));
    /* Some traffic first, so connections and timers exist, then quiet. */
    for (int i = 0; i < 4; i++) {
        air_resp_t *resp = call(r, req_for(r, i % 2 ? stream_body : plain_body));
        assert_int_equal(air_resp_status(resp), AIR_OK);
        air_resp_free(resp);
    }
    usleep(100 * 1000); /* let the stats merge and the workers settle */
    uint64_t c0 = cpu_us(), t0 = now_ms();
    usleep(300 * 1000);
    uint64_t used = cpu_us() - c0, wall = now_ms() - t0;
    print_message("idle: %llu us of CPU in %llu ms\n", (unsigned long long)used,
                  (unsigned long long)wall);
    assert_true(used < 30000);
    /* Still awake for new work. */
    air_resp_t *resp = call(r, req_for(r, plain_body));
    assert_int_equal(air_resp_status(resp), AIR_OK);
    air_resp_free(resp);
    air_free(r, 1000);
    air_mock_stop(m);
}

/* Once air_free has begun, air_submit refuses with AIR_E_SHUTDOWN and the
 * refused request is never delivered. From a done callback running while
 * air_free drains: */
struct late {
    air_t *r;
    _Atomic int freeing; /* set just before air_free */
    _Atomic int calls;   /* done callbacks of the original requests */
    _Atomic int tried;   /* submits made from a callback during air_free */
    _Atomic int refused; /* ... that returned AIR_E_SHUTDOWN */
    _Atomic int late;    /* callbacks of requests submitted late: must stay 0 */
};

static void
late_done(const air_resp_t *resp, void *ud)
{
    (void)resp;
    struct late *l = ud;
    atomic_fetch_add(&l->late, 1);
}

static void
resubmit_done(const air_resp_t *resp, void *ud)
{
    (void)resp;
    struct late *l = ud;
    atomic_fetch_add(&l->calls, 1);
    if (!atomic_load(&l->freeing))
        return;
    air_req_t *q = NULL;
    if (air_req_new(l->r, plain_body, strlen(plain_body), &q, NULL, 0) != AIR_OK ||
        air_req_set_done(q, late_done, l) != AIR_OK) {
        air_req_free(q);
        return;
    }
    atomic_fetch_add(&l->tried, 1);
    air_status_t st = air_submit(l->r, q, NULL);
    if (st == AIR_E_SHUTDOWN)
        atomic_fetch_add(&l->refused, 1);
}

static void
test_engine_submit_from_callback_during_free_is_refused(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.latency_ms = 300;
    air_mock_t *m = mock_start(&o);
    air_t *r = router_for(config_for(&m, 1, "\"workers\":2", NULL));
    struct late l = {.r = r};
    for (int i = 0; i < 4; i++) {
        air_req_t *q = req_for(r, plain_body);
        assert_int_equal(air_req_set_done(q, resubmit_done, &l), AIR_OK);
        assert_int_equal(air_submit(r, q, NULL), AIR_OK);
    }
    atomic_store(&l.freeing, 1);
    air_free(r, 5000); /* the four finish during the drain */
    assert_int_equal(atomic_load(&l.calls), 4);
    /* All four, unless this thread was descheduled for the mock's 300 ms
     * before setting `freeing` (a callback that came first does not try). */
    assert_true(atomic_load(&l.tried) >= 1);
    assert_int_equal(atomic_load(&l.refused), atomic_load(&l.tried));
    assert_int_equal(atomic_load(&l.late), 0);
    air_mock_stop(m);
}

/* ... and from another thread that keeps submitting while air_free begins.
 * To keep that thread's calls inside air_free's lifetime (the header's
 * rule), a gate request's done callback holds its worker, and so air_free,
 * until the submitter has seen AIR_E_SHUTDOWN and stopped. Every request
 * the submitter got accepted completes once; none of the refused ones does. */
struct race {
    air_t *r;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int submitter_done;
    int gate_calls;
    int gate_timed_out;
    _Atomic int accepted;
    _Atomic int completed;
    _Atomic int refused;    /* AIR_E_SHUTDOWN returns */
    _Atomic int unexpected; /* any other error than BUSY or SHUTDOWN */
};

static void
race_done(const air_resp_t *resp, void *ud)
{
    (void)resp;
    struct race *x = ud;
    atomic_fetch_add(&x->completed, 1);
}

static void
gate_done(const air_resp_t *resp, void *ud)
{
    (void)resp;
    struct race *x = ud;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 20;
    pthread_mutex_lock(&x->mu);
    x->gate_calls++;
    while (!x->submitter_done)
        if (pthread_cond_timedwait(&x->cv, &x->mu, &until) != 0) {
            x->gate_timed_out = 1;
            break;
        }
    pthread_mutex_unlock(&x->mu);
}

static void *
race_submitter(void *arg)
{
    struct race *x = arg;
    int refusals = 0;
    uint64_t t0 = now_ms();
    while (refusals < 3 && now_ms() - t0 < 15000) {
        air_req_t *q = NULL;
        if (air_req_new(x->r, plain_body, strlen(plain_body), &q, NULL, 0) != AIR_OK ||
            air_req_set_done(q, race_done, x) != AIR_OK) {
            air_req_free(q);
            atomic_fetch_add(&x->unexpected, 1);
            break;
        }
        air_status_t st = air_submit(x->r, q, NULL);
        if (st == AIR_OK) {
            atomic_fetch_add(&x->accepted, 1);
        } else if (st == AIR_E_SHUTDOWN) {
            atomic_fetch_add(&x->refused, 1);
            refusals++; /* and again: a refusal is not a one-off */
            continue;
        } else if (st != AIR_E_BUSY) {
            atomic_fetch_add(&x->unexpected, 1);
        }
        if (refusals > 0)
            atomic_fetch_add(&x->unexpected, 1); /* accepted or busy after a refusal */
        usleep(1000);
    }
    pthread_mutex_lock(&x->mu);
    x->submitter_done = 1;
    pthread_cond_broadcast(&x->cv);
    pthread_mutex_unlock(&x->mu);
    return NULL;
}

static void
test_engine_submit_from_other_thread_during_free_is_refused(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.latency_ms = 50;
    air_mock_t *m = mock_start(&o);
    air_t *r = router_for(config_for(&m, 1, "\"workers\":2", NULL));
    struct race x = {.r = r};
    pthread_mutex_init(&x.mu, NULL);
    pthread_cond_init(&x.cv, NULL);
    air_req_t *gate = req_for(r, plain_body);
    assert_int_equal(air_req_set_done(gate, gate_done, &x), AIR_OK);
    assert_int_equal(air_submit(r, gate, NULL), AIR_OK);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, race_submitter, &x), 0);
    /* Let the submitter get some requests in first. */
    uint64_t t0 = now_ms();
    while (atomic_load(&x.accepted) < 5 && now_ms() - t0 < 5000)
        usleep(1000);
    air_free(r, 5000);
    /* air_free could not return before the submitter had stopped. */
    pthread_mutex_lock(&x.mu);
    int done = x.submitter_done;
    pthread_mutex_unlock(&x.mu);
    assert_true(done);
    pthread_join(t, NULL);
    print_message("submit-during-free: %d accepted, %d refused\n", atomic_load(&x.accepted),
                  atomic_load(&x.refused));
    assert_int_equal(x.gate_calls, 1);
    assert_false(x.gate_timed_out);
    assert_int_equal(atomic_load(&x.unexpected), 0);
    assert_int_equal(atomic_load(&x.refused), 3);
    assert_true(atomic_load(&x.accepted) > 0);
    assert_int_equal(atomic_load(&x.completed), atomic_load(&x.accepted));
    air_mock_stop(m);
    pthread_cond_destroy(&x.cv);
    pthread_mutex_destroy(&x.mu);
}

/* -------------------------------------------------------- completion q */

struct cq_seen {
    int n;
    int ok;
    int tagged;
};

static struct cq_seen cq_global;

static void
cq_count(const air_resp_t *resp, void *ud)
{
    cq_global.n++;
    if (air_resp_status(resp) == AIR_OK)
        cq_global.ok++;
    if (ud == &cq_global)
        cq_global.tagged++;
}

static void
test_engine_completion_queue_delivers_on_host_thread(void **state)
{
    (void)state;
    air_mock_t *m = mock_plain();
    air_t *r = router_for(config_for(&m, 1, NULL, NULL));
    memset(&cq_global, 0, sizeof cq_global);
    const int N = 50;
    for (int i = 0; i < N; i++) {
        air_req_t *q = req_for(r, plain_body);
        /* No done callback: ud rides along to the poll. */
        assert_int_equal(air_req_set_done(q, NULL, &cq_global), AIR_OK);
        assert_int_equal(air_submit(r, q, NULL), AIR_OK);
    }
    int fd = air_completions_fd(r);
    assert_true(fd >= 0);
    uint64_t t0 = now_ms();
    while (cq_global.n < N && now_ms() - t0 < 10000) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int rc = poll(&p, 1, 1000);
        if (rc > 0)
            air_completions_poll(r, cq_count, 7); /* small batches */
    }
    assert_int_equal(cq_global.n, N);
    assert_int_equal(cq_global.ok, N);
    assert_int_equal(cq_global.tagged, N);
    /* Nothing left: the fd is not readable. */
    struct pollfd p = {.fd = fd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 0), 0);
    air_free(r, 1000);
    air_mock_stop(m);
}

/* ----------------------------------------------------- errors and input */

static void
test_engine_unknown_model_lists_served_models(void **state)
{
    (void)state;
    air_mock_t *m = mock_plain();
    air_t *r = router_for(config_for(&m, 1, NULL, NULL));
    const char *b = "{\"model\":\"nope\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}";
    air_resp_t *resp = call(r, req_for(r, b));
    assert_int_equal(air_resp_status(resp), AIR_E_NOTFOUND);
    assert_int_equal(air_resp_error_class(resp), AIR_ERR_NOT_FOUND);
    assert_int_equal(air_resp_http_status(resp), 404);
    assert_non_null(strstr(air_resp_error_message(resp), "'nope'"));
    assert_non_null(strstr(air_resp_error_message(resp), " m"));
    assert_int_equal(air_resp_attempts(resp), 0);
    assert_null(air_resp_provider(resp));
    air_resp_free(resp);
    air_free(r, 1000);
    air_mock_stop(m);
}

static void
test_engine_pinned_provider_is_used(void **state)
{
    (void)state;
    air_mock_t *a = mock_plain();
    air_mock_t *b = mock_plain();
    air_mock_t *ms[2] = {a, b};
    air_t *r = router_for(config_for(ms, 2, NULL, NULL));
    air_req_t *q = req_for(r, plain_body);
    assert_int_equal(air_req_set_provider(q, "p1"), AIR_OK);
    air_resp_t *resp = call(r, q);
    assert_int_equal(air_resp_status(resp), AIR_OK);
    assert_string_equal(air_resp_provider(resp), "p1");
    air_resp_free(resp);
    q = req_for(r, plain_body);
    assert_int_equal(air_req_set_provider(q, "zz"), AIR_OK);
    resp = call(r, q);
    assert_int_equal(air_resp_error_class(resp), AIR_ERR_NOT_FOUND);
    assert_non_null(strstr(air_resp_error_message(resp), "'zz'"));
    air_resp_free(resp);
    air_free(r, 1000);
    air_mock_stop(a);
    air_mock_stop(b);
}

static void
test_engine_bad_request_bodies_name_the_problem(void **state)
{
    (void)state;
    air_mock_t *m = mock_plain();
    air_t *r = router_for(config_for(&m, 1, NULL, NULL));
    struct {
        const char *body;
        const char *want;
    } cases[] = {
        {"{\"model\":\"m\",\n \"messages\": [}", "line 2, column"},
        {"[1,2]", "JSON object"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", "model: required"},
        {"{\"model\":5,\"messages\":[]}", "model: expected"},
        {"{\"model\":\"m\",\"messages\":{}}", "messages: expected a non-empty array"},
        {"{\"model\":\"m\",\"messages\":[{\"content\":\"x\"}]}", "messages[0].role"},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
         "\"stream\":\"yes\"}",
         "stream:"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        air_req_t *q = NULL;
        char err[256] = "";
        air_status_t st = air_req_new(r, cases[i].body, strlen(cases[i].body), &q, err,
                                      sizeof err);
        assert_int_equal(st, AIR_E_BADREQ);
        assert_null(q);
        if (strstr(err, cases[i].want) == NULL)
            fail_msg("case %zu: '%s' does not contain '%s'", i, err, cases[i].want);
    }
    air_free(r, 1000);
    air_mock_stop(m);
}

static void
test_engine_bad_config_names_the_path(void **state)
{
    (void)state;
    air_t *r = NULL;
    char err[256] = "";
    air_status_t st = air_new("{\"workers\":\"two\",\"providers\":[]}", &r, err, sizeof err);
    assert_int_equal(st, AIR_E_CONFIG);
    assert_null(r);
    assert_non_null(strstr(err, "workers"));
    st = air_new_file("/nonexistent/airouter.json", &r, err, sizeof err);
    assert_int_equal(st, AIR_E_CONFIG);
    assert_non_null(strstr(err, "/nonexistent/airouter.json"));
    assert_string_equal(air_strerror(AIR_E_BUSY), "queue full");
    assert_string_equal(air_status_name(AIR_E_BUSY), "AIR_E_BUSY");
    assert_string_equal(air_errclass_name(AIR_ERR_RATE_LIMITED), "rate_limited");
    assert_string_equal(air_strerror((air_status_t)999), "unknown status");
}

/* -------------------------------------------------------- mixed faults */

#define SOAK_N 10000

struct soak {
    _Atomic uint8_t seen[SOAK_N];
    _Atomic int calls;
    _Atomic int ok;
    _Atomic int failed;
    _Atomic int dup;
};

struct soak_ud {
    struct soak *s;
    int idx;
};

static void
soak_done(const air_resp_t *resp, void *ud)
{
    struct soak_ud *u = ud;
    struct soak *s = u->s;
    if (atomic_fetch_add(&s->seen[u->idx], 1) != 0)
        atomic_fetch_add(&s->dup, 1);
    if (air_resp_status(resp) == AIR_OK)
        atomic_fetch_add(&s->ok, 1);
    else
        atomic_fetch_add(&s->failed, 1);
    atomic_fetch_add(&s->calls, 1);
}

static void
test_engine_mixed_faults_every_request_completes_once(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_t *ms[3];
    air_mock_opts_init(&o);
    o.fail_rate = 0.2;
    o.fail_status = 503;
    o.seed = 11;
    ms[0] = mock_start(&o);
    air_mock_opts_init(&o);
    o.reset_rate = 0.1;
    o.seed = 12;
    ms[1] = mock_start(&o);
    air_mock_opts_init(&o);
    o.jitter_ms = 3;
    o.fail_rate = 0.05;
    o.fail_status = 500;
    o.seed = 13;
    ms[2] = mock_start(&o);
    air_t *r = router_for(config_for(ms, 3, "\"workers\":2,\"queue_capacity\":1024,"
                                           "\"retry\":{\"backoff_base_ms\":1,"
                                           "\"backoff_cap_ms\":5}",
                                     NULL));
    struct soak *s = calloc(1, sizeof *s);
    struct soak_ud *uds = calloc(SOAK_N, sizeof *uds);
    assert_non_null(s);
    assert_non_null(uds);
    int submitted = 0, busy = 0;
    uint64_t t0 = now_ms();
    for (int i = 0; i < SOAK_N && now_ms() - t0 < 120000; i++) {
        uds[i].s = s;
        uds[i].idx = i;
        for (;;) {
            air_req_t *q = req_for(r, (i % 4 == 0) ? stream_body : plain_body);
            assert_int_equal(air_req_set_done(q, soak_done, &uds[i]), AIR_OK);
            air_status_t st = air_submit(r, q, NULL);
            if (st == AIR_OK)
                break;
            assert_int_equal(st, AIR_E_BUSY);
            busy++;
            usleep(1000);
        }
        submitted++;
    }
    assert_int_equal(submitted, SOAK_N);
    while (atomic_load(&s->calls) < SOAK_N && now_ms() - t0 < 180000)
        usleep(10 * 1000);
    air_free(r, 5000);
    assert_int_equal(atomic_load(&s->calls), SOAK_N);
    assert_int_equal(atomic_load(&s->dup), 0);
    assert_int_equal(atomic_load(&s->ok) + atomic_load(&s->failed), SOAK_N);
    for (int i = 0; i < SOAK_N; i++)
        assert_int_equal(atomic_load(&s->seen[i]), 1);
    /* Faults were injected and most requests still succeeded via failover. */
    air_mock_stats_t st0, st1;
    air_mock_stats(ms[0], &st0);
    air_mock_stats(ms[1], &st1);
    assert_true(st0.failed > 0);
    assert_true(st1.resets > 0);
    assert_true(atomic_load(&s->ok) > SOAK_N * 9 / 10);
    print_message("soak: ok=%d failed=%d busy-retries=%d in %llu ms\n", atomic_load(&s->ok),
                  atomic_load(&s->failed), busy, (unsigned long long)(now_ms() - t0));
    free(uds);
    free(s);
    for (int i = 0; i < 3; i++)
        air_mock_stop(ms[i]);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_engine_plain_request_returns_unified_body),
        cmocka_unit_test(test_engine_api_key_from_env_is_sent),
        cmocka_unit_test(test_engine_stream_chunks_arrive_in_order),
        cmocka_unit_test(test_engine_stream_reset_midway_is_an_error),
        cmocka_unit_test(test_engine_stream_fails_over_before_content),
        cmocka_unit_test(test_engine_stream_break_after_role_chunk_fails_over_with_one_role),
        cmocka_unit_test(test_engine_failover_to_healthy_provider),
        cmocka_unit_test(test_engine_connect_failure_fails_over),
        cmocka_unit_test(test_engine_invalid_request_is_not_retried),
        cmocka_unit_test(test_engine_route_retry_classes_limit_failover),
        cmocka_unit_test(test_engine_auth_error_fails_over_and_keeps_key_secret),
        cmocka_unit_test(test_engine_retry_after_is_honoured),
        cmocka_unit_test(test_engine_retry_after_beyond_deadline_fails_now),
        cmocka_unit_test(test_engine_deadline_expires),
        cmocka_unit_test(test_engine_first_byte_timeout_fails_over),
        cmocka_unit_test(test_engine_stream_idle_timeout_is_an_error),
        cmocka_unit_test(test_engine_connect_timeout_bounds_each_attempt),
        cmocka_unit_test(test_engine_provider_timeout_bounds_the_whole_attempt),
        cmocka_unit_test(test_engine_cancel_completes_once_with_cancelled),
        cmocka_unit_test(test_engine_full_ring_returns_busy),
        cmocka_unit_test(test_engine_shutdown_completes_inflight_requests),
        cmocka_unit_test(test_engine_shutdown_drains_when_requests_finish_in_time),
        cmocka_unit_test(test_engine_null_submit_is_refused),
        cmocka_unit_test(test_engine_provider_max_inflight_spills_to_next_target),
        cmocka_unit_test(test_engine_no_lost_wakeups),
        cmocka_unit_test(test_engine_idle_router_does_not_spin),
        cmocka_unit_test(test_engine_submit_from_callback_during_free_is_refused),
        cmocka_unit_test(test_engine_submit_from_other_thread_during_free_is_refused),
        cmocka_unit_test(test_engine_completion_queue_delivers_on_host_thread),
        cmocka_unit_test(test_engine_unknown_model_lists_served_models),
        cmocka_unit_test(test_engine_pinned_provider_is_used),
        cmocka_unit_test(test_engine_bad_request_bodies_name_the_problem),
        cmocka_unit_test(test_engine_bad_config_names_the_path),
        cmocka_unit_test(test_engine_mixed_faults_every_request_completes_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
