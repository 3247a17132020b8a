#!/usr/bin/env bash
# run.sh AIROUTER - ctest gateway/cli_lifecycle: the `airouter` program as an
# operator runs it, as real processes on 127.0.0.1 ports the kernel picks.
# Needs bash and curl, not node.
#
#   airouter mock   --latency-ms, --fail-rate/--fail-status, --format anthropic
#                   with --api-key-env, --record (keys masked); bad values exit 2;
#                   SIGINT prints the counters and exits 0
#   airouter serve  --config: requests with curl (OpenAI and Anthropic upstreams,
#                   a 400 naming the field); SIGHUP with a changed file adds a
#                   model; SIGHUP with a broken file keeps the running config;
#                   SIGTERM while a slow request is in flight lets it finish and
#                   exits 0; SIGINT exits 0. --demo answers and exits 0 on SIGINT
#   airouter chat   a request through the mock; exit 1 with the error when the
#                   provider fails or is down; exit 2 on a bad request
#
# Every wait is bounded. Exits 77 (ctest SKIP_RETURN_CODE) when curl is absent.
set -euo pipefail
bin=$1

if ! command -v curl >/dev/null 2>&1; then
    echo "SKIP: curl is needed for the CLI lifecycle test"
    exit 77
fi

tmp=$(mktemp -d)
pids=()
cleanup()
{
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

die()
{
    echo "FAIL: $*"
    for f in "$tmp"/*.err "$tmp"/*.out; do
        [ -f "$f" ] || continue
        echo "--- $f"
        tail -n 20 "$f"
    done
    exit 1
}
ok() { echo "ok: $*"; }

# $1 file, $2 sed expression printing the port; waits up to 10 s.
wait_port()
{
    local p
    for _ in $(seq 100); do
        p=$(sed -n "$2" "$1" 2>/dev/null | head -1)
        if [ -n "$p" ]; then
            echo "$p"
            return 0
        fi
        sleep 0.1
    done
    echo "timed out waiting for a port in $1" >&2
    return 1
}

# Wait up to $2 seconds for process $1 (a child) to exit; sets rc to its
# status (or 124 when it is still running, after which it is killed).
wait_exit()
{
    local i
    for i in $(seq $(($2 * 10))); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$1" 2>/dev/null; then
        kill -KILL "$1" 2>/dev/null || true
        wait "$1" 2>/dev/null || true
        rc=124
        return
    fi
    rc=0
    wait "$1" || rc=$?
}

# Wait up to $3 seconds for file $1 to contain the fixed string $2.
wait_text()
{
    for _ in $(seq $(($3 * 10))); do
        if grep -qF -- "$2" "$1" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

mock_re='s/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p'
serve_re='s/.*listening on .*, port \([0-9]*\).*/\1/p'

# start_mock NAME ARGS...: sets MPID and MPORT.
start_mock()
{
    local name=$1
    shift
    "$bin" mock --port 0 "$@" >"$tmp/$name.out" 2>&1 &
    MPID=$!
    pids+=("$MPID")
    MPORT=$(wait_port "$tmp/$name.out" "$mock_re") || die "mock $name did not start"
}

# start_serve NAME ARGS...: sets SPID and SPORT.
start_serve()
{
    local name=$1
    shift
    "$bin" serve "$@" 2>"$tmp/$name.err" &
    SPID=$!
    pids+=("$SPID")
    SPORT=$(wait_port "$tmp/$name.err" "$serve_re") || die "serve $name did not start"
}

# chat PORT MODEL [BODY]: POST a chat request; prints the HTTP status; the
# body and headers land in $tmp/body and $tmp/hdrs.
chat()
{
    local body=${3:-"{\"model\":\"$2\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"}
    curl -sS --max-time 15 -o "$tmp/body" -D "$tmp/hdrs" -w '%{http_code}' \
        -H 'content-type: application/json' -d "$body" \
        "http://127.0.0.1:$1/v1/chat/completions" || echo 000
}

models() { curl -sS --max-time 10 "http://127.0.0.1:$1/v1/models" || true; }

ANTH_KEY=sk-ant-cli-test-secret-4711
export AIR_CLI_ANTH_KEY=$ANTH_KEY

# ------------------------------------------------------------ airouter mock

for bad in "--fail-rate 2" "--format xml" "--latency-ms -5" "--fail-status 200" "--nope 1"; do
    # shellcheck disable=SC2086
    set +e
    "$bin" mock --port 0 $bad >"$tmp/badflag.out" 2>&1
    brc=$?
    set -e
    [ "$brc" -eq 2 ] || die "airouter mock $bad exited $brc, want 2"
    grep -qF -- "${bad%% *}" "$tmp/badflag.out" || die "airouter mock $bad: no message naming the option"
done
ok "airouter mock refuses bad flag values with exit 2 and names the option"

start_mock a --chunks 4 --record "$tmp/a.rec"
A_PID=$MPID A=$MPORT
start_mock slow --latency-ms 1500
S_PID=$MPID S=$MPORT
start_mock fail --fail-rate 1 --fail-status 503
F=$MPORT
start_mock anth --format anthropic --api-key-env AIR_CLI_ANTH_KEY --record "$tmp/n.rec"
N=$MPORT

body='{"model":"x","messages":[{"role":"user","content":"hi"}]}'
t=$(curl -sS --max-time 10 -o /dev/null -w '%{time_total}' -H 'content-type: application/json' \
    -d "$body" "http://127.0.0.1:$S/v1/chat/completions")
awk -v t="$t" 'BEGIN { exit !(t >= 1.4) }' || die "--latency-ms 1500: answered in $t s"
ok "--latency-ms delays the answer ($t s)"
code=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -H 'content-type: application/json' \
    -d "$body" "http://127.0.0.1:$F/v1/chat/completions")
[ "$code" = 503 ] || die "--fail-rate 1 --fail-status 503: got $code"
ok "--fail-rate 1 --fail-status 503 fails every request"
code=$(curl -sS --max-time 10 -o "$tmp/nbody" -w '%{http_code}' -H "x-api-key: $ANTH_KEY" \
    -H 'anthropic-version: 2023-06-01' -H 'content-type: application/json' \
    -d '{"model":"c","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}' \
    "http://127.0.0.1:$N/v1/messages")
[ "$code" = 200 ] && grep -q '"type":"message"' "$tmp/nbody" || die "--format anthropic: $code $(cat "$tmp/nbody")"
code=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -H 'content-type: application/json' \
    -d '{"model":"c","max_tokens":16,"messages":[]}' "http://127.0.0.1:$N/v1/messages")
