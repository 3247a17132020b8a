/*
 * mock.c - the mock provider (see mock.h): OpenAI, Anthropic, Gemini and
 * Azure OpenAI wire formats.
 *
 * DESIGN: N event loops, each a thread that owns one epoll instance, one
 * SO_REUSEPORT listener on the shared port, its connections and a min-heap of
 * timers whose earliest deadline is epoll_wait's timeout. Latency, jitter and
 * stream pacing are timers, so ten thousand delayed requests cost ten thousand
 * heap entries, not threads. The loops share only the read-only options, two
 * atomic sequences (fail_first/ids, last-request stamps) and the stop flag;
 * counters live in each loop and are summed when read, so no cache line is
 * contended on the hot path.
 *
 * A connection is a small state machine:
 *   IDLE (reading/parsing) -> WAIT (latency timer) -> [STREAM (chunk timers)]
 *        -> IDLE (keep-alive) | CLOSE (shutdown + lingering drain) | RESET (RST)
 * While a response is pending the socket is not read (EPOLLIN off), so
 * pipelined requests stay queued in the kernel and are answered in order;
 * only EPOLLRDHUP is watched, so a client that gives up frees its slot.
 * Replies go out with sendmsg straight from the caller's buffers; only what the
 * socket does not take at once is copied into the connection's output buffer.
 * Connections are recycled through a per-loop free list, so a steady state
 * allocates only cJSON's parse of each chat body.
 *
 * Formats: one server speaks one format (chosen at start). Everything above
 * the response layer (HTTP parsing, timers, faults, pacing) is shared; the
 * format decides the chat endpoint, how the key is checked, the reply and
 * error bodies and the stream framing. An answer is a list of "pieces" (the
 * text tokens, or slices of a tool call's arguments) that every format
 * frames its own way, so --chunks, --chunk-delay-ms, resets and injected
 * stream errors mean the same thing in each. Replies are written by hand
 * into buffers (no cJSON tree): the stream path is the hot one.
 *
 * --record writes one JSON line per request from the loop thread, under a
 * mutex shared by the loops, flushed at once, before the reply is sent: a
 * client that has its reply finds its request in the file. It is a test aid;
 * file I/O on the loop thread is accepted for it.
 */
#include "mock.h"
#include "alloc.h"
#include "buf.h"

#include <cjson/cJSON.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define MAX_HEAD     (64u * 1024u)                 /* request line + headers */
#define MAX_BODY     (16u * 1024u * 1024u)         /* decoded request body */
#define MAX_IN       (MAX_HEAD + MAX_BODY + 8192u) /* input buffer hard cap */
#define IN_INIT      4096u
#define BUF_KEEP     (64u * 1024u) /* bigger idle buffers are given back */
#define LINGER_MS    1000u         /* drain time after our FIN before close */
#define MAX_EVENTS   256
#define ACCEPT_BATCH 64
#define NO_TIMER     SIZE_MAX
#define NS_PER_MS    1000000ull

enum { K_LISTEN = 1, K_WAKE, K_CONN };
enum { ST_IDLE, ST_WAIT, ST_STREAM, ST_CLOSE, ST_RESET, ST_LINGER };
enum { ACT_OK, ACT_FAIL, ACT_RESET };
enum { M_OTHER, M_GET, M_POST };
enum { CH_SIZE, CH_DATA, CH_CRLF, CH_TRAILER };
enum { P_MORE = 0, P_DONE = 1 }; /* parse results; a negative value is -HTTP status */
enum { F_OPENAI, F_ANTHROPIC, F_GEMINI, F_AZURE };

struct tag {
    int kind;
};

struct counters {
    atomic_uint_fast64_t connections, requests, ok, failed, resets, streams, unauthorized;
    atomic_uint_fast64_t stream_errors;
};

struct loop;

struct conn {
    int kind; /* K_CONN; first, so an epoll pointer can be told apart */
    int fd;   /* -1 once closed */
    struct loop *lp;
    struct conn *prev, *next; /* live list, or the dead/free list (next only) */
    uint32_t events;          /* what epoll watches now */
    int state;
    size_t heap_idx; /* NO_TIMER when no timer is armed */
    uint64_t deadline;

    /* input and request parsing */
    char *in;
    size_t in_len, in_cap;
    size_t scan;    /* where the search for the end of the headers resumes */
    size_t hdr_len; /* 0 until the header section is complete */
    uint64_t clen;  /* Content-Length */
    int method;
    size_t path_off, path_len, auth_off, auth_len;
    size_t key_off, key_len; /* the format's own key header (x-api-key, ...) */
    unsigned chunked : 1, expect : 1, continue_sent : 1, peer_eof : 1, io_err : 1;
    unsigned keep : 1, http10 : 1, has_auth : 1, has_key : 1, has_version : 1;
    int ch_state;
    size_t ch_raw, ch_dec; /* chunked decoder: next raw byte, end of the decoded body */
    uint64_t ch_left;

    /* output */
    air_buf_t out;
    size_t out_off;

    /* the response being produced */
    int action;
    unsigned stream : 1, include_usage : 1, chunked_resp : 1;
    unsigned tool : 1;      /* the answer is a tool call */
    unsigned serr : 1;      /* this stream ends half-way with an error event */
    unsigned gem_array : 1; /* gemini stream without alt=sse: one JSON array */
    uint64_t id;
    long long created;
    uint64_t prompt_tokens, ctoks;
    uint32_t next_piece, npieces, nev;
    air_buf_t model;     /* the request's model as a JSON string literal */
    air_buf_t pre;       /* openai stream: the common prefix of every chunk object */
    air_buf_t tool_name; /* the called tool's name as a JSON string literal */
    air_buf_t args;      /* the tool call's arguments, raw JSON text */
};

struct loop {
    struct air_mock *m;
    unsigned idx;
    int epfd, lfd, evfd, spare_fd;
    pthread_t thr;
    int started;
    int pwait2; /* epoll_pwait2 works here (cleared on ENOSYS) */
    struct tag ltag, etag;
    uint64_t rng;
    struct conn **heap;
    size_t nheap, heapcap;
    struct conn *live, *dead, *freel;
    air_buf_t scratch;
    struct counters cnt;
    /* the last chat request this loop saw, stamped from a global sequence */
    pthread_mutex_t rec_mu;
    int rec_mu_ok;
    uint64_t rec_stamp;
    air_buf_t rec_body, rec_auth, rec_path, rec_head;
    char pad[64]; /* keep neighbouring loops' hot fields on other cache lines */
};

struct air_mock {
    air_mock_opts_t o;
    char *host, *api_key;
    size_t api_key_len;
    int fmt; /* F_* */
    /* --record: the file, and the lock that keeps lines whole */
    FILE *rec_fp;
    pthread_mutex_t rec_fp_mu;
    int rec_fp_mu_ok;
    uint16_t port;
    unsigned nloops;
    struct loop *loops;
    atomic_int stop;
    atomic_uint_fast64_t seq;     /* accepted chat requests: fail_first and ids */
    atomic_uint_fast64_t rec_seq; /* stamps for the last-request record */
    char *content;                /* "tok0 tok1 ..." */
    size_t content_len;
};

static const char *const format_names[] = {"openai", "anthropic", "gemini", "azure"};

static const char models_json[] =
    "{\"object\":\"list\",\"data\":[{\"id\":\"mock-model\",\"object\":\"model\","
    "\"created\":1700000000,\"owned_by\":\"airouter-mock\"}]}";

static const char gemini_models_json[] =
    "{\"models\":[{\"name\":\"models/mock-model\",\"displayName\":\"Mock Model\","
    "\"supportedGenerationMethods\":[\"generateContent\",\"streamGenerateContent\"]}]}";

static const char unauthorized_json[] =
    "{\"error\":{\"message\":\"Incorrect API key provided\",\"type\":\"invalid_request_error\","
    "\"param\":null,\"code\":\"invalid_api_key\"}}";

/* ------------------------------------------------------------------ utils */

static uint64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t
splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* xorshift64*: tiny, fast and good enough to pick faults. */
static uint64_t
rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static double
rng_unit(uint64_t *s)
{
    return (double)(rng_next(s) >> 11) * 0x1.0p-53;
}

static void
cnt_inc(atomic_uint_fast64_t *c)
{
    /* Only the owning loop writes; readers sum relaxed snapshots. */
    atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

static void
set_err(char *err, size_t errlen, const char *what, int e)
{
    if (err == NULL || errlen == 0)
        return;
    if (e)
        snprintf(err, errlen, "%s: %s", what, strerror(e));
    else
        snprintf(err, errlen, "%s", what);
}

static const char *
reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 402:
        return "Payment Required";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 413:
        return "Payload Too Large";
    case 417:
        return "Expectation Failed";
    case 422:
        return "Unprocessable Entity";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    case 529:
        return "Site Overloaded";
    default:
        return status >= 500 ? "Server Error" : "Error";
    }
}

static void
put_u64(air_buf_t *b, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    air__buf_append(b, tmp + i, sizeof tmp - i);
}

/* ------------------------------------------------------------------ timers */

static void
heap_place(struct loop *lp, size_t i, struct conn *c)
{
    lp->heap[i] = c;
    c->heap_idx = i;
}

static void
heap_up(struct loop *lp, size_t i)
{
    struct conn *c = lp->heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (lp->heap[p]->deadline <= c->deadline)
            break;
        heap_place(lp, i, lp->heap[p]);
        i = p;
    }
    heap_place(lp, i, c);
}

static void
heap_down(struct loop *lp, size_t i)
{
    struct conn *c = lp->heap[i];
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= lp->nheap)
            break;
        size_t s = l;
        if (l + 1 < lp->nheap && lp->heap[l + 1]->deadline < lp->heap[l]->deadline)
            s = l + 1;
        if (lp->heap[s]->deadline >= c->deadline)
            break;
        heap_place(lp, i, lp->heap[s]);
        i = s;
    }
    heap_place(lp, i, c);
}

static void
timer_clear(struct conn *c)
{
    struct loop *lp = c->lp;
    size_t i = c->heap_idx;
    if (i == NO_TIMER)
        return;
    c->heap_idx = NO_TIMER;
    struct conn *last = lp->heap[--lp->nheap];
    if (last == c)
        return;
    heap_place(lp, i, last);
    heap_up(lp, i);
    heap_down(lp, last->heap_idx);
}

/* Arm (or re-arm) c's single timer ms from now. Returns -1 when out of memory. */
static int
timer_set(struct conn *c, uint64_t ms)
{
    struct loop *lp = c->lp;
    timer_clear(c);
    if (lp->nheap == lp->heapcap) {
        size_t ncap = lp->heapcap ? lp->heapcap * 2 : 256;
        struct conn **h = air__realloc(lp->heap, ncap * sizeof *h);
        if (h == NULL)
            return -1;
        lp->heap = h;
        lp->heapcap = ncap;
    }
    c->deadline = now_ns() + ms * NS_PER_MS;
    lp->heap[lp->nheap] = c;
    c->heap_idx = lp->nheap++;
    heap_up(lp, c->heap_idx);
    return 0;
}

/* Wait for events until the earliest timer. epoll_pwait2 (Linux 5.11) takes
 * a nanosecond timeout, so delays are not rounded up to whole milliseconds;
 * older kernels fall back to epoll_wait with the timeout rounded up, so a
 * timer never fires early either way. */
static int
loop_wait(struct loop *lp, struct epoll_event *evs, int max)
{
    uint64_t wait_ns = UINT64_MAX;
    if (lp->nheap) {
        uint64_t now = now_ns(), d = lp->heap[0]->deadline;
        wait_ns = d > now ? d - now : 0;
    }
    if (lp->pwait2) {
        struct timespec ts;
        ts.tv_sec = (time_t)(wait_ns / 1000000000ull);
        ts.tv_nsec = (long)(wait_ns % 1000000000ull);
        int n = epoll_pwait2(lp->epfd, evs, max, wait_ns == UINT64_MAX ? NULL : &ts, NULL);
        if (n >= 0 || errno != ENOSYS)
            return n;
        lp->pwait2 = 0;
    }
    int ms = -1;
    if (wait_ns != UINT64_MAX) {
        uint64_t r = (wait_ns + NS_PER_MS - 1) / NS_PER_MS;
        ms = r > INT_MAX ? INT_MAX : (int)r;
    }
    return epoll_wait(lp->epfd, evs, max, ms);
}

/* ------------------------------------------------------------------ connections */

static void
set_events(struct conn *c, uint32_t ev)
{
    if (c->events == ev)
        return;
    struct epoll_event e;
    memset(&e, 0, sizeof e);
    e.events = ev;
    e.data.ptr = c;
    if (epoll_ctl(c->lp->epfd, EPOLL_CTL_MOD, c->fd, &e) == 0)
        c->events = ev;
    else
        c->io_err = 1;
}

static void
conn_reset_request(struct conn *c)
{
    c->scan = 0;
    c->hdr_len = 0;
    c->clen = 0;
    c->method = M_OTHER;
    c->path_off = c->path_len = c->auth_off = c->auth_len = 0;
    c->key_off = c->key_len = 0;
    c->has_auth = c->has_key = c->has_version = 0;
    c->chunked = c->expect = c->continue_sent = 0;
    c->ch_state = CH_SIZE;
    c->ch_raw = c->ch_dec = 0;
    c->ch_left = 0;
}

