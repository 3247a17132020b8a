/*
 * worker.c - the data plane: one thread per worker, each owning a libcurl
 * multi handle, the requests it dequeued, their transfers and their timers.
 *
 * DESIGN
 * A worker loops: take requests from the ingress ring (bounded by its share
 * of max_inflight), apply cancels, fire due timers, drive libcurl, reap
 * finished transfers, then sleep in curl_multi_poll until a socket, a timer
 * or curl_multi_wakeup needs it. Nothing here takes a lock; every request is
 * touched by exactly one worker from dequeue to delivery.
 *
 * Timers: each request has one timer (deadline, first-byte timeout, stream
 * idle timeout or the start of a delayed retry), kept in a per-worker binary
 * min-heap. The write callback only records the time of the last byte; the
 * idle check re-arms lazily when its timer fires, so a stream costs no heap
 * operation per chunk.
 *
 * Streams: the SSE parser cuts events, the adapter turns each event into
 * unified chunks. Chunks are held back until the first one that carries
 * content, so a stream that fails before any content can still fail over
 * invisibly; after that, a failure reaches the caller as an error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "alloc.h"
#include "engine.h"

#define INTAKE_BATCH     64
#define CANCEL_RING_SIZE 1024
#define MAX_RESP_HEADERS (64 * 1024)

/* ------------------------------------------------------------------ heap */

static int
heap_grow(struct air__worker *w)
{
    if (w->heap_len < w->heap_cap)
        return 0;
    size_t ncap = w->heap_cap ? w->heap_cap * 2 : 256;
    struct air_req **h = air__realloc(w->heap, ncap * sizeof *h);
    if (h == NULL)
        return -1;
    w->heap = h;
    w->heap_cap = ncap;
    return 0;
}

static void
heap_swap(struct air__worker *w, size_t a, size_t b)
{
    struct air_req *t = w->heap[a];
    w->heap[a] = w->heap[b];
    w->heap[b] = t;
    w->heap[a]->heap_idx = a + 1;
    w->heap[b]->heap_idx = b + 1;
}

static void
heap_up(struct air__worker *w, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (w->heap[p]->timer_at_us <= w->heap[i]->timer_at_us)
            break;
        heap_swap(w, p, i);
        i = p;
    }
}

static void
heap_down(struct air__worker *w, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < w->heap_len && w->heap[l]->timer_at_us < w->heap[m]->timer_at_us)
            m = l;
        if (r < w->heap_len && w->heap[r]->timer_at_us < w->heap[m]->timer_at_us)
            m = r;
        if (m == i)
            return;
        heap_swap(w, i, m);
        i = m;
    }
}

static void
heap_remove(struct air__worker *w, struct air_req *q)
{
    if (q->heap_idx == 0)
        return;
    size_t i = q->heap_idx - 1;
    q->heap_idx = 0;
    w->heap_len--;
    if (i == w->heap_len)
        return;
    w->heap[i] = w->heap[w->heap_len];
    w->heap[i]->heap_idx = i + 1;
    heap_up(w, i);
    heap_down(w, w->heap[i]->heap_idx - 1);
}

/* Arm q's timer at `at`. Returns -1 on out of memory (q not armed). */
static int
heap_set(struct air__worker *w, struct air_req *q, uint64_t at)
{
    if (q->heap_idx != 0) {
        size_t i = q->heap_idx - 1;
        uint64_t old = q->timer_at_us;
        q->timer_at_us = at;
        if (at < old)
            heap_up(w, i);
        else
            heap_down(w, i);
        return 0;
    }
    if (heap_grow(w) != 0)
        return -1;
    q->timer_at_us = at;
    w->heap[w->heap_len] = q;
    q->heap_idx = ++w->heap_len;
    heap_up(w, w->heap_len - 1);
    return 0;
}

/* ------------------------------------------------------------- helpers */

static uint64_t
min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

static const struct air__provider_cfg *
cur_pcfg(const struct air_req *q)
{
    return q->r->prov[q->cands[q->cur].prov].cfg;
}

/* When q next needs attention. */
static uint64_t
next_check(const struct air_req *q)
{
    uint64_t at = q->deadline_us;
    if (q->waiting)
        return min_u64(at, q->start_at_us);
    if (q->easy == NULL)
        return at;
    const struct air__provider_cfg *pc = cur_pcfg(q);
    if (q->t_first_byte_us == 0)
        return min_u64(at, q->t_attempt_us + (uint64_t)pc->first_byte_timeout_ms * 1000u);
    if (q->stream)
        return min_u64(at, q->t_last_byte_us + (uint64_t)pc->idle_timeout_ms * 1000u);
    return at;
}

static void
link_active(struct air__worker *w, struct air_req *q)
{
    q->prev = NULL;
    q->next = w->active;
    if (w->active != NULL)
        w->active->prev = q;
    w->active = q;
    w->nactive++;
}

static void
unlink_active(struct air__worker *w, struct air_req *q)
{
    if (q->prev != NULL)
        q->prev->next = q->next;
    else
        w->active = q->next;
    if (q->next != NULL)
        q->next->prev = q->prev;
    q->prev = q->next = NULL;
    w->nactive--;
}

static void
stat_add(_Atomic uint64_t *c, uint64_t v)
{
    /* Single writer (this worker): a relaxed load+store is enough and keeps
     * the line uncontended; readers only need eventually-consistent sums. */
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v,
                          memory_order_relaxed);
}

/* Detach the current transfer and release what the attempt owns. */
static void
attempt_release(struct air__worker *w, struct air_req *q)
{
    if (q->easy != NULL) {
        w->pinflight[q->cands[q->cur].prov]--;
        curl_multi_remove_handle(w->multi, q->easy);
        curl_easy_reset(q->easy);
        if (w->easy_pool_len < 256) {
            CURL **p = air__realloc(w->easy_pool, (w->easy_pool_len + 1) * sizeof *p);
            if (p != NULL) {
                w->easy_pool = p;
                w->easy_pool[w->easy_pool_len++] = q->easy;
            } else {
                curl_easy_cleanup(q->easy);
            }
        } else {
            curl_easy_cleanup(q->easy);
        }
        q->easy = NULL;
    }
    curl_slist_free_all(q->hdrs);
    q->hdrs = NULL;
    for (size_t i = 0; i < q->out.nheaders; i++)
        air__free(q->out.headers[i]);
    air__free(q->out.url);
    air__free(q->out.body);
    memset(&q->out, 0, sizeof q->out);
}

