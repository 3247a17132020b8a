/*
 * epoch.c - thin wrappers over ck_epoch (see epoch.h).
 */
#include <stdlib.h>

#include <ck_epoch.h>

#include "alloc.h"
#include "epoch.h"

#if defined(__SANITIZE_THREAD__)
#define AIR_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define AIR_TSAN 1
#endif
#endif

#ifdef AIR_TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#endif

struct air__epoch {
    ck_epoch_t ck;
    /* Records ever registered, so synchronize can annotate them for TSan. */
    struct air__epoch_record *records;
};

struct air__epoch_record {
    ck_epoch_record_t ck;
    struct air__epoch *owner;
    struct air__epoch_record *next;
    char tsan_sync; /* address used for the TSan annotations */
};

struct air__epoch *
air__epoch_new(void)
{
    struct air__epoch *e = air__calloc(1, sizeof *e);
    if (e != NULL)
        ck_epoch_init(&e->ck);
    return e;
}

void
air__epoch_free(struct air__epoch *e)
{
    if (e == NULL)
        return;
    struct air__epoch_record *r = e->records;
    while (r != NULL) {
        struct air__epoch_record *n = r->next;
        ck_epoch_unregister(&r->ck);
        air__free(r);
        r = n;
    }
    air__free(e);
}

/* Registration happens while the router is being built or under the
 * control mutex, never concurrently with itself. */
struct air__epoch_record *
air__epoch_register(struct air__epoch *e)
{
    struct air__epoch_record *r = air__calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    ck_epoch_register(&e->ck, &r->ck, NULL);
    r->owner = e;
    r->next = e->records;
    e->records = r;
    return r;
}

void
air__epoch_begin(struct air__epoch_record *r)
{
    ck_epoch_begin(&r->ck, NULL);
}

void
air__epoch_end(struct air__epoch_record *r)
{
#ifdef AIR_TSAN
    /* Everything read in the section happens before a later synchronize. */
    __tsan_release(&r->tsan_sync);
#endif
    ck_epoch_end(&r->ck, NULL);
}

void
air__epoch_synchronize(struct air__epoch_record *r)
{
    ck_epoch_synchronize(&r->ck);
#ifdef AIR_TSAN
    for (struct air__epoch_record *x = r->owner->records; x != NULL; x = x->next)
        __tsan_acquire(&x->tsan_sync);
#endif
}
