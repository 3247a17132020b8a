/*
 * openai.c - the OpenAI Chat Completions adapter (spec sections 1, 7, 8).
 *
 * DESIGN: the unified schema *is* OpenAI's, so this adapter's job is mostly
 * to stay out of the way cheaply:
 *
 *  - encode: one validating pass of a small JSON scanner over the caller's
 *    bytes (no allocation) finds the top-level "model" and "stream_options".
 *    When nothing must change, the request goes out as the caller's own bytes
 *    (body_ref, no copy). When only the model name differs, the new name is
 *    spliced in at the span the scanner found. Anything odd (escaped or
 *    duplicated top-level keys, which make the body mean different things to
 *    different parsers, or text our strict scanner rejects) falls back to a
 *    cJSON rebuild, which is always correct, only slower.
 *  - decode: the body is parsed once (for usage, model, finish reason) and
 *    its bytes are returned unchanged.
 *  - stream: each chunk is analysed by a single allocation-free validating
 *    pass over its bytes (content flag, usage, model, finish reason), and the
 *    bytes are forwarded unchanged. A chunk the fast pass finds odd is
 *    analysed again through cJSON, the reference; the fuzz target checks
 *    that both agree whenever the fast pass answers.
 *
 * Stream usage trade-off: a caller that streams without
 * stream_options.include_usage would leave the router blind to token counts
 * (cost, budgets, token rate limits). So encode adds
 * "stream_options":{"include_usage":true} and the stream code hides the
 * usage-only chunk (choices: []) from that caller while still recording its
 * usage. The price: the caller's body is rewritten (spliced, usually), and
 * its chunks carry "usage":null, a field it did not ask for but which the
 * OpenAI schema allows on every chunk. A usage object that a vendor merges
 * into a content chunk is forwarded as is.
 *
 * The presets of OpenAI-compatible vendors and Azure reuse every function
 * here through struct air__openai_quirks (openai.h).
 */
#include "openai.h"

#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "buf.h"
#include "common.h"
#include "jpatch.h"
#include "jscan.h"
#include "ratelimit.h"

#define MAX_DEPTH 128

/* ------------------------------------------------------------------------ */
/* A strict, allocation-free JSON scanner over byte spans                    */

/*
 * The grammar is RFC 8259's, a little stricter than cJSON where the two
 * differ (numbers of at most 63 characters, as cJSON reads; no control
 * characters in strings; lone surrogates rejected, as cJSON does), so text
 * this scanner accepts is text cJSON accepts. Callers get member callbacks
 * to pick the values they care about in the same pass.
 */

struct jmem {
    const char *key; /* raw key bytes, without quotes */
    size_t klen;
    int kesc;      /* the key contains a backslash escape */
    const char *v; /* first byte of the value */
};

/* Member callback: return m->v to let the scanner skip the value, a later
 * pointer when the callback consumed the value itself (it must validate
 * it), or NULL to abort the scan (odd text). */
typedef const char *(*jmem_fn)(void *ud, const struct jmem *m, const char *e, int depth);
/* Element callback, same contract. */
typedef const char *(*jel_fn)(void *ud, const char *v, const char *e, int depth);

/* The strict string and number scanners are jscan.c's; this file keeps
 * its own object/array walk (it reports members as it goes). *esc (when
 * not NULL) is set when the string holds any escape. */
static const char *
scan_str(const char *p, const char *e, int *esc)
{
    unsigned f = 0;
    const char *q = air__jscan_str(p, e, &f);
    if (esc != NULL && f != 0)
        *esc = 1;
    return q;
}

#define scan_num air__jscan_num
#define skip_ws air__jscan_ws

static const char *skip_value(const char *p, const char *e, int depth);

static const char *
scan_lit(const char *p, const char *e, const char *lit, size_t n)
{
    if ((size_t)(e - p) < n || memcmp(p, lit, n) != 0)
        return NULL;
    return p + n;
}

/* p at '{'; depth is this object's nesting level. */
static const char *
scan_obj(const char *p, const char *e, int depth, jmem_fn fn, void *ud)
{
    if (depth > MAX_DEPTH)
        return NULL;
    p = skip_ws(p + 1, e);
    if (p < e && *p == '}')
        return p + 1;
    for (;;) {
        if (p >= e || *p != '"')
            return NULL;
        struct jmem m;
        m.kesc = 0;
        m.key = p + 1;
        const char *q = scan_str(p, e, &m.kesc);
        if (q == NULL)
            return NULL;
        m.klen = (size_t)(q - 1 - m.key);
        p = skip_ws(q, e);
        if (p >= e || *p != ':')
            return NULL;
        p = skip_ws(p + 1, e);
        m.v = p;
        const char *ve = fn != NULL ? fn(ud, &m, e, depth) : p;
        if (ve == p)
            ve = skip_value(p, e, depth);
        if (ve == NULL)
            return NULL;
        p = skip_ws(ve, e);
        if (p >= e)
            return NULL;
        if (*p == '}')
            return p + 1;
        if (*p != ',')
            return NULL;
        p = skip_ws(p + 1, e);
    }
}

/* p at '['. */
static const char *
scan_arr(const char *p, const char *e, int depth, jel_fn fn, void *ud)
{
    if (depth > MAX_DEPTH)
        return NULL;
    p = skip_ws(p + 1, e);
    if (p < e && *p == ']')
        return p + 1;
    for (;;) {
        if (p >= e)
            return NULL;
        const char *ve = fn != NULL ? fn(ud, p, e, depth) : p;
        if (ve == p)
            ve = skip_value(p, e, depth);
        if (ve == NULL)
            return NULL;
        p = skip_ws(ve, e);
        if (p >= e)
            return NULL;
        if (*p == ']')
            return p + 1;
        if (*p != ',')
            return NULL;
        p = skip_ws(p + 1, e);
    }
}

