/*
 * test_state_config.c - the `state` config object and the Redis backend's
 * behaviour when Redis cannot be reached at all (no redis-server needed):
 * defaults, one test per kind of error with its message (a password in the
 * URL is refused without being echoed; password_env is read and never
 * shown), the effective config, the redis:// URL parser, and a router whose
 * Redis is unreachable from the start: air_new still succeeds, the stats say
 * unhealthy and list the leases, rate limits fail open (served from the
 * local share: limit / instances) or closed (503 with a clear reason, also
 * for a deployment's quota), budgets fail closed by default, and deployment
 * quotas fail apart from client rate limits when state.fail.deployment_quotas
 * says so (either way round; the effective modes are in the config, the
 * stats and the transition log line).
 */
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "airouter.h"
#include "config.h"
#include "mock.h"
#include "state_redis.h"

#define SECRET "redis-pass-SECRET-0123456789"

/* Configs are written with ' for " to stay readable. */
static air_status_t
parse(const char *text, struct air__config **out, char *err, size_t errlen)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", text);
    for (char *p = buf; *p; p++)
        if (*p == '\'')
            *p = '"';
    return air__config_parse(buf, strlen(buf), out, err, errlen);
}

#define PROV "'providers':[{'name':'p','kind':'openai','base_url':'http://127.0.0.1:1/v1'}]"

static void
expect_error(const char *state_json, const char *msg)
{
    char cfg[2048], err[512];
    snprintf(cfg, sizeof cfg, "{" PROV ",'state':%s}", state_json);
    struct air__config *c = NULL;
    assert_int_equal(parse(cfg, &c, err, sizeof err), AIR_E_CONFIG);
    assert_null(c);
    if (strstr(err, msg) == NULL)
        fail_msg("error '%s' lacks '%s'", err, msg);
    assert_null(strstr(err, "SECRET"));
}

static void
test_state_config_defaults(void **state)
{
    (void)state;
    struct air__config *c = NULL;
    char err[256];
    assert_int_equal(parse("{" PROV "}", &c, err, sizeof err), AIR_OK);
    assert_string_equal(c->state_backend, "local");
    assert_string_equal(c->state_url, "redis://127.0.0.1:6379/0");
    assert_string_equal(c->state_prefix, "airouter:");
    assert_string_equal(c->state_fail_rate, "open");
    assert_string_equal(c->state_fail_budget, "closed");
    assert_string_equal(c->state_fail_quota, "open");
    assert_int_equal(c->state_instances, 1);
    assert_int_equal(c->state_timeout_ms, 500);
    assert_int_equal(c->state_sync_ms, 50);
    assert_int_equal(c->state_horizon_ms, 500);
    assert_true(c->state_max_fraction == 0);
    assert_true(c->state_min_fraction == 0.01);
    assert_null(c->state_password);
    air__config_free(c);

    assert_int_equal(parse("{" PROV ",'state':{'backend':'redis','url':'redis://r.example:7000/3',"
                           "'prefix':'x:','instances':4,'fail':{'rate_limits':'closed',"
                           "'budgets':'open'},'lease':{'sync_ms':10,'horizon_ms':2000,"
                           "'max_fraction':0.05,'min_fraction':0},'comment':'ok'}}",
                           &c, err, sizeof err),
                     AIR_OK);
    assert_string_equal(c->state_backend, "redis");
    assert_string_equal(c->state_fail_rate, "closed");
    assert_string_equal(c->state_fail_budget, "open");
    assert_string_equal(c->state_fail_quota, "closed"); /* follows rate_limits */
    assert_int_equal(c->state_instances, 4);
    assert_int_equal(c->state_sync_ms, 10);
    assert_true(c->state_max_fraction == 0.05);
    air__config_free(c);
}

