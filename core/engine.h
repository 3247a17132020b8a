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
#include "epoch.h"
#include "retry.h"
#include "retry_budget.h"
#include "route.h"
#include "sse.h"
#include "world.h"

#define AIR_CACHELINE 64
#define AIR_MAX_TAGS  16

struct air__worker;

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
    uint64_t upstream_us;
    double cost_usd;
    char *route;
    char *body; /* NUL-terminated, or NULL */
    size_t body_len;
    char *message; /* never NULL */
    char *code;    /* or NULL */
    char *provider;
    char *model;
    /* The request's tags, moved over from it by air__deliver (never sent
     * upstream; returned so the host can correlate). */
    char *tags[AIR_MAX_TAGS];
    uint32_t ntags;
    /* completion-queue delivery */
    void *ud;
    struct air_resp *next;
};

/* One attempt: a transfer to one deployment. A request has at most two at
 * once (the second is a hedge). */
struct air__att {
    struct air_req *q;
    int active;    /* a transfer is running */
    size_t ci;     /* index into q->deps */
    struct air__admit ad;
    const void *pstate; /* adapter instance for the chosen key */
    long key;           /* index in the provider's key pool, -1 when no pool */
    int key_retry;      /* the failure was the key's (pool has others): retry here */
    CURL *easy;
    struct curl_slist *hdrs;
    air_http_out_t out;
    air_req_view_t view;
    air_buf_t resp_body;
    air_buf_t resp_hdrs; /* name\0value\0... of the last response */
    int http_status;
    int is_sse;
    int stream_finished;
    air_stream_rc_t stream_rc;
    struct air__sse sse;
    air_stream_ctx_t sc;
    void *sstate;
    size_t sstate_size;
    int too_big;
    int hedge;   /* started as a hedge */
    int loser;   /* lost the hedge race: cancel after curl returns */
    uint64_t t_start_us;
    uint64_t t_first_byte_us;
    uint64_t t_last_byte_us;
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
    struct air__world *world; /* the world this request routes in */
    struct air_req *prev, *next; /* worker's active list */
    struct air_req *lnext;       /* worker's local queue (submitted on its thread) */
    uint64_t t_submit_us;
    uint64_t deadline_us;
    const struct air__route *rt;
    size_t deps[AIR_MAX_CANDS];
    struct air__cinfo ci[AIR_MAX_CANDS];
    size_t ndeps;
    struct air__need need;
    struct air__client *client;
    double budget_est_usd;  /* reserved on the client and route budgets */
    int client_cap;         /* entered the client's max_inflight cap */
    uint8_t budget_src;     /* bit 0: client budget, bit 1: route budget reserved from the
                               lease (AIR_SRC_LEASE), else from the local budget */
    uint8_t admit_wait;     /* parked before admission: a shared limit's lease is renewing */
    uint16_t admit_waits;   /* times parked so far */
    uint32_t attempts; /* attempts started */
    uint32_t round;    /* backoff rounds so far */
    uint32_t limit;    /* attempts allowed */
    int waiting;       /* waiting for a backoff/limit timer, no transfer */
    uint64_t start_at_us;
    uint64_t hedge_at_us; /* 0 = no hedge pending */
    int hedged;
    int cancelled;
    air_fault_t fault; /* last attempt's failure */
    int have_fault;
    char rid[32];

    struct air__att att[2];
    int winner;        /* index of the attempt whose bytes reach the caller, -1 none */
    size_t last_ci;    /* candidate of the last attempt (for the response) */
    air_buf_t held;    /* chunks held back before the first content chunk */
    int content_sent;
    int chunks_delivered;
    uint64_t t_first_byte_us;
    uint64_t t_first_content_us;
    uint64_t upstream_us;
    air_usage_t usage;
    char up_model[128];

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
    _Atomic uint64_t hedges;
    _Atomic uint64_t by_class[AIR__ERR_LAST];
};

/* Host source states: NONE -> CLAIMED (an attacher fills the *_p fields)
 * -> ATTACH (the worker adopts them) -> RUNNING -> DETACH -> NONE. */
enum {
    AIR__HOOK_NONE = 0,
    AIR__HOOK_CLAIMED,
    AIR__HOOK_ATTACH,
    AIR__HOOK_RUNNING,
    AIR__HOOK_DETACH
};

/* Per-tag totals (air_stats_json "tags"): each worker keeps its own table,
 * written by that worker only; a reader sees an entry once `used` is set
 * (release, after `name`). Tags beyond the table or longer than the name
 * buffer are counted under "_other". */
