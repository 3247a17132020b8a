/*
 * common.h - helpers shared by the provider adapters (pure functions).
 * Implemented in providers/common.c.
 */
#ifndef AIR_PROVIDERS_COMMON_H
#define AIR_PROVIDERS_COMMON_H

#include "airouter/provider.h"

/* Fill f from an HTTP status alone, per spec section 7 (400/413/422
 * invalid_request, 401/403/402 auth, 404 not_found, 408 timeout, 409
 * upstream+retry, 429 rate_limited, 503/529 overloaded, 504 timeout, other
 * 5xx upstream), including retry/failover/unusable flags. Sets
 * f->http_status; leaves code/type/message alone. */
void air__fault_from_status(air_fault_t *f, int status);

/* Extract message/type/code from an error body in any of the shapes of spec
 * section 4: {"error":{...}}, {"error":"text"}, flat {"object":"error",...},
 * {"message":...}, a one-element JSON array of those, plain text or HTML
 * (first 200 bytes, control characters replaced). Never fails. */
void air__fault_parse_body(air_fault_t *f, const char *body, size_t len);

/* Retry delay from headers, first found wins: retry-after-ms (float ms),
 * retry-after (seconds, fractional allowed, or an HTTP date relative to
 * in->now_unix_ms). Returns -1 when none or unparseable. */
int64_t air__retry_after_ms(const air_http_in_t *in);

/* Apply x-should-retry: "false" clears f->retry; "true" sets it unless the
 * class is invalid_request. */
void air__fault_apply_should_retry(air_fault_t *f, const air_http_in_t *in);

/* Safe bounded copy into a fixed char array (always NUL-terminated). */
void air__strlcpy(char *dst, const char *src, size_t size);

/* Join base_url (trailing '/' stripped) and a path into an owned string. */
char *air__url_join(const char *base, const char *path);

/* "Name: value" owned header string; NULL on OOM. */
char *air__header(const char *name, const char *value);

/* A member of an object (NULL for anything else): the first one of that
 * name, as cJSON_GetObjectItemCaseSensitive finds it, with the first byte
 * compared before strcmp is called (lookups are a good part of translating
 * a request). */
const cJSON *air__json_get(const cJSON *obj, const char *key);

/* Release everything an air_http_out_t owns and zero it. */
void air__http_out_clear(air_http_out_t *out);
void air__decoded_clear(air_decoded_t *d);

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
 * days_from_civil): no timegm, no TZ variable, no locale. */
int64_t air__days_from_civil(int64_t y, int m, int d);
/* Exactly ndigits decimal digits at *sp into *out, advancing *sp. 0, or -1
 * (nothing consumed) when one is not a digit. */
int air__take_digits(const char **sp, int ndigits, int *out);
/* "<prefix><mid>[i]" into dst (size bytes), for error messages naming a
 * JSON path ("messages" "[3]", "messages[3].content" "[0]"). */
void air__path_idx(char *dst, size_t size, const char *prefix, const char *mid, int i);

#endif
