/*
 * test_admin.c - the admin API over real sockets: the token requirement,
 * the listener being off without a token, config (secrets redacted), stats,
 * reload (good, bad, non-reloadable keys), and the tuning calls: ctl list /
 * get / set, a weight change moving traffic, explain.
 */
#include "gwtest.h"

#include <cjson/cJSON.h>

static char abuf[256];

#define ADMIN(gw, path) gwt_url(abuf, sizeof abuf, air__gw_admin_port(gw), path)
#define API(gw, path)   gwt_url(abuf, sizeof abuf, air__gw_port(gw), path)

static const char *const tok_hdr[] = {"Authorization: Bearer adm-secret-token-42", NULL};

struct fx {
    air_mock_t *m[2];
    struct air__gw *gw;
    char *cfg;
};

static void
fx_start(struct fx *f, const char *extra)
{
    memset(f, 0, sizeof *f);
    setenv("GWT_ADMIN_TOKEN", "adm-secret-token-42", 1);
    setenv("GWT_ADMIN_CLIENT", "sk-admin-test-client", 1);
    f->m[0] = gwt_mock_plain();
    f->m[1] = gwt_mock_plain();
    char ex[1024];
    snprintf(ex, sizeof ex,
             "\"access_log\":{\"level\":\"off\"},\"admin\":{\"listen\":\"127.0.0.1:0\","
             "\"token_env\":\"GWT_ADMIN_TOKEN\"}%s%s",
             extra ? "," : "", extra ? extra : "");
    f->cfg = gwt_config(f->m, 2, ex);
    f->gw = gwt_gateway(f->cfg);
    assert_true(air__gw_admin_port(f->gw) != 0);
}

static void
fx_stop(struct fx *f)
{
    air__gw_stop(f->gw, 1000);
    air_mock_stop(f->m[0]);
    air_mock_stop(f->m[1]);
    free(f->cfg);
}

static void
test_admin_token_required(void **state)
{
    (void)state;
    struct fx f;
    fx_start(&f, NULL);
    static const char *const paths[] = {"/admin/config", "/admin/stats", "/admin/ctl",
                                        "/admin/ctl/policy.strategy", "/metrics"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        struct http_resp r = http_req("GET", ADMIN(f.gw, paths[i]), NULL, NULL);
        assert_int_equal(r.status, 401);
        assert_non_null(strstr(r.body, "\"type\":\"auth\""));
        http_resp_free(&r);
        const char *wrong[] = {"Authorization: Bearer adm-secret-token-43", NULL};
        r = http_req("GET", ADMIN(f.gw, paths[i]), NULL, wrong);
        assert_int_equal(r.status, 401);
        http_resp_free(&r);
    }
    struct http_resp r = http_req("POST", ADMIN(f.gw, "/admin/reload"), "", NULL);
    assert_int_equal(r.status, 401);
    http_resp_free(&r);
    r = http_req("PUT", ADMIN(f.gw, "/admin/ctl/policy.strategy"), "\"weighted\"", NULL);
    assert_int_equal(r.status, 401);
    http_resp_free(&r);
    /* The health check needs no token; the token works. */
    r = http_req("GET", ADMIN(f.gw, "/healthz"), NULL, NULL);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    r = http_req("GET", ADMIN(f.gw, "/admin/stats"), NULL, tok_hdr);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    /* The admin API is not on the API listener. */
    r = http_req("GET", API(f.gw, "/admin/stats"), NULL, tok_hdr);
    assert_int_equal(r.status, 404);
    http_resp_free(&r);
    fx_stop(&f);
}

static void
test_admin_disabled_without_token_env(void **state)
{
    (void)state;
    air_mock_t *m = gwt_mock_plain();
    char *cfg = gwt_config(&m, 1, "\"access_log\":{\"level\":\"off\"}");
    struct air__gw *gw = gwt_gateway(cfg);
    assert_int_equal(air__gw_admin_port(gw), 0);
    air__gw_stop(gw, 1000);
    free(cfg);
    air_mock_stop(m);
}

