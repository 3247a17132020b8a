/*
 * ratelimit.c - vendor rate-limit headers -> air_ratelimit_t.
 *
 * DESIGN: the policy layer learns each deployment's real quota from the
 * headers the vendor sends with every reply (DESIGN.md, "Rate limits"), so
 * the three header families in use are brought into one form here:
 * OpenAI-style counters with Go-style reset durations, Azure's variant of
 * them (where 0 and -1 mean "not reported"), and Anthropic's counters with
 * absolute RFC 3339 reset times. Gemini has none.
 *
 * Everything is parsed by hand, without strtod/strtoll or strptime: those
 * depend on the host's locale (and errno), which an embedded library must
 * not assume, and a header is untrusted input. Numbers saturate instead of
 * overflowing. A value that does not parse is "unknown" (-1), never an
 * error: rate-limit headers are advice, and a vendor's odd header must not
 * fail a good reply.
 */
#include "ratelimit.h"

#include <string.h>

#include "common.h"

/* Largest value we represent (about 31 years in ms; far above any counter):
 * keeps every sum and product below int64 overflow. */
#define RL_CAP ((int64_t)1000000000000000LL)

/* Nanoseconds per Go duration unit. */
#define NS_US ((int64_t)1000)
#define NS_MS ((int64_t)1000000)
#define NS_S  ((int64_t)1000000000)
#define NS_M  (60 * NS_S)
#define NS_H  (60 * NS_M)

/* Saturation point of the nanosecond sum: RL_CAP ms would overflow. */
#define NS_CAP ((int64_t)4000000000000000000LL)

void
air__ratelimit_clear(air_ratelimit_t *rl)
{
    rl->limit_requests = -1;
    rl->remaining_requests = -1;
    rl->reset_requests_ms = -1;
    rl->limit_tokens = -1;
    rl->remaining_tokens = -1;
    rl->reset_tokens_ms = -1;
    rl->present = 0;
}

static const char *
skip_blank(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return s;
}

static int
is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* ------------------------------------------------------------------------ */
/* Plain counters                                                            */

/* "[+]digits" with blanks around: 0 and the value (saturated), or -1. A
 * minus sign is accepted and gives a negative value (Azure's "-1"). */
static int
parse_count(const char *s, int64_t *out)
{
    s = skip_blank(s);
    int neg = 0;
    if (*s == '-' || *s == '+')
        neg = *s++ == '-';
    if (!is_digit(*s))
        return -1;
    int64_t v = 0;
    while (is_digit(*s)) {
        if (v < RL_CAP)
            v = v * 10 + (*s - '0');
        s++;
    }
    if (*skip_blank(s) != '\0')
        return -1;
    if (v > RL_CAP)
        v = RL_CAP;
    *out = neg ? -v : v;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Go durations                                                              */

/* Match a unit at *sp: its size in ns, and advance. 0 when none. */
static int64_t
take_unit(const char **sp)
{
    static const struct {
        const char *name;
        int64_t ns;
    } units[] = {
        /* Two-byte names first: "ms" must not be read as "m" + junk. */
        {"ns", 1},
        {"us", NS_US},
        {"\xc2\xb5s", NS_US}, /* U+00B5 micro sign */
        {"\xce\xbcs", NS_US}, /* U+03BC Greek small letter mu */
        {"ms", NS_MS},
        {"s", NS_S},
        {"m", NS_M},
        {"h", NS_H},
    };
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        size_t n = strlen(units[i].name);
        if (strncmp(*sp, units[i].name, n) == 0) {
            *sp += n;
            return units[i].ns;
        }
    }
    return 0;
}

/* One decimal "<int>[.<frac>]" at *sp (at least one digit in total). The
 * integer part saturates; at most 12 fraction digits count. */
static int
take_decimal(const char **sp, int64_t *ip, int64_t *fnum, int64_t *fden)
{
    const char *s = *sp;
    int digits = 0;
    *ip = 0;
    *fnum = 0;
    *fden = 1;
    while (is_digit(*s)) {
        if (*ip < RL_CAP)
            *ip = *ip * 10 + (*s - '0');
        s++;
        digits++;
    }
    if (*s == '.') {
        s++;
        while (is_digit(*s)) {
            if (*fden < (int64_t)1000000000000LL) {
                *fnum = *fnum * 10 + (*s - '0');
                *fden *= 10;
            }
            s++;
            digits++;
        }
    }
    if (digits == 0)
        return -1;
    if (*ip > RL_CAP)
        *ip = RL_CAP;
    *sp = s;
    return 0;
}

