/*
 * testenv.h - what tests need from their surroundings: a free loopback
 * port, the redis-server to run, whether this is a CI run.
 */
#ifndef AIR_TESTS_TESTENV_H
#define AIR_TESTS_TESTENV_H

#include <stddef.h>

/* A TCP port on 127.0.0.1 that was free a moment ago, or -1. */
int air_test_free_port(void);

/* The redis-server to run into out: $AIR_TEST_REDIS_SERVER when set (only
 * that file), else the first on PATH or in the usual places. 0, or -1 when
 * there is none. */
int air_test_find_redis(char *out, size_t n);

/* CI is set (CI=true, as .ci/run sets it): a missing service is then a
 * failure, not a skip. */
int air_test_in_ci(void);

#endif
