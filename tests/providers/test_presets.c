/*
 * test_presets.c - the OpenAI-compatible presets (providers/presets.c):
 * golden wire cases for each preset (tests/providers/data/<preset>/), the
 * ops tables as registered in the built-in table, the rewrite check mode
 * leaving the caller's body alone, and an allocation-failure sweep.
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
ops_of(const char *kind)
{
    const air_provider_ops_t *ops = air__provider_find(kind);
    assert_non_null(ops);
    return ops;
}

#define GOLDEN_TEST(kind)                                                                          \
    static void test_presets_##kind##_golden_cases_pass(void **state)                              \
    {                                                                                              \
        (void)state;                                                                               \
        air_test_golden_run_all(ops_of(#kind), #kind);                                             \
    }

GOLDEN_TEST(deepseek)
GOLDEN_TEST(mistral)
GOLDEN_TEST(groq)
GOLDEN_TEST(together)
GOLDEN_TEST(openrouter)
GOLDEN_TEST(xai)
GOLDEN_TEST(ollama)
GOLDEN_TEST(vllm)

static void
test_presets_ops_tables_are_complete(void **state)
{
    (void)state;
    static const struct {
        const char *kind;
        const char *base;
    } want[] = {
        {"deepseek", "https://api.deepseek.com"},       {"mistral", "https://api.mistral.ai/v1"},
        {"groq", "https://api.groq.com/openai/v1"},     {"together", "https://api.together.xyz/v1"},
        {"openrouter", "https://openrouter.ai/api/v1"}, {"xai", "https://api.x.ai/v1"},
        {"ollama", "http://localhost:11434/v1"},        {"vllm", "http://localhost:8000/v1"},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const air_provider_ops_t *ops = ops_of(want[i].kind);
        print_message("kind %s\n", want[i].kind);
        assert_int_equal(ops->abi, AIR_PROVIDER_ABI);
        assert_string_equal(ops->name, want[i].kind);
        assert_string_equal(ops->default_base_url, want[i].base);
        assert_true(ops->caps & AIR_CAP_STREAM);
        assert_non_null(ops->init);
        assert_non_null(ops->fini);
        assert_non_null(ops->encode);
        assert_non_null(ops->decode);
        assert_non_null(ops->classify);
        assert_non_null(ops->stream_event);
        assert_non_null(ops->stream_end);
        assert_non_null(ops->ratelimit);
        assert_true(ops->stream_state_size >= sizeof(struct air__openai_stream));
        /* Every preset accepts drop_fields. */
        int found = 0;
        for (const char *const *k = ops->config_keys; k && *k; k++)
            found |= strcmp(*k, "drop_fields") == 0;
        assert_true(found);
    }
    /* DeepSeek takes no images. */
    assert_false(ops_of("deepseek")->caps & AIR_CAP_IMAGES);
}

/* ---- encode helpers ---------------------------------------------------- */

struct enc {
    const air_provider_ops_t *ops;
    void *state;
    cJSON *body;
    air_req_view_t req;
    air_http_out_t out;
    air_fault_t f;
};

static void
enc_setup(struct enc *e, const char *kind, const char *raw, const char *provider_json)
{
    memset(e, 0, sizeof *e);
    e->ops = ops_of(kind);
    cJSON *pj = provider_json ? cJSON_Parse(provider_json) : NULL;
    air_provider_cfg_t cfg = {.name = "p", .kind = kind, .api_key = "sk-x", .json = pj};
    char err[128] = "";
    air_status_t st = e->ops->init(&cfg, &e->state, err, sizeof err);
    cJSON_Delete(pj);
    assert_int_equal(st, AIR_OK);
    e->body = cJSON_Parse(raw);
    assert_non_null(e->body);
    e->req.body = e->body;
    e->req.raw = raw;
    e->req.raw_len = strlen(raw);
    e->req.stream = cJSON_IsTrue(cJSON_GetObjectItem(e->body, "stream"));
}

static void
enc_teardown(struct enc *e)
{
    air__http_out_clear(&e->out);
    e->ops->fini(e->state);
    cJSON_Delete(e->body);
}

static cJSON *
out_json(const struct enc *e)
{
    const char *b = e->out.body_ref ? e->out.body_ref : e->out.body;
    return cJSON_ParseWithLength(b, e->out.body_len);
}

