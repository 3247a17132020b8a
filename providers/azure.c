/*
 * azure.c - Azure OpenAI (spec section 5), built on the openai adapter.
 *
 * DESIGN: Azure speaks OpenAI's body and reply formats, so this file only
 * holds what differs, through openai.c's quirk hooks:
 *
 *  - the URL names a deployment, not a model: build_url puts it in the path
 *    ({base_url}/openai/deployments/{deployment}/chat/completions
 *    ?api-version=...), or, with api_version "v1", uses the versionless
 *    {base_url}/openai/v1/chat/completions and sends the deployment as
 *    `model` (the encode wrapper substitutes it in the request view, so
 *    openai.c's splice/passthrough logic stays in charge of the body);
 *  - auth is an `api-key` header (or a Bearer Entra ID token, by config);
 *  - streams: the leading `choices: []` chunk that only carries
 *    prompt_filter_results is dropped (it is not the usage chunk, and would
 *    confuse clients that expect choices[0]); chunks with an empty envelope
 *    (id, model, created, object) get the first non-empty one seen; choices
 *    without `delta` (content-filter annotations) get `"delta": {}`. Chunks
 *    that need none of this (most of them) skip the cJSON parse it takes;
 *    see "Streams: the chunks that need no fix";
 *  - a 400 with code content_filter stays invalid_request, never retried
 *    nor failed over (another deployment would filter the same prompt).
 *
 * The deployment is the configured `deployment`, else the request's
 * upstream model name (the route's model), so one Azure resource serves
 * several deployments through the router's model mapping.
 */
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "buf.h"
#include "common.h"
#include "jscan.h"
#include "openai.h"
#include "ratelimit.h"

#define AZURE_DEFAULT_API_VERSION "2024-10-21"

/* Per-instance settings (s->preset). */
struct azure_cfg {
    char *api_version; /* "2024-10-21", "2025-01-01-preview", "v1" */
    char *deployment;  /* NULL: the request's upstream model */
    int v1;
};

/* Per-request stream state; openai.c's part first (it casts sc->state). */
struct azure_stream {
    struct air__openai_stream base;
    char id[128];    /* first non-empty chunk id */
    char model[128]; /* first non-empty chunk model */
    double created;  /* first non-zero created */
    int have_created;
};

static const cJSON *
item(const cJSON *o, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(o, key);
}

static int
str_nonempty(const cJSON *it)
{
    return cJSON_IsString(it) && it->valuestring != NULL && it->valuestring[0] != '\0';
}

/* ------------------------------------------------------------------------ */
/* URL                                                                       */

/* RFC 3986 unreserved characters pass; everything else is %XX. */
static void
put_path_segment(air_buf_t *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        unsigned char c = *p;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~') {
            air__buf_putc(b, (char)c);
        } else {
            air__buf_putc(b, '%');
            air__buf_putc(b, hex[c >> 4]);
            air__buf_putc(b, hex[c & 15]);
        }
    }
}

/* The deployment this request goes to, or NULL when there is none. */
static const char *
deployment_of(const struct air__openai *s, const air_req_view_t *req)
{
    const struct azure_cfg *az = s->preset;
    if (az->deployment != NULL)
        return az->deployment;
    if (req->model != NULL && req->model[0] != '\0')
        return req->model;
    const cJSON *m = item(req->body, "model");
    return str_nonempty(m) ? m->valuestring : NULL;
}

static char *
azure_build_url(const struct air__openai *s, const air_req_view_t *req)
{
    const struct azure_cfg *az = s->preset;
    air_buf_t b = AIR_BUF_INIT;
    air__buf_puts(&b, s->base_url);
    if (az->v1) {
        air__buf_puts(&b, "/openai/v1/chat/completions");
    } else {
        const char *dep = deployment_of(s, req);
        air__buf_puts(&b, "/openai/deployments/");
        put_path_segment(&b, dep != NULL ? dep : "");
        air__buf_puts(&b, "/chat/completions?api-version=");
        air__buf_puts(&b, az->api_version); /* checked at init: URL-safe */
    }
    return air__buf_steal(&b, NULL);
}

