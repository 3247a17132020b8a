/*
 * router.c - the API side of the engine: router lifecycle, request objects,
 * submission, cancellation, completion delivery and response accessors.
 *
 * DESIGN
 * Submission is lock-free: a request takes a slot from an MPMC free ring
 * (which gives it a cancellable id), goes on the MPMC ingress ring, and one
 * sleeping worker is woken with curl_multi_wakeup. Wake-ups are not lost: a
 * worker publishes `sleeping = 1` and then re-checks the ring, a submitter
 * publishes the request and then checks `sleeping`; a sequentially
 * consistent fence on each side orders the two (Dekker), so at least one of
 * them sees the other.
 *
 * Every accepted request is completed exactly once through air__deliver,
 * which releases its slot (bumping the generation, so a late air_cancel
 * finds nothing) before handing the response to the done callback or the
 * completion queue.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "builtin.h"
#include "engine.h"
#include "world.h"

/* ------------------------------------------------------------------ names */

static const char *const status_str[] = {
#define X(name, num, str) [num] = str,
    AIR_STATUS_MAP(X)
#undef X
};

static const char *const status_name[] = {
#define X(name, num, str) [num] = "AIR_" #name,
    AIR_STATUS_MAP(X)
#undef X
};

static const char *const errclass_str[] = {
#define X(name, num, str) [num] = str,
    AIR_ERRCLASS_MAP(X)
#undef X
};

const char *
air_strerror(air_status_t st)
{
    if ((unsigned)st >= AIR__STATUS_LAST || status_str[st] == NULL)
        return "unknown status";
    return status_str[st];
}

const char *
air_status_name(air_status_t st)
{
    if ((unsigned)st >= AIR__STATUS_LAST || status_name[st] == NULL)
        return "AIR_E_UNKNOWN";
    return status_name[st];
}

const char *
air_errclass_name(air_errclass_t c)
{
    if ((unsigned)c >= AIR__ERR_LAST || errclass_str[c] == NULL)
        return "unknown";
    return errclass_str[c];
}

int
air_version_num(void)
{
    return AIR_VERSION_NUM;
}

const char *
air_version(void)
{
    return AIR_VERSION_STR;
}

uint64_t
air__now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void
set_err(char *err, size_t errlen, const char *fmt, const char *a)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, fmt, a ? a : "");
}

/* ------------------------------------------------------------ curl share */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_OK;

static void
curl_init_once(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void
share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *ud)
{
    (void)h;
    (void)access;
    struct air *r = ud;
    pthread_mutex_lock(&r->share_lock[data]);
}

static void
share_unlock(CURL *h, curl_lock_data data, void *ud)
{
    (void)h;
    struct air *r = ud;
    pthread_mutex_unlock(&r->share_lock[data]);
}

/* --------------------------------------------------------------- router */

/* Pop a free slot (index + 1), or 0 when none is left. */
static uint32_t
slot_pop(struct air *r)
{
    uint64_t head = atomic_load_explicit(&r->slot_head, memory_order_acquire);
    for (;;) {
        uint32_t top = (uint32_t)head;
        if (top == 0)
            return 0;
        /* May read a stale `next` if top was popped and pushed meanwhile; the
         * tag then differs and the CAS fails. */
        uint32_t next = atomic_load_explicit(&r->slot_next[top - 1], memory_order_relaxed);
        uint64_t nh = ((head >> 32) + 1) << 32 | next;
        if (atomic_compare_exchange_weak_explicit(&r->slot_head, &head, nh, memory_order_acquire,
                                                  memory_order_acquire))
            return top;
    }
}

static void
slot_push(struct air *r, uint32_t top)
{
    uint64_t head = atomic_load_explicit(&r->slot_head, memory_order_relaxed);
    for (;;) {
        atomic_store_explicit(&r->slot_next[top - 1], (uint32_t)head, memory_order_relaxed);
        uint64_t nh = ((head >> 32) + 1) << 32 | top;
        /* Release: the slot's reset (generation, owner) happens before a
         * later pop sees it. */
        if (atomic_compare_exchange_weak_explicit(&r->slot_head, &head, nh, memory_order_release,
                                                  memory_order_relaxed))
            return;
    }
}

