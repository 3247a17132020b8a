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
 *
 * Router options (pinned provider, deadline, client key, tags) live on the
 * request, never in the body or view an adapter encodes, so none of them
 * goes upstream. Tags move from the request to its response in
 * air__deliver, so every completion, errors included, carries them.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
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
    int rerr = air__buf_read(&b, f) != 0 && !b.oom;
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

/*
 * Request validation. One pass over the parsed body: every top-level member
 * is looked up once in a small table and checked for the type the OpenAI
 * Chat Completions schema gives it (wire-formats.md section 1.2); each
 * message is checked in one pass over its members (section 1.3). Members
 * that are not in the table pass through untouched, since vendors add
 * fields. JSON null counts as absent for the optional fields, as the OpenAI
 * API treats it. Nothing is allocated unless a check fails; then err gets
 * "<JSON path>: <what was expected>", and the gateway answers 400 with the
 * path as `param`.
 */

static air_status_t bad(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static air_status_t
bad(char *err, size_t errlen, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return AIR_E_BADREQ;
}

/* A JSON number with no fractional part, within int64. */
static int
is_int(const cJSON *v, double min)
{
    if (!cJSON_IsNumber(v))
        return 0;
    double d = v->valuedouble;
    return d >= min && d <= 9.2e18 && d >= -9.2e18 && (double)(long long)d == d;
}

static int
is_num(const cJSON *v)
{
    return cJSON_IsNumber(v) && isfinite(v->valuedouble);
}

static int
key_is(const cJSON *it, const char *name)
{
    return it->string != NULL && it->string[0] == name[0] && strcmp(it->string, name) == 0;
}

/* messages[i].content when it is an array: every part is an object with a
 * string "type"; a text part has a string "text". */
static air_status_t
check_parts(const cJSON *c, int i, char *err, size_t errlen)
{
    int k = 0;
    const cJSON *p;
    cJSON_ArrayForEach(p, c)
    {
        if (!cJSON_IsObject(p))
            return bad(err, errlen,
                       "messages[%d].content[%d]: expected a content part object "
                       "({\"type\":\"text\",\"text\":\"...\"}, ...)",
                       i, k);
        const cJSON *type = NULL, *text = NULL;
        const cJSON *m;
        cJSON_ArrayForEach(m, p)
        {
            if (key_is(m, "type"))
                type = type ? type : m;
            else if (key_is(m, "text"))
                text = text ? text : m;
        }
        if (type == NULL)
            return bad(err, errlen, "messages[%d].content[%d].type: required field is missing", i,
                       k);
        if (!cJSON_IsString(type))
            return bad(err, errlen, "messages[%d].content[%d].type: expected a string", i, k);
        if (strcmp(type->valuestring, "text") == 0 && !cJSON_IsString(text))
            return bad(err, errlen, "messages[%d].content[%d].text: expected a string", i, k);
        k++;
    }
    return AIR_OK;
}

/* messages[i].tool_calls: [{"id","type":"function","function":{"name","arguments"}}]. */
static air_status_t
check_tool_calls(const cJSON *tc, int i, char *err, size_t errlen)
{
    if (!cJSON_IsArray(tc))
        return bad(err, errlen, "messages[%d].tool_calls: expected an array", i);
    int k = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, tc)
    {
        if (!cJSON_IsObject(c))
            return bad(err, errlen, "messages[%d].tool_calls[%d]: expected an object", i, k);
        const cJSON *id = NULL, *type = NULL, *fn = NULL;
        const cJSON *m;
        cJSON_ArrayForEach(m, c)
        {
            if (key_is(m, "id"))
                id = id ? id : m;
            else if (key_is(m, "type"))
                type = type ? type : m;
            else if (key_is(m, "function"))
                fn = fn ? fn : m;
        }
        if (!cJSON_IsString(id))
            return bad(err, errlen, "messages[%d].tool_calls[%d].id: expected a string", i, k);
        if (type != NULL && !cJSON_IsString(type))
            return bad(err, errlen, "messages[%d].tool_calls[%d].type: expected a string", i, k);
        if (type == NULL || strcmp(type->valuestring, "function") == 0) {
            if (!cJSON_IsObject(fn))
                return bad(err, errlen,
                           "messages[%d].tool_calls[%d].function: expected an object with "
                           "\"name\" and \"arguments\"",
                           i, k);
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
            if (!cJSON_IsString(name))
                return bad(err, errlen,
                           "messages[%d].tool_calls[%d].function.name: expected a string", i, k);
            const cJSON *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
            if (!cJSON_IsString(args))
                return bad(err, errlen,
                           "messages[%d].tool_calls[%d].function.arguments: expected a string "
                           "(the arguments as JSON text)",
                           i, k);
        }
        k++;
    }
    return AIR_OK;
}

