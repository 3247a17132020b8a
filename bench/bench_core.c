/*
 * bench_core.c - microbenchmarks of the data-plane pieces below the policy:
 * the ck_ring ingress (uncontended, and with 1..N producer and consumer
 * threads), the SSE parser in MB/s, each adapter's request translation
 * (OpenAI passthrough vs. parse-and-rebuild; Anthropic, Gemini, Azure and
 * every OpenAI-compatible preset translating the typical ~2 KB request of
 * the targets: system prompt, 6 turns, 2 tools), response decoding, and
 * stream translation in MB/s of vendor SSE (Azure's with its content filter
 * annotations; OpenAI's for the presets), the SSE parser included. Every
 * kind gets the same request, reply and stream, so the rows compare the
 * adapters' own costs: a preset whose rules touch the request (max_tokens
 * renames, allow-lists, per-model stripping) pays for a rebuild, and one
 * with reply fixes (finish reasons, reasoning, usage) for a parse per chunk.
 *
 * Options (shared with the other benches): --filter=SUBSTR, --runs=N.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "bench.h"
#include "buf.h"
#include "builtin.h"
#include "common.h"
#include "ring.h"
#include "sse.h"

static const char *filter = NULL;
static int runs = 5;

static int
want(const char *name)
{
    return filter == NULL || strstr(name, filter) != NULL;
}

/* Median over `runs` of ns per op for fn(iters). */
typedef void (*loop_fn)(void *ud, uint64_t iters);

static double
median_ns(loop_fn fn, void *ud, uint64_t iters, double *p50, double *p99)
{
    double v[32];
    int n = runs > 32 ? 32 : runs;
    fn(ud, iters / 10 + 1); /* warm-up */
    for (int r = 0; r < n; r++) {
        uint64_t t0 = air__bench_ns();
        fn(ud, iters);
        v[r] = (double)(air__bench_ns() - t0) / (double)iters;
    }
    double med = air__bench_quantile(v, (size_t)n, 0.5);
    *p50 = med;
    *p99 = air__bench_quantile(v, (size_t)n, 0.99);
    return med;
}

/* ---------------------------------------------------------------- ring */

struct ringb {
    ck_ring_t ring;
    ck_ring_buffer_t *buf;
};

static void
ring_loop(void *ud, uint64_t iters)
{
    struct ringb *b = ud;
    void *v;
    for (uint64_t i = 0; i < iters; i++) {
        if (!ck_ring_enqueue_mpmc(&b->ring, b->buf, (void *)(uintptr_t)(i + 1)))
            abort();
        if (!ck_ring_dequeue_mpmc(&b->ring, b->buf, &v))
            abort();
    }
}

struct mt_ring {
    struct ringb rb;
    uint64_t per_producer;
    _Atomic uint64_t consumed;
    uint64_t total;
    _Atomic int go;
    _Atomic int stop; /* time limit reached */
};

static void *
producer(void *arg)
{
    struct mt_ring *m = arg;
    while (!atomic_load(&m->go))
        ;
    for (uint64_t i = 0; i < m->per_producer && !atomic_load(&m->stop); i++)
        while (!ck_ring_enqueue_mpmc(&m->rb.ring, m->rb.buf, (void *)(uintptr_t)(i + 1))) {
            if (atomic_load_explicit(&m->stop, memory_order_relaxed))
                return NULL;
            sched_yield();
        }
    return NULL;
}

static void *
consumer(void *arg)
{
    struct mt_ring *m = arg;
    void *v;
    while (!atomic_load(&m->go))
        ;
    while (atomic_load_explicit(&m->consumed, memory_order_relaxed) < m->total &&
           !atomic_load_explicit(&m->stop, memory_order_relaxed)) {
        if (ck_ring_dequeue_mpmc(&m->rb.ring, m->rb.buf, &v))
            atomic_fetch_add_explicit(&m->consumed, 1, memory_order_relaxed);
        else
            sched_yield();
    }
    return NULL;
}

