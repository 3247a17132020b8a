/*
 * airouter.h - the public API of libairouter, an embeddable multithreaded
 * router for LLM chat-completion requests.
 *
 * This header is the whole contract. If it is not declared here, it is not
 * API. Every declaration carries three tag lines:
 *
 *   Thread:     which threads may call it ("any", "worker" = inside a
 *               callback on a worker thread, "control" = serialise with other
 *               control calls on the same router, "owner" = the one thread
 *               that currently owns the object).
 *   Ownership:  who owns what after the call.
 *   Errors:     the status codes it can return.
 *
 * Objects and their lifetimes
 * ---------------------------
 *
 * | object       | created by            | released by                       | thread rule              |
 * |--------------|-----------------------|-----------------------------------|--------------------------|
 * | air_t        | air_new, air_new_file | air_free (drain deadline)         | submit/cancel: any       |
 * | air_req_t    | air_req_new           | air_submit/air_call (always       | one thread until submit  |
 * |              |                       | consume it) or air_req_free       |                          |
 * | air_resp_t   | the router            | after the callback returns;       | read-only; any thread    |
 * |              |                       | air_resp_dup + air_resp_free keep |                          |
 * | strings in   | the caller            | copied on set                     | -                        |
 *
 * Callback rule: when air_submit returns AIR_OK, exactly one completion is
 * delivered for that request (success, error, cancel, deadline or shutdown):
 * through the done callback if one was set, otherwise through the completion
 * queue (air_completions_fd / air_completions_poll). When air_submit returns
 * anything else, nothing is ever delivered for it.
 *
 * Callbacks run on a worker thread. They must be quick and must not block;
 * they may call air_submit and air_cancel but never air_free.
 *
 * libcurl: the router calls curl_global_init once (under pthread_once) the
 * first time a router is created. A host that uses libcurl itself should call
 * curl_global_init before creating threads, as libcurl documents.
 */
#ifndef AIROUTER_H
#define AIROUTER_H

#include <stddef.h>
#include <stdint.h>

#include "airouter/export.h"

