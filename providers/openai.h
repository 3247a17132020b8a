/*
 * openai.h - the OpenAI Chat Completions adapter, parameterised so that the
 * OpenAI-compatible presets (deepseek, mistral, groq, together, openrouter,
 * xai, ollama, vllm) and Azure can reuse it.
 *
 * How a preset is built on top of this file (providers/<preset>.c):
 *
 *     static const struct air__openai_hdrkey hk[] = {{"referer", "HTTP-Referer"}, {NULL, NULL}};
 *     static const struct air__openai_quirks q = {
 *         .path = "/chat/completions", .auth_header = "Authorization",
 *         .auth_prefix = "Bearer ", .stream_usage = 1, .hdr_keys = hk,
 *         .map_finish = map_finish, ...};
 *     static air_status_t init(const air_provider_cfg_t *cfg, void **st, char *e, size_t n)
 *     {
 *         return air__openai_init(cfg, &q, "https://api.x.example/v1", st, e, n);
 *     }
 *     const air_provider_ops_t air_provider_x = {
 *         .abi = AIR_PROVIDER_ABI, .name = "x", ..., .init = init,
 *         .fini = air__openai_fini, .encode = air__openai_encode,
 *         .decode = air__openai_decode, .classify = air__openai_classify,
 *         .stream_event = air__openai_stream_event, .stream_end = air__openai_stream_end,
 *         .stream_state_size = sizeof(struct air__openai_stream)};
 *
 * The instance state (struct air__openai) points at the preset's quirks, so
 * the shared functions find them without a parameter. Every hook is
 * optional; a NULL hook keeps the fast paths (request passthrough, response
 * and chunk bytes forwarded unchanged).
 */
#ifndef AIR_PROVIDERS_OPENAI_H
#define AIR_PROVIDERS_OPENAI_H

#include <stddef.h>

#include "airouter/provider.h"

struct air__openai;
struct air__jpatch;

/* A config key of the provider object that becomes a request header when it
 * is set (a string): {"organization", "OpenAI-Organization"}. */
struct air__openai_hdrkey {
    const char *config_key;
    const char *header;
};

/* What one chunk of a stream (or, for usage/model/finish, one body) says,
 * as the adapter needs it. Filled by air__openai_chunk_scan. */
struct air__openai_chunk_info {
    int is_error;           /* a top-level "error" member that is not null */
    int content;            /* some choice carries content, a refusal, reasoning, tool
                               calls or a finish reason (AIR_CHUNK_CONTENT) */
    int finished;           /* some choice has a non-null finish_reason */
    int nchoices;           /* elements of "choices"; -1 when it is not an array */
    int has_usage;          /* "usage" (or "x_groq.usage") is an object */
    air_usage_t usage;      /* valid when has_usage */
    char model[128];        /* "model" when a string, else "" */
    char finish_reason[32]; /* vendor finish_reason of choice index 0, or "" */
};

struct air__openai_quirks {
    const char *path;        /* appended to base_url: "/chat/completions" */
    const char *auth_header; /* "Authorization" (Azure: "api-key") */
    const char *auth_prefix; /* "Bearer " (Azure: "") */
    /* 1: when the caller streams without stream_options.include_usage, add
     * it (so the router still learns token counts) and hide the usage-only
     * chunk from the caller. 0 for vendors that reject stream_options. */
    int stream_usage;
    /* Provider-object keys that become headers, {NULL, NULL}-terminated. */
    const struct air__openai_hdrkey *hdr_keys;

    /* URL for one request (Azure puts the deployment in the path). NULL:
     * base_url + path, computed once at init. Returns an owned string. */
    char *(*build_url)(const struct air__openai *s, const air_req_view_t *req);
    /* Record the edits this request needs beyond the model name and
     * stream_options in p (jpatch.h: the body is never written; read it
     * through air__jp_get to see earlier edits, which include the model and
     * stream_options ones). No edit keeps the zero-copy passthrough. AIR_OK,
     * AIR_E_BADREQ (f filled, class invalid_request) or AIR_E_NOMEM. NULL:
     * never. */
    air_status_t (*rewrite_request)(const struct air__openai *s, const air_req_view_t *req,
                                    struct air__jpatch *p, air_fault_t *f);
    /* Fix a parsed 2xx body in place before it is returned: 1 changed (it is
     * re-serialised), 0 unchanged (the upstream bytes are returned), -1 fail
     * with f filled (decode returns AIR_E_UPSTREAM). NULL: bytes unchanged. */
    int (*fix_response)(const struct air__openai *s, cJSON *body, air_fault_t *f);
    /* Fix one parsed stream chunk in place: 1 changed, 0 unchanged, -1 drop
     * it (not forwarded, not counted). When set, every chunk is parsed with
     * cJSON; the usage/model/finish bookkeeping sees the fixed chunk. */
    int (*fix_chunk)(const struct air__openai *s, air_stream_ctx_t *sc, cJSON *chunk);
    /* Vendor finish_reason -> unified ("eos" -> "stop"); NULL: identity.
     * Used for the finish_reason reported to core, not to rewrite bodies
     * (fix_response / fix_chunk do that). */
    const char *(*map_finish)(const char *vendor);
};