static void
bench_ring(void)
{
    char name[64];
    struct ringb b;
    b.buf = air__calloc(1024, sizeof(ck_ring_buffer_t));
    ck_ring_init(&b.ring, 1024);
    double p50, p99;
    if (want("ring/enq+deq")) {
        uint64_t it = 2000000;
        double ns = median_ns(ring_loop, &b, it, &p50, &p99);
        air__bench_line("ring/enq+deq uncontended", 1, it, ns, p50, p99);
    }
    air__free(b.buf);
    static const int shapes[][2] = {{1, 1}, {2, 2}, {4, 4}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int np = shapes[s][0], nc = shapes[s][1];
        snprintf(name, sizeof name, "ring/mpmc %dp x %dc", np, nc);
        if (!want(name))
            continue;
        struct mt_ring m;
        memset(&m, 0, sizeof m);
        m.rb.buf = air__calloc(4096, sizeof(ck_ring_buffer_t));
        ck_ring_init(&m.rb.ring, 4096);
        m.per_producer = 200000;
        m.total = m.per_producer * (uint64_t)np;
        pthread_t th[16];
        for (int i = 0; i < np; i++)
            pthread_create(&th[i], NULL, producer, &m);
        for (int i = 0; i < nc; i++)
            pthread_create(&th[np + i], NULL, consumer, &m);
        uint64_t t0 = air__bench_ns();
        atomic_store(&m.go, 1);
        /* Bounded in time as well as in count: oversubscribed cores make a
         * lock-free ring crawl when a claimer is preempted. */
        while (atomic_load(&m.consumed) < m.total && air__bench_ns() - t0 < 3000000000ull)
            usleep(1000);
        atomic_store(&m.stop, 1);
        for (int i = 0; i < np + nc; i++)
            pthread_join(th[i], NULL);
        uint64_t done = atomic_load(&m.consumed);
        double ns = done ? (double)(air__bench_ns() - t0) / (double)done : 0;
        air__bench_line(name, np + nc, done, ns, ns, ns);
        air__free(m.rb.buf);
    }
}

/* ----------------------------------------------------------------- SSE */

struct sseb {
    const char *data;
    size_t len;
    size_t piece;
    uint64_t events;
};

static int
count_event(void *ud, const char *e, size_t el, const char *d, size_t dl)
{
    (void)e;
    (void)el;
    (void)d;
    (void)dl;
    ((struct sseb *)ud)->events++;
    return 0;
}

static void
sse_loop(void *ud, uint64_t iters)
{
    struct sseb *b = ud;
    struct air__sse p;
    air__sse_init(&p, 0);
    for (uint64_t i = 0; i < iters; i++) {
        air__sse_reset(&p); /* [DONE] ends a stream: start a fresh one */
        for (size_t off = 0; off < b->len; off += b->piece) {
            size_t n = b->len - off < b->piece ? b->len - off : b->piece;
            if (air__sse_feed(&p, b->data + off, n, count_event, b) != AIR_OK)
                abort();
        }
    }
    air__sse_free(&p);
}

static char *
openai_stream(size_t chunks, size_t *len)
{
    air_buf_t b = AIR_BUF_INIT;
    air__buf_puts(&b,
                  "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\","
                  "\"created\":1760000000,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,"
                  "\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}"
                  "\n\n");
    for (size_t i = 0; i < chunks; i++)
        air__buf_printf(&b,
                        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\","
                        "\"created\":1760000000,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,"
                        "\"delta\":{\"content\":\"token%zu \"},\"finish_reason\":null}]}\n\n",
                        i);
    air__buf_puts(&b, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\","
                      "\"created\":1760000000,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,"
                      "\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n");
    return air__buf_steal(&b, len);
}

static void
bench_sse(void)
{
    size_t len;
    char *s = openai_stream(200, &len);
    static const size_t pieces[] = {64, 1460, 16384};
    for (size_t k = 0; k < 3; k++) {
        char name[64];
        snprintf(name, sizeof name, "sse/parse %zuB reads", pieces[k]);
        if (!want(name))
            continue;
        struct sseb b = {s, len, pieces[k], 0};
        double p50, p99;
        uint64_t it = 2000;
        double ns = median_ns(sse_loop, &b, it, &p50, &p99);
        double mbps = (double)len / ns * 1e3; /* bytes/ns -> MB/s */
        char nm[80];
        snprintf(nm, sizeof nm, "%s (%.0f MB/s)", name, mbps);
        air__bench_line(nm, 1, it, ns, p50, p99);
    }
    air__free(s);
}

