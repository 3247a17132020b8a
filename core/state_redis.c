/*
 * state_redis.c - the Redis state backend (see state_redis.h, policy/state.h
 * and docs/SCALING.md).
 *
 * DESIGN
 * Redis is kept off the hot path: requests spend leases (policy/state.c);
 * this file only moves leases and usage between the instance and Redis, on
 * one thread per backend, in batches. A batch is one EVALSHA of LEASE_LUA
 * carrying, for every limit that has something to say, what to settle
 * (usage, spending), what to give back, what debt to cover and how much
 * more to lease. The script runs atomically on the server, reads Redis's
 * own clock (TIME) for refill and budget windows, and records the batch's
 * sequence number and reply under the instance's key: a batch resent after
 * a timeout or a reconnect (we cannot know whether the first try ran) is
 * answered with the stored reply and changes nothing, so settling is exactly
 * once. Only one batch is outstanding; until it is confirmed nothing new is
 * planned, and usage keeps accumulating in the limits' counters.
 *
 * Failure: any I/O error or a reply later than timeout_ms drops the
 * connection and marks the state unhealthy (limits whose slice is spent
 * then fail open or closed); reconnection backs off exponentially (with
 * jitter) up to backoff_max_ms. Each transition is logged once.
 *
 * Keys (prefix P, every key expires):
 *   P inst:<id>            hash seq, reply: the last batch of one instance (1 day)
 *   P rate:<limit>         hash tokens (thousandths), ts (ms), used (tokens settled):
 *                          a token bucket; expires a day after it is full again
 *   P budget:<limit>:<ws>  hash committed, spent (micro-dollars) of the window
 *                          starting at ws (ms); expires a day after the window
 */
#include "state_redis.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "alloc.h"

#define MAX_BATCH   256    /* limits per EVALSHA */
#define FIELDS      9      /* ARGV fields per limit */
#define KEEP_MS     86400000LL
#define HEARTBEAT_MS 1000

/* KEYS[1] instance key, KEYS[1+i] limit i. ARGV[1] batch seq, ARGV[2] how
 * long keys outlive their use (ms), then FIELDS per limit:
 *   rate:   'r', refill (thousandths/ms), burst, must, want, ret, used,
 *           vendor remaining (-1 none), vendor reset (ms, 0 none)
 *   budget: 'b', window (0 minute .. 3 month), limit (micro-$, 0 none), must,
 *           want, ret, spent, window start of ret/spent (0 = current), 0
 * Reply: store time (ms), then per limit: grant, level, window start,
 * window end, window spending. */
