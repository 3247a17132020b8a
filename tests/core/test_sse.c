/*
 * test_sse.c - core/sse.c: canned streams (OpenAI, Anthropic, comments,
 * multi-line data, CRLF, CR-only, mixtures, UTF-8) give the expected events,
 * and the same events whether fed whole, split in two at every byte, byte by
 * byte, or in pseudo-random pieces; [DONE], size bounds, callback stop,
 * finish and reset.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "sse.h"
#include "alloc.h"
#include "buf.h"

/* ------------------------------------------------------------------ harness */

/* Events are logged as "<event_len>:<data_len>:<event><data>\n", so any byte
 * (NUL, newline) in a field is compared exactly. */
struct rec {
    air_buf_t log;
    size_t nevents;
    size_t stop_at; /* return nonzero from the callback for event #stop_at (1-based); 0: never */
};

static int
on_event(void *ud, const char *event, size_t event_len, const char *data, size_t data_len)
{
    struct rec *r = ud;
    /* Both strings must be NUL-terminated at their length. */
    assert_int_equal(event[event_len], '\0');
    assert_int_equal(data[data_len], '\0');
    air__buf_printf(&r->log, "%zu:%zu:", event_len, data_len);
    air__buf_append(&r->log, event, event_len);
    air__buf_append(&r->log, data, data_len);
    air__buf_putc(&r->log, '\n');
    r->nevents++;
    return r->stop_at != 0 && r->nevents == r->stop_at;
}

struct result {
    char *log; /* owned */
    size_t nevents;
    air_status_t st;
    int done;
    int pending; /* air__sse_finish's return */
};

static void
result_free(struct result *res)
{
    air__free(res->log);
    res->log = NULL;
}

/* Feed `in` in pieces of the given sizes (the last piece takes the rest);
 * stop at the first non-OK status, as a caller would. */
static struct result
run_pieces(const char *in, size_t len, const size_t *sizes, size_t nsizes, size_t max_event,
           size_t stop_at)
{
    struct air__sse p;
    struct rec r = {AIR_BUF_INIT, 0, stop_at};
    struct result res = {0};
    air__sse_init(&p, max_event);
    size_t off = 0;
    air_status_t st = AIR_OK;
    for (size_t k = 0; st == AIR_OK && off < len; k++) {
        size_t n = k < nsizes ? sizes[k] : len - off;
        if (n > len - off)
            n = len - off;
        st = air__sse_feed(&p, in + off, n, on_event, &r);
        off += n;
    }
    res.st = st;
    res.done = p.done;
    res.pending = st == AIR_OK ? air__sse_finish(&p) : 0;
    res.nevents = r.nevents;
    air__buf_putc(&r.log, '\0'); /* make sure there is a buffer even with no events */
    res.log = air__buf_steal(&r.log, NULL);
    air__sse_free(&p);
    assert_non_null(res.log);
    return res;
}

static struct result
run_whole(const char *in, size_t len, size_t max_event, size_t stop_at)
{
    size_t sz = len;
    return run_pieces(in, len, &sz, 1, max_event, stop_at);
}

static void
assert_same(const struct result *a, const struct result *b, const char *what, size_t at)
{
    if (a->st != b->st || a->done != b->done || a->pending != b->pending ||
        a->nevents != b->nevents || strcmp(a->log, b->log) != 0) {
        print_error("mismatch (%s at %zu): st %d/%d done %d/%d pending %d/%d events %zu/%zu\n"
                    "--- whole:\n%s--- split:\n%s",
                    what, at, a->st, b->st, a->done, b->done, a->pending, b->pending, a->nevents,
                    b->nevents, a->log, b->log);
        fail();
    }
}

/* Every way of splitting required by the issue, plus three-way splits for
 * short inputs and a few pseudo-random chunkings; all must equal one feed. */
