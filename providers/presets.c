/*
 * presets.c - the OpenAI-compatible vendors as presets of the openai adapter
 * (spec section 4): deepseek, mistral, groq, together, openrouter, xai,
 * ollama, vllm.
 *
 * DESIGN: a preset is data, not code. Each one is a `struct preset`: the
 * openai quirks (base URL, auth header, stream_usage, header keys) plus two
 * sets of rule flags, one for requests and one for responses. All presets
 * share one request rewriter and one response fixer, which read those flags
 * (the quirks struct is the preset's first member, so s->q leads back to
 * it). That keeps each vendor's rules in one table row, readable side by
 * side, and lets one golden-tested code path serve eight vendors.
 *
 * The request rewriter walks the caller's parsed body once and records
 * what must change as a patch (jpatch.h); the body is never written, and
 * each lookup goes through the patch so later rules see earlier edits (a
 * renamed key passes the allow-list under its new name). A request that
 * needs no edit keeps openai.c's zero-copy passthrough; otherwise the
 * patched text is printed in one pass, with no copy of the tree.
 *
 * Responses: presets whose vendor sends non-standard finish reasons or
 * extra fields get fix_response / fix_chunk, which cost one cJSON parse per
 * body or chunk. In a stream that cost is paid only for chunks that could
 * need a fix (until content has been seen, and chunks whose bytes mention
 * what the fixes act on, see chunk_may_need_fix); the other chunks, and
 * every chunk of the presets without fixes (xai), take openai.c's
 * allocation-free chunk scanner. A finish reason that means "failed before producing anything"
 * (DeepSeek insufficient_system_resource, Mistral/OpenRouter "error") makes
 * the request fail, so that core may retry or fail over; after content it
 * is reported as the closest unified reason. In a stream the failing chunk
 * is dropped by fix_chunk, which leaves the fault in sc->fault and a flag in
 * the preset's stream state; the stream_event wrapper turns that into
 * AIR_STREAM_ERROR.
 *
 * Every choice made where the spec says [?] is listed in docs/PROVIDERS.md
 * ("## OpenAI-compatible presets").
 */
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "common.h"
#include "jpatch.h"
#include "openai.h"
#include "ratelimit.h"

/* Request rules. */
#define R_DEVELOPER (1u << 0) /* role developer -> system */
#define R_FOREIGN   (1u << 1) /* drop metadata, thinking_blocks, tool_calls[].extra_content */
#define R_MAXTOK    (1u << 2) /* max_completion_tokens -> max_tokens */
#define R_MISTRAL   (1u << 3) /* allow-list, random_seed, "any", 9-char tool ids */
#define R_GROQ      (1u << 4) /* strip logprobs & co, n must be 1, temperature 0 -> 1e-8 */
#define R_DEEPSEEK  (1u << 5) /* reasoning_content replay rule, reasoner strips logprobs */
#define R_XAI       (1u << 6) /* per-model strip of unsupported parameters */

/* Response rules. */
#define F_FINISH    (1u << 0) /* eos, model_length, insufficient_system_resource, error */
#define F_CACHE     (1u << 1) /* prompt_cache_hit_tokens -> prompt_tokens_details.cached_tokens */
#define F_XGROQ     (1u << 2) /* x_groq.usage -> usage */
#define F_REASONING (1u << 3) /* reasoning -> reasoning_content */

#define MAX_DROP_FIELDS 32

struct preset {
    struct air__openai_quirks q; /* first: s->q points at the preset */
    const char *name;
    unsigned req;
    unsigned resp;
    /* q without fix_response / fix_chunk: for stream chunks that cannot
     * need a fix (see preset_stream_event). */
    struct air__openai_quirks plain;
};

/* DeepSeek: which assistant turns keep reasoning_content (spec section 4). */
enum replay { REPLAY_TOOL_CALLS = 0, REPLAY_NEVER, REPLAY_ALWAYS };

/* Per-instance settings read from the provider config (s->preset). */
struct pinst {
    char *drop[MAX_DROP_FIELDS]; /* drop_fields */
    size_t ndrop;
    char *allow[MAX_DROP_FIELDS]; /* allow_fields (mistral) */
    size_t nallow;
    enum replay replay;
};

/* Per-request stream state; openai.c's part first (it casts sc->state). */
struct pstream {
    struct air__openai_stream base;
    int content; /* a choice produced content, a refusal or a tool call */
    int fail;    /* fix_chunk filled sc->fault: end the stream with an error */
};

static const struct preset *
preset_of(const struct air__openai *s)
{
    return (const struct preset *)(const void *)s->q;
}

static const cJSON *
item(const cJSON *o, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(o, key);
}

static int
str_is(const cJSON *it, const char *s)
{
    return cJSON_IsString(it) && it->valuestring != NULL && strcmp(it->valuestring, s) == 0;
}