/* A value inside a container of nesting level `depth`. */
static const char *
skip_value(const char *p, const char *e, int depth)
{
    if (p >= e)
        return NULL;
    switch (*p) {
    case '"':
        return scan_str(p, e, NULL);
    case '{':
        return scan_obj(p, e, depth + 1, NULL, NULL);
    case '[':
        return scan_arr(p, e, depth + 1, NULL, NULL);
    case 't':
        return scan_lit(p, e, "true", 4);
    case 'f':
        return scan_lit(p, e, "false", 5);
    case 'n':
        return scan_lit(p, e, "null", 4);
    default:
        return scan_num(p, e);
    }
}

static int
key_is(const struct jmem *m, const char *k)
{
    size_t n = strlen(k);
    return m->klen == n && memcmp(m->key, k, n) == 0;
}

/* Parse s[0..n) with cJSON, allowing only whitespace after the value
 * (cJSON_ParseWithLength alone accepts trailing garbage). *end (optional)
 * receives the end of the JSON value. */
static cJSON *
parse_strict(const char *s, size_t n, const char **end)
{
    const char *pe = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(s, n, &pe, 0);
    if (j == NULL)
        return NULL;
    const char *e = s + n;
    if (pe == NULL || pe < s || pe > e) {
        cJSON_Delete(j);
        return NULL;
    }
    if (end != NULL)
        *end = pe;
    if (skip_ws(pe, e) != e) {
        cJSON_Delete(j);
        return NULL;
    }
    return j;
}

/* A string value's text into dst (truncated): raw bytes when unescaped,
 * else decoded by cJSON, exactly as the cJSON reference path reads it. */
static void
span_string(const char *v, const char *ve, int esc, char *dst, size_t size)
{
    if (!esc) {
        size_t n = (size_t)(ve - v) - 2;
        if (n > size - 1)
            n = size - 1;
        memcpy(dst, v + 1, n);
        dst[n] = '\0';
        return;
    }
    cJSON *j = cJSON_ParseWithLength(v, (size_t)(ve - v));
    air__strlcpy(dst, cJSON_IsString(j) ? j->valuestring : "", size);
    cJSON_Delete(j);
}

/* Non-empty as cJSON sees it: "\u0000..." decodes to an empty C string. */
static int
span_str_nonempty(const char *v, const char *ve)
{
    size_t n = (size_t)(ve - v);
    if (n <= 2)
        return 0;
    return !(n >= 8 && memcmp(v, "\"\\u0000", 7) == 0);
}

/* ------------------------------------------------------------------------ */
/* Top-level scan of a request body (model splice)                           */

struct topscan {
    const char *open; /* byte after the top-level '{' */
    const char *model_v, *model_e;
    const char *so_v, *so_e; /* stream_options */
    size_t nmembers;
};

static const char *
top_member(void *ud, const struct jmem *m, const char *e, int depth)
{
    struct topscan *ts = ud;
    ts->nmembers++;
    if (m->kesc)
        return NULL; /* could spell "model"; let cJSON decide */
    const char **v = NULL, **ve = NULL;
    if (key_is(m, "model")) {
        v = &ts->model_v;
        ve = &ts->model_e;
    } else if (key_is(m, "stream_options")) {
        v = &ts->so_v;
        ve = &ts->so_e;
    } else {
        return m->v;
    }
    if (*v != NULL)
        return NULL; /* duplicate key: which one counts is parser-dependent */
    const char *end = skip_value(m->v, e, depth);
    if (end != NULL) {
        *v = m->v;
        *ve = end;
    }
    return end;
}

static int
scan_top(const char *raw, size_t len, struct topscan *ts)
{
    memset(ts, 0, sizeof *ts);
    const char *e = raw + len;
    const char *p = skip_ws(raw, e);
    if (p >= e || *p != '{')
        return -1;
    ts->open = p + 1;
    const char *end = scan_obj(p, e, 1, top_member, ts);
    if (end == NULL || skip_ws(end, e) != e)
        return -1;
    return 0;
}

int
air__openai_model_span(const char *raw, size_t len, size_t *vstart, size_t *vend)
{
    struct topscan ts;
    if (raw == NULL || scan_top(raw, len, &ts) != 0)
        return -1;
    if (ts.model_v == NULL)
        return 0;
    *vstart = (size_t)(ts.model_v - raw);
    *vend = (size_t)(ts.model_e - raw);
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Chunk analysis                                                            */

void
air__openai_usage(const cJSON *usage, air_usage_t *u)
{
    memset(u, 0, sizeof *u);
    if (!cJSON_IsObject(usage))
        return;
    u->present = 1;
    struct {
        const cJSON *obj;
        const char *key;
        uint64_t *dst;
    } map[] = {
        {usage, "prompt_tokens", &u->prompt},
        {usage, "completion_tokens", &u->completion},
        {cJSON_GetObjectItemCaseSensitive(usage, "prompt_tokens_details"), "cached_tokens",
         &u->cached},
        {cJSON_GetObjectItemCaseSensitive(usage, "prompt_tokens_details"), "cache_write_tokens",
         &u->cache_write},
        {cJSON_GetObjectItemCaseSensitive(usage, "completion_tokens_details"), "reasoning_tokens",
         &u->reasoning},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        const cJSON *it = cJSON_GetObjectItemCaseSensitive(map[i].obj, map[i].key);
        if (cJSON_IsNumber(it) && it->valuedouble >= 0 && it->valuedouble < 1.8e19)
            *map[i].dst = (uint64_t)it->valuedouble;
    }
    /* A flat cache_write_tokens, and DeepSeek's cache counters, when the
     * OpenAI-shaped details are absent. */
    const cJSON *it;
    if (u->cache_write == 0 &&
        cJSON_IsNumber(it = cJSON_GetObjectItemCaseSensitive(usage, "cache_write_tokens")) &&
        it->valuedouble >= 0 && it->valuedouble < 1.8e19)
        u->cache_write = (uint64_t)it->valuedouble;
    if (u->cached == 0 &&
        cJSON_IsNumber(it = cJSON_GetObjectItemCaseSensitive(usage, "prompt_cache_hit_tokens")) &&
        it->valuedouble >= 0 && it->valuedouble < 1.8e19)
        u->cached = (uint64_t)it->valuedouble;
}

/* -- reference path: cJSON tree -- */

static int
tree_str_nonempty(const cJSON *o, const char *key)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(it) && it->valuestring != NULL && it->valuestring[0] != '\0';
}

