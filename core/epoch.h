/*
 * epoch.h - safe memory reclamation for the read-mostly snapshots (tunables,
 * published statistics), on Concurrency Kit's ck_epoch.
 *
 * Readers (workers) bracket every look at a snapshot with begin/end and
 * never hold a section across blocking I/O or a user callback. A writer
 * publishes a new pointer, then calls synchronize (all sections that could
 * have seen the old pointer are over) and frees the old copy.
 *
 * ck_epoch is only included by epoch.c: the TSan build replaces ck_pr for
 * ck_ring (ring.h), and this keeps ck_epoch on ck's own primitives. ck's
 * atomics are invisible to ThreadSanitizer, so in TSan builds the wrappers
 * add acquire/release annotations that tell it what synchronize guarantees.
 */
#ifndef AIR_CORE_EPOCH_H
#define AIR_CORE_EPOCH_H

struct air__epoch;        /* one per router */
struct air__epoch_record; /* one per thread that reads or writes */

struct air__epoch *air__epoch_new(void);
void air__epoch_free(struct air__epoch *e);
struct air__epoch_record *air__epoch_register(struct air__epoch *e);
void air__epoch_begin(struct air__epoch_record *r);
void air__epoch_end(struct air__epoch_record *r);
/* Wait until every section that started before this call has ended. */
void air__epoch_synchronize(struct air__epoch_record *r);

#endif