static void
req_release_all(struct air__worker *w, struct air_req *q)
{
    attempt_release(w, q);
    air__buf_free(&q->resp_body);
    air__buf_free(&q->resp_hdrs);
    air__buf_free(&q->held);
    air__sse_free(&q->sse);
    air__free(q->sstate);
    q->sstate = NULL;
}

static int
http_status_for(air_errclass_t c)
{
    switch (c) {
    case AIR_ERR_NONE: return 200;
    case AIR_ERR_INVALID_REQUEST: return 400;
    case AIR_ERR_AUTH: return 502;
    case AIR_ERR_NOT_FOUND: return 404;
    case AIR_ERR_RATE_LIMITED: return 429;
    case AIR_ERR_OVERLOADED: return 503;
    case AIR_ERR_UPSTREAM: return 502;
    case AIR_ERR_TIMEOUT: return 504;
    case AIR_ERR_CONNECT: return 502;
    case AIR_ERR_BUDGET_EXCEEDED: return 429;
    case AIR_ERR_CANCELLED: return 499;
    case AIR_ERR_SHUTDOWN: return 503;
    case AIR_ERR_BUSY: return 503;
    default: return 500;
    }
}

static air_status_t
status_for(air_errclass_t c)
{
    switch (c) {
    case AIR_ERR_NONE: return AIR_OK;
    case AIR_ERR_INVALID_REQUEST: return AIR_E_BADREQ;
    case AIR_ERR_AUTH: return AIR_E_AUTH;
    case AIR_ERR_NOT_FOUND: return AIR_E_NOTFOUND;
    case AIR_ERR_RATE_LIMITED: return AIR_E_RATELIMITED;
    case AIR_ERR_OVERLOADED: return AIR_E_UPSTREAM;
    case AIR_ERR_UPSTREAM: return AIR_E_UPSTREAM;
    case AIR_ERR_TIMEOUT: return AIR_E_TIMEOUT;
    case AIR_ERR_CONNECT: return AIR_E_TRANSPORT;
    case AIR_ERR_BUDGET_EXCEEDED: return AIR_E_RATELIMITED;
    case AIR_ERR_CANCELLED: return AIR_E_CANCELLED;
    case AIR_ERR_SHUTDOWN: return AIR_E_SHUTDOWN;
    case AIR_ERR_BUSY: return AIR_E_BUSY;
    default: return AIR_E_UPSTREAM;
    }
}

/* Build the response for q, release q's resources and deliver. `dec` may
 * be NULL; its body is taken over. `f` may be NULL (success or local
 * error); `msg` overrides f->message when not NULL. */
static void
finish(struct air__worker *w, struct air_req *q, air_errclass_t cls, const char *msg,
       const air_fault_t *f, air_decoded_t *dec)
{
    struct air *r = w->r;
    uint64_t now = air__now_us();
    heap_remove(w, q);
    unlink_active(w, q);

    struct air_resp *p = air__resp_new();
    if (p != NULL) {
        p->status = status_for(cls);
        p->cls = cls;
        p->id = q->id;
        p->attempts = q->attempts;
        p->streamed = q->stream;
        p->chunks_delivered = q->chunks_delivered;
        p->latency_us = now - q->t_submit_us;
        uint64_t tf = q->stream ? q->t_first_content_us : q->t_first_byte_us;
        p->ttft_us = tf ? tf - q->t_submit_us : 0;
        if (f != NULL && f->http_status != 0 && cls != AIR_ERR_NONE)
            p->http_status = f->http_status;
        else if (cls == AIR_ERR_NONE && q->http_status)
            p->http_status = q->http_status;
        else
            p->http_status = http_status_for(cls);
        p->retry_after_ms = f != NULL ? f->retry_after_ms : -1;
        const char *m = msg != NULL ? msg : (f != NULL ? f->message : "");
        p->message = air__strdup(m ? m : "");
        if (f != NULL && f->code[0] != '\0')
            p->code = air__strdup(f->code);
        if (q->attempts > 0 && q->cands != NULL) {
            const struct air__cand *c = &q->cands[q->cur];
            p->provider = air__strdup(r->prov[c->prov].cfg->name);
            const char *um = c->model;
            if (dec != NULL && dec->model[0])
                um = dec->model;
            else if (q->stream && q->sc.model[0])
                um = q->sc.model;
            p->model = air__strdup(um);
        }
        if (dec != NULL) {
            p->usage = dec->usage;
            p->body = dec->body;
            p->body_len = dec->body_len;
            dec->body = NULL;
        } else if (q->stream) {
            p->usage = q->sc.usage;
        }
        if (p->message == NULL) {
            air_resp_free(p);
            p = NULL;
        }
    }
    if (dec != NULL) {
        air__free(dec->body);
        dec->body = NULL;
    }

    stat_add(&w->stats.completed, 1);
    stat_add(cls == AIR_ERR_NONE ? &w->stats.ok : &w->stats.failed, 1);
    stat_add(&w->stats.by_class[cls], 1);
    if (p != NULL && q->attempts > 0 && q->cands != NULL) {
        struct air__wprov *ps = &w->pstats[q->cands[q->cur].prov];
        stat_add(&ps->prompt_tokens, p->usage.prompt);
        stat_add(&ps->completion_tokens, p->usage.completion);
    }
    req_release_all(w, q);
    air__deliver(r, q, p);
}

static void
finish_local(struct air__worker *w, struct air_req *q, air_errclass_t cls, const char *msg)
{
    finish(w, q, cls, msg, NULL, NULL);
}

/* ----------------------------------------------------------- callbacks */

