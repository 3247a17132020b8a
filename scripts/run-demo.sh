#!/usr/bin/env bash
# The main job of `make run`: starts two built-in mock providers on
# 127.0.0.1 (one failing, one healthy), then sends one plain and one streamed
# request through the router with `airouter chat`. The failing provider makes
# the router fail over, which the summary line shows (attempts=2).
set -euo pipefail
bin=${1:-build/airouter}
cfg=examples/mock-demo.json
"$bin" mock --port 18081 --fail-rate 1 --fail-status 503 >/dev/null &
p1=$!
"$bin" mock --port 18082 --latency-ms 20 --chunks 6 --chunk-delay-ms 40 >/dev/null &
p2=$!
trap 'kill $p1 $p2 2>/dev/null; wait $p1 $p2 2>/dev/null || true' EXIT
for port in 18081 18082; do
    for _ in $(seq 50); do
        curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
        sleep 0.1
    done
done
echo "== plain request (model 'demo': flaky -> steady) =="
"$bin" chat --config "$cfg" --model demo 'Say hello to the router.'
echo
echo "== streamed request =="
"$bin" chat --config "$cfg" --model demo --stream 'Stream a short answer.'
