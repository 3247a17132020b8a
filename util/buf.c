/*
 * buf.c - growable buffer. DESIGN: geometric growth, sticky OOM, always a NUL
 * after the last byte so results can be handed out as C strings.
 */
#include "buf.h"
#include "alloc.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

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

void
air__buf_json_str(air_buf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (air__buf_reserve(b, n + 2) != 0)
        return;
    air__buf_putc(b, '"');
    size_t run = 0; /* start of a run of bytes that need no escaping */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        air__buf_append(b, s + run, i - run);
        run = i + 1;
        char esc[7] = {'\\', 0, 0, 0, 0, 0, 0};
        size_t el = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            el = 6;
        }
        air__buf_append(b, esc, el);
    }
    air__buf_append(b, s + run, n - run);
    air__buf_putc(b, '"');
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