static const char *
hdr_lookup(const void *hctx, const char *name)
{
    const air_buf_t *b = hctx;
    if (b->data == NULL)
        return NULL;
    /* Stored as name\0value\0name\0value\0... */
    const char *p = b->data, *end = b->data + b->len;
    while (p < end) {
        const char *v = p + strlen(p) + 1;
        if (v >= end)
            break;
        if (strcasecmp(p, name) == 0)
            return v;
        p = v + strlen(v) + 1;
    }
    return NULL;
}

static size_t
on_header(char *buf, size_t size, size_t nmemb, void *ud)
{
    struct air_req *q = ud;
    size_t n = size * nmemb;
    if (n >= 5 && memcmp(buf, "HTTP/", 5) == 0) {
        /* A new response (after 100 Continue, or the only one). */
        air__buf_reset(&q->resp_hdrs);
        const char *sp = memchr(buf, ' ', n);
        q->http_status = sp ? atoi(sp + 1) : 0;
        return n;
    }
    const char *colon = memchr(buf, ':', n);
    if (colon == NULL || q->resp_hdrs.len + n + 2 > MAX_RESP_HEADERS)
        return n;
    size_t nl = (size_t)(colon - buf);
    const char *v = colon + 1;
    const char *e = buf + n;
    while (v < e && (*v == ' ' || *v == '\t'))
        v++;
    while (e > v && (e[-1] == '\r' || e[-1] == '\n' || e[-1] == ' ' || e[-1] == '\t'))
        e--;
    air__buf_append(&q->resp_hdrs, buf, nl);
    air__buf_putc(&q->resp_hdrs, '\0');
    air__buf_append(&q->resp_hdrs, v, (size_t)(e - v));
    air__buf_putc(&q->resp_hdrs, '\0');
    return n;
}

static void
deliver_chunk(struct air_req *q, const char *json, size_t len)
{
    q->chunks_delivered = 1;
    if (q->chunk == NULL)
        return;
    air_buf_t *s = &q->w->scratch;
    air__buf_reset(s);
    air__buf_append(s, json, len);
    if (s->oom)
        return;
    q->chunk(s->data, len, q->chunk_ud);
}

static void
flush_held(struct air_req *q)
{
    size_t off = 0;
    while (off + sizeof(size_t) <= q->held.len) {
        size_t len;
        memcpy(&len, q->held.data + off, sizeof len);
        off += sizeof len;
        deliver_chunk(q, q->held.data + off, len);
        off += len;
    }
    air__buf_reset(&q->held);
}

static int
on_emit(void *ud, const char *json, size_t len, unsigned flags)
{
    struct air_req *q = ud;
    if (!q->content_sent) {
        if (!(flags & AIR_CHUNK_CONTENT)) {
            /* Hold back until content: a failure before then may fail over. */
            air__buf_append(&q->held, &len, sizeof len);
            air__buf_append(&q->held, json, len);
            return q->held.oom ? -1 : 0;
        }
        q->content_sent = 1;
        q->t_first_content_us = air__now_us();
        flush_held(q);
    }
    deliver_chunk(q, json, len);
    return 0;
}

static int
on_sse_event(void *ud, const char *event, size_t event_len, const char *data, size_t data_len)
{
    struct air_req *q = ud;
    const struct air__prov *pv = &q->r->prov[q->cands[q->cur].prov];
    air_stream_rc_t rc = pv->ops->stream_event(pv->state, &q->sc, event, event_len, data, data_len);
    if (rc == AIR_STREAM_MORE)
        return 0;
    q->stream_finished = 1;
    q->stream_rc = rc;
    return 1;
}

static size_t
on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct air_req *q = ud;
    size_t n = size * nmemb;
    uint64_t now = air__now_us();
    if (q->t_first_byte_us == 0) {
        q->t_first_byte_us = now;
        if (q->http_status == 0) {
            long code = 0;
            curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &code);
            q->http_status = (int)code;
        }
        q->is_sse = q->stream && q->http_status >= 200 && q->http_status < 300;
        q->t_last_byte_us = now;
        /* The first-byte timer is now moot; a stream's idle timer is usually
         * shorter, so re-arm once here (later chunks re-arm lazily). */
        if (q->stream)
            heap_set(q->w, q, next_check(q));
    }
    q->t_last_byte_us = now;
    if (q->is_sse) {
        if (q->stream_finished)
            return n; /* after DONE: ignore the rest */
        air_status_t st = air__sse_feed(&q->sse, ptr, n, on_sse_event, q);
        if (st == AIR_OK)
            return n;
        if (st == AIR_E_CANCELLED) {
            /* The adapter finished (DONE or ERROR). On ERROR stop the transfer. */
            return q->stream_rc == AIR_STREAM_DONE ? n : 0;
        }
        q->stream_finished = 1;
        q->stream_rc = AIR_STREAM_ERROR;
        memset(&q->sc.fault, 0, sizeof q->sc.fault);
        q->sc.fault.cls = AIR_ERR_UPSTREAM;
        q->sc.fault.retry = 0;
        q->sc.fault.failover = 1;
        q->sc.fault.retry_after_ms = -1;
        snprintf(q->sc.fault.message, sizeof q->sc.fault.message, "%s",
                 st == AIR_E_PROTOCOL ? "stream event larger than max_event_bytes"
                                      : "out of memory parsing the stream");
        return 0;
    }
    if (q->resp_body.len + n > q->r->cfg->max_event_bytes) {
        q->too_big = 1;
        return 0;
    }
    air__buf_append(&q->resp_body, ptr, n);
    return q->resp_body.oom ? 0 : n;
}

/* ------------------------------------------------------------- attempts */

static void handle_fault(struct air__worker *w, struct air_req *q, const air_fault_t *f,
                         uint64_t now);

static void
fault_local(air_fault_t *f, air_errclass_t cls, int retry, int failover, const char *msg)
{
    memset(f, 0, sizeof *f);
    f->cls = cls;
    f->retry = retry;
    f->failover = failover;
    f->retry_after_ms = -1;
    snprintf(f->message, sizeof f->message, "%s", msg);
}