/* In parts: ISO C caps a string literal at 4095 bytes; joined at start. */
static const char *const LEASE_LUA[] = {
    "local inst = KEYS[1]\n"
    "local seq = tonumber(ARGV[1])\n"
    "local last = tonumber(redis.call('HGET', inst, 'seq') or '0')\n"
    "if seq <= last then\n"
    "  if seq == last then\n"
    "    local r = redis.call('HGET', inst, 'reply')\n"
    "    if r then\n"
    "      local out = {}\n"
    "      for v in string.gmatch(r, '[-%d]+') do out[#out + 1] = tonumber(v) end\n"
    "      return out\n"
    "    end\n"
    "  end\n"
    "  return redis.error_reply('AIRSTALE batch ' .. ARGV[1] .. ' is older than the last')\n"
    "end\n"
    "local keep = tonumber(ARGV[2])\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local function fmt(v) return string.format('%d', v) end\n"
    "local function dfc(y, m, d)\n"
    "  if m <= 2 then y = y - 1 end\n"
    "  local era = math.floor(y / 400)\n"
    "  local yoe = y - era * 400\n"
    "  local doy = math.floor((153 * ((m + 9) % 12) + 2) / 5) + d - 1\n"
    "  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy\n"
    "  return era * 146097 + doe - 719468\n"
    "end\n"
    "local function cfd(z)\n"
    "  z = z + 719468\n"
    "  local era = math.floor(z / 146097)\n"
    "  local doe = z - era * 146097\n"
    "  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)\n"
    "    - math.floor(doe / 146096)) / 365)\n"
    "  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))\n"
    "  local mp = math.floor((5 * doy + 2) / 153)\n"
    "  local m = mp + 3\n"
    "  if mp >= 10 then m = mp - 9 end\n"
    "  local y = yoe + era * 400\n"
    "  if m <= 2 then y = y + 1 end\n"
    "  return y, m\n"
    "end\n"
    "local function win(w, ms)\n"
    "  local len = ({60000, 3600000, 86400000})[w + 1]\n"
    "  if len then local s = ms - ms % len return s, s + len end\n"
    "  local y, m = cfd(math.floor(ms / 86400000))\n"
    "  local e\n"
    "  if m == 12 then e = dfc(y + 1, 1, 1) else e = dfc(y, m + 1, 1) end\n"
    "  return dfc(y, m, 1) * 86400000, e * 86400000\n"
    "end\n",
    "local out = {now}\n"
    "local n = (#ARGV - 2) / 9\n"
    "local function bad(k)\n"
    "  local t = redis.call('TYPE', k)['ok']\n"
    "  return t ~= 'hash' and t ~= 'none'\n"
    "end\n"
    "if bad(inst) then return redis.error_reply('AIRTYPE ' .. inst .. ' is not a hash') end\n"
    "for i = 1, n do\n"
    "  local a = 2 + (i - 1) * 9\n"
    "  local ks = {KEYS[i + 1]}\n"
    "  if ARGV[a + 1] == 'b' then\n"
    "    local p1 = tonumber(ARGV[a + 2])\n"
    "    local x1 = tonumber(ARGV[a + 8])\n"
    "    ks = {KEYS[i + 1] .. ':' .. fmt((win(p1, now)))}\n"
    "    if x1 > 0 then ks[2] = KEYS[i + 1] .. ':' .. fmt((win(p1, x1))) end\n"
    "  end\n"
    "  for _, k in ipairs(ks) do\n"
    "    if bad(k) then return redis.error_reply('AIRTYPE ' .. k .. ' is not a hash') end\n"
    "  end\n"
    "end\n"
    "for i = 1, n do\n"
    "  local a = 2 + (i - 1) * 9\n"
    "  local key = KEYS[i + 1]\n"
    "  local p1 = tonumber(ARGV[a + 2])\n"
    "  local p2 = tonumber(ARGV[a + 3])\n"
    "  local must = tonumber(ARGV[a + 4])\n"
    "  local want = tonumber(ARGV[a + 5])\n"
    "  local ret = tonumber(ARGV[a + 6])\n"
    "  local used = tonumber(ARGV[a + 7])\n"
    "  local x1 = tonumber(ARGV[a + 8])\n"
    "  local x2 = tonumber(ARGV[a + 9])\n"
    "  if ARGV[a + 1] == 'r' then\n",
    "    local h = redis.call('HMGET', key, 'tokens', 'ts')\n"
    "    local tok = tonumber(h[1]) or p2\n"
    "    local ts = tonumber(h[2]) or now\n"
    "    if now > ts then tok = tok + (now - ts) * p1 ts = now end\n"
    "    if tok > p2 then tok = p2 end\n"
    "    if ret > 0 then tok = math.min(p2, tok + ret) end\n"
    "    if x1 >= 0 then\n"
    "      local cap = x1\n"
    "      if x2 > 0 then cap = math.min(cap, p2 - x2 * p1) end\n"
    "      if tok > cap then tok = cap end\n"
    "    end\n"
    "    tok = tok - must\n"
    "    local g = 0\n"
    "    if want > 0 and tok > 0 then g = math.min(want, math.floor(tok)) end\n"
    "    tok = tok - g\n"
    "    redis.call('HSET', key, 'tokens', string.format('%.3f', tok), 'ts', fmt(ts))\n"
    "    if used ~= 0 then redis.call('HINCRBY', key, 'used', used) end\n"
    "    local full = 0\n"
    "    if tok < p2 and p1 > 0 then full = math.ceil((p2 - tok) / p1) end\n"
    "    redis.call('PEXPIRE', key, full + keep)\n"
    "    out[#out + 1] = must + g\n"
    "    out[#out + 1] = math.floor(tok)\n"
    "    out[#out + 1] = 0\n"
    "    out[#out + 1] = 0\n"
    "    out[#out + 1] = 0\n"
    "  else\n",
    "    local ws, we = win(p1, now)\n"
    "    if ret ~= 0 or used ~= 0 then\n"
    "      local rws, rwe = ws, we\n"
    "      if x1 > 0 and x1 ~= ws then rws, rwe = win(p1, x1) end\n"
    "      local rk = key .. ':' .. fmt(rws)\n"
    "      if ret ~= 0 then redis.call('HINCRBY', rk, 'committed', -ret) end\n"
    "      if used ~= 0 then redis.call('HINCRBY', rk, 'spent', used) end\n"
    "      redis.call('PEXPIREAT', rk, rwe + keep)\n"
    "    end\n"
    "    local ck = key .. ':' .. fmt(ws)\n"
    "    local c = tonumber(redis.call('HGET', ck, 'committed') or '0')\n"
    "    local g = 0\n"
    "    if want > 0 then\n"
    "      if p2 <= 0 then g = want else\n"
    "        g = math.max(0, math.min(want, p2 - c - must))\n"
    "      end\n"
    "    end\n"
    "    if must + g ~= 0 then c = redis.call('HINCRBY', ck, 'committed', must + g) end\n"
    "    redis.call('PEXPIREAT', ck, we + keep)\n"
    "    local s = tonumber(redis.call('HGET', ck, 'spent') or '0')\n"
    "    out[#out + 1] = must + g\n"
    "    if p2 > 0 then out[#out + 1] = p2 - c else out[#out + 1] = -1 end\n"
    "    out[#out + 1] = ws\n"
    "    out[#out + 1] = we\n"
    "    out[#out + 1] = s\n"
    "  end\n"
    "end\n"
    "local parts = {}\n"
    "for i = 1, #out do parts[i] = fmt(out[i]) end\n"
    "redis.call('HSET', inst, 'seq', ARGV[1], 'reply', table.concat(parts, ','))\n"
    "redis.call('PEXPIRE', inst, 86400000)\n"
    "return out\n",
    NULL,
};

struct entry {
    size_t lim;
    struct air__lease_req rq;
};

struct air__redis {
    struct air__state *st;
    char *url_text, *password, *prefix;
    struct air__redis_url url;
    uint32_t timeout_ms, backoff_ms, backoff_max_ms;
    int no_thread, quiet;
    _Atomic int64_t skew_ms; /* tests: added to the wall clock (clock_skew_ms) */
    char instance[17];
    char *inst_key;
    char *script; /* LEASE_LUA joined */

    struct air__slimit **lims;
    char **lkeys; /* full Redis key of each limit */
    size_t nlims;

