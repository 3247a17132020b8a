/*
 * anthropic.c - the Anthropic Messages API adapter (spec sections 2 and 6.1-6.3).
 *
 * DESIGN: a pure translator, like every adapter. encode turns the unified
 * (OpenAI Chat Completions) body into a Messages API request: system and
 * developer messages are lifted into `system`, the remaining messages are
 * converted one by one into (lead blocks, other blocks) and then merged into
 * alternating user/assistant turns, so that tool_result blocks always open
 * their user turn and thinking blocks open their assistant turn. decode and
 * the stream state machine translate back. Every body and chunk is written
 * straight into a growable buffer (util/buf.h), never as a cJSON tree that
 * is then printed: the caller's body is already parsed, and the text is
 * byte for byte what printing such a tree gave (translation has a budget of
 * a few microseconds per request). Stream events are read by a small
 * validating scanner for the common token events and by cJSON for the rest
 * (see "Streaming" below).
 *
 * Streaming state lives in a fixed-size struct (ops->stream_state_size) that
 * core zeroes: it holds no pointers, so a stream that core abandons halfway
 * (cancel, deadline, failover) leaks nothing whether or not stream_end is
 * ever called. The per-content-block table is bounded; Anthropic streams one
 * block at a time, so a handful of slots is plenty.
 *
 * Choices where the spec leaves room, and the parameters that are dropped or
 * refused, are listed in docs/PROVIDERS.md ("## Anthropic").
 */
#include "airouter/provider.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "buf.h"
#include "common.h"
#include "jscan.h"
#include "ratelimit.h"

#define ANT_DEFAULT_MAX_TOKENS 4096
#define ANT_DEFAULT_VERSION    "2023-06-01"
#define ANT_JSON_TOOL          "json_tool_call"
#define ANT_MAX_TOKENS_LIMIT   100000000LL
#define ANT_OPEN_BLOCKS        16

/* Instance state, immutable after init. */
struct ant {
    char *url;        /* base_url + "/v1/messages" */
    char *key_header; /* "x-api-key: ..." or NULL when no key is configured */
    char *version_header;
    char *beta_header; /* "anthropic-beta: ..." or NULL */
    long long default_max_tokens;
    int structured_output; /* json_schema -> output_config.format */
};

static const char *const ant_config_keys[] = {
    "default_max_tokens", "anthropic_version", "anthropic_beta", "structured_output", NULL,
};

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */




/* Append a string literal. */
#define PUTS(b, lit) air__buf_put((b), "" lit, sizeof(lit) - 1)

static void fault_fmt(air_fault_t *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
fault_fmt(air_fault_t *f, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->message, sizeof f->message, fmt, ap);
    va_end(ap);
}

static void
fault_reset(air_fault_t *f, air_errclass_t cls)
{
    memset(f, 0, sizeof *f);
    f->cls = cls;
    f->retry_after_ms = -1;
}

/* A request this adapter refuses. `failover` is 1 when another vendor could
 * serve it (a capability Anthropic lacks), 0 when the request is malformed
 * for every vendor. */
static air_status_t bad_request(air_fault_t *f, int failover, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static air_status_t
bad_request(air_fault_t *f, int failover, const char *fmt, ...)
{
    fault_reset(f, AIR_ERR_INVALID_REQUEST);
    f->failover = failover;
    air__strlcpy(f->type, "invalid_request_error", sizeof f->type);
    char tmp[sizeof f->message - 16];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    fault_fmt(f, "anthropic: %s", tmp);
    return AIR_E_BADREQ;
}

static int
is_blank(const char *s)
{
    for (; *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r' && *s != '\f' && *s != '\v')
            return 0;
    return 1;
}

static int
has_line_break(const char *s)
{
    return strchr(s, '\r') != NULL || strchr(s, '\n') != NULL;
}

/* A JSON number that is an integer in [lo, hi]. */
static int
json_int(const cJSON *it, long long lo, long long hi, long long *out)
{
    if (!cJSON_IsNumber(it))
        return 0;
    double v = it->valuedouble;
    if (!(v >= (double)lo && v <= (double)hi) || v != (double)(long long)v)
        return 0;
    *out = (long long)v;
    return 1;
}

/* Non-negative token count member; 1 when present. */
static int
json_count(const cJSON *obj, const char *key, uint64_t *out)
{
    const cJSON *it = air__json_get(obj, key);
    if (!cJSON_IsNumber(it))
        return 0;
    double v = it->valuedouble;
    if (!(v >= 0))
        v = 0;
    if (v > 9007199254740992.0)
        v = 9007199254740992.0;
    *out = (uint64_t)v;
    return 1;
}

static const char *
json_str(const cJSON *obj, const char *key)
{
    const cJSON *it = air__json_get(obj, key);
    return cJSON_IsString(it) && it->valuestring != NULL ? it->valuestring : NULL;
}

/* A member that is present and not JSON null. */
static const cJSON *
json_get(const cJSON *obj, const char *key)
{
    const cJSON *it = air__json_get(obj, key);
    return it == NULL || cJSON_IsNull(it) ? NULL : it;
}

/* ------------------------------------------------------------------------ */
/* init / fini                                                               */

static void
ant_fini(void *state)
{
    struct ant *a = state;
    if (a == NULL)
        return;
    air__free(a->url);
    air__free(a->key_header);
    air__free(a->version_header);
    air__free(a->beta_header);
    air__free(a);
}

static air_status_t
ant_init(const air_provider_cfg_t *cfg, void **state, char *err, size_t errlen)
{
    const cJSON *j = cfg->json;
    long long max_tokens = ANT_DEFAULT_MAX_TOKENS;
    const char *version = ANT_DEFAULT_VERSION, *beta = NULL;
    int structured = 0;

    if (cJSON_IsObject(j)) {
        const cJSON *it = air__json_get(j, "default_max_tokens");
        if (it != NULL && !json_int(it, 1, ANT_MAX_TOKENS_LIMIT, &max_tokens)) {
            snprintf(err, errlen, "default_max_tokens: expected an integer >= 1");
            return AIR_E_CONFIG;
        }
        it = air__json_get(j, "anthropic_version");
        if (it != NULL) {
            if (!cJSON_IsString(it) || it->valuestring[0] == '\0' ||
                has_line_break(it->valuestring)) {
                snprintf(err, errlen, "anthropic_version: expected a non-empty string");
                return AIR_E_CONFIG;
            }
            version = it->valuestring;
        }
        it = air__json_get(j, "anthropic_beta");
        if (it != NULL) {
            if (!cJSON_IsString(it) || has_line_break(it->valuestring)) {
                snprintf(err, errlen, "anthropic_beta: expected a string (comma-separated)");
                return AIR_E_CONFIG;
            }
            if (it->valuestring[0] != '\0')
                beta = it->valuestring;
        }
        it = air__json_get(j, "structured_output");
        if (it != NULL) {
            if (!cJSON_IsBool(it)) {
                snprintf(err, errlen, "structured_output: expected true or false");
                return AIR_E_CONFIG;
            }
            structured = cJSON_IsTrue(it);
        }
    }
    if (cfg->api_key != NULL && has_line_break(cfg->api_key)) {
        /* Never echo the value. */
        snprintf(err, errlen, "api_key: contains a line break");
        return AIR_E_CONFIG;
    }

    struct ant *a = air__calloc(1, sizeof *a);
    if (a == NULL)
        return AIR_E_NOMEM;
    a->default_max_tokens = max_tokens;
    a->structured_output = structured;
    const char *base = cfg->base_url != NULL ? cfg->base_url : "https://api.anthropic.com";
    a->url = air__url_join(base, "/v1/messages");
    a->version_header = air__header("anthropic-version", version);
    if (cfg->api_key != NULL)
        a->key_header = air__header("x-api-key", cfg->api_key);
    if (beta != NULL)
        a->beta_header = air__header("anthropic-beta", beta);
    if (a->url == NULL || a->version_header == NULL ||
        (cfg->api_key != NULL && a->key_header == NULL) ||
        (beta != NULL && a->beta_header == NULL)) {
        ant_fini(a);
        return AIR_E_NOMEM;
    }
    *state = a;
    return AIR_OK;
}

/* ------------------------------------------------------------------------ */
/* encode                                                                    */

/*
 * The body is written straight into buffers, in the order a cJSON tree of it
 * would print (the text is byte for byte what cJSON_PrintUnformatted made of
 * the tree this adapter used to build): the caller's body is already parsed,
 * and a second tree plus a print cost more than the whole translation should.
 * Blocks are collected per message, then per turn, as comma-separated lists
 * (struct blist), and a turn is written out when the role changes.
 */

/* How response_format is served for a request. */
enum json_mode {
    JSON_NONE = 0,
    JSON_NATIVE, /* output_config.format */
    JSON_TOOL,   /* the json_tool_call fallback */
};

struct enc {
    const struct ant *a;
    air_fault_t *f;
};

/* Content blocks being collected: comma-separated objects, no brackets. */
struct blist {
    air_buf_t b;
    int n;                 /* blocks */
    size_t last;           /* offset of the last block */
    const char *last_text; /* the last block is a text block with this text */
    const cJSON *last_cc;  /* ... and this cache_control (NULL: none) */
};

#define BLIST_INIT                                                                                 \
    {                                                                                              \
        AIR_BUF_INIT, 0, 0, NULL, NULL                                                             \
    }

/* Empty the list, keeping its memory and a sticky OOM. */
static void
blist_clear(struct blist *l)
{
    l->b.len = 0;
    if (l->b.data != NULL)
        l->b.data[0] = '\0';
    l->n = 0;
    l->last = 0;
    l->last_text = NULL;
    l->last_cc = NULL;
}

/* Start a new block; returns the buffer to write it to. */
static air_buf_t *
blk_begin(struct blist *l)
{
    if (l->b.cap == 0)
        (void)air__buf_reserve(&l->b, 1000); /* one allocation for most turns */
    if (l->n++ > 0)
        air__buf_put1(&l->b, ',');
    l->last = l->b.len;
    l->last_text = NULL;
    l->last_cc = NULL;
    return &l->b;
}

/* Append every block of src to dst and empty src. */
static void
blist_move(struct blist *dst, struct blist *src)
{
    if (src->b.oom)
        dst->b.oom = 1;
    if (src->n == 0)
        return;
    if (dst->n > 0)
        air__buf_put1(&dst->b, ',');
    size_t base = dst->b.len;
    air__buf_append(&dst->b, src->b.data, src->b.len);
    dst->n += src->n;
    dst->last = base + src->last;
    dst->last_text = src->last_text;
    dst->last_cc = src->last_cc;
    blist_clear(src);
}

static void
put_cstr(air_buf_t *b, const char *s)
{
    air__buf_json_str(b, s, strlen(s));
}

static void
text_block(struct blist *l, const char *text, const cJSON *part)
{
    air_buf_t *b = blk_begin(l);
    PUTS(b, "{\"type\":\"text\",\"text\":");
    put_cstr(b, text);
    /* cache_control on a text part is an Anthropic extension: keep it. */
    const cJSON *cc = part != NULL ? air__json_get(part, "cache_control") : NULL;
    if (cJSON_IsObject(cc)) {
        PUTS(b, ",\"cache_control\":");
        air__buf_cjson(b, cc);
    } else {
        cc = NULL;
    }
    air__buf_put1(b, '}');
    l->last_text = text;
    l->last_cc = cc;
}

static int
ieq_n(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int ca = (unsigned char)a[i], cb = (unsigned char)b[i];
        if (ca >= 'A' && ca <= 'Z')
            ca += 'a' - 'A';
        if (cb >= 'A' && cb <= 'Z')
            cb += 'a' - 'A';
        if (ca != cb || ca == 0)
            return 0;
    }
    return 1;
}

/* An image_url part -> an image block. */
static air_status_t
image_block(struct enc *e, struct blist *l, const cJSON *part, const char *where)
{
    const cJSON *iu = air__json_get(part, "image_url");
    const char *url = NULL;
    if (cJSON_IsString(iu))
        url = iu->valuestring;
    else if (cJSON_IsObject(iu))
        url = json_str(iu, "url");
    if (url == NULL)
        return bad_request(e->f, 0, "%s.image_url.url: expected a string", where);

    air_buf_t *b = blk_begin(l);
    PUTS(b, "{\"type\":\"image\",\"source\":{\"type\":");
    if (ieq_n(url, "https://", 8) || ieq_n(url, "http://", 7)) {
        PUTS(b, "\"url\",\"url\":");
        put_cstr(b, url);
    } else if (ieq_n(url, "data:", 5)) {
        const char *mt = url + 5;
        const char *semi = strchr(mt, ';');
        const char *b64 = strstr(mt, ";base64,");
        if (semi == NULL || b64 == NULL)
            return bad_request(e->f, 0, "%s.image_url: only base64 data URLs are supported", where);
        size_t mtl = (size_t)(semi - mt);
        static const char *const types[] = {"image/jpeg", "image/png", "image/gif", "image/webp",
                                            "image/jpg"};
        const char *media = NULL;
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
            if (strlen(types[i]) == mtl && ieq_n(mt, types[i], mtl))
                media = types[i];
        if (media == NULL)
            return bad_request(e->f, 1,
                               "%s.image_url: media type not supported by Anthropic (use "
                               "image/jpeg, image/png, image/gif or image/webp)",
                               where);
        if (strcmp(media, "image/jpg") == 0)
            media = "image/jpeg";
        const char *data = b64 + 8;
        if (*data == '\0')
            return bad_request(e->f, 0, "%s.image_url: empty data URL", where);
        PUTS(b, "\"base64\",\"media_type\":");
        put_cstr(b, media);
        PUTS(b, ",\"data\":");
        put_cstr(b, data);
    } else {
        return bad_request(e->f, 0, "%s.image_url.url: expected an http(s) or data URL", where);
    }
    air__buf_put1(b, '}');
    const cJSON *cc = air__json_get(part, "cache_control");
    if (cJSON_IsObject(cc)) {
        PUTS(b, ",\"cache_control\":");
        air__buf_cjson(b, cc);
    }
    air__buf_put1(b, '}');
    return b->oom ? AIR_E_NOMEM : AIR_OK;
}

/* Which part types a content array may hold in a given place. */
#define PART_TEXT  1u
#define PART_IMAGE 2u

/* Convert message content (string, array of parts or null) into blocks
 * appended to l. Empty and whitespace-only texts are skipped (the API
 * rejects them). `refusal` parts are always dropped. */
static air_status_t
content_blocks(struct enc *e, struct blist *l, const cJSON *content, unsigned allowed,
               const char *where)
{
    if (content == NULL || cJSON_IsNull(content))
        return AIR_OK;
    if (cJSON_IsString(content)) {
        if (!is_blank(content->valuestring))
            text_block(l, content->valuestring, NULL);
        return l->b.oom ? AIR_E_NOMEM : AIR_OK;
    }
    if (!cJSON_IsArray(content))
        return bad_request(e->f, 0, "%s.content: expected a string, an array or null", where);
    int i = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, content)
    {
        char pw[96];
        air__path_idx(pw, sizeof pw, where, ".content", i++);
        const char *type = cJSON_IsObject(part) ? json_str(part, "type") : NULL;
        if (type == NULL)
            return bad_request(e->f, 0, "%s: expected an object with a string \"type\"", pw);
        if (strcmp(type, "text") == 0) {
            const char *text = json_str(part, "text");
            if (text == NULL)
                return bad_request(e->f, 0, "%s.text: expected a string", pw);
            if (!is_blank(text))
                text_block(l, text, part);
        } else if (strcmp(type, "refusal") == 0) {
            continue;
        } else if (strcmp(type, "image_url") == 0 && (allowed & PART_IMAGE)) {
            air_status_t st = image_block(e, l, part, pw);
            if (st != AIR_OK)
                return st;
        } else {
            return bad_request(e->f, 1, "%s: part type \"%.32s\" is not supported here", pw, type);
        }
        if (l->b.oom)
            return AIR_E_NOMEM;
    }
    return AIR_OK;
}

