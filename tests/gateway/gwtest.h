/*
 * gwtest.h - helpers shared by the gateway tests: a libcurl HTTP client,
 * mock providers and gateways on 127.0.0.1, and a Prometheus text-format
 * validator. Header-only (static inline), included by each test file.
 */
#ifndef AIR_TEST_GWTEST_H
#define AIR_TEST_GWTEST_H

#include <ctype.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <curl/curl.h>

#include "airouter.h"
#include "gateway.h"
#include "mock.h"

/* ------------------------------------------------------------ HTTP client */

struct http_resp {
    long status;
    char *body;
    size_t len;
    char *headers; /* every header and trailer line, as received */
    size_t hlen;
    int curl_rc;
};

static inline size_t
gwt_grow(char **p, size_t *len, const char *d, size_t n)
{
    char *np = realloc(*p, *len + n + 1);
    if (np == NULL)
        return 0;
    memcpy(np + *len, d, n);
    *len += n;
    np[*len] = '\0';
    *p = np;
    return n;
}

static inline size_t
gwt_on_body(char *d, size_t sz, size_t n, void *ud)
{
    struct http_resp *r = ud;
    return gwt_grow(&r->body, &r->len, d, sz * n);
}

static inline size_t
gwt_on_header(char *d, size_t sz, size_t n, void *ud)
{
    struct http_resp *r = ud;
    return gwt_grow(&r->headers, &r->hlen, d, sz * n);
}

static inline void
http_resp_free(struct http_resp *r)
{
    free(r->body);
    free(r->headers);
    memset(r, 0, sizeof *r);
}

/*
 * One request. hdrs: NULL-terminated "Name: value" lines. body may be
 * NULL. Returns the response (status 0 and curl_rc set on a transport
 * error).
 */
static inline struct http_resp
http_req(const char *method, const char *url, const char *body, const char *const *hdrs)
{
    struct http_resp r;
    memset(&r, 0, sizeof r);
    CURL *e = curl_easy_init();
    struct curl_slist *h = NULL;
    for (size_t i = 0; hdrs != NULL && hdrs[i] != NULL; i++)
        h = curl_slist_append(h, hdrs[i]);
    if (body != NULL)
        h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, "Expect:");
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (body != NULL) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, gwt_on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, gwt_on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, &r);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 20000L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    r.curl_rc = (int)curl_easy_perform(e);
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &r.status);
    curl_slist_free_all(h);
    curl_easy_cleanup(e);
    if (r.body == NULL)
        r.body = calloc(1, 1);
    if (r.headers == NULL)
        r.headers = calloc(1, 1);
    return r;
}

/* Value of header `name` (last occurrence, trailers included), copied into
 * out; NULL when absent. */
static inline const char *
http_header(const struct http_resp *r, const char *name, char *out, size_t n)
{
    const char *found = NULL;
    size_t nl = strlen(name);
    for (const char *p = r->headers; p != NULL && *p;
         p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':')
            found = p + nl + 1;
    }
    if (found == NULL)
        return NULL;
    while (*found == ' ')
        found++;
    size_t l = strcspn(found, "\r\n");
    if (l >= n)
        l = n - 1;
    memcpy(out, found, l);
    out[l] = '\0';
    return out;
}

static inline char *
gwt_url(char *buf, size_t n, uint16_t port, const char *path)
{
    snprintf(buf, n, "http://127.0.0.1:%u%s", (unsigned)port, path);
    return buf;
}

static inline uint64_t
gwt_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static inline void
gwt_sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ------------------------------------------------- raw sockets (keep-alive) */

/* A TCP connection to 127.0.0.1:port, or -1. */
static inline int
gwt_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/*
 * Wait up to timeout_ms for fd to become readable and read what is there.
 * Returns the byte count, 0 when the peer closed, -1 on a reset or error,
 * -2 on timeout.
 */
static inline ssize_t
gwt_recv(int fd, char *buf, size_t n, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int rc = poll(&p, 1, timeout_ms);
    if (rc == 0)
        return -2;
    if (rc < 0)
        return -1;
    ssize_t got = recv(fd, buf, n, 0);
    return got < 0 ? -1 : got;
}