static void
analyse_tree(const cJSON *root, struct air__openai_chunk_info *ci)
{
    memset(ci, 0, sizeof *ci);
    ci->nchoices = -1;
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(root, "error");
    ci->is_error = err != NULL && !cJSON_IsNull(err);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (cJSON_IsString(model))
        air__strlcpy(ci->model, model->valuestring, sizeof ci->model);
    const cJSON *usage = cJSON_GetObjectItemCaseSensitive(root, "usage");
    if (!cJSON_IsObject(usage)) {
        const cJSON *xg = cJSON_GetObjectItemCaseSensitive(root, "x_groq");
        usage = cJSON_IsObject(xg) ? cJSON_GetObjectItemCaseSensitive(xg, "usage") : NULL;
    }
    if (cJSON_IsObject(usage)) {
        ci->has_usage = 1;
        air__openai_usage(usage, &ci->usage);
    }
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(root, "choices");
    if (!cJSON_IsArray(choices))
        return;
    ci->nchoices = cJSON_GetArraySize(choices);
    const cJSON *ch;
    cJSON_ArrayForEach(ch, choices)
    {
        if (!cJSON_IsObject(ch))
            continue;
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(ch, "delta");
        if (cJSON_IsObject(d)) {
            const cJSON *tc = cJSON_GetObjectItemCaseSensitive(d, "tool_calls");
            if (tree_str_nonempty(d, "content") || tree_str_nonempty(d, "refusal") ||
                tree_str_nonempty(d, "reasoning_content") || tree_str_nonempty(d, "reasoning") ||
                (cJSON_IsArray(tc) && cJSON_GetArraySize(tc) > 0) ||
                cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(d, "function_call")))
                ci->content = 1;
        }
        const cJSON *fr = cJSON_GetObjectItemCaseSensitive(ch, "finish_reason");
        if (cJSON_IsString(fr)) {
            ci->content = 1;
            ci->finished = 1;
            const cJSON *idx = cJSON_GetObjectItemCaseSensitive(ch, "index");
            int zero = idx == NULL || (cJSON_IsNumber(idx) && idx->valuedouble == 0);
            if (zero && ci->finish_reason[0] == '\0')
                air__strlcpy(ci->finish_reason, fr->valuestring, sizeof ci->finish_reason);
        }
    }
}

/* -- fast path: one validating pass over the bytes -- */

struct cscan {
    struct air__openai_chunk_info *ci;
    unsigned seen; /* top-level keys met, to refuse duplicates */
    const char *usage_v, *usage_e, *xusage_v, *xusage_e;
    /* current choice */
    unsigned cseen;
    int c_content, c_has_fr, c_idx_zero;
    char c_fr[32];
    unsigned dseen;
};

/* Seen-bit bookkeeping: returns 0 when the bit was already set (duplicate). */
static int
first_time(unsigned *seen, unsigned bit)
{
    if (*seen & bit)
        return 0;
    *seen |= bit;
    return 1;
}

static const char *
delta_member(void *ud, const struct jmem *m, const char *e, int depth)
{
    struct cscan *cs = ud;
    static const char *const str_keys[] = {"content", "refusal", "reasoning_content", "reasoning"};
    if (m->kesc)
        return NULL;
    for (unsigned i = 0; i < 4; i++) {
        if (!key_is(m, str_keys[i]))
            continue;
        if (!first_time(&cs->dseen, 1u << i))
            return NULL;
        const char *end = skip_value(m->v, e, depth);
        if (end != NULL && *m->v == '"' && span_str_nonempty(m->v, end))
            cs->c_content = 1;
        return end;
    }
    if (key_is(m, "tool_calls")) {
        if (!first_time(&cs->dseen, 1u << 4))
            return NULL;
        const char *end = skip_value(m->v, e, depth);
        if (end != NULL && *m->v == '[' && *skip_ws(m->v + 1, e) != ']')
            cs->c_content = 1;
        return end;
    }
    if (key_is(m, "function_call")) {
        if (!first_time(&cs->dseen, 1u << 5))
            return NULL;
        const char *end = skip_value(m->v, e, depth);
        if (end != NULL && *m->v == '{')
            cs->c_content = 1;
        return end;
    }
    return m->v;
}

/* Is this number span zero, as cJSON's strtod would read it? */
static int
num_is_zero(const char *v, const char *ve)
{
    if (ve - v == 1 && *v == '0')
        return 1;
    int simple = *v >= '1' && *v <= '9';
    for (const char *p = v; simple && p < ve; p++)
        simple = *p >= '0' && *p <= '9';
    if (simple)
        return 0;
    cJSON *j = cJSON_ParseWithLength(v, (size_t)(ve - v));
    int zero = cJSON_IsNumber(j) && j->valuedouble == 0;
    cJSON_Delete(j);
    return zero;
}

static const char *
choice_member(void *ud, const struct jmem *m, const char *e, int depth)
{
    struct cscan *cs = ud;
    if (m->kesc)
        return NULL;
    if (key_is(m, "delta")) {
        if (!first_time(&cs->cseen, 1))
            return NULL;
        if (*m->v != '{')
            return m->v;
        cs->dseen = 0;
        return scan_obj(m->v, e, depth + 1, delta_member, cs);
    }
    if (key_is(m, "finish_reason")) {
        if (!first_time(&cs->cseen, 2))
            return NULL;
        if (*m->v != '"')
            return m->v;
        int esc = 0;
        const char *end = scan_str(m->v, e, &esc);
        if (end != NULL) {
            cs->c_has_fr = 1;
            span_string(m->v, end, esc, cs->c_fr, sizeof cs->c_fr);
        }
        return end;
    }
    if (key_is(m, "index")) {
        if (!first_time(&cs->cseen, 4))
            return NULL;
        const char *end = skip_value(m->v, e, depth);
        if (end != NULL)
            cs->c_idx_zero =
                (*m->v == '-' || (*m->v >= '0' && *m->v <= '9')) && num_is_zero(m->v, end);
        return end;
    }
    return m->v;
}