static void
test_state_config_errors_name_the_key(void **state)
{
    (void)state;
    expect_error("{'backend':'etcd'}", "state.backend: unknown backend 'etcd' (local, redis)");
    expect_error("{'url':'http://x'}", "state.url: must start with redis://");
    expect_error("{'url':'rediss://x'}", "state.url: TLS (rediss://) is not supported");
    expect_error("{'url':'redis://:" SECRET "@host'}",
                 "state.url: must not contain a password; name an environment variable");
    expect_error("{'url':'redis://user:" SECRET "@host:1'}", "must not contain a password");
    expect_error("{'url':'redis://host:99999'}", "port must be a number between 1 and 65535");
    expect_error("{'url':'redis://host/x'}", "database must be a number");
    expect_error("{'prefix':'a b'}", "state.prefix: must not contain spaces");
    expect_error("{'instances':0}", "state.instances: must be between 1 and 100000");
    expect_error("{'fail':{'budgets':'maybe'}}", "state.fail.budgets: must be \"open\" or");
    expect_error("{'fail':{'deployment_quotas':'maybe'}}",
                 "state.fail.deployment_quotas: must be \"open\" or \"closed\"");
    expect_error("{'fail':{'rate_limits':'open','deployment_quotas':'Closed'}}",
                 "state.fail.deployment_quotas: must be \"open\" or \"closed\"");
    expect_error("{'fail':{'deployment_quotas':true}}",
                 "state.fail.deployment_quotas: expected a string");
    expect_error("{'fail':{'deployment_quotas':'open','deployment_quotas':'closed'}}",
                 "state.fail.deployment_quotas: duplicate key");
    expect_error("{'fail':{'deployment_quota':'open'}}",
                 "state.fail.deployment_quota: unknown key (did you mean 'deployment_quotas'?)");
    expect_error("{'lease':{'max_fraction':2}}", "state.lease.max_fraction: must be between 0 and 1");
    expect_error("{'prefx':'x'}", "state.prefx: unknown key (did you mean 'prefix'?)");
    expect_error("{'password_env':'NOT_SET_ANYWHERE_42'}",
                 "state.password_env: environment variable NOT_SET_ANYWHERE_42 is not set");
    expect_error("{'password_env':'" SECRET "'}", "must be the name of an environment variable");
}

static void
test_state_config_password_from_env_never_shown(void **state)
{
    (void)state;
    setenv("AIR_TEST_REDIS_PASSWORD", SECRET, 1);
    struct air__config *c = NULL;
    char err[256];
    assert_int_equal(parse("{" PROV ",'state':{'password_env':'AIR_TEST_REDIS_PASSWORD'}}", &c,
                           err, sizeof err),
                     AIR_OK);
    assert_string_equal(c->state_password, SECRET);
    air__config_free(c);
    /* The effective config names the variable, never the value. */
    air_t *r = NULL;
    char cfg[512];
    snprintf(cfg, sizeof cfg,
             "{\"providers\":[{\"name\":\"p\",\"kind\":\"openai\",\"base_url\":"
             "\"http://127.0.0.1:1/v1\"}],\"state\":{\"password_env\":"
             "\"AIR_TEST_REDIS_PASSWORD\"}}");
    assert_int_equal(air_new(cfg, &r, err, sizeof err), AIR_OK);
    char *j = air_config_json(r);
    assert_non_null(j);
    assert_non_null(strstr(j, "\"state\":{\"backend\":\"local\""));
    assert_non_null(strstr(j, "AIR_TEST_REDIS_PASSWORD"));
    assert_null(strstr(j, SECRET));
    free(j);
    j = air_stats_json(r);
    assert_non_null(strstr(j, "\"state\":{\"backend\":\"local\",\"healthy\":true}"));
    free(j);
    air_free(r, 0);
    unsetenv("AIR_TEST_REDIS_PASSWORD");
}

/* state.fail.deployment_quotas: its own value when given, else whatever
 * rate_limits says (given or defaulted), so configs written before it
 * behave as they did. */