/* Tool ids must match ^[a-zA-Z0-9_-]+$ (spec 2.2, marked [?]): other bytes
 * become '_'. Applied to tool_use.id and tool_result.tool_use_id alike, so
 * pairs still match. Every byte written needs no JSON escaping. */
static void
put_tool_id(air_buf_t *b, const char *id)
{
    size_t n = strlen(id);
    if (air__buf_reserve(b, n + 2) != 0)
        return;
    char *p = b->data + b->len;
    *p++ = '"';
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        *p++ = ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '_' || c == '-')
                   ? c
                   : '_';
    }
    *p++ = '"';
    b->len += n + 2;
    b->data[b->len] = '\0';
}

/* tool message -> one tool_result block. */
static air_status_t
tool_result_block(struct enc *e, struct blist *lead, const cJSON *m, const char *where)
{
    const char *id = json_str(m, "tool_call_id");
    if (id == NULL || id[0] == '\0')
        return bad_request(e->f, 0, "%s.tool_call_id: expected a non-empty string", where);
    air_buf_t *b = blk_begin(lead);
    PUTS(b, "{\"type\":\"tool_result\",\"tool_use_id\":");
    put_tool_id(b, id);
    const cJSON *content = air__json_get(m, "content");
    if (cJSON_IsString(content)) {
        if (content->valuestring[0] != '\0') {
            PUTS(b, ",\"content\":");
            put_cstr(b, content->valuestring);
        }
    } else if (content != NULL && !cJSON_IsNull(content)) {
        struct blist arr = BLIST_INIT;
        air_status_t st = content_blocks(e, &arr, content, PART_TEXT | PART_IMAGE, where);
        if (st == AIR_OK && arr.b.oom)
            st = AIR_E_NOMEM;
        if (st == AIR_OK && arr.n > 0) {
            PUTS(b, ",\"content\":[");
            air__buf_append(b, arr.b.data, arr.b.len);
            air__buf_put1(b, ']');
        }
        air__buf_free(&arr.b);
        if (st != AIR_OK)
            return st;
    }
    air__buf_put1(b, '}');
    return b->oom ? AIR_E_NOMEM : AIR_OK;
}

/* assistant tool_calls -> tool_use blocks. */
static air_status_t
tool_use_blocks(struct enc *e, struct blist *rest, const cJSON *calls, const char *where)
{
    if (calls == NULL || cJSON_IsNull(calls))
        return AIR_OK;
    if (!cJSON_IsArray(calls))
        return bad_request(e->f, 0, "%s.tool_calls: expected an array", where);
    int i = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, calls)
    {
        char cw[96];
        air__path_idx(cw, sizeof cw, where, ".tool_calls", i++);
        const cJSON *fn = cJSON_IsObject(c) ? air__json_get(c, "function") : NULL;
        const char *id = cJSON_IsObject(c) ? json_str(c, "id") : NULL;
        const char *type = cJSON_IsObject(c) ? json_str(c, "type") : NULL;
        if (type != NULL && strcmp(type, "function") != 0)
            return bad_request(e->f, 1, "%s.type: only \"function\" tool calls are supported", cw);
        if (id == NULL || id[0] == '\0')
            return bad_request(e->f, 0, "%s.id: expected a non-empty string", cw);
        const char *name = cJSON_IsObject(fn) ? json_str(fn, "name") : NULL;
        if (name == NULL || name[0] == '\0')
            return bad_request(e->f, 0, "%s.function.name: expected a non-empty string", cw);
        const cJSON *args = air__json_get(fn, "arguments");
        const cJSON *input = NULL; /* NULL: {} */
        cJSON *parsed = NULL;
        if (args == NULL || cJSON_IsNull(args) ||
            (cJSON_IsString(args) && is_blank(args->valuestring))) {
            input = NULL;
        } else if (cJSON_IsObject(args)) {
            input = args;
        } else if (cJSON_IsString(args)) {
            const char *end = NULL;
            parsed = cJSON_ParseWithOpts(args->valuestring, &end, 1);
            if (parsed == NULL || !cJSON_IsObject(parsed)) {
                cJSON_Delete(parsed);
                return bad_request(e->f, 0,
                                   "%s.function.arguments: not a JSON object (Anthropic needs "
                                   "tool input as an object)",
                                   cw);
            }
            input = parsed;
        } else {
            return bad_request(e->f, 0, "%s.function.arguments: expected a JSON string", cw);
        }
        air_buf_t *b = blk_begin(rest);
        PUTS(b, "{\"type\":\"tool_use\",\"id\":");
        put_tool_id(b, id);
        PUTS(b, ",\"name\":");
        put_cstr(b, name);
        PUTS(b, ",\"input\":");
        if (input != NULL)
            air__buf_cjson(b, input);
        else
            PUTS(b, "{}");
        air__buf_put1(b, '}');
        cJSON_Delete(parsed);
        if (b->oom)
            return AIR_E_NOMEM;
    }
    return AIR_OK;
}

