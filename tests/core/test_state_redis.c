/*
 * test_state_redis.c - shared limits and budgets through a real
 * redis-server, which this test starts itself on a free 127.0.0.1 port (with
 * an append-only file, so a killed server comes back with its data) and
 * stops; exit 77 (skipped) when redis-server is not installed.
 *
 *  - the lease script is atomic: eight backends on eight threads lease and
 *    spend one budget and one rate limit at once; together they never spend
 *    more than the store holds, and Redis's counts equal what they spent;
 *  - two routers share a client's rpm: together they admit at most
 *    N + refill + the documented bound (instances x largest slice), not 2N,
 *    and Redis counted exactly the admitted requests;
 *  - two routers under concurrent load never overrun a client budget by
 *    more than the bound, and Redis's spending equals the responses' cost;
 *  - Redis killed mid-run: rate limits keep serving (fail-open), the budget
 *    refuses with 503 once its slice is spent (fail-closed), the stats say
 *    unhealthy; after a restart the routers reconnect and Redis's counts
 *    converge to exactly what was served, nothing lost or counted twice;
 *  - a batch whose reply was lost (Redis stopped with SIGSTOP mid-command)
 *    is resent after the reconnect and applied exactly once;
 *  - a batch meeting a key of the wrong type is refused whole, before any
 *    write.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <hiredis/hiredis.h>

#include "airouter.h"
#include "buf.h"
#include "mock.h"
#include "state.h"
#include "state_redis.h"

/* ------------------------------------------------------------ the server */

struct srv {
    char exe[512];
    pid_t pid;
    int port;
    char dir[64];
    char url[64];
    air_mock_t *mock;
};

static int
find_redis(char *out, size_t n)
{
    const char *path = getenv("PATH");
    char buf[4096];
    snprintf(buf, sizeof buf, "%s:/usr/bin:/usr/sbin:/usr/local/bin", path ? path : "");
    for (char *save = NULL, *d = strtok_r(buf, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        snprintf(out, n, "%s/redis-server", d);
        if (access(out, X_OK) == 0)
            return 0;
    }
    return -1;
}

static int
free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &al) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static redisContext *
conn(const struct srv *s)
{
    struct timeval tv = {.tv_sec = 2, .tv_usec = 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", s->port, tv);
    if (c != NULL && c->err) {
        redisFree(c);
        return NULL;
    }
    return c;
}

static int
srv_start(struct srv *s)
{
    char port[16];
    snprintf(port, sizeof port, "%d", s->port);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
        int nul = open("/dev/null", O_WRONLY);
        if (nul >= 0) {
            dup2(nul, 1);
            dup2(nul, 2);
        }
        execl(s->exe, "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
              "--appendonly", "yes", "--appendfsync", "always", "--dir", s->dir,
              "--protected-mode", "no", "--loglevel", "warning", (char *)NULL);
        _exit(127);
    }
    s->pid = pid;
    for (int i = 0; i < 500; i++) {
        redisContext *c = conn(s);
        if (c != NULL) {
            redisReply *r = redisCommand(c, "PING");
            int ok = r != NULL && r->type == REDIS_REPLY_STATUS;
            if (r)
                freeReplyObject(r);
            redisFree(c);
            if (ok)
                return 0;
        }
        usleep(10000);
    }
    return -1;
}

static void
srv_stop(struct srv *s, int sig)
{
    if (s->pid > 0) {
        kill(s->pid, sig);
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
    }
}

static int
rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
    (void)sb;
    (void)flag;
    (void)f;
    remove(p);
    return 0;
}

