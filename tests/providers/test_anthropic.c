/*
 * test_anthropic.c - providers/anthropic.c: the golden wire cases under
 * tests/providers/data/anthropic/, plus the things canned files cannot show:
 * allocation failure in encode/decode/stream, core asking a stream to stop,
 * the bounded stream state under many content blocks, the ops table, and
 * every stop_reason of spec 6.7 mapped alike in a reply and in a stream.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <cmocka.h>

#include "airouter/provider.h"
#include "alloc.h"
#include "buf.h"
#include "common.h"
#include "golden.h"

extern const air_provider_ops_t air_provider_anthropic;

#define OPS (&air_provider_anthropic)

/* ---- fixtures ---------------------------------------------------------- */

struct fx {
    void *state;
    cJSON *cfg;
};

static int
setup(void **state)
{
    struct fx *fx = air__calloc(1, sizeof *fx);
    assert_non_null(fx);
    fx->cfg = cJSON_Parse("{\"name\":\"p\",\"kind\":\"anthropic\"}");
    assert_non_null(fx->cfg);
    air_provider_cfg_t cfg = {"p", "anthropic", NULL, AIR_TEST_GOLDEN_KEY, fx->cfg};
    char err[128] = "";
    assert_int_equal(OPS->init(&cfg, &fx->state, err, sizeof err), AIR_OK);
    *state = fx;
    return 0;
}

static int
teardown(void **state)
{
    struct fx *fx = *state;
    OPS->fini(fx->state);
    cJSON_Delete(fx->cfg);
    air__free(fx);
    return 0;
}

static air_req_view_t
mk_req(const cJSON *body, int stream, int include_usage)
{
    air_req_view_t r;
    memset(&r, 0, sizeof r);
    r.body = body;
    r.model = "claude-sonnet-4-5";
    r.stream = stream;
    r.include_usage = include_usage;
    r.now_unix = 1760000000;
    r.request_id = "air-test-1";
    return r;
}

static const char *
no_header(const void *hctx, const char *name)
{
    (void)hctx;
    (void)name;
    return NULL;
}

/* Collected chunks of one stream. */
struct sink {
    air_buf_t all; /* chunks joined by '\n' */
    size_t n;
    int stop_after; /* ask core-style stop after this many chunks; 0 = never */
};

static int
sink_emit(void *ud, const char *json, size_t len, unsigned flags)
{
    struct sink *s = ud;
    (void)flags;
    air__buf_append(&s->all, json, len);
    air__buf_putc(&s->all, '\n');
    s->n++;
    return s->stop_after != 0 && s->n >= (size_t)s->stop_after;
}

static const char *const big_request =
    "{\"model\":\"m\",\"temperature\":0.5,\"stop\":[\"END\"],\"user\":\"u1\","
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":"
    "{\"type\":\"object\"}}}],\"tool_choice\":\"required\",\"parallel_tool_calls\":false,"
    "\"messages\":[{\"role\":\"system\",\"content\":\"sys\"},"
    "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"hi\"},"
    "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,AAAA\"}}]},"
    "{\"role\":\"assistant\",\"content\":\"ok\",\"tool_calls\":[{\"id\":\"c:1\","
    "\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\":1}\"}}]},"
    "{\"role\":\"tool\",\"tool_call_id\":\"c:1\",\"content\":\"r\"},"
    "{\"role\":\"user\",\"content\":\"more\"}]}";

/* ---- tests ------------------------------------------------------------- */

static void
test_anthropic_golden_cases_pass(void **state)
{
    (void)state;
    air_test_golden_run_all(OPS, "anthropic");
}

static void
test_anthropic_ops_table_declares_kind(void **state)
{
    (void)state;
    assert_int_equal(OPS->abi, AIR_PROVIDER_ABI);
    assert_string_equal(OPS->name, "anthropic");
    assert_string_equal(OPS->default_base_url, "https://api.anthropic.com");
    assert_true(OPS->caps & AIR_CAP_STREAM);
    assert_true(OPS->caps & AIR_CAP_TOOLS);
    assert_true(OPS->caps & AIR_CAP_IMAGES);
    assert_true(OPS->caps & AIR_CAP_JSON);
    assert_non_null(OPS->stream_event);
    assert_non_null(OPS->stream_end);
    assert_true(OPS->stream_state_size > 0 && OPS->stream_state_size < 4096);
    int saw_max = 0, saw_ver = 0;
    for (const char *const *k = OPS->config_keys; *k != NULL; k++) {
        saw_max |= strcmp(*k, "default_max_tokens") == 0;
        saw_ver |= strcmp(*k, "anthropic_version") == 0;
    }
    assert_true(saw_max && saw_ver);
}

