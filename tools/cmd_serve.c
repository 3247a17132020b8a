/*
 * cmd_serve.c - `airouter serve`: the OpenAI-compatible HTTP gateway
 * (gateway/gateway.h) in the foreground until SIGINT or SIGTERM; SIGHUP
 * reloads the configuration file.
 *
 * DESIGN: the signals are blocked before any thread starts and taken with
 * sigwait on the main thread, so there is no handler and no
 * async-signal-safety question: a reload or a drain runs as ordinary code.
 * `--demo` starts three in-process mock providers (fast and expensive, slow
 * and cheap, flaky) and a config routing the model "demo" over them, so
 * routing, failover and the metrics can be seen with no API key.
 */
#include "cmds.h"
#include "gateway.h"
#include "mock.h"

#include "alloc.h"
#include "buf.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: airouter serve --config FILE [--listen HOST:PORT] [--admin-listen HOST:PORT]\n"
            "                      [--http-mode workers|pool] [--threads N] [--drain-ms MS]\n"
            "                      [--log-level off|error|info]\n"
            "       airouter serve --demo [--listen HOST:PORT] [--drain-ms MS]\n"
            "\n"
            "Serves the OpenAI-compatible API (POST /v1/chat/completions, GET /v1/models,\n"
            "GET /healthz, GET /metrics) and the admin API, from the engine configuration\n"
            "FILE plus the gateway's keys (listen, keys, admin, access_log, ...; see\n"
            "docs/GATEWAY.md). SIGHUP reloads FILE; SIGINT or SIGTERM stop accepting, let\n"
            "requests in flight finish for up to --drain-ms (default 10000), and exit 0.\n"
            "\n"
            "  --demo          built-in mock providers (fast+expensive, slow+cheap, flaky)\n"
            "                  behind the model \"demo\"; no API key needed\n"
            "  --listen        overrides the config's \"listen\" (default 127.0.0.1:8080)\n"
            "  --admin-listen  overrides \"admin.listen\" (default 127.0.0.1:8081)\n"
            "  --http-mode     who serves HTTP: \"workers\" (default: each engine worker runs\n"
            "                  a listener on the shared port, so a request stays on one\n"
            "                  thread) or \"pool\" (libmicrohttpd's own threads); overrides\n"
            "                  the config's \"http_mode\"\n"
            "  --threads       HTTP threads with --http-mode pool (default: one per CPU)\n"
            "  --log-level     access log level, overrides the config's access_log.level\n"
            "                  (also after a reload): off, error (status >= 400), info\n");
}