static struct result
check_all_splits(const char *in, size_t len, size_t max_event, size_t stop_at)
{
    struct result whole = run_whole(in, len, max_event, stop_at);

    for (size_t k = 0; k <= len; k++) {
        size_t sz[1] = {k};
        struct result r = run_pieces(in, len, sz, 1, max_event, stop_at);
        assert_same(&whole, &r, "two feeds", k);
        result_free(&r);
    }

    size_t *ones = air__malloc((len ? len : 1) * sizeof *ones);
    assert_non_null(ones);
    for (size_t k = 0; k < len; k++)
        ones[k] = 1;
    struct result bb = run_pieces(in, len, ones, len, max_event, stop_at);
    assert_same(&whole, &bb, "byte by byte", 0);
    result_free(&bb);
    air__free(ones);

    if (len <= 160) {
        for (size_t i = 0; i <= len; i++) {
            for (size_t j = i; j <= len; j++) {
                size_t sz[2] = {i, j - i};
                struct result r = run_pieces(in, len, sz, 2, max_event, stop_at);
                assert_same(&whole, &r, "three feeds", i * 1000 + j);
                result_free(&r);
            }
        }
    }

    uint32_t seed = 2463534242u;
    for (int round = 0; round < 50; round++) {
        size_t sz[64];
        for (size_t k = 0; k < 64; k++) {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            sz[k] = seed % 7; /* empty feeds included */
        }
        struct result r = run_pieces(in, len, sz, 64, max_event, stop_at);
        assert_same(&whole, &r, "random", (size_t)round);
        result_free(&r);
    }
    return whole;
}

/* Build the expected log from (event, data) pairs; NULL event ends the list. */
static char *
expect_log(const char *const *pairs)
{
    air_buf_t b = AIR_BUF_INIT;
    for (size_t i = 0; pairs[i] != NULL; i += 2) {
        air__buf_printf(&b, "%zu:%zu:", strlen(pairs[i]), strlen(pairs[i + 1]));
        air__buf_puts(&b, pairs[i]);
        air__buf_puts(&b, pairs[i + 1]);
        air__buf_putc(&b, '\n');
    }
    air__buf_putc(&b, '\0');
    char *s = air__buf_steal(&b, NULL);
    assert_non_null(s);
    return s;
}

static void
check_stream(const char *in, const char *const *pairs, int want_done, int want_pending)
{
    struct result res = check_all_splits(in, strlen(in), 0, 0);
    char *want = expect_log(pairs);
    assert_int_equal(res.st, AIR_OK);
    assert_string_equal(res.log, want);
    assert_int_equal(res.done, want_done);
    assert_int_equal(res.pending, want_pending);
    air__free(want);
    result_free(&res);
}

/* ------------------------------------------------------------------ streams */

static void
test_sse_openai_stream_events_and_done(void **state)
{
    (void)state;
    const char *in = "data: {\"id\":\"c1\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n"
                     "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"total_tokens\":3}}\n\n"
                     "data: [DONE]\n\n"
                     "data: after done is ignored\n\n"
                     "garbage \r\r\n\n";
    const char *const ev[] = {"",  "{\"id\":\"c1\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}",
                              "",  "{\"id\":\"c1\",\"choices\":[],\"usage\":{\"total_tokens\":3}}",
                              "",  "[DONE]",
                              NULL};
    check_stream(in, ev, 1, 0);
}

static void
test_sse_anthropic_stream_event_names(void **state)
{
    (void)state;
    const char *in = "event: message_start\n"
                     "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\"}}\n\n"
                     "event: ping\n"
                     "data: {\"type\": \"ping\"}\n\n"
                     "event: content_block_delta\n"
                     "data: {\"type\":\"content_block_delta\",\"index\":0,"
                     "\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n"
                     "event: message_stop\n"
                     "data: {\"type\":\"message_stop\"}\n\n";
    const char *const ev[] = {"message_start",
                              "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\"}}",
                              "ping",
                              "{\"type\": \"ping\"}",
                              "content_block_delta",
                              "{\"type\":\"content_block_delta\",\"index\":0,"
                              "\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}",
                              "message_stop",
                              "{\"type\":\"message_stop\"}",
                              NULL};
    check_stream(in, ev, 0, 0);
}

