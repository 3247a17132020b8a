/*
 * test_tags.c - request tags (air_req_add_tag): they come back, in order,
 * on every kind of completion (success, error, completion queue), and they
 * never reach the upstream: neither the body nor any header the mock
 * provider received carries them; air_stats_json sums requests, failures,
 * tokens and cost per tag.
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

static const char *plain_body = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
                                "\"content\":\"hello there\"}]}";

static air_mock_t *
mock_start(const air_mock_opts_t *o)
{
    air_mock_t *m = NULL;
    char err[256];
    if (air_mock_start(o, &m, err, sizeof err) != 0)
        fail_msg("mock: %s", err);
    return m;
}

static air_t *
router_on(air_mock_t *m)
{
    char cfg[1024];
    snprintf(cfg, sizeof cfg,
             "{\"workers\":1,\"providers\":[{\"name\":\"p0\",\"kind\":\"openai\","
             "\"base_url\":\"http://127.0.0.1:%u/v1\"}],\"routes\":[{\"model\":\"m\","
             "\"targets\":[{\"provider\":\"p0\",\"model\":\"up-0\"}]}]}",
             (unsigned)air_mock_port(m));
    air_t *r = NULL;
    char err[512];
    if (air_new(cfg, &r, err, sizeof err) != AIR_OK)
        fail_msg("air_new: %s", err);
    return r;
}

static air_req_t *
req_for(air_t *r, const char *body)
{
    air_req_t *q = NULL;
    char err[256];
    if (air_req_new(r, body, strlen(body), &q, err, sizeof err) != AIR_OK)
        fail_msg("air_req_new: %s", err);
    return q;
}

static void
add_tags(air_req_t *q, const char *const *tags, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        assert_int_equal(air_req_add_tag(q, tags[i]), AIR_OK);
}

static void
assert_tags(const air_resp_t *resp, const char *const *tags, uint32_t n)
{
    assert_int_equal(air_resp_tag_count(resp), n);
    for (uint32_t i = 0; i < n; i++)
        assert_string_equal(air_resp_tag(resp, i), tags[i]);
    assert_null(air_resp_tag(resp, n));
    assert_null(air_resp_tag(resp, UINT32_MAX));
}

static void
test_tags_come_back_on_the_response_in_order(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    air_mock_t *m = mock_start(&o);
    air_t *r = router_on(m);
    static const char *const tags[] = {"team=search", "trace=abc123", "team=search", ""};
    air_req_t *q = req_for(r, plain_body);
    add_tags(q, tags, 4);
    air_resp_t *resp = NULL;
    assert_int_equal(air_call(r, q, &resp), AIR_OK);
    assert_int_equal(air_resp_status(resp), AIR_OK);
    assert_tags(resp, tags, 4);
    /* A kept reference sees the same tags after the first one is dropped. */
    air_resp_t *keep = air_resp_dup(resp);
    air_resp_free(resp);
    assert_tags(keep, tags, 4);
    air_resp_free(keep);

    /* No tags: zero, and out-of-range reads are NULL. */
    assert_int_equal(air_call(r, req_for(r, plain_body), &resp), AIR_OK);
    assert_int_equal(air_resp_tag_count(resp), 0);
    assert_null(air_resp_tag(resp, 0));
    air_resp_free(resp);
    assert_int_equal(air_resp_tag_count(NULL), 0);
    assert_null(air_resp_tag(NULL, 0));
    air_free(r, 1000);
    air_mock_stop(m);
}

static void
test_tags_limit_and_null_are_refused(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    air_mock_t *m = mock_start(&o);
    air_t *r = router_on(m);
    air_req_t *q = req_for(r, plain_body);
    char tag[32];
    for (int i = 0; i < 16; i++) {
        snprintf(tag, sizeof tag, "t%d", i);
        assert_int_equal(air_req_add_tag(q, tag), AIR_OK);
    }
    assert_int_equal(air_req_add_tag(q, "one-too-many"), AIR_E_RANGE);
    assert_int_equal(air_req_add_tag(q, NULL), AIR_E_INVAL);
    assert_int_equal(air_req_add_tag(NULL, "x"), AIR_E_INVAL);
    air_resp_t *resp = NULL;
    assert_int_equal(air_call(r, q, &resp), AIR_OK);
    assert_int_equal(air_resp_tag_count(resp), 16);
    assert_string_equal(air_resp_tag(resp, 0), "t0");
    assert_string_equal(air_resp_tag(resp, 15), "t15");
    air_resp_free(resp);
    air_free(r, 1000);
    air_mock_stop(m);
}

