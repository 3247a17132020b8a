/*
 * builtin.c - the static table of built-in adapters (nginx's ngx_modules[]
 * idea). Adding a kind means adding its ops here.
 */
#include "builtin.h"

#include <string.h>

extern const air_provider_ops_t air_provider_openai;
extern const air_provider_ops_t air_provider_anthropic;
extern const air_provider_ops_t air_provider_gemini;
extern const air_provider_ops_t air_provider_deepseek;
extern const air_provider_ops_t air_provider_mistral;
extern const air_provider_ops_t air_provider_groq;
extern const air_provider_ops_t air_provider_together;
extern const air_provider_ops_t air_provider_openrouter;
extern const air_provider_ops_t air_provider_xai;
extern const air_provider_ops_t air_provider_ollama;
extern const air_provider_ops_t air_provider_vllm;
extern const air_provider_ops_t air_provider_azure;

static const air_provider_ops_t *const builtins[] = {
    &air_provider_openai,
    &air_provider_anthropic,
    &air_provider_gemini,
    &air_provider_deepseek,
    &air_provider_mistral,
    &air_provider_groq,
    &air_provider_together,
    &air_provider_openrouter,
    &air_provider_xai,
    &air_provider_ollama,
    &air_provider_vllm,
    &air_provider_azure,
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
