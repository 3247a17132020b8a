/*
 * golden.h - the generic golden wire-test runner for provider adapters, in
 * the spirit of curl's tests/data.
 *
 * Each case is a directory under $AIR_TEST_DATA/providers/data/<kind_dir>/
 * holding canned files: input.json (the unified request), optional
 * provider.json and meta.json, expect-request.http (the exact upstream
 * request), reply.http (the canned upstream reply) and expect-output.json
 * (what the adapter must make of it). The format is documented in
 * tests/providers/data/README.md.
 *
 * Usage, in tests/providers/test_<kind>.c:
 *
 *     static void test_<kind>_golden_cases_pass(void **state)
 *     {
 *         (void)state;
 *         air_test_golden_run_all(&air_provider_<kind>, "<kind>");
 *     }
 *
 * Every case runs (a failing case does not hide the next ones); each failure
 * is printed with its case directory and the reason, and the cmocka test
 * fails at the end naming the failed cases. A kind directory with no cases
 * fails too, so a mistyped name cannot pass silently.
 */
#ifndef AIR_TEST_GOLDEN_H
#define AIR_TEST_GOLDEN_H

#include <stddef.h>

#include "airouter/provider.h"

/* The API key the runner hands to ops->init; written %API_KEY% in the
 * expected files. The runner also checks that it never leaks into a fault,
 * a decoded body or a chunk. */
#define AIR_TEST_GOLDEN_KEY "sk-test-key"

/* Run every case of one kind directory, in sorted order. Fails the current
 * cmocka test when any case fails. */
void air_test_golden_run_all(const air_provider_ops_t *ops, const char *kind_dir);

/* Run one case directory (absolute path). Returns 0 when it passes; on
 * failure writes the reason to err and returns -1. Does not call cmocka's
 * fail(): usable from other harnesses (a benchmark, a fuzz seed dumper). */
int air_test_golden_run_case(const air_provider_ops_t *ops, const char *case_dir, char *err,
                             size_t errlen);

/* Read a whole file; NUL-terminated, owned (air__free). NULL when missing. */
char *air_test_read_file(const char *path, size_t *len);

/* "$AIR_TEST_DATA/<rel>" (AIR_TEST_DATA defaults to "tests"); owned. */
char *air_test_data_path(const char *rel);

#endif
