/*
 * mock.h - an OpenAI-compatible mock provider: a real HTTP/1.1 server on
 * 127.0.0.1, event-driven (epoll + timers, never a sleeping thread per
 * request), keep-alive, thousands of concurrent connections. Used by
 * `airouter mock`, by the integration tests and by the benchmarks, which
 * start it on a thread inside their own process.
 *
 * Endpoints: POST /v1/chat/completions (plain JSON, or SSE when the body has
 * "stream": true), GET /v1/models, GET /healthz.
 */
#ifndef AIR_MOCK_H
#define AIR_MOCK_H

#include <stddef.h>
#include <stdint.h>

typedef struct air_mock_opts {
    const char *host;        /* listen address, default "127.0.0.1" */
    uint16_t port;           /* 0 = an ephemeral port (see air_mock_port) */
    uint32_t threads;        /* event-loop threads, default 1 */
    uint32_t latency_ms;     /* delay before the response (stream: before headers) */
    uint32_t jitter_ms;      /* + uniform random 0..jitter_ms */
    double tail_rate;        /* fraction of requests that also wait tail_ms (a latency tail) */
    uint32_t tail_ms;
    double fail_rate;        /* fraction of requests answered with fail_status */
    int fail_status;         /* default 500 */
    uint32_t fail_first;     /* the first N chat requests fail with fail_status */
    int32_t retry_after_s;   /* >= 0: failures carry "Retry-After: N"; -1 none */
    double reset_rate;       /* fraction of chat responses cut mid-way (TCP RST) */
    uint32_t chunks;         /* content chunks per stream, default 8 */
    uint32_t chunk_delay_ms; /* delay between stream chunks */
    const char *api_key;     /* when set, "Authorization: Bearer <key>" is required (else 401) */
    uint64_t seed;           /* random seed (0 = fixed default) */
} air_mock_opts_t;

typedef struct air_mock_stats {
    uint64_t connections;   /* accepted */
    uint64_t requests;      /* chat requests received */
    uint64_t ok;            /* answered 200 completely */
    uint64_t failed;        /* answered with an injected error status */
    uint64_t resets;        /* cut mid-way */
    uint64_t streams;       /* streamed responses started */
    uint64_t unauthorized;  /* 401s */
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
 * bodylen-1 bytes) and the value of its Authorization header ("" if none).
 * Either buffer may be NULL. For tests that check what the router sent. */
void air_mock_last_request(const air_mock_t *m, char *body, size_t bodylen, char *auth,
                           size_t authlen);
/* Stop the threads, close every connection, free. NULL is a no-op. */
void air_mock_stop(air_mock_t *m);

#endif