static void
test_sse_comments_ignored(void **state)
{
    (void)state;
    const char *in = ": keep-alive\n\n"
                     ": OPENROUTER PROCESSING\n\n"
                     "data: a\n"
                     ":comment between data lines\n"
                     "data: b\n\n"
                     ":\n\n"
                     ": data: not data\n\n";
    const char *const ev[] = {"", "a\nb", NULL};
    check_stream(in, ev, 0, 0);
}

static void
test_sse_multiline_data_joined_with_lf(void **state)
{
    (void)state;
    const char *in = "data: line1\n"
                     "data: line2\n"
                     "data:\n"
                     "data:  two spaces\n"
                     "data:no space\n\n";
    const char *const ev[] = {"", "line1\nline2\n\n two spaces\nno space", NULL};
    check_stream(in, ev, 0, 0);
}

static void
test_sse_crlf_line_ends(void **state)
{
    (void)state;
    const char *in = "event: a\r\ndata: 1\r\n\r\n"
                     "data: 2\r\ndata: 3\r\n\r\n"
                     ": c\r\n\r\n";
    const char *const ev[] = {"a", "1", "", "2\n3", NULL};
    check_stream(in, ev, 0, 0);
}

static void
test_sse_cr_only_line_ends(void **state)
{
    (void)state;
    const char *in = "event: x\rdata: 1\r\rdata: 2\rdata: 3\r\r";
    const char *const ev[] = {"x", "1", "", "2\n3", NULL};
    check_stream(in, ev, 0, 0);
}

static void
test_sse_mixed_line_ends(void **state)
{
    (void)state;
    /* "\r\n" + "\n", "\r" + "\r", "\n" + "\r\n", "\r" + "\n"... in turn. */
    const char *in = "data: 1\r\n\n"
                     "data: 2\r\r"
                     "data: 3\n\r\n"
                     "event: e\rdata: 4\n\r"
                     "data: 5\r\n\r\n"
                     "data: 6\n\n";
    const char *const ev[] = {"", "1", "", "2", "", "3", "e", "4", "", "5", "", "6", NULL};
    check_stream(in, ev, 0, 0);
}

static void
test_sse_blank_lines_before_first_event(void **state)
{
    (void)state;
    const char *in = "\n\n\r\n\r\r\n\ndata: first\n\n";
    const char *const ev[] = {"", "first", NULL};
    check_stream(in, ev, 0, 0);
}

static void
test_sse_utf8_text_intact(void **state)
{
    (void)state;
    const char *in = "data: h\xc3\xa9llo \xe4\xb8\x96\xe7\x95\x8c \xf0\x9f\x8e\x89\n\n"
                     "event: \xc3\xbcn\xc3\xaf\n"
                     "data: \xe2\x88\x91\r\n\r\n";
    const char *const ev[] = {"", "h\xc3\xa9llo \xe4\xb8\x96\xe7\x95\x8c \xf0\x9f\x8e\x89",
                              "\xc3\xbcn\xc3\xaf", "\xe2\x88\x91", NULL};
    check_stream(in, ev, 0, 0);
}

static void
test_sse_fields_without_colon_and_ignored_fields(void **state)
{
    (void)state;
    const char *in = "data\n\n"           /* field name only: empty data, still an event */
                     "event\ndata: y\n\n" /* event with empty name */
                     "id: 5\nretry: 100\ndata: z\n\n"
                     "foo: bar\ndata: w\n\n" /* unknown field ignored */
                     "Data: no\n\n"          /* field names are case-sensitive */
                     "data : no\n\n"         /* "data " is not "data" */
                     "event: a\nevent: b\ndata: last name wins\n\n";
    const char *const ev[] = {"", "", "", "y", "", "z", "", "w", "b", "last name wins", NULL};
    check_stream(in, ev, 0, 0);
}