static int
str_nonempty(const cJSON *it)
{
    return cJSON_IsString(it) && it->valuestring != NULL && it->valuestring[0] != '\0';
}

/* ------------------------------------------------------------------------ */
/* Request rewriting                                                         */

struct rw {
    const struct preset *p;
    const struct pinst *pi;
    const char *model;      /* the model sent upstream, "" when unknown */
    struct air__jpatch *jp; /* the edits; the body itself is never written */
    air_status_t st;        /* AIR_OK, AIR_E_BADREQ (f filled) */
    air_fault_t *f;
};

/* obj[key] as the edits so far left it. */
static const cJSON *
get(const struct rw *w, const cJSON *obj, const char *key)
{
    return air__jp_get(w->jp, obj, key);
}

/* Move obj[from] to obj[to] (the value of `from` wins over an existing
 * `to`: it is the caller's newer spelling). */
static void
rename_key(struct rw *w, const cJSON *obj, const char *from, const char *to)
{
    const cJSON *v = get(w, obj, from);
    if (v == NULL)
        return;
    air__jp_drop(w->jp, obj, from);
    air__jp_put(w->jp, obj, to, v);
}

static void
set_string(struct rw *w, const cJSON *obj, const char *key, const char *val)
{
    air__jp_put(w->jp, obj, key, air__jp_string(w->jp, val));
}

static int
in_list(const char *key, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (list[i] != NULL && strcmp(key, list[i]) == 0)
            return 1;
    return 0;
}

/* Drop every member of obj whose name is in neither list. */
static void
keep_only(struct rw *w, const cJSON *obj, const char *const *allow, size_t nallow,
          const char *const *extra, size_t nextra)
{
    struct air__jp_iter it = AIR_JP_ITER_INIT;
    struct air__jp_member m;
    while (air__jp_next(w->jp, obj, &it, &m))
        if (m.key == NULL || (!in_list(m.key, allow, nallow) && !in_list(m.key, extra, nextra)))
            air__jp_drop_member(w->jp, obj, &m);
}

static void
badreq(struct rw *w, const char *code, const char *msg)
{
    w->st = AIR_E_BADREQ;
    memset(w->f, 0, sizeof *w->f);
    w->f->cls = AIR_ERR_INVALID_REQUEST;
    /* The request is fine; this vendor cannot serve it. Another may. */
    w->f->failover = 1;
    w->f->retry_after_ms = -1;
    air__strlcpy(w->f->type, "invalid_request_error", sizeof w->f->type);
    air__strlcpy(w->f->code, code, sizeof w->f->code);
    snprintf(w->f->message, sizeof w->f->message, "%s: %s", w->p->name, msg);
}

/* Mistral tool-call ids must be exactly 9 characters of [a-zA-Z0-9]. A
 * foreign id is replaced by 9 base-62 digits of its 64-bit FNV-1a hash:
 * deterministic, so assistant.tool_calls[].id and tool.tool_call_id, which
 * carry the same foreign id, get the same replacement. */