    /* sync thread only */
    redisContext *c;
    char sha[48];
    uint64_t seq;       /* the batch being sent, or the last one confirmed */
    int pending;        /* batch `seq` sent (or about to be) and not confirmed */
    struct entry *batch;
    size_t nbatch;
    size_t cursor;      /* where the next plan pass starts */
    uint32_t backoff_cur;
    int64_t next_connect_ms; /* monotonic clock, as every duration below */
    int64_t last_io_ms;
    uint64_t rnd;
    char err_seen[96];  /* last script error logged (log each distinct one once) */

    pthread_t thread;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;            /* under mu */
    _Atomic int nudged;

    /* stats (monotonic ms, 0 = never) */
    _Atomic int64_t last_ok_ms;
    _Atomic int64_t last_rtt_us;
    _Atomic int64_t down_since_ms;
    _Atomic uint64_t syncs, errors, transitions, reconnects, dropped;
    pthread_mutex_t err_mu;
    char last_err[128];
};

static int64_t
wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t
mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Durations (backoff, heartbeat, time since the last sync): a clock that a
 * wall-clock step (NTP, a resumed VM) cannot stretch. */
static int64_t
mono_ms(void)
{
    return mono_us() / 1000;
}

/* This instance's wall clock (the `now` core hands the limits), plus the
 * skew a test asked for: what the sync side passes to air__lease_plan and
 * air__lease_apply, which translate the store's window ends into it.
 * Refill and windows themselves follow Redis's TIME. */
static int64_t
clock_ms(const struct air__redis *rs)
{
    return wall_ms() + atomic_load_explicit(&rs->skew_ms, memory_order_relaxed);
}

/* ------------------------------------------------------------------- URL */

int
air__redis_url_parse(const char *url, struct air__redis_url *out, char *why, size_t whylen)
{
    memset(out, 0, sizeof *out);
    out->port = 6379;
    if (strncmp(url, "rediss://", 9) == 0) {
        snprintf(why, whylen, "TLS (rediss://) is not supported by this build; use redis://");
        return -1;
    }
    if (strncmp(url, "redis://", 8) != 0) {
        snprintf(why, whylen, "must start with redis://");
        return -1;
    }
    const char *p = url + 8;
    const char *end = p + strcspn(p, "/?#");
    const char *at = memchr(p, '@', (size_t)(end - p));
    if (at != NULL) {
        if (memchr(p, ':', (size_t)(at - p)) != NULL) {
            snprintf(why, whylen,
                     "must not contain a password; name an environment variable in "
                     "state.password_env instead");
            return -1;
        }
        size_t ul = (size_t)(at - p);
        if (ul >= sizeof out->user) {
            snprintf(why, whylen, "user name is too long");
            return -1;
        }
        memcpy(out->user, p, ul);
        out->user[ul] = '\0';
        p = at + 1;
    }
    const char *hend;
    if (*p == '[') {
        hend = memchr(p, ']', (size_t)(end - p));
        if (hend == NULL) {
            snprintf(why, whylen, "unterminated [IPv6] host");
            return -1;
        }
        size_t hl = (size_t)(hend - p - 1);
        if (hl == 0 || hl >= sizeof out->host) {
            snprintf(why, whylen, "bad host");
            return -1;
        }
        memcpy(out->host, p + 1, hl);
        out->host[hl] = '\0';
        hend++;
    } else {
        hend = p + strcspn(p, ":/?#");
        if (hend > end)
            hend = end;
        size_t hl = (size_t)(hend - p);
        if (hl == 0 || hl >= sizeof out->host) {
            snprintf(why, whylen, "must name a host after redis://");
            return -1;
        }
        memcpy(out->host, p, hl);
        out->host[hl] = '\0';
    }
    if (hend < end && *hend == ':') {
        char *e2;
        errno = 0;
        long port = strtol(hend + 1, &e2, 10);
        if (errno || e2 == hend + 1 || e2 != end || port < 1 || port > 65535) {
            snprintf(why, whylen, "port must be a number between 1 and 65535");
            return -1;
        }
        out->port = (int)port;
    } else if (hend != end) {
        snprintf(why, whylen, "unexpected text after the host");
        return -1;
    }
    if (*end == '/' && end[1] != '\0') {
        char *e2;
        errno = 0;
        long db = strtol(end + 1, &e2, 10);
        if (errno || e2 == end + 1 || *e2 != '\0' || db < 0 || db > 1000000) {
            snprintf(why, whylen, "database must be a number after the last '/'");
            return -1;
        }
        out->db = (int)db;
    } else if (*end != '\0' && !(*end == '/' && end[1] == '\0')) {
        snprintf(why, whylen, "query strings and fragments are not supported");
        return -1;
    }
    return 0;
}

/* --------------------------------------------------------------- logging */

static void
set_last_err(struct air__redis *rs, const char *msg)
{
    pthread_mutex_lock(&rs->err_mu);
    snprintf(rs->last_err, sizeof rs->last_err, "%s", msg);
    pthread_mutex_unlock(&rs->err_mu);
}

static const char *
mode_name(enum air__fail_mode m)
{
    return m == AIR_FAIL_CLOSED ? "closed" : "open";
}

