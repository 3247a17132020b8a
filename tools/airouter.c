/*
 * airouter.c - the `airouter` program: dispatches to the subcommands
 * (chat, mock, bench) and implements `airouter chat`, the smallest real use
 * of the library: one request, printed as it arrives.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "airouter.h"
#include "alloc.h"
#include "buf.h"
#include "cmds.h"

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: airouter <command> [options]\n"
            "\n"
            "commands:\n"
            "  serve  run the OpenAI-compatible gateway (--config FILE, or --demo)\n"
            "  chat   send one chat request through the router\n"
            "  mock   run an OpenAI-compatible mock provider on 127.0.0.1\n"
            "  bench  measure throughput and added latency against a direct libcurl baseline\n"
            "  version\n"
            "\n"
            "Run 'airouter <command> --help' for the options of a command.\n");
}

static void
chat_usage(FILE *f)
{
    fprintf(f, "usage: airouter chat --config FILE --model M [options] 'prompt'\n"
               "       airouter chat --config FILE [--model M] [options] --body FILE|-\n"
               "\n"
               "options: [--provider P] [--stream] [--max-tokens N] [--deadline-ms N] [--quiet]\n"
               "\n"
               "--model is required with a prompt; with --body (a full OpenAI Chat\n"
               "Completions JSON body, \"-\" = stdin) it replaces the body's \"model\", as\n"
               "--stream sets its \"stream\". --max-tokens applies to a prompt only.\n"
               "\n"
               "Sends one request through the router. Prints the unified OpenAI response\n"
               "JSON (or, with --stream, the text as it arrives) on stdout and a summary\n"
               "line (provider, model, attempts, latency, tokens) on stderr. Exits 1 with\n"
               "the error message when the request fails, 2 on bad usage.\n");
}

struct chat_state {
    int saw_text;
};

static void
on_chunk(const char *json, size_t len, void *ud)
{
    struct chat_state *cs = ud;
    cJSON *c = cJSON_ParseWithLength(json, len);
    if (c == NULL)
        return;
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(c, "choices");
    const cJSON *ch;
    cJSON_ArrayForEach(ch, choices)
    {
        const cJSON *delta = cJSON_GetObjectItemCaseSensitive(ch, "delta");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(delta, "content");
        if (cJSON_IsString(content) && content->valuestring[0] != '\0') {
            fputs(content->valuestring, stdout);
            fflush(stdout);
            cs->saw_text = 1;
        }
    }
    cJSON_Delete(c);
}

int
air__cmd_chat(int argc, char **argv)
{
    const char *config = NULL, *model = NULL, *provider = NULL, *body_path = NULL;
    const char *prompt = NULL;
    int stream = 0, quiet = 0;
    long max_tokens = -1, deadline_ms = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_next = i + 1 < argc;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            chat_usage(stdout);
            return 0;
        } else if (strcmp(a, "--config") == 0 && has_next) {
            config = argv[++i];
        } else if (strcmp(a, "--model") == 0 && has_next) {
            model = argv[++i];
        } else if (strcmp(a, "--provider") == 0 && has_next) {
            provider = argv[++i];
        } else if (strcmp(a, "--body") == 0 && has_next) {
            body_path = argv[++i];
        } else if (strcmp(a, "--stream") == 0) {
            stream = 1;
        } else if (strcmp(a, "--quiet") == 0) {
            quiet = 1;
        } else if ((strcmp(a, "--max-tokens") == 0 || strcmp(a, "--deadline-ms") == 0) &&
                   has_next) {
            char *end;
            errno = 0;
            long v = strtol(argv[i + 1], &end, 10);
            if (errno || *end || v <= 0 || v > 100000000) {
                fprintf(stderr, "airouter chat: %s: expected a positive integer\n", a);
                return 2;
            }
            if (a[2] == 'm')
                max_tokens = v;
            else
                deadline_ms = v;
            i++;
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "airouter chat: unknown or incomplete option '%s'\n", a);
            chat_usage(stderr);
            return 2;
        } else if (prompt == NULL) {
            prompt = a;
        } else {
            fprintf(stderr, "airouter chat: more than one prompt given\n");
            return 2;
        }
    }
    if (config == NULL) {
        fprintf(stderr, "airouter chat: --config FILE is required\n");
        return 2;
    }
    if ((prompt == NULL) == (body_path == NULL)) {
        fprintf(stderr, "airouter chat: give either a prompt or --body FILE|-\n");
        return 2;
    }
    if (body_path == NULL && model == NULL) {
        fprintf(stderr, "airouter chat: --model is required with a prompt\n");
        return 2;
    }

    /* Build the body. */
    char *body = NULL;
    size_t body_len = 0;
    if (body_path != NULL) {
        air_buf_t b = AIR_BUF_INIT;
        FILE *f = strcmp(body_path, "-") == 0 ? stdin : fopen(body_path, "rb");
        if (f == NULL) {
            fprintf(stderr, "airouter chat: %s: %s\n", body_path, strerror(errno));
            return 2;
        }
        int rc = air__buf_read(&b, f);
        if (f != stdin)
            fclose(f);
        if (rc != 0) {
            air__buf_free(&b);
            fprintf(stderr, "airouter chat: %s: read error\n", body_path);
            return 2;
        }
        /* --model / --stream override the file's fields. */
        cJSON *j = cJSON_ParseWithLength(b.data ? b.data : "", b.len);
        air__buf_free(&b);
        if (j == NULL || !cJSON_IsObject(j)) {
            cJSON_Delete(j);
            fprintf(stderr, "airouter chat: %s: not a JSON object\n", body_path);
            return 2;
        }
        if (model != NULL) {
            cJSON_DeleteItemFromObjectCaseSensitive(j, "model");
            cJSON_AddStringToObject(j, "model", model);
        }
        if (stream) {
            cJSON_DeleteItemFromObjectCaseSensitive(j, "stream");
            cJSON_AddTrueToObject(j, "stream");
        }
        char *s = cJSON_PrintUnformatted(j);
        cJSON_Delete(j);
        if (s == NULL)
            return 1;
        body = air__strdup(s);
        cJSON_free(s);
    } else {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", model);
        cJSON *msgs = cJSON_AddArrayToObject(j, "messages");
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "user");
        cJSON_AddStringToObject(m, "content", prompt);
        cJSON_AddItemToArray(msgs, m);
        if (max_tokens > 0)
            cJSON_AddNumberToObject(j, "max_tokens", (double)max_tokens);
        if (stream) {
            cJSON_AddTrueToObject(j, "stream");
            cJSON *so = cJSON_AddObjectToObject(j, "stream_options");
            cJSON_AddTrueToObject(so, "include_usage");
        }
        char *s = cJSON_PrintUnformatted(j);
        cJSON_Delete(j);
        if (s == NULL)
            return 1;
        body = air__strdup(s);
        cJSON_free(s);
    }
    if (body == NULL)
        return 1;
    body_len = strlen(body);

    char err[512];
    air_t *r = NULL;
    air_status_t st = air_new_file(config, &r, err, sizeof err);
    if (st != AIR_OK) {
        fprintf(stderr, "airouter chat: config: %s\n", err);
        air__free(body);
        return 2;
    }
    air_req_t *req = NULL;
    st = air_req_new(r, body, body_len, &req, err, sizeof err);
    air__free(body);
    if (st != AIR_OK) {
        fprintf(stderr, "airouter chat: request: %s\n", err);
        air_free(r, 0);
        return 2;
    }
    struct chat_state cs = {0};
    int ok = 1;
    if (provider != NULL && air_req_set_provider(req, provider) != AIR_OK)
        ok = 0;
    if (deadline_ms > 0 && air_req_set_deadline_ms(req, (uint32_t)deadline_ms) != AIR_OK)
        ok = 0;
    if (air_req_set_chunk(req, on_chunk, &cs) != AIR_OK)
        ok = 0;
    if (!ok) {
        air_req_free(req);
        air_free(r, 0);
        fprintf(stderr, "airouter chat: out of memory\n");
        return 1;
    }
    air_resp_t *resp = NULL;
    st = air_call(r, req, &resp);
    if (st != AIR_OK) {
        fprintf(stderr, "airouter chat: submit failed: %s\n", air_strerror(st));
        air_free(r, 0);
        return 1;
    }
    int code = 0;
    if (air_resp_status(resp) == AIR_OK) {
        if (air_resp_streamed(resp)) {
            if (cs.saw_text)
                fputc('\n', stdout);
        } else {
            size_t n;
            const char *b = air_resp_body(resp, &n);
            if (b != NULL) {
                fwrite(b, 1, n, stdout);
                fputc('\n', stdout);
            }
        }
    } else {
        if (cs.saw_text)
            fputc('\n', stdout);
        fprintf(stderr, "airouter chat: error (%s, HTTP %d): %s\n",
                air_errclass_name(air_resp_error_class(resp)), air_resp_http_status(resp),
                air_resp_error_message(resp));
        code = 1;
    }
    fflush(stdout);
    if (!quiet)
        fprintf(stderr,
                "[provider=%s model=%s attempts=%u latency=%.1fms ttft=%.1fms "
                "tokens=%llu/%llu]\n",
                air_resp_provider(resp) ? air_resp_provider(resp) : "-",
                air_resp_model(resp) ? air_resp_model(resp) : "-", air_resp_attempts(resp),
                (double)air_resp_latency_us(resp) / 1000.0,
                (double)air_resp_ttft_us(resp) / 1000.0,
                (unsigned long long)air_resp_prompt_tokens(resp),
                (unsigned long long)air_resp_completion_tokens(resp));
    fflush(stdout);
    air_resp_free(resp);
    air_free(r, 1000);
    return code;
}

int
main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "chat") == 0)
        return air__cmd_chat(argc - 1, argv + 1);
    if (strcmp(cmd, "mock") == 0)
        return air__cmd_mock(argc - 1, argv + 1);
    if (strcmp(cmd, "bench") == 0)
        return air__cmd_bench(argc - 1, argv + 1);
    if (strcmp(cmd, "serve") == 0)
        return air__cmd_serve(argc - 1, argv + 1);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("airouter %s\n", air_version());
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "airouter: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