static void
test_state_config_deployment_quotas_default_and_override(void **state)
{
    (void)state;
    static const struct {
        const char *fail, *rate, *quota, *budget;
    } cases[] = {
        {"{}", "open", "open", "closed"},
        {"{'rate_limits':'open'}", "open", "open", "closed"},
        {"{'rate_limits':'closed'}", "closed", "closed", "closed"},
        {"{'budgets':'open'}", "open", "open", "open"},
        {"{'deployment_quotas':'closed'}", "open", "closed", "closed"},
        {"{'rate_limits':'open','deployment_quotas':'closed'}", "open", "closed", "closed"},
        {"{'deployment_quotas':'open','rate_limits':'closed'}", "closed", "open", "closed"},
        {"{'rate_limits':'closed','deployment_quotas':'closed','budgets':'open'}", "closed",
         "closed", "open"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char cfg[1024], err[256];
        snprintf(cfg, sizeof cfg, "{" PROV ",'state':{'fail':%s}}", cases[i].fail);
        struct air__config *c = NULL;
        if (parse(cfg, &c, err, sizeof err) != AIR_OK)
            fail_msg("%s: %s", cases[i].fail, err);
        assert_string_equal(c->state_fail_rate, cases[i].rate);
        assert_string_equal(c->state_fail_quota, cases[i].quota);
        assert_string_equal(c->state_fail_budget, cases[i].budget);
        air__config_free(c);
    }

    /* The effective config shows all three. */
    air_t *r = NULL;
    char err[256];
    const char *cfg = "{\"providers\":[{\"name\":\"p\",\"kind\":\"openai\",\"base_url\":"
                      "\"http://127.0.0.1:1/v1\"}],\"state\":{\"fail\":{\"rate_limits\":"
                      "\"closed\",\"deployment_quotas\":\"open\"}}}";
    assert_int_equal(air_new(cfg, &r, err, sizeof err), AIR_OK);
    char *j = air_config_json(r);
    assert_non_null(j);
    if (strstr(j, "\"fail\":{\"rate_limits\":\"closed\",\"budgets\":\"closed\","
                  "\"deployment_quotas\":\"open\"}") == NULL)
        fail_msg("config json lacks the fail modes: %s", j);
    free(j);
    air_free(r, 0);
}

static void
test_state_config_url_parser(void **state)
{
    (void)state;
    struct air__redis_url u;
    char why[160];
    assert_int_equal(air__redis_url_parse("redis://127.0.0.1", &u, why, sizeof why), 0);
    assert_string_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 6379);
    assert_int_equal(u.db, 0);
    assert_int_equal(air__redis_url_parse("redis://app@cache.local:6380/2", &u, why, sizeof why),
                     0);
    assert_string_equal(u.user, "app");
    assert_string_equal(u.host, "cache.local");
    assert_int_equal(u.port, 6380);
    assert_int_equal(u.db, 2);
    assert_int_equal(air__redis_url_parse("redis://[::1]:7000/", &u, why, sizeof why), 0);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 7000);
    assert_int_equal(air__redis_url_parse("redis://", &u, why, sizeof why), -1);
    assert_int_equal(air__redis_url_parse("redis://h:1?x=1", &u, why, sizeof why), -1);
}

/* ---------------------------------------------------- Redis unreachable */

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

struct one {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    air_status_t st;
    air_errclass_t cls;
    int http;
    char msg[256];
    char model[64]; /* the deployment's model that answered */
};

static void
one_done(const air_resp_t *resp, void *ud)
{
    struct one *o = ud;
    pthread_mutex_lock(&o->mu);
    o->st = air_resp_status(resp);
    o->cls = air_resp_error_class(resp);
    o->http = air_resp_http_status(resp);
    snprintf(o->msg, sizeof o->msg, "%s", air_resp_error_message(resp));
    const char *mdl = air_resp_model(resp);
    snprintf(o->model, sizeof o->model, "%s", mdl != NULL ? mdl : "");
    o->done = 1;
    pthread_cond_signal(&o->cv);
    pthread_mutex_unlock(&o->mu);
}

static void
send_one(air_t *r, const char *model, const char *client, struct one *o)
{
    char body[256];
    snprintf(body, sizeof body,
             "{\"model\":\"%s\",\"max_tokens\":20,\"messages\":[{\"role\":\"user\","
             "\"content\":\"hi\"}]}",
             model);
    memset(o, 0, sizeof *o);
    pthread_mutex_init(&o->mu, NULL);
    pthread_cond_init(&o->cv, NULL);
    air_req_t *q = NULL;
    assert_int_equal(air_req_new(r, body, strlen(body), &q, NULL, 0), AIR_OK);
    if (client != NULL)
        assert_int_equal(air_req_set_client_key(q, client), AIR_OK);
    assert_int_equal(air_req_set_done(q, one_done, o), AIR_OK);
    assert_int_equal(air_submit(r, q, NULL), AIR_OK);
    pthread_mutex_lock(&o->mu);
    while (!o->done)
        pthread_cond_wait(&o->cv, &o->mu);
    pthread_mutex_unlock(&o->mu);
    pthread_cond_destroy(&o->cv);
    pthread_mutex_destroy(&o->mu);
}

/* Config of a router whose Redis (on a closed port) is unreachable. */
static void
unreachable_cfg(char *cfg, size_t cfglen, air_mock_t *m, int port, const char *fail)
{
    snprintf(cfg, cfglen,
             "{\"workers\":1,\"providers\":[{\"name\":\"m\",\"kind\":\"openai\","
             "\"base_url\":\"http://127.0.0.1:%u/v1\",\"models\":[{\"name\":\"mm\","
             "\"input_price_per_mtok\":1,\"output_price_per_mtok\":1},{\"name\":\"quota\","
             "\"tpm\":100000},{\"name\":\"rq\",\"rpm\":600}]}],"
             "\"routes\":[{\"model\":\"pair\",\"strategy\":\"priority\",\"targets\":["
             "{\"provider\":\"m\",\"model\":\"rq\"},{\"provider\":\"m\",\"model\":\"mm\"}]}],"
             "\"clients\":[{\"name\":\"rate\",\"rpm\":60},{\"name\":\"money\",\"budget_usd\":10}],"
             "\"state\":{\"backend\":\"redis\",\"url\":\"redis://127.0.0.1:%d\",\"instances\":3,"
             "\"timeout_ms\":100,\"backoff_ms\":50,\"backoff_max_ms\":100,\"fail\":%s}}",
             air_mock_port(m), port, fail);
}