static air_status_t
azure_encode(const void *state, const air_req_view_t *req, air_http_out_t *out, air_fault_t *f)
{
    const struct air__openai *s = state;
    memset(out, 0, sizeof *out);
    if (req == NULL || req->body == NULL)
        return AIR_E_INVAL;
    const char *dep = deployment_of(s, req);
    if (dep == NULL) {
        memset(f, 0, sizeof *f);
        f->cls = AIR_ERR_INVALID_REQUEST;
        f->failover = 1; /* a deployment with its name configured may serve it */
        f->retry_after_ms = -1;
        air__strlcpy(f->type, "invalid_request_error", sizeof f->type);
        air__strlcpy(f->code, "missing_deployment", sizeof f->code);
        air__strlcpy(f->message,
                     "azure: no deployment (configure `deployment` or route to a model name)",
                     sizeof f->message);
        return AIR_E_BADREQ;
    }
    const struct azure_cfg *az = s->preset;
    if (az->v1 && az->deployment != NULL) {
        /* The v1 API routes by `model`: it must name the deployment. */
        air_req_view_t r = *req;
        r.model = az->deployment;
        return air__openai_encode(state, &r, out, f);
    }
    return air__openai_encode(state, req, out, f);
}

/* ------------------------------------------------------------------------ */
/* Replies                                                                   */

static void
azure_classify(const void *state, const air_http_in_t *in, air_fault_t *f)
{
    air__openai_classify(state, in, f);
    if (strcmp(f->code, "content_filter") != 0)
        return;
    /* The prompt was filtered: the same prompt is filtered anywhere else,
     * and again later (spec section 7). */
    f->cls = AIR_ERR_INVALID_REQUEST;
    f->retry = 0;
    f->failover = 0;
    f->unusable = 0;
    /* "type" is null (the common parser then falls back to "status",
     * "400"); innererror.code says why ("ResponsibleAIPolicyViolation"). */
    cJSON *root = cJSON_ParseWithLength(in->body, in->body_len);
    const cJSON *ic = item(item(item(root, "error"), "innererror"), "code");
    if (str_nonempty(ic))
        air__strlcpy(f->type, ic->valuestring, sizeof f->type);
    cJSON_Delete(root);
}

/* Set obj[key] to a string when it is absent or empty. 1 when changed. */
static int
fill_string(cJSON *obj, const char *key, const char *val)
{
    const cJSON *cur = item(obj, key);
    if (val[0] == '\0' || str_nonempty(cur))
        return 0;
    cJSON *v = cJSON_CreateString(val);
    if (v == NULL)
        return 0;
    int ok = cur != NULL ? cJSON_ReplaceItemInObjectCaseSensitive(obj, key, v)
                         : cJSON_AddItemToObject(obj, key, v);
    if (!ok)
        cJSON_Delete(v);
    return ok;
}

