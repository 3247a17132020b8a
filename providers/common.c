/*
 * common.c - helpers shared by the provider adapters.
 *
 * DESIGN: everything here is a pure function of its arguments (no clock, no
 * locale, no globals), so adapters stay reentrant and the golden tests are
 * deterministic. Error classification is split in layers that an adapter
 * composes: the HTTP status gives the class and the retry/failover flags
 * (spec section 7), the body gives the vendor's message/type/code (every
 * shape of spec section 4), the headers give the server's retry delay and the
 * x-should-retry override. Vendor-specific corrections (OpenAI 429
 * insufficient_quota, Gemini API_KEY_INVALID, ...) are applied by each
 * adapter after these.
 *
 * Numbers and dates are parsed by hand: strtod and strptime depend on the
 * host's locale, which an embedded library must not assume.
 */
#include "common.h"

#include <stdio.h>
#include <string.h>

#include "alloc.h"

/* Longest delay we represent (about 31 years): keeps the arithmetic far away
 * from int64 overflow whatever the header says. */
#define MAX_DELAY_MS ((int64_t)1000000000000LL)

/* Bytes of a plain-text/HTML error body kept as the message. */
#define TEXT_MSG_MAX 200

void
air__strlcpy(char *dst, const char *src, size_t size)
{
    if (size == 0)
        return;
    if (src == NULL) {
        dst[0] = '\0';
        return;
    }
    size_t n = strnlen(src, size - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* Copy n bytes of text into a fixed array, replacing control characters by
 * spaces (messages end up in logs and headers) and never cutting a UTF-8
 * sequence in half. */
static void
copy_text(char *dst, size_t size, const char *src, size_t n)
{
    if (size == 0)
        return;
    if (n > size - 1) {
        n = size - 1;
        /* Back off to a character boundary: drop trailing continuation
         * bytes and the lead byte they belong to. */
        size_t k = n;
        while (k > 0 && ((unsigned char)src[k] & 0xC0) == 0x80)
            k--;
        n = k;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[i] = (c < 0x20 || c == 0x7F) ? ' ' : (char)c;
    }
    dst[n] = '\0';
}

/* ------------------------------------------------------------------------ */
/* Status table (spec section 7)                                             */

static void
set_class(air_fault_t *f, air_errclass_t cls, int retry, int failover, int unusable)
{
    f->cls = cls;
    f->retry = retry;
    f->failover = failover;
    f->unusable = unusable;
}

void
air__fault_from_status(air_fault_t *f, int status)
{
    f->http_status = status;
    f->retry_after_ms = -1;
    switch (status) {
    case 400:
    case 413:
    case 422:
        set_class(f, AIR_ERR_INVALID_REQUEST, 0, 0, 0);
        return;
    case 401:
    case 402:
    case 403:
        /* The key is wrong, lacks access or the account cannot pay: this
         * deployment is useless until someone fixes it. */
        set_class(f, AIR_ERR_AUTH, 0, 1, 1);
        return;
    case 404:
        set_class(f, AIR_ERR_NOT_FOUND, 0, 1, 0);
        return;
    case 408:
    case 504:
        set_class(f, AIR_ERR_TIMEOUT, 1, 1, 0);
        return;
    case 409:
        set_class(f, AIR_ERR_UPSTREAM, 1, 1, 0);
        return;
    case 429:
        set_class(f, AIR_ERR_RATE_LIMITED, 1, 1, 0);
        return;
    case 503:
    case 529:
        set_class(f, AIR_ERR_OVERLOADED, 1, 1, 0);
        return;
    default:
        break;
    }
    if (status >= 500 && status <= 599)
        set_class(f, AIR_ERR_UPSTREAM, 1, 1, 0);
    else if (status >= 400 && status <= 499)
        set_class(f, AIR_ERR_INVALID_REQUEST, 0, 0, 0);
    else
        /* 1xx/3xx or a 2xx handed here by mistake: the upstream misbehaved;
         * another deployment may do better, the same one probably not. */
        set_class(f, AIR_ERR_UPSTREAM, 0, 1, 0);
}

/* ------------------------------------------------------------------------ */
/* Error bodies (spec section 4, last paragraph)                             */

/* A string member, or a number member rendered as an integer ("code": 400
 * from vLLM, OpenRouter). Writes nothing when absent or of another type. */
static void
take_scalar(char *dst, size_t size, const cJSON *obj, const char *key)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (cJSON_IsString(it) && it->valuestring != NULL) {
        copy_text(dst, size, it->valuestring, strlen(it->valuestring));
    } else if (cJSON_IsNumber(it)) {
        char tmp[32];
        double v = it->valuedouble;
        if (v > -1e15 && v < 1e15 && v == (double)(long long)v)
            snprintf(tmp, sizeof tmp, "%lld", (long long)v);
        else
            snprintf(tmp, sizeof tmp, "%g", v);
        copy_text(dst, size, tmp, strlen(tmp));
    }
}

/* The message member: a string, or (Mistral 422, FastAPI "detail") a JSON
 * value, rendered compactly. */
static void
take_message(air_fault_t *f, const cJSON *obj, const char *key)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (it == NULL || cJSON_IsNull(it))
        return;
    if (cJSON_IsString(it) && it->valuestring != NULL) {
        copy_text(f->message, sizeof f->message, it->valuestring, strlen(it->valuestring));
        return;
    }
    char *s = cJSON_PrintUnformatted(it);
    if (s != NULL) {
        copy_text(f->message, sizeof f->message, s, strlen(s));
        cJSON_free(s);
    }
}