/* Instance state. Immutable after init. */
struct air__openai {
    const struct air__openai_quirks *q;
    char *base_url; /* without trailing '/' */
    char *url;      /* base_url + q->path */
    char *api_key;  /* NULL when none; only used for headers and scrubbing */
    char *auth;     /* "<auth_header>: <auth_prefix><key>", NULL when no key */
    char *extra[8]; /* "Header: value" from q->hdr_keys */
    size_t nextra;
    void *preset; /* free for a preset's own data (freed by the preset's fini
                     before it calls air__openai_fini) */
};

/* Per-request stream state (ops->stream_state_size bytes, zeroed by core). */
struct air__openai_stream {
    int started;    /* hide_usage decided */
    int hide_usage; /* we added include_usage; the caller did not ask for it */
    int finished;   /* a finish_reason was seen */
};

/* Build the state. Reads base_url (default_base_url when NULL), the key,
 * and q->hdr_keys from cfg->json (each must be a string when present:
 * AIR_E_CONFIG naming the key otherwise). */
air_status_t air__openai_init(const air_provider_cfg_t *cfg, const struct air__openai_quirks *q,
                              const char *default_base_url, void **state, char *err, size_t errlen);
void air__openai_fini(void *state);
air_status_t air__openai_encode(const void *state, const air_req_view_t *req, air_http_out_t *out,
                                air_fault_t *f);
air_status_t air__openai_decode(const void *state, const air_req_view_t *req,
                                const air_http_in_t *in, air_decoded_t *out, air_fault_t *f);
void air__openai_classify(const void *state, const air_http_in_t *in, air_fault_t *f);
air_stream_rc_t air__openai_stream_event(const void *state, air_stream_ctx_t *sc, const char *event,
                                         size_t event_len, const char *data, size_t data_len);
air_stream_rc_t air__openai_stream_end(const void *state, air_stream_ctx_t *sc);

/* Set cls/retry/failover/unusable from a vendor error type or code already
 * in f (insufficient_quota -> auth unusable, rate_limit_exceeded ->
 * rate_limited, server_error -> upstream, a numeric code -> its HTTP
 * class, ...). Leaves http_status alone. For errors that arrive inside a
 * 2xx body or stream. */
void air__openai_fault_from_vendor(air_fault_t *f);

/* Usage from an OpenAI-style usage object (plus DeepSeek's
 * prompt_cache_hit_tokens); sets u->present. */
void air__openai_usage(const cJSON *usage, air_usage_t *u);

/* Locate the value of the top-level "model" member of a JSON object text:
 * returns 1 and its byte range [*vstart, *vend), 0 when the object has no
 * such member, -1 when the text is odd (not a strictly valid JSON object,
 * an escaped or duplicated top-level key, nesting deeper than 128): callers
 * then fall back to cJSON. */
int air__openai_model_span(const char *raw, size_t len, size_t *vstart, size_t *vend);

/* Analyse one chunk's JSON text. fast = 1: a single validating pass without
 * allocation (falls back to cJSON by itself when the text is odd); fast =
 * 0: always through cJSON (the reference). AIR_OK, or AIR_E_PROTOCOL when
 * the text is not a JSON object. With fast = 1, *used_fast tells which path
 * ran (may be NULL). */
air_status_t air__openai_chunk_scan(const char *data, size_t len, int fast,
                                    struct air__openai_chunk_info *ci, int *used_fast);

extern const struct air__openai_quirks air__openai_quirks_openai;

/* The "openai" kind. */
extern const air_provider_ops_t air_provider_openai;

#endif
