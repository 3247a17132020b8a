/*
 * gwconf.c - parse and validate the gateway's keys of the configuration
 * document, strip them, and keep the rest for the engine (see gwconf.h).
 *
 * DESIGN: the document is parsed once with cJSON; the gateway's members are
 * detached, validated one by one (failing on the first error, with its JSON
 * path, in the engine's wording), and the remainder is printed back for
 * air_new. A JSON syntax error is left to the engine, so the message is the
 * engine's "line L, column C" one. Secrets: a client key is read from its
 * environment variable, hashed at once, and only the digest is kept.
 */
#include "gwconf.h"
#include "gateway.h"
#include "gwlimits.h"

#include "alloc.h"
#include "buf.h"

#include <cjson/cJSON.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_LISTEN       "127.0.0.1:8080"
#define DEFAULT_ADMIN_LISTEN "127.0.0.1:8081"
#define DEFAULT_MAX_BODY     4194304u
#define DEFAULT_MAX_CONN     4096u
#define DEFAULT_CLIENT_TO_MS 60000u

static const char *const gateway_keys[] = {
    "listen", "max_body_bytes", "max_connections", "client_timeout_ms",
    "keys",   "admin",          "access_log",      "http_mode"};

__attribute__((format(printf, 3, 4))) static air_status_t
fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return AIR_E_CONFIG;
}

/* Levenshtein distance of two short strings (capped at 32 characters). */
static size_t
distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 32 || lb > 32)
        return 99;
    size_t prev[33], cur[33];
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
            size_t del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, cur, sizeof prev);
    }
    return prev[lb];
}

/* Check that every member of obj is one of known[] (or "comment", which
 * must be a string) and that none repeats. */
static air_status_t
check_members(const cJSON *obj, const char *path, const char *const *known, size_t nknown,
              char *err, size_t errlen)
{
    const char *sep = path[0] ? "." : "";
    for (const cJSON *it = obj->child; it != NULL; it = it->next) {
        for (const cJSON *p = obj->child; p != it; p = p->next)
            if (strcmp(p->string, it->string) == 0)
                return fail(err, errlen, "%s%s%s: duplicate key", path, sep, it->string);
        if (strcmp(it->string, "comment") == 0) {
            if (!cJSON_IsString(it))
                return fail(err, errlen, "%s%scomment: expected a string", path, sep);
            continue;
        }
        size_t best = 99, bi = 0;
        int found = 0;
        for (size_t i = 0; i < nknown; i++) {
            if (strcmp(known[i], it->string) == 0) {
                found = 1;
                break;
            }
            size_t d = distance(known[i], it->string);
            if (d < best) {
                best = d;
                bi = i;
            }
        }
        if (found)
            continue;
        if (best <= 2)
            return fail(err, errlen, "%s%s%s: unknown key (did you mean '%s'?)", path, sep,
                        it->string, known[bi]);
        return fail(err, errlen, "%s%s%s: unknown key", path, sep, it->string);
    }
    return AIR_OK;
}

/* An integral JSON number in [min, max]. */
static air_status_t
get_int(const cJSON *v, const char *path, int64_t min, int64_t max, const char *what, int64_t *out,
        char *err, size_t errlen)
{
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble != floor(v->valuedouble))
        return fail(err, errlen, "%s: expected %s", path, what);
    if (v->valuedouble < (double)min || v->valuedouble > (double)max)
        return fail(err, errlen, "%s: must be between %lld and %lld", path, (long long)min,
                    (long long)max);
    *out = (int64_t)v->valuedouble;
    return AIR_OK;
}

static int
env_name_ok(const char *s)
{
    if (s == NULL || !((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || *s == '_'))
        return 0;
    for (; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
              *s == '_'))
            return 0;
    return 1;
}