static int
azure_fix_chunk(const struct air__openai *s, air_stream_ctx_t *sc, cJSON *chunk)
{
    (void)s;
    struct azure_stream *as = sc->state;
    cJSON *choices = cJSON_GetObjectItemCaseSensitive(chunk, "choices");
    /* The prompt-annotation chunk: no choices, no usage. */
    if (cJSON_IsArray(choices) && cJSON_GetArraySize(choices) == 0 &&
        item(chunk, "prompt_filter_results") != NULL && !cJSON_IsObject(item(chunk, "usage")))
        return -1;

    /* The envelope: remember the first non-empty values, fill empty ones. */
    const cJSON *id = item(chunk, "id");
    const cJSON *model = item(chunk, "model");
    const cJSON *created = item(chunk, "created");
    if (as->id[0] == '\0' && str_nonempty(id))
        air__strlcpy(as->id, id->valuestring, sizeof as->id);
    if (as->model[0] == '\0' && str_nonempty(model))
        air__strlcpy(as->model, model->valuestring, sizeof as->model);
    if (!as->have_created && cJSON_IsNumber(created) && created->valuedouble > 0) {
        as->created = created->valuedouble;
        as->have_created = 1;
    }
    int changed = fill_string(chunk, "id", as->id);
    changed |= fill_string(chunk, "model", as->model);
    changed |= fill_string(chunk, "object", "chat.completion.chunk");
    if (as->have_created && !(cJSON_IsNumber(created) && created->valuedouble > 0)) {
        cJSON *v = cJSON_CreateNumber(as->created);
        int ok = v != NULL &&
                 (created != NULL ? cJSON_ReplaceItemInObjectCaseSensitive(chunk, "created", v)
                                  : cJSON_AddItemToObject(chunk, "created", v));
        if (!ok)
            cJSON_Delete(v);
        changed |= ok;
    }

    /* Content-filter annotations come as choices without delta. */
    cJSON *ch;
    cJSON_ArrayForEach(ch, (cJSON_IsArray(choices) ? choices : NULL))
    {
        if (!cJSON_IsObject(ch) || cJSON_IsObject(item(ch, "delta")))
            continue;
        cJSON *d = cJSON_CreateObject();
        int ok = d != NULL &&
                 (item(ch, "delta") != NULL ? cJSON_ReplaceItemInObjectCaseSensitive(ch, "delta", d)
                                            : cJSON_AddItemToObject(ch, "delta", d));
        if (!ok)
            cJSON_Delete(d);
        changed |= ok;
    }
    return changed;
}

/* ------------------------------------------------------------------------ */
/* Streams: the chunks that need no fix                                      */

/*
 * azure_fix_chunk costs a cJSON parse per chunk, but once the stream's first
 * id, model and created are known, most chunks (every content chunk of an
 * Azure stream) come out of it unchanged: they carry the whole envelope and
 * a delta in every choice. Such a chunk is recognised by one validating pass
 * over its bytes (azure_chunk_plain) and handed to openai.c's stream code
 * through the quirks without fix_chunk, whose allocation-free scanner agrees
 * with the cJSON analysis on every chunk (openai.c, fuzz_openai). Anything
 * the pass does not accept takes the fixing path, as before.
 */


/* The strict scanner is jscan.c's. *uesc is set when a string holds a \u
 * (or \/) escape, which could decode to bytes written differently. */
static const char *
scan_str(const char *p, const char *e, int *uesc)
{
    unsigned f = 0;
    const char *q = air__jscan_str(p, e, &f);
    if (f & AIR_JSCAN_ESC_ODD)
        *uesc = 1;
    return q;
}

#define skip_value air__jscan_skip_value
#define skip_ws air__jscan_ws
#define scan_key air__jscan_key
#define key_is air__jscan_key_is
#define next_item air__jscan_next

/* A string that cJSON reads as non-empty: no \u escape (one could decode to
 * nothing) and something between the quotes. */
static const char *
want_nonempty(const char *p, const char *e)
{
    int uesc = 0;
    if (p >= e || *p != '"')
        return NULL;
    const char *q = scan_str(p, e, &uesc);
    return q != NULL && !uesc && q - p > 2 ? q : NULL;
}

/* A choice object whose first "delta" member is an object. */
static const char *
want_choice(const char *p, const char *e)
{
    const char *k, *end = NULL;
    size_t kl;
    int delta = 0, seen = 0;
    if (p >= e || *p != '{')
        return NULL;
    p = skip_ws(p + 1, e);
    if (p < e && *p == '}')
        return NULL;
    for (;;) {
        if ((p = scan_key(p, e, &k, &kl)) == NULL)
            return NULL;
        if (key_is(k, kl, "delta") && !seen) {
            seen = 1;
            delta = p < e && *p == '{';
        }
        if ((p = skip_value(p, e, 3)) == NULL || (p = next_item(p, e, '}', &end)) == NULL)
            return NULL;
        if (end != NULL)
            return delta ? end : NULL;
    }
}

