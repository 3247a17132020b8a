/*
 * test_mock.c - the mock provider, driven over real loopback sockets.
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
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