static void
test_sse_event_without_data_not_delivered(void **state)
{
    (void)state;
    /* The name of an undelivered event does not leak into the next one. */
    const char *in = "event: lonely\n\n"
                     "id: 7\n\n"
                     "data: x\n\n";
    const char *const ev[] = {"", "x", NULL};
    check_stream(in, ev, 0, 0);
}

static void
test_sse_unterminated_event_is_pending(void **state)
{
    (void)state;
    const char *const ev[] = {"", "x", NULL};
    check_stream("data: x\n\ndata: partial", ev, 0, 1);
    check_stream("data: x\n\ndata: no blank line\n", ev, 0, 1);
    check_stream("data: x\n\n: comment tail", ev, 0, 0);
    check_stream("data: x\n\n", ev, 0, 0);
}

static void
test_sse_embedded_nul_bytes_kept(void **state)
{
    (void)state;
    static const char in[] = "data: a\0b\n\n";
    struct result res = check_all_splits(in, sizeof in - 1, 0, 0);
    static const char want[] = "0:3:a\0b\n";
    assert_int_equal(res.st, AIR_OK);
    assert_int_equal(res.nevents, 1);
    assert_memory_equal(res.log, want, sizeof want);
    result_free(&res);
}

/* ------------------------------------------------------------------ [DONE] */

static void
test_sse_done_variants(void **state)
{
    (void)state;
    const char *const ev1[] = {"", "[DONE]", NULL};
    check_stream("data:[DONE]\r\n\r\ndata: more\n\n", ev1, 1, 0);
    const char *const ev2[] = {"x", "[DONE]", NULL};
    check_stream("event: x\ndata: [DONE]\r\rdata: more\r\r", ev2, 1, 0);
    /* Not the sentinel: extra bytes, or a second data line. */
    const char *const ev3[] = {"", "[DONE] ", "", "[DONE]\n", "", "y", NULL};
    check_stream("data: [DONE] \n\ndata: [DONE]\ndata:\n\ndata: y\n\n", ev3, 0, 0);
}

static void
test_sse_done_ignores_later_feeds(void **state)
{
    (void)state;
    struct air__sse p;
    struct rec r = {AIR_BUF_INIT, 0, 0};
    air__sse_init(&p, 0);
    assert_int_equal(air__sse_feed(&p, "data: [DONE]\n\n", 14, on_event, &r), AIR_OK);
    assert_int_equal(p.done, 1);
    /* Even input that would otherwise be an error is ignored now. */
    assert_int_equal(air__sse_feed(&p, "data: x\n\n", 9, on_event, &r), AIR_OK);
    assert_int_equal(r.nevents, 1);
    assert_int_equal(air__sse_finish(&p), 0);
    air__buf_free(&r.log);
    air__sse_free(&p);
}

/* ------------------------------------------------------------------ bounds */

static void
test_sse_oversize_line_protocol_error(void **state)
{
    (void)state;
    /* max 16: a 16-byte line passes, a 17-byte line fails, split or not. */
    struct result ok = check_all_splits("data: 0123456789\n\n", 18, 16, 0);
    assert_int_equal(ok.st, AIR_OK);
    assert_int_equal(ok.nevents, 1);
    result_free(&ok);

    struct result bad = check_all_splits("data: a\n\ndata: 0123456789X\n\ndata: b\n\n", 37, 16, 0);
    assert_int_equal(bad.st, AIR_E_PROTOCOL);
    assert_int_equal(bad.nevents, 1); /* the event before the long line was delivered */
    result_free(&bad);

    /* An unterminated tail is bounded too (no unbounded growth waiting for a
     * line end); so is a comment line. */
    struct result tail = check_all_splits("data: a\n\ndata: 0123456789XYZ", 28, 16, 0);
    assert_int_equal(tail.st, AIR_E_PROTOCOL);
    assert_int_equal(tail.nevents, 1);
    result_free(&tail);
    struct result comment = check_all_splits(": 0123456789abcdefghij\n\n", 24, 16, 0);
    assert_int_equal(comment.st, AIR_E_PROTOCOL);
    result_free(&comment);
}

