/*
 * mock.c - the mock OpenAI-compatible provider (see mock.h).
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

struct tag {
    int kind;
};

struct counters {
    atomic_uint_fast64_t connections, requests, ok, failed, resets, streams, unauthorized;
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
    unsigned chunked : 1, expect : 1, continue_sent : 1, peer_eof : 1, io_err : 1;
    unsigned keep : 1, http10 : 1;
    int ch_state;
    size_t ch_raw, ch_dec; /* chunked decoder: next raw byte, end of the decoded body */
    uint64_t ch_left;

    /* output */
    air_buf_t out;
    size_t out_off;

    /* the response being produced */
    int action;
    unsigned stream : 1, include_usage : 1, chunked_resp : 1;
    uint64_t id;
    long long created;
    uint64_t prompt_tokens;
    uint32_t next_piece;
    air_buf_t model; /* the request's model as a JSON string literal */
    air_buf_t pre;   /* stream: the common prefix of every chunk object */
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
    air_buf_t rec_body, rec_auth;
    char pad[64]; /* keep neighbouring loops' hot fields on other cache lines */
};

struct air_mock {
    air_mock_opts_t o;
    char *host, *api_key;
    size_t api_key_len;
    uint16_t port;
    unsigned nloops;
    struct loop *loops;
    atomic_int stop;
    atomic_uint_fast64_t seq;     /* accepted chat requests: fail_first and ids */
    atomic_uint_fast64_t rec_seq; /* stamps for the last-request record */
    char *content;                /* "tok0 tok1 ..." */
    size_t content_len;
};

static const char models_json[] =
    "{\"object\":\"list\",\"data\":[{\"id\":\"mock-model\",\"object\":\"model\","
    "\"created\":1700000000,\"owned_by\":\"airouter-mock\"}]}";

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

