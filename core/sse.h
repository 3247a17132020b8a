/*
 * sse.h - incremental Server-Sent Events parser (spec section 8).
 *
 * Feed it bytes as they arrive, split anywhere; it calls back once per
 * complete event with the event name (possibly empty) and the data (several
 * data: lines joined with '\n'). Accepts LF, CRLF and CR line ends in any
 * mixture, also split across feeds; ignores comment lines (":..."); strips
 * one optional space after the colon; ignores `id` and `retry`. An event with
 * no data line is not delivered. After a `data: [DONE]` event has been
 * delivered, `done` is set and the rest of the input is ignored.
 * Every buffer is bounded by max_event: a larger event is an error.
 */
#ifndef AIR_CORE_SSE_H
#define AIR_CORE_SSE_H

#include <stddef.h>

#include "airouter.h"
#include "buf.h"

#define AIR_SSE_JUNK_MAX 16384

/* Return 0 to continue, nonzero to stop parsing (air__sse_feed then returns
 * AIR_E_CANCELLED). data and event are NUL-terminated. */
typedef int (*air__sse_event_fn)(void *ud, const char *event, size_t event_len, const char *data,
                                 size_t data_len);

struct air__sse {
    air_buf_t line;  /* current partial line */
    air_buf_t data;  /* data of the current event */
    air_buf_t event; /* event name of the current event */
    air_buf_t junk;  /* lines that are not SSE fields (a vendor's raw JSON error
                        inside a 200 stream), '\n'-joined, first AIR_SSE_JUNK_MAX bytes */
    size_t max_event;
    int has_data;
    int last_cr; /* previous feed ended in '\r': a leading '\n' is part of it */
    int done;    /* [DONE] seen */
};

void air__sse_init(struct air__sse *p, size_t max_event);
void air__sse_reset(struct air__sse *p); /* back to the initial state, keeps memory */
void air__sse_free(struct air__sse *p);
/* AIR_OK, AIR_E_PROTOCOL (event larger than max_event), AIR_E_NOMEM, or
 * AIR_E_CANCELLED (the callback asked to stop). */
air_status_t air__sse_feed(struct air__sse *p, const char *buf, size_t len, air__sse_event_fn fn,
                           void *ud);
/* End of input: a pending event without its blank line is discarded (per
 * the SSE spec). Returns whether one was pending. */
int air__sse_finish(struct air__sse *p);

#endif