static int
has_room(const struct air__worker *w, size_t prov)
{
    return w->pcap[prov] == 0 || w->pinflight[prov] < w->pcap[prov];
}

static void
start_attempt(struct air__worker *w, struct air_req *q, uint64_t now)
{
    struct air *r = w->r;
    if (!has_room(w, q->cands[q->cur].prov)) {
        /* The deployment is at its max_inflight: take another usable one
         * with room, else wait for room (this costs no attempt). */
        size_t k;
        for (k = 1; k < q->ncands; k++) {
            size_t j = (q->cur + k) % q->ncands;
            if (!q->cstate[j].excluded && has_room(w, q->cands[j].prov)) {
                q->cur = j;
                break;
            }
        }
        if (k == q->ncands) {
            if (now >= q->deadline_us) {
                finish_local(w, q, AIR_ERR_OVERLOADED,
                             "every provider of this route is at its max_inflight");
                return;
            }
            q->waiting = 1;
            q->start_at_us = now + 2000;
            if (heap_set(w, q, next_check(q)) != 0)
                finish_local(w, q, AIR_ERR_OVERLOADED, "out of memory arming a timer");
            return;
        }
    }
    const struct air__cand *c = &q->cands[q->cur];
    const struct air__prov *pv = &r->prov[c->prov];
    const struct air__provider_cfg *pc = pv->cfg;

    if (now >= q->deadline_us) {
        finish(w, q, AIR_ERR_TIMEOUT, "deadline exceeded before the request could be sent",
               q->have_fault ? &q->fault : NULL, NULL);
        return;
    }
    q->waiting = 0;
    q->attempts++;
    q->cstate[q->cur].tried = 1;
    stat_add(&w->stats.attempts, 1);
    if (q->attempts > 1)
        stat_add(&w->stats.retries, 1);
    stat_add(&w->pstats[c->prov].requests, 1);

    /* Per-attempt state. */
    air__buf_reset(&q->resp_body);
    air__buf_reset(&q->resp_hdrs);
    air__buf_reset(&q->held);
    air__sse_reset(&q->sse);
    q->http_status = 0;
    q->is_sse = 0;
    q->stream_finished = 0;
    q->stream_rc = AIR_STREAM_MORE;
    q->too_big = 0;
    q->t_attempt_us = now;
    q->t_first_byte_us = 0;
    q->t_last_byte_us = 0;

    q->view.body = q->body;
    q->view.raw = q->raw;
    q->view.raw_len = q->raw_len;
    q->view.model = c->model;
    q->view.stream = q->stream;
    q->view.include_usage = q->include_usage;
    q->view.now_unix = (int64_t)time(NULL);
    q->view.request_id = q->rid;

    if (q->stream) {
        size_t need = pv->ops->stream_state_size;
        if (need > q->sstate_size) {
            air__free(q->sstate);
            q->sstate = air__calloc(1, need);
            q->sstate_size = q->sstate ? need : 0;
            if (q->sstate == NULL) {
                finish_local(w, q, AIR_ERR_UPSTREAM, "out of memory");
                return;
            }
        } else if (q->sstate != NULL) {
            memset(q->sstate, 0, q->sstate_size);
        }
        memset(&q->sc, 0, sizeof q->sc);
        q->sc.state = q->sstate;
        q->sc.req = &q->view;
        q->sc.emit = on_emit;
        q->sc.emit_ud = q;
        q->sc.fault.retry_after_ms = -1;
    }

    air_fault_t f;
    memset(&f, 0, sizeof f);
    f.retry_after_ms = -1;
    air_status_t st = pv->ops->encode(pv->state, &q->view, &q->out, &f);
    if (st != AIR_OK) {
        if (f.cls == AIR_ERR_NONE)
            f.cls = st == AIR_E_NOMEM ? AIR_ERR_UPSTREAM : AIR_ERR_INVALID_REQUEST;
        if (f.message[0] == '\0')
            snprintf(f.message, sizeof f.message, "%s: cannot encode request: %s", pc->name,
                     air_strerror(st));
        /* A request this vendor cannot take may still suit another one. */
        f.retry = 0;
        q->attempts--; /* nothing was sent */
        handle_fault(w, q, &f, now);
        return;
    }

    CURL *e = NULL;
    if (w->easy_pool_len > 0)
        e = w->easy_pool[--w->easy_pool_len];
    else
        e = curl_easy_init();
    if (e == NULL) {
        fault_local(&f, AIR_ERR_CONNECT, 1, 1, "cannot create a transfer");
        handle_fault(w, q, &f, now);
        return;
    }
    q->easy = e;
    w->pinflight[c->prov]++; /* attempt_release undoes it */
    for (size_t i = 0; i < q->out.nheaders; i++) {
        struct curl_slist *h = curl_slist_append(q->hdrs, q->out.headers[i]);
        if (h == NULL) {
            fault_local(&f, AIR_ERR_CONNECT, 1, 1, "out of memory building headers");
            attempt_release(w, q);
            handle_fault(w, q, &f, now);
            return;
        }
        q->hdrs = h;
    }
    const char *body = q->out.body_ref != NULL ? q->out.body_ref : q->out.body;
    uint64_t left_ms = (q->deadline_us - now) / 1000u + 1;
    uint64_t total_ms = min_u64(pc->timeout_ms, left_ms);

    curl_easy_setopt(e, CURLOPT_URL, q->out.url);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body ? body : "");
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->out.body_len);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, q->hdrs);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, q);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, q);
    curl_easy_setopt(e, CURLOPT_PRIVATE, q);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)pc->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)total_ms);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
    curl_easy_setopt(e, CURLOPT_SHARE, r->share);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);

    if (curl_multi_add_handle(w->multi, e) != CURLM_OK) {
        fault_local(&f, AIR_ERR_CONNECT, 1, 1, "cannot start the transfer");
        attempt_release(w, q);
        handle_fault(w, q, &f, now);
        return;
    }
    if (heap_set(w, q, next_check(q)) != 0)
        finish_local(w, q, AIR_ERR_UPSTREAM, "out of memory arming a timer");
}