static const char *
choice_elem(void *ud, const char *v, const char *e, int depth)
{
    struct cscan *cs = ud;
    struct air__openai_chunk_info *ci = cs->ci;
    ci->nchoices++;
    if (*v != '{')
        return v;
    cs->cseen = 0;
    cs->c_content = cs->c_has_fr = 0;
    cs->c_idx_zero = 1; /* an absent index counts as 0 */
    cs->c_fr[0] = '\0';
    const char *end = scan_obj(v, e, depth + 1, choice_member, cs);
    if (end == NULL)
        return NULL;
    if (cs->c_content)
        ci->content = 1;
    if (cs->c_has_fr) {
        ci->content = 1;
        ci->finished = 1;
        if (cs->c_idx_zero && ci->finish_reason[0] == '\0')
            air__strlcpy(ci->finish_reason, cs->c_fr, sizeof ci->finish_reason);
    }
    return end;
}

static const char *
xgroq_member(void *ud, const struct jmem *m, const char *e, int depth)
{
    struct cscan *cs = ud;
    if (m->kesc)
        return NULL;
    if (!key_is(m, "usage"))
        return m->v;
    if (cs->xusage_v != NULL)
        return NULL;
    const char *end = skip_value(m->v, e, depth);
    if (end != NULL && *m->v == '{') {
        cs->xusage_v = m->v;
        cs->xusage_e = end;
    }
    return end;
}

static const char *
top_chunk_member(void *ud, const struct jmem *m, const char *e, int depth)
{
    struct cscan *cs = ud;
    struct air__openai_chunk_info *ci = cs->ci;
    if (m->kesc)
        return NULL;
    if (key_is(m, "choices")) {
        if (!first_time(&cs->seen, 1))
            return NULL;
        if (*m->v != '[')
            return m->v;
        ci->nchoices = 0;
        return scan_arr(m->v, e, depth + 1, choice_elem, cs);
    }
    if (key_is(m, "model")) {
        if (!first_time(&cs->seen, 2))
            return NULL;
        if (*m->v != '"')
            return m->v;
        int esc = 0;
        const char *end = scan_str(m->v, e, &esc);
        if (end != NULL)
            span_string(m->v, end, esc, ci->model, sizeof ci->model);
        return end;
    }
    if (key_is(m, "usage")) {
        if (!first_time(&cs->seen, 4))
            return NULL;
        const char *end = skip_value(m->v, e, depth);
        if (end != NULL && *m->v == '{') {
            cs->usage_v = m->v;
            cs->usage_e = end;
        }
        return end;
    }
    if (key_is(m, "error")) {
        if (!first_time(&cs->seen, 8))
            return NULL;
        const char *end = skip_value(m->v, e, depth);
        if (end != NULL && *m->v != 'n')
            ci->is_error = 1;
        return end;
    }
    if (key_is(m, "x_groq")) {
        if (!first_time(&cs->seen, 16))
            return NULL;
        if (*m->v != '{')
            return m->v;
        return scan_obj(m->v, e, depth + 1, xgroq_member, cs);
    }
    return m->v;
}

/* 0 = analysed, -1 = odd (use the reference path). */
static int
chunk_scan_fast(const char *data, size_t len, struct air__openai_chunk_info *ci)
{
    struct cscan cs;
    memset(&cs, 0, sizeof cs);
    memset(ci, 0, sizeof *ci);
    ci->nchoices = -1;
    cs.ci = ci;
    const char *e = data + len;
    const char *p = skip_ws(data, e);
    if (p >= e || *p != '{')
        return -1;
    const char *end = scan_obj(p, e, 1, top_chunk_member, &cs);
    if (end == NULL || skip_ws(end, e) != e)
        return -1;
    const char *uv = cs.usage_v ? cs.usage_v : cs.xusage_v;
    const char *ue = cs.usage_v ? cs.usage_e : cs.xusage_e;
    if (uv != NULL) {
        cJSON *u = cJSON_ParseWithLength(uv, (size_t)(ue - uv));
        if (u == NULL)
            return -1; /* out of memory: the reference path reports it */
        ci->has_usage = 1;
        air__openai_usage(u, &ci->usage);
        cJSON_Delete(u);
    }
    return 0;
}

air_status_t
air__openai_chunk_scan(const char *data, size_t len, int fast, struct air__openai_chunk_info *ci,
                       int *used_fast)
{
    if (used_fast != NULL)
        *used_fast = 0;
    if (fast && chunk_scan_fast(data, len, ci) == 0) {
        if (used_fast != NULL)
            *used_fast = 1;
        return AIR_OK;
    }
    memset(ci, 0, sizeof *ci);
    ci->nchoices = -1;
    cJSON *root = parse_strict(data, len, NULL);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return AIR_E_PROTOCOL;
    }
    analyse_tree(root, ci);
    cJSON_Delete(root);
    return AIR_OK;
}

/* ------------------------------------------------------------------------ */
/* Faults                                                                    */

static void
set_flags(air_fault_t *f, air_errclass_t cls, int retry, int failover, int unusable)
{
    f->cls = cls;
    f->retry = retry;
    f->failover = failover;
    f->unusable = unusable;
}

