/*
 * test_ring.c - concurrency validation of ck_ring used as core uses it
 * (ck_ring_enqueue_mpmc / ck_ring_dequeue_mpmc of pointer-sized values), in
 * the manner of ck's regressions/ck_ring/validate.
 *
 * Single-threaded edges: a ring of size 8 holds exactly 7 items (ck keeps one
 * slot empty), an empty ring refuses a dequeue and leaves the output alone,
 * FIFO across many index wrap-arounds, and across the 32-bit overflow of the
 * ring's head/tail counters.
 *
 * Multi-threaded runs: P producers x C consumers (1x1, 2x2, 4x4, 1x4, 4x1,
 * plus 2x2 across the counter overflow) over a 16-slot ring. Each producer
 * enqueues the sequence 1..N tagged with its id; a full ring is retried
 * (yielding), never dropped. Invariants checked after the join:
 *   - every item produced is delivered exactly once (per-item counters);
 *   - nothing is delivered that was not produced (bad tag or sequence);
 *   - per producer, each consumer sees strictly increasing sequence
 *     numbers (FIFO per producer);
 *   - the ring ends empty and valid.
 * Each run is bounded by an item count AND a time limit: when the limit
 * ends the producers early, the invariants are checked on what was
 * produced. Defaults: N = 200000 per producer (100000 under ASan, 20000
 * under TSan), 600 ms per run. Override with AIR_TEST_RING_ITEMS (items per
 * producer) and AIR_TEST_RING_MS (time limit per run, ms).
 *
 * Under TSan the races TSan reports inside ck's ring code are suppressed
 * (see __tsan_default_suppressions below for why); the invariants are not.
 * Worker threads never call cmocka (it is not thread-safe): they count
 * violations and keep the first message; the main thread asserts.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "ring.h" /* core's way in to <ck_ring.h> (with its TSan shim) */

#if defined(__SANITIZE_THREAD__)
#define RING_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RING_TSAN 1
#endif
#endif

#if defined(__SANITIZE_ADDRESS__)
#define RING_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RING_ASAN 1
#endif
#endif

#if defined(RING_TSAN) && !defined(AIR_CK_TSAN_SHIM)
/*
 * Only for a TSan build without core/ring.h's shim (AIR_CK_TSAN_SHIM): with
 * the shim TSan follows ck_ring's hand-offs and nothing is suppressed.
 * Without it, TSan cannot see how ck_ring synchronises, even with
 * CK_USE_CC_BUILTINS=1:
 * that only swaps ck's inline asm for the generic GCC port, whose loads and
 * stores are plain volatile accesses ordered by __sync_synchronize fences,
 * and TSan does not model fences. So it reports the slot memcpy and the
 * head/tail loads inside ck as races. They are by design (ck's own
 * validation covers them); what this test checks under TSan is everything
 * else: its own synchronisation and, above all, the delivery invariants
 * under TSan's scheduling. The suppressions name only ck's ring internals,
 * so a race in this file's code is still reported.
 */
/* Default visibility: the TSan runtime looks this up dynamically, and the
 * project builds with hidden visibility. */
__attribute__((visibility("default"))) const char *__tsan_default_suppressions(void);

__attribute__((visibility("default"))) const char *
__tsan_default_suppressions(void)
{
    return "race:_ck_ring_enqueue_mp\n"
           "race:_ck_ring_dequeue_mc\n"
           "race:ck_ring_size\n";
}
#endif

/* Not <limits.h>'s UINT_MAX: -I policy makes <limits.h> find policy/limits.h. */
#define RING_UINT_MAX (~0u)
#define MT_RING_SIZE  16
#if defined(RING_TSAN)
#define DEFAULT_ITEMS 20000u
#elif defined(RING_ASAN)
#define DEFAULT_ITEMS 100000u
#else
#define DEFAULT_ITEMS 200000u
#endif
#define DEFAULT_LIMIT_MS 600u
#define MAX_THREADS      8

static uint64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static unsigned long
env_ulong(const char *name, unsigned long dflt, unsigned long lo, unsigned long hi)
{
    const char *s = getenv(name);
    if (s == NULL || *s == '\0')
        return dflt;
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (*end != '\0' || v < lo || v > hi)
        return dflt;
    return v;
}

