#!/usr/bin/env bash
# The main job of `make run`: starts the gateway over built-in mock
# providers (`airouter serve --demo`: fast and expensive, slow and cheap,
# flaky), sends example requests through it with curl (plain and streamed),
# shows the routing decision and a few metrics, then keeps serving until
# Ctrl-C. Set DEMO_EXIT=1 to stop after the examples.
set -euo pipefail
bin=${1:-build/airouter}
port=${DEMO_PORT:-8080}
base="http://127.0.0.1:$port"
log=${DEMO_LOG:-/tmp/airouter-demo.log}
"$bin" serve --demo --listen "127.0.0.1:$port" 2>"$log" &
gw=$!
trap 'kill $gw 2>/dev/null; wait $gw 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    curl -fsS "$base/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fsS "$base/healthz" >/dev/null || { echo "demo: gateway did not start" >&2; cat "$log" >&2; exit 1; }
head -5 "$log"

echo
echo "== POST $base/v1/chat/completions (model 'demo', routed by the score strategy)"
curl -sS -D /tmp/airouter-demo-headers.txt "$base/v1/chat/completions" \
    -H 'Content-Type: application/json' \
    -d '{"model":"demo","messages":[{"role":"user","content":"Say hello to the router."}]}'
echo
grep -i '^x-airouter\|^x-request-id' /tmp/airouter-demo-headers.txt || true

echo
echo "== the same, streamed (server-sent events)"
curl -sS -N "$base/v1/chat/completions" -H 'Content-Type: application/json' \
    -d '{"model":"demo","stream":true,"messages":[{"role":"user","content":"Stream please."}]}'

echo
echo "== the library directly: airouter chat (engine in this process -> the gateway as its provider)"
cfg=$(mktemp /tmp/airouter-demo-XXXX.json)
cat >"$cfg" <<JSON
{"providers": [{"name": "gateway", "kind": "openai", "base_url": "$base/v1"}],
 "routes": [{"model": "demo", "targets": [{"provider": "gateway", "model": "demo"}]}]}
JSON
"$bin" chat --config "$cfg" --model demo --stream 'Hello from the library.'
rm -f "$cfg"

echo
echo "== 20 more requests, then what the router learnt"
for _ in $(seq 20); do
    curl -sS -o /dev/null "$base/v1/chat/completions" -H 'Content-Type: application/json' \
        -d '{"model":"demo","messages":[{"role":"user","content":"hi"}]}'
done
curl -sS "$base/metrics" | grep -E '^airouter_requests_total|^airouter_deployment_health_state' | head -12
echo
echo "Gateway: $base   (OpenAI base URL: $base/v1)"
echo "Metrics: $base/metrics"
echo "Log:     $log (startup messages and one JSON access-log line per request)"
echo "Try:     curl $base/v1/chat/completions -H 'Content-Type: application/json' \\"
echo "           -d '{\"model\":\"demo\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}'"
if [ "${DEMO_EXIT:-0}" = 1 ]; then
    exit 0
fi
echo "Serving until Ctrl-C."
wait $gw