void
air__openai_fault_from_vendor(air_fault_t *f)
{
    static const struct {
        const char *name;
        air_errclass_t cls;
        int retry, failover, unusable;
    } map[] = {
        {"insufficient_quota", AIR_ERR_AUTH, 0, 1, 1},
        {"billing_error", AIR_ERR_AUTH, 0, 1, 1},
        {"invalid_api_key", AIR_ERR_AUTH, 0, 1, 1},
        {"authentication_error", AIR_ERR_AUTH, 0, 1, 1},
        {"permission_error", AIR_ERR_AUTH, 0, 1, 1},
        {"context_length_exceeded", AIR_ERR_INVALID_REQUEST, 0, 1, 0},
        {"invalid_request_error", AIR_ERR_INVALID_REQUEST, 0, 0, 0},
        {"rate_limit_exceeded", AIR_ERR_RATE_LIMITED, 1, 1, 0},
        {"rate_limit_error", AIR_ERR_RATE_LIMITED, 1, 1, 0},
        {"overloaded_error", AIR_ERR_OVERLOADED, 1, 1, 0},
        {"server_overloaded", AIR_ERR_OVERLOADED, 1, 1, 0},
        {"timeout", AIR_ERR_TIMEOUT, 1, 1, 0},
        {"timeout_error", AIR_ERR_TIMEOUT, 1, 1, 0},
    };
    /* The code is more specific than the type (invalid_request_error with
     * code context_length_exceeded), so it is looked up first. */
    const char *keys[2] = {f->code, f->type};
    for (int k = 0; k < 2; k++) {
        for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
            if (strcmp(keys[k], map[i].name) == 0) {
                set_flags(f, map[i].cls, map[i].retry, map[i].failover, map[i].unusable);
                return;
            }
        }
    }
    /* OpenRouter and vLLM put an HTTP status in "code". */
    int n = 0, len = 0;
    if (sscanf(f->code, "%3d%n", &n, &len) == 1 && len == 3 && f->code[3] == '\0' && n >= 400 &&
        n <= 599) {
        int keep = f->http_status;
        int64_t ra = f->retry_after_ms;
        air__fault_from_status(f, n);
        f->http_status = keep;
        f->retry_after_ms = ra;
        return;
    }
    set_flags(f, AIR_ERR_UPSTREAM, 1, 1, 0); /* server_error, api_error, unknown */
}

/* Vendors sometimes echo the key back; it must never leave the adapter. */
static void
scrub(char *buf, size_t size, const char *key)
{
    if (key == NULL || key[0] == '\0' || strstr(buf, key) == NULL)
        return;
    static const char mask[] = "[redacted]";
    char tmp[512];
    size_t kl = strlen(key), o = 0;
    const char *p = buf;
    while (*p && o + 1 < sizeof tmp) {
        if (strncmp(p, key, kl) == 0) {
            for (size_t i = 0; mask[i] && o + 1 < sizeof tmp; i++)
                tmp[o++] = mask[i];
            p += kl;
        } else {
            tmp[o++] = *p++;
        }
    }
    tmp[o] = '\0';
    air__strlcpy(buf, tmp, size);
}

static void
scrub_fault(const struct air__openai *s, air_fault_t *f)
{
    scrub(f->message, sizeof f->message, s->api_key);
    scrub(f->code, sizeof f->code, s->api_key);
    scrub(f->type, sizeof f->type, s->api_key);
}

/* A reply we cannot use: class upstream; another try may well succeed. */
static void
proto_fault(air_fault_t *f, int http_status, const char *msg)
{
    memset(f, 0, sizeof *f);
    set_flags(f, AIR_ERR_UPSTREAM, 1, 1, 0);
    f->http_status = http_status;
    f->retry_after_ms = -1;
    air__strlcpy(f->message, msg, sizeof f->message);
}

/* ------------------------------------------------------------------------ */
/* init / fini                                                               */

static int
has_line_break(const char *s)
{
    return strpbrk(s, "\r\n") != NULL;
}

static air_status_t
cfg_err(char *err, size_t errlen, const char *msg, const char *key)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s%s%s", key ? key : "", key ? ": " : "", msg);
    return AIR_E_CONFIG;
}

air_status_t
air__openai_init(const air_provider_cfg_t *cfg, const struct air__openai_quirks *q,
                 const char *default_base_url, void **state, char *err, size_t errlen)
{
    *state = NULL;
    const char *base = cfg->base_url != NULL ? cfg->base_url : default_base_url;
    if (base == NULL || base[0] == '\0')
        return cfg_err(err, errlen, "required for this kind", "base_url");
    if (has_line_break(base))
        return cfg_err(err, errlen, "must not contain line breaks", "base_url");
    if (cfg->api_key != NULL && has_line_break(cfg->api_key))
        return cfg_err(err, errlen, "the API key contains a line break", NULL);

    struct air__openai *s = air__calloc(1, sizeof *s);
    if (s == NULL)
        return AIR_E_NOMEM;
    s->q = q;
    air_status_t st = AIR_E_NOMEM;
    s->base_url = air__url_join(base, "");
    s->url = air__url_join(base, q->path ? q->path : "");
    if (s->base_url == NULL || s->url == NULL)
        goto fail;
    if (cfg->api_key != NULL && cfg->api_key[0] != '\0') {
        s->api_key = air__strdup(cfg->api_key);
        air_buf_t b = AIR_BUF_INIT;
        air__buf_puts(&b, q->auth_header ? q->auth_header : "Authorization");
        air__buf_puts(&b, ": ");
        air__buf_puts(&b, q->auth_prefix ? q->auth_prefix : "");
        air__buf_puts(&b, cfg->api_key);
        s->auth = air__buf_steal(&b, NULL);
        if (s->api_key == NULL || s->auth == NULL)
            goto fail;
    }
    for (const struct air__openai_hdrkey *hk = q->hdr_keys; hk && hk->config_key; hk++) {
        const cJSON *it = cJSON_GetObjectItemCaseSensitive(cfg->json, hk->config_key);
        if (it == NULL || cJSON_IsNull(it))
            continue;
        if (!cJSON_IsString(it)) {
            st = cfg_err(err, errlen, "expected a string", hk->config_key);
            goto fail;
        }
        if (has_line_break(it->valuestring)) {
            st = cfg_err(err, errlen, "must not contain line breaks", hk->config_key);
            goto fail;
        }
        if (s->nextra >= sizeof s->extra / sizeof s->extra[0]) {
            st = cfg_err(err, errlen, "too many header keys", hk->config_key);
            goto fail;
        }
        if ((s->extra[s->nextra] = air__header(hk->header, it->valuestring)) == NULL)
            goto fail;
        s->nextra++;
    }
    *state = s;
    return AIR_OK;
fail:
    air__openai_fini(s);
    return st;
}