static air_t *
unreachable_router(air_mock_t *m, int port, const char *fail)
{
    char cfg[2048], err[512];
    unreachable_cfg(cfg, sizeof cfg, m, port, fail);
    air_t *r = NULL;
    if (air_new(cfg, &r, err, sizeof err) != AIR_OK)
        fail_msg("air_new: %s", err);
    return r;
}

static void
test_state_unreachable_redis_fails_open_and_closed(void **state)
{
    (void)state;
    air_mock_opts_t mo;
    air_mock_opts_init(&mo);
    air_mock_t *m = NULL;
    char err[256];
    assert_int_equal(air_mock_start(&mo, &m, err, sizeof err), 0);
    int port = closed_port();

    air_t *r = unreachable_router(m, port, "{}");
    char *j = air_stats_json(r);
    assert_non_null(strstr(j, "\"state\":{\"backend\":\"redis\",\"healthy\":false"));
    assert_non_null(strstr(j, "\"name\":\"client:rate:rpm\",\"kind\":\"rate\",\"limit\":60"));
    assert_non_null(strstr(j, "\"name\":\"client:money\",\"kind\":\"budget\""));
    assert_non_null(strstr(j, "\"name\":\"deployment:m/quota:tpm\""));
    free(j);
    struct one o;
    /* Rate limits fail open: the local share is 60 / 3 = 20 a minute. */
    int ok = 0;
    for (int i = 0; i < 25; i++) {
        send_one(r, "mm", "rate", &o);
        ok += o.st == AIR_OK;
        if (o.st != AIR_OK)
            assert_int_equal(o.cls, AIR_ERR_RATE_LIMITED);
    }
    assert_int_equal(ok, 20);
    /* Budgets fail closed: 503 with the reason. */
    send_one(r, "mm", "money", &o);
    assert_int_equal(o.cls, AIR_ERR_OVERLOADED);
    assert_int_equal(o.http, 503);
    assert_non_null(strstr(o.msg, "client 'money' budget limit cannot be checked: the shared "
                                  "state store is unreachable and budgets fail closed"));
    /* A deployment quota fails open too. */
    send_one(r, "quota", NULL, &o);
    assert_int_equal(o.st, AIR_OK);
    air_free(r, 1000);

    r = unreachable_router(m, port, "{\"rate_limits\":\"closed\",\"budgets\":\"open\"}");
    send_one(r, "mm", "rate", &o);
    assert_int_equal(o.cls, AIR_ERR_OVERLOADED);
    assert_non_null(strstr(o.msg, "client 'rate' rpm limit cannot be checked"));
    send_one(r, "mm", "money", &o);
    assert_int_equal(o.st, AIR_OK);
    send_one(r, "quota", NULL, &o);
    assert_int_equal(o.cls, AIR_ERR_OVERLOADED);
    assert_non_null(strstr(o.msg, "shared state store unreachable (fail-closed)"));
    air_free(r, 1000);
    air_mock_stop(m);
}

/* Run air_new with stderr going to a file; what was written there in the
 * next 300 ms (the transition line) is returned in buf. */