static int
parse_u32(const char *opt, const char *s, uint32_t max, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end != '\0' || s[0] == '-' || s[0] == '\0' || v > max) {
        fprintf(stderr, "airouter serve: %s: expected an integer 0..%u\n", opt, max);
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

struct demo {
    air_mock_t *m[3];
};

static void
demo_stop(struct demo *d)
{
    for (int i = 0; i < 3; i++)
        air_mock_stop(d->m[i]);
}

/* Start the demo mocks and build the config text (air__free it). */
static char *
demo_start(struct demo *d, const char *listen, char *admin_listen, size_t alen)
{
    static const struct {
        const char *name;
        uint32_t latency, jitter, chunk_delay;
        double fail_rate;
        const char *model;
        double in, out;
    } spec[3] = {
        {"fast", 40, 20, 15, 0.0, "demo-fast", 5.0, 15.0},
        {"cheap", 400, 100, 60, 0.0, "demo-cheap", 0.1, 0.4},
        {"flaky", 60, 20, 20, 0.4, "demo-flaky", 1.0, 3.0},
    };
    memset(d, 0, sizeof *d);
    for (int i = 0; i < 3; i++) {
        air_mock_opts_t o;
        air_mock_opts_init(&o);
        o.latency_ms = spec[i].latency;
        o.jitter_ms = spec[i].jitter;
        o.chunk_delay_ms = spec[i].chunk_delay;
        o.fail_rate = spec[i].fail_rate;
        o.fail_status = 503;
        o.seed = (uint64_t)getpid() + (uint64_t)i;
        char err[256];
        if (air_mock_start(&o, &d->m[i], err, sizeof err) != 0) {
            fprintf(stderr, "airouter serve: demo mock: %s\n", err);
            demo_stop(d);
            return NULL;
        }
    }
    /* The admin listener goes on the next port; its token is random. */
    unsigned port = 8080;
    const char *colon = strrchr(listen, ':');
    if (colon != NULL)
        port = (unsigned)strtoul(colon + 1, NULL, 10);
    snprintf(admin_listen, alen, "127.0.0.1:%u", port ? port + 1 : 0);
    char tok[33];
    unsigned char rnd[16] = {0};
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, rnd, sizeof rnd);
        (void)n;
        close(fd);
    }
    for (int i = 0; i < 16; i++)
        snprintf(tok + 2 * i, 3, "%02x", rnd[i]);
    setenv("AIROUTER_DEMO_ADMIN_TOKEN", tok, 1);

    air_buf_t b = AIR_BUF_INIT;
    air__buf_puts(&b,
                  "{\"comment\":\"airouter serve --demo\",\"workers\":2,"
                  "\"retry\":{\"max_attempts\":3,\"backoff_base_ms\":20,\"backoff_cap_ms\":200},"
                  "\"providers\":[");
    for (int i = 0; i < 3; i++)
        air__buf_printf(&b,
                        "%s{\"name\":\"%s\",\"kind\":\"openai\",\"base_url\":"
                        "\"http://127.0.0.1:%u/v1\",\"models\":[{\"name\":\"%s\","
                        "\"input_price_per_mtok\":%g,\"output_price_per_mtok\":%g}]}",
                        i ? "," : "", spec[i].name, (unsigned)air_mock_port(d->m[i]), spec[i].model,
                        spec[i].in, spec[i].out);
    air__buf_puts(&b,
                  "],\"routes\":[{\"model\":\"demo\",\"targets\":["
                  "{\"provider\":\"flaky\",\"model\":\"demo-flaky\"},"
                  "{\"provider\":\"fast\",\"model\":\"demo-fast\"},"
                  "{\"provider\":\"cheap\",\"model\":\"demo-cheap\"}]},"
                  "{\"model\":\"demo-cheap\",\"targets\":["
                  "{\"provider\":\"cheap\"},{\"provider\":\"fast\",\"model\":\"demo-fast\"}]}],");
    air__buf_puts(&b, "\"listen\":");
    air__buf_json_str(&b, listen, strlen(listen));
    air__buf_puts(&b, ",\"admin\":{\"listen\":");
    air__buf_json_str(&b, admin_listen, strlen(admin_listen));
    air__buf_puts(&b, ",\"token_env\":\"AIROUTER_DEMO_ADMIN_TOKEN\"},"
                      "\"access_log\":{\"path\":\"-\",\"level\":\"info\"}}");
    char *text = air__buf_steal(&b, NULL);
    if (text == NULL)
        demo_stop(d);
    return text;
}

