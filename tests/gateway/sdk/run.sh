#!/usr/bin/env bash
# run.sh AIROUTER WORKDIR - ctest gateway/openai_sdk: start a mock provider
# and `airouter serve` on ephemeral loopback ports, then run sdk_test.mjs
# with the official `openai` npm package. The package is installed into
# WORKDIR (kept between runs) when it is missing there. Exits 77 (ctest
# SKIP_RETURN_CODE) only when node or npm is absent.
set -euo pipefail
bin=$1
work=$2
here=$(cd "$(dirname "$0")" && pwd)

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    # scripts/deps.sh does not install them: use the system's packages
    # (Debian: apt-get install nodejs npm) or any Node.js with npm that the
    # `openai` package in package.json supports.
    echo "SKIP: node and npm are needed for the OpenAI SDK test (e.g. apt-get install nodejs npm)"
    exit 77
fi
mkdir -p "$work"
cp "$here/package.json" "$here/sdk_test.mjs" "$work/"
if [ ! -d "$work/node_modules/openai" ]; then
    echo "installing the openai npm package into $work"
    (cd "$work" && npm install --no-audit --no-fund --loglevel=error)
fi

tmp=$(mktemp -d)
pids=()
cleanup()
{
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

# $1 file, $2 sed expression printing the port; waits up to 10 s.
wait_port()
{
    for _ in $(seq 100); do
        p=$(sed -n "$2" "$1" 2>/dev/null | head -1)
        if [ -n "$p" ]; then echo "$p"; return 0; fi
        sleep 0.1
    done
    echo "timed out waiting for a port in $1:" >&2
    cat "$1" >&2
    return 1
}

"$bin" mock --port 0 --chunks 6 >"$tmp/mock.out" 2>&1 &
pids+=($!)
mport=$(wait_port "$tmp/mock.out" 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p')

cat >"$tmp/config.json" <<JSON
{
  "listen": "127.0.0.1:0",
  "keys": [{"name": "sdk", "key_env": "AIR_SDK_TEST_KEY"}],
  "access_log": {"path": "$tmp/access.log", "level": "info"},
  "providers": [{"name": "mock", "kind": "openai", "base_url": "http://127.0.0.1:$mport/v1",
                 "models": [{"name": "mock-model"}]}],
  "routes": [{"model": "fast", "targets": [{"provider": "mock", "model": "mock-model"}]}]
}
JSON
AIR_SDK_TEST_KEY=sk-sdk-test-key "$bin" serve --config "$tmp/config.json" --threads 2 \
    2>"$tmp/serve.err" &
gw=$!
pids+=($gw)
gport=$(wait_port "$tmp/serve.err" 's/.*listening on .*, port \([0-9]*\).*/\1/p')

rc=0
AIROUTER_BASE_URL="http://127.0.0.1:$gport/v1" AIROUTER_KEY=sk-sdk-test-key \
    node "$work/sdk_test.mjs" || rc=$?

# SIGTERM drains and exits 0; the key never reached the log.
kill -TERM "$gw"
grc=0
wait "$gw" || grc=$?
if [ "$grc" -ne 0 ]; then
    echo "FAIL: airouter serve exited $grc after SIGTERM"
    cat "$tmp/serve.err"
    rc=1
fi
if grep -q sk-sdk-test-key "$tmp/access.log" "$tmp/serve.err"; then
    echo "FAIL: the client key appears in the log"
    rc=1
fi
exit "$rc"
