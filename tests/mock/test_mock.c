/*
 * test_mock.c - the mock provider, driven over real loopback sockets: the
 * OpenAI format and its HTTP and fault machinery, the Anthropic, Gemini and
 * Azure formats (plain, streamed, tool calls, vendor-shaped errors) and
 * --record.
 *
 * DESIGN: each test starts its own mock on an ephemeral port with the options
 * it needs (the fixture stops it, even when an assertion fails) and talks to
 * it with libcurl, the client the router itself uses, or with a raw socket
 * where the test needs bytes curl would not send (malformed requests,
 * pipelining, chunked uploads, HTTP/1.0).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "mock.h"
#include "alloc.h"
#include "buf.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct fx {
    air_mock_t *m;
    char base[64]; /* http://127.0.0.1:PORT */
};

struct resp {
    long status;
    CURLcode rc;
    air_buf_t body;
    air_buf_t head; /* every header line curl saw, 1xx included */
    long new_conns;
    double elapsed_ms;
};

static double
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int
setup(void **state)
{
    struct fx *f = air__calloc(1, sizeof *f);
    assert_non_null(f);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fx *f = *state;
    air_mock_stop(f->m);
    air__free(f);
    return 0;
}

static void
fx_start(struct fx *f, const air_mock_opts_t *o)
{
    char err[256] = "";
    int rc = air_mock_start(o, &f->m, err, sizeof err);
    if (rc != 0)
        fail_msg("air_mock_start: %s", err);
    assert_int_not_equal(air_mock_port(f->m), 0);
    snprintf(f->base, sizeof f->base, "http://127.0.0.1:%u", (unsigned)air_mock_port(f->m));
}

static size_t
on_body(char *p, size_t sz, size_t n, void *ud)
{
    air__buf_append(ud, p, sz * n);
    return sz * n;
}

static void
resp_free(struct resp *r)
{
    air__buf_free(&r->body);
    air__buf_free(&r->head);
    memset(r, 0, sizeof *r);
}

/* One transfer on h (reused between calls, so keep-alive applies). body NULL
 * means GET unless method says otherwise. hdrs is NULL-terminated. */
static void
xfer(CURL *h, const char *url, const char *method, const char *body, size_t blen,
     const char *const *hdrs, struct resp *r)
{
    memset(r, 0, sizeof *r);
    struct curl_slist *sl = NULL;
    for (size_t i = 0; hdrs && hdrs[i]; i++)
        sl = curl_slist_append(sl, hdrs[i]);
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &r->body);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &r->head);
    if (body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
    }
    if (method)
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    if (sl)
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, sl);
    double t0 = now_ms();
    r->rc = curl_easy_perform(h);
    r->elapsed_ms = now_ms() - t0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
    curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &r->new_conns);
    curl_slist_free_all(sl);
}

static void
post_chat(CURL *h, const struct fx *f, const char *body, const char *const *hdrs, struct resp *r)
{
    char url[128];
    snprintf(url, sizeof url, "%s/v1/chat/completions", f->base);
    xfer(h, url, NULL, body, strlen(body), hdrs, r);
}

static void
get(CURL *h, const struct fx *f, const char *path, struct resp *r)
{
    char url[160];
    snprintf(url, sizeof url, "%s%s", f->base, path);
    xfer(h, url, NULL, NULL, 0, NULL, r);
}

static const char *
str_at(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double
num_at(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    assert_true(cJSON_IsNumber(v));
    return v->valuedouble;
}

static int
has_header(const struct resp *r, const char *line)
{
    return r->head.data && strcasestr(r->head.data, line) != NULL;
}

/* Assert an OpenAI-shaped error body and return its type (static copy). */
static void
assert_error_body(const struct resp *r, const char *type, const char *code)
{
    cJSON *j = cJSON_Parse(r->body.data ? r->body.data : "");
    assert_non_null(j);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    assert_true(cJSON_IsObject(e));
    assert_non_null(str_at(e, "message"));
    assert_string_equal(str_at(e, "type"), type);
    assert_true(cJSON_HasObjectItem(e, "param"));
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "code");
    if (code)
        assert_string_equal(c->valuestring, code);
    else
        assert_true(cJSON_IsNull(c));
    cJSON_Delete(j);
}

/* ------------------------------------------------------------------ raw sockets */

static int
raw_connect(const struct fx *f)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons(air_mock_port(f->m));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

static void
raw_send(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        assert_true(w > 0);
        p += w;
        n -= (size_t)w;
    }
}

/* Read until the peer closes (returns 1) or timeout_ms passes (returns 0). */
static int
raw_read_all(int fd, air_buf_t *b, int timeout_ms)
{
    double end = now_ms() + timeout_ms;
    for (;;) {
        int left = (int)(end - now_ms());
        if (left <= 0)
            return 0;
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, left) <= 0)
            continue;
        char tmp[65536];
        ssize_t r = recv(fd, tmp, sizeof tmp, 0);
        if (r <= 0)
            return 1;
        air__buf_append(b, tmp, (size_t)r);
    }
}

static size_t
count_of(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = hay; p && (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

/* ------------------------------------------------------------------ tests */

static const char chat_body[] =
    "{\"model\":\"gpt-mock\",\"messages\":[{\"role\":\"user\",\"content\":\"hello there\"}]}";

static void
test_mock_plain_completion_has_openai_fields_and_usage(void **state)
{
    struct fx *f = *state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.chunks = 4;
    fx_start(f, &o);
    CURL *h = curl_easy_init();
    struct resp r;
    post_chat(h, f, chat_body, NULL, &r);
    assert_int_equal(r.rc, CURLE_OK);
    assert_int_equal(r.status, 200);
    assert_true(has_header(&r, "Content-Type: application/json"));

    cJSON *j = cJSON_Parse(r.body.data);
    assert_non_null(j);
    assert_int_equal(strncmp(str_at(j, "id"), "chatcmpl-mock-", 14), 0);
    assert_string_equal(str_at(j, "object"), "chat.completion");
    assert_true(num_at(j, "created") > 1.6e9);
    assert_string_equal(str_at(j, "model"), "gpt-mock");
    const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    assert_non_null(ch);
    assert_int_equal((int)num_at(ch, "index"), 0);
    assert_string_equal(str_at(ch, "finish_reason"), "stop");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(ch, "logprobs")));
    const cJSON *msg = cJSON_GetObjectItem(ch, "message");
    assert_string_equal(str_at(msg, "role"), "assistant");
    assert_string_equal(str_at(msg, "content"), "tok0 tok1 tok2 tok3 ");
    const cJSON *u = cJSON_GetObjectItem(j, "usage");
    int p = (int)(strlen(chat_body) / 4);
    assert_int_equal((int)num_at(u, "prompt_tokens"), p);
    assert_int_equal((int)num_at(u, "completion_tokens"), 4);
    assert_int_equal((int)num_at(u, "total_tokens"), p + 4);
    cJSON_Delete(j);

    char body[512], auth[64];
    air_mock_last_request(f->m, body, sizeof body, auth, sizeof auth);
    assert_string_equal(body, chat_body);
    assert_string_equal(auth, "");
    char tiny[8];
    air_mock_last_request(f->m, tiny, sizeof tiny, NULL, 0);
    assert_string_equal(tiny, "{\"model");
    resp_free(&r);
    curl_easy_cleanup(h);
}

/* Split an SSE body into the JSON texts of its data events. */
static size_t
sse_events(char *body, char **ev, size_t max)
{
    size_t n = 0;
    char *save = NULL;
    for (char *t = strtok_r(body, "\n", &save); t && n < max; t = strtok_r(NULL, "\n", &save)) {
        assert_int_equal(strncmp(t, "data: ", 6), 0);
        ev[n++] = t + 6;
    }
    return n;
}

static void
test_mock_stream_events_in_order_with_usage_and_done(void **state)
{
    struct fx *f = *state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.chunks = 3;
    fx_start(f, &o);
    CURL *h = curl_easy_init();
    struct resp r;
    post_chat(h, f,
              "{\"model\":\"m1\",\"stream\":true,\"stream_options\":{\"include_usage\":true},"
              "\"messages\":[]}",
              NULL, &r);
    assert_int_equal(r.rc, CURLE_OK);
    assert_int_equal(r.status, 200);
    assert_true(has_header(&r, "Content-Type: text/event-stream"));
    assert_true(has_header(&r, "Transfer-Encoding: chunked"));

    char *ev[32];
    size_t n = sse_events(r.body.data, ev, 32);
    assert_int_equal(n, 1 + 3 + 1 + 1 + 1); /* role, pieces, finish, usage, DONE */
    char id0[64] = "";
    for (size_t i = 0; i + 1 < n; i++) {
        cJSON *j = cJSON_Parse(ev[i]);
        assert_non_null(j);
        assert_string_equal(str_at(j, "object"), "chat.completion.chunk");
        assert_string_equal(str_at(j, "model"), "m1");
        assert_true(num_at(j, "created") > 1.6e9);
        if (i == 0)
            snprintf(id0, sizeof id0, "%s", str_at(j, "id"));
        assert_int_equal(strncmp(id0, "chatcmpl-mock-", 14), 0);
        assert_string_equal(str_at(j, "id"), id0); /* the same id on every chunk */
        const cJSON *choices = cJSON_GetObjectItem(j, "choices");
        const cJSON *c0 = cJSON_GetArrayItem(choices, 0);
        const cJSON *d = cJSON_GetObjectItem(c0, "delta");
        if (i == 0) {
            assert_string_equal(str_at(d, "role"), "assistant");
            assert_string_equal(str_at(d, "content"), "");
            assert_true(cJSON_IsNull(cJSON_GetObjectItem(c0, "finish_reason")));
        } else if (i <= 3) {
            char want[16];
            snprintf(want, sizeof want, "tok%zu ", i - 1);
            assert_string_equal(str_at(d, "content"), want);
            assert_null(cJSON_GetObjectItem(d, "role"));
            assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "usage")));
        } else if (i == 4) {
            assert_true(cJSON_IsObject(d));
            assert_null(d->child);
            assert_string_equal(str_at(c0, "finish_reason"), "stop");
        } else {
            assert_int_equal(cJSON_GetArraySize(choices), 0);
            const cJSON *u = cJSON_GetObjectItem(j, "usage");
            assert_int_equal((int)num_at(u, "completion_tokens"), 3);
            assert_int_equal((int)num_at(u, "total_tokens"), (int)num_at(u, "prompt_tokens") + 3);
        }
        cJSON_Delete(j);
    }
    assert_string_equal(ev[n - 1], "[DONE]");
    resp_free(&r);

    /* Without include_usage: no usage chunk, and the connection is reused. */
    post_chat(h, f, "{\"model\":\"m1\",\"stream\":true}", NULL, &r);
    assert_int_equal(r.rc, CURLE_OK);
    assert_int_equal(r.new_conns, 0);
    n = sse_events(r.body.data, ev, 32);
    assert_int_equal(n, 1 + 3 + 1 + 1);
    assert_null(strstr(r.body.data, "\"usage\""));
    assert_string_equal(ev[n - 1], "[DONE]");
    resp_free(&r);

    air_mock_stats_t s;
    air_mock_stats(f->m, &s);
    assert_int_equal(s.streams, 2);
    assert_int_equal(s.ok, 2);
    assert_int_equal(s.connections, 1);
    curl_easy_cleanup(h);
}