/*
 * Send one HTTP/1.1 request on fd (kept alive) and read one response with a
 * Content-Length. Returns its status (0 on error or timeout); body gets the
 * response body, NUL-terminated and truncated to n - 1.
 */
static inline int
gwt_raw_request(int fd, const char *method, const char *path, const char *body, char *out, size_t n)
{
    char req[8192];
    size_t bl = body ? strlen(body) : 0;
    int rl = snprintf(req, sizeof req,
                      "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\n\r\n%s",
                      method, path, bl, body ? body : "");
    if (rl < 0 || (size_t)rl >= sizeof req || send(fd, req, (size_t)rl, MSG_NOSIGNAL) != rl)
        return 0;
    char resp[65536];
    size_t have = 0;
    const char *hend = NULL;
    uint64_t t0 = gwt_now_ms();
    for (;;) {
        if (hend != NULL) {
            const char *cl = strcasestr(resp, "\r\nContent-Length:");
            if (cl == NULL || cl > hend)
                return 0;
            size_t want = (size_t)strtoul(cl + 17, NULL, 10);
            size_t hl = (size_t)(hend - resp) + 4;
            if (have >= hl + want) {
                size_t c = want < n - 1 ? want : n - 1;
                memcpy(out, resp + hl, c);
                out[c] = '\0';
                return atoi(resp + 9);
            }
        }
        if (have + 1 >= sizeof resp || gwt_now_ms() - t0 > 10000)
            return 0;
        ssize_t got = gwt_recv(fd, resp + have, sizeof resp - 1 - have, 10000);
        if (got <= 0)
            return 0;
        have += (size_t)got;
        resp[have] = '\0';
        if (hend == NULL)
            hend = strstr(resp, "\r\n\r\n");
    }
}

/* ------------------------------------------------------- mocks, gateways */

static inline air_mock_t *
gwt_mock(const air_mock_opts_t *o)
{
    air_mock_t *m = NULL;
    char err[256];
    if (air_mock_start(o, &m, err, sizeof err) != 0)
        fail_msg("mock: %s", err);
    return m;
}

static inline air_mock_t *
gwt_mock_plain(void)
{
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    return gwt_mock(&o);
}

/*
 * A config text: providers p0..p{n-1} (one per mock, each listing model
 * up-<i> priced in_price/out_price per Mtok), a route "m" over them in
 * order, "listen" on an ephemeral loopback port, and `extra` top-level
 * members. The caller frees the result.
 */
static inline char *
gwt_config(air_mock_t **mocks, int n, const char *extra)
{
    size_t cap = 16384;
    char *buf = malloc(cap);
    int off = snprintf(buf, cap, "{\"listen\":\"127.0.0.1:0\",%s%s\"providers\":[",
                       extra ? extra : "", extra && extra[0] ? "," : "");
    for (int i = 0; i < n; i++)
        off += snprintf(buf + off, cap - (size_t)off,
                        "%s{\"name\":\"p%d\",\"kind\":\"openai\","
                        "\"base_url\":\"http://127.0.0.1:%u/v1\",\"models\":[{\"name\":\"up-%d\","
                        "\"input_price_per_mtok\":1000,\"output_price_per_mtok\":2000}]}",
                        i ? "," : "", i, (unsigned)air_mock_port(mocks[i]), i);
    off += snprintf(buf + off, cap - (size_t)off, "],\"routes\":[{\"model\":\"m\",\"targets\":[");
    for (int i = 0; i < n; i++)
        off += snprintf(buf + off, cap - (size_t)off,
                        "%s{\"provider\":\"p%d\",\"model\":\"up-%d\"}", i ? "," : "", i, i);
    snprintf(buf + off, cap - (size_t)off, "]}]}");
    return buf;
}