static void
test_admin_stats_has_engine_and_gateway_figures(void **state)
{
    (void)state;
    struct fx f;
    fx_start(&f, NULL);
    struct http_resp r = http_req("POST", API(f.gw, "/v1/chat/completions"), gwt_plain_body, NULL);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    r = http_req("GET", ADMIN(f.gw, "/admin/stats"), NULL, tok_hdr);
    assert_int_equal(r.status, 200);
    cJSON *j = cJSON_Parse(r.body);
    assert_non_null(j);
    assert_true(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(j, "completed")));
    assert_true(cJSON_GetObjectItemCaseSensitive(j, "completed")->valuedouble >= 1);
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(j, "gateway");
    assert_true(cJSON_IsObject(g));
    assert_true(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(g, "in_flight")));
    cJSON_Delete(j);
    http_resp_free(&r);
    fx_stop(&f);
}

static void
test_admin_config_redacts_secrets(void **state)
{
    (void)state;
    struct fx f;
    fx_start(&f, "\"keys\":[{\"name\":\"c\",\"key_env\":\"GWT_ADMIN_CLIENT\",\"rpm\":100}]");
    struct http_resp r = http_req("GET", ADMIN(f.gw, "/admin/config"), NULL, tok_hdr);
    assert_int_equal(r.status, 200);
    cJSON *j = cJSON_Parse(r.body);
    assert_non_null(j);
    const cJSON *keys = cJSON_GetObjectItemCaseSensitive(j, "keys");
    assert_int_equal(cJSON_GetArraySize(keys), 1);
    const cJSON *k = cJSON_GetArrayItem(keys, 0);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(k, "key_env")->valuestring,
                        "GWT_ADMIN_CLIENT");
    assert_string_equal(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "admin"), "token_env")
            ->valuestring,
        "GWT_ADMIN_TOKEN");
    assert_null(strstr(r.body, "sk-admin-test-client"));
    assert_null(strstr(r.body, "adm-secret-token-42"));
    cJSON_Delete(j);
    http_resp_free(&r);
    fx_stop(&f);
}

static void
test_admin_config_includes_engine_config(void **state)
{
    (void)state;
    /* Needs air_config_json (policy engine). */
    struct fx f;
    fx_start(&f, NULL);
    struct http_resp r = http_req("GET", ADMIN(f.gw, "/admin/config"), NULL, tok_hdr);
    assert_int_equal(r.status, 200);
    cJSON *j = cJSON_Parse(r.body);
    assert_non_null(j);
    assert_true(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(j, "providers")));
    assert_true(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(j, "routes")));
    assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "listen")));
    cJSON_Delete(j);
    http_resp_free(&r);
    fx_stop(&f);
}

static void
test_admin_reload_bad_config_keeps_running(void **state)
{
    (void)state;
    struct fx f;
    fx_start(&f, NULL);
    /* Invalid gateway key. */
    char *bad =
        gwt_config(f.m, 2,
                   "\"access_log\":{\"level\":\"off\"},\"admin\":{\"listen\":"
                   "\"127.0.0.1:0\",\"token_env\":\"GWT_ADMIN_TOKEN\"},"
                   "\"keys\":[{\"name\":\"x\",\"key_env\":\"GWT_ADMIN_CLIENT\",\"rpm\":0}]");
    struct http_resp r = http_req("POST", ADMIN(f.gw, "/admin/reload"), bad, tok_hdr);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "keys[0].rpm: expected a positive integer"));
    http_resp_free(&r);
    free(bad);
    /* Invalid JSON: the engine's line/column message. */
    r = http_req("POST", ADMIN(f.gw, "/admin/reload"), "{\"providers\": [,]}", tok_hdr);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "line 1"));
    http_resp_free(&r);
    /* Invalid engine part. */
    r = http_req("POST", ADMIN(f.gw, "/admin/reload"),
                 "{\"listen\":\"127.0.0.1:0\",\"admin\":{\"listen\":\"127.0.0.1:0\",\"token_env\":"
                 "\"GWT_ADMIN_TOKEN\"},\"providers\":[]}",
                 tok_hdr);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "providers"));
    http_resp_free(&r);
    /* A key that cannot change at run time. */
    r = http_req(
        "POST", ADMIN(f.gw, "/admin/reload"),
        "{\"listen\":\"127.0.0.1:1\",\"providers\":[{\"name\":\"a\",\"kind\":\"openai\"}]}",
        tok_hdr);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "listen: cannot change at run time"));
    http_resp_free(&r);
    /* No file to re-read when started from text. */
    r = http_req("POST", ADMIN(f.gw, "/admin/reload"), NULL, tok_hdr);
    assert_int_equal(r.status, 400);
    http_resp_free(&r);
    /* Still serving with the old configuration (no keys needed). */
    r = http_req("POST", API(f.gw, "/v1/chat/completions"), gwt_plain_body, NULL);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    r = http_req("GET", ADMIN(f.gw, "/metrics"), NULL, tok_hdr);
    assert_true(prom_sum(r.body, "airouter_config_reloads_total{", "error", NULL) == 5);
    http_resp_free(&r);
    fx_stop(&f);
}