/* Tags are the host's: the upstream sees neither them in the body nor in
 * any header. The mock records every request it gets, headers included. */
static void
test_tags_never_go_upstream(void **state)
{
    (void)state;
    char path[] = "/tmp/air-test-tags-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.record_path = path;
    air_mock_t *m = mock_start(&o);
    air_t *r = router_on(m);
    static const char *const tags[] = {"zqxmarker-tag-one", "team=zqxmarker-two"};
    for (int stream = 0; stream < 2; stream++) {
        const char *body = stream ? "{\"model\":\"m\",\"stream\":true,\"messages\":"
                                    "[{\"role\":\"user\",\"content\":\"hi\"}]}"
                                  : plain_body;
        air_req_t *q = req_for(r, body);
        add_tags(q, tags, 2);
        air_resp_t *resp = NULL;
        assert_int_equal(air_call(r, q, &resp), AIR_OK);
        assert_int_equal(air_resp_status(resp), AIR_OK);
        assert_tags(resp, tags, 2);
        air_resp_free(resp);
        char sent[8192];
        air_mock_last_request(m, sent, sizeof sent, NULL, 0);
        assert_non_null(strstr(sent, "\"up-0\"")); /* it is the request we sent */
        assert_null(strstr(sent, "zqxmarker"));
    }
    air_free(r, 1000);
    air_mock_stop(m);

    /* Everything the mock received: method, path, query, headers, body. */
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char all[65536];
    size_t n = fread(all, 1, sizeof all - 1, f);
    fclose(f);
    unlink(path);
    all[n] = '\0';
    assert_true(n > 0);
    assert_non_null(strstr(all, "\"headers\""));
    assert_non_null(strstr(all, "up-0"));
    assert_null(strstr(all, "zqxmarker"));
}

static void
cq_tag_check(const air_resp_t *resp, void *ud)
{
    int *seen = ud;
    if (air_resp_tag_count(resp) == 1 && strcmp(air_resp_tag(resp, 0), "via=queue") == 0)
        (*seen)++;
}

/* Error completions (no route) and the completion queue carry tags too. */
static void
test_tags_ride_on_errors_and_the_completion_queue(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    air_mock_t *m = mock_start(&o);
    air_t *r = router_on(m);
    static const char *const tags[] = {"kind=error"};
    air_req_t *q = req_for(r, "{\"model\":\"nope\",\"messages\":[{\"role\":\"user\","
                              "\"content\":\"x\"}]}");
    add_tags(q, tags, 1);
    air_resp_t *resp = NULL;
    assert_int_equal(air_call(r, q, &resp), AIR_OK);
    assert_int_equal(air_resp_error_class(resp), AIR_ERR_NOT_FOUND);
    assert_tags(resp, tags, 1);
    air_resp_free(resp);

    int seen = 0;
    q = req_for(r, plain_body);
    assert_int_equal(air_req_add_tag(q, "via=queue"), AIR_OK);
    assert_int_equal(air_req_set_done(q, NULL, &seen), AIR_OK);
    assert_int_equal(air_submit(r, q, NULL), AIR_OK);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        struct pollfd p = {.fd = air_completions_fd(r), .events = POLLIN};
        if (poll(&p, 1, 100) > 0 && air_completions_poll(r, cq_tag_check, 8) > 0)
            break;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (t1.tv_sec - t0.tv_sec > 10)
            fail_msg("no completion within 10 s");
    }
    assert_int_equal(seen, 1);
    air_free(r, 1000);
    air_mock_stop(m);
}

/* Per-tag totals in air_stats_json: requests, failures, tokens and cost
 * summed per tag across workers; a tag repeated on one request counts it
 * once; tags past the table or too long land in "_other". */
