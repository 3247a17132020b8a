/*
 * anthropic.c - the Anthropic Messages API adapter (spec sections 2 and 6.1-6.3).
 *
 * DESIGN: a pure translator, like every adapter. encode turns the unified
 * (OpenAI Chat Completions) body into a Messages API request: system and
 * developer messages are lifted into `system`, the remaining messages are
 * converted one by one into (lead blocks, other blocks) and then merged into
 * alternating user/assistant turns, so that tool_result blocks always open
 * their user turn and thinking blocks open their assistant turn. decode and
 * the stream state machine translate back. Bodies are built with cJSON for
 * the request and the non-streamed reply (both are trees anyway); stream
 * chunks are written straight into a growable buffer, because they are the
 * hot path and small.
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
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
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
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(it) && it->valuestring != NULL ? it->valuestring : NULL;
}

/* A member that is present and not JSON null. */
static const cJSON *
json_get(const cJSON *obj, const char *key)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    return it == NULL || cJSON_IsNull(it) ? NULL : it;
}

/* Copy a cJSON-allocated string into an air__malloc'd one and free it. */
static char *
take_printed(char *s, size_t *len)
{
    if (s == NULL)
        return NULL;
    size_t n = strlen(s);
    char *r = air__strndup(s, n);
    cJSON_free(s);
    if (r != NULL && len != NULL)
        *len = n;
    return r;
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
        const cJSON *it = cJSON_GetObjectItemCaseSensitive(j, "default_max_tokens");
        if (it != NULL && !json_int(it, 1, ANT_MAX_TOKENS_LIMIT, &max_tokens)) {
            snprintf(err, errlen, "default_max_tokens: expected an integer >= 1");
            return AIR_E_CONFIG;
        }
        it = cJSON_GetObjectItemCaseSensitive(j, "anthropic_version");
        if (it != NULL) {
            if (!cJSON_IsString(it) || it->valuestring[0] == '\0' ||
                has_line_break(it->valuestring)) {
                snprintf(err, errlen, "anthropic_version: expected a non-empty string");
                return AIR_E_CONFIG;
            }
            version = it->valuestring;
        }
        it = cJSON_GetObjectItemCaseSensitive(j, "anthropic_beta");
        if (it != NULL) {
            if (!cJSON_IsString(it) || has_line_break(it->valuestring)) {
                snprintf(err, errlen, "anthropic_beta: expected a string (comma-separated)");
                return AIR_E_CONFIG;
            }
            if (it->valuestring[0] != '\0')
                beta = it->valuestring;
        }
        it = cJSON_GetObjectItemCaseSensitive(j, "structured_output");
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

/* How response_format is served for a request. */
enum json_mode {
    JSON_NONE = 0,
    JSON_NATIVE, /* output_config.format */
    JSON_TOOL,   /* the json_tool_call fallback */
};

struct enc {
    const struct ant *a;
    air_fault_t *f;
    int oom;
};

/* Attach item to obj/array; records OOM and frees item on failure. */
static cJSON *
put(struct enc *e, cJSON *parent, const char *key, cJSON *item)
{
    if (item == NULL) {
        e->oom = 1;
        return NULL;
    }
    cJSON_bool ok =
        key != NULL ? cJSON_AddItemToObject(parent, key, item) : cJSON_AddItemToArray(parent, item);
    if (!ok) {
        cJSON_Delete(item);
        e->oom = 1;
        return NULL;
    }
    return item;
}

static cJSON *
put_str(struct enc *e, cJSON *parent, const char *key, const char *s)
{
    return put(e, parent, key, cJSON_CreateString(s));
}

static cJSON *
put_num(struct enc *e, cJSON *parent, const char *key, double v)
{
    return put(e, parent, key, cJSON_CreateNumber(v));
}

static cJSON *
put_obj(struct enc *e, cJSON *parent, const char *key)
{
    return put(e, parent, key, cJSON_CreateObject());
}

static cJSON *
put_dup(struct enc *e, cJSON *parent, const char *key, const cJSON *src)
{
    return put(e, parent, key, cJSON_Duplicate(src, 1));
}

static cJSON *
text_block(struct enc *e, cJSON *arr, const char *text, const cJSON *part)
{
    cJSON *b = put_obj(e, arr, NULL);
    if (b == NULL)
        return NULL;
    put_str(e, b, "type", "text");
    put_str(e, b, "text", text);
    /* cache_control on a text part is an Anthropic extension: keep it. */
    const cJSON *cc = part != NULL ? cJSON_GetObjectItemCaseSensitive(part, "cache_control") : NULL;
    if (cJSON_IsObject(cc))
        put_dup(e, b, "cache_control", cc);
    return b;
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
image_block(struct enc *e, cJSON *arr, const cJSON *part, const char *where)
{
    const cJSON *iu = cJSON_GetObjectItemCaseSensitive(part, "image_url");
    const char *url = NULL;
    if (cJSON_IsString(iu))
        url = iu->valuestring;
    else if (cJSON_IsObject(iu))
        url = json_str(iu, "url");
    if (url == NULL)
        return bad_request(e->f, 0, "%s.image_url.url: expected a string", where);

    cJSON *b = put_obj(e, arr, NULL);
    if (b == NULL)
        return AIR_E_NOMEM;
    put_str(e, b, "type", "image");
    cJSON *src = put_obj(e, b, "source");
    if (src == NULL)
        return AIR_E_NOMEM;
    if (ieq_n(url, "https://", 8) || ieq_n(url, "http://", 7)) {
        put_str(e, src, "type", "url");
        put_str(e, src, "url", url);
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
        put_str(e, src, "type", "base64");
        put_str(e, src, "media_type", media);
        put_str(e, src, "data", data);
    } else {
        return bad_request(e->f, 0, "%s.image_url.url: expected an http(s) or data URL", where);
    }
    const cJSON *cc = cJSON_GetObjectItemCaseSensitive(part, "cache_control");
    if (cJSON_IsObject(cc))
        put_dup(e, b, "cache_control", cc);
    return e->oom ? AIR_E_NOMEM : AIR_OK;
}

/* Which part types a content array may hold in a given place. */
#define PART_TEXT  1u
#define PART_IMAGE 2u

/* Convert message content (string, array of parts or null) into blocks
 * appended to arr. Empty and whitespace-only texts are skipped (the API
 * rejects them). `refusal` parts are always dropped. */
static air_status_t
content_blocks(struct enc *e, cJSON *arr, const cJSON *content, unsigned allowed, const char *where)
{
    if (content == NULL || cJSON_IsNull(content))
        return AIR_OK;
    if (cJSON_IsString(content)) {
        if (!is_blank(content->valuestring))
            text_block(e, arr, content->valuestring, NULL);
        return e->oom ? AIR_E_NOMEM : AIR_OK;
    }
    if (!cJSON_IsArray(content))
        return bad_request(e->f, 0, "%s.content: expected a string, an array or null", where);
    int i = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, content)
    {
        char pw[96];
        snprintf(pw, sizeof pw, "%s.content[%d]", where, i++);
        const char *type = cJSON_IsObject(part) ? json_str(part, "type") : NULL;
        if (type == NULL)
            return bad_request(e->f, 0, "%s: expected an object with a string \"type\"", pw);
        if (strcmp(type, "text") == 0) {
            const char *text = json_str(part, "text");
            if (text == NULL)
                return bad_request(e->f, 0, "%s.text: expected a string", pw);
            if (!is_blank(text))
                text_block(e, arr, text, part);
        } else if (strcmp(type, "refusal") == 0) {
            continue;
        } else if (strcmp(type, "image_url") == 0 && (allowed & PART_IMAGE)) {
            air_status_t st = image_block(e, arr, part, pw);
            if (st != AIR_OK)
                return st;
        } else {
            return bad_request(e->f, 1, "%s: part type \"%.32s\" is not supported here", pw, type);
        }
        if (e->oom)
            return AIR_E_NOMEM;
    }
    return AIR_OK;
}

/* Tool ids must match ^[a-zA-Z0-9_-]+$ (spec 2.2, marked [?]): other bytes
 * become '_'. Applied to tool_use.id and tool_result.tool_use_id alike, so
 * pairs still match. */
static char *
tool_id(const char *id)
{
    char *s = air__strdup(id);
    if (s == NULL)
        return NULL;
    for (char *p = s; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            *p = '_';
    }
    return s;
}

static cJSON *
put_tool_id(struct enc *e, cJSON *obj, const char *key, const char *id)
{
    char *s = tool_id(id);
    if (s == NULL) {
        e->oom = 1;
        return NULL;
    }
    cJSON *r = put_str(e, obj, key, s);
    air__free(s);
    return r;
}

/* tool message -> one tool_result block. */
static air_status_t
tool_result_block(struct enc *e, cJSON *lead, const cJSON *m, const char *where)
{
    const char *id = json_str(m, "tool_call_id");
    if (id == NULL || id[0] == '\0')
        return bad_request(e->f, 0, "%s.tool_call_id: expected a non-empty string", where);
    cJSON *b = put_obj(e, lead, NULL);
    if (b == NULL)
        return AIR_E_NOMEM;
    put_str(e, b, "type", "tool_result");
    put_tool_id(e, b, "tool_use_id", id);
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
    if (cJSON_IsString(content)) {
        if (content->valuestring[0] != '\0')
            put_str(e, b, "content", content->valuestring);
    } else if (content != NULL && !cJSON_IsNull(content)) {
        cJSON *arr = cJSON_CreateArray();
        if (arr == NULL)
            return AIR_E_NOMEM;
        air_status_t st = content_blocks(e, arr, content, PART_TEXT | PART_IMAGE, where);
        if (st != AIR_OK) {
            cJSON_Delete(arr);
            return st;
        }
        if (cJSON_GetArraySize(arr) > 0)
            put(e, b, "content", arr);
        else
            cJSON_Delete(arr);
    }
    return e->oom ? AIR_E_NOMEM : AIR_OK;
}

/* assistant tool_calls -> tool_use blocks. */
static air_status_t
tool_use_blocks(struct enc *e, cJSON *rest, const cJSON *calls, const char *where)
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
        snprintf(cw, sizeof cw, "%s.tool_calls[%d]", where, i++);
        const cJSON *fn =
            cJSON_IsObject(c) ? cJSON_GetObjectItemCaseSensitive(c, "function") : NULL;
        const char *id = cJSON_IsObject(c) ? json_str(c, "id") : NULL;
        const char *type = cJSON_IsObject(c) ? json_str(c, "type") : NULL;
        if (type != NULL && strcmp(type, "function") != 0)
            return bad_request(e->f, 1, "%s.type: only \"function\" tool calls are supported", cw);
        if (id == NULL || id[0] == '\0')
            return bad_request(e->f, 0, "%s.id: expected a non-empty string", cw);
        const char *name = cJSON_IsObject(fn) ? json_str(fn, "name") : NULL;
        if (name == NULL || name[0] == '\0')
            return bad_request(e->f, 0, "%s.function.name: expected a non-empty string", cw);
        const cJSON *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
        cJSON *input = NULL;
        if (args == NULL || cJSON_IsNull(args) ||
            (cJSON_IsString(args) && is_blank(args->valuestring))) {
            input = cJSON_CreateObject();
        } else if (cJSON_IsObject(args)) {
            input = cJSON_Duplicate(args, 1);
        } else if (cJSON_IsString(args)) {
            const char *end = NULL;
            input = cJSON_ParseWithOpts(args->valuestring, &end, 1);
            if (input == NULL || !cJSON_IsObject(input)) {
                cJSON_Delete(input);
                return bad_request(e->f, 0,
                                   "%s.function.arguments: not a JSON object (Anthropic needs "
                                   "tool input as an object)",
                                   cw);
            }
        } else {
            return bad_request(e->f, 0, "%s.function.arguments: expected a JSON string", cw);
        }
        if (input == NULL)
            return AIR_E_NOMEM;
        cJSON *b = put_obj(e, rest, NULL);
        if (b == NULL) {
            cJSON_Delete(input);
            return AIR_E_NOMEM;
        }
        put_str(e, b, "type", "tool_use");
        put_tool_id(e, b, "id", id);
        put_str(e, b, "name", name);
        put(e, b, "input", input);
        if (e->oom)
            return AIR_E_NOMEM;
    }
    return AIR_OK;
}