#define AIR__TAG_SLOTS   64
#define AIR__TAG_NAMELEN 64
struct air__tagtot {
    _Atomic int used;
    char name[AIR__TAG_NAMELEN];
    _Atomic uint64_t requests, failed, prompt_tokens, completion_tokens;
    _Atomic double cost_usd;
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
    uint64_t rr;       /* round-robin counter */
    air_buf_t scratch; /* chunk copy with a NUL, for the chunk callback */
    struct air__wstats stats;
    struct air__epoch_record *erec;
    struct air__world *world; /* current world (one reference held) */
    struct {
        struct air__world *world;
        uint32_t n;           /* this worker's requests still on it */
    } old[8];                 /* older worlds this worker still has requests on */
    uint32_t nold;
    uint32_t on_current;      /* this worker's requests on `world` */
    struct air__rbudget rbudget;
    struct air__att *losers[64]; /* hedge losers to cancel after curl returns */
    size_t nlosers;
    int64_t next_merge_ms;
    struct air__tagtot *tagtot; /* [AIR__TAG_SLOTS + 1]: the last is "_other" */
    /* Requests submitted on this worker's own thread (from a loop hook or
     * a callback): taken before the shared ring, with no wake-up. Only
     * this thread touches the list. */
    struct air_req *local_head, *local_tail;
    uint32_t nlocal;
    /* An event source of the host run on this thread (air_worker_attach):
     * hook_state 0 none, 1 attach asked, 2 running, 3 detach asked. */
    _Atomic int hook_state; /* AIR__HOOK_* */
    int hook_fd; /* the running source: this thread only */
    air_loop_fn hook_fn;
    void *hook_ud;
    int hook_fd_p; /* the source being attached: written before ATTACH */
    air_loop_fn hook_fn_p;
    void *hook_ud_p;
    int64_t hook_due_ms; /* wall ms when hook_fn wants to run again, -1: on fd */
    _Atomic int exited;     /* the thread left its loop (sources no longer run) */
    uint64_t ncb, ncb_seen; /* callbacks run on this thread; as of the last hook run */
} __attribute__((aligned(AIR_CACHELINE)));

struct air {
    _Atomic(struct air__world *) world; /* current world; router holds a reference */
    uint32_t nworkers_cfg;
    uint32_t queue_capacity;
    uint32_t max_inflight;
    uint32_t spin_us;       /* config spin_us (fixed for the router's life) */
    pthread_mutex_t ctl_mu; /* serialises ctl, reload */
    int ctl_mu_init;
    struct air__epoch *epoch;
    struct air__epoch_record *ctl_rec;

    /* ingress: MPMC ring of struct air_req * */
    ck_ring_t ingress __attribute__((aligned(AIR_CACHELINE)));
    ck_ring_buffer_t *ingress_buf;
    uint32_t ingress_cap;

    struct air__slot *slots;
    uint32_t nslots;
    /* Free slots: a lock-free stack (Treiber) of slot indices. The head is
     * tag << 32 | (index + 1), the tag defeating ABA. Unlike an MPMC ring's
     * ordered enqueue, a push never waits for another (possibly preempted)
     * thread to publish first. */
    _Atomic uint64_t slot_head __attribute__((aligned(AIR_CACHELINE)));
    _Atomic uint32_t *slot_next; /* [nslots]: index + 1 of the next free slot */

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

/* Current world, for control-plane readers (holds a reference: unref it). */
struct air__world *air__router_world(struct air *r);

/* router.c */
void air__wake_one(struct air *r);
uint64_t air__now_us(void);
/* Wall-clock milliseconds (Unix epoch): limits, budgets, health, Retry-After. */
int64_t air__wall_ms(void);
void air__req_destroy(struct air_req *q);
/* Deliver a finished response to the caller (callback or queue) and release
 * the request. Called once per accepted request. */
void air__deliver(struct air *r, struct air_req *q, struct air_resp *resp);
struct air_resp *air__resp_new(void);
void air__slot_release(struct air *r, struct air_req *q);

/* worker.c */
void *air__worker_main(void *arg);
void air__worker_wake(struct air__worker *w);
/* The worker running on this thread, or NULL. */
struct air__worker *air__worker_self(void);
air_status_t air__worker_init(struct air *r, struct air__worker *w, uint32_t idx);
void air__worker_fini(struct air__worker *w);
/* Complete a request that never reached a worker (shutdown leftovers). */
void air__complete_unstarted(struct air *r, struct air_req *q, air_status_t st,
                             air_errclass_t cls, const char *msg);

#endif
