/*
 * jscan.c - a small strict JSON scanner shared by the adapters' fast paths
 * (Anthropic and Gemini stream events, responses): it validates and skips
 * values without building a tree, so the common case needs no cJSON parse.
 * Anything it is not sure of makes the caller fall back to cJSON.
 */
#include "jscan.h"

#include <stddef.h>
#include <string.h>

#define FAST_MAX_DEPTH 64

static const char *
skip_ws(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

static int
hex4(const char *p, const char *e, unsigned *out)
{
    if (e - p < 4)
        return -1;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

/* skip_container and air__jscan_skip_value recurse into each other. */
static const char *skip_container(const char *p, const char *e, int depth);

/* Bytes that end a plain run inside a string: control bytes, '"', '\\'. */
static const unsigned char str_stop[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x00-0x0f */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x10-0x1f */
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x20-0x2f: '"' */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x30-0x3f */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x40-0x4f */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, /* 0x50-0x5f: '\\' */
};                                                  /* the rest: 0 */

/*
 * p at '"': a strictly valid string (RFC 8259, no raw control bytes, no lone
 * surrogate: text cJSON reads the same way). Returns the byte after the
 * closing quote, or NULL. *esc gets ESC_* flags.
 */
const char *
air__jscan_str(const char *p, const char *e, unsigned *esc)
{
    p++;
    while (p < e) {
        while (p < e && !str_stop[(unsigned char)*p])
            p++;
        if (p >= e)
            break;
        unsigned char c = (unsigned char)*p;
        if (c == '"')
            return p + 1;
        if (c < 0x20)
            return NULL;
        *esc |= AIR_JSCAN_ESC_ANY; /* c is the backslash */
        if (++p >= e)
            return NULL;
        switch (*p) {
        case '"':
        case '\\':
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't':
            p++;
            break;
        case '/':
            *esc |= AIR_JSCAN_ESC_ODD;
            p++;
            break;
        case 'u': {
            unsigned cp, lo;
            *esc |= AIR_JSCAN_ESC_ODD;
            if (hex4(p + 1, e, &cp) != 0)
                return NULL;
            p += 5;
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return NULL;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (e - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, e, &lo) != 0 ||
                    lo < 0xDC00 || lo > 0xDFFF)
                    return NULL;
                p += 6;
            }
            break;
        }
        default:
            return NULL;
        }
    }
    return NULL;
}

const char *
air__jscan_num(const char *p, const char *e)
{
    const char *s = p;
    if (p < e && *p == '-')
        p++;
    if (!(p < e && *p >= '0' && *p <= '9'))
        return NULL;
    if (*p == '0')
        p++;
    else
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    if (p < e && *p == '.') {
        p++;
        if (!(p < e && *p >= '0' && *p <= '9'))
            return NULL;
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < e && (*p == '+' || *p == '-'))
            p++;
        if (!(p < e && *p >= '0' && *p <= '9'))
            return NULL;
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    }
    /* cJSON reads at most 63 characters of a number. */
    return p - s > 63 ? NULL : p;
}


/* p at '{' or '['. */
static const char *
skip_container(const char *p, const char *e, int depth)
{
    char close = *p == '{' ? '}' : ']';
    int obj = *p == '{';
    if (depth > FAST_MAX_DEPTH)
        return NULL;
    p = skip_ws(p + 1, e);
    if (p < e && *p == close)
        return p + 1;
    for (;;) {
        if (obj) {
            unsigned esc = 0;
            if (p >= e || *p != '"' || (p = air__jscan_str(p, e, &esc)) == NULL)
                return NULL;
            p = skip_ws(p, e);
            if (p >= e || *p != ':')
                return NULL;
            p = skip_ws(p + 1, e);
        }
        if ((p = air__jscan_skip_value(p, e, depth + 1)) == NULL)
            return NULL;
        p = skip_ws(p, e);
        if (p >= e)
            return NULL;
        if (*p == close)
            return p + 1;
        if (*p != ',')
            return NULL;
        p = skip_ws(p + 1, e);
    }
}

const char *
air__jscan_skip_value(const char *p, const char *e, int depth)
{
    unsigned esc = 0;
    if (p >= e)
        return NULL;
    switch (*p) {
    case '"':
        return air__jscan_str(p, e, &esc);
    case '{':
    case '[':
        return skip_container(p, e, depth);
    case 't':
        return e - p >= 4 && memcmp(p, "true", 4) == 0 ? p + 4 : NULL;
    case 'f':
        return e - p >= 5 && memcmp(p, "false", 5) == 0 ? p + 5 : NULL;
    case 'n':
        return e - p >= 4 && memcmp(p, "null", 4) == 0 ? p + 4 : NULL;
    default:
        return air__jscan_num(p, e);
    }
}