static void
test_mock_keepalive_serves_many_requests_on_one_connection(void **state)
{
    struct fx *f = *state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    fx_start(f, &o);
    CURL *h = curl_easy_init();
    struct resp r;
    for (int i = 0; i < 6; i++) {
        if (i % 3 == 2)
            get(h, f, "/v1/models", &r);
        else
            post_chat(h, f, chat_body, NULL, &r);
        assert_int_equal(r.rc, CURLE_OK);
        assert_int_equal(r.status, 200);
        assert_int_equal(r.new_conns, i == 0 ? 1 : 0);
        resp_free(&r);
    }
    air_mock_stats_t s;
    air_mock_stats(f->m, &s);
    assert_int_equal(s.connections, 1);
    assert_int_equal(s.requests, 4);
    curl_easy_cleanup(h);
}

static void
test_mock_expect_continue_big_body_gets_100_then_200(void **state)
{
    struct fx *f = *state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    fx_start(f, &o);
    size_t pad = 2u * 1024u * 1024u;
    air_buf_t b = AIR_BUF_INIT;
    air__buf_puts(&b, "{\"model\":\"big\",\"messages\":[{\"role\":\"user\",\"content\":\"");
    for (size_t i = 0; i < pad; i++)
        air__buf_putc(&b, 'a' + (char)(i % 26));
    air__buf_puts(&b, "\"}]}");
    assert_false(b.oom);

    CURL *h = curl_easy_init();
    char url[128];
    snprintf(url, sizeof url, "%s/v1/chat/completions", f->base);
    const char *hdrs[] = {"Expect: 100-continue", "Content-Type: application/json", NULL};
    struct resp r;
    /* curl waits up to this long for the 100 before sending anyway: a quick
     * answer proves the mock sent it. */
    curl_easy_reset(h);
    xfer(h, url, NULL, b.data, b.len, hdrs, &r);
    assert_int_equal(r.rc, CURLE_OK);
    assert_int_equal(r.status, 200);
    assert_true(has_header(&r, "HTTP/1.1 100 Continue"));
    assert_true(r.elapsed_ms < 900); /* curl's own fallback is 1 s */
    cJSON *j = cJSON_Parse(r.body.data);
    assert_non_null(j);
    const cJSON *u = cJSON_GetObjectItem(j, "usage");
    assert_int_equal((long)num_at(u, "prompt_tokens"), (long)(b.len / 4));
    cJSON_Delete(j);
    resp_free(&r);
    air__buf_free(&b);
    curl_easy_cleanup(h);
}

static void
test_mock_models_and_healthz_answer(void **state)
{
    struct fx *f = *state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    fx_start(f, &o);
    CURL *h = curl_easy_init();
    struct resp r;
    const char *paths[] = {"/v1/models", "/models"};
    for (int i = 0; i < 2; i++) {
        get(h, f, paths[i], &r);
        assert_int_equal(r.status, 200);
        cJSON *j = cJSON_Parse(r.body.data);
        assert_non_null(j);
        assert_string_equal(str_at(j, "object"), "list");
        const cJSON *d0 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "data"), 0);
        assert_string_equal(str_at(d0, "id"), "mock-model");
        assert_string_equal(str_at(d0, "object"), "model");
        assert_int_equal((long)num_at(d0, "created"), 1700000000L);
        assert_string_equal(str_at(d0, "owned_by"), "airouter-mock");
        cJSON_Delete(j);
        resp_free(&r);
    }
    get(h, f, "/healthz", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body.data, "ok");
    resp_free(&r);
    curl_easy_cleanup(h);
}

