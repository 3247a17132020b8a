/*
 * jpatch.c - edits over a read-only cJSON tree (see jpatch.h).
 *
 * Every edit is a record in p->e. A small open-addressing table maps node
 * pointers to what the edits say about them: for a member node, the edit
 * that drops or replaces it (the latest wins); for an object, the chain of
 * members added to it and whether any of its members was edited at all. The
 * printer consults the table once per object and, only for an object that
 * was edited, once per member; an untouched subtree prints as plain cJSON.
 */
#include "jpatch.h"

#include <stdint.h>
#include <string.h>

#include "alloc.h"

#define NONE SIZE_MAX

enum { JP_DROP = 1, JP_SET, JP_ADD };

struct air__jp_edit {
    int op;
    int dead;         /* JP_ADD dropped again */
    const char *key;  /* JP_ADD */
    const cJSON *val; /* JP_SET, JP_ADD */
    size_t next_add;  /* JP_ADD: the next add to the same object */
};

struct air__jp_slot {
    const void *k; /* NULL: empty */
    size_t medit;  /* member: the edit that drops or replaces it, or NONE */
    size_t addh;   /* object: first and last add edits, or NONE */
    size_t addt;
    int touched; /* object: a member was dropped or replaced */
};

static size_t
hash_ptr(const void *k, size_t mask)
{
    uint64_t x = (uint64_t)(uintptr_t)k;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x & mask;
}

static struct air__jp_slot *
slot_find(const struct air__jpatch *p, const void *k)
{
    if (p->hn == 0)
        return NULL;
    size_t mask = p->hcap - 1;
    for (size_t i = hash_ptr(k, mask);; i = (i + 1) & mask) {
        if (p->h[i].k == k)
            return &p->h[i];
        if (p->h[i].k == NULL)
            return NULL;
    }
}

static int
grow_table(struct air__jpatch *p)
{
    size_t ncap = p->hcap ? p->hcap * 2 : 32;
    struct air__jp_slot *nh = air__calloc(ncap, sizeof *nh);
    if (nh == NULL)
        return -1;
    for (size_t i = 0; i < p->hcap; i++) {
        if (p->h[i].k == NULL)
            continue;
        size_t j = hash_ptr(p->h[i].k, ncap - 1);
        while (nh[j].k != NULL)
            j = (j + 1) & (ncap - 1);
        nh[j] = p->h[i];
    }
    air__free(p->h);
    p->h = nh;
    p->hcap = ncap;
    return 0;
}

static struct air__jp_slot *
slot_get(struct air__jpatch *p, const void *k)
{
    struct air__jp_slot *s = slot_find(p, k);
    if (s != NULL)
        return s;
    if ((p->hn + 1) * 2 > p->hcap && grow_table(p) != 0) {
        p->oom = 1;
        return NULL;
    }
    size_t mask = p->hcap - 1;
    size_t i = hash_ptr(k, mask);
    while (p->h[i].k != NULL)
        i = (i + 1) & mask;
    p->h[i] = (struct air__jp_slot){.k = k, .medit = NONE, .addh = NONE, .addt = NONE};
    p->hn++;
    return &p->h[i];
}

static size_t
new_edit(struct air__jpatch *p, int op, const char *key, const cJSON *val)
{
    if (p->n == p->cap) {
        size_t ncap = p->cap ? p->cap * 2 : 16;
        struct air__jp_edit *ne = air__realloc(p->e, ncap * sizeof *ne);
        if (ne == NULL) {
            p->oom = 1;
            return NONE;
        }
        p->e = ne;
        p->cap = ncap;
    }
    p->e[p->n] = (struct air__jp_edit){.op = op, .key = key, .val = val, .next_add = NONE};
    p->edits++;
    return p->n++;
}

void
air__jp_free(struct air__jpatch *p)
{
    for (size_t i = 0; i < p->nown; i++)
        cJSON_Delete(p->own[i]);
    air__free(p->own);
    air__free(p->e);
    air__free(p->h);
    memset(p, 0, sizeof *p);
}

size_t
air__jp_count(const struct air__jpatch *p)
{
    return p->edits;
}

int
air__jp_next(const struct air__jpatch *p, const cJSON *obj, struct air__jp_iter *it,
             struct air__jp_member *m)
{
    if (it->phase == 0) {
        it->next = obj->child;
        it->phase = 1;
    }
    if (it->phase == 1) {
        const struct air__jp_slot *os = slot_find(p, obj);
        int touched = os != NULL && os->touched;
        while (it->next != NULL) {
            const cJSON *c = it->next;
            it->next = c->next;
            const cJSON *val = c;
            if (touched) {
                const struct air__jp_slot *s = slot_find(p, c);
                if (s != NULL && s->medit != NONE) {
                    const struct air__jp_edit *e = &p->e[s->medit];
                    if (e->op == JP_DROP)
                        continue;
                    val = e->val;
                }
            }
            *m = (struct air__jp_member){.key = c->string, .val = val, .node = c, .add = NONE};
            return 1;
        }
        it->phase = 2;
        it->add = os != NULL ? os->addh : NONE;
    }
    while (it->add != NONE) {
        const struct air__jp_edit *e = &p->e[it->add];
        size_t idx = it->add;
        it->add = e->next_add;
        if (e->dead)
            continue;
        *m = (struct air__jp_member){.key = e->key, .val = e->val, .node = NULL, .add = idx};
        return 1;
    }
    return 0;
}