static void
test_admin_reload_good_config_applies(void **state)
{
    (void)state;
    /* Needs air_reload (policy engine). */
    struct fx f;
    fx_start(&f, NULL);
    /* Add a client key and a second route. */
    char *good = gwt_config(f.m, 2,
                            "\"access_log\":{\"level\":\"off\"},\"admin\":{\"listen\":"
                            "\"127.0.0.1:0\",\"token_env\":\"GWT_ADMIN_TOKEN\"},"
                            "\"keys\":[{\"name\":\"c\",\"key_env\":\"GWT_ADMIN_CLIENT\"}]");
    /* gwt_config names its route "m"; add "m2" by text surgery. */
    char *at = strstr(good, "\"routes\":[");
    assert_non_null(at);
    size_t off = (size_t)(at - good) + strlen("\"routes\":[");
    const char *ins = "{\"model\":\"m2\",\"targets\":[{\"provider\":\"p1\",\"model\":\"up-1\"}]},";
    size_t gl = strlen(good), il = strlen(ins);
    char *text = malloc(gl + il + 1);
    memcpy(text, good, off);
    memcpy(text + off, ins, il);
    memcpy(text + off + il, good + off, gl - off + 1);
    struct http_resp r = http_req("POST", ADMIN(f.gw, "/admin/reload"), text, tok_hdr);
    if (r.status != 200)
        fail_msg("reload: %ld %s", r.status, r.body);
    http_resp_free(&r);
    free(text);
    free(good);
    /* The key is now required... */
    r = http_req("POST", API(f.gw, "/v1/chat/completions"), gwt_plain_body, NULL);
    assert_int_equal(r.status, 401);
    http_resp_free(&r);
    /* ...and the new route is served by the engine. */
    const char *h[] = {"Authorization: Bearer sk-admin-test-client", NULL};
    r = http_req("POST", API(f.gw, "/v1/chat/completions"),
                 "{\"model\":\"m2\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", h);
    assert_int_equal(r.status, 200);
    char v[64];
    assert_non_null(http_header(&r, "x-airouter-provider", v, sizeof v));
    assert_string_equal(v, "p1");
    http_resp_free(&r);
    r = http_req("GET", API(f.gw, "/v1/models"), NULL, h);
    assert_non_null(strstr(r.body, "\"id\":\"m2\""));
    http_resp_free(&r);
    fx_stop(&f);
}

static void
test_admin_ctl_unknown_path_404(void **state)
{
    (void)state;
    struct fx f;
    fx_start(&f, NULL);
    struct http_resp r = http_req("GET", ADMIN(f.gw, "/admin/ctl/no.such.thing"), NULL, tok_hdr);
    assert_int_equal(r.status, 404);
    http_resp_free(&r);
    r = http_req("PUT", ADMIN(f.gw, "/admin/ctl/no.such.thing"), "1", tok_hdr);
    assert_int_equal(r.status, 404);
    http_resp_free(&r);
    r = http_req("PUT", ADMIN(f.gw, "/admin/ctl/no.such.thing"), "not json", tok_hdr);
    assert_int_equal(r.status, 400);
    http_resp_free(&r);
    r = http_req("DELETE", ADMIN(f.gw, "/admin/ctl/x"), NULL, tok_hdr);
    assert_int_equal(r.status, 405);
    http_resp_free(&r);
    fx_stop(&f);
}