/* message.thinking_blocks (spec 6.9) -> thinking / redacted_thinking blocks. */
static air_status_t
thinking_blocks(struct enc *e, cJSON *lead, const cJSON *tb, const char *where)
{
    if (tb == NULL || cJSON_IsNull(tb))
        return AIR_OK;
    if (!cJSON_IsArray(tb))
        return bad_request(e->f, 0, "%s.thinking_blocks: expected an array", where);
    const cJSON *t;
    cJSON_ArrayForEach(t, tb)
    {
        const char *type = cJSON_IsObject(t) ? json_str(t, "type") : NULL;
        cJSON *b;
        if (type != NULL && strcmp(type, "thinking") == 0 && json_str(t, "thinking") != NULL) {
            b = put_obj(e, lead, NULL);
            if (b == NULL)
                return AIR_E_NOMEM;
            put_str(e, b, "type", "thinking");
            put_str(e, b, "thinking", json_str(t, "thinking"));
            if (json_str(t, "signature") != NULL)
                put_str(e, b, "signature", json_str(t, "signature"));
        } else if (type != NULL && strcmp(type, "redacted_thinking") == 0 &&
                   json_str(t, "data") != NULL) {
            b = put_obj(e, lead, NULL);
            if (b == NULL)
                return AIR_E_NOMEM;
            put_str(e, b, "type", "redacted_thinking");
            put_str(e, b, "data", json_str(t, "data"));
        } else {
            return bad_request(e->f, 0,
                               "%s.thinking_blocks: expected thinking or redacted_thinking "
                               "blocks",
                               where);
        }
        if (e->oom)
            return AIR_E_NOMEM;
    }
    return AIR_OK;
}

