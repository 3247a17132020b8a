#!/bin/sh
# state_redis_skip.sh - the rule for tests that need a real redis-server:
# without one they are skipped (exit 77) on a developer's machine, but fail
# when the environment variable CI is set, so CI cannot pass without running
# them. AIR_TEST_REDIS_SERVER pointing at a missing file stands for "not
# installed".
#
# usage: state_redis_skip.sh TEST_BINARY [TEST_BINARY_WITH_A_REDIS_SUBTEST]
#   the first exits 77 when skipping (core/state_redis); the second, whose
#   other tests need no Redis, skips only its Redis test and exits 0
#   (gateway/state_metrics).
set -u
missing=/nonexistent/redis-server
status=0
check() { # expected-rule actual-rc what
    case $1 in
        skip77) [ "$2" -eq 77 ] ;;
        pass) [ "$2" -eq 0 ] ;;
        fail) [ "$2" -ne 0 ] && [ "$2" -ne 77 ] ;;
    esac || { echo "FAIL: $3: exit $2, expected $1"; status=1; return; }
    echo "ok: $3: exit $2"
}
run() { # env-args... -- binary
    env "$@" >/dev/null 2>&1
    echo $?
}

bin=$1
check skip77 "$(run -u CI AIR_TEST_REDIS_SERVER=$missing "$bin")" "$bin without CI"
check skip77 "$(run CI= AIR_TEST_REDIS_SERVER=$missing "$bin")" "$bin with CI empty"
check skip77 "$(run CI=false AIR_TEST_REDIS_SERVER=$missing "$bin")" "$bin with CI=false"
check fail "$(run CI=true AIR_TEST_REDIS_SERVER=$missing "$bin")" "$bin with CI=true"
check fail "$(run CI=1 AIR_TEST_REDIS_SERVER=$missing "$bin")" "$bin with CI=1"
if [ $# -ge 2 ]; then
    gw=$2
    check pass "$(run -u CI AIR_TEST_REDIS_SERVER=$missing "$gw")" "$gw without CI"
    check fail "$(run CI=true AIR_TEST_REDIS_SERVER=$missing "$gw")" "$gw with CI=true"
fi
exit $status