int
air__gw_addr_parse(const char *s, struct air__gw_addr *a)
{
    memset(a, 0, sizeof *a);
    if (s == NULL || strlen(s) >= sizeof a->text)
        return -1;
    snprintf(a->text, sizeof a->text, "%s", s);
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon == s || colon[1] == '\0')
        return -1;
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (errno || *end != '\0' || port < 0 || port > 65535 || !(colon[1] >= '0' && colon[1] <= '9'))
        return -1;
    char host[64];
    size_t hl = (size_t)(colon - s);
    if (s[0] == '[') {
        if (hl < 3 || s[hl - 1] != ']' || hl - 2 >= sizeof host)
            return -1;
        memcpy(host, s + 1, hl - 2);
        host[hl - 2] = '\0';
        struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&a->sa;
        if (inet_pton(AF_INET6, host, &v6->sin6_addr) != 1)
            return -1;
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        a->len = sizeof *v6;
        a->loopback = IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr);
        return 0;
    }
    if (hl >= sizeof host)
        return -1;
    memcpy(host, s, hl);
    host[hl] = '\0';
    if (strcmp(host, "localhost") == 0)
        snprintf(host, sizeof host, "127.0.0.1");
    else if (strcmp(host, "*") == 0)
        snprintf(host, sizeof host, "0.0.0.0");
    struct sockaddr_in *v4 = (struct sockaddr_in *)&a->sa;
    if (inet_pton(AF_INET, host, &v4->sin_addr) != 1)
        return -1;
    v4->sin_family = AF_INET;
    v4->sin_port = htons((uint16_t)port);
    a->len = sizeof *v4;
    a->loopback = (ntohl(v4->sin_addr.s_addr) >> 24) == 127;
    return 0;
}

static air_status_t
parse_addr(const cJSON *v, const char *path, const char *dflt, struct air__gw_addr *a, char *err,
           size_t errlen)
{
    const char *s = dflt;
    if (v != NULL) {
        if (!cJSON_IsString(v))
            return fail(err, errlen, "%s: expected a string \"host:port\"", path);
        s = v->valuestring;
    }
    if (air__gw_addr_parse(s, a) != 0)
        return fail(err, errlen,
                    "%s: expected \"host:port\" with an IP address literal (e.g. "
                    "\"127.0.0.1:8080\", \"[::1]:8080\", \"0.0.0.0:8080\") and a port 0..65535",
                    path);
    return AIR_OK;
}

static char *
dup_or_oom(const char *s, int *oom)
{
    char *d = air__strdup(s);
    if (d == NULL)
        *oom = 1;
    return d;
}