static void
test_sse_oversize_joined_data_protocol_error(void **state)
{
    (void)state;
    /* Each line is short, the joined data is 5+1+5+1+5 = 17 > 16. */
    const char *in = "data: 01234\ndata: 56789\ndata: abcde\n\n";
    struct result bad = check_all_splits(in, strlen(in), 16, 0);
    assert_int_equal(bad.st, AIR_E_PROTOCOL);
    assert_int_equal(bad.nevents, 0);
    result_free(&bad);
    /* Exactly 16 bytes of data is fine. */
    const char *in2 = "data: 01234\ndata: 56789\ndata: abcd\n\n";
    struct result ok = check_all_splits(in2, strlen(in2), 16, 0);
    assert_int_equal(ok.st, AIR_OK);
    assert_int_equal(ok.nevents, 1);
    result_free(&ok);
}

static void
test_sse_large_cr_only_stream_parses(void **state)
{
    (void)state;
    /* 20000 CR-terminated events in one feed: exercises the cached LF search
     * (a rescan per line would be quadratic). */
    air_buf_t in = AIR_BUF_INIT;
    for (int i = 0; i < 20000; i++)
        air__buf_printf(&in, "data: %d\r\r", i);
    struct result res = run_whole(in.data, in.len, 0, 0);
    assert_int_equal(res.st, AIR_OK);
    assert_int_equal(res.nevents, 20000);
    assert_non_null(strstr(res.log, "0:5:19999\n"));
    result_free(&res);
    air__buf_free(&in);
}

/* ------------------------------------------------------------------ control */

static void
test_sse_callback_stop_cancels(void **state)
{
    (void)state;
    const char *in = "data: 1\n\ndata: 2\n\ndata: 3\n\n";
    struct result res = check_all_splits(in, strlen(in), 0, 2);
    assert_int_equal(res.st, AIR_E_CANCELLED);
    assert_int_equal(res.nevents, 2);
    assert_string_equal(res.log, "0:1:1\n0:1:2\n");
    result_free(&res);
}

static void
test_sse_reset_reuses_parser(void **state)
{
    (void)state;
    struct air__sse p;
    struct rec r = {AIR_BUF_INIT, 0, 0};
    air__sse_init(&p, 64);
    /* Leave a partial event, a pending CR and then [DONE] state behind. */
    assert_int_equal(air__sse_feed(&p, "event: old\ndata: old\r", 21, on_event, &r), AIR_OK);
    air__sse_reset(&p);
    assert_int_equal(p.done, 0);
    /* A leading LF after reset is a blank line, not half of the old CRLF, and
     * the old event name and data are gone. */
    assert_int_equal(air__sse_feed(&p, "\ndata: new\n\ndata: [DONE]\n\n", 26, on_event, &r),
                     AIR_OK);
    assert_int_equal(p.done, 1);
    air__sse_reset(&p);
    assert_int_equal(p.done, 0);
    assert_int_equal(air__sse_feed(&p, "data: again\n\n", 13, on_event, &r), AIR_OK);
    assert_string_equal(r.log.data, "0:3:new\n0:6:[DONE]\n0:5:again\n");
    /* After an error, reset makes the parser usable again. */
    char big[100];
    memset(big, 'x', sizeof big);
    assert_int_equal(air__sse_feed(&p, big, sizeof big, on_event, &r), AIR_E_PROTOCOL);
    air__sse_reset(&p);
    assert_int_equal(air__sse_feed(&p, "data: ok\n\n", 10, on_event, &r), AIR_OK);
    assert_int_equal(r.nevents, 4);
    air__buf_free(&r.log);
    air__sse_free(&p);
    air__sse_free(&p); /* twice is harmless */
    air__sse_free(NULL);
}