static air_status_t
check_message(const cJSON *msg, int i, char *err, size_t errlen)
{
    if (!cJSON_IsObject(msg))
        return bad(err, errlen, "messages[%d]: expected an object", i);
    const cJSON *role = NULL, *content = NULL, *tool_calls = NULL, *function_call = NULL;
    const cJSON *tool_call_id = NULL;
    const cJSON *m;
    cJSON_ArrayForEach(m, msg)
    {
        if (m->string == NULL)
            continue;
        switch (m->string[0]) {
        case 'r':
            if (key_is(m, "role"))
                role = role ? role : m;
            else if (key_is(m, "refusal") && !cJSON_IsNull(m) && !cJSON_IsString(m))
                return bad(err, errlen, "messages[%d].refusal: expected a string", i);
            break;
        case 'c':
            if (key_is(m, "content"))
                content = content ? content : m;
            break;
        case 'n':
            if (key_is(m, "name") && !cJSON_IsString(m))
                return bad(err, errlen, "messages[%d].name: expected a string", i);
            break;
        case 't':
            if (key_is(m, "tool_calls"))
                tool_calls = tool_calls ? tool_calls : m;
            else if (key_is(m, "tool_call_id"))
                tool_call_id = tool_call_id ? tool_call_id : m;
            break;
        case 'f':
            if (key_is(m, "function_call"))
                function_call = function_call ? function_call : m;
            break;
        default:
            break;
        }
    }
    if (!cJSON_IsString(role))
        return bad(err, errlen, "messages[%d].role: expected a string", i);
    const char *r = role->valuestring;
    int assistant = strcmp(r, "assistant") == 0;
    int tool = strcmp(r, "tool") == 0;
    /* Roles whose content is required; others (assistant, the legacy
     * "function", roles a vendor adds) may omit it. */
    int needs_content =
        tool || strcmp(r, "user") == 0 || strcmp(r, "system") == 0 || strcmp(r, "developer") == 0;
    if (tool_calls != NULL && !cJSON_IsNull(tool_calls)) {
        air_status_t st = check_tool_calls(tool_calls, i, err, errlen);
        if (st != AIR_OK)
            return st;
    } else {
        tool_calls = NULL;
    }
    if (function_call != NULL && !cJSON_IsNull(function_call)) {
        if (!cJSON_IsObject(function_call))
            return bad(err, errlen, "messages[%d].function_call: expected an object", i);
    } else {
        function_call = NULL;
    }
    if (content == NULL || cJSON_IsNull(content)) {
        if (needs_content && content == NULL)
            return bad(err, errlen, "messages[%d].content: required field is missing", i);
        if (needs_content || (assistant && tool_calls == NULL && function_call == NULL))
            return bad(err, errlen,
                       "messages[%d].content: null is allowed only in an assistant message "
                       "with tool_calls",
                       i);
    } else if (cJSON_IsArray(content)) {
        air_status_t st = check_parts(content, i, err, errlen);
        if (st != AIR_OK)
            return st;
    } else if (!cJSON_IsString(content)) {
        return bad(err, errlen,
                   "messages[%d].content: expected a string or an array of content parts", i);
    }
    if (tool) {
        if (tool_call_id == NULL)
            return bad(err, errlen,
                       "messages[%d].tool_call_id: required field is missing (tool messages "
                       "answer a tool call by its id)",
                       i);
        if (!cJSON_IsString(tool_call_id))
            return bad(err, errlen, "messages[%d].tool_call_id: expected a string", i);
    } else if (tool_call_id != NULL && !cJSON_IsNull(tool_call_id) &&
               !cJSON_IsString(tool_call_id)) {
        return bad(err, errlen, "messages[%d].tool_call_id: expected a string", i);
    }
    return AIR_OK;
}

static air_status_t
check_messages(const cJSON *msgs, char *err, size_t errlen)
{
    if (!cJSON_IsArray(msgs) || msgs->child == NULL)
        return bad(err, errlen, "messages: expected a non-empty array");
    int i = 0;
    const cJSON *msg;
    cJSON_ArrayForEach(msg, msgs)
    {
        air_status_t st = check_message(msg, i, err, errlen);
        if (st != AIR_OK)
            return st;
        i++;
    }
    return AIR_OK;
}

/* tools: [{"type":"function","function":{"name",...}}]. Other tool types
 * (OpenAI's "custom", a vendor's built-in tools) need only their "type";
 * adapters that cannot express them refuse them. */