/* A failed attempt: retry, fail over, or finish with the error. */
static void
handle_fault(struct air__worker *w, struct air_req *q, const air_fault_t *f, uint64_t now)
{
    struct air *r = w->r;
    const struct air__config *cfg = r->cfg;
    q->fault = *f;
    q->have_fault = 1;
    air__buf_reset(&q->held); /* nothing held back reached the caller */
    stat_add(&w->pstats[q->cands[q->cur].prov].errors, 1);

    if (f->unusable || f->cls == AIR_ERR_AUTH || f->cls == AIR_ERR_NOT_FOUND)
        q->cstate[q->cur].excluded = 1;
    if (f->retry_after_ms >= 0)
        q->cstate[q->cur].not_before_ms =
            (int64_t)(now / 1000u) + (int64_t)min_u64((uint64_t)f->retry_after_ms,
                                                      cfg->max_retry_after_ms);

    if ((!f->retry && !f->failover) || q->attempts >= q->limit) {
        finish(w, q, f->cls, NULL, f, NULL);
        return;
    }
    int new_round = 0;
    long next;
    if (f->failover)
        next = air__next_candidate(q->cstate, q->ncands, q->cur, &new_round);
    else
        next = q->cstate[q->cur].excluded ? -1 : (long)q->cur;
    if (next < 0 || ((size_t)next == q->cur && !f->retry)) {
        finish(w, q, f->cls, NULL, f, NULL);
        return;
    }
    if ((size_t)next == q->cur)
        new_round = 1;
    /* A server asking for a longer pause than we honour: do not wait on
     * this deployment. */
    if ((size_t)next == q->cur && f->retry_after_ms > (int64_t)cfg->max_retry_after_ms) {
        finish(w, q, f->cls, NULL, f, NULL);
        return;
    }
    uint64_t start = now;
    if (new_round) {
        q->round++;
        /* Server-given delays replace the backoff and get no jitter. */
        if (!(f->retry_after_ms >= 0 && (size_t)next == q->cur))
            start += air__backoff_ms(q->round, cfg->backoff_base_ms, cfg->backoff_cap_ms,
                                     air__rand_next(&w->rnd)) *
                     1000u;
    }
    int64_t nb = q->cstate[next].not_before_ms;
    if (nb > 0 && (uint64_t)nb * 1000u > start)
        start = (uint64_t)nb * 1000u;
    if (start >= q->deadline_us) {
        /* Waiting would outlive the deadline: report the failure now. */
        finish(w, q, f->cls, NULL, f, NULL);
        return;
    }
    q->cur = (size_t)next;
    if (start <= now) {
        start_attempt(w, q, now);
        return;
    }
    q->waiting = 1;
    q->start_at_us = start;
    if (heap_set(w, q, next_check(q)) != 0)
        finish(w, q, f->cls, NULL, f, NULL);
}

static void
classify_transport(air_fault_t *f, CURLcode rc, const char *who)
{
    air_errclass_t cls;
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
        cls = AIR_ERR_CONNECT;
        break;
    case CURLE_OPERATION_TIMEDOUT:
        cls = AIR_ERR_TIMEOUT;
        break;
    default:
        cls = AIR_ERR_UPSTREAM;
        break;
    }
    char msg[256];
    snprintf(msg, sizeof msg, "%s: %s", who, curl_easy_strerror(rc));
    fault_local(f, cls, 1, 1, msg);
}

/* The transfer of q's current attempt ended (curl reported DONE). */
static void
attempt_done(struct air__worker *w, struct air_req *q, CURLcode rc)
{
    struct air *r = w->r;
    const struct air__prov *pv = &r->prov[q->cands[q->cur].prov];
    const char *pname = pv->cfg->name;
    uint64_t now = air__now_us();
    air_fault_t f;
    memset(&f, 0, sizeof f);
    f.retry_after_ms = -1;

    if (q->http_status == 0 && q->easy != NULL) {
        long code = 0;
        curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &code);
        q->http_status = (int)code;
    }
    attempt_release(w, q);
    heap_remove(w, q);

    if (q->stream && q->is_sse) {
        if (q->stream_finished && q->stream_rc == AIR_STREAM_DONE) {
            flush_held(q);
            finish(w, q, AIR_ERR_NONE, "", NULL, NULL);
            return;
        }
        if (!q->stream_finished && rc == CURLE_OK) {
            air__sse_finish(&q->sse);
            air_stream_rc_t er =
                pv->ops->stream_end ? pv->ops->stream_end(pv->state, &q->sc) : AIR_STREAM_ERROR;
            if (er == AIR_STREAM_DONE) {
                flush_held(q);
                finish(w, q, AIR_ERR_NONE, "", NULL, NULL);
                return;
            }
            if (pv->ops->stream_end == NULL || q->sc.fault.cls == AIR_ERR_NONE) {
                char msg[256];
                snprintf(msg, sizeof msg, "%s: stream ended before completion", pname);
                fault_local(&q->sc.fault, AIR_ERR_UPSTREAM, 1, 1, msg);
            }
            f = q->sc.fault;
            if (q->sse.junk.len > 0) {
                /* The stream carried non-SSE lines: most likely a vendor error
                 * written as raw JSON. Let the adapter classify it. */
                air_fault_t jf;
                memset(&jf, 0, sizeof jf);
                jf.retry_after_ms = -1;
                air_http_in_t jin = {
                    .status = q->http_status,
                    .body = q->sse.junk.data,
                    .body_len = q->sse.junk.len,
                    .header = hdr_lookup,
                    .hctx = &q->resp_hdrs,
                    .now_unix_ms = (int64_t)time(NULL) * 1000,
                };
                pv->ops->classify(pv->state, &jin, &jf);
                if (jf.message[0] != '\0' && jf.cls != AIR_ERR_NONE)
                    f = jf;
            }
        } else if (q->stream_finished) {
            f = q->sc.fault;
            if (f.cls == AIR_ERR_NONE)
                fault_local(&f, AIR_ERR_UPSTREAM, 0, 1, "stream failed");
        } else {
            classify_transport(&f, rc, pname);
            size_t ml = strlen(f.message);
            snprintf(f.message + ml, sizeof f.message - ml, " (stream broken)");
        }
        f.http_status = f.http_status ? f.http_status : 0;
        if (q->content_sent) {
            /* Content already reached the caller: no failover, report it. */
            finish(w, q, f.cls, NULL, &f, NULL);
            return;
        }
        handle_fault(w, q, &f, now);
        return;
    }

    if (rc != CURLE_OK) {
        if (q->too_big) {
            char msg[256];
            snprintf(msg, sizeof msg, "%s: response larger than max_event_bytes", pname);
            fault_local(&f, AIR_ERR_UPSTREAM, 0, 1, msg);
        } else {
            classify_transport(&f, rc, pname);
        }
        handle_fault(w, q, &f, now);
        return;
    }

    air_http_in_t in = {
        .status = q->http_status,
        .body = q->resp_body.data ? q->resp_body.data : "",
        .body_len = q->resp_body.len,
        .header = hdr_lookup,
        .hctx = &q->resp_hdrs,
        .now_unix_ms = (int64_t)time(NULL) * 1000,
    };
    if (q->http_status >= 200 && q->http_status < 300) {
        air_decoded_t dec;
        memset(&dec, 0, sizeof dec);
        air_status_t st = pv->ops->decode(pv->state, &q->view, &in, &dec, &f);
        if (st == AIR_OK) {
            finish(w, q, AIR_ERR_NONE, "", NULL, &dec);
            return;
        }
        air__free(dec.body);
        if (f.cls == AIR_ERR_NONE)
            fault_local(&f, AIR_ERR_UPSTREAM, 0, 1, "unparseable provider reply");
        handle_fault(w, q, &f, now);
        return;
    }
    pv->ops->classify(pv->state, &in, &f);
    if (f.cls == AIR_ERR_NONE)
        f.cls = AIR_ERR_UPSTREAM;
    if (f.http_status == 0)
        f.http_status = q->http_status;
    if (f.message[0] == '\0')
        snprintf(f.message, sizeof f.message, "%s: HTTP %d", pname, q->http_status);
    handle_fault(w, q, &f, now);
}