/* Read one object in any of the known shapes. Returns 1 when it recognised
 * an error shape. */
static int
parse_error_object(air_fault_t *f, const cJSON *obj)
{
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(obj, "error");
    if (cJSON_IsObject(err)) {
        /* {"error":{"message","type","code","param"}} (OpenAI, Anthropic's
         * inner object, OpenRouter with an integer code, Gemini with
         * "status" instead of "type"). */
        take_message(f, err, "message");
        take_scalar(f->type, sizeof f->type, err, "type");
        if (f->type[0] == '\0')
            take_scalar(f->type, sizeof f->type, err, "status");
        take_scalar(f->code, sizeof f->code, err, "code");
        return 1;
    }
    if (cJSON_IsString(err)) {
        /* {"error":"text"} (Together), maybe with flat type/code beside. */
        take_message(f, obj, "error");
        take_scalar(f->type, sizeof f->type, obj, "type");
        take_scalar(f->code, sizeof f->code, obj, "code");
        return 1;
    }
    if (cJSON_GetObjectItemCaseSensitive(obj, "message") != NULL) {
        /* Flat {"object":"error","message","type","param","code"} (Mistral,
         * vLLM) or {"message":...,"type":...} (Together). */
        take_message(f, obj, "message");
        take_scalar(f->type, sizeof f->type, obj, "type");
        take_scalar(f->code, sizeof f->code, obj, "code");
        return 1;
    }
    if (cJSON_GetObjectItemCaseSensitive(obj, "detail") != NULL) {
        /* FastAPI-style {"detail": "..."} from self-hosted servers. */
        take_message(f, obj, "detail");
        return 1;
    }
    return 0;
}