/* message.thinking_blocks (spec 6.9) -> thinking / redacted_thinking blocks. */
static air_status_t
thinking_blocks(struct enc *e, struct blist *lead, const cJSON *tb, const char *where)
{
    if (tb == NULL || cJSON_IsNull(tb))
        return AIR_OK;
    if (!cJSON_IsArray(tb))
        return bad_request(e->f, 0, "%s.thinking_blocks: expected an array", where);
    const cJSON *t;
    cJSON_ArrayForEach(t, tb)
    {
        const char *type = cJSON_IsObject(t) ? json_str(t, "type") : NULL;
        if (type != NULL && strcmp(type, "thinking") == 0 && json_str(t, "thinking") != NULL) {
            air_buf_t *b = blk_begin(lead);
            PUTS(b, "{\"type\":\"thinking\",\"thinking\":");
            put_cstr(b, json_str(t, "thinking"));
            if (json_str(t, "signature") != NULL) {
                PUTS(b, ",\"signature\":");
                put_cstr(b, json_str(t, "signature"));
            }
            air__buf_put1(b, '}');
        } else if (type != NULL && strcmp(type, "redacted_thinking") == 0 &&
                   json_str(t, "data") != NULL) {
            air_buf_t *b = blk_begin(lead);
            PUTS(b, "{\"type\":\"redacted_thinking\",\"data\":");
            put_cstr(b, json_str(t, "data"));
            air__buf_put1(b, '}');
        } else {
            return bad_request(e->f, 0,
                               "%s.thinking_blocks: expected thinking or redacted_thinking "
                               "blocks",
                               where);
        }
        if (lead->b.oom)
            return AIR_E_NOMEM;
    }
    return AIR_OK;
}

/* The turn being assembled: `lead` blocks (tool_result in a user turn,
 * thinking in an assistant turn) go before `rest`. */
struct turn {
    const char *role; /* NULL: none open */
    struct blist lead, rest;
};

/* Write the open turn as one message of `msgs` (a comma-separated list). */
static void
turn_flush(air_buf_t *msgs, int *nmsgs, struct turn *t)
{
    if (t->role == NULL)
        return;
    if ((*nmsgs)++ > 0)
        air__buf_put1(msgs, ',');
    PUTS(msgs, "{\"role\":\"");
    air__buf_puts(msgs, t->role);
    PUTS(msgs, "\",\"content\":[");
    air__buf_append(msgs, t->lead.b.data, t->lead.b.len);
    if (t->lead.n > 0 && t->rest.n > 0)
        air__buf_put1(msgs, ',');
    air__buf_append(msgs, t->rest.b.data, t->rest.b.len);
    PUTS(msgs, "]}");
    if (t->lead.b.oom || t->rest.b.oom)
        msgs->oom = 1;
    blist_clear(&t->lead);
    blist_clear(&t->rest);
    t->role = NULL;
}

/* Strip trailing whitespace from the final assistant turn (a prefill); drop
 * the block, then the turn, when nothing is left (spec 6.1 step 3). The
 * last block of a turn is the last of `rest` (`lead` only holds thinking
 * blocks there). */
static void
strip_prefill(struct turn *t)
{
    if (t->role == NULL || strcmp(t->role, "assistant") != 0 || t->rest.n == 0 ||
        t->rest.last_text == NULL)
        return;
    const char *s = t->rest.last_text;
    const cJSON *cc = t->rest.last_cc;
    size_t full = strlen(s), len = full;
    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t' || s[len - 1] == '\n' ||
                       s[len - 1] == '\r' || s[len - 1] == '\f' || s[len - 1] == '\v'))
        len--;
    if (len == full)
        return;
    air_buf_t *b = &t->rest.b;
    if (len > 0) {
        /* Rewrite the block with the shortened text. */
        b->len = t->rest.last;
        PUTS(b, "{\"type\":\"text\",\"text\":");
        air__buf_json_str(b, s, len);
        if (cc != NULL) {
            PUTS(b, ",\"cache_control\":");
            air__buf_cjson(b, cc);
        }
        air__buf_put1(b, '}');
        return;
    }
    /* Drop the block (and the comma before it). */
    b->len = t->rest.last > 0 ? t->rest.last - 1 : 0;
    if (b->data != NULL)
        b->data[b->len] = '\0';
    t->rest.n--;
    t->rest.last_text = NULL;
    t->rest.last_cc = NULL;
    if (t->rest.n == 0 && t->lead.n == 0)
        t->role = NULL; /* nothing left: no message at all */
}

static air_status_t
encode_messages(struct enc *e, const cJSON *msgs, air_buf_t *body)
{
    if (!cJSON_IsArray(msgs))
        return bad_request(e->f, 0, "messages: expected an array");
    struct blist system = BLIST_INIT, mlead = BLIST_INIT, mrest = BLIST_INIT;
    struct turn t = {NULL, BLIST_INIT, BLIST_INIT};
    air_buf_t messages = AIR_BUF_INIT;
    int nmsgs = 0;
    air_status_t st = AIR_OK;
    (void)air__buf_reserve(&messages, body->cap > body->len ? body->cap - body->len : 1024);

    int i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs)
    {
        char where[48];
        air__path_idx(where, sizeof where, "messages", "", i++);
        const char *role = cJSON_IsObject(m) ? json_str(m, "role") : NULL;
        if (role == NULL) {
            st = bad_request(e->f, 0, "%s.role: expected a string", where);
            goto out;
        }
        const cJSON *content = air__json_get(m, "content");
        const char *side = NULL;
        if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0) {
            st = content_blocks(e, &system, content, PART_TEXT, where);
            if (st != AIR_OK)
                goto out;
            continue;
        } else if (strcmp(role, "user") == 0) {
            side = "user";
            st = content_blocks(e, &mrest, content, PART_TEXT | PART_IMAGE, where);
        } else if (strcmp(role, "tool") == 0) {
            side = "user";
            st = tool_result_block(e, &mlead, m, where);
        } else if (strcmp(role, "assistant") == 0) {
            side = "assistant";
            st = thinking_blocks(e, &mlead, air__json_get(m, "thinking_blocks"), where);
            if (st == AIR_OK)
                st = content_blocks(e, &mrest, content, PART_TEXT, where);
            if (st == AIR_OK)
                st = tool_use_blocks(e, &mrest, air__json_get(m, "tool_calls"), where);
        } else if (strcmp(role, "function") == 0) {
            st = bad_request(e->f, 0,
                             "%s.role: legacy \"function\" messages are not "
                             "supported; use tool messages",
                             where);
        } else {
            st = bad_request(e->f, 0, "%s.role: unknown role \"%.32s\"", where, role);
        }
        if (st != AIR_OK)
            goto out;
        if (mlead.n == 0 && mrest.n == 0)
            continue; /* yields nothing: dropped, and does not split turns */
        if (t.role != NULL && strcmp(t.role, side) != 0)
            turn_flush(&messages, &nmsgs, &t);
        t.role = side;
        blist_move(&t.lead, &mlead);
        blist_move(&t.rest, &mrest);
        if (t.lead.b.oom || t.rest.b.oom) {
            st = AIR_E_NOMEM;
            goto out;
        }
    }
    strip_prefill(&t);
    turn_flush(&messages, &nmsgs, &t);
    if (messages.oom || system.b.oom) {
        st = AIR_E_NOMEM;
        goto out;
    }
    if (nmsgs == 0) {
        st = bad_request(e->f, 0, "messages: no user or assistant content to send");
        goto out;
    }
    if (system.n > 0) {
        PUTS(body, ",\"system\":[");
        air__buf_append(body, system.b.data, system.b.len);
        air__buf_put1(body, ']');
    }
    PUTS(body, ",\"messages\":[");
    air__buf_append(body, messages.data, messages.len);
    air__buf_put1(body, ']');
out:
    air__buf_free(&system.b);
    air__buf_free(&mlead.b);
    air__buf_free(&mrest.b);
    air__buf_free(&t.lead.b);
    air__buf_free(&t.rest.b);
    air__buf_free(&messages);
    return st;
}

/* response_format -> mode, schema (borrowed from the request). */
static air_status_t
json_mode_of(const struct ant *a, const cJSON *body, enum json_mode *mode, const cJSON **schema,
             air_fault_t *f)
{
    *mode = JSON_NONE;
    *schema = NULL;
    const cJSON *rf = json_get(body, "response_format");
    if (rf == NULL)
        return AIR_OK;
    const char *type = cJSON_IsObject(rf) ? json_str(rf, "type") : NULL;
    if (type == NULL)
        return f ? bad_request(f, 0, "response_format.type: expected a string") : AIR_E_BADREQ;
    if (strcmp(type, "text") == 0)
        return AIR_OK;
    if (strcmp(type, "json_object") == 0) {
        *mode = JSON_TOOL;
        return AIR_OK;
    }
    if (strcmp(type, "json_schema") == 0) {
        const cJSON *js = air__json_get(rf, "json_schema");
        const cJSON *s = cJSON_IsObject(js) ? air__json_get(js, "schema") : NULL;
        if (s != NULL && !cJSON_IsObject(s))
            return f ? bad_request(f, 0, "response_format.json_schema.schema: expected an object")
                     : AIR_E_BADREQ;
        if (!cJSON_IsObject(js))
            return f ? bad_request(f, 0, "response_format.json_schema: expected an object")
                     : AIR_E_BADREQ;
        *schema = s;
        *mode = a->structured_output && s != NULL ? JSON_NATIVE : JSON_TOOL;
        return AIR_OK;
    }
    return f ? bad_request(f, 1, "response_format.type \"%.32s\" is not supported", type)
             : AIR_E_BADREQ;
}

/* Whether a request uses the json_tool_call fallback (decode and stream
 * need to know to turn the tool's input back into content). */
