/*
 * gemini.c - the Google Gemini adapter (Generative Language API, v1beta).
 *
 * DESIGN: a pure translator between the unified schema (OpenAI Chat
 * Completions) and Gemini's generateContent / streamGenerateContent?alt=sse
 * wire format (spec sections 3 and 6.4-6.9). Request bodies, responses and
 * stream chunks are all written straight into an air_buf_t, never built as
 * a cJSON tree and printed (the request text is byte for byte what printing
 * such a tree gave; see "encode"): translation has a budget of a few
 * microseconds per request. Stream events of the usual shape are read by a
 * small validating scanner instead of cJSON (see "Streaming").
 *
 * Invariants:
 *   - the API key only ever goes into the x-goog-api-key header, never the
 *     URL, and is scrubbed from every fault message we hand out;
 *   - instance state is immutable after init; the per-stream state is a
 *     fixed-size struct inside the zeroed bytes core hands us, so a stream
 *     never buffers more than one event;
 *   - Gemini has no tool-call ids, so ids are synthesised deterministically
 *     from the response id (or the router's request id), the candidate index
 *     and the call's position: "call_<src>_<candidate>_<k>". The same reply
 *     yields the same ids whether it is streamed or not.
 *   - Gemini streams have no [DONE]: the end is EOF (stream_end). Without a
 *     finishReason (or a prompt blockReason) before EOF the stream was cut.
 *
 * The rules chosen where the spec is uncertain are listed in the "Gemini"
 * section of docs/PROVIDERS.md.
 */
#include "common.h"
#include "jscan.h"
#include "ratelimit.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "buf.h"

/* Gemini's candidateCount is at most 8; streams track this many. */
#define GEM_MAX_CAND 8
/* Bounds of the JSON-schema clean-up (nesting, $ref chains, total nodes
 * after $ref expansion): a hostile schema cannot blow up memory or stack. */
#define SCHEMA_MAX_DEPTH 64
#define SCHEMA_MAX_REFS  16
#define SCHEMA_MAX_NODES 20000
/* Longest id source kept (responseId or request id). */
#define IDSRC_MAX 48

struct gem_state {
    char *base_url;
    char *api_key; /* NULL when the config names none */
    cJSON *safety; /* config "safety_settings" (array) or NULL */
};

static const char *const gem_config_keys[] = {"safety_settings", NULL};

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */




/* Append a string literal. */
#define PUTS(b, lit) air__buf_put((b), "" lit, sizeof(lit) - 1)

static void
put_cstr(air_buf_t *b, const char *s)
{
    air__buf_json_str(b, s, strlen(s));
}

static const char *
get_str(const cJSON *o, const char *key)
{
    const cJSON *it = air__json_get(o, key);
    return cJSON_IsString(it) ? it->valuestring : NULL;
}

static int
streq(const char *a, const char *b)
{
    return a != NULL && b != NULL && strcmp(a, b) == 0;
}

static int
is_absent(const cJSON *it)
{
    return it == NULL || cJSON_IsNull(it);
}

/* A non-negative token count, 0 when absent or odd. */
static uint64_t
get_count(const cJSON *o, const char *key, int *present)
{
    const cJSON *it = air__json_get(o, key);
    if (!cJSON_IsNumber(it)) {
        if (present != NULL)
            *present = 0;
        return 0;
    }
    if (present != NULL)
        *present = 1;
    double v = it->valuedouble;
    if (!(v > 0))
        return 0;
    if (v > 1e15)
        v = 1e15;
    return (uint64_t)v;
}

/* Drop a UTF-8 sequence cut in half at the end of s (after a bounded copy):
 * messages end up in JSON error bodies, which must stay valid UTF-8. */
static void
utf8_trim(char *s)
{
    size_t n = strlen(s), k = n, back = 0;
    while (k > 0 && back < 4 && ((unsigned char)s[k - 1] & 0xC0) == 0x80) {
        k--;
        back++;
    }
    if (k == 0)
        return;
    unsigned char lead = (unsigned char)s[k - 1];
    size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    if (need > 1 && n - (k - 1) < need)
        s[k - 1] = '\0';
}

static void
fault_set(air_fault_t *f, air_errclass_t cls, int retry, int failover, int unusable)
{
    f->cls = cls;
    f->retry = retry;
    f->failover = failover;
    f->unusable = unusable;
}

static void
fault_reset(air_fault_t *f)
{
    memset(f, 0, sizeof *f);
    f->retry_after_ms = -1;
}