static void
test_mock_bad_paths_methods_and_json_get_openai_errors(void **state)
{
    struct fx *f = *state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    fx_start(f, &o);
    CURL *h = curl_easy_init();
    struct resp r;

    get(h, f, "/v1/nope?x=1", &r);
    assert_int_equal(r.status, 404);
    assert_error_body(&r, "invalid_request_error", NULL);
    resp_free(&r);

    get(h, f, "/v1/chat/completions", &r);
    assert_int_equal(r.status, 405);
    assert_true(has_header(&r, "Allow: POST"));
    assert_error_body(&r, "invalid_request_error", NULL);
    resp_free(&r);

    char url[128];
    snprintf(url, sizeof url, "%s/v1/models", f->base);
    xfer(h, url, "DELETE", NULL, 0, NULL, &r);
    assert_int_equal(r.status, 405);
    resp_free(&r);

    post_chat(h, f, "{\"model\": nope", NULL, &r);
    assert_int_equal(r.status, 400);
    assert_error_body(&r, "invalid_request_error", NULL);
    assert_int_equal(r.new_conns, 0); /* a JSON error keeps the connection */
    resp_free(&r);

    post_chat(h, f, "{\"messages\":[]}", NULL, &r);
    assert_int_equal(r.status, 400);
    resp_free(&r);

    /* Also accepted without the /v1 prefix. */
    snprintf(url, sizeof url, "%s/chat/completions", f->base);
    xfer(h, url, NULL, chat_body, strlen(chat_body), NULL, &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    curl_easy_cleanup(h);
}

static void
test_mock_malformed_http_gets_400_and_close(void **state)
{
    struct fx *f = *state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    fx_start(f, &o);
    const char *bad[] = {
        "GARBAGE\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nbroken header line\r\n\r\n",
        ("POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 3\r\n"
         "Transfer-Encoding: chunked\r\n\r\n"),
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int fd = raw_connect(f);
        raw_send(fd, bad[i], strlen(bad[i]));
        air_buf_t b = AIR_BUF_INIT;
        assert_int_equal(raw_read_all(fd, &b, 3000), 1); /* closed by the mock */
        assert_non_null(b.data);
        assert_int_equal(strncmp(b.data, "HTTP/1.1 400 ", 13), 0);
        assert_non_null(strstr(b.data, "Connection: close"));
        air__buf_free(&b);
        close(fd);
    }

    /* Body over 16 MiB: 413 before any body byte is sent. */
    int fd = raw_connect(f);
    const char *big = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                      "Expect: 100-continue\r\nContent-Length: 20000000\r\n\r\n";
    raw_send(fd, big, strlen(big));
    air_buf_t b = AIR_BUF_INIT;
    assert_int_equal(raw_read_all(fd, &b, 3000), 1);
    assert_int_equal(strncmp(b.data, "HTTP/1.1 413 ", 13), 0);
    air__buf_free(&b);
    close(fd);
}

static void
test_mock_pipelined_and_chunked_requests_answered_in_order(void **state)
{
    struct fx *f = *state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.latency_ms = 5; /* the first answer is late: order must still hold */
    fx_start(f, &o);

    /* A chunked chat body cut into 7-byte chunks, then two pipelined GETs. */
    air_buf_t req = AIR_BUF_INIT;
    air__buf_puts(&req, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                        "Transfer-Encoding: chunked\r\n\r\n");
    size_t bl = strlen(chat_body);
    for (size_t i = 0; i < bl; i += 7) {
        size_t n = bl - i < 7 ? bl - i : 7;
        air__buf_printf(&req, "%zx\r\n", n);
        air__buf_append(&req, chat_body + i, n);
        air__buf_puts(&req, "\r\n");
    }
    air__buf_puts(&req, "0\r\n\r\n");
    air__buf_puts(&req, "GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n");
    air__buf_puts(&req, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    int fd = raw_connect(f);
    /* Send in two uneven writes so requests straddle reads. */
    raw_send(fd, req.data, 40);
    usleep(2000);
    raw_send(fd, req.data + 40, req.len - 40);
    air_buf_t b = AIR_BUF_INIT;
    assert_int_equal(raw_read_all(fd, &b, 3000), 1);
    assert_non_null(b.data);
    assert_int_equal(count_of(b.data, "HTTP/1.1 200 OK"), 3);
    char *p1 = strstr(b.data, "chat.completion");
    char *p2 = strstr(b.data, "airouter-mock");
    char *p3 = strstr(b.data, "\r\n\r\nok");
    assert_non_null(p1);
    assert_non_null(p2);
    assert_non_null(p3);
    assert_true(p1 < p2 && p2 < p3);
    char body[512];
    air_mock_last_request(f->m, body, sizeof body, NULL, 0);
    assert_string_equal(body, chat_body);
    air__buf_free(&b);
    air__buf_free(&req);
    close(fd);

    /* HTTP/1.0 stream: no chunked coding, the close ends it. */
    fd = raw_connect(f);
    const char *s10 = "POST /v1/chat/completions HTTP/1.0\r\nContent-Length: 31\r\n\r\n"
                      "{\"model\":\"old\",\"stream\":true}  ";
    raw_send(fd, s10, strlen(s10));
    b = (air_buf_t)AIR_BUF_INIT;
    assert_int_equal(raw_read_all(fd, &b, 3000), 1);
    assert_null(strstr(b.data, "Transfer-Encoding"));
    assert_non_null(strstr(b.data, "\r\n\r\ndata: {"));
    assert_non_null(strstr(b.data, "data: [DONE]\n\n"));
    air__buf_free(&b);
    close(fd);
}

static void
test_mock_api_key_mismatch_gets_401_without_echo(void **state)
{
    struct fx *f = *state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.api_key = "sk-mock-secret-123";
    fx_start(f, &o);
    CURL *h = curl_easy_init();
    struct resp r;

    post_chat(h, f, chat_body, NULL, &r);
    assert_int_equal(r.status, 401);
    assert_string_equal(r.body.data, "{\"error\":{\"message\":\"Incorrect API key provided\","
                                     "\"type\":\"invalid_request_error\",\"param\":null,"
                                     "\"code\":\"invalid_api_key\"}}");
    resp_free(&r);

    const char *wrong[] = {"Authorization: Bearer sk-mock-secret-12", NULL};
    post_chat(h, f, chat_body, wrong, &r);
    assert_int_equal(r.status, 401);
    assert_null(strstr(r.body.data, "sk-mock"));
    resp_free(&r);

    const char *right[] = {"Authorization: Bearer sk-mock-secret-123", NULL};
    post_chat(h, f, chat_body, right, &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);

    char auth[64];
    air_mock_last_request(f->m, NULL, 0, auth, sizeof auth);
    assert_string_equal(auth, "Bearer sk-mock-secret-123");
    air_mock_stats_t s;
    air_mock_stats(f->m, &s);
    assert_int_equal(s.unauthorized, 2);
    assert_int_equal(s.requests, 3);
    assert_int_equal(s.ok, 1);
    curl_easy_cleanup(h);
}

static void
test_mock_fail_first_sends_status_and_retry_after(void **state)
{
    struct fx *f = *state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.fail_first = 2;
    o.fail_status = 429;
    o.retry_after_s = 7;
    fx_start(f, &o);
    CURL *h = curl_easy_init();
    struct resp r;
    for (int i = 0; i < 2; i++) {
        post_chat(h, f, chat_body, NULL, &r);
        assert_int_equal(r.status, 429);
        assert_true(has_header(&r, "Retry-After: 7\r\n"));
        assert_error_body(&r, "requests", "rate_limit_exceeded");
        resp_free(&r);
    }
    post_chat(h, f, chat_body, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_false(has_header(&r, "Retry-After"));
    resp_free(&r);
    air_mock_stats_t s;
    air_mock_stats(f->m, &s);
    assert_int_equal(s.failed, 2);
    assert_int_equal(s.ok, 1);
    curl_easy_cleanup(h);
}

static void
test_mock_fail_rate_one_fails_every_request(void **state)
{
    struct fx *f = *state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.fail_rate = 1.0;
    o.fail_status = 503;
    o.latency_ms = 20;
    fx_start(f, &o);
    CURL *h = curl_easy_init();
    struct resp r;
    for (int i = 0; i < 4; i++) {
        post_chat(h, f, i % 2 ? "{\"model\":\"x\",\"stream\":true}" : chat_body, NULL, &r);
        assert_int_equal(r.status, 503);
        assert_false(has_header(&r, "Retry-After"));
        assert_error_body(&r, "server_error", NULL);
        assert_true(r.elapsed_ms >= 20); /* failures wait the latency too */
        resp_free(&r);
    }
    air_mock_stats_t s;
    air_mock_stats(f->m, &s);
    assert_int_equal(s.failed, 4);
    assert_int_equal(s.ok, 0);
    assert_int_equal(s.streams, 0);
    curl_easy_cleanup(h);
}

static void
test_mock_reset_rate_one_cuts_plain_and_stream(void **state)
{
    struct fx *f = *state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.reset_rate = 1.0;
    o.chunks = 8;
    o.chunk_delay_ms = 2;
    fx_start(f, &o);
    CURL *h = curl_easy_init();
    struct resp r;
    post_chat(h, f, chat_body, NULL, &r);
    assert_true(r.rc == CURLE_RECV_ERROR || r.rc == CURLE_PARTIAL_FILE);
    assert_int_equal(r.status, 200); /* the headers did arrive */
    resp_free(&r);

    post_chat(h, f, "{\"model\":\"x\",\"stream\":true}", NULL, &r);
    assert_true(r.rc == CURLE_RECV_ERROR || r.rc == CURLE_PARTIAL_FILE);
    assert_int_equal(r.status, 200);
    if (r.body.data) { /* what did arrive is at most the role chunk and half the pieces */
        assert_null(strstr(r.body.data, "[DONE]"));
        assert_null(strstr(r.body.data, "tok4 "));
    }
    resp_free(&r);

    air_mock_stats_t s;
    air_mock_stats(f->m, &s);
    assert_int_equal(s.resets, 2);
    assert_int_equal(s.streams, 1);
    assert_int_equal(s.ok, 0);
    curl_easy_cleanup(h);
}

static void
test_mock_latency_and_chunk_delay_are_respected(void **state)
{
    struct fx *f = *state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.latency_ms = 50;
    o.chunks = 4;
    o.chunk_delay_ms = 10;
    fx_start(f, &o);
    CURL *h = curl_easy_init();
    struct resp r;
    post_chat(h, f, chat_body, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_true(r.elapsed_ms >= 50);
    assert_true(r.elapsed_ms < 1000);
    resp_free(&r);
    post_chat(h, f, "{\"model\":\"x\",\"stream\":true}", NULL, &r);
    assert_int_equal(r.rc, CURLE_OK);
    assert_true(r.elapsed_ms >= 50 + 4 * 10);
    assert_true(r.elapsed_ms < 1000);
    resp_free(&r);
    curl_easy_cleanup(h);
}

static void
test_mock_500_concurrent_delayed_requests_overlap(void **state)
{
    enum { N = 500 };
    struct fx *f = *state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.latency_ms = 20;
    o.threads = 2;
    fx_start(f, &o);
    char url[128];
    snprintf(url, sizeof url, "%s/v1/chat/completions", f->base);

    CURLM *mh = curl_multi_init();
    CURL **hs = air__calloc(N, sizeof *hs);
    air_buf_t *bodies = air__calloc(N, sizeof *bodies);
    assert_non_null(hs);
    assert_non_null(bodies);
    for (int i = 0; i < N; i++) {
        hs[i] = curl_easy_init();
        curl_easy_setopt(hs[i], CURLOPT_URL, url);
        curl_easy_setopt(hs[i], CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(hs[i], CURLOPT_TIMEOUT_MS, 20000L);
        curl_easy_setopt(hs[i], CURLOPT_POSTFIELDS, chat_body);
        curl_easy_setopt(hs[i], CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(hs[i], CURLOPT_WRITEDATA, &bodies[i]);
        curl_multi_add_handle(mh, hs[i]);
    }
    double t0 = now_ms();
    int running = 1;
    while (running) {
        assert_int_equal(curl_multi_perform(mh, &running), CURLM_OK);
        if (running)
            curl_multi_poll(mh, NULL, 0, 100, NULL);
    }
    double elapsed = now_ms() - t0;
    int ok = 0, msgs;
    CURLMsg *msg;
    while ((msg = curl_multi_info_read(mh, &msgs)) != NULL) {
        long st = 0;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &st);
        if (msg->msg == CURLMSG_DONE && msg->data.result == CURLE_OK && st == 200)
            ok++;
    }
    for (int i = 0; i < N; i++) {
        curl_multi_remove_handle(mh, hs[i]);
        curl_easy_cleanup(hs[i]);
        air__buf_free(&bodies[i]);
    }
    air__free(hs);
    air__free(bodies);
    curl_multi_cleanup(mh);
    assert_int_equal(ok, N);
    /* Serialized, 500 x 20 ms would be 10 s. */
    print_message("500 concurrent requests with 20 ms latency took %.0f ms\n", elapsed);
    assert_true(elapsed < 4000);
    air_mock_stats_t s;
    air_mock_stats(f->m, &s);
    assert_int_equal(s.requests, N);
    assert_int_equal(s.ok, N);
}

static void
test_mock_stats_add_up_over_mixed_outcomes(void **state)
{
    struct fx *f = *state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.api_key = "k";
    o.fail_first = 1;
    fx_start(f, &o);
    CURL *h = curl_easy_init();
    struct resp r;
    const char *key[] = {"Authorization: Bearer k", NULL};
    post_chat(h, f, chat_body, NULL, &r); /* 401 */
    assert_int_equal(r.status, 401);
    resp_free(&r);
    post_chat(h, f, chat_body, key, &r); /* fail_first */
    assert_int_equal(r.status, 500);
    resp_free(&r);
    post_chat(h, f, chat_body, key, &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    post_chat(h, f, "{\"model\":\"x\",\"stream\":true}", key, &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    get(h, f, "/healthz", &r); /* not a chat request */
    resp_free(&r);
    air_mock_stats_t s;
    air_mock_stats(f->m, &s);
    assert_int_equal(s.requests, 4);
    assert_int_equal(s.requests, s.ok + s.failed + s.resets + s.unauthorized);
    assert_int_equal(s.ok, 2);
    assert_int_equal(s.failed, 1);
    assert_int_equal(s.unauthorized, 1);
    assert_int_equal(s.streams, 1);
    assert_int_equal(s.connections, 1);
    curl_easy_cleanup(h);
}

static void
test_mock_stop_with_open_connections_is_clean(void **state)
{
    struct fx *f = *state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.threads = 2;
    o.latency_ms = 5000; /* one request stays pending across the stop */
    fx_start(f, &o);
    int fds[20];
    for (int i = 0; i < 20; i++)
        fds[i] = raw_connect(f);
    raw_send(fds[0], "GET /healthz HTTP/1.1\r\n\r\n", 25);
    const char *pend = "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 13\r\n\r\n"
                       "{\"model\":\"x\"}";
    raw_send(fds[1], pend, strlen(pend));
    /* Wait until the mock has seen the connections and the chat request. */
    air_mock_stats_t s;
    for (int i = 0; i < 200; i++) {
        air_mock_stats(f->m, &s);
        if (s.connections == 20 && s.requests == 1)
            break;
        usleep(5000);
    }
    assert_int_equal(s.connections, 20);
    assert_int_equal(s.requests, 1);
    double t0 = now_ms();
    air_mock_stop(f->m);
    f->m = NULL;
    assert_true(now_ms() - t0 < 1000);
    for (int i = 0; i < 20; i++) {
        air_buf_t b = AIR_BUF_INIT;
        assert_int_equal(raw_read_all(fds[i], &b, 2000), 1); /* closed */
        air__buf_free(&b);
        close(fds[i]);
    }
    air_mock_stop(NULL);
}

static void
test_mock_client_gone_during_latency_drops_reply(void **state)
{
    struct fx *f = *state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.latency_ms = 150;
    fx_start(f, &o);
    int fd = raw_connect(f);
    const char *req = "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 13\r\n\r\n"
                      "{\"model\":\"x\"}";
    raw_send(fd, req, strlen(req));
    air_mock_stats_t s;
    for (int i = 0; i < 200; i++) {
        air_mock_stats(f->m, &s);
        if (s.requests == 1)
            break;
        usleep(2000);
    }
    assert_int_equal(s.requests, 1);
    close(fd); /* gives up before the latency is over */
    usleep(300 * 1000);
    air_mock_stats(f->m, &s);
    assert_int_equal(s.ok, 0); /* the reply was never produced */

    /* The mock still serves others. */
    CURL *h = curl_easy_init();
    struct resp r;
    post_chat(h, f, chat_body, NULL, &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    curl_easy_cleanup(h);
}

static void
test_mock_start_rejects_bad_options(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_t *m = NULL;
    char err[128];
    air_mock_opts_init(&o);
    o.fail_rate = 1.5;
    assert_int_equal(air_mock_start(&o, &m, err, sizeof err), -1);
    assert_null(m);
    assert_non_null(strstr(err, "fail_rate"));
    air_mock_opts_init(&o);
    o.host = "not-an-address";
    assert_int_equal(air_mock_start(&o, &m, err, sizeof err), -1);
    assert_null(m);
}

/* ------------------------------------------------------------------ formats */

static void
post_path(CURL *h, const struct fx *f, const char *path, const char *body, const char *const *hdrs,
          struct resp *r)
{
    char url[512];
    snprintf(url, sizeof url, "%s%s", f->base, path);
    xfer(h, url, NULL, body, strlen(body), hdrs, r);
}

static cJSON *
resp_json(const struct resp *r)
{
    cJSON *j = cJSON_Parse(r->body.data ? r->body.data : "");
    assert_non_null(j);
    return j;
}

static const cJSON *
at(const cJSON *o, const char *k)
{
    return cJSON_GetObjectItemCaseSensitive(o, k);
}

static const cJSON *
idx(const cJSON *a, int i)
{
    return cJSON_GetArrayItem(a, i);
}

/* Split an SSE body into events ("\n\n"- or "\r\n\r\n"-separated blocks):
 * names[i] is the event: field (or ""), datas[i] the data: field. */
static size_t
sse_blocks(char *body, const char *sep, char **names, char **datas, size_t max)
{
    size_t n = 0, sl = strlen(sep);
    char *p = body;
    while (p && *p && n < max) {
        char *e = strstr(p, sep);
        if (e)
            *e = '\0';
        names[n] = "";
        datas[n] = NULL;
        char *save = NULL;
        for (char *l = strtok_r(p, "\r\n", &save); l; l = strtok_r(NULL, "\r\n", &save)) {
            if (strncmp(l, "event: ", 7) == 0)
                names[n] = l + 7;
            else if (strncmp(l, "data: ", 6) == 0)
                datas[n] = l + 6;
        }
        n++;
        p = e ? e + sl : NULL;
    }
    return n;
}

static const char ant_hdr_ver[] = "anthropic-version: 2023-06-01";
static const char weather_tools_oa[] =
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
    "\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"},"
    "\"days\":{\"type\":\"integer\"},\"unit\":{\"type\":\"string\",\"enum\":[\"C\",\"F\"]}},"
    "\"required\":[\"city\",\"days\",\"unit\"]}}},"
    "{\"type\":\"function\",\"function\":{\"name\":\"other\",\"parameters\":{}}}]";
static const char weather_args[] = "{\"city\":\"mock\",\"days\":1,\"unit\":\"C\"}";

static void
test_mock_anthropic_plain_text_tool_use_and_validation(void **state)
{
    struct fx *f = *state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.format = "anthropic";
    o.chunks = 2;
    fx_start(f, &o);
    CURL *h = curl_easy_init();
    struct resp r;
    const char *hv[] = {ant_hdr_ver, NULL};
    const char *text_body = "{\"model\":\"claude-x\",\"max_tokens\":100,\"messages\":"
                            "[{\"role\":\"user\",\"content\":\"hi\"}]}";
    post_path(h, f, "/v1/messages", text_body, hv, &r);
    assert_int_equal(r.status, 200);
    cJSON *j = resp_json(&r);
    assert_string_equal(str_at(j, "id"), "msg_mock_1");
    assert_string_equal(str_at(j, "type"), "message");
    assert_string_equal(str_at(j, "role"), "assistant");
    assert_string_equal(str_at(j, "model"), "claude-x");
    const cJSON *b0 = idx(at(j, "content"), 0);
    assert_string_equal(str_at(b0, "type"), "text");
    assert_string_equal(str_at(b0, "text"), "tok0 tok1 ");
    assert_string_equal(str_at(j, "stop_reason"), "end_turn");
    assert_true(cJSON_IsNull(at(j, "stop_sequence")));
    const cJSON *u = at(j, "usage");
    assert_int_equal((int)num_at(u, "input_tokens"), (int)(strlen(text_body) / 4));
    assert_int_equal((int)num_at(u, "output_tokens"), 2);
    assert_int_equal((int)num_at(u, "cache_read_input_tokens"), 0);
    cJSON_Delete(j);
    resp_free(&r);

    /* Tools: one tool_use of the first tool, arguments from its schema. */
    const char *tool_body =
        "{\"model\":\"claude-x\",\"max_tokens\":100,\"messages\":[{\"role\":\"user\","
        "\"content\":\"weather?\"}],\"tools\":[{\"name\":\"get_weather\",\"input_schema\":"
        "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},"
        "\"required\":[\"city\"]}},{\"name\":\"other\",\"input_schema\":{\"type\":\"object\"}}]";
    air_buf_t b = AIR_BUF_INIT;
    air__buf_printf(&b, "%s}", tool_body);
    post_path(h, f, "/v1/messages", b.data, hv, &r);
    assert_int_equal(r.status, 200);
    j = resp_json(&r);
    b0 = idx(at(j, "content"), 0);
    assert_int_equal(cJSON_GetArraySize(at(j, "content")), 1);
    assert_string_equal(str_at(b0, "type"), "tool_use");
    assert_string_equal(str_at(b0, "id"), "toolu_mock_2_0");
    assert_string_equal(str_at(b0, "name"), "get_weather");
    assert_string_equal(str_at(at(b0, "input"), "city"), "mock");
    assert_string_equal(str_at(j, "stop_reason"), "tool_use");
    assert_int_equal((int)num_at(at(j, "usage"), "output_tokens"),
                     (int)((strlen("get_weather") + strlen("{\"city\":\"mock\"}")) / 4 + 1));
    cJSON_Delete(j);
    resp_free(&r);

    /* tool_choice names the second tool; {"type":"none"} forbids tools. */
    air__buf_reset(&b);
    air__buf_printf(&b, "%s,\"tool_choice\":{\"type\":\"tool\",\"name\":\"other\"}}", tool_body);
    post_path(h, f, "/v1/messages", b.data, hv, &r);
    j = resp_json(&r);
    assert_string_equal(str_at(idx(at(j, "content"), 0), "name"), "other");
    assert_int_equal(cJSON_GetArraySize(at(idx(at(j, "content"), 0), "input")), 0);
    cJSON_Delete(j);
    resp_free(&r);
    air__buf_reset(&b);
    air__buf_printf(&b, "%s,\"tool_choice\":{\"type\":\"none\"}}", tool_body);
    post_path(h, f, "/v1/messages", b.data, hv, &r);
    j = resp_json(&r);
    assert_string_equal(str_at(j, "stop_reason"), "end_turn");
    cJSON_Delete(j);
    resp_free(&r);

    /* The conversation ends with a tool result: answered in words. */
    post_path(h, f, "/v1/messages",
              "{\"model\":\"c\",\"max_tokens\":9,\"tools\":[{\"name\":\"t\",\"input_schema\":{}}],"
              "\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\","
              "\"tool_use_id\":\"x\",\"content\":\"4C\"}]}]}",
              hv, &r);
    j = resp_json(&r);
    assert_string_equal(str_at(idx(at(j, "content"), 0), "type"), "text");
    cJSON_Delete(j);
    resp_free(&r);

    /* Validation, in Anthropic's error shape. */
    post_path(h, f, "/v1/messages", text_body, NULL, &r); /* no anthropic-version */
    assert_int_equal(r.status, 400);
    j = resp_json(&r);
    assert_string_equal(str_at(j, "type"), "error");
    assert_string_equal(str_at(at(j, "error"), "type"), "invalid_request_error");
    assert_non_null(strstr(str_at(at(j, "error"), "message"), "anthropic-version"));
    cJSON_Delete(j);
    resp_free(&r);
    post_path(h, f, "/v1/messages", "{\"model\":\"c\",\"messages\":[]}", hv, &r);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body.data, "max_tokens"));
    resp_free(&r);
    post_path(h, f, "/v1/chat/completions", text_body, hv, &r); /* not this format's path */
    assert_int_equal(r.status, 404);
    j = resp_json(&r);
    assert_string_equal(str_at(at(j, "error"), "type"), "not_found_error");
    cJSON_Delete(j);
    resp_free(&r);
    get(h, f, "/v1/models", &r); /* every format keeps the models list */
    assert_int_equal(r.status, 200);
    resp_free(&r);
    air__buf_free(&b);
    curl_easy_cleanup(h);
}

static void
test_mock_anthropic_stream_events_text_and_tool_use(void **state)
{
    struct fx *f = *state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.format = "anthropic";
    o.chunks = 3;
    fx_start(f, &o);
    CURL *h = curl_easy_init();
    struct resp r;
    const char *hv[] = {ant_hdr_ver, NULL};
    post_path(h, f, "/v1/messages",
              "{\"model\":\"claude-x\",\"max_tokens\":10,\"stream\":true,\"messages\":[]}", hv, &r);
    assert_int_equal(r.status, 200);
    assert_true(has_header(&r, "Content-Type: text/event-stream"));
    char *names[32], *datas[32];
    size_t n = sse_blocks(r.body.data, "\n\n", names, datas, 32);
    static const char *const want[] = {
        "message_start",       "content_block_start", "ping",
        "content_block_delta", "content_block_delta", "content_block_delta",
        "content_block_stop",  "message_delta",       "message_stop"};
    assert_int_equal(n, 9);
    air_buf_t text = AIR_BUF_INIT;
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(names[i], want[i]);
        cJSON *j = cJSON_Parse(datas[i]);
        assert_non_null(j);
        assert_string_equal(str_at(j, "type"), want[i]); /* data type = event name */
        if (i == 0) {
            const cJSON *m = at(j, "message");
            assert_string_equal(str_at(m, "id"), "msg_mock_1");
            assert_string_equal(str_at(m, "model"), "claude-x");
            assert_true(num_at(at(m, "usage"), "input_tokens") > 0);
        } else if (i == 1) {
            assert_string_equal(str_at(at(j, "content_block"), "type"), "text");
        } else if (i >= 3 && i <= 5) {
            assert_string_equal(str_at(at(j, "delta"), "type"), "text_delta");
            air__buf_puts(&text, str_at(at(j, "delta"), "text"));
        } else if (i == 7) {
            assert_string_equal(str_at(at(j, "delta"), "stop_reason"), "end_turn");
            assert_int_equal((int)num_at(at(j, "usage"), "output_tokens"), 3);
        }
        cJSON_Delete(j);
    }
    assert_string_equal(text.data, "tok0 tok1 tok2 ");
    air__buf_free(&text);
    resp_free(&r);

    /* A tool_use block streams its input as input_json_delta fragments. */
    air_buf_t b = AIR_BUF_INIT;
    air__buf_printf(&b,
                    "{\"model\":\"c\",\"max_tokens\":10,\"stream\":true,\"messages\":[],"
                    "\"tools\":[{\"name\":\"get_weather\",\"input_schema\":%s}]}",
                    "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"},"
                    "\"days\":{\"type\":\"integer\"},\"unit\":{\"type\":\"string\","
                    "\"enum\":[\"C\",\"F\"]}},\"required\":[\"city\",\"days\",\"unit\"]}");
    post_path(h, f, "/v1/messages", b.data, hv, &r);
    air__buf_free(&b);
    n = sse_blocks(r.body.data, "\n\n", names, datas, 32);
    air_buf_t args = AIR_BUF_INIT;
    int deltas = 0, saw_start = 0, saw_stop = 0;
    for (size_t i = 0; i < n; i++) {
        cJSON *j = cJSON_Parse(datas[i]);
        assert_non_null(j);
        if (strcmp(names[i], "content_block_start") == 0) {
            const cJSON *cb = at(j, "content_block");
            assert_string_equal(str_at(cb, "type"), "tool_use");
            assert_string_equal(str_at(cb, "id"), "toolu_mock_2_0");
            assert_string_equal(str_at(cb, "name"), "get_weather");
            saw_start = 1;
        } else if (strcmp(names[i], "content_block_delta") == 0) {
            assert_string_equal(str_at(at(j, "delta"), "type"), "input_json_delta");
            air__buf_puts(&args, str_at(at(j, "delta"), "partial_json"));
            deltas++;
        } else if (strcmp(names[i], "message_delta") == 0) {
            assert_string_equal(str_at(at(j, "delta"), "stop_reason"), "tool_use");
            saw_stop = 1;
        }
        cJSON_Delete(j);
    }
    assert_true(saw_start && saw_stop);
    assert_int_equal(deltas, 1 + 3); /* the empty opening fragment, then one per chunk */
    assert_string_equal(args.data, weather_args);
    assert_string_equal(names[n - 1], "message_stop");
    air__buf_free(&args);
    resp_free(&r);
    curl_easy_cleanup(h);
}

static void
test_mock_anthropic_key_and_injected_errors(void **state)
{
    struct fx *f = *state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.format = "anthropic";
    o.api_key = "sk-ant-mock-0001";
    o.fail_first = 1;
    o.fail_status = 529;
    o.retry_after_s = 3;
    fx_start(f, &o);
    CURL *h = curl_easy_init();
    struct resp r;
    const char *body = "{\"model\":\"c\",\"max_tokens\":5,\"messages\":[]}";
    const char *none[] = {ant_hdr_ver, NULL};
    const char *bearer[] = {ant_hdr_ver, "Authorization: Bearer sk-ant-mock-0001", NULL};
    const char *right[] = {ant_hdr_ver, "x-api-key: sk-ant-mock-0001", NULL};
    const char *const *bad[] = {none, bearer};
    for (int i = 0; i < 2; i++) {
        post_path(h, f, "/v1/messages", body, bad[i], &r);
        assert_int_equal(r.status, 401);
        cJSON *j = resp_json(&r);
        assert_string_equal(str_at(at(j, "error"), "type"), "authentication_error");
        assert_null(strstr(r.body.data, "sk-ant"));
        cJSON_Delete(j);
        resp_free(&r);
    }
    post_path(h, f, "/v1/messages", body, right, &r); /* fail_first: 529 overloaded */
    assert_int_equal(r.status, 529);
    assert_true(has_header(&r, "Retry-After: 3\r\n"));
    cJSON *j = resp_json(&r);
    assert_string_equal(str_at(j, "type"), "error");
    assert_string_equal(str_at(at(j, "error"), "type"), "overloaded_error");
    assert_string_equal(str_at(at(j, "error"), "message"), "Overloaded");
    cJSON_Delete(j);
    resp_free(&r);
    post_path(h, f, "/v1/messages", body, right, &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    char key[64];
    air_mock_last_request(f->m, NULL, 0, key, sizeof key);
    assert_string_equal(key, "sk-ant-mock-0001"); /* the format's key header */
    air_mock_stats_t s;
    air_mock_stats(f->m, &s);
    assert_int_equal(s.unauthorized, 2);
    assert_int_equal(s.failed, 1);
    assert_int_equal(s.ok, 1);
    curl_easy_cleanup(h);
}

static void
test_mock_anthropic_status_maps_to_error_types(void **state)
{
    struct fx *f = *state;
    static const struct {
        int status;
        const char *type;
    } map[] = {{429, "rate_limit_error"}, {500, "api_error"},        {402, "billing_error"},
               {504, "timeout_error"},    {403, "permission_error"}, {503, "api_error"}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        air_mock_opts_t o;
        air_mock_opts_init(&o);
        o.format = "anthropic";
        o.fail_rate = 1;
        o.fail_status = map[i].status;
        fx_start(f, &o);
        CURL *h = curl_easy_init();
        struct resp r;
        const char *hv[] = {ant_hdr_ver, NULL};
        post_path(h, f, "/v1/messages", "{\"model\":\"c\",\"max_tokens\":5,\"messages\":[]}", hv,
                  &r);
        assert_int_equal(r.status, map[i].status);
        cJSON *j = resp_json(&r);
        assert_string_equal(str_at(at(j, "error"), "type"), map[i].type);
        cJSON_Delete(j);
        resp_free(&r);
        curl_easy_cleanup(h);
        air_mock_stop(f->m);
        f->m = NULL;
    }
}

static const char gem_body[] = "{\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":\"hi\"}]}]}";

static void
test_mock_gemini_generate_stream_and_array_forms(void **state)
{
    struct fx *f = *state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.format = "gemini";
    o.chunks = 3;
    fx_start(f, &o);
    CURL *h = curl_easy_init();
    struct resp r;
    post_path(h, f, "/v1beta/models/gemini-x:generateContent", gem_body, NULL, &r);
    assert_int_equal(r.status, 200);
    cJSON *j = resp_json(&r);
    const cJSON *c0 = idx(at(j, "candidates"), 0);
    assert_string_equal(str_at(at(c0, "content"), "role"), "model");
    assert_string_equal(str_at(idx(at(at(c0, "content"), "parts"), 0), "text"), "tok0 tok1 tok2 ");
    assert_string_equal(str_at(c0, "finishReason"), "STOP");
    const cJSON *um = at(j, "usageMetadata");
    int p = (int)(strlen(gem_body) / 4);
    assert_int_equal((int)num_at(um, "promptTokenCount"), p);
    assert_int_equal((int)num_at(um, "candidatesTokenCount"), 3);
    assert_int_equal((int)num_at(um, "totalTokenCount"), p + 3);
    assert_string_equal(str_at(j, "modelVersion"), "gemini-x");
    assert_string_equal(str_at(j, "responseId"), "mock-1");
    cJSON_Delete(j);
    resp_free(&r);

    /* SSE: CRLF framing, one event per piece, the last with the finish and
     * the complete usage; no [DONE]. A "models/" prefix, escaped, is dropped. */
    post_path(h, f, "/v1beta/models/models%2Fgemini-x:streamGenerateContent?alt=sse", gem_body,
              NULL, &r);
    assert_int_equal(r.status, 200);
    assert_true(has_header(&r, "Content-Type: text/event-stream"));
    assert_null(strstr(r.body.data, "[DONE]"));
    assert_int_equal(count_of(r.body.data, "\r\n\r\n"), 3);
    char *names[16], *datas[16];
    size_t n = sse_blocks(r.body.data, "\r\n\r\n", names, datas, 16);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < n; i++) {
        j = cJSON_Parse(datas[i]);
        assert_non_null(j);
        c0 = idx(at(j, "candidates"), 0);
        char want[32];
        snprintf(want, sizeof want, "tok%zu ", i);
        assert_string_equal(str_at(idx(at(at(c0, "content"), "parts"), 0), "text"), want);
        assert_string_equal(str_at(j, "modelVersion"), "gemini-x");
        um = at(j, "usageMetadata");
        if (i + 1 < n) {
            assert_null(at(c0, "finishReason"));
            assert_null(at(um, "candidatesTokenCount")); /* early events lack it */
        } else {
            assert_string_equal(str_at(c0, "finishReason"), "STOP");
            assert_int_equal((int)num_at(um, "candidatesTokenCount"), 3);
        }
        cJSON_Delete(j);
    }
    resp_free(&r);

    /* Without alt=sse: one JSON array of the same responses. */
    post_path(h, f, "/v1beta/models/gemini-x:streamGenerateContent", gem_body, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_true(has_header(&r, "Content-Type: application/json"));
    j = resp_json(&r);
    assert_true(cJSON_IsArray(j));
    assert_int_equal(cJSON_GetArraySize(j), 3);
    assert_string_equal(str_at(idx(at(idx(j, 2), "candidates"), 0), "finishReason"), "STOP");
    cJSON_Delete(j);
    resp_free(&r);

    /* Tools: one functionCall part, whole, in a single event. */
    air_buf_t b = AIR_BUF_INIT;
    air__buf_printf(&b,
                    "{\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":\"w\"}]}],"
                    "\"tools\":[{\"functionDeclarations\":[{\"name\":\"get_weather\","
                    "\"parameters\":%s}]}]}",
                    "{\"type\":\"OBJECT\",\"properties\":{\"city\":{\"type\":\"STRING\"},"
                    "\"days\":{\"type\":\"INTEGER\"},\"unit\":{\"type\":\"STRING\","
                    "\"enum\":[\"C\",\"F\"]}},\"required\":[\"city\",\"days\",\"unit\"]}");
    post_path(h, f, "/v1beta/models/g:streamGenerateContent?alt=sse", b.data, NULL, &r);
    n = sse_blocks(r.body.data, "\r\n\r\n", names, datas, 16);
    assert_int_equal(n, 1);
    j = cJSON_Parse(datas[0]);
    c0 = idx(at(j, "candidates"), 0);
    const cJSON *fc = at(idx(at(at(c0, "content"), "parts"), 0), "functionCall");
    assert_string_equal(str_at(fc, "name"), "get_weather");
    char *args = cJSON_PrintUnformatted(at(fc, "args"));
    assert_string_equal(args, weather_args);
    cJSON_free(args);
    assert_string_equal(str_at(c0, "finishReason"), "STOP"); /* Gemini has no tool reason */
    cJSON_Delete(j);
    resp_free(&r);

    /* mode NONE: text; the last content a functionResponse: text. */
    air__buf_reset(&b);
    air__buf_puts(&b, "{\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":\"w\"}]}],"
                      "\"tools\":[{\"functionDeclarations\":[{\"name\":\"f\"}]}],"
                      "\"toolConfig\":{\"functionCallingConfig\":{\"mode\":\"NONE\"}}}");
    post_path(h, f, "/v1beta/models/g:generateContent", b.data, NULL, &r);
    assert_non_null(strstr(r.body.data, "\"text\":\"tok0"));
    resp_free(&r);
    air__buf_reset(&b);
    air__buf_puts(&b, "{\"contents\":[{\"role\":\"user\",\"parts\":[{\"functionResponse\":"
                      "{\"name\":\"f\",\"response\":{}}}]}],"
                      "\"tools\":[{\"functionDeclarations\":[{\"name\":\"f\"}]}]}");
    post_path(h, f, "/v1beta/models/g:generateContent", b.data, NULL, &r);
    assert_non_null(strstr(r.body.data, "\"text\":\"tok0"));
    resp_free(&r);
    air__buf_free(&b);

    /* Errors in Google's shape. */
    post_path(h, f, "/v1beta/models/g:generateContent", "{\"contents\":[]}", NULL, &r);
    assert_int_equal(r.status, 400);
    j = resp_json(&r);
    assert_int_equal((int)num_at(at(j, "error"), "code"), 400);
    assert_string_equal(str_at(at(j, "error"), "status"), "INVALID_ARGUMENT");
    cJSON_Delete(j);
    resp_free(&r);
    post_path(h, f, "/v1beta/models/g:countTokens", gem_body, NULL, &r);
    assert_int_equal(r.status, 404);
    j = resp_json(&r);
    assert_string_equal(str_at(at(j, "error"), "status"), "NOT_FOUND");
    cJSON_Delete(j);
    resp_free(&r);
    get(h, f, "/v1beta/models", &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body.data, "models/mock-model"));
    resp_free(&r);
    curl_easy_cleanup(h);
}

static void
test_mock_gemini_key_quota_and_stream_error(void **state)
{
    struct fx *f = *state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.format = "gemini";
    o.api_key = "AIzaMock-0002";
    o.fail_first = 1;
    o.fail_status = 429;
    o.retry_after_s = 7;
    o.stream_error_rate = 1.0;
    o.chunks = 4;
    fx_start(f, &o);
    CURL *h = curl_easy_init();
    struct resp r;
    const char *wrong[] = {"x-goog-api-key: AIzaMock-0003", NULL};
    const char *right[] = {"x-goog-api-key: AIzaMock-0002", NULL};
    post_path(h, f, "/v1beta/models/g:generateContent", gem_body, NULL, &r);
    assert_int_equal(r.status, 403); /* no key at all */
    assert_non_null(strstr(r.body.data, "PERMISSION_DENIED"));
    resp_free(&r);
    post_path(h, f, "/v1beta/models/g:generateContent", gem_body, wrong, &r);
    assert_int_equal(r.status, 400); /* a bad key is a 400 at Google */
    cJSON *j = resp_json(&r);
    assert_string_equal(str_at(at(j, "error"), "status"), "INVALID_ARGUMENT");
    assert_string_equal(str_at(idx(at(at(j, "error"), "details"), 0), "reason"), "API_KEY_INVALID");
    assert_null(strstr(r.body.data, "AIzaMock"));
    cJSON_Delete(j);
    resp_free(&r);

    /* fail_first: 429 RESOURCE_EXHAUSTED, the wait in RetryInfo, no header. */
    post_path(h, f, "/v1beta/models/g:generateContent", gem_body, right, &r);
    assert_int_equal(r.status, 429);
    assert_false(has_header(&r, "Retry-After"));
    j = resp_json(&r);
    const cJSON *e = at(j, "error");
    assert_int_equal((int)num_at(e, "code"), 429);
    assert_string_equal(str_at(e, "status"), "RESOURCE_EXHAUSTED");
    const cJSON *d0 = idx(at(e, "details"), 0);
    assert_string_equal(str_at(d0, "@type"), "type.googleapis.com/google.rpc.RetryInfo");
    assert_string_equal(str_at(d0, "retryDelay"), "7s");
    cJSON_Delete(j);
    resp_free(&r);

    /* The key may come as ?key= too. A stream is cut after half its pieces
     * by the error as bare JSON lines, outside any data: field. */
    post_path(h, f, "/v1beta/models/g:streamGenerateContent?alt=sse&key=AIzaMock-0002", gem_body,
              NULL, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(count_of(r.body.data, "data: "), 2);
    char *err = strstr(r.body.data, "\r\n\r\n{\n");
    assert_non_null(err);
    j = cJSON_Parse(err + 4);
    assert_non_null(j);
    assert_string_equal(str_at(at(j, "error"), "status"), "RESOURCE_EXHAUSTED");
    assert_null(strstr(r.body.data, "finishReason"));
    cJSON_Delete(j);
    resp_free(&r);
    air_mock_stats_t s;
    air_mock_stats(f->m, &s);
    assert_int_equal(s.unauthorized, 2);
    assert_int_equal(s.stream_errors, 1);
    assert_int_equal(s.failed, 2);
    char path[256];
    air_mock_last_path(f->m, path, sizeof path);
    assert_string_equal(path, "/v1beta/models/g:streamGenerateContent?alt=sse&key=AIzaMock-0002");
    curl_easy_cleanup(h);
}

static void
test_mock_azure_deployment_url_filters_and_errors(void **state)
{
    struct fx *f = *state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.format = "azure";
    o.api_key = "az-mock-key-0004";
    o.chunks = 2;
    fx_start(f, &o);
    CURL *h = curl_easy_init();
    struct resp r;
    const char *key[] = {"api-key: az-mock-key-0004", NULL};
    const char *bearer[] = {"Authorization: Bearer az-mock-key-0004", NULL};
    const char *wrong[] = {"api-key: az-mock-key-0005", NULL};
    const char *url = "/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21";
    const char *body = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    post_path(h, f, url, body, key, &r);
    assert_int_equal(r.status, 200);
    cJSON *j = resp_json(&r);
    assert_string_equal(str_at(j, "object"), "chat.completion");
    assert_string_equal(str_at(j, "model"), "my-gpt4o"); /* the deployment serves */
    assert_non_null(at(idx(at(j, "prompt_filter_results"), 0), "content_filter_results"));
    const cJSON *c0 = idx(at(j, "choices"), 0);
    assert_string_equal(str_at(at(c0, "message"), "content"), "tok0 tok1 ");
    assert_non_null(at(c0, "content_filter_results"));
    cJSON_Delete(j);
    resp_free(&r);

    post_path(h, f, url, body, bearer, &r); /* an Entra ID token is accepted too */
    assert_int_equal(r.status, 200);
    resp_free(&r);
    post_path(h, f, url, body, wrong, &r);
    assert_int_equal(r.status, 401);
    j = resp_json(&r);
    assert_string_equal(str_at(at(j, "error"), "code"), "401");
    cJSON_Delete(j);
    resp_free(&r);
    post_path(h, f, "/openai/deployments/my-gpt4o/chat/completions", body, key, &r);
    assert_int_equal(r.status, 404); /* no api-version */
    j = resp_json(&r);
    assert_string_equal(str_at(at(j, "error"), "code"), "404");
    cJSON_Delete(j);
    resp_free(&r);
    post_path(h, f, "/openai/v1/chat/completions", "{\"model\":\"dep2\",\"messages\":[]}", key, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body.data, "\"model\":\"dep2\""));
    resp_free(&r);

    /* The stream opens with the prompt annotations: empty choices and
     * envelope. Then OpenAI's chunks, tool calls included. */
    air_buf_t b = AIR_BUF_INIT;
    air__buf_printf(&b, "{\"stream\":true,\"messages\":[],%s}", weather_tools_oa);
    post_path(h, f, url, b.data, key, &r);
    air__buf_free(&b);
    assert_int_equal(r.status, 200);
    char *ev[32];
    size_t n = sse_events(r.body.data, ev, 32);
    assert_int_equal(n, 1 + 1 + 2 + 1 + 1); /* filter, role+call, 2 arg pieces, finish, DONE */
    j = cJSON_Parse(ev[0]);
    assert_int_equal(cJSON_GetArraySize(at(j, "choices")), 0);
    assert_string_equal(str_at(j, "id"), "");
    assert_non_null(at(j, "prompt_filter_results"));
    cJSON_Delete(j);
    j = cJSON_Parse(ev[1]);
    const cJSON *tc = idx(at(at(idx(at(j, "choices"), 0), "delta"), "tool_calls"), 0);
    assert_string_equal(str_at(tc, "id"), "call_mock_4_0"); /* 4th accepted request */
    assert_string_equal(str_at(at(tc, "function"), "name"), "get_weather");
    cJSON_Delete(j);
    assert_non_null(strstr(ev[4], "\"finish_reason\":\"tool_calls\""));
    assert_string_equal(ev[5], "[DONE]");
    resp_free(&r);
    curl_easy_cleanup(h);
}

static void
test_mock_azure_429_carries_retry_after_ms(void **state)
{
    struct fx *f = *state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.format = "azure";
    o.fail_rate = 1;
    o.fail_status = 429;
    o.retry_after_s = 2;
    fx_start(f, &o);
    CURL *h = curl_easy_init();
    struct resp r;
    post_path(h, f, "/openai/deployments/d/chat/completions?api-version=2024-10-21",
              "{\"messages\":[]}", NULL, &r);
    assert_int_equal(r.status, 429);
    assert_true(has_header(&r, "Retry-After: 2\r\n"));
    assert_true(has_header(&r, "retry-after-ms: 2000\r\n"));
    cJSON *j = resp_json(&r);
    assert_string_equal(str_at(at(j, "error"), "code"), "429");
    cJSON_Delete(j);
    resp_free(&r);
    curl_easy_cleanup(h);
}

static void
test_mock_openai_tool_calls_plain_stream_and_choice(void **state)
{
    struct fx *f = *state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.chunks = 50; /* more chunks than argument bytes: one byte per piece */
    fx_start(f, &o);
    CURL *h = curl_easy_init();
    struct resp r;
    air_buf_t b = AIR_BUF_INIT;
    air__buf_printf(&b, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"w\"}],%s}",
                    weather_tools_oa);
    post_chat(h, f, b.data, NULL, &r);
    assert_int_equal(r.status, 200);
    cJSON *j = resp_json(&r);
    const cJSON *c0 = idx(at(j, "choices"), 0);
    assert_string_equal(str_at(c0, "finish_reason"), "tool_calls");
    const cJSON *msg = at(c0, "message");
    assert_true(cJSON_IsNull(at(msg, "content")));
    const cJSON *tc = idx(at(msg, "tool_calls"), 0);
    assert_string_equal(str_at(tc, "id"), "call_mock_1_0");
    assert_string_equal(str_at(tc, "type"), "function");
    assert_string_equal(str_at(at(tc, "function"), "name"), "get_weather");
    assert_string_equal(str_at(at(tc, "function"), "arguments"), weather_args);
    cJSON_Delete(j);
    resp_free(&r);

    /* Streamed: the call's header first, then argument fragments. */
    air__buf_reset(&b);
    air__buf_printf(&b, "{\"model\":\"m\",\"stream\":true,\"messages\":[],%s}", weather_tools_oa);
    post_chat(h, f, b.data, NULL, &r);
    char *ev[64];
    size_t n = sse_events(r.body.data, ev, 64);
    size_t alen = strlen(weather_args);
    assert_int_equal(n, 1 + alen + 1 + 1);
    air_buf_t args = AIR_BUF_INIT;
    for (size_t i = 1; i <= alen; i++) {
        j = cJSON_Parse(ev[i]);
        tc = idx(at(at(idx(at(j, "choices"), 0), "delta"), "tool_calls"), 0);
        assert_int_equal((int)num_at(tc, "index"), 0);
        air__buf_puts(&args, str_at(at(tc, "function"), "arguments"));
        cJSON_Delete(j);
    }
    assert_string_equal(args.data, weather_args);
    air__buf_free(&args);
    resp_free(&r);

    /* tool_choice names a function; "none" and a final tool message: text. */
    air__buf_reset(&b);
    air__buf_printf(&b,
                    "{\"model\":\"m\",\"messages\":[],%s,\"tool_choice\":{\"type\":\"function\","
                    "\"function\":{\"name\":\"other\"}}}",
                    weather_tools_oa);
    post_chat(h, f, b.data, NULL, &r);
    assert_non_null(strstr(r.body.data, "\"name\":\"other\",\"arguments\":\"{}\""));
    resp_free(&r);
    air__buf_reset(&b);
    air__buf_printf(&b, "{\"model\":\"m\",\"messages\":[],%s,\"tool_choice\":\"none\"}",
                    weather_tools_oa);
    post_chat(h, f, b.data, NULL, &r);
    assert_non_null(strstr(r.body.data, "\"finish_reason\":\"stop\""));
    resp_free(&r);
    air__buf_reset(&b);
    air__buf_printf(&b,
                    "{\"model\":\"m\",\"messages\":[{\"role\":\"tool\",\"tool_call_id\":\"c\","
                    "\"content\":\"4C\"}],%s}",
                    weather_tools_oa);
    post_chat(h, f, b.data, NULL, &r);
    assert_non_null(strstr(r.body.data, "\"content\":\"tok0 "));
    resp_free(&r);
    air__buf_free(&b);
    curl_easy_cleanup(h);
}

static void
test_mock_openai_stream_error_event_ends_stream_without_done(void **state)
{
    struct fx *f = *state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.chunks = 4;
    o.stream_error_rate = 1.0;
    o.fail_status = 503;
    fx_start(f, &o);
    CURL *h = curl_easy_init();
    struct resp r;
    post_chat(h, f, "{\"model\":\"x\",\"stream\":true}", NULL, &r);
    assert_int_equal(r.rc, CURLE_OK); /* a clean HTTP end: the error is in the events */
    assert_int_equal(r.status, 200);
    char *ev[16];
    size_t n = sse_events(r.body.data, ev, 16);
    assert_int_equal(n, 1 + 2 + 1); /* role, tok0, tok1, error */
    cJSON *j = cJSON_Parse(ev[n - 1]);
    assert_non_null(j);
    assert_string_equal(str_at(at(j, "error"), "type"), "server_error");
    cJSON_Delete(j);
    resp_free(&r);
    /* Plain requests are not affected; the connection was kept. */
    post_chat(h, f, chat_body, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.new_conns, 0);
    resp_free(&r);
    air_mock_stats_t s;
    air_mock_stats(f->m, &s);
    assert_int_equal(s.stream_errors, 1);
    assert_int_equal(s.failed, 1);
    assert_int_equal(s.ok, 1);
    assert_int_equal(s.requests, s.ok + s.failed + s.resets + s.unauthorized);
    curl_easy_cleanup(h);
}

/* ------------------------------------------------------------------ --record */

/* A fresh, empty temporary file name (the file exists, empty). */
static void
temp_path(char *buf, size_t len)
{
    snprintf(buf, len, "/tmp/air-mock-record-XXXXXX");
    int fd = mkstemp(buf);
    assert_true(fd >= 0);
    close(fd);
}

static char *
slurp(const char *path)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    air_buf_t b = AIR_BUF_INIT;
    char tmp[4096];
    size_t k;
    while ((k = fread(tmp, 1, sizeof tmp, fp)) > 0)
        air__buf_append(&b, tmp, k);
    fclose(fp);
    air__buf_putc(&b, '\0');
    return air__buf_steal(&b, NULL);
}

static void
test_mock_record_writes_one_masked_line_per_request(void **state)
{
    struct fx *f = *state;
    char path[64];
    temp_path(path, sizeof path);
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.format = "gemini";
    o.record_path = path;
    fx_start(f, &o);
    CURL *h = curl_easy_init();
    struct resp r;
    const char *hdrs[] = {"x-goog-api-key: AIza-secret-wxyz",
                          "Authorization: Bearer sk-abcdefgh",
                          "X-Api-Key: k",
                          "X-Twice: a",
                          "X-Twice: b",
                          "api-key: az-1234567",
                          NULL};
    post_path(h, f, "/v1beta/models/g:streamGenerateContent?alt=sse&key=AIza-query-9876", gem_body,
              hdrs, &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    get(h, f, "/healthz", &r);
    resp_free(&r);
    post_path(h, f, "/nope", "not json", NULL, &r);
    assert_int_equal(r.status, 404);
    resp_free(&r);

    char *all = slurp(path);
    assert_null(strstr(all, "secret"));
    assert_null(strstr(all, "sk-abcd"));
    assert_null(strstr(all, "AIza-query"));
    assert_null(strstr(all, "az-12"));
    assert_int_equal(count_of(all, "\n"), 3);
    char *save = NULL;
    char *l1 = strtok_r(all, "\n", &save), *l2 = strtok_r(NULL, "\n", &save),
         *l3 = strtok_r(NULL, "\n", &save);
    cJSON *j = cJSON_Parse(l1);
    assert_non_null(j);
    assert_string_equal(str_at(j, "method"), "POST");
    assert_string_equal(str_at(j, "path"), "/v1beta/models/g:streamGenerateContent");
    assert_string_equal(str_at(j, "query"), "alt=sse&key=***9876");
    const cJSON *hd = at(j, "headers");
    assert_string_equal(str_at(hd, "x-goog-api-key"), "***wxyz");
    assert_string_equal(str_at(hd, "authorization"), "***efgh");
    assert_string_equal(str_at(hd, "x-api-key"), "***"); /* too short to show any of it */
    assert_string_equal(str_at(hd, "api-key"), "***4567");
    assert_string_equal(str_at(hd, "x-twice"), "a, b");
    assert_non_null(str_at(hd, "content-length"));
    const cJSON *body = at(j, "body");
    assert_true(cJSON_IsObject(body));
    assert_string_equal(str_at(idx(at(idx(at(body, "contents"), 0), "parts"), 0), "text"), "hi");
    cJSON_Delete(j);
    j = cJSON_Parse(l2);
    assert_string_equal(str_at(j, "method"), "GET");
    assert_string_equal(str_at(j, "path"), "/healthz");
    assert_string_equal(str_at(j, "query"), "");
    assert_true(cJSON_IsNull(at(j, "body")));
    cJSON_Delete(j);
    j = cJSON_Parse(l3);
    assert_string_equal(str_at(j, "path"), "/nope");
    assert_string_equal(str_at(j, "body"), "not json"); /* not JSON: kept as a string */
    cJSON_Delete(j);
    air__free(all);

    /* In process, the last chat request is there unmasked. */
    char v[64];
    assert_int_equal(air_mock_last_header(f->m, "X-GOOG-API-KEY", v, sizeof v), 1);
    assert_string_equal(v, "AIza-secret-wxyz");
    assert_int_equal(air_mock_last_header(f->m, "x-missing", v, sizeof v), 0);
    assert_string_equal(v, "");
    curl_easy_cleanup(h);
    air_mock_stop(f->m);
    f->m = NULL;
    unlink(path);
}

static void
test_mock_record_lines_stay_whole_under_concurrency(void **state)
{
    enum { N = 200 };
    struct fx *f = *state;
    char path[64];
    temp_path(path, sizeof path);
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.format = "anthropic";
    o.threads = 2;
    o.record_path = path;
    fx_start(f, &o);
    char url[128];
    snprintf(url, sizeof url, "%s/v1/messages", f->base);
    /* Bodies of several sizes, so that lines of different lengths interleave. */
    air_buf_t big = AIR_BUF_INIT;
    air__buf_puts(&big, "{\"model\":\"c\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\","
                        "\"content\":\"");
    for (int i = 0; i < 20000; i++)
        air__buf_putc(&big, 'a' + (char)(i % 26));
    air__buf_puts(&big, "\"}]}");
    const char *small = "{\"model\":\"c\",\"max_tokens\":5,\"messages\":[]}";
    CURLM *mh = curl_multi_init();
    CURL **hs = air__calloc(N, sizeof *hs);
    air_buf_t *bodies = air__calloc(N, sizeof *bodies);
    struct curl_slist *sl = curl_slist_append(NULL, ant_hdr_ver);
    for (int i = 0; i < N; i++) {
        hs[i] = curl_easy_init();
        curl_easy_setopt(hs[i], CURLOPT_URL, url);
        curl_easy_setopt(hs[i], CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(hs[i], CURLOPT_TIMEOUT_MS, 20000L);
        curl_easy_setopt(hs[i], CURLOPT_HTTPHEADER, sl);
        curl_easy_setopt(hs[i], CURLOPT_POSTFIELDS, i % 3 ? small : big.data);
        curl_easy_setopt(hs[i], CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(hs[i], CURLOPT_WRITEDATA, &bodies[i]);
        curl_multi_add_handle(mh, hs[i]);
    }
    int running = 1;
    while (running) {
        assert_int_equal(curl_multi_perform(mh, &running), CURLM_OK);
        if (running)
            curl_multi_poll(mh, NULL, 0, 100, NULL);
    }
    for (int i = 0; i < N; i++) {
        curl_multi_remove_handle(mh, hs[i]);
        curl_easy_cleanup(hs[i]);
        air__buf_free(&bodies[i]);
    }
    air__free(hs);
    air__free(bodies);
    curl_slist_free_all(sl);
    curl_multi_cleanup(mh);
    air__buf_free(&big);
    air_mock_stats_t s;
    air_mock_stats(f->m, &s);
    assert_int_equal(s.ok, N);

    char *all = slurp(path);
    assert_int_equal(count_of(all, "\n"), N);
    int parsed = 0, bigs = 0;
    char *save = NULL;
    for (char *l = strtok_r(all, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        cJSON *j = cJSON_Parse(l);
        assert_non_null(j);
        assert_string_equal(str_at(j, "path"), "/v1/messages");
        parsed++;
        bigs += strlen(l) > 20000;
        cJSON_Delete(j);
    }
    assert_int_equal(parsed, N);
    assert_int_equal(bigs, (N + 2) / 3);
    air__free(all);
    air_mock_stop(f->m);
    f->m = NULL;
    unlink(path);
}

static void
test_mock_start_rejects_bad_format_rate_and_record_path(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_t *m = NULL;
    char err[128];
    air_mock_opts_init(&o);
    o.format = "cohere";
    assert_int_equal(air_mock_start(&o, &m, err, sizeof err), -1);
    assert_null(m);
    assert_non_null(strstr(err, "format"));
    air_mock_opts_init(&o);
    o.stream_error_rate = 2;
    assert_int_equal(air_mock_start(&o, &m, err, sizeof err), -1);
    assert_non_null(strstr(err, "stream_error_rate"));
    air_mock_opts_init(&o);
    o.record_path = "/nonexistent-dir-airouter/rec.jsonl";
    assert_int_equal(air_mock_start(&o, &m, err, sizeof err), -1);
    assert_null(m);
    assert_non_null(strstr(err, "record"));
}

int
main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_mock_plain_completion_has_openai_fields_and_usage,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_mock_stream_events_in_order_with_usage_and_done, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_mock_keepalive_serves_many_requests_on_one_connection,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_mock_expect_continue_big_body_gets_100_then_200, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_mock_models_and_healthz_answer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mock_bad_paths_methods_and_json_get_openai_errors,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_mock_malformed_http_gets_400_and_close, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_mock_pipelined_and_chunked_requests_answered_in_order,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_mock_api_key_mismatch_gets_401_without_echo, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_mock_fail_first_sends_status_and_retry_after, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_mock_fail_rate_one_fails_every_request, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_mock_reset_rate_one_cuts_plain_and_stream, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_mock_latency_and_chunk_delay_are_respected, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_mock_500_concurrent_delayed_requests_overlap, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_mock_stats_add_up_over_mixed_outcomes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_mock_stop_with_open_connections_is_clean, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_mock_client_gone_during_latency_drops_reply, setup,
                                        teardown),
        cmocka_unit_test(test_mock_start_rejects_bad_options),
        cmocka_unit_test_setup_teardown(test_mock_anthropic_plain_text_tool_use_and_validation,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_mock_anthropic_stream_events_text_and_tool_use, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_mock_anthropic_key_and_injected_errors, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_mock_anthropic_status_maps_to_error_types, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_mock_gemini_generate_stream_and_array_forms, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_mock_gemini_key_quota_and_stream_error, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_mock_azure_deployment_url_filters_and_errors, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_mock_azure_429_carries_retry_after_ms, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_mock_openai_tool_calls_plain_stream_and_choice, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_mock_openai_stream_error_event_ends_stream_without_done, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mock_record_writes_one_masked_line_per_request, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_mock_record_lines_stay_whole_under_concurrency, setup,
                                        teardown),
        cmocka_unit_test(test_mock_start_rejects_bad_format_rate_and_record_path),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