static void *
as_ptr(uintptr_t v)
{
    return (void *)v;
}

/* ------------------------------------------------------------------ edges */

static void
test_ring_size_8_holds_exactly_7(void **state)
{
    (void)state;
    ck_ring_t ring;
    ck_ring_buffer_t buf[8];
    ck_ring_init(&ring, 8);
    assert_int_equal(ck_ring_capacity(&ring), 8);
    assert_int_equal(ck_ring_size(&ring), 0);

    for (uintptr_t i = 1; i <= 7; i++) {
        assert_true(ck_ring_enqueue_mpmc(&ring, buf, as_ptr(i)));
        assert_int_equal(ck_ring_size(&ring), i);
    }
    /* Full: the eighth is refused, and the ring is unchanged. */
    assert_false(ck_ring_enqueue_mpmc(&ring, buf, as_ptr(8)));
    assert_false(ck_ring_enqueue_mpmc(&ring, buf, as_ptr(9)));
    assert_int_equal(ck_ring_size(&ring), 7);
    assert_true(ck_ring_valid(&ring));

    /* One out makes room for exactly one more. */
    void *v = NULL;
    assert_true(ck_ring_dequeue_mpmc(&ring, buf, &v));
    assert_int_equal((uintptr_t)v, 1);
    assert_true(ck_ring_enqueue_mpmc(&ring, buf, as_ptr(8)));
    assert_false(ck_ring_enqueue_mpmc(&ring, buf, as_ptr(9)));

    /* Drain: 2..8 in order. */
    for (uintptr_t i = 2; i <= 8; i++) {
        assert_true(ck_ring_dequeue_mpmc(&ring, buf, &v));
        assert_int_equal((uintptr_t)v, i);
    }
    assert_int_equal(ck_ring_size(&ring), 0);

    /* The _size variant reports the fill level before the enqueue. */
    unsigned int sz = 99;
    assert_true(ck_ring_enqueue_mpmc_size(&ring, buf, as_ptr(1), &sz));
    assert_int_equal(sz, 0);
    assert_true(ck_ring_enqueue_mpmc_size(&ring, buf, as_ptr(2), &sz));
    assert_int_equal(sz, 1);
}

static void
test_ring_empty_dequeue_fails(void **state)
{
    (void)state;
    ck_ring_t ring;
    ck_ring_buffer_t buf[8];
    ck_ring_init(&ring, 8);

    void *sentinel = &ring;
    void *v = sentinel;
    assert_false(ck_ring_dequeue_mpmc(&ring, buf, &v));
    assert_false(ck_ring_trydequeue_mpmc(&ring, buf, &v));
    assert_ptr_equal(v, sentinel); /* a failed dequeue writes nothing */

    assert_true(ck_ring_enqueue_mpmc(&ring, buf, as_ptr(42)));
    assert_true(ck_ring_dequeue_mpmc(&ring, buf, &v));
    assert_int_equal((uintptr_t)v, 42);

    v = sentinel;
    assert_false(ck_ring_dequeue_mpmc(&ring, buf, &v));
    assert_false(ck_ring_trydequeue_mpmc(&ring, buf, &v));
    assert_ptr_equal(v, sentinel);
    assert_int_equal(ck_ring_size(&ring), 0);

    /* NULL is a legal value and distinguishable from "empty". */
    assert_true(ck_ring_enqueue_mpmc(&ring, buf, NULL));
    assert_true(ck_ring_dequeue_mpmc(&ring, buf, &v));
    assert_null(v);
    assert_false(ck_ring_dequeue_mpmc(&ring, buf, &v));
}

/* Push k (1..7) items, pop them all, for many rounds; the indices wrap around
 * the 8 slots over and over. Starting counters at `start` lets a run cross
 * the 32-bit overflow of c_head/p_head/p_tail. */