static struct conn *
conn_new(struct loop *lp, int fd)
{
    struct conn *c = lp->freel;
    if (c)
        lp->freel = c->next;
    else if ((c = air__calloc(1, sizeof *c)) == NULL)
        return NULL;
    c->kind = K_CONN;
    c->fd = fd;
    c->lp = lp;
    c->state = ST_IDLE;
    c->heap_idx = NO_TIMER;
    c->in_len = 0;
    c->out_off = 0;
    air__buf_reset(&c->out);
    c->peer_eof = c->io_err = 0;
    c->keep = 1;
    c->http10 = 0;
    conn_reset_request(c);

    struct epoll_event e;
    memset(&e, 0, sizeof e);
    e.events = EPOLLIN;
    e.data.ptr = c;
    if (epoll_ctl(lp->epfd, EPOLL_CTL_ADD, fd, &e) != 0) {
        c->fd = -1;
        c->next = lp->freel;
        lp->freel = c;
        return NULL;
    }
    c->events = EPOLLIN;
    c->prev = NULL;
    c->next = lp->live;
    if (lp->live)
        lp->live->prev = c;
    lp->live = c;
    return c;
}

/* Close now (rst: abortive close, the peer sees a TCP RST). The struct goes
 * to the dead list and is recycled after the current epoll batch, so stale
 * events for it in that batch are ignored (fd == -1). */
static void
conn_close(struct conn *c, int rst)
{
    struct loop *lp = c->lp;
    if (c->fd < 0)
        return;
    timer_clear(c);
    if (rst) {
        struct linger l = {1, 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    }
    close(c->fd);
    c->fd = -1;
    if (c->prev)
        c->prev->next = c->next;
    else
        lp->live = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = NULL;
    c->next = lp->dead;
    lp->dead = c;
}

static void
conn_free(struct conn *c)
{
    air__free(c->in);
    air__buf_free(&c->out);
    air__buf_free(&c->model);
    air__buf_free(&c->pre);
    air__buf_free(&c->tool_name);
    air__buf_free(&c->args);
    air__free(c);
}

/* Move the connections closed during this batch to the free list. */
static void
reap(struct loop *lp)
{
    while (lp->dead) {
        struct conn *c = lp->dead;
        lp->dead = c->next;
        if (c->in_cap > BUF_KEEP) {
            air__free(c->in);
            c->in = NULL;
            c->in_cap = 0;
        }
        if (c->out.cap > BUF_KEEP)
            air__buf_free(&c->out);
        c->next = lp->freel;
        lp->freel = c;
    }
}

/* ------------------------------------------------------------------ output */

static void
out_append(struct conn *c, const void *p, size_t n)
{
    air__buf_append(&c->out, p, n);
    if (c->out.oom)
        c->io_err = 1;
}

static void
out_puts(struct conn *c, const char *s)
{
    out_append(c, s, strlen(s));
}

/* Send iov now if nothing is queued; keep what the socket did not take. */
static void
send_iov(struct conn *c, struct iovec *iov, int n)
{
    if (c->io_err)
        return;
    if (c->out_off == c->out.len) {
        struct msghdr mh;
        memset(&mh, 0, sizeof mh);
        mh.msg_iov = iov;
        mh.msg_iovlen = (size_t)n;
        ssize_t w;
        do
            w = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
        while (w < 0 && errno == EINTR);
        if (w < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                c->io_err = 1;
                return;
            }
            w = 0;
        }
        size_t left = (size_t)w;
        for (int i = 0; i < n && left; i++) {
            size_t take = left < iov[i].iov_len ? left : iov[i].iov_len;
            iov[i].iov_base = (char *)iov[i].iov_base + take;
            iov[i].iov_len -= take;
            left -= take;
        }
    }
    for (int i = 0; i < n; i++)
        if (iov[i].iov_len)
            out_append(c, iov[i].iov_base, iov[i].iov_len);
}

/* Returns 0 when everything went out, 1 when the socket is full, -1 on error. */
static int
out_flush(struct conn *c)
{
    while (c->out_off < c->out.len) {
        ssize_t w = send(c->fd, c->out.data + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 1;
            return -1;
        }
        c->out_off += (size_t)w;
    }
    c->out_off = 0;
    air__buf_reset(&c->out);
    return 0;
}

static const char *
conn_header(const struct conn *c)
{
    if (!c->keep)
        return "Connection: close\r\n";
    return c->http10 ? "Connection: keep-alive\r\n" : "";
}

/* A complete response with a body; the connection then goes idle or closes. */
static void
respond(struct conn *c, int status, const char *ctype, const char *body, size_t blen,
        const char *extra)
{
    char head[512];
    int hn = snprintf(head, sizeof head,
                      "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s\r\n",
                      status, reason(status), ctype, blen, extra ? extra : "", conn_header(c));
    if (hn < 0 || (size_t)hn >= sizeof head) {
        c->io_err = 1;
        return;
    }
    struct iovec iov[2] = {{head, (size_t)hn}, {(void *)(uintptr_t)body, blen}};
    send_iov(c, iov, 2);
    c->state = c->keep ? ST_IDLE : ST_CLOSE;
}

static void
error_body(air_buf_t *b, const char *msg, size_t mlen, const char *type, const char *param,
           const char *code)
{
    air__buf_reset(b);
    air__buf_puts(b, "{\"error\":{\"message\":");
    air__buf_json_str(b, msg, mlen);
    air__buf_puts(b, ",\"type\":\"");
    air__buf_puts(b, type);
    air__buf_puts(b, "\",\"param\":");
    if (param) {
        air__buf_putc(b, '"');
        air__buf_puts(b, param);
        air__buf_putc(b, '"');
    } else {
        air__buf_puts(b, "null");
    }
    air__buf_puts(b, ",\"code\":");
    if (code) {
        air__buf_putc(b, '"');
        air__buf_puts(b, code);
        air__buf_putc(b, '"');
    } else {
        air__buf_puts(b, "null");
    }
    air__buf_puts(b, "}}");
}

/* Anthropic's error.type for an HTTP status (spec 2.6). */
static const char *
ant_error_type(int status)
{
    switch (status) {
    case 401:
        return "authentication_error";
    case 402:
        return "billing_error";
    case 403:
        return "permission_error";
    case 404:
        return "not_found_error";
    case 413:
        return "request_too_large";
    case 429:
        return "rate_limit_error";
    case 504:
        return "timeout_error";
    case 529:
        return "overloaded_error";
    default:
        return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

/* Google's canonical error status for an HTTP status (spec 3.5). */
static const char *
gem_error_status(int status)
{
    switch (status) {
    case 401:
        return "UNAUTHENTICATED";
    case 403:
        return "PERMISSION_DENIED";
    case 404:
        return "NOT_FOUND";
    case 409:
        return "ABORTED";
    case 429:
        return "RESOURCE_EXHAUSTED";
    case 499:
        return "CANCELLED";
    case 501:
        return "UNIMPLEMENTED";
    case 503:
        return "UNAVAILABLE";
    case 504:
        return "DEADLINE_EXCEEDED";
    default:
        return status >= 500 ? "INTERNAL" : "INVALID_ARGUMENT";
    }
}

/* {"type":"error","error":{"type":...,"message":...}} */
static void
ant_error_body(air_buf_t *b, int status, const char *msg, size_t mlen)
{
    air__buf_reset(b);
    air__buf_puts(b, "{\"type\":\"error\",\"error\":{\"type\":\"");
    air__buf_puts(b, ant_error_type(status));
    air__buf_puts(b, "\",\"message\":");
    air__buf_json_str(b, msg, mlen);
    air__buf_puts(b, "}}");
}

/* {"error":{"code":N,"message":...,"status":...[,"details":[...]]}}: reason
 * adds a google.rpc.ErrorInfo, retry_s >= 0 a google.rpc.RetryInfo. `nl`
 * pretty-prints it over several lines, as Gemini writes an error that
 * interrupts a stream. */
static void
gem_error_body(air_buf_t *b, int status, const char *msg, size_t mlen, const char *reason,
               int32_t retry_s, int nl)
{
    const char *sep = nl ? ",\n    " : ",";
    air__buf_reset(b);
    air__buf_puts(b, nl ? "{\n  \"error\": {\n    \"code\": " : "{\"error\":{\"code\":");
    put_u64(b, (uint64_t)status);
    air__buf_puts(b, sep);
    air__buf_puts(b, nl ? "\"message\": " : "\"message\":");
    air__buf_json_str(b, msg, mlen);
    air__buf_puts(b, sep);
    air__buf_puts(b, nl ? "\"status\": \"" : "\"status\":\"");
    air__buf_puts(b, gem_error_status(status));
    air__buf_putc(b, '"');
    if (reason != NULL || retry_s >= 0) {
        air__buf_puts(b, sep);
        air__buf_puts(b, "\"details\":[");
        if (reason != NULL) {
            air__buf_puts(b, "{\"@type\":\"type.googleapis.com/google.rpc.ErrorInfo\","
                             "\"reason\":\"");
            air__buf_puts(b, reason);
            air__buf_puts(b, "\",\"domain\":\"googleapis.com\"}");
        }
        if (retry_s >= 0) {
            if (reason != NULL)
                air__buf_putc(b, ',');
            air__buf_puts(b, "{\"@type\":\"type.googleapis.com/google.rpc.RetryInfo\","
                             "\"retryDelay\":\"");
            put_u64(b, (uint64_t)retry_s);
            air__buf_puts(b, "s\"}");
        }
        air__buf_putc(b, ']');
    }
    air__buf_puts(b, nl ? "\n  }\n}\n" : "}}");
}

/* Azure's own shape for the errors its front end makes (401, 404, 429):
 * {"error":{"code":"429","message":...}}. */
static void
azure_error_body(air_buf_t *b, const char *code, const char *msg, size_t mlen)
{
    air__buf_reset(b);
    air__buf_puts(b, "{\"error\":{\"code\":\"");
    air__buf_puts(b, code);
    air__buf_puts(b, "\",\"message\":");
    air__buf_json_str(b, msg, mlen);
    air__buf_puts(b, "}}");
}

static void
respond_scratch(struct conn *c, int status, const char *extra)
{
    air_buf_t *b = &c->lp->scratch;
    if (b->oom) {
        c->io_err = 1;
        return;
    }
    respond(c, status, "application/json", b->data, b->len, extra);
}

/* An error in the server's format. type, param and code are OpenAI's fields
 * (openai and azure); anthropic and gemini derive theirs from the status. */
static void
respond_error(struct conn *c, int status, const char *msg, size_t mlen, const char *type,
              const char *param, const char *code, const char *extra)
{
    air_buf_t *b = &c->lp->scratch;
    switch (c->lp->m->fmt) {
    case F_ANTHROPIC:
        ant_error_body(b, status, msg, mlen);
        break;
    case F_GEMINI:
        gem_error_body(b, status, msg, mlen, NULL, -1, 0);
        break;
    default:
        error_body(b, msg, mlen, type, param, code);
        break;
    }
    respond_scratch(c, status, extra);
}

/* Errors found while reading the request: answer, then close. */
static void
respond_http_error(struct conn *c, int status)
{
    const char *msg;
    switch (status) {
    case 411:
        msg = "Length Required";
        break;
    case 413:
        msg = "Request body too large (limit 16 MiB)";
        break;
    case 417:
        msg = "Unsupported expectation";
        break;
    case 431:
        msg = "Request headers too large";
        break;
    case 501:
        msg = "Unsupported transfer coding";
        break;
    case 505:
        msg = "Unsupported HTTP version";
        break;
    default:
        msg = "Malformed HTTP request";
        status = 400;
        break;
    }
    c->keep = 0;
    respond_error(c, status, msg, strlen(msg), "invalid_request_error", NULL, NULL, NULL);
}

/* ------------------------------------------------------------------ request parsing */

static int
token_eq(const char *p, size_t n, const char *lit)
{
    return strlen(lit) == n && strncasecmp(p, lit, n) == 0;
}

static int
has_token(const char *v, size_t n, const char *tok)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < n && v[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e > s && token_eq(v + s, e - s, tok))
            return 1;
    }
    return 0;
}

/* The header that carries the key in this format (besides Authorization). */
static const char *
key_header_name(int fmt)
{
    switch (fmt) {
    case F_ANTHROPIC:
        return "x-api-key";
    case F_GEMINI:
        return "x-goog-api-key";
    case F_AZURE:
        return "api-key";
    default:
        return NULL;
    }
}

/* Parse the request line and headers in c->in[0, hdr_len). Returns 0 or an
 * HTTP error status. */
