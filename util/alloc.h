/*
 * alloc.h - the one place airouter allocates memory.
 *
 * Every allocation in the library goes through these functions (a CI grep
 * bans raw malloc/free/strdup elsewhere), so an allocator can be injected and
 * allocation failure can be tested. Today they forward to the C library; the
 * `airouter` program links jemalloc as its process malloc when built with
 * AIR_ALLOCATOR=jemalloc, and the library never replaces the host's malloc.
 */
#ifndef AIR_UTIL_ALLOC_H
#define AIR_UTIL_ALLOC_H

#include <stddef.h>

void *air__malloc(size_t n);
void *air__calloc(size_t nmemb, size_t size);
void *air__realloc(void *p, size_t n);
void air__free(void *p);
char *air__strdup(const char *s);
char *air__strndup(const char *s, size_t n);

/* Test hook: make the k-th allocation from now on fail (k >= 1); 0 disables.
 * Counting is process-wide and only meant for single-threaded unit tests. */
void air__alloc_fail_after(unsigned long k);

#endif
