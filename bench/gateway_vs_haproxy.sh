#!/usr/bin/env bash
# Gateway throughput next to a plain HAProxy reverse proxy in front of the
# same mock, each measured against the direct-libcurl baseline in its own run:
#   1. airouter mock on 127.0.0.1:18100 (separate process)
#   2. haproxy (bench/haproxy.cfg) on 127.0.0.1:18101 -> the mock
#   3. airouter bench --mode gateway  (clients -> airouter serve -> mock), with
#      HTTP on the engine's workers (the default) and with libmicrohttpd's
#      own thread pool (--http-mode pool)
#   4. airouter bench --mode proxy    (clients -> haproxy -> mock)
# Needs haproxy (scripts/deps.sh installs it).
set -euo pipefail
bin=${1:-build/airouter}
dur=${2:-5}
conc=${3:-64}
command -v haproxy >/dev/null || { echo "haproxy is not installed (scripts/deps.sh)" >&2; exit 1; }
"$bin" mock --port 18100 >/dev/null 2>&1 &
mp=$!
haproxy -f "$(dirname "$0")/haproxy.cfg" -db >/dev/null 2>&1 &
hp=$!
trap 'kill $mp $hp 2>/dev/null; wait $mp $hp 2>/dev/null || true' EXIT
for port in 18100 18101; do
    for _ in $(seq 50); do
        curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
        sleep 0.1
    done
done
up=http://127.0.0.1:18100/v1
echo "# $(date -u +%Y-%m-%dT%H:%MZ) cores=$(nproc) concurrency=$conc duration=${dur}s"
echo "## gateway"
"$bin" bench --mode gateway --upstream "$up" --concurrency "$conc" --duration "$dur" --warmup 1 --json
echo "## gateway-pool"
"$bin" bench --mode gateway --http-mode pool --upstream "$up" --concurrency "$conc" \
    --duration "$dur" --warmup 1 --json
echo "## haproxy"
"$bin" bench --mode proxy --proxy-url http://127.0.0.1:18101/v1/chat/completions \
    --upstream "$up" --concurrency "$conc" --duration "$dur" --warmup 1 --json