static void
test_tags_totals_in_stats(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    air_mock_t *ok = mock_start(&o);
    o.fail_rate = 1.0;
    o.fail_status = 400;
    air_mock_t *bad = mock_start(&o);
    char cfg[2048];
    snprintf(cfg, sizeof cfg,
             "{\"workers\":2,\"providers\":[{\"name\":\"p0\",\"kind\":\"openai\","
             "\"base_url\":\"http://127.0.0.1:%u/v1\",\"models\":[{\"name\":\"up-0\","
             "\"input_price_per_mtok\":1000000,\"output_price_per_mtok\":1000000}]},"
             "{\"name\":\"p1\",\"kind\":\"openai\",\"base_url\":\"http://127.0.0.1:%u/v1\"}],"
             "\"routes\":[{\"model\":\"m\",\"targets\":[{\"provider\":\"p0\",\"model\":\"up-0\"}]},"
             "{\"model\":\"f\",\"targets\":[{\"provider\":\"p1\",\"model\":\"up-1\"}]}]}",
             (unsigned)air_mock_port(ok), (unsigned)air_mock_port(bad));
    air_t *r = NULL;
    char err[512];
    if (air_new(cfg, &r, err, sizeof err) != AIR_OK)
        fail_msg("air_new: %s", err);
    static const char *const ab[] = {"team=a", "team=b", "team=a"};
    for (int i = 0; i < 3; i++) {
        air_req_t *q = req_for(r, plain_body);
        add_tags(q, ab, i == 0 ? 3 : 1);
        air_resp_t *resp = NULL;
        assert_int_equal(air_call(r, q, &resp), AIR_OK);
        assert_int_equal(air_resp_status(resp), AIR_OK);
        air_resp_free(resp);
    }
    const char *fail_body =
        "{\"model\":\"f\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}";
    air_req_t *q = req_for(r, fail_body);
    add_tags(q, ab + 1, 1);
    air_resp_t *resp = NULL;
    assert_int_equal(air_call(r, q, &resp), AIR_OK);
    assert_int_not_equal(air_resp_status(resp), AIR_OK);
    air_resp_free(resp);
    /* 70 distinct tags and one too long for the table's names. */
    q = req_for(r, plain_body);
    char long_tag[100];
    memset(long_tag, 'x', sizeof long_tag - 1);
    long_tag[sizeof long_tag - 1] = '\0';
    assert_int_equal(air_req_add_tag(q, long_tag), AIR_OK);
    assert_int_equal(air_call(r, q, &resp), AIR_OK);
    air_resp_free(resp);
    for (int i = 0; i < 70; i++) {
        char t[16];
        snprintf(t, sizeof t, "n%d", i);
        q = req_for(r, plain_body);
        assert_int_equal(air_req_add_tag(q, t), AIR_OK);
        assert_int_equal(air_call(r, q, &resp), AIR_OK);
        air_resp_free(resp);
    }

    char *js = air_stats_json(r);
    assert_non_null(js);
    cJSON *root = cJSON_Parse(js);
    free(js);
    assert_non_null(root);
    const cJSON *tags = cJSON_GetObjectItemCaseSensitive(root, "tags");
    assert_true(cJSON_IsObject(tags));
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(tags, "team=a");
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(tags, "team=b");
    assert_non_null(a);
    assert_non_null(b);
    /* team=a: three requests (the first carries it twice: counted once). */
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(a, "requests")->valueint, 3);
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(a, "failed")->valueint, 0);
    /* The mock answers with 8 completion tokens. */
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(a, "completion_tokens")->valueint, 24);
    double pt = cJSON_GetObjectItemCaseSensitive(a, "prompt_tokens")->valuedouble;
    assert_true(pt > 0);
    /* $1 per token in and out at these prices. */
    double cost = cJSON_GetObjectItemCaseSensitive(a, "cost_usd")->valuedouble;
    assert_true(cost > pt + 24 - 0.001 && cost < pt + 24 + 0.001);
    /* team=b: the first request, and the one that failed. */
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(b, "requests")->valueint, 2);
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(b, "failed")->valueint, 1);
    /* The 70 n-tags and the long one: each request counted exactly once,
     * the long tag under "_other". */
    const cJSON *other = cJSON_GetObjectItemCaseSensitive(tags, "_other");
    assert_non_null(other);
    assert_true(cJSON_GetObjectItemCaseSensitive(other, "requests")->valueint >= 1);
    int total = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, tags)
    {
        assert_true(strlen(t->string) < 64);
        if (t->string[0] == 'n' || strcmp(t->string, "_other") == 0)
            total += cJSON_GetObjectItemCaseSensitive(t, "requests")->valueint;
    }
    assert_int_equal(total, 71);
    cJSON_Delete(root);
    air_free(r, 1000);
    air_mock_stop(ok);
    air_mock_stop(bad);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tags_come_back_on_the_response_in_order),
        cmocka_unit_test(test_tags_limit_and_null_are_refused),
        cmocka_unit_test(test_tags_never_go_upstream),
        cmocka_unit_test(test_tags_ride_on_errors_and_the_completion_queue),
        cmocka_unit_test(test_tags_totals_in_stats),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
