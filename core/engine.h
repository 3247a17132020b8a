/*
 * engine.h - internal structures of the router: the router handle, requests,
 * responses, workers. Shared by router.c (the API side) and worker.c (the
 * data plane). Nothing here is API.
 */
#ifndef AIR_CORE_ENGINE_H
#define AIR_CORE_ENGINE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "ring.h"
#include <curl/curl.h>
#include <cjson/cJSON.h>

#include "airouter.h"
#include "airouter/provider.h"
#include "buf.h"
#include "config.h"
#include "retry.h"
#include "sse.h"

#define AIR_CACHELINE 64
#define AIR_MAX_TAGS  16

struct air__worker;

/* One configured provider instance: its config, its adapter and the state
 * the adapter built. Immutable after air_new. */
struct air__prov {
    const struct air__provider_cfg *cfg;
    const air_provider_ops_t *ops;
    void *state;
};

/* A slot gives every accepted request a cancellable id without a lock:
 * word = generation << 1 | cancel bit. The id handed out is
 * (generation << 32) | (slot index + 1). */
struct air__slot {
    _Atomic uint64_t word;
    _Atomic int32_t worker; /* owning worker, -1 while queued */
    uint32_t pad;
    struct air_req *req;    /* set and read only by the owning worker */
};

/* A response: immutable once published, reference counted. */
struct air_resp {
    _Atomic uint32_t refs;
    air_status_t status;
    air_errclass_t cls;
    int http_status;
    int64_t retry_after_ms;
    uint64_t id;
    uint32_t attempts;
    int streamed;
    int chunks_delivered;
    uint64_t latency_us;
    uint64_t ttft_us;
    air_usage_t usage;
    char *body; /* NUL-terminated, or NULL */
    size_t body_len;
    char *message; /* never NULL */
    char *code;    /* or NULL */
    char *provider;
    char *model;
    /* completion-queue delivery */
    void *ud;
    struct air_resp *next;
};

/* One candidate deployment for a request. */
struct air__cand {
    size_t prov;       /* index into air->prov */
    const char *model; /* upstream model, borrowed from the config */
};

struct air_req {
    struct air *r;
    uint64_t id;
    uint32_t slot;

    /* what the caller gave */
    char *raw;
    size_t raw_len;
    cJSON *body;
    const char *model; /* body.model, borrowed from `body` */
    char *pin;         /* pinned provider or NULL */
    char *client_key;
    char *tags[AIR_MAX_TAGS];
    uint32_t ntags;
    uint32_t deadline_ms;
    uint32_t max_attempts;
    air_done_fn done;
    void *done_ud;
    air_chunk_fn chunk;
    void *chunk_ud;
    int stream;
    int include_usage;

    /* worker-owned state from here on */
    struct air__worker *w;
    struct air_req *prev, *next; /* worker's active list */
    uint64_t t_submit_us;
    uint64_t deadline_us;
    struct air__cand *cands;
    struct air__cand_state *cstate;
    size_t ncands;
    size_t cur;        /* candidate of the current/last attempt */
    uint32_t attempts; /* attempts started */
    uint32_t round;    /* backoff rounds so far */
    uint32_t limit;    /* attempts allowed */
    uint64_t start_at_us; /* when waiting: when the next attempt may start */
    char rid[32];      /* "air-<id in hex>" for adapters */
    int waiting;       /* waiting for a backoff timer, no transfer */
    int cancelled;
    air_fault_t fault; /* last attempt's failure */
    int have_fault;

    /* current attempt */
    CURL *easy;
    struct curl_slist *hdrs;
    air_http_out_t out;
    air_req_view_t view;
    air_buf_t resp_body;
    air_buf_t resp_hdrs; /* "name: value\n" lines of the last response */
    int http_status;
    int is_sse;           /* decided at the first body byte */
    int stream_finished;  /* adapter returned DONE or ERROR */
    air_stream_rc_t stream_rc;
    struct air__sse sse;
    air_stream_ctx_t sc;
    void *sstate;
    size_t sstate_size;
    air_buf_t held;       /* chunks held back before the first content chunk */
    int content_sent;     /* a content chunk reached the caller: no failover */
    int chunks_delivered;
    int too_big;
    uint64_t t_attempt_us;
    uint64_t t_first_byte_us;
    uint64_t t_first_content_us;
    uint64_t t_last_byte_us;