static void
respond_error(struct conn *c, int status, const char *msg, size_t mlen, const char *type,
              const char *param, const char *code, const char *extra)
{
    air_buf_t *b = &c->lp->scratch;
    error_body(b, msg, mlen, type, param, code);
    if (b->oom) {
        c->io_err = 1;
        return;
    }
    respond(c, status, "application/json", b->data, b->len, extra);
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

/* ------------------------------------------------------------------ chat responses */

static void
respond_fail(struct conn *c)
{
    const air_mock_opts_t *o = &c->lp->m->o;
    int status = o->fail_status;
    const char *type = status >= 500 ? "server_error" : "invalid_request_error";
    const char *code = NULL;
    const char *msg = "The server had an error while processing your request (mock)";
    if (status == 429) {
        type = "requests";
        code = "rate_limit_exceeded";
        msg = "Rate limit reached for requests (mock)";
    } else if (status == 503 || status == 529) {
        msg = "The server is overloaded, please try again later (mock)";
    } else if (status == 401) {
        code = "invalid_api_key";
        msg = "Incorrect API key provided";
    } else if (status < 500) {
        msg = "Injected failure (mock)";
    }
    char extra[48] = "";
    if (o->retry_after_s >= 0)
        snprintf(extra, sizeof extra, "Retry-After: %d\r\n", (int)o->retry_after_s);
    cnt_inc(&c->lp->cnt.failed);
    respond_error(c, status, msg, strlen(msg), type, NULL, code, extra);
}

static void
respond_plain(struct conn *c)
{
    struct loop *lp = c->lp;
    struct air_mock *m = lp->m;
    air_buf_t *b = &lp->scratch;
    uint64_t ctoks = m->o.chunks;
    air__buf_reset(b);
    air__buf_puts(b, "{\"id\":\"chatcmpl-mock-");
    put_u64(b, c->id);
    air__buf_puts(b, "\",\"object\":\"chat.completion\",\"created\":");
    put_u64(b, (uint64_t)c->created);
    air__buf_puts(b, ",\"model\":");
    air__buf_append(b, c->model.data, c->model.len);
    air__buf_puts(b, ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
                     "\"content\":\"");
    air__buf_append(b, m->content, m->content_len);
    air__buf_puts(b, "\"},\"logprobs\":null,\"finish_reason\":\"stop\"}],"
                     "\"usage\":{\"prompt_tokens\":");
    put_u64(b, c->prompt_tokens);
    air__buf_puts(b, ",\"completion_tokens\":");
    put_u64(b, ctoks);
    air__buf_puts(b, ",\"total_tokens\":");
    put_u64(b, c->prompt_tokens + ctoks);
    air__buf_puts(b, "}}");
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

/* "data: " + prefix + choice + "]" [+ ,"usage":null] + "}\n\n" */
static void
ev_chunk(struct conn *c, const char *choice, size_t clen)
{
    out_append(c, "data: ", 6);
    out_append(c, c->pre.data, c->pre.len);
    out_append(c, choice, clen);
    if (c->include_usage)
        out_puts(c, "],\"usage\":null}\n\n");
    else
        out_puts(c, "]}\n\n");
}

static void
ev_piece(struct conn *c, uint32_t i)
{
    char choice[96];
    int n = snprintf(choice, sizeof choice,
                     "{\"index\":0,\"delta\":{\"content\":\"tok%u \"},\"finish_reason\":null}",
                     (unsigned)i);
    size_t at = ev_begin(c);
    ev_chunk(c, choice, (size_t)n);
    ev_end(c, at);
}

static void
stream_tail(struct conn *c)
{
    static const char fin[] = "{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}";
    uint64_t ctoks = c->lp->m->o.chunks;
    size_t at = ev_begin(c);
    ev_chunk(c, fin, sizeof fin - 1);
    if (c->include_usage) {
        air_buf_t *b = &c->lp->scratch;
        air__buf_reset(b);
        air__buf_puts(b, "data: ");
        air__buf_append(b, c->pre.data, c->pre.len);
        air__buf_puts(b, "],\"usage\":{\"prompt_tokens\":");
        put_u64(b, c->prompt_tokens);
        air__buf_puts(b, ",\"completion_tokens\":");
        put_u64(b, ctoks);
        air__buf_puts(b, ",\"total_tokens\":");
        put_u64(b, c->prompt_tokens + ctoks);
        air__buf_puts(b, "}}\n\n");
        if (b->oom)
            c->io_err = 1;
        else
            out_append(c, b->data, b->len);
    }
    out_puts(c, "data: [DONE]\n\n");
    ev_end(c, at);
    if (c->chunked_resp)
        out_append(c, "0\r\n\r\n", 5);
}

/* Emit what is due now; arm the next chunk timer or finish. Pieces come
 * chunk_delay_ms apart, the first one chunk_delay_ms after the role chunk,
 * and the closing events right after the last piece. */
static void
stream_continue(struct conn *c, int timer_fired)
{
    struct loop *lp = c->lp;
    uint32_t n = lp->m->o.chunks, delay = lp->m->o.chunk_delay_ms;
    if (timer_fired)
        ev_piece(c, c->next_piece++);
    for (;;) {
        if (c->action == ACT_RESET && c->next_piece >= n / 2) {
            cnt_inc(&lp->cnt.resets);
            c->state = ST_RESET;
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
stream_start(struct conn *c)
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
    /* HTTP/1.0 has no chunked coding: the end of the stream is the close. */
    c->chunked_resp = !c->http10;
    if (c->http10)
        c->keep = 0;
    out_puts(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                "Cache-Control: no-cache\r\n");
    if (c->chunked_resp)
        out_puts(c, "Transfer-Encoding: chunked\r\n");
    out_puts(c, conn_header(c));
    out_puts(c, "\r\n");
    size_t at = ev_begin(c);
    ev_chunk(c, role, sizeof role - 1);
    ev_end(c, at);
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

static void
record(struct loop *lp, const char *body, size_t blen, const char *auth, size_t alen)
{
    uint64_t stamp = atomic_fetch_add_explicit(&lp->m->rec_seq, 1, memory_order_relaxed) + 1;
    pthread_mutex_lock(&lp->rec_mu);
    air__buf_reset(&lp->rec_body);
    air__buf_append(&lp->rec_body, body, blen);
    air__buf_reset(&lp->rec_auth);
    air__buf_append(&lp->rec_auth, auth, alen);
    lp->rec_stamp = stamp;
    pthread_mutex_unlock(&lp->rec_mu);
}

static int
auth_ok(const struct air_mock *m, const char *v, size_t n)
{
    if (n != 7 + m->api_key_len || strncasecmp(v, "Bearer ", 7) != 0)
        return 0;
    unsigned char diff = 0; /* constant time in the key's length */
    for (size_t i = 0; i < m->api_key_len; i++)
        diff |= (unsigned char)(v[7 + i] ^ m->api_key[i]);
    return diff == 0;
}

static void
chat(struct conn *c, const char *body, size_t blen)
{
    struct loop *lp = c->lp;
    struct air_mock *m = lp->m;
    const char *auth = c->in + c->auth_off;

    cnt_inc(&lp->cnt.requests);
    record(lp, body, blen, auth, c->auth_len);
    if (m->api_key && !auth_ok(m, auth, c->auth_len)) {
        cnt_inc(&lp->cnt.unauthorized);
        respond(c, 401, "application/json", unauthorized_json, sizeof unauthorized_json - 1, NULL);
        return;
    }
    cJSON *j = cJSON_ParseWithLength(body, blen);
    if (j == NULL || !cJSON_IsObject(j)) {
        static const char msg[] = "We could not parse the JSON body of your request. (mock)";
        cJSON_Delete(j);
        respond_error(c, 400, msg, sizeof msg - 1, "invalid_request_error", NULL, NULL, NULL);
        return;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(j, "model");
    if (!cJSON_IsString(model) || model->valuestring == NULL) {
        static const char msg[] = "you must provide a model parameter";
        cJSON_Delete(j);
        respond_error(c, 400, msg, sizeof msg - 1, "invalid_request_error", "model", NULL, NULL);
        return;
    }
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(j, "stream_options");
    c->stream = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "stream"));
    c->include_usage =
        c->stream && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(so, "include_usage"));
    air__buf_reset(&c->model);
    air__buf_json_str(&c->model, model->valuestring, strlen(model->valuestring));
    cJSON_Delete(j);
    if (c->model.oom) {
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

static int
path_is(const char *p, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(p, lit, n) == 0;
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
handle(struct conn *c, const char *body, size_t blen)
{
    const char *path = c->in + c->path_off;
    size_t plen = c->path_len;
    const char *q = memchr(path, '?', plen);
    if (q)
        plen = (size_t)(q - path);

    if (path_is(path, plen, "/v1/chat/completions") || path_is(path, plen, "/chat/completions")) {
        if (c->method != M_POST)
            respond_405(c, "POST");
        else
            chat(c, body, blen);
    } else if (path_is(path, plen, "/v1/models") || path_is(path, plen, "/models")) {
        if (c->method != M_GET)
            respond_405(c, "GET");
        else
            respond(c, 200, "application/json", models_json, sizeof models_json - 1, NULL);
    } else if (path_is(path, plen, "/healthz")) {
        if (c->method != M_GET)
            respond_405(c, "GET");
        else
            respond(c, 200, "text/plain", "ok", 2, NULL);
    } else {
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

    struct air_mock *m = air__calloc(1, sizeof *m);
    if (m == NULL) {
        set_err(err, errlen, "air_mock_start", ENOMEM);
        return -1;
    }
    m->o = *opts;
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

void
air_mock_last_request(const air_mock_t *m, char *body, size_t bodylen, char *auth, size_t authlen)
{
    if (body && bodylen)
        body[0] = '\0';
    if (auth && authlen)
        auth[0] = '\0';
    if (m == NULL)
        return;
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
    if (best == NULL)
        return;
    pthread_mutex_lock(&best->rec_mu);
    copy_out(body, bodylen, &best->rec_body);
    copy_out(auth, authlen, &best->rec_auth);
    pthread_mutex_unlock(&best->rec_mu);
}

void
air_mock_stop(air_mock_t *m)
{
    if (m == NULL)
        return;
    mock_free(m);
}