[ "$code" = 401 ] || die "--api-key-env: a request without the key got $code"
ok "--format anthropic serves /v1/messages and --api-key-env wants x-api-key"

# --------------------------------------------------- airouter serve --config

write_cfg() # FILE EXTRA_ROUTES
{
    cat >"$1.new" <<JSON
{
  "listen": "127.0.0.1:0",
  "access_log": {"path": "$tmp/access.log", "level": "info"},
  "retry": {"max_attempts": 1},
  "providers": [
    {"name": "a", "kind": "openai", "base_url": "http://127.0.0.1:$A/v1",
     "models": [{"name": "up-a"}]},
    {"name": "slow", "kind": "openai", "base_url": "http://127.0.0.1:$S/v1"},
    {"name": "anth", "kind": "anthropic", "base_url": "http://127.0.0.1:$N",
     "api_key_env": "AIR_CLI_ANTH_KEY"}
  ],
  "routes": [$2
    {"model": "m", "targets": [{"provider": "a", "model": "up-a"}]},
    {"model": "slow", "targets": [{"provider": "slow", "model": "up-s"}]},
    {"model": "claude", "targets": [{"provider": "anth", "model": "claude-x"}]}
  ]
}
JSON
    mv "$1.new" "$1"
}
cfg=$tmp/router.json
write_cfg "$cfg" ""

start_serve serve1 --config "$cfg" --threads 2 --drain-ms 8000
G=$SPORT G_PID=$SPID
grep -q "UNAUTHENTICATED" "$tmp/serve1.err" || die "no warning about running without keys"