/* An invalid_request fault for encode; returns AIR_E_BADREQ. */
static air_status_t bad_request(air_fault_t *f, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static air_status_t
bad_request(air_fault_t *f, const char *fmt, ...)
{
    if (f != NULL) {
        fault_reset(f);
        fault_set(f, AIR_ERR_INVALID_REQUEST, 0, 0, 0);
        air__strlcpy(f->type, "invalid_request_error", sizeof f->type);
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(f->message, sizeof f->message, fmt, ap);
        va_end(ap);
        utf8_trim(f->message);
    }
    return AIR_E_BADREQ;
}

/* An upstream protocol fault (unparseable 2xx, cut stream). */
static void
protocol_fault(air_fault_t *f, int http_status, const char *msg)
{
    fault_reset(f);
    fault_set(f, AIR_ERR_UPSTREAM, 1, 1, 0);
    f->http_status = http_status;
    air__strlcpy(f->message, msg, sizeof f->message);
}

/* Replace every occurrence of `secret` in s (a fixed array of size n) by
 * "[REDACTED]", and the value of any "key=" URL parameter too: fault
 * messages end up in logs and client responses. */
static void
redact(char *s, size_t n, const char *secret)
{
    static const char mask[] = "[REDACTED]";
    char tmp[1024];
    size_t o = 0;
    size_t sl = secret != NULL ? strlen(secret) : 0;
    const char *p = s;
    int changed = 0;
    while (*p != '\0' && o + 1 < sizeof tmp) {
        if (sl > 0 && strncmp(p, secret, sl) == 0) {
            for (size_t i = 0; mask[i] != '\0' && o + 1 < sizeof tmp; i++)
                tmp[o++] = mask[i];
            p += sl;
            changed = 1;
            continue;
        }
        if (strncmp(p, "key=", 4) == 0 && p[4] != '\0' && p[4] != '&' && p[4] != ' ') {
            for (size_t i = 0; i < 4 && o + 1 < sizeof tmp; i++)
                tmp[o++] = p[i];
            for (size_t i = 0; mask[i] != '\0' && o + 1 < sizeof tmp; i++)
                tmp[o++] = mask[i];
            p += 4;
            while (*p != '\0' && *p != '&' && *p != ' ' && *p != '"' && *p != '\'' && *p != ',' &&
                   *p != ')')
                p++;
            changed = 1;
            continue;
        }
        tmp[o++] = *p++;
    }
    if (!changed)
        return;
    tmp[o] = '\0';
    air__strlcpy(s, tmp, n);
    utf8_trim(s);
}

static void
fault_scrub(const void *state, air_fault_t *f)
{
    const struct gem_state *st = state;
    const char *key = st != NULL ? st->api_key : NULL;
    redact(f->message, sizeof f->message, key);
    redact(f->code, sizeof f->code, key);
    redact(f->type, sizeof f->type, key);
}

/* ------------------------------------------------------------------------ */
/* init / fini                                                               */

static void
gem_fini(void *state)
{
    struct gem_state *st = state;
    if (st == NULL)
        return;
    air__free(st->base_url);
    if (st->api_key != NULL) {
        /* Do not leave the secret in freed memory. */
        volatile char *k = st->api_key;
        while (*k != '\0')
            *k++ = '\0';
    }
    air__free(st->api_key);
    cJSON_Delete(st->safety);
    air__free(st);
}

static air_status_t
gem_init(const air_provider_cfg_t *cfg, void **state, char *err, size_t errlen)
{
    *state = NULL;
    if (cfg->api_key != NULL) {
        for (const char *p = cfg->api_key; *p != '\0'; p++) {
            if ((unsigned char)*p < 0x20 || *p == 0x7F) {
                if (err != NULL && errlen > 0)
                    snprintf(err, errlen, "api_key: contains control characters");
                return AIR_E_CONFIG;
            }
        }
    }
    const cJSON *ss = air__json_get(cfg->json, "safety_settings");
    if (ss != NULL && !cJSON_IsNull(ss)) {
        int ok = cJSON_IsArray(ss);
        const cJSON *e;
        cJSON_ArrayForEach(e, ss)
        {
            if (!cJSON_IsString(air__json_get(e, "category")) || !cJSON_IsString(air__json_get(e, "threshold")))
                ok = 0;
        }
        if (!ok) {
            if (err != NULL && errlen > 0)
                snprintf(err, errlen,
                         "safety_settings: expected an array of "
                         "{\"category\": string, \"threshold\": string}");
            return AIR_E_CONFIG;
        }
    }
    struct gem_state *st = air__calloc(1, sizeof *st);
    if (st == NULL)
        return AIR_E_NOMEM;
    const char *base =
        cfg->base_url != NULL ? cfg->base_url : "https://generativelanguage.googleapis.com";
    st->base_url = air__strdup(base);
    if (cfg->api_key != NULL)
        st->api_key = air__strdup(cfg->api_key);
    if (ss != NULL && cJSON_IsArray(ss) && cJSON_GetArraySize(ss) > 0)
        st->safety = cJSON_Duplicate(ss, 1);
    if (st->base_url == NULL || (cfg->api_key != NULL && st->api_key == NULL) ||
        (ss != NULL && cJSON_IsArray(ss) && cJSON_GetArraySize(ss) > 0 && st->safety == NULL)) {
        gem_fini(st);
        return AIR_E_NOMEM;
    }
    *state = st;
    return AIR_OK;
}

/* ------------------------------------------------------------------------ */
/* JSON-schema clean-up (spec 3.2)                                           */

/*
 * Gemini's responseSchema and function parameters accept an OpenAPI 3.0
 * subset and reject unknown keywords with a 400. We rebuild each schema from
 * a whitelist: $ref/$defs are inlined, anyOf/oneOf with a {"type":"null"}
 * member become nullable, type arrays ["X","null"] become X + nullable,
 * const becomes a one-value enum, allOf members are merged, string formats
 * other than enum/date-time are dropped, and every other keyword
 * (additionalProperties, $schema, strict, examples, not, ...) is dropped.
 */
struct schema_ctx {
    const cJSON *root;
    const char *where; /* "tools[2].function.parameters" for messages */
    air_fault_t *f;
    air_status_t st;
    int nodes;
    int refs;
};

/* The keywords a schema node is read for: first the plain ones, copied
 * as they are (in this order), then the ones with rules. */
enum {
    SK_NULLABLE = 2,
    SK_ENUM = 3,
    SK_NPLAIN = 17, /* schema_keys[0 .. SK_NPLAIN) are the plain keywords */
    SK_TYPE = SK_NPLAIN,
    SK_CONST,
    SK_FORMAT,
    SK_PROPERTIES,
    SK_ITEMS,
    SK_ANYOF,
    SK_ONEOF,
    SK_ALLOF,
    SK_REF,
    SK__N
};

static const char *const schema_keys[SK__N] = {
    /* plain */
    "title", "description", "nullable", "enum", "maxItems", "minItems", "required", "minProperties",
    "maxProperties", "minLength", "maxLength", "pattern", "example", "propertyOrdering", "default",
    "minimum", "maximum",
    /* with rules */
    "type", "const", "format", "properties", "items", "anyOf", "oneOf", "allOf", "$ref"};

static int
schema_fail(struct schema_ctx *c, const char *why)
{
    if (c->st == AIR_OK)
        c->st = bad_request(c->f, "%s: %s", c->where, why);
    return -1;
}

static int
schema_oom(struct schema_ctx *c)
{
    if (c->st == AIR_OK)
        c->st = AIR_E_NOMEM;
    return -1;
}

static int
add_dup(struct schema_ctx *c, cJSON *out, const char *key, const cJSON *v)
{
    cJSON *d = cJSON_Duplicate(v, 1);
    if (d == NULL || !cJSON_AddItemToObject(out, key, d)) {
        cJSON_Delete(d);
        return schema_oom(c);
    }
    return 0;
}

/* Resolve a local JSON pointer ("#/$defs/Name") against the schema root. */
static const cJSON *
resolve_ref(const cJSON *root, const char *ref)
{
    if (ref[0] != '#')
        return NULL;
    const cJSON *cur = root;
    const char *p = ref + 1;
    while (*p == '/') {
        p++;
        char tok[128];
        size_t n = 0;
        while (*p != '\0' && *p != '/') {
            char ch = *p++;
            if (ch == '~' && (*p == '0' || *p == '1'))
                ch = *p++ == '0' ? '~' : '/';
            if (n + 1 >= sizeof tok)
                return NULL;
            tok[n++] = ch;
        }
        tok[n] = '\0';
        cur = air__json_get(cur, tok);
        if (cur == NULL)
            return NULL;
    }
    return *p == '\0' ? cur : NULL;
}

static int clean_into(struct schema_ctx *c, const cJSON *s, cJSON *out, int depth);

/* A fresh cleaned copy of schema s (NULL on failure). */
static cJSON *
clean_new(struct schema_ctx *c, const cJSON *s, int depth)
{
    cJSON *o = cJSON_CreateObject();
    if (o == NULL) {
        schema_oom(c);
        return NULL;
    }
    if (clean_into(c, s, o, depth) != 0) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static int
is_null_schema(const cJSON *s)
{
    return streq(get_str(s, "type"), "null") && cJSON_GetArraySize(s) == 1;
}

/* anyOf / oneOf: drop {"type":"null"} members (nullable), merge a single
 * remaining member into out, keep several as anyOf. */
static int
clean_union(struct schema_ctx *c, const cJSON *list, cJSON *out, int depth, int *nullable)
{
    if (!cJSON_IsArray(list))
        return schema_fail(c, "anyOf/oneOf must be an array");
    int n = 0;
    const cJSON *only = NULL, *e;
    cJSON_ArrayForEach(e, list)
    {
        if (is_null_schema(e))
            *nullable = 1;
        else {
            n++;
            only = e;
        }
    }
    if (n == 1)
        return clean_into(c, only, out, depth + 1);
    if (n == 0 || air__json_get(out, "anyOf") != NULL)
        return 0;
    cJSON *arr = cJSON_CreateArray();
    if (arr == NULL || !cJSON_AddItemToObject(out, "anyOf", arr)) {
        cJSON_Delete(arr);
        return schema_oom(c);
    }
    cJSON_ArrayForEach(e, list)
    {
        if (is_null_schema(e))
            continue;
        cJSON *sub = clean_new(c, e, depth + 1);
        if (sub == NULL)
            return -1;
        cJSON_AddItemToArray(arr, sub);
    }
    return 0;
}

static int
clean_type(struct schema_ctx *c, const cJSON *t, cJSON *out, int *nullable)
{
    if (air__json_get(out, "type") != NULL || air__json_get(out, "anyOf") != NULL)
        return 0;
    if (cJSON_IsString(t)) {
        if (streq(t->valuestring, "null")) {
            *nullable = 1;
            return 0;
        }
        return add_dup(c, out, "type", t);
    }
    if (!cJSON_IsArray(t))
        return schema_fail(c, "\"type\" must be a string or an array of strings");
    int n = 0;
    const cJSON *only = NULL, *e;
    cJSON_ArrayForEach(e, t)
    {
        if (!cJSON_IsString(e))
            return schema_fail(c, "\"type\" must be a string or an array of strings");
        if (streq(e->valuestring, "null"))
            *nullable = 1;
        else {
            n++;
            only = e;
        }
    }
    if (n == 1)
        return add_dup(c, out, "type", only);
    if (n == 0)
        return 0;
    cJSON *arr = cJSON_CreateArray();
    if (arr == NULL || !cJSON_AddItemToObject(out, "anyOf", arr)) {
        cJSON_Delete(arr);
        return schema_oom(c);
    }
    cJSON_ArrayForEach(e, t)
    {
        if (streq(e->valuestring, "null"))
            continue;
        cJSON *sub = cJSON_CreateObject();
        if (sub == NULL || cJSON_AddStringToObject(sub, "type", e->valuestring) == NULL) {
            cJSON_Delete(sub);
            return schema_oom(c);
        }
        cJSON_AddItemToArray(arr, sub);
    }
    return 0;
}

static int
clean_properties(struct schema_ctx *c, const cJSON *props, cJSON *out, int depth)
{
    if (!cJSON_IsObject(props))
        return schema_fail(c, "\"properties\" must be an object");
    cJSON *dst = cJSON_GetObjectItemCaseSensitive(out, "properties");
    if (dst == NULL) {
        dst = cJSON_CreateObject();
        if (dst == NULL || !cJSON_AddItemToObject(out, "properties", dst)) {
            cJSON_Delete(dst);
            return schema_oom(c);
        }
    }
    const cJSON *p;
    cJSON_ArrayForEach(p, props)
    {
        if (p->string == NULL || cJSON_GetObjectItemCaseSensitive(dst, p->string) != NULL)
            continue;
        cJSON *sub = clean_new(c, p, depth + 1);
        if (sub == NULL)
            return -1;
        if (!cJSON_AddItemToObject(dst, p->string, sub)) {
            cJSON_Delete(sub);
            return schema_oom(c);
        }
    }
    return 0;
}

static int
clean_into(struct schema_ctx *c, const cJSON *s, cJSON *out, int depth)
{
    if (depth > SCHEMA_MAX_DEPTH)
        return schema_fail(c, "schema nested too deeply");
    if (++c->nodes > SCHEMA_MAX_NODES)
        return schema_fail(c, "schema too large after $ref expansion");
    if (cJSON_IsBool(s))
        return 0; /* true/false schemas: no constraint Gemini can express */
    if (!cJSON_IsObject(s))
        return schema_fail(c, "a schema must be a JSON object");

    int nullable = 0;
    /* Plain keywords first: they win over what $ref/allOf merge in. */
    for (int k = 0; k < SK_NPLAIN; k++) {
        const cJSON *v = air__json_get(s, schema_keys[k]);
        if (v != NULL && air__json_get(out, schema_keys[k]) == NULL &&
            add_dup(c, out, schema_keys[k], v) != 0)
            return -1;
    }
    const cJSON *t = air__json_get(s, "type");
    if (t != NULL && clean_type(c, t, out, &nullable) != 0)
        return -1;
    const cJSON *cst = air__json_get(s, "const");
    if (cJSON_IsString(cst) && air__json_get(out, "enum") == NULL) {
        cJSON *en = cJSON_CreateArray();
        cJSON *v = cJSON_CreateString(cst->valuestring);
        if (en == NULL || v == NULL || !cJSON_AddItemToObject(out, "enum", en)) {
            cJSON_Delete(en);
            cJSON_Delete(v);
            return schema_oom(c);
        }
        cJSON_AddItemToArray(en, v);
        /* Gemini only knows string enums, and wants the type said. */
        if (t == NULL && air__json_get(out, "type") == NULL &&
            cJSON_AddStringToObject(out, "type", "string") == NULL)
            return schema_oom(c);
    }
    const char *fmt = get_str(s, "format");
    if (fmt != NULL && air__json_get(out, "format") == NULL) {
        const char *ty = get_str(s, "type");
        int keep = streq(ty, "string") ? (streq(fmt, "enum") || streq(fmt, "date-time"))
                                       : (streq(fmt, "int32") || streq(fmt, "int64") ||
                                          streq(fmt, "float") || streq(fmt, "double"));
        if (keep && add_dup(c, out, "format", air__json_get(s, "format")) != 0)
            return -1;
    }
    const cJSON *props = air__json_get(s, "properties");
    if (props != NULL && clean_properties(c, props, out, depth) != 0)
        return -1;
    const cJSON *items = air__json_get(s, "items");
    if (cJSON_IsObject(items) && air__json_get(out, "items") == NULL) {
        cJSON *sub = clean_new(c, items, depth + 1);
        if (sub == NULL)
            return -1;
        if (!cJSON_AddItemToObject(out, "items", sub)) {
            cJSON_Delete(sub);
            return schema_oom(c);
        }
    }
    const cJSON *u = air__json_get(s, "anyOf");
    if (u != NULL && clean_union(c, u, out, depth, &nullable) != 0)
        return -1;
    u = air__json_get(s, "oneOf");
    if (u != NULL && clean_union(c, u, out, depth, &nullable) != 0)
        return -1;
    const cJSON *all = air__json_get(s, "allOf");
    if (all != NULL) {
        if (!cJSON_IsArray(all))
            return schema_fail(c, "allOf must be an array");
        const cJSON *e;
        cJSON_ArrayForEach(e, all)
        {
            if (clean_into(c, e, out, depth + 1) != 0)
                return -1;
        }
    }
    const cJSON *ref = air__json_get(s, "$ref");
    if (ref != NULL) {
        if (!cJSON_IsString(ref))
            return schema_fail(c, "$ref must be a string");
        const cJSON *target = resolve_ref(c->root, ref->valuestring);
        if (target == NULL)
            return schema_fail(c, "unresolvable $ref (only local #/... references are "
                                  "supported)");
        if (c->refs >= SCHEMA_MAX_REFS)
            return schema_fail(c, "recursive or too deeply nested $ref (Gemini schemas "
                                  "cannot be recursive)");
        c->refs++;
        int rc = clean_into(c, target, out, depth + 1);
        c->refs--;
        if (rc != 0)
            return -1;
    }
    if (nullable && air__json_get(out, "nullable") == NULL && cJSON_AddTrueToObject(out, "nullable") == NULL)
        return schema_oom(c);
    return 0;
}

/*
 * The same clean-up written straight as text (what printing clean_new's tree
 * gives, byte for byte), for the usual schema: a node without anyOf, oneOf,
 * allOf or $ref gets its members from itself only, in a fixed order (plain
 * keywords, type, const, format, properties, items, nullable), so it needs
 * no tree. A node with one of those four, where members merge in from
 * elsewhere, is cleaned by clean_new and printed. Checks, errors and node
 * counts come in the same order as in clean_into.
 */

/* What params_empty needs to know of a cleaned schema. */
struct schema_sum {
    int members;     /* members of the cleaned object */
    int type_object; /* its "type" is the string "object" */
    int has_props;   /* it has "properties" ... */
    int nprops;      /* ... with this many members */
    int has_anyof;   /* it has "anyOf" */
};

static void
sum_of_tree(const cJSON *o, struct schema_sum *sum)
{
    const cJSON *props = air__json_get(o, "properties");
    sum->members = cJSON_GetArraySize(o);
    sum->type_object = streq(get_str(o, "type"), "object");
    sum->has_props = props != NULL;
    sum->nprops = cJSON_GetArraySize(props);
    sum->has_anyof = air__json_get(o, "anyOf") != NULL;
}

/* Start member `key` (a plain name) of the object being written. */
static void
sum_key(air_buf_t *b, struct schema_sum *sum, const char *key)
{
    if (sum->members++ > 0)
        air__buf_put1(b, ',');
    air__buf_put1(b, '"');
    air__buf_puts(b, key);
    PUTS(b, "\":");
}

/* An earlier member of obj has p's name (clean_properties keeps the first). */
static int
name_seen_before(const cJSON *obj, const cJSON *p)
{
    for (const cJSON *q = obj->child; q != p; q = q->next)
        if (q->string != NULL && q->string[0] == p->string[0] && strcmp(q->string, p->string) == 0)
            return 1;
    return 0;
}

/* One pass over s's members: m[k] = the first member named schema_keys[k]
 * (what air__json_get(s, schema_keys[k]) returns), or NULL. */
static void
schema_members(const cJSON *s, const cJSON *m[SK__N])
{
    for (int k = 0; k < SK__N; k++)
        m[k] = NULL;
    for (const cJSON *it = s->child; it != NULL; it = it->next) {
        const char *key = it->string;
        if (key == NULL)
            return; /* where air__json_get() stops */
        for (int k = 0; k < SK__N; k++) {
            if (schema_keys[k][0] == key[0] && strcmp(schema_keys[k], key) == 0) {
                if (m[k] == NULL)
                    m[k] = it;
                break;
            }
        }
    }
}

static int
clean_write(struct schema_ctx *c, const cJSON *s, air_buf_t *b, int depth, struct schema_sum *sum)
{
    const cJSON *m[SK__N];
    memset(sum, 0, sizeof *sum);
    if (cJSON_IsObject(s))
        schema_members(s, m);
    if (cJSON_IsObject(s) &&
        (m[SK_ANYOF] != NULL || m[SK_ONEOF] != NULL || m[SK_ALLOF] != NULL || m[SK_REF] != NULL)) {
        cJSON *o = clean_new(c, s, depth);
        if (o == NULL)
            return -1;
        air__buf_cjson(b, o);
        sum_of_tree(o, sum);
        cJSON_Delete(o);
        return 0;
    }
    if (depth > SCHEMA_MAX_DEPTH)
        return schema_fail(c, "schema nested too deeply");
    if (++c->nodes > SCHEMA_MAX_NODES)
        return schema_fail(c, "schema too large after $ref expansion");
    if (cJSON_IsBool(s)) {
        PUTS(b, "{}"); /* true/false schemas: no constraint Gemini can express */
        return 0;
    }
    if (!cJSON_IsObject(s))
        return schema_fail(c, "a schema must be a JSON object");

    int nullable = 0;
    air__buf_put1(b, '{');
    for (int k = 0; k < SK_NPLAIN; k++) {
        if (m[k] != NULL) {
            sum_key(b, sum, schema_keys[k]);
            air__buf_cjson(b, m[k]);
        }
    }
    const cJSON *t = m[SK_TYPE];
    if (cJSON_IsString(t)) {
        if (streq(t->valuestring, "null")) {
            nullable = 1;
        } else {
            sum_key(b, sum, "type");
            air__buf_cjson(b, t);
            sum->type_object = streq(t->valuestring, "object");
        }
    } else if (t != NULL) {
        if (!cJSON_IsArray(t))
            return schema_fail(c, "\"type\" must be a string or an array of strings");
        int n = 0;
        const cJSON *only = NULL, *e;
        cJSON_ArrayForEach(e, t)
        {
            if (!cJSON_IsString(e))
                return schema_fail(c, "\"type\" must be a string or an array of strings");
            if (streq(e->valuestring, "null"))
                nullable = 1;
            else {
                n++;
                only = e;
            }
        }
        if (n == 1) {
            sum_key(b, sum, "type");
            air__buf_cjson(b, only);
            sum->type_object = streq(only->valuestring, "object");
        } else if (n > 1) {
            sum_key(b, sum, "anyOf");
            air__buf_put1(b, '[');
            int k = 0;
            cJSON_ArrayForEach(e, t)
            {
                if (streq(e->valuestring, "null"))
                    continue;
                if (k++ > 0)
                    air__buf_put1(b, ',');
                PUTS(b, "{\"type\":");
                put_cstr(b, e->valuestring);
                air__buf_put1(b, '}');
            }
            air__buf_put1(b, ']');
            sum->has_anyof = 1;
        }
    }
    const cJSON *cst = m[SK_CONST];
    if (cJSON_IsString(cst) && m[SK_ENUM] == NULL) {
        sum_key(b, sum, "enum");
        air__buf_put1(b, '[');
        put_cstr(b, cst->valuestring);
        air__buf_put1(b, ']');
        /* Gemini only knows string enums, and wants the type said. */
        if (t == NULL) {
            sum_key(b, sum, "type");
            PUTS(b, "\"string\"");
        }
    }
    const char *fmt = cJSON_IsString(m[SK_FORMAT]) ? m[SK_FORMAT]->valuestring : NULL;
    if (fmt != NULL) {
        const char *ty = cJSON_IsString(t) ? t->valuestring : NULL;
        int keep = streq(ty, "string") ? (streq(fmt, "enum") || streq(fmt, "date-time"))
                                       : (streq(fmt, "int32") || streq(fmt, "int64") ||
                                          streq(fmt, "float") || streq(fmt, "double"));
        if (keep) {
            sum_key(b, sum, "format");
            air__buf_cjson(b, m[SK_FORMAT]);
        }
    }
    const cJSON *props = m[SK_PROPERTIES];
    if (props != NULL) {
        if (!cJSON_IsObject(props))
            return schema_fail(c, "\"properties\" must be an object");
        sum_key(b, sum, "properties");
        air__buf_put1(b, '{');
        sum->has_props = 1;
        const cJSON *p;
        cJSON_ArrayForEach(p, props)
        {
            if (p->string == NULL || name_seen_before(props, p))
                continue;
            if (sum->nprops++ > 0)
                air__buf_put1(b, ',');
            put_cstr(b, p->string);
            air__buf_put1(b, ':');
            struct schema_sum sub;
            if (clean_write(c, p, b, depth + 1, &sub) != 0)
                return -1;
        }
        air__buf_put1(b, '}');
    }
    const cJSON *items = m[SK_ITEMS];
    if (cJSON_IsObject(items)) {
        struct schema_sum sub;
        sum_key(b, sum, "items");
        if (clean_write(c, items, b, depth + 1, &sub) != 0)
            return -1;
    }
    if (nullable && m[SK_NULLABLE] == NULL) {
        sum_key(b, sum, "nullable");
        PUTS(b, "true");
    }
    air__buf_put1(b, '}');
    return 0;
}

/* Write the cleaned schema to b. AIR_OK, or the error (f filled). */
static air_status_t
clean_schema_write(const cJSON *schema, const char *where, air_fault_t *f, air_buf_t *b,
                   struct schema_sum *sum)
{
    struct schema_ctx c = {schema, where, f, AIR_OK, 0, 0};
    if (clean_write(&c, schema, b, 0, sum) != 0 && c.st == AIR_OK)
        c.st = AIR_E_NOMEM;
    if (c.st == AIR_OK && b->oom)
        c.st = AIR_E_NOMEM;
    return c.st;
}

/* ------------------------------------------------------------------------ */
/* encode                                                                    */

/*
 * The body is written straight into buffers, member for member in the order
 * (and with the number and string forms) of the cJSON tree this adapter used
 * to build and print, so the bytes are the same; only response schemas and
 * tool parameters still go through a tree, because the clean-up above merges
 * members from several places. Contents are written as they come: a part
 * joins the open content when the role is the same (Gemini wants
 * alternation), else it opens a new one.
 */

/* The contents array being written. */
struct contents {
    air_buf_t b;      /* content objects, the last one left open */
    const char *role; /* role of the open content, NULL when none */
    int n;
};

/* Start a part under role: in the open content when it has that role, else
 * in a new one. Returns the buffer to write the part object to. */
static air_buf_t *
part_begin(struct contents *c, const char *role)
{
    air_buf_t *b = &c->b;
    if (c->role != NULL && strcmp(c->role, role) == 0) {
        air__buf_put1(b, ',');
        return b;
    }
    if (c->role != NULL)
        PUTS(b, "]},");
    PUTS(b, "{\"role\":");
    put_cstr(b, role);
    PUTS(b, ",\"parts\":[");
    c->role = role;
    c->n++;
    return b;
}

static void
text_part(air_buf_t *b, const char *text)
{
    PUTS(b, "{\"text\":");
    put_cstr(b, text);
    air__buf_put1(b, '}');
}

/* {"<kind>": {"mimeType": mime, "<key>": value}}; mime may be NULL. */
static void
data_part(air_buf_t *b, const char *kind, const char *mime, const char *key, const char *value,
          size_t vlen)
{
    PUTS(b, "{\"");
    air__buf_puts(b, kind);
    PUTS(b, "\":{");
    if (mime != NULL) {
        PUTS(b, "\"mimeType\":");
        put_cstr(b, mime);
        air__buf_put1(b, ',');
    }
    air__buf_put1(b, '"');
    air__buf_puts(b, key);
    PUTS(b, "\":");
    air__buf_json_str(b, value, strnlen(value, vlen));
    PUTS(b, "}}");
}

static int
has_prefix_ci(const char *s, const char *prefix)
{
    for (; *prefix != '\0'; s++, prefix++) {
        char a = *s, b = *prefix;
        if (a >= 'A' && a <= 'Z')
            a = (char)(a + 32);
        if (a != b)
            return 0;
    }
    return 1;
}

/* MIME type from a URL's file extension, or NULL. */
static const char *
mime_from_url(const char *url)
{
    static const struct {
        const char *ext, *mime;
    } tab[] = {
        {"png", "image/png"},   {"jpg", "image/jpeg"},      {"jpeg", "image/jpeg"},
        {"webp", "image/webp"}, {"gif", "image/gif"},       {"heic", "image/heic"},
        {"heif", "image/heif"}, {"pdf", "application/pdf"},
    };
    size_t end = strcspn(url, "?#");
    size_t dot = end;
    while (dot > 0 && url[dot - 1] != '.' && url[dot - 1] != '/')
        dot--;
    if (dot == 0 || url[dot - 1] != '.')
        return NULL;
    size_t el = end - dot;
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++) {
        if (strlen(tab[i].ext) == el) {
            char low[8];
            for (size_t k = 0; k < el; k++) {
                char ch = url[dot + k];
                low[k] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
            }
            if (memcmp(low, tab[i].ext, el) == 0)
                return tab[i].mime;
        }
    }
    return NULL;
}

/*
 * A media URL as a part under role: data URLs (base64 only) become
 * inlineData; https:// and gs:// URLs become fileData with the MIME type
 * from `mime` (the part's explicit format) or the file extension (omitted
 * when unknown). Anything else (http://, file:, bare paths) is refused: the
 * adapter cannot fetch, and plain-http or local URLs are never what Gemini
 * can read.
 */
static air_status_t
url_part(const char *url, const char *mime, const char *where, air_fault_t *f, struct contents *c,
         const char *role)
{
    if (has_prefix_ci(url, "data:")) {
        const char *comma = strchr(url, ',');
        if (comma == NULL)
            return bad_request(f, "%s: malformed data URL", where);
        const char *hdr = url + 5;
        size_t hl = (size_t)(comma - hdr);
        if (hl < 7 || memcmp(comma - 7, ";base64", 7) != 0)
            return bad_request(f, "%s: only base64 data URLs are supported", where);
        size_t ml = strcspn(hdr, ";,");
        if (ml == 0)
            return bad_request(f, "%s: data URL has no MIME type", where);
        if (comma[1] == '\0')
            return bad_request(f, "%s: data URL has no data", where);
        char mt[128];
        if (ml >= sizeof mt)
            return bad_request(f, "%s: data URL MIME type too long", where);
        memcpy(mt, hdr, ml);
        mt[ml] = '\0';
        data_part(part_begin(c, role), "inlineData", mt, "data", comma + 1, strlen(comma + 1));
        return c->b.oom ? AIR_E_NOMEM : AIR_OK;
    }
    if (has_prefix_ci(url, "https://") || has_prefix_ci(url, "gs://")) {
        if (mime == NULL)
            mime = mime_from_url(url);
        data_part(part_begin(c, role), "fileData", mime, "fileUri", url, strlen(url));
        return c->b.oom ? AIR_E_NOMEM : AIR_OK;
    }
    return bad_request(f,
                       "%s: unsupported URL scheme for gemini (use a data: URL, https:// or "
                       "gs://)",
                       where);
}

/* Text of a string or an array of {"type":"text"} parts, concatenated. For
 * system and tool messages. */
static air_status_t
flat_text(const cJSON *content, const char *where, air_fault_t *f, air_buf_t *out)
{
    if (is_absent(content))
        return AIR_OK;
    if (cJSON_IsString(content)) {
        air__buf_puts(out, content->valuestring);
        return out->oom ? AIR_E_NOMEM : AIR_OK;
    }
    if (!cJSON_IsArray(content))
        return bad_request(f, "%s.content: expected a string or an array of parts", where);
    int j = 0;
    const cJSON *p;
    cJSON_ArrayForEach(p, content)
    {
        const char *ty = get_str(p, "type");
        const char *tx = get_str(p, "text");
        if (!streq(ty, "text") || tx == NULL)
            return bad_request(f, "%s.content[%d]: only text parts are allowed here", where, j);
        air__buf_puts(out, tx);
        j++;
    }
    return out->oom ? AIR_E_NOMEM : AIR_OK;
}

/* System/developer content: one text part per string or text part, into
 * the comma-separated list `parts` (*n counts them). */
static air_status_t
system_parts(const cJSON *content, const char *where, air_fault_t *f, air_buf_t *parts, int *n)
{
    if (is_absent(content))
        return AIR_OK;
    if (cJSON_IsString(content)) {
        if (content->valuestring[0] == '\0')
            return AIR_OK;
        if ((*n)++ > 0)
            air__buf_put1(parts, ',');
        text_part(parts, content->valuestring);
        return parts->oom ? AIR_E_NOMEM : AIR_OK;
    }
    if (!cJSON_IsArray(content))
        return bad_request(f, "%s.content: expected a string or an array of parts", where);
    int j = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, content)
    {
        const char *tx = get_str(e, "text");
        if (!streq(get_str(e, "type"), "text") || tx == NULL)
            return bad_request(f, "%s.content[%d]: only text parts are allowed here", where, j);
        if (tx[0] != '\0') {
            if ((*n)++ > 0)
                air__buf_put1(parts, ',');
            text_part(parts, tx);
        }
        j++;
    }
    return parts->oom ? AIR_E_NOMEM : AIR_OK;
}

