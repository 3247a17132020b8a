/*
 * worker.c - the data plane: one thread per worker, each owning a libcurl
 * multi handle, the requests it dequeued, their attempts and their timers.
 *
 * DESIGN
 * A worker loops: take requests from the ingress ring (bounded by its share
 * of max_inflight), apply cancels, fire due timers, drive libcurl, reap
 * finished transfers, merge its statistics, then sleep in curl_multi_poll
 * until a socket, a timer or curl_multi_wakeup needs it. Every request is
 * touched by exactly one worker from dequeue to delivery.
 *
 * Routing: each attempt asks route.c for the best admissible deployment
 * under the current tunables and statistics, read inside a short epoch
 * section (never across a callback). Outcomes feed the deployment's health
 * (outlier ejection) and this worker's statistics row, which is merged into
 * the deployment and folded into a published view every stats.fold_ms.
 *
 * Timers: each request has one timer (deadline, first-byte timeout, stream
 * idle timeout, hedge start, or the start of a delayed retry), kept in a
 * per-worker binary min-heap. The write callback only records the time of
 * the last byte; the idle check re-arms lazily when its timer fires.
 *
 * Hedging: when a route hedges and the first attempt has produced no byte
 * after the hedge delay, a second attempt starts on the next-best
 * deployment. The first to produce a body byte wins; the other is cancelled
 * as soon as libcurl returns (a handle cannot be removed inside a callback)
 * and counted as cancelled, never as a failure of its deployment. Retries,
 * hedges and key-pool retries all ask this worker's retry budget, which
 * follows the current tunables (its share of the floor is 1 / workers).
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
#include "hedge.h"
#include "pricing.h"

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

static const struct air__prov *
att_prov(const struct air__att *a)
{
    const struct air_req *q = a->q;
    return &q->world->prov[q->world->deps[q->deps[a->ci]].prov];
}

static struct air__dep *
att_dep(const struct air__att *a)
{
    return &a->q->world->deps[a->q->deps[a->ci]];
}

static int
any_active(const struct air_req *q)
{
    return q->att[0].active || q->att[1].active;
}

/* When q next needs attention. */
static uint64_t
next_check(const struct air_req *q)
{
    uint64_t at = q->deadline_us;
    if (q->waiting)
        return min_u64(at, q->start_at_us);
    if (q->hedge_at_us != 0)
        at = min_u64(at, q->hedge_at_us);
    for (int i = 0; i < 2; i++) {
        const struct air__att *a = &q->att[i];
        if (!a->active)
            continue;
        const struct air__provider_cfg *pc = att_prov(a)->cfg;
        if (a->t_first_byte_us == 0)
            at = min_u64(at, a->t_start_us + (uint64_t)pc->first_byte_timeout_ms * 1000u);
        else if (q->stream)
            at = min_u64(at, a->t_last_byte_us + (uint64_t)pc->idle_timeout_ms * 1000u);
    }
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

static struct air__dobs *
obs_row(struct air__worker *w, struct air__world *wd, size_t dep)
{
    return &wd->wobs[(size_t)w->idx * wd->ndeps + dep];
}

/* An attempt cancelled unfinished (it lost a hedge race): counted apart in
 * the statistics, never as a failure, and never reported to health. */
static void
att_cancelled(struct air__worker *w, struct air__att *a)
{
    struct air_req *q = a->q;
    air__dobs_cancel(obs_row(w, q->world, q->deps[a->ci]));
}

static void
infl_add(struct air__worker *w, struct air__world *wd, size_t dep, int d)
{
    _Atomic uint32_t *c = &wd->winfl[(size_t)w->idx * wd->ndeps + dep];
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + (uint32_t)d,
                          memory_order_relaxed);
}

/* --------------------------------------------------------------- worlds */

/* Follow r->world. The load and the reference happen inside an epoch
 * section; air_reload publishes, synchronizes, and only then drops the
 * router's reference, so the world cannot be freed in between. */
static void
world_sync(struct air__worker *w)
{
    struct air *r = w->r;
    air__epoch_begin(w->erec);
    struct air__world *cur = atomic_load_explicit(&r->world, memory_order_acquire);
    if (cur == w->world) {
        air__epoch_end(w->erec);
        return;
    }
    if (w->world != NULL && w->on_current > 0 && w->nold == sizeof w->old / sizeof w->old[0]) {
        air__epoch_end(w->erec); /* too many old worlds in use: switch later */
        return;
    }
    air__world_ref(cur);
    air__epoch_end(w->erec);
    if (w->world != NULL) {
        if (w->on_current > 0) {
            w->old[w->nold].world = w->world;
            w->old[w->nold].n = w->on_current;
            w->nold++;
        } else {
            air__world_unref(w->world);
        }
    }
    w->world = cur;
    w->on_current = 0;
}

static void
world_leave(struct air__worker *w, struct air__world *wd)
{
    if (wd == w->world) {
        w->on_current--;
        return;
    }
    for (uint32_t i = 0; i < w->nold; i++) {
        if (w->old[i].world != wd)
            continue;
        if (--w->old[i].n == 0) {
            air__world_unref(wd);
            w->old[i] = w->old[--w->nold];
        }
        return;
    }
}

/* --------------------------------------------------------------- attempts */

static void
att_reset_buffers(struct air__att *a)
{
    air__buf_reset(&a->resp_body);
    air__buf_reset(&a->resp_hdrs);
    air__sse_reset(&a->sse);
    a->http_status = 0;
    a->is_sse = 0;
    a->stream_finished = 0;
    a->stream_rc = AIR_STREAM_MORE;
    a->too_big = 0;
    a->loser = 0;
    a->t_first_byte_us = 0;
    a->t_last_byte_us = 0;
}

/* Stop and detach an attempt's transfer, release its admission. */
static void
att_stop(struct air__worker *w, struct air__att *a, int64_t tokens_used)
{
    struct air_req *q = a->q;
    if (!a->active)
        return;
    a->active = 0;
    if (a->easy != NULL) {
        curl_multi_remove_handle(w->multi, a->easy);
        curl_easy_reset(a->easy);
        if (w->easy_pool_len < 256) {
            CURL **p = air__realloc(w->easy_pool, (w->easy_pool_len + 1) * sizeof *p);
            if (p != NULL) {
                w->easy_pool = p;
                w->easy_pool_len++;
                w->easy_pool[w->easy_pool_len - 1] = a->easy;
            } else {
                curl_easy_cleanup(a->easy);
            }
        } else {
            curl_easy_cleanup(a->easy);
        }
        a->easy = NULL;
    }
    curl_slist_free_all(a->hdrs);
    a->hdrs = NULL;
    for (size_t i = 0; i < a->out.nheaders; i++)
        air__free(a->out.headers[i]);
    air__free(a->out.url);
    air__free(a->out.body);
    memset(&a->out, 0, sizeof a->out);
    uint64_t now = air__now_us();
    q->upstream_us += now - a->t_start_us;
    infl_add(w, q->world, q->deps[a->ci], -1);
    air__route_release(q->world, &a->ad, tokens_used, air__wall_ms());
}

