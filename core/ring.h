/*
 * ring.h - the one way core includes Concurrency Kit's ck_ring.
 *
 * Debian's ck 0.7.1 implements ck_pr (the atomics under ck_ring) with inline
 * assembly or, with CK_USE_CC_BUILTINS, with volatile accesses and standalone
 * fences. ThreadSanitizer understands neither, so it would report every
 * hand-off through a ring as a data race and could not check the code around
 * it. In TSan builds (AIR_CK_TSAN_SHIM) this header provides the few ck_pr
 * operations ck_ring uses, as C11-style __atomic builtins with acquire and
 * release ordering (at least as strong as ck's), and keeps <ck_pr.h> out.
 * The ring algorithm itself is ck's in every build.
 */
#ifndef AIR_CORE_RING_H
#define AIR_CORE_RING_H

#if defined(AIR_CK_TSAN_SHIM) && !defined(CK_PR_H)
#define CK_PR_H /* the definitions below replace <ck_pr.h> */
#include <sched.h>
#include <string.h>
#include <ck_cc.h>
#include <ck_md.h>
#include <ck_stdbool.h>
#include <ck_stdint.h>

CK_CC_INLINE static unsigned int
ck_pr_load_uint(const unsigned int *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

CK_CC_INLINE static void
ck_pr_store_uint(unsigned int *p, unsigned int v)
{
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

/* Fences are compiler barriers only: every load above is acquire, every
 * store release and every CAS acq_rel, which already orders what ck's fences
 * order, in a way TSan can follow (it does not model standalone fences). */
CK_CC_INLINE static void
ck_pr_fence_load(void)
{
    __asm__ __volatile__("" ::: "memory");
}

CK_CC_INLINE static void
ck_pr_fence_store(void)
{
    __asm__ __volatile__("" ::: "memory");
}

CK_CC_INLINE static void
ck_pr_fence_store_atomic(void)
{
    __asm__ __volatile__("" ::: "memory");
}

/* Yield rather than spin: TSan serialises threads, and a spinning CAS
 * loop would starve the thread it waits for. */
CK_CC_INLINE static void
ck_pr_stall(void)
{
    sched_yield();
}

CK_CC_INLINE static bool
ck_pr_cas_uint(unsigned int *t, unsigned int old, unsigned int set)
{
    return __atomic_compare_exchange_n(t, &old, set, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

/* *v receives the value found (ck's contract). */
CK_CC_INLINE static bool
ck_pr_cas_uint_value(unsigned int *t, unsigned int old, unsigned int set, unsigned int *v)
{
    bool ok =
        __atomic_compare_exchange_n(t, &old, set, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
    *v = old;
    return ok;
}
/* ck's multi-consumer dequeue copies a slot before its CAS claims it and
 * throws the copy away when the CAS fails; a producer may be rewriting that
 * slot meanwhile. The race is benign by design, but TSan reports it, so in
 * TSan builds pointer-sized slot copies are relaxed atomic accesses. */
CK_CC_INLINE static void *
air__ck_slot_copy(void *dst, const void *src, size_t n)
{
    if (n == sizeof(void *)) {
        void *v = __atomic_load_n((void *const *)src, __ATOMIC_RELAXED);
        __atomic_store_n((void **)dst, v, __ATOMIC_RELAXED);
        return dst;
    }
    return memcpy(dst, src, n);
}
#define memcpy air__ck_slot_copy
#include <ck_ring.h>
#undef memcpy
#endif /* AIR_CK_TSAN_SHIM */

#include <ck_ring.h>

#endif