/* User/assistant content parts, written under role. */
static air_status_t
content_parts(const cJSON *content, const char *role, const char *where, air_fault_t *f,
              struct contents *c)
{
    if (is_absent(content))
        return AIR_OK;
    if (cJSON_IsString(content)) {
        if (content->valuestring[0] == '\0')
            return AIR_OK;
        text_part(part_begin(c, role), content->valuestring);
        return c->b.oom ? AIR_E_NOMEM : AIR_OK;
    }
    if (!cJSON_IsArray(content))
        return bad_request(f, "%s.content: expected a string, an array of parts or null", where);
    int j = -1;
    const cJSON *e;
    cJSON_ArrayForEach(e, content)
    {
        j++;
        char w[96];
        air__path_idx(w, sizeof w, where, ".content", j);
        const char *ty = get_str(e, "type");
        air_status_t st = AIR_OK;
        if (streq(ty, "text") || streq(ty, "refusal")) {
            const char *tx = get_str(e, streq(ty, "text") ? "text" : "refusal");
            if (tx == NULL)
                return bad_request(f, "%s: missing text", w);
            if (tx[0] == '\0')
                continue;
            text_part(part_begin(c, role), tx);
        } else if (streq(ty, "image_url")) {
            const cJSON *iu = air__json_get(e, "image_url");
            const char *url = cJSON_IsString(iu) ? iu->valuestring : get_str(iu, "url");
            if (url == NULL)
                return bad_request(f, "%s.image_url.url: missing", w);
            st = url_part(url, get_str(iu, "format"), w, f, c, role);
        } else if (streq(ty, "input_audio")) {
            const cJSON *ia = air__json_get(e, "input_audio");
            const char *data = get_str(ia, "data");
            const char *fmt = get_str(ia, "format");
            if (data == NULL || fmt == NULL || strlen(fmt) > 32)
                return bad_request(f, "%s.input_audio: needs data and format", w);
            char mt[48];
            snprintf(mt, sizeof mt, "audio/%s", fmt);
            data_part(part_begin(c, role), "inlineData", mt, "data", data, strlen(data));
        } else if (streq(ty, "file")) {
            const cJSON *fo = air__json_get(e, "file");
            const char *fd = get_str(fo, "file_data");
            const char *fid = get_str(fo, "file_id");
            if (fd != NULL)
                st = url_part(fd, get_str(fo, "format"), w, f, c, role);
            else if (fid != NULL)
                st = url_part(fid, get_str(fo, "format"), w, f, c, role);
            else
                return bad_request(f, "%s.file: needs file_data or file_id", w);
        } else {
            return bad_request(f, "%s: unsupported content part type '%s' for gemini", w,
                               ty != NULL ? ty : "(none)");
        }
        if (st != AIR_OK)
            return st;
        if (c->b.oom)
            return AIR_E_NOMEM;
    }
    return AIR_OK;
}