static int
group_setup(void **state)
{
    struct srv *s = calloc(1, sizeof *s);
    if (s == NULL)
        return -1;
    *state = s; /* the teardown cleans up whatever was set up */
    if (find_redis(s->exe, sizeof s->exe) != 0)
        return -1;
    snprintf(s->dir, sizeof s->dir, "/tmp/air-redis-XXXXXX");
    if (mkdtemp(s->dir) == NULL) {
        s->dir[0] = '\0';
        return -1;
    }
    for (int tries = 0; tries < 5; tries++) {
        s->port = free_port();
        if (s->port > 0 && srv_start(s) == 0)
            break;
        srv_stop(s, SIGKILL);
        s->port = 0;
    }
    if (s->port == 0)
        return -1;
    snprintf(s->url, sizeof s->url, "redis://127.0.0.1:%d/0", s->port);
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.latency_ms = 1;
    char err[256];
    if (air_mock_start(&o, &s->mock, err, sizeof err) != 0)
        return -1;
    return 0;
}

static int
group_teardown(void **state)
{
    struct srv *s = *state;
    if (s == NULL)
        return 0;
    air_mock_stop(s->mock);
    srv_stop(s, SIGTERM);
    if (s->dir[0])
        nftw(s->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(s);
    return 0;
}

/* An integer field of a hash, or of the sum over keys matching a pattern. */
static long long
hsum(const struct srv *s, const char *pattern, const char *field)
{
    redisContext *c = conn(s);
    assert_non_null(c);
    redisReply *k = redisCommand(c, "KEYS %s", pattern);
    assert_non_null(k);
    long long sum = 0;
    for (size_t i = 0; i < k->elements; i++) {
        redisReply *v = redisCommand(c, "HGET %s %s", k->element[i]->str, field);
        if (v != NULL && v->type == REDIS_REPLY_STRING)
            sum += strtoll(v->str, NULL, 10);
        if (v)
            freeReplyObject(v);
    }
    freeReplyObject(k);
    redisFree(c);
    return sum;
}

static int64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------- routers, load */

static air_t *
router(const struct srv *s, const char *prefix, const char *clients, const char *fail,
       double in_price)
{
    char cfg[4096];
    snprintf(cfg, sizeof cfg,
             "{\"workers\":2,\"providers\":[{\"name\":\"m\",\"kind\":\"openai\","
             "\"base_url\":\"http://127.0.0.1:%u/v1\",\"models\":[{\"name\":\"mm\","
             "\"input_price_per_mtok\":%g,\"output_price_per_mtok\":%g}]}],"
             "\"clients\":[%s],\"state\":{\"backend\":\"redis\",\"url\":\"%s\","
             "\"prefix\":\"%s\",\"instances\":2,\"timeout_ms\":300,\"backoff_ms\":20,"
             "\"backoff_max_ms\":200,\"fail\":%s,\"lease\":{\"sync_ms\":20,"
             "\"max_fraction\":0.1}}}",
             air_mock_port(s->mock), in_price, in_price, clients, s->url, prefix,
             fail ? fail : "{}");
    air_t *r = NULL;
    char err[512];
    if (air_new(cfg, &r, err, sizeof err) != AIR_OK)
        fail_msg("air_new: %s", err);
    return r;
}

struct tally {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, ok, limited, budget, overloaded, other;
    double cost;
    char last_msg[256];
};

static void
on_done(const air_resp_t *resp, void *ud)
{
    struct tally *t = ud;
    pthread_mutex_lock(&t->mu);
    t->done++;
    if (air_resp_status(resp) == AIR_OK) {
        t->ok++;
        t->cost += air_resp_cost_usd(resp);
    } else {
        air_errclass_t c = air_resp_error_class(resp);
        if (c == AIR_ERR_RATE_LIMITED)
            t->limited++;
        else if (c == AIR_ERR_BUDGET_EXCEEDED)
            t->budget++;
        else if (c == AIR_ERR_OVERLOADED) {
            t->overloaded++;
            snprintf(t->last_msg, sizeof t->last_msg, "%s", air_resp_error_message(resp));
        } else
            t->other++;
    }
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

static void
tally_init(struct tally *t)
{
    memset(t, 0, sizeof *t);
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
}

static void
tally_fini(struct tally *t)
{
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->mu);
}

/* n requests of `client` with at most conc in flight; waits for all. */
static void
drive(air_t *r, const char *client, int n, int conc, struct tally *t)
{
    static const char body[] = "{\"model\":\"mm\",\"max_tokens\":50,\"messages\":[{\"role\":"
                               "\"user\",\"content\":\"hello\"}]}";
    pthread_mutex_lock(&t->mu);
    int base = t->done;
    pthread_mutex_unlock(&t->mu);
    for (int i = 0; i < n; i++) {
        pthread_mutex_lock(&t->mu);
        while (i - (t->done - base) >= conc)
            pthread_cond_wait(&t->cv, &t->mu);
        pthread_mutex_unlock(&t->mu);
        air_req_t *q = NULL;
        assert_int_equal(air_req_new(r, body, strlen(body), &q, NULL, 0), AIR_OK);
        assert_int_equal(air_req_set_client_key(q, client), AIR_OK);
        assert_int_equal(air_req_set_done(q, on_done, t), AIR_OK);
        assert_int_equal(air_submit(r, q, NULL), AIR_OK);
    }
    pthread_mutex_lock(&t->mu);
    while (t->done - base < n)
        pthread_cond_wait(&t->cv, &t->mu);
    pthread_mutex_unlock(&t->mu);
}

struct load {
    air_t *r;
    const char *client;
    int n, conc;
    struct tally t;
};

static void *
load_main(void *arg)
{
    struct load *l = arg;
    drive(l->r, l->client, l->n, l->conc, &l->t);
    return NULL;
}

/* Both routers at once. */
static void
drive_both(struct load *a, struct load *b)
{
    pthread_t ta, tb;
    assert_int_equal(pthread_create(&ta, NULL, load_main, a), 0);
    assert_int_equal(pthread_create(&tb, NULL, load_main, b), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
}

/* "healthy":true|false from the stats' state object (-1 unknown). */
static int
healthy(air_t *r)
{
    char *j = air_stats_json(r);
    assert_non_null(j);
    const char *p = strstr(j, "\"state\":{");
    int h = -1;
    if (p != NULL && (p = strstr(p, "\"healthy\":")) != NULL)
        h = strncmp(p + 10, "true", 4) == 0;
    free(j);
    return h;
}

static int
wait_health(air_t *r, int want, int ms)
{
    int64_t end = now_ms() + ms;
    while (now_ms() < end) {
        if (healthy(r) == want)
            return 1;
        usleep(10000);
    }
    return 0;
}

/* ----------------------------------------------------------------- tests */

struct atom {
    const struct srv *s;
    char prefix[64];
    int64_t spent_micro, taken;
    int64_t t0;
};

static void *
atom_main(void *arg)
{
    struct atom *a = arg;
    struct air__state st;
    struct air__redis *rs = NULL;
    struct air__redis_opts o = {.url = a->s->url, .prefix = a->prefix, .timeout_ms = 3000,
                                .backoff_ms = 10, .backoff_max_ms = 50, .no_thread = 1,
                                .quiet = 1};
    struct air__lease_cfg lc = {.sync_ms = 10, .horizon_ms = 100, .max_fraction = 0.2,
                                .min_fraction = 0.01};
    char err[256];
    if (air__redis_prepare(&st, &o, 8, AIR_FAIL_CLOSED, AIR_FAIL_CLOSED, &lc, &rs, err,
                           sizeof err) != AIR_OK)
        return NULL;
    int64_t now = (int64_t)time(NULL) * 1000;
    struct air__slimit b, r;
    char bk[] = "atomic:budget", rk[] = "atomic:rate";
    air__slim_init_budget(&b, &st, bk, 10.0, AIR_W_DAY, now);
    air__slim_init_rate(&r, &st, rk, 1000, now);
    struct air__slimit *lims[2] = {&b, &r};
    if (air__redis_start(rs, lims, 2, err, sizeof err) != AIR_OK) {
        air__redis_free(rs);
        return NULL;
    }
    int dry = 0;
    while (dry < 3 && now_ms() - a->t0 < 5000) {
        int64_t wait, ra;
        int src, got = 0;
        while (air__slim_reserve(&b, 0.01, now, &ra, &src) == AIR_SL_OK) {
            air__slim_settle(&b, 0.01, 0.01, src, now);
            a->spent_micro += 10000;
            got = 1;
        }
        while (air__slim_take(&r, 1, now, &wait) == AIR_SL_OK) {
            a->taken++;
            got = 1;
        }
        dry = got ? 0 : dry + 1;
        air__redis_sync_now(rs);
    }
    air__redis_free(rs); /* final flush: slices back, usage settled */
    return NULL;
}

static void
test_state_redis_lease_script_is_atomic(void **state)
{
    struct srv *s = *state;
    enum { N = 8 };
    static struct atom a[N];
    pthread_t th[N];
    int64_t t0 = now_ms();
    for (int i = 0; i < N; i++) {
        memset(&a[i], 0, sizeof a[i]);
        a[i].s = s;
        a[i].t0 = t0;
        snprintf(a[i].prefix, sizeof a[i].prefix, "atom%d:", (int)getpid());
        assert_int_equal(pthread_create(&th[i], NULL, atom_main, &a[i]), 0);
    }
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    double elapsed_min = (double)(now_ms() - t0) / 60000.0;
    int64_t spent = 0, taken = 0;
    for (int i = 0; i < N; i++) {
        spent += a[i].spent_micro;
        taken += a[i].taken;
    }
    print_message("atomic: spent $%.2f of $10 and %lld of 1000 rpm over 8 backends\n",
                  (double)spent / 1e6, (long long)taken);
    /* Never more than the store holds... */
    assert_true(spent <= 10000000);
    assert_true(taken <= 1000 + (int64_t)(1000 * elapsed_min) + 1);
    /* ...and the leases really moved it. */
    assert_true(spent >= 9000000);
    assert_true(taken >= 900);
    /* Redis counted exactly what was spent, and every slice came back. */
    char pat[128];
    snprintf(pat, sizeof pat, "atom%d:budget:atomic:budget:*", (int)getpid());
    assert_int_equal(hsum(s, pat, "spent"), spent);
    assert_int_equal(hsum(s, pat, "committed"), spent);
    snprintf(pat, sizeof pat, "atom%d:rate:atomic:rate", (int)getpid());
    assert_int_equal(hsum(s, pat, "used"), taken);
}

static void
test_state_redis_two_routers_share_client_rpm(void **state)
{
    struct srv *s = *state;
    char prefix[64];
    snprintf(prefix, sizeof prefix, "rpm%d:", (int)getpid());
    const char *clients = "{\"name\":\"alice\",\"rpm\":120}";
    air_t *r1 = router(s, prefix, clients, NULL, 0);
    air_t *r2 = router(s, prefix, clients, NULL, 0);
    struct load a = {.r = r1, .client = "alice", .n = 200, .conc = 4};
    struct load b = {.r = r2, .client = "alice", .n = 200, .conc = 4};
    tally_init(&a.t);
    tally_init(&b.t);
    int64_t t0 = now_ms();
    drive_both(&a, &b);
    double minutes = (double)(now_ms() - t0) / 60000.0;
    int ok = a.t.ok + b.t.ok;
    /* The documented bound: N + refill + instances x largest slice
     * (max_fraction 0.1 of 120 = 12 each). */
    int bound = 120 + (int)(120 * minutes + 1) + 2 * 12;
    print_message("shared rpm 120: admitted %d (%d + %d) in %.2f s, refused %d; bound %d\n", ok,
                  a.t.ok, b.t.ok, minutes * 60, a.t.limited + b.t.limited, bound);
    assert_true(ok <= bound);
    assert_true(ok >= 100); /* the two routers used the shared quota, not a split of it */
    assert_int_equal(a.t.other + b.t.other + a.t.overloaded + b.t.overloaded, 0);
    air_free(r1, 2000);
    air_free(r2, 2000);
    char pat[128];
    snprintf(pat, sizeof pat, "%srate:client:alice:rpm", prefix);
    assert_int_equal(hsum(s, pat, "used"), ok);
    tally_fini(&a.t);
    tally_fini(&b.t);
}

static void
test_state_redis_budget_not_overrun_under_load(void **state)
{
    struct srv *s = *state;
    char prefix[64];
    snprintf(prefix, sizeof prefix, "bud%d:", (int)getpid());
    /* $1000 per million tokens: a request costs about $0.05 (estimated
     * $0.09); $2 is about 40 of them. */
    const char *clients = "{\"name\":\"bob\",\"budget_usd\":2}";
    air_t *r1 = router(s, prefix, clients, NULL, 1000);
    air_t *r2 = router(s, prefix, clients, NULL, 1000);
    struct load a = {.r = r1, .client = "bob", .n = 80, .conc = 4};
    struct load b = {.r = r2, .client = "bob", .n = 80, .conc = 4};
    tally_init(&a.t);
    tally_init(&b.t);
    drive_both(&a, &b);
    double cost = a.t.cost + b.t.cost;
    double bound = 2.0 + 2 * 0.2; /* instances x largest slice */
    print_message("shared budget $2: spent $%.4f over %d requests (%d refused); bound $%.2f\n",
                  cost, a.t.ok + b.t.ok, a.t.budget + b.t.budget, bound);
    assert_true(cost <= bound);
    assert_true(cost >= 1.0);
    assert_true(a.t.budget + b.t.budget > 0);
    air_free(r1, 2000);
    air_free(r2, 2000);
    char pat[128];
    snprintf(pat, sizeof pat, "%sbudget:client:bob:*", prefix);
    long long spent = hsum(s, pat, "spent");
    assert_true(llabs(spent - llround(cost * 1e6)) <= a.t.ok + b.t.ok);
    /* Every slice came back: committed is what was spent. */
    assert_int_equal(hsum(s, pat, "committed"), spent);
    tally_fini(&a.t);
    tally_fini(&b.t);
}

static void
test_state_redis_outage_serves_then_converges(void **state)
{
    struct srv *s = *state;
    char prefix[64];
    snprintf(prefix, sizeof prefix, "out%d:", (int)getpid());
    /* alice: rpm 600 (slices of 60), fails open to 300/min per router;
     * carol: $5 budget (slices of at most $0.50, under 20 requests), fails
     * closed. */
    const char *clients = "{\"name\":\"alice\",\"rpm\":600},{\"name\":\"carol\",\"budget_usd\":5}";
    air_t *r1 = router(s, prefix, clients, NULL, 1000);
    air_t *r2 = router(s, prefix, clients, NULL, 1000);
    struct load a = {.r = r1, .client = "alice", .n = 20, .conc = 4};
    struct load b = {.r = r2, .client = "alice", .n = 20, .conc = 4};
    struct load c = {.r = r1, .client = "carol", .n = 10, .conc = 2};
    struct load d = {.r = r2, .client = "carol", .n = 10, .conc = 2};
    tally_init(&a.t);
    tally_init(&b.t);
    tally_init(&c.t);
    tally_init(&d.t);
    drive_both(&a, &b);
    drive_both(&c, &d);
    assert_int_equal(a.t.ok + b.t.ok, 40);
    assert_int_equal(c.t.ok + d.t.ok, 20);

    /* Redis dies. */
    srv_stop(s, SIGKILL);
    assert_true(wait_health(r1, 0, 3000));
    assert_true(wait_health(r2, 0, 3000));
    /* Rate limits serve on (the slice, then the local share). */
    a.n = b.n = 100;
    drive_both(&a, &b);
    assert_int_equal(a.t.ok + b.t.ok, 240);
    /* The budget spends what its slice holds, then refuses with 503. */
    c.n = d.n = 60;
    drive_both(&c, &d);
    print_message("outage: carol served %d then %d refused (%s)\n", c.t.ok + d.t.ok - 20,
                  c.t.overloaded + d.t.overloaded, c.t.last_msg);
    assert_true(c.t.overloaded > 0 && d.t.overloaded > 0);
    assert_non_null(strstr(c.t.last_msg, "shared state store is unreachable"));
    assert_int_equal(c.t.ok + d.t.ok + c.t.overloaded + d.t.overloaded, 140);

    /* Redis is back (with its data): the routers reconnect and settle. */
    assert_int_equal(srv_start(s), 0);
    assert_true(wait_health(r1, 1, 5000));
    assert_true(wait_health(r2, 1, 5000));
    a.n = b.n = 5;
    c.n = d.n = 5;
    drive_both(&a, &b);
    drive_both(&c, &d);
    assert_int_equal(a.t.ok + b.t.ok, 250);
    assert_int_equal(c.t.overloaded + d.t.overloaded + c.t.ok + d.t.ok, 150);
    air_free(r1, 2000);
    air_free(r2, 2000);
    /* Nothing lost, nothing counted twice. */
    char pat[128];
    snprintf(pat, sizeof pat, "%srate:client:alice:rpm", prefix);
    assert_int_equal(hsum(s, pat, "used"), 250);
    snprintf(pat, sizeof pat, "%sbudget:client:carol:*", prefix);
    double cost = c.t.cost + d.t.cost;
    long long spent = hsum(s, pat, "spent");
    print_message("converged: alice 250 requests, carol $%.6f spent, redis says $%.6f\n", cost,
                  (double)spent / 1e6);
    assert_true(llabs(spent - llround(cost * 1e6)) <= c.t.ok + d.t.ok);
    tally_fini(&a.t);
    tally_fini(&b.t);
    tally_fini(&c.t);
    tally_fini(&d.t);
}

static void
test_state_redis_lost_reply_applied_once(void **state)
{
    struct srv *s = *state;
    if (s->pid == 0) /* an earlier test failed while the server was down */
        assert_int_equal(srv_start(s), 0);
    assert_true(s->pid > 0);
    char prefix[64];
    snprintf(prefix, sizeof prefix, "once%d:", (int)getpid());
    struct air__state st;
    struct air__redis *rs = NULL;
    struct air__redis_opts o = {.url = s->url, .prefix = prefix, .timeout_ms = 200,
                                .backoff_ms = 10, .backoff_max_ms = 20, .no_thread = 1,
                                .quiet = 1};
    struct air__lease_cfg lc = {.sync_ms = 10, .horizon_ms = 100, .max_fraction = 0.5,
                                .min_fraction = 0.01};
    char err[256];
    assert_int_equal(air__redis_prepare(&st, &o, 1, AIR_FAIL_OPEN, AIR_FAIL_CLOSED, &lc, &rs,
                                        err, sizeof err),
                     AIR_OK);
    int64_t now = (int64_t)time(NULL) * 1000;
    struct air__slimit l;
    char key[] = "once:rate";
    air__slim_init_rate(&l, &st, key, 100000, now);
    struct air__slimit *lims[1] = {&l};
    assert_int_equal(air__redis_start(rs, lims, 1, err, sizeof err), AIR_OK);
    int64_t w;
    for (int i = 0; i < 10; i++)
        assert_int_equal(air__slim_take(&l, 1, now, &w), AIR_SL_OK);
    /* The batch goes out, Redis does not answer in time. */
    kill(s->pid, SIGSTOP);
    assert_int_equal(air__redis_sync_now(rs), -1);
    assert_int_equal(atomic_load(&st.healthy), 0);
    kill(s->pid, SIGCONT);
    /* Redis may now run the first copy on the dead connection; the resend
     * after reconnecting must not count it again. */
    int ok = 0;
    for (int i = 0; i < 200 && !ok; i++) {
        usleep(10000);
        ok = air__redis_sync_now(rs) == 0;
    }
    assert_true(ok);
    assert_int_equal(atomic_load(&st.healthy), 1);
    for (int i = 0; i < 5; i++)
        assert_int_equal(air__slim_take(&l, 1, now, &w), AIR_SL_OK);
    assert_int_equal(air__redis_sync_now(rs), 0);
    air__redis_free(rs);
    char pat[128];
    snprintf(pat, sizeof pat, "%srate:once:rate", prefix);
    assert_int_equal(hsum(s, pat, "used"), 15);
}

/* A key of the wrong type under the prefix: the script refuses the whole
 * batch before writing anything (no half-applied batch), the backend drops
 * it and says so in its stats, and works again once the key is gone. */
static void
test_state_redis_wrong_type_key_refused_whole(void **state)
{
    struct srv *s = *state;
    if (s->pid == 0)
        assert_int_equal(srv_start(s), 0);
    char prefix[64], bad[128], good[128];
    snprintf(prefix, sizeof prefix, "type%d:", (int)getpid());
    snprintf(bad, sizeof bad, "%srate:bad:rpm", prefix);
    snprintf(good, sizeof good, "%srate:good:rpm", prefix);
    redisContext *c = conn(s);
    assert_non_null(c);
    freeReplyObject(redisCommand(c, "SET %s x", bad));
    struct air__state st;
    struct air__redis *rs = NULL;
    struct air__redis_opts o = {.url = s->url, .prefix = prefix, .timeout_ms = 1000,
                                .backoff_ms = 10, .backoff_max_ms = 20, .no_thread = 1,
                                .quiet = 1};
    struct air__lease_cfg lc = {.sync_ms = 10, .horizon_ms = 100, .max_fraction = 0.5,
                                .min_fraction = 0.01};
    char err[256];
    assert_int_equal(air__redis_prepare(&st, &o, 1, AIR_FAIL_OPEN, AIR_FAIL_CLOSED, &lc, &rs,
                                        err, sizeof err),
                     AIR_OK);
    int64_t now = (int64_t)time(NULL) * 1000;
    struct air__slimit lb, lg;
    char kb[] = "bad:rpm", kg[] = "good:rpm";
    air__slim_init_rate(&lb, &st, kb, 100, now);
    air__slim_init_rate(&lg, &st, kg, 100, now);
    struct air__slimit *lims[2] = {&lb, &lg};
    assert_int_equal(air__redis_start(rs, lims, 2, err, sizeof err), AIR_OK);
    int64_t w;
    assert_int_not_equal(air__slim_take(&lg, 1, now, &w), AIR_SL_OK);
    redisReply *r = redisCommand(c, "EXISTS %s", good);
    assert_int_equal(r->integer, 0); /* nothing of the batch was written */
    freeReplyObject(r);
    air_buf_t b = AIR_BUF_INIT;
    air__redis_stats_json(rs, &b);
    assert_non_null(strstr(b.data, "\"dropped_batches\":1"));
    assert_non_null(strstr(b.data, "AIRTYPE"));
    air__buf_free(&b);
    freeReplyObject(redisCommand(c, "DEL %s", bad));
    assert_int_equal(air__redis_sync_now(rs), 0);
    assert_int_equal(air__slim_take(&lg, 1, now, &w), AIR_SL_OK);
    assert_int_equal(air__slim_take(&lb, 1, now, &w), AIR_SL_OK);
    air__redis_free(rs);
    r = redisCommand(c, "HGET %s used", good);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_string_equal(r->str, "1");
    freeReplyObject(r);
    redisFree(c);
}

int
main(void)
{
    char exe[512];
    if (find_redis(exe, sizeof exe) != 0) {
        printf("redis-server not found: skipped (scripts/deps.sh installs it)\n");
        return 77;
    }
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_redis_lease_script_is_atomic),
        cmocka_unit_test(test_state_redis_two_routers_share_client_rpm),
        cmocka_unit_test(test_state_redis_budget_not_overrun_under_load),
        cmocka_unit_test(test_state_redis_outage_serves_then_converges),
        cmocka_unit_test(test_state_redis_lost_reply_applied_once),
        cmocka_unit_test(test_state_redis_wrong_type_key_refused_whole),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
