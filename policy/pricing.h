/*
 * pricing.h - model prices and request cost.
 *
 * A table of list prices for well-known models (USD per million tokens:
 * input, output, cached input), taken from the vendors' public price pages
 * on the date in air__prices_date. Prices change: the config overrides any
 * of them per deployment, and this table is only the default.
 *
 * Lookup: the exact model name, else the longest table name that is a prefix
 * of the model followed by a version suffix ("-2024-08-06", "-20241022",
 * "-001", "@20241022", "-latest"), so dated snapshots find their family's
 * price; else, for "vendor/model" names, the same on the part after the last
 * '/'. Anything else is unknown (NULL): "gpt-4o-audio-preview" does not get
 * gpt-4o's price by accident.
 *
 * Thread: pure functions over a static const table.
 */
#ifndef AIR_POLICY_PRICING_H
#define AIR_POLICY_PRICING_H

#include <stddef.h>
#include <stdint.h>

#define AIR_PRICES_DATE "2025-06-01"

struct air__price {
    const char *model;
    double in, out, cached_in; /* USD per million tokens */
};

/* NULL when unknown. The result points into a static table. */
const struct air__price *air__price_lookup(const char *model);
extern const char *const air__prices_date;

/* The built-in table, for listing (n entries). */
const struct air__price *air__price_table(size_t *n);

/* Cost in USD of one request. `cached` is the part of `prompt` read from the
 * cache (clamped to prompt) and billed at cached_in_price; a negative
 * cached_in_price means "same as in_price". Cache writes (Anthropic bills
 * them at 1.25x) are billed as ordinary input. */
double air__cost_usd(double in_price, double out_price, double cached_in_price, uint64_t prompt,
                     uint64_t completion, uint64_t cached);

/* Token estimate from a request body size in bytes, before sending:
 * ceil(bytes / 4) (OpenAI's rule of thumb of ~4 characters of English per
 * token; JSON syntax inflates the count a little, which errs on the safe
 * side for limits and budgets). Reconciled with the reported usage after the
 * response. */
uint64_t air__estimate_tokens(size_t bytes);

#endif