/* Parse a tool call's "arguments" string into an object: "" (or blanks) and
 * "null" give {}; invalid JSON or a non-object is an invalid request. */
static air_status_t
parse_args(const cJSON *args, const char *where, air_fault_t *f, cJSON **out)
{
    *out = NULL;
    const char *s = "";
    if (args != NULL && cJSON_IsString(args)) {
        s = args->valuestring;
    } else if (!is_absent(args)) {
        if (cJSON_IsObject(args)) { /* lenient: an object instead of a string */
            *out = cJSON_Duplicate(args, 1);
            return *out != NULL ? AIR_OK : AIR_E_NOMEM;
        }
        return bad_request(f, "%s.function.arguments: expected a JSON string", where);
    }
    size_t n = strlen(s);
    size_t k = 0;
    while (k < n && (s[k] == ' ' || s[k] == '\t' || s[k] == '\r' || s[k] == '\n'))
        k++;
    cJSON *v = k == n ? cJSON_CreateObject() : cJSON_ParseWithLength(s, n);
    if (v != NULL && cJSON_IsNull(v)) {
        cJSON_Delete(v);
        v = cJSON_CreateObject();
        if (v == NULL)
            return AIR_E_NOMEM;
    }
    if (v == NULL || !cJSON_IsObject(v)) {
        cJSON_Delete(v);
        return bad_request(f, "%s.function.arguments: not a JSON object", where);
    }
    *out = v;
    return AIR_OK;
}

static air_status_t
assistant_tool_calls(const cJSON *tcs, const char *where, air_fault_t *f, struct contents *c)
{
    if (is_absent(tcs))
        return AIR_OK;
    if (!cJSON_IsArray(tcs))
        return bad_request(f, "%s.tool_calls: expected an array", where);
    int j = -1;
    const cJSON *tc;
    cJSON_ArrayForEach(tc, tcs)
    {
        j++;
        char w[96];
        air__path_idx(w, sizeof w, where, ".tool_calls", j);
        const cJSON *fn = air__json_get(tc, "function");
        const char *name = get_str(fn, "name");
        if (name == NULL || name[0] == '\0')
            return bad_request(f, "%s.function.name: missing", w);
        cJSON *args;
        air_status_t st = parse_args(air__json_get(fn, "arguments"), w, f, &args);
        if (st != AIR_OK)
            return st;
        air_buf_t *b = part_begin(c, "model");
        PUTS(b, "{\"functionCall\":{\"name\":");
        put_cstr(b, name);
        PUTS(b, ",\"args\":");
        air__buf_cjson(b, args);
        air__buf_put1(b, '}');
        cJSON_Delete(args);
        /* Spec 6.9: a thought signature rides on the tool call and must
         * come back unchanged on the same part. */
        const char *sig = get_str(air__json_get(air__json_get(tc, "extra_content"), "google"), "thought_signature");
        if (sig != NULL) {
            PUTS(b, ",\"thoughtSignature\":");
            put_cstr(b, sig);
        }
        air__buf_put1(b, '}');
        if (b->oom)
            return AIR_E_NOMEM;
    }
    return AIR_OK;
}

/* The function name of the tool call with this id, searching the assistant
 * messages before index `before`, nearest first. */
static const char *
tool_name_for(const cJSON *msgs, int before, const char *id)
{
    for (int i = before - 1; i >= 0; i--) {
        const cJSON *m = cJSON_GetArrayItem(msgs, i);
        if (!streq(get_str(m, "role"), "assistant"))
            continue;
        const cJSON *tc;
        const cJSON *tcs = air__json_get(m, "tool_calls");
        if (!cJSON_IsArray(tcs))
            continue;
        cJSON_ArrayForEach(tc, tcs)
        {
            if (streq(get_str(tc, "id"), id))
                return get_str(air__json_get(tc, "function"), "name");
        }
    }
    return NULL;
}

static air_status_t
tool_result(const cJSON *msgs, int i, const cJSON *m, const char *where, air_fault_t *f,
            struct contents *c)
{
    const char *id = get_str(m, "tool_call_id");
    if (id == NULL)
        return bad_request(f, "%s.tool_call_id: missing", where);
    const char *name = tool_name_for(msgs, i, id);
    if (name == NULL)
        return bad_request(f,
                           "%s.tool_call_id: no earlier assistant tool call has this id "
                           "(gemini needs the function name)",
                           where);
    air_buf_t text = AIR_BUF_INIT;
    air__buf_puts(&text, ""); /* never NULL data, even for empty content */
    air_status_t st = flat_text(air__json_get(m, "content"), where, f, &text);
    if (st == AIR_OK && text.oom)
        st = AIR_E_NOMEM;
    if (st == AIR_OK) {
        /* {"functionResponse":{"name":..,"response":{"result":text}}} */
        air_buf_t *b = part_begin(c, "user");
        PUTS(b, "{\"functionResponse\":{\"name\":");
        put_cstr(b, name);
        PUTS(b, ",\"response\":{\"result\":");
        air__buf_json_str(b, text.data, text.len);
        PUTS(b, "}}}");
        if (b->oom)
            st = AIR_E_NOMEM;
    }
    air__buf_free(&text);
    return st;
}

/* Optional number field: 0 absent, 1 present (*v set), or an error. */
static air_status_t
opt_num(const cJSON *body, const char *key, air_fault_t *f, int *present, double *v)
{
    const cJSON *it = air__json_get(body, key);
    *present = 0;
    if (is_absent(it))
        return AIR_OK;
    if (!cJSON_IsNumber(it))
        return bad_request(f, "%s: expected a number", key);
    *present = 1;
    *v = it->valuedouble;
    return AIR_OK;
}

/* The generationConfig object's members, comma-separated. */
struct members {
    air_buf_t b;
    int n;
};

/* Start member `key` of m. */
static air_buf_t *
member(struct members *m, const char *key)
{
    if (m->n++ > 0)
        air__buf_put1(&m->b, ',');
    put_cstr(&m->b, key);
    air__buf_put1(&m->b, ':');
    return &m->b;
}

static air_status_t
add_num(struct members *gc, const cJSON *body, const char *from, const char *to, air_fault_t *f)
{
    int present;
    double v;
    air_status_t st = opt_num(body, from, f, &present, &v);
    if (st != AIR_OK || !present)
        return st;
    air__buf_json_num(member(gc, to), v);
    return AIR_OK;
}

static air_status_t
generation_config(const cJSON *body, air_fault_t *f, air_buf_t *root)
{
    struct members gc = {AIR_BUF_INIT, 0};
    air_status_t st = AIR_OK;
    static const char *const map[][2] = {
        {"temperature", "temperature"},
        {"top_p", "topP"},
        {"top_k", "topK"},
        {NULL, "maxOutputTokens"}, /* placeholder: handled below */
        {"n", "candidateCount"},
        {"seed", "seed"},
        {"presence_penalty", "presencePenalty"},
        {"frequency_penalty", "frequencyPenalty"},
        {"top_logprobs", "logprobs"},
    };
    for (size_t i = 0; st == AIR_OK && i < sizeof map / sizeof map[0]; i++) {
        if (map[i][0] != NULL) {
            st = add_num(&gc, body, map[i][0], map[i][1], f);
            continue;
        }
        /* max_completion_tokens is preferred over the deprecated max_tokens */
        const char *from =
            !is_absent(air__json_get(body, "max_completion_tokens")) ? "max_completion_tokens" : "max_tokens";
        st = add_num(&gc, body, from, "maxOutputTokens", f);
    }
    const cJSON *stop = air__json_get(body, "stop");
    if (st == AIR_OK && !is_absent(stop)) {
        air_buf_t *b = member(&gc, "stopSequences");
        air__buf_put1(b, '[');
        if (cJSON_IsString(stop)) {
            put_cstr(b, stop->valuestring);
        } else if (cJSON_IsArray(stop)) {
            const cJSON *e;
            cJSON_ArrayForEach(e, stop)
            {
                if (!cJSON_IsString(e)) {
                    st = bad_request(f, "stop: expected a string or an array of strings");
                    break;
                }
                if (e != stop->child)
                    air__buf_put1(b, ',');
                put_cstr(b, e->valuestring);
            }
        } else {
            st = bad_request(f, "stop: expected a string or an array of strings");
        }
        air__buf_put1(b, ']');
    }
    const cJSON *lp = air__json_get(body, "logprobs");
    if (st == AIR_OK && !is_absent(lp)) {
        if (!cJSON_IsBool(lp))
            st = bad_request(f, "logprobs: expected a boolean");
        else if (cJSON_IsTrue(lp))
            PUTS(member(&gc, "responseLogprobs"), "true");
    }
    const cJSON *rf = air__json_get(body, "response_format");
    if (st == AIR_OK && !is_absent(rf)) {
        const char *ty = get_str(rf, "type");
        if (streq(ty, "text")) {
            /* default */
        } else if (streq(ty, "json_object") || streq(ty, "json_schema")) {
            PUTS(member(&gc, "responseMimeType"), "\"application/json\"");
            const cJSON *schema = air__json_get(air__json_get(rf, "json_schema"), "schema");
            if (streq(ty, "json_schema") && !is_absent(schema)) {
                struct schema_sum sum;
                st = clean_schema_write(schema, "response_format.json_schema.schema", f,
                                        member(&gc, "responseSchema"), &sum);
            }
        } else {
            st = bad_request(f, "response_format.type: expected text, json_object or "
                                "json_schema");
        }
    }
    if (st == AIR_OK && gc.b.oom)
        st = AIR_E_NOMEM;
    if (st == AIR_OK && gc.n > 0) {
        PUTS(root, ",\"generationConfig\":{");
        air__buf_put(root, gc.b.data, gc.b.len);
        air__buf_put1(root, '}');
    }
    air__buf_free(&gc.b);
    return st;
}

/* A parameters schema that declares nothing: Gemini rejects an OBJECT with
 * no properties, so such parameters are omitted. */
static int
params_empty(const struct schema_sum *p)
{
    if (p->members == 0)
        return 1;
    return p->type_object && (!p->has_props || p->nprops == 0) && !p->has_anyof;
}

static air_status_t
tools_and_choice(const cJSON *body, air_fault_t *f, air_buf_t *root)
{
    const cJSON *tools = air__json_get(body, "tools");
    if (is_absent(tools))
        return AIR_OK;
    if (!cJSON_IsArray(tools))
        return bad_request(f, "tools: expected an array");
    if (tools->child == NULL)
        return AIR_OK;
    PUTS(root, ",\"tools\":[{\"functionDeclarations\":[");
    int i = -1;
    const cJSON *t;
    cJSON_ArrayForEach(t, tools)
    {
        i++;
        const char *ty = get_str(t, "type");
        if (!streq(ty, "function"))
            return bad_request(f, "tools[%d].type: only function tools are supported by gemini", i);
        const cJSON *fn = air__json_get(t, "function");
        const char *name = get_str(fn, "name");
        if (name == NULL || name[0] == '\0')
            return bad_request(f, "tools[%d].function.name: missing", i);
        if (i > 0)
            air__buf_put1(root, ',');
        PUTS(root, "{\"name\":");
        put_cstr(root, name);
        const char *desc = get_str(fn, "description");
        if (desc != NULL) {
            PUTS(root, ",\"description\":");
            put_cstr(root, desc);
        }
        const cJSON *params = air__json_get(fn, "parameters");
        if (!is_absent(params)) {
            char w[64];
            air__path_idx(w, sizeof w, "tools", "", i);
            size_t wl = strlen(w);
            snprintf(w + wl, sizeof w - wl, ".function.parameters");
            struct schema_sum sum;
            size_t mark = root->len;
            PUTS(root, ",\"parameters\":");
            air_status_t st = clean_schema_write(params, w, f, root, &sum);
            if (st != AIR_OK)
                return st;
            if (params_empty(&sum)) {
                root->len = mark; /* declares nothing: omitted */
                if (root->data != NULL)
                    root->data[mark] = '\0';
            }
        }
        air__buf_put1(root, '}');
        if (root->oom)
            return AIR_E_NOMEM;
    }
    PUTS(root, "]}]");

    const cJSON *tc = air__json_get(body, "tool_choice");
    if (is_absent(tc))
        return AIR_OK;
    const char *mode = NULL;
    const char *only = NULL;
    if (cJSON_IsString(tc)) {
        if (streq(tc->valuestring, "auto"))
            mode = "AUTO";
        else if (streq(tc->valuestring, "none"))
            mode = "NONE";
        else if (streq(tc->valuestring, "required"))
            mode = "ANY";
    } else if (streq(get_str(tc, "type"), "function")) {
        only = get_str(air__json_get(tc, "function"), "name");
        mode = only != NULL ? "ANY" : NULL;
    }
    if (mode == NULL)
        return bad_request(f, "tool_choice: expected \"auto\", \"none\", \"required\" or "
                              "{\"type\":\"function\",\"function\":{\"name\":...}}");
    PUTS(root, ",\"toolConfig\":{\"functionCallingConfig\":{\"mode\":");
    put_cstr(root, mode);
    if (only != NULL) {
        PUTS(root, ",\"allowedFunctionNames\":[");
        put_cstr(root, only);
        air__buf_put1(root, ']');
    }
    PUTS(root, "}}");
    return root->oom ? AIR_E_NOMEM : AIR_OK;
}

