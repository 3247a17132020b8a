#!/usr/bin/env bash
# Runs every libFuzzer target in BUILD_DIR for SECONDS seconds each.
set -euo pipefail
dir=${1:-build-fuzz}
secs=${2:-20}
found=0
for f in "$dir"/fuzz_*; do
    [ -x "$f" ] || continue
    found=1
    name=$(basename "$f")
    corpus="$dir/corpus-$name"
    mkdir -p "$corpus"
    echo "fuzz: $name for ${secs}s"
    seeds=()
    seed_dir="$(dirname "$0")/../tests/fuzz/corpus/${name#fuzz_}"
    [ -d "$seed_dir" ] && seeds=("$seed_dir")
    "$f" -max_total_time="$secs" -rss_limit_mb=2048 "$corpus" "${seeds[@]}" >"$dir/$name.log" 2>&1 || {
        tail -50 "$dir/$name.log"
        echo "fuzz: $name FAILED"
        exit 1
    }
    grep -E "^Done|stat::number_of_executed_units" "$dir/$name.log" | tail -1 || true
done
[ "$found" = 1 ] || { echo "fuzz: no targets in $dir"; exit 1; }
echo "fuzz: all targets clean"
