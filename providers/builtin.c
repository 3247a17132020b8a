/*
 * builtin.c - the static table of built-in adapters (nginx's ngx_modules[]
 * idea). Adding a kind means adding its ops here.
 */
#include "builtin.h"

#include <string.h>

extern const air_provider_ops_t air_provider_openai;
extern const air_provider_ops_t air_provider_anthropic;
extern const air_provider_ops_t air_provider_gemini;

static const air_provider_ops_t *const builtins[] = {
    &air_provider_openai,
    &air_provider_anthropic,
    &air_provider_gemini,
    NULL,
};

const air_provider_ops_t *
air__provider_at(size_t i)
{
    if (i >= sizeof builtins / sizeof builtins[0])
        return NULL;
    return builtins[i];
}

const air_provider_ops_t *
air__provider_find(const char *kind)
{
    for (size_t i = 0; builtins[i] != NULL; i++)
        if (strcmp(builtins[i]->name, kind) == 0)
            return builtins[i];
    return NULL;
}