static void
router_destroy(struct air *r)
{
    if (r->workers != NULL) {
        for (uint32_t i = 0; i < r->nworkers; i++)
            air__worker_fini(&r->workers[i]);
        air__free(r->workers);
        r->workers = NULL;
    }
    air__world_unref(atomic_load_explicit(&r->world, memory_order_relaxed));
    air__epoch_free(r->epoch);
    if (r->ctl_mu_init)
        pthread_mutex_destroy(&r->ctl_mu);
    /* Undelivered completion-queue entries: the host stopped polling. */
    struct air_resp *p = atomic_exchange_explicit(&r->cq_head, NULL, memory_order_acquire);
    while (p != NULL) {
        struct air_resp *n = p->next;
        air_resp_free(p);
        p = n;
    }
    while (r->cq_local != NULL) {
        struct air_resp *n = r->cq_local->next;
        air_resp_free(r->cq_local);
        r->cq_local = n;
    }
    if (r->cq_fd >= 0)
        close(r->cq_fd);
    if (r->share != NULL) {
        curl_share_cleanup(r->share);
        for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
            pthread_mutex_destroy(&r->share_lock[i]);
    }
    air__free(r->ingress_buf);
    air__free((void *)r->slot_next);
    air__free(r->slots);
    air__free(r);
}

int64_t
air__wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static air_status_t
router_new(struct air__config *cfg, air_t **out, char *err, size_t errlen)
{
    struct air *r = air__calloc(1, sizeof *r);
    if (r == NULL) {
        air__config_free(cfg);
        return AIR_E_NOMEM;
    }
    r->nworkers = cfg->workers;
    r->queue_capacity = cfg->queue_capacity;
    r->max_inflight = cfg->max_inflight;
    r->spin_us = cfg->spin_us;
    r->cq_fd = -1;
    atomic_init(&r->world, NULL);
    pthread_mutex_init(&r->ctl_mu, NULL);
    r->ctl_mu_init = 1;
    atomic_init(&r->cq_head, NULL);
    atomic_init(&r->stopping, 0);
    atomic_init(&r->drain_deadline_us, 0);
    atomic_init(&r->seq, 0);
    atomic_init(&r->wake_rr, 0);

    uint32_t queue_capacity = cfg->queue_capacity, max_inflight = cfg->max_inflight;
    struct air__world *wd = NULL;
    air_status_t st = air__world_new(cfg, r->nworkers, air__wall_ms(), &wd, err, errlen);
    if (st != AIR_OK) {
        r->nworkers = 0;
        goto fail;
    }
    atomic_store_explicit(&r->world, wd, memory_order_release);

    st = AIR_E_NOMEM;
    r->epoch = air__epoch_new();
    if (r->epoch == NULL || (r->ctl_rec = air__epoch_register(r->epoch)) == NULL)
        goto fail;
    r->ingress_cap = queue_capacity;
    r->ingress_buf = air__calloc(r->ingress_cap, sizeof(ck_ring_buffer_t));
    if (r->ingress_buf == NULL)
        goto fail;
    ck_ring_init(&r->ingress, r->ingress_cap);

    /* Slots cover everything that can be outstanding: the ring's capacity
     * plus what the workers may hold. */
    r->nslots = queue_capacity + max_inflight;
    r->slots = air__calloc(r->nslots, sizeof *r->slots);
    r->slot_next = air__calloc(r->nslots, sizeof *r->slot_next);
    if (r->slots == NULL || r->slot_next == NULL)
        goto fail;
    for (uint32_t i = 0; i < r->nslots; i++) {
        atomic_init(&r->slots[i].word, (uint64_t)1 << 1); /* generation 1 */
        atomic_init(&r->slots[i].worker, -1);
        atomic_init(&r->slot_next[i], i + 2 <= r->nslots ? i + 2 : 0);
    }
    atomic_init(&r->slot_head, r->nslots ? 1u : 0u); /* slot 0 on top, tag 0 */

    r->cq_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (r->cq_fd < 0) {
        st = AIR_E_TRANSPORT;
        set_err(err, errlen, "eventfd: %s", strerror(errno));
        goto fail;
    }

    r->share = curl_share_init();
    if (r->share == NULL)
        goto fail;
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_init(&r->share_lock[i], NULL);
    curl_share_setopt(r->share, CURLSHOPT_LOCKFUNC, share_lock);
    curl_share_setopt(r->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
    curl_share_setopt(r->share, CURLSHOPT_USERDATA, r);
    curl_share_setopt(r->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(r->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);

    r->workers = air__calloc(r->nworkers, sizeof *r->workers);
    if (r->workers == NULL)
        goto fail;
    for (uint32_t i = 0; i < r->nworkers; i++) {
        st = air__worker_init(r, &r->workers[i], i);
        if (st != AIR_OK) {
            set_err(err, errlen, "worker init failed: %s", air_strerror(st));
            goto fail;
        }
    }
    for (uint32_t i = 0; i < r->nworkers; i++) {
        if (pthread_create(&r->workers[i].thread, NULL, air__worker_main, &r->workers[i]) != 0) {
            /* Stop the ones already running. */
            atomic_store(&r->stopping, 1);
            for (uint32_t j = 0; j < i; j++) {
                air__worker_wake(&r->workers[j]);
                pthread_join(r->workers[j].thread, NULL);
            }
            set_err(err, errlen, "cannot start worker threads%s", "");
            st = AIR_E_NOMEM;
            goto fail;
        }
    }
    *out = r;
    return AIR_OK;

fail:
    if (st == AIR_E_NOMEM)
        set_err(err, errlen, "out of memory%s", "");
    router_destroy(r);
    return st;
}

air_status_t
air_new(const char *config_json, air_t **out, char *err, size_t errlen)
{
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (config_json == NULL || out == NULL) {
        set_err(err, errlen, "air_new: NULL argument%s", "");
        return AIR_E_INVAL;
    }
    *out = NULL;
    pthread_once(&curl_once, curl_init_once);
    if (curl_init_rc != CURLE_OK) {
        set_err(err, errlen, "curl_global_init failed: %s", curl_easy_strerror(curl_init_rc));
        return AIR_E_TRANSPORT;
    }
    struct air__config *cfg = NULL;
    air_status_t st = air__config_parse(config_json, strlen(config_json), &cfg, err, errlen);
    if (st != AIR_OK)
        return st;
    return router_new(cfg, out, err, errlen);
}

air_status_t
air_new_file(const char *path, air_t **out, char *err, size_t errlen)
{
    if (path == NULL || out == NULL) {
        set_err(err, errlen, "air_new_file: NULL argument%s", "");
        return AIR_E_INVAL;
    }
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return AIR_E_CONFIG;
    }
    air_buf_t b = AIR_BUF_INIT;
    char tmp[8192];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
        air__buf_append(&b, tmp, n);
    int rerr = ferror(f);
    fclose(f);
    if (rerr) {
        air__buf_free(&b);
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "%s: read error", path);
        return AIR_E_CONFIG;
    }
    char *text = air__buf_steal(&b, NULL);
    if (text == NULL) {
        set_err(err, errlen, "out of memory%s", "");
        return AIR_E_NOMEM;
    }
    air_status_t st = air_new(text, out, err, errlen);
    air__free(text);
    return st;
}