static int
mistral_id_ok(const char *id)
{
    size_t n = 0;
    for (; id[n] != '\0'; n++) {
        char c = id[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
            return 0;
    }
    return n == 9;
}

static void
mistral_id(const char *id, char out[10])
{
    static const char digits[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    uint64_t h = 0xcbf29ce484222325ULL;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ULL;
    }
    for (int i = 0; i < 9; i++) {
        out[i] = digits[h % 62];
        h /= 62;
    }
    out[9] = '\0';
}

static void
mistral_fix_id(struct rw *w, const cJSON *obj, const char *key)
{
    const cJSON *id = get(w, obj, key);
    if (!cJSON_IsString(id) || id->valuestring == NULL || mistral_id_ok(id->valuestring))
        return;
    char nid[10];
    mistral_id(id->valuestring, nid);
    set_string(w, obj, key, nid);
}

/* Mistral's message schemas (extra fields are a 422 extra_forbidden). */
static void
mistral_message(struct rw *w, const cJSON *m, const char *role)
{
    static const char *const sys_user[] = {"role", "content"};
    static const char *const assistant[] = {"role", "content", "tool_calls", "prefix"};
    static const char *const tool[] = {"role", "content", "tool_call_id", "name"};
    static const char *const call[] = {"id", "type", "function", "index"};
    static const char *const fn[] = {"name", "arguments"};
    if (strcmp(role, "system") == 0 || strcmp(role, "user") == 0) {
        keep_only(w, m, sys_user, 2, NULL, 0);
    } else if (strcmp(role, "assistant") == 0) {
        keep_only(w, m, assistant, 4, NULL, 0);
        const cJSON *tc = get(w, m, "tool_calls");
        const cJSON *c;
        cJSON_ArrayForEach(c, (cJSON_IsArray(tc) ? tc : NULL))
        {
            if (!cJSON_IsObject(c))
                continue;
            keep_only(w, c, call, 4, NULL, 0);
            mistral_fix_id(w, c, "id");
            const cJSON *f = get(w, c, "function");
            if (cJSON_IsObject(f))
                keep_only(w, f, fn, 2, NULL, 0);
        }
    } else if (strcmp(role, "tool") == 0) {
        keep_only(w, m, tool, 4, NULL, 0);
        mistral_fix_id(w, m, "tool_call_id");
    }
}

static void
rewrite_messages(struct rw *w, const cJSON *msgs)
{
    unsigned r = w->p->req;
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs)
    {
        if (!cJSON_IsObject(m))
            continue;
        const cJSON *rl = get(w, m, "role");
        const char *role = cJSON_IsString(rl) && rl->valuestring ? rl->valuestring : "";
        if ((r & R_DEVELOPER) && strcmp(role, "developer") == 0) {
            set_string(w, m, "role", "system");
            role = "system";
        }
        if (r & R_FOREIGN) {
            /* Other vendors' replay fields (spec 6.9). */
            air__jp_drop(w->jp, m, "thinking_blocks");
            const cJSON *tc = get(w, m, "tool_calls");
            const cJSON *c;
            cJSON_ArrayForEach(c, (cJSON_IsArray(tc) ? tc : NULL))
            {
                if (cJSON_IsObject(c))
                    air__jp_drop(w->jp, c, "extra_content");
            }
        }
        if (r & R_GROQ)
            air__jp_drop(w->jp, m, "name");
        if ((r & R_DEEPSEEK) && strcmp(role, "assistant") == 0 &&
            get(w, m, "reasoning_content") != NULL) {
            const cJSON *tc = get(w, m, "tool_calls");
            int calls = cJSON_IsArray(tc) && cJSON_GetArraySize(tc) > 0;
            int keep =
                w->pi->replay == REPLAY_ALWAYS || (w->pi->replay == REPLAY_TOOL_CALLS && calls);
            if (!keep)
                air__jp_drop(w->jp, m, "reasoning_content");
        }
        if (r & R_MISTRAL)
            mistral_message(w, m, role);
    }
}

/* xAI reasoning models reject some sampling parameters with 400 (issue
 * trackers; [?] which models exactly). */
static void
xai_strip(struct rw *w, const cJSON *b)
{
    const char *m = w->model;
    int grok4 = strstr(m, "grok-4") != NULL || strstr(m, "grok-code") != NULL;
    int mini3 = strstr(m, "grok-3-mini") != NULL;
    if (!grok4 && !mini3)
        return;
    air__jp_drop(w->jp, b, "presence_penalty");
    air__jp_drop(w->jp, b, "frequency_penalty");
    air__jp_drop(w->jp, b, "stop");
    if (grok4)
        air__jp_drop(w->jp, b, "reasoning_effort");
}

static void
rewrite_body(struct rw *w, const cJSON *b)
{
    unsigned r = w->p->req;
    if (r & R_FOREIGN)
        air__jp_drop(w->jp, b, "metadata"); /* OpenAI-only (spec 1.2) */
    for (size_t i = 0; i < w->pi->ndrop; i++)
        air__jp_drop(w->jp, b, w->pi->drop[i]);
    if (r & (R_MAXTOK | R_MISTRAL))
        rename_key(w, b, "max_completion_tokens", "max_tokens");

    if (r & R_GROQ) {
        air__jp_drop(w->jp, b, "logprobs");
        air__jp_drop(w->jp, b, "top_logprobs");
        air__jp_drop(w->jp, b, "logit_bias");
        const cJSON *n = get(w, b, "n");
        if (cJSON_IsNull(n))
            air__jp_drop(w->jp, b, "n");
        else if (n != NULL && !(cJSON_IsNumber(n) && n->valuedouble == 1))
            badreq(w, "unsupported_value", "n must be 1 (the vendor returns one choice only)");
        const cJSON *t = get(w, b, "temperature");
        if (cJSON_IsNumber(t) && t->valuedouble == 0) {
            /* Spec section 4 (Groq documents the same conversion on its
             * side; sending 1e-8 keeps the request valid whatever the
             * server version does with an exact 0). */
            air__jp_put(w->jp, b, "temperature", air__jp_own(w->jp, cJSON_CreateNumber(1e-8)));
        }
    }
    if ((r & R_DEEPSEEK) && strstr(w->model, "reasoner") != NULL) {
        air__jp_drop(w->jp, b, "logprobs");
        air__jp_drop(w->jp, b, "top_logprobs");
    }
    if (r & R_XAI)
        xai_strip(w, b);
    if (r & R_MISTRAL) {
        rename_key(w, b, "seed", "random_seed");
        const cJSON *tch = get(w, b, "tool_choice");
        if (cJSON_IsString(tch) && tch->valuestring != NULL &&
            strcmp(tch->valuestring, "required") == 0)
            set_string(w, b, "tool_choice", "any");
        static const char *const allow[] = {
            "model",
            "messages",
            "temperature",
            "top_p",
            "max_tokens",
            "stream",
            "stop",
            "random_seed",
            "tools",
            "tool_choice",
            "response_format",
            "presence_penalty",
            "n",
            "frequency_penalty",
            "prediction",
            "parallel_tool_calls",
            "safe_prompt",
            "prompt_mode",
        };
        keep_only(w, b, allow, sizeof allow / sizeof allow[0], (const char *const *)w->pi->allow,
                  w->pi->nallow);
    }
    const cJSON *msgs = get(w, b, "messages");
    if (cJSON_IsArray(msgs))
        rewrite_messages(w, msgs);
}