static int
uses_json_tool(const struct ant *a, const air_req_view_t *req)
{
    enum json_mode mode;
    const cJSON *schema;
    if (a == NULL || req == NULL || req->body == NULL)
        return 0;
    if (json_mode_of(a, req->body, &mode, &schema, NULL) != AIR_OK)
        return 0;
    return mode == JSON_TOOL;
}

static air_status_t
encode_tools(struct enc *e, const cJSON *req, air_buf_t *body, enum json_mode mode,
             const cJSON *schema)
{
    const cJSON *tools = json_get(req, "tools");
    const cJSON *choice = json_get(req, "tool_choice");
    const cJSON *ptc = json_get(req, "parallel_tool_calls");
    int ntools = 0;

    if (tools != NULL && !cJSON_IsArray(tools))
        return bad_request(e->f, 0, "tools: expected an array");
    if (ptc != NULL && !cJSON_IsBool(ptc))
        return bad_request(e->f, 0, "parallel_tool_calls: expected true or false");
    ntools = cJSON_GetArraySize(tools);
    if (mode == JSON_TOOL && ntools > 0)
        return bad_request(e->f, 1,
                           "response_format together with tools needs a deployment with "
                           "\"structured_output\": true");

    if (ntools > 0) {
        PUTS(body, ",\"tools\":[");
        int i = 0;
        const cJSON *t;
        cJSON_ArrayForEach(t, tools)
        {
            const char *type = cJSON_IsObject(t) ? json_str(t, "type") : NULL;
            const cJSON *fn = cJSON_IsObject(t) ? air__json_get(t, "function") : NULL;
            if (type == NULL || strcmp(type, "function") != 0 || !cJSON_IsObject(fn))
                return bad_request(e->f, 1, "tools[%d]: only \"function\" tools are supported", i);
            const char *name = json_str(fn, "name");
            if (name == NULL || name[0] == '\0')
                return bad_request(e->f, 0,
                                   "tools[%d].function.name: expected a non-empty "
                                   "string",
                                   i);
            const cJSON *desc = json_get(fn, "description");
            if (desc != NULL && !cJSON_IsString(desc))
                return bad_request(e->f, 0, "tools[%d].function.description: expected a string", i);
            const cJSON *params = json_get(fn, "parameters");
            if (params != NULL && !cJSON_IsObject(params))
                return bad_request(e->f, 0, "tools[%d].function.parameters: expected an object", i);
            if (i > 0)
                air__buf_put1(body, ',');
            PUTS(body, "{\"name\":");
            put_cstr(body, name);
            if (desc != NULL) {
                PUTS(body, ",\"description\":");
                put_cstr(body, desc->valuestring);
            }
            PUTS(body, ",\"input_schema\":");
            if (params != NULL)
                air__buf_cjson(body, params);
            else
                PUTS(body, "{\"type\":\"object\",\"properties\":{}}");
            const cJSON *cc = air__json_get(t, "cache_control");
            if (cJSON_IsObject(cc)) {
                PUTS(body, ",\"cache_control\":");
                air__buf_cjson(body, cc);
            }
            air__buf_put1(body, '}');
            if (body->oom)
                return AIR_E_NOMEM;
            i++;
        }
        air__buf_put1(body, ']');
    }

    if (mode == JSON_TOOL) {
        /* LiteLLM's fallback (spec 6.1): one forced tool whose input is the
         * answer. */
        PUTS(body, ",\"tools\":[{\"name\":\"" ANT_JSON_TOOL "\",\"description\":"
                   "\"Respond with a JSON object.\",\"input_schema\":");
        if (schema != NULL)
            air__buf_cjson(body, schema);
        else
            PUTS(body, "{\"type\":\"object\",\"additionalProperties\":true,"
                       "\"properties\":{}}");
        PUTS(body, "}],\"tool_choice\":{\"type\":\"tool\",\"name\":\"" ANT_JSON_TOOL "\"}");
        return body->oom ? AIR_E_NOMEM : AIR_OK;
    }

    /* tool_choice */
    const char *kind = NULL, *name = NULL;
    if (choice != NULL) {
        if (cJSON_IsString(choice)) {
            const char *s = choice->valuestring;
            if (strcmp(s, "auto") == 0)
                kind = "auto";
            else if (strcmp(s, "required") == 0)
                kind = "any";
            else if (strcmp(s, "none") == 0)
                kind = "none";
            else
                return bad_request(e->f, 0, "tool_choice: unknown value \"%.32s\"", s);
        } else if (cJSON_IsObject(choice)) {
            const cJSON *fn = air__json_get(choice, "function");
            name = cJSON_IsObject(fn) ? json_str(fn, "name") : NULL;
            if (name == NULL || name[0] == '\0')
                return bad_request(e->f, 0,
                                   "tool_choice.function.name: expected a non-empty "
                                   "string");
            kind = "tool";
        } else {
            return bad_request(e->f, 0, "tool_choice: expected a string or an object");
        }
    }
    if (ntools == 0) {
        /* Nothing to choose from: "auto"/"none" mean the same as no tools;
         * forcing a tool cannot be served. */
        if (kind != NULL && (strcmp(kind, "any") == 0 || strcmp(kind, "tool") == 0))
            return bad_request(e->f, 0, "tool_choice: requires tools");
        return AIR_OK;
    }
    int disable_parallel = ptc != NULL && cJSON_IsFalse(ptc);
    if (kind == NULL && disable_parallel)
        kind = "auto";
    if (kind == NULL)
        return AIR_OK;
    PUTS(body, ",\"tool_choice\":{\"type\":\"");
    air__buf_puts(body, kind);
    air__buf_put1(body, '"');
    if (name != NULL) {
        PUTS(body, ",\"name\":");
        put_cstr(body, name);
    }
    if (disable_parallel && strcmp(kind, "none") != 0)
        PUTS(body, ",\"disable_parallel_tool_use\":true");
    air__buf_put1(body, '}');
    return body->oom ? AIR_E_NOMEM : AIR_OK;
}

static air_status_t
encode_params(struct enc *e, const air_req_view_t *req, air_buf_t *body)
{
    const cJSON *b = req->body;
    const cJSON *it;
    long long v;

    /* n: one choice only. */
    it = json_get(b, "n");
    if (it != NULL) {
        if (!json_int(it, 1, 1000000, &v))
            return bad_request(e->f, 0, "n: expected a positive integer");
        if (v > 1)
            return bad_request(e->f, 1, "n > 1 is not supported (parameter 'n')");
    }
    /* Legacy function calling has no translation here. */
    if (json_get(b, "functions") != NULL || json_get(b, "function_call") != NULL)
        return bad_request(e->f, 0,
                           "functions/function_call (legacy) are not supported; use "
                           "tools and tool_choice");

    /* max_tokens (required by Anthropic). */
    it = json_get(b, "max_completion_tokens");
    const char *mt_name = "max_completion_tokens";
    if (it == NULL) {
        it = json_get(b, "max_tokens");
        mt_name = "max_tokens";
    }
    long long max_tokens = e->a->default_max_tokens;
    if (it != NULL && !json_int(it, 1, ANT_MAX_TOKENS_LIMIT, &max_tokens))
        return bad_request(e->f, 0, "%s: expected a positive integer", mt_name);
    PUTS(body, ",\"max_tokens\":");
    air__buf_json_num(body, (double)max_tokens);

    /* stop -> stop_sequences, whitespace-only entries dropped (and the
     * member with them when none is left). */
    it = json_get(b, "stop");
    if (it != NULL) {
        size_t mark = body->len;
        int n = 0;
        PUTS(body, ",\"stop_sequences\":[");
        if (cJSON_IsString(it)) {
            if (!is_blank(it->valuestring)) {
                put_cstr(body, it->valuestring);
                n++;
            }
        } else if (cJSON_IsArray(it)) {
            const cJSON *s;
            cJSON_ArrayForEach(s, it)
            {
                if (!cJSON_IsString(s))
                    return bad_request(e->f, 0,
                                       "stop: expected a string or an array of "
                                       "strings");
                if (!is_blank(s->valuestring)) {
                    if (n++ > 0)
                        air__buf_put1(body, ',');
                    put_cstr(body, s->valuestring);
                }
            }
        } else {
            return bad_request(e->f, 0, "stop: expected a string or an array of strings");
        }
        if (n > 0) {
            air__buf_put1(body, ']');
        } else {
            body->len = mark;
            if (body->data != NULL)
                body->data[mark] = '\0';
        }
    }

    /* temperature, clamped to Anthropic's [0, 1]; top_p; top_k extension. */
    it = json_get(b, "temperature");
    if (it != NULL) {
        if (!cJSON_IsNumber(it))
            return bad_request(e->f, 0, "temperature: expected a number");
        double t = it->valuedouble;
        if (!(t >= 0))
            return bad_request(e->f, 0, "temperature: must be >= 0");
        PUTS(body, ",\"temperature\":");
        air__buf_json_num(body, t > 1 ? 1 : t);
    }
    it = json_get(b, "top_p");
    if (it != NULL) {
        if (!cJSON_IsNumber(it) || !(it->valuedouble >= 0 && it->valuedouble <= 1))
            return bad_request(e->f, 0, "top_p: expected a number in [0, 1]");
        PUTS(body, ",\"top_p\":");
        air__buf_json_num(body, it->valuedouble);
    }
    it = json_get(b, "top_k");
    if (it != NULL) {
        if (!json_int(it, 1, 1000000, &v))
            return bad_request(e->f, 0, "top_k: expected a positive integer");
        PUTS(body, ",\"top_k\":");
        air__buf_json_num(body, (double)v);
    }

    /* user -> metadata.user_id */
    it = json_get(b, "user");
    if (it != NULL) {
        if (!cJSON_IsString(it))
            return bad_request(e->f, 0, "user: expected a string");
        if (it->valuestring[0] != '\0') {
            PUTS(body, ",\"metadata\":{\"user_id\":");
            put_cstr(body, it->valuestring);
            air__buf_put1(body, '}');
        }
    }

    /* thinking: Anthropic's own object, passed through. */
    it = json_get(b, "thinking");
    if (it != NULL) {
        if (!cJSON_IsObject(it))
            return bad_request(e->f, 0, "thinking: expected an object");
        PUTS(body, ",\"thinking\":");
        air__buf_cjson(body, it);
    }
    return body->oom ? AIR_E_NOMEM : AIR_OK;
}