static void
test_anthropic_encode_alloc_failure_returns_nomem(void **state)
{
    struct fx *fx = *state;
    cJSON *body = cJSON_Parse(big_request);
    assert_non_null(body);
    air_req_view_t req = mk_req(body, 0, 0);
    int saw_ok = 0;
    for (unsigned long k = 1; k < 200 && !saw_ok; k++) {
        air_http_out_t out;
        air_fault_t f;
        memset(&f, 0, sizeof f);
        air__alloc_fail_after(k);
        air_status_t st = OPS->encode(fx->state, &req, &out, &f);
        air__alloc_fail_after(0);
        if (st == AIR_OK) {
            saw_ok = 1;
            assert_non_null(out.body);
            assert_non_null(out.url);
            assert_int_equal(out.nheaders, 4);
        } else {
            assert_int_equal(st, AIR_E_NOMEM);
            assert_null(out.body);
            assert_null(out.url);
            assert_int_equal(out.nheaders, 0);
        }
        air__http_out_clear(&out);
    }
    assert_true(saw_ok);
    cJSON_Delete(body);
}

static void
test_anthropic_decode_alloc_failure_returns_nomem(void **state)
{
    struct fx *fx = *state;
    static const char reply[] =
        "{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"m\","
        "\"content\":[{\"type\":\"thinking\",\"thinking\":\"t\",\"signature\":\"s\"},"
        "{\"type\":\"text\",\"text\":\"hello\"},{\"type\":\"tool_use\",\"id\":\"toolu_1\","
        "\"name\":\"f\",\"input\":{\"a\":1}}],\"stop_reason\":\"tool_use\","
        "\"usage\":{\"input_tokens\":3,\"output_tokens\":4}}";
    cJSON *body = cJSON_Parse("{\"model\":\"m\",\"messages\":[]}");
    air_req_view_t req = mk_req(body, 0, 0);
    air_http_in_t in = {200, reply, sizeof reply - 1, no_header, NULL, 0};
    int saw_ok = 0;
    for (unsigned long k = 1; k < 200 && !saw_ok; k++) {
        air_decoded_t d;
        air_fault_t f;
        air__alloc_fail_after(k);
        air_status_t st = OPS->decode(fx->state, &req, &in, &d, &f);
        air__alloc_fail_after(0);
        if (st == AIR_OK) {
            saw_ok = 1;
            assert_non_null(strstr(d.body, "\"tool_calls\""));
            assert_string_equal(d.finish_reason, "tool_calls");
            assert_int_equal(d.usage.prompt, 3);
        } else {
            assert_int_equal(st, AIR_E_NOMEM);
            assert_null(d.body);
        }
        air__decoded_clear(&d);
    }
    assert_true(saw_ok);
    cJSON_Delete(body);
}

/* Feed a list of (event, data) pairs; returns the last rc. */
static air_stream_rc_t
feed(struct fx *fx, air_stream_ctx_t *sc, const char *const *ev, size_t n)
{
    air_stream_rc_t rc = AIR_STREAM_MORE;
    for (size_t i = 0; i + 1 < n && rc == AIR_STREAM_MORE; i += 2)
        rc = OPS->stream_event(fx->state, sc, ev[i], strlen(ev[i]), ev[i + 1], strlen(ev[i + 1]));
    return rc;
}

static const char *const text_stream[] = {
    "message_start",
    "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"m\",\"usage\":"
    "{\"input_tokens\":5,\"output_tokens\":1}}}",
    "content_block_start",
    "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\","
    "\"text\":\"\"}}",
    "content_block_delta",
    "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
    "\"text\":\"Hello\"}}",
    "content_block_delta",
    "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
    "\"text\":\" again\"}}",
    "content_block_stop",
    "{\"type\":\"content_block_stop\",\"index\":0}",
    "message_delta",
    "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":"
    "{\"output_tokens\":7}}",
    "message_stop",
    "{\"type\":\"message_stop\"}",
};