    /* timer heap */
    size_t heap_idx; /* 0 = not in heap; else index + 1 */
    uint64_t timer_at_us;
};

/* Per-worker counters: written only by the owning worker (relaxed atomics,
 * never contended), summed by air_stats_json. */
struct air__wstats {
    _Atomic uint64_t started;
    _Atomic uint64_t completed;
    _Atomic uint64_t ok;
    _Atomic uint64_t failed;
    _Atomic uint64_t attempts;
    _Atomic uint64_t retries;
    _Atomic uint64_t by_class[AIR__ERR_LAST];
};

struct air__wprov {
    _Atomic uint64_t requests;
    _Atomic uint64_t errors;
    _Atomic uint64_t prompt_tokens;
    _Atomic uint64_t completion_tokens;
};

struct air__worker {
    struct air *r;
    pthread_t thread;
    uint32_t idx;
    CURLM *multi;
    /* cancel requests for this worker's requests (ids) */
    ck_ring_t cancel_ring;
    ck_ring_buffer_t *cancel_buf;
    _Atomic int cancel_scan; /* the cancel ring overflowed: scan everything */
    _Atomic int sleeping;    /* inside (or about to enter) curl_multi_poll */
    struct air_req *active;  /* requests this worker owns */
    uint32_t nactive;
    uint32_t max_active;
    struct air_req **heap; /* min-heap on timer_at_us */
    size_t heap_len;
    size_t heap_cap;
    CURL **easy_pool;
    size_t easy_pool_len;
    uint64_t rnd;
    air_buf_t scratch; /* chunk copy with a NUL, for the chunk callback */
    struct air__wstats stats;
    struct air__wprov *pstats; /* one per provider */
    uint32_t *pinflight;       /* this worker's transfers per provider */
    uint32_t *pcap;            /* this worker's share of provider max_inflight (0 = none) */
} __attribute__((aligned(AIR_CACHELINE)));

struct air {
    struct air__config *cfg;
    struct air__prov *prov;
    size_t nprov;

    /* ingress: MPMC ring of struct air_req * */
    ck_ring_t ingress __attribute__((aligned(AIR_CACHELINE)));
    ck_ring_buffer_t *ingress_buf;
    uint32_t ingress_cap;

    struct air__slot *slots;
    uint32_t nslots;
    ck_ring_t slot_free;
    ck_ring_buffer_t *slot_free_buf;

    struct air__worker *workers;
    uint32_t nworkers;
    _Atomic uint32_t wake_rr;

    _Atomic int stopping __attribute__((aligned(AIR_CACHELINE)));
    _Atomic int64_t drain_deadline_us; /* 0 = none yet */
    _Atomic uint64_t seq;

    /* completion queue: lock-free stack of responses + eventfd */
    _Atomic(struct air_resp *) cq_head __attribute__((aligned(AIR_CACHELINE)));
    int cq_fd;
    struct air_resp *cq_local; /* popped, in FIFO order, poller-owned */

    CURLSH *share;
    pthread_mutex_t share_lock[CURL_LOCK_DATA_LAST];
};

/* router.c */
void air__wake_one(struct air *r);
uint64_t air__now_us(void);
void air__req_destroy(struct air_req *q);
/* Deliver a finished response to the caller (callback or queue) and release
 * the request. Called once per accepted request. */
void air__deliver(struct air *r, struct air_req *q, struct air_resp *resp);
struct air_resp *air__resp_new(void);
void air__slot_release(struct air *r, struct air_req *q);

/* worker.c */
void *air__worker_main(void *arg);
void air__worker_wake(struct air__worker *w);
air_status_t air__worker_init(struct air *r, struct air__worker *w, uint32_t idx);
void air__worker_fini(struct air__worker *w);
/* Complete a request that never reached a worker (shutdown leftovers). */
void air__complete_unstarted(struct air *r, struct air_req *q, air_status_t st,
                             air_errclass_t cls, const char *msg);

#endif