code=$(chat "$G" m)
[ "$code" = 200 ] || die "chat m: $code $(cat "$tmp/body")"
grep -q '"chat.completion"' "$tmp/body" || die "chat m: not a chat.completion: $(cat "$tmp/body")"
grep -qi '^x-airouter-provider: a' "$tmp/hdrs" || die "chat m: x-airouter-provider missing"
grep -qi '^x-request-id: air-' "$tmp/hdrs" || die "chat m: x-request-id missing"
code=$(chat "$G" claude)
[ "$code" = 200 ] || die "chat claude (anthropic upstream): $code $(cat "$tmp/body")"
grep -q 'tok0' "$tmp/body" || die "chat claude: no content: $(cat "$tmp/body")"
code=$(chat "$G" m '{"model":"m","messages":[{"role":"user","content":7}]}')
[ "$code" = 400 ] && grep -qF '"param":"messages[0].content"' "$tmp/body" ||
    die "a wrong content type: $code $(cat "$tmp/body")"
ok "serve answers through OpenAI and Anthropic upstreams and names a wrong field"
grep -q '"path":"/v1/chat/completions"' "$tmp/a.rec" || die "--record wrote nothing for mock a"
grep -q '"path":"/v1/messages"' "$tmp/n.rec" || die "--record wrote nothing for mock anth"
if grep -qF "$ANTH_KEY" "$tmp/n.rec" "$tmp/access.log" "$tmp/serve1.err"; then
    die "the upstream key appears in a record or a log"
fi
ok "--record logs every request with the key masked"

# SIGHUP with a changed file: the new model appears.
models "$G" | grep -q '"id":"m2"' && die "m2 listed before the reload"
write_cfg "$cfg" '{"model": "m2", "targets": [{"provider": "a", "model": "up-a"}]},'
kill -HUP "$G_PID"
wait_text "$tmp/serve1.err" "configuration reloaded" 10 || die "SIGHUP: no reload message"
models "$G" | grep -q '"id":"m2"' || die "SIGHUP: m2 not listed after the reload"
code=$(chat "$G" m2)
[ "$code" = 200 ] || die "chat m2 after SIGHUP: $code"
ok "SIGHUP re-reads the file: a new model is served"

# SIGHUP with a broken file: the error is printed, the old config stays.
printf '{"listen": "127.0.0.1:0", "providers": [' >"$cfg"
kill -HUP "$G_PID"
wait_text "$tmp/serve1.err" "reload failed" 10 || die "SIGHUP with a broken file: no error"
grep -q "reload failed.*line" "$tmp/serve1.err" || die "the reload error does not give the position"
models "$G" | grep -q '"id":"m2"' || die "the running config was lost after a bad reload"
code=$(chat "$G" m2)
[ "$code" = 200 ] || die "chat m2 after a bad reload: $code"
ok "SIGHUP with a broken file keeps the running configuration"

# SIGTERM while a slow request is in flight: it completes, then exit 0.
curl -sS --max-time 20 -o "$tmp/slow.body" -w '%{http_code}' -H 'content-type: application/json' \
    -d '{"model":"slow","messages":[{"role":"user","content":"hi"}]}' \
    "http://127.0.0.1:$G/v1/chat/completions" >"$tmp/slow.code" 2>"$tmp/slow.curl.err" &
slow_curl=$!
pids+=("$slow_curl")
inflight=0
for _ in $(seq 50); do
    # The scrape itself is one of the requests in flight.
    inflight=$(curl -sS --max-time 5 "http://127.0.0.1:$G/metrics" |
        sed -n 's/^airouter_in_flight_requests \([0-9]*\)$/\1/p')
    [ "${inflight:-0}" -ge 2 ] && break
    sleep 0.1
done
[ "${inflight:-0}" -ge 2 ] || die "the slow request never reached the gateway"
t0=$(date +%s%N)
kill -TERM "$G_PID"
wait_exit "$G_PID" 20
[ "$rc" -eq 0 ] || die "serve exited $rc after SIGTERM"
wait "$slow_curl" || true
[ "$(cat "$tmp/slow.code")" = 200 ] || die "the request in flight at SIGTERM got $(cat "$tmp/slow.code")"
grep -q '"chat.completion"' "$tmp/slow.body" || die "the drained request has no body"
grep -q "SIGTERM: draining" "$tmp/serve1.err" || die "no draining message"
grep -q "stopped" "$tmp/serve1.err" || die "no stop message"
ms=$((($(date +%s%N) - t0) / 1000000))
ok "SIGTERM drains the request in flight (${ms} ms) and exits 0"
code=$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$G/healthz" || true)
[ "$code" = 000 ] || die "still answering after exit: $code"