static air_status_t
build_body(const struct gem_state *st, const cJSON *body, air_fault_t *f, air_buf_t *root)
{
    const cJSON *msgs = air__json_get(body, "messages");
    if (!cJSON_IsArray(msgs))
        return bad_request(f, "messages: expected an array");
    air_buf_t sys = AIR_BUF_INIT;
    int nsys = 0;
    struct contents c = {AIR_BUF_INIT, NULL, 0};
    (void)air__buf_reserve(&c.b, root->cap > root->len ? root->cap - root->len : 1024);
    air_status_t rc = AIR_OK;
    int i = -1;
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs)
    {
        i++;
        char where[32];
        air__path_idx(where, sizeof where, "messages", "", i);
        const char *role = get_str(m, "role");
        const cJSON *content = air__json_get(m, "content");
        if (streq(role, "system") || streq(role, "developer")) {
            rc = system_parts(content, where, f, &sys, &nsys);
        } else if (streq(role, "user")) {
            rc = content_parts(content, "user", where, f, &c);
        } else if (streq(role, "assistant")) {
            rc = content_parts(content, "model", where, f, &c);
            if (rc == AIR_OK)
                rc = assistant_tool_calls(air__json_get(m, "tool_calls"), where, f, &c);
        } else if (streq(role, "tool")) {
            rc = tool_result(msgs, i, m, where, f, &c);
        } else {
            rc = bad_request(f, "%s.role: unsupported role '%s'", where,
                             role != NULL ? role : "(none)");
        }
        if (rc != AIR_OK)
            break;
    }
    if (rc == AIR_OK && c.n == 0)
        rc = bad_request(f, "messages: nothing to send besides system messages");
    if (rc == AIR_OK && (sys.oom || c.b.oom))
        rc = AIR_E_NOMEM;
    if (rc == AIR_OK) {
        if (nsys > 0) {
            PUTS(root, "\"systemInstruction\":{\"parts\":[");
            air__buf_put(root, sys.data, sys.len);
            PUTS(root, "]},");
        }
        PUTS(root, "\"contents\":[");
        air__buf_put(root, c.b.data, c.b.len);
        PUTS(root, "]}]"); /* closes the last content */
    }
    air__buf_free(&sys);
    air__buf_free(&c.b);
    if (rc != AIR_OK)
        return rc;
    rc = tools_and_choice(body, f, root);
    if (rc == AIR_OK)
        rc = generation_config(body, f, root);
    if (rc == AIR_OK && st->safety != NULL) {
        PUTS(root, ",\"safetySettings\":");
        air__buf_cjson(root, st->safety);
    }
    return rc;
}

/* base + "/v1beta/models/" + escaped model + method. A "models/" prefix on
 * the model name is dropped (the SDKs accept both spellings). */
static char *
build_url(const char *base, const char *model, int stream)
{
    static const char hex[] = "0123456789ABCDEF";
    if (strncmp(model, "models/", 7) == 0)
        model += 7;
    air_buf_t p = AIR_BUF_INIT;
    size_t bl = strlen(base);
    while (bl > 0 && base[bl - 1] == '/')
        bl--;
    (void)air__buf_reserve(&p, bl + strlen(model) * 3 + 64);
    air__buf_put(&p, base, bl);
    PUTS(&p, "/v1beta/models/");
    for (const unsigned char *s = (const unsigned char *)model; *s != '\0'; s++) {
        unsigned char ch = *s;
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '.' || ch == '_' || ch == '~') {
            air__buf_put1(&p, (char)ch);
        } else {
            char esc[3] = {'%', hex[ch >> 4], hex[ch & 15]};
            air__buf_put(&p, esc, 3);
        }
    }
    if (stream)
        PUTS(&p, ":streamGenerateContent?alt=sse");
    else
        PUTS(&p, ":generateContent");
    return air__buf_steal(&p, NULL);
}

static air_status_t
gem_encode(const void *state, const air_req_view_t *req, air_http_out_t *out, air_fault_t *f)
{
    const struct gem_state *st = state;
    memset(out, 0, sizeof *out);
    if (st == NULL || req == NULL || !cJSON_IsObject(req->body))
        return bad_request(f, "request body: expected a JSON object");
    const char *model =
        req->model != NULL && req->model[0] != '\0' ? req->model : get_str(req->body, "model");
    if (model == NULL || model[0] == '\0' || streq(model, "models/"))
        return bad_request(f, "model: missing");

    air_buf_t root = AIR_BUF_INIT;
    /* About as long as the caller's body: one allocation. */
    (void)air__buf_reserve(&root, req->raw_len + 512);
    air__buf_put1(&root, '{');
    air_status_t rc = build_body(st, req->body, f, &root);
    air__buf_put1(&root, '}');
    if (rc == AIR_OK && root.oom)
        rc = AIR_E_NOMEM;
    if (rc != AIR_OK) {
        air__buf_free(&root);
        if (rc == AIR_E_BADREQ && f != NULL)
            fault_scrub(st, f); /* messages quote caller text */
        return rc;
    }
    out->body = air__buf_steal(&root, &out->body_len);
    out->url = build_url(st->base_url, model, req->stream);
    out->headers[out->nheaders++] = air__header("Content-Type", "application/json");
    if (st->api_key != NULL && st->api_key[0] != '\0')
        out->headers[out->nheaders++] = air__header("x-goog-api-key", st->api_key);
    /* "Expect:" with no value: libcurl must not send Expect: 100-continue. */
    out->headers[out->nheaders++] = air__header("Expect", "");
    int ok = out->body != NULL && out->url != NULL;
    for (size_t i = 0; i < out->nheaders; i++)
        ok = ok && out->headers[i] != NULL;
    if (!ok) {
        air__http_out_clear(out);
        return AIR_E_NOMEM;
    }
    return AIR_OK;
}

/* ------------------------------------------------------------------------ */
/* Error classification (spec 3.5 and 7)                                     */

/* "12s", "0.5s", "3.700s" -> milliseconds, or -1. Parsed by hand (no
 * locale). */
static int64_t
parse_duration_ms(const char *s)
{
    int64_t ip = 0;
    int digits = 0;
    while (*s >= '0' && *s <= '9') {
        if (ip < 100000000)
            ip = ip * 10 + (*s - '0');
        s++;
        digits++;
    }
    int64_t frac = 0, scale = 1000000;
    if (*s == '.') {
        s++;
        while (*s >= '0' && *s <= '9') {
            if (scale > 1) {
                scale /= 10;
                frac += (*s - '0') * scale;
            }
            s++;
            digits++;
        }
    }
    if (digits == 0 || s[0] != 's' || s[1] != '\0')
        return -1;
    return ip * 1000 + (frac + 500) / 1000;
}

static int
contains_ci(const char *hay, const char *needle)
{
    if (hay == NULL)
        return 0;
    for (; *hay != '\0'; hay++)
        if (has_prefix_ci(hay, needle))
            return 1;
    return 0;
}

/*
 * Apply a Gemini error object ({"code","message","status","details"}) to f,
 * whose class was first set from the HTTP status. type = status,
 * code = details[].reason (or "context_length_exceeded").
 */
static void
apply_gemini_error(air_fault_t *f, const cJSON *err)
{
    const char *status = get_str(err, "status");
    const char *msg = get_str(err, "message");
    const char *reason = NULL;
    int64_t delay = -1;
    int per_day = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, air__json_get(err, "details"))
    {
        const char *r = get_str(d, "reason");
        if (r != NULL && reason == NULL)
            reason = r;
        const char *rd = get_str(d, "retryDelay");
        if (rd != NULL && delay < 0)
            delay = parse_duration_ms(rd);
        const cJSON *v;
        cJSON_ArrayForEach(v, air__json_get(d, "violations"))
        {
            if (contains_ci(get_str(v, "quotaId"), "perday") ||
                contains_ci(get_str(v, "quotaMetric"), "perday"))
                per_day = 1;
        }
    }
    if (msg != NULL) {
        air__strlcpy(f->message, msg, sizeof f->message);
        utf8_trim(f->message);
        for (char *p = f->message; *p != '\0'; p++)
            if ((unsigned char)*p < 0x20)
                *p = ' ';
    }
    f->type[0] = '\0';
    f->code[0] = '\0';
    if (status != NULL)
        air__strlcpy(f->type, status, sizeof f->type);
    if (reason != NULL)
        air__strlcpy(f->code, reason, sizeof f->code);

    if (reason != NULL &&
        (strncmp(reason, "API_KEY_", 8) == 0 || streq(reason, "SERVICE_DISABLED") ||
         streq(reason, "BILLING_DISABLED") || streq(reason, "CONSUMER_INVALID"))) {
        /* A bad or blocked key is a 400 at Google: it is this deployment's
         * problem, not the request's. */
        fault_set(f, AIR_ERR_AUTH, 0, 1, 1);
    } else if (streq(status, "INVALID_ARGUMENT")) {
        fault_set(f, AIR_ERR_INVALID_REQUEST, 0, 0, 0);
        if (contains_ci(msg, "exceeds the maximum number of tokens")) {
            air__strlcpy(f->code, "context_length_exceeded", sizeof f->code);
            f->failover = 1; /* a model with a larger context may take it */
        }
    } else if (streq(status, "FAILED_PRECONDITION") || streq(status, "PERMISSION_DENIED") ||
               streq(status, "UNAUTHENTICATED")) {
        /* billing not enabled / region not served / key lacks access */
        fault_set(f, AIR_ERR_AUTH, 0, 1, 1);
    } else if (streq(status, "RESOURCE_EXHAUSTED")) {
        if (per_day)
            /* A daily quota will not clear soon: no retry here, mark it. */
            fault_set(f, AIR_ERR_RATE_LIMITED, 0, 1, 1);
        else
            fault_set(f, AIR_ERR_RATE_LIMITED, 1, 1, 0);
        if (delay >= 0)
            f->retry_after_ms = delay;
    } else if (streq(status, "UNAVAILABLE")) {
        fault_set(f, AIR_ERR_OVERLOADED, 1, 1, 0);
    } else if (streq(status, "INTERNAL")) {
        fault_set(f, AIR_ERR_UPSTREAM, 1, 1, 0);
    } else if (streq(status, "DEADLINE_EXCEEDED")) {
        fault_set(f, AIR_ERR_TIMEOUT, 1, 1, 0);
    } else if (streq(status, "NOT_FOUND")) {
        fault_set(f, AIR_ERR_NOT_FOUND, 0, 1, 0);
    }
}

/* The {"error":{...}} object of a parsed body (unwrapping a one-element
 * array), or NULL. */
static const cJSON *
error_object(const cJSON *root)
{
    if (cJSON_IsArray(root) && cJSON_GetArraySize(root) == 1)
        root = cJSON_GetArrayItem(root, 0);
    const cJSON *e = air__json_get(root, "error");
    return cJSON_IsObject(e) ? e : NULL;
}

/* Fault for an error object that came inside a 2xx (body or stream): the
 * class comes from the error's own code and status. */
static void
fault_from_inline_error(const void *state, const cJSON *err, air_fault_t *f)
{
    fault_reset(f);
    const cJSON *code = air__json_get(err, "code");
    int http = cJSON_IsNumber(code) && code->valuedouble >= 400 && code->valuedouble < 600
                   ? (int)code->valuedouble
                   : 500;
    air__fault_from_status(f, http);
    apply_gemini_error(f, err);
    if (f->message[0] == '\0')
        air__strlcpy(f->message, "gemini returned an error", sizeof f->message);
    fault_scrub(state, f);
}

static void
gem_classify(const void *state, const air_http_in_t *in, air_fault_t *f)
{
    cJSON *root = in->body_len > 0 ? cJSON_ParseWithLength(in->body, in->body_len) : NULL;
    const cJSON *err = error_object(root);
    if (err != NULL && in->status >= 200 && in->status <= 299) {
        /* An error object inside a 2xx: core hands us the raw JSON lines a
         * stream carried outside any data: field (spec 3.4, 6.6 step 6).
         * Classify it exactly as the same object in a data: event or a 2xx
         * body: by its own code and status, not by the stream's 200. */
        fault_from_inline_error(state, err, f);
        cJSON_Delete(root);
        return;
    }
    fault_reset(f);
    air__fault_from_status(f, in->status);
    air__fault_parse_body(f, in->body, in->body_len);
    if (err != NULL)
        apply_gemini_error(f, err);
    cJSON_Delete(root);
    int64_t ra = air__retry_after_ms(in);
    if (ra >= 0)
        f->retry_after_ms = ra; /* a header wins over RetryInfo (spec 7) */
    air__fault_apply_should_retry(f, in);
    fault_scrub(state, f);
}

/* ------------------------------------------------------------------------ */
/* Responses: shared pieces of decode and stream                             */

