/*
 * test_state_metrics.c - the engine's "state" stats object (where rate
 * limits and budgets keep their counts, docs/SCALING.md) on /metrics: the
 * backend as an info metric, health, round-trip time, time since the last
 * sync and the counters as airouter_state_*, and one airouter_lease_*
 * sample per lease; valid Prometheus text, for the local backend (scraped
 * from a real gateway) and for a Redis backend that cannot reach Redis (the
 * engine's stats mapped by air__gw_prom_engine_stats).
 */
#include "gwtest.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include "buf.h"
#include "gwint.h"

static int
closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static void
test_state_metrics_local_backend_on_metrics(void **state)
{
    (void)state;
    air_mock_t *m = gwt_mock_plain();
    air_mock_t *mocks[1] = {m};
    char *cfg = gwt_config(mocks, 1, NULL);
    struct air__gw *gw = gwt_gateway(cfg);
    char url[128];
    struct http_resp r =
        http_req("GET", gwt_url(url, sizeof url, air__gw_port(gw), "/metrics"), NULL, NULL);
    assert_int_equal(r.status, 200);
    const char *why = prom_validate(r.body);
    if (why != NULL)
        fail_msg("invalid metrics: %s", why);
    assert_non_null(strstr(r.body, "airouter_state_backend_info{backend=\"local\"} 1\n"));
    assert_non_null(strstr(r.body, "airouter_state_healthy 1\n"));
    http_resp_free(&r);
    air__gw_stop(gw, 1000);
    free(cfg);
    air_mock_stop(m);
}

static void
test_state_metrics_redis_backend_leases(void **state)
{
    (void)state;
    char cfg[1024], err[512];
    snprintf(cfg, sizeof cfg,
             "{\"providers\":[{\"name\":\"p\",\"kind\":\"openai\",\"base_url\":"
             "\"http://127.0.0.1:1/v1\",\"models\":[{\"name\":\"m\",\"rpm\":600}]}],"
             "\"clients\":[{\"name\":\"alice\",\"rpm\":120,\"budget_usd\":5}],"
             "\"state\":{\"backend\":\"redis\",\"url\":\"redis://127.0.0.1:%d\","
             "\"timeout_ms\":100,\"lease\":{\"max_fraction\":0.1}}}",
             closed_port());
    air_t *rt = NULL;
    assert_int_equal(air_new(cfg, &rt, err, sizeof err), AIR_OK);
    char *stats = air_stats_json(rt);
    assert_non_null(stats);
    air_buf_t b = AIR_BUF_INIT;
    air__gw_prom_engine_stats(&b, stats);
    assert_non_null(b.data);
    const char *why = prom_validate(b.data);
    if (why != NULL)
        fail_msg("invalid metrics: %s\n%s", why, b.data);
    assert_non_null(strstr(b.data, "airouter_state_backend_info{backend=\"redis\"} 1\n"));
    assert_non_null(strstr(b.data, "airouter_state_healthy 0\n"));
    assert_non_null(strstr(b.data, "airouter_state_since_sync_ms "));
    assert_non_null(strstr(b.data, "airouter_state_last_rtt_us "));
    assert_non_null(strstr(b.data, "# TYPE airouter_state_sync_errors_total counter\n"));
    assert_true(prom_sum(b.data, "airouter_state_transitions_total", NULL, NULL) >= 1);
    /* One sample per lease, named by its key; slices are 10 % of a limit. */
    assert_true(prom_sum(b.data, "airouter_lease_limit{", "lease=\"client:alice:rpm\"", NULL) ==
                120);
    assert_true(prom_sum(b.data, "airouter_lease_slice{", "lease=\"client:alice:rpm\"", NULL) > 0);
    assert_true(prom_sum(b.data, "airouter_lease_slice{", "lease=\"client:alice\"", NULL) <= 0.5);
    assert_non_null(strstr(b.data, "airouter_lease_available{lease=\"deployment:p/m:rpm\"}"));
    assert_non_null(strstr(b.data, "airouter_lease_store_level{lease=\"client:alice\"}"));
    air__buf_free(&b);
    free(stats);
    air_free(rt, 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_metrics_local_backend_on_metrics),
        cmocka_unit_test(test_state_metrics_redis_backend_leases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