void
air__openai_fini(void *state)
{
    struct air__openai *s = state;
    if (s == NULL)
        return;
    air__free(s->base_url);
    air__free(s->url);
    if (s->api_key != NULL)
        memset(s->api_key, 0, strlen(s->api_key));
    air__free(s->api_key);
    if (s->auth != NULL)
        memset(s->auth, 0, strlen(s->auth));
    air__free(s->auth);
    for (size_t i = 0; i < s->nextra; i++)
        air__free(s->extra[i]);
    air__free(s);
}

/* ------------------------------------------------------------------------ */
/* encode                                                                    */

static air_status_t
add_header(air_http_out_t *out, const char *h)
{
    if (out->nheaders >= AIR_HTTP_MAX_HEADERS)
        return AIR_E_INVAL;
    char *c = air__strdup(h);
    if (c == NULL)
        return AIR_E_NOMEM;
    out->headers[out->nheaders++] = c;
    return AIR_OK;
}

/* The raw-bytes paths. One validating pass over the caller's bytes finds the
 * top-level "model" and "stream_options" members. With nothing to change the
 * bytes go out as they are (body_ref); otherwise the new model and/or the
 * stream_options member are spliced in. The pass also guards the
 * passthrough: a body with a duplicated or escaped top-level key is
 * ambiguous (cJSON, which routed the request, reads the first "model"; the
 * upstream may read the last), so it is never forwarded verbatim. Returns
 * AIR_OK, AIR_E_NOMEM, or AIR_E_INVAL when the text is odd: the caller then
 * rebuilds the body through cJSON, which leaves one "model" member. */
static air_status_t
splice_body(const air_req_view_t *req, const char *model, int need_usage, air_http_out_t *out)
{
    struct topscan ts;
    if (scan_top(req->raw, req->raw_len, &ts) != 0)
        return AIR_E_INVAL;
    if (model != NULL && ts.model_v == NULL)
        return AIR_E_INVAL; /* nothing to replace: let cJSON add it */
    if (need_usage && ts.so_v != NULL)
        return AIR_E_INVAL; /* merge into the caller's stream_options: cJSON */
    if (model == NULL && !need_usage) {
        out->body_ref = req->raw; /* passthrough: no copy, no re-serialisation */
        out->body_len = req->raw_len;
        return AIR_OK;
    }
    const char *raw = req->raw, *end = raw + req->raw_len, *cur = raw;
    air_buf_t b = AIR_BUF_INIT;
    air__buf_reserve(&b, req->raw_len + (model ? strlen(model) : 0) + 48);
    if (need_usage) {
        air__buf_append(&b, cur, (size_t)(ts.open - cur));
        air__buf_puts(&b, ts.nmembers ? "\"stream_options\":{\"include_usage\":true},"
                                      : "\"stream_options\":{\"include_usage\":true}");
        cur = ts.open;
    }
    if (model != NULL) {
        air__buf_append(&b, cur, (size_t)(ts.model_v - cur));
        air__buf_json_str(&b, model, strlen(model));
        cur = ts.model_e;
    }
    air__buf_append(&b, cur, (size_t)(end - cur));
    out->body = air__buf_steal(&b, &out->body_len);
    return out->body ? AIR_OK : AIR_E_NOMEM;
}

/* The edited-text path: model, stream_options and the quirks' own edits as
 * a patch over the parsed body, printed in one pass (jpatch.h). Used when
 * the quirks change more than model and stream_options, and when the
 * caller's text is odd (duplicated or escaped top-level keys: the patch
 * keeps one member of each name it sets). */
static air_status_t
patched_body(const air_req_view_t *req, struct air__jpatch *jp, air_http_out_t *out)
{
    air_buf_t b = AIR_BUF_INIT;
    air__buf_reserve(&b, (req->raw != NULL ? req->raw_len : 2048) + 64);
    if (air__jp_print(jp, req->body, &b) != 0) {
        air__buf_free(&b);
        return AIR_E_NOMEM;
    }
    out->body = air__buf_steal(&b, &out->body_len);
    return out->body ? AIR_OK : AIR_E_NOMEM;
}

/* Record the model and stream_options edits in jp. */
static void
patch_model_usage(const air_req_view_t *req, const char *model, int need_usage,
                  struct air__jpatch *jp)
{
    if (model != NULL)
        air__jp_put(jp, req->body, "model", air__jp_string(jp, model));
    if (need_usage) {
        /* Keep the caller's other stream_options; force include_usage. */
        const cJSON *so = air__jp_get(jp, req->body, "stream_options");
        if (cJSON_IsObject(so)) {
            air__jp_put(jp, so, "include_usage", air__jp_own(jp, cJSON_CreateTrue()));
        } else {
            cJSON *nso = cJSON_CreateObject();
            if (nso != NULL && cJSON_AddTrueToObject(nso, "include_usage") == NULL) {
                cJSON_Delete(nso);
                nso = NULL;
            }
            air__jp_put(jp, req->body, "stream_options", air__jp_own(jp, nso));
        }
    }
}

