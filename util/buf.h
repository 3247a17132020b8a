/*
 * buf.h - a growable byte buffer, always NUL-terminated, with helpers for
 * building JSON text. Errors are sticky: after an allocation failure every
 * append is a no-op and `oom` stays set, so builders check once at the end.
 */
#ifndef AIR_UTIL_BUF_H
#define AIR_UTIL_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef struct air_buf {
    char *data; /* NUL-terminated when non-NULL */
    size_t len;
    size_t cap;
    int oom;
} air_buf_t;

#define AIR_BUF_INIT {NULL, 0, 0, 0}

int air__buf_reserve(air_buf_t *b, size_t extra);
void air__buf_append(air_buf_t *b, const void *p, size_t n);
void air__buf_puts(air_buf_t *b, const char *s);
void air__buf_putc(air_buf_t *b, char c);
void air__buf_printf(air_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append s (n bytes) as a JSON string literal, quotes included. */
void air__buf_json_str(air_buf_t *b, const char *s, size_t n);
/* Append a number exactly as cJSON_PrintUnformatted prints a number item of
 * value d (%1.15g, or %1.17g when that does not read back; NaN and
 * infinities as null), mostly without printf. */
void air__buf_json_num(air_buf_t *b, double d);
/* Append v in decimal (no printf). */
void air__buf_i64(air_buf_t *b, long long v);
/* Append a cJSON value exactly as cJSON_PrintUnformatted renders it (key
 * order, number format, string escapes), without building a string first.
 * A value cJSON cannot print (a raw item without text, an invalid type)
 * sets the sticky oom flag, as a failed print would. */
struct cJSON;
void air__buf_cjson(air_buf_t *b, const struct cJSON *item);
void air__buf_reset(air_buf_t *b); /* len = 0, keeps memory */
/* Append everything f has left (a file, stdin). 0, or -1 on a read error or
 * a sticky OOM. Does not close f. */
int air__buf_read(air_buf_t *b, FILE *f);

/* air__buf_append / air__buf_putc with the common case (room left) inline,
 * for builders that append many small pieces (adapters' request and chunk
 * writers). Same behaviour, sticky OOM included. */
static inline void
air__buf_put(air_buf_t *b, const char *s, size_t n)
{
    if (b->len + n < b->cap && !b->oom) {
        memcpy(b->data + b->len, s, n);
        b->len += n;
        b->data[b->len] = '\0';
    } else {
        air__buf_append(b, s, n);
    }
}

static inline void
air__buf_put1(air_buf_t *b, char c)
{
    if (b->len + 1 < b->cap && !b->oom) {
        b->data[b->len++] = c;
        b->data[b->len] = '\0';
    } else {
        air__buf_append(b, &c, 1);
    }
}
void air__buf_free(air_buf_t *b);
/* Hand the bytes over (caller frees with air__free); b is emptied. Returns
 * NULL on a sticky OOM (and frees). */
char *air__buf_steal(air_buf_t *b, size_t *len);

#endif