/* The turn being assembled: `lead` blocks (tool_result in a user turn,
 * thinking in an assistant turn) go before `rest`. */
struct turn {
    const char *role; /* NULL: none open */
    cJSON *lead;
    cJSON *rest;
};

static void
move_all(cJSON *dst, cJSON *src)
{
    while (src->child != NULL) {
        cJSON *it = cJSON_DetachItemFromArray(src, 0);
        cJSON_AddItemToArray(dst, it); /* cannot fail for a detached item */
    }
}

static void
turn_flush(struct enc *e, cJSON *messages, struct turn *t)
{
    if (t->role == NULL)
        return;
    cJSON *m = put_obj(e, messages, NULL);
    if (m != NULL) {
        put_str(e, m, "role", t->role);
        cJSON *content = put(e, m, "content", cJSON_CreateArray());
        if (content != NULL) {
            move_all(content, t->lead);
            move_all(content, t->rest);
        }
    }
    t->role = NULL;
}

/* Strip trailing whitespace from the final assistant turn (a prefill); drop
 * the block, then the turn, when nothing is left (spec 6.1 step 3). */
static void
strip_prefill(cJSON *messages)
{
    int n = cJSON_GetArraySize(messages);
    if (n == 0)
        return;
    cJSON *last = cJSON_GetArrayItem(messages, n - 1);
    const char *role = json_str(last, "role");
    if (role == NULL || strcmp(role, "assistant") != 0)
        return;
    cJSON *content = cJSON_GetObjectItemCaseSensitive(last, "content");
    int nb = cJSON_GetArraySize(content);
    cJSON *b = cJSON_GetArrayItem(content, nb - 1);
    const char *type = json_str(b, "type");
    if (type == NULL || strcmp(type, "text") != 0)
        return;
    cJSON *text = cJSON_GetObjectItemCaseSensitive(b, "text");
    char *s = text->valuestring;
    size_t len = strlen(s);
    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t' || s[len - 1] == '\n' ||
                       s[len - 1] == '\r' || s[len - 1] == '\f' || s[len - 1] == '\v'))
        len--;
    s[len] = '\0'; /* shortening in place is safe: cJSON frees it by pointer */
    if (len > 0)
        return;
    cJSON_DeleteItemFromArray(content, nb - 1);
    if (cJSON_GetArraySize(content) == 0)
        cJSON_DeleteItemFromArray(messages, n - 1);
}