static void
test_sse_alloc_failure_is_nomem(void **state)
{
    (void)state;
    const char *in = "event: e\ndata: abc\n\ndata: partial";
    for (unsigned long k = 1; k < 20; k++) {
        struct air__sse p;
        struct rec r = {AIR_BUF_INIT, 0, 0};
        air__sse_init(&p, 0);
        air__alloc_fail_after(k);
        air_status_t st = air__sse_feed(&p, in, strlen(in), on_event, &r);
        air__alloc_fail_after(0);
        assert_true(st == AIR_OK || st == AIR_E_NOMEM);
        if (st == AIR_OK)
            assert_int_equal(r.nevents, 1);
        air__buf_free(&r.log);
        air__sse_free(&p);
    }
}

/* A vendor error written as bare JSON inside a 200 stream is kept (bounded)
 * for core to classify; id/retry/comments are not. */
static void
test_sse_non_field_lines_are_kept_as_junk(void **state)
{
    (void)state;
    const char *in = "id: 7\nretry: 10\n: comment\n[{\n  \"error\": {\n    \"code\": 429,\n"
                     "    \"status\": \"RESOURCE_EXHAUSTED\"\n  }\n}]\n";
    struct air__sse p;
    struct rec r = {AIR_BUF_INIT, 0, 0};
    air__sse_init(&p, 0);
    for (size_t i = 0; in[i] != '\0'; i++)
        assert_int_equal(air__sse_feed(&p, in + i, 1, on_event, &r), AIR_OK);
    assert_int_equal(r.nevents, 0);
    assert_non_null(p.junk.data);
    assert_non_null(strstr(p.junk.data, "RESOURCE_EXHAUSTED"));
    assert_null(strstr(p.junk.data, "retry"));
    assert_null(strstr(p.junk.data, "comment"));
    /* Bounded. */
    for (int i = 0; i < 2000; i++)
        assert_int_equal(air__sse_feed(&p, "{\"error\": \"xxxxxxxxxxxxxxxx\"}\n", 30, on_event, &r),
                         AIR_OK);
    assert_true(p.junk.len <= AIR_SSE_JUNK_MAX + 2048);
    air__sse_reset(&p);
    assert_int_equal(p.junk.len, 0);
    air__sse_free(&p);
    air__buf_free(&r.log);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sse_openai_stream_events_and_done),
        cmocka_unit_test(test_sse_anthropic_stream_event_names),
        cmocka_unit_test(test_sse_comments_ignored),
        cmocka_unit_test(test_sse_multiline_data_joined_with_lf),
        cmocka_unit_test(test_sse_crlf_line_ends),
        cmocka_unit_test(test_sse_cr_only_line_ends),
        cmocka_unit_test(test_sse_mixed_line_ends),
        cmocka_unit_test(test_sse_blank_lines_before_first_event),
        cmocka_unit_test(test_sse_utf8_text_intact),
        cmocka_unit_test(test_sse_fields_without_colon_and_ignored_fields),
        cmocka_unit_test(test_sse_event_without_data_not_delivered),
        cmocka_unit_test(test_sse_unterminated_event_is_pending),
        cmocka_unit_test(test_sse_embedded_nul_bytes_kept),
        cmocka_unit_test(test_sse_done_variants),
        cmocka_unit_test(test_sse_done_ignores_later_feeds),
        cmocka_unit_test(test_sse_oversize_line_protocol_error),
        cmocka_unit_test(test_sse_oversize_joined_data_protocol_error),
        cmocka_unit_test(test_sse_large_cr_only_stream_parses),
        cmocka_unit_test(test_sse_callback_stop_cancels),
        cmocka_unit_test(test_sse_reset_reuses_parser),
        cmocka_unit_test(test_sse_alloc_failure_is_nomem),
        cmocka_unit_test(test_sse_non_field_lines_are_kept_as_junk),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