static void
test_admin_ctl_list_get_and_set(void **state)
{
    (void)state;
    /* Needs air_ctl_list / air_ctl_get / air_ctl_set (policy engine). */
    struct fx f;
    fx_start(&f, NULL);
    struct http_resp r = http_req("GET", ADMIN(f.gw, "/admin/ctl"), NULL, tok_hdr);
    assert_int_equal(r.status, 200);
    cJSON *j = cJSON_Parse(r.body);
    assert_true(cJSON_IsArray(j));
    assert_true(cJSON_GetArraySize(j) > 0);
    int saw = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, j)
    {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(it, "path");
        assert_true(cJSON_IsString(p));
        assert_non_null(cJSON_GetObjectItemCaseSensitive(it, "mode"));
        assert_non_null(cJSON_GetObjectItemCaseSensitive(it, "value"));
        if (strcmp(p->valuestring, "deployments.p0/up-0.weight") == 0)
            saw = 1;
    }
    assert_true(saw);
    cJSON_Delete(j);
    http_resp_free(&r);
    r = http_req("PUT", ADMIN(f.gw, "/admin/ctl/deployments.p0/up-0.weight"), "2.5", tok_hdr);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"value\":2.5"));
    http_resp_free(&r);
    r = http_req("GET", ADMIN(f.gw, "/admin/ctl/deployments.p0/up-0.weight"), NULL, tok_hdr);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "2.5"));
    http_resp_free(&r);
    /* Out of range and wrong type are 400s that name the path. */
    r = http_req("PUT", ADMIN(f.gw, "/admin/ctl/deployments.p0/up-0.weight"), "-1", tok_hdr);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "deployments.p0/up-0.weight"));
    http_resp_free(&r);
    r = http_req("PUT", ADMIN(f.gw, "/admin/ctl/deployments.p0/up-0.enabled"), "\"yes\"", tok_hdr);
    assert_int_equal(r.status, 400);
    http_resp_free(&r);
    fx_stop(&f);
}

static int
send_n(struct fx *f, int n)
{
    int ok = 0;
    for (int i = 0; i < n; i++) {
        struct http_resp r =
            http_req("POST", API(f->gw, "/v1/chat/completions"), gwt_plain_body, NULL);
        ok += r.status == 200;
        http_resp_free(&r);
    }
    return ok;
}

static void
test_admin_weight_change_moves_traffic(void **state)
{
    (void)state;
    /* Needs air_ctl_set with weighted routing (policy engine). */
    struct fx f;
    fx_start(&f, NULL);
    static const char *const puts_a[][2] = {
        {"/admin/ctl/routes.m.strategy", "\"weighted\""},
        {"/admin/ctl/deployments.p0/up-0.weight", "0"},
        {"/admin/ctl/deployments.p1/up-1.weight", "1"},
    };
    for (size_t i = 0; i < 3; i++) {
        struct http_resp r = http_req("PUT", ADMIN(f.gw, puts_a[i][0]), puts_a[i][1], tok_hdr);
        if (r.status != 200)
            fail_msg("%s: %ld %s", puts_a[i][0], r.status, r.body);
        http_resp_free(&r);
    }
    assert_int_equal(send_n(&f, 10), 10);
    air_mock_stats_t s0, s1;
    air_mock_stats(f.m[0], &s0);
    air_mock_stats(f.m[1], &s1);
    assert_int_equal(s0.requests, 0);
    assert_int_equal(s1.requests, 10);
    /* Swap the weights: the next requests go to p0, with no restart. */
    struct http_resp r =
        http_req("PUT", ADMIN(f.gw, "/admin/ctl/deployments.p1/up-1.weight"), "0", tok_hdr);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    r = http_req("PUT", ADMIN(f.gw, "/admin/ctl/deployments.p0/up-0.weight"), "1", tok_hdr);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    assert_int_equal(send_n(&f, 10), 10);
    air_mock_stats(f.m[0], &s0);
    air_mock_stats(f.m[1], &s1);
    assert_int_equal(s0.requests, 10);
    assert_int_equal(s1.requests, 10);
    fx_stop(&f);
}