int
air__cmd_serve(int argc, char **argv)
{
    const char *config = NULL, *listen = NULL, *admin_listen = NULL;
    uint32_t drain_ms = 10000, threads = 0;
    int http_mode = 0;
    const char *log_level = NULL;
    int demo = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_next = i + 1 < argc;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--config") == 0 && has_next) {
            config = argv[++i];
        } else if (strcmp(a, "--listen") == 0 && has_next) {
            listen = argv[++i];
        } else if (strcmp(a, "--admin-listen") == 0 && has_next) {
            admin_listen = argv[++i];
        } else if (strcmp(a, "--drain-ms") == 0 && has_next) {
            if (parse_u32(a, argv[++i], 3600000, &drain_ms) != 0)
                return 2;
        } else if (strcmp(a, "--http-mode") == 0 && has_next) {
            const char *m = argv[++i];
            if (strcmp(m, "workers") == 0) {
                http_mode = AIR_GW_HTTP_WORKERS;
            } else if (strcmp(m, "pool") == 0) {
                http_mode = AIR_GW_HTTP_POOL;
            } else {
                fprintf(stderr, "airouter serve: --http-mode: expected workers or pool, not '%s'\n",
                        m);
                return 2;
            }
        } else if (strcmp(a, "--log-level") == 0 && has_next) {
            log_level = argv[++i];
            if (strcmp(log_level, "off") != 0 && strcmp(log_level, "error") != 0 &&
                strcmp(log_level, "info") != 0) {
                fprintf(stderr,
                        "airouter serve: --log-level: expected off, error or info, not '%s'\n",
                        log_level);
                return 2;
            }
        } else if (strcmp(a, "--threads") == 0 && has_next) {
            if (parse_u32(a, argv[++i], 256, &threads) != 0)
                return 2;
        } else if (strcmp(a, "--demo") == 0) {
            demo = 1;
        } else {
            fprintf(stderr, "airouter serve: unknown or incomplete option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if ((config == NULL) == !demo) {
        fprintf(stderr, "airouter serve: give either --config FILE or --demo\n");
        usage(stderr);
        return 2;
    }

    /* Each connection is a descriptor, and so is each upstream transfer:
     * allow as many as the hard limit does. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }

    /* Block the signals before any thread exists; every thread inherits the
     * mask, so only sigwait below sees them. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    struct demo d;
    char *demo_text = NULL;
    char demo_admin[64];
    if (demo) {
        demo_text =
            demo_start(&d, listen ? listen : "127.0.0.1:8080", demo_admin, sizeof demo_admin);
        if (demo_text == NULL)
            return 1;
    }
    struct air__gw_opts o = {0};
    o.config_text = demo_text;
    o.config_path = config;
    o.listen = demo ? NULL : listen;
    o.admin_listen = admin_listen;
    o.threads = threads;
    o.http_mode = http_mode;
    o.log_level = log_level;
    struct air__gw *gw = NULL;
    char err[512];
    air_status_t st = air__gw_start(&o, &gw, err, sizeof err);
    air__free(demo_text);
    if (st != AIR_OK) {
        fprintf(stderr, "airouter serve: %s\n", err);
        if (demo)
            demo_stop(&d);
        return st == AIR_E_CONFIG ? 2 : 1;
    }
    if (demo) {
        unsigned port = air__gw_port(gw);
        fprintf(
            stderr,
            "\nairouter serve --demo: model \"demo\" is routed over three mock providers:\n"
            "  fast  (~40 ms, $5/$15 per Mtok), cheap (~400 ms, $0.1/$0.4), flaky (40%% 503s);\n"
            "failed attempts fail over. \"demo-cheap\" lists cheap, then fast. The response\n"
            "headers x-airouter-provider and x-airouter-attempts show what happened. Try:\n\n"
            "  curl -s http://127.0.0.1:%u/v1/chat/completions -H 'content-type: "
            "application/json' \\\n"
            "    -d '{\"model\":\"demo\",\"messages\":[{\"role\":\"user\",\"content\":"
            "\"Hello\"}]}'\n"
            "  curl -sN http://127.0.0.1:%u/v1/chat/completions -H 'content-type: "
            "application/json' \\\n"
            "    -d '{\"model\":\"demo\",\"stream\":true,\"messages\":[{\"role\":\"user\","
            "\"content\":\"Hello\"}]}'\n\n"
            "Metrics: http://127.0.0.1:%u/metrics\n"
            "Admin:   curl -s -H \"Authorization: Bearer $AIROUTER_DEMO_ADMIN_TOKEN\" "
            "http://127.0.0.1:%u/admin/stats\n"
            "         (token for this run: %s)\n\n",
            port, port, port, (unsigned)air__gw_admin_port(gw),
            getenv("AIROUTER_DEMO_ADMIN_TOKEN"));
    }
    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGPIPE)
            continue;
        if (sig == SIGHUP) {
            if (demo) {
                fprintf(stderr, "airouter serve: SIGHUP: nothing to reload in --demo\n");
                continue;
            }
            st = air__gw_reload(gw, NULL, err, sizeof err);
            if (st == AIR_OK)
                fprintf(stderr, "airouter serve: configuration reloaded from %s\n", config);
            else
                fprintf(stderr,
                        "airouter serve: reload failed, still running the previous "
                        "configuration: %s\n",
                        err);
            continue;
        }
        fprintf(stderr, "airouter serve: %s: draining (up to %u ms)\n",
                sig == SIGINT ? "SIGINT" : "SIGTERM", drain_ms);
        break;
    }
    air__gw_stop(gw, drain_ms);
    if (demo)
        demo_stop(&d);
    fprintf(stderr, "airouter serve: stopped\n");
    return 0;
}