/* ------------------------------------------------------------- adapters */

/* The typical request of the performance targets (issues 3 and 6): about
 * 2 KB, a system prompt, 6 turns (user, assistant, user, an assistant tool
 * call, its tool result, user) and 2 tools. */
static char *
request_2k(int stream)
{
    air_buf_t b = AIR_BUF_INIT;
    air__buf_puts(&b, "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"system\",\"content\":"
                      "\"You are a careful assistant for a network operations team. Answer "
                      "briefly, cite the tool results you used, and ask before guessing.\"}");
    static const char *const text[] = {
        "Our router in Oslo shows higher latency since this morning. Which upstream is slow, "
        "and is it the provider or our own network? Please check the recent numbers first.",
        "I can look at the per-provider latency. The p50 went from 180 ms to 420 ms on one "
        "deployment while the others stayed flat, which points at that provider rather than "
        "at your network. Shall I check the weather-related outage reports for the region?",
        "Yes, please check the conditions in Oslo and tell me whether a failover to the "
        "Stockholm deployment would help with the latency we are seeing right now.",
    };
    for (int i = 0; i < 3; i++)
        air__buf_printf(&b, ",{\"role\":\"%s\",\"content\":\"%s\"}", i % 2 ? "assistant" : "user",
                        text[i]);
    air__buf_puts(&b,
                  ",{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":"
                  "\"call_7Hq2\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
                  "\"arguments\":\"{\\\"city\\\":\\\"Oslo\\\",\\\"unit\\\":\\\"celsius\\\"}\"}}]},"
                  "{\"role\":\"tool\",\"tool_call_id\":\"call_7Hq2\",\"content\":\"Oslo: "
                  "light snow, -3 C, wind 20 km/h from the north; no reported outages.\"},"
                  "{\"role\":\"user\",\"content\":\"Thanks. Then compare the two "
                  "deployments over the last hour and recommend one, with the numbers.\"}");
    air__buf_puts(&b, "],\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
                      "\"description\":\"Current weather for a city\",\"parameters\":{\"type\":"
                      "\"object\",\"properties\":{\"city\":{\"type\":\"string\",\"description\":"
                      "\"City name\"},\"unit\":{\"type\":\"string\",\"enum\":[\"celsius\","
                      "\"fahrenheit\"]}},\"required\":[\"city\"]}}},{\"type\":\"function\","
                      "\"function\":{\"name\":\"get_latency\",\"description\":\"Latency "
                      "percentiles of one deployment over a window\",\"parameters\":{\"type\":"
                      "\"object\",\"properties\":{\"deployment\":{\"type\":\"string\"},"
                      "\"window_minutes\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":1440}},"
                      "\"required\":[\"deployment\"]}}}],"
                      "\"temperature\":0.2,\"max_tokens\":512");
    if (stream)
        air__buf_puts(&b, ",\"stream\":true,\"stream_options\":{\"include_usage\":true}");
    air__buf_puts(&b, "}");
    return air__buf_steal(&b, NULL);
}

struct encb {
    const air_provider_ops_t *ops;
    void *state;
    air_req_view_t view;
};

static void
encode_loop(void *ud, uint64_t iters)
{
    struct encb *e = ud;
    for (uint64_t i = 0; i < iters; i++) {
        air_http_out_t out;
        air_fault_t f;
        memset(&out, 0, sizeof out);
        if (e->ops->encode(e->state, &e->view, &out, &f) != AIR_OK)
            abort();
        air__http_out_clear(&out);
    }
}

struct parse_encb {
    struct encb e;
    const char *raw;
    size_t len;
};

/* What a request costs end to end in the router before the wire: parse
 * the caller's body, then translate it. */