static void
test_admin_explain_lists_candidates(void **state)
{
    (void)state;
    /* Needs air_explain (policy engine). */
    struct fx f;
    fx_start(&f, NULL);
    struct http_resp r = http_req("POST", ADMIN(f.gw, "/admin/explain"), gwt_plain_body, tok_hdr);
    assert_int_equal(r.status, 200);
    cJSON *j = cJSON_Parse(r.body);
    assert_non_null(j);
    assert_non_null(strstr(r.body, "p0/up-0"));
    assert_non_null(strstr(r.body, "p1/up-1"));
    cJSON_Delete(j);
    http_resp_free(&r);
    /* Nothing was sent. */
    air_mock_stats_t s0, s1;
    air_mock_stats(f.m[0], &s0);
    air_mock_stats(f.m[1], &s1);
    assert_int_equal(s0.requests + s1.requests, 0);
    r = http_req("POST", ADMIN(f.gw, "/admin/explain"), "{nope", tok_hdr);
    assert_int_equal(r.status, 400);
    http_resp_free(&r);
    r = http_req("GET", ADMIN(f.gw, "/admin/explain"), NULL, tok_hdr);
    assert_int_equal(r.status, 405);
    http_resp_free(&r);
    fx_stop(&f);
}

static void
test_admin_no_healthy_deployment_503_names_each_reason(void **state)
{
    (void)state;
    struct fx f;
    fx_start(&f, NULL);
    static const char *const off[] = {"/admin/ctl/deployments.p0/up-0.enabled",
                                      "/admin/ctl/deployments.p1/up-1.enabled"};
    for (size_t i = 0; i < 2; i++) {
        struct http_resp r = http_req("PUT", ADMIN(f.gw, off[i]), "false", tok_hdr);
        if (r.status != 200)
            fail_msg("%s: %ld %s", off[i], r.status, r.body);
        http_resp_free(&r);
    }
    struct http_resp r = http_req("POST", API(f.gw, "/v1/chat/completions"), gwt_plain_body, NULL);
    if (r.status != 503)
        fail_msg("status %ld: %s", r.status, r.body);
    cJSON *j = cJSON_Parse(r.body);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(e, "message");
    assert_true(cJSON_IsString(msg));
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(e, "type")->valuestring, "overloaded");
    /* One reason per deployment, each named. */
    if (strstr(msg->valuestring, "p0/up-0: disabled by operator") == NULL ||
        strstr(msg->valuestring, "p1/up-1: disabled by operator") == NULL)
        fail_msg("message lacks a reason per deployment: %s", msg->valuestring);
    cJSON_Delete(j);
    char v[64];
    assert_non_null(http_header(&r, "retry-after", v, sizeof v));
    assert_true(atoi(v) >= 1);
    http_resp_free(&r);
    /* Nothing went upstream; enabling one deployment serves again. */
    air_mock_stats_t s0, s1;
    air_mock_stats(f.m[0], &s0);
    air_mock_stats(f.m[1], &s1);
    assert_int_equal(s0.requests + s1.requests, 0);
    r = http_req("PUT", ADMIN(f.gw, off[1]), "true", tok_hdr);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    r = http_req("POST", API(f.gw, "/v1/chat/completions"), gwt_plain_body, NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(http_header(&r, "x-airouter-provider", v, sizeof v));
    assert_string_equal(v, "p1");
    http_resp_free(&r);
    fx_stop(&f);
}

/* Write text to path (replacing it atomically, as an editor or a config
 * tool would). */
static void
write_file(const char *path, const char *text)
{
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.new", path);
    FILE *fp = fopen(tmp, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(text, 1, strlen(text), fp), strlen(text));
    assert_int_equal(fclose(fp), 0);
    assert_int_equal(rename(tmp, path), 0);
}