static const char *
map_finish(const char *fr)
{
    static const char *const filtered[] = {"SAFETY",
                                           "PROHIBITED_CONTENT",
                                           "BLOCKLIST",
                                           "SPII",
                                           "LANGUAGE",
                                           "IMAGE_SAFETY",
                                           "IMAGE_PROHIBITED_CONTENT",
                                           "IMAGE_RECITATION",
                                           "IMAGE_OTHER",
                                           "NO_IMAGE",
                                           "RECITATION",
                                           "OTHER",
                                           NULL};
    if (fr == NULL)
        return "stop";
    if (streq(fr, "MAX_TOKENS"))
        return "length";
    for (size_t i = 0; filtered[i] != NULL; i++)
        if (streq(fr, filtered[i]))
            return "content_filter";
    return "stop"; /* STOP, UNSPECIFIED, *_TOOL_CALL(S), unknown */
}

struct gem_usage {
    uint64_t prompt, completion, cached, reasoning;
    int has_reasoning;
    int present;
};

/* Spec 6.8. */
static void
usage_from_meta(const cJSON *um, struct gem_usage *u)
{
    int has_total = 0;
    memset(u, 0, sizeof *u);
    u->present = 1;
    uint64_t prompt = get_count(um, "promptTokenCount", NULL);
    uint64_t tool = get_count(um, "toolUsePromptTokenCount", NULL);
    uint64_t cand = get_count(um, "candidatesTokenCount", NULL);
    uint64_t thoughts = get_count(um, "thoughtsTokenCount", &u->has_reasoning);
    uint64_t total = get_count(um, "totalTokenCount", &has_total);
    u->prompt = prompt + tool;
    if (has_total && total >= u->prompt)
        u->completion = total - u->prompt;
    else
        u->completion = cand + thoughts;
    u->cached = get_count(um, "cachedContentTokenCount", NULL);
    u->reasoning = thoughts;
}

static void
usage_export(const struct gem_usage *u, air_usage_t *out)
{
    memset(out, 0, sizeof *out);
    out->prompt = u->prompt;
    out->completion = u->completion;
    out->cached = u->cached;
    out->reasoning = u->reasoning;
    out->present = u->present;
}

static void
put_usage(air_buf_t *b, const struct gem_usage *u)
{
    air__buf_printf(b,
                    "{\"prompt_tokens\":%llu,\"completion_tokens\":%llu,\"total_tokens\":%llu,"
                    "\"prompt_tokens_details\":{\"cached_tokens\":%llu}",
                    (unsigned long long)u->prompt, (unsigned long long)u->completion,
                    (unsigned long long)(u->prompt + u->completion), (unsigned long long)u->cached);
    if (u->has_reasoning)
        air__buf_printf(b, ",\"completion_tokens_details\":{\"reasoning_tokens\":%llu}",
                        (unsigned long long)u->reasoning);
    air__buf_putc(b, '}');
}

/* The id source: responseId, else the router's request id; at most
 * IDSRC_MAX - 1 bytes. */
static void
pick_idsrc(const cJSON *resp, const air_req_view_t *req, char *dst)
{
    const char *rid = get_str(resp, "responseId");
    if (rid == NULL || rid[0] == '\0')
        rid = req != NULL && req->request_id != NULL ? req->request_id : "gemini";
    air__strlcpy(dst, rid, IDSRC_MAX);
}

/* Synthesised tool-call id: "call_<src>_<cand>_<k>", src reduced to
 * [A-Za-z0-9_-] so it suits every vendor's id pattern. */
static void
put_tool_id(air_buf_t *b, const char *idsrc, int cand, unsigned k)
{
    char id[IDSRC_MAX + 40];
    size_t o = 0;
    memcpy(id, "call_", 5);
    o = 5;
    for (const char *p = idsrc; *p != '\0' && o < 5 + IDSRC_MAX; p++) {
        char ch = *p;
        int ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
                 ch == '_' || ch == '-';
        id[o++] = ok ? ch : '_';
    }
    snprintf(id + o, sizeof id - o, "_%d_%u", cand, k);
    air__buf_json_str(b, id, strlen(id));
}

/* One tool call object; with_index for stream deltas. */
static void
put_tool_call(air_buf_t *b, const cJSON *part, const char *idsrc, int cand, unsigned k,
              int with_index)
{
    const cJSON *fc = air__json_get(part, "functionCall");
    air__buf_putc(b, '{');
    if (with_index)
        air__buf_printf(b, "\"index\":%u,", k);
    air__buf_puts(b, "\"id\":");
    const char *vid = get_str(fc, "id");
    if (vid != NULL && vid[0] != '\0')
        air__buf_json_str(b, vid, strlen(vid));
    else
        put_tool_id(b, idsrc, cand, k);
    air__buf_puts(b, ",\"type\":\"function\",\"function\":{\"name\":");
    const char *name = get_str(fc, "name");
    if (name == NULL)
        name = "";
    air__buf_json_str(b, name, strlen(name));
    air__buf_puts(b, ",\"arguments\":");
    const cJSON *args = air__json_get(fc, "args");
    char *a = is_absent(args) ? NULL : cJSON_PrintUnformatted(args);
    if (a != NULL) {
        air__buf_json_str(b, a, strlen(a));
        cJSON_free(a);
    } else if (!is_absent(args)) {
        b->oom = 1;
    } else {
        air__buf_puts(b, "\"{}\"");
    }
    air__buf_putc(b, '}');
    const char *sig = get_str(part, "thoughtSignature");
    if (sig != NULL) {
        air__buf_puts(b, ",\"extra_content\":{\"google\":{\"thought_signature\":");
        air__buf_json_str(b, sig, strlen(sig));
        air__buf_puts(b, "}}");
    }
    air__buf_putc(b, '}');
}

/* What one candidate's parts say, split by kind. */
struct cand_parts {
    air_buf_t text;    /* concatenated visible text */
    air_buf_t thought; /* concatenated thought text */
    air_buf_t tools;   /* comma-separated tool call objects */
    int has_text, has_thought;
    unsigned ntools;
};

static void
cand_parts_free(struct cand_parts *cp)
{
    air__buf_free(&cp->text);
    air__buf_free(&cp->thought);
    air__buf_free(&cp->tools);
}

/* Split a candidate's parts. Tool calls are numbered from first_k. */
static void
cand_parts_read(const cJSON *cand, const char *idsrc, int ci, unsigned first_k, int with_index,
                struct cand_parts *cp)
{
    const cJSON *part;
    cJSON_ArrayForEach(part, air__json_get(air__json_get(cand, "content"), "parts"))
    {
        if (cJSON_IsObject(air__json_get(part, "functionCall"))) {
            if (cp->ntools > 0)
                air__buf_putc(&cp->tools, ',');
            put_tool_call(&cp->tools, part, idsrc, ci, first_k + cp->ntools, with_index);
            cp->ntools++;
            continue;
        }
        const char *tx = get_str(part, "text");
        if (tx == NULL)
            continue; /* inlineData, executableCode, ...: no unified form */
        if (cJSON_IsTrue(air__json_get(part, "thought"))) {
            air__buf_puts(&cp->thought, tx);
            cp->has_thought = 1;
        } else {
            air__buf_puts(&cp->text, tx);
            cp->has_text = 1;
        }
    }
}

static int
cand_parts_oom(const struct cand_parts *cp)
{
    return cp->text.oom || cp->thought.oom || cp->tools.oom;
}

static int
cand_index(const cJSON *cand, int pos)
{
    const cJSON *ix = air__json_get(cand, "index");
    if (cJSON_IsNumber(ix) && ix->valuedouble >= 0 && ix->valuedouble < 1e6)
        return (int)ix->valuedouble;
    return pos;
}

static int
blocked_prompt(const cJSON *resp)
{
    const cJSON *cands = air__json_get(resp, "candidates");
    return (cands == NULL || cJSON_GetArraySize(cands) == 0) &&
           get_str(air__json_get(resp, "promptFeedback"), "blockReason") != NULL;
}

/* ------------------------------------------------------------------------ */
/* decode                                                                    */

static air_status_t
gem_decode(const void *state, const air_req_view_t *req, const air_http_in_t *in,
           air_decoded_t *out, air_fault_t *f)
{
    memset(out, 0, sizeof *out);
    cJSON *root = cJSON_ParseWithLength(in->body, in->body_len);
    if (root == NULL) {
        protocol_fault(f, in->status, "gemini: unparseable response body");
        return AIR_E_PROTOCOL;
    }
    const cJSON *err = error_object(root);
    if (err != NULL) {
        fault_from_inline_error(state, err, f);
        cJSON_Delete(root);
        return AIR_E_UPSTREAM;
    }
    const cJSON *resp = root;
    if (cJSON_IsArray(resp) && cJSON_GetArraySize(resp) == 1)
        resp = cJSON_GetArrayItem(resp, 0);
    const cJSON *cands = air__json_get(resp, "candidates");
    int blocked = blocked_prompt(resp);
    if (!cJSON_IsObject(resp) ||
        (!blocked && (!cJSON_IsArray(cands) || cJSON_GetArraySize(cands) == 0))) {
        cJSON_Delete(root);
        protocol_fault(f, in->status, "gemini: response has no candidates");
        return AIR_E_PROTOCOL;
    }

    char idsrc[IDSRC_MAX];
    pick_idsrc(resp, req, idsrc);
    const char *model = get_str(resp, "modelVersion");
    if (model == NULL || model[0] == '\0')
        model = req != NULL && req->model != NULL ? req->model : "";
    struct gem_usage u = {0};
    const cJSON *um = air__json_get(resp, "usageMetadata");
    if (cJSON_IsObject(um))
        usage_from_meta(um, &u);

    air_buf_t b = AIR_BUF_INIT;
    air__buf_puts(&b, "{\"id\":");
    {
        char id[IDSRC_MAX + 16];
        snprintf(id, sizeof id, "chatcmpl-%s", idsrc);
        air__buf_json_str(&b, id, strlen(id));
    }
    air__buf_printf(&b, ",\"object\":\"chat.completion\",\"created\":%lld,\"model\":",
                    (long long)(req != NULL ? req->now_unix : 0));
    air__buf_json_str(&b, model, strlen(model));
    air__buf_puts(&b, ",\"choices\":[");
    const char *finish0 = NULL;
    if (blocked) {
        /* Spec 6.5: a blocked prompt is a normal completion with no
         * content and finish_reason content_filter, not an error. */
        air__buf_puts(&b, "{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":null},"
                          "\"logprobs\":null,\"finish_reason\":\"content_filter\"}");
        finish0 = "content_filter";
    }
    int pos = -1;
    const cJSON *cand;
    const cJSON *cand_list = blocked ? NULL : cands;
    cJSON_ArrayForEach(cand, cand_list)
    {
        pos++;
        int ci = cand_index(cand, pos);
        struct cand_parts cp = {AIR_BUF_INIT, AIR_BUF_INIT, AIR_BUF_INIT, 0, 0, 0};
        cand_parts_read(cand, idsrc, ci, 0, 0, &cp);
        if (cand_parts_oom(&cp)) {
            cand_parts_free(&cp);
            b.oom = 1;
            break;
        }
        const char *fin = cp.ntools > 0 ? "tool_calls" : map_finish(get_str(cand, "finishReason"));
        if (finish0 == NULL)
            finish0 = fin;
        if (pos > 0)
            air__buf_putc(&b, ',');
        air__buf_printf(&b, "{\"index\":%d,\"message\":{\"role\":\"assistant\",\"content\":", ci);
        if (cp.has_text)
            air__buf_json_str(&b, cp.text.data, cp.text.len);
        else
            air__buf_puts(&b, "null");
        if (cp.has_thought) {
            air__buf_puts(&b, ",\"reasoning_content\":");
            air__buf_json_str(&b, cp.thought.data, cp.thought.len);
        }
        if (cp.ntools > 0) {
            air__buf_puts(&b, ",\"tool_calls\":[");
            air__buf_append(&b, cp.tools.data, cp.tools.len);
            air__buf_putc(&b, ']');
        }
        air__buf_printf(&b, "},\"logprobs\":null,\"finish_reason\":\"%s\"}", fin);
        cand_parts_free(&cp);
    }
    air__buf_puts(&b, "],\"usage\":");
    put_usage(&b, &u);
    air__buf_putc(&b, '}');

    air__strlcpy(out->model, model, sizeof out->model);
    air__strlcpy(out->finish_reason, finish0 != NULL ? finish0 : "", sizeof out->finish_reason);
    usage_export(&u, &out->usage);
    cJSON_Delete(root);
    out->body = air__buf_steal(&b, &out->body_len);
    if (out->body == NULL) {
        memset(out, 0, sizeof *out);
        return AIR_E_NOMEM;
    }
    return AIR_OK;
}

/* ------------------------------------------------------------------------ */
/* Streaming (spec 6.6)                                                      */

/*
 * Every event of a Gemini stream is a whole GenerateContentResponse (the
 * candidates' new parts, the usage so far, the model and response id), so
 * a stream of short tokens is mostly envelope. The usual event (candidates
 * with text parts, plain numbers in usageMetadata) is read by a small
 * validating scanner straight from its bytes (fast_scan below); anything
 * else (function calls, a prompt block, an error, escapes that cJSON would
 * decode to other bytes, an array of responses, unusual numbers) goes
 * through cJSON as before. Both paths emit the same chunks for an event
 * they can both read.
 */