/* ns -> ms, rounded up. */
static int64_t
ns_to_ms_ceil(int64_t ns)
{
    int64_t ms = ns / NS_MS + (ns % NS_MS != 0);
    return ms > RL_CAP ? RL_CAP : ms;
}

int
air__ratelimit_duration_ms(const char *s, int64_t *out_ms)
{
    if (s == NULL)
        return -1;
    s = skip_blank(s);
    if (*s == '+')
        s++;
    else if (*s == '-')
        return -1; /* a reset in the past is no information */

    int64_t total = 0; /* ns, saturating at NS_CAP */
    int terms = 0;
    while (*s != '\0' && *s != ' ' && *s != '\t') {
        int64_t ip, fnum, fden;
        if (take_decimal(&s, &ip, &fnum, &fden) != 0)
            return -1;
        int64_t unit = take_unit(&s);
        if (unit == 0) {
            /* No unit: Go allows only the bare "0"; we also take a lone
             * number as seconds (compatible vendors that send "2"). */
            if (terms != 0 || *skip_blank(s) != '\0')
                return -1;
            unit = NS_S;
        }
        int64_t term;
        if (ip > NS_CAP / unit)
            term = NS_CAP;
        else
            term = ip * unit + (int64_t)((double)fnum / (double)fden * (double)unit);
        total = term > NS_CAP - total ? NS_CAP : total + term;
        terms++;
    }
    if (terms == 0 || *skip_blank(s) != '\0')
        return -1;
    *out_ms = ns_to_ms_ceil(total);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* RFC 3339 times                                                            */

static int
take_char(const char **sp, const char *set)
{
    if (**sp == '\0' || strchr(set, **sp) == NULL)
        return -1;
    (*sp)++;
    return 0;
}

int
air__ratelimit_rfc3339_ms(const char *s, int64_t *out_ms)
{
    if (s == NULL)
        return -1;
    s = skip_blank(s);
    int y, mo, d, hh, mm, ss;
    if (air__take_digits(&s, 4, &y) || take_char(&s, "-") || air__take_digits(&s, 2, &mo) ||
        take_char(&s, "-") || air__take_digits(&s, 2, &d) || take_char(&s, "Tt ") ||
        air__take_digits(&s, 2, &hh) || take_char(&s, ":") || air__take_digits(&s, 2, &mm) ||
        take_char(&s, ":") || air__take_digits(&s, 2, &ss))
        return -1;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || hh > 23 || mm > 59 || ss > 60)
        return -1;
    int64_t frac_ms = 0;
    if (*s == '.') {
        s++;
        int digits = 0, scale = 100;
        while (is_digit(*s)) {
            frac_ms += (*s - '0') * scale;
            scale /= 10;
            s++;
            digits++;
        }
        if (digits == 0)
            return -1;
    }
    int64_t offset_min = 0;
    if (*s == 'Z' || *s == 'z') {
        s++;
    } else if (*s == '+' || *s == '-') {
        int sign = *s++ == '-' ? -1 : 1, oh, om;
        if (air__take_digits(&s, 2, &oh) || take_char(&s, ":") || air__take_digits(&s, 2, &om) ||
            oh > 23 || om > 59)
            return -1;
        offset_min = sign * (oh * 60 + om);
    } else {
        return -1;
    }
    if (*skip_blank(s) != '\0')
        return -1;
    int64_t days = air__days_from_civil(y, mo, d);
    int64_t sec = ((days * 24 + hh) * 60 + mm) * 60 + ss - offset_min * 60;
    *out_ms = sec * 1000 + frac_ms;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Header families                                                           */

static const char *
hdr(const air_http_in_t *in, const char *name)
{
    return in->header != NULL ? in->header(in->hctx, name) : NULL;
}

/* A counter header into *dst when it parses and is acceptable. */
static void
take_count(const air_http_in_t *in, const char *name, int ignore_nonpositive, int64_t *dst,
           int *present)
{
    int64_t v;
    const char *h = hdr(in, name);
    if (h == NULL || parse_count(h, &v) != 0)
        return;
    if (v < 0 || (ignore_nonpositive && v == 0))
        return;
    *dst = v;
    *present = 1;
}

static void
take_duration(const air_http_in_t *in, const char *name, int ignore_nonpositive, int64_t *dst,
              int *present)
{
    int64_t v;
    const char *h = hdr(in, name);
    if (h == NULL || air__ratelimit_duration_ms(h, &v) != 0)
        return;
    if (ignore_nonpositive && v == 0)
        return;
    *dst = v;
    *present = 1;
}

void
air__ratelimit_openai(const air_http_in_t *in, int ignore_nonpositive, air_ratelimit_t *out)
{
    air__ratelimit_clear(out);
    if (in == NULL)
        return;
    int p = 0;
    take_count(in, "x-ratelimit-limit-requests", ignore_nonpositive, &out->limit_requests, &p);
    take_count(in, "x-ratelimit-remaining-requests", ignore_nonpositive, &out->remaining_requests,
               &p);
    take_duration(in, "x-ratelimit-reset-requests", ignore_nonpositive, &out->reset_requests_ms,
                  &p);
    take_count(in, "x-ratelimit-limit-tokens", ignore_nonpositive, &out->limit_tokens, &p);
    take_count(in, "x-ratelimit-remaining-tokens", ignore_nonpositive, &out->remaining_tokens, &p);
    take_duration(in, "x-ratelimit-reset-tokens", ignore_nonpositive, &out->reset_tokens_ms, &p);
    out->present = p;
}

/* One anthropic-ratelimit-<group>-{limit,remaining,reset} triple. */
struct ant_group {
    int64_t limit, remaining, reset_ms;
    int present;
};

static void
ant_group(const air_http_in_t *in, const char *group, struct ant_group *g)
{
    char name[64];
    g->limit = g->remaining = g->reset_ms = -1;
    g->present = 0;
    static const char pre[] = "anthropic-ratelimit-";
    size_t gl = strlen(group);
    if (sizeof pre - 1 + gl + sizeof "-remaining" > sizeof name)
        return;
    memcpy(name, pre, sizeof pre - 1);
    memcpy(name + sizeof pre - 1, group, gl);
    char *tail = name + sizeof pre - 1 + gl;

    memcpy(tail, "-limit", sizeof "-limit");
    take_count(in, name, 0, &g->limit, &g->present);
    memcpy(tail, "-remaining", sizeof "-remaining");
    take_count(in, name, 0, &g->remaining, &g->present);
    memcpy(tail, "-reset", sizeof "-reset");
    int64_t at;
    const char *h = hdr(in, name);
    if (h != NULL && in->now_unix_ms > 0 && air__ratelimit_rfc3339_ms(h, &at) == 0) {
        int64_t d = at - in->now_unix_ms;
        g->reset_ms = d < 0 ? 0 : (d > RL_CAP ? RL_CAP : d);
        g->present = 1;
    }
}

void
air__ratelimit_anthropic(const air_http_in_t *in, air_ratelimit_t *out)
{
    air__ratelimit_clear(out);
    if (in == NULL)
        return;
    struct ant_group req, tok, itok, otok;
    ant_group(in, "requests", &req);
    ant_group(in, "tokens", &tok);
    const struct ant_group *t = &tok;
    if (!tok.present) {
        ant_group(in, "input-tokens", &itok);
        ant_group(in, "output-tokens", &otok);
        t = &itok;
        if (!itok.present || (otok.present && otok.remaining >= 0 &&
                              (itok.remaining < 0 || otok.remaining < itok.remaining)))
            t = otok.present ? &otok : &itok;
    }
    out->limit_requests = req.limit;
    out->remaining_requests = req.remaining;
    out->reset_requests_ms = req.reset_ms;
    out->limit_tokens = t->limit;
    out->remaining_tokens = t->remaining;
    out->reset_tokens_ms = t->reset_ms;
    out->present = req.present || t->present;
}

void
air__ratelimit_openai_op(const void *state, const air_http_in_t *in, air_ratelimit_t *out)
{
    (void)state;
    air__ratelimit_openai(in, 0, out);
}

void
air__ratelimit_azure_op(const void *state, const air_http_in_t *in, air_ratelimit_t *out)
{
    (void)state;
    air__ratelimit_openai(in, 1, out);
}

void
air__ratelimit_anthropic_op(const void *state, const air_http_in_t *in, air_ratelimit_t *out)
{
    (void)state;
    air__ratelimit_anthropic(in, out);
}

void
air__ratelimit_none_op(const void *state, const air_http_in_t *in, air_ratelimit_t *out)
{
    (void)state;
    (void)in;
    air__ratelimit_clear(out);
}