static air_status_t
check_tools(const cJSON *tools, char *err, size_t errlen)
{
    if (!cJSON_IsArray(tools))
        return bad(err, errlen, "tools: expected an array of tool objects");
    int k = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, tools)
    {
        if (!cJSON_IsObject(t))
            return bad(err, errlen,
                       "tools[%d]: expected an object "
                       "({\"type\":\"function\",\"function\":{\"name\":...}})",
                       k);
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(t, "type");
        if (!cJSON_IsString(type))
            return bad(err, errlen, "tools[%d].type: expected a string (\"function\")", k);
        if (strcmp(type->valuestring, "function") == 0) {
            const cJSON *fn = cJSON_GetObjectItemCaseSensitive(t, "function");
            if (!cJSON_IsObject(fn))
                return bad(err, errlen, "tools[%d].function: expected an object", k);
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
            if (!cJSON_IsString(name) || name->valuestring[0] == '\0')
                return bad(err, errlen, "tools[%d].function.name: expected a non-empty string", k);
            const cJSON *params = cJSON_GetObjectItemCaseSensitive(fn, "parameters");
            if (params != NULL && !cJSON_IsNull(params) && !cJSON_IsObject(params))
                return bad(err, errlen,
                           "tools[%d].function.parameters: expected an object (a JSON Schema)", k);
        }
        k++;
    }
    return AIR_OK;
}

static air_status_t
check_stop(const cJSON *v, char *err, size_t errlen)
{
    if (cJSON_IsString(v))
        return AIR_OK;
    if (!cJSON_IsArray(v))
        return bad(err, errlen, "stop: expected a string or an array of strings");
    int k = 0;
    const cJSON *s;
    cJSON_ArrayForEach(s, v)
    {
        if (!cJSON_IsString(s))
            return bad(err, errlen, "stop[%d]: expected a string", k);
        k++;
    }
    return AIR_OK;
}

static air_status_t
check_response_format(const cJSON *v, char *err, size_t errlen)
{
    if (!cJSON_IsObject(v))
        return bad(err, errlen,
                   "response_format: expected an object such as {\"type\":\"json_object\"}");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(v, "type");
    if (!cJSON_IsString(type))
        return bad(err, errlen,
                   "response_format.type: expected a string (\"text\", \"json_object\" or "
                   "\"json_schema\")");
    if (strcmp(type->valuestring, "json_schema") == 0) {
        const cJSON *js = cJSON_GetObjectItemCaseSensitive(v, "json_schema");
        if (!cJSON_IsObject(js))
            return bad(err, errlen, "response_format.json_schema: expected an object");
        if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(js, "name")))
            return bad(err, errlen, "response_format.json_schema.name: expected a string");
    }
    return AIR_OK;
}

static air_status_t
check_logit_bias(const cJSON *v, char *err, size_t errlen)
{
    if (!cJSON_IsObject(v))
        return bad(err, errlen, "logit_bias: expected an object mapping token ids to numbers");
    const cJSON *b;
    cJSON_ArrayForEach(b, v)
    {
        if (!is_num(b))
            return bad(err, errlen, "logit_bias: expected numbers as values (token %.40s)",
                       b->string ? b->string : "?");
    }
    return AIR_OK;
}

static air_status_t
check_stream_options(struct air_req *q, const cJSON *so, int first, char *err, size_t errlen)
{
    if (!cJSON_IsObject(so))
        return bad(err, errlen, "stream_options: expected an object");
    const cJSON *iu = cJSON_GetObjectItemCaseSensitive(so, "include_usage");
    if (iu != NULL && !cJSON_IsNull(iu) && !cJSON_IsBool(iu))
        return bad(err, errlen, "stream_options.include_usage: expected a boolean");
    if (first)
        q->include_usage = cJSON_IsTrue(iu);
    return AIR_OK;
}

/* What each known top-level member must be. */
enum {
    F_MODEL,
    F_MESSAGES,
    F_STREAM,
    F_STREAM_OPTIONS,
    F_NUMBER,  /* any finite number */
    F_COUNT,   /* integer >= 0 */
    F_COUNT1,  /* integer >= 1 */
    F_INTEGER, /* any integer */
    F_BOOL,
    F_STRING,
    F_OBJECT,
    F_STOP,
    F_TOOLS,
    F_TOOL_CHOICE,
    F_RESPONSE_FORMAT,
    F_LOGIT_BIAS,
};

