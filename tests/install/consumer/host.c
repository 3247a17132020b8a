/*
 * host.c - a tiny host program built against an INSTALLED libairouter (by
 * tests/install/consumers.sh, once with pkg-config and once with CMake's
 * find_package). DESIGN: it uses only the public header and exercises real
 * library calls (router creation from a config, version check, strerror, a
 * request built and freed, a rejected config), so a broken install (missing
 * header, wrong include dir, unexported symbol, missing dependency in the .pc
 * or the CMake package) fails to compile, link or run. No network: the one
 * provider points at 127.0.0.1:9 and no request is submitted.
 *
 * Exits 0 and prints "host: ok" only if every check held.
 */
#include <stdio.h>
#include <string.h>

#include <airouter.h>

static int failures;

static void
check(int ok, const char *what)
{
    if (!ok) {
        failures++;
        fprintf(stderr, "host: FAILED: %s\n", what);
    }
}

int
main(void)
{
    static const char config[] = "{\"workers\": 1, \"providers\": [{\"name\": \"local\", "
                                 "\"kind\": \"openai\", \"base_url\": \"http://127.0.0.1:9/v1\"}]}";
    static const char bad_config[] = "{\"providers\": [{\"name\": \"local\", \"kind\": \"openai\", "
                                     "\"timeout_ms\": \"soon\"}]}";
    static const char body[] = "{\"model\": \"gpt-4o-mini\", "
                               "\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}";
    char err[256];
    air_t *r = NULL;
    air_status_t st;

    printf("host: libairouter %s (header %s)\n", air_version(), AIR_VERSION_STR);
    check(air_version_num() == AIR_VERSION_NUM, "air_version_num() == AIR_VERSION_NUM");
    check(air_version() != NULL && strcmp(air_version(), AIR_VERSION_STR) == 0,
          "air_version() == AIR_VERSION_STR");
    check(strcmp(air_strerror(AIR_E_BUSY), "queue full") == 0,
          "air_strerror(AIR_E_BUSY) is \"queue full\"");

    err[0] = '\0';
    st = air_new(config, &r, err, sizeof err);
    if (st != AIR_OK || r == NULL) {
        fprintf(stderr, "host: air_new: %s: %s\n", air_status_name(st), err);
        check(0, "air_new with a valid config");
    } else {
        air_req_t *req = NULL;
        err[0] = '\0';
        st = air_req_new(r, body, sizeof body - 1, &req, err, sizeof err);
        if (st != AIR_OK || req == NULL)
            fprintf(stderr, "host: air_req_new: %s: %s\n", air_status_name(st), err);
        check(st == AIR_OK && req != NULL, "air_req_new with a valid body");
        air_req_free(req);
        air_free(r, 0);
    }

    air_t *bad = NULL;
    err[0] = '\0';
    st = air_new(bad_config, &bad, err, sizeof err);
    check(st == AIR_E_CONFIG, "air_new with an invalid config returns AIR_E_CONFIG");
    check(err[0] != '\0', "air_new with an invalid config writes a message");
    if (st == AIR_OK)
        air_free(bad, 0);
    else
        printf("host: invalid config rejected: %s\n", err);

    if (failures != 0) {
        fprintf(stderr, "host: %d check(s) failed\n", failures);
        return 1;
    }
    printf("host: ok\n");
    return 0;
}