static air_t *
router_logged(air_mock_t *m, int port, const char *fail, char *buf, size_t buflen)
{
    char path[] = "/tmp/air-state-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    assert_true(saved >= 0);
    char cfg[2048], err[512];
    unreachable_cfg(cfg, sizeof cfg, m, port, fail);
    assert_true(dup2(fd, 2) >= 0);
    air_t *r = NULL;
    air_status_t st = air_new(cfg, &r, err, sizeof err);
    /* The first sync (in air_new) already found Redis down; give a
     * reconnect attempt time to show the line is not repeated. */
    if (st == AIR_OK)
        usleep(300 * 1000);
    fflush(stderr);
    int back = dup2(saved, 2); /* stderr back before anything can fail */
    close(saved);
    ssize_t n = pread(fd, buf, buflen - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
    close(fd);
    unlink(path);
    assert_true(back >= 0);
    if (st != AIR_OK)
        fail_msg("air_new: %s", err);
    return r;
}

static int
count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(hay, needle); p != NULL; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* state.fail.deployment_quotas apart from rate_limits, both ways round: a
 * deployment whose rpm quota fails closed is taken out of rotation (a route
 * fails over past it) while a client's rpm admits from its local share; and
 * a client's rpm that fails closed refuses while the deployment's quota
 * admits from its local share. */
static void
test_state_unreachable_redis_deployment_quotas_fail_apart(void **state)
{
    (void)state;
    air_mock_opts_t mo;
    air_mock_opts_init(&mo);
    air_mock_t *m = NULL;
    char err[256], log[4096];
    assert_int_equal(air_mock_start(&mo, &m, err, sizeof err), 0);
    int port = closed_port();
    struct one o;

    /* Quotas closed, client rate limits open. */
    air_t *r = router_logged(m, port, "{\"rate_limits\":\"open\",\"deployment_quotas\":\"closed\"}",
                             log, sizeof log);
    if (strstr(log, "serving with rate limits fail-open, budgets fail-closed, deployment "
                    "quotas fail-closed; open means a local share of 1/3") == NULL)
        fail_msg("transition line: '%s'", log);
    assert_int_equal(count_of(log, "unreachable"), 1);
    char *j = air_stats_json(r);
    if (strstr(j, "\"fail\":{\"rate_limits\":\"open\",\"budgets\":\"closed\","
                  "\"deployment_quotas\":\"closed\"}") == NULL)
        fail_msg("stats lack the fail modes: %s", j);
    free(j);
    /* The deployment with an rpm quota: out of rotation, with the reason. */
    send_one(r, "rq", NULL, &o);
    assert_int_equal(o.st, AIR_E_UPSTREAM);
    assert_int_equal(o.cls, AIR_ERR_OVERLOADED);
    if (strstr(o.msg, "rpm quota unknown: shared state store unreachable (fail-closed)") == NULL)
        fail_msg("message: '%s'", o.msg);
    /* A tpm quota too. */
    send_one(r, "quota", NULL, &o);
    assert_int_equal(o.cls, AIR_ERR_OVERLOADED);
    assert_non_null(strstr(o.msg, "tpm quota unknown: shared state store unreachable"));
    /* A route fails over past it. */
    send_one(r, "pair", NULL, &o);
    assert_int_equal(o.st, AIR_OK);
    assert_string_equal(o.model, "mm");
    /* The client's rpm admits: its local share is 60 / 3 = 20 a minute. */
    int ok = 0;
    for (int i = 0; i < 22; i++) {
        send_one(r, "mm", "rate", &o);
        ok += o.st == AIR_OK;
        if (o.st != AIR_OK)
            assert_int_equal(o.cls, AIR_ERR_RATE_LIMITED);
    }
    assert_int_equal(ok, 20);
    air_free(r, 1000);

    /* The reverse: client rate limits closed, quotas open. */
    r = router_logged(m, port, "{\"rate_limits\":\"closed\",\"deployment_quotas\":\"open\"}", log,
                      sizeof log);
    if (strstr(log, "serving with rate limits fail-closed, budgets fail-closed, deployment "
                    "quotas fail-open; open means a local share of 1/3") == NULL)
        fail_msg("transition line: '%s'", log);
    j = air_stats_json(r);
    assert_non_null(strstr(j, "\"fail\":{\"rate_limits\":\"closed\",\"budgets\":\"closed\","
                              "\"deployment_quotas\":\"open\"}"));
    free(j);
    send_one(r, "mm", "rate", &o);
    assert_int_equal(o.cls, AIR_ERR_OVERLOADED);
    assert_int_equal(o.http, 503);
    assert_non_null(strstr(o.msg, "client 'rate' rpm limit cannot be checked: the shared state "
                                  "store is unreachable and rate limits fail closed"));
    send_one(r, "rq", NULL, &o);
    assert_int_equal(o.st, AIR_OK);
    assert_string_equal(o.model, "rq");
    send_one(r, "pair", NULL, &o);
    assert_int_equal(o.st, AIR_OK);
    assert_string_equal(o.model, "rq"); /* first in line, in rotation */
    send_one(r, "quota", NULL, &o);
    assert_int_equal(o.st, AIR_OK);
    air_free(r, 1000);
    air_mock_stop(m);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_config_defaults),
        cmocka_unit_test(test_state_config_errors_name_the_key),
        cmocka_unit_test(test_state_config_password_from_env_never_shown),
        cmocka_unit_test(test_state_config_deployment_quotas_default_and_override),
        cmocka_unit_test(test_state_config_url_parser),
        cmocka_unit_test(test_state_unreachable_redis_fails_open_and_closed),
        cmocka_unit_test(test_state_unreachable_redis_deployment_quotas_fail_apart),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
