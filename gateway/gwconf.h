/*
 * gwconf.h - the gateway's part of the configuration file.
 *
 * The gateway and the engine read the same JSON document. The gateway owns
 * the top-level keys listen, max_body_bytes, max_connections,
 * client_timeout_ms, keys, admin and access_log: it validates them (errors
 * name the JSON path, as the engine's do), removes them, and hands the rest
 * to air_new / air_reload, which reject unknown keys. It also reads the
 * routes and providers (without validating them: the engine does) to list
 * the served models and to price requests for budgets.
 *
 * A parsed configuration is an immutable, reference-counted snapshot; a
 * reload builds a new one and swaps the pointer.
 */
#ifndef AIR_GW_CONF_H
#define AIR_GW_CONF_H

#include <netinet/in.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "airouter.h"
#include "sha256.h"

enum { AIR_GW_WIN_MINUTE, AIR_GW_WIN_HOUR, AIR_GW_WIN_DAY, AIR_GW_WIN_MONTH };
enum { AIR_GW_LOG_OFF, AIR_GW_LOG_ERROR, AIR_GW_LOG_INFO };

struct air__gw_keystate; /* gwlimits.h */

/* One client key. */
struct air__gw_key {
    char *name;
    char *key_env; /* the variable named in the config, or NULL (key_sha256) */
    uint8_t digest[AIR_SHA256_LEN];
    int64_t rpm, tpm;  /* 0 = unlimited */
    double budget_usd; /* 0 = no budget */
    int window;        /* AIR_GW_WIN_* */
    char **models;     /* allow-list, NULL = every model */
    size_t nmodels;
    struct air__gw_keystate *st; /* limiter state (one reference) */
};

/* One entry of GET /v1/models, with the prices used to estimate a
 * request's cost before it is sent (the highest of its targets). */
struct air__gw_model {
    char *id;
    char *owned_by;
    double in_price, out_price; /* USD per million tokens */
};

struct air__gw_addr {
    struct sockaddr_storage sa;
    socklen_t len;
    int loopback;
    char text[80]; /* as configured */
};

struct air__gw_conf {
    atomic_long refs;
    char *engine_json; /* the document without the gateway's keys */
    int invalid;       /* not a JSON object: engine_json is the text as given, and
                        * air_new/air_reload produce the error message */
    struct air__gw_addr listen;
    uint64_t max_body_bytes;
    uint32_t max_connections;
    uint32_t client_timeout_ms;
    int http_mode; /* AIR_GW_HTTP_*; fixed at start (a reload keeps the first) */
    struct air__gw_key *keys;
    size_t nkeys;
    int admin_enabled; /* admin.token_env given */
    struct air__gw_addr admin_listen;
    char *admin_token_env;
    uint8_t admin_digest[AIR_SHA256_LEN];
    int log_level;  /* AIR_GW_LOG_* */
    char *log_path; /* "-" = stderr */
    int log_fd;     /* -1 when off */
    struct air__gw_model *models;
    size_t nmodels;
};

/*
 * Parse and validate a whole document. On success *out holds one reference.
 * Errors: AIR_E_CONFIG with "<json path>: <reason>" in err (a JSON syntax
 * error gives the engine's line/column message), AIR_E_NOMEM. Client key
 * variables are read here; their values never appear in err.
 */
air_status_t air__gw_conf_parse(const char *text, size_t len, struct air__gw_conf **out, char *err,
                                size_t errlen);
/* The same, with access_log.level replaced by log_level ("off", "error",
 * "info") when it is not NULL: the command line's --log-level, which
 * outlives reloads of the file. */
air_status_t air__gw_conf_parse_ex(const char *text, size_t len, const char *log_level,
                                   struct air__gw_conf **out, char *err, size_t errlen);
void air__gw_conf_ref(struct air__gw_conf *c);
/* Drop a reference; the last one frees (and closes the log file). NULL ok. */
void air__gw_conf_unref(struct air__gw_conf *c);
/* Parse "host:port" ("127.0.0.1:8080", "[::1]:80", "localhost:8080",
 * "0.0.0.0:80"); port 0 means any free port. 0 or -1. */
int air__gw_addr_parse(const char *s, struct air__gw_addr *a);
/* The model entry for a public model id, or NULL. */
const struct air__gw_model *air__gw_conf_model(const struct air__gw_conf *c, const char *id);
/* Whether key k may use model id. */
int air__gw_key_allows(const struct air__gw_key *k, const char *id);
/* The gateway's own keys as a JSON object text (secrets redacted), for
 * GET /admin/config. Ownership: air__free. */
char *air__gw_conf_json(const struct air__gw_conf *c);

#endif