/* The store stopped answering: once per transition, one line. */
static void
mark_down(struct air__redis *rs, const char *why)
{
    set_last_err(rs, why);
    atomic_fetch_add_explicit(&rs->errors, 1, memory_order_relaxed);
    if (!atomic_exchange_explicit(&rs->st->healthy, 0, memory_order_acq_rel))
        return;
    atomic_fetch_add_explicit(&rs->transitions, 1, memory_order_relaxed);
    atomic_store_explicit(&rs->down_since_ms, mono_ms(), memory_order_relaxed);
    const struct air__state *st = rs->st;
    char share[48] = "";
    if (st->fail_rate == AIR_FAIL_OPEN || st->fail_quota == AIR_FAIL_OPEN ||
        st->fail_budget == AIR_FAIL_OPEN)
        snprintf(share, sizeof share, "; open means a local share of 1/%u", st->instances);
    if (!rs->quiet)
        fprintf(stderr,
                "airouter: state: redis %s:%d unreachable (%s); serving with rate limits "
                "fail-%s, budgets fail-%s, deployment quotas fail-%s%s\n",
                rs->url.host, rs->url.port, why, mode_name(st->fail_rate),
                mode_name(st->fail_budget), mode_name(st->fail_quota), share);
}

static void
mark_up(struct air__redis *rs)
{
    if (atomic_exchange_explicit(&rs->st->healthy, 1, memory_order_acq_rel))
        return;
    atomic_fetch_add_explicit(&rs->transitions, 1, memory_order_relaxed);
    int64_t since = atomic_load_explicit(&rs->down_since_ms, memory_order_relaxed);
    if (!rs->quiet)
        fprintf(stderr, "airouter: state: redis %s:%d reachable again after %.1f s\n",
                rs->url.host, rs->url.port,
                since > 0 ? (double)(mono_ms() - since) / 1000.0 : 0.0);
}

/* ------------------------------------------------------------ connection */

static void
disconnect(struct air__redis *rs)
{
    if (rs->c != NULL) {
        redisFree(rs->c);
        rs->c = NULL;
    }
}

static uint64_t
rnd_next(struct air__redis *rs)
{
    uint64_t x = rs->rnd;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    rs->rnd = x;
    return x;
}

static void
schedule_reconnect(struct air__redis *rs)
{
    int64_t now = mono_ms();
    uint32_t b = rs->backoff_cur;
    /* Full jitter over the upper half: [b/2, b]. */
    rs->next_connect_ms = now + b / 2 + (int64_t)(rnd_next(rs) % (b / 2 + 1));
    rs->backoff_cur = b * 2 > rs->backoff_max_ms ? rs->backoff_max_ms : b * 2;
}

/* A reply that is an error: its message (bounded), else NULL. */
static redisReply *
command(struct air__redis *rs, int argc, const char **argv, const size_t *lens)
{
    redisReply *r = redisCommandArgv(rs->c, argc, argv, lens);
    if (r == NULL) {
        char msg[128];
        snprintf(msg, sizeof msg, "%s", rs->c->errstr[0] ? rs->c->errstr : "I/O error");
        if (rs->c->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK))
            snprintf(msg, sizeof msg, "no reply within %u ms", rs->timeout_ms);
        disconnect(rs);
        mark_down(rs, msg);
        schedule_reconnect(rs);
    }
    return r;
}

static int
simple(struct air__redis *rs, int argc, const char **argv, const char *what)
{
    size_t lens[4];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    redisReply *r = command(rs, argc, argv, lens);
    if (r == NULL)
        return -1;
    int ok = r->type != REDIS_REPLY_ERROR;
    if (!ok) {
        char msg[128];
        snprintf(msg, sizeof msg, "%s: %.80s", what, r->str ? r->str : "error");
        disconnect(rs);
        mark_down(rs, msg);
        schedule_reconnect(rs);
    }
    if (ok && strcmp(argv[0], "SCRIPT") == 0) {
        if (r->type == REDIS_REPLY_STRING && r->len < sizeof rs->sha)
            snprintf(rs->sha, sizeof rs->sha, "%s", r->str);
        else
            ok = 0;
    }
    freeReplyObject(r);
    return ok ? 0 : -1;
}

static int
load_script(struct air__redis *rs)
{
    const char *argv[3] = {"SCRIPT", "LOAD", rs->script};
    return simple(rs, 3, argv, "SCRIPT LOAD");
}

static int
connect_redis(struct air__redis *rs)
{
    struct timeval tv = {.tv_sec = rs->timeout_ms / 1000,
                         .tv_usec = (suseconds_t)(rs->timeout_ms % 1000) * 1000};
    atomic_fetch_add_explicit(&rs->reconnects, 1, memory_order_relaxed);
    redisContext *c = redisConnectWithTimeout(rs->url.host, rs->url.port, tv);
    if (c == NULL || c->err) {
        char msg[128];
        snprintf(msg, sizeof msg, "%s", c != NULL ? c->errstr : "cannot allocate a connection");
        if (c != NULL)
            redisFree(c);
        mark_down(rs, msg);
        schedule_reconnect(rs);
        return -1;
    }
    redisSetTimeout(c, tv);
    rs->c = c;
    if (rs->password != NULL) {
        const char *argv[3] = {"AUTH", rs->url.user[0] ? rs->url.user : rs->password,
                               rs->password};
        /* The password never appears in a message: "AUTH" names the step. */
        if (simple(rs, rs->url.user[0] ? 3 : 2, argv, "AUTH") != 0)
            return -1;
    }
    if (rs->url.db != 0) {
        char db[16];
        snprintf(db, sizeof db, "%d", rs->url.db);
        const char *argv[2] = {"SELECT", db};
        if (simple(rs, 2, argv, "SELECT") != 0)
            return -1;
    }
    if (load_script(rs) != 0)
        return -1;
    rs->backoff_cur = rs->backoff_ms;
    return 0;
}