static void
test_anthropic_stream_core_stop_leaves_fault_untouched(void **state)
{
    struct fx *fx = *state;
    cJSON *body = cJSON_Parse("{\"model\":\"m\",\"messages\":[]}");
    air_req_view_t req = mk_req(body, 1, 1);
    _Alignas(16) uint8_t st[1024];
    assert_true(OPS->stream_state_size <= sizeof st);
    for (int stop_after = 1; stop_after <= 3; stop_after++) {
        memset(st, 0, sizeof st);
        struct sink s = {AIR_BUF_INIT, 0, stop_after};
        air_stream_ctx_t sc;
        memset(&sc, 0, sizeof sc);
        sc.state = st;
        sc.req = &req;
        sc.emit = sink_emit;
        sc.emit_ud = &s;
        air_stream_rc_t rc = feed(fx, &sc, text_stream, sizeof text_stream / sizeof text_stream[0]);
        assert_int_equal(rc, AIR_STREAM_ERROR);
        assert_int_equal(s.n, (size_t)stop_after);
        assert_int_equal(sc.fault.cls, AIR_ERR_NONE);
        assert_string_equal(sc.fault.message, "");
        air__buf_free(&s.all);
    }
    cJSON_Delete(body);
}

static void
test_anthropic_stream_alloc_failure_is_an_error(void **state)
{
    struct fx *fx = *state;
    cJSON *body = cJSON_Parse("{\"model\":\"m\",\"messages\":[]}");
    air_req_view_t req = mk_req(body, 1, 1);
    _Alignas(16) uint8_t st[1024];
    int saw_done = 0;
    for (unsigned long k = 1; k < 100 && !saw_done; k++) {
        memset(st, 0, sizeof st);
        struct sink s = {AIR_BUF_INIT, 0, 0};
        air_stream_ctx_t sc;
        memset(&sc, 0, sizeof sc);
        sc.state = st;
        sc.req = &req;
        sc.emit = sink_emit;
        sc.emit_ud = &s;
        air__alloc_fail_after(k);
        air_stream_rc_t rc = feed(fx, &sc, text_stream, sizeof text_stream / sizeof text_stream[0]);
        air__alloc_fail_after(0);
        if (rc == AIR_STREAM_DONE) {
            saw_done = 1;
        } else {
            /* Either our sink or the adapter hit the failure; either way a
             * clean error. */
            assert_int_equal(rc, AIR_STREAM_ERROR);
        }
        air__buf_free(&s.all);
    }
    assert_true(saw_done);
    cJSON_Delete(body);
}

/* Many tool blocks, one after the other: the bounded block table is reused
 * and tool indexes keep counting. */
static void
test_anthropic_stream_many_tool_blocks_keep_counting(void **state)
{
    struct fx *fx = *state;
    cJSON *body = cJSON_Parse("{\"model\":\"m\",\"messages\":[]}");
    air_req_view_t req = mk_req(body, 1, 0);
    _Alignas(16) uint8_t st[1024];
    memset(st, 0, sizeof st);
    struct sink s = {AIR_BUF_INIT, 0, 0};
    air_stream_ctx_t sc;
    memset(&sc, 0, sizeof sc);
    sc.state = st;
    sc.req = &req;
    sc.emit = sink_emit;
    sc.emit_ud = &s;
    assert_int_equal(feed(fx, &sc, text_stream, 2), AIR_STREAM_MORE);
    for (int i = 0; i < 40; i++) {
        char start[256], delta[256], stop[64];
        snprintf(start, sizeof start,
                 "{\"type\":\"content_block_start\",\"index\":%d,\"content_block\":"
                 "{\"type\":\"tool_use\",\"id\":\"toolu_%d\",\"name\":\"f\",\"input\":{}}}",
                 i, i);
        snprintf(delta, sizeof delta,
                 "{\"type\":\"content_block_delta\",\"index\":%d,\"delta\":"
                 "{\"type\":\"input_json_delta\",\"partial_json\":\"{}\"}}",
                 i);
        snprintf(stop, sizeof stop, "{\"type\":\"content_block_stop\",\"index\":%d}", i);
        const char *ev[] = {"", start, "", delta, "", stop};
        assert_int_equal(feed(fx, &sc, ev, 6), AIR_STREAM_MORE);
    }
    /* role + 40 * (start + args) */
    assert_int_equal(s.n, 81);
    assert_non_null(strstr(s.all.data, "{\"index\":39,\"id\":\"toolu_39\""));
    assert_non_null(strstr(s.all.data, "{\"index\":39,\"function\":{\"arguments\":\"{}\"}}"));
    /* More than the table holds, open at once: a clean error, not a crash. */
    air_stream_rc_t rc = AIR_STREAM_MORE;
    for (int i = 100; i < 200 && rc == AIR_STREAM_MORE; i++) {
        char start[256];
        snprintf(start, sizeof start,
                 "{\"type\":\"content_block_start\",\"index\":%d,\"content_block\":"
                 "{\"type\":\"text\",\"text\":\"\"}}",
                 i);
        rc = OPS->stream_event(fx->state, &sc, "", 0, start, strlen(start));
    }
    assert_int_equal(rc, AIR_STREAM_ERROR);
    assert_int_equal(sc.fault.cls, AIR_ERR_UPSTREAM);
    air__buf_free(&s.all);
    cJSON_Delete(body);
}