# SIGINT: exit 0. This one runs with --log-level error over the config's
# "info": only the failed request reaches the access log.
write_cfg "$cfg" ""
n0=$(wc -l <"$tmp/access.log")
start_serve serve2 --config "$cfg" --threads 1 --http-mode pool --log-level error
code=$(chat "$SPORT" m)
[ "$code" = 200 ] || die "second serve: chat m got $code"
code=$(chat "$SPORT" no-such-model)
[ "$code" = 404 ] || die "second serve: chat no-such-model got $code"
kill -INT "$SPID"
wait_exit "$SPID" 15
[ "$rc" -eq 0 ] || die "serve exited $rc after SIGINT"
grep -q "SIGINT: draining" "$tmp/serve2.err" || die "no SIGINT message"
ok "SIGINT stops serve with exit 0"
n1=$(wc -l <"$tmp/access.log")
[ $((n1 - n0)) -eq 1 ] || die "--log-level error: $((n1 - n0)) access log lines, want 1"
tail -n 1 "$tmp/access.log" | grep -q '"status":404' || die "--log-level error: not the 404 line"
grep -q "libmicrohttpd" "$tmp/serve2.err" || grep -q "a pool of their own" "$tmp/serve2.err" ||
    die "--http-mode pool: not in the start-up line"
ok "--log-level error logs only failures; --http-mode pool starts"

# A bad command line or config: exit 2 with a message.
set +e
"$bin" serve --config "$tmp/nonexistent.json" 2>"$tmp/bad1.err"
brc1=$?
printf '{"listen":"127.0.0.1:0","max_connections":"many","providers":[]}' >"$tmp/bad.json"
"$bin" serve --config "$tmp/bad.json" 2>"$tmp/bad2.err"
brc2=$?
"$bin" serve --threads 2 2>"$tmp/bad3.err"
brc3=$?
"$bin" serve --config "$cfg" --log-level loud 2>"$tmp/bad4.err"
brc4=$?
"$bin" serve --config "$cfg" --http-mode threads 2>"$tmp/bad5.err"
brc5=$?
set -e
[ "$brc1" -eq 2 ] && grep -q "cannot open" "$tmp/bad1.err" || die "missing config: exit $brc1"
[ "$brc2" -eq 2 ] && grep -q "max_connections" "$tmp/bad2.err" || die "bad config: exit $brc2"
[ "$brc3" -eq 2 ] || die "no --config: exit $brc3"
[ "$brc4" -eq 2 ] && grep -q -- "--log-level" "$tmp/bad4.err" || die "bad --log-level: exit $brc4"
[ "$brc5" -eq 2 ] && grep -q -- "--http-mode" "$tmp/bad5.err" || die "bad --http-mode: exit $brc5"
ok "serve exits 2 on a bad command line or configuration"

# ------------------------------------------------------ airouter serve --demo

start_serve demo --demo --listen 127.0.0.1:0 --threads 2
D=$SPORT D_PID=$SPID
grep -q "curl -s http://127.0.0.1:$D/v1/chat/completions" "$tmp/demo.err" || die "--demo: no curl example"
grep -q "Metrics: http://127.0.0.1:$D/metrics" "$tmp/demo.err" || die "--demo: no /metrics URL"
code=$(chat "$D" demo)
[ "$code" = 200 ] || die "--demo: chat demo got $code $(cat "$tmp/body")"
grep -qiE '^x-airouter-provider: (fast|cheap|flaky)' "$tmp/hdrs" || die "--demo: no demo provider"
# The request is counted as its connection finishes, just after the client
# has the response: poll (a file, not a pipe: grep -q would cut curl off).
counted=0
for _ in $(seq 50); do
    curl -sS --max-time 5 -o "$tmp/metrics.txt" "http://127.0.0.1:$D/metrics" || true
    if grep -q '^airouter_requests_total{.*status="200"} [1-9]' "$tmp/metrics.txt"; then
        counted=1
        break
    fi
    sleep 0.1