static void
wrap_rounds(unsigned int start, unsigned rounds)
{
    ck_ring_t ring;
    ck_ring_buffer_t buf[8];
    ck_ring_init(&ring, 8);
    ring.c_head = ring.p_head = ring.p_tail = start; /* quiescent ring: allowed */
    assert_true(ck_ring_valid(&ring));

    uintptr_t next_in = 1, next_out = 1;
    unsigned long moved = 0;
    for (unsigned r = 0; r < rounds; r++) {
        unsigned k = 1 + (r * 5u) % 7u;
        for (unsigned i = 0; i < k; i++)
            assert_true(ck_ring_enqueue_mpmc(&ring, buf, as_ptr(next_in++)));
        if (k == 7)
            assert_false(ck_ring_enqueue_mpmc(&ring, buf, as_ptr(0)));
        assert_int_equal(ck_ring_size(&ring), k);
        void *v;
        for (unsigned i = 0; i < k; i++) {
            assert_true(ck_ring_dequeue_mpmc(&ring, buf, &v));
            assert_int_equal((uintptr_t)v, next_out);
            next_out++;
        }
        assert_false(ck_ring_dequeue_mpmc(&ring, buf, &v));
        moved += k;
    }
    assert_int_equal(next_in, next_out);
    assert_true(moved > (unsigned long)rounds);
}

static void
test_ring_wraps_many_times_keeps_fifo(void **state)
{
    (void)state;
    /* ~400000 items through 8 slots: 50000 wraps of the index. */
    wrap_rounds(0, 100000);
}

static void
test_ring_counter_overflow_keeps_fifo(void **state)
{
    (void)state;
    /* The head/tail counters are unsigned int and wrap after 2^32
     * operations (hours at full load); start just below the wrap. */
    wrap_rounds(RING_UINT_MAX - 100, 1000);
    wrap_rounds(RING_UINT_MAX - 3, 50);
}

/* ------------------------------------------------------------------ MPMC */

struct mt_run;

struct consumer {
    struct mt_run *run;
    uint32_t *last; /* last sequence seen from each producer (0: none) */
    unsigned long got;
};

struct producer {
    struct mt_run *run;
    unsigned id;
    atomic_ulong produced; /* items enqueued, published when the thread ends */
    unsigned long full_spins;
};

struct mt_run {
    ck_ring_t ring;
    ck_ring_buffer_t buf[MT_RING_SIZE];
    unsigned np, nc;
    uint32_t items;       /* per producer */
    uint64_t deadline_ns; /* producers stop enqueueing after this */
    atomic_uchar *count;  /* deliveries per item: [p * items + (seq - 1)] */
    atomic_uint producers_left;
    atomic_uint start_gate;
    atomic_ulong violations;
    atomic_flag msg_taken;
    char msg[256]; /* first violation; written once, by whoever takes msg_taken */
    struct producer prod[MAX_THREADS];
    struct consumer cons[MAX_THREADS];
};

static void violation(struct mt_run *run, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
violation(struct mt_run *run, const char *fmt, ...)
{
    atomic_fetch_add_explicit(&run->violations, 1, memory_order_relaxed);
    if (!atomic_flag_test_and_set_explicit(&run->msg_taken, memory_order_acq_rel)) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(run->msg, sizeof run->msg, fmt, ap);
        va_end(ap);
    }
}

/* Items are tag * (items + 1) + seq with tag = producer + 1 and seq in
 * 1..items, so no value is 0 and every value decodes uniquely. */
static uintptr_t
encode(const struct mt_run *run, unsigned p, uint32_t seq)
{
    return (uintptr_t)(p + 1) * ((uintptr_t)run->items + 1) + seq;
}

static void
wait_gate(struct mt_run *run)
{
    /* Start everyone together so the threads really overlap. */
    atomic_fetch_sub_explicit(&run->start_gate, 1, memory_order_acq_rel);
    while (atomic_load_explicit(&run->start_gate, memory_order_acquire) != 0)
        sched_yield();
}

static void *
producer_main(void *arg)
{
    struct producer *pr = arg;
    struct mt_run *run = pr->run;
    uint32_t seq = 1;
    wait_gate(run);
    for (; seq <= run->items; seq++) {
        void *item = as_ptr(encode(run, pr->id, seq));
        unsigned spins = 0;
        while (!ck_ring_enqueue_mpmc(&run->ring, run->buf, item)) {
            pr->full_spins++;
            /* Full: back off; never drop. Check the clock now and then. */
            if ((++spins & 15u) == 0 && now_ns() > run->deadline_ns)
                goto out;
            sched_yield();
        }
        if ((seq & 63u) == 0 && now_ns() > run->deadline_ns) {
            seq++;
            break;
        }
    }
out:
    atomic_store_explicit(&pr->produced, seq - 1, memory_order_relaxed);
    /* release: everything this producer enqueued happens before a consumer
     * that reads producers_left == 0 decides the ring is drained. */
    atomic_fetch_sub_explicit(&run->producers_left, 1, memory_order_release);
    return NULL;
}