void
air_free(air_t *r, uint32_t drain_ms)
{
    if (r == NULL)
        return;
    int64_t deadline = (int64_t)(air__now_us() + (uint64_t)drain_ms * 1000u);
    atomic_store_explicit(&r->drain_deadline_us, deadline, memory_order_seq_cst);
    atomic_store_explicit(&r->stopping, 1, memory_order_seq_cst);
    for (uint32_t i = 0; i < r->nworkers; i++)
        air__worker_wake(&r->workers[i]);
    for (uint32_t i = 0; i < r->nworkers; i++)
        pthread_join(r->workers[i].thread, NULL);
    /* Whatever is still queued never reached a worker. */
    void *p;
    while (ck_ring_dequeue_mpmc(&r->ingress, r->ingress_buf, &p))
        air__complete_unstarted(r, p, AIR_E_SHUTDOWN, AIR_ERR_SHUTDOWN,
                                "router shut down before the request started");
    router_destroy(r);
}

/* -------------------------------------------------------------- requests */

static air_status_t
req_fail(char *err, size_t errlen, const char *msg, const char *field)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, msg, field);
    return AIR_E_BADREQ;
}

/* Line and column of byte offset `off` in text, 1-based. */
static void
line_col(const char *text, size_t off, unsigned *line, unsigned *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off; i++) {
        if (text[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

air_status_t
air_req_new(air_t *r, const char *body, size_t len, air_req_t **out, char *err, size_t errlen)
{
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (r == NULL || body == NULL || out == NULL) {
        set_err(err, errlen, "air_req_new: NULL argument%s", "");
        return AIR_E_INVAL;
    }
    *out = NULL;
    struct air_req *q = air__calloc(1, sizeof *q);
    if (q == NULL)
        return AIR_E_NOMEM;
    q->r = r;
    q->raw = air__strndup(body, len);
    if (q->raw == NULL) {
        air__free(q);
        return AIR_E_NOMEM;
    }
    q->raw_len = len;
    const char *end = NULL;
    q->body = cJSON_ParseWithLengthOpts(q->raw, len, &end, 0);
    air_status_t st;
    if (q->body == NULL) {
        size_t off = (end != NULL && end >= q->raw && end <= q->raw + len) ? (size_t)(end - q->raw)
                                                                          : 0;
        unsigned line, col;
        line_col(q->raw, off, &line, &col);
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "invalid JSON at line %u, column %u (byte %zu)", line, col, off);
        st = AIR_E_BADREQ;
        goto fail;
    }
    if (!cJSON_IsObject(q->body)) {
        st = req_fail(err, errlen, "request body must be a JSON object%s", "");
        goto fail;
    }
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(q->body, "model");
    if (m == NULL) {
        st = req_fail(err, errlen, "%s: required field is missing", "model");
        goto fail;
    }
    if (!cJSON_IsString(m) || m->valuestring[0] == '\0') {
        st = req_fail(err, errlen, "%s: expected a non-empty string", "model");
        goto fail;
    }
    q->model = m->valuestring;
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(q->body, "messages");
    if (msgs == NULL) {
        st = req_fail(err, errlen, "%s: required field is missing", "messages");
        goto fail;
    }
    if (!cJSON_IsArray(msgs) || cJSON_GetArraySize(msgs) == 0) {
        st = req_fail(err, errlen, "%s: expected a non-empty array", "messages");
        goto fail;
    }
    int i = 0;
    const cJSON *msg;
    cJSON_ArrayForEach(msg, msgs)
    {
        char field[64];
        if (!cJSON_IsObject(msg)) {
            snprintf(field, sizeof field, "messages[%d]", i);
            st = req_fail(err, errlen, "%s: expected an object", field);
            goto fail;
        }
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(msg, "role");
        if (!cJSON_IsString(role)) {
            snprintf(field, sizeof field, "messages[%d].role", i);
            st = req_fail(err, errlen, "%s: expected a string", field);
            goto fail;
        }
        i++;
    }
    const cJSON *stream = cJSON_GetObjectItemCaseSensitive(q->body, "stream");
    if (stream != NULL && !cJSON_IsNull(stream)) {
        if (!cJSON_IsBool(stream)) {
            st = req_fail(err, errlen, "%s: expected a boolean", "stream");
            goto fail;
        }
        q->stream = cJSON_IsTrue(stream);
    }
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(q->body, "stream_options");
    if (so != NULL && !cJSON_IsNull(so)) {
        if (!cJSON_IsObject(so)) {
            st = req_fail(err, errlen, "%s: expected an object", "stream_options");
            goto fail;
        }
        const cJSON *iu = cJSON_GetObjectItemCaseSensitive(so, "include_usage");
        if (iu != NULL && !cJSON_IsBool(iu)) {
            st = req_fail(err, errlen, "%s: expected a boolean", "stream_options.include_usage");
            goto fail;
        }
        q->include_usage = cJSON_IsTrue(iu);
    }
    *out = q;
    return AIR_OK;
fail:
    air__req_destroy(q);
    return st;
}

void
air_req_free(air_req_t *req)
{
    air__req_destroy(req);
}

void
air__req_destroy(struct air_req *q)
{
    if (q == NULL)
        return;
    cJSON_Delete(q->body);
    air__free(q->raw);
    air__free(q->pin);
    air__free(q->client_key);
    for (uint32_t i = 0; i < q->ntags; i++)
        air__free(q->tags[i]);
    air__free(q);
}

static air_status_t
set_str(char **dst, const char *v)
{
    if (v == NULL)
        return AIR_E_INVAL;
    char *c = air__strdup(v);
    if (c == NULL)
        return AIR_E_NOMEM;
    air__free(*dst);
    *dst = c;
    return AIR_OK;
}

air_status_t
air_req_set_provider(air_req_t *req, const char *provider)
{
    if (req == NULL || provider == NULL || provider[0] == '\0')
        return AIR_E_INVAL;
    return set_str(&req->pin, provider);
}

air_status_t
air_req_set_deadline_ms(air_req_t *req, uint32_t ms)
{
    if (req == NULL)
        return AIR_E_INVAL;
    req->deadline_ms = ms;
    return AIR_OK;
}

air_status_t
air_req_set_client_key(air_req_t *req, const char *key)
{
    if (req == NULL || key == NULL)
        return AIR_E_INVAL;
    return set_str(&req->client_key, key);
}

air_status_t
air_req_add_tag(air_req_t *req, const char *tag)
{
    if (req == NULL || tag == NULL)
        return AIR_E_INVAL;
    if (req->ntags >= AIR_MAX_TAGS)
        return AIR_E_RANGE;
    char *c = air__strdup(tag);
    if (c == NULL)
        return AIR_E_NOMEM;
    req->tags[req->ntags++] = c;
    return AIR_OK;
}

air_status_t
air_req_set_max_attempts(air_req_t *req, uint32_t n)
{
    if (req == NULL || n > 100)
        return AIR_E_INVAL;
    req->max_attempts = n;
    return AIR_OK;
}

air_status_t
air_req_set_done(air_req_t *req, air_done_fn fn, void *ud)
{
    if (req == NULL)
        return AIR_E_INVAL;
    req->done = fn;
    req->done_ud = ud;
    return AIR_OK;
}

air_status_t
air_req_set_chunk(air_req_t *req, air_chunk_fn fn, void *ud)
{
    if (req == NULL)
        return AIR_E_INVAL;
    req->chunk = fn;
    req->chunk_ud = ud;
    return AIR_OK;
}

/* ------------------------------------------------------------ submission */

void
air__wake_one(struct air *r)
{
    /* Pairs with the fence in the worker before it re-checks the ring: the
     * request is published before we look at `sleeping`. */
    atomic_thread_fence(memory_order_seq_cst);
    uint32_t n = r->nworkers;
    uint32_t start = atomic_fetch_add_explicit(&r->wake_rr, 1, memory_order_relaxed);
    for (uint32_t k = 0; k < n; k++) {
        struct air__worker *w = &r->workers[(start + k) % n];
        if (atomic_load_explicit(&w->sleeping, memory_order_relaxed) &&
            atomic_exchange_explicit(&w->sleeping, 0, memory_order_seq_cst)) {
            curl_multi_wakeup(w->multi);
            return;
        }
    }
}

air_status_t
air_submit(air_t *r, air_req_t *req, uint64_t *id)
{
    if (r == NULL || req == NULL) {
        air__req_destroy(req);
        return AIR_E_INVAL;
    }
    if (atomic_load_explicit(&r->stopping, memory_order_acquire)) {
        air__req_destroy(req);
        return AIR_E_SHUTDOWN;
    }
    uint32_t sv = slot_pop(r);
    if (sv == 0) {
        air__req_destroy(req);
        return AIR_E_BUSY;
    }
    uint32_t slot = sv - 1;
    uint64_t gen = atomic_load_explicit(&r->slots[slot].word, memory_order_acquire) >> 1;
    req->slot = slot;
    req->id = (gen << 32) | (uint64_t)(slot + 1);
    req->t_submit_us = air__now_us();
    atomic_store_explicit(&r->slots[slot].worker, -1, memory_order_relaxed);
    uint64_t rid = req->id;
    if (!ck_ring_enqueue_mpmc(&r->ingress, r->ingress_buf, req)) {
        slot_push(r, sv);
        air__req_destroy(req);
        return AIR_E_BUSY;
    }
    /* req belongs to a worker from here on: do not touch it. */
    air__wake_one(r);
    if (id != NULL)
        *id = rid;
    return AIR_OK;
}

air_status_t
air_cancel(air_t *r, uint64_t id)
{
    if (r == NULL)
        return AIR_E_INVAL;
    uint64_t idx = (id & 0xffffffffu);
    uint64_t gen = id >> 32;
    if (idx == 0 || idx > r->nslots)
        return AIR_E_NOTFOUND;
    struct air__slot *s = &r->slots[idx - 1];
    uint64_t expect = gen << 1;
    if (!atomic_compare_exchange_strong_explicit(&s->word, &expect, (gen << 1) | 1u,
                                                 memory_order_seq_cst, memory_order_seq_cst)) {
        /* Already being cancelled: fine; otherwise the id is stale. */
        return expect == ((gen << 1) | 1u) ? AIR_OK : AIR_E_NOTFOUND;
    }
    /* The worker stores its index and then re-reads the cancel bit; we set
     * the bit and then read the index (both seq_cst): one of us sees the
     * other, so the cancel is never missed. */
    int32_t wi = atomic_load_explicit(&s->worker, memory_order_seq_cst);
    if (wi >= 0 && (uint32_t)wi < r->nworkers) {
        struct air__worker *w = &r->workers[wi];
        if (!ck_ring_enqueue_mpmc(&w->cancel_ring, w->cancel_buf, (void *)(uintptr_t)id))
            atomic_store_explicit(&w->cancel_scan, 1, memory_order_release);
        curl_multi_wakeup(w->multi);
    }
    return AIR_OK;
}

void
air__slot_release(struct air *r, struct air_req *q)
{
    struct air__slot *s = &r->slots[q->slot];
    uint64_t gen = (q->id >> 32) + 1;
    if ((gen & 0xffffffffu) == 0)
        gen = 1;
    s->req = NULL;
    atomic_store_explicit(&s->worker, -1, memory_order_relaxed);
    /* The new generation makes late cancels of this id fail. */
    atomic_store_explicit(&s->word, gen << 1, memory_order_seq_cst);
    slot_push(r, q->slot + 1);
}

/* ------------------------------------------------------------ completion */

struct air_resp *
air__resp_new(void)
{
    struct air_resp *p = air__calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    atomic_init(&p->refs, 1);
    p->retry_after_ms = -1;
    return p;
}

void
air__deliver(struct air *r, struct air_req *q, struct air_resp *resp)
{
    air_done_fn done = q->done;
    void *ud = q->done_ud;
    air__slot_release(r, q);
    air__req_destroy(q);
    if (resp == NULL)
        return; /* out of memory building it: nothing sane to deliver */
    if (done != NULL) {
        done(resp, ud);
        air_resp_free(resp);
        return;
    }
    resp->ud = ud;
    struct air_resp *head = atomic_load_explicit(&r->cq_head, memory_order_relaxed);
    do {
        resp->next = head;
    } while (!atomic_compare_exchange_weak_explicit(&r->cq_head, &head, resp,
                                                    memory_order_release, memory_order_relaxed));
    if (head == NULL) {
        /* The queue went from empty to non-empty: signal the host. */
        uint64_t one = 1;
        ssize_t n = write(r->cq_fd, &one, sizeof one);
        (void)n; /* EAGAIN means the counter is already non-zero */
    }
}

int
air_completions_fd(air_t *r)
{
    return r ? r->cq_fd : -1;
}

size_t
air_completions_poll(air_t *r, air_done_fn fn, size_t max)
{
    if (r == NULL || fn == NULL)
        return 0;
    uint64_t v;
    ssize_t rd = read(r->cq_fd, &v, sizeof v); /* clear readiness first */
    (void)rd;
    struct air_resp *p = atomic_exchange_explicit(&r->cq_head, NULL, memory_order_acquire);
    /* The stack is LIFO; reverse it and append after what is left locally. */
    struct air_resp *rev = NULL;
    while (p != NULL) {
        struct air_resp *n = p->next;
        p->next = rev;
        rev = p;
        p = n;
    }
    struct air_resp **tail = &r->cq_local;
    while (*tail != NULL)
        tail = &(*tail)->next;
    *tail = rev;
    size_t done = 0;
    while (r->cq_local != NULL && done < max) {
        struct air_resp *x = r->cq_local;
        r->cq_local = x->next;
        x->next = NULL;
        fn(x, x->ud);
        air_resp_free(x);
        done++;
    }
    if (r->cq_local != NULL) {
        uint64_t one = 1;
        ssize_t n = write(r->cq_fd, &one, sizeof one); /* more to do: stay readable */
        (void)n;
    }
    return done;
}

/* ------------------------------------------------------------- sync call */

struct call_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    air_resp_t *resp;
    int done;
};

static void
call_done(const air_resp_t *resp, void *ud)
{
    struct call_wait *cw = ud;
    air_resp_t *keep = air_resp_dup(resp);
    pthread_mutex_lock(&cw->mu);
    cw->resp = keep;
    cw->done = 1;
    pthread_cond_signal(&cw->cv);
    pthread_mutex_unlock(&cw->mu);
}

air_status_t
air_call(air_t *r, air_req_t *req, air_resp_t **out)
{
    if (out == NULL) {
        air__req_destroy(req);
        return AIR_E_INVAL;
    }
    *out = NULL;
    if (r == NULL || req == NULL) {
        air__req_destroy(req);
        return AIR_E_INVAL;
    }
    struct call_wait cw = {.resp = NULL, .done = 0};
    pthread_mutex_init(&cw.mu, NULL);
    pthread_cond_init(&cw.cv, NULL);
    req->done = call_done;
    req->done_ud = &cw;
    air_status_t st = air_submit(r, req, NULL);
    if (st == AIR_OK) {
        pthread_mutex_lock(&cw.mu);
        while (!cw.done)
            pthread_cond_wait(&cw.cv, &cw.mu);
        pthread_mutex_unlock(&cw.mu);
        *out = cw.resp;
        if (cw.resp == NULL)
            st = AIR_E_NOMEM;
    }
    pthread_cond_destroy(&cw.cv);
    pthread_mutex_destroy(&cw.mu);
    return st;
}

/* ------------------------------------------------------------ responses */

air_status_t
air_resp_status(const air_resp_t *p)
{
    return p ? p->status : AIR_E_INVAL;
}

air_errclass_t
air_resp_error_class(const air_resp_t *p)
{
    return p ? p->cls : AIR_ERR_NONE;
}

const char *
air_resp_error_message(const air_resp_t *p)
{
    return p && p->message ? p->message : "";
}

const char *
air_resp_error_code(const air_resp_t *p)
{
    return p ? p->code : NULL;
}

int
air_resp_http_status(const air_resp_t *p)
{
    return p ? p->http_status : 0;
}

int64_t
air_resp_retry_after_ms(const air_resp_t *p)
{
    return p ? p->retry_after_ms : -1;
}

const char *
air_resp_body(const air_resp_t *p, size_t *len)
{
    if (len != NULL)
        *len = p && p->body ? p->body_len : 0;
    return p ? p->body : NULL;
}

const char *
air_resp_provider(const air_resp_t *p)
{
    return p ? p->provider : NULL;
}

const char *
air_resp_model(const air_resp_t *p)
{
    return p ? p->model : NULL;
}

uint32_t
air_resp_attempts(const air_resp_t *p)
{
    return p ? p->attempts : 0;
}

uint64_t
air_resp_id(const air_resp_t *p)
{
    return p ? p->id : 0;
}

uint64_t
air_resp_latency_us(const air_resp_t *p)
{
    return p ? p->latency_us : 0;
}

uint64_t
air_resp_ttft_us(const air_resp_t *p)
{
    return p ? p->ttft_us : 0;
}

uint64_t
air_resp_prompt_tokens(const air_resp_t *p)
{
    return p ? p->usage.prompt : 0;
}

uint64_t
air_resp_completion_tokens(const air_resp_t *p)
{
    return p ? p->usage.completion : 0;
}

uint64_t
air_resp_cached_tokens(const air_resp_t *p)
{
    return p ? p->usage.cached : 0;
}

int
air_resp_streamed(const air_resp_t *p)
{
    return p ? p->streamed : 0;
}

int
air_resp_chunks_delivered(const air_resp_t *p)
{
    return p ? p->chunks_delivered : 0;
}

uint64_t
air_resp_upstream_us(const air_resp_t *p)
{
    return p ? p->upstream_us : 0;
}

double
air_resp_cost_usd(const air_resp_t *p)
{
    return p ? p->cost_usd : 0;
}

const char *
air_resp_route(const air_resp_t *p)
{
    return p ? p->route : NULL;
}

air_resp_t *
air_resp_dup(const air_resp_t *p)
{
    if (p == NULL)
        return NULL;
    air_resp_t *m = (air_resp_t *)p; /* the count is the only mutable field */
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
    return m;
}

void
air_resp_free(air_resp_t *p)
{
    if (p == NULL)
        return;
    if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) != 1)
        return;
    air__free(p->body);
    air__free(p->message);
    air__free(p->code);
    air__free(p->provider);
    air__free(p->model);
    air__free(p->route);
    air__free(p);
}