static const char mistral_req[] =
    "{\"model\":\"mistral-large-latest\",\"seed\":7,\"max_completion_tokens\":64,"
    "\"tool_choice\":\"required\",\"stream\":true,\"stream_options\":{\"include_usage\":true},"
    "\"user\":\"u1\",\"metadata\":{\"a\":\"b\"},"
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{}}}],"
    "\"messages\":[{\"role\":\"developer\",\"content\":\"Be terse.\"},"
    "{\"role\":\"user\",\"name\":\"ann\",\"content\":\"go\"},"
    "{\"role\":\"assistant\",\"content\":null,\"refusal\":null,\"tool_calls\":["
    "{\"id\":\"call_Xy7Qm2Lr9PaB3cDe\",\"type\":\"function\",\"function\":{\"name\":\"f\","
    "\"arguments\":\"{}\"}},{\"id\":\"abcDEF123\",\"type\":\"function\",\"function\":"
    "{\"name\":\"f\",\"arguments\":\"{}\"}}]},"
    "{\"role\":\"tool\",\"tool_call_id\":\"call_Xy7Qm2Lr9PaB3cDe\",\"content\":\"1\"},"
    "{\"role\":\"tool\",\"tool_call_id\":\"abcDEF123\",\"content\":\"2\"}]}";

static int
valid_mistral_id(const char *id)
{
    if (strlen(id) != 9)
        return 0;
    for (const char *p = id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')))
            return 0;
    return 1;
}

static void
test_presets_mistral_tool_ids_match_and_are_valid(void **state)
{
    (void)state;
    struct enc e;
    enc_setup(&e, "mistral", mistral_req, NULL);
    assert_int_equal(e.ops->encode(e.state, &e.req, &e.out, &e.f), AIR_OK);
    cJSON *j = out_json(&e);
    assert_non_null(j);
    cJSON *msgs = cJSON_GetObjectItem(j, "messages");
    const char *a0 =
        cJSON_GetObjectItem(
            cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetArrayItem(msgs, 2), "tool_calls"), 0),
            "id")
            ->valuestring;
    const char *a1 =
        cJSON_GetObjectItem(
            cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetArrayItem(msgs, 2), "tool_calls"), 1),
            "id")
            ->valuestring;
    const char *t0 = cJSON_GetObjectItem(cJSON_GetArrayItem(msgs, 3), "tool_call_id")->valuestring;
    const char *t1 = cJSON_GetObjectItem(cJSON_GetArrayItem(msgs, 4), "tool_call_id")->valuestring;
    assert_true(valid_mistral_id(a0));
    assert_string_equal(a0, t0);
    assert_string_equal(a1, "abcDEF123"); /* already valid: untouched */
    assert_string_equal(t1, "abcDEF123");
    /* The rest of Mistral's rules. */
    assert_null(cJSON_GetObjectItem(j, "stream_options"));
    assert_null(cJSON_GetObjectItem(j, "seed"));
    assert_null(cJSON_GetObjectItem(j, "user"));
    assert_null(cJSON_GetObjectItem(j, "metadata"));
    assert_null(cJSON_GetObjectItem(j, "max_completion_tokens"));
    assert_int_equal(cJSON_GetObjectItem(j, "random_seed")->valueint, 7);
    assert_int_equal(cJSON_GetObjectItem(j, "max_tokens")->valueint, 64);
    assert_string_equal(cJSON_GetObjectItem(j, "tool_choice")->valuestring, "any");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(msgs, 0), "role")->valuestring,
                        "system");
    assert_null(cJSON_GetObjectItem(cJSON_GetArrayItem(msgs, 1), "name"));
    assert_null(cJSON_GetObjectItem(cJSON_GetArrayItem(msgs, 2), "refusal"));

    /* Deterministic: a second encode (another instance) gives the same id. */
    struct enc e2;
    enc_setup(&e2, "mistral", mistral_req, NULL);
    assert_int_equal(e2.ops->encode(e2.state, &e2.req, &e2.out, &e2.f), AIR_OK);
    cJSON *j2 = out_json(&e2);
    assert_true(cJSON_Compare(j, j2, 1));
    cJSON_Delete(j2);
    enc_teardown(&e2);
    cJSON_Delete(j);
    enc_teardown(&e);
}