air_status_t
air__openai_encode(const void *state, const air_req_view_t *req, air_http_out_t *out,
                   air_fault_t *f)
{
    const struct air__openai *s = state;
    const struct air__openai_quirks *q = s->q;
    memset(out, 0, sizeof *out);
    if (req == NULL || req->body == NULL)
        return AIR_E_INVAL;

    air_status_t st = AIR_E_NOMEM;
    out->url = q->build_url ? q->build_url(s, req) : air__strdup(s->url);
    if (out->url == NULL)
        goto fail;
    if ((st = add_header(out, "Content-Type: application/json")) != AIR_OK)
        goto fail;
    if (s->auth != NULL && (st = add_header(out, s->auth)) != AIR_OK)
        goto fail;
    /* An empty Expect: stops libcurl from sending "Expect: 100-continue"
     * for large bodies, which costs a round trip on every big request. */
    if ((st = add_header(out, "Expect:")) != AIR_OK)
        goto fail;
    for (size_t i = 0; i < s->nextra; i++)
        if ((st = add_header(out, s->extra[i])) != AIR_OK)
            goto fail;

    /* The model to send: the route's upstream name, else the body's own. */
    const cJSON *bm = cJSON_GetObjectItemCaseSensitive(req->body, "model");
    const char *want = req->model;
    if (want == NULL && cJSON_IsString(bm))
        want = bm->valuestring;
    int differs = want != NULL && !(cJSON_IsString(bm) && strcmp(bm->valuestring, want) == 0);
    int need_usage = q->stream_usage && req->stream && !req->include_usage;
    /* Only a preset's rewrite needs the patch up front: it sees the model and
     * stream_options as they will be sent. The plain path splices bytes. */
    struct air__jpatch jp = AIR_JPATCH_INIT;
    int have_mu = 0, edited = 0;
    if (q->rewrite_request != NULL) {
        patch_model_usage(req, differs ? want : NULL, need_usage, &jp);
        have_mu = 1;
        size_t base_edits = air__jp_count(&jp);
        if ((st = q->rewrite_request(s, req, &jp, f)) != AIR_OK) {
            air__jp_free(&jp);
            goto fail;
        }
        edited = air__jp_count(&jp) > base_edits;
    }
    st = AIR_E_INVAL;
    if (!edited && req->raw != NULL)
        st = splice_body(req, differs ? want : NULL, need_usage, out);
    if (st == AIR_E_INVAL) {
        if (!have_mu)
            patch_model_usage(req, differs ? want : NULL, need_usage, &jp);
        /* One "model" member goes out, even when the caller sent several. */
        if (want != NULL && !differs)
            air__jp_put(&jp, req->body, "model", air__jp_string(&jp, want));
        st = patched_body(req, &jp, out);
    }
    air__jp_free(&jp);
    if (st == AIR_OK)
        return AIR_OK;
fail:
    air__http_out_clear(out);
    return st;
}

/* ------------------------------------------------------------------------ */
/* decode / classify                                                         */

static const char *
map_finish(const struct air__openai *s, const char *fr)
{
    if (s->q->map_finish != NULL && fr[0] != '\0') {
        const char *m = s->q->map_finish(fr);
        if (m != NULL)
            return m;
    }
    return fr;
}

air_status_t
air__openai_decode(const void *state, const air_req_view_t *req, const air_http_in_t *in,
                   air_decoded_t *out, air_fault_t *f)
{
    const struct air__openai *s = state;
    (void)req;
    memset(out, 0, sizeof *out);
    const char *e = in->body + in->body_len;
    /* Blank lines before the JSON are legal (DeepSeek keeps slow
     * connections alive with them). */
    const char *p = skip_ws(in->body, e);
    /* A raw NUL is never valid JSON text (strings must escape it); the body
     * is forwarded as a C string, so refuse it rather than truncate it. */
    if (memchr(in->body, '\0', in->body_len) != NULL) {
        proto_fault(f, in->status, "provider reply contains a NUL byte");
        return AIR_E_PROTOCOL;
    }
    const char *jend = NULL;
    cJSON *root = p < e ? parse_strict(p, (size_t)(e - p), &jend) : NULL;
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        proto_fault(f, in->status, "provider reply is not a JSON object");
        return AIR_E_PROTOCOL;
    }
    air_status_t st = AIR_E_UPSTREAM;
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(root, "error");
    if (err != NULL && !cJSON_IsNull(err)) {
        memset(f, 0, sizeof *f);
        air__fault_parse_body(f, p, (size_t)(e - p));
        f->http_status = in->status;
        f->retry_after_ms = air__retry_after_ms(in);
        air__openai_fault_from_vendor(f);
        scrub_fault(s, f);
        goto done;
    }
    if (!cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(root, "choices"))) {
        proto_fault(f, in->status, "provider reply has no choices array");
        st = AIR_E_PROTOCOL;
        goto done;
    }
    int changed = 0;
    if (s->q->fix_response != NULL) {
        changed = s->q->fix_response(s, root, f);
        if (changed < 0) {
            scrub_fault(s, f);
            goto done;
        }
    }
    air__openai_usage(cJSON_GetObjectItemCaseSensitive(root, "usage"), &out->usage);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (cJSON_IsString(model))
        air__strlcpy(out->model, model->valuestring, sizeof out->model);
    const cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "choices"), 0);
    const cJSON *fr = cJSON_GetObjectItemCaseSensitive(c0, "finish_reason");
    if (cJSON_IsString(fr))
        air__strlcpy(out->finish_reason, map_finish(s, fr->valuestring), sizeof out->finish_reason);
    st = AIR_E_NOMEM;
    if (changed) {
        char *txt = cJSON_PrintUnformatted(root);
        if (txt != NULL) {
            out->body_len = strlen(txt);
            out->body = air__strndup(txt, out->body_len);
            cJSON_free(txt);
        }
    } else {
        /* The upstream bytes, unchanged: already the unified body. */
        out->body_len = (size_t)(jend - p);
        out->body = air__strndup(p, out->body_len);
    }
    if (out->body != NULL) {
        st = AIR_OK;
    } else {
        out->body_len = 0;
        proto_fault(f, in->status, "out of memory");
    }
done:
    cJSON_Delete(root);
    return st;
}

static int
fault_says(const air_fault_t *f, const char *what)
{
    return strcmp(f->code, what) == 0 || strcmp(f->type, what) == 0;
}

void
air__openai_classify(const void *state, const air_http_in_t *in, air_fault_t *f)
{
    const struct air__openai *s = state;
    memset(f, 0, sizeof *f);
    air__fault_from_status(f, in->status);
    air__fault_parse_body(f, in->body, in->body_len);
    f->retry_after_ms = air__retry_after_ms(in);
    air__fault_apply_should_retry(f, in);
    if (in->status == 429 && fault_says(f, "insufficient_quota")) {
        /* Billing, not load: waiting does not help; the key is unusable. */
        set_flags(f, AIR_ERR_AUTH, 0, 1, 1);
    } else if (f->cls == AIR_ERR_INVALID_REQUEST && fault_says(f, "context_length_exceeded")) {
        /* Another deployment with a larger context may take it. */
        f->failover = 1;
    }
    if (f->message[0] == '\0')
        snprintf(f->message, sizeof f->message, "provider returned HTTP %d", in->status);
    scrub_fault(s, f);
}