static void
parse_encode_loop(void *ud, uint64_t iters)
{
    struct parse_encb *p = ud;
    for (uint64_t i = 0; i < iters; i++) {
        cJSON *body = cJSON_ParseWithLength(p->raw, p->len);
        p->e.view.body = body;
        air_http_out_t out;
        air_fault_t f;
        memset(&out, 0, sizeof out);
        if (p->e.ops->encode(p->e.state, &p->e.view, &out, &f) != AIR_OK)
            abort();
        air__http_out_clear(&out);
        cJSON_Delete(body);
    }
}

static int
init_adapter(const char *kind, struct encb *e, const char *raw, const char *model)
{
    e->ops = air__provider_find(kind);
    if (e->ops == NULL)
        return -1;
    cJSON *cfgj = cJSON_CreateObject();
    cJSON_AddStringToObject(cfgj, "name", "b");
    cJSON_AddStringToObject(cfgj, "kind", kind);
    air_provider_cfg_t cfg = {.name = "b",
                              .kind = kind,
                              .base_url = strcmp(kind, "azure") == 0 ? "https://b.example" : NULL,
                              .api_key = "sk-bench",
                              .json = cfgj};
    char err[128];
    e->state = NULL;
    if (e->ops->init != NULL && e->ops->init(&cfg, &e->state, err, sizeof err) != AIR_OK) {
        cJSON_Delete(cfgj);
        return -1;
    }
    cJSON_Delete(cfgj);
    memset(&e->view, 0, sizeof e->view);
    e->view.raw = raw;
    e->view.raw_len = strlen(raw);
    e->view.body = cJSON_Parse(raw);
    e->view.model = model;
    e->view.now_unix = 1760000000;
    e->view.request_id = "air-bench";
    return 0;
}

static void
fini_adapter(struct encb *e)
{
    cJSON_Delete((cJSON *)e->view.body);
    if (e->ops->fini != NULL && e->state != NULL)
        e->ops->fini(e->state);
}

struct decb {
    struct encb e;
    air_http_in_t in;
};

static const char *
no_header(const void *h, const char *n)
{
    (void)h;
    (void)n;
    return NULL;
}

static void
decode_loop(void *ud, uint64_t iters)
{
    struct decb *d = ud;
    for (uint64_t i = 0; i < iters; i++) {
        air_decoded_t out;
        air_fault_t f;
        memset(&out, 0, sizeof out);
        if (d->e.ops->decode(d->e.state, &d->e.view, &d->in, &out, &f) != AIR_OK)
            abort();
        air__decoded_clear(&out);
    }
}

struct streamb {
    struct encb e;
    const char *data;
    size_t len;
    void *sstate;
};

static int
emit_nothing(void *ud, const char *j, size_t l, unsigned f)
{
    (void)ud;
    (void)j;
    (void)l;
    (void)f;
    return 0;
}

static int
to_adapter(void *ud, const char *e, size_t el, const char *d, size_t dl)
{
    air_stream_ctx_t *sc = ud;
    const struct streamb *sb = sc->emit_ud;
    air_stream_rc_t rc = sb->e.ops->stream_event(sb->e.state, sc, e, el, d, dl);
    return rc != AIR_STREAM_MORE;
}

static void
stream_loop(void *ud, uint64_t iters)
{
    struct streamb *sb = ud;
    struct air__sse p;
    air__sse_init(&p, 0);
    for (uint64_t i = 0; i < iters; i++) {
        memset(sb->sstate, 0, sb->e.ops->stream_state_size);
        air_stream_ctx_t sc;
        memset(&sc, 0, sizeof sc);
        sc.state = sb->sstate;
        sc.req = &sb->e.view;
        sc.emit = emit_nothing;
        sc.emit_ud = sb;
        air__sse_reset(&p);
        air_status_t st = AIR_OK;
        for (size_t off = 0; off < sb->len && st == AIR_OK; off += 1460) {
            size_t n = sb->len - off < 1460 ? sb->len - off : 1460;
            st = air__sse_feed(&p, sb->data + off, n, to_adapter, &sc);
        }
        /* Streams that end at EOF (Gemini) finish in stream_end, as in core. */
        if (st == AIR_OK && sb->e.ops->stream_end != NULL)
            (void)sb->e.ops->stream_end(sb->e.state, &sc);
    }
    air__sse_free(&p);
}