/* gwt_config's text with a second route "m2" (on p1) inserted. */
static char *
with_m2(const char *cfg)
{
    const char *at = strstr(cfg, "\"routes\":[");
    assert_non_null(at);
    size_t off = (size_t)(at - cfg) + strlen("\"routes\":[");
    const char *ins = "{\"model\":\"m2\",\"targets\":[{\"provider\":\"p1\",\"model\":\"up-1\"}]},";
    size_t gl = strlen(cfg), il = strlen(ins);
    char *text = malloc(gl + il + 1);
    memcpy(text, cfg, off);
    memcpy(text + off, ins, il);
    memcpy(text + off + il, cfg + off, gl - off + 1);
    return text;
}

static int
models_list_has(struct air__gw *gw, const char *id)
{
    struct http_resp r = http_req("GET", API(gw, "/v1/models"), NULL, NULL);
    assert_int_equal(r.status, 200);
    char want[128];
    snprintf(want, sizeof want, "\"id\":\"%s\"", id);
    int has = strstr(r.body, want) != NULL;
    http_resp_free(&r);
    return has;
}

static void
test_admin_reload_empty_body_rereads_the_file(void **state)
{
    (void)state;
    setenv("GWT_ADMIN_TOKEN", "adm-secret-token-42", 1);
    air_mock_t *m[2] = {gwt_mock_plain(), gwt_mock_plain()};
    const char *ex = "\"access_log\":{\"level\":\"off\"},\"admin\":{\"listen\":\"127.0.0.1:0\","
                     "\"token_env\":\"GWT_ADMIN_TOKEN\"}";
    char *cfg = gwt_config(m, 2, ex);
    char path[128];
    snprintf(path, sizeof path, "/tmp/airouter-gwtest-reload-%d.json", (int)getpid());
    write_file(path, cfg);
    struct air__gw_opts o;
    memset(&o, 0, sizeof o);
    o.config_path = path;
    o.quiet = 1;
    o.threads = 2;
    struct air__gw *gw = NULL;
    char err[512];
    if (air__gw_start(&o, &gw, err, sizeof err) != AIR_OK)
        fail_msg("air__gw_start: %s", err);
    assert_false(models_list_has(gw, "m2"));
    /* The file gains a route; a reload with no body (and one with an empty
     * body) re-reads it. */
    char *cfg2 = with_m2(cfg);
    write_file(path, cfg2);
    struct http_resp r = http_req("POST", ADMIN(gw, "/admin/reload"), NULL, tok_hdr);
    if (r.status != 200)
        fail_msg("reload: %ld %s", r.status, r.body);
    assert_non_null(strstr(r.body, "reloaded"));
    http_resp_free(&r);
    assert_true(models_list_has(gw, "m2"));
    r = http_req("POST", API(gw, "/v1/chat/completions"),
                 "{\"model\":\"m2\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", NULL);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    write_file(path, cfg);
    r = http_req("POST", ADMIN(gw, "/admin/reload"), "", tok_hdr);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    assert_false(models_list_has(gw, "m2"));
    /* A broken file is refused with its error; the running config stays. */
    write_file(path, cfg2);
    r = http_req("POST", ADMIN(gw, "/admin/reload"), NULL, tok_hdr);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    write_file(path, "{\"providers\": [");
    r = http_req("POST", ADMIN(gw, "/admin/reload"), NULL, tok_hdr);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "line 1"));
    http_resp_free(&r);
    unlink(path);
    r = http_req("POST", ADMIN(gw, "/admin/reload"), NULL, tok_hdr);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "cannot open"));
    http_resp_free(&r);
    assert_true(models_list_has(gw, "m2"));
    air__gw_stop(gw, 1000);
    free(cfg2);
    free(cfg);
    air_mock_stop(m[0]);
    air_mock_stop(m[1]);
}

struct bgreq {
    uint16_t port;
    long status;
    char provider[32];
};

static void *
bg_chat(void *p)
{
    struct bgreq *b = p;
    char u[128];
    struct http_resp r = http_req("POST", gwt_url(u, sizeof u, b->port, "/v1/chat/completions"),
                                  gwt_plain_body, NULL);
    b->status = r.status;
    http_header(&r, "x-airouter-provider", b->provider, sizeof b->provider);
    http_resp_free(&r);
    return NULL;
}