/*
 * Whether azure_fix_chunk would leave this chunk and the stream state as
 * they are: the state already holds id, model and created, and the chunk is
 * a strictly valid object with plain keys that has non-empty "id", "model"
 * and "object" strings, a plain positive integer "created", no
 * "prompt_filter_results", and, when "choices" is there, an array of
 * objects that each have a "delta" object.
 */
static int
azure_chunk_plain(const struct azure_stream *as, const char *d, size_t n)
{
    if (as->id[0] == '\0' || as->model[0] == '\0' || !as->have_created)
        return 0;
    const char *e = d + n, *p = skip_ws(d, e), *k, *end = NULL;
    size_t kl;
    unsigned seen = 0; /* id, model, object, created, choices */
    if (p >= e || *p != '{')
        return 0;
    p = skip_ws(p + 1, e);
    if (p < e && *p == '}')
        return 0;
    for (;;) {
        if ((p = scan_key(p, e, &k, &kl)) == NULL)
            return 0;
        unsigned bit = key_is(k, kl, "id")        ? 1u
                       : key_is(k, kl, "model")   ? 2u
                       : key_is(k, kl, "object")  ? 4u
                       : key_is(k, kl, "created") ? 8u
                       : key_is(k, kl, "choices") ? 16u
                                                  : 0u;
        if ((seen & bit) || key_is(k, kl, "prompt_filter_results"))
            return 0; /* a repeated member or the prompt annotation: the fixing path */
        seen |= bit;
        if (bit == 1u || bit == 2u || bit == 4u) {
            p = want_nonempty(p, e);
        } else if (bit == 8u) {
            /* a plain positive integer: exactly the number cJSON reads */
            const char *q = p;
            while (q < e && *q >= '0' && *q <= '9' && q - p < 16)
                q++;
            if (q == p || *p == '0' || q - p > 15 ||
                (q < e && (*q == '.' || *q == 'e' || *q == 'E' || (*q >= '0' && *q <= '9'))))
                return 0;
            p = q;
        } else if (bit == 16u) {
            const char *aend = NULL;
            if (p >= e || *p != '[')
                return 0;
            p = skip_ws(p + 1, e);
            if (p < e && *p == ']') {
                p++;
            } else {
                for (;;) {
                    if ((p = want_choice(p, e)) == NULL ||
                        (p = next_item(p, e, ']', &aend)) == NULL)
                        return 0;
                    if (aend != NULL) {
                        p = aend;
                        break;
                    }
                }
            }
        } else {
            p = skip_value(p, e, 1);
        }
        if (p == NULL || (p = next_item(p, e, '}', &end)) == NULL)
            return 0;
        if (end != NULL)
            break;
    }
    return (seen & 15u) == 15u && skip_ws(end, e) == e;
}

/* ------------------------------------------------------------------------ */
/* init / fini                                                               */

static void
azure_fini(void *state)
{
    struct air__openai *s = state;
    if (s == NULL)
        return;
    struct azure_cfg *az = s->preset;
    if (az != NULL) {
        air__free(az->api_version);
        air__free(az->deployment);
        air__free(az);
        s->preset = NULL;
    }
    air__openai_fini(s);
}

static int
url_safe(const char *v)
{
    if (v[0] == '\0')
        return 0;
    for (const char *p = v; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.' || c == '_'))
            return 0;
    }
    return 1;
}

static air_status_t
cfg_err(char *err, size_t errlen, const char *key, const char *msg)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s: %s", key, msg);
    return AIR_E_CONFIG;
}

static const struct air__openai_quirks azure_quirks_key = {
    .auth_header = "api-key",
    .auth_prefix = "",
    .stream_usage = 1,
    .build_url = azure_build_url,
    .fix_chunk = azure_fix_chunk,
};

/* auth: "bearer" (a Microsoft Entra ID token as the key). */
static const struct air__openai_quirks azure_quirks_bearer = {
    .auth_header = "Authorization",
    .auth_prefix = "Bearer ",
    .stream_usage = 1,
    .build_url = azure_build_url,
    .fix_chunk = azure_fix_chunk,
};