static const char *
model_of(const air_req_view_t *req)
{
    if (req->model != NULL)
        return req->model;
    const cJSON *m = item(req->body, "model");
    return cJSON_IsString(m) && m->valuestring ? m->valuestring : "";
}

static air_status_t
preset_rewrite(const struct air__openai *s, const air_req_view_t *req, struct air__jpatch *jp,
               air_fault_t *f)
{
    struct rw w = {
        .p = preset_of(s), .pi = s->preset, .model = model_of(req), .jp = jp, .st = AIR_OK, .f = f};
    if (!cJSON_IsObject(req->body))
        return AIR_OK;
    rewrite_body(&w, req->body);
    if (w.st == AIR_OK && jp->oom)
        w.st = AIR_E_NOMEM;
    return w.st;
}

/* ------------------------------------------------------------------------ */
/* Responses                                                                 */

/* Vendors sometimes echo the key back; it must never leave the adapter. */
static void
scrub(char *buf, size_t size, const char *key)
{
    if (key == NULL || key[0] == '\0' || strstr(buf, key) == NULL)
        return;
    char tmp[512];
    size_t kl = strlen(key), o = 0;
    for (const char *p = buf; *p && o + 1 < sizeof tmp;) {
        if (strncmp(p, key, kl) == 0) {
            for (const char *m = "[redacted]"; *m && o + 1 < sizeof tmp; m++)
                tmp[o++] = *m;
            p += kl;
        } else {
            tmp[o++] = *p++;
        }
    }
    tmp[o] = '\0';
    air__strlcpy(buf, tmp, size);
}

static const char *
preset_map_finish(const char *vendor)
{
    if (strcmp(vendor, "eos") == 0 || strcmp(vendor, "error") == 0)
        return "stop";
    if (strcmp(vendor, "model_length") == 0 || strcmp(vendor, "insufficient_system_resource") == 0)
        return "length";
    return NULL;
}

/* The fault for a finish reason that ended a choice before any content. */
static void
finish_fault(const struct air__openai *s, const cJSON *choice, const char *fr, air_fault_t *f)
{
    memset(f, 0, sizeof *f);
    f->retry_after_ms = -1;
    if (strcmp(fr, "insufficient_system_resource") == 0) {
        f->cls = AIR_ERR_OVERLOADED;
        f->retry = 1;
        f->failover = 1;
        air__strlcpy(f->code, fr, sizeof f->code);
        snprintf(f->message, sizeof f->message,
                 "%s: finish_reason insufficient_system_resource before any content",
                 preset_of(s)->name);
        return;
    }
    /* finish_reason "error" (Mistral, OpenRouter), maybe with the cause on
     * the choice: {"error":{"code":502,"message":"..."}}. */
    const cJSON *err = item(choice, "error");
    if (cJSON_IsObject(err)) {
        char *txt = cJSON_PrintUnformatted(choice);
        if (txt != NULL) {
            air__fault_parse_body(f, txt, strlen(txt));
            cJSON_free(txt);
        }
    }
    air__openai_fault_from_vendor(f);
    if (f->code[0] == '\0')
        air__strlcpy(f->code, "error", sizeof f->code);
    if (f->message[0] == '\0')
        snprintf(f->message, sizeof f->message, "%s: finish_reason error before any content",
                 preset_of(s)->name);
    scrub(f->message, sizeof f->message, s->api_key);
    scrub(f->code, sizeof f->code, s->api_key);
    scrub(f->type, sizeof f->type, s->api_key);
}

/* Does a message (or delta) carry an answer? Reasoning alone does not. */
static int
has_content(const cJSON *m)
{
    const cJSON *c = item(m, "content");
    const cJSON *tc = item(m, "tool_calls");
    return str_nonempty(c) || (cJSON_IsArray(c) && cJSON_GetArraySize(c) > 0) ||
           str_nonempty(item(m, "refusal")) || (cJSON_IsArray(tc) && cJSON_GetArraySize(tc) > 0) ||
           cJSON_IsObject(item(m, "function_call"));
}

