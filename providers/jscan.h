/*
 * jscan.h - strict JSON scanning without a tree (see jscan.c).
 */
#ifndef AIR_PROVIDERS_JSCAN_H
#define AIR_PROVIDERS_JSCAN_H

#include <stddef.h>
#include <string.h>

/* String escapes seen by air__jscan_str. */
#define AIR_JSCAN_ESC_ANY 1 /* some backslash escape */
#define AIR_JSCAN_ESC_ODD 2 /* \u or \/: cJSON decodes them to bytes written differently */

/* p at '"': a strictly valid string (RFC 8259, no raw control bytes, no lone
 * surrogate). Returns the byte after the closing quote, or NULL; *esc gets
 * AIR_JSCAN_ESC_* flags. */
const char *air__jscan_str(const char *p, const char *e, unsigned *esc);
/* A strictly valid number at p: the byte after it, or NULL. */
const char *air__jscan_num(const char *p, const char *e);
/* Any value at p (depth bounds nesting): the byte after it, or NULL. */
const char *air__jscan_skip_value(const char *p, const char *e, int depth);

/* The small steps every fast path takes, inline (they run per byte or per
 * member). */

/* Skip JSON whitespace. */
static inline const char *
air__jscan_ws(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* p at a member key: a key without escapes (an escaped key might decode to
 * a name that matters) in key and klen. Returns the byte after the ':' and
 * its whitespace, or NULL. */
static inline const char *
air__jscan_key(const char *p, const char *e, const char **key, size_t *klen)
{
    unsigned esc = 0;
    if (p >= e || *p != '"')
        return NULL;
    const char *q = air__jscan_str(p, e, &esc);
    if (q == NULL || esc != 0)
        return NULL;
    *key = p + 1;
    *klen = (size_t)(q - 1 - (p + 1));
    q = air__jscan_ws(q, e);
    if (q >= e || *q != ':')
        return NULL;
    return air__jscan_ws(q + 1, e);
}

/* The key k (n bytes) is the literal lit. */
static inline int
air__jscan_key_is(const char *k, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    return n == l && memcmp(k, lit, l) == 0;
}

/* After a member or element: at ',' returns the next one (whitespace
 * skipped); at `close` sets *end past it and returns it; NULL: malformed. */
static inline const char *
air__jscan_next(const char *p, const char *e, char close, const char **end)
{
    p = air__jscan_ws(p, e);
    if (p >= e)
        return NULL;
    if (*p == close) {
        *end = p + 1;
        return p + 1;
    }
    return *p == ',' ? air__jscan_ws(p + 1, e) : NULL;
}

#endif