/* Lives in the ops->stream_state_size zeroed bytes core gives each stream. */
struct gem_stream {
    int started;      /* id and model fixed */
    int finished_any; /* a finishReason or blockReason was seen */
    unsigned char role_sent[GEM_MAX_CAND];
    unsigned char finished[GEM_MAX_CAND];
    unsigned char tool_seen[GEM_MAX_CAND];
    unsigned next_tool[GEM_MAX_CAND];
    struct gem_usage usage;
    char idsrc[IDSRC_MAX];
    char model[128];
    /* The chunk envelope up to "choices": (fixed once started), kept when
     * it fits; head_len 0: not kept. */
    uint16_t head_len;
    char head[400];
};

static void
chunk_head(air_buf_t *b, struct gem_stream *gs, const air_req_view_t *req)
{
    air__buf_reset(b);
    (void)air__buf_reserve(b, 512); /* one allocation for most chunks */
    if (gs->started && gs->head_len > 0) {
        air__buf_put(b, gs->head, gs->head_len);
        return;
    }
    PUTS(b, "{\"id\":");
    char id[IDSRC_MAX + 16];
    size_t il = strnlen(gs->idsrc, IDSRC_MAX - 1);
    memcpy(id, "chatcmpl-", 9);
    memcpy(id + 9, gs->idsrc, il);
    air__buf_json_str(b, id, 9 + il);
    PUTS(b, ",\"object\":\"chat.completion.chunk\",\"created\":");
    air__buf_i64(b, req != NULL ? (long long)req->now_unix : 0);
    PUTS(b, ",\"model\":");
    put_cstr(b, gs->model);
    PUTS(b, ",\"choices\":");
    if (gs->started && !b->oom && b->len <= sizeof gs->head) {
        memcpy(gs->head, b->data, b->len);
        gs->head_len = (uint16_t)b->len;
    }
}

static air_stream_rc_t
oom_fault(air_stream_ctx_t *sc)
{
    protocol_fault(&sc->fault, 0, "gemini: out of memory while translating the stream");
    sc->fault.retry = 0;
    return AIR_STREAM_ERROR;
}

/* Hand b to core. Returns MORE, or ERROR when core wants us to stop. */
static air_stream_rc_t
emit(air_stream_ctx_t *sc, air_buf_t *b, unsigned flags)
{
    if (b->oom)
        return oom_fault(sc);
    if (sc->emit(sc->emit_ud, b->data, b->len, flags) != 0)
        return AIR_STREAM_ERROR;
    return AIR_STREAM_MORE;
}

static air_stream_rc_t
emit_role(air_stream_ctx_t *sc, struct gem_stream *gs, air_buf_t *b, int ci)
{
    if (gs->role_sent[ci])
        return AIR_STREAM_MORE;
    gs->role_sent[ci] = 1;
    chunk_head(b, gs, sc->req);
    PUTS(b, "[{\"index\":");
    air__buf_i64(b, ci);
    PUTS(b, ",\"delta\":{\"role\":\"assistant\"},\"finish_reason\":null}]}");
    return emit(sc, b, 0);
}

static air_stream_rc_t
emit_finish(air_stream_ctx_t *sc, struct gem_stream *gs, air_buf_t *b, int ci, const char *fin)
{
    gs->finished[ci] = 1;
    gs->finished_any = 1;
    if (sc->finish_reason[0] == '\0' || ci == 0)
        air__strlcpy(sc->finish_reason, fin, sizeof sc->finish_reason);
    chunk_head(b, gs, sc->req);
    PUTS(b, "[{\"index\":");
    air__buf_i64(b, ci);
    PUTS(b, ",\"delta\":{},\"finish_reason\":\"");
    air__buf_puts(b, fin); /* one of our own names: nothing to escape */
    PUTS(b, "\"}]}");
    return emit(sc, b, AIR_CHUNK_CONTENT);
}

struct fast_cand;

/* What one candidate of an event says, read by either path. Text and
 * thought are given either as air_buf_t text (cJSON path: decoded bytes) or
 * as spans of already escaped JSON string content (fast path). */
struct cand_delta {
    const struct cand_parts *cp;  /* cJSON path, or NULL */
    const struct fast_cand *fc;   /* fast path, or NULL */
    int has_text, has_thought;    /* a (visible / thought) text part exists */
    size_t text_len, thought_len; /* non-zero when the text is non-empty */
    unsigned ntools;
    const char *fr; /* finishReason, NULL when absent or empty */
};

static void put_fast_text(air_buf_t *b, const struct fast_cand *fc, int thought);

static air_stream_rc_t
stream_candidate_delta(air_stream_ctx_t *sc, struct gem_stream *gs, air_buf_t *b,
                       const struct cand_delta *d, int ci)
{
    int has_delta =
        (d->has_text && d->text_len > 0) || (d->has_thought && d->thought_len > 0) || d->ntools > 0;
    air_stream_rc_t rc = AIR_STREAM_MORE;
    if (has_delta || (d->fr != NULL && !gs->finished[ci]))
        rc = emit_role(sc, gs, b, ci);
    if (rc == AIR_STREAM_MORE && has_delta) {
        chunk_head(b, gs, sc->req);
        PUTS(b, "[{\"index\":");
        air__buf_i64(b, ci);
        PUTS(b, ",\"delta\":{");
        int sep = 0;
        if (d->has_text && d->text_len > 0) {
            PUTS(b, "\"content\":");
            if (d->cp != NULL)
                air__buf_json_str(b, d->cp->text.data, d->cp->text.len);
            else
                put_fast_text(b, d->fc, 0);
            sep = 1;
        }
        if (d->has_thought && d->thought_len > 0) {
            if (sep)
                air__buf_put1(b, ',');
            PUTS(b, "\"reasoning_content\":");
            if (d->cp != NULL)
                air__buf_json_str(b, d->cp->thought.data, d->cp->thought.len);
            else
                put_fast_text(b, d->fc, 1);
            sep = 1;
        }
        if (d->ntools > 0) {
            if (sep)
                air__buf_put1(b, ',');
            PUTS(b, "\"tool_calls\":[");
            air__buf_put(b, d->cp->tools.data, d->cp->tools.len); /* only the cJSON path has tools */
            air__buf_put1(b, ']');
            gs->tool_seen[ci] = 1;
            gs->next_tool[ci] += d->ntools;
        }
        PUTS(b, "},\"finish_reason\":null}]}");
        rc = emit(sc, b, AIR_CHUNK_CONTENT);
    }
    if (rc == AIR_STREAM_MORE && d->fr != NULL && !gs->finished[ci])
        rc = emit_finish(sc, gs, b, ci, gs->tool_seen[ci] ? "tool_calls" : map_finish(d->fr));
    return rc;
}

static air_stream_rc_t
stream_candidate(air_stream_ctx_t *sc, struct gem_stream *gs, air_buf_t *b, const cJSON *cand,
                 int ci)
{
    struct cand_parts cp = {AIR_BUF_INIT, AIR_BUF_INIT, AIR_BUF_INIT, 0, 0, 0};
    cand_parts_read(cand, gs->idsrc, ci, gs->next_tool[ci], 1, &cp);
    if (cand_parts_oom(&cp)) {
        cand_parts_free(&cp);
        return oom_fault(sc);
    }
    const char *fr = get_str(cand, "finishReason");
    if (fr != NULL && fr[0] == '\0')
        fr = NULL;
    struct cand_delta d = {&cp,         NULL,           cp.has_text, cp.has_thought,
                           cp.text.len, cp.thought.len, cp.ntools,   fr};
    air_stream_rc_t rc = stream_candidate_delta(sc, gs, b, &d, ci);
    cand_parts_free(&cp);
    return rc;
}

/* Fix id and model from the first response of the stream. */
static void
stream_start(air_stream_ctx_t *sc, struct gem_stream *gs, const char *rid, const char *model)
{
    gs->started = 1;
    if (rid == NULL || rid[0] == '\0')
        rid = sc->req != NULL && sc->req->request_id != NULL ? sc->req->request_id : "gemini";
    air__strlcpy(gs->idsrc, rid, IDSRC_MAX);
    if (model == NULL || model[0] == '\0')
        model = sc->req != NULL && sc->req->model != NULL ? sc->req->model : "";
    air__strlcpy(gs->model, model, sizeof gs->model);
    air__strlcpy(sc->model, model, sizeof sc->model);
}

static air_stream_rc_t
stream_response(const void *state, air_stream_ctx_t *sc, struct gem_stream *gs, air_buf_t *b,
                const cJSON *resp)
{
    const cJSON *err = error_object(resp);
    if (err != NULL) {
        fault_from_inline_error(state, err, &sc->fault);
        return AIR_STREAM_ERROR;
    }
    if (!cJSON_IsObject(resp)) {
        protocol_fault(&sc->fault, 0, "gemini: stream event is not a JSON object");
        return AIR_STREAM_ERROR;
    }
    if (!gs->started)
        stream_start(sc, gs, get_str(resp, "responseId"), get_str(resp, "modelVersion"));
    const cJSON *um = air__json_get(resp, "usageMetadata");
    if (cJSON_IsObject(um)) {
        /* The last usageMetadata is authoritative: replace, never sum. */
        usage_from_meta(um, &gs->usage);
        usage_export(&gs->usage, &sc->usage);
    }
    if (blocked_prompt(resp)) {
        if (gs->finished[0])
            return AIR_STREAM_MORE;
        air_stream_rc_t rc = emit_role(sc, gs, b, 0);
        if (rc == AIR_STREAM_MORE)
            rc = emit_finish(sc, gs, b, 0, "content_filter");
        return rc;
    }
    int pos = -1;
    const cJSON *cand;
    cJSON_ArrayForEach(cand, air__json_get(resp, "candidates"))
    {
        pos++;
        int ci = cand_index(cand, pos);
        if (ci >= GEM_MAX_CAND) {
            protocol_fault(&sc->fault, 0, "gemini: candidate index out of range in stream");
            return AIR_STREAM_ERROR;
        }
        air_stream_rc_t rc = stream_candidate(sc, gs, b, cand, ci);
        if (rc != AIR_STREAM_MORE)
            return rc;
    }
    return AIR_STREAM_MORE;
}

/* ---- the fast path -------------------------------------------------------- */

#define FAST_MAX_DEPTH 64
#define FAST_MAX_PARTS 16

/* A string value: the bytes between the quotes, escaped exactly as
 * air__buf_json_str would escape its decoded text. */
struct span {
    const char *p;
    size_t n;
};

struct fast_cand {
    int index;          /* -1: absent */
    struct span finish; /* p NULL: absent */
    int nparts;
    struct span part_text[FAST_MAX_PARTS];
    unsigned char part_thought[FAST_MAX_PARTS];
};

struct fast_ev {
    struct span rid, model; /* p NULL: absent */
    int has_usage;
    uint64_t count[6]; /* usage_keys order */
    unsigned char count_seen[6];
    int ncand;
    struct fast_cand cand[GEM_MAX_CAND];
};

static const char *const usage_keys[6] = {"promptTokenCount",     "toolUsePromptTokenCount",
                                          "candidatesTokenCount", "thoughtsTokenCount",
                                          "totalTokenCount",      "cachedContentTokenCount"};

/* Concatenated text (or thought) parts of a fast candidate, as a JSON
 * string. */
static void
put_fast_text(air_buf_t *b, const struct fast_cand *fc, int thought)
{
    air__buf_put1(b, '"');
    for (int i = 0; i < fc->nparts; i++)
        if (fc->part_text[i].p != NULL && fc->part_thought[i] == thought)
            air__buf_put(b, fc->part_text[i].p, fc->part_text[i].n);
    air__buf_put1(b, '"');
}

/* The strict scanner lives in jscan.c (shared with the other adapters). */
#define ESC_ANY AIR_JSCAN_ESC_ANY
#define ESC_ODD AIR_JSCAN_ESC_ODD
#define scan_str air__jscan_str
#define scan_num air__jscan_num
#define skip_value air__jscan_skip_value
#define skip_ws air__jscan_ws
#define scan_key air__jscan_key
#define key_is air__jscan_key_is
#define next_member air__jscan_next

/* A string value kept as a span. plain = 1: no escape at all (the span is
 * the decoded text); 0: escapes that copy through unchanged are allowed. */
static const char *
want_str(const char *p, const char *e, struct span *s, int plain)
{
    unsigned esc = 0;
    if (p >= e || *p != '"')
        return NULL;
    const char *q = scan_str(p, e, &esc);
    if (q == NULL || (esc & ESC_ODD) || (plain && esc != 0))
        return NULL;
    s->p = p + 1;
    s->n = (size_t)(q - 1 - (p + 1));
    return q;
}

/* A plain non-negative integer of at most `maxdig` digits (no sign,
 * fraction, exponent or leading zero): exactly the value cJSON reads. */
static const char *
want_uint(const char *p, const char *e, int maxdig, uint64_t *v)
{
    const char *q = p;
    uint64_t n = 0;
    while (q < e && *q >= '0' && *q <= '9') {
        if (q - p >= maxdig)
            return NULL;
        n = n * 10 + (uint64_t)(*q - '0');
        q++;
    }
    if (q == p || (*p == '0' && q - p > 1) || (q < e && (*q == '.' || *q == 'e' || *q == 'E')))
        return NULL;
    *v = n;
    return q;
}