/* ----------------------------------------------------------------- batch */

struct argv_b {
    air_buf_t buf;
    size_t *off, *len;
    size_t n, cap;
};

static void
arg_add(struct argv_b *a, const char *s, size_t n)
{
    if (a->n == a->cap) {
        size_t nc = a->cap ? a->cap * 2 : 64;
        size_t *o = air__realloc(a->off, nc * sizeof *o);
        if (o != NULL)
            a->off = o;
        size_t *l = air__realloc(a->len, nc * sizeof *l);
        if (l != NULL)
            a->len = l;
        if (o == NULL || l == NULL) {
            a->buf.oom = 1;
            return;
        }
        a->cap = nc;
    }
    a->off[a->n] = a->buf.len;
    a->len[a->n] = n;
    a->n++;
    air__buf_append(&a->buf, s, n);
    air__buf_putc(&a->buf, '\0');
}

static void
arg_str(struct argv_b *a, const char *s)
{
    arg_add(a, s, strlen(s));
}

static void
arg_i64(struct argv_b *a, int64_t v)
{
    char t[32];
    int n = snprintf(t, sizeof t, "%lld", (long long)v);
    arg_add(a, t, (size_t)n);
}

static void
arg_f64(struct argv_b *a, double v)
{
    char t[40];
    int n = snprintf(t, sizeof t, "%.17g", v);
    arg_add(a, t, (size_t)n);
}

static void
arg_free(struct argv_b *a)
{
    air__buf_free(&a->buf);
    air__free(a->off);
    air__free(a->len);
}

/* Send the pending batch; on a confirmed reply apply it. 0 ok, -1 not
 * confirmed (the batch stays pending, or was dropped on a script error). */
static int
send_batch(struct air__redis *rs)
{
    struct argv_b a;
    memset(&a, 0, sizeof a);
    arg_str(&a, "EVALSHA");
    arg_str(&a, rs->sha);
    arg_i64(&a, (int64_t)(1 + rs->nbatch));
    arg_str(&a, rs->inst_key);
    for (size_t i = 0; i < rs->nbatch; i++)
        arg_str(&a, rs->lkeys[rs->batch[i].lim]);
    arg_i64(&a, (int64_t)rs->seq);
    arg_i64(&a, KEEP_MS);
    for (size_t i = 0; i < rs->nbatch; i++) {
        const struct air__slimit *l = rs->lims[rs->batch[i].lim];
        const struct air__lease_req *rq = &rs->batch[i].rq;
        if (l->kind == AIR_SL_RATE) {
            arg_str(&a, "r");
            arg_f64(&a, l->rate_milli_per_ms);
            arg_i64(&a, l->burst_milli);
        } else {
            arg_str(&a, "b");
            arg_i64(&a, (int64_t)l->w);
            arg_i64(&a, llround(l->limit * 1e6));
        }
        arg_i64(&a, rq->must);
        arg_i64(&a, rq->want);
        arg_i64(&a, rq->ret);
        arg_i64(&a, rq->used);
        if (l->kind == AIR_SL_RATE) {
            arg_i64(&a, rq->vsync_rem);
            arg_i64(&a, rq->vsync_reset_ms);
        } else {
            arg_i64(&a, rq->ret_win);
            arg_i64(&a, 0);
        }
    }
    if (a.buf.oom) {
        arg_free(&a);
        return -1; /* stays pending; tried again next time */
    }
    const char **argv = air__calloc(a.n, sizeof *argv);
    if (argv == NULL) {
        arg_free(&a);
        return -1;
    }
    for (size_t i = 0; i < a.n; i++)
        argv[i] = a.buf.data + a.off[i];
    int64_t t0 = mono_us();
    redisReply *r = command(rs, (int)a.n, argv, a.len);
    if (r != NULL && r->type == REDIS_REPLY_ERROR && r->str != NULL &&
        strncmp(r->str, "NOSCRIPT", 8) == 0) {
        /* Redis restarted or flushed its script cache. */
        freeReplyObject(r);
        r = NULL;
        if (load_script(rs) == 0) {
            argv[1] = rs->sha;
            a.len[1] = strlen(rs->sha);
            t0 = mono_us();
            r = command(rs, (int)a.n, argv, a.len);
        }
    }
    int64_t rtt = mono_us() - t0;
    int64_t now = clock_ms(rs);
    air__free(argv);
    arg_free(&a);
    if (r == NULL)
        return -1; /* I/O: disconnected, stays pending */
    int rc = -1;
    if (r->type == REDIS_REPLY_ERROR) {
        /* The script refused the batch (a stale sequence, a key of the
         * wrong type): resending it cannot help. Drop it, log once. */
        char msg[96];
        snprintf(msg, sizeof msg, "%.90s", r->str ? r->str : "error");
        if (strcmp(msg, rs->err_seen) != 0) {
            snprintf(rs->err_seen, sizeof rs->err_seen, "%s", msg);
            if (!rs->quiet)
                fprintf(stderr, "airouter: state: redis refused a lease batch: %s\n", msg);
        }
        set_last_err(rs, msg);
        atomic_fetch_add_explicit(&rs->dropped, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&rs->errors, 1, memory_order_relaxed);
        rs->pending = 0;
        rs->nbatch = 0;
    } else if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 + 5 * rs->nbatch) {
        int64_t store_ms = r->element[0]->integer;
        for (size_t i = 0; i < rs->nbatch; i++) {
            redisReply **e = r->element + 1 + 5 * i;
            struct air__lease_reply rp = {
                .grant = e[0]->integer,
                .level = e[1]->integer,
                .win_start = e[2]->integer,
                .win_end = e[3]->integer,
                .spent = e[4]->integer,
            };
            air__lease_apply(rs->lims[rs->batch[i].lim], &rs->batch[i].rq, &rp, now, store_ms);
        }
        rs->pending = 0;
        rs->nbatch = 0;
        atomic_store_explicit(&rs->last_rtt_us, rtt, memory_order_relaxed);
        rs->last_io_ms = mono_ms();
        atomic_store_explicit(&rs->last_ok_ms, rs->last_io_ms, memory_order_relaxed);
        atomic_fetch_add_explicit(&rs->syncs, 1, memory_order_relaxed);
        mark_up(rs);
        rc = 0;
    } else {
        set_last_err(rs, "unexpected reply to the lease script");
        disconnect(rs);
        mark_down(rs, "unexpected reply to the lease script");
        schedule_reconnect(rs);
    }
    freeReplyObject(r);
    return rc;
}