static int
key_is(const struct air__jp_member *m, const char *key)
{
    return m->key != NULL && strcmp(m->key, key) == 0;
}

const cJSON *
air__jp_get(const struct air__jpatch *p, const cJSON *obj, const char *key)
{
    if (!cJSON_IsObject(obj))
        return NULL;
    struct air__jp_iter it = AIR_JP_ITER_INIT;
    struct air__jp_member m;
    while (air__jp_next(p, obj, &it, &m))
        if (key_is(&m, key))
            return m.val;
    return NULL;
}

/* Point member m of obj at val (JP_SET), or drop it (val NULL). */
static void
edit_member(struct air__jpatch *p, const cJSON *obj, const struct air__jp_member *m,
            const cJSON *val)
{
    if (p->oom)
        return;
    if (m->node == NULL) {
        struct air__jp_edit *e = &p->e[m->add];
        if (val == NULL)
            e->dead = 1;
        else
            e->val = val;
        p->edits++; /* an edit, though it amends a record instead of adding one */
        return;
    }
    struct air__jp_slot *os = slot_get(p, obj);
    if (os == NULL)
        return;
    os->touched = 1;
    size_t idx = new_edit(p, val == NULL ? JP_DROP : JP_SET, NULL, val);
    /* slot_get may move the table: look the member up after it. */
    struct air__jp_slot *s = idx == NONE ? NULL : slot_get(p, m->node);
    if (s != NULL)
        s->medit = idx;
}

void
air__jp_drop_member(struct air__jpatch *p, const cJSON *obj, const struct air__jp_member *m)
{
    edit_member(p, obj, m, NULL);
}

void
air__jp_drop(struct air__jpatch *p, const cJSON *obj, const char *key)
{
    if (!cJSON_IsObject(obj))
        return;
    struct air__jp_iter it = AIR_JP_ITER_INIT;
    struct air__jp_member m;
    while (air__jp_next(p, obj, &it, &m))
        if (key_is(&m, key))
            edit_member(p, obj, &m, NULL);
}

void
air__jp_put(struct air__jpatch *p, const cJSON *obj, const char *key, const cJSON *val)
{
    if (val == NULL) {
        p->oom = 1;
        return;
    }
    if (p->oom || !cJSON_IsObject(obj))
        return;
    struct air__jp_iter it = AIR_JP_ITER_INIT;
    struct air__jp_member m;
    int found = 0;
    while (air__jp_next(p, obj, &it, &m)) {
        if (!key_is(&m, key))
            continue;
        edit_member(p, obj, &m, found ? NULL : val);
        found = 1;
    }
    if (found)
        return;
    size_t idx = new_edit(p, JP_ADD, key, val);
    struct air__jp_slot *os = idx == NONE ? NULL : slot_get(p, obj);
    if (os == NULL)
        return;
    if (os->addt == NONE)
        os->addh = idx;
    else
        p->e[os->addt].next_add = idx;
    os->addt = idx;
}

const cJSON *
air__jp_own(struct air__jpatch *p, cJSON *v)
{
    if (v == NULL) {
        p->oom = 1;
        return NULL;
    }
    if (p->nown == p->owncap) {
        size_t ncap = p->owncap ? p->owncap * 2 : 8;
        cJSON **no = air__realloc(p->own, ncap * sizeof *no);
        if (no == NULL) {
            cJSON_Delete(v);
            p->oom = 1;
            return NULL;
        }
        p->own = no;
        p->owncap = ncap;
    }
    p->own[p->nown++] = v;
    return v;
}

const cJSON *
air__jp_string(struct air__jpatch *p, const char *s)
{
    return air__jp_own(p, cJSON_CreateString(s));
}

static void
print_key(air_buf_t *b, const char *key)
{
    air__buf_json_str(b, key, strlen(key));
    air__buf_put1(b, ':');
}

static void
print_value(const struct air__jpatch *p, const cJSON *v, air_buf_t *b)
{
    const cJSON *c;
    switch (v->type & 0xFF) {
    case cJSON_Array:
        air__buf_put1(b, '[');
        for (c = v->child; c != NULL; c = c->next) {
            print_value(p, c, b);
            if (c->next != NULL)
                air__buf_put1(b, ',');
        }
        air__buf_put1(b, ']');
        return;
    case cJSON_Object: {
        air__buf_put1(b, '{');
        const struct air__jp_slot *os = slot_find(p, v);
        if (os == NULL) {
            /* No member of this object was edited (its values may be). */
            for (c = v->child; c != NULL; c = c->next) {
                print_key(b, c->string != NULL ? c->string : "");
                print_value(p, c, b);
                if (c->next != NULL)
                    air__buf_put1(b, ',');
            }
        } else {
            struct air__jp_iter it = AIR_JP_ITER_INIT;
            struct air__jp_member m;
            int first = 1;
            while (air__jp_next(p, v, &it, &m)) {
                if (!first)
                    air__buf_put1(b, ',');
                first = 0;
                print_key(b, m.key != NULL ? m.key : "");
                print_value(p, m.val, b);
            }
        }
        air__buf_put1(b, '}');
        return;
    }
    default:
        air__buf_cjson(b, v);
        return;
    }
}

int
air__jp_print(const struct air__jpatch *p, const cJSON *root, air_buf_t *b)
{
    if (p->oom || root == NULL)
        return -1;
    print_value(p, root, b);
    return b->oom ? -1 : 0;
}