/* reasoning -> reasoning_content (spec 6.9), keeping the original. */
static int
copy_reasoning(cJSON *m)
{
    const cJSON *r = item(m, "reasoning");
    if (!str_nonempty(r) || item(m, "reasoning_content") != NULL)
        return 0;
    cJSON *v = cJSON_CreateString(r->valuestring);
    if (v == NULL || !cJSON_AddItemToObject(m, "reasoning_content", v)) {
        cJSON_Delete(v);
        return 0; /* out of memory: the chunk goes out as the vendor sent it */
    }
    return 1;
}

/* obj[key] = val on a response being fixed (takes val): replaces the first
 * member of that name in place and deletes later duplicates. 0, or -1 when
 * out of memory (val freed). */
static int
put_member(cJSON *obj, const char *key, cJSON *val)
{
    if (val == NULL)
        return -1;
    if (cJSON_GetObjectItemCaseSensitive(obj, key) == NULL) {
        if (cJSON_AddItemToObject(obj, key, val))
            return 0;
        cJSON_Delete(val);
        return -1;
    }
    if (!cJSON_ReplaceItemInObjectCaseSensitive(obj, key, val)) {
        cJSON_Delete(val);
        return -1;
    }
    for (cJSON *c = val->next, *next; c != NULL; c = next) {
        next = c->next;
        if (c->string != NULL && strcmp(c->string, key) == 0)
            cJSON_Delete(cJSON_DetachItemViaPointer(obj, c));
    }
    return 0;
}

/* Usage fixes on a body or chunk. Returns 1 when it changed something. */
static int
fix_usage(unsigned rules, cJSON *root)
{
    int changed = 0;
    cJSON *usage = cJSON_GetObjectItemCaseSensitive(root, "usage");
    if ((rules & F_XGROQ) && !cJSON_IsObject(usage)) {
        const cJSON *xu = item(item(root, "x_groq"), "usage");
        if (cJSON_IsObject(xu)) {
            cJSON *dup = cJSON_Duplicate(xu, 1);
            if (put_member(root, "usage", dup) == 0) {
                changed = 1;
                usage = dup;
            }
        }
    }
    if ((rules & F_CACHE) && cJSON_IsObject(usage)) {
        const cJSON *hit = item(usage, "prompt_cache_hit_tokens");
        cJSON *det = cJSON_GetObjectItemCaseSensitive(usage, "prompt_tokens_details");
        if (cJSON_IsNumber(hit) && item(det, "cached_tokens") == NULL) {
            if (!cJSON_IsObject(det)) {
                det = cJSON_CreateObject();
                if (put_member(usage, "prompt_tokens_details", det) != 0)
                    return changed;
            }
            if (cJSON_AddNumberToObject(det, "cached_tokens", hit->valuedouble) != NULL)
                changed = 1;
        }
    }
    return changed;
}

static int
set_finish(cJSON *choice, const char *fr)
{
    cJSON *v = cJSON_CreateString(fr);
    if (v == NULL || !cJSON_ReplaceItemInObjectCaseSensitive(choice, "finish_reason", v)) {
        cJSON_Delete(v);
        return 0;
    }
    return 1;
}

static int
preset_fix_response(const struct air__openai *s, cJSON *body, air_fault_t *f)
{
    unsigned rules = preset_of(s)->resp;
    int changed = 0, any_content = 0;
    cJSON *choices = cJSON_GetObjectItemCaseSensitive(body, "choices");
    cJSON *ch;
    cJSON_ArrayForEach(ch, choices)
    {
        cJSON *m = cJSON_GetObjectItemCaseSensitive(ch, "message");
        if (!cJSON_IsObject(m))
            continue;
        if ((rules & F_REASONING) && copy_reasoning(m))
            changed = 1;
        if (has_content(m))
            any_content = 1;
    }
    if (rules & F_FINISH) {
        cJSON_ArrayForEach(ch, choices)
        {
            const cJSON *fr = item(ch, "finish_reason");
            if (!cJSON_IsString(fr) || fr->valuestring == NULL)
                continue;
            const char *to = preset_map_finish(fr->valuestring);
            if (to == NULL)
                continue;
            if (!any_content && (strcmp(fr->valuestring, "insufficient_system_resource") == 0 ||
                                 strcmp(fr->valuestring, "error") == 0)) {
                finish_fault(s, ch, fr->valuestring, f);
                return -1;
            }
            changed |= set_finish(ch, to);
        }
    }
    changed |= fix_usage(rules, body);
    return changed;
}

