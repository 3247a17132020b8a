/*
 * test_state_metrics.c - the engine's "state" stats object (where rate
 * limits and budgets keep their counts, docs/SCALING.md) on /metrics: the
 * backend as an info metric, health, round-trip time, time since the last
 * sync and the counters as airouter_state_*, and one airouter_lease_*
 * sample per lease; valid Prometheus text, for the local backend (scraped
 * from a real gateway), for a Redis backend that cannot reach Redis (the
 * engine's stats mapped by air__gw_prom_engine_stats), and for a gateway
 * whose Redis works (a redis-server this test starts on a free port):
 * /metrics and /admin/stats say healthy, with a measured round trip and a
 * recent sync. Without redis-server that test is skipped, unless the
 * environment variable CI is set (CI=true): then it fails.
 */
#include "gwtest.h"

#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <cjson/cJSON.h>
#include <hiredis/hiredis.h>

#include "buf.h"
#include "gwint.h"
#include "testenv.h"

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

/* A redis-server without persistence on a free port; its pid, or -1. */
static pid_t
redis_start(const char *exe, int *port_out)
{
    for (int tries = 0; tries < 5; tries++) {
        int port = closed_port();
        char ps[16];
        snprintf(ps, sizeof ps, "%d", port);
        pid_t pid = fork();
        if (pid < 0)
            return -1;
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
            int nul = open("/dev/null", O_WRONLY);
            if (nul >= 0) {
                dup2(nul, 1);
                dup2(nul, 2);
            }
            execl(exe, "redis-server", "--port", ps, "--bind", "127.0.0.1", "--save", "",
                  "--appendonly", "no", "--dir", "/tmp", "--protected-mode", "no", "--loglevel",
                  "warning", (char *)NULL);
            _exit(127);
        }
        for (int i = 0; i < 300; i++) {
            struct timeval tv = {.tv_sec = 1, .tv_usec = 0};
            redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
            int ok = 0;
            if (c != NULL && !c->err) {
                redisReply *r = redisCommand(c, "PING");
                ok = r != NULL && r->type == REDIS_REPLY_STATUS;
                if (r)
                    freeReplyObject(r);
            }
            if (c)
                redisFree(c);
            if (ok) {
                *port_out = port;
                return pid;
            }
            if (waitpid(pid, NULL, WNOHANG) == pid)
                break; /* it died (the port was taken): another port */
            gwt_sleep_ms(10);
        }
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    return -1;
}

/* A number in the text: the value of the first sample line starting with
 * `name ` (no labels), or NAN. */