static air_status_t
parse_key(const cJSON *o, size_t i, struct air__gw_key *k, char *err, size_t errlen)
{
    static const char *const known[] = {"name", "key_env",    "key_sha256",    "rpm",
                                        "tpm",  "budget_usd", "budget_window", "models"};
    char path[48];
    snprintf(path, sizeof path, "keys[%zu]", i);
    if (!cJSON_IsObject(o))
        return fail(err, errlen, "%s: expected an object", path);
    air_status_t st = check_members(o, path, known, sizeof known / sizeof known[0], err, errlen);
    if (st != AIR_OK)
        return st;
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "name");
    if (name == NULL)
        return fail(err, errlen, "%s.name: required key is missing", path);
    if (!cJSON_IsString(name) || name->valuestring[0] == '\0')
        return fail(err, errlen, "%s.name: expected a non-empty string", path);
    for (const char *c = name->valuestring; *c; c++)
        if (!((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') ||
              *c == '_' || *c == '-' || *c == '.') ||
            c - name->valuestring >= 64)
            return fail(err, errlen, "%s.name: use at most 64 letters, digits, '.', '_' or '-'",
                        path);
    int oom = 0;
    k->name = dup_or_oom(name->valuestring, &oom);
    const cJSON *env = cJSON_GetObjectItemCaseSensitive(o, "key_env");
    const cJSON *sha = cJSON_GetObjectItemCaseSensitive(o, "key_sha256");
    if ((env == NULL) == (sha == NULL))
        return fail(err, errlen, "%s: exactly one of key_env and key_sha256 is required", path);
    if (env != NULL) {
        if (!cJSON_IsString(env))
            return fail(err, errlen, "%s.key_env: expected a string", path);
        if (!env_name_ok(env->valuestring))
            return fail(err, errlen,
                        "%s.key_env: must be the name of an environment variable (letters, "
                        "digits and '_'), not the key itself",
                        path);
        const char *val = getenv(env->valuestring);
        if (val == NULL || val[0] == '\0')
            return fail(err, errlen, "%s.key_env: environment variable %s is not set", path,
                        env->valuestring);
        air__sha256(val, strlen(val), k->digest);
        k->key_env = dup_or_oom(env->valuestring, &oom);
    } else {
        if (!cJSON_IsString(sha) || air__sha256_from_hex(sha->valuestring, k->digest) != 0)
            return fail(err, errlen, "%s.key_sha256: expected the key's SHA-256 as 64 hex digits",
                        path);
    }
    char sub[80];
    const cJSON *v;
    int64_t n = 0;
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "rpm")) != NULL) {
        snprintf(sub, sizeof sub, "%s.rpm", path);
        if (get_int(v, sub, 1, 100000000, "a positive integer", &n, err, errlen) != AIR_OK)
            return fail(err, errlen, "%s: expected a positive integer", sub);
        k->rpm = n;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "tpm")) != NULL) {
        snprintf(sub, sizeof sub, "%s.tpm", path);
        if (get_int(v, sub, 1, INT64_C(1000000000000), "a positive integer", &n, err, errlen) !=
            AIR_OK)
            return fail(err, errlen, "%s: expected a positive integer", sub);
        k->tpm = n;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "budget_usd")) != NULL) {
        if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble <= 0)
            return fail(err, errlen, "%s.budget_usd: expected a number > 0", path);
        k->budget_usd = v->valuedouble;
    }
    k->window = AIR_GW_WIN_MONTH;
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "budget_window")) != NULL) {
        static const char *const wins[] = {"minute", "hour", "day", "month"};
        int w = -1;
        for (int j = 0; j < 4 && cJSON_IsString(v); j++)
            if (strcmp(v->valuestring, wins[j]) == 0)
                w = j;
        if (w < 0)
            return fail(err, errlen,
                        "%s.budget_window: expected one of \"minute\", \"hour\", \"day\", "
                        "\"month\"",
                        path);
        if (k->budget_usd <= 0)
            return fail(err, errlen, "%s.budget_window: needs budget_usd", path);
        k->window = w;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "models")) != NULL) {
        if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) == 0)
            return fail(err, errlen, "%s.models: expected a non-empty array of model names", path);
        size_t m = (size_t)cJSON_GetArraySize(v);
        k->models = air__calloc(m, sizeof *k->models);
        if (k->models == NULL)
            return AIR_E_NOMEM;
        k->nmodels = m;
        size_t j = 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, v)
        {
            if (!cJSON_IsString(it) || it->valuestring[0] == '\0')
                return fail(err, errlen, "%s.models[%zu]: expected a non-empty string", path, j);
            k->models[j++] = dup_or_oom(it->valuestring, &oom);
        }
    }
    return oom ? AIR_E_NOMEM : AIR_OK;
}

static air_status_t
parse_admin(const cJSON *o, struct air__gw_conf *c, char *err, size_t errlen)
{
    static const char *const known[] = {"listen", "token_env"};
    if (o != NULL && !cJSON_IsObject(o))
        return fail(err, errlen, "admin: expected an object");
    if (o != NULL) {
        air_status_t st = check_members(o, "admin", known, 2, err, errlen);
        if (st != AIR_OK)
            return st;
    }
    air_status_t st =
        parse_addr(o ? cJSON_GetObjectItemCaseSensitive(o, "listen") : NULL, "admin.listen",
                   DEFAULT_ADMIN_LISTEN, &c->admin_listen, err, errlen);
    if (st != AIR_OK)
        return st;
    const cJSON *env = o ? cJSON_GetObjectItemCaseSensitive(o, "token_env") : NULL;
    if (env == NULL)
        return AIR_OK;
    if (!cJSON_IsString(env))
        return fail(err, errlen, "admin.token_env: expected a string");
    if (!env_name_ok(env->valuestring))
        return fail(err, errlen,
                    "admin.token_env: must be the name of an environment variable (letters, "
                    "digits and '_'), not the token itself");
    const char *val = getenv(env->valuestring);
    if (val == NULL || val[0] == '\0')
        return fail(err, errlen, "admin.token_env: environment variable %s is not set",
                    env->valuestring);
    air__sha256(val, strlen(val), c->admin_digest);
    c->admin_token_env = air__strdup(env->valuestring);
    if (c->admin_token_env == NULL)
        return AIR_E_NOMEM;
    c->admin_enabled = 1;
    return AIR_OK;
}

