#!/usr/bin/env bash
# Runs the end-to-end measurements recorded in bench/RESULTS.md, each
# REPEAT times, and prints the median of every figure (each run compares the
# router with its own direct-libcurl baseline measured in the same run).
#   bench/collect.sh [BUILD_DIR] [REPEAT] [DURATION_S]
set -euo pipefail
build=${1:-build}
rep=${2:-3}
dur=${3:-4}
bin="$build/airouter"
med() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
field() { python3 -c "import sys,json; d=json.loads(sys.stdin.read()); print(eval('d' + sys.argv[1]))" "$1"; }
run() { # name, then bench args
    local name=$1; shift
    local ratio=() ap50=() ap99=() rrps=() brps=() rcpu=() bcpu=()
    for _ in $(seq "$rep"); do
        out=$("$bin" bench --json --duration "$dur" --warmup 1 "$@")
        ratio+=("$(echo "$out" | field "['throughput_ratio']")")
        ap50+=("$(echo "$out" | field "['added_p50_us']")")
        ap99+=("$(echo "$out" | field "['added_p99_us']")")
        rrps+=("$(echo "$out" | field "['router']['rps']")")
        brps+=("$(echo "$out" | field "['baseline']['rps']")")
        rcpu+=("$(echo "$out" | field "['router']['cpu_us_per_request']")")
        bcpu+=("$(echo "$out" | field "['baseline']['cpu_us_per_request']")")
    done
    printf "| %s | %s | %s | %.3f | %s | %s | %s / %s |\n" "$name" \
        "$(printf '%s\n' "${rrps[@]}" | med)" "$(printf '%s\n' "${brps[@]}" | med)" \
        "$(printf '%s\n' "${ratio[@]}" | med)" "$(printf '%s\n' "${ap50[@]}" | med)" \
        "$(printf '%s\n' "${ap99[@]}" | med)" "$(printf '%s\n' "${rcpu[@]}" | med)" \
        "$(printf '%s\n' "${bcpu[@]}" | med)"
}
echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), median of $rep runs of ${dur}s"
echo "| case | router req/s | direct req/s | ratio | added p50 us | added p99 us | cpu us/req router / direct |"
echo "|---|---|---|---|---|---|---|"
run "engine closed c=32 w=1" --concurrency 32 --workers 1
run "engine closed c=32 w=2" --concurrency 32 --workers 2
run "engine open 5000/s w=1" --rate 5000 --workers 1
run "engine open 5000/s w=1 stream" --rate 5000 --workers 1 --stream
run "engine open 5000/s w=1 anthropic" --rate 5000 --workers 1 --format anthropic
run "engine open 5000/s w=1 gemini" --rate 5000 --workers 1 --format gemini
run "gateway open 5000/s" --mode gateway --rate 5000
run "gateway closed c=32" --mode gateway --concurrency 32