static const struct {
    const char *name;
    int kind;
} req_fields[] = {
    {"model", F_MODEL},
    {"messages", F_MESSAGES},
    {"stream", F_STREAM},
    {"stream_options", F_STREAM_OPTIONS},
    {"temperature", F_NUMBER},
    {"top_p", F_NUMBER},
    {"presence_penalty", F_NUMBER},
    {"frequency_penalty", F_NUMBER},
    {"max_tokens", F_COUNT},
    {"max_completion_tokens", F_COUNT},
    {"top_logprobs", F_COUNT},
    {"n", F_COUNT1},
    {"seed", F_INTEGER},
    {"logprobs", F_BOOL},
    {"parallel_tool_calls", F_BOOL},
    {"user", F_STRING},
    {"metadata", F_OBJECT},
    {"stop", F_STOP},
    {"tools", F_TOOLS},
    {"tool_choice", F_TOOL_CHOICE},
    {"response_format", F_RESPONSE_FORMAT},
    {"logit_bias", F_LOGIT_BIAS},
};

/* Check member v of the body, of the given kind. first: this is the first
 * member of that name (a duplicate is checked too, but, as for a lookup by
 * name, the first one is the value that counts). */
static air_status_t
check_field(struct air_req *q, const cJSON *v, int kind, int first, char *err, size_t errlen)
{
    const char *f = v->string;
    if (kind == F_MODEL) {
        if (!cJSON_IsString(v) || v->valuestring[0] == '\0')
            return bad(err, errlen, "model: expected a non-empty string");
        if (first)
            q->model = v->valuestring;
        return AIR_OK;
    }
    if (kind == F_MESSAGES)
        return check_messages(v, err, errlen);
    if (cJSON_IsNull(v))
        return AIR_OK; /* an optional field left unset */
    switch (kind) {
    case F_STREAM:
        if (!cJSON_IsBool(v))
            return bad(err, errlen, "stream: expected a boolean");
        if (first)
            q->stream = cJSON_IsTrue(v);
        return AIR_OK;
    case F_STREAM_OPTIONS:
        return check_stream_options(q, v, first, err, errlen);
    case F_NUMBER:
        return is_num(v) ? AIR_OK : bad(err, errlen, "%s: expected a number", f);
    case F_COUNT:
        return is_int(v, 0) ? AIR_OK : bad(err, errlen, "%s: expected an integer >= 0", f);
    case F_COUNT1:
        return is_int(v, 1) ? AIR_OK : bad(err, errlen, "%s: expected an integer >= 1", f);
    case F_INTEGER:
        return is_int(v, -9.2e18) ? AIR_OK : bad(err, errlen, "%s: expected an integer", f);
    case F_BOOL:
        return cJSON_IsBool(v) ? AIR_OK : bad(err, errlen, "%s: expected a boolean", f);
    case F_STRING:
        return cJSON_IsString(v) ? AIR_OK : bad(err, errlen, "%s: expected a string", f);
    case F_OBJECT:
        return cJSON_IsObject(v) ? AIR_OK : bad(err, errlen, "%s: expected an object", f);
    case F_STOP:
        return check_stop(v, err, errlen);
    case F_TOOLS:
        return check_tools(v, err, errlen);
    case F_TOOL_CHOICE:
        if (cJSON_IsString(v))
            return AIR_OK;
        if (!cJSON_IsObject(v))
            return bad(err, errlen,
                       "tool_choice: expected a string (\"none\", \"auto\", \"required\") or an "
                       "object");
        if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(v, "type")))
            return bad(err, errlen, "tool_choice.type: expected a string (\"function\")");
        return AIR_OK;
    case F_RESPONSE_FORMAT:
        return check_response_format(v, err, errlen);
    case F_LOGIT_BIAS:
        return check_logit_bias(v, err, errlen);
    default:
        return AIR_OK;
    }
}