static air_status_t
parse_log(const cJSON *o, struct air__gw_conf *c, char *err, size_t errlen)
{
    static const char *const known[] = {"path", "level"};
    c->log_level = AIR_GW_LOG_INFO;
    const char *path = "-";
    if (o != NULL) {
        if (!cJSON_IsObject(o))
            return fail(err, errlen, "access_log: expected an object");
        air_status_t st = check_members(o, "access_log", known, 2, err, errlen);
        if (st != AIR_OK)
            return st;
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "path");
        if (p != NULL) {
            if (!cJSON_IsString(p) || p->valuestring[0] == '\0')
                return fail(err, errlen,
                            "access_log.path: expected a file name, or \"-\" for stderr");
            path = p->valuestring;
        }
        const cJSON *l = cJSON_GetObjectItemCaseSensitive(o, "level");
        if (l != NULL) {
            static const char *const levels[] = {"off", "error", "info"};
            int lv = -1;
            for (int j = 0; j < 3 && cJSON_IsString(l); j++)
                if (strcmp(l->valuestring, levels[j]) == 0)
                    lv = j;
            if (lv < 0)
                return fail(err, errlen,
                            "access_log.level: expected one of \"off\", \"error\", \"info\"");
            c->log_level = lv;
        }
    }
    c->log_path = air__strdup(path);
    if (c->log_path == NULL)
        return AIR_E_NOMEM;
    if (c->log_level == AIR_GW_LOG_OFF)
        return AIR_OK;
    if (strcmp(path, "-") == 0) {
        c->log_fd = dup(STDERR_FILENO);
        if (c->log_fd < 0)
            return fail(err, errlen, "access_log.path: cannot use stderr: %s", strerror(errno));
        return AIR_OK;
    }
    c->log_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (c->log_fd < 0)
        return fail(err, errlen, "access_log.path: cannot open %s: %s", path, strerror(errno));
    return AIR_OK;
}

/* Add (or raise the prices of) a /v1/models entry. */
static int
add_model(struct air__gw_conf *c, size_t *cap, const char *id, const char *owner, double in,
          double out)
{
    for (size_t i = 0; i < c->nmodels; i++) {
        if (strcmp(c->models[i].id, id) == 0) {
            if (in > c->models[i].in_price)
                c->models[i].in_price = in;
            if (out > c->models[i].out_price)
                c->models[i].out_price = out;
            return 0;
        }
    }
    if (c->nmodels == *cap) {
        size_t ncap = *cap ? *cap * 2 : 8;
        struct air__gw_model *m = air__realloc(c->models, ncap * sizeof *m);
        if (m == NULL)
            return -1;
        c->models = m;
        *cap = ncap;
    }
    struct air__gw_model *m = &c->models[c->nmodels];
    m->id = air__strdup(id);
    m->owned_by = air__strdup(owner);
    m->in_price = in;
    m->out_price = out;
    if (m->id == NULL || m->owned_by == NULL) {
        air__free(m->id);
        air__free(m->owned_by);
        return -1;
    }
    c->nmodels++;
    return 0;
}

static double
num_or0(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) && isfinite(v->valuedouble) && v->valuedouble > 0 ? v->valuedouble : 0;
}

/* Prices of model `name` at provider `prov` (0 when not listed). */
static void
price_of(const cJSON *providers, const char *prov, const char *name, double *in, double *out)
{
    *in = *out = 0;
    const cJSON *p;
    cJSON_ArrayForEach(p, providers)
    {
        const cJSON *pn = cJSON_GetObjectItemCaseSensitive(p, "name");
        if (!cJSON_IsString(pn) || strcmp(pn->valuestring, prov) != 0)
            continue;
        const cJSON *m;
        cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(p, "models"))
        {
            const cJSON *mn = cJSON_GetObjectItemCaseSensitive(m, "name");
            if (cJSON_IsString(mn) && strcmp(mn->valuestring, name) == 0) {
                *in = num_or0(m, "input_price_per_mtok");
                *out = num_or0(m, "output_price_per_mtok");
                return;
            }
        }
    }
}

/* The served models: every route's public name (priced at its dearest
 * target), then every provider model not already listed. Shapes the engine
 * will reject anyway are skipped here. */