static int
parse_head(struct conn *c)
{
    char *base = c->in;
    char *end = base + c->hdr_len - 2; /* the CRLF that closes the last line */
    char *eol = memmem(base, (size_t)(end - base) + 2, "\r\n", 2);
    char *sp1 = memchr(base, ' ', (size_t)(eol - base));
    if (sp1 == NULL || sp1 == base)
        return 400;
    size_t mlen = (size_t)(sp1 - base);
    if (mlen == 3 && memcmp(base, "GET", 3) == 0)
        c->method = M_GET;
    else if (mlen == 4 && memcmp(base, "POST", 4) == 0)
        c->method = M_POST;
    else
        c->method = M_OTHER;
    char *t = sp1 + 1;
    char *sp2 = memchr(t, ' ', (size_t)(eol - t));
    if (sp2 == NULL || sp2 == t)
        return 400;
    char *ver = sp2 + 1;
    size_t vlen = (size_t)(eol - ver);
    if (vlen == 8 && memcmp(ver, "HTTP/1.1", 8) == 0)
        c->http10 = 0;
    else if (vlen == 8 && memcmp(ver, "HTTP/1.0", 8) == 0)
        c->http10 = 1;
    else if (vlen >= 5 && memcmp(ver, "HTTP/", 5) == 0)
        return 505;
    else
        return 400;
    /* origin-form "/path", or absolute-form "http://host/path" */
    if (*t != '/') {
        char *scheme = memmem(t, (size_t)(sp2 - t), "://", 3);
        if (scheme == NULL)
            return 400;
        char *slash = memchr(scheme + 3, '/', (size_t)(sp2 - scheme - 3));
        t = slash ? slash : sp2;
    }
    c->path_off = (size_t)(t - base);
    c->path_len = (size_t)(sp2 - t);

    int has_cl = 0, conn_close = 0, conn_ka = 0;
    uint64_t cl = 0;
    const char *key_hdr = key_header_name(c->lp->m->fmt);
    char *p = eol + 2;
    while (p < end) {
        eol = memmem(p, (size_t)(end - p) + 2, "\r\n", 2);
        if (*p == ' ' || *p == '\t')
            return 400; /* obsolete line folding */
        char *colon = memchr(p, ':', (size_t)(eol - p));
        if (colon == NULL || colon == p)
            return 400;
        for (char *q = p; q < colon; q++)
            if (*q == ' ' || *q == '\t')
                return 400;
        size_t nlen = (size_t)(colon - p);
        char *v = colon + 1;
        char *ve = eol;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        size_t vl = (size_t)(ve - v);
        if (token_eq(p, nlen, "content-length")) {
            if (vl == 0)
                return 400;
            uint64_t x = 0;
            for (size_t i = 0; i < vl; i++) {
                if (v[i] < '0' || v[i] > '9')
                    return 400;
                if (x > (UINT64_MAX - 9) / 10)
                    return 413;
                x = x * 10 + (uint64_t)(v[i] - '0');
            }
            if (has_cl && x != cl)
                return 400;
            has_cl = 1;
            cl = x;
        } else if (token_eq(p, nlen, "transfer-encoding")) {
            if (!token_eq(v, vl, "chunked"))
                return 501;
            c->chunked = 1;
        } else if (token_eq(p, nlen, "connection")) {
            conn_close |= has_token(v, vl, "close");
            conn_ka |= has_token(v, vl, "keep-alive");
        } else if (token_eq(p, nlen, "expect")) {
            if (!token_eq(v, vl, "100-continue"))
                return 417;
            c->expect = 1;
        } else if (token_eq(p, nlen, "authorization")) {
            c->auth_off = (size_t)(v - base);
            c->auth_len = vl;
            c->has_auth = 1;
        } else if (key_hdr != NULL && token_eq(p, nlen, key_hdr)) {
            c->key_off = (size_t)(v - base);
            c->key_len = vl;
            c->has_key = 1;
        } else if (token_eq(p, nlen, "anthropic-version")) {
            c->has_version = vl > 0;
        }
        p = eol + 2;
    }
    if (c->chunked && has_cl)
        return 400; /* ambiguous framing: refuse rather than guess */
    c->clen = cl;
    if (conn_close)
        c->keep = 0;
    else
        c->keep = c->http10 ? (unsigned)conn_ka : 1u;
    return 0;
}

/* Decode a chunked body in place: data is moved down to follow the headers,
 * and the unparsed tail is compacted behind it, so the buffer never holds more
 * than headers + body + one partial frame line. */
static int
dechunk(struct conn *c)
{
    for (;;) {
        char *in = c->in;
        size_t avail = c->in_len - c->ch_raw;
        switch (c->ch_state) {
        case CH_SIZE:
        case CH_TRAILER: {
            char *nl = memchr(in + c->ch_raw, '\n', avail);
            if (nl == NULL) {
                if (avail > 4096)
                    return -400;
                goto more;
            }
            size_t line = (size_t)(nl - (in + c->ch_raw));
            if (c->ch_state == CH_TRAILER) {
                c->ch_raw += line + 1;
                if (line == 0 || (line == 1 && in[c->ch_raw - 2] == '\r'))
                    return P_DONE;
                continue;
            }
            uint64_t size = 0;
            size_t i = 0;
            for (; i < line; i++) {
                char ch = in[c->ch_raw + i];
                int d;
                if (ch >= '0' && ch <= '9')
                    d = ch - '0';
                else if (ch >= 'a' && ch <= 'f')
                    d = ch - 'a' + 10;
                else if (ch >= 'A' && ch <= 'F')
                    d = ch - 'A' + 10;
                else
                    break;
                if (i >= 15)
                    return -400;
                size = size * 16 + (uint64_t)d;
            }
            if (i == 0)
                return -400;
            if (size > MAX_BODY || c->ch_dec - c->hdr_len + size > MAX_BODY)
                return -413;
            c->ch_raw += line + 1;
            if (size == 0) {
                c->ch_state = CH_TRAILER;
            } else {
                c->ch_left = size;
                c->ch_state = CH_DATA;
            }
            break;
        }
        case CH_DATA: {
            size_t n = avail < c->ch_left ? avail : (size_t)c->ch_left;
            if (n) {
                memmove(in + c->ch_dec, in + c->ch_raw, n);
                c->ch_dec += n;
                c->ch_raw += n;
                c->ch_left -= n;
            }
            if (c->ch_left)
                goto more;
            c->ch_state = CH_CRLF;
            break;
        }
        case CH_CRLF:
            if (avail < 2)
                goto more;
            if (in[c->ch_raw] != '\r' || in[c->ch_raw + 1] != '\n')
                return -400;
            c->ch_raw += 2;
            c->ch_state = CH_SIZE;
            break;
        default:
            return -400;
        }
    }
more:
    if (c->ch_raw > c->ch_dec) {
        memmove(c->in + c->ch_dec, c->in + c->ch_raw, c->in_len - c->ch_raw);
        c->in_len -= c->ch_raw - c->ch_dec;
        c->ch_raw = c->ch_dec;
    }
    return P_MORE;
}

static int
in_reserve(struct conn *c, size_t need)
{
    if (need <= c->in_cap)
        return 0;
    size_t ncap = c->in_cap ? c->in_cap : IN_INIT;
    while (ncap < need)
        ncap *= 2;
    if (ncap > MAX_IN)
        ncap = MAX_IN;
    if (ncap < need)
        return -1;
    char *p = air__realloc(c->in, ncap);
    if (p == NULL)
        return -1;
    c->in = p;
    c->in_cap = ncap;
    return 0;
}

static void
maybe_continue(struct conn *c)
{
    if (c->expect && !c->continue_sent && !c->http10) {
        out_puts(c, "HTTP/1.1 100 Continue\r\n\r\n");
        c->continue_sent = 1;
    }
}

/* One request from c->in. On P_DONE, *body and *blen are the body and *consumed
 * the bytes the request took. */
static int
parse_request(struct conn *c, const char **body, size_t *blen, size_t *consumed)
{
    if (c->hdr_len == 0) {
        if (c->in_len == 0)
            return P_MORE;
        char *e = memmem(c->in + c->scan, c->in_len - c->scan, "\r\n\r\n", 4);
        if (e == NULL) {
            if (c->in_len > MAX_HEAD)
                return -431;
            c->scan = c->in_len > 3 ? c->in_len - 3 : 0;
            return P_MORE;
        }
        c->hdr_len = (size_t)(e - c->in) + 4;
        if (c->hdr_len > MAX_HEAD)
            return -431;
        int st = parse_head(c);
        if (st)
            return -st;
        if (c->chunked) {
            c->ch_state = CH_SIZE;
            c->ch_raw = c->ch_dec = c->hdr_len;
        } else if (c->clen > MAX_BODY) {
            return -413;
        } else if (in_reserve(c, c->hdr_len + (size_t)c->clen) != 0) {
            return -413;
        }
    }
    if (c->chunked) {
        int st = dechunk(c);
        if (st != P_DONE) {
            if (st == P_MORE)
                maybe_continue(c);
            return st;
        }
        *body = c->in + c->hdr_len;
        *blen = c->ch_dec - c->hdr_len;
        *consumed = c->ch_raw;
        return P_DONE;
    }
    if (c->in_len - c->hdr_len < c->clen) {
        maybe_continue(c);
        return P_MORE;
    }
    *body = c->in + c->hdr_len;
    *blen = (size_t)c->clen;
    *consumed = c->hdr_len + (size_t)c->clen;
    return P_DONE;
}

static void
consume(struct conn *c, size_t n)
{
    if (n < c->in_len)
        memmove(c->in, c->in + n, c->in_len - n);
    c->in_len -= n;
    conn_reset_request(c);
    if (c->in_len == 0 && c->in_cap > BUF_KEEP) {
        air__free(c->in);
        c->in = NULL;
        c->in_cap = 0;
    }
}