static int
preset_fix_chunk(const struct air__openai *s, air_stream_ctx_t *sc, cJSON *chunk)
{
    unsigned rules = preset_of(s)->resp;
    struct pstream *ps = sc->state;
    int changed = 0;
    cJSON *choices = cJSON_GetObjectItemCaseSensitive(chunk, "choices");
    cJSON *ch;
    cJSON_ArrayForEach(ch, (cJSON_IsArray(choices) ? choices : NULL))
    {
        cJSON *d = cJSON_GetObjectItemCaseSensitive(ch, "delta");
        if (!cJSON_IsObject(d))
            continue;
        if ((rules & F_REASONING) && copy_reasoning(d))
            changed = 1;
        if (has_content(d))
            ps->content = 1;
    }
    if (rules & F_FINISH) {
        cJSON_ArrayForEach(ch, (cJSON_IsArray(choices) ? choices : NULL))
        {
            const cJSON *fr = item(ch, "finish_reason");
            if (!cJSON_IsString(fr) || fr->valuestring == NULL)
                continue;
            const char *to = preset_map_finish(fr->valuestring);
            if (to == NULL)
                continue;
            if (!ps->content && (strcmp(fr->valuestring, "insufficient_system_resource") == 0 ||
                                 strcmp(fr->valuestring, "error") == 0)) {
                /* Nothing was produced: fail, so core may retry or fail
                 * over. Keep what the chunk says about usage. */
                const cJSON *u = item(chunk, "usage");
                if (cJSON_IsObject(u))
                    air__openai_usage(u, &sc->usage);
                finish_fault(s, ch, fr->valuestring, &sc->fault);
                ps->fail = 1;
                return -1;
            }
            changed |= set_finish(ch, to);
        }
    }
    changed |= fix_usage(rules, chunk);
    return changed;
}

/* ------------------------------------------------------------------------ */
/* ops functions around openai.c's                                           */

static air_status_t
preset_decode(const void *state, const air_req_view_t *req, const air_http_in_t *in,
              air_decoded_t *out, air_fault_t *f)
{
    air_status_t st = air__openai_decode(state, req, in, out, f);
    if (st != AIR_OK && f->http_status == 0)
        f->http_status = in->status;
    return st;
}

/* Whether d[0..n) has lit (a string literal) at p, within bounds. */
#define AT(p, e, lit)                                                                              \
    ((size_t)((e) - (p)) >= sizeof(lit) - 1 && memcmp((p), lit, sizeof(lit) - 1) == 0)

/*
 * Whether preset_fix_chunk could change this chunk or the stream state. It
 * only acts on (see above): whether content was seen yet (F_FINISH), the
 * finish reasons preset_map_finish knows, a "reasoning" member, x_groq and
 * prompt_cache_hit_tokens. A chunk whose bytes hold none of these names as
 * a JSON string (a \u escape, which could spell any of them, counts as
 * holding them all) comes out of fix_chunk unchanged, so it can take
 * openai.c's allocation-free chunk scanner instead of a cJSON parse; the
 * scanner and the tree analysis agree on every chunk (openai.c,
 * fuzz_openai). One pass over the quotes and backslashes.
 */
static int
chunk_may_need_fix(const struct preset *p, const struct pstream *ps, const char *d, size_t n)
{
    unsigned r = p->resp;
    if ((r & F_FINISH) && !ps->content)
        return 1;
    const char *e = d + n;
    for (const char *q = memchr(d, '\\', n); q != NULL;
         q = memchr(q + 1, '\\', (size_t)(e - q - 1)))
        if (q + 1 < e && q[1] == 'u')
            return 1;
    for (const char *q = memchr(d, '"', n); q != NULL; q = memchr(q, '"', (size_t)(e - q))) {
        q++; /* the first byte of a string, or the byte after one */
        if (q >= e)
            break;
        switch (*q) {
        case 'e':
            if ((r & F_FINISH) && (AT(q, e, "eos\"") || AT(q, e, "error\"")))
                return 1;
            break;
        case 'm':
            if ((r & F_FINISH) && AT(q, e, "model_length\""))
                return 1;
            break;
        case 'i':
            if ((r & F_FINISH) && AT(q, e, "insufficient_system_resource\""))
                return 1;
            break;
        case 'r':
            if ((r & F_REASONING) && AT(q, e, "reasoning\""))
                return 1;
            break;
        case 'x':
            if ((r & F_XGROQ) && AT(q, e, "x_groq\""))
                return 1;
            break;
        case 'p':
            if ((r & F_CACHE) && AT(q, e, "prompt_cache_hit_tokens\""))
                return 1;
            break;
        default:
            break;
        }
    }
    return 0;
}