static void
parse_text(air_fault_t *f, const char *s, size_t n)
{
    while (n > 0 && (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')) {
        s++;
        n--;
    }
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        n--;
    if (n == 0)
        return;
    size_t lim = TEXT_MSG_MAX + 1 < sizeof f->message ? TEXT_MSG_MAX + 1 : sizeof f->message;
    copy_text(f->message, lim, s, n);
}

void
air__fault_parse_body(air_fault_t *f, const char *body, size_t len)
{
    if (body == NULL || len == 0)
        return;
    const char *s = body;
    size_t n = len;
    while (n > 0 && (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')) {
        s++;
        n--;
    }
    if (n > 0 && (*s == '{' || *s == '[')) {
        cJSON *root = cJSON_ParseWithLength(s, n);
        if (root != NULL) {
            const cJSON *obj = root;
            if (cJSON_IsArray(root))
                obj = cJSON_GetArrayItem(root, 0);
            int ok = cJSON_IsObject(obj) && parse_error_object(f, obj);
            cJSON_Delete(root);
            if (ok)
                return;
        }
    }
    /* Not JSON, or JSON of no known shape: the text itself is the best
     * message we have. */
    parse_text(f, body, len);
}

/* ------------------------------------------------------------------------ */
/* Retry-After                                                               */

static int
lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

static int
ieq(const char *a, const char *b)
{
    while (*a && *b && lower((unsigned char)*a) == lower((unsigned char)*b)) {
        a++;
        b++;
    }
    return *a == '\0' && *b == '\0';
}

/* Parse "[-]digits[.digits]" with optional surrounding blanks and return the
 * value times `scale` (1 or 1000), rounded to the nearest integer. Returns
 * 0 on success, -1 when s is not such a number. */
static int
parse_decimal(const char *s, int64_t scale, int64_t *out)
{
    while (*s == ' ' || *s == '\t')
        s++;
    int neg = 0;
    if (*s == '-' || *s == '+') {
        neg = *s == '-';
        s++;
    }
    int64_t ip = 0;
    int digits = 0;
    while (*s >= '0' && *s <= '9') {
        if (ip < MAX_DELAY_MS)
            ip = ip * 10 + (*s - '0');
        s++;
        digits++;
    }
    /* Fraction, scaled to parts per million; extra digits only round. */
    int64_t frac = 0, fscale = 1000000;
    if (*s == '.') {
        s++;
        while (*s >= '0' && *s <= '9') {
            if (fscale > 1) {
                fscale /= 10;
                frac += (*s - '0') * fscale;
            }
            s++;
            digits++;
        }
    }
    while (*s == ' ' || *s == '\t')
        s++;
    if (digits == 0 || *s != '\0')
        return -1;
    if (ip > MAX_DELAY_MS)
        ip = MAX_DELAY_MS;
    int64_t v = ip * scale + (frac * scale + 500000) / 1000000;
    if (v > MAX_DELAY_MS)
        v = MAX_DELAY_MS;
    *out = neg ? -v : v;
    return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
 * days_from_civil): no timegm, no TZ, no locale. */
int64_t
air__days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int
air__take_digits(const char **sp, int ndigits, int *out)
{
    const char *s = *sp;
    int v = 0;
    for (int i = 0; i < ndigits; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *sp = s + ndigits;
    *out = v;
    return 0;
}

/* IMF-fixdate, "Sun, 06 Nov 1994 08:49:37 GMT" (RFC 9110 5.6.7). The weekday
 * is optional and not checked against the date. Returns 0 and the time in
 * unix milliseconds, or -1. */
static int
parse_http_date(const char *s, int64_t *out_ms)
{
    static const char months[12][4] = {"jan", "feb", "mar", "apr", "may", "jun",
                                       "jul", "aug", "sep", "oct", "nov", "dec"};
    while (*s == ' ')
        s++;
    const char *comma = strchr(s, ',');
    if (comma != NULL)
        s = comma + 1;
    while (*s == ' ')
        s++;
    int day, year, hh, mm, ss, mon = -1;
    if (air__take_digits(&s, 2, &day) != 0 || *s++ != ' ')
        return -1;
    for (int i = 0; i < 12; i++) {
        if (lower((unsigned char)s[0]) == months[i][0] &&
            lower((unsigned char)s[1]) == months[i][1] &&
            lower((unsigned char)s[2]) == months[i][2]) {
            mon = i + 1;
            break;
        }
    }
    if (mon < 0)
        return -1;
    s += 3;
    if (*s++ != ' ' || air__take_digits(&s, 4, &year) != 0 || *s++ != ' ')
        return -1;
    if (air__take_digits(&s, 2, &hh) != 0 || *s++ != ':' || air__take_digits(&s, 2, &mm) != 0 ||
        *s++ != ':' || air__take_digits(&s, 2, &ss) != 0)
        return -1;
    while (*s == ' ')
        s++;
    if (!(lower((unsigned char)s[0]) == 'g' && lower((unsigned char)s[1]) == 'm' &&
          lower((unsigned char)s[2]) == 't'))
        return -1;
    s += 3;
    while (*s == ' ')
        s++;
    if (*s != '\0')
        return -1;
    if (day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60)
        return -1;
    int64_t days = air__days_from_civil(year, mon, day);
    *out_ms = ((days * 24 + hh) * 60 + mm) * 60000 + (int64_t)ss * 1000;
    return 0;
}

int64_t
air__retry_after_ms(const air_http_in_t *in)
{
    if (in == NULL || in->header == NULL)
        return -1;
    int64_t v;
    const char *h = in->header(in->hctx, "retry-after-ms");
    if (h != NULL && parse_decimal(h, 1, &v) == 0)
        return v < 0 ? 0 : v;
    h = in->header(in->hctx, "retry-after");
    if (h == NULL)
        return -1;
    if (parse_decimal(h, 1000, &v) == 0)
        return v < 0 ? 0 : v;
    int64_t at;
    if (parse_http_date(h, &at) != 0)
        return -1;
    v = at - in->now_unix_ms;
    if (v < 0)
        return 0;
    return v > MAX_DELAY_MS ? MAX_DELAY_MS : v;
}

void
air__fault_apply_should_retry(air_fault_t *f, const air_http_in_t *in)
{
    if (in == NULL || in->header == NULL)
        return;
    const char *h = in->header(in->hctx, "x-should-retry");
    if (h == NULL)
        return;
    if (ieq(h, "false"))
        f->retry = 0;
    else if (ieq(h, "true") && f->cls != AIR_ERR_INVALID_REQUEST)
        f->retry = 1;
}

/* ------------------------------------------------------------------------ */
/* Small owned strings                                                       */

char *
air__url_join(const char *base, const char *path)
{
    size_t bl = strlen(base);
    while (bl > 0 && base[bl - 1] == '/')
        bl--;
    size_t pl = strlen(path);
    char *u = air__malloc(bl + pl + 1);
    if (u == NULL)
        return NULL;
    memcpy(u, base, bl);
    memcpy(u + bl, path, pl);
    u[bl + pl] = '\0';
    return u;
}

char *
air__header(const char *name, const char *value)
{
    size_t nl = strlen(name), vl = strlen(value);
    /* "Name:" alone for an empty value: libcurl's way to suppress a header
     * it would add itself (Expect:). */
    size_t len = nl + 1 + (vl ? 1 + vl : 0);
    char *h = air__malloc(len + 1);
    if (h == NULL)
        return NULL;
    memcpy(h, name, nl);
    h[nl] = ':';
    if (vl) {
        h[nl + 1] = ' ';
        memcpy(h + nl + 2, value, vl);
    }
    h[len] = '\0';
    return h;
}

void
air__http_out_clear(air_http_out_t *out)
{
    if (out == NULL)
        return;
    air__free(out->url);
    for (size_t i = 0; i < out->nheaders && i < AIR_HTTP_MAX_HEADERS; i++)
        air__free(out->headers[i]);
    air__free(out->body);
    memset(out, 0, sizeof *out);
}

void
air__decoded_clear(air_decoded_t *d)
{
    if (d == NULL)
        return;
    air__free(d->body);
    memset(d, 0, sizeof *d);
}

const cJSON *
air__json_get(const cJSON *obj, const char *key)
{
    if (!cJSON_IsObject(obj))
        return NULL;
    for (const cJSON *c = obj->child; c != NULL; c = c->next) {
        const char *k = c->string;
        if (k == NULL)
            return NULL; /* where cJSON's own lookup stops, too */
        if (k[0] == key[0] && strcmp(k, key) == 0)
            return c;
    }
    return NULL;
}

/* "prefix[i]" (or "prefix.mid[i]") into dst, for error messages. */
void
air__path_idx(char *dst, size_t size, const char *prefix, const char *mid, int i)
{
    char num[16];
    char *e = num + sizeof num, *p = e;
    unsigned v = i < 0 ? 0 : (unsigned)i;
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    size_t pl = strlen(prefix), ml = strlen(mid), nl = (size_t)(e - p);
    if (i < 0 || pl + ml + nl + 3 > size) {
        snprintf(dst, size, "%s%s[%d]", prefix, mid, i);
        return;
    }
    memcpy(dst, prefix, pl);
    memcpy(dst + pl, mid, ml);
    dst[pl + ml] = '[';
    memcpy(dst + pl + ml + 1, p, nl);
    dst[pl + ml + 1 + nl] = ']';
    dst[pl + ml + 2 + nl] = '\0';
}