static air_status_t
ant_encode(const void *state, const air_req_view_t *req, air_http_out_t *out, air_fault_t *f)
{
    const struct ant *a = state;
    struct enc e = {a, f};
    air_status_t st;
    memset(out, 0, sizeof *out);
    if (a == NULL || req == NULL || !cJSON_IsObject(req->body) || req->model == NULL)
        return bad_request(f, 0, "request body must be a JSON object with a model");

    air_buf_t body = AIR_BUF_INIT;
    /* The Messages body is about as long as the caller's: one allocation. */
    (void)air__buf_reserve(&body, req->raw_len + 512);
    enum json_mode mode = JSON_NONE;
    const cJSON *schema = NULL;
    PUTS(&body, "{\"model\":");
    put_cstr(&body, req->model);
    st = encode_params(&e, req, &body);
    if (st == AIR_OK)
        st = encode_messages(&e, air__json_get(req->body, "messages"), &body);
    if (st == AIR_OK)
        st = json_mode_of(a, req->body, &mode, &schema, f);
    if (st == AIR_OK)
        st = encode_tools(&e, req->body, &body, mode, schema);
    if (st == AIR_OK && mode == JSON_NATIVE) {
        PUTS(&body, ",\"output_config\":{\"format\":{\"type\":\"json_schema\","
                    "\"schema\":");
        air__buf_cjson(&body, schema);
        PUTS(&body, "}}");
    }
    if (st == AIR_OK && req->stream)
        PUTS(&body, ",\"stream\":true");
    air__buf_put1(&body, '}');
    if (st == AIR_OK && body.oom)
        st = AIR_E_NOMEM;
    if (st != AIR_OK) {
        air__buf_free(&body);
        return st;
    }

    out->body = air__buf_steal(&body, &out->body_len);
    out->url = air__strdup(a->url);
    out->headers[out->nheaders++] = air__strdup("Content-Type: application/json");
    out->headers[out->nheaders++] = air__strdup("Expect:");
    if (a->key_header != NULL)
        out->headers[out->nheaders++] = air__strdup(a->key_header);
    out->headers[out->nheaders++] = air__strdup(a->version_header);
    if (a->beta_header != NULL)
        out->headers[out->nheaders++] = air__strdup(a->beta_header);
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
/* Finish reasons, usage, error types                                        */

static const char *
map_stop_reason(const char *r)
{
    if (r == NULL)
        return "stop";
    if (strcmp(r, "max_tokens") == 0 || strcmp(r, "model_context_window_exceeded") == 0)
        return "length";
    if (strcmp(r, "tool_use") == 0)
        return "tool_calls";
    if (strcmp(r, "refusal") == 0)
        return "content_filter";
    return "stop"; /* end_turn, stop_sequence, pause_turn, unknown */
}

/* Representative HTTP status of an Anthropic error type, 0 when unknown. */
static int
error_type_status(const char *type)
{
    static const struct {
        const char *type;
        int status;
    } map[] = {
        {"invalid_request_error", 400}, {"request_too_large", 413}, {"authentication_error", 401},
        {"permission_error", 403},      {"billing_error", 402},     {"not_found_error", 404},
        {"rate_limit_error", 429},      {"api_error", 500},         {"timeout_error", 504},
        {"overloaded_error", 529},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(type, map[i].type) == 0)
            return map[i].status;
    return 0;
}

/* Class and flags from an Anthropic error type (already in f->type), keeping
 * f->http_status. Returns 1 when the type was known. */
static int
apply_error_type(air_fault_t *f)
{
    int rep = error_type_status(f->type);
    if (rep == 0)
        return 0;
    int status = f->http_status;
    int64_t ra = f->retry_after_ms;
    air__fault_from_status(f, rep);
    f->http_status = status;
    f->retry_after_ms = ra;
    if (rep == 402) /* billing: mark the deployment */
        f->unusable = 1;
    return 1;
}

static void
usage_json(air_buf_t *b, const air_usage_t *u)
{
    air__buf_printf(b,
                    "{\"prompt_tokens\":%llu,\"completion_tokens\":%llu,\"total_tokens\":%llu,"
                    "\"prompt_tokens_details\":{\"cached_tokens\":%llu",
                    (unsigned long long)u->prompt, (unsigned long long)u->completion,
                    (unsigned long long)(u->prompt + u->completion), (unsigned long long)u->cached);
    if (u->cache_write > 0)
        air__buf_printf(b, ",\"cache_write_tokens\":%llu", (unsigned long long)u->cache_write);
    PUTS(b, "}}");
}

struct counts {
    uint64_t input, cache_read, cache_write, output;
};

static void
counts_update(struct counts *c, const cJSON *usage)
{
    if (!cJSON_IsObject(usage))
        return;
    json_count(usage, "input_tokens", &c->input);
    json_count(usage, "cache_read_input_tokens", &c->cache_read);
    json_count(usage, "cache_creation_input_tokens", &c->cache_write);
    json_count(usage, "output_tokens", &c->output);
}

static void
counts_to_usage(const struct counts *c, air_usage_t *u)
{
    u->prompt = c->input + c->cache_read + c->cache_write;
    u->completion = c->output;
    u->cached = c->cache_read;
    u->cache_write = c->cache_write;
    u->reasoning = 0;
    u->present = 1;
}

/* ------------------------------------------------------------------------ */
/* decode                                                                    */

static void
protocol_fault(air_fault_t *f, int status, const char *msg)
{
    fault_reset(f, AIR_ERR_UPSTREAM);
    f->http_status = status;
    f->retry = 1;
    f->failover = 1;
    air__strlcpy(f->message, msg, sizeof f->message);
}

/* The unified body is written straight into a buffer, in the member order
 * (and with the number and string forms) cJSON_PrintUnformatted gave the
 * tree this function used to build. */
static air_status_t
ant_decode(const void *state, const air_req_view_t *req, const air_http_in_t *in,
           air_decoded_t *out, air_fault_t *f)
{
    const struct ant *a = state;
    memset(out, 0, sizeof *out);
    cJSON *root = cJSON_ParseWithLength(in->body, in->body_len);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        protocol_fault(f, in->status, "anthropic: unparseable response body");
        return AIR_E_PROTOCOL;
    }
    const char *rtype = json_str(root, "type");
    if (rtype != NULL && strcmp(rtype, "error") == 0) {
        fault_reset(f, AIR_ERR_UPSTREAM);
        air__fault_from_status(f, 500);
        f->http_status = in->status;
        air__fault_parse_body(f, in->body, in->body_len);
        apply_error_type(f);
        cJSON_Delete(root);
        return AIR_E_UPSTREAM;
    }
    const cJSON *content = air__json_get(root, "content");
    if (!cJSON_IsArray(content)) {
        cJSON_Delete(root);
        protocol_fault(f, in->status, "anthropic: response has no content array");
        return AIR_E_PROTOCOL;
    }

    int json_tool = uses_json_tool(a, req);
    air_buf_t text = AIR_BUF_INIT, reasoning = AIR_BUF_INIT, answer = AIR_BUF_INIT;
    air_buf_t calls = AIR_BUF_INIT, thinking = AIR_BUF_INIT, args = AIR_BUF_INIT;
    int has_text = 0, has_reasoning = 0, json_answered = 0, ncalls = 0, nthinking = 0, oom = 0;

    const cJSON *blk;
    cJSON_ArrayForEach(blk, content)
    {
        if (oom)
            break;
        const char *type = cJSON_IsObject(blk) ? json_str(blk, "type") : NULL;
        if (type == NULL)
            continue;
        if (strcmp(type, "text") == 0) {
            const char *t = json_str(blk, "text");
            if (t != NULL) {
                air__buf_puts(&text, t);
                has_text = 1;
            }
        } else if (strcmp(type, "tool_use") == 0) {
            const char *id = json_str(blk, "id"), *name = json_str(blk, "name");
            const cJSON *input = air__json_get(blk, "input");
            /* The arguments are the input printed compactly, as cJSON does. */
            air__buf_reset(&args);
            if (input != NULL) {
                air__buf_cjson(&args, input);
                if (args.oom) {
                    oom = 1;
                    break;
                }
            }
            const char *atext = input != NULL ? args.data : "{}";
            size_t alen = input != NULL ? args.len : 2;
            if (json_tool && !json_answered && name != NULL && strcmp(name, ANT_JSON_TOOL) == 0) {
                /* The fallback's answer: its input is the message content. */
                air__buf_append(&answer, atext, alen);
                json_answered = 1;
                continue;
            }
            air_buf_t *c = &calls;
            if (ncalls++ > 0)
                air__buf_put1(c, ',');
            PUTS(c, "{\"id\":");
            put_cstr(c, id != NULL ? id : "");
            PUTS(c, ",\"type\":\"function\",\"function\":{\"name\":");
            put_cstr(c, name != NULL ? name : "");
            PUTS(c, ",\"arguments\":");
            air__buf_json_str(c, atext, alen);
            PUTS(c, "}}");
        } else if (strcmp(type, "thinking") == 0) {
            const char *t = json_str(blk, "thinking");
            if (t != NULL) {
                air__buf_puts(&reasoning, t);
                has_reasoning = 1;
            }
            air_buf_t *tb = &thinking;
            if (nthinking++ > 0)
                air__buf_put1(tb, ',');
            PUTS(tb, "{\"type\":\"thinking\",\"thinking\":");
            put_cstr(tb, t != NULL ? t : "");
            if (json_str(blk, "signature") != NULL) {
                PUTS(tb, ",\"signature\":");
                put_cstr(tb, json_str(blk, "signature"));
            }
            air__buf_put1(tb, '}');
        } else if (strcmp(type, "redacted_thinking") == 0) {
            air_buf_t *tb = &thinking;
            if (nthinking++ > 0)
                air__buf_put1(tb, ',');
            PUTS(tb, "{\"type\":\"redacted_thinking\",\"data\":");
            put_cstr(tb, json_str(blk, "data") ? json_str(blk, "data") : "");
            air__buf_put1(tb, '}');
        }
        /* server_tool_use, web_search_tool_result, ...: not representable;
         * ignored. */
    }
    if (text.oom || reasoning.oom || answer.oom || calls.oom || thinking.oom || args.oom)
        oom = 1;

    const char *finish = map_stop_reason(json_str(root, "stop_reason"));
    if (json_answered)
        finish = "stop";
    struct counts cnt = {0, 0, 0, 0};
    const cJSON *usage = air__json_get(root, "usage");
    counts_update(&cnt, usage);
    if (cJSON_IsObject(usage))
        counts_to_usage(&cnt, &out->usage);

    const char *id = json_str(root, "id");
    const char *model = json_str(root, "model");
    air_buf_t b = AIR_BUF_INIT;
    if (!oom) {
        (void)air__buf_reserve(&b, 256 + text.len + reasoning.len + answer.len + calls.len +
                                       thinking.len);
        PUTS(&b, "{\"id\":");
        put_cstr(&b, id != NULL ? id : (req && req->request_id ? req->request_id : ""));
        PUTS(&b, ",\"object\":\"chat.completion\",\"created\":");
        air__buf_json_num(&b, req != NULL ? (double)req->now_unix : 0);
        PUTS(&b, ",\"model\":");
        put_cstr(&b, model != NULL ? model : (req && req->model ? req->model : ""));
        PUTS(&b, ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
                 "\"content\":");
        if (json_answered)
            air__buf_json_str(&b, answer.data != NULL ? answer.data : "", answer.len);
        else if (has_text)
            air__buf_json_str(&b, text.data != NULL ? text.data : "", text.len);
        else
            PUTS(&b, "null");
        if (has_reasoning) {
            PUTS(&b, ",\"reasoning_content\":");
            air__buf_json_str(&b, reasoning.data != NULL ? reasoning.data : "", reasoning.len);
        }
        if (nthinking > 0) {
            PUTS(&b, ",\"thinking_blocks\":[");
            air__buf_append(&b, thinking.data, thinking.len);
            air__buf_put1(&b, ']');
        }
        if (ncalls > 0) {
            PUTS(&b, ",\"tool_calls\":[");
            air__buf_append(&b, calls.data, calls.len);
            air__buf_put1(&b, ']');
        }
        PUTS(&b, "},\"logprobs\":null,\"finish_reason\":");
        put_cstr(&b, finish);
        PUTS(&b, "}]");
        if (cJSON_IsObject(usage)) {
            const air_usage_t *u = &out->usage;
            PUTS(&b, ",\"usage\":{\"prompt_tokens\":");
            air__buf_json_num(&b, (double)u->prompt);
            PUTS(&b, ",\"completion_tokens\":");
            air__buf_json_num(&b, (double)u->completion);
            PUTS(&b, ",\"total_tokens\":");
            air__buf_json_num(&b, (double)(u->prompt + u->completion));
            PUTS(&b, ",\"prompt_tokens_details\":{\"cached_tokens\":");
            air__buf_json_num(&b, (double)u->cached);
            if (u->cache_write > 0) {
                PUTS(&b, ",\"cache_write_tokens\":");
                air__buf_json_num(&b, (double)u->cache_write);
            }
            PUTS(&b, "}}");
        }
        air__buf_put1(&b, '}');
    }
    air__buf_free(&text);
    air__buf_free(&reasoning);
    air__buf_free(&answer);
    air__buf_free(&calls);
    air__buf_free(&thinking);
    air__buf_free(&args);
    /* model points into root: copy it before root goes. */
    air__strlcpy(out->model, model != NULL ? model : "", sizeof out->model);
    air__strlcpy(out->finish_reason, finish, sizeof out->finish_reason);
    cJSON_Delete(root);
    if (oom) {
        air__buf_free(&b);
        memset(out, 0, sizeof *out);
        return AIR_E_NOMEM;
    }
    out->body = air__buf_steal(&b, &out->body_len);
    if (out->body == NULL) {
        memset(out, 0, sizeof *out);
        return AIR_E_NOMEM;
    }
    return AIR_OK;
}