/* ------------------------------------------------------------------------ */
/* streaming                                                                 */

static air_stream_rc_t
stream_fail(air_stream_ctx_t *sc, const char *msg)
{
    proto_fault(&sc->fault, 0, msg);
    return AIR_STREAM_ERROR;
}

static air_stream_rc_t
stream_error_event(const struct air__openai *s, air_stream_ctx_t *sc, const char *d, size_t n)
{
    air_fault_t *f = &sc->fault;
    memset(f, 0, sizeof *f);
    f->retry_after_ms = -1;
    air__fault_parse_body(f, d, n);
    air__openai_fault_from_vendor(f);
    scrub_fault(s, f);
    return AIR_STREAM_ERROR;
}

air_stream_rc_t
air__openai_stream_event(const void *state, air_stream_ctx_t *sc, const char *event,
                         size_t event_len, const char *data, size_t data_len)
{
    const struct air__openai *s = state;
    struct air__openai_stream *ss = sc->state;
    (void)event;
    (void)event_len;
    if (!ss->started) {
        ss->started = 1;
        ss->hide_usage = s->q->stream_usage && sc->req != NULL && !sc->req->include_usage;
    }
    const char *e = data + data_len;
    const char *d = skip_ws(data, e);
    while (e > d && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
        e--;
    size_t n = (size_t)(e - d);
    if (n == 0)
        return AIR_STREAM_MORE;
    if (n == 6 && memcmp(d, "[DONE]", 6) == 0)
        return AIR_STREAM_DONE;

    struct air__openai_chunk_info ci;
    const char *out = d;
    size_t outlen = n;
    char *printed = NULL;
    if (s->q->fix_chunk != NULL) {
        cJSON *root = parse_strict(d, n, NULL);
        if (!cJSON_IsObject(root)) {
            cJSON_Delete(root);
            return stream_fail(sc, "unparseable stream chunk");
        }
        const cJSON *err = cJSON_GetObjectItemCaseSensitive(root, "error");
        if (err != NULL && !cJSON_IsNull(err)) {
            cJSON_Delete(root);
            return stream_error_event(s, sc, d, n);
        }
        int r = s->q->fix_chunk(s, sc, root);
        if (r < 0) {
            cJSON_Delete(root);
            return AIR_STREAM_MORE;
        }
        analyse_tree(root, &ci);
        if (r > 0) {
            printed = cJSON_PrintUnformatted(root);
            if (printed == NULL) {
                cJSON_Delete(root);
                return stream_fail(sc, "out of memory");
            }
            out = printed;
            outlen = strlen(printed);
        }
        cJSON_Delete(root);
    } else if (air__openai_chunk_scan(d, n, 1, &ci, NULL) != AIR_OK) {
        return stream_fail(sc, "unparseable stream chunk");
    }
    if (ci.is_error) {
        cJSON_free(printed);
        return stream_error_event(s, sc, d, n);
    }

    if (ci.has_usage)
        sc->usage = ci.usage;
    if (ci.model[0] != '\0' && sc->model[0] == '\0')
        air__strlcpy(sc->model, ci.model, sizeof sc->model);
    if (ci.finished)
        ss->finished = 1;
    if (ci.finish_reason[0] != '\0' && sc->finish_reason[0] == '\0')
        air__strlcpy(sc->finish_reason, map_finish(s, ci.finish_reason), sizeof sc->finish_reason);

    air_stream_rc_t rc = AIR_STREAM_MORE;
    /* The usage-only chunk the caller did not ask for: recorded, not sent. */
    int hide = ss->hide_usage && ci.has_usage && !ci.content && ci.nchoices <= 0;
    if (!hide && sc->emit(sc->emit_ud, out, outlen, ci.content ? AIR_CHUNK_CONTENT : 0) != 0)
        rc = AIR_STREAM_ERROR; /* core asked to stop; fault untouched */
    cJSON_free(printed);
    return rc;
}

air_stream_rc_t
air__openai_stream_end(const void *state, air_stream_ctx_t *sc)
{
    (void)state;
    const struct air__openai_stream *ss = sc->state;
    /* No [DONE], but every choice that mattered finished: some compatible
     * servers just close the connection. */
    if (ss != NULL && ss->finished)
        return AIR_STREAM_DONE;
    return stream_fail(sc, "stream ended before completion");
}

/* ------------------------------------------------------------------------ */
/* The openai kind                                                           */

static const struct air__openai_hdrkey openai_hdr_keys[] = {
    {"organization", "OpenAI-Organization"},
    {"project", "OpenAI-Project"},
    {NULL, NULL},
};

const struct air__openai_quirks air__openai_quirks_openai = {
    .path = "/chat/completions",
    .auth_header = "Authorization",
    .auth_prefix = "Bearer ",
    .stream_usage = 1,
    .hdr_keys = openai_hdr_keys,
};

#define OPENAI_DEFAULT_BASE_URL "https://api.openai.com/v1"

static air_status_t
openai_init(const air_provider_cfg_t *cfg, void **state, char *err, size_t errlen)
{
    return air__openai_init(cfg, &air__openai_quirks_openai, OPENAI_DEFAULT_BASE_URL, state, err,
                            errlen);
}

static const char *const openai_config_keys[] = {"organization", "project", NULL};

const air_provider_ops_t air_provider_openai = {
    .abi = AIR_PROVIDER_ABI,
    .name = "openai",
    .caps = AIR_CAP_STREAM | AIR_CAP_TOOLS | AIR_CAP_IMAGES | AIR_CAP_JSON,
    .default_base_url = OPENAI_DEFAULT_BASE_URL,
    .config_keys = openai_config_keys,
    .stream_state_size = sizeof(struct air__openai_stream),
    .init = openai_init,
    .fini = air__openai_fini,
    .encode = air__openai_encode,
    .decode = air__openai_decode,
    .classify = air__openai_classify,
    .stream_event = air__openai_stream_event,
    .stream_end = air__openai_stream_end,
    .ratelimit = air__ratelimit_openai_op,
};
