/*
 * fuzz_sse.c - libFuzzer target for core/sse.c.
 *
 * The first byte picks the parser's max_event (so the size bound is hit
 * often) and after which event the callback asks to stop; the rest is the
 * stream. The stream is parsed whole, then in pieces whose sizes come from
 * the input itself, then byte by byte; the events delivered, the final
 * status, `done` and air__sse_finish's answer must be identical, or the
 * target aborts.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sse.h"
#include "alloc.h"
#include "buf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct rec {
    air_buf_t log;
    size_t n;
    size_t stop_at; /* 0: never */
};

static int
on_event(void *ud, const char *event, size_t event_len, const char *d, size_t data_len)
{
    struct rec *r = ud;
    if (event[event_len] != '\0' || d[data_len] != '\0')
        abort();
    air__buf_printf(&r->log, "%zu:%zu:", event_len, data_len);
    air__buf_append(&r->log, event, event_len);
    air__buf_append(&r->log, d, data_len);
    r->n++;
    return r->stop_at != 0 && r->n == r->stop_at;
}

struct outcome {
    air_buf_t log;
    air_status_t st;
    int done;
    int pending;
};

/* mode 0: whole; 1: sizes from the input; 2: byte by byte. */
static void
run(const char *in, size_t len, size_t max_event, size_t stop_at, int mode, struct outcome *o)
{
    struct air__sse p;
    struct rec r = {AIR_BUF_INIT, 0, stop_at};
    air__sse_init(&p, max_event);
    air_status_t st = AIR_OK;
    size_t off = 0, k = 0;
    while (st == AIR_OK && off < len) {
        size_t n = len - off;
        if (mode == 1) {
            /* Piece sizes 0..15 read from the stream bytes themselves. */
            n = (size_t)((unsigned char)in[k % len] % 16u);
            k++;
            if (n == 0) {
                /* An empty feed must be harmless; then move on by one byte. */
                st = air__sse_feed(&p, in + off, 0, on_event, &r);
                if (st != AIR_OK)
                    break;
                n = 1;
            }
            if (n > len - off)
                n = len - off;
        } else if (mode == 2) {
            n = 1;
        }
        st = air__sse_feed(&p, in + off, n, on_event, &r);
        off += n;
    }
    o->st = st;
    o->done = p.done;
    o->pending = st == AIR_OK ? air__sse_finish(&p) : 0;
    o->log = r.log;
    air__sse_free(&p);
}

static void
same(const struct outcome *a, const struct outcome *b)
{
    if (a->st != b->st || a->done != b->done || a->pending != b->pending ||
        a->log.len != b->log.len || (a->log.len && memcmp(a->log.data, b->log.data, a->log.len))) {
        fprintf(stderr, "sse split mismatch: st %d/%d done %d/%d pending %d/%d\n", a->st, b->st,
                a->done, b->done, a->pending, b->pending);
        abort();
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static const size_t maxes[8] = {1, 2, 8, 16, 64, 256, 4096, 0};
    size_t max_event = maxes[data[0] & 7];
    size_t stop_at = (data[0] >> 3) & 7; /* 0 = never stop */
    const char *in = (const char *)data + 1;
    size_t len = size - 1;

    struct outcome whole, pieces, bytes;
    run(in, len, max_event, stop_at, 0, &whole);
    run(in, len, max_event, stop_at, 1, &pieces);
    run(in, len, max_event, stop_at, 2, &bytes);
    same(&whole, &pieces);
    same(&whole, &bytes);
    air__buf_free(&whole.log);
    air__buf_free(&pieces.log);
    air__buf_free(&bytes.log);
    return 0;
}
