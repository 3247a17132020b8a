/*
 * fuzz_config.c - libFuzzer target for the configuration parser: arbitrary
 * bytes must give AIR_OK or an error with a NUL-terminated message, never a
 * crash or a leak.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct air__config *c = NULL;
    char err[256];
    err[0] = 'x';
    air_status_t st = air__config_parse((const char *)data, size, &c, err, sizeof err);
    if (st == AIR_OK) {
        if (c == NULL)
            abort();
        air__config_free(c);
    } else if (memchr(err, '\0', sizeof err) == NULL) {
        abort();
    }
    return 0;
}