static air_status_t
encode_messages(struct enc *e, const cJSON *msgs, cJSON *body)
{
    if (!cJSON_IsArray(msgs))
        return bad_request(e->f, 0, "messages: expected an array");
    cJSON *system = cJSON_CreateArray();
    cJSON *messages = cJSON_CreateArray();
    cJSON *lead = cJSON_CreateArray(), *rest = cJSON_CreateArray();
    cJSON *mlead = cJSON_CreateArray(), *mrest = cJSON_CreateArray();
    struct turn t = {NULL, lead, rest};
    air_status_t st = AIR_OK;
    if (system == NULL || messages == NULL || lead == NULL || rest == NULL || mlead == NULL ||
        mrest == NULL) {
        st = AIR_E_NOMEM;
        goto out;
    }

    int i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs)
    {
        char where[48];
        snprintf(where, sizeof where, "messages[%d]", i++);
        const char *role = cJSON_IsObject(m) ? json_str(m, "role") : NULL;
        if (role == NULL) {
            st = bad_request(e->f, 0, "%s.role: expected a string", where);
            goto out;
        }
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        const char *side = NULL;
        if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0) {
            st = content_blocks(e, system, content, PART_TEXT, where);
            if (st != AIR_OK)
                goto out;
            continue;
        } else if (strcmp(role, "user") == 0) {
            side = "user";
            st = content_blocks(e, mrest, content, PART_TEXT | PART_IMAGE, where);
        } else if (strcmp(role, "tool") == 0) {
            side = "user";
            st = tool_result_block(e, mlead, m, where);
        } else if (strcmp(role, "assistant") == 0) {
            side = "assistant";
            st = thinking_blocks(e, mlead, cJSON_GetObjectItemCaseSensitive(m, "thinking_blocks"),
                                 where);
            if (st == AIR_OK)
                st = content_blocks(e, mrest, content, PART_TEXT, where);
            if (st == AIR_OK)
                st = tool_use_blocks(e, mrest, cJSON_GetObjectItemCaseSensitive(m, "tool_calls"),
                                     where);
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
        if (mlead->child == NULL && mrest->child == NULL)
            continue; /* yields nothing: dropped, and does not split turns */
        if (t.role != NULL && strcmp(t.role, side) != 0)
            turn_flush(e, messages, &t);
        t.role = side;
        move_all(lead, mlead);
        move_all(rest, mrest);
        if (e->oom) {
            st = AIR_E_NOMEM;
            goto out;
        }
    }
    turn_flush(e, messages, &t);
    if (e->oom) {
        st = AIR_E_NOMEM;
        goto out;
    }
    strip_prefill(messages);
    if (cJSON_GetArraySize(messages) == 0) {
        st = bad_request(e->f, 0, "messages: no user or assistant content to send");
        goto out;
    }
    if (cJSON_GetArraySize(system) > 0) {
        cJSON_AddItemToObject(body, "system", system);
        system = NULL;
    }
    cJSON_AddItemToObject(body, "messages", messages);
    messages = NULL;
out:
    cJSON_Delete(system);
    cJSON_Delete(messages);
    cJSON_Delete(lead);
    cJSON_Delete(rest);
    cJSON_Delete(mlead);
    cJSON_Delete(mrest);
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
        const cJSON *js = cJSON_GetObjectItemCaseSensitive(rf, "json_schema");
        const cJSON *s = cJSON_IsObject(js) ? cJSON_GetObjectItemCaseSensitive(js, "schema") : NULL;
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
encode_tools(struct enc *e, const cJSON *req, cJSON *body, enum json_mode mode, const cJSON *schema)
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

    cJSON *out = NULL;
    if (ntools > 0) {
        out = put(e, body, "tools", cJSON_CreateArray());
        if (out == NULL)
            return AIR_E_NOMEM;
        int i = 0;
        const cJSON *t;
        cJSON_ArrayForEach(t, tools)
        {
            const char *type = cJSON_IsObject(t) ? json_str(t, "type") : NULL;
            const cJSON *fn =
                cJSON_IsObject(t) ? cJSON_GetObjectItemCaseSensitive(t, "function") : NULL;
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
            cJSON *o = put_obj(e, out, NULL);
            if (o == NULL)
                return AIR_E_NOMEM;
            put_str(e, o, "name", name);
            if (desc != NULL)
                put_str(e, o, "description", desc->valuestring);
            if (params != NULL) {
                put_dup(e, o, "input_schema", params);
            } else {
                cJSON *s = put_obj(e, o, "input_schema");
                if (s != NULL) {
                    put_str(e, s, "type", "object");
                    put_obj(e, s, "properties");
                }
            }
            const cJSON *cc = cJSON_GetObjectItemCaseSensitive(t, "cache_control");
            if (cJSON_IsObject(cc))
                put_dup(e, o, "cache_control", cc);
            if (e->oom)
                return AIR_E_NOMEM;
            i++;
        }
    }

    if (mode == JSON_TOOL) {
        /* LiteLLM's fallback (spec 6.1): one forced tool whose input is the
         * answer. */
        out = put(e, body, "tools", cJSON_CreateArray());
        cJSON *o = out ? put_obj(e, out, NULL) : NULL;
        if (o == NULL)
            return AIR_E_NOMEM;
        put_str(e, o, "name", ANT_JSON_TOOL);
        put_str(e, o, "description", "Respond with a JSON object.");
        if (schema != NULL) {
            put_dup(e, o, "input_schema", schema);
        } else {
            cJSON *s = put_obj(e, o, "input_schema");
            if (s != NULL) {
                put_str(e, s, "type", "object");
                put(e, s, "additionalProperties", cJSON_CreateTrue());
                put_obj(e, s, "properties");
            }
        }
        cJSON *tc = put_obj(e, body, "tool_choice");
        if (tc != NULL) {
            put_str(e, tc, "type", "tool");
            put_str(e, tc, "name", ANT_JSON_TOOL);
        }
        return e->oom ? AIR_E_NOMEM : AIR_OK;
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
            const cJSON *fn = cJSON_GetObjectItemCaseSensitive(choice, "function");
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
    cJSON *tc = put_obj(e, body, "tool_choice");
    if (tc == NULL)
        return AIR_E_NOMEM;
    put_str(e, tc, "type", kind);
    if (name != NULL)
        put_str(e, tc, "name", name);
    if (disable_parallel && strcmp(kind, "none") != 0)
        put(e, tc, "disable_parallel_tool_use", cJSON_CreateTrue());
    return e->oom ? AIR_E_NOMEM : AIR_OK;
}

