/*
 * cmd_mock.c - `airouter mock`: run the mock provider (OpenAI, Anthropic,
 * Gemini or Azure wire format) in the foreground until SIGINT or SIGTERM.
 *
 * DESIGN: options are one table (name, type, bounds, destination, help), so
 * parsing, validation and --help cannot drift apart. Every value is checked
 * in full (no trailing junk, within bounds) and a bad one ends the program
 * with status 2 and a message naming the option. The signals are blocked
 * before the mock's threads start and then taken with sigwait on this
 * thread: no handler, no busy loop, no async-signal-safety concerns.
 */
#include "cmds.h"
#include "mock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { T_HOST, T_ENV, T_U16, T_U32, T_I32, T_U64, T_RATE, T_STATUS, T_FORMAT, T_PATH };

struct mock_opt {
    const char *name; /* without the leading "--" */
    int type;
    long long min, max; /* integer bounds */
    const char *meta;   /* value placeholder in --help */
    const char *help;
};

/* Indexes into the table below, in the same order. */
enum {
    OPT_HOST,
    OPT_PORT,
    OPT_THREADS,
    OPT_LATENCY,
    OPT_JITTER,
    OPT_TAIL_RATE,
    OPT_TAIL_MS,
    OPT_FAIL_RATE,
    OPT_FAIL_STATUS,
    OPT_FAIL_FIRST,
    OPT_RETRY_AFTER,
    OPT_RESET_RATE,
    OPT_CHUNKS,
    OPT_CHUNK_DELAY,
    OPT_KEY_ENV,
    OPT_SEED,
    OPT_FORMAT,
    OPT_RECORD,
    OPT_STREAM_ERROR_RATE,
    OPT__COUNT
};

static const struct mock_opt mock_opts[OPT__COUNT] = {
    {"host", T_HOST, 0, 0, "ADDR", "listen address, IPv4 or IPv6 literal (default 127.0.0.1)"},
    {"port", T_U16, 0, 65535, "N", "listen port, 0 = any free port (default 8081)"},
    {"threads", T_U32, 1, 256, "N", "event-loop threads (default 1)"},
    {"latency-ms", T_U32, 0, 3600000, "MS", "delay before each chat response (default 0)"},
    {"jitter-ms", T_U32, 0, 3600000, "MS", "plus a uniform random 0..MS (default 0)"},
    {"tail-rate", T_RATE, 0, 1, "X", "fraction of chat requests that also wait --tail-ms"},
    {"tail-ms", T_U32, 0, 3600000, "MS", "extra delay of the latency tail (default 0)"},
    {"fail-rate", T_RATE, 0, 1, "X", "fraction of chat requests that fail, 0..1 (default 0)"},
    {"fail-status", T_STATUS, 400, 599, "CODE", "HTTP status of injected failures (default 500)"},
    {"fail-first", T_U32, 0, UINT32_MAX, "N", "the first N chat requests fail (default 0)"},
    {"retry-after", T_I32, -1, 86400, "S",
     "failures carry Retry-After: S (gemini: RetryInfo in the\n"
     "                         body); -1 = none (default)"},
    {"reset-rate", T_RATE, 0, 1, "X", "fraction of chat responses cut by a TCP RST (default 0)"},
    {"chunks", T_U32, 0, 100000, "N", "content pieces per completion (default 8)"},
    {"chunk-delay-ms", T_U32, 0, 3600000, "MS", "delay between stream chunks (default 0)"},
    {"api-key-env", T_ENV, 0, 0, "NAME",
     "require the key in env var NAME, in the header of the\n"
     "                         format: "
     "Authorization: Bearer (openai), x-api-key\n"
     "                         (anthropic), "
     "x-goog-api-key (gemini), api-key (azure)"},
    {"seed", T_U64, 0, 0, "N", "random seed for faults and jitter (default fixed)"},
    {"format", T_FORMAT, 0, 0, "F", "wire format: openai (default), anthropic, gemini, azure"},
    {"record", T_PATH, 0, 0, "FILE",
     "append one JSON line per request received to FILE:\n"
     "                         method, path, query, headers (keys masked), body"},
    {"stream-error-rate", T_RATE, 0, 1, "X", "fraction of streams cut half-way by an error event"},
};

