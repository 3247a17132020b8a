/*
 * airouter/provider.h - the provider adapter interface (SPI).
 *
 * An adapter is a pure translator between the unified schema (OpenAI Chat
 * Completions) and one vendor's wire format. It never does I/O, never sleeps
 * and keeps no process-global state: core owns the transport, so every
 * adapter can be tested byte for byte without a socket.
 *
 * Contract for every function pointer below:
 *   - reentrant: encode, decode, classify and the stream functions may run on
 *     any worker thread at the same time, for different requests;
 *   - `state` (made by init) is immutable after init returns;
 *   - every string handed out in an output structure is allocated with
 *     air__malloc (util/alloc.h) and owned by the caller (core), except
 *     air_http_out_t.body_ref, which borrows the request's raw bytes;
 *   - secrets (the API key) only ever appear in air_http_out_t.headers (or,
 *     where a vendor insists, the URL; no built-in adapter does that). Never in
 *     a fault message.
 *
 * One adapter file exports one `const air_provider_ops_t` per kind it serves
 * (the OpenAI-compatible presets share the openai functions); the built-in
 * table is in providers/builtin.c.
 */
#ifndef AIROUTER_PROVIDER_H
#define AIROUTER_PROVIDER_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "../airouter.h"

#ifdef __cplusplus
extern "C" {
#endif

/* New slots are appended to air_provider_ops_t and gated by this number. */
#define AIR_PROVIDER_ABI 1

/* Capabilities of a kind (air_provider_ops_t.caps). */
#define AIR_CAP_STREAM (1u << 0)
#define AIR_CAP_TOOLS  (1u << 1)
#define AIR_CAP_IMAGES (1u << 2)
#define AIR_CAP_JSON   (1u << 3)

/* Token usage. `present` is 1 when the provider reported usage at all. */
typedef struct air_usage {
    uint64_t prompt;      /* includes cached */
    uint64_t completion;  /* includes reasoning */
    uint64_t cached;      /* prompt tokens read from cache */
    uint64_t cache_write; /* prompt tokens written to cache */
    uint64_t reasoning;   /* completion tokens spent thinking */
    int present;
} air_usage_t;

/* One provider instance's configuration, as handed to init. Valid only
 * during init: copy what you keep. */
typedef struct air_provider_cfg {
    const char *name;     /* instance name from the config ("openai-prod") */
    const char *kind;     /* "openai", "deepseek", "anthropic", ... */
    const char *base_url; /* NULL: use ops->default_base_url. No trailing '/'. */
    const char *api_key;  /* secret, or NULL when the config names no key */
    const cJSON *json;    /* the provider's whole config object (read-only), for
                             the kind's own keys listed in ops->config_keys */
} air_provider_cfg_t;

/* The request as an adapter sees it. All read-only. */
typedef struct air_req_view {
    const cJSON *body;  /* the caller's OpenAI Chat Completions body, parsed */
    const char *raw;    /* its original bytes (for passthrough) */
    size_t raw_len;
    const char *model;  /* upstream model name to send (may differ from body.model) */
    int stream;         /* body has "stream": true */
    int include_usage;  /* body has "stream_options": {"include_usage": true} */
    int64_t now_unix;   /* wall clock seconds, for "created" when the vendor gives none */
    const char *request_id; /* router's id for this request ("air-1f3a..."), for
                               a response "id" when the vendor gives none */
} air_req_view_t;

#define AIR_HTTP_MAX_HEADERS 16

/* An upstream HTTP request description (always POST). */
typedef struct air_http_out {
    char *url;                           /* owned; full URL incl. query */
    char *headers[AIR_HTTP_MAX_HEADERS]; /* owned; "Name: value" each */
    size_t nheaders;
    char *body;           /* owned, NUL-terminated; NULL when body_ref is used */
    size_t body_len;      /* length of body or body_ref */
    const char *body_ref; /* passthrough: borrows req->raw; NULL otherwise */
} air_http_out_t;

/* An upstream HTTP response (status + whole body) as core received it. */
typedef struct air_http_in {
    int status;
    const char *body; /* NUL-terminated; may be empty, never NULL */
    size_t body_len;
    /* Case-insensitive header lookup: the value with surrounding spaces
     * trimmed, or NULL when absent. */
    const char *(*header)(const void *hctx, const char *name);
    const void *hctx;
    int64_t now_unix_ms; /* wall clock, for an HTTP-date Retry-After */
} air_http_in_t;

/* A classified failure. Adapters fill it; core decides what to do. */
typedef struct air_fault {
    air_errclass_t cls;
    int http_status;        /* upstream status, 0 when there was none */
    int retry;              /* retrying the same deployment is allowed */
    int failover;           /* trying another deployment is allowed */
    int unusable;           /* deployment unusable (bad key, billing) */
    int64_t retry_after_ms; /* server-given delay, -1 when none */
    char code[64];          /* vendor code ("context_length_exceeded") or "" */
    char type[64];          /* vendor error type or "" */
    char message[512];      /* vendor message; never secrets */
} air_fault_t;

/* A decoded non-streamed success. */
typedef struct air_decoded {
    char *body;       /* owned: unified chat.completion JSON, NUL-terminated */
    size_t body_len;
    air_usage_t usage;
    char model[128];         /* model the upstream reported, or "" */
    char finish_reason[32];  /* unified finish_reason of choice 0, or "" */
} air_decoded_t;

/* Flags for emitted chunks. */
#define AIR_CHUNK_CONTENT (1u << 0) /* carries content, a tool call, a refusal or a
                                       finish reason: once core forwards such a
                                       chunk, the request can no longer fail over */

typedef enum air_stream_rc {
    AIR_STREAM_MORE = 0,  /* keep feeding events */
    AIR_STREAM_DONE = 1,  /* the stream ended normally; ignore the rest */
    AIR_STREAM_ERROR = 2  /* the stream failed; sc->fault is filled */
} air_stream_rc_t;

/* Per-request streaming context, owned by core. */
typedef struct air_stream_ctx {
    void *state;  /* ops->stream_state_size zeroed bytes for the adapter */
    const air_req_view_t *req;
    /* Hand one unified chat.completion.chunk JSON object to core. The bytes
     * are copied; flags is a set of AIR_CHUNK_*. Returns 0, or nonzero when
     * core wants the adapter to stop (then return AIR_STREAM_ERROR with
     * sc->fault untouched, or AIR_STREAM_DONE). */
    int (*emit)(void *ud, const char *json, size_t len, unsigned flags);
    void *emit_ud;
    air_usage_t usage;      /* adapter fills as soon as known */
    char model[128];        /* upstream-reported model, adapter fills */
    char finish_reason[32]; /* unified finish reason, adapter fills */
    air_fault_t fault;      /* filled on AIR_STREAM_ERROR */
} air_stream_ctx_t;

/* Rate-limit state a response's headers announce, in one form for every
 * vendor (filled by air_provider_ops_t.ratelimit). Each field is -1 when
 * unknown. Reset fields are milliseconds from the response's arrival
 * (air_http_in_t.now_unix_ms) until the window refills, never negative.
 * `present` is 1 when at least one field was found. */
typedef struct air_ratelimit {
    int64_t limit_requests;     /* requests allowed per window */
    int64_t remaining_requests; /* requests left in this window */
    int64_t reset_requests_ms;  /* until the request window refills */
    int64_t limit_tokens;       /* tokens allowed per window */
    int64_t remaining_tokens;   /* tokens left in this window */
    int64_t reset_tokens_ms;    /* until the token window refills */
    int present;
} air_ratelimit_t;

typedef struct air_provider_ops {
    uint32_t abi;                     /* AIR_PROVIDER_ABI */
    const char *name;                 /* kind name, unique ("openai", "deepseek") */
    uint32_t caps;                    /* AIR_CAP_* */
    const char *default_base_url;     /* used when the config has no base_url */
    const char *const *config_keys;   /* NULL-terminated extra provider-object
                                         keys this kind accepts, or NULL */
    size_t stream_state_size;         /* bytes of per-request stream state */

    /* Build instance state from a config. Optional (NULL: state is NULL).
     * On failure write a reason to err (naming the key) and return
     * AIR_E_CONFIG. */
    air_status_t (*init)(const air_provider_cfg_t *cfg, void **state, char *err, size_t errlen);
    /* Free what init made. Optional. */
    void (*fini)(void *state);

    /* Build the upstream request. Required. A request this vendor cannot
     * serve (e.g. n > 1 where unsupported) returns AIR_E_BADREQ with f filled
     * (cls AIR_ERR_INVALID_REQUEST). */
    air_status_t (*encode)(const void *state, const air_req_view_t *req, air_http_out_t *out,
                           air_fault_t *f);
    /* Turn a 2xx non-streamed response into the unified body. Required.
     * Unparseable → AIR_E_PROTOCOL with f filled (cls upstream). A 2xx that
     * carries an error (some vendors do) → AIR_E_UPSTREAM with f filled. */
    air_status_t (*decode)(const void *state, const air_req_view_t *req, const air_http_in_t *in,
                           air_decoded_t *out, air_fault_t *f);
    /* Classify a non-2xx response. Required. */
    void (*classify)(const void *state, const air_http_in_t *in, air_fault_t *f);
    /* One SSE event of a 2xx stream (event name may be empty). Required when
     * caps has AIR_CAP_STREAM. */
    air_stream_rc_t (*stream_event)(const void *state, air_stream_ctx_t *sc, const char *event,
                                    size_t event_len, const char *data, size_t data_len);
    /* The transport reached EOF without AIR_STREAM_DONE. Return DONE if the
     * stream is complete after all, else ERROR with sc->fault filled.
     * Optional: NULL means ERROR ("stream ended early", class upstream). */
    air_stream_rc_t (*stream_end)(const void *state, air_stream_ctx_t *sc);

    /* Appended slots. They belong to ABI 1 (added before the first release):
     * an ops struct that leaves them out gets NULL from its designated
     * initializer, which means "not implemented". */

    /* Read the vendor's rate-limit headers of a response (any status, 2xx
     * included) into the common form. Sets every field of out (-1 when
     * unknown); present = 0 when the response had none. Reentrant, no
     * allocation. Optional: NULL means the kind reports none. */
    void (*ratelimit)(const void *state, const air_http_in_t *in, air_ratelimit_t *out);
} air_provider_ops_t;

#ifdef __cplusplus
}
#endif

#endif /* AIROUTER_PROVIDER_H */