static air_stream_rc_t
preset_stream_event(const void *state, air_stream_ctx_t *sc, const char *event, size_t event_len,
                    const char *data, size_t data_len)
{
    const struct air__openai *s = state;
    const struct preset *p = preset_of(s);
    air_stream_rc_t rc;
    if (p->q.fix_chunk != NULL && !chunk_may_need_fix(p, sc->state, data, data_len)) {
        /* The same instance, seen through the quirks without fixes. */
        struct air__openai plain = *s;
        plain.q = &p->plain;
        rc = air__openai_stream_event(&plain, sc, event, event_len, data, data_len);
    } else {
        rc = air__openai_stream_event(state, sc, event, event_len, data, data_len);
    }
    const struct pstream *ps = sc->state;
    if (rc == AIR_STREAM_MORE && ps->fail)
        return AIR_STREAM_ERROR;
    return rc;
}

static void
pinst_free(struct pinst *pi)
{
    if (pi == NULL)
        return;
    for (size_t i = 0; i < pi->ndrop; i++)
        air__free(pi->drop[i]);
    for (size_t i = 0; i < pi->nallow; i++)
        air__free(pi->allow[i]);
    air__free(pi);
}

static void
preset_fini(void *state)
{
    struct air__openai *s = state;
    if (s == NULL)
        return;
    pinst_free(s->preset);
    s->preset = NULL;
    air__openai_fini(s);
}

static air_status_t
cfg_err(char *err, size_t errlen, const char *key, const char *msg)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s: %s", key, msg);
    return AIR_E_CONFIG;
}

/* A config key holding an array of field names. */
static air_status_t
load_names(const cJSON *json, const char *key, char **dst, size_t *n, char *err, size_t errlen)
{
    const cJSON *a = item(json, key);
    if (a == NULL || cJSON_IsNull(a))
        return AIR_OK;
    if (!cJSON_IsArray(a))
        return cfg_err(err, errlen, key, "expected an array of field names");
    if (cJSON_GetArraySize(a) > MAX_DROP_FIELDS)
        return cfg_err(err, errlen, key, "too many field names (at most 32)");
    const cJSON *it;
    cJSON_ArrayForEach(it, a)
    {
        if (!str_nonempty(it))
            return cfg_err(err, errlen, key, "expected an array of non-empty strings");
        if ((dst[*n] = air__strdup(it->valuestring)) == NULL)
            return AIR_E_NOMEM;
        (*n)++;
    }
    return AIR_OK;
}

static air_status_t
preset_init(const struct preset *p, const char *default_base_url, const air_provider_cfg_t *cfg,
            void **state, char *err, size_t errlen)
{
    air_status_t st = air__openai_init(cfg, &p->q, default_base_url, state, err, errlen);
    if (st != AIR_OK)
        return st;
    struct air__openai *s = *state;
    struct pinst *pi = air__calloc(1, sizeof *pi);
    if (pi == NULL) {
        st = AIR_E_NOMEM;
        goto fail;
    }
    s->preset = pi;
    if ((st = load_names(cfg->json, "drop_fields", pi->drop, &pi->ndrop, err, errlen)) != AIR_OK)
        goto fail;
    if (p->req & R_MISTRAL) {
        st = load_names(cfg->json, "allow_fields", pi->allow, &pi->nallow, err, errlen);
        if (st != AIR_OK)
            goto fail;
    }
    if (p->req & R_DEEPSEEK) {
        const cJSON *r = item(cfg->json, "replay_reasoning");
        if (r == NULL || cJSON_IsNull(r) || str_is(r, "tool_calls")) {
            pi->replay = REPLAY_TOOL_CALLS;
        } else if (str_is(r, "never")) {
            pi->replay = REPLAY_NEVER;
        } else if (str_is(r, "always")) {
            pi->replay = REPLAY_ALWAYS;
        } else {
            st = cfg_err(err, errlen, "replay_reasoning",
                         "expected \"tool_calls\", \"never\" or \"always\"");
            goto fail;
        }
    }
    return AIR_OK;
fail:
    preset_fini(s);
    *state = NULL;
    return st;
}

/* ------------------------------------------------------------------------ */
/* The presets                                                               */

/* Response hooks only for presets with response rules: the others keep
 * openai.c's allocation-free chunk scanner. */
#define PRESET_FIXES .fix_response = preset_fix_response, .fix_chunk = preset_fix_chunk

static const char *const keys_common[] = {"drop_fields", NULL};
static const char *const keys_deepseek[] = {"drop_fields", "replay_reasoning", NULL};
static const char *const keys_mistral[] = {"drop_fields", "allow_fields", NULL};
static const char *const keys_openrouter[] = {"drop_fields", "http_referer", "x_title", NULL};

static const struct air__openai_hdrkey openrouter_hdrs[] = {
    {"http_referer", "HTTP-Referer"},
    {"x_title", "X-Title"},
    {NULL, NULL},
};