#ifdef __cplusplus
extern "C" {
#endif

#define AIR_VERSION_MAJOR 0
#define AIR_VERSION_MINOR 1
#define AIR_VERSION_PATCH 0
/* MAJOR * 10000 + MINOR * 100 + PATCH; compare with air_version_num(). */
#define AIR_VERSION_NUM   (AIR_VERSION_MAJOR * 10000 + AIR_VERSION_MINOR * 100 + AIR_VERSION_PATCH)
#define AIR_VERSION_STR   "0.1.0"

#if defined(__GNUC__) || defined(__clang__)
#define AIR_NODISCARD __attribute__((warn_unused_result))
#else
#define AIR_NODISCARD
#endif

/*
 * Status codes. Values are append-only and never renumbered; a retired code
 * keeps its slot. air_strerror and air_status_name come from the same list.
 */
#define AIR_STATUS_MAP(X)                                                                          \
    X(OK, 0, "ok")                                                                                 \
    X(E_INVAL, 1, "invalid argument")                                                              \
    X(E_NOMEM, 2, "out of memory")                                                                 \
    X(E_BUSY, 3, "queue full")                                                                     \
    X(E_SHUTDOWN, 4, "router stopping")                                                            \
    X(E_CANCELLED, 5, "cancelled")                                                                 \
    X(E_TIMEOUT, 6, "deadline exceeded")                                                           \
    X(E_NOPROVIDER, 7, "no eligible provider")                                                     \
    X(E_TRANSPORT, 8, "transport error")                                                           \
    X(E_UPSTREAM, 9, "provider returned error")                                                    \
    X(E_RATELIMITED, 10, "rate limited")                                                           \
    X(E_AUTH, 11, "auth rejected")                                                                 \
    X(E_PROTOCOL, 12, "unparseable provider reply")                                                \
    X(E_NONAME, 13, "unknown name")                                                                \
    X(E_READONLY, 14, "read-only")                                                                 \
    X(E_RANGE, 15, "value out of range")                                                           \
    X(E_ABI, 16, "provider ABI mismatch")                                                          \
    X(E_EXISTS, 17, "already exists")                                                              \
    X(E_CONFIG, 18, "invalid configuration")                                                       \
    X(E_NOTFOUND, 19, "not found")                                                                 \
    X(E_BADREQ, 20, "invalid request")

typedef enum air_status {
#define AIR__STATUS_ENUM(name, num, str) AIR_##name = num,
    AIR_STATUS_MAP(AIR__STATUS_ENUM)
#undef AIR__STATUS_ENUM
    AIR__STATUS_LAST
} air_status_t;

/*
 * Error classes: why a request failed, in the vocabulary of the router's
 * policy and of the gateway's OpenAI-shaped error bodies ("type"). Append-only.
 */
#define AIR_ERRCLASS_MAP(X)                                                                        \
    X(NONE, 0, "none")                                                                             \
    X(INVALID_REQUEST, 1, "invalid_request")                                                       \
    X(AUTH, 2, "auth")                                                                             \
    X(NOT_FOUND, 3, "not_found")                                                                   \
    X(RATE_LIMITED, 4, "rate_limited")                                                             \
    X(OVERLOADED, 5, "overloaded")                                                                 \
    X(UPSTREAM, 6, "upstream")                                                                     \
    X(TIMEOUT, 7, "timeout")                                                                       \
    X(CONNECT, 8, "connect")                                                                       \
    X(BUDGET_EXCEEDED, 9, "budget_exceeded")                                                       \
    X(CANCELLED, 10, "cancelled")                                                                  \
    X(SHUTDOWN, 11, "shutdown")                                                                    \
    X(BUSY, 12, "busy")

typedef enum air_errclass {
#define AIR__ERRCLASS_ENUM(name, num, str) AIR_ERR_##name = num,
    AIR_ERRCLASS_MAP(AIR__ERRCLASS_ENUM)
#undef AIR__ERRCLASS_ENUM
    AIR__ERR_LAST
} air_errclass_t;

typedef struct air air_t;
typedef struct air_req air_req_t;
typedef struct air_resp air_resp_t;

/*
 * Done callback. `resp` is borrowed: it is valid until the callback returns
 * (keep it longer with air_resp_dup). `ud` is the pointer given to
 * air_req_set_done.
 * Thread: worker (or the host thread inside air_completions_poll).
 */
typedef void (*air_done_fn)(const air_resp_t *resp, void *ud);

/*
 * Stream chunk callback. `json` is one OpenAI `chat.completion.chunk` object
 * (not NUL-terminated beyond `len`, but always followed by a NUL byte), valid
 * only during the call. Chunks of one request arrive in order, on one thread
 * at a time, and always before that request's done callback.
 * Thread: worker.
 */
typedef void (*air_chunk_fn)(const char *json, size_t len, void *ud);

/* ------------------------------------------------------------------------ */
/* Library                                                                   */

/* Version of the library actually linked, as AIR_VERSION_NUM / _STR.
 * Thread: any. */
AIR_API int air_version_num(void);
AIR_API const char *air_version(void);

/* Static description of a status, never NULL ("unknown status" for values
 * outside the enum). Thread: any. */
AIR_API const char *air_strerror(air_status_t st);
/* "AIR_E_BUSY" style name of a status. Thread: any. */
AIR_API const char *air_status_name(air_status_t st);
/* "rate_limited" style name of an error class. Thread: any. */
AIR_API const char *air_errclass_name(air_errclass_t c);

/* ------------------------------------------------------------------------ */
/* Router                                                                    */

/*
 * Create a router from a JSON configuration text (see docs/CONFIG.md) and
 * start its worker threads.
 * Thread: any. Ownership: *out is owned by the caller; free with air_free.
 * Errors: AIR_E_INVAL (NULL arguments), AIR_E_CONFIG (bad configuration; the
 * message written to err names the JSON path and the reason, e.g.
 * "providers[1].timeout_ms: expected an integer"), AIR_E_NOMEM, AIR_E_TRANSPORT
 * (libcurl could not be initialised).
 * `err` may be NULL; otherwise up to errlen bytes, NUL-terminated.
 */
AIR_API AIR_NODISCARD air_status_t air_new(const char *config_json, air_t **out, char *err,
                                           size_t errlen);

/* As air_new, reading the configuration from a file. Errors as air_new, plus
 * AIR_E_CONFIG when the file cannot be read (the message names the file).
 * Thread: any. */
AIR_API AIR_NODISCARD air_status_t air_new_file(const char *path, air_t **out, char *err,
                                                size_t errlen);

/*
 * Stop a router: refuse new submissions (AIR_E_SHUTDOWN), let requests in
 * flight finish for up to drain_ms milliseconds, then complete every request
 * still pending with AIR_E_SHUTDOWN (error class "shutdown"), join the
 * workers and free everything. Every accepted request has been completed when
 * it returns. air_free(NULL, ...) is a no-op.
 * Thread: control; never from a callback. Ownership: consumes r.
 */
AIR_API void air_free(air_t *r, uint32_t drain_ms);

/* ------------------------------------------------------------------------ */
/* Requests                                                                  */

/*
 * Build a request from an OpenAI Chat Completions body. The body must be a
 * JSON object with a string "model" and an array "messages"; it is copied.
 * Thread: any. Ownership: *out is owned by the caller until air_submit or
 * air_call consumes it, or air_req_free releases it.
 * Errors: AIR_E_INVAL (NULL arguments), AIR_E_BADREQ (body is not valid
 * JSON, or a field has the wrong type; err names the position or the field),
 * AIR_E_NOMEM.
 */
AIR_API AIR_NODISCARD air_status_t air_req_new(air_t *r, const char *body, size_t len,
                                               air_req_t **out, char *err, size_t errlen);

/* Release a request that was never submitted. NULL is a no-op.
 * Thread: owner. Ownership: consumes req. */
AIR_API void air_req_free(air_req_t *req);

/* Router options; none of them is ever sent upstream. Each copies its string
 * argument. Thread: owner. Errors: AIR_E_INVAL, AIR_E_NOMEM. */

/* Pin the request to one provider, by its configured name (the gateway maps
 * the x-ai-provider header here). */
AIR_API AIR_NODISCARD air_status_t air_req_set_provider(air_req_t *req, const char *provider);
/* Relative deadline for the whole request, all attempts included. 0 = the
 * router's default (config "request_timeout_ms"). */
AIR_API AIR_NODISCARD air_status_t air_req_set_deadline_ms(air_req_t *req, uint32_t ms);
/* Identity of the calling client, for limits and budgets. */
AIR_API AIR_NODISCARD air_status_t air_req_set_client_key(air_req_t *req, const char *key);
/* Attach a free-form tag ("team=search"); at most 16 per request (the 17th
 * gets AIR_E_RANGE). Tags are for the host only: they are never sent
 * upstream, and come back on the request's response (air_resp_tag). */
AIR_API AIR_NODISCARD air_status_t air_req_add_tag(air_req_t *req, const char *tag);
/* Upper bound on attempts for this request (1 = no retry or failover). 0 =
 * the route's default. */
AIR_API AIR_NODISCARD air_status_t air_req_set_max_attempts(air_req_t *req, uint32_t n);
/* Done callback; without one the result goes to the completion queue. */
AIR_API AIR_NODISCARD air_status_t air_req_set_done(air_req_t *req, air_done_fn fn, void *ud);
/* Chunk callback; only used when the body asks for "stream": true. Without
 * one, a streamed request is still served and its chunks are dropped. */
AIR_API AIR_NODISCARD air_status_t air_req_set_chunk(air_req_t *req, air_chunk_fn fn, void *ud);

/*
 * Submit a request asynchronously. Never blocks and never waits on a lock.
 * On AIR_OK, *id (when id is not NULL) receives the request's router-unique
 * nonzero id, for air_cancel; air_resp_id returns the same value.
 * Thread: any. A call made after air_free has begun (from a callback, or
 * from another thread) returns AIR_E_SHUTDOWN and nothing is ever delivered
 * for it; but the host must make sure no call is running or starts once
 * air_free may have returned, since that frees the router.
 * Ownership: always consumes req, also on failure.
 * Errors: AIR_E_INVAL (NULL), AIR_E_BUSY (ingress queue full or too many
 * requests in flight; retry later), AIR_E_SHUTDOWN (router is stopping).
 * On AIR_OK the completion is delivered exactly once; on any error never.
 */
AIR_API AIR_NODISCARD air_status_t air_submit(air_t *r, air_req_t *req, uint64_t *id);

/*
 * Cancel a submitted request by id. The request completes (once) with
 * AIR_E_CANCELLED unless it already finished; cancel is asynchronous and
 * returns before that completion.
 * Thread: any. Errors: AIR_E_NOTFOUND (no such request in flight, e.g. it
 * already completed).
 */
AIR_API AIR_NODISCARD air_status_t air_cancel(air_t *r, uint64_t id);

/*
 * Synchronous helper: submit and wait for the result. Any callbacks set on
 * req are replaced (chunk callbacks are kept).
 * Thread: any thread except a worker (never from a callback).
 * Ownership: consumes req; *out is owned by the caller (air_resp_free).
 * Returns the submit status (AIR_OK when a response was produced; then look at
 * air_resp_status for the outcome).
 */
AIR_API AIR_NODISCARD air_status_t air_call(air_t *r, air_req_t *req, air_resp_t **out);

/* ------------------------------------------------------------------------ */
/* Completion queue (hosts with their own event loop)                        */

/*
 * A file descriptor (eventfd) that becomes readable when completions of
 * requests without a done callback are waiting. Poll it for POLLIN, then call
 * air_completions_poll. Do not read or close it.
 * Thread: any.
 */
AIR_API int air_completions_fd(air_t *r);

/*
 * Deliver up to `max` queued completions by calling fn(resp, ud) on this
 * thread, where ud is the one given to air_req_set_done (NULL when unset).
 * `fn` overrides nothing: requests with a done callback never enter the
 * queue. Returns the number delivered. Clears the fd's readiness when the
 * queue is empty.
 * Thread: any, but one thread at a time.
 */
AIR_API size_t air_completions_poll(air_t *r, air_done_fn fn, size_t max);

/* ------------------------------------------------------------------------ */
/* Running the host's event source on a worker                              */

/*
 * A host's event source run by a worker thread, in the worker's own loop:
 * fn(ud) is called on that worker when `fd` is readable, and again when the
 * number of milliseconds fn returned has passed (a negative return: only on
 * fd). Requests the host submits from fn, or from a done or chunk callback
 * running on a worker, go to that same worker with no queue hand-off and no
 * thread wake-up, and their callbacks run on it: a server that runs its
 * sockets this way (the gateway runs one HTTP listener per worker) serves a
 * request start to finish on one thread. fn must not block and must not
 * call air_free, air_reload, air_ctl_* or air_call.
 */
typedef int64_t (*air_loop_fn)(void *ud);

/* Number of worker threads (the valid `worker` indexes are 0..n-1).
 * Thread: any. */
AIR_API uint32_t air_workers(air_t *r);

/*
 * Attach fd/fn/ud to worker `worker`; returns once the worker runs it. One
 * source per worker. The fd stays the caller's (it is polled, never read or
 * closed). Errors: AIR_E_INVAL (bad index, fd < 0, fn NULL), AIR_E_BUSY
 * (the worker already has one), AIR_E_SHUTDOWN (air_free has begun).
 * Thread: any but a worker thread.
 */
AIR_API AIR_NODISCARD air_status_t air_worker_attach(air_t *r, uint32_t worker, int fd,
                                                     air_loop_fn fn, void *ud);
/*
 * Detach the source of worker `worker`; returns once fn can no longer run
 * (the host may then free what ud points at). Detach every source before
 * air_free. AIR_E_INVAL when none is attached.
 * Thread: any but a worker thread.
 */
AIR_API air_status_t air_worker_detach(air_t *r, uint32_t worker);

/* ------------------------------------------------------------------------ */
/* Responses                                                                 */

/*
 * A response is immutable once delivered, so every accessor below may be
 * called from any thread that holds it (inside the callback, or holding a
 * reference from air_resp_dup or air_call). None of them fails: a NULL resp
 * gives the neutral value each one names. Returned strings are borrowed and
 * live as long as resp.
 */

/* Outcome: AIR_OK, or the error (AIR_E_UPSTREAM, AIR_E_TIMEOUT, ...).
 * Thread: any. Ownership: borrows resp. Errors: AIR_E_INVAL for NULL. */
AIR_API air_status_t air_resp_status(const air_resp_t *resp);
/* Error class (AIR_ERR_NONE on success).
 * Thread: any. Ownership: borrows resp. Errors: none (NULL: AIR_ERR_NONE). */
AIR_API air_errclass_t air_resp_error_class(const air_resp_t *resp);
/* Human-readable error message (never contains secrets), "" on success.
 * Thread: any. Ownership: borrowed; lives as long as resp.
 * Errors: none (NULL: ""). */
AIR_API const char *air_resp_error_message(const air_resp_t *resp);
/* Vendor error code ("context_length_exceeded") or NULL.
 * Thread: any. Ownership: borrowed. Errors: none (NULL: NULL). */
AIR_API const char *air_resp_error_code(const air_resp_t *resp);
/* HTTP status: the upstream's on success or upstream error; otherwise the
 * status the gateway maps the error class to (504 for timeout, ...).
 * Thread: any. Ownership: borrows resp. Errors: none (NULL: 0). */
AIR_API int air_resp_http_status(const air_resp_t *resp);
/* Suggested wait before retrying (from Retry-After), in ms; -1 if none.
 * Thread: any. Ownership: borrows resp. Errors: none (NULL: -1). */
AIR_API int64_t air_resp_retry_after_ms(const air_resp_t *resp);
/* Unified OpenAI chat.completion JSON body (NUL-terminated) or NULL (errors
 * and streamed requests). *len gets its length when len is not NULL.
 * Thread: any. Ownership: borrowed; lives as long as resp.
 * Errors: none (NULL: NULL, *len = 0). */
AIR_API const char *air_resp_body(const air_resp_t *resp, size_t *len);
/* Provider (configured name) and upstream model of the last attempt, or NULL
 * when no attempt was made.
 * Thread: any. Ownership: borrowed. Errors: none (NULL: NULL). */
AIR_API const char *air_resp_provider(const air_resp_t *resp);
AIR_API const char *air_resp_model(const air_resp_t *resp);
/* Attempts made (0 when none was possible).
 * Thread: any. Ownership: borrows resp. Errors: none (NULL: 0). */
AIR_API uint32_t air_resp_attempts(const air_resp_t *resp);
/* Request id (as returned by air_submit).
 * Thread: any. Ownership: borrows resp. Errors: none (NULL: 0). */
AIR_API uint64_t air_resp_id(const air_resp_t *resp);
/* Microseconds from submit to completion.
 * Thread: any. Ownership: borrows resp. Errors: none (NULL: 0). */
AIR_API uint64_t air_resp_latency_us(const air_resp_t *resp);
/* Microseconds from submit to the first byte of the winning attempt's
 * response body (streams: to the first content chunk); 0 if none arrived.
 * Thread: any. Ownership: borrows resp. Errors: none (NULL: 0). */
AIR_API uint64_t air_resp_ttft_us(const air_resp_t *resp);
/* Token usage as reported by the provider (0 when unknown).
 * Thread: any. Ownership: borrows resp. Errors: none (NULL: 0). */
AIR_API uint64_t air_resp_prompt_tokens(const air_resp_t *resp);
AIR_API uint64_t air_resp_completion_tokens(const air_resp_t *resp);
AIR_API uint64_t air_resp_cached_tokens(const air_resp_t *resp);
/* Whether the request was streamed, and whether any chunk reached the
 * chunk callback.
 * Thread: any. Ownership: borrows resp. Errors: none (NULL: 0). */
AIR_API int air_resp_streamed(const air_resp_t *resp);
AIR_API int air_resp_chunks_delivered(const air_resp_t *resp);

/* Microseconds spent in upstream attempts (connect to last byte, summed
 * over attempts); latency minus this is the router's own overhead
 * (queueing, routing, translation, backoff waits).
 * Thread: any. Ownership: borrows resp. Errors: none (NULL: 0). */
AIR_API uint64_t air_resp_upstream_us(const air_resp_t *resp);
/* Cost of the request in USD from the reported usage and the configured
 * prices of the model that served it (0 when unknown).
 * Thread: any. Ownership: borrows resp. Errors: none (NULL: 0). */
AIR_API double air_resp_cost_usd(const air_resp_t *resp);
/* The route (public model name) the request was resolved to, or NULL.
 * Thread: any. Ownership: borrowed. Errors: none (NULL: NULL). */
AIR_API const char *air_resp_route(const air_resp_t *resp);
/* The tags given with air_req_add_tag, in the order they were added, so a
 * host can correlate a completion with its own records. Every completion
 * carries them, errors, cancels and shutdowns included. Tags never go
 * upstream. air_resp_tag returns NULL when i >= air_resp_tag_count.
 * Thread: any. Ownership: borrowed; lives as long as resp.
 * Errors: none (NULL resp: 0 tags). */
AIR_API uint32_t air_resp_tag_count(const air_resp_t *resp);
AIR_API const char *air_resp_tag(const air_resp_t *resp, uint32_t i);

/* Keep a response beyond its callback (reference count).
 * Thread: any. Ownership: returns a reference the caller must air_resp_free.
 * Errors: none (NULL: NULL). */
AIR_API air_resp_t *air_resp_dup(const air_resp_t *resp);
/* Drop a reference from air_resp_dup or air_call. NULL is a no-op.
 * Thread: any. Ownership: consumes that reference; the last one frees resp. */
AIR_API void air_resp_free(air_resp_t *resp);

/* ------------------------------------------------------------------------ */
/* Introspection                                                             */

/*
 * JSON snapshot of the router's counters: started, completed, in flight,
 * errors by class; per deployment its statistics and health; per route and
 * per client key requests and cost; per tag ("tags": {"team=search":
 * {"requests", "failed", "prompt_tokens", "completion_tokens", "cost_usd"}},
 * a request counted once per distinct tag; tags beyond 64 per worker or of
 * 64 bytes or more are summed under "_other"); the state backend. Layout in
 * docs/POLICY.md. Ownership: returns a malloc'd string the caller frees
 * with free(). NULL on out of memory. Thread: any.
 */
AIR_API char *air_stats_json(air_t *r);

/* ------------------------------------------------------------------------ */
/* Run-time tuning, explain and reload (docs/POLICY.md lists every path)    */

/*
 * Set one tunable by dotted path ("routes.chat.strategy",
 * "policy.weight.latency", "deployments.openai/gpt-4o.enabled") to a JSON
 * value ("\"lowest-latency\"", "0.5", "true"). Besides the global table:
 * routes.<model>.{strategy,hedge,weight.*,budget_usd},
 * deployments.<provider>/<model>.{enabled,weight,rpm,tpm,max_inflight,reset}
 * and clients.<name>.{rpm,tpm,max_inflight,budget_usd}. The change is
 * validated whole and published atomically; it applies to requests routed
 * (or admitted) afterwards, and lasts until the next air_reload.
 * Thread: any (control calls are serialised internally).
 * Errors: AIR_E_NONAME (no such path), AIR_E_READONLY, AIR_E_RANGE,
 * AIR_E_INVAL (wrong JSON type); err gets a message.
 */
AIR_API AIR_NODISCARD air_status_t air_ctl_set(air_t *r, const char *path, const char *json_value,
                                               char *err, size_t errlen);
/* Typed forms of air_ctl_set. */
AIR_API AIR_NODISCARD air_status_t air_ctl_set_f64(air_t *r, const char *path, double v);
AIR_API AIR_NODISCARD air_status_t air_ctl_set_i64(air_t *r, const char *path, int64_t v);
AIR_API AIR_NODISCARD air_status_t air_ctl_set_bool(air_t *r, const char *path, int v);
AIR_API AIR_NODISCARD air_status_t air_ctl_set_str(air_t *r, const char *path, const char *v);
/*
 * Read one tunable as JSON ("0.5"). Ownership: *out is malloc'd; the caller
 * frees it with free(). Errors: AIR_E_NONAME, AIR_E_NOMEM.
 */
AIR_API AIR_NODISCARD air_status_t air_ctl_get(air_t *r, const char *path, char **out);
/*
 * Every tunable as a JSON array of {"path","type","min","max","mode","value"}
 * (global entries also carry "default"): every global path and every route,
 * deployment and client path of the current configuration. mode is "rw"
 * (read and write), "r-" (read-only, e.g. a rate limit or budget shared
 * through the state store) or "-w" (write-only, e.g. a deployment's reset).
 * Ownership: malloc'd, free() it. NULL on OOM.
 */
AIR_API char *air_ctl_list(air_t *r);
/*
 * Explain how a request body would be routed, without sending it: the route,
 * every candidate deployment with its filter result (and reason) and score
 * components, and the order that would be tried. Ownership: malloc'd JSON,
 * free() it; NULL with err set when the body is invalid.
 */
AIR_API char *air_explain(air_t *r, const char *body, size_t len, char *err, size_t errlen);
/*
 * Replace the configuration with a new JSON text. Validated whole: on any
 * error the running configuration stays and err says why. Requests in
 * flight finish on the configuration they started with. "workers" and
 * "queue_capacity" cannot change at run time (AIR_E_READONLY if they differ).
 * Thread: any. Errors: AIR_E_CONFIG, AIR_E_READONLY, AIR_E_NOMEM.
 */
AIR_API AIR_NODISCARD air_status_t air_reload(air_t *r, const char *config_json, char *err,
                                              size_t errlen);
/* The effective configuration as JSON with every secret redacted (API keys
 * never appear; key variable names do). Ownership: malloc'd, free() it. */
AIR_API char *air_config_json(air_t *r);
/*
 * The models this router serves, in OpenAI's list shape:
 * {"object":"list","data":[{"id","object":"model","created","owned_by"}]}:
 * every route's public name ("owned_by":"airouter") and every model a
 * provider lists in models[] without a route of the same name ("owned_by":
 * the provider's name). For GET /v1/models. Ownership: malloc'd, free() it.
 */
AIR_API char *air_models_json(air_t *r);
/* Requests waiting in the ingress queue right now. Thread: any. */
AIR_API uint32_t air_queue_depth(air_t *r);

#ifdef __cplusplus
}
#endif

#endif /* AIROUTER_H */
