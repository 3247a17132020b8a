/*
 * pricing.c - built-in price table and cost arithmetic. DESIGN: a sorted-by-
 * nothing static table (a few dozen rows, looked up once per deployment at
 * config time, not per request) and a strict suffix rule for dated model
 * versions so a different model that merely shares a prefix is not priced
 * wrongly.
 */
#include "pricing.h"

#include <string.h>

const char *const air__prices_date = AIR_PRICES_DATE;

/* USD per million tokens: input, output, cached input. */
static const struct air__price table[] = {
    /* OpenAI */
    {"gpt-4o", 2.50, 10.00, 1.25},
    {"gpt-4o-mini", 0.15, 0.60, 0.075},
    {"gpt-4.1", 2.00, 8.00, 0.50},
    {"gpt-4.1-mini", 0.40, 1.60, 0.10},
    {"gpt-4.1-nano", 0.10, 0.40, 0.025},
    {"gpt-4-turbo", 10.00, 30.00, 10.00},
    {"gpt-3.5-turbo", 0.50, 1.50, 0.50},
    {"o1", 15.00, 60.00, 7.50},
    {"o1-mini", 1.10, 4.40, 0.55},
    {"o3", 2.00, 8.00, 0.50},
    {"o3-mini", 1.10, 4.40, 0.55},
    {"o4-mini", 1.10, 4.40, 0.275},
    /* Anthropic (cached = cache read) */
    {"claude-opus-4", 15.00, 75.00, 1.50},
    {"claude-sonnet-4", 3.00, 15.00, 0.30},
    {"claude-3-7-sonnet", 3.00, 15.00, 0.30},
    {"claude-3-5-sonnet", 3.00, 15.00, 0.30},
    {"claude-3-5-haiku", 0.80, 4.00, 0.08},
    {"claude-3-opus", 15.00, 75.00, 1.50},
    {"claude-3-haiku", 0.25, 1.25, 0.03},
    /* Google (prompts up to 128k / 200k tokens) */
    {"gemini-1.5-flash", 0.075, 0.30, 0.01875},
    {"gemini-1.5-pro", 1.25, 5.00, 0.3125},
    {"gemini-2.0-flash", 0.10, 0.40, 0.025},
    {"gemini-2.0-flash-lite", 0.075, 0.30, 0.075},
    {"gemini-2.5-flash", 0.30, 2.50, 0.075},
    {"gemini-2.5-pro", 1.25, 10.00, 0.31},
    /* DeepSeek (standard hours) */
    {"deepseek-chat", 0.27, 1.10, 0.07},
    {"deepseek-reasoner", 0.55, 2.19, 0.14},
    /* Mistral */
    {"mistral-large", 2.00, 6.00, 2.00},
    {"mistral-small", 0.10, 0.30, 0.10},
    {"codestral", 0.30, 0.90, 0.30},
    /* xAI */
    {"grok-3", 3.00, 15.00, 0.75},
    {"grok-3-mini", 0.30, 0.50, 0.075},
};

#define NTABLE (sizeof table / sizeof table[0])

const struct air__price *
air__price_table(size_t *n)
{
    *n = NTABLE;
    return table;
}

/* Is s a version suffix: '-' or '@' then digits and '-' only, or "-latest"? */
static int
version_suffix(const char *s)
{
    if (*s != '-' && *s != '@')
        return 0;
    if (strcmp(s + 1, "latest") == 0)
        return 1;
    s++;
    if (*s == '\0')
        return 0;
    for (; *s; s++)
        if (!(*s >= '0' && *s <= '9') && *s != '-')
            return 0;
    return 1;
}

static const struct air__price *
find(const char *model)
{
    const struct air__price *best = NULL;
    size_t best_len = 0;
    for (size_t i = 0; i < NTABLE; i++) {
        size_t l = strlen(table[i].model);
        if (strncmp(model, table[i].model, l) != 0)
            continue;
        if (model[l] == '\0')
            return &table[i];
        if (l > best_len && version_suffix(model + l)) {
            best = &table[i];
            best_len = l;
        }
    }
    return best;
}

const struct air__price *
air__price_lookup(const char *model)
{
    if (model == NULL || *model == '\0')
        return NULL;
    const struct air__price *p = find(model);
    if (p == NULL) {
        const char *slash = strrchr(model, '/');
        if (slash && slash[1])
            p = find(slash + 1);
    }
    return p;
}

double
air__cost_usd(double in_price, double out_price, double cached_in_price, uint64_t prompt,
              uint64_t completion, uint64_t cached)
{
    if (cached > prompt)
        cached = prompt;
    if (cached_in_price < 0)
        cached_in_price = in_price;
    return ((double)(prompt - cached) * in_price + (double)cached * cached_in_price +
            (double)completion * out_price) /
           1e6;
}

uint64_t
air__estimate_tokens(size_t bytes)
{
    return ((uint64_t)bytes + 3) / 4;
}