static inline struct air__gw *
gwt_gateway(const char *cfg)
{
    struct air__gw_opts o;
    memset(&o, 0, sizeof o);
    o.config_text = cfg;
    o.quiet = 1;
    o.threads = 2;
    /* CTest runs the gateway suites once per HTTP mode (see CMakeLists.txt). */
    const char *mode = getenv("AIR_TEST_HTTP_MODE");
    if (mode != NULL && strcmp(mode, "pool") == 0)
        o.http_mode = AIR_GW_HTTP_POOL;
    else if (mode != NULL && strcmp(mode, "workers") == 0)
        o.http_mode = AIR_GW_HTTP_WORKERS;
    struct air__gw *gw = NULL;
    char err[512];
    air_status_t st = air__gw_start(&o, &gw, err, sizeof err);
    if (st != AIR_OK)
        fail_msg("air__gw_start: %s (%s)", err, cfg);
    return gw;
}

static const char *const gwt_plain_body =
    "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hello there\"}]}";
static const char *const gwt_stream_body =
    "{\"model\":\"m\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hello "
    "there\"}]}";

/* ----------------------------------------------------- Prometheus checks */

static inline int
gwt_name_ok(const char *s, size_t n)
{
    if (n == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_' || s[0] == ':'))
        return 0;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == ':'))
            return 0;
    return 1;
}

/*
 * Validate Prometheus text format 0.0.4: every line is a comment (# HELP
 * name text / # TYPE name type) or a sample `name{label="v",...} value`;
 * each family has at most one HELP and one TYPE, given before its samples;
 * samples of a family are contiguous; histogram samples are _bucket (with
 * le), _sum and _count, buckets non-decreasing and ending with +Inf equal to
 * _count. Returns NULL when valid, else a static description of the first
 * problem (with the line).
 */