static void
consume_one(struct consumer *co, uintptr_t v)
{
    struct mt_run *run = co->run;
    uintptr_t stride = (uintptr_t)run->items + 1;
    uintptr_t tag = v / stride;
    uintptr_t seq = v % stride;
    if (tag < 1 || tag > run->np || seq < 1) {
        violation(run, "consumer got a value that was never produced: %#lx", (unsigned long)v);
        return;
    }
    unsigned p = (unsigned)(tag - 1);
    if (seq <= co->last[p]) {
        violation(run, "FIFO broken: after seq %u of producer %u, seq %u came", co->last[p], p,
                  (unsigned)seq);
    }
    co->last[p] = (uint32_t)seq;
    unsigned char before = atomic_fetch_add_explicit(
        &run->count[(size_t)p * run->items + (seq - 1)], 1, memory_order_relaxed);
    if (before != 0)
        violation(run, "item %u of producer %u delivered twice", (unsigned)seq, p);
    co->got++;
}

static void *
consumer_main(void *arg)
{
    struct consumer *co = arg;
    struct mt_run *run = co->run;
    wait_gate(run);
    for (;;) {
        void *v;
        if (ck_ring_dequeue_mpmc(&run->ring, run->buf, &v)) {
            consume_one(co, (uintptr_t)v);
            continue;
        }
        /* Empty. Done only if every producer has finished AND the ring is
         * still empty after that was seen (acquire pairs with the
         * producers' release), else yield and retry. */
        if (atomic_load_explicit(&run->producers_left, memory_order_acquire) == 0) {
            if (ck_ring_dequeue_mpmc(&run->ring, run->buf, &v)) {
                consume_one(co, (uintptr_t)v);
                continue;
            }
            break;
        }
        sched_yield();
    }
    return NULL;
}