/* Read what the socket has. Returns -1 on a hard error. */
static int
read_in(struct conn *c)
{
    for (;;) {
        if (c->in_len == c->in_cap) {
            if (c->in_cap >= MAX_IN)
                return 0; /* the parser rejects the request */
            if (in_reserve(c, c->in_len + 1) != 0)
                return -1;
        }
        size_t room = c->in_cap - c->in_len;
        ssize_t r = recv(c->fd, c->in + c->in_len, room, 0);
        if (r > 0) {
            c->in_len += (size_t)r;
            if ((size_t)r < room)
                return 0;
            continue;
        }
        if (r == 0) {
            c->peer_eof = 1;
            return 0;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        return -1;
    }
}

/* ------------------------------------------------------------------ output helpers */

static void
out_u64(struct conn *c, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    out_append(c, tmp + i, sizeof tmp - i);
}

static void
out_json_str(struct conn *c, const char *s, size_t n)
{
    air__buf_json_str(&c->out, s, n);
    if (c->out.oom)
        c->io_err = 1;
}

static void
out_buf(struct conn *c, const air_buf_t *b)
{
    if (b->len)
        out_append(c, b->data, b->len);
}

/* The text of piece i: "tok<i> " for text, a slice of the arguments for a
 * tool call (cut between UTF-8 characters, so every slice is valid text). */
static void
piece_text(const struct conn *c, uint32_t i, char *tmp, size_t tmplen, const char **p, size_t *n)
{
    if (!c->tool) {
        int k = snprintf(tmp, tmplen, "tok%u ", (unsigned)i);
        *p = tmp;
        *n = k > 0 ? (size_t)k : 0;
        return;
    }
    size_t len = c->args.len, np = c->npieces ? c->npieces : 1;
    size_t a = (size_t)i * len / np, e = ((size_t)i + 1) * len / np;
    while (a > 0 && a < len && ((unsigned char)c->args.data[a] & 0xC0) == 0x80)
        a++;
    while (e > a && e < len && ((unsigned char)c->args.data[e] & 0xC0) == 0x80)
        e++;
    if (e < a)
        e = a;
    *p = c->args.data ? c->args.data + a : "";
    *n = e - a;
}

static void
put_usage_openai(air_buf_t *b, uint64_t p, uint64_t ct)
{
    air__buf_puts(b, "{\"prompt_tokens\":");
    put_u64(b, p);
    air__buf_puts(b, ",\"completion_tokens\":");
    put_u64(b, ct);
    air__buf_puts(b, ",\"total_tokens\":");
    put_u64(b, p + ct);
    air__buf_putc(b, '}');
}

static void
put_usage_gemini(air_buf_t *b, uint64_t p, uint64_t ct, int final)
{
    air__buf_puts(b, "{\"promptTokenCount\":");
    put_u64(b, p);
    if (final) {
        air__buf_puts(b, ",\"candidatesTokenCount\":");
        put_u64(b, ct);
    }
    air__buf_puts(b, ",\"totalTokenCount\":");
    put_u64(b, final ? p + ct : p);
    air__buf_putc(b, '}');
}

static const char azure_cfr[] = "{\"hate\":{\"filtered\":false,\"severity\":\"safe\"},"
                                "\"self_harm\":{\"filtered\":false,\"severity\":\"safe\"},"
                                "\"sexual\":{\"filtered\":false,\"severity\":\"safe\"},"
                                "\"violence\":{\"filtered\":false,\"severity\":\"safe\"}}";

/* ------------------------------------------------------------------ failures */

/* The message of an injected failure in the vendor's words. */
static const char *
fail_message(int fmt, int status)
{
    switch (fmt) {
    case F_ANTHROPIC:
        if (status == 529)
            return "Overloaded";
        if (status == 429)
            return "Number of requests has exceeded your per-minute rate limit (mock)";
        if (status == 402)
            return "Your credit balance is too low to access the Anthropic API (mock)";
        return status >= 500 ? "Internal server error (mock)" : "Injected failure (mock)";
    case F_GEMINI:
        if (status == 429)
            return "Resource has been exhausted (e.g. check quota). (mock)";
        if (status == 503)
            return "The model is overloaded. Please try again later. (mock)";
        return status >= 500 ? "An internal error has occurred. Please retry or report it. (mock)"
                             : "Injected failure (mock)";
    default:
        if (status == 429)
            return "Rate limit reached for requests (mock)";
        if (status == 503 || status == 529)
            return "The server is overloaded, please try again later (mock)";
        if (status == 401)
            return "Incorrect API key provided";
        return status >= 500 ? "The server had an error while processing your request (mock)"
                             : "Injected failure (mock)";
    }
}

static void
openai_fail_body(air_buf_t *b, int status)
{
    const char *type = status >= 500 ? "server_error" : "invalid_request_error";
    const char *code = NULL;
    const char *msg = fail_message(F_OPENAI, status);
    if (status == 429) {
        type = "requests";
        code = "rate_limit_exceeded";
    } else if (status == 401) {
        code = "invalid_api_key";
    }
    error_body(b, msg, strlen(msg), type, NULL, code);
}

static void
respond_fail(struct conn *c)
{
    const struct air_mock *m = c->lp->m;
    const air_mock_opts_t *o = &m->o;
    int status = o->fail_status;
    char extra[96] = "";
    if (o->retry_after_s >= 0 && m->fmt != F_GEMINI) {
        if (m->fmt == F_AZURE)
            snprintf(extra, sizeof extra, "Retry-After: %d\r\nretry-after-ms: %lld\r\n",
                     (int)o->retry_after_s, (long long)o->retry_after_s * 1000);
        else
            snprintf(extra, sizeof extra, "Retry-After: %d\r\n", (int)o->retry_after_s);
    }
    cnt_inc(&c->lp->cnt.failed);
    air_buf_t *b = &c->lp->scratch;
    const char *msg = fail_message(m->fmt, status);
    switch (m->fmt) {
    case F_ANTHROPIC:
        ant_error_body(b, status, msg, strlen(msg));
        break;
    case F_GEMINI:
        /* Gemini sends no Retry-After: the wait rides in RetryInfo. */
        gem_error_body(b, status, msg, strlen(msg), NULL, o->retry_after_s, 0);
        break;
    case F_AZURE:
        if (status == 429) {
            char am[256];
            int n = snprintf(am, sizeof am,
                             "Requests to the ChatCompletions_Create Operation under Azure OpenAI "
                             "API version have exceeded call rate limit of your current pricing "
                             "tier. Please retry after %d seconds. (mock)",
                             o->retry_after_s >= 0 ? (int)o->retry_after_s : 1);
            azure_error_body(b, "429", am, n > 0 ? (size_t)n : 0);
            break;
        }
        openai_fail_body(b, status); /* Azure's other errors have OpenAI's shape */
        break;
    default:
        openai_fail_body(b, status);
        break;
    }
    respond_scratch(c, status, extra);
}

static void
respond_unauthorized(struct conn *c, int key_present)
{
    air_buf_t *b = &c->lp->scratch;
    cnt_inc(&c->lp->cnt.unauthorized);
    switch (c->lp->m->fmt) {
    case F_ANTHROPIC: {
        static const char msg[] = "invalid x-api-key";
        ant_error_body(b, 401, msg, sizeof msg - 1);
        respond_scratch(c, 401, NULL);
        return;
    }
    case F_GEMINI:
        /* Google answers a wrong key with 400 API_KEY_INVALID and a missing
         * one with 403 (spec 3.5). */
        if (key_present) {
            static const char msg[] = "API key not valid. Please pass a valid API key.";
            gem_error_body(b, 400, msg, sizeof msg - 1, "API_KEY_INVALID", -1, 0);
            respond_scratch(c, 400, NULL);
        } else {
            static const char msg[] =
                "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity to call "
                "this API.";
            gem_error_body(b, 403, msg, sizeof msg - 1, NULL, -1, 0);
            respond_scratch(c, 403, NULL);
        }
        return;
    case F_AZURE: {
        static const char msg[] =
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
            "provide a valid key for an active subscription and use a correct regional API "
            "endpoint for your resource.";
        azure_error_body(b, "401", msg, sizeof msg - 1);
        respond_scratch(c, 401, NULL);
        return;
    }
    default:
        respond(c, 401, "application/json", unauthorized_json, sizeof unauthorized_json - 1, NULL);
        return;
    }
}

/* ------------------------------------------------------------------ plain replies */

static void
body_openai(struct conn *c, air_buf_t *b)
{
    const struct air_mock *m = c->lp->m;
    air__buf_puts(b, "{\"id\":\"chatcmpl-mock-");
    put_u64(b, c->id);
    air__buf_puts(b, "\",\"object\":\"chat.completion\",\"created\":");
    put_u64(b, (uint64_t)c->created);
    air__buf_puts(b, ",\"model\":");
    air__buf_append(b, c->model.data, c->model.len);
    if (m->fmt == F_AZURE) {
        air__buf_puts(b, ",\"prompt_filter_results\":[{\"prompt_index\":0,"
                         "\"content_filter_results\":");
        air__buf_puts(b, azure_cfr);
        air__buf_puts(b, "}]");
    }
    air__buf_puts(b, ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",");
    if (c->tool) {
        air__buf_puts(b, "\"content\":null,\"tool_calls\":[{\"id\":\"call_mock_");
        put_u64(b, c->id);
        air__buf_puts(b, "_0\",\"type\":\"function\",\"function\":{\"name\":");
        air__buf_append(b, c->tool_name.data, c->tool_name.len);
        air__buf_puts(b, ",\"arguments\":");
        air__buf_json_str(b, c->args.data ? c->args.data : "", c->args.len);
        air__buf_puts(b, "}}]}");
    } else {
        air__buf_puts(b, "\"content\":\"");
        air__buf_append(b, m->content, m->content_len);
        air__buf_puts(b, "\"}");
    }
    if (m->fmt == F_AZURE) {
        air__buf_puts(b, ",\"content_filter_results\":");
        air__buf_puts(b, c->tool ? "{}" : azure_cfr);
    }
    air__buf_puts(b, ",\"logprobs\":null,\"finish_reason\":\"");
    air__buf_puts(b, c->tool ? "tool_calls" : "stop");
    air__buf_puts(b, "\"}],\"usage\":");
    put_usage_openai(b, c->prompt_tokens, c->ctoks);
    air__buf_putc(b, '}');
}

static void
body_anthropic(struct conn *c, air_buf_t *b)
{
    const struct air_mock *m = c->lp->m;
    air__buf_puts(b, "{\"id\":\"msg_mock_");
    put_u64(b, c->id);
    air__buf_puts(b, "\",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
    air__buf_append(b, c->model.data, c->model.len);
    air__buf_puts(b, ",\"content\":[");
    if (c->tool) {
        air__buf_puts(b, "{\"type\":\"tool_use\",\"id\":\"toolu_mock_");
        put_u64(b, c->id);
        air__buf_puts(b, "_0\",\"name\":");
        air__buf_append(b, c->tool_name.data, c->tool_name.len);
        air__buf_puts(b, ",\"input\":");
        air__buf_append(b, c->args.data, c->args.len);
        air__buf_putc(b, '}');
    } else {
        air__buf_puts(b, "{\"type\":\"text\",\"text\":\"");
        air__buf_append(b, m->content, m->content_len);
        air__buf_puts(b, "\"}");
    }
    air__buf_puts(b, "],\"stop_reason\":\"");
    air__buf_puts(b, c->tool ? "tool_use" : "end_turn");
    air__buf_puts(b, "\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":");
    put_u64(b, c->prompt_tokens);
    air__buf_puts(b, ",\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,"
                     "\"output_tokens\":");
    put_u64(b, c->ctoks);
    air__buf_puts(b, "}}");
}

/* One GenerateContentResponse with the given parts JSON (without brackets).
 * final: it carries finishReason and the complete usage. */
static void
gem_response(struct conn *c, air_buf_t *b, const char *parts, size_t plen, int final)
{
    air__buf_puts(b, "{\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[");
    air__buf_append(b, parts, plen);
    air__buf_puts(b, "]},");
    if (final)
        air__buf_puts(b, "\"finishReason\":\"STOP\",");
    air__buf_puts(b, "\"index\":0}],\"usageMetadata\":");
    put_usage_gemini(b, c->prompt_tokens, c->ctoks, final);
    air__buf_puts(b, ",\"modelVersion\":");
    air__buf_append(b, c->model.data, c->model.len);
    air__buf_puts(b, ",\"responseId\":\"mock-");
    put_u64(b, c->id);
    air__buf_puts(b, "\"}");
}

/* The functionCall part of a tool answer, into b. */
static void
gem_call_part(const struct conn *c, air_buf_t *b)
{
    air__buf_puts(b, "{\"functionCall\":{\"name\":");
    air__buf_append(b, c->tool_name.data, c->tool_name.len);
    air__buf_puts(b, ",\"args\":");
    air__buf_append(b, c->args.data, c->args.len);
    air__buf_puts(b, "}}");
}

static void
body_gemini(struct conn *c, air_buf_t *b)
{
    const struct air_mock *m = c->lp->m;
    air_buf_t parts = AIR_BUF_INIT;
    if (c->tool) {
        gem_call_part(c, &parts);
    } else {
        air__buf_puts(&parts, "{\"text\":\"");
        air__buf_append(&parts, m->content, m->content_len);
        air__buf_puts(&parts, "\"}");
    }
    if (parts.oom)
        b->oom = 1;
    else
        gem_response(c, b, parts.data, parts.len, 1);
    air__buf_free(&parts);
}

static void
respond_plain(struct conn *c)
{
    struct loop *lp = c->lp;
    air_buf_t *b = &lp->scratch;
    air__buf_reset(b);
    switch (lp->m->fmt) {
    case F_ANTHROPIC:
        body_anthropic(c, b);
        break;
    case F_GEMINI:
        body_gemini(c, b);
        break;
    default:
        body_openai(c, b);
        break;
    }
    if (b->oom) {
        c->io_err = 1;
        return;
    }
    if (c->action == ACT_RESET) {
        /* Headers promise the whole body; send half, then RST. */
        char head[256];
        int hn = snprintf(head, sizeof head,
                          "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                          "Content-Length: %zu\r\n\r\n",
                          b->len);
        struct iovec iov[2] = {{head, (size_t)hn}, {b->data, b->len / 2}};
        cnt_inc(&lp->cnt.resets);
        send_iov(c, iov, 2);
        c->state = ST_RESET;
        return;
    }
    /* Count before sending: a client that reads the stats right after its
     * reply must see it counted. */
    cnt_inc(&lp->cnt.ok);
    respond(c, 200, "application/json", b->data, b->len, NULL);
}

/* ------------------------------------------------------------------ streams */

/* Stream events: each one is its own HTTP chunk. The chunk size is written
 * into a fixed 8-digit placeholder once the event is complete (leading zeros
 * are valid chunk-size syntax). */
static size_t
ev_begin(struct conn *c)
{
    size_t at = c->out.len;
    if (c->chunked_resp)
        out_append(c, "00000000\r\n", 10);
    return at;
}

static void
ev_end(struct conn *c, size_t at)
{
    if (!c->chunked_resp || c->out.oom)
        return;
    static const char hex[] = "0123456789abcdef";
    size_t n = c->out.len - at - 10;
    for (int i = 7; i >= 0; i--) {
        c->out.data[at + (size_t)i] = hex[n & 15];
        n >>= 4;
    }
    out_append(c, "\r\n", 2);
}

/* Open one event in the format's framing (name: Anthropic's event name). */
static size_t
ev_open(struct conn *c, const char *name)
{
    size_t at = ev_begin(c);
    switch (c->lp->m->fmt) {
    case F_ANTHROPIC:
        out_puts(c, "event: ");
        out_puts(c, name);
        out_puts(c, "\ndata: ");
        break;
    case F_GEMINI:
        if (c->gem_array)
            out_puts(c, c->nev == 0 ? "[" : ",\r\n");
        else
            out_puts(c, "data: ");
        break;
    default:
        out_puts(c, "data: ");
        break;
    }
    c->nev++;
    return at;
}

static void
ev_close(struct conn *c, size_t at)
{
    if (c->lp->m->fmt == F_GEMINI)
        out_puts(c, c->gem_array ? "" : "\r\n\r\n"); /* Gemini frames with CRLF */
    else
        out_puts(c, "\n\n");
    ev_end(c, at);
}

/* openai: prefix + choice + "]" [+ ,"usage":null] + "}" */
static void
ev_chunk(struct conn *c, const char *choice, size_t clen)
{
    size_t at = ev_open(c, NULL);
    out_append(c, c->pre.data, c->pre.len);
    out_append(c, choice, clen);
    if (c->include_usage)
        out_puts(c, "],\"usage\":null}");
    else
        out_puts(c, "]}");
    ev_close(c, at);
}

static void
ev_piece(struct conn *c, uint32_t i)
{
    char tmp[32];
    const char *p;
    size_t n;
    piece_text(c, i, tmp, sizeof tmp, &p, &n);
    air_buf_t *b = &c->lp->scratch;
    air__buf_reset(b);
    size_t at;
    switch (c->lp->m->fmt) {
    case F_ANTHROPIC:
        at = ev_open(c, "content_block_delta");
        out_puts(c, "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":");
        out_puts(c,
                 c->tool ? "\"input_json_delta\",\"partial_json\":" : "\"text_delta\",\"text\":");
        out_json_str(c, p, n);
        out_puts(c, "}}");
        ev_close(c, at);
        return;
    case F_GEMINI: {
        air_buf_t parts = AIR_BUF_INIT;
        if (c->tool) {
            gem_call_part(c, &parts); /* function calls arrive whole (spec 3.4) */
        } else {
            air__buf_puts(&parts, "{\"text\":");
            air__buf_json_str(&parts, p, n);
            air__buf_putc(&parts, '}');
        }
        if (parts.oom)
            b->oom = 1;
        else
            gem_response(c, b, parts.data, parts.len, i + 1 == c->npieces);
        air__buf_free(&parts);
        if (b->oom) {
            c->io_err = 1;
            return;
        }
        at = ev_open(c, NULL);
        out_buf(c, b);
        ev_close(c, at);
        return;
    }
    default:
        if (c->tool) {
            air__buf_puts(b, "{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,"
                             "\"function\":{\"arguments\":");
            air__buf_json_str(b, p, n);
            air__buf_puts(b, "}}]},\"finish_reason\":null}");
        } else {
            air__buf_puts(b, "{\"index\":0,\"delta\":{\"content\":");
            air__buf_json_str(b, p, n);
            air__buf_puts(b, "},\"finish_reason\":null}");
        }
        if (b->oom) {
            c->io_err = 1;
            return;
        }
        ev_chunk(c, b->data, b->len);
        return;
    }
}

static void
stream_finish_http(struct conn *c)
{
    if (c->chunked_resp)
        out_append(c, "0\r\n\r\n", 5);
}

static void
stream_tail(struct conn *c)
{
    size_t at;
    switch (c->lp->m->fmt) {
    case F_ANTHROPIC:
        at = ev_open(c, "content_block_stop");
        out_puts(c, "{\"type\":\"content_block_stop\",\"index\":0}");
        ev_close(c, at);
        at = ev_open(c, "message_delta");
        out_puts(c, "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"");
        out_puts(c, c->tool ? "tool_use" : "end_turn");
        out_puts(c, "\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":");
        out_u64(c, c->ctoks);
        out_puts(c, "}}");
        ev_close(c, at);
        at = ev_open(c, "message_stop");
        out_puts(c, "{\"type\":\"message_stop\"}");
        ev_close(c, at);
        break;
    case F_GEMINI:
        if (c->npieces == 0) { /* no piece carried the finish: one event does */
            air_buf_t *b = &c->lp->scratch;
            static const char empty[] = "{\"text\":\"\"}";
            air__buf_reset(b);
            gem_response(c, b, empty, sizeof empty - 1, 1);
            if (b->oom) {
                c->io_err = 1;
                return;
            }
            at = ev_open(c, NULL);
            out_buf(c, b);
            ev_close(c, at);
        }
        if (c->gem_array) {
            at = ev_begin(c);
            out_puts(c, "]");
            ev_end(c, at);
        }
        break;
    default: {
        static const char fin[] = "{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}";
        static const char fin_tool[] =
            "{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}";
        if (c->tool)
            ev_chunk(c, fin_tool, sizeof fin_tool - 1);
        else
            ev_chunk(c, fin, sizeof fin - 1);
        if (c->include_usage) {
            air_buf_t *b = &c->lp->scratch;
            air__buf_reset(b);
            air__buf_append(b, c->pre.data, c->pre.len);
            air__buf_puts(b, "],\"usage\":");
            put_usage_openai(b, c->prompt_tokens, c->ctoks);
            air__buf_putc(b, '}');
            if (b->oom) {
                c->io_err = 1;
                return;
            }
            at = ev_open(c, NULL);
            out_buf(c, b);
            ev_close(c, at);
        }
        at = ev_open(c, NULL);
        out_puts(c, "[DONE]");
        ev_close(c, at);
        break;
    }
    }
    stream_finish_http(c);
}

/* The injected mid-stream failure: the vendor's error event, then the end of
 * the stream (no [DONE], no message_stop, no finishReason). */
static void
stream_error_tail(struct conn *c)
{
    const struct air_mock *m = c->lp->m;
    int status = m->o.fail_status;
    air_buf_t *b = &c->lp->scratch;
    size_t at;
    switch (m->fmt) {
    case F_ANTHROPIC: {
        const char *msg = fail_message(m->fmt, status);
        ant_error_body(b, status, msg, strlen(msg));
        if (b->oom) {
            c->io_err = 1;
            return;
        }
        at = ev_open(c, "error");
        out_buf(c, b);
        ev_close(c, at);
        break;
    }
    case F_GEMINI: {
        const char *msg = fail_message(m->fmt, status);
        gem_error_body(b, status, msg, strlen(msg), NULL, -1, !c->gem_array);
        if (b->oom) {
            c->io_err = 1;
            return;
        }
        /* With alt=sse Gemini writes the error as bare JSON lines, outside
         * any data: field (spec 3.4); in the array form it is an element. */
        at = ev_begin(c);
        if (c->gem_array)
            out_puts(c, c->nev == 0 ? "[" : ",\r\n");
        out_buf(c, b);
        if (c->gem_array)
            out_puts(c, "]");
        ev_end(c, at);
        break;
    }
    default: {
        openai_fail_body(b, status);
        if (b->oom) {
            c->io_err = 1;
            return;
        }
        at = ev_open(c, NULL);
        out_buf(c, b);
        ev_close(c, at);
        break;
    }
    }
    stream_finish_http(c);
}

/* Emit what is due now; arm the next chunk timer or finish. Pieces come
 * chunk_delay_ms apart, the first one chunk_delay_ms after the opening
 * events, and the closing events right after the last piece. A reset or an
 * injected stream error happens once half the pieces are out. */
static void
stream_continue(struct conn *c, int timer_fired)
{
    struct loop *lp = c->lp;
    uint32_t n = c->npieces, delay = lp->m->o.chunk_delay_ms;
    if (timer_fired)
        ev_piece(c, c->next_piece++);
    for (;;) {
        if (c->action == ACT_RESET && c->next_piece >= n / 2) {
            cnt_inc(&lp->cnt.resets);
            c->state = ST_RESET;
            return;
        }
        if (c->serr && c->next_piece >= n / 2) {
            stream_error_tail(c);
            cnt_inc(&lp->cnt.stream_errors);
            cnt_inc(&lp->cnt.failed);
            c->state = c->keep ? ST_IDLE : ST_CLOSE;
            return;
        }
        if (c->next_piece >= n) {
            stream_tail(c);
            cnt_inc(&lp->cnt.ok);
            c->state = c->keep ? ST_IDLE : ST_CLOSE;
            return;
        }
        if (delay) {
            if (timer_set(c, delay) != 0)
                c->io_err = 1;
            c->state = ST_STREAM;
            return;
        }
        ev_piece(c, c->next_piece++);
    }
}

static void
stream_headers(struct conn *c, const char *ctype)
{
    /* HTTP/1.0 has no chunked coding: the end of the stream is the close. */
    c->chunked_resp = !c->http10;
    if (c->http10)
        c->keep = 0;
    out_puts(c, "HTTP/1.1 200 OK\r\nContent-Type: ");
    out_puts(c, ctype);
    out_puts(c, "\r\nCache-Control: no-cache\r\n");
    if (c->chunked_resp)
        out_puts(c, "Transfer-Encoding: chunked\r\n");
    out_puts(c, conn_header(c));
    out_puts(c, "\r\n");
}

static void
stream_open_openai(struct conn *c)
{
    static const char role[] =
        "{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}";
    air_buf_t *p = &c->pre;
    air__buf_reset(p);
    air__buf_puts(p, "{\"id\":\"chatcmpl-mock-");
    put_u64(p, c->id);
    air__buf_puts(p, "\",\"object\":\"chat.completion.chunk\",\"created\":");
    put_u64(p, (uint64_t)c->created);
    air__buf_puts(p, ",\"model\":");
    air__buf_append(p, c->model.data, c->model.len);
    air__buf_puts(p, ",\"choices\":[");
    if (p->oom) {
        c->io_err = 1;
        return;
    }
    stream_headers(c, "text/event-stream");
    size_t at;
    if (c->lp->m->fmt == F_AZURE) {
        /* Azure opens with the prompt annotations: empty choices and envelope
         * (spec 5). */
        at = ev_open(c, NULL);
        out_puts(c, "{\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\","
                    "\"prompt_filter_results\":[{\"prompt_index\":0,\"content_filter_results\":");
        out_puts(c, azure_cfr);
        out_puts(c, "}]}");
        ev_close(c, at);
    }
    if (!c->tool) {
        ev_chunk(c, role, sizeof role - 1);
        return;
    }
    air_buf_t *b = &c->lp->scratch;
    air__buf_reset(b);
    air__buf_puts(b, "{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,"
                     "\"tool_calls\":[{\"index\":0,\"id\":\"call_mock_");
    put_u64(b, c->id);
    air__buf_puts(b, "_0\",\"type\":\"function\",\"function\":{\"name\":");
    air__buf_append(b, c->tool_name.data, c->tool_name.len);
    air__buf_puts(b, ",\"arguments\":\"\"}}]},\"finish_reason\":null}");
    if (b->oom) {
        c->io_err = 1;
        return;
    }
    ev_chunk(c, b->data, b->len);
}

static void
stream_open_anthropic(struct conn *c)
{
    stream_headers(c, "text/event-stream");
    size_t at = ev_open(c, "message_start");
    out_puts(c, "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_mock_");
    out_u64(c, c->id);
    out_puts(c, "\",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
    out_buf(c, &c->model);
    out_puts(c, ",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,"
                "\"usage\":{\"input_tokens\":");
    out_u64(c, c->prompt_tokens);
    out_puts(c, ",\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,"
                "\"output_tokens\":1}}}");
    ev_close(c, at);
    at = ev_open(c, "content_block_start");
    out_puts(c, "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":");
    if (c->tool) {
        out_puts(c, "{\"type\":\"tool_use\",\"id\":\"toolu_mock_");
        out_u64(c, c->id);
        out_puts(c, "_0\",\"name\":");
        out_buf(c, &c->tool_name);
        out_puts(c, ",\"input\":{}}}");
    } else {
        out_puts(c, "{\"type\":\"text\",\"text\":\"\"}}");
    }
    ev_close(c, at);
    at = ev_open(c, "ping");
    out_puts(c, "{\"type\": \"ping\"}");
    ev_close(c, at);
    if (c->tool) { /* the API opens every tool_use with an empty fragment */
        at = ev_open(c, "content_block_delta");
        out_puts(c, "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
                    "{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}");
        ev_close(c, at);
    }
}

static void
stream_start(struct conn *c)
{
    c->nev = 0;
    switch (c->lp->m->fmt) {
    case F_ANTHROPIC:
        stream_open_anthropic(c);
        break;
    case F_GEMINI:
        stream_headers(c, c->gem_array ? "application/json" : "text/event-stream");
        break;
    default:
        stream_open_openai(c);
        break;
    }
    if (c->io_err)
        return;
    cnt_inc(&c->lp->cnt.streams);
    c->next_piece = 0;
    stream_continue(c, 0);
}

/* The latency is over (or was zero): produce the decided outcome. */
static void
act(struct conn *c)
{
    if (c->action == ACT_FAIL)
        respond_fail(c);
    else if (c->stream)
        stream_start(c);
    else
        respond_plain(c);
}

/* ------------------------------------------------------------------ recording */

/* The last chat request, for air_mock_last_request and friends. */
static void
record_last(struct conn *c, const char *body, size_t blen, const char *key, size_t klen)
{
    struct loop *lp = c->lp;
    uint64_t stamp = atomic_fetch_add_explicit(&lp->m->rec_seq, 1, memory_order_relaxed) + 1;
    pthread_mutex_lock(&lp->rec_mu);
    air__buf_reset(&lp->rec_body);
    air__buf_append(&lp->rec_body, body, blen);
    air__buf_reset(&lp->rec_auth);
    air__buf_append(&lp->rec_auth, key, klen);
    air__buf_reset(&lp->rec_path);
    air__buf_append(&lp->rec_path, c->in + c->path_off, c->path_len);
    air__buf_reset(&lp->rec_head);
    air__buf_append(&lp->rec_head, c->in, c->hdr_len);
    lp->rec_stamp = stamp;
    pthread_mutex_unlock(&lp->rec_mu);
}

static int
is_secret_header(const char *name, size_t n)
{
    return token_eq(name, n, "authorization") || token_eq(name, n, "proxy-authorization") ||
           token_eq(name, n, "x-api-key") || token_eq(name, n, "api-key") ||
           token_eq(name, n, "x-goog-api-key");
}

/* "***" + the last 4 characters; only "***" for values under 8 bytes, where
 * 4 characters would give away half of them. */
static void
put_masked(air_buf_t *b, const char *v, size_t n)
{
    air__buf_puts(b, "***");
    if (n >= 8)
        air__buf_append(b, v + n - 4, 4);
}

/* A cJSON string from bytes that are not NUL-terminated. */
static cJSON *
jstr_n(air_buf_t *tmp, const char *s, size_t n)
{
    air__buf_reset(tmp);
    air__buf_append(tmp, s, n);
    air__buf_putc(tmp, '\0');
    if (tmp->oom)
        return NULL;
    return cJSON_CreateString(tmp->data);
}

/* The query with the value of every key= parameter masked. */
static void
masked_query(air_buf_t *b, const char *q, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t s = i;
        while (i < n && q[i] != '&')
            i++;
        const char *eq = memchr(q + s, '=', i - s);
        if (eq != NULL && token_eq(q + s, (size_t)(eq - (q + s)), "key")) {
            air__buf_append(b, q + s, (size_t)(eq - (q + s)) + 1);
            put_masked(b, eq + 1, (size_t)(q + i - eq - 1));
        } else {
            air__buf_append(b, q + s, i - s);
        }
        if (i < n)
            air__buf_putc(b, q[i++]);
    }
}

/* One line for --record: {"method","path","query","headers","body"}. */
static void
record_line(struct conn *c, const char *body, size_t blen)
{
    struct air_mock *m = c->lp->m;
    const char *base = c->in;
    const char *end = base + c->hdr_len - 2;
    const char *eol = memmem(base, (size_t)(end - base) + 2, "\r\n", 2);
    const char *sp = memchr(base, ' ', (size_t)(eol - base));
    const char *target = c->in + c->path_off;
    const char *q = memchr(target, '?', c->path_len);
    size_t plen = q ? (size_t)(q - target) : c->path_len;
    air_buf_t tmp = AIR_BUF_INIT, val = AIR_BUF_INIT;
    int oom = 0;

    cJSON *root = cJSON_CreateObject();
    cJSON *hdrs = cJSON_CreateObject();
    oom |= root == NULL || hdrs == NULL;
    if (!oom) {
        oom |= !cJSON_AddItemToObject(root, "method", jstr_n(&tmp, base, (size_t)(sp - base)));
        oom |= !cJSON_AddItemToObject(root, "path", jstr_n(&tmp, target, plen));
        air__buf_reset(&val);
        if (q)
            masked_query(&val, q + 1, c->path_len - plen - 1);
        oom |=
            !cJSON_AddItemToObject(root, "query", jstr_n(&tmp, val.data ? val.data : "", val.len));
    }
    for (const char *p = eol + 2; !oom && p < end; p = eol + 2) {
        eol = memmem(p, (size_t)(end - p) + 2, "\r\n", 2);
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        size_t nlen = (size_t)(colon - p);
        const char *v = colon + 1, *ve = eol;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        /* Names are case-insensitive: record them in lower case. */
        char name[128];
        size_t k = nlen < sizeof name - 1 ? nlen : sizeof name - 1;
        for (size_t i = 0; i < k; i++)
            name[i] = (char)((p[i] >= 'A' && p[i] <= 'Z') ? p[i] + 32 : p[i]);
        name[k] = '\0';
        air__buf_reset(&val);
        const cJSON *prev = cJSON_GetObjectItemCaseSensitive(hdrs, name);
        if (cJSON_IsString(prev)) { /* a repeated header: one comma-joined value */
            air__buf_puts(&val, prev->valuestring);
            air__buf_puts(&val, ", ");
        }
        if (is_secret_header(p, nlen))
            put_masked(&val, v, (size_t)(ve - v));
        else
            air__buf_append(&val, v, (size_t)(ve - v));
        cJSON *js = jstr_n(&tmp, val.data ? val.data : "", val.len);
        if (js == NULL) {
            oom = 1;
            break;
        }
        if (prev != NULL)
            oom |= !cJSON_ReplaceItemInObjectCaseSensitive(hdrs, name, js);
        else
            oom |= !cJSON_AddItemToObject(hdrs, name, js);
    }
    if (!oom) {
        oom |= !cJSON_AddItemToObject(root, "headers", hdrs);
        hdrs = NULL;
    }
    if (!oom) {
        cJSON *jb = blen ? cJSON_ParseWithLength(body, blen) : cJSON_CreateNull();
        if (jb == NULL)
            jb = jstr_n(&tmp, body, blen);
        oom |= !cJSON_AddItemToObject(root, "body", jb);
    }
    char *line = oom ? NULL : cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    cJSON_Delete(hdrs);
    air__buf_free(&tmp);
    air__buf_free(&val);
    pthread_mutex_lock(&m->rec_fp_mu);
    if (line != NULL) {
        fputs(line, m->rec_fp);
    } else {
        /* Out of memory: still one line per request, so counts stay true. */
        fputs("{\"error\":\"out of memory\"}", m->rec_fp);
    }
    fputc('\n', m->rec_fp);
    fflush(m->rec_fp);
    pthread_mutex_unlock(&m->rec_fp_mu);
    cJSON_free(line);
}

/* ------------------------------------------------------------------ chat requests */

/* What the path says about a chat request. */
struct target {
    const char *name; /* gemini model / azure deployment (percent-encoded), or NULL */
    size_t name_len;
    const char *query;
    size_t query_len;
    unsigned gem_stream : 1; /* :streamGenerateContent */
    unsigned gem_sse : 1;    /* alt=sse */
};

static int
path_is(const char *p, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(p, lit, n) == 0;
}

static int
has_prefix(const char *p, size_t n, const char *lit, size_t *after)
{
    size_t l = strlen(lit);
    if (n < l || memcmp(p, lit, l) != 0)
        return 0;
    *after = l;
    return 1;
}

/* The value of parameter `name` in a query string, or NULL. */
static const char *
query_param(const char *q, size_t n, const char *name, size_t *vlen)
{
    size_t i = 0;
    while (i < n) {
        size_t s = i;
        while (i < n && q[i] != '&')
            i++;
        const char *eq = memchr(q + s, '=', i - s);
        if (eq != NULL && token_eq(q + s, (size_t)(eq - (q + s)), name)) {
            *vlen = (size_t)(q + i - eq - 1);
            return eq + 1;
        }
        i++;
    }
    return NULL;
}

/* Is this the format's chat endpoint? Fills t. */
static int
chat_target(int fmt, const char *path, size_t plen, const char *q, size_t qlen, struct target *t)
{
    size_t at = 0;
    memset(t, 0, sizeof *t);
    t->query = q;
    t->query_len = qlen;
    switch (fmt) {
    case F_ANTHROPIC:
        return path_is(path, plen, "/v1/messages");
    case F_GEMINI: {
        if (!has_prefix(path, plen, "/v1beta/models/", &at) &&
            !has_prefix(path, plen, "/v1/models/", &at))
            return 0;
        const char *colon = NULL;
        for (size_t i = at; i < plen; i++)
            if (path[i] == ':')
                colon = path + i;
        if (colon == NULL || colon == path + at)
            return 0;
        size_t ml = (size_t)(path + plen - colon - 1);
        if (ml == 15 && memcmp(colon + 1, "generateContent", 15) == 0)
            t->gem_stream = 0;
        else if (ml == 21 && memcmp(colon + 1, "streamGenerateContent", 21) == 0)
            t->gem_stream = 1;
        else
            return 0;
        t->name = path + at;
        t->name_len = (size_t)(colon - t->name);
        size_t vl = 0;
        const char *alt = query_param(q, qlen, "alt", &vl);
        t->gem_sse = alt != NULL && vl == 3 && memcmp(alt, "sse", 3) == 0;
        return 1;
    }
    case F_AZURE: {
        if (path_is(path, plen, "/openai/v1/chat/completions"))
            return 1; /* the versionless v1 API: the body names the deployment */
        static const char tail[] = "/chat/completions";
        size_t tl = sizeof tail - 1, vl = 0;
        if (!has_prefix(path, plen, "/openai/deployments/", &at) || plen < at + tl + 1 ||
            memcmp(path + plen - tl, tail, tl) != 0)
            return 0;
        t->name = path + at;
        t->name_len = plen - tl - at;
        if (memchr(t->name, '/', t->name_len) != NULL)
            return 0;
        const char *ver = query_param(q, qlen, "api-version", &vl);
        return ver != NULL && vl > 0; /* Azure answers 404 without one */
    }
    default:
        return path_is(path, plen, "/v1/chat/completions") ||
               path_is(path, plen, "/chat/completions");
    }
}

static int
hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* dst = the JSON string literal of the percent-decoded s ("models/" dropped). */
static void
model_from_path(air_buf_t *dst, const char *s, size_t n)
{
    air_buf_t dec = AIR_BUF_INIT;
    for (size_t i = 0; i < n; i++) {
        int h, l;
        if (s[i] == '%' && i + 2 < n && (h = hexval(s[i + 1])) >= 0 &&
            (l = hexval(s[i + 2])) >= 0) {
            air__buf_putc(&dec, (char)(h * 16 + l));
            i += 2;
        } else {
            air__buf_putc(&dec, s[i]);
        }
    }
    const char *m = dec.data ? dec.data : "";
    size_t ml = dec.len;
    if (ml > 7 && memcmp(m, "models/", 7) == 0) {
        m += 7;
        ml -= 7;
    }
    air__buf_reset(dst);
    air__buf_json_str(dst, m, ml);
    if (dec.oom)
        dst->oom = 1;
    air__buf_free(&dec);
}

static const cJSON *
jget(const cJSON *o, const char *k)
{
    return cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, k) : NULL;
}

static const char *
jstr(const cJSON *o, const char *k)
{
    const cJSON *v = jget(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* The array itself when it is one, else NULL (for cJSON_ArrayForEach). */
static const cJSON *
jarr(const cJSON *a)
{
    return cJSON_IsArray(a) ? a : NULL;
}

static const cJSON *
last_item(const cJSON *arr)
{
    const cJSON *it, *last = NULL;
    cJSON_ArrayForEach(it, jarr(arr))
    {
        last = it;
    }
    return last;
}

/* Which tool the answer calls: 1 with *name (and *schema, possibly NULL)
 * set, 0 for a text answer (no tools, tools forbidden by the tool choice, or
 * the conversation ends with a tool result, which a model would now answer
 * in words). */
static int
pick_tool(int fmt, const cJSON *j, const char **name, const cJSON **schema)
{
    const char *want = NULL;
    const cJSON *tools = jarr(jget(j, "tools")), *it, *p;
    *name = NULL;
    *schema = NULL;
    if (cJSON_GetArraySize(tools) == 0)
        return 0;
    switch (fmt) {
    case F_ANTHROPIC: {
        const cJSON *tc = jget(j, "tool_choice");
        const char *tt = jstr(tc, "type");
        if (tt != NULL && strcmp(tt, "none") == 0)
            return 0;
        if (tt != NULL && strcmp(tt, "tool") == 0)
            want = jstr(tc, "name");
        const cJSON *last = last_item(jget(j, "messages"));
        cJSON_ArrayForEach(p, jarr(jget(last, "content")))
        {
            const char *bt = jstr(p, "type");
            if (bt != NULL && strcmp(bt, "tool_result") == 0)
                return 0;
        }
        cJSON_ArrayForEach(it, tools)
        {
            const char *n = jstr(it, "name");
            if (n != NULL && (want == NULL || strcmp(n, want) == 0)) {
                *name = n;
                *schema = jget(it, "input_schema");
                return 1;
            }
        }
        break;
    }
    case F_GEMINI: {
        const cJSON *fcc = jget(jget(j, "toolConfig"), "functionCallingConfig");
        const char *mode = jstr(fcc, "mode");
        if (mode != NULL && strcmp(mode, "NONE") == 0)
            return 0;
        const cJSON *allowed = jarr(jget(fcc, "allowedFunctionNames"));
        if (allowed != NULL && cJSON_IsString(allowed->child))
            want = allowed->child->valuestring;
        const cJSON *last = last_item(jget(j, "contents"));
        cJSON_ArrayForEach(p, jarr(jget(last, "parts")))
        {
            if (jget(p, "functionResponse") != NULL)
                return 0;
        }
        cJSON_ArrayForEach(it, tools)
        {
            const cJSON *d;
            cJSON_ArrayForEach(d, jarr(jget(it, "functionDeclarations")))
            {
                const char *n = jstr(d, "name");
                if (n != NULL && (want == NULL || strcmp(n, want) == 0)) {
                    *name = n;
                    *schema = jget(d, "parameters");
                    if (*schema == NULL)
                        *schema = jget(d, "parametersJsonSchema");
                    return 1;
                }
            }
        }
        break;
    }
    default: {
        const cJSON *tc = jget(j, "tool_choice");
        if (cJSON_IsString(tc) && strcmp(tc->valuestring, "none") == 0)
            return 0;
        want = jstr(jget(tc, "function"), "name");
        const char *role = jstr(last_item(jget(j, "messages")), "role");
        if (role != NULL && (strcmp(role, "tool") == 0 || strcmp(role, "function") == 0))
            return 0;
        cJSON_ArrayForEach(it, tools)
        {
            const cJSON *fn = jget(it, "function");
            const char *n = jstr(fn, "name");
            if (n != NULL && (want == NULL || strcmp(n, want) == 0)) {
                *name = n;
                *schema = jget(fn, "parameters");
                return 1;
            }
        }
        break;
    }
    }
    if (want != NULL) { /* a forced tool that is not in the list: call it anyway */
        *name = want;
        return 1;
    }
    return 0;
}

/* A deterministic value for a parameter schema: its first enum value, else
 * by type ("mock", 1, true, [], {}, null). Gemini writes types in capitals. */
static void
put_mock_value(air_buf_t *b, const cJSON *prop)
{
    const cJSON *en = jarr(jget(prop, "enum"));
    if (en != NULL && en->child != NULL) {
        char *s = cJSON_PrintUnformatted(en->child);
        if (s == NULL) {
            b->oom = 1;
            return;
        }
        air__buf_puts(b, s);
        cJSON_free(s);
        return;
    }
    const cJSON *ty = jget(prop, "type");
    if (cJSON_IsArray(ty))
        ty = ty->child;
    const char *t = cJSON_IsString(ty) ? ty->valuestring : "string";
    if (strcasecmp(t, "integer") == 0 || strcasecmp(t, "number") == 0)
        air__buf_puts(b, "1");
    else if (strcasecmp(t, "boolean") == 0)
        air__buf_puts(b, "true");
    else if (strcasecmp(t, "array") == 0)
        air__buf_puts(b, "[]");
    else if (strcasecmp(t, "object") == 0)
        air__buf_puts(b, "{}");
    else if (strcasecmp(t, "null") == 0)
        air__buf_puts(b, "null");
    else
        air__buf_puts(b, "\"mock\"");
}

/* The tool call's arguments: every required parameter (up to 16) with a mock
 * value, {"city":"mock"}; {} when the schema requires none. */
static void
build_args(air_buf_t *b, const cJSON *schema)
{
    const cJSON *props = jget(schema, "properties"), *r;
    int n = 0;
    air__buf_reset(b);
    air__buf_putc(b, '{');
    cJSON_ArrayForEach(r, jarr(jget(schema, "required")))
    {
        if (!cJSON_IsString(r) || n >= 16)
            continue;
        if (n++)
            air__buf_putc(b, ',');
        air__buf_json_str(b, r->valuestring, strlen(r->valuestring));
        air__buf_putc(b, ':');
        put_mock_value(b, jget(props, r->valuestring));
    }
    air__buf_putc(b, '}');
}

/* Constant time in the key's length. */
static int
key_eq(const struct air_mock *m, const char *v, size_t n)
{
    if (n != m->api_key_len)
        return 0;
    unsigned char diff = 0;
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(v[i] ^ m->api_key[i]);
    return diff == 0;
}

static int
bearer_ok(const struct air_mock *m, const char *v, size_t n)
{
    return n >= 7 && strncasecmp(v, "Bearer ", 7) == 0 && key_eq(m, v + 7, n - 7);
}

/* The value of the header this format authenticates with. */
static void
key_value(const struct conn *c, const char **v, size_t *n)
{
    int fmt = c->lp->m->fmt;
    int key = fmt == F_ANTHROPIC || fmt == F_GEMINI || (fmt == F_AZURE && c->has_key);
    *v = c->in + (key ? c->key_off : c->auth_off);
    *n = key ? c->key_len : c->auth_len;
}

/* 1 when the request carries the key; *present: whether it carried one. */
static int
key_ok(const struct conn *c, const struct target *t, int *present)
{
    const struct air_mock *m = c->lp->m;
    const char *auth = c->in + c->auth_off, *key = c->in + c->key_off;
    switch (m->fmt) {
    case F_ANTHROPIC:
        *present = c->has_key;
        return c->has_key && key_eq(m, key, c->key_len);
    case F_GEMINI: {
        size_t ql = 0;
        const char *qk = query_param(t->query, t->query_len, "key", &ql);
        *present = c->has_key || qk != NULL;
        if (c->has_key)
            return key_eq(m, key, c->key_len);
        return qk != NULL && key_eq(m, qk, ql);
    }
    case F_AZURE:
        *present = c->has_key || c->has_auth;
        if (c->has_key)
            return key_eq(m, key, c->key_len);
        return c->has_auth && bearer_ok(m, auth, c->auth_len);
    default:
        *present = c->has_auth;
        return bearer_ok(m, auth, c->auth_len);
    }
}

/* A 400 for a body that does not fit the format (message in its words). */
static void
bad_body(struct conn *c, cJSON *j, const char *msg, const char *param)
{
    cJSON_Delete(j);
    respond_error(c, 400, msg, strlen(msg), "invalid_request_error", param, NULL, NULL);
}

static void
chat(struct conn *c, const char *body, size_t blen, const struct target *t)
{
    struct loop *lp = c->lp;
    struct air_mock *m = lp->m;
    const char *kv;
    size_t kl;

    cnt_inc(&lp->cnt.requests);
    key_value(c, &kv, &kl);
    record_last(c, body, blen, kv, kl);
    int present = 0;
    if (m->api_key && !key_ok(c, t, &present)) {
        respond_unauthorized(c, present);
        return;
    }
    if (m->fmt == F_ANTHROPIC && !c->has_version) {
        bad_body(c, NULL, "anthropic-version: header is required", NULL);
        return;
    }
    cJSON *j = cJSON_ParseWithLength(body, blen);
    if (j == NULL || !cJSON_IsObject(j)) {
        bad_body(c, j, "We could not parse the JSON body of your request. (mock)", NULL);
        return;
    }
    const cJSON *model = jget(j, "model");
    int model_ok = cJSON_IsString(model) && model->valuestring != NULL;
    switch (m->fmt) {
    case F_ANTHROPIC:
        if (!model_ok) {
            bad_body(c, j, "model: Field required", NULL);
            return;
        }
        if (!cJSON_IsNumber(jget(j, "max_tokens"))) {
            bad_body(c, j, "max_tokens: Field required", NULL);
            return;
        }
        if (!cJSON_IsArray(jget(j, "messages"))) {
            bad_body(c, j, "messages: Field required", NULL);
            return;
        }
        break;
    case F_GEMINI:
        if (cJSON_GetArraySize(jarr(jget(j, "contents"))) == 0) {
            bad_body(c, j, "* GenerateContentRequest.contents: contents is not specified", NULL);
            return;
        }
        break;
    default: /* openai, and azure's v1 API, route by `model` */
        if (!model_ok && t->name == NULL) {
            bad_body(c, j, "you must provide a model parameter", "model");
            return;
        }
        break;
    }
    if (m->fmt == F_GEMINI) {
        c->stream = t->gem_stream;
        c->gem_array = t->gem_stream && !t->gem_sse;
        c->include_usage = 0;
    } else {
        const cJSON *so = jget(j, "stream_options");
        c->stream = cJSON_IsTrue(jget(j, "stream"));
        c->gem_array = 0;
        c->include_usage =
            c->stream && m->fmt != F_ANTHROPIC && cJSON_IsTrue(jget(so, "include_usage"));
    }
    /* The served model: the deployment or model in the path, else the body's. */
    if (t->name != NULL)
        model_from_path(&c->model, t->name, t->name_len);
    else {
        air__buf_reset(&c->model);
        air__buf_json_str(&c->model, model->valuestring, strlen(model->valuestring));
    }
    const char *tname;
    const cJSON *schema;
    c->tool = (unsigned)pick_tool(m->fmt, j, &tname, &schema);
    if (c->tool) {
        air__buf_reset(&c->tool_name);
        air__buf_json_str(&c->tool_name, tname, strlen(tname));
        build_args(&c->args, schema);
        c->ctoks = (strlen(tname) + c->args.len) / 4 + 1;
        /* Gemini sends a function call whole, in one event (spec 3.4). */
        uint32_t np = m->fmt == F_GEMINI ? 1 : m->o.chunks;
        if (np > c->args.len)
            np = (uint32_t)c->args.len;
        c->npieces = np ? np : 1;
    } else {
        c->ctoks = m->o.chunks;
        c->npieces = m->o.chunks;
    }
    cJSON_Delete(j);
    if (c->model.oom || c->tool_name.oom || c->args.oom) {
        c->io_err = 1;
        return;
    }

    const air_mock_opts_t *o = &m->o;
    uint64_t n = atomic_fetch_add_explicit(&m->seq, 1, memory_order_relaxed) + 1;
    c->id = n;
    c->created = (long long)time(NULL);
    c->prompt_tokens = blen / 4 ? blen / 4 : 1;
    if (n <= o->fail_first)
        c->action = ACT_FAIL;
    else if (o->fail_rate > 0 && rng_unit(&lp->rng) < o->fail_rate)
        c->action = ACT_FAIL;
    else if (o->reset_rate > 0 && rng_unit(&lp->rng) < o->reset_rate)
        c->action = ACT_RESET;
    else
        c->action = ACT_OK;
    c->serr = c->stream && c->action == ACT_OK && o->stream_error_rate > 0 &&
              rng_unit(&lp->rng) < o->stream_error_rate;

    uint64_t delay = o->latency_ms;
    if (o->jitter_ms)
        delay += rng_next(&lp->rng) % ((uint64_t)o->jitter_ms + 1);
    if (o->tail_rate > 0 && rng_unit(&lp->rng) < o->tail_rate)
        delay += o->tail_ms;
    if (delay == 0) {
        act(c);
        return;
    }
    if (timer_set(c, delay) != 0) {
        c->io_err = 1;
        return;
    }
    c->state = ST_WAIT;
}

static void
respond_405(struct conn *c, const char *allow)
{
    static const char msg[] = "Method not allowed (mock)";
    char extra[32];
    snprintf(extra, sizeof extra, "Allow: %s\r\n", allow);
    respond_error(c, 405, msg, sizeof msg - 1, "invalid_request_error", NULL, NULL, extra);
}

static void
respond_404(struct conn *c, const char *path, size_t plen)
{
    if (c->lp->m->fmt == F_AZURE) {
        static const char msg[] = "Resource not found";
        azure_error_body(&c->lp->scratch, "404", msg, sizeof msg - 1);
        respond_scratch(c, 404, NULL);
        return;
    }
    air_buf_t msg = AIR_BUF_INIT;
    size_t show = plen > 200 ? 200 : plen;
    air__buf_puts(&msg, "Invalid URL (");
    air__buf_puts(&msg, c->method == M_GET ? "GET " : c->method == M_POST ? "POST " : "");
    air__buf_append(&msg, path, show);
    air__buf_puts(&msg, ")");
    if (msg.oom)
        c->io_err = 1;
    else
        respond_error(c, 404, msg.data, msg.len, "invalid_request_error", NULL, NULL, NULL);
    air__buf_free(&msg);
}

static void
handle(struct conn *c, const char *body, size_t blen)
{
    struct air_mock *m = c->lp->m;
    const char *path = c->in + c->path_off;
    size_t plen = c->path_len;
    const char *q = memchr(path, '?', plen);
    const char *query = q ? q + 1 : path + plen;
    size_t qlen = q ? plen - (size_t)(q - path) - 1 : 0;
    if (q)
        plen = (size_t)(q - path);
    if (m->rec_fp != NULL)
        record_line(c, body, blen);

    struct target t;
    if (chat_target(m->fmt, path, plen, query, qlen, &t)) {
        if (c->method != M_POST)
            respond_405(c, "POST");
        else
            chat(c, body, blen, &t);
    } else if (path_is(path, plen, "/v1/models") || path_is(path, plen, "/models")) {
        if (c->method != M_GET)
            respond_405(c, "GET");
        else
            respond(c, 200, "application/json", models_json, sizeof models_json - 1, NULL);
    } else if (m->fmt == F_GEMINI && path_is(path, plen, "/v1beta/models")) {
        if (c->method != M_GET)
            respond_405(c, "GET");
        else
            respond(c, 200, "application/json", gemini_models_json, sizeof gemini_models_json - 1,
                    NULL);
    } else if (path_is(path, plen, "/healthz")) {
        if (c->method != M_GET)
            respond_405(c, "GET");
        else
            respond(c, 200, "text/plain", "ok", 2, NULL);
    } else {
        respond_404(c, path, plen);
    }
}

/* ------------------------------------------------------------------ state machine */

static void
start_linger(struct conn *c)
{
    shutdown(c->fd, SHUT_WR);
    c->state = ST_LINGER;
    if (timer_set(c, LINGER_MS) != 0) {
        conn_close(c, 0);
        return;
    }
    set_events(c, EPOLLIN);
    if (c->io_err)
        conn_close(c, 0);
}

static void
linger_read(struct conn *c)
{
    char tmp[16384];
    for (;;) {
        ssize_t r = recv(c->fd, tmp, sizeof tmp, 0);
        if (r > 0)
            continue;
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        conn_close(c, 0); /* EOF or error: the peer has our reply */
        return;
    }
}

/* Flush, then advance the connection as far as it can go without waiting. */
static void
conn_drive(struct conn *c)
{
    for (;;) {
        if (c->fd < 0)
            return;
        if (c->io_err) {
            conn_close(c, 0);
            return;
        }
        if (c->out_off < c->out.len) {
            int r = out_flush(c);
            if (r < 0) {
                conn_close(c, 0);
                return;
            }
            if (r > 0) {
                set_events(c, EPOLLOUT);
                return;
            }
        }
        switch (c->state) {
        case ST_WAIT:
        case ST_STREAM:
            set_events(c, EPOLLRDHUP); /* only to see a client give up */
            return;
        case ST_RESET:
            conn_close(c, 1);
            return;
        case ST_CLOSE:
            start_linger(c);
            return;
        case ST_LINGER:
            set_events(c, EPOLLIN);
            return;
        default:
            break;
        }
        const char *body = NULL;
        size_t blen = 0, used = 0;
        int st = parse_request(c, &body, &blen, &used);
        if (st == P_MORE) {
            if (c->out_off < c->out.len)
                continue; /* a 100 Continue to send first */
            if (c->peer_eof || c->in_len >= MAX_IN) {
                conn_close(c, 0);
                return;
            }
            set_events(c, EPOLLIN);
            return;
        }
        if (st < 0) {
            respond_http_error(c, -st);
            continue;
        }
        handle(c, body, blen);
        consume(c, used);
    }
}

static void
conn_event(struct conn *c, uint32_t ev)
{
    if (c->fd < 0)
        return;
    if (ev & EPOLLERR) {
        conn_close(c, 0);
        return;
    }
    if ((ev & EPOLLRDHUP) && (c->state == ST_WAIT || c->state == ST_STREAM)) {
        /* The client left mid-response (cancelled, timed out): drop the
         * pending reply now rather than when its timer fires. */
        conn_close(c, 0);
        return;
    }
    if (c->state == ST_LINGER) {
        if (ev & (EPOLLIN | EPOLLHUP))
            linger_read(c);
        return;
    }
    if ((ev & EPOLLHUP) && !(ev & EPOLLIN)) {
        conn_close(c, 0);
        return;
    }
    if ((ev & EPOLLIN) && c->state == ST_IDLE && read_in(c) != 0) {
        conn_close(c, 0);
        return;
    }
    conn_drive(c);
}

static void
conn_timer(struct conn *c)
{
    switch (c->state) {
    case ST_WAIT:
        act(c);
        break;
    case ST_STREAM:
        stream_continue(c, 1);
        break;
    case ST_LINGER:
        conn_close(c, 0);
        return;
    default:
        return;
    }
    conn_drive(c);
}

static void
timers_run(struct loop *lp)
{
    uint64_t now = now_ns();
    while (lp->nheap && lp->heap[0]->deadline <= now) {
        struct conn *c = lp->heap[0];
        timer_clear(c);
        conn_timer(c);
    }
}

/* ------------------------------------------------------------------ loop */

static void
on_accept(struct loop *lp)
{
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int fd = accept4(lp->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if ((errno == EMFILE || errno == ENFILE) && lp->spare_fd >= 0) {
                /* Out of descriptors: accept and drop one with the spare so
                 * the level-triggered listener does not spin. */
                close(lp->spare_fd);
                fd = accept4(lp->lfd, NULL, NULL, SOCK_CLOEXEC);
                if (fd >= 0)
                    close(fd);
                lp->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
                continue;
            }
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (conn_new(lp, fd) == NULL) {
            close(fd);
            continue;
        }
        cnt_inc(&lp->cnt.connections);
    }
}

static void *
loop_main(void *arg)
{
    struct loop *lp = arg;
    struct air_mock *m = lp->m;
    struct epoll_event evs[MAX_EVENTS];
    /* acquire: pairs with the release store in air_mock_stop */
    while (!atomic_load_explicit(&m->stop, memory_order_acquire)) {
        int n = loop_wait(lp, evs, MAX_EVENTS);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (int i = 0; i < n; i++) {
            struct tag *t = evs[i].data.ptr;
            if (t->kind == K_CONN) {
                conn_event((struct conn *)evs[i].data.ptr, evs[i].events);
            } else if (t->kind == K_LISTEN) {
                on_accept(lp);
            } else {
                uint64_t v;
                ssize_t r = read(lp->evfd, &v, sizeof v);
                (void)r;
            }
        }
        timers_run(lp);
        reap(lp);
    }
    return NULL;
}

/* ------------------------------------------------------------------ start / stop */

static void
raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl); /* best effort */
    }
}

static int
make_listener(const struct sockaddr *sa, socklen_t salen, int reuseport)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)
        goto fail;
    if (bind(fd, sa, salen) != 0 || listen(fd, 4096) != 0)
        goto fail;
    return fd;
fail:;
    int e = errno;
    close(fd);
    errno = e;
    return -1;
}

static void
loop_cleanup(struct loop *lp)
{
    struct conn *lists[3] = {lp->live, lp->dead, lp->freel};
    for (int i = 0; i < 3; i++) {
        while (lists[i]) {
            struct conn *c = lists[i];
            lists[i] = c->next;
            if (c->fd >= 0)
                close(c->fd);
            conn_free(c);
        }
    }
    lp->live = lp->dead = lp->freel = NULL;
    if (lp->lfd >= 0)
        close(lp->lfd);
    if (lp->evfd >= 0)
        close(lp->evfd);
    if (lp->epfd >= 0)
        close(lp->epfd);
    if (lp->spare_fd >= 0)
        close(lp->spare_fd);
    air__free(lp->heap);
    air__buf_free(&lp->scratch);
    air__buf_free(&lp->rec_body);
    air__buf_free(&lp->rec_auth);
    air__buf_free(&lp->rec_path);
    air__buf_free(&lp->rec_head);
    if (lp->rec_mu_ok)
        pthread_mutex_destroy(&lp->rec_mu);
}

static void
mock_free(struct air_mock *m)
{
    if (m->loops) {
        atomic_store_explicit(&m->stop, 1, memory_order_release);
        for (unsigned i = 0; i < m->nloops; i++) {
            struct loop *lp = &m->loops[i];
            if (lp->started) {
                uint64_t one = 1;
                ssize_t r = write(lp->evfd, &one, sizeof one);
                (void)r;
            }
        }
        for (unsigned i = 0; i < m->nloops; i++)
            if (m->loops[i].started)
                pthread_join(m->loops[i].thr, NULL);
        for (unsigned i = 0; i < m->nloops; i++)
            loop_cleanup(&m->loops[i]);
        air__free(m->loops);
    }
    if (m->rec_fp != NULL)
        fclose(m->rec_fp);
    if (m->rec_fp_mu_ok)
        pthread_mutex_destroy(&m->rec_fp_mu);
    air__free(m->host);
    air__free(m->api_key);
    air__free(m->content);
    air__free(m);
}

void
air_mock_opts_init(air_mock_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1";
    o->port = 0;
    o->threads = 1;
    o->fail_status = 500;
    o->retry_after_s = -1;
    o->chunks = 8;
}

static int
loop_init(struct air_mock *m, struct loop *lp, unsigned idx, const struct sockaddr *sa,
          socklen_t salen, char *err, size_t errlen)
{
    lp->m = m;
    lp->idx = idx;
    lp->epfd = lp->lfd = lp->evfd = lp->spare_fd = -1;
    lp->pwait2 = 1;
    lp->ltag.kind = K_LISTEN;
    lp->etag.kind = K_WAKE;
    lp->rng = splitmix64((m->o.seed ? m->o.seed : 0x5EEDull) + idx);
    if (lp->rng == 0)
        lp->rng = 1;
    if (pthread_mutex_init(&lp->rec_mu, NULL) != 0) {
        set_err(err, errlen, "pthread_mutex_init", errno);
        return -1;
    }
    lp->rec_mu_ok = 1;
    lp->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (lp->epfd < 0) {
        set_err(err, errlen, "epoll_create1", errno);
        return -1;
    }
    lp->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (lp->evfd < 0) {
        set_err(err, errlen, "eventfd", errno);
        return -1;
    }
    lp->lfd = make_listener(sa, salen, m->nloops > 1);
    if (lp->lfd < 0) {
        set_err(err, errlen, "bind/listen", errno);
        return -1;
    }
    lp->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    struct epoll_event e;
    memset(&e, 0, sizeof e);
    e.events = EPOLLIN;
    e.data.ptr = &lp->ltag;
    if (epoll_ctl(lp->epfd, EPOLL_CTL_ADD, lp->lfd, &e) != 0) {
        set_err(err, errlen, "epoll_ctl", errno);
        return -1;
    }
    e.data.ptr = &lp->etag;
    if (epoll_ctl(lp->epfd, EPOLL_CTL_ADD, lp->evfd, &e) != 0) {
        set_err(err, errlen, "epoll_ctl", errno);
        return -1;
    }
    return 0;
}

int
air_mock_start(const air_mock_opts_t *opts, air_mock_t **out, char *err, size_t errlen)
{
    air_mock_opts_t defaults;
    if (out == NULL) {
        set_err(err, errlen, "air_mock_start: out is NULL", 0);
        return -1;
    }
    *out = NULL;
    if (opts == NULL) {
        air_mock_opts_init(&defaults);
        opts = &defaults;
    }
    if (!(opts->fail_rate >= 0 && opts->fail_rate <= 1)) {
        set_err(err, errlen, "fail_rate must be within [0, 1]", 0);
        return -1;
    }
    if (!(opts->reset_rate >= 0 && opts->reset_rate <= 1)) {
        set_err(err, errlen, "reset_rate must be within [0, 1]", 0);
        return -1;
    }
    if (opts->fail_status != 0 && (opts->fail_status < 100 || opts->fail_status > 599)) {
        set_err(err, errlen, "fail_status must be an HTTP status", 0);
        return -1;
    }
    if (!(opts->stream_error_rate >= 0 && opts->stream_error_rate <= 1)) {
        set_err(err, errlen, "stream_error_rate must be within [0, 1]", 0);
        return -1;
    }
    int fmt = -1;
    for (int i = 0; i < 4; i++)
        if (opts->format == NULL || strcmp(opts->format, format_names[i]) == 0) {
            fmt = opts->format == NULL ? F_OPENAI : i;
            break;
        }
    if (fmt < 0) {
        set_err(err, errlen, "format must be openai, anthropic, gemini or azure", 0);
        return -1;
    }

    struct air_mock *m = air__calloc(1, sizeof *m);
    if (m == NULL) {
        set_err(err, errlen, "air_mock_start", ENOMEM);
        return -1;
    }
    m->o = *opts;
    m->fmt = fmt;
    m->o.format = format_names[fmt];
    m->o.record_path = NULL; /* only opened here; the caller's string is not kept */
    if (m->o.fail_status == 0)
        m->o.fail_status = 500;
    m->nloops = m->o.threads ? m->o.threads : 1;
    m->host = air__strdup(opts->host && *opts->host ? opts->host : "127.0.0.1");
    if (opts->api_key && *opts->api_key) {
        m->api_key = air__strdup(opts->api_key);
        m->api_key_len = strlen(opts->api_key);
    }
    air_buf_t content = AIR_BUF_INIT;
    for (uint32_t i = 0; i < m->o.chunks; i++) {
        air__buf_puts(&content, "tok");
        put_u64(&content, i);
        air__buf_putc(&content, ' ');
    }
    m->content = air__buf_steal(&content, &m->content_len);
    m->o.host = m->host;
    m->o.api_key = m->api_key;
    m->loops = air__calloc(m->nloops, sizeof *m->loops);
    if (m->host == NULL || m->content == NULL || m->loops == NULL ||
        (opts->api_key && *opts->api_key && m->api_key == NULL)) {
        set_err(err, errlen, "air_mock_start", ENOMEM);
        mock_free(m);
        return -1;
    }
    for (unsigned i = 0; i < m->nloops; i++)
        m->loops[i].epfd = m->loops[i].lfd = m->loops[i].evfd = m->loops[i].spare_fd = -1;
    if (opts->record_path != NULL && *opts->record_path) {
        if (pthread_mutex_init(&m->rec_fp_mu, NULL) != 0) {
            set_err(err, errlen, "pthread_mutex_init", errno);
            mock_free(m);
            return -1;
        }
        m->rec_fp_mu_ok = 1;
        m->rec_fp = fopen(opts->record_path, "ae");
        if (m->rec_fp == NULL) {
            set_err(err, errlen, "record file", errno);
            mock_free(m);
            return -1;
        }
    }

    raise_nofile();

    struct sockaddr_storage ss;
    socklen_t salen;
    memset(&ss, 0, sizeof ss);
    const char *host = strcmp(m->host, "localhost") == 0 ? "127.0.0.1" : m->host;
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons(m->o.port);
        salen = sizeof *s4;
    } else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(m->o.port);
        salen = sizeof *s6;
    } else {
        set_err(err, errlen, "host: expected an IPv4 or IPv6 address", 0);
        mock_free(m);
        return -1;
    }

    for (unsigned i = 0; i < m->nloops; i++) {
        if (loop_init(m, &m->loops[i], i, (struct sockaddr *)&ss, salen, err, errlen) != 0) {
            mock_free(m);
            return -1;
        }
        if (i == 0) {
            /* The other loops' listeners join the port the first one got. */
            struct sockaddr_storage got;
            socklen_t gl = sizeof got;
            if (getsockname(m->loops[0].lfd, (struct sockaddr *)&got, &gl) != 0) {
                set_err(err, errlen, "getsockname", errno);
                mock_free(m);
                return -1;
            }
            m->port = ntohs(got.ss_family == AF_INET ? ((struct sockaddr_in *)&got)->sin_port
                                                     : ((struct sockaddr_in6 *)&got)->sin6_port);
            if (ss.ss_family == AF_INET)
                s4->sin_port = htons(m->port);
            else
                s6->sin6_port = htons(m->port);
        }
    }

    /* Loop threads take no signals: the host's threads handle them. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    for (unsigned i = 0; i < m->nloops; i++) {
        int e = pthread_create(&m->loops[i].thr, NULL, loop_main, &m->loops[i]);
        if (e != 0) {
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            set_err(err, errlen, "pthread_create", e);
            mock_free(m);
            return -1;
        }
        m->loops[i].started = 1;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    *out = m;
    return 0;
}

uint16_t
air_mock_port(const air_mock_t *m)
{
    return m ? m->port : 0;
}

void
air_mock_stats(const air_mock_t *m, air_mock_stats_t *s)
{
    memset(s, 0, sizeof *s);
    if (m == NULL)
        return;
    for (unsigned i = 0; i < m->nloops; i++) {
        struct counters *c = &m->loops[i].cnt;
        s->connections += atomic_load_explicit(&c->connections, memory_order_relaxed);
        s->requests += atomic_load_explicit(&c->requests, memory_order_relaxed);
        s->ok += atomic_load_explicit(&c->ok, memory_order_relaxed);
        s->failed += atomic_load_explicit(&c->failed, memory_order_relaxed);
        s->resets += atomic_load_explicit(&c->resets, memory_order_relaxed);
        s->streams += atomic_load_explicit(&c->streams, memory_order_relaxed);
        s->unauthorized += atomic_load_explicit(&c->unauthorized, memory_order_relaxed);
        s->stream_errors += atomic_load_explicit(&c->stream_errors, memory_order_relaxed);
    }
}

static void
copy_out(char *dst, size_t cap, const air_buf_t *b)
{
    if (dst == NULL || cap == 0)
        return;
    size_t n = b->len < cap - 1 ? b->len : cap - 1;
    if (n)
        memcpy(dst, b->data, n);
    dst[n] = '\0';
}

/* The loop that saw the newest chat request, locked; NULL when none. */
static struct loop *
last_loop_lock(const air_mock_t *m)
{
    struct loop *best = NULL;
    uint64_t best_stamp = 0;
    for (unsigned i = 0; i < m->nloops; i++) {
        struct loop *lp = &m->loops[i];
        pthread_mutex_lock(&lp->rec_mu);
        if (lp->rec_stamp > best_stamp) {
            best_stamp = lp->rec_stamp;
            best = lp;
        }
        pthread_mutex_unlock(&lp->rec_mu);
    }
    if (best != NULL)
        pthread_mutex_lock(&best->rec_mu);
    return best;
}

void
air_mock_last_request(const air_mock_t *m, char *body, size_t bodylen, char *auth, size_t authlen)
{
    if (body && bodylen)
        body[0] = '\0';
    if (auth && authlen)
        auth[0] = '\0';
    if (m == NULL)
        return;
    struct loop *best = last_loop_lock(m);
    if (best == NULL)
        return;
    copy_out(body, bodylen, &best->rec_body);
    copy_out(auth, authlen, &best->rec_auth);
    pthread_mutex_unlock(&best->rec_mu);
}

void
air_mock_last_path(const air_mock_t *m, char *buf, size_t len)
{
    if (buf && len)
        buf[0] = '\0';
    if (m == NULL)
        return;
    struct loop *best = last_loop_lock(m);
    if (best == NULL)
        return;
    copy_out(buf, len, &best->rec_path);
    pthread_mutex_unlock(&best->rec_mu);
}

int
air_mock_last_header(const air_mock_t *m, const char *name, char *buf, size_t len)
{
    if (buf && len)
        buf[0] = '\0';
    if (m == NULL || name == NULL)
        return 0;
    struct loop *best = last_loop_lock(m);
    if (best == NULL)
        return 0;
    int found = 0;
    const char *h = best->rec_head.data;
    size_t hl = best->rec_head.len;
    const char *eol = h ? memmem(h, hl, "\r\n", 2) : NULL;
    /* The head was validated when it was parsed: every line has a colon. */
    while (eol != NULL && !found) {
        const char *p = eol + 2;
        eol = memmem(p, hl - (size_t)(p - h), "\r\n", 2);
        if (eol == NULL || eol == p)
            break;
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        if (colon == NULL || !token_eq(p, (size_t)(colon - p), name))
            continue;
        const char *v = colon + 1, *ve = eol;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        if (buf && len) {
            size_t n = (size_t)(ve - v) < len - 1 ? (size_t)(ve - v) : len - 1;
            memcpy(buf, v, n);
            buf[n] = '\0';
        }
        found = 1;
    }
    pthread_mutex_unlock(&best->rec_mu);
    return found;
}

void
air_mock_stop(air_mock_t *m)
{
    if (m == NULL)
        return;
    mock_free(m);
}