/* Plan up to MAX_BATCH limits, starting at the cursor, into a new batch. */
static void
plan_batch(struct air__redis *rs, int64_t now, int final, size_t *visited)
{
    rs->nbatch = 0;
    while (*visited < rs->nlims && rs->nbatch < MAX_BATCH) {
        size_t i = rs->cursor;
        rs->cursor = (rs->cursor + 1) % rs->nlims;
        (*visited)++;
        struct entry *e = &rs->batch[rs->nbatch];
        if (air__lease_plan(rs->lims[i], now, final, &e->rq)) {
            e->lim = i;
            rs->nbatch++;
        }
    }
}

static int
heartbeat(struct air__redis *rs)
{
    const char *argv[1] = {"PING"};
    size_t len[1] = {4};
    int64_t t0 = mono_us();
    redisReply *r = command(rs, 1, argv, len);
    if (r == NULL)
        return -1;
    freeReplyObject(r);
    int64_t t1 = mono_us();
    atomic_store_explicit(&rs->last_rtt_us, t1 - t0, memory_order_relaxed);
    rs->last_io_ms = t1 / 1000;
    atomic_store_explicit(&rs->last_ok_ms, rs->last_io_ms, memory_order_relaxed);
    mark_up(rs);
    return 0;
}

/* One sync: (re)connect if due, confirm the pending batch, then plan and
 * send a pass over every limit. */
static int
sync_once(struct air__redis *rs, int final)
{
    int64_t now = clock_ms(rs), mnow = mono_ms();
    if (rs->c == NULL) {
        if (!final && mnow < rs->next_connect_ms)
            return -1;
        if (connect_redis(rs) != 0)
            return -1;
    }
    if (rs->pending && send_batch(rs) != 0)
        return -1;
    if (rs->nlims == 0)
        return mnow - rs->last_io_ms >= HEARTBEAT_MS ? heartbeat(rs) : 0;
    size_t visited = 0;
    int sent = 0;
    while (visited < rs->nlims) {
        plan_batch(rs, now, final, &visited);
        if (rs->nbatch == 0)
            continue;
        rs->seq++;
        rs->pending = 1;
        sent = 1;
        if (send_batch(rs) != 0)
            return -1; /* the rest is planned next time */
    }
    if (!sent && mnow - rs->last_io_ms >= HEARTBEAT_MS)
        return heartbeat(rs);
    return 0;
}

/* ------------------------------------------------------------ the thread */

static void
redis_nudge(void *impl)
{
    struct air__redis *rs = impl;
    if (rs->no_thread || atomic_load_explicit(&rs->nudged, memory_order_relaxed))
        return;
    if (atomic_exchange_explicit(&rs->nudged, 1, memory_order_acq_rel))
        return;
    pthread_mutex_lock(&rs->mu);
    pthread_cond_signal(&rs->cv);
    pthread_mutex_unlock(&rs->mu);
}

static const struct air__state_ops redis_ops = {.name = "redis", .nudge = redis_nudge};

static void
deadline_in(struct timespec *ts, int64_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += (time_t)(ms / 1000);
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void *
sync_main(void *arg)
{
    struct air__redis *rs = arg;
    int64_t sync_ms = rs->st->lease.sync_ms;
    pthread_mutex_lock(&rs->mu);
    while (!rs->stop) {
        /* Connected: every sync_ms, or at once when nudged. Disconnected:
         * at the next reconnect time; nudges (requests finding their slice
         * empty) do not hurry a reconnect. */
        int64_t wait = sync_ms;
        if (rs->c == NULL) {
            int64_t until = rs->next_connect_ms - mono_ms();
            wait = until < 1 ? 1 : until;
        }
        struct timespec ts;
        deadline_in(&ts, wait);
        while (!rs->stop) {
            if (rs->c != NULL && atomic_load_explicit(&rs->nudged, memory_order_acquire))
                break;
            if (pthread_cond_timedwait(&rs->cv, &rs->mu, &ts) == ETIMEDOUT)
                break;
        }
        if (rs->stop)
            break;
        atomic_store_explicit(&rs->nudged, 0, memory_order_release);
        pthread_mutex_unlock(&rs->mu);
        sync_once(rs, 0);
        pthread_mutex_lock(&rs->mu);
    }
    pthread_mutex_unlock(&rs->mu);
    return NULL;
}

/* ------------------------------------------------------------- lifecycle */

static void
make_instance_id(struct air__redis *rs)
{
    uint64_t v = 0;
    if (getrandom(&v, sizeof v, 0) != (ssize_t)sizeof v)
        v = (uint64_t)wall_ms() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)rs;
    snprintf(rs->instance, sizeof rs->instance, "%016llx", (unsigned long long)v);
    rs->rnd = v | 1;
}