/* ------------------------------------------------------------- requests */

static void
not_found_msg(struct air *r, const char *model, air_buf_t *b)
{
    air__buf_printf(b, "model '%s' is not served; served models:", model);
    int first = 1;
    for (size_t i = 0; i < r->cfg->nroutes; i++) {
        air__buf_printf(b, "%s %s", first ? "" : ",", r->cfg->routes[i].model);
        first = 0;
    }
    for (size_t p = 0; p < r->cfg->nproviders; p++)
        for (size_t m = 0; m < r->cfg->providers[p].nmodels; m++) {
            const char *name = r->cfg->providers[p].models[m].name;
            if (air__config_route(r->cfg, name) != NULL)
                continue;
            air__buf_printf(b, "%s %s", first ? "" : ",", name);
            first = 0;
        }
    if (first)
        air__buf_puts(b, " (none)");
}

/* Fill q->cands from the route (or pin). Returns 0, or -1 after finishing q. */
static int
resolve(struct air__worker *w, struct air_req *q)
{
    struct air *r = w->r;
    const struct air__config *cfg = r->cfg;
    const struct air__route_cfg *rt = air__config_route(cfg, q->model);
    size_t cap = rt ? rt->ntargets : cfg->nproviders;
    if (cap == 0)
        cap = 1;
    q->cands = air__calloc(cap, sizeof *q->cands);
    q->cstate = air__calloc(cap, sizeof *q->cstate);
    if (q->cands == NULL || q->cstate == NULL) {
        finish_local(w, q, AIR_ERR_UPSTREAM, "out of memory");
        return -1;
    }
    size_t n = 0;
    long pin = -1;
    if (q->pin != NULL) {
        pin = air__config_provider_idx(cfg, q->pin);
        if (pin < 0) {
            air_buf_t b = AIR_BUF_INIT;
            air__buf_printf(&b, "provider '%s' is not configured; configured providers:",
                            q->pin);
            for (size_t p = 0; p < cfg->nproviders; p++)
                air__buf_printf(&b, "%s %s", p ? "," : "", cfg->providers[p].name);
            finish_local(w, q, AIR_ERR_NOT_FOUND, b.data ? b.data : "unknown provider");
            air__buf_free(&b);
            return -1;
        }
    }
    if (rt != NULL) {
        for (size_t i = 0; i < rt->ntargets; i++) {
            if (pin >= 0 && rt->targets[i].provider_idx != (size_t)pin)
                continue;
            q->cands[n].prov = rt->targets[i].provider_idx;
            q->cands[n].model = rt->targets[i].model;
            n++;
        }
        if (n == 0 && pin >= 0) {
            /* Pinned to a provider outside the route: send the model as named. */
            q->cands[0].prov = (size_t)pin;
            q->cands[0].model = q->model;
            n = 1;
        }
        q->limit = q->max_attempts ? q->max_attempts
                                   : (rt->max_attempts ? rt->max_attempts : cfg->max_attempts);
    } else {
        /* No route: the providers that list the model, in config order. */
        for (size_t p = 0; p < cfg->nproviders && n < cap; p++) {
            if (pin >= 0 && p != (size_t)pin)
                continue;
            for (size_t m = 0; m < cfg->providers[p].nmodels; m++)
                if (strcmp(cfg->providers[p].models[m].name, q->model) == 0) {
                    q->cands[n].prov = p;
                    q->cands[n].model = cfg->providers[p].models[m].name;
                    n++;
                    break;
                }
        }
        if (n == 0 && pin >= 0) {
            q->cands[0].prov = (size_t)pin;
            q->cands[0].model = q->model;
            n = 1;
        }
        q->limit = q->max_attempts ? q->max_attempts : cfg->max_attempts;
    }
    if (n == 0) {
        air_buf_t b = AIR_BUF_INIT;
        not_found_msg(r, q->model, &b);
        finish_local(w, q, AIR_ERR_NOT_FOUND, b.data ? b.data : "model not found");
        air__buf_free(&b);
        return -1;
    }
    q->ncands = n;
    return 0;
}

