/*
 * mock.h - a mock LLM provider that speaks the wire format of OpenAI,
 * Anthropic, Gemini or Azure OpenAI: a real HTTP/1.1 server on 127.0.0.1,
 * event-driven (epoll + timers, never a sleeping thread per request),
 * keep-alive, thousands of concurrent connections. Used by `airouter mock`,
 * by the integration tests and by the benchmarks, which start it on a thread
 * inside their own process.
 *
 * Chat endpoint, by format (plain JSON, or a stream in the vendor's framing):
 *   openai     POST /v1/chat/completions (or /chat/completions); SSE when the
 *              body has "stream": true
 *   anthropic  POST /v1/messages; SSE events when "stream": true
 *   gemini     POST /v1beta/models/{model}:generateContent, and
 *              :streamGenerateContent?alt=sse (SSE) or without alt=sse (one
 *              JSON array)
 *   azure      POST /openai/deployments/{deployment}/chat/completions
 *              ?api-version=..., or /openai/v1/chat/completions
 * Every format also answers GET /v1/models and GET /healthz; gemini adds
 * GET /v1beta/models.
 *
 * Answers are deterministic: the content is "tok0 tok1 ... tok{chunks-1} "
 * (one piece per stream event). When the request offers tools (and neither
 * forbids them nor ends with a tool result), the answer is one call of the
 * first tool (or the one tool_choice names) with arguments made of the
 * tool's required parameters ({"city":"mock"}; {} when none are required),
 * and the vendor's finish reason for a tool call. Usage is always reported:
 * prompt tokens = body bytes / 4, completion tokens = chunks (text) or
 * (name + arguments bytes) / 4 + 1 (tool call). Errors, injected or not,
 * come in the vendor's error shape.
 */
#ifndef AIR_MOCK_H
#define AIR_MOCK_H

#include <stddef.h>
#include <stdint.h>

typedef struct air_mock_opts {
    const char *host;    /* listen address, default "127.0.0.1" */
    uint16_t port;       /* 0 = an ephemeral port (see air_mock_port) */
    uint32_t threads;    /* event-loop threads, default 1 */
    uint32_t latency_ms; /* delay before the response (stream: before headers) */
    uint32_t jitter_ms;  /* + uniform random 0..jitter_ms */
    double tail_rate;    /* fraction of requests that also wait tail_ms (a latency tail) */
    uint32_t tail_ms;
    double fail_rate;         /* fraction of requests answered with fail_status */
    int fail_status;          /* default 500 */
    uint32_t fail_first;      /* the first N chat requests fail with fail_status */
    int32_t retry_after_s;    /* >= 0: failures carry "Retry-After: N"; -1 none */
    double reset_rate;        /* fraction of chat responses cut mid-way (TCP RST) */
    uint32_t chunks;          /* content chunks per stream, default 8 */
    uint32_t chunk_delay_ms;  /* delay between stream chunks */
    const char *api_key;      /* when set, the format's key header must carry it (else 401;
                               * gemini: 400 API_KEY_INVALID, 403 when absent):
                               * openai "Authorization: Bearer <key>", anthropic "x-api-key",
                               * gemini "x-goog-api-key" (or ?key=), azure "api-key" (or
                               * Authorization: Bearer) */
    uint64_t seed;            /* random seed (0 = fixed default) */
    const char *format;       /* "openai" (default, also NULL), "anthropic", "gemini", "azure" */
    const char *record_path;  /* when set, one JSON line per request received is appended
                               * to this file: {"method","path","query","headers","body"};
                               * key headers masked as "***" + their last 4 characters */
    double stream_error_rate; /* fraction of streams that stop half-way with the vendor's
                               * error event (status/type from fail_status) */
} air_mock_opts_t;

typedef struct air_mock_stats {
    uint64_t connections;   /* accepted */
    uint64_t requests;      /* chat requests received */
    uint64_t ok;            /* answered 200 completely */
    uint64_t failed;        /* answered with an injected error status */
    uint64_t resets;        /* cut mid-way */
    uint64_t streams;       /* streamed responses started */
    uint64_t unauthorized;  /* 401s (gemini: the key errors) */
    uint64_t stream_errors; /* streams ended by an injected error event (also in failed) */
} air_mock_stats_t;

typedef struct air_mock air_mock_t;

/* Fill o with the defaults. */
void air_mock_opts_init(air_mock_opts_t *o);
/* Bind, listen and start the event-loop thread(s). Returns 0, or -1 with a
 * reason in err. */
int air_mock_start(const air_mock_opts_t *o, air_mock_t **out, char *err, size_t errlen);
/* The bound port. */
uint16_t air_mock_port(const air_mock_t *m);
/* Counters so far (thread-safe snapshot). */
void air_mock_stats(const air_mock_t *m, air_mock_stats_t *s);
/* Copy the body of the last chat request received (NUL-terminated, cut to
 * bodylen-1 bytes) and the value of its key header ("" if none): the header
 * the format authenticates with (Authorization; anthropic x-api-key; gemini
 * x-goog-api-key; azure api-key, else Authorization), unmasked.
 * Either buffer may be NULL. For tests that check what the router sent. */
void air_mock_last_request(const air_mock_t *m, char *body, size_t bodylen, char *auth,
                           size_t authlen);
/* Copy the request target (path and query) of the last chat request. */
void air_mock_last_path(const air_mock_t *m, char *buf, size_t len);
/* Copy the value of header `name` (case-insensitive) of the last chat
 * request, unmasked. Returns 1 when it was present, else 0 (buf gets ""). */
int air_mock_last_header(const air_mock_t *m, const char *name, char *buf, size_t len);
/* Stop the threads, close every connection, free. NULL is a no-op. */
void air_mock_stop(air_mock_t *m);

#endif
