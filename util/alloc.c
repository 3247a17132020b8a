/*
 * alloc.c - allocation wrappers. DESIGN: a single choke point for memory, so
 * failure injection (air__alloc_fail_after) can sweep every allocation site
 * in a unit test, and so a custom allocator can be wired in later without
 * touching call sites.
 */
#include "alloc.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* 0 = no failure injection. Relaxed is enough: the hook is for
 * single-threaded tests; the atomic only keeps TSan quiet elsewhere. */
static atomic_ulong fail_countdown;

static int
should_fail(void)
{
    unsigned long k = atomic_load_explicit(&fail_countdown, memory_order_relaxed);
    if (k == 0)
        return 0;
    atomic_store_explicit(&fail_countdown, k - 1, memory_order_relaxed);
    return k == 1;
}

void
air__alloc_fail_after(unsigned long k)
{
    atomic_store_explicit(&fail_countdown, k, memory_order_relaxed);
}

void *
air__malloc(size_t n)
{
    if (should_fail())
        return NULL;
    return malloc(n ? n : 1);
}

void *
air__calloc(size_t nmemb, size_t size)
{
    if (should_fail())
        return NULL;
    return calloc(nmemb ? nmemb : 1, size ? size : 1);
}

void *
air__realloc(void *p, size_t n)
{
    if (should_fail())
        return NULL;
    return realloc(p, n ? n : 1);
}

void
air__free(void *p)
{
    free(p);
}

char *
air__strndup(const char *s, size_t n)
{
    char *d = air__malloc(n + 1);
    if (d == NULL)
        return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *
air__strdup(const char *s)
{
    return air__strndup(s, strlen(s));
}