static air_status_t
encode_params(struct enc *e, const air_req_view_t *req, cJSON *body)
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
    put_num(e, body, "max_tokens", (double)max_tokens);

    /* stop -> stop_sequences, whitespace-only entries dropped. */
    it = json_get(b, "stop");
    if (it != NULL) {
        cJSON *seq = cJSON_CreateArray();
        if (seq == NULL)
            return AIR_E_NOMEM;
        if (cJSON_IsString(it)) {
            if (!is_blank(it->valuestring))
                put_str(e, seq, NULL, it->valuestring);
        } else if (cJSON_IsArray(it)) {
            const cJSON *s;
            cJSON_ArrayForEach(s, it)
            {
                if (!cJSON_IsString(s)) {
                    cJSON_Delete(seq);
                    return bad_request(e->f, 0,
                                       "stop: expected a string or an array of "
                                       "strings");
                }
                if (!is_blank(s->valuestring))
                    put_str(e, seq, NULL, s->valuestring);
            }
        } else {
            cJSON_Delete(seq);
            return bad_request(e->f, 0, "stop: expected a string or an array of strings");
        }
        if (cJSON_GetArraySize(seq) > 0)
            put(e, body, "stop_sequences", seq);
        else
            cJSON_Delete(seq);
    }

    /* temperature, clamped to Anthropic's [0, 1]; top_p; top_k extension. */
    it = json_get(b, "temperature");
    if (it != NULL) {
        if (!cJSON_IsNumber(it))
            return bad_request(e->f, 0, "temperature: expected a number");
        double t = it->valuedouble;
        if (!(t >= 0))
            return bad_request(e->f, 0, "temperature: must be >= 0");
        put_num(e, body, "temperature", t > 1 ? 1 : t);
    }
    it = json_get(b, "top_p");
    if (it != NULL) {
        if (!cJSON_IsNumber(it) || !(it->valuedouble >= 0 && it->valuedouble <= 1))
            return bad_request(e->f, 0, "top_p: expected a number in [0, 1]");
        put_num(e, body, "top_p", it->valuedouble);
    }
    it = json_get(b, "top_k");
    if (it != NULL) {
        if (!json_int(it, 1, 1000000, &v))
            return bad_request(e->f, 0, "top_k: expected a positive integer");
        put_num(e, body, "top_k", (double)v);
    }

    /* user -> metadata.user_id */
    it = json_get(b, "user");
    if (it != NULL) {
        if (!cJSON_IsString(it))
            return bad_request(e->f, 0, "user: expected a string");
        if (it->valuestring[0] != '\0') {
            cJSON *md = put_obj(e, body, "metadata");
            if (md != NULL)
                put_str(e, md, "user_id", it->valuestring);
        }
    }

    /* thinking: Anthropic's own object, passed through. */
    it = json_get(b, "thinking");
    if (it != NULL) {
        if (!cJSON_IsObject(it))
            return bad_request(e->f, 0, "thinking: expected an object");
        put_dup(e, body, "thinking", it);
    }
    return e->oom ? AIR_E_NOMEM : AIR_OK;
}

