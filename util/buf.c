/*
 * buf.c - growable buffer. DESIGN: geometric growth, sticky OOM, always a NUL
 * after the last byte so results can be handed out as C strings. The JSON
 * helpers write text byte for byte as cJSON_PrintUnformatted would, so an
 * adapter can build a body straight into a buffer (no tree, no second copy)
 * and still send exactly what a cJSON-built body used to be.
 */
#include "buf.h"
#include "alloc.h"

#include <float.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

int
air__buf_reserve(air_buf_t *b, size_t extra)
{
    if (b->oom)
        return -1;
    if (b->len + extra + 1 <= b->cap)
        return 0;
    size_t ncap = b->cap ? b->cap : 64;
    while (ncap < b->len + extra + 1) {
        if (ncap > SIZE_MAX / 2) {
            b->oom = 1;
            return -1;
        }
        ncap *= 2;
    }
    char *p = air__realloc(b->data, ncap);
    if (p == NULL) {
        b->oom = 1;
        return -1;
    }
    b->data = p;
    b->cap = ncap;
    return 0;
}

void
air__buf_append(air_buf_t *b, const void *p, size_t n)
{
    if (air__buf_reserve(b, n) != 0)
        return;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void
air__buf_puts(air_buf_t *b, const char *s)
{
    air__buf_append(b, s, strlen(s));
}

void
air__buf_putc(air_buf_t *b, char c)
{
    air__buf_append(b, &c, 1);
}

void
air__buf_printf(air_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char tmp[256];
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = 1;
        return;
    }
    if ((size_t)n < sizeof tmp) {
        air__buf_append(b, tmp, (size_t)n);
        return;
    }
    if (air__buf_reserve(b, (size_t)n) != 0)
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Bytes that need an escape inside a JSON string. */
static const unsigned char json_esc[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x00-0x0f */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x10-0x1f */
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x20-0x2f: '"' */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x30-0x3f */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x40-0x4f */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, /* 0x50-0x5f: '\\' */
};                                                  /* the rest: 0 */

/* Length of the prefix of s[0..n) that needs no escaping: eight bytes at a
 * time while no byte in the word is below 0x20, '"' or '\\' (the usual
 * "has a byte less than / equal to" word tricks; a hit only sends the
 * word to the exact byte loop, so a false alarm would cost time, not
 * correctness), then byte by byte. */
static size_t
plain_run(const char *s, size_t n)
{
    const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
    size_t i = 0;
    while (n - i >= 8) {
        uint64_t w, q, bs;
        memcpy(&w, s + i, 8);
        q = w ^ (ones * (unsigned char)'"');
        bs = w ^ (ones * (unsigned char)'\\');
        if ((((w - ones * 0x20) & ~w) | ((q - ones) & ~q) | ((bs - ones) & ~bs)) & high)
            break;
        i += 8;
    }
    while (i < n && !json_esc[(unsigned char)s[i]])
        i++;
    return i;
}

void
air__buf_json_str(air_buf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    /* One byte out per byte in, plus the quotes; an escape reserves its
     * extra bytes when it comes (rare in real text). */
    if (air__buf_reserve(b, n + 2) != 0)
        return;
    size_t len = b->len;
    b->data[len++] = '"';
    size_t i = 0;
    for (;;) {
        size_t j = i + plain_run(s + i, n - i);
        if (j > i)
            memcpy(b->data + len, s + i, j - i);
        len += j - i;
        if (j == n)
            break;
        /* room for this escape (6 at most), the rest and the closing quote */
        b->len = len;
        b->data[len] = '\0';
        if (air__buf_reserve(b, 6 + (n - j - 1) + 1) != 0)
            return;
        unsigned char c = (unsigned char)s[j];
        char *o = b->data + len;
        o[0] = '\\';
        switch (c) {
        case '"': o[1] = '"'; len += 2; break;
        case '\\': o[1] = '\\'; len += 2; break;
        case '\n': o[1] = 'n'; len += 2; break;
        case '\r': o[1] = 'r'; len += 2; break;
        case '\t': o[1] = 't'; len += 2; break;
        case '\b': o[1] = 'b'; len += 2; break;
        case '\f': o[1] = 'f'; len += 2; break;
        default:
            o[1] = 'u';
            o[2] = '0';
            o[3] = '0';
            o[4] = hex[c >> 4];
            o[5] = hex[c & 15];
            len += 6;
        }
        i = j + 1;
    }
    b->data[len++] = '"';
    b->len = len;
    b->data[len] = '\0';
}

/* ------------------------------------------------------------------------ */
/* Numbers and trees as cJSON prints them                                    */

/* cJSON's compare_double: equal within one DBL_EPSILON of the larger. */
static int
close_double(double a, double b)
{
    double max = fabs(a) > fabs(b) ? fabs(a) : fabs(b);
    return fabs(a - b) <= max * DBL_EPSILON;
}

/* Decimal digits of v (at most 19) into the end of tmp; returns the start. */
static char *
u64_digits(char *end, uint64_t v)
{
    char *p = end;
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    return p;
}

void
air__buf_i64(air_buf_t *b, long long v)
{
    char tmp[24];
    char *e = tmp + sizeof tmp;
    char *p = u64_digits(e, v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v);
    if (v < 0)
        *--p = '-';
    air__buf_put(b, p, (size_t)(e - p));
}

/*
 * The common case of a fraction, without printf: d is the double nearest to
 * a decimal m / 10^k with k <= 6 and fewer than 16 significant digits (0.2,
 * 0.95, 1.5). Such a decimal reads back as d exactly and is what %1.15g
 * prints for d (a decimal of at most 15 significant digits survives the
 * round trip through a double, DBL_DIG), so the output is the same as
 * cJSON's. (double)m / 10^k is correctly rounded (both operands are exact),
 * hence it equals d exactly when d is the double nearest to m / 10^k. The
 * range 1e-4 <= |d| < 1e9 keeps %g in fixed notation and m below 10^15.
 * Returns the length written to out, or 0 when d is not such a number.
 */
static size_t
short_fraction(double d, char *out)
{
    static const double p10[] = {1, 10, 100, 1000, 10000, 100000, 1000000};
    double a = fabs(d);
    if (!(a >= 1e-4 && a < 1e9))
        return 0;
    for (int k = 1; k <= 6; k++) {
        double x = a * p10[k];
        double r = floor(x + 0.5);
        if (fabs(x - r) > 1e-3 || r / p10[k] != a)
            continue;
        uint64_t m = (uint64_t)r;
        uint64_t ip = m / (uint64_t)p10[k], fp = m % (uint64_t)p10[k];
        if (fp == 0)
            return 0; /* an integer: not this path's business */
        int kk = k;
        while (fp % 10 == 0) { /* shortest form (trailing zeros stripped, as %g) */
            fp /= 10;
            kk--;
        }
        char tmp[48];
        char *e = tmp + sizeof tmp;
        char *p = u64_digits(e, fp);
        while (e - p < kk)
            *--p = '0';
        *--p = '.';
        p = u64_digits(p, ip);
        if (d < 0)
            *--p = '-';
        size_t n = (size_t)(e - p);
        memcpy(out, p, n);
        return n;
    }
    return 0;
}

/* cJSON's print_number. */
static void
num_print(air_buf_t *b, double d)
{
    char tmp[48];
    size_t n;
    if (isnan(d) || isinf(d)) {
        air__buf_append(b, "null", 4);
        return;
    }
    if (d == 0 && signbit(d)) {
        /* -0: "-0" from %1.15g in cJSON 1.7.15, "0" from the valueint test
         * of later versions. Rare enough to ask the cJSON we link. */
        cJSON *z = cJSON_CreateNumber(d);
        char *txt = z != NULL ? cJSON_PrintUnformatted(z) : NULL;
        if (txt != NULL)
            air__buf_puts(b, txt);
        else
            b->oom = 1;
        cJSON_free(txt);
        cJSON_Delete(z);
        return;
    }
    if (fabs(d) < 1e15 && d == floor(d)) {
        /* An integer: %1.15g (and %d, where cJSON uses it) print its digits. */
        char *e = tmp + sizeof tmp;
        char *p = u64_digits(e, (uint64_t)fabs(d));
        if (d < 0)
            *--p = '-';
        air__buf_append(b, p, (size_t)(e - p));
        return;
    }
    n = short_fraction(d, tmp);
    if (n > 0) {
        air__buf_append(b, tmp, n);
        return;
    }
    /* The rest exactly as cJSON does it, locale decimal point included. */
    int len = snprintf(tmp, sizeof tmp, "%1.15g", d);
    double test = 0.0;
    if (sscanf(tmp, "%lg", &test) != 1 || !close_double(test, d))
        len = snprintf(tmp, sizeof tmp, "%1.17g", d);
    if (len < 0 || len > 25) {
        b->oom = 1; /* cJSON fails the whole print */
        return;
    }
    const struct lconv *lc = localeconv();
    char dp = lc != NULL && lc->decimal_point != NULL ? lc->decimal_point[0] : '.';
    for (int i = 0; i < len; i++)
        if (tmp[i] == dp)
            tmp[i] = '.';
    air__buf_append(b, tmp, (size_t)len);
}

void
air__buf_json_num(air_buf_t *b, double d)
{
    num_print(b, d);
}

static void
cjson_str(air_buf_t *b, const char *s)
{
    if (s == NULL)
        air__buf_append(b, "\"\"", 2);
    else
        air__buf_json_str(b, s, strlen(s));
}

void
air__buf_cjson(air_buf_t *b, const struct cJSON *item)
{
    if (item == NULL) {
        b->oom = 1;
        return;
    }
    const cJSON *c;
    switch (item->type & 0xFF) {
    case cJSON_NULL:
        air__buf_append(b, "null", 4);
        return;
    case cJSON_False:
        air__buf_append(b, "false", 5);
        return;
    case cJSON_True:
        air__buf_append(b, "true", 4);
        return;
    case cJSON_Number:
        num_print(b, item->valuedouble);
        return;
    case cJSON_Raw:
        if (item->valuestring == NULL)
            b->oom = 1;
        else
            air__buf_puts(b, item->valuestring);
        return;
    case cJSON_String:
        cjson_str(b, item->valuestring);
        return;
    case cJSON_Array:
        air__buf_putc(b, '[');
        for (c = item->child; c != NULL; c = c->next) {
            air__buf_cjson(b, c);
            if (c->next != NULL)
                air__buf_putc(b, ',');
        }
        air__buf_putc(b, ']');
        return;
    case cJSON_Object:
        air__buf_putc(b, '{');
        for (c = item->child; c != NULL; c = c->next) {
            cjson_str(b, c->string);
            air__buf_putc(b, ':');
            air__buf_cjson(b, c);
            if (c->next != NULL)
                air__buf_putc(b, ',');
        }
        air__buf_putc(b, '}');
        return;
    default:
        b->oom = 1;
        return;
    }
}

int
air__buf_read(air_buf_t *b, FILE *f)
{
    char tmp[8192];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
        air__buf_append(b, tmp, n);
    return ferror(f) || b->oom ? -1 : 0;
}

void
air__buf_reset(air_buf_t *b)
{
    b->len = 0;
    b->oom = 0;
    if (b->data)
        b->data[0] = '\0';
}

void
air__buf_free(air_buf_t *b)
{
    air__free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
    b->oom = 0;
}

char *
air__buf_steal(air_buf_t *b, size_t *len)
{
    if (b->oom) {
        air__buf_free(b);
        return NULL;
    }
    if (b->data == NULL)
        air__buf_append(b, "", 0);
    if (b->oom) {
        air__buf_free(b);
        return NULL;
    }
    char *p = b->data;
    if (len)
        *len = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}