/* The same without fix_chunk, for chunks azure_chunk_plain accepts. */
static const struct air__openai_quirks azure_quirks_key_plain = {
    .auth_header = "api-key",
    .auth_prefix = "",
    .stream_usage = 1,
    .build_url = azure_build_url,
};

static const struct air__openai_quirks azure_quirks_bearer_plain = {
    .auth_header = "Authorization",
    .auth_prefix = "Bearer ",
    .stream_usage = 1,
    .build_url = azure_build_url,
};

static air_stream_rc_t
azure_stream_event(const void *state, air_stream_ctx_t *sc, const char *event, size_t event_len,
                   const char *data, size_t data_len)
{
    const struct air__openai *s = state;
    if (!azure_chunk_plain(sc->state, data, data_len))
        return air__openai_stream_event(state, sc, event, event_len, data, data_len);
    /* The same instance, seen through the quirks without fix_chunk. */
    struct air__openai plain = *s;
    plain.q = s->q == &azure_quirks_bearer ? &azure_quirks_bearer_plain : &azure_quirks_key_plain;
    return air__openai_stream_event(&plain, sc, event, event_len, data, data_len);
}

static air_status_t
azure_init(const air_provider_cfg_t *cfg, void **state, char *err, size_t errlen)
{
    *state = NULL;
    const cJSON *auth = item(cfg->json, "auth");
    const struct air__openai_quirks *q = &azure_quirks_key;
    if (cJSON_IsString(auth) && strcmp(auth->valuestring, "bearer") == 0)
        q = &azure_quirks_bearer;
    else if (auth != NULL && !cJSON_IsNull(auth) &&
             !(cJSON_IsString(auth) && strcmp(auth->valuestring, "api-key") == 0))
        return cfg_err(err, errlen, "auth", "expected \"api-key\" or \"bearer\"");

    const cJSON *ver = item(cfg->json, "api_version");
    const char *version = AZURE_DEFAULT_API_VERSION;
    if (ver != NULL && !cJSON_IsNull(ver)) {
        if (!cJSON_IsString(ver) || !url_safe(ver->valuestring))
            return cfg_err(err, errlen, "api_version",
                           "expected a version string such as \"2024-10-21\" or \"v1\"");
        version = ver->valuestring;
    }
    const cJSON *dep = item(cfg->json, "deployment");
    if (dep != NULL && !cJSON_IsNull(dep) &&
        !(str_nonempty(dep) && strpbrk(dep->valuestring, "\r\n") == NULL))
        return cfg_err(err, errlen, "deployment", "expected a non-empty string");

    air_status_t st = air__openai_init(cfg, q, NULL, state, err, errlen);
    if (st != AIR_OK)
        return st;
    struct air__openai *s = *state;
    struct azure_cfg *az = air__calloc(1, sizeof *az);
    if (az == NULL)
        goto nomem;
    s->preset = az;
    az->v1 = strcmp(version, "v1") == 0;
    if ((az->api_version = air__strdup(version)) == NULL)
        goto nomem;
    if (str_nonempty(dep) && (az->deployment = air__strdup(dep->valuestring)) == NULL)
        goto nomem;
    return AIR_OK;
nomem:
    azure_fini(s);
    *state = NULL;
    return AIR_E_NOMEM;
}

static const char *const azure_config_keys[] = {"api_version", "deployment", "auth", NULL};

const air_provider_ops_t air_provider_azure = {
    .abi = AIR_PROVIDER_ABI,
    .name = "azure",
    .caps = AIR_CAP_STREAM | AIR_CAP_TOOLS | AIR_CAP_IMAGES | AIR_CAP_JSON,
    .default_base_url = NULL, /* the resource endpoint is the customer's own */
    .config_keys = azure_config_keys,
    .stream_state_size = sizeof(struct azure_stream),
    .init = azure_init,
    .fini = azure_fini,
    .encode = azure_encode,
    .decode = air__openai_decode,
    .classify = azure_classify,
    .stream_event = azure_stream_event,
    .stream_end = air__openai_stream_end,
    .ratelimit = air__ratelimit_azure_op,
};
