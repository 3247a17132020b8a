#!/usr/bin/env bash
# Engine throughput with 1, 2, 4, 8, 16 workers against a built-in mock that
# is not the bottleneck (several event-loop threads, zero latency), closed
# loop. Prints one line per worker count and the speed-up over 1 worker.
#
#   bench/scaling.sh [BUILD_DIR] [DURATION_S] [WORKER_COUNTS...]
#
# On a 2-core machine the curve flattens at once (the mock and the load
# generator share the cores); run it on a many-core machine for a real curve.
set -euo pipefail
build=${1:-build}
dur=${2:-5}
shift 2 2>/dev/null || shift $# || true
counts=("$@")
[ "${#counts[@]}" -gt 0 ] || counts=(1 2 4 8 16)
bin="$build/airouter"
[ -x "$bin" ] || { echo "scaling: $bin not built" >&2; exit 1; }
cores=$(nproc)
mock_threads=$(( cores / 4 > 1 ? cores / 4 : 1 ))
echo "# scaling: $(date -u +%Y-%m-%dT%H:%MZ) cores=$cores model=\"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')\" mock_threads=$mock_threads duration=${dur}s"
printf "%-8s %12s %10s %10s %8s\n" workers rps p50_us p99_us speedup
base=""
for w in "${counts[@]}"; do
    conc=$(( w * 64 ))
    out=$("$bin" bench --no-baseline --json --workers "$w" --concurrency "$conc" \
        --duration "$dur" --warmup 1 --mock-threads "$mock_threads")
    rps=$(echo "$out" | sed -E 's/.*"router":\{[^}]*"rps":([0-9.]+).*/\1/')
    p50=$(echo "$out" | sed -E 's/.*"router":\{[^}]*"p50_us":([0-9]+).*/\1/')
    p99=$(echo "$out" | sed -E 's/.*"router":\{[^}]*"p99_us":([0-9]+).*/\1/')
    [ -n "$base" ] || base=$rps
    sp=$(awk -v a="$rps" -v b="$base" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
    printf "%-8s %12s %10s %10s %8s\n" "$w" "$rps" "$p50" "$p99" "${sp}x"
done