static int
collect_models(const cJSON *root, struct air__gw_conf *c)
{
    size_t cap = 0;
    const cJSON *providers = cJSON_GetObjectItemCaseSensitive(root, "providers");
    const cJSON *r;
    cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(root, "routes"))
    {
        const cJSON *model = cJSON_GetObjectItemCaseSensitive(r, "model");
        if (!cJSON_IsString(model))
            continue;
        double in = 0, out = 0;
        const cJSON *t;
        cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(r, "targets"))
        {
            const cJSON *tp = cJSON_GetObjectItemCaseSensitive(t, "provider");
            const cJSON *tm = cJSON_GetObjectItemCaseSensitive(t, "model");
            if (!cJSON_IsString(tp))
                continue;
            double pi, po;
            price_of(providers, tp->valuestring,
                     cJSON_IsString(tm) ? tm->valuestring : model->valuestring, &pi, &po);
            in = pi > in ? pi : in;
            out = po > out ? po : out;
        }
        if (add_model(c, &cap, model->valuestring, "airouter", in, out) != 0)
            return -1;
    }
    const cJSON *p;
    cJSON_ArrayForEach(p, providers)
    {
        const cJSON *pn = cJSON_GetObjectItemCaseSensitive(p, "name");
        if (!cJSON_IsString(pn))
            continue;
        const cJSON *m;
        cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(p, "models"))
        {
            const cJSON *mn = cJSON_GetObjectItemCaseSensitive(m, "name");
            if (!cJSON_IsString(mn))
                continue;
            if (add_model(c, &cap, mn->valuestring, pn->valuestring,
                          num_or0(m, "input_price_per_mtok"),
                          num_or0(m, "output_price_per_mtok")) != 0)
                return -1;
        }
    }
    return 0;
}

static air_status_t
parse_root(cJSON *root, struct air__gw_conf *c, char *err, size_t errlen)
{
    air_status_t st;
    int64_t n = 0;
    /* Duplicates of the gateway's keys: the engine would report its own
     * duplicates, but ours are removed before it sees them. */
    for (const cJSON *it = root->child; it != NULL; it = it->next)
        for (size_t g = 0; g < sizeof gateway_keys / sizeof gateway_keys[0]; g++)
            if (strcmp(it->string, gateway_keys[g]) == 0)
                for (const cJSON *q = it->next; q != NULL; q = q->next)
                    if (strcmp(q->string, it->string) == 0)
                        return fail(err, errlen, "%s: duplicate key", it->string);

    st = parse_addr(cJSON_GetObjectItemCaseSensitive(root, "listen"), "listen", DEFAULT_LISTEN,
                    &c->listen, err, errlen);
    if (st != AIR_OK)
        return st;
    const cJSON *v;
    c->max_body_bytes = DEFAULT_MAX_BODY;
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "max_body_bytes")) != NULL) {
        if (get_int(v, "max_body_bytes", 1024, INT64_C(1073741824), "an integer", &n, err,
                    errlen) != AIR_OK)
            return AIR_E_CONFIG;
        c->max_body_bytes = (uint64_t)n;
    }
    c->max_connections = DEFAULT_MAX_CONN;
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "max_connections")) != NULL) {
        if (get_int(v, "max_connections", 1, 1000000, "an integer", &n, err, errlen) != AIR_OK)
            return AIR_E_CONFIG;
        c->max_connections = (uint32_t)n;
    }
    c->http_mode = AIR_GW_HTTP_WORKERS;
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "http_mode")) != NULL) {
        if (cJSON_IsString(v) && strcmp(v->valuestring, "workers") == 0)
            c->http_mode = AIR_GW_HTTP_WORKERS;
        else if (cJSON_IsString(v) && strcmp(v->valuestring, "pool") == 0)
            c->http_mode = AIR_GW_HTTP_POOL;
        else
            return fail(err, errlen, "http_mode: expected \"workers\" or \"pool\"");
    }
    c->client_timeout_ms = DEFAULT_CLIENT_TO_MS;
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "client_timeout_ms")) != NULL) {
        if (get_int(v, "client_timeout_ms", 1, 86400000, "an integer", &n, err, errlen) != AIR_OK)
            return AIR_E_CONFIG;
        c->client_timeout_ms = (uint32_t)n;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "keys")) != NULL) {
        if (!cJSON_IsArray(v))
            return fail(err, errlen, "keys: expected an array");
        size_t nk = (size_t)cJSON_GetArraySize(v);
        if (nk > 0) {
            c->keys = air__calloc(nk, sizeof *c->keys);
            if (c->keys == NULL)
                return AIR_E_NOMEM;
        }
        size_t i = 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, v)
        {
            c->nkeys = i + 1;
            st = parse_key(it, i, &c->keys[i], err, errlen);
            if (st != AIR_OK)
                return st;
            for (size_t j = 0; j < i; j++) {
                if (strcmp(c->keys[j].name, c->keys[i].name) == 0)
                    return fail(err, errlen, "keys[%zu].name: duplicate key name '%s'", i,
                                c->keys[i].name);
                if (air__sha256_equal(c->keys[j].digest, c->keys[i].digest))
                    return fail(err, errlen, "keys[%zu]: same key as keys[%zu] ('%s')", i, j,
                                c->keys[j].name);
            }
            i++;
        }
    }
    st = parse_admin(cJSON_GetObjectItemCaseSensitive(root, "admin"), c, err, errlen);
    if (st != AIR_OK)
        return st;
    return parse_log(cJSON_GetObjectItemCaseSensitive(root, "access_log"), c, err, errlen);
}

