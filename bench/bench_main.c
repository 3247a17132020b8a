/*
 * bench_main.c - `air_bench`: runs the microbenchmarks listed below.
 *
 *   air_bench [--filter=SUBSTR] [--runs=N] [--list]
 *
 * Every argument is handed to every benchmark; each one runs the cases
 * whose names contain SUBSTR (all without --filter) and prints one line per
 * case, in the columns of bench.h.
 */
#include <stdio.h>
#include <string.h>

#include "bench.h"

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
} benches[] = {
    {"core", air__bench_core},
    {"policy", air__bench_policy},
};

int
main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--list") == 0) {
            for (size_t b = 0; b < sizeof benches / sizeof benches[0]; b++)
                printf("%s\n", benches[b].name);
            return 0;
        }
    }
    air__bench_header();
    int rc = 0;
    for (size_t b = 0; b < sizeof benches / sizeof benches[0]; b++) {
        argv[0] = (char *)benches[b].name;
        if (benches[b].run(argc, argv) != 0)
            rc = 1;
    }
    return rc;
}