static double
prom_value(const char *text, const char *name)
{
    char pat[160];
    snprintf(pat, sizeof pat, "\n%s ", name);
    const char *p = strstr(text, pat);
    return p != NULL ? strtod(p + strlen(pat), NULL) : NAN;
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
    assert_non_null(
        strstr(b.data, "airouter_state_fail_mode{limit=\"rate_limits\",mode=\"open\"} 1\n"));
    assert_non_null(
        strstr(b.data, "airouter_state_fail_mode{limit=\"budgets\",mode=\"closed\"} 1\n"));
    assert_non_null(strstr(
        b.data, "airouter_state_fail_mode{limit=\"deployment_quotas\",mode=\"open\"} 1\n"));
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

/* A gateway whose Redis answers: /metrics and /admin/stats show it healthy,
 * with a real round trip (microseconds, not the -1 of "never measured"), a
 * sync within the last second or so, and leases with slices. */
static void
test_state_metrics_working_redis_healthy_with_rtt_and_recent_sync(void **state)
{
    (void)state;
    char exe[512];
    if (air_test_find_redis(exe, sizeof exe) != 0) {
        if (air_test_in_ci())
            fail_msg("redis-server not found and CI is set: CI must run this test");
        skip();
    }
    int port = 0;
    pid_t pid = redis_start(exe, &port);
    assert_true(pid > 0);
    air_mock_t *m = gwt_mock_plain();
    setenv("GWT_ADMIN_TOKEN", "adm-secret-token-42", 1);
    char cfg[2048];
    snprintf(cfg, sizeof cfg,
             "{\"listen\":\"127.0.0.1:0\",\"access_log\":{\"level\":\"off\"},"
             "\"admin\":{\"listen\":\"127.0.0.1:0\",\"token_env\":\"GWT_ADMIN_TOKEN\"},"
             "\"providers\":[{\"name\":\"p0\",\"kind\":\"openai\","
             "\"base_url\":\"http://127.0.0.1:%u/v1\",\"models\":[{\"name\":\"up-0\","
             "\"rpm\":6000,\"input_price_per_mtok\":1,\"output_price_per_mtok\":2}]}],"
             "\"routes\":[{\"model\":\"m\",\"budget_usd\":100,\"targets\":[{\"provider\":"
             "\"p0\",\"model\":\"up-0\"}]}],"
             "\"state\":{\"backend\":\"redis\",\"url\":\"redis://127.0.0.1:%d/0\","
             "\"prefix\":\"gwm%d:\",\"lease\":{\"sync_ms\":20}}}",
             (unsigned)air_mock_port(m), port, (int)getpid());
    struct air__gw *gw = gwt_gateway(cfg);
    char url[128];
    for (int i = 0; i < 5; i++) {
        struct http_resp r = http_req(
            "POST", gwt_url(url, sizeof url, air__gw_port(gw), "/v1/chat/completions"),
            gwt_plain_body, NULL);
        assert_int_equal(r.status, 200);
        http_resp_free(&r);
    }
    gwt_sleep_ms(100); /* a few syncs settle the usage */

    struct http_resp r =
        http_req("GET", gwt_url(url, sizeof url, air__gw_port(gw), "/metrics"), NULL, NULL);
    assert_int_equal(r.status, 200);
    const char *why = prom_validate(r.body);
    if (why != NULL)
        fail_msg("invalid metrics: %s", why);
    assert_non_null(strstr(r.body, "airouter_state_backend_info{backend=\"redis\"} 1\n"));
    assert_non_null(strstr(r.body, "\nairouter_state_healthy 1\n"));
    double rtt = prom_value(r.body, "airouter_state_last_rtt_us");
    double since = prom_value(r.body, "airouter_state_since_sync_ms");
    double syncs = prom_value(r.body, "airouter_state_syncs_total");
    print_message("/metrics: last_rtt_us %.0f, since_sync_ms %.0f, syncs %.0f\n", rtt, since,
                  syncs);
    assert_true(rtt > 0 && rtt < 500000);       /* measured, on loopback */
    assert_true(since >= 0 && since < 2000);    /* syncs every 20 ms, PING every second */
    assert_true(syncs >= 1);
    assert_true(prom_value(r.body, "airouter_state_transitions_total") == 0);
    assert_true(prom_value(r.body, "airouter_state_sync_errors_total") == 0);
    assert_true(prom_sum(r.body, "airouter_lease_slice{", "lease=\"deployment:p0/up-0:rpm\"",
                         NULL) > 0);
    assert_true(prom_sum(r.body, "airouter_lease_slice{", "lease=\"route:m\"", NULL) > 0);
    http_resp_free(&r);

    static const char *const tok[] = {"Authorization: Bearer adm-secret-token-42", NULL};
    r = http_req("GET", gwt_url(url, sizeof url, air__gw_admin_port(gw), "/admin/stats"), NULL,
                 tok);
    assert_int_equal(r.status, 200);
    cJSON *j = cJSON_Parse(r.body);
    assert_non_null(j);
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "state");
    assert_true(cJSON_IsObject(st));
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(st, "backend")->valuestring, "redis");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(st, "healthy")));
    double a_rtt = cJSON_GetObjectItemCaseSensitive(st, "last_rtt_us")->valuedouble;
    double a_since = cJSON_GetObjectItemCaseSensitive(st, "since_sync_ms")->valuedouble;
    print_message("/admin/stats: last_rtt_us %.0f, since_sync_ms %.0f\n", a_rtt, a_since);
    assert_true(a_rtt > 0 && a_rtt < 500000);
    assert_true(a_since >= 0 && a_since < 2000);
    assert_true(cJSON_GetObjectItemCaseSensitive(st, "connects")->valuedouble == 1);
    assert_true(cJSON_GetObjectItemCaseSensitive(st, "transitions")->valuedouble == 0);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(st, "last_error")->valuestring, "");
    const cJSON *leases = cJSON_GetObjectItemCaseSensitive(st, "leases");
    assert_int_equal(cJSON_GetArraySize(leases), 2);
    cJSON_Delete(j);
    http_resp_free(&r);

    air__gw_stop(gw, 1000);
    air_mock_stop(m);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_metrics_local_backend_on_metrics),
        cmocka_unit_test(test_state_metrics_redis_backend_leases),
        cmocka_unit_test(test_state_metrics_working_redis_healthy_with_rtt_and_recent_sync),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