air_status_t
air__gw_conf_parse(const char *text, size_t len, struct air__gw_conf **out, char *err,
                   size_t errlen)
{
    return air__gw_conf_parse_ex(text, len, NULL, out, err, errlen);
}

/* access_log.level = level in root (the command line's --log-level). */
static int
override_log_level(cJSON *root, const char *level)
{
    cJSON *al = cJSON_GetObjectItemCaseSensitive(root, "access_log");
    if (al == NULL)
        al = cJSON_AddObjectToObject(root, "access_log");
    if (!cJSON_IsObject(al))
        return 0; /* parse_log reports the wrong type */
    cJSON *v = cJSON_CreateString(level);
    if (v == NULL)
        return -1;
    if (cJSON_GetObjectItemCaseSensitive(al, "level") != NULL)
        return cJSON_ReplaceItemInObjectCaseSensitive(al, "level", v) ? 0 : (cJSON_Delete(v), -1);
    return cJSON_AddItemToObject(al, "level", v) ? 0 : (cJSON_Delete(v), -1);
}

air_status_t
air__gw_conf_parse_ex(const char *text, size_t len, const char *log_level,
                      struct air__gw_conf **out, char *err, size_t errlen)
{
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    *out = NULL;
    struct air__gw_conf *c = air__calloc(1, sizeof *c);
    if (c == NULL)
        return AIR_E_NOMEM;
    atomic_init(&c->refs, 1);
    c->log_fd = -1;
    /* Skip a UTF-8 byte order mark, as the engine does. */
    size_t skip = len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0;
    cJSON *root = cJSON_ParseWithLength(text + skip, len - skip);
    air_status_t st;
    if (root == NULL || !cJSON_IsObject(root)) {
        /* Not ours to diagnose: the engine gives the line/column message. */
        cJSON_Delete(root);
        c->invalid = 1;
        c->engine_json = air__strndup(text, len);
        if (c->engine_json == NULL) {
            air__gw_conf_unref(c);
            return AIR_E_NOMEM;
        }
        *out = c;
        return AIR_OK;
    }
    if (log_level != NULL && override_log_level(root, log_level) != 0) {
        cJSON_Delete(root);
        air__gw_conf_unref(c);
        return AIR_E_NOMEM;
    }
    st = parse_root(root, c, err, errlen);
    if (st == AIR_OK && collect_models(root, c) != 0)
        st = AIR_E_NOMEM;
    if (st == AIR_OK) {
        for (size_t g = 0; g < sizeof gateway_keys / sizeof gateway_keys[0]; g++)
            cJSON_DeleteItemFromObjectCaseSensitive(root, gateway_keys[g]);
        char *s = cJSON_PrintUnformatted(root);
        if (s == NULL) {
            st = AIR_E_NOMEM;
        } else {
            c->engine_json = air__strdup(s);
            cJSON_free(s);
            if (c->engine_json == NULL)
                st = AIR_E_NOMEM;
        }
    }
    cJSON_Delete(root);
    if (st != AIR_OK) {
        if (st == AIR_E_NOMEM)
            fail(err, errlen, "out of memory");
        air__gw_conf_unref(c);
        return st;
    }
    *out = c;
    return AIR_OK;
}

void
air__gw_conf_ref(struct air__gw_conf *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
}