static air_status_t
check_body(struct air_req *q, char *err, size_t errlen)
{
    if (!cJSON_IsObject(q->body))
        return bad(err, errlen, "request body must be a JSON object");
    _Static_assert(sizeof req_fields / sizeof req_fields[0] <= 32, "seen is 32 bits");
    uint32_t seen = 0; /* bit k: req_fields[k] met */
    int have_messages = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, q->body)
    {
        if (it->string == NULL)
            continue;
        for (size_t k = 0; k < sizeof req_fields / sizeof req_fields[0]; k++) {
            if (!key_is(it, req_fields[k].name))
                continue;
            air_status_t st =
                check_field(q, it, req_fields[k].kind, !(seen & (1u << k)), err, errlen);
            if (st != AIR_OK)
                return st;
            seen |= 1u << k;
            have_messages |= req_fields[k].kind == F_MESSAGES;
            break;
        }
    }
    if (q->model == NULL)
        return bad(err, errlen, "model: required field is missing");
    if (!have_messages)
        return bad(err, errlen, "messages: required field is missing");
    return AIR_OK;
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
        size_t off =
            (end != NULL && end >= q->raw && end <= q->raw + len) ? (size_t)(end - q->raw) : 0;
        unsigned line, col;
        line_col(q->raw, off, &line, &col);
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "invalid JSON at line %u, column %u (byte %zu)", line, col, off);
        st = AIR_E_BADREQ;
        goto fail;
    }
    st = check_body(q, err, errlen);
    if (st != AIR_OK)
        goto fail;
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
    struct air__worker *self = air__worker_self();
    if (self != NULL && self->r == r) {
        /* Submitted on a worker (its host hook or a callback): it stays on
         * this thread, which takes it on its next turn; nothing to wake. */
        if (self->nlocal >= r->queue_capacity) {
            slot_push(r, sv);
            air__req_destroy(req);
            return AIR_E_BUSY;
        }
        req->lnext = NULL;
        if (self->local_tail != NULL)
            self->local_tail->lnext = req;
        else
            self->local_head = req;
        self->local_tail = req;
        self->nlocal++;
        if (id != NULL)
            *id = rid;
        return AIR_OK;
    }
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

uint32_t
air_workers(air_t *r)
{
    return r != NULL ? r->nworkers : 0;
}

static void
nap_us(long us)
{
    struct timespec ts = {.tv_sec = 0, .tv_nsec = us * 1000L};
    nanosleep(&ts, NULL);
}

air_status_t
air_worker_attach(air_t *r, uint32_t worker, int fd, air_loop_fn fn, void *ud)
{
    if (r == NULL || worker >= r->nworkers || fd < 0 || fn == NULL || air__worker_self() != NULL)
        return AIR_E_INVAL;
    if (atomic_load_explicit(&r->stopping, memory_order_acquire))
        return AIR_E_SHUTDOWN;
    struct air__worker *w = &r->workers[worker];
    int none = AIR__HOOK_NONE;
    /* Claim first: only the claimant writes the pending fields, and the
     * worker reads them only after ATTACH is published. */
    if (!atomic_compare_exchange_strong_explicit(&w->hook_state, &none, AIR__HOOK_CLAIMED,
                                                 memory_order_acquire, memory_order_relaxed))
        return AIR_E_BUSY;
    w->hook_fd_p = fd;
    w->hook_fn_p = fn;
    w->hook_ud_p = ud;
    atomic_store_explicit(&w->hook_state, AIR__HOOK_ATTACH, memory_order_release);
    air__worker_wake(w);
    while (atomic_load_explicit(&w->hook_state, memory_order_acquire) == AIR__HOOK_ATTACH &&
           !atomic_load_explicit(&w->exited, memory_order_acquire))
        nap_us(100);
    return AIR_OK;
}

air_status_t
air_worker_detach(air_t *r, uint32_t worker)
{
    if (r == NULL || worker >= r->nworkers || air__worker_self() != NULL)
        return AIR_E_INVAL;
    struct air__worker *w = &r->workers[worker];
    int running = AIR__HOOK_RUNNING;
    if (!atomic_compare_exchange_strong_explicit(&w->hook_state, &running, AIR__HOOK_DETACH,
                                                 memory_order_acq_rel, memory_order_acquire))
        return AIR_E_INVAL;
    air__worker_wake(w);
    /* A worker that has left its loop (air_free) no longer runs it. */
    while (atomic_load_explicit(&w->hook_state, memory_order_acquire) == AIR__HOOK_DETACH &&
           !atomic_load_explicit(&w->exited, memory_order_acquire))
        nap_us(100);
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
    if (resp != NULL) {
        /* Tags travel on to the response: one owner at a time, no copy. */
        for (uint32_t i = 0; i < q->ntags; i++) {
            resp->tags[i] = q->tags[i];
            q->tags[i] = NULL;
        }
        resp->ntags = q->ntags;
        q->ntags = 0;
    }
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
    } while (!atomic_compare_exchange_weak_explicit(&r->cq_head, &head, resp, memory_order_release,
                                                    memory_order_relaxed));
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

uint32_t
air_resp_tag_count(const air_resp_t *p)
{
    return p ? p->ntags : 0;
}

const char *
air_resp_tag(const air_resp_t *p, uint32_t i)
{
    return p != NULL && i < p->ntags ? p->tags[i] : NULL;
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
    for (uint32_t i = 0; i < p->ntags; i++)
        air__free(p->tags[i]);
    air__free(p);
}
