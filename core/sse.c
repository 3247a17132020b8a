/*
 * sse.c - incremental Server-Sent Events parser (spec section 8).
 *
 * DESIGN: this runs for every streamed byte, so the hot loop finds line ends
 * with memchr and handles each complete line straight from the caller's
 * buffer; only the unterminated tail of a feed is copied into p->line. The
 * next '\n' is found once and remembered until the cursor passes it, and the
 * search for '\r' stops at that '\n', so a feed costs O(len) whatever the
 * mixture of LF, CR and CRLF (a CR-only stream is not rescanned for an LF on
 * every line). Data bytes are copied once, into p->data, which the callback
 * needs NUL-terminated.
 *
 * A CR that ends a feed ends its line at once (the event is delivered without
 * waiting for more input) and sets last_cr, so that an LF opening the next
 * feed is taken as the second half of that CRLF rather than as a blank line.
 *
 * Bounds: a line longer than max_event, or an event whose joined data would
 * grow past max_event, is AIR_E_PROTOCOL. The same checks apply whether a
 * line is complete in one feed or assembled from several, so the events
 * delivered before an error (and the error itself) do not depend on how the
 * input was split. After an error the parser holds no partial event; reset
 * it before feeding a new stream.
 */
#include "sse.h"
#include "alloc.h"

#include <string.h>

/* Used when air__sse_init is given 0. */
#define SSE_DEFAULT_MAX ((size_t)8 << 20)

/* Internal result of handling one line: keep going, stop quietly ([DONE]),
 * or fail with a status. */
enum { LINE_OK = 0, LINE_DONE = 1, LINE_ERR = 2 };

void
air__sse_init(struct air__sse *p, size_t max_event)
{
    memset(p, 0, sizeof *p);
    p->max_event = max_event ? max_event : SSE_DEFAULT_MAX;
}

void
air__sse_reset(struct air__sse *p)
{
    air__buf_reset(&p->line);
    air__buf_reset(&p->data);
    air__buf_reset(&p->event);
    air__buf_reset(&p->junk);
    p->has_data = 0;
    p->last_cr = 0;
    p->done = 0;
}

void
air__sse_free(struct air__sse *p)
{
    if (p == NULL)
        return;
    air__buf_free(&p->line);
    air__buf_free(&p->data);
    air__buf_free(&p->event);
    air__buf_free(&p->junk);
    p->has_data = 0;
    p->last_cr = 0;
}

/* Forget the event being assembled (not `done`, not the partial line). */
static void
drop_event(struct air__sse *p)
{
    air__buf_reset(&p->data);
    air__buf_reset(&p->event);
    p->has_data = 0;
}

/* A blank line: deliver the pending event, if it had a data line. */
static int
dispatch(struct air__sse *p, air__sse_event_fn fn, void *ud, air_status_t *st)
{
    if (!p->has_data) {
        air__buf_reset(&p->event); /* an event name alone is not an event */
        return LINE_OK;
    }
    const char *data = p->data.data ? p->data.data : "";
    const char *event = p->event.data ? p->event.data : "";
    size_t dlen = p->data.len;
    int is_done = dlen == 6 && memcmp(data, "[DONE]", 6) == 0;
    int rc = fn(ud, event, p->event.len, data, dlen);
    drop_event(p);
    if (is_done)
        p->done = 1;
    if (rc != 0) {
        *st = AIR_E_CANCELLED;
        return LINE_ERR;
    }
    return is_done ? LINE_DONE : LINE_OK;
}