/* Spec 6.7, every Anthropic row: the same unified finish_reason from a
 * plain reply and from a stream (message_delta, or message_stop alone when
 * the stop_reason stays null). "~" marks a JSON null stop_reason. */
static void
test_anthropic_stop_reason_table_same_plain_and_streamed(void **state)
{
    struct fx *fx = *state;
    static const struct {
        const char *vendor, *unified;
    } rows[] = {
        {"end_turn", "stop"},
        {"stop_sequence", "stop"},
        {"max_tokens", "length"},
        {"tool_use", "tool_calls"},
        {"pause_turn", "stop"},
        {"refusal", "content_filter"},
        {"model_context_window_exceeded", "length"},
        {"~", "stop"},
        {"compaction_needed_in_2030", "stop"},
    };
    cJSON *body = cJSON_Parse("{\"model\":\"m\",\"messages\":[]}");
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char sr[64];
        if (strcmp(rows[i].vendor, "~") == 0)
            snprintf(sr, sizeof sr, "null");
        else
            snprintf(sr, sizeof sr, "\"%s\"", rows[i].vendor);

        char reply[512];
        snprintf(reply, sizeof reply,
                 "{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"m\","
                 "\"content\":[{\"type\":\"text\",\"text\":\"hi\"}],\"stop_reason\":%s,"
                 "\"usage\":{\"input_tokens\":3,\"output_tokens\":4}}",
                 sr);
        air_req_view_t req = mk_req(body, 0, 0);
        air_http_in_t in = {200, reply, strlen(reply), no_header, NULL, 0};
        air_decoded_t d;
        air_fault_t f;
        assert_int_equal(OPS->decode(fx->state, &req, &in, &d, &f), AIR_OK);
        if (strcmp(d.finish_reason, rows[i].unified) != 0)
            fail_msg("plain %s: got %s, want %s", rows[i].vendor, d.finish_reason, rows[i].unified);
        char want[64];
        snprintf(want, sizeof want, "\"finish_reason\":\"%s\"", rows[i].unified);
        assert_non_null(strstr(d.body, want));
        air__decoded_clear(&d);

        char delta[256];
        snprintf(delta, sizeof delta,
                 "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":%s},\"usage\":"
                 "{\"output_tokens\":7}}",
                 sr);
        const char *ev[] = {text_stream[0], text_stream[1], text_stream[2],
                            text_stream[3], text_stream[4], text_stream[5],
                            text_stream[8], text_stream[9], "message_delta",
                            delta,          "message_stop", "{\"type\":\"message_stop\"}"};
        _Alignas(16) uint8_t st[1024];
        assert_true(OPS->stream_state_size <= sizeof st);
        memset(st, 0, sizeof st);
        struct sink s = {AIR_BUF_INIT, 0, 0};
        req = mk_req(body, 1, 0);
        air_stream_ctx_t sc;
        memset(&sc, 0, sizeof sc);
        sc.state = st;
        sc.req = &req;
        sc.emit = sink_emit;
        sc.emit_ud = &s;
        assert_int_equal(feed(fx, &sc, ev, sizeof ev / sizeof ev[0]), AIR_STREAM_DONE);
        if (strcmp(sc.finish_reason, rows[i].unified) != 0)
            fail_msg("stream %s: got %s, want %s", rows[i].vendor, sc.finish_reason,
                     rows[i].unified);
        /* role, "Hello", finish: exactly one finish chunk. */
        assert_int_equal(s.n, 3);
        const char *hit = strstr(s.all.data, want);
        assert_non_null(hit);
        assert_null(strstr(hit + 1, "\"finish_reason\":\""));
        air__buf_free(&s.all);
    }
    cJSON_Delete(body);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_anthropic_golden_cases_pass),
        cmocka_unit_test(test_anthropic_ops_table_declares_kind),
        cmocka_unit_test_setup_teardown(test_anthropic_encode_alloc_failure_returns_nomem, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_anthropic_decode_alloc_failure_returns_nomem, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_anthropic_stream_core_stop_leaves_fault_untouched,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_anthropic_stream_alloc_failure_is_an_error, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_anthropic_stream_many_tool_blocks_keep_counting, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_anthropic_stop_reason_table_same_plain_and_streamed,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