/* ------------------------------------------------------------------------ */
/* classify                                                                  */

static void
ant_classify(const void *state, const air_http_in_t *in, air_fault_t *f)
{
    (void)state;
    fault_reset(f, AIR_ERR_UPSTREAM);
    air__fault_from_status(f, in->status);
    air__fault_parse_body(f, in->body, in->body_len);
    apply_error_type(f);
    f->retry_after_ms = air__retry_after_ms(in);
    air__fault_apply_should_retry(f, in);
}

/* ------------------------------------------------------------------------ */
/* Streaming (spec 6.3)                                                      */

/*
 * Most events of a stream are content_block_delta (one per token or so),
 * with a few content_block_stop and ping. Those three are read by a small
 * validating scanner (fast_scan) that picks the few members needed straight
 * from the bytes; every other event, and any of these three that looks
 * unusual (an escaped key, a \u escape in a value that is used, a number
 * that is not a plain integer, text cJSON would read differently), goes
 * through cJSON as before. Both paths feed the same handlers, so they
 * cannot disagree on what a given event means.
 */

enum blk_kind {
    BLK_FREE = 0,
    BLK_TEXT,
    BLK_TOOL,
    BLK_JSON, /* the json_tool_call fallback: its input streams as content */
    BLK_THINKING,
    BLK_OTHER,
};

struct blk {
    int64_t index;    /* Anthropic content-block index */
    int32_t tool_pos; /* OpenAI tool_calls[].index */
    uint8_t kind;     /* enum blk_kind; BLK_FREE = unused slot */
    uint8_t saw_args;
};

/* Fixed size, no pointers: nothing to free when core drops it. */
struct sstate {
    char id[128];
    char model[128];
    struct counts cnt;
    struct blk blocks[ANT_OPEN_BLOCKS];
    int32_t ntools;
    uint8_t started;      /* message_start seen */
    uint8_t role_pending; /* the role chunk is held until the next chunk */
    uint8_t finished;     /* finish_reason chunk emitted */
    uint8_t json_known, json_tool;
    /* The chunk envelope up to the model ({"id":...,"model":"..."}), kept
     * once built; head_for is 1 + `started` it was built for, 0 none. */
    uint8_t head_for;
    uint16_t head_len;
    char head[400];
};

/* A string value as an event handler needs it: either text to escape
 * (raw = 0, a C string from cJSON) or the inner bytes of a JSON string
 * literal that are already escaped exactly as air__buf_json_str would
 * escape the decoded text (raw = 1). p == NULL: absent or not a string. */
struct jtext {
    const char *p;
    size_t n;
    int raw;
};

static struct jtext
jtext_c(const char *s)
{
    struct jtext t = {s, s != NULL ? strlen(s) : 0, 0};
    return t;
}

static int
jtext_is(const struct jtext *t, const char *lit)
{
    size_t n = strlen(lit);
    return t->p != NULL && t->n == n && memcmp(t->p, lit, n) == 0;
}

static void
put_jtext(air_buf_t *b, const struct jtext *t)
{
    if (t->raw) {
        air__buf_put1(b, '"');
        air__buf_append(b, t->p, t->n);
        air__buf_put1(b, '"');
    } else {
        air__buf_json_str(b, t->p, t->n);
    }
}

/* What a content_block_delta or content_block_stop event says. */
struct ev {
    int index_ok; /* "index" is an integer in [0, INT32_MAX] */
    long long index;
    struct jtext dtype; /* delta.type (p NULL: no delta object or no string type) */
    struct jtext text, thinking, partial_json; /* delta members */
};

/* Results of emitting. */
#define EMIT_OK   0
#define EMIT_STOP 1 /* core asked to stop */
#define EMIT_OOM  2

/* The envelope of every chunk. It only changes when message_start sets id
 * and model, so it is built once per value of `started` and then copied. */
static void
chunk_open(air_buf_t *b, struct sstate *s, const air_stream_ctx_t *sc)
{
    if (s->head_for == 1 + s->started) {
        air__buf_put(b, s->head, s->head_len);
        return;
    }
    size_t start = b->len;
    const char *id = s->id[0] ? s->id : (sc->req->request_id ? sc->req->request_id : "");
    const char *model = s->model[0] ? s->model : (sc->req->model ? sc->req->model : "");
    PUTS(b, "{\"id\":");
    put_cstr(b, id);
    PUTS(b, ",\"object\":\"chat.completion.chunk\",\"created\":");
    air__buf_i64(b, (long long)sc->req->now_unix);
    PUTS(b, ",\"model\":");
    put_cstr(b, model);
    if (!b->oom && b->len - start <= sizeof s->head) {
        s->head_len = (uint16_t)(b->len - start);
        memcpy(s->head, b->data + start, s->head_len);
        s->head_for = (uint8_t)(1 + s->started);
    }
}

/* Start a choices[0] chunk up to the inside of "delta":{ */
static void
delta_open(air_buf_t *b, struct sstate *s, const air_stream_ctx_t *sc, size_t extra)
{
    /* One allocation for the whole chunk in the common case. */
    (void)air__buf_reserve(b, 384 + extra);
    chunk_open(b, s, sc);
    PUTS(b, ",\"choices\":[{\"index\":0,\"delta\":{");
}

static void
delta_close(air_buf_t *b, const char *finish)
{
    PUTS(b, "},\"finish_reason\":");
    if (finish != NULL) {
        air__buf_put1(b, '"');
        air__buf_puts(b, finish);
        air__buf_put1(b, '"');
    } else {
        PUTS(b, "null");
    }
    PUTS(b, "}]}");
}

static int
emit_raw(air_stream_ctx_t *sc, air_buf_t *b, unsigned flags)
{
    if (b->oom || b->data == NULL)
        return EMIT_OOM;
    return sc->emit(sc->emit_ud, b->data, b->len, flags) != 0 ? EMIT_STOP : EMIT_OK;
}

/* Emit a chunk (b holds it; reset afterwards), flushing the held role chunk
 * first. */
static int
emit(air_stream_ctx_t *sc, struct sstate *s, air_buf_t *b, unsigned flags)
{
    if (s->role_pending) {
        air_buf_t r = AIR_BUF_INIT;
        delta_open(&r, s, sc, 0);
        PUTS(&r, "\"role\":\"assistant\",\"content\":\"\"");
        delta_close(&r, NULL);
        int rc = emit_raw(sc, &r, 0);
        air__buf_free(&r);
        if (rc != EMIT_OK)
            return rc;
        s->role_pending = 0;
    }
    int rc = emit_raw(sc, b, flags);
    air__buf_reset(b);
    return rc;
}