static void
start_request(struct air__worker *w, struct air_req *q, uint64_t now)
{
    struct air *r = w->r;
    q->w = w;
    link_active(w, q);
    stat_add(&w->stats.started, 1);
    uint32_t dl = q->deadline_ms ? q->deadline_ms : r->cfg->request_timeout_ms;
    q->deadline_us = q->t_submit_us + (uint64_t)dl * 1000u;
    snprintf(q->rid, sizeof q->rid, "air-%016llx", (unsigned long long)q->id);
    air__sse_init(&q->sse, r->cfg->max_event_bytes);
    if (resolve(w, q) != 0)
        return;
    q->cur = 0;
    start_attempt(w, q, now);
}

void
air__complete_unstarted(struct air *r, struct air_req *q, air_status_t st, air_errclass_t cls,
                        const char *msg)
{
    struct air_resp *p = air__resp_new();
    if (p != NULL) {
        p->status = st;
        p->cls = cls;
        p->id = q->id;
        p->streamed = q->stream;
        p->http_status = http_status_for(cls);
        p->latency_us = air__now_us() - q->t_submit_us;
        p->message = air__strdup(msg);
        if (p->message == NULL) {
            air_resp_free(p);
            p = NULL;
        }
    }
    air__deliver(r, q, p);
}

static void
cancel_req(struct air__worker *w, struct air_req *q)
{
    q->cancelled = 1;
    attempt_release(w, q);
    finish_local(w, q, AIR_ERR_CANCELLED, "cancelled by the caller");
}

static void
process_cancels(struct air__worker *w)
{
    struct air *r = w->r;
    void *v;
    while (ck_ring_dequeue_mpmc(&w->cancel_ring, w->cancel_buf, &v)) {
        uint64_t id = (uint64_t)(uintptr_t)v;
        uint64_t idx = (id & 0xffffffffu) - 1;
        struct air__slot *s = &r->slots[idx];
        /* s->req is only ours to read while the slot names this worker. */
        if (atomic_load_explicit(&s->worker, memory_order_acquire) != (int32_t)w->idx)
            continue;
        struct air_req *q = s->req;
        if (q != NULL && q->id == id && !q->cancelled)
            cancel_req(w, q);
    }
    if (atomic_load_explicit(&w->cancel_scan, memory_order_acquire) &&
        atomic_exchange_explicit(&w->cancel_scan, 0, memory_order_acq_rel)) {
        struct air_req *q = w->active;
        while (q != NULL) {
            struct air_req *n = q->next;
            uint64_t word = atomic_load_explicit(&r->slots[q->slot].word, memory_order_acquire);
            if ((word & 1u) && (word >> 1) == (q->id >> 32))
                cancel_req(w, q);
            q = n;
        }
    }
}

static void
intake(struct air__worker *w, uint64_t now)
{
    struct air *r = w->r;
    int took = 0;
    while (w->nactive < w->max_active && took < INTAKE_BATCH) {
        void *v;
        if (!ck_ring_dequeue_mpmc(&r->ingress, r->ingress_buf, &v))
            break;
        took++;
        struct air_req *q = v;
        struct air__slot *s = &r->slots[q->slot];
        s->req = q;
        q->w = w;
        /* Publish ownership, then look for a cancel that came first (see
         * air_cancel for the other half). */
        atomic_store_explicit(&s->worker, (int32_t)w->idx, memory_order_seq_cst);
        if (atomic_load_explicit(&s->word, memory_order_seq_cst) & 1u) {
            s->req = NULL;
            air__complete_unstarted(r, q, AIR_E_CANCELLED, AIR_ERR_CANCELLED,
                                    "cancelled by the caller");
            continue;
        }
        start_request(w, q, now);
    }
    /* More waiting than one batch: let a sleeping peer help. */
    if (took == INTAKE_BATCH && ck_ring_size(&r->ingress) > 0)
        air__wake_one(r);
}

static void
run_timers(struct air__worker *w, uint64_t now)
{
    while (w->heap_len > 0 && w->heap[0]->timer_at_us <= now) {
        struct air_req *q = w->heap[0];
        heap_remove(w, q);
        if (now >= q->deadline_us) {
            attempt_release(w, q);
            char msg[128];
            snprintf(msg, sizeof msg, "deadline exceeded after %u attempt%s", q->attempts,
                     q->attempts == 1 ? "" : "s");
            finish(w, q, AIR_ERR_TIMEOUT, msg, NULL, NULL);
            continue;
        }
        if (q->waiting) {
            if (now >= q->start_at_us)
                start_attempt(w, q, now);
            else
                heap_set(w, q, next_check(q));
            continue;
        }
        if (q->easy == NULL)
            continue;
        const struct air__provider_cfg *pc = cur_pcfg(q);
        air_fault_t f;
        if (q->t_first_byte_us == 0 &&
            now >= q->t_attempt_us + (uint64_t)pc->first_byte_timeout_ms * 1000u) {
            char msg[200];
            snprintf(msg, sizeof msg, "%s: no response within first_byte_timeout_ms (%u ms)",
                     pc->name, pc->first_byte_timeout_ms);
            fault_local(&f, AIR_ERR_TIMEOUT, 1, 1, msg);
            attempt_release(w, q);
            handle_fault(w, q, &f, now);
            continue;
        }
        if (q->stream && q->t_first_byte_us != 0 &&
            now >= q->t_last_byte_us + (uint64_t)pc->idle_timeout_ms * 1000u) {
            char msg[200];
            snprintf(msg, sizeof msg, "%s: stream idle for idle_timeout_ms (%u ms)", pc->name,
                     pc->idle_timeout_ms);
            fault_local(&f, AIR_ERR_TIMEOUT, 1, 1, msg);
            attempt_release(w, q);
            if (q->content_sent)
                finish(w, q, AIR_ERR_TIMEOUT, NULL, &f, NULL);
            else
                handle_fault(w, q, &f, now);
            continue;
        }
        heap_set(w, q, next_check(q)); /* lazy re-arm (idle timer moved) */
    }
}

