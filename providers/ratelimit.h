/*
 * ratelimit.h - vendor rate-limit headers in one common form
 * (air_ratelimit_t, include/airouter/provider.h). Implemented in
 * providers/ratelimit.c; pure functions (no clock: "now" comes from
 * air_http_in_t.now_unix_ms).
 *
 * Vendors and their headers (spec sections 1.7, 2.7, 3.5, 5):
 *   - OpenAI and the OpenAI-compatible presets:
 *     x-ratelimit-{limit,remaining,reset}-{requests,tokens}; resets are
 *     Go-style durations ("12ms", "1s", "6m0s", "1h2m3.5s").
 *   - Azure OpenAI: the same names; non-positive values mean "not
 *     reported" on some APIs and are ignored.
 *   - Anthropic: anthropic-ratelimit-{requests,tokens,input-tokens,
 *     output-tokens}-{limit,remaining,reset}; resets are RFC 3339 times.
 *   - Gemini: none (quota errors carry RetryInfo in the body instead).
 */
#ifndef AIR_PROVIDERS_RATELIMIT_H
#define AIR_PROVIDERS_RATELIMIT_H

#include <stdint.h>

#include "airouter/provider.h"

/* Every field -1, present 0. */
void air__ratelimit_clear(air_ratelimit_t *rl);

/* A Go time.ParseDuration string -> milliseconds, rounded up (a reset in
 * 300us is reported as 1 ms, never as "now"). Accepts an optional '+', one
 * or more <decimal><unit> terms (units ns, us, µs, μs, ms, s, m, h), the bare
 * "0", and, as an extension for compatible vendors that send plain seconds,
 * a bare decimal number of seconds ("2", "0.5"). Blanks around the value are
 * allowed. Saturates at about 31 years. Returns 0, or -1 for anything else
 * (negative durations included). */
int air__ratelimit_duration_ms(const char *s, int64_t *out_ms);

/* An RFC 3339 date-time ("2025-08-21T12:40:59Z", "...59.250+02:00") -> unix
 * milliseconds. 't'/'T'/' ' separators and 'z'/'Z' accepted. Returns 0, or
 * -1 when s is not such a time. */
int air__ratelimit_rfc3339_ms(const char *s, int64_t *out_ms);

/* OpenAI-style x-ratelimit-* headers. ignore_nonpositive = 1 (Azure): a
 * value <= 0 counts as absent; otherwise only negative values do. */
void air__ratelimit_openai(const air_http_in_t *in, int ignore_nonpositive, air_ratelimit_t *out);

/* anthropic-ratelimit-* headers. The token fields come from the
 * "tokens" group when the response has any of its headers, else from
 * whichever of "input-tokens" / "output-tokens" has less remaining (the one
 * that binds first; input when that is unknown). Resets are relative to
 * in->now_unix_ms (unknown when that is not positive) and clamped at 0. */
void air__ratelimit_anthropic(const air_http_in_t *in, air_ratelimit_t *out);

/* The same parsers with the air_provider_ops_t.ratelimit signature (state
 * unused), for the ops tables. */
void air__ratelimit_openai_op(const void *state, const air_http_in_t *in, air_ratelimit_t *out);
void air__ratelimit_azure_op(const void *state, const air_http_in_t *in, air_ratelimit_t *out);
void air__ratelimit_anthropic_op(const void *state, const air_http_in_t *in, air_ratelimit_t *out);
/* Gemini sends no rate-limit headers: always "unknown" (present 0). Wired
 * explicitly so that core never guesses from another vendor's names. */
void air__ratelimit_none_op(const void *state, const air_http_in_t *in, air_ratelimit_t *out);

#endif
