/*
 * test_azure.c - the Azure OpenAI adapter (providers/azure.c): golden wire
 * cases (tests/providers/data/azure/), the registered ops table, and an
 * allocation-failure sweep over init and encode.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "alloc.h"
#include "builtin.h"
#include "common.h"
#include "golden.h"
#include "openai.h"

static const air_provider_ops_t *
azure_ops(void)
{
    const air_provider_ops_t *ops = air__provider_find("azure");
    assert_non_null(ops);
    return ops;
}

static void
test_azure_golden_cases_pass(void **state)
{
    (void)state;
    air_test_golden_run_all(azure_ops(), "azure");
}

static void
test_azure_ops_table_is_complete(void **state)
{
    (void)state;
    const air_provider_ops_t *ops = azure_ops();
    assert_int_equal(ops->abi, AIR_PROVIDER_ABI);
    assert_string_equal(ops->name, "azure");
    assert_null(ops->default_base_url); /* the resource endpoint is the customer's */
    assert_non_null(ops->ratelimit);
    assert_non_null(ops->stream_end);
    assert_true(ops->stream_state_size >= sizeof(struct air__openai_stream));
    int n = 0;
    for (const char *const *k = ops->config_keys; k && *k; k++)
        n += strcmp(*k, "api_version") == 0 || strcmp(*k, "deployment") == 0;
    assert_int_equal(n, 2);
}

/* The deployment comes from the route's model per request: two requests
 * through one instance go to two URLs. */
static void
test_azure_deployment_follows_request_model(void **state)
{
    (void)state;
    const air_provider_ops_t *ops = azure_ops();
    cJSON *pj = cJSON_Parse("{\"api_version\":\"2024-06-01\"}");
    air_provider_cfg_t cfg = {.name = "az",
                              .kind = "azure",
                              .base_url = "https://r.openai.azure.com",
                              .api_key = "k",
                              .json = pj};
    void *st = NULL;
    char err[128];
    assert_int_equal(ops->init(&cfg, &st, err, sizeof err), AIR_OK);
    cJSON_Delete(pj);
    static const char raw[] = "{\"model\":\"gpt-4o\",\"messages\":[]}";
    cJSON *body = cJSON_Parse(raw);
    static const char *const models[] = {"east-gpt4o", "west-mini"};
    for (int i = 0; i < 2; i++) {
        air_req_view_t req = {.body = body, .raw = raw, .raw_len = strlen(raw), .model = models[i]};
        air_http_out_t out;
        air_fault_t f;
        assert_int_equal(ops->encode(st, &req, &out, &f), AIR_OK);
        char want[256];
        snprintf(want, sizeof want,
                 "https://r.openai.azure.com/openai/deployments/%s/chat/completions"
                 "?api-version=2024-06-01",
                 models[i]);
        assert_string_equal(out.url, want);
        air__http_out_clear(&out);
    }
    cJSON_Delete(body);
    ops->fini(st);
}

static void
test_azure_alloc_failure_sweep_is_clean(void **state)
{
    (void)state;
    const air_provider_ops_t *ops = azure_ops();
    static const char raw[] = "{\"model\":\"gpt-4o\",\"stream\":true,\"messages\":[]}";
    int ok_seen = 0;
    for (unsigned long n = 1; n < 100 && !ok_seen; n++) {
        cJSON *pj = cJSON_Parse("{\"deployment\":\"d\",\"api_version\":\"v1\"}");
        air_provider_cfg_t cfg = {.name = "az",
                                  .kind = "azure",
                                  .base_url = "https://r.openai.azure.com",
                                  .api_key = "k",
                                  .json = pj};
        void *st = NULL;
        char err[128];
        air__alloc_fail_after(n);
        air_status_t s = ops->init(&cfg, &st, err, sizeof err);
        if (s != AIR_OK) {
            air__alloc_fail_after(0);
            assert_int_equal(s, AIR_E_NOMEM);
            assert_null(st);
            cJSON_Delete(pj);
            continue;
        }
        cJSON *body = cJSON_Parse(raw);
        air_req_view_t req = {.body = body, .raw = raw, .raw_len = strlen(raw), .stream = 1};
        air_http_out_t out;
        air_fault_t f;
        s = ops->encode(st, &req, &out, &f);
        air__alloc_fail_after(0);
        if (s == AIR_OK)
            ok_seen = 1;
        else
            assert_int_equal(s, AIR_E_NOMEM);
        air__http_out_clear(&out);
        ops->fini(st);
        cJSON_Delete(body);
        cJSON_Delete(pj);
    }
    assert_true(ok_seen);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_azure_golden_cases_pass),
        cmocka_unit_test(test_azure_ops_table_is_complete),
        cmocka_unit_test(test_azure_deployment_follows_request_model),
        cmocka_unit_test(test_azure_alloc_failure_sweep_is_clean),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