#define PRESET_Q(su, hk, ...)                                                                      \
    {                                                                                              \
        .path = "/chat/completions", .auth_header = "Authorization", .auth_prefix = "Bearer ",     \
        .stream_usage = (su), .hdr_keys = (hk), .rewrite_request = preset_rewrite,                 \
        .map_finish = preset_map_finish, __VA_ARGS__                                               \
    }
#define NO_FIXES .fix_response = NULL
/* A preset: q with the response fixes, plain the same quirks without them
 * (derived here, so the two cannot disagree). */
#define PRESET(nm, su, hk, rq, rs, ...)                                                            \
    {                                                                                              \
        .q = PRESET_Q(su, hk, __VA_ARGS__), .name = (nm), .req = (rq), .resp = (rs),               \
        .plain = PRESET_Q(su, hk, NO_FIXES)                                                        \
    }

static const struct preset p_deepseek =
    PRESET("deepseek", 1, NULL, R_DEVELOPER | R_FOREIGN | R_MAXTOK | R_DEEPSEEK, F_FINISH | F_CACHE,
           PRESET_FIXES);
/* stream_options is an extra_forbidden field for Mistral; usage comes on the
 * last chunk anyway. */
static const struct preset p_mistral =
    PRESET("mistral", 0, NULL, R_DEVELOPER | R_FOREIGN | R_MISTRAL, F_FINISH, PRESET_FIXES);
static const struct preset p_groq =
    PRESET("groq", 1, NULL, R_DEVELOPER | R_FOREIGN | R_GROQ, F_FINISH | F_XGROQ, PRESET_FIXES);
static const struct preset p_together =
    PRESET("together", 1, NULL, R_DEVELOPER | R_FOREIGN | R_MAXTOK, F_FINISH, PRESET_FIXES);
static const struct preset p_openrouter =
    PRESET("openrouter", 1, openrouter_hdrs, R_DEVELOPER | R_FOREIGN | R_MAXTOK,
           F_FINISH | F_REASONING, PRESET_FIXES);
static const struct preset p_xai =
    PRESET("xai", 1, NULL, R_DEVELOPER | R_FOREIGN | R_XAI, 0, NO_FIXES);
static const struct preset p_ollama = PRESET("ollama", 1, NULL, R_DEVELOPER | R_FOREIGN | R_MAXTOK,
                                             F_FINISH | F_REASONING, PRESET_FIXES);
static const struct preset p_vllm =
    PRESET("vllm", 1, NULL, R_DEVELOPER | R_FOREIGN, F_FINISH | F_REASONING, PRESET_FIXES);

#define CAPS_ALL (AIR_CAP_STREAM | AIR_CAP_TOOLS | AIR_CAP_IMAGES | AIR_CAP_JSON)

/* One init function and one ops table per preset. */
#define DEFINE_PRESET(id, caps_, url, keys)                                                        \
    static air_status_t id##_init(const air_provider_cfg_t *cfg, void **state, char *err,          \
                                  size_t errlen)                                                   \
    {                                                                                              \
        return preset_init(&p_##id, (url), cfg, state, err, errlen);                               \
    }                                                                                              \
    const air_provider_ops_t air_provider_##id = {                                                 \
        .abi = AIR_PROVIDER_ABI,                                                                   \
        .name = #id,                                                                               \
        .caps = (caps_),                                                                           \
        .default_base_url = (url),                                                                 \
        .config_keys = (keys),                                                                     \
        .stream_state_size = sizeof(struct pstream),                                               \
        .init = id##_init,                                                                         \
        .fini = preset_fini,                                                                       \
        .encode = air__openai_encode,                                                              \
        .decode = preset_decode,                                                                   \
        .classify = air__openai_classify,                                                          \
        .stream_event = preset_stream_event,                                                       \
        .stream_end = air__openai_stream_end,                                                      \
        .ratelimit = air__ratelimit_openai_op,                                                     \
    }

/* DeepSeek has no image input. */
DEFINE_PRESET(deepseek, AIR_CAP_STREAM | AIR_CAP_TOOLS | AIR_CAP_JSON, "https://api.deepseek.com",
              keys_deepseek);
DEFINE_PRESET(mistral, CAPS_ALL, "https://api.mistral.ai/v1", keys_mistral);
DEFINE_PRESET(groq, CAPS_ALL, "https://api.groq.com/openai/v1", keys_common);
DEFINE_PRESET(together, CAPS_ALL, "https://api.together.xyz/v1", keys_common);
DEFINE_PRESET(openrouter, CAPS_ALL, "https://openrouter.ai/api/v1", keys_openrouter);
DEFINE_PRESET(xai, CAPS_ALL, "https://api.x.ai/v1", keys_common);
DEFINE_PRESET(ollama, CAPS_ALL, "http://localhost:11434/v1", keys_common);
DEFINE_PRESET(vllm, CAPS_ALL, "http://localhost:8000/v1", keys_common);