static void
reap(struct air__worker *w)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(w->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE)
            continue;
        char *priv = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
        struct air_req *q = (void *)priv;
        CURLcode rc = m->data.result;
        if (q != NULL)
            attempt_done(w, q, rc);
    }
}

static void
shutdown_all(struct air__worker *w)
{
    struct air *r = w->r;
    while (w->active != NULL) {
        struct air_req *q = w->active;
        attempt_release(w, q);
        finish_local(w, q, AIR_ERR_SHUTDOWN, "router shut down before the request completed");
    }
    void *v;
    while (ck_ring_dequeue_mpmc(&r->ingress, r->ingress_buf, &v))
        air__complete_unstarted(r, v, AIR_E_SHUTDOWN, AIR_ERR_SHUTDOWN,
                                "router shut down before the request started");
}

void *
air__worker_main(void *arg)
{
    struct air__worker *w = arg;
    struct air *r = w->r;
    for (;;) {
        uint64_t now = air__now_us();
        int stopping = atomic_load_explicit(&r->stopping, memory_order_acquire);
        if (stopping &&
            (int64_t)now >= atomic_load_explicit(&r->drain_deadline_us, memory_order_acquire)) {
            shutdown_all(w);
            break;
        }
        intake(w, now);
        process_cancels(w);
        run_timers(w, now);
        int running = 0;
        curl_multi_perform(w->multi, &running);
        reap(w);
        if (stopping && w->nactive == 0 && ck_ring_size(&r->ingress) == 0)
            break;

        /* How long may we sleep? Until the first timer, at most 10 s. */
        now = air__now_us();
        uint64_t wait_us = 10u * 1000000u;
        if (w->heap_len > 0)
            wait_us = w->heap[0]->timer_at_us > now ? w->heap[0]->timer_at_us - now : 0;
        if (stopping) {
            int64_t dl = atomic_load_explicit(&r->drain_deadline_us, memory_order_acquire);
            uint64_t d = (int64_t)now < dl ? (uint64_t)(dl - (int64_t)now) : 0;
            wait_us = min_u64(wait_us, d);
        }
        int timeout_ms = (int)((wait_us + 999) / 1000);
        if (w->nactive < w->max_active && !stopping) {
            atomic_store_explicit(&w->sleeping, 1, memory_order_seq_cst);
            /* Pairs with the fence in air__wake_one: either we see the new
             * request here, or the submitter sees sleeping == 1. */
            atomic_thread_fence(memory_order_seq_cst);
            if (ck_ring_size(&r->ingress) > 0)
                timeout_ms = 0;
        }
        if (ck_ring_size(&w->cancel_ring) > 0 ||
            atomic_load_explicit(&w->cancel_scan, memory_order_relaxed))
            timeout_ms = 0;
        curl_multi_poll(w->multi, NULL, 0, timeout_ms, NULL);
        atomic_store_explicit(&w->sleeping, 0, memory_order_relaxed);
    }
    return NULL;
}

void
air__worker_wake(struct air__worker *w)
{
    if (w->multi != NULL)
        curl_multi_wakeup(w->multi);
}

air_status_t
air__worker_init(struct air *r, struct air__worker *w, uint32_t idx)
{
    w->r = r;
    w->idx = idx;
    atomic_init(&w->sleeping, 0);
    atomic_init(&w->cancel_scan, 0);
    w->max_active = r->cfg->max_inflight / r->cfg->workers;
    if (w->max_active == 0)
        w->max_active = 1;
    w->rnd = 0x9e3779b97f4a7c15ull ^ ((uint64_t)(idx + 1) * 0xbf58476d1ce4e5b9ull) ^ air__now_us();
    w->pstats = air__calloc(r->nprov ? r->nprov : 1, sizeof *w->pstats);
    w->pinflight = air__calloc(r->nprov ? r->nprov : 1, sizeof *w->pinflight);
    w->pcap = air__calloc(r->nprov ? r->nprov : 1, sizeof *w->pcap);
    if (w->pinflight == NULL || w->pcap == NULL)
        return AIR_E_NOMEM;
    for (size_t p = 0; p < r->nprov; p++) {
        uint32_t m = r->cfg->providers[p].max_inflight;
        /* Each worker gets an equal share, rounded up, at least 1. */
        w->pcap[p] = m ? (m + r->cfg->workers - 1) / r->cfg->workers : 0;
    }
    w->cancel_buf = air__calloc(CANCEL_RING_SIZE, sizeof(ck_ring_buffer_t));
    if (w->pstats == NULL || w->cancel_buf == NULL)
        return AIR_E_NOMEM;
    ck_ring_init(&w->cancel_ring, CANCEL_RING_SIZE);
    w->multi = curl_multi_init();
    if (w->multi == NULL)
        return AIR_E_TRANSPORT;
    curl_multi_setopt(w->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    long maxconn = (long)(w->max_active < 4096 ? w->max_active : 4096);
    curl_multi_setopt(w->multi, CURLMOPT_MAXCONNECTS, maxconn < 16 ? 16L : maxconn);
    return AIR_OK;
}

void
air__worker_fini(struct air__worker *w)
{
    for (size_t i = 0; i < w->easy_pool_len; i++)
        curl_easy_cleanup(w->easy_pool[i]);
    air__free(w->easy_pool);
    w->easy_pool = NULL;
    w->easy_pool_len = 0;
    if (w->multi != NULL)
        curl_multi_cleanup(w->multi);
    w->multi = NULL;
    air__free(w->heap);
    air__free(w->cancel_buf);
    air__free(w->pstats);
    air__free(w->pinflight);
    air__free(w->pcap);
    air__buf_free(&w->scratch);
}