static char *
anthropic_stream(size_t chunks, size_t *len)
{
    air_buf_t b = AIR_BUF_INIT;
    air__buf_puts(&b, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":"
                      "\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":"
                      "\"claude-sonnet-4\",\"content\":[],\"stop_reason\":null,\"usage\":{"
                      "\"input_tokens\":25,\"output_tokens\":1}}}\n\n"
                      "event: content_block_start\ndata: {\"type\":\"content_block_start\","
                      "\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
    for (size_t i = 0; i < chunks; i++)
        air__buf_printf(&b,
                        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\","
                        "\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"token%zu \"}}"
                        "\n\n",
                        i);
    air__buf_puts(&b, "event: content_block_stop\ndata: {\"type\":\"content_block_stop\","
                      "\"index\":0}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\","
                      "\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":200}}"
                      "\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    return air__buf_steal(&b, len);
}

/* An Azure OpenAI stream as Azure sends it: the prompt annotation first (no
 * choices, empty envelope), then chunks whose choices carry content filter
 * results next to the delta. */
static char *
azure_stream(size_t chunks, size_t *len)
{
    static const char cfr[] = "\"content_filter_results\":{\"hate\":{\"filtered\":false,"
                              "\"severity\":\"safe\"},\"self_harm\":{\"filtered\":false,"
                              "\"severity\":\"safe\"},\"sexual\":{\"filtered\":false,"
                              "\"severity\":\"safe\"},\"violence\":{\"filtered\":false,"
                              "\"severity\":\"safe\"}}";
    static const char env[] = "\"created\":1760000000,\"id\":\"chatcmpl-AZ1\",\"model\":"
                              "\"gpt-4o-2024-08-06\",\"object\":\"chat.completion.chunk\","
                              "\"system_fingerprint\":\"fp_1\"";
    air_buf_t b = AIR_BUF_INIT;
    air__buf_printf(&b,
                    "data: {\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":"
                    "\"\",\"prompt_filter_results\":[{\"prompt_index\":0,%s}]}\n\n",
                    cfr);
    air__buf_printf(&b,
                    "data: {\"choices\":[{\"delta\":{\"content\":\"\",\"role\":\"assistant\"},"
                    "\"finish_reason\":null,\"index\":0,\"logprobs\":null}],%s}\n\n",
                    env);
    for (size_t i = 0; i < chunks; i++)
        air__buf_printf(&b,
                        "data: {\"choices\":[{%s,\"delta\":{\"content\":\"token%zu \"},"
                        "\"finish_reason\":null,\"index\":0,\"logprobs\":null}],%s}\n\n",
                        cfr, i, env);
    air__buf_printf(&b,
                    "data: {\"choices\":[{%s,\"delta\":{},\"finish_reason\":\"stop\",\"index\":0,"
                    "\"logprobs\":null}],%s}\n\ndata: {\"choices\":[],%s,\"usage\":{"
                    "\"completion_tokens\":200,\"prompt_tokens\":25,\"total_tokens\":225}}\n\n"
                    "data: [DONE]\n\n",
                    cfr, env, env);
    return air__buf_steal(&b, len);
}

/* A Gemini streamGenerateContent?alt=sse body: every event carries the
 * usage so far, the model and the response id, as Gemini sends them. */
static char *
gemini_stream(size_t chunks, size_t *len)
{
    air_buf_t b = AIR_BUF_INIT;
    for (size_t i = 0; i < chunks; i++)
        air__buf_printf(&b,
                        "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"token%zu \"}],"
                        "\"role\":\"model\"},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":"
                        "25,\"candidatesTokenCount\":%zu,\"totalTokenCount\":%zu},\"modelVersion\":"
                        "\"gemini-2.0-flash\",\"responseId\":\"mJ3xaPzYBo2vnvgPk8ahyQM\"}\r\n\r\n",
                        i, i + 1, i + 26);
    air__buf_printf(&b,
                    "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"\"}],\"role\":"
                    "\"model\"},\"finishReason\":\"STOP\",\"index\":0}],\"usageMetadata\":{"
                    "\"promptTokenCount\":25,\"candidatesTokenCount\":%zu,\"totalTokenCount\":%zu},"
                    "\"modelVersion\":\"gemini-2.0-flash\",\"responseId\":"
                    "\"mJ3xaPzYBo2vnvgPk8ahyQM\"}\r\n\r\n",
                    chunks, chunks + 25);
    return air__buf_steal(&b, len);
}