static air_status_t
ant_encode(const void *state, const air_req_view_t *req, air_http_out_t *out, air_fault_t *f)
{
    const struct ant *a = state;
    struct enc e = {a, f, 0};
    air_status_t st;
    memset(out, 0, sizeof *out);
    if (a == NULL || req == NULL || !cJSON_IsObject(req->body) || req->model == NULL)
        return bad_request(f, 0, "request body must be a JSON object with a model");

    cJSON *body = cJSON_CreateObject();
    if (body == NULL)
        return AIR_E_NOMEM;
    enum json_mode mode = JSON_NONE;
    const cJSON *schema = NULL;
    put_str(&e, body, "model", req->model);
    st = encode_params(&e, req, body);
    if (st == AIR_OK)
        st = encode_messages(&e, cJSON_GetObjectItemCaseSensitive(req->body, "messages"), body);
    if (st == AIR_OK)
        st = json_mode_of(a, req->body, &mode, &schema, f);
    if (st == AIR_OK)
        st = encode_tools(&e, req->body, body, mode, schema);
    if (st == AIR_OK && mode == JSON_NATIVE) {
        cJSON *oc = put_obj(&e, body, "output_config");
        cJSON *fmt = oc ? put_obj(&e, oc, "format") : NULL;
        if (fmt != NULL) {
            put_str(&e, fmt, "type", "json_schema");
            put_dup(&e, fmt, "schema", schema);
        }
    }
    if (st == AIR_OK && req->stream)
        put(&e, body, "stream", cJSON_CreateTrue());
    if (st == AIR_OK && e.oom)
        st = AIR_E_NOMEM;
    if (st != AIR_OK) {
        cJSON_Delete(body);
        return st;
    }

    out->body = take_printed(cJSON_PrintUnformatted(body), &out->body_len);
    cJSON_Delete(body);
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
    air__buf_puts(b, "}}");
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
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(root, "content");
    if (!cJSON_IsArray(content)) {
        cJSON_Delete(root);
        protocol_fault(f, in->status, "anthropic: response has no content array");
        return AIR_E_PROTOCOL;
    }

    int json_tool = uses_json_tool(a, req);
    struct enc e = {a, f, 0};
    air_buf_t text = AIR_BUF_INIT, reasoning = AIR_BUF_INIT;
    int has_text = 0, has_reasoning = 0, json_answered = 0;
    char *json_answer = NULL;
    cJSON *calls = cJSON_CreateArray();
    cJSON *thinking = cJSON_CreateArray();
    cJSON *out_root = cJSON_CreateObject();
    if (calls == NULL || thinking == NULL || out_root == NULL)
        e.oom = 1;

    const cJSON *blk;
    cJSON_ArrayForEach(blk, content)
    {
        if (e.oom)
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
            const cJSON *input = cJSON_GetObjectItemCaseSensitive(blk, "input");
            char *args = input != NULL ? cJSON_PrintUnformatted(input) : NULL;
            if (input != NULL && args == NULL) {
                e.oom = 1;
                break;
            }
            if (json_tool && !json_answered && name != NULL && strcmp(name, ANT_JSON_TOOL) == 0) {
                /* The fallback's answer: its input is the message content. */
                json_answer = args != NULL ? take_printed(args, NULL) : air__strdup("{}");
                if (json_answer == NULL)
                    e.oom = 1;
                json_answered = 1;
                continue;
            }
            cJSON *c = put_obj(&e, calls, NULL);
            if (c != NULL) {
                put_str(&e, c, "id", id != NULL ? id : "");
                put_str(&e, c, "type", "function");
                cJSON *fn = put_obj(&e, c, "function");
                if (fn != NULL) {
                    put_str(&e, fn, "name", name != NULL ? name : "");
                    put_str(&e, fn, "arguments", args != NULL ? args : "{}");
                }
            }
            if (args != NULL)
                cJSON_free(args);
        } else if (strcmp(type, "thinking") == 0) {
            const char *t = json_str(blk, "thinking");
            if (t != NULL) {
                air__buf_puts(&reasoning, t);
                has_reasoning = 1;
            }
            cJSON *tb = put_obj(&e, thinking, NULL);
            if (tb != NULL) {
                put_str(&e, tb, "type", "thinking");
                put_str(&e, tb, "thinking", t != NULL ? t : "");
                if (json_str(blk, "signature") != NULL)
                    put_str(&e, tb, "signature", json_str(blk, "signature"));
            }
        } else if (strcmp(type, "redacted_thinking") == 0) {
            cJSON *tb = put_obj(&e, thinking, NULL);
            if (tb != NULL) {
                put_str(&e, tb, "type", "redacted_thinking");
                put_str(&e, tb, "data", json_str(blk, "data") ? json_str(blk, "data") : "");
            }
        }
        /* server_tool_use, web_search_tool_result, ...: not representable;
         * ignored. */
    }
    if (text.oom || reasoning.oom)
        e.oom = 1;

    const char *finish = map_stop_reason(json_str(root, "stop_reason"));
    if (json_answered)
        finish = "stop";
    struct counts cnt = {0, 0, 0, 0};
    const cJSON *usage = cJSON_GetObjectItemCaseSensitive(root, "usage");
    counts_update(&cnt, usage);
    if (cJSON_IsObject(usage))
        counts_to_usage(&cnt, &out->usage);

    const char *id = json_str(root, "id");
    const char *model = json_str(root, "model");
    if (!e.oom) {
        put_str(&e, out_root, "id",
                id != NULL ? id : (req && req->request_id ? req->request_id : ""));
        put_str(&e, out_root, "object", "chat.completion");
        put_num(&e, out_root, "created", req != NULL ? (double)req->now_unix : 0);
        put_str(&e, out_root, "model",
                model != NULL ? model : (req && req->model ? req->model : ""));
        cJSON *choices = put(&e, out_root, "choices", cJSON_CreateArray());
        cJSON *ch = choices ? put_obj(&e, choices, NULL) : NULL;
        if (ch != NULL) {
            put_num(&e, ch, "index", 0);
            cJSON *msg = put_obj(&e, ch, "message");
            if (msg != NULL) {
                put_str(&e, msg, "role", "assistant");
                if (json_answer != NULL)
                    put_str(&e, msg, "content", json_answer);
                else if (has_text)
                    put_str(&e, msg, "content", text.data != NULL ? text.data : "");
                else
                    put(&e, msg, "content", cJSON_CreateNull());
                if (has_reasoning)
                    put_str(&e, msg, "reasoning_content",
                            reasoning.data != NULL ? reasoning.data : "");
                if (cJSON_GetArraySize(thinking) > 0) {
                    put(&e, msg, "thinking_blocks", thinking);
                    thinking = NULL;
                }
                if (cJSON_GetArraySize(calls) > 0) {
                    put(&e, msg, "tool_calls", calls);
                    calls = NULL;
                }
            }
            put(&e, ch, "logprobs", cJSON_CreateNull());
            put_str(&e, ch, "finish_reason", finish);
        }
    }
    cJSON_Delete(calls);
    cJSON_Delete(thinking);
    air__buf_free(&text);
    air__buf_free(&reasoning);
    air__free(json_answer);

    char *printed = NULL;
    if (!e.oom && cJSON_IsObject(usage)) {
        const air_usage_t *u = &out->usage;
        cJSON *uo = put_obj(&e, out_root, "usage");
        if (uo != NULL) {
            put_num(&e, uo, "prompt_tokens", (double)u->prompt);
            put_num(&e, uo, "completion_tokens", (double)u->completion);
            put_num(&e, uo, "total_tokens", (double)(u->prompt + u->completion));
            cJSON *d = put_obj(&e, uo, "prompt_tokens_details");
            if (d != NULL) {
                put_num(&e, d, "cached_tokens", (double)u->cached);
                if (u->cache_write > 0)
                    put_num(&e, d, "cache_write_tokens", (double)u->cache_write);
            }
        }
    }
    if (!e.oom)
        printed = cJSON_PrintUnformatted(out_root);
    /* model points into root: copy it before root goes. */
    air__strlcpy(out->model, model != NULL ? model : "", sizeof out->model);
    air__strlcpy(out->finish_reason, finish, sizeof out->finish_reason);
    cJSON_Delete(out_root);
    cJSON_Delete(root);
    out->body = take_printed(printed, &out->body_len);
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
};

