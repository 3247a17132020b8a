/*
 * builtin.h - the table of built-in provider kinds.
 */
#ifndef AIR_PROVIDERS_BUILTIN_H
#define AIR_PROVIDERS_BUILTIN_H

#include "airouter/provider.h"

/* The ops for a kind name, or NULL. */
const air_provider_ops_t *air__provider_find(const char *kind);
/* Walk the table: i = 0, 1, ... until NULL. */
const air_provider_ops_t *air__provider_at(size_t i);

#endif
