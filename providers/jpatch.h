/*
 * jpatch.h - edits recorded over a read-only cJSON tree, printed in one pass.
 *
 * An adapter that must change a few members of the caller's request (rename
 * a key, drop the members a vendor rejects, replace a tool-call id) used to
 * deep-copy the parsed body, edit the copy and print it: on a 2 KB request
 * the copy, its frees and cJSON's printer were 80 % of the encode time. A
 * patch instead records what changes, keyed by the tree's own node
 * pointers, and air__jp_print writes the edited text straight from the
 * original tree. The tree is never written, so one parsed body serves every
 * attempt of a request (retries, failover, hedges) unchanged.
 *
 * Edits, applied in the order they are made, each seeing the earlier ones:
 *   put(obj, key, val)  obj[key] = val: replaces the first member of that
 *                       name in place and drops later duplicates; appends
 *                       when there is none;
 *   drop(obj, key)      removes every member of that name;
 *   drop_member(...)    removes one member found by air__jp_next;
 *   get(obj, key)       the value obj[key] has after the edits so far.
 * Values given to put are borrowed: a node of the original tree, or one made
 * with air__jp_string / air__jp_own, which the patch frees. Keys given to
 * put are borrowed too and must outlive the patch (literals, config).
 *
 * Errors are sticky: after an allocation failure every edit is a no-op and
 * air__jp_print fails (returns -1). Not thread-safe; one patch per encode.
 */
#ifndef AIR_PROVIDERS_JPATCH_H
#define AIR_PROVIDERS_JPATCH_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "buf.h"

struct air__jp_slot; /* hash entries, private to jpatch.c */

struct air__jpatch {
    struct air__jp_edit *e; /* the edit records */
    size_t n, cap;
    size_t edits; /* edits made (an amended record counts again) */
    struct air__jp_slot *h; /* node pointer -> edit, open addressing */
    size_t hcap, hn;
    cJSON **own; /* values the patch frees */
    size_t nown, owncap;
    int oom;
};

#define AIR_JPATCH_INIT {NULL, 0, 0, 0, NULL, 0, 0, NULL, 0, 0, 0}

/* One member of an object as the edits left it (see air__jp_next). */
struct air__jp_member {
    const char *key;
    const cJSON *val;
    /* private: where the member comes from */
    const cJSON *node; /* the original member, or NULL for an added one */
    size_t add;        /* index of the add edit when node is NULL */
};

/* Iteration state for air__jp_next; start from AIR_JP_ITER_INIT. */
struct air__jp_iter {
    const cJSON *next;
    size_t add;
    int phase;
};

#define AIR_JP_ITER_INIT {NULL, 0, 0}

void air__jp_free(struct air__jpatch *p);
/* Number of edits made (0: the original text can go out unchanged). */
size_t air__jp_count(const struct air__jpatch *p);

const cJSON *air__jp_get(const struct air__jpatch *p, const cJSON *obj, const char *key);
void air__jp_put(struct air__jpatch *p, const cJSON *obj, const char *key, const cJSON *val);
void air__jp_drop(struct air__jpatch *p, const cJSON *obj, const char *key);
void air__jp_drop_member(struct air__jpatch *p, const cJSON *obj, const struct air__jp_member *m);
/* Iterate obj's members after the edits: originals in order, then added
 * ones; returns 0 at the end. Dropping or replacing the member just
 * returned is allowed. */
int air__jp_next(const struct air__jpatch *p, const cJSON *obj, struct air__jp_iter *it,
                 struct air__jp_member *m);

/* A string value owned by the patch (NULL on OOM, which is sticky). */
const cJSON *air__jp_string(struct air__jpatch *p, const char *s);
/* Hand a value to the patch, which frees it (NULL: OOM, sticky). */
const cJSON *air__jp_own(struct air__jpatch *p, cJSON *v);

/* Append the edited text of root to b. 0, or -1 after an OOM (the patch's
 * or b's). */
int air__jp_print(const struct air__jpatch *p, const cJSON *root, air_buf_t *b);

#endif