/* One complete line (terminator removed). */
static int
line(struct air__sse *p, const char *s, size_t n, air__sse_event_fn fn, void *ud, air_status_t *st)
{
    if (n == 0)
        return dispatch(p, fn, ud, st);
    if (n > p->max_event) {
        *st = AIR_E_PROTOCOL;
        return LINE_ERR;
    }
    if (s[0] == ':')
        return LINE_OK; /* comment */

    const char *colon = memchr(s, ':', n);
    size_t flen = colon ? (size_t)(colon - s) : n;
    const char *v = colon ? colon + 1 : s + n;
    size_t vlen = colon ? n - flen - 1 : 0;
    if (vlen > 0 && v[0] == ' ') {
        v++;
        vlen--;
    }

    if (flen == 4 && memcmp(s, "data", 4) == 0) {
        size_t need = vlen + (p->has_data ? 1 : 0);
        if (p->data.len + need > p->max_event) {
            *st = AIR_E_PROTOCOL;
            return LINE_ERR;
        }
        if (air__buf_reserve(&p->data, need) != 0) {
            *st = AIR_E_NOMEM;
            return LINE_ERR;
        }
        if (p->has_data)
            p->data.data[p->data.len++] = '\n';
        memcpy(p->data.data + p->data.len, v, vlen);
        p->data.len += vlen;
        p->data.data[p->data.len] = '\0';
        p->has_data = 1;
    } else if (flen == 5 && memcmp(s, "event", 5) == 0) {
        air__buf_reset(&p->event);
        air__buf_append(&p->event, v, vlen);
        if (p->event.oom) {
            *st = AIR_E_NOMEM;
            return LINE_ERR;
        }
    }
    else if (!(flen == 2 && memcmp(s, "id", 2) == 0) &&
             !(flen == 5 && memcmp(s, "retry", 5) == 0) && p->junk.len < AIR_SSE_JUNK_MAX) {
        /* Not an SSE field: keep the raw line (bounded) so core can show a
         * vendor error that arrived as bare JSON (Gemini does this). */
        size_t take = n < AIR_SSE_JUNK_MAX - p->junk.len ? n : AIR_SSE_JUNK_MAX - p->junk.len;
        air__buf_append(&p->junk, s, take);
        air__buf_putc(&p->junk, '\n');
    }
    /* id and retry are ignored. */
    return LINE_OK;
}

air_status_t
air__sse_feed(struct air__sse *p, const char *buf, size_t len, air__sse_event_fn fn, void *ud)
{
    if (p->done)
        return AIR_OK;
    if (len == 0)
        return AIR_OK;

    size_t i = 0;
    if (p->last_cr) {
        p->last_cr = 0;
        if (buf[0] == '\n')
            i = 1; /* second half of a CRLF split across feeds */
    }

    /* The next '\n' at or after i is found once and cached until passed
     * (len: none in this feed), so a CR-only stream is not rescanned for an
     * LF per line; the CR search only covers the bytes before that LF. */
    size_t next_lf = 0;
    int have_lf = 0;
    air_status_t st = AIR_OK;

    while (i < len) {
        if (!have_lf || next_lf < i) {
            const char *lf = memchr(buf + i, '\n', len - i);
            next_lf = lf ? (size_t)(lf - buf) : len;
            have_lf = 1;
        }
        const char *cr = memchr(buf + i, '\r', next_lf - i);
        size_t end = cr ? (size_t)(cr - buf) : next_lf;
        if (end == len)
            break; /* no terminator in the rest of this feed */

        size_t skip = 1;
        if (buf[end] == '\r') {
            if (end + 1 < len) {
                if (buf[end + 1] == '\n')
                    skip = 2;
            } else {
                p->last_cr = 1;
            }
        }

        int r;
        if (p->line.len > 0) {
            /* Finish the line carried over from earlier feeds. */
            size_t add = end - i;
            if (p->line.len + add > p->max_event) {
                st = AIR_E_PROTOCOL;
                goto fail;
            }
            air__buf_append(&p->line, buf + i, add);
            if (p->line.oom) {
                st = AIR_E_NOMEM;
                goto fail;
            }
            r = line(p, p->line.data, p->line.len, fn, ud, &st);
            air__buf_reset(&p->line);
        } else {
            r = line(p, buf + i, end - i, fn, ud, &st);
        }
        i = end + skip;
        if (r == LINE_DONE)
            return AIR_OK;
        if (r == LINE_ERR)
            goto fail;
    }

    if (i < len) {
        /* Unterminated tail: keep it for the next feed. */
        if (p->line.len + (len - i) > p->max_event) {
            st = AIR_E_PROTOCOL;
            goto fail;
        }
        air__buf_append(&p->line, buf + i, len - i);
        if (p->line.oom) {
            st = AIR_E_NOMEM;
            goto fail;
        }
    }
    return AIR_OK;

fail:
    air__buf_reset(&p->line);
    drop_event(p);
    p->last_cr = 0;
    return st;
}

int
air__sse_finish(struct air__sse *p)
{
    int pending = 0;
    if (!p->done)
        pending = p->has_data || (p->line.len > 0 && p->line.data[0] != ':');
    air__buf_reset(&p->line);
    drop_event(p);
    p->last_cr = 0;
    return pending;
}