static void
mt_case(unsigned np, unsigned nc, unsigned int start_counter)
{
    assert_true(np >= 1 && np <= MAX_THREADS && nc >= 1 && nc <= MAX_THREADS);
    const uint32_t items = (uint32_t)env_ulong("AIR_TEST_RING_ITEMS", DEFAULT_ITEMS, 1, 10000000);
    const unsigned long limit_ms = env_ulong("AIR_TEST_RING_MS", DEFAULT_LIMIT_MS, 1, 600000);

    struct mt_run *run = air__calloc(1, sizeof *run);
    assert_non_null(run);
    ck_ring_init(&run->ring, MT_RING_SIZE);
    run->ring.c_head = run->ring.p_head = run->ring.p_tail = start_counter;
    run->np = np;
    run->nc = nc;
    run->items = items;
    run->count = air__calloc((size_t)np * items, sizeof *run->count);
    assert_non_null(run->count);
    for (size_t i = 0; i < (size_t)np * items; i++)
        atomic_init(&run->count[i], 0);
    atomic_init(&run->producers_left, np);
    atomic_init(&run->start_gate, np + nc);
    atomic_init(&run->violations, 0);
    atomic_flag_clear(&run->msg_taken);

    pthread_t th[2 * MAX_THREADS];
    unsigned nth = 0;
    uint64_t t0 = now_ns();
    run->deadline_ns = t0 + (uint64_t)limit_ms * 1000000u;
    for (unsigned c = 0; c < nc; c++) {
        run->cons[c].run = run;
        run->cons[c].last = air__calloc(np, sizeof(uint32_t));
        assert_non_null(run->cons[c].last);
    }
    for (unsigned p = 0; p < np; p++) {
        run->prod[p].run = run;
        run->prod[p].id = p;
        atomic_init(&run->prod[p].produced, 0);
    }
    for (unsigned c = 0; c < nc; c++)
        assert_int_equal(pthread_create(&th[nth++], NULL, consumer_main, &run->cons[c]), 0);
    for (unsigned p = 0; p < np; p++)
        assert_int_equal(pthread_create(&th[nth++], NULL, producer_main, &run->prod[p]), 0);
    for (unsigned i = 0; i < nth; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    uint64_t elapsed_ms = (now_ns() - t0) / 1000000u;

    /* After the joins every thread's writes are visible here. */
    unsigned long produced_total = 0, consumed_total = 0, full_spins = 0;
    int limited = 0;
    for (unsigned p = 0; p < np; p++) {
        unsigned long n = atomic_load(&run->prod[p].produced);
        produced_total += n;
        full_spins += run->prod[p].full_spins;
        limited |= n < items;
        /* Exactly once for every produced item, never for the rest. */
        for (uint32_t s = 1; s <= items; s++) {
            unsigned char k = atomic_load(&run->count[(size_t)p * items + (s - 1)]);
            unsigned char want = s <= n ? 1 : 0;
            if (k != want) {
                print_error("producer %u item %u (of %lu produced) delivered %u times\n", p, s, n,
                            k);
                fail();
            }
        }
    }
    for (unsigned c = 0; c < nc; c++)
        consumed_total += run->cons[c].got;

    printf("ring %ux%u: %lu items in %llu ms (%s), %lu full-ring retries, %lu violations\n", np, nc,
           produced_total, (unsigned long long)elapsed_ms, limited ? "time limit" : "all",
           full_spins, (unsigned long)atomic_load(&run->violations));
    if (atomic_load(&run->violations) != 0) {
        print_error("%s\n", run->msg);
        fail();
    }
    assert_int_equal(consumed_total, produced_total);
    /* Progress. ck's MPMC enqueue is lock-free, not wait-free: the system
     * as a whole progresses, but one producer may starve while others win
     * every CAS (seen with 8 threads on 2 loaded cores), so only the total
     * is asserted. Even a slow sanitizer build moves far more than this. */
    assert_true(produced_total >= (items < 100 ? (unsigned long)items * np : 100ul * np));
    /* Drained and consistent. */
    void *v;
    assert_int_equal(ck_ring_size(&run->ring), 0);
    assert_false(ck_ring_dequeue_mpmc(&run->ring, run->buf, &v));
    assert_int_equal(run->ring.p_head, run->ring.p_tail);
    assert_int_equal(run->ring.c_head, run->ring.p_head);
    assert_int_equal((unsigned int)(run->ring.p_head - start_counter),
                     (unsigned int)produced_total);

    for (unsigned c = 0; c < nc; c++)
        air__free(run->cons[c].last);
    air__free(run->count);
    air__free(run);
}

static void
test_ring_mpmc_1x1_exactly_once_fifo(void **state)
{
    (void)state;
    mt_case(1, 1, 0);
}

static void
test_ring_mpmc_2x2_exactly_once_fifo(void **state)
{
    (void)state;
    mt_case(2, 2, 0);
}

static void
test_ring_mpmc_4x4_exactly_once_fifo(void **state)
{
    (void)state;
    mt_case(4, 4, 0);
}

static void
test_ring_mpmc_1x4_exactly_once_fifo(void **state)
{
    (void)state;
    mt_case(1, 4, 0);
}

static void
test_ring_mpmc_4x1_exactly_once_fifo(void **state)
{
    (void)state;
    mt_case(4, 1, 0);
}

static void
test_ring_mpmc_2x2_across_counter_overflow_exactly_once_fifo(void **state)
{
    (void)state;
    mt_case(2, 2, RING_UINT_MAX - 1000);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ring_size_8_holds_exactly_7),
        cmocka_unit_test(test_ring_empty_dequeue_fails),
        cmocka_unit_test(test_ring_wraps_many_times_keeps_fifo),
        cmocka_unit_test(test_ring_counter_overflow_keeps_fifo),
        cmocka_unit_test(test_ring_mpmc_1x1_exactly_once_fifo),
        cmocka_unit_test(test_ring_mpmc_2x2_exactly_once_fifo),
        cmocka_unit_test(test_ring_mpmc_4x4_exactly_once_fifo),
        cmocka_unit_test(test_ring_mpmc_1x4_exactly_once_fifo),
        cmocka_unit_test(test_ring_mpmc_4x1_exactly_once_fifo),
        cmocka_unit_test(test_ring_mpmc_2x2_across_counter_overflow_exactly_once_fifo),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