static void
usage(FILE *out)
{
    fprintf(out, "usage: airouter mock [options]\n\n"
                 "Run a mock LLM provider until SIGINT or SIGTERM. Its chat endpoint\n"
                 "depends on --format:\n"
                 "  openai     POST /v1/chat/completions\n"
                 "  anthropic  POST /v1/messages\n"
                 "  gemini     POST /v1beta/models/{model}:generateContent and\n"
                 "             :streamGenerateContent?alt=sse\n"
                 "  azure      POST /openai/deployments/{deployment}/chat/completions\n"
                 "             ?api-version=...\n"
                 "Plain or streamed replies (content \"tok0 tok1 ...\", one tool call when\n"
                 "the request offers tools), usage, and errors in the vendor's shape.\n"
                 "GET /v1/models and GET /healthz answer in every format.\n\noptions:\n");
    for (int i = 0; i < OPT__COUNT; i++) {
        char lhs[40];
        snprintf(lhs, sizeof lhs, "--%s %s", mock_opts[i].name, mock_opts[i].meta);
        fprintf(out, "  %-22s %s\n", lhs, mock_opts[i].help);
    }
    fprintf(out, "  %-22s %s\n", "--help", "show this help");
}

static int
bad_value(const struct mock_opt *o)
{
    switch (o->type) {
    case T_RATE:
        fprintf(stderr, "airouter mock: --%s: expected a number between 0 and 1\n", o->name);
        break;
    case T_STATUS:
        fprintf(stderr, "airouter mock: --%s: expected an HTTP status between %lld and %lld\n",
                o->name, o->min, o->max);
        break;
    case T_HOST:
        fprintf(stderr, "airouter mock: --%s: expected an IPv4 or IPv6 address\n", o->name);
        break;
    case T_U64:
        fprintf(stderr, "airouter mock: --%s: expected an unsigned 64-bit integer\n", o->name);
        break;
    case T_FORMAT:
        fprintf(stderr, "airouter mock: --%s: expected openai, anthropic, gemini or azure\n",
                o->name);
        break;
    case T_PATH:
        fprintf(stderr, "airouter mock: --%s: expected a file name\n", o->name);
        break;
    default:
        fprintf(stderr, "airouter mock: --%s: expected an integer between %lld and %lld\n", o->name,
                o->min, o->max);
        break;
    }
    return 2;
}