static void
test_admin_reload_keeps_requests_in_flight_and_kept_alive_connections(void **state)
{
    (void)state;
    setenv("GWT_ADMIN_TOKEN", "adm-secret-token-42", 1);
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.latency_ms = 700; /* both: the route may pick either */
    air_mock_t *m[2] = {gwt_mock(&o), gwt_mock(&o)};
    const char *ex = "\"access_log\":{\"level\":\"off\"},\"admin\":{\"listen\":\"127.0.0.1:0\","
                     "\"token_env\":\"GWT_ADMIN_TOKEN\"}";
    char *cfg = gwt_config(m, 2, ex);
    struct air__gw *gw = gwt_gateway(cfg);
    /* A kept-alive connection, used once before the reload. */
    int fd = gwt_connect(air__gw_port(gw));
    assert_true(fd >= 0);
    char body[16384];
    assert_int_equal(gwt_raw_request(fd, "GET", "/v1/models", NULL, body, sizeof body), 200);
    assert_null(strstr(body, "\"m2\""));
    /* A request in flight while the reload happens. */
    struct bgreq b = {.port = air__gw_port(gw)};
    pthread_t t;
    pthread_create(&t, NULL, bg_chat, &b);
    uint64_t t0 = gwt_now_ms();
    while (air__gw_inflight(gw) == 0 && gwt_now_ms() - t0 < 5000)
        gwt_sleep_ms(5);
    assert_true(air__gw_inflight(gw) > 0);
    gwt_sleep_ms(50);
    char *cfg2 = with_m2(cfg);
    struct http_resp r = http_req("POST", ADMIN(gw, "/admin/reload"), cfg2, tok_hdr);
    if (r.status != 200)
        fail_msg("reload: %ld %s", r.status, r.body);
    http_resp_free(&r);
    assert_true(air__gw_inflight(gw) > 0); /* the reload did not wait for it */
    pthread_join(t, NULL);
    assert_int_equal(b.status, 200);
    assert_true(strcmp(b.provider, "p0") == 0 || strcmp(b.provider, "p1") == 0);
    /* The same connection serves the new configuration. */
    assert_int_equal(gwt_raw_request(fd, "GET", "/v1/models", NULL, body, sizeof body), 200);
    assert_non_null(strstr(body, "\"id\":\"m2\""));
    assert_int_equal(gwt_raw_request(fd, "POST", "/v1/chat/completions",
                                     "{\"model\":\"m2\",\"messages\":[{\"role\":\"user\","
                                     "\"content\":\"x\"}]}",
                                     body, sizeof body),
                     200);
    assert_non_null(strstr(body, "chat.completion"));
    close(fd);
    air__gw_stop(gw, 1000);
    free(cfg2);
    free(cfg);
    air_mock_stop(m[0]);
    air_mock_stop(m[1]);
}

int
main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_admin_token_required),
        cmocka_unit_test(test_admin_disabled_without_token_env),
        cmocka_unit_test(test_admin_stats_has_engine_and_gateway_figures),
        cmocka_unit_test(test_admin_config_redacts_secrets),
        cmocka_unit_test(test_admin_reload_bad_config_keeps_running),
        cmocka_unit_test(test_admin_ctl_unknown_path_404),
        /* These need the policy engine's functions (air_config_json,
         * air_reload, air_ctl_*, air_explain). */
        cmocka_unit_test(test_admin_config_includes_engine_config),
        cmocka_unit_test(test_admin_reload_good_config_applies),
        cmocka_unit_test(test_admin_ctl_list_get_and_set),
        cmocka_unit_test(test_admin_weight_change_moves_traffic),
        cmocka_unit_test(test_admin_explain_lists_candidates),
        cmocka_unit_test(test_admin_no_healthy_deployment_503_names_each_reason),
        cmocka_unit_test(test_admin_reload_empty_body_rereads_the_file),
        cmocka_unit_test(test_admin_reload_keeps_requests_in_flight_and_kept_alive_connections),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