/* One part object. */
static const char *
scan_part(const char *p, const char *e, struct fast_cand *fc)
{
    if (p >= e || *p != '{' || fc->nparts >= FAST_MAX_PARTS)
        return NULL;
    int i = fc->nparts++;
    struct span *text = &fc->part_text[i];
    int seen_thought = 0;
    text->p = NULL;
    fc->part_thought[i] = 0;
    const char *k, *end = NULL;
    size_t kl;
    p = skip_ws(p + 1, e);
    if (p < e && *p == '}')
        return p + 1;
    for (;;) {
        if ((p = scan_key(p, e, &k, &kl)) == NULL)
            return NULL;
        if (key_is(k, kl, "text") && text->p == NULL) {
            p = want_str(p, e, text, 0);
        } else if (key_is(k, kl, "thought") && !seen_thought) {
            seen_thought = 1;
            /* cJSON_IsTrue: only the literal true makes a thought. */
            fc->part_thought[i] = e - p >= 4 && memcmp(p, "true", 4) == 0;
            p = skip_value(p, e, 3);
        } else if (key_is(k, kl, "functionCall") || key_is(k, kl, "text")) {
            return NULL; /* tool calls: the cJSON path; a later "text" is skipped there */
        } else {
            p = skip_value(p, e, 3);
        }
        if (p == NULL || (p = next_member(p, e, '}', &end)) == NULL)
            return NULL;
        if (end != NULL)
            return end;
    }
}

/* One candidate object. */
static const char *
scan_cand(const char *p, const char *e, struct fast_cand *fc)
{
    int seen_content = 0;
    fc->index = -1;
    fc->finish.p = NULL;
    fc->nparts = 0;
    if (p >= e || *p != '{')
        return NULL;
    const char *k, *end = NULL;
    size_t kl;
    p = skip_ws(p + 1, e);
    if (p < e && *p == '}')
        return p + 1;
    for (;;) {
        if ((p = scan_key(p, e, &k, &kl)) == NULL)
            return NULL;
        if (key_is(k, kl, "index") && fc->index < 0) {
            uint64_t v = 0;
            p = want_uint(p, e, 6, &v); /* below 1e6, as cand_index wants */
            fc->index = (int)v;
        } else if (key_is(k, kl, "finishReason") && fc->finish.p == NULL) {
            p = want_str(p, e, &fc->finish, 1);
            if (p != NULL && fc->finish.n >= 64)
                return NULL; /* longer than any reason we know: the cJSON path */
        } else if (key_is(k, kl, "content") && !seen_content) {
            seen_content = 1;
            if (p >= e || *p != '{')
                return NULL;
            /* content: {"parts": [...], "role": ...} */
            const char *ck, *cend = NULL;
            size_t ckl;
            int seen_parts = 0;
            p = skip_ws(p + 1, e);
            if (p < e && *p == '}') {
                p++;
            } else {
                for (;;) {
                    if ((p = scan_key(p, e, &ck, &ckl)) == NULL)
                        return NULL;
                    if (key_is(ck, ckl, "parts") && !seen_parts) {
                        seen_parts = 1;
                        if (p >= e || *p != '[')
                            return NULL;
                        const char *aend = NULL;
                        p = skip_ws(p + 1, e);
                        if (p < e && *p == ']') {
                            p++;
                        } else {
                            for (;;) {
                                if ((p = scan_part(p, e, fc)) == NULL ||
                                    (p = next_member(p, e, ']', &aend)) == NULL)
                                    return NULL;
                                if (aend != NULL) {
                                    p = aend;
                                    break;
                                }
                            }
                        }
                    } else {
                        p = skip_value(p, e, 3);
                    }
                    if (p == NULL || (p = next_member(p, e, '}', &cend)) == NULL)
                        return NULL;
                    if (cend != NULL) {
                        p = cend;
                        break;
                    }
                }
            }
        } else {
            p = skip_value(p, e, 2);
        }
        if (p == NULL || (p = next_member(p, e, '}', &end)) == NULL)
            return NULL;
        if (end != NULL)
            return end;
    }
}

/* The usageMetadata object. */
static const char *
scan_usage(const char *p, const char *e, struct fast_ev *fe)
{
    const char *k, *end = NULL;
    size_t kl;
    p = skip_ws(p + 1, e);
    if (p < e && *p == '}')
        return p + 1;
    for (;;) {
        if ((p = scan_key(p, e, &k, &kl)) == NULL)
            return NULL;
        int which = -1;
        for (int i = 0; i < 6; i++)
            if (key_is(k, kl, usage_keys[i]))
                which = i;
        if (which >= 0 && !fe->count_seen[which]) {
            fe->count_seen[which] = 1;
            /* at most 15 digits: exactly a double, below get_count's cap */
            p = want_uint(p, e, 15, &fe->count[which]);
        } else {
            p = skip_value(p, e, 2);
        }
        if (p == NULL || (p = next_member(p, e, '}', &end)) == NULL)
            return NULL;
        if (end != NULL)
            return end;
    }
}

/*
 * Read one stream event straight from its bytes when it has the usual
 * shape: a strictly valid JSON object with plain keys, no "error" or
 * "promptFeedback", "candidates" an array of at most GEM_MAX_CAND objects
 * whose parts are text (no functionCall), plain strings for responseId,
 * modelVersion and finishReason, plain integers for the counts. Returns 0
 * and fe filled, or -1: the caller then uses cJSON.
 */
static int
fast_scan(const char *data, size_t len, struct fast_ev *fe)
{
    const char *e = data + len;
    const char *p = skip_ws(data, e);
    int seen_cands = 0, seen_usage = 0;
    fe->rid.p = fe->model.p = NULL;
    fe->has_usage = 0;
    fe->ncand = 0;
    memset(fe->count, 0, sizeof fe->count);
    memset(fe->count_seen, 0, sizeof fe->count_seen);
    if (p >= e || *p != '{')
        return -1;
    const char *k, *end = NULL;
    size_t kl;
    p = skip_ws(p + 1, e);
    if (p < e && *p == '}') {
        end = p + 1;
    } else {
        for (;;) {
            if ((p = scan_key(p, e, &k, &kl)) == NULL)
                return -1;
            if (key_is(k, kl, "candidates") && !seen_cands) {
                seen_cands = 1;
                if (p >= e || *p != '[')
                    return -1;
                const char *aend = NULL;
                p = skip_ws(p + 1, e);
                if (p < e && *p == ']') {
                    p++;
                } else {
                    for (;;) {
                        if (fe->ncand >= GEM_MAX_CAND)
                            return -1;
                        if ((p = scan_cand(p, e, &fe->cand[fe->ncand++])) == NULL ||
                            (p = next_member(p, e, ']', &aend)) == NULL)
                            return -1;
                        if (aend != NULL) {
                            p = aend;
                            break;
                        }
                    }
                }
            } else if (key_is(k, kl, "usageMetadata") && !seen_usage) {
                seen_usage = 1;
                if (p >= e || *p != '{')
                    return -1;
                fe->has_usage = 1;
                p = scan_usage(p, e, fe);
            } else if (key_is(k, kl, "responseId") && fe->rid.p == NULL) {
                p = want_str(p, e, &fe->rid, 1);
            } else if (key_is(k, kl, "modelVersion") && fe->model.p == NULL) {
                p = want_str(p, e, &fe->model, 1);
            } else if (key_is(k, kl, "error") || key_is(k, kl, "promptFeedback") ||
                       key_is(k, kl, "candidates") || key_is(k, kl, "usageMetadata") ||
                       key_is(k, kl, "responseId") || key_is(k, kl, "modelVersion")) {
                return -1; /* errors and blocks; repeated members: the cJSON path */
            } else {
                p = skip_value(p, e, 1);
            }
            if (p == NULL || (p = next_member(p, e, '}', &end)) == NULL)
                return -1;
            if (end != NULL)
                break;
        }
    }
    return skip_ws(end, e) == e ? 0 : -1;
}

/* A span as a C string in dst (size bytes), or NULL when p is NULL. */
static const char *
span_cstr(const struct span *s, char *dst, size_t size)
{
    if (s->p == NULL)
        return NULL;
    size_t n = s->n < size - 1 ? s->n : size - 1;
    memcpy(dst, s->p, n);
    dst[n] = '\0';
    return dst;
}

/* stream_response for an event fast_scan read. */
static air_stream_rc_t
stream_fast(air_stream_ctx_t *sc, struct gem_stream *gs, air_buf_t *b, const struct fast_ev *fe)
{
    if (!gs->started) {
        char rid[IDSRC_MAX], model[sizeof gs->model];
        stream_start(sc, gs, span_cstr(&fe->rid, rid, sizeof rid),
                     span_cstr(&fe->model, model, sizeof model));
    }
    if (fe->has_usage) {
        /* usage_from_meta, from the plain integers read (absent: 0) */
        const uint64_t *c = fe->count;
        struct gem_usage *u = &gs->usage;
        memset(u, 0, sizeof *u);
        u->present = 1;
        u->has_reasoning = fe->count_seen[3];
        u->prompt = c[0] + c[1];
        if (fe->count_seen[4] && c[4] >= u->prompt)
            u->completion = c[4] - u->prompt;
        else
            u->completion = c[2] + c[3];
        u->cached = c[5];
        u->reasoning = c[3];
        usage_export(u, &sc->usage);
    }
    for (int pos = 0; pos < fe->ncand; pos++) {
        const struct fast_cand *fc = &fe->cand[pos];
        int ci = fc->index >= 0 ? fc->index : pos;
        if (ci >= GEM_MAX_CAND) {
            protocol_fault(&sc->fault, 0, "gemini: candidate index out of range in stream");
            return AIR_STREAM_ERROR;
        }
        struct cand_delta d = {NULL, fc, 0, 0, 0, 0, 0, NULL};
        for (int i = 0; i < fc->nparts; i++) {
            if (fc->part_text[i].p == NULL)
                continue; /* no text: nothing unified to say */
            if (fc->part_thought[i]) {
                d.has_thought = 1;
                d.thought_len += fc->part_text[i].n;
            } else {
                d.has_text = 1;
                d.text_len += fc->part_text[i].n;
            }
        }
        char fr[64];
        if (fc->finish.p != NULL && fc->finish.n > 0)
            d.fr = span_cstr(&fc->finish, fr, sizeof fr);
        air_stream_rc_t rc = stream_candidate_delta(sc, gs, b, &d, ci);
        if (rc != AIR_STREAM_MORE)
            return rc;
    }
    return AIR_STREAM_MORE;
}

static air_stream_rc_t
gem_stream_event(const void *state, air_stream_ctx_t *sc, const char *event, size_t event_len,
                 const char *data, size_t data_len)
{
    (void)event;
    (void)event_len;
    struct gem_stream *gs = sc->state;
    size_t k = 0;
    while (k < data_len &&
           (data[k] == ' ' || data[k] == '\t' || data[k] == '\r' || data[k] == '\n'))
        k++;
    if (k == data_len)
        return AIR_STREAM_MORE; /* empty event: nothing to say */
    air_buf_t b = AIR_BUF_INIT;
    air_stream_rc_t rc = AIR_STREAM_MORE;
    struct fast_ev fe;
    if (fast_scan(data + k, data_len - k, &fe) == 0) {
        rc = stream_fast(sc, gs, &b, &fe);
        air__buf_free(&b);
        return rc;
    }
    cJSON *root = cJSON_ParseWithLength(data + k, data_len - k);
    if (root == NULL) {
        protocol_fault(&sc->fault, 0, "gemini: unparseable stream event");
        return AIR_STREAM_ERROR;
    }
    if (cJSON_IsArray(root) && error_object(root) == NULL) {
        /* The non-SSE form (a JSON array of responses), tolerated. */
        const cJSON *e;
        cJSON_ArrayForEach(e, root)
        {
            rc = stream_response(state, sc, gs, &b, e);
            if (rc != AIR_STREAM_MORE)
                break;
        }
    } else {
        rc = stream_response(state, sc, gs, &b, root);
    }
    air__buf_free(&b);
    cJSON_Delete(root);
    return rc;
}

static air_stream_rc_t
gem_stream_end(const void *state, air_stream_ctx_t *sc)
{
    (void)state;
    struct gem_stream *gs = sc->state;
    if (!gs->finished_any) {
        protocol_fault(&sc->fault, 0, "gemini: stream ended before finishReason");
        return AIR_STREAM_ERROR;
    }
    if (sc->req != NULL && sc->req->include_usage) {
        air_buf_t b = AIR_BUF_INIT;
        chunk_head(&b, gs, sc->req);
        PUTS(&b, "[],\"usage\":");
        put_usage(&b, &gs->usage);
        air__buf_put1(&b, '}');
        air_stream_rc_t rc = emit(sc, &b, 0);
        air__buf_free(&b);
        if (rc != AIR_STREAM_MORE)
            return rc;
    }
    return AIR_STREAM_DONE;
}

const air_provider_ops_t air_provider_gemini = {
    .abi = AIR_PROVIDER_ABI,
    .name = "gemini",
    .caps = AIR_CAP_STREAM | AIR_CAP_TOOLS | AIR_CAP_IMAGES | AIR_CAP_JSON,
    .default_base_url = "https://generativelanguage.googleapis.com",
    .config_keys = gem_config_keys,
    .stream_state_size = sizeof(struct gem_stream),
    .init = gem_init,
    .fini = gem_fini,
    .encode = gem_encode,
    .decode = gem_decode,
    .classify = gem_classify,
    .stream_event = gem_stream_event,
    .stream_end = gem_stream_end,
    .ratelimit = air__ratelimit_none_op,
};