static struct blk *
blk_find(struct sstate *s, int64_t index)
{
    for (size_t i = 0; i < ANT_OPEN_BLOCKS; i++)
        if (s->blocks[i].kind != BLK_FREE && s->blocks[i].index == index)
            return &s->blocks[i];
    return NULL;
}

static struct blk *
blk_new(struct sstate *s, int64_t index)
{
    struct blk *k = blk_find(s, index);
    if (k != NULL)
        return k;
    for (size_t i = 0; i < ANT_OPEN_BLOCKS; i++)
        if (s->blocks[i].kind == BLK_FREE) {
            s->blocks[i].index = index;
            return &s->blocks[i];
        }
    return NULL;
}

static air_stream_rc_t
stream_fail(air_stream_ctx_t *sc, const char *msg)
{
    protocol_fault(&sc->fault, 0, msg);
    return AIR_STREAM_ERROR;
}

static air_stream_rc_t
emit_rc(air_stream_ctx_t *sc, int rc)
{
    if (rc == EMIT_OK)
        return AIR_STREAM_MORE;
    if (rc == EMIT_STOP)
        return AIR_STREAM_ERROR; /* fault untouched, as the SPI asks */
    return stream_fail(sc, "anthropic: out of memory while translating the stream");
}

static void
sync_usage(air_stream_ctx_t *sc, const struct sstate *s)
{
    counts_to_usage(&s->cnt, &sc->usage);
}

/* A content delta (text, reasoning or tool arguments) as one chunk. */
static int
emit_text(air_stream_ctx_t *sc, struct sstate *s, air_buf_t *b, const char *field,
          const struct jtext *text)
{
    delta_open(b, s, sc, text->n);
    air__buf_put1(b, '"');
    air__buf_puts(b, field);
    PUTS(b, "\":");
    put_jtext(b, text);
    delta_close(b, NULL);
    return emit(sc, s, b, AIR_CHUNK_CONTENT);
}

static int
emit_args(air_stream_ctx_t *sc, struct sstate *s, air_buf_t *b, int32_t pos,
          const struct jtext *args)
{
    delta_open(b, s, sc, args->n);
    PUTS(b, "\"tool_calls\":[{\"index\":");
    air__buf_i64(b, pos);
    PUTS(b, ",\"function\":{\"arguments\":");
    put_jtext(b, args);
    PUTS(b, "}}]");
    delta_close(b, NULL);
    return emit(sc, s, b, AIR_CHUNK_CONTENT);
}

static int
emit_finish(air_stream_ctx_t *sc, struct sstate *s, air_buf_t *b, const char *finish)
{
    s->finished = 1;
    air__strlcpy(sc->finish_reason, finish, sizeof sc->finish_reason);
    delta_open(b, s, sc, 0);
    delta_close(b, finish);
    return emit(sc, s, b, AIR_CHUNK_CONTENT);
}

static int
on_block_start(air_stream_ctx_t *sc, struct sstate *s, air_buf_t *b, const cJSON *ev, int *bad)
{
    long long index;
    const cJSON *cb = air__json_get(ev, "content_block");
    const char *type = cJSON_IsObject(cb) ? json_str(cb, "type") : NULL;
    if (!json_int(air__json_get(ev, "index"), 0, INT32_MAX, &index) || type == NULL) {
        *bad = 1;
        return EMIT_OK;
    }
    struct blk *k = blk_new(s, index);
    if (k == NULL) {
        *bad = 2;
        return EMIT_OK;
    }
    k->saw_args = 0;
    if (strcmp(type, "text") == 0) {
        k->kind = BLK_TEXT;
        struct jtext t = jtext_c(json_str(cb, "text"));
        if (t.p != NULL && t.p[0] != '\0')
            return emit_text(sc, s, b, "content", &t);
    } else if (strcmp(type, "thinking") == 0) {
        k->kind = BLK_THINKING;
        struct jtext t = jtext_c(json_str(cb, "thinking"));
        if (t.p != NULL && t.p[0] != '\0')
            return emit_text(sc, s, b, "reasoning_content", &t);
    } else if (strcmp(type, "tool_use") == 0) {
        const char *id = json_str(cb, "id"), *name = json_str(cb, "name");
        if (s->json_tool && name != NULL && strcmp(name, ANT_JSON_TOOL) == 0) {
            k->kind = BLK_JSON;
            return EMIT_OK;
        }
        k->kind = BLK_TOOL;
        k->tool_pos = s->ntools++;
        if (id == NULL)
            id = "";
        if (name == NULL)
            name = "";
        delta_open(b, s, sc, strlen(id) + strlen(name));
        PUTS(b, "\"tool_calls\":[{\"index\":");
        air__buf_i64(b, k->tool_pos);
        PUTS(b, ",\"id\":");
        put_cstr(b, id);
        PUTS(b, ",\"type\":\"function\",\"function\":{\"name\":");
        put_cstr(b, name);
        PUTS(b, ",\"arguments\":\"\"}}]");
        delta_close(b, NULL);
        return emit(sc, s, b, AIR_CHUNK_CONTENT);
    } else {
        k->kind = BLK_OTHER; /* redacted_thinking, server tools, ... */
    }
    return EMIT_OK;
}

static int
on_block_delta(air_stream_ctx_t *sc, struct sstate *s, air_buf_t *b, const struct ev *v, int *bad)
{
    if (v->dtype.p == NULL || !v->index_ok) {
        *bad = 1;
        return EMIT_OK;
    }
    if (jtext_is(&v->dtype, "text_delta")) {
        if (v->text.p != NULL && v->text.n > 0)
            return emit_text(sc, s, b, "content", &v->text);
    } else if (jtext_is(&v->dtype, "thinking_delta")) {
        if (v->thinking.p != NULL && v->thinking.n > 0)
            return emit_text(sc, s, b, "reasoning_content", &v->thinking);
    } else if (jtext_is(&v->dtype, "input_json_delta")) {
        struct blk *k = blk_find(s, v->index);
        if (k == NULL || (k->kind != BLK_TOOL && k->kind != BLK_JSON)) {
            *bad = 3;
            return EMIT_OK;
        }
        const struct jtext *pj = &v->partial_json;
        if (pj->p == NULL || pj->n == 0)
            return EMIT_OK;
        k->saw_args = 1;
        if (k->kind == BLK_JSON)
            return emit_text(sc, s, b, "content", pj);
        return emit_args(sc, s, b, k->tool_pos, pj);
    }
    /* signature_delta, citations_delta, unknown: nothing. */
    return EMIT_OK;
}

static int
on_block_stop(air_stream_ctx_t *sc, struct sstate *s, air_buf_t *b, const struct ev *v)
{
    static const struct jtext empty_obj = {"{}", 2, 0};
    if (!v->index_ok)
        return EMIT_OK;
    struct blk *k = blk_find(s, v->index);
    if (k == NULL)
        return EMIT_OK;
    int rc = EMIT_OK;
    if (!k->saw_args && k->kind == BLK_TOOL)
        rc = emit_args(sc, s, b, k->tool_pos, &empty_obj);
    else if (!k->saw_args && k->kind == BLK_JSON)
        rc = emit_text(sc, s, b, "content", &empty_obj);
    memset(k, 0, sizeof *k);
    return rc;
}

/* The members of a delta or stop event, from cJSON. A text member is a C
 * string, so "\u0000..." reads as empty, as it always has. */
static void
ev_from_tree(const cJSON *ev, struct ev *v)
{
    memset(v, 0, sizeof *v);
    v->index_ok = json_int(air__json_get(ev, "index"), 0, INT32_MAX, &v->index);
    const cJSON *d = air__json_get(ev, "delta");
    if (cJSON_IsObject(d)) {
        v->dtype = jtext_c(json_str(d, "type"));
        v->text = jtext_c(json_str(d, "text"));
        v->thinking = jtext_c(json_str(d, "thinking"));
        v->partial_json = jtext_c(json_str(d, "partial_json"));
    }
}

/* ---- the fast path -------------------------------------------------------- */

#define FAST_MAX_DEPTH 64

/* The strict scanner lives in jscan.c (shared with the other adapters). */
#define ESC_ANY AIR_JSCAN_ESC_ANY
#define ESC_ODD AIR_JSCAN_ESC_ODD
#define scan_str air__jscan_str
#define scan_num air__jscan_num
#define skip_value air__jscan_skip_value
#define skip_ws air__jscan_ws
#define scan_key air__jscan_key
#define key_is air__jscan_key_is

/* Scan a string value wanted as text. Returns the end, or NULL when the
 * fast path must give up (invalid, or escapes we would not copy as is). */
static const char *
want_text(const char *p, const char *e, struct jtext *t)
{
    unsigned esc = 0;
    if (p >= e || *p != '"')
        return NULL;
    const char *q = scan_str(p, e, &esc);
    if (q == NULL || (esc & ESC_ODD))
        return NULL;
    t->p = p + 1;
    t->n = (size_t)(q - 1 - (p + 1));
    t->raw = 1;
    return q;
}

/* The delta object's members. Returns the end, or NULL to give up. */
static const char *
scan_delta(const char *p, const char *e, struct ev *v)
{
    int seen_type = 0;
    p = skip_ws(p + 1, e);
    if (p < e && *p == '}')
        return NULL; /* no type: the slow path reports it */
    for (;;) {
        const char *k;
        size_t kl;
        if ((p = scan_key(p, e, &k, &kl)) == NULL)
            return NULL;
        struct jtext *want = NULL;
        int first = 0;
        if (key_is(k, kl, "type")) {
            want = &v->dtype;
            first = !seen_type;
            seen_type = 1;
        } else if (key_is(k, kl, "text")) {
            want = &v->text;
            first = v->text.p == NULL;
        } else if (key_is(k, kl, "thinking")) {
            want = &v->thinking;
            first = v->thinking.p == NULL;
        } else if (key_is(k, kl, "partial_json")) {
            want = &v->partial_json;
            first = v->partial_json.p == NULL;
        }
        if (want != NULL && first) {
            /* The first member of a name is the one cJSON finds. */
            if ((p = want_text(p, e, want)) == NULL)
                return NULL;
        } else if ((p = skip_value(p, e, 2)) == NULL) {
            return NULL;
        }
        p = skip_ws(p, e);
        if (p >= e)
            return NULL;
        if (*p == '}')
            break;
        if (*p != ',')
            return NULL;
        p = skip_ws(p + 1, e);
    }
    /* delta.type was a plain string; type text of a delta is not escaped. */
    return seen_type && memchr(v->dtype.p, '\\', v->dtype.n) == NULL ? p + 1 : NULL;
}