void
air__gw_conf_unref(struct air__gw_conf *c)
{
    if (c == NULL)
        return;
    /* acq_rel: the last owner sees every other owner's writes before freeing. */
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (c->engine_json != NULL) {
        /* It may hold nothing secret, but wipe it like the engine does. */
        memset(c->engine_json, 0, strlen(c->engine_json));
        air__free(c->engine_json);
    }
    for (size_t i = 0; i < c->nkeys; i++) {
        struct air__gw_key *k = &c->keys[i];
        air__free(k->name);
        air__free(k->key_env);
        for (size_t j = 0; j < k->nmodels; j++)
            air__free(k->models[j]);
        air__free(k->models);
        air__gw_keystate_unref(k->st);
        memset(k->digest, 0, sizeof k->digest);
    }
    air__free(c->keys);
    air__free(c->admin_token_env);
    memset(c->admin_digest, 0, sizeof c->admin_digest);
    air__free(c->log_path);
    if (c->log_fd >= 0)
        close(c->log_fd);
    for (size_t i = 0; i < c->nmodels; i++) {
        air__free(c->models[i].id);
        air__free(c->models[i].owned_by);
    }
    air__free(c->models);
    air__free(c);
}

const struct air__gw_model *
air__gw_conf_model(const struct air__gw_conf *c, const char *id)
{
    for (size_t i = 0; i < c->nmodels; i++)
        if (strcmp(c->models[i].id, id) == 0)
            return &c->models[i];
    return NULL;
}

int
air__gw_key_allows(const struct air__gw_key *k, const char *id)
{
    if (k == NULL || k->models == NULL)
        return 1;
    for (size_t i = 0; i < k->nmodels; i++)
        if (strcmp(k->models[i], id) == 0)
            return 1;
    return 0;
}

char *
air__gw_conf_json(const struct air__gw_conf *c)
{
    static const char *const wins[] = {"minute", "hour", "day", "month"};
    static const char *const levels[] = {"off", "error", "info"};
    air_buf_t b = AIR_BUF_INIT;
    air__buf_puts(&b, "{\"listen\":");
    air__buf_json_str(&b, c->listen.text, strlen(c->listen.text));
    air__buf_printf(&b, ",\"max_body_bytes\":%llu,\"max_connections\":%u,\"client_timeout_ms\":%u",
                    (unsigned long long)c->max_body_bytes, c->max_connections,
                    c->client_timeout_ms);
    air__buf_printf(&b, ",\"http_mode\":\"%s\"",
                    c->http_mode == AIR_GW_HTTP_POOL ? "pool" : "workers");
    air__buf_puts(&b, ",\"keys\":[");
    for (size_t i = 0; i < c->nkeys; i++) {
        const struct air__gw_key *k = &c->keys[i];
        air__buf_puts(&b, i ? ",{\"name\":" : "{\"name\":");
        air__buf_json_str(&b, k->name, strlen(k->name));
        if (k->key_env != NULL) {
            air__buf_puts(&b, ",\"key_env\":");
            air__buf_json_str(&b, k->key_env, strlen(k->key_env));
        } else {
            air__buf_puts(&b, ",\"key_sha256\":\"<redacted>\"");
        }
        if (k->rpm)
            air__buf_printf(&b, ",\"rpm\":%lld", (long long)k->rpm);
        if (k->tpm)
            air__buf_printf(&b, ",\"tpm\":%lld", (long long)k->tpm);
        if (k->budget_usd > 0)
            air__buf_printf(&b, ",\"budget_usd\":%.17g,\"budget_window\":\"%s\"", k->budget_usd,
                            wins[k->window]);
        if (k->models != NULL) {
            air__buf_puts(&b, ",\"models\":[");
            for (size_t j = 0; j < k->nmodels; j++) {
                if (j)
                    air__buf_putc(&b, ',');
                air__buf_json_str(&b, k->models[j], strlen(k->models[j]));
            }
            air__buf_putc(&b, ']');
        }
        air__buf_putc(&b, '}');
    }
    air__buf_puts(&b, "],\"admin\":{\"listen\":");
    air__buf_json_str(&b, c->admin_listen.text, strlen(c->admin_listen.text));
    if (c->admin_token_env != NULL) {
        air__buf_puts(&b, ",\"token_env\":");
        air__buf_json_str(&b, c->admin_token_env, strlen(c->admin_token_env));
    }
    air__buf_puts(&b, "},\"access_log\":{\"path\":");
    air__buf_json_str(&b, c->log_path ? c->log_path : "-", strlen(c->log_path ? c->log_path : "-"));
    air__buf_printf(&b, ",\"level\":\"%s\"}}", levels[c->log_level]);
    return air__buf_steal(&b, NULL);
}