done
[ "$counted" = 1 ] || die "--demo: /metrics does not count the request"
kill -HUP "$D_PID"
wait_text "$tmp/demo.err" "nothing to reload" 10 || die "--demo: SIGHUP message missing"
kill -INT "$D_PID"
wait_exit "$D_PID" 15
[ "$rc" -eq 0 ] || die "--demo exited $rc after SIGINT"
ok "serve --demo answers, counts, and exits 0 on SIGINT"

# ----------------------------------------------------------- airouter chat

chat_cfg() # FILE PORT
{
    cat >"$1" <<JSON
{"retry": {"max_attempts": 1},
 "providers": [{"name": "a", "kind": "openai", "base_url": "http://127.0.0.1:$2/v1"}],
 "routes": [{"model": "m", "targets": [{"provider": "a", "model": "up-a"}]}]}
JSON
}
chat_cfg "$tmp/chat-ok.json" "$A"
set +e
timeout 30 "$bin" chat --config "$tmp/chat-ok.json" --model m --deadline-ms 10000 \
    "hello there" >"$tmp/chat1.out" 2>"$tmp/chat1.err"
crc=$?
set -e
[ "$crc" -eq 0 ] || die "airouter chat exited $crc"
grep -q '"chat.completion"' "$tmp/chat1.out" || die "airouter chat: no response JSON"
grep -q '\[provider=a model=' "$tmp/chat1.err" || die "airouter chat: no summary line"
set +e
timeout 30 "$bin" chat --config "$tmp/chat-ok.json" --model m --stream --quiet \
    "hello there" >"$tmp/chat2.out" 2>"$tmp/chat2.err"
crc=$?
set -e
[ "$crc" -eq 0 ] && grep -q 'tok0 tok1' "$tmp/chat2.out" || die "airouter chat --stream: exit $crc"
ok "airouter chat prints the answer (plain and streamed)"

chat_cfg "$tmp/chat-fail.json" "$F"
set +e
timeout 30 "$bin" chat --config "$tmp/chat-fail.json" --model m --deadline-ms 10000 "hi" \
    >"$tmp/chat3.out" 2>"$tmp/chat3.err"
crc=$?
set -e
[ "$crc" -eq 1 ] || die "airouter chat against a failing provider exited $crc"
grep -q "airouter chat: error (.*HTTP 503" "$tmp/chat3.err" || die "no error message: $(cat "$tmp/chat3.err")"

# A provider that is down: a port with no listener (the slow mock, stopped).
kill -INT "$S_PID"
wait_exit "$S_PID" 10
[ "$rc" -eq 0 ] || die "airouter mock exited $rc after SIGINT"
grep -q "SIGINT: connections=.* requests=" "$tmp/slow.out" || die "mock: no counters at exit"
chat_cfg "$tmp/chat-down.json" "$S"
set +e
timeout 30 "$bin" chat --config "$tmp/chat-down.json" --model m --deadline-ms 10000 "hi" \
    >"$tmp/chat4.out" 2>"$tmp/chat4.err"
crc=$?
set -e
[ "$crc" -eq 1 ] || die "airouter chat against a stopped provider exited $crc"
grep -q "airouter chat: error (" "$tmp/chat4.err" || die "no error message: $(cat "$tmp/chat4.err")"
ok "airouter chat exits 1 with the error when the provider fails or is down"

printf '{"model":"m","messages":[{"role":"user"}]}' >"$tmp/nocontent.json"
set +e
timeout 30 "$bin" chat --config "$tmp/chat-ok.json" --body "$tmp/nocontent.json" \
    >"$tmp/chat5.out" 2>"$tmp/chat5.err"
crc=$?
set -e
[ "$crc" -eq 2 ] && grep -q "messages\[0\].content" "$tmp/chat5.err" ||
    die "a bad body: exit $crc, $(cat "$tmp/chat5.err")"
ok "airouter chat exits 2 and names the field of a bad request"

kill -INT "$A_PID"
wait_exit "$A_PID" 10
[ "$rc" -eq 0 ] || die "airouter mock a exited $rc after SIGINT"
echo "PASS"