static char *
dup_or_null(const char *s, int *oom)
{
    if (s == NULL)
        return NULL;
    char *d = air__strdup(s);
    if (d == NULL)
        *oom = 1;
    return d;
}

air_status_t
air__redis_prepare(struct air__state *st, const struct air__redis_opts *o, uint32_t instances,
                   enum air__fail_mode fail_rate, enum air__fail_mode fail_quota,
                   enum air__fail_mode fail_budget, const struct air__lease_cfg *lc,
                   struct air__redis **out, char *err, size_t errlen)
{
    *out = NULL;
    struct air__redis *rs = air__calloc(1, sizeof *rs);
    if (rs == NULL)
        return AIR_E_NOMEM;
    char why[160];
    if (air__redis_url_parse(o->url, &rs->url, why, sizeof why) != 0) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "state.url: %s", why);
        air__free(rs);
        return AIR_E_CONFIG;
    }
    int oom = 0;
    rs->url_text = dup_or_null(o->url, &oom);
    rs->password = dup_or_null(o->password, &oom);
    rs->prefix = dup_or_null(o->prefix ? o->prefix : "airouter:", &oom);
    rs->timeout_ms = o->timeout_ms ? o->timeout_ms : 500;
    rs->backoff_ms = o->backoff_ms ? o->backoff_ms : 100;
    rs->backoff_max_ms = o->backoff_max_ms >= rs->backoff_ms ? o->backoff_max_ms : rs->backoff_ms;
    rs->backoff_cur = rs->backoff_ms;
    rs->no_thread = o->no_thread;
    rs->quiet = o->quiet;
    atomic_init(&rs->skew_ms, o->clock_skew_ms);
    make_instance_id(rs);
    air_buf_t k = AIR_BUF_INIT;
    air__buf_printf(&k, "%sinst:%s", rs->prefix ? rs->prefix : "", rs->instance);
    rs->inst_key = air__buf_steal(&k, NULL);
    air_buf_t sc = AIR_BUF_INIT;
    for (size_t i = 0; LEASE_LUA[i] != NULL; i++)
        air__buf_puts(&sc, LEASE_LUA[i]);
    rs->script = air__buf_steal(&sc, NULL);
    pthread_mutex_init(&rs->mu, NULL);
    pthread_mutex_init(&rs->err_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&rs->cv, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&rs->nudged, 0);
    atomic_init(&rs->last_ok_ms, 0);
    atomic_init(&rs->last_rtt_us, -1);
    atomic_init(&rs->down_since_ms, 0);
    atomic_init(&rs->syncs, 0);
    atomic_init(&rs->errors, 0);
    atomic_init(&rs->transitions, 0);
    atomic_init(&rs->reconnects, 0);
    atomic_init(&rs->dropped, 0);
    rs->st = st;
    if (oom || rs->inst_key == NULL || rs->script == NULL) {
        air__redis_free(rs);
        return AIR_E_NOMEM;
    }
    air__state_init_shared(st, &redis_ops, rs, instances, fail_rate, fail_quota, fail_budget, lc);
    *out = rs;
    return AIR_OK;
}

air_status_t
air__redis_start(struct air__redis *rs, struct air__slimit **lims, size_t nlims, char *err,
                 size_t errlen)
{
    rs->lims = lims;
    rs->nlims = nlims;
    rs->lkeys = air__calloc(nlims ? nlims : 1, sizeof *rs->lkeys);
    rs->batch = air__calloc(nlims < MAX_BATCH ? (nlims ? nlims : 1) : MAX_BATCH,
                            sizeof *rs->batch);
    if (rs->lkeys == NULL || rs->batch == NULL)
        return AIR_E_NOMEM;
    for (size_t i = 0; i < nlims; i++) {
        air_buf_t k = AIR_BUF_INIT;
        air__buf_printf(&k, "%s%s:%s", rs->prefix, lims[i]->kind == AIR_SL_RATE ? "rate" : "budget",
                        lims[i]->key ? lims[i]->key : "");
        rs->lkeys[i] = air__buf_steal(&k, NULL);
        if (rs->lkeys[i] == NULL)
            return AIR_E_NOMEM;
    }
    /* Prime the slices now, so the first requests find them; an
     * unreachable Redis is not an error (the thread keeps trying). */
    (void)sync_once(rs, 0);
    if (rs->no_thread)
        return AIR_OK;
    if (pthread_create(&rs->thread, NULL, sync_main, rs) != 0) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "state: cannot start the redis sync thread");
        return AIR_E_NOMEM;
    }
    rs->started = 1;
    return AIR_OK;
}

int
air__redis_sync_now(struct air__redis *rs)
{
    return sync_once(rs, 0);
}

int
air__redis_flush_final(struct air__redis *rs)
{
    if (rs->nlims == 0)
        return 0;
    /* One try (bounded by timeout_ms): the pending batch first, then a
     * final pass that gives every slice back and settles all usage. A
     * connection that turns out dead (Redis restarted since) gets one
     * reconnect; an unreachable Redis does not get a second wait. */
    int was_connected = rs->c != NULL;
    int rc = sync_once(rs, 1);
    if (rc != 0 && was_connected && rs->c == NULL) {
        rs->next_connect_ms = 0;
        rc = sync_once(rs, 1);
    }
    return rc;
}