static inline const char *
prom_validate(const char *text)
{
    static char why[2600];
    char fam[128] = "", type[16] = "";
    char done[256][128];
    int ndone = 0;
    double last_bucket = -1, inf_bucket = -1;
    int lineno = 0;
    const char *p = text;
    while (*p) {
        const char *e = strchr(p, '\n');
        if (e == NULL) {
            snprintf(why, sizeof why, "last line lacks a newline");
            return why;
        }
        lineno++;
        size_t n = (size_t)(e - p);
        char line[2048];
        if (n >= sizeof line) {
            snprintf(why, sizeof why, "line %d too long", lineno);
            return why;
        }
        memcpy(line, p, n);
        line[n] = '\0';
        p = e + 1;
        if (n == 0)
            continue;
        if (line[0] == '#') {
            char kw[8], name[128], rest[1024] = "";
            if (sscanf(line, "# %7s %127s %1023[^\n]", kw, name, rest) < 2)
                continue; /* a plain comment */
            if (strcmp(kw, "HELP") != 0 && strcmp(kw, "TYPE") != 0)
                continue;
            if (!gwt_name_ok(name, strlen(name))) {
                snprintf(why, sizeof why, "line %d: bad metric name '%s'", lineno, name);
                return why;
            }
            if (strcmp(name, fam) != 0) {
                for (int i = 0; i < ndone; i++)
                    if (strcmp(done[i], name) == 0) {
                        snprintf(why, sizeof why, "line %d: family %s declared twice", lineno,
                                 name);
                        return why;
                    }
                if (fam[0] && ndone < 256)
                    snprintf(done[ndone++], sizeof done[0], "%s", fam);
                snprintf(fam, sizeof fam, "%s", name);
                type[0] = '\0';
                last_bucket = -1;
            }
            if (strcmp(kw, "TYPE") == 0) {
                if (type[0]) {
                    snprintf(why, sizeof why, "line %d: second TYPE for %s", lineno, name);
                    return why;
                }
                if (strcmp(rest, "counter") && strcmp(rest, "gauge") && strcmp(rest, "histogram") &&
                    strcmp(rest, "summary") && strcmp(rest, "untyped")) {
                    snprintf(why, sizeof why, "line %d: bad type '%s'", lineno, rest);
                    return why;
                }
                snprintf(type, sizeof type, "%.15s", rest);
            }
            continue;
        }
        /* A sample. */
        size_t nl = strcspn(line, "{ ");
        if (!gwt_name_ok(line, nl)) {
            snprintf(why, sizeof why, "line %d: bad sample name: %s", lineno, line);
            return why;
        }
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)nl, line);
        const char *q = line + nl;
        char le[64] = "";
        if (*q == '{') {
            q++;
            while (*q != '}') {
                size_t ln = strcspn(q, "=");
                if (!gwt_name_ok(q, ln) || q[ln] != '=' || q[ln + 1] != '"') {
                    snprintf(why, sizeof why, "line %d: bad label: %s", lineno, line);
                    return why;
                }
                int is_le = ln == 2 && strncmp(q, "le", 2) == 0;
                q += ln + 2;
                size_t vi = 0;
                while (*q && *q != '"') {
                    if (*q == '\\') {
                        if (q[1] != '\\' && q[1] != '"' && q[1] != 'n') {
                            snprintf(why, sizeof why, "line %d: bad escape", lineno);
                            return why;
                        }
                        q++;
                    }
                    if (is_le && vi + 1 < sizeof le)
                        le[vi++] = *q;
                    q++;
                }
                if (*q != '"') {
                    snprintf(why, sizeof why, "line %d: unterminated label value", lineno);
                    return why;
                }
                q++;
                if (*q == ',')
                    q++;
                else if (*q != '}') {
                    snprintf(why, sizeof why, "line %d: expected , or }: %s", lineno, line);
                    return why;
                }
            }
            q++;
        }
        if (*q != ' ') {
            snprintf(why, sizeof why, "line %d: expected a space before the value", lineno);
            return why;
        }
        q++;
        char *end;
        double v = strtod(q, &end);
        if (end == q || (*end != '\0' && *end != ' ')) {
            snprintf(why, sizeof why, "line %d: bad value: %s", lineno, line);
            return why;
        }
        /* Which family does it belong to? */
        size_t fl = strlen(fam);
        int ok = strcmp(name, fam) == 0;
        const char *suffix = fl && strncmp(name, fam, fl) == 0 ? name + fl : "";
        if (strcmp(type, "histogram") == 0) {
            ok = strcmp(suffix, "_bucket") == 0 || strcmp(suffix, "_sum") == 0 ||
                 strcmp(suffix, "_count") == 0;
            if (strcmp(suffix, "_bucket") == 0) {
                if (le[0] == '\0') {
                    snprintf(why, sizeof why, "line %d: bucket without le", lineno);
                    return why;
                }
                if (last_bucket >= 0 && v < last_bucket) {
                    snprintf(why, sizeof why, "line %d: buckets decrease", lineno);
                    return why;
                }
                last_bucket = v;
                if (strcmp(le, "+Inf") == 0) {
                    inf_bucket = v;
                    last_bucket = -1;
                }
            } else if (strcmp(suffix, "_count") == 0) {
                if (inf_bucket >= 0 && v != inf_bucket) {
                    snprintf(why, sizeof why, "line %d: _count != +Inf bucket", lineno);
                    return why;
                }
                inf_bucket = -1;
            }
        }
        if (!ok || !type[0]) {
            snprintf(why, sizeof why, "line %d: sample %s outside its family (current %s)", lineno,
                     name, fam);
            return why;
        }
    }
    return NULL;
}

/* Sum of the values of samples whose text starts with `prefix` (name and
 * optionally the start of the labels) and contains every `need` string. */
static inline double
prom_sum(const char *text, const char *prefix, const char *need1, const char *need2)
{
    double sum = 0;
    size_t pl = strlen(prefix);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n < pl || strncmp(p, prefix, pl) != 0 || p[0] == '#')
            continue;
        char line[2048];
        snprintf(line, sizeof line, "%.*s", (int)n, p);
        if ((need1 && !strstr(line, need1)) || (need2 && !strstr(line, need2)))
            continue;
        const char *sp = strrchr(line, ' ');
        if (sp)
            sum += strtod(sp + 1, NULL);
    }
    return sum;
}

#endif