enum fast_kind { FAST_NO = 0, FAST_DELTA, FAST_STOP, FAST_PING };

/*
 * Read a content_block_delta, content_block_stop or ping event straight from
 * its bytes: a strictly valid JSON object with plain keys, a plain "type"
 * string, a plain integer "index" (no sign, fraction or exponent) and, for a
 * delta, a delta object whose wanted strings carry no \u or \/ escape.
 * Returns FAST_NO for anything else; the caller then uses cJSON.
 */
static enum fast_kind
fast_scan(const char *data, size_t len, struct ev *v)
{
    const char *e = data + len;
    const char *p = skip_ws(data, e);
    const char *type = NULL;
    size_t tlen = 0;
    int seen_index = 0, seen_delta = 0;
    memset(v, 0, sizeof *v);
    if (p >= e || *p != '{')
        return FAST_NO;
    p = skip_ws(p + 1, e);
    if (p >= e || *p == '}')
        return FAST_NO;
    for (;;) {
        const char *k;
        size_t kl;
        if ((p = scan_key(p, e, &k, &kl)) == NULL)
            return FAST_NO;
        if (key_is(k, kl, "type") && type == NULL) {
            unsigned esc = 0;
            const char *q = p < e && *p == '"' ? scan_str(p, e, &esc) : NULL;
            if (q == NULL || esc != 0)
                return FAST_NO;
            type = p + 1;
            tlen = (size_t)(q - 1 - type);
            p = q;
        } else if (key_is(k, kl, "index") && !seen_index) {
            seen_index = 1;
            const char *q = p;
            unsigned long long n = 0;
            while (q < e && *q >= '0' && *q <= '9' && q - p < 11) {
                n = n * 10 + (unsigned)(*q - '0');
                q++;
            }
            /* A plain integer: "0" or no leading zero, nothing after it
             * that would make it a longer number. */
            if (q == p || (*p == '0' && q - p > 1) || n > INT32_MAX ||
                (q < e && (*q == '.' || *q == 'e' || *q == 'E' || (*q >= '0' && *q <= '9'))))
                return FAST_NO;
            v->index = (long long)n;
            v->index_ok = 1;
            p = q;
        } else if (key_is(k, kl, "delta") && !seen_delta) {
            seen_delta = 1;
            if (p >= e || *p != '{' || (p = scan_delta(p, e, v)) == NULL)
                return FAST_NO;
        } else if ((p = skip_value(p, e, 1)) == NULL) {
            return FAST_NO;
        }
        p = skip_ws(p, e);
        if (p >= e)
            return FAST_NO;
        if (*p == '}')
            break;
        if (*p != ',')
            return FAST_NO;
        p = skip_ws(p + 1, e);
    }
    if (skip_ws(p + 1, e) != e || type == NULL)
        return FAST_NO;
    if (key_is(type, tlen, "content_block_delta"))
        return seen_index && seen_delta ? FAST_DELTA : FAST_NO;
    if (key_is(type, tlen, "content_block_stop"))
        return seen_index ? FAST_STOP : FAST_NO;
    if (key_is(type, tlen, "ping"))
        return FAST_PING;
    return FAST_NO;
}

/* ---- events ----------------------------------------------------------------- */

static air_stream_rc_t
stream_error_event(air_stream_ctx_t *sc, const cJSON *ev)
{
    air_fault_t *f = &sc->fault;
    fault_reset(f, AIR_ERR_UPSTREAM);
    f->retry = 1;
    f->failover = 1;
    const cJSON *err = air__json_get(ev, "error");
    const char *type = cJSON_IsObject(err) ? json_str(err, "type") : NULL;
    const char *msg = cJSON_IsObject(err) ? json_str(err, "message") : NULL;
    air__strlcpy(f->type, type != NULL ? type : "", sizeof f->type);
    if (msg != NULL)
        air__strlcpy(f->message, msg, sizeof f->message);
    else
        air__strlcpy(f->message, "anthropic: error event in stream", sizeof f->message);
    apply_error_type(f);
    f->http_status = 0; /* the stream itself was a 200 */
    return AIR_STREAM_ERROR;
}

/* The common end of an event: errors the handlers flagged, then emits. */
static air_stream_rc_t
event_result(air_stream_ctx_t *sc, int bad, int rc, air_stream_rc_t ret)
{
    if (bad == 1)
        return stream_fail(sc, "anthropic: malformed content block event");
    if (bad == 2)
        return stream_fail(sc, "anthropic: too many open content blocks");
    if (bad == 3)
        return stream_fail(sc, "anthropic: input_json_delta for a block that is not a tool_use");
    if (rc != EMIT_OK)
        return emit_rc(sc, rc);
    return ret;
}

static air_stream_rc_t
ant_stream_event(const void *state, air_stream_ctx_t *sc, const char *event, size_t event_len,
                 const char *data, size_t data_len)
{
    const struct ant *a = state;
    struct sstate *s = sc->state;
    if (!s->json_known) {
        s->json_known = 1;
        s->json_tool = (uint8_t)uses_json_tool(a, sc->req);
    }
    air_buf_t b = AIR_BUF_INIT;
    int rc = EMIT_OK, bad = 0;
    struct ev v;
    enum fast_kind fk = fast_scan(data, data_len, &v);
    if (fk != FAST_NO) {
        if (fk == FAST_DELTA)
            rc = on_block_delta(sc, s, &b, &v, &bad);
        else if (fk == FAST_STOP)
            rc = on_block_stop(sc, s, &b, &v);
        air__buf_free(&b);
        return event_result(sc, bad, rc, AIR_STREAM_MORE);
    }

    cJSON *ev = cJSON_ParseWithLength(data, data_len);
    if (!cJSON_IsObject(ev)) {
        cJSON_Delete(ev);
        /* Event names without JSON (ping with no data) are harmless. */
        if (event_len == 4 && memcmp(event, "ping", 4) == 0)
            return AIR_STREAM_MORE;
        return stream_fail(sc, "anthropic: unparseable stream event");
    }
    char name[40];
    const char *type = json_str(ev, "type");
    if (type == NULL) {
        size_t n = event_len < sizeof name - 1 ? event_len : sizeof name - 1;
        memcpy(name, event, n);
        name[n] = '\0';
        type = name;
    }

    air_stream_rc_t ret = AIR_STREAM_MORE;
    if (strcmp(type, "message_start") == 0) {
        const cJSON *m = air__json_get(ev, "message");
        if (cJSON_IsObject(m)) {
            if (!s->started) {
                air__strlcpy(s->id, json_str(m, "id"), sizeof s->id);
                air__strlcpy(s->model, json_str(m, "model"), sizeof s->model);
                air__strlcpy(sc->model, s->model, sizeof sc->model);
                s->role_pending = 1;
            }
            counts_update(&s->cnt, air__json_get(m, "usage"));
            sync_usage(sc, s);
        }
        s->started = 1;
    } else if (strcmp(type, "content_block_start") == 0) {
        rc = on_block_start(sc, s, &b, ev, &bad);
    } else if (strcmp(type, "content_block_delta") == 0) {
        ev_from_tree(ev, &v);
        rc = on_block_delta(sc, s, &b, &v, &bad);
    } else if (strcmp(type, "content_block_stop") == 0) {
        ev_from_tree(ev, &v);
        rc = on_block_stop(sc, s, &b, &v);
    } else if (strcmp(type, "message_delta") == 0) {
        const cJSON *d = air__json_get(ev, "delta");
        const cJSON *u = air__json_get(ev, "usage");
        if (cJSON_IsObject(u)) {
            counts_update(&s->cnt, u);
            sync_usage(sc, s);
        }
        const char *sr = cJSON_IsObject(d) ? json_str(d, "stop_reason") : NULL;
        if (sr != NULL && !s->finished) {
            const char *fin = map_stop_reason(sr);
            if (s->json_tool && strcmp(fin, "tool_calls") == 0 && s->ntools == 0)
                fin = "stop";
            rc = emit_finish(sc, s, &b, fin);
        }
    } else if (strcmp(type, "message_stop") == 0) {
        if (!s->finished)
            rc = emit_finish(sc, s, &b, "stop");
        if (rc == EMIT_OK && sc->req->include_usage) {
            chunk_open(&b, s, sc);
            PUTS(&b, ",\"choices\":[],\"usage\":");
            air_usage_t u;
            counts_to_usage(&s->cnt, &u);
            usage_json(&b, &u);
            air__buf_put1(&b, '}');
            rc = emit(sc, s, &b, 0);
        }
        if (rc == EMIT_OK)
            ret = AIR_STREAM_DONE;
    } else if (strcmp(type, "error") == 0) {
        ret = stream_error_event(sc, ev);
    }
    /* ping and unknown event types: nothing. */
    air__buf_free(&b);
    cJSON_Delete(ev);
    return event_result(sc, bad, rc, ret);
}

static air_stream_rc_t
ant_stream_end(const void *state, air_stream_ctx_t *sc)
{
    (void)state;
    return stream_fail(sc, "anthropic: stream ended before message_stop");
}

const air_provider_ops_t air_provider_anthropic = {
    .abi = AIR_PROVIDER_ABI,
    .name = "anthropic",
    .caps = AIR_CAP_STREAM | AIR_CAP_TOOLS | AIR_CAP_IMAGES | AIR_CAP_JSON,
    .default_base_url = "https://api.anthropic.com",
    .config_keys = ant_config_keys,
    .stream_state_size = sizeof(struct sstate),
    .init = ant_init,
    .fini = ant_fini,
    .encode = ant_encode,
    .decode = ant_decode,
    .classify = ant_classify,
    .stream_event = ant_stream_event,
    .stream_end = ant_stream_end,
    .ratelimit = air__ratelimit_anthropic_op,
};