void
air__redis_free(struct air__redis *rs)
{
    if (rs == NULL)
        return;
    if (rs->started) {
        pthread_mutex_lock(&rs->mu);
        rs->stop = 1;
        pthread_cond_signal(&rs->cv);
        pthread_mutex_unlock(&rs->mu);
        pthread_join(rs->thread, NULL);
        rs->started = 0;
    }
    if (rs->lkeys != NULL && air__redis_flush_final(rs) != 0 && !rs->quiet)
        fprintf(stderr,
                "airouter: state: redis %s:%d: could not settle before stopping; this "
                "instance's unsettled usage and slices are not returned\n",
                rs->url.host, rs->url.port);
    disconnect(rs);
    if (rs->lkeys != NULL)
        for (size_t i = 0; i < rs->nlims; i++)
            air__free(rs->lkeys[i]);
    air__free(rs->lkeys);
    air__free(rs->batch);
    air__free(rs->inst_key);
    air__free(rs->script);
    air__free(rs->url_text);
    if (rs->password != NULL) {
        volatile char *p = rs->password;
        while (*p != '\0')
            *p++ = '\0';
    }
    air__free(rs->password);
    air__free(rs->prefix);
    pthread_cond_destroy(&rs->cv);
    pthread_mutex_destroy(&rs->mu);
    pthread_mutex_destroy(&rs->err_mu);
    air__free(rs);
}

const char *
air__redis_instance(const struct air__redis *rs)
{
    return rs->instance;
}

void
air__redis_set_clock_skew(struct air__redis *rs, int64_t skew_ms)
{
    atomic_store_explicit(&rs->skew_ms, skew_ms, memory_order_relaxed);
}

/* ----------------------------------------------------------------- stats */

static void
json_num(air_buf_t *b, double v)
{
    if (isfinite(v))
        air__buf_printf(b, "%.6g", v);
    else
        air__buf_puts(b, "null");
}

void
air__redis_stats_json(struct air__redis *rs, air_buf_t *b)
{
    const struct air__state *st = rs->st;
    int64_t now = mono_ms();
    int64_t ok = atomic_load_explicit(&rs->last_ok_ms, memory_order_relaxed);
    char err[128];
    pthread_mutex_lock(&rs->err_mu);
    snprintf(err, sizeof err, "%s", rs->last_err);
    pthread_mutex_unlock(&rs->err_mu);
    air__buf_printf(b, "\"backend\":\"redis\",\"healthy\":%s,\"url\":",
                    atomic_load_explicit(&st->healthy, memory_order_relaxed) ? "true" : "false");
    /* The URL never carries a password (refused by the parser). */
    air__buf_json_str(b, rs->url_text ? rs->url_text : "", rs->url_text ? strlen(rs->url_text) : 0);
    air__buf_puts(b, ",\"prefix\":");
    air__buf_json_str(b, rs->prefix, strlen(rs->prefix));
    air__buf_printf(b,
                    ",\"instance\":\"%s\",\"instances\":%u,\"fail\":{\"rate_limits\":\"%s\","
                    "\"budgets\":\"%s\",\"deployment_quotas\":\"%s\"},\"last_rtt_us\":%lld,"
                    "\"since_sync_ms\":%lld,"
                    "\"syncs\":%llu,\"sync_errors\":%llu,\"transitions\":%llu,"
                    "\"connects\":%llu,\"dropped_batches\":%llu,\"last_error\":",
                    rs->instance, st->instances, mode_name(st->fail_rate),
                    mode_name(st->fail_budget), mode_name(st->fail_quota),
                    (long long)atomic_load_explicit(&rs->last_rtt_us, memory_order_relaxed),
                    (long long)(ok > 0 ? now - ok : -1),
                    (unsigned long long)atomic_load_explicit(&rs->syncs, memory_order_relaxed),
                    (unsigned long long)atomic_load_explicit(&rs->errors, memory_order_relaxed),
                    (unsigned long long)atomic_load_explicit(&rs->transitions,
                                                             memory_order_relaxed),
                    (unsigned long long)atomic_load_explicit(&rs->reconnects,
                                                             memory_order_relaxed),
                    (unsigned long long)atomic_load_explicit(&rs->dropped, memory_order_relaxed));
    air__buf_json_str(b, err, strlen(err));
    air__buf_puts(b, ",\"leases\":[");
    for (size_t i = 0; i < rs->nlims; i++) {
        const struct air__slimit *l = rs->lims[i];
        air__buf_puts(b, i ? ",{\"name\":" : "{\"name\":");
        air__buf_json_str(b, l->key ? l->key : "", l->key ? strlen(l->key) : 0);
        air__buf_printf(b, ",\"kind\":\"%s\",\"limit\":", l->kind == AIR_SL_RATE ? "rate" : "budget");
        json_num(b, l->limit);
        air__buf_puts(b, ",\"slice\":");
        json_num(b, air__slim_slice(l));
        air__buf_puts(b, ",\"available\":");
        json_num(b, air__slim_avail(l));
        air__buf_puts(b, ",\"store_level\":");
        json_num(b, (double)atomic_load_explicit(&l->lease.level, memory_order_relaxed) /
                        (l->kind == AIR_SL_RATE ? 1000.0 : 1e6));
        air__buf_puts(b, "}");
    }
    air__buf_puts(b, "]");
}