static void
bench_adapters(void)
{
    double p50, p99;
    char *req = request_2k(0);
    char *sreq = request_2k(1);
    static const struct {
        const char *kind, *model;
    } kinds[] = {{"openai", "gpt-4o"},
                 {"anthropic", "claude-sonnet-4"},
                 {"gemini", "gemini-2.0-flash"},
                 {"azure", "gpt-4o"},
                 {"deepseek", "deepseek-chat"},
                 {"mistral", "mistral-large-latest"},
                 {"groq", "llama-3.3-70b-versatile"},
                 {"together", "meta-llama/Llama-3.3-70B-Instruct-Turbo"},
                 {"openrouter", "anthropic/claude-sonnet-4"},
                 {"xai", "grok-4"},
                 {"ollama", "llama3.1:8b"},
                 {"vllm", "Qwen/Qwen2.5-7B-Instruct"}};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        char name[80];
        struct encb e;
        if (init_adapter(kinds[k].kind, &e, req, kinds[k].model) != 0)
            continue;
        snprintf(name, sizeof name, "encode/%s 2KB%s", kinds[k].kind,
                 k == 0 ? " (passthrough)" : "");
        if (want(name)) {
            double ns = median_ns(encode_loop, &e, 200000, &p50, &p99);
            air__bench_line(name, 1, 200000, ns, p50, p99);
        }
        struct parse_encb pe = {e, req, strlen(req)};
        snprintf(name, sizeof name, "parse+encode/%s 2KB", kinds[k].kind);
        if (want(name)) {
            double ns = median_ns(parse_encode_loop, &pe, 50000, &p50, &p99);
            air__bench_line(name, 1, 50000, ns, p50, p99);
        }
        fini_adapter(&e);
    }
    /* OpenAI: passthrough vs. rebuild (a different upstream model name
     * forces the splice path; a stream without include_usage forces a
     * rebuild with stream_options added). */
    struct encb e;
    if (init_adapter("openai", &e, req, "gpt-4o-2024-08-06") == 0) {
        if (want("encode/openai 2KB model splice")) {
            double ns = median_ns(encode_loop, &e, 200000, &p50, &p99);
            air__bench_line("encode/openai 2KB model splice", 1, 200000, ns, p50, p99);
        }
        fini_adapter(&e);
    }
    char *nousage = request_2k(0);
    {
        /* stream:true without include_usage -> rebuilt body */
        air_buf_t b = AIR_BUF_INIT;
        air__buf_append(&b, nousage, strlen(nousage) - 1);
        air__buf_puts(&b, ",\"stream\":true}");
        char *r2 = air__buf_steal(&b, NULL);
        if (init_adapter("openai", &e, r2, "gpt-4o") == 0) {
            e.view.stream = 1;
            if (want("encode/openai 2KB rebuild")) {
                double ns = median_ns(encode_loop, &e, 100000, &p50, &p99);
                air__bench_line("encode/openai 2KB rebuild", 1, 100000, ns, p50, p99);
            }
            fini_adapter(&e);
        }
        air__free(r2);
    }
    air__free(nousage);

    /* Decoding a non-streamed response. */
    static const char *oai_resp =
        "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":1760000000,\"model\":"
        "\"gpt-4o\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":"
        "\"Routers pick a provider by latency, cost and health, and fail over when one breaks."
        "\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":512,\"completion_tokens\":"
        "24,\"total_tokens\":536}}";
    static const char *ant_resp =
        "{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":"
        "\"claude-sonnet-4\",\"content\":[{\"type\":\"text\",\"text\":\"Routers pick a provider "
        "by latency, cost and health, and fail over when one breaks.\"}],\"stop_reason\":"
        "\"end_turn\",\"usage\":{\"input_tokens\":512,\"output_tokens\":24}}";
    static const char *gem_resp =
        "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Routers pick a provider by "
        "latency, cost and health, and fail over when one breaks.\"}],\"role\":\"model\"},"
        "\"finishReason\":\"STOP\",\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":512,"
        "\"candidatesTokenCount\":24,\"totalTokenCount\":536},\"modelVersion\":"
        "\"gemini-2.0-flash\",\"responseId\":\"mJ3xaPzYBo2vnvgPk8ahyQM\"}";
    /* The presets all get OpenAI's reply: what their vendors send. */
    static const char *const decs[] = {"openai",   "anthropic",  "gemini",  "azure",
                                       "deepseek", "openrouter", "mistral", "groq",
                                       "together", "xai",        "ollama",  "vllm"};
    for (size_t k = 0; k < sizeof decs / sizeof decs[0]; k++) {
        struct decb d;
        if (init_adapter(decs[k], &d.e, req, "m") != 0)
            continue;
        const char *body = strcmp(decs[k], "anthropic") == 0 ? ant_resp
                           : strcmp(decs[k], "gemini") == 0  ? gem_resp
                                                             : oai_resp;
        d.in = (air_http_in_t){.status = 200,
                               .body = body,
                               .body_len = strlen(body),
                               .header = no_header,
                               .now_unix_ms = 1760000000000};
        char name[64];
        snprintf(name, sizeof name, "decode/%s response", decs[k]);
        if (want(name)) {
            double ns = median_ns(decode_loop, &d, 200000, &p50, &p99);
            air__bench_line(name, 1, 200000, ns, p50, p99);
        }
        fini_adapter(&d.e);
    }

    /* Stream translation, SSE parsing included, in MB/s of upstream bytes. */
    size_t olen, alen, glen, zlen;
    char *ostream = openai_stream(200, &olen);
    char *astream = anthropic_stream(200, &alen);
    char *gstream = gemini_stream(200, &glen);
    char *zstream = azure_stream(200, &zlen);
    static const char *const skinds[] = {"openai",   "anthropic",  "gemini",  "azure",
                                         "deepseek", "openrouter", "mistral", "groq",
                                         "together", "xai",        "ollama",  "vllm"};
    for (size_t k = 0; k < sizeof skinds / sizeof skinds[0]; k++) {
        struct streamb sb;
        if (init_adapter(skinds[k], &sb.e, sreq, "m") != 0)
            continue;
        sb.e.view.stream = 1;
        sb.e.view.include_usage = 1;
        /* The presets stream OpenAI's chunks; Azure its own annotated ones. */
        sb.data = ostream;
        sb.len = olen;
        if (strcmp(skinds[k], "anthropic") == 0) {
            sb.data = astream;
            sb.len = alen;
        } else if (strcmp(skinds[k], "gemini") == 0) {
            sb.data = gstream;
            sb.len = glen;
        } else if (strcmp(skinds[k], "azure") == 0) {
            sb.data = zstream;
            sb.len = zlen;
        }
        sb.sstate = air__calloc(1, sb.e.ops->stream_state_size + 1);
        char name[80];
        snprintf(name, sizeof name, "stream/%s translate", skinds[k]);
        if (want(name)) {
            double ns = median_ns(stream_loop, &sb, 2000, &p50, &p99);
            char nm[96];
            snprintf(nm, sizeof nm, "%s (%.0f MB/s)", name, (double)sb.len / ns * 1e3);
            air__bench_line(nm, 1, 2000, ns, p50, p99);
        }
        air__free(sb.sstate);
        fini_adapter(&sb.e);
    }
    air__free(ostream);
    air__free(astream);
    air__free(gstream);
    air__free(zstream);
    air__free(req);
    air__free(sreq);
}

int
air__bench_core(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "--filter=", 9) == 0)
            filter = argv[i] + 9;
        else if (strncmp(argv[i], "--runs=", 7) == 0)
            runs = atoi(argv[i] + 7);
    }
    if (runs < 1)
        runs = 1;
    bench_ring();
    bench_sse();
    bench_adapters();
    return 0;
}