/* Results of emitting. */
#define EMIT_OK   0
#define EMIT_STOP 1 /* core asked to stop */
#define EMIT_OOM  2

static void
chunk_open(air_buf_t *b, const struct sstate *s, const air_stream_ctx_t *sc)
{
    const char *id = s->id[0] ? s->id : (sc->req->request_id ? sc->req->request_id : "");
    const char *model = s->model[0] ? s->model : (sc->req->model ? sc->req->model : "");
    air__buf_puts(b, "{\"id\":");
    air__buf_json_str(b, id, strlen(id));
    air__buf_printf(b, ",\"object\":\"chat.completion.chunk\",\"created\":%lld,\"model\":",
                    (long long)sc->req->now_unix);
    air__buf_json_str(b, model, strlen(model));
}

/* Start a choices[0] chunk up to the inside of "delta":{ */
static void
delta_open(air_buf_t *b, const struct sstate *s, const air_stream_ctx_t *sc)
{
    chunk_open(b, s, sc);
    air__buf_puts(b, ",\"choices\":[{\"index\":0,\"delta\":{");
}

static void
delta_close(air_buf_t *b, const char *finish)
{
    air__buf_puts(b, "},\"finish_reason\":");
    if (finish != NULL) {
        air__buf_putc(b, '"');
        air__buf_puts(b, finish);
        air__buf_putc(b, '"');
    } else {
        air__buf_puts(b, "null");
    }
    air__buf_puts(b, "}]}");
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
        delta_open(&r, s, sc);
        air__buf_puts(&r, "\"role\":\"assistant\",\"content\":\"\"");
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
emit_text(air_stream_ctx_t *sc, struct sstate *s, air_buf_t *b, const char *field, const char *text)
{
    delta_open(b, s, sc);
    air__buf_putc(b, '"');
    air__buf_puts(b, field);
    air__buf_puts(b, "\":");
    air__buf_json_str(b, text, strlen(text));
    delta_close(b, NULL);
    return emit(sc, s, b, AIR_CHUNK_CONTENT);
}

static int
emit_args(air_stream_ctx_t *sc, struct sstate *s, air_buf_t *b, int32_t pos, const char *args)
{
    delta_open(b, s, sc);
    air__buf_printf(b, "\"tool_calls\":[{\"index\":%d,\"function\":{\"arguments\":", (int)pos);
    air__buf_json_str(b, args, strlen(args));
    air__buf_puts(b, "}}]");
    delta_close(b, NULL);
    return emit(sc, s, b, AIR_CHUNK_CONTENT);
}

static int
emit_finish(air_stream_ctx_t *sc, struct sstate *s, air_buf_t *b, const char *finish)
{
    s->finished = 1;
    air__strlcpy(sc->finish_reason, finish, sizeof sc->finish_reason);
    delta_open(b, s, sc);
    delta_close(b, finish);
    return emit(sc, s, b, AIR_CHUNK_CONTENT);
}

static int
on_block_start(air_stream_ctx_t *sc, struct sstate *s, air_buf_t *b, const cJSON *ev, int *bad)
{
    long long index;
    const cJSON *cb = cJSON_GetObjectItemCaseSensitive(ev, "content_block");
    const char *type = cJSON_IsObject(cb) ? json_str(cb, "type") : NULL;
    if (!json_int(cJSON_GetObjectItemCaseSensitive(ev, "index"), 0, INT32_MAX, &index) ||
        type == NULL) {
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
        const char *t = json_str(cb, "text");
        if (t != NULL && t[0] != '\0')
            return emit_text(sc, s, b, "content", t);
    } else if (strcmp(type, "thinking") == 0) {
        k->kind = BLK_THINKING;
        const char *t = json_str(cb, "thinking");
        if (t != NULL && t[0] != '\0')
            return emit_text(sc, s, b, "reasoning_content", t);
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
        delta_open(b, s, sc);
        air__buf_printf(b, "\"tool_calls\":[{\"index\":%d,\"id\":", (int)k->tool_pos);
        air__buf_json_str(b, id, strlen(id));
        air__buf_puts(b, ",\"type\":\"function\",\"function\":{\"name\":");
        air__buf_json_str(b, name, strlen(name));
        air__buf_puts(b, ",\"arguments\":\"\"}}]");
        delta_close(b, NULL);
        return emit(sc, s, b, AIR_CHUNK_CONTENT);
    } else {
        k->kind = BLK_OTHER; /* redacted_thinking, server tools, ... */
    }
    return EMIT_OK;
}

static int
on_block_delta(air_stream_ctx_t *sc, struct sstate *s, air_buf_t *b, const cJSON *ev, int *bad)
{
    long long index;
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(ev, "delta");
    const char *type = cJSON_IsObject(d) ? json_str(d, "type") : NULL;
    if (type == NULL ||
        !json_int(cJSON_GetObjectItemCaseSensitive(ev, "index"), 0, INT32_MAX, &index)) {
        *bad = 1;
        return EMIT_OK;
    }
    if (strcmp(type, "text_delta") == 0) {
        const char *t = json_str(d, "text");
        if (t != NULL && t[0] != '\0')
            return emit_text(sc, s, b, "content", t);
    } else if (strcmp(type, "thinking_delta") == 0) {
        const char *t = json_str(d, "thinking");
        if (t != NULL && t[0] != '\0')
            return emit_text(sc, s, b, "reasoning_content", t);
    } else if (strcmp(type, "input_json_delta") == 0) {
        struct blk *k = blk_find(s, index);
        if (k == NULL || (k->kind != BLK_TOOL && k->kind != BLK_JSON)) {
            *bad = 3;
            return EMIT_OK;
        }
        const char *pj = json_str(d, "partial_json");
        if (pj == NULL || pj[0] == '\0')
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
on_block_stop(air_stream_ctx_t *sc, struct sstate *s, air_buf_t *b, const cJSON *ev)
{
    long long index;
    if (!json_int(cJSON_GetObjectItemCaseSensitive(ev, "index"), 0, INT32_MAX, &index))
        return EMIT_OK;
    struct blk *k = blk_find(s, index);
    if (k == NULL)
        return EMIT_OK;
    int rc = EMIT_OK;
    if (!k->saw_args && k->kind == BLK_TOOL)
        rc = emit_args(sc, s, b, k->tool_pos, "{}");
    else if (!k->saw_args && k->kind == BLK_JSON)
        rc = emit_text(sc, s, b, "content", "{}");
    memset(k, 0, sizeof *k);
    return rc;
}

static air_stream_rc_t
stream_error_event(air_stream_ctx_t *sc, const cJSON *ev)
{
    air_fault_t *f = &sc->fault;
    fault_reset(f, AIR_ERR_UPSTREAM);
    f->retry = 1;
    f->failover = 1;
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(ev, "error");
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

    air_buf_t b = AIR_BUF_INIT;
    int rc = EMIT_OK, bad = 0;
    air_stream_rc_t ret = AIR_STREAM_MORE;
    if (strcmp(type, "message_start") == 0) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(ev, "message");
        if (cJSON_IsObject(m)) {
            if (!s->started) {
                air__strlcpy(s->id, json_str(m, "id"), sizeof s->id);
                air__strlcpy(s->model, json_str(m, "model"), sizeof s->model);
                air__strlcpy(sc->model, s->model, sizeof sc->model);
                s->role_pending = 1;
            }
            counts_update(&s->cnt, cJSON_GetObjectItemCaseSensitive(m, "usage"));
            sync_usage(sc, s);
        }
        s->started = 1;
    } else if (strcmp(type, "content_block_start") == 0) {
        rc = on_block_start(sc, s, &b, ev, &bad);
    } else if (strcmp(type, "content_block_delta") == 0) {
        rc = on_block_delta(sc, s, &b, ev, &bad);
    } else if (strcmp(type, "content_block_stop") == 0) {
        rc = on_block_stop(sc, s, &b, ev);
    } else if (strcmp(type, "message_delta") == 0) {
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(ev, "delta");
        const cJSON *u = cJSON_GetObjectItemCaseSensitive(ev, "usage");
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
            air__buf_puts(&b, ",\"choices\":[],\"usage\":");
            air_usage_t u;
            counts_to_usage(&s->cnt, &u);
            usage_json(&b, &u);
            air__buf_putc(&b, '}');
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