/* Whole-string integer within [min, max]. */
static int
parse_ll(const char *s, long long min, long long max, long long *out)
{
    if (*s == '\0' || *s == ' ' || *s == '+')
        return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* Apply one option value to o. Returns 0 or an exit status. */
static int
apply(int idx, const char *val, air_mock_opts_t *o)
{
    const struct mock_opt *d = &mock_opts[idx];
    long long v = 0;
    switch (d->type) {
    case T_HOST: {
        unsigned char tmp[sizeof(struct in6_addr)];
        if (inet_pton(AF_INET, val, tmp) != 1 && inet_pton(AF_INET6, val, tmp) != 1 &&
            strcmp(val, "localhost") != 0)
            return bad_value(d);
        o->host = val;
        return 0;
    }
    case T_ENV: {
        const char *key = *val ? getenv(val) : NULL;
        if (key == NULL || *key == '\0') {
            /* The variable's name is not a secret; its value is never printed. */
            fprintf(stderr, "airouter mock: --%s: environment variable '%s' is not set or empty\n",
                    d->name, val);
            return 2;
        }
        o->api_key = key;
        return 0;
    }
    case T_RATE: {
        errno = 0;
        char *end;
        double x = strtod(val, &end);
        if (*val == '\0' || errno || *end != '\0' || !isfinite(x) || x < 0 || x > 1)
            return bad_value(d);
        if (idx == OPT_FAIL_RATE)
            o->fail_rate = x;
        else if (idx == OPT_TAIL_RATE)
            o->tail_rate = x;
        else if (idx == OPT_STREAM_ERROR_RATE)
            o->stream_error_rate = x;
        else
            o->reset_rate = x;
        return 0;
    }
    case T_FORMAT:
        if (strcmp(val, "openai") != 0 && strcmp(val, "anthropic") != 0 &&
            strcmp(val, "gemini") != 0 && strcmp(val, "azure") != 0)
            return bad_value(d);
        o->format = val;
        return 0;
    case T_PATH:
        if (*val == '\0')
            return bad_value(d);
        o->record_path = val;
        return 0;
    case T_U64: {
        if (*val < '0' || *val > '9')
            return bad_value(d);
        errno = 0;
        char *end;
        unsigned long long x = strtoull(val, &end, 10);
        if (errno || *end != '\0')
            return bad_value(d);
        o->seed = (uint64_t)x;
        return 0;
    }
    default:
        break;
    }
    if (parse_ll(val, d->min, d->max, &v) != 0)
        return bad_value(d);
    switch (idx) {
    case OPT_PORT:
        o->port = (uint16_t)v;
        break;
    case OPT_THREADS:
        o->threads = (uint32_t)v;
        break;
    case OPT_LATENCY:
        o->latency_ms = (uint32_t)v;
        break;
    case OPT_JITTER:
        o->jitter_ms = (uint32_t)v;
        break;
    case OPT_TAIL_MS:
        o->tail_ms = (uint32_t)v;
        break;
    case OPT_FAIL_STATUS:
        o->fail_status = (int)v;
        break;
    case OPT_FAIL_FIRST:
        o->fail_first = (uint32_t)v;
        break;
    case OPT_RETRY_AFTER:
        o->retry_after_s = (int32_t)v;
        break;
    case OPT_CHUNKS:
        o->chunks = (uint32_t)v;
        break;
    case OPT_CHUNK_DELAY:
        o->chunk_delay_ms = (uint32_t)v;
        break;
    default:
        return bad_value(d);
    }
    return 0;
}

/* Parse argv into o. Returns -1 to go on, or an exit status (0 after --help). */
static int
parse_args(int argc, char **argv, air_mock_opts_t *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "airouter mock: unexpected argument '%s' (see --help)\n", a);
            return 2;
        }
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        int idx = -1;
        for (int k = 0; k < OPT__COUNT; k++) {
            if (strlen(mock_opts[k].name) == nlen && strncmp(mock_opts[k].name, name, nlen) == 0) {
                idx = k;
                break;
            }
        }
        if (idx < 0) {
            fprintf(stderr, "airouter mock: unknown option '--%.*s' (see --help)\n", (int)nlen,
                    name);
            return 2;
        }
        const char *val;
        if (eq) {
            val = eq + 1;
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            fprintf(stderr, "airouter mock: --%s: missing value\n", mock_opts[idx].name);
            return 2;
        }
        int rc = apply(idx, val, o);
        if (rc != 0)
            return rc;
    }
    return -1;
}

int
air__cmd_mock(int argc, char **argv)
{
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.port = 8081;
    int rc = parse_args(argc, argv, &o);
    if (rc >= 0)
        return rc;

    /* Block before the mock's threads exist, so that only sigwait takes them. */
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    if (pthread_sigmask(SIG_BLOCK, &set, &old) != 0) {
        fprintf(stderr, "airouter mock: cannot block signals\n");
        return 1;
    }

    air_mock_t *m = NULL;
    char err[256] = "";
    if (air_mock_start(&o, &m, err, sizeof err) != 0) {
        fprintf(stderr, "airouter mock: %s\n", err);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        return 1;
    }
    const char *host = o.host && *o.host ? o.host : "127.0.0.1";
    int v6 = strchr(host, ':') != NULL;
    printf("airouter mock listening on http://%s%s%s:%u (%s)\n", v6 ? "[" : "", host, v6 ? "]" : "",
           (unsigned)air_mock_port(m), o.format ? o.format : "openai");
    fflush(stdout);

    int sig = 0;
    if (sigwait(&set, &sig) != 0)
        sig = SIGTERM;

    air_mock_stats_t s;
    air_mock_stats(m, &s);
    air_mock_stop(m);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    fprintf(stderr,
            "airouter mock: %s: connections=%llu requests=%llu ok=%llu failed=%llu resets=%llu "
            "streams=%llu unauthorized=%llu stream_errors=%llu\n",
            sig == SIGINT ? "SIGINT" : "SIGTERM", (unsigned long long)s.connections,
            (unsigned long long)s.requests, (unsigned long long)s.ok, (unsigned long long)s.failed,
            (unsigned long long)s.resets, (unsigned long long)s.streams,
            (unsigned long long)s.unauthorized, (unsigned long long)s.stream_errors);
    return 0;
}