static void
att_free_all(struct air__att *a)
{
    air__buf_free(&a->resp_body);
    air__buf_free(&a->resp_hdrs);
    air__sse_free(&a->sse);
    air__free(a->sstate);
    a->sstate = NULL;
    a->sstate_size = 0;
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

static const struct air__dep *
served_dep(const struct air_req *q)
{
    if (q->attempts == 0 || q->ndeps == 0)
        return NULL;
    return &q->world->deps[q->deps[q->last_ci]];
}

/* What client_admit took, recorded in q->budget_src so that settling
 * follows the admission, not the limits as they are now (an operator may
 * change them in between). Bits 0 and 1 are the AIR_SRC_* of the client and
 * route budget reservations (engine.h). */
#define QA_CLIENT_BUDGET 4u  /* reserved on the client's budget */
#define QA_ROUTE_BUDGET  8u  /* reserved on the route's budget */
#define QA_CLIENT_TPM    16u /* took the estimate from the client's tpm */

/* Settle the client and route budgets and limits taken at request start. */
static void
settle_request(struct air_req *q, double cost, int64_t tokens)
{
    int64_t now = air__wall_ms();
    struct air__client *cl = q->client;
    if (cl != NULL) {
        if (q->client_cap)
            air__cap_leave(&cl->cap);
        double est = (double)(q->need.est_in_tokens + q->need.est_out_tokens);
        if ((q->budget_src & QA_CLIENT_TPM) && tokens >= 0 && (double)tokens < est)
            air__slim_put(&cl->tpm_lim, est - (double)tokens, now);
        if ((q->budget_src & QA_CLIENT_BUDGET) && q->budget_est_usd > 0)
            air__slim_settle(&cl->budget, q->budget_est_usd, cost, q->budget_src & 1, now);
    }
    if (q->rt != NULL && (q->budget_src & QA_ROUTE_BUDGET) && q->budget_est_usd > 0)
        air__slim_settle((struct air__slimit *)&q->rt->budget, q->budget_est_usd, cost,
                         (q->budget_src >> 1) & 1, now);
    q->client_cap = 0;
    q->budget_est_usd = 0;
    q->budget_src = 0;
}

/* Add a finished request to its route's and client's running totals (this
 * worker's row; no shared write). */
static void
count_totals(struct air__worker *w, struct air_req *q, double cost)
{
    struct air__world *wd = q->world;
    struct air__wtot *t[2] = {NULL, NULL};
    if (q->rt != NULL)
        t[0] = &wd->wroute[(size_t)w->idx * wd->nroutes + (size_t)(q->rt - wd->routes)];
    if (q->client != NULL)
        t[1] = &wd->wclient[(size_t)w->idx * wd->nclients + (size_t)(q->client - wd->clients)];
    for (int i = 0; i < 2; i++) {
        if (t[i] == NULL)
            continue;
        stat_add(&t[i]->requests, 1);
        atomic_store_explicit(&t[i]->cost_usd,
                              atomic_load_explicit(&t[i]->cost_usd, memory_order_relaxed) + cost,
                              memory_order_relaxed);
    }
}

/* Add a finished request to its tags' totals (this worker's table). */
static void
count_tags(struct air__worker *w, const struct air_req *q, double cost, const air_usage_t *u,
           int failed)
{
    if (w->tagtot == NULL)
        return;
    for (uint32_t i = 0; i < q->ntags; i++) {
        const char *tag = q->tags[i];
        uint32_t j = 0;
        while (j < i && strcmp(q->tags[j], tag) != 0)
            j++;
        if (j < i)
            continue; /* a repeated tag counts the request once */
        size_t len = strlen(tag);
        struct air__tagtot *t = &w->tagtot[AIR__TAG_SLOTS]; /* "_other" */
        if (len < AIR__TAG_NAMELEN) {
            uint64_t h = 0xcbf29ce484222325ULL;
            for (size_t k = 0; k < len; k++)
                h = (h ^ (unsigned char)tag[k]) * 0x100000001b3ULL;
            for (size_t k = 0; k < AIR__TAG_SLOTS; k++) {
                struct air__tagtot *c = &w->tagtot[(h + k) % AIR__TAG_SLOTS];
                if (!atomic_load_explicit(&c->used, memory_order_relaxed)) {
                    memcpy(c->name, tag, len + 1);
                    atomic_store_explicit(&c->used, 1, memory_order_release);
                    t = c;
                    break;
                }
                if (strcmp(c->name, tag) == 0) {
                    t = c;
                    break;
                }
            }
        }
        stat_add(&t->requests, 1);
        if (failed)
            stat_add(&t->failed, 1);
        if (u->present) {
            stat_add(&t->prompt_tokens, u->prompt);
            stat_add(&t->completion_tokens, u->completion);
        }
        atomic_store_explicit(&t->cost_usd,
                              atomic_load_explicit(&t->cost_usd, memory_order_relaxed) + cost,
                              memory_order_relaxed);
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
    for (int i = 0; i < 2; i++) {
        /* A hedge loser still running (the winner finished first) is
         * cancelled here: counted as such, not as a failure. */
        if (q->att[i].active && q->att[i].loser)
            att_cancelled(w, &q->att[i]);
        att_stop(w, &q->att[i], -1);
    }
    /* A hedge loser queued for cancellation dies with its request. */
    for (size_t i = 0; i < w->nlosers; i++)
        if (w->losers[i] != NULL && w->losers[i]->q == q)
            w->losers[i] = NULL;
    heap_remove(w, q);
    unlink_active(w, q);

    air_usage_t usage = dec != NULL ? dec->usage : q->usage;
    const struct air__dep *d = served_dep(q);
    double cost = 0;
    if (d != NULL && usage.present)
        cost = air__cost_usd(d->in_price, d->out_price, d->cached_price, usage.prompt,
                             usage.completion, usage.cached);
    if (q->ndeps > 0 || q->client != NULL)
        settle_request(q, cost, usage.present ? (int64_t)(usage.prompt + usage.completion) : -1);
    count_totals(w, q, cost);
    if (q->ntags > 0)
        count_tags(w, q, cost, &usage, cls != AIR_ERR_NONE);

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
        p->upstream_us = q->upstream_us;
        p->cost_usd = cost;
        if (f != NULL && f->http_status != 0 && cls != AIR_ERR_NONE)
            p->http_status = f->http_status;
        else
            p->http_status = http_status_for(cls);
        p->retry_after_ms = f != NULL ? f->retry_after_ms : -1;
        const char *m = msg != NULL ? msg : (f != NULL ? f->message : "");
        p->message = air__strdup(m ? m : "");
        if (f != NULL && f->code[0] != '\0')
            p->code = air__strdup(f->code);
        if (q->rt != NULL)
            p->route = air__strdup(q->rt->cfg->model);
        if (d != NULL) {
            p->provider = air__strdup(q->world->prov[d->prov].cfg->name);
            const char *um = d->model;
            if (dec != NULL && dec->model[0])
                um = dec->model;
            else if (q->up_model[0])
                um = q->up_model;
            p->model = air__strdup(um);
        }
        p->usage = usage;
        if (dec != NULL) {
            p->body = dec->body;
            p->body_len = dec->body_len;
            dec->body = NULL;
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
    for (int i = 0; i < 2; i++)
        att_free_all(&q->att[i]);
    air__buf_free(&q->held);
    world_leave(w, q->world);
    air__deliver(r, q, p);
    w->ncb++;
}

static void
finish_local(struct air__worker *w, struct air_req *q, air_errclass_t cls, const char *msg)
{
    finish(w, q, cls, msg, NULL, NULL);
}

/* Record an attempt's result in this worker's statistics row. */
static void
att_record(struct air__worker *w, struct air__att *a, int success, const air_usage_t *u)
{
    struct air_req *q = a->q;
    uint64_t now = air__now_us();
    uint64_t lat = now - a->t_start_us;
    uint64_t ttft = 0;
    if (q->stream && a->t_first_byte_us)
        ttft = a->t_first_byte_us - a->t_start_us;
    const struct air__dep *d = att_dep(a);
    double cost = 0;
    uint64_t in = 0, out = 0;
    if (u != NULL && u->present) {
        in = u->prompt;
        out = u->completion;
        cost = air__cost_usd(d->in_price, d->out_price, d->cached_price, u->prompt, u->completion,
                             u->cached);
    }
    air__dobs_record(obs_row(w, q->world, q->deps[a->ci]), success, lat, ttft, out, in, cost);
}

/* May this worker spend a retry (or a hedge) for a request on world wd?
 * The worker's retry budget follows the tunables of that world at every
 * ask (ratio, window, and this worker's share of the floor, so that
 * retry.budget_min_per_s holds for the whole router), then counts the
 * retry when allowed. */
static int
retry_allowed(struct air__worker *w, struct air__world *wd)
{
    air__epoch_begin(w->erec);
    const struct air__tun *t = atomic_load_explicit(&wd->tun, memory_order_acquire);
    double floor_share =
        (double)t->g.retry_budget_min_per_s / (double)(wd->nworkers ? wd->nworkers : 1);
    air__rbudget_set(&w->rbudget, t->g.retry_budget_ratio, floor_share,
                     (uint32_t)t->g.retry_budget_window_ms);
    air__epoch_end(w->erec);
    return air__rbudget_try_retry(&w->rbudget, air__wall_ms());
}

static enum air__outcome
outcome_of(const air_fault_t *f)
{
    switch (f->cls) {
    case AIR_ERR_UPSTREAM:
    case AIR_ERR_OVERLOADED:
    case AIR_ERR_TIMEOUT:
    case AIR_ERR_CONNECT:
        return AIR_O_GATEWAY_ERROR;
    case AIR_ERR_AUTH:
        return f->unusable || f->http_status == 401 || f->http_status == 403 ? AIR_O_AUTH
                                                                             : AIR_O_OTHER_ERROR;
    case AIR_ERR_RATE_LIMITED:
        return AIR_O_RATE_LIMITED;
    default:
        return AIR_O_OTHER_ERROR;
    }
}

static void
att_outcome(struct air__worker *w, struct air__att *a, const air_fault_t *f)
{
    struct air_req *q = a->q;
    enum air__outcome o = f != NULL ? outcome_of(f) : AIR_O_SUCCESS;
    a->key_retry = 0;
    if (a->key >= 0 && f != NULL && (o == AIR_O_AUTH || o == AIR_O_RATE_LIMITED)) {
        /* A pooled key was refused or rate limited: that key steps aside;
         * while others remain, the deployment itself is fine. */
        struct air__prov *pv = &q->world->prov[q->world->deps[q->deps[a->ci]].prov];
        int64_t now = air__wall_ms();
        air__keypool_report(&pv->keys, (size_t)a->key,
                            o == AIR_O_AUTH ? AIR_K_REJECTED : AIR_K_RATE_LIMITED,
                            f->retry_after_ms, 1000, now);
        if (air__keypool_available(&pv->keys, now) > 0) {
            a->key_retry = 1;
            o = AIR_O_OTHER_ERROR;
        }
    }
    air__epoch_begin(w->erec);
    const struct air__tun *t = atomic_load_explicit(&q->world->tun, memory_order_acquire);
    air__route_outcome(q->world, t, q->rt, q->deps[a->ci], o,
                       f != NULL && o != AIR_O_OTHER_ERROR ? f->retry_after_ms : -1, air__wall_ms());
    air__epoch_end(w->erec);
    /* An outcome was reported: the probe slot (if any) is consumed. */
    a->ad.probe = 0;
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
    struct air__att *a = ud;
    size_t n = size * nmemb;
    if (n >= 5 && memcmp(buf, "HTTP/", 5) == 0) {
        /* A new response (after 100 Continue, or the only one). */
        air__buf_reset(&a->resp_hdrs);
        const char *sp = memchr(buf, ' ', n);
        a->http_status = sp ? atoi(sp + 1) : 0;
        return n;
    }
    const char *colon = memchr(buf, ':', n);
    if (colon == NULL || a->resp_hdrs.len + n + 2 > MAX_RESP_HEADERS)
        return n;
    size_t nl = (size_t)(colon - buf);
    const char *v = colon + 1;
    const char *e = buf + n;
    while (v < e && (*v == ' ' || *v == '\t'))
        v++;
    while (e > v && (e[-1] == '\r' || e[-1] == '\n' || e[-1] == ' ' || e[-1] == '\t'))
        e--;
    air__buf_append(&a->resp_hdrs, buf, nl);
    air__buf_putc(&a->resp_hdrs, '\0');
    air__buf_append(&a->resp_hdrs, v, (size_t)(e - v));
    air__buf_putc(&a->resp_hdrs, '\0');
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
    q->w->ncb++;
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
    struct air__att *a = ud;
    struct air_req *q = a->q;
    if (a->loser)
        return -1;
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
    struct air__att *a = ud;
    const struct air__prov *pv = att_prov(a);
    air_stream_rc_t rc = pv->ops->stream_event(a->pstate, &a->sc, event, event_len, data, data_len);
    if (rc == AIR_STREAM_MORE)
        return 0;
    a->stream_finished = 1;
    a->stream_rc = rc;
    return 1;
}

static void heap_rearm(struct air__worker *w, struct air_req *q);

/* The first body byte of attempt a: it wins any hedge race. */
static void
first_byte(struct air__att *a, uint64_t now)
{
    struct air_req *q = a->q;
    a->t_first_byte_us = now;
    if (a->http_status == 0) {
        long code = 0;
        curl_easy_getinfo(a->easy, CURLINFO_RESPONSE_CODE, &code);
        a->http_status = (int)code;
    }
    a->is_sse = q->stream && a->http_status >= 200 && a->http_status < 300;
    a->t_last_byte_us = now;
    if (q->winner < 0 && a->http_status >= 200 && a->http_status < 300) {
        q->winner = (int)(a - q->att);
        q->t_first_byte_us = now;
        q->hedge_at_us = 0;
        struct air__att *o = &q->att[1 - q->winner];
        if (o->active && !o->loser) {
            /* Cancel the other as soon as libcurl returns. */
            o->loser = 1;
            struct air__worker *w = q->w;
            if (w->nlosers < sizeof w->losers / sizeof w->losers[0])
                w->losers[w->nlosers++] = o;
        }
    }
    /* The first-byte timer is now moot; a stream's idle timer is usually
     * shorter, so re-arm once here (later chunks re-arm lazily). */
    if (q->stream)
        heap_rearm(q->w, q);
}

static size_t
on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct air__att *a = ud;
    struct air_req *q = a->q;
    size_t n = size * nmemb;
    uint64_t now = air__now_us();
    if (a->loser)
        return 0;
    if (a->t_first_byte_us == 0)
        first_byte(a, now);
    a->t_last_byte_us = now;
    if (a->is_sse) {
        if (a->stream_finished)
            return n; /* after DONE: ignore the rest */
        air_status_t st = air__sse_feed(&a->sse, ptr, n, on_sse_event, a);
        if (st == AIR_OK)
            return n;
        if (st == AIR_E_CANCELLED) {
            /* The adapter finished (DONE or ERROR). On ERROR stop the transfer. */
            return a->stream_rc == AIR_STREAM_DONE ? n : 0;
        }
        a->stream_finished = 1;
        a->stream_rc = AIR_STREAM_ERROR;
        memset(&a->sc.fault, 0, sizeof a->sc.fault);
        a->sc.fault.cls = AIR_ERR_UPSTREAM;
        a->sc.fault.failover = 1;
        a->sc.fault.retry_after_ms = -1;
        snprintf(a->sc.fault.message, sizeof a->sc.fault.message, "%s",
                 st == AIR_E_PROTOCOL ? "stream event larger than max_event_bytes"
                                      : "out of memory parsing the stream");
        return 0;
    }
    if (a->resp_body.len + n > q->world->cfg->max_event_bytes) {
        a->too_big = 1;
        return 0;
    }
    air__buf_append(&a->resp_body, ptr, n);
    return a->resp_body.oom ? 0 : n;
}

/* ------------------------------------------------------------- attempts */

static void handle_fault(struct air__worker *w, struct air_req *q, struct air__att *a,
                         const air_fault_t *f, uint64_t now);

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

static void
heap_rearm(struct air__worker *w, struct air_req *q)
{
    if (heap_set(w, q, next_check(q)) != 0) {
        /* Out of memory for the timer heap: keep going without the timer;
         * the deadline is still enforced by libcurl's total timeout. */
    }
}

static uint32_t
retry_limit(const struct air_req *q, const struct air__tun *t)
{
    if (q->max_attempts)
        return q->max_attempts;
    if (q->rt != NULL && q->rt->cfg->max_attempts)
        return q->rt->cfg->max_attempts;
    return (uint32_t)t->g.retry_max_attempts;
}

static int
hedge_on(const struct air_req *q, const struct air__tun *t)
{
    if (q->rt == NULL || q->ndeps < 2)
        return 0;
    int h = t->route[q->rt - q->world->routes].hedge;
    return h < 0 ? t->g.hedge_enabled != 0 : h != 0;
}

/* Start attempt slot `slot` of q on the best admissible deployment. Returns
 * 0 when started, 1 when no deployment is admissible right now (q waits or
 * was finished), -1 when q was finished. */
static int
start_attempt(struct air__worker *w, struct air_req *q, int slot, int hedge, uint64_t now)
{
    struct air__world *wd = q->world;
    struct air__att *a = &q->att[slot];
    if (now >= q->deadline_us) {
        if (!any_active(q))
            finish(w, q, q->have_fault ? q->fault.cls : AIR_ERR_TIMEOUT,
                   q->have_fault ? NULL : "deadline exceeded before the request could be sent",
                   q->have_fault ? &q->fault : NULL, NULL);
        return -1;
    }

    /* Choose, under the current tunables and statistics. */
    air_buf_t why = AIR_BUF_INIT;
    int64_t wait_ms = -1;
    struct air__admit ad;
    air__epoch_begin(w->erec);
    const struct air__tun *t = atomic_load_explicit(&wd->tun, memory_order_acquire);
    const struct air__view *v = atomic_load_explicit(&wd->view, memory_order_acquire);
    struct air__cinfo ci[AIR_MAX_CANDS];
    memcpy(ci, q->ci, q->ndeps * sizeof ci[0]);
    if (hedge) {
        /* A hedge goes to a different deployment than the running attempt. */
        ci[q->att[1 - slot].ci].failed = 1;
    }
    long pick = air__route_pick(wd, t, v, q->rt, q->deps, q->ndeps, ci, &q->need, air__wall_ms(),
                                &w->rr, &w->rnd, &ad, &why, &wait_ms);
    if (q->limit == 0)
        q->limit = retry_limit(q, t);
    air__epoch_end(w->erec);

    if (pick < 0) {
        if (hedge) {
            air__buf_free(&why);
            return 1; /* no hedge possible; the first attempt carries on */
        }
        if (wait_ms >= 0 && now + (uint64_t)wait_ms * 1000u < q->deadline_us && !any_active(q)) {
            /* Limits or a cool-down will allow it soon: wait (no attempt used). */
            q->waiting = 1;
            q->start_at_us = now + (uint64_t)(wait_ms > 0 ? wait_ms : 1) * 1000u;
            heap_rearm(w, q);
            air__buf_free(&why);
            return 1;
        }
        if (!any_active(q)) {
            air_errclass_t cls = q->have_fault ? q->fault.cls : AIR_ERR_OVERLOADED;
            if (q->have_fault) {
                air_fault_t f = q->fault;
                size_t ml = strlen(f.message);
                if (why.data != NULL && ml + 3 < sizeof f.message)
                    snprintf(f.message + ml, sizeof f.message - ml, "; %s", why.data);
                finish(w, q, cls, NULL, &f, NULL);
            } else {
                finish(w, q, cls, why.data ? why.data : "no eligible deployment", NULL, NULL);
            }
        }
        air__buf_free(&why);
        return -1;
    }
    air__buf_free(&why);

    const size_t di = q->deps[pick];
    const struct air__dep *d = &wd->deps[di];
    struct air__prov *pv = &wd->prov[d->prov];
    const struct air__provider_cfg *pc = pv->cfg;
    /* A key pool: take the next usable key. None usable (all cooling after
     * 429, or set aside after 401/403) makes this deployment fail for the
     * request like the matching vendor error would. */
    long key = -1;
    if (pv->kstates != NULL) {
        int64_t kwait = -1;
        key = air__keypool_pick(&pv->keys, air__wall_ms(), &kwait);
        if (key < 0) {
            air__route_release(wd, &ad, -1, air__wall_ms());
            air_fault_t kf;
            char kmsg[200];
            snprintf(kmsg, sizeof kmsg, "%s: every API key of the pool is %s", pc->name,
                     kwait >= 0 ? "cooling down after rate limiting" : "rejected (401/403)");
            fault_local(&kf, kwait >= 0 ? AIR_ERR_RATE_LIMITED : AIR_ERR_AUTH, 0, 1, kmsg);
            kf.retry_after_ms = kwait;
            q->ci[pick].excluded = 1;
            a->ci = (size_t)pick;
            handle_fault(w, q, a, &kf, now);
            return -1;
        }
    }
    q->waiting = 0;
    q->attempts++;
    q->last_ci = (size_t)pick;
    a->q = q;
    a->ci = (size_t)pick;
    a->ad = ad;
    a->key = key;
    a->pstate = key >= 0 ? pv->kstates[key] : pv->state;
    a->hedge = hedge;
    a->active = 1;
    a->t_start_us = now;
    att_reset_buffers(a);
    stat_add(&w->stats.attempts, 1);
    if (hedge)
        stat_add(&w->stats.hedges, 1);
    else if (q->attempts > 1)
        stat_add(&w->stats.retries, 1);
    infl_add(w, wd, di, +1);

    a->view.body = q->body;
    a->view.raw = q->raw;
    a->view.raw_len = q->raw_len;
    a->view.model = d->model;
    a->view.stream = q->stream;
    a->view.include_usage = q->include_usage;
    a->view.now_unix = (int64_t)time(NULL);
    a->view.request_id = q->rid;

    air_fault_t f;
    if (q->stream) {
        size_t need = pv->ops->stream_state_size;
        if (need > a->sstate_size) {
            air__free(a->sstate);
            a->sstate = air__calloc(1, need);
            a->sstate_size = a->sstate ? need : 0;
            if (a->sstate == NULL) {
                fault_local(&f, AIR_ERR_UPSTREAM, 0, 0, "out of memory");
                att_stop(w, a, -1);
                handle_fault(w, q, a, &f, now);
                return -1;
            }
        } else if (a->sstate != NULL) {
            memset(a->sstate, 0, a->sstate_size);
        }
        memset(&a->sc, 0, sizeof a->sc);
        a->sc.state = a->sstate;
        a->sc.req = &a->view;
        a->sc.emit = on_emit;
        a->sc.emit_ud = a;
        a->sc.fault.retry_after_ms = -1;
    }

    memset(&f, 0, sizeof f);
    f.retry_after_ms = -1;
    air_status_t st = pv->ops->encode(a->pstate, &a->view, &a->out, &f);
    if (st != AIR_OK) {
        if (f.cls == AIR_ERR_NONE)
            f.cls = st == AIR_E_NOMEM ? AIR_ERR_UPSTREAM : AIR_ERR_INVALID_REQUEST;
        if (f.message[0] == '\0')
            snprintf(f.message, sizeof f.message, "%s: cannot encode request: %s", pc->name,
                     air_strerror(st));
        f.retry = 0; /* a request this vendor cannot take may still suit another */
        q->attempts--; /* nothing was sent */
        att_stop(w, a, -1);
        q->ci[pick].excluded = 1;
        handle_fault(w, q, a, &f, now);
        return -1;
    }

    CURL *e = w->easy_pool_len > 0 ? w->easy_pool[--w->easy_pool_len] : curl_easy_init();
    if (e == NULL) {
        fault_local(&f, AIR_ERR_CONNECT, 1, 1, "cannot create a transfer");
        att_stop(w, a, -1);
        handle_fault(w, q, a, &f, now);
        return -1;
    }
    a->easy = e;
    for (size_t i = 0; i < a->out.nheaders; i++) {
        struct curl_slist *h = curl_slist_append(a->hdrs, a->out.headers[i]);
        if (h == NULL) {
            fault_local(&f, AIR_ERR_CONNECT, 1, 1, "out of memory building headers");
            att_stop(w, a, -1);
            handle_fault(w, q, a, &f, now);
            return -1;
        }
        a->hdrs = h;
    }
    const char *body = a->out.body_ref != NULL ? a->out.body_ref : a->out.body;
    uint64_t left_ms = (q->deadline_us - now) / 1000u + 1;
    uint64_t total_ms = min_u64(pc->timeout_ms, left_ms);

    curl_easy_setopt(e, CURLOPT_URL, a->out.url);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body ? body : "");
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)a->out.body_len);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, a->hdrs);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, a);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, a);
    curl_easy_setopt(e, CURLOPT_PRIVATE, a);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)pc->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)total_ms);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
    curl_easy_setopt(e, CURLOPT_SHARE, w->r->share);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);

    if (curl_multi_add_handle(w->multi, e) != CURLM_OK) {
        fault_local(&f, AIR_ERR_CONNECT, 1, 1, "cannot start the transfer");
        att_stop(w, a, -1);
        handle_fault(w, q, a, &f, now);
        return -1;
    }

    /* Arm a hedge for a first attempt on a hedging route. */
    if (!hedge && !q->hedged && !q->att[1 - slot].active) {
        air__epoch_begin(w->erec);
        const struct air__tun *t2 = atomic_load_explicit(&wd->tun, memory_order_acquire);
        if (hedge_on(q, t2)) {
            const struct air__view *v2 = atomic_load_explicit(&wd->view, memory_order_acquire);
            const struct air__dstat *ds = v2 != NULL && di < v2->ndeps ? &v2->d[di] : NULL;
            uint64_t dms =
                air__hedge_delay_ms(ds, q->stream, (uint32_t)t2->g.hedge_delay_ms,
                                    (uint32_t)t2->g.hedge_min_ms, (uint32_t)t2->g.hedge_max_ms,
                                    (uint32_t)t2->g.hedge_default_ms);
            q->hedge_at_us = now + dms * 1000u;
        }
        air__epoch_end(w->erec);
    }
    heap_rearm(w, q);
    return 0;
}