static void
test_presets_check_mode_leaves_caller_body_untouched(void **state)
{
    (void)state;
    static const char *const kinds[] = {"deepseek",   "mistral", "groq",   "together",
                                        "openrouter", "xai",     "ollama", "vllm"};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        struct enc e;
        enc_setup(&e, kinds[i], mistral_req, NULL);
        cJSON *before = cJSON_Duplicate(e.body, 1);
        air_status_t st = e.ops->encode(e.state, &e.req, &e.out, &e.f);
        print_message("kind %s -> %d\n", kinds[i], (int)st);
        assert_int_equal(st, AIR_OK);
        /* Every preset rewrites this body (developer role at least)... */
        assert_null(e.out.body_ref);
        /* ...without touching the caller's parsed tree. */
        assert_true(cJSON_Compare(before, e.body, 1));
        cJSON_Delete(before);
        enc_teardown(&e);
    }
}

static void
test_presets_drop_fields_config(void **state)
{
    (void)state;
    struct enc e;
    enc_setup(&e, "vllm",
              "{\"model\":\"m\",\"messages\":[],\"store\":true,\"service_tier\":\"auto\","
              "\"top_k\":5}",
              "{\"drop_fields\":[\"store\",\"service_tier\"]}");
    assert_int_equal(e.ops->encode(e.state, &e.req, &e.out, &e.f), AIR_OK);
    cJSON *j = out_json(&e);
    assert_null(cJSON_GetObjectItem(j, "store"));
    assert_null(cJSON_GetObjectItem(j, "service_tier"));
    assert_int_equal(cJSON_GetObjectItem(j, "top_k")->valueint, 5);
    cJSON_Delete(j);
    enc_teardown(&e);

    /* A wrong type is a config error naming the key. */
    cJSON *pj = cJSON_Parse("{\"drop_fields\":\"store\"}");
    air_provider_cfg_t cfg = {.name = "p", .kind = "vllm", .json = pj};
    void *st = NULL;
    char err[128] = "";
    assert_int_equal(ops_of("vllm")->init(&cfg, &st, err, sizeof err), AIR_E_CONFIG);
    assert_null(st);
    assert_non_null(strstr(err, "drop_fields"));
    cJSON_Delete(pj);
    pj = cJSON_Parse("{\"drop_fields\":[\"ok\", 3]}");
    cfg.json = pj;
    assert_int_equal(ops_of("vllm")->init(&cfg, &st, err, sizeof err), AIR_E_CONFIG);
    cJSON_Delete(pj);
}

/* Every allocation that can fail, fails cleanly: encode returns NOMEM (or
 * succeeds), init returns NOMEM, nothing leaks (ASan build). */
static void
test_presets_alloc_failure_sweep_is_clean(void **state)
{
    (void)state;
    static const char *const kinds[] = {"mistral", "deepseek", "groq", "openrouter"};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        int ok_seen = 0;
        for (unsigned long n = 1; n < 200 && !ok_seen; n++) {
            const air_provider_ops_t *ops = ops_of(kinds[k]);
            cJSON *pj = cJSON_Parse("{\"drop_fields\":[\"x\",\"y\"],\"http_referer\":\"r\"}");
            air_provider_cfg_t cfg = {.name = "p", .kind = kinds[k], .api_key = "sk-x", .json = pj};
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
            cJSON *body = cJSON_Parse(mistral_req);
            air_req_view_t req = {
                .body = body, .raw = mistral_req, .raw_len = strlen(mistral_req), .stream = 1};
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
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_presets_deepseek_golden_cases_pass),
        cmocka_unit_test(test_presets_mistral_golden_cases_pass),
        cmocka_unit_test(test_presets_groq_golden_cases_pass),
        cmocka_unit_test(test_presets_together_golden_cases_pass),
        cmocka_unit_test(test_presets_openrouter_golden_cases_pass),
        cmocka_unit_test(test_presets_xai_golden_cases_pass),
        cmocka_unit_test(test_presets_ollama_golden_cases_pass),
        cmocka_unit_test(test_presets_vllm_golden_cases_pass),
        cmocka_unit_test(test_presets_ops_tables_are_complete),
        cmocka_unit_test(test_presets_mistral_tool_ids_match_and_are_valid),
        cmocka_unit_test(test_presets_check_mode_leaves_caller_body_untouched),
        cmocka_unit_test(test_presets_drop_fields_config),
        cmocka_unit_test(test_presets_alloc_failure_sweep_is_clean),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