/* A failed attempt (already stopped): retry, fail over, or finish. */
static void
handle_fault(struct air__worker *w, struct air_req *q, struct air__att *a, const air_fault_t *f,
             uint64_t now)
{
    q->fault = *f;
    q->have_fault = 1;
    if (!q->content_sent)
        air__buf_reset(&q->held); /* nothing held back reached the caller */
    size_t ci = a->ci;
    if (a->key_retry && !any_active(q) && !q->content_sent) {
        /* The pool has other keys for this deployment: try the next one at
         * once (an attempt, and a retry for the retry budget). */
        a->key_retry = 0;
        if (q->winner == (int)(a - q->att))
            q->winner = -1;
        if (q->attempts >= q->limit || !retry_allowed(w, q->world)) {
            finish(w, q, f->cls, NULL, f, NULL);
            return;
        }
        start_attempt(w, q, 0, 0, now);
        return;
    }
    if (f->unusable || f->cls == AIR_ERR_AUTH || f->cls == AIR_ERR_NOT_FOUND)
        q->ci[ci].excluded = 1;
    q->ci[ci].failed = 1;
    if (f->retry_after_ms >= 0) {
        uint64_t ra = (uint64_t)f->retry_after_ms;
        q->ci[ci].not_before_ms = air__wall_ms() + (int64_t)ra;
    }
    if (q->winner == (int)(a - q->att))
        q->winner = -1;

    /* The other attempt (a hedge) is still running: it is the failover. */
    if (any_active(q)) {
        q->hedge_at_us = 0;
        heap_rearm(w, q);
        return;
    }
    if (q->content_sent || (!f->retry && !f->failover) || q->attempts >= q->limit) {
        finish(w, q, f->cls, NULL, f, NULL);
        return;
    }
    /* The route's retry policy may limit which classes are retried. */
    if (q->rt != NULL && q->rt->cfg->retry_on != 0 && !(q->rt->cfg->retry_on & (1u << f->cls))) {
        finish(w, q, f->cls, NULL, f, NULL);
        return;
    }
    /* A retry must fit the retry budget (so an outage cannot multiply
     * traffic). */
    air__epoch_begin(w->erec);
    const struct air__tun *t = atomic_load_explicit(&q->world->tun, memory_order_acquire);
    uint32_t base = (uint32_t)t->g.retry_backoff_base_ms;
    uint32_t cap = (uint32_t)t->g.retry_backoff_cap_ms;
    if (q->rt != NULL && q->rt->cfg->backoff_base_ms)
        base = q->rt->cfg->backoff_base_ms;
    if (q->rt != NULL && q->rt->cfg->backoff_cap_ms)
        cap = q->rt->cfg->backoff_cap_ms;
    uint32_t max_ra = (uint32_t)t->g.retry_max_retry_after_ms;
    air__epoch_end(w->erec);
    if (!retry_allowed(w, q->world)) {
        air_fault_t g = *f;
        size_t ml = strlen(g.message);
        snprintf(g.message + ml, sizeof g.message - ml, " (retry budget exhausted)");
        finish(w, q, f->cls, NULL, &g, NULL);
        return;
    }
    if (f->retry_after_ms > (int64_t)max_ra)
        q->ci[ci].excluded = 1; /* asks for a longer pause than we honour */
    /* Same-deployment retry is allowed only when the fault says so. */
    if (!f->retry)
        q->ci[ci].excluded = 1;
    /* A fresh deployment goes at once; when every usable one has been tried,
     * start a new round after a full-jitter backoff. */
    int fresh = 0;
    for (size_t i = 0; i < q->ndeps; i++)
        if (!q->ci[i].failed && !q->ci[i].excluded)
            fresh = 1;
    uint64_t start = now;
    if (!fresh) {
        int usable = 0;
        for (size_t i = 0; i < q->ndeps; i++) {
            if (!q->ci[i].excluded) {
                q->ci[i].failed = 0; /* new round */
                usable = 1;
            }
        }
        if (!usable) {
            finish(w, q, f->cls, NULL, f, NULL);
            return;
        }
        q->round++;
        if (f->retry_after_ms < 0)
            start += air__backoff_ms(q->round, base, cap, air__rand_next(&w->rnd)) * 1000u;
    }
    /* Retry-After of every usable deployment in the future: wait for the
     * earliest, or give up now if that is past the deadline. */
    int64_t earliest = -1;
    int64_t wnow = air__wall_ms();
    for (size_t i = 0; i < q->ndeps; i++) {
        if (q->ci[i].excluded || q->ci[i].failed)
            continue;
        int64_t nb = q->ci[i].not_before_ms > wnow ? q->ci[i].not_before_ms - wnow : 0;
        if (earliest < 0 || nb < earliest)
            earliest = nb;
    }
    if (earliest > 0 && now + (uint64_t)earliest * 1000u > start)
        start = now + (uint64_t)earliest * 1000u;
    if (start >= q->deadline_us) {
        finish(w, q, f->cls, NULL, f, NULL);
        return;
    }
    if (start <= now) {
        start_attempt(w, q, 0, 0, now);
        return;
    }
    q->waiting = 1;
    q->start_at_us = start;
    heap_rearm(w, q);
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

/* Feed vendor rate-limit headers to the deployment's buckets and health. */
static void
learn_ratelimit(struct air__worker *w, struct air__att *a)
{
    const struct air__prov *pv = att_prov(a);
    if (pv->ops->ratelimit == NULL)
        return;
    air_http_in_t in = {
        .status = a->http_status,
        .body = "",
        .body_len = 0,
        .header = hdr_lookup,
        .hctx = &a->resp_hdrs,
        .now_unix_ms = air__wall_ms(),
    };
    air_ratelimit_t rl;
    memset(&rl, 0, sizeof rl);
    pv->ops->ratelimit(a->pstate, &in, &rl);
    if (!rl.present)
        return;
    struct air__dep *d = att_dep(a);
    int64_t now = air__wall_ms();
    if (air__lim(&d->rpm) && rl.remaining_requests >= 0)
        air__slim_sync(&d->rpm_lim, (double)rl.remaining_requests,
                       rl.reset_requests_ms >= 0 ? rl.reset_requests_ms : 0, now);
    if (air__lim(&d->tpm) && rl.remaining_tokens >= 0)
        air__slim_sync(&d->tpm_lim, (double)rl.remaining_tokens,
                       rl.reset_tokens_ms >= 0 ? rl.reset_tokens_ms : 0, now);
    if (rl.remaining_requests == 0 && a->http_status >= 200 && a->http_status < 300) {
        /* Out of requests until the reset: cool the deployment down. */
        air__epoch_begin(w->erec);
        const struct air__tun *t = atomic_load_explicit(&a->q->world->tun, memory_order_acquire);
        air__route_outcome(a->q->world, t, a->q->rt, a->q->deps[a->ci], AIR_O_SUCCESS,
                           rl.reset_requests_ms > 0 ? rl.reset_requests_ms : 0, now);
        air__epoch_end(w->erec);
    }
}

/* The transfer of attempt a ended (curl reported DONE). */
static void
attempt_done(struct air__worker *w, struct air__att *a, CURLcode rc)
{
    struct air_req *q = a->q;
    const struct air__prov *pv = att_prov(a);
    const char *pname = pv->cfg->name;
    uint64_t now = air__now_us();
    air_fault_t f;
    memset(&f, 0, sizeof f);
    f.retry_after_ms = -1;

    if (a->http_status == 0 && a->easy != NULL) {
        long code = 0;
        curl_easy_getinfo(a->easy, CURLINFO_RESPONSE_CODE, &code);
        a->http_status = (int)code;
    }
    if (a->loser) {
        /* Lost the hedge race: counted as cancelled, never as a failure. */
        att_cancelled(w, a);
        att_stop(w, a, -1);
        return;
    }
    learn_ratelimit(w, a);

    if (q->stream && a->is_sse) {
        int done = a->stream_finished && a->stream_rc == AIR_STREAM_DONE;
        if (!a->stream_finished && rc == CURLE_OK) {
            air__sse_finish(&a->sse);
            air_stream_rc_t er =
                pv->ops->stream_end ? pv->ops->stream_end(a->pstate, &a->sc) : AIR_STREAM_ERROR;
            done = er == AIR_STREAM_DONE;
            if (!done) {
                if (pv->ops->stream_end == NULL || a->sc.fault.cls == AIR_ERR_NONE) {
                    char msg[256];
                    snprintf(msg, sizeof msg, "%s: stream ended before completion", pname);
                    fault_local(&a->sc.fault, AIR_ERR_UPSTREAM, 1, 1, msg);
                }
                f = a->sc.fault;
                if (a->sse.junk.len > 0) {
                    /* Non-SSE lines in the stream: most likely a vendor error
                     * written as raw JSON. Let the adapter classify it. */
                    air_fault_t jf;
                    memset(&jf, 0, sizeof jf);
                    jf.retry_after_ms = -1;
                    air_http_in_t jin = {
                        .status = a->http_status,
                        .body = a->sse.junk.data,
                        .body_len = a->sse.junk.len,
                        .header = hdr_lookup,
                        .hctx = &a->resp_hdrs,
                        .now_unix_ms = air__wall_ms(),
                    };
                    pv->ops->classify(a->pstate, &jin, &jf);
                    if (jf.message[0] != '\0' && jf.cls != AIR_ERR_NONE)
                        f = jf;
                }
            }
        } else if (!done && a->stream_finished) {
            f = a->sc.fault;
            if (f.cls == AIR_ERR_NONE)
                fault_local(&f, AIR_ERR_UPSTREAM, 0, 1, "stream failed");
        } else if (!done) {
            classify_transport(&f, rc, pname);
            size_t ml = strlen(f.message);
            snprintf(f.message + ml, sizeof f.message - ml, " (stream broken)");
        }
        if (done) {
            q->usage = a->sc.usage;
            snprintf(q->up_model, sizeof q->up_model, "%s", a->sc.model);
            att_record(w, a, 1, &q->usage);
            att_outcome(w, a, NULL);
            att_stop(w, a, q->usage.present ? (int64_t)(q->usage.prompt + q->usage.completion)
                                            : -1);
            flush_held(q);
            finish(w, q, AIR_ERR_NONE, "", NULL, NULL);
            return;
        }
        att_record(w, a, 0, &a->sc.usage);
        att_outcome(w, a, &f);
        att_stop(w, a, -1);
        if (q->content_sent) {
            /* Content already reached the caller: no failover, report it. */
            q->usage = a->sc.usage;
            finish(w, q, f.cls, NULL, &f, NULL);
            return;
        }
        handle_fault(w, q, a, &f, now);
        return;
    }

    if (rc != CURLE_OK) {
        if (a->too_big) {
            char msg[256];
            snprintf(msg, sizeof msg, "%s: response larger than max_event_bytes", pname);
            fault_local(&f, AIR_ERR_UPSTREAM, 0, 1, msg);
        } else {
            classify_transport(&f, rc, pname);
        }
        att_record(w, a, 0, NULL);
        att_outcome(w, a, &f);
        att_stop(w, a, -1);
        handle_fault(w, q, a, &f, now);
        return;
    }

    air_http_in_t in = {
        .status = a->http_status,
        .body = a->resp_body.data ? a->resp_body.data : "",
        .body_len = a->resp_body.len,
        .header = hdr_lookup,
        .hctx = &a->resp_hdrs,
        .now_unix_ms = air__wall_ms(),
    };
    if (a->http_status >= 200 && a->http_status < 300) {
        air_decoded_t dec;
        memset(&dec, 0, sizeof dec);
        air_status_t st = pv->ops->decode(a->pstate, &a->view, &in, &dec, &f);
        if (st == AIR_OK) {
            att_record(w, a, 1, &dec.usage);
            att_outcome(w, a, NULL);
            att_stop(w, a,
                     dec.usage.present ? (int64_t)(dec.usage.prompt + dec.usage.completion) : -1);
            finish(w, q, AIR_ERR_NONE, "", NULL, &dec);
            return;
        }
        air__free(dec.body);
        if (f.cls == AIR_ERR_NONE)
            fault_local(&f, AIR_ERR_UPSTREAM, 0, 1, "unparseable provider reply");
    } else {
        pv->ops->classify(a->pstate, &in, &f);
        if (f.cls == AIR_ERR_NONE)
            f.cls = AIR_ERR_UPSTREAM;
        if (f.http_status == 0)
            f.http_status = a->http_status;
        if (f.message[0] == '\0')
            snprintf(f.message, sizeof f.message, "%s: HTTP %d", pname, a->http_status);
    }
    att_record(w, a, 0, NULL);
    att_outcome(w, a, &f);
    att_stop(w, a, -1);
    handle_fault(w, q, a, &f, now);
}

/* ------------------------------------------------------------- requests */

/* How many times (each lease.sync_ms / 10) a request may be parked for a
 * lease renewal: long enough for the backend to get the renewal or give up
 * on the store (state.timeout_ms, after which the limit's fail mode
 * decides), plus two syncs. Never so short that a request is refused as
 * over its limit while the store says there is room. */
static uint32_t
max_admit_waits(const struct air__world *wd)
{
    const struct air__config *c = wd->cfg;
    uint64_t step = c->state_sync_ms / 10 ? c->state_sync_ms / 10 : 1;
    uint64_t n = ((uint64_t)c->state_timeout_ms + 2u * c->state_sync_ms) / step + 1;
    return n > UINT16_MAX ? UINT16_MAX : (uint32_t)n;
}

/*
 * Admission against the client's limits and the client and route budgets
 * (policy/state.h limits: local, or this instance's lease of a shared one).
 * Returns 0 when admitted; 1 when parked (a shared limit's lease is being
 * renewed and the store has room: nothing is held, the timer calls this
 * again); -1 when refused (the request is finished).
 */
static int
client_admit(struct air__worker *w, struct air_req *q)
{
    struct air__world *wd = q->world;
    int64_t now = air__wall_ms();
    char msg[256];
    if (q->client_key != NULL)
        q->client = air__world_client(wd, q->client_key);
    struct air__client *cl = q->client;
    double tok = (double)(q->need.est_in_tokens + q->need.est_out_tokens);
    /* The most expensive candidate bounds the reservation. */
    double est = 0;
    for (size_t i = 0; i < q->ndeps; i++) {
        double c = air__route_est_cost(&wd->deps[q->deps[i]], &q->need);
        if (c > est)
            est = c;
    }
    air_fault_t f;
    enum air__slim_rc lr = AIR_SL_OK;
    int64_t wt = 0;
    enum { L_RPM, L_TPM, L_BUDGET, L_ROUTE } what = L_RPM;
    int rpm_taken = 0, tpm_taken = 0, cb_taken = 0, rb_taken = 0, csrc = 0, rsrc = 0;
    /* The limits as they are now (tunable at run time); what is taken is
     * recorded, and released by that record. */
    uint32_t crpm = 0, ctpm = 0, cmax = 0;
    if (cl != NULL) {
        crpm = air__lim(&cl->rpm);
        ctpm = air__lim(&cl->tpm);
        cmax = air__cap_max(&cl->cap);
        if (cmax) {
            if (!air__cap_enter(&cl->cap)) {
                snprintf(msg, sizeof msg, "client '%s' has %u requests in flight (max_inflight)",
                         cl->name, cmax);
                fault_local(&f, AIR_ERR_RATE_LIMITED, 0, 0, msg);
                f.retry_after_ms = 1000;
                f.http_status = 429;
                goto refuse;
            }
            q->client_cap = 1;
        }
        if (crpm) {
            if ((lr = air__slim_take(&cl->rpm_lim, 1, now, &wt)) != AIR_SL_OK) {
                what = L_RPM;
                goto limited;
            }
            rpm_taken = 1;
        }
        if (ctpm) {
            if ((lr = air__slim_take(&cl->tpm_lim, tok, now, &wt)) != AIR_SL_OK) {
                what = L_TPM;
                goto limited;
            }
            tpm_taken = 1;
        }
        if (atomic_load_explicit(&cl->has_budget, memory_order_acquire)) {
            if ((lr = air__slim_reserve(&cl->budget, est, now, &wt, &csrc)) != AIR_SL_OK) {
                what = L_BUDGET;
                goto limited;
            }
            cb_taken = 1;
        }
    }
    if (q->rt != NULL && atomic_load_explicit(&q->rt->has_budget, memory_order_acquire)) {
        struct air__slimit *b = (struct air__slimit *)&q->rt->budget;
        if ((lr = air__slim_reserve(b, est, now, &wt, &rsrc)) != AIR_SL_OK) {
            what = L_ROUTE;
            goto limited;
        }
        rb_taken = 1;
    }
    q->budget_est_usd = cb_taken || rb_taken ? est : 0;
    q->budget_src = (uint8_t)((csrc ? 1 : 0) | (rsrc ? 2 : 0) | (cb_taken ? QA_CLIENT_BUDGET : 0) |
                              (rb_taken ? QA_ROUTE_BUDGET : 0) | (tpm_taken ? QA_CLIENT_TPM : 0));
    return 0;

limited:
    if (cb_taken)
        air__slim_settle(&cl->budget, est, 0, csrc, now);
    if (lr == AIR_SL_SHORT && q->admit_waits < max_admit_waits(wd) &&
        air__now_us() + (uint64_t)wt * 1000u < q->deadline_us) {
        /* This instance's slice is spent but the store has room: give back
         * what was taken and wait for the renewal (already asked for). */
        if (tpm_taken)
            air__slim_put(&cl->tpm_lim, tok, now);
        if (rpm_taken)
            air__slim_put(&cl->rpm_lim, 1, now);
        if (q->client_cap) {
            air__cap_leave(&cl->cap);
            q->client_cap = 0;
        }
        q->admit_waits++;
        q->admit_wait = 1;
        q->waiting = 1;
        q->start_at_us = air__now_us() + (uint64_t)(wt > 0 ? wt : 1) * 1000u;
        heap_rearm(w, q);
        return 1;
    }
    if (lr == AIR_SL_CLOSED) {
        if (what == L_ROUTE)
            snprintf(msg, sizeof msg,
                     "route '%s' budget cannot be checked: the shared state store is "
                     "unreachable and budgets fail closed",
                     q->rt->cfg->model);
        else
            snprintf(msg, sizeof msg,
                     "client '%s' %s limit cannot be checked: the shared state store is "
                     "unreachable and %s fail closed",
                     cl->name, what == L_RPM ? "rpm" : what == L_TPM ? "tpm" : "budget",
                     what == L_BUDGET ? "budgets" : "rate limits");
        fault_local(&f, AIR_ERR_OVERLOADED, 0, 0, msg);
        f.retry_after_ms = 1000;
        f.http_status = 503;
    } else if (what == L_ROUTE) {
        snprintf(msg, sizeof msg, "route '%s' budget of $%.2f is exhausted", q->rt->cfg->model,
                 air__slim_limit(&q->rt->budget));
        fault_local(&f, AIR_ERR_BUDGET_EXCEEDED, 0, 0, msg);
        f.retry_after_ms = wt;
        f.http_status = 429;
    } else if (what == L_BUDGET) {
        snprintf(msg, sizeof msg, "client '%s' budget of $%.2f is exhausted", cl->name,
                 air__slim_limit(&cl->budget));
        fault_local(&f, AIR_ERR_BUDGET_EXCEEDED, 0, 0, msg);
        f.retry_after_ms = wt;
        f.http_status = 429;
    } else {
        snprintf(msg, sizeof msg, "client '%s' is over its %s limit (%u/min)", cl->name,
                 what == L_RPM ? "rpm" : "tpm", what == L_RPM ? crpm : ctpm);
        fault_local(&f, AIR_ERR_RATE_LIMITED, 0, 0, msg);
        f.retry_after_ms = wt;
        f.http_status = 429;
    }
refuse:
    /* Permits already taken stay spent; the cap is left by settle_request;
     * no budget is held (the client's was released above). */
    q->budget_est_usd = 0;
    q->budget_src = 0;
    finish(w, q, f.cls, NULL, &f, NULL);
    return -1;
}

static void
start_request(struct air__worker *w, struct air_req *q, uint64_t now)
{
    q->w = w;
    q->world = w->world;
    w->on_current++;
    q->winner = -1;
    link_active(w, q);
    stat_add(&w->stats.started, 1);
    uint32_t dl = q->deadline_ms ? q->deadline_ms : q->world->cfg->request_timeout_ms;
    q->deadline_us = q->t_submit_us + (uint64_t)dl * 1000u;
    snprintf(q->rid, sizeof q->rid, "air-%016llx", (unsigned long long)q->id);
    for (int i = 0; i < 2; i++) {
        q->att[i].q = q;
        air__sse_init(&q->att[i].sse, q->world->cfg->max_event_bytes);
    }
    air_buf_t why = AIR_BUF_INIT;
    if (air__route_resolve(q->world, q->model, q->pin, q->deps, &q->ndeps, &q->rt, &why) != 0) {
        finish_local(w, q, AIR_ERR_NOT_FOUND, why.data ? why.data : "model not found");
        air__buf_free(&why);
        return;
    }
    air__buf_free(&why);
    air__route_need(q->body, q->raw_len, &q->need);
    air__rbudget_on_request(&w->rbudget, air__wall_ms());
    if (client_admit(w, q) != 0)
        return;
    start_attempt(w, q, 0, 0, now);
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

/* The worker whose thread this is (NULL on other threads). */
static _Thread_local struct air__worker *tl_worker;

struct air__worker *
air__worker_self(void)
{
    return tl_worker;
}

static void
intake(struct air__worker *w, uint64_t now)
{
    struct air *r = w->r;
    int took = 0;
    while (w->nactive < w->max_active && took < INTAKE_BATCH) {
        struct air_req *q = w->local_head;
        if (q != NULL) {
            w->local_head = q->lnext;
            if (w->local_head == NULL)
                w->local_tail = NULL;
            w->nlocal--;
        } else {
            void *v;
            if (!ck_ring_dequeue_mpmc(&r->ingress, r->ingress_buf, &v))
                break;
            q = v;
        }
        took++;
        struct air__slot *s = &r->slots[q->slot];
        s->req = q;
        q->w = w;
        /* A reload published since this iteration's world_sync: move over
         * first, so that a request submitted after air_reload returned
         * routes on the new world (the exchange happened before the
         * submit's enqueue, which our dequeue synchronises with). */
        if (atomic_load_explicit(&r->world, memory_order_acquire) != w->world)
            world_sync(w);
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
att_timeout(struct air__worker *w, struct air__att *a, const char *what, uint32_t ms, uint64_t now)
{
    struct air_req *q = a->q;
    air_fault_t f;
    char msg[200];
    snprintf(msg, sizeof msg, "%s: %s (%u ms)", att_prov(a)->cfg->name, what, ms);
    fault_local(&f, AIR_ERR_TIMEOUT, 1, 1, msg);
    att_record(w, a, 0, NULL);
    att_outcome(w, a, &f);
    att_stop(w, a, -1);
    if (q->content_sent && !any_active(q)) {
        finish(w, q, AIR_ERR_TIMEOUT, NULL, &f, NULL);
        return;
    }
    handle_fault(w, q, a, &f, now);
}

static void
run_timers(struct air__worker *w, uint64_t now)
{
    while (w->heap_len > 0 && w->heap[0]->timer_at_us <= now) {
        struct air_req *q = w->heap[0];
        heap_remove(w, q);
        if (now >= q->deadline_us) {
            char msg[128];
            snprintf(msg, sizeof msg, "deadline exceeded after %u attempt%s", q->attempts,
                     q->attempts == 1 ? "" : "s");
            finish(w, q, AIR_ERR_TIMEOUT, msg, NULL, NULL);
            continue;
        }
        if (q->waiting) {
            if (now < q->start_at_us) {
                heap_rearm(w, q);
            } else if (q->admit_wait) {
                /* Parked before admission: try the limits again. */
                q->admit_wait = 0;
                q->waiting = 0;
                if (client_admit(w, q) == 0)
                    start_attempt(w, q, 0, 0, now);
            } else {
                start_attempt(w, q, 0, 0, now);
            }
            continue;
        }
        /* Per-attempt timeouts. */
        int handled = 0;
        for (int i = 0; i < 2 && !handled; i++) {
            struct air__att *a = &q->att[i];
            if (!a->active || a->loser)
                continue;
            const struct air__provider_cfg *pc = att_prov(a)->cfg;
            if (a->t_first_byte_us == 0 &&
                now >= a->t_start_us + (uint64_t)pc->first_byte_timeout_ms * 1000u) {
                att_timeout(w, a, "no response within first_byte_timeout_ms",
                            pc->first_byte_timeout_ms, now);
                handled = 1;
            } else if (q->stream && a->t_first_byte_us != 0 &&
                       now >= a->t_last_byte_us + (uint64_t)pc->idle_timeout_ms * 1000u) {
                att_timeout(w, a, "stream idle for idle_timeout_ms", pc->idle_timeout_ms, now);
                handled = 1;
            }
        }
        if (handled)
            continue; /* q may be gone */
        /* Hedge: the first attempt has no byte yet. */
        if (q->hedge_at_us != 0 && now >= q->hedge_at_us) {
            q->hedge_at_us = 0;
            int slot = q->att[0].active ? 1 : 0;
            if (q->winner < 0 && any_active(q) && !q->att[slot].active &&
                retry_allowed(w, q->world)) {
                q->hedged = 1;
                if (start_attempt(w, q, slot, 1, now) < 0)
                    continue; /* q may be gone */
            }
        }
        heap_rearm(w, q); /* lazy re-arm (idle timer moved) */
    }
}

static void
cancel_losers(struct air__worker *w)
{
    for (size_t i = 0; i < w->nlosers; i++) {
        struct air__att *a = w->losers[i];
        if (a != NULL && a->active && a->loser) {
            att_cancelled(w, a);
            att_stop(w, a, -1);
        }
    }
    w->nlosers = 0;
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
        struct air__att *a = (void *)priv;
        CURLcode rc = m->data.result;
        if (a != NULL && a->active)
            attempt_done(w, a, rc);
    }
}

/* ----------------------------------------------------------- statistics */

static void
merge_stats(struct air__worker *w, int64_t now_ms)
{
    struct air__world *wd = w->world;
    if (wd == NULL || now_ms < w->next_merge_ms)
        return;
    air__epoch_begin(w->erec);
    const struct air__tun *t = atomic_load_explicit(&wd->tun, memory_order_acquire);
    int64_t fold_ms = t->g.stats_fold_ms;
    double halflife = t->g.ewma_halflife_ms;
    air__epoch_end(w->erec);
    w->next_merge_ms = now_ms + fold_ms;
    for (size_t d = 0; d < wd->ndeps; d++) {
        struct air__dobs *row = obs_row(w, wd, d);
        if (row->requests == 0 && row->cancelled == 0)
            continue;
        pthread_mutex_lock(&wd->deps[d].mu);
        air__dobs_merge(&wd->deps[d].pending, row);
        pthread_mutex_unlock(&wd->deps[d].mu);
        air__dobs_reset(row);
    }
    /* One worker at a time folds and publishes a new view. */
    if (pthread_mutex_trylock(&wd->fold_mu) != 0)
        return;
    if (now_ms - wd->last_fold_ms < fold_ms) {
        pthread_mutex_unlock(&wd->fold_mu);
        return;
    }
    double dt = (double)(now_ms - wd->last_fold_ms);
    wd->last_fold_ms = now_ms;
    struct air__view *nv = air__malloc(sizeof *nv + (wd->ndeps ? wd->ndeps : 1) * sizeof nv->d[0]);
    if (nv == NULL) {
        pthread_mutex_unlock(&wd->fold_mu);
        return;
    }
    nv->ndeps = wd->ndeps;
    nv->at_ms = now_ms;
    struct air__dobs o;
    for (size_t d = 0; d < wd->ndeps; d++) {
        struct air__dep *dep = &wd->deps[d];
        pthread_mutex_lock(&dep->mu);
        o = dep->pending;
        air__dobs_reset(&dep->pending);
        pthread_mutex_unlock(&dep->mu);
        air__dstat_fold(&dep->agg, &o, dt, halflife);
        nv->d[d] = dep->agg;
        uint32_t infl = 0;
        for (uint32_t k = 0; k < wd->nworkers; k++)
            infl += atomic_load_explicit(&wd->winfl[(size_t)k * wd->ndeps + d],
                                         memory_order_relaxed);
        nv->d[d].inflight = infl;
    }
    struct air__view *old = atomic_exchange_explicit(&wd->view, nv, memory_order_acq_rel);
    pthread_mutex_unlock(&wd->fold_mu);
    /* Outside any section of ours: wait until no reader can see `old`. */
    air__epoch_synchronize(w->erec);
    air__free(old);
}

static void
shutdown_all(struct air__worker *w)
{
    struct air *r = w->r;
    while (w->active != NULL)
        finish_local(w, w->active, AIR_ERR_SHUTDOWN,
                     "router shut down before the request completed");
    while (w->local_head != NULL) {
        struct air_req *q = w->local_head;
        w->local_head = q->lnext;
        air__complete_unstarted(r, q, AIR_E_SHUTDOWN, AIR_ERR_SHUTDOWN,
                                "router shut down before the request started");
    }
    w->local_tail = NULL;
    w->nlocal = 0;
    void *v;
    while (ck_ring_dequeue_mpmc(&r->ingress, r->ingress_buf, &v))
        air__complete_unstarted(r, v, AIR_E_SHUTDOWN, AIR_ERR_SHUTDOWN,
                                "router shut down before the request started");
}

/* Host event source (air_worker_attach): adopt or drop it when asked. */
static void
hook_sync(struct air__worker *w)
{
    int st = atomic_load_explicit(&w->hook_state, memory_order_acquire);
    if (st == AIR__HOOK_ATTACH) {
        w->hook_fd = w->hook_fd_p;
        w->hook_fn = w->hook_fn_p;
        w->hook_ud = w->hook_ud_p;
        w->hook_due_ms = 0; /* run once at once */
        atomic_store_explicit(&w->hook_state, AIR__HOOK_RUNNING, memory_order_release);
    } else if (st == AIR__HOOK_DETACH) {
        w->hook_fn = NULL;
        w->hook_ud = NULL;
        w->hook_fd = -1;
        atomic_store_explicit(&w->hook_state, AIR__HOOK_NONE, memory_order_release);
    }
}

static void
hook_run(struct air__worker *w)
{
    if (atomic_load_explicit(&w->hook_state, memory_order_acquire) != AIR__HOOK_RUNNING)
        return;
    int64_t ms = w->hook_fn(w->hook_ud);
    w->hook_due_ms = ms >= 0 ? air__wall_ms() + ms : -1;
}

void *
air__worker_main(void *arg)
{
    struct air__worker *w = arg;
    struct air *r = w->r;
    tl_worker = w;
    for (;;) {
        uint64_t now = air__now_us();
        int stopping = atomic_load_explicit(&r->stopping, memory_order_acquire);
        if (stopping &&
            (int64_t)now >= atomic_load_explicit(&r->drain_deadline_us, memory_order_acquire)) {
            shutdown_all(w);
            break;
        }
        world_sync(w);
        hook_sync(w);
        intake(w, now);
        process_cancels(w);
        run_timers(w, now);
        int running = 0;
        curl_multi_perform(w->multi, &running);
        reap(w);
        cancel_losers(w);
        if (w->hook_fn != NULL && w->ncb != w->ncb_seen) {
            /* A callback ran here: the host may have work for its source
             * (the gateway resumed a connection). */
            w->ncb_seen = w->ncb;
            hook_run(w);
        }
        merge_stats(w, air__wall_ms());
        if (stopping && w->nactive == 0 && w->local_head == NULL &&
            ck_ring_size(&r->ingress) == 0)
            break;

        /* How long may we sleep? Until the first timer or the next stats
         * merge when there is traffic, at most 10 s. */
        now = air__now_us();
        uint64_t wait_us = 10u * 1000000u;
        if (w->heap_len > 0)
            wait_us = w->heap[0]->timer_at_us > now ? w->heap[0]->timer_at_us - now : 0;
        if (w->nactive > 0) {
            int64_t wm = w->next_merge_ms - air__wall_ms();
            wait_us = min_u64(wait_us, wm > 0 ? (uint64_t)wm * 1000u : 0);
        }
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
            atomic_load_explicit(&w->cancel_scan, memory_order_relaxed) || w->nlosers > 0 ||
            (w->local_head != NULL && w->nactive < w->max_active))
            timeout_ms = 0;
        struct curl_waitfd hfd = {.fd = w->hook_fd, .events = CURL_WAIT_POLLIN};
        unsigned nhfd = 0;
        if (w->hook_fn != NULL) {
            nhfd = 1;
            if (w->hook_due_ms >= 0) {
                int64_t d = w->hook_due_ms - air__wall_ms();
                if (d < timeout_ms)
                    timeout_ms = d > 0 ? (int)d : 0;
            }
        }
        if (r->spin_us > 0 && timeout_ms > 0) {
            /* Latency option: busy-poll sockets and the ring for spin_us
             * before sleeping, trading a core for the wake-up latency of a
             * sleeping thread (tens of microseconds on a VM). */
            atomic_store_explicit(&w->sleeping, 0, memory_order_relaxed);
            uint64_t until = air__now_us() + r->spin_us;
            int ready = 0;
            while (!ready && air__now_us() < until) {
                int n = 0;
                hfd.revents = 0;
                curl_multi_wait(w->multi, nhfd ? &hfd : NULL, nhfd, 0, &n);
                ready = n > 0 || ck_ring_size(&r->ingress) > 0 ||
                        ck_ring_size(&w->cancel_ring) > 0;
            }
            if (ready) {
                /* The host's source is polled while spinning too. */
                if (w->hook_fn != NULL && (hfd.revents & CURL_WAIT_POLLIN))
                    hook_run(w);
                continue;
            }
            atomic_store_explicit(&w->sleeping, 1, memory_order_seq_cst);
            atomic_thread_fence(memory_order_seq_cst);
            if (ck_ring_size(&r->ingress) > 0)
                timeout_ms = 0;
        }
        curl_multi_poll(w->multi, nhfd ? &hfd : NULL, nhfd, timeout_ms, NULL);
        atomic_store_explicit(&w->sleeping, 0, memory_order_relaxed);
        if (w->hook_fn != NULL &&
            ((hfd.revents & CURL_WAIT_POLLIN) ||
             (w->hook_due_ms >= 0 && air__wall_ms() >= w->hook_due_ms)))
            hook_run(w);
    }
    atomic_store_explicit(&w->exited, 1, memory_order_release);
    /* Drop this worker's world references. */
    for (uint32_t i = 0; i < w->nold; i++)
        air__world_unref(w->old[i].world);
    w->nold = 0;
    if (w->world != NULL)
        air__world_unref(w->world);
    w->world = NULL;
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
    atomic_init(&w->hook_state, AIR__HOOK_NONE);
    atomic_init(&w->exited, 0);
    w->hook_fd = -1;
    w->hook_due_ms = -1;
    atomic_init(&w->cancel_scan, 0);
    w->max_active = r->max_inflight / r->nworkers;
    if (w->max_active == 0)
        w->max_active = 1;
    w->rnd = 0x9e3779b97f4a7c15ull ^ ((uint64_t)(idx + 1) * 0xbf58476d1ce4e5b9ull) ^ air__now_us();
    w->rr = idx;
    /* Parameters are taken from the tunables at every ask (retry_allowed). */
    air__rbudget_init(&w->rbudget, 0.2, 10, 10000);
    w->tagtot = air__calloc(AIR__TAG_SLOTS + 1, sizeof *w->tagtot);
    if (w->tagtot == NULL)
        return AIR_E_NOMEM;
    memcpy(w->tagtot[AIR__TAG_SLOTS].name, "_other", sizeof "_other");
    w->cancel_buf = air__calloc(CANCEL_RING_SIZE, sizeof(ck_ring_buffer_t));
    w->erec = air__epoch_register(r->epoch);
    if (w->cancel_buf == NULL || w->erec == NULL)
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
    air__free(w->tagtot);
    w->tagtot = NULL;
    air__buf_free(&w->scratch);
}
