#!/usr/bin/env bash
# Latency of the Redis state backend against the in-process one at a fixed
# open-loop rate (`airouter bench --rate R --state-redis URL`): each run
# measures the router with in-process limits and then the same router with
# its limits shared through Redis, back to back against the same mock; the
# script repeats that RUNS times and prints each run and the medians of p50,
# p99 and throughput for both, and of the differences.
#
#   bench/state_latency.sh [BUILD_DIR] [RATE] [RUNS] [DURATION_S]
#
# Starts its own redis-server on a free 127.0.0.1 port (no persistence) and
# stops it on exit. Defaults: build, 2000 requests/s, 3 runs, 5 s measured
# (after 1 s of warm-up) per phase. The bench's limits (a client rpm, tpm and
# budget, a route budget, a deployment rpm and tpm) are far above the load,
# so this measures what admission costs on the hot path, not refusals.
set -euo pipefail
build=${1:-build}
rate=${2:-2000}
runs=${3:-3}
dur=${4:-5}
bin="$build/airouter"
[ -x "$bin" ] || { echo "state_latency: $bin not built" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "state_latency: redis-server not found" >&2; exit 1; }

dir=$(mktemp -d /tmp/air-bench-redis-XXXXXX)
pid=""
cleanup() {
    [ -z "$pid" ] || { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; }
    rm -rf "$dir"
}
trap cleanup EXIT
port=""
for _ in 1 2 3 4 5 6 7 8; do
    p=$(( 20000 + RANDOM % 30000 ))
    redis-server --port "$p" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
        --protected-mode no --loglevel warning >"$dir/log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$p" && printf 'PING\r\n' >&3 && read -r -t 1 l <&3 &&
            [ "${l%$'\r'}" = "+PONG" ]) 2>/dev/null; then
            port=$p
            break
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    [ -z "$port" ] || break
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=""
done
[ -n "$port" ] || { echo "state_latency: could not start redis-server" >&2; exit 1; }

cpu_ticks() { # utime + stime of the redis-server, in clock ticks
    awk '{print $14 + $15}' "/proc/$pid/stat"
}
evalsha_calls() { # EVALSHA calls so far, from INFO commandstats
    local line
    exec 3<>"/dev/tcp/127.0.0.1/$port"
    printf 'INFO commandstats\r\n' >&3
    while read -r -t 1 line <&3; do
        case $line in cmdstat_evalsha:calls=*)
            line=${line#cmdstat_evalsha:calls=}
            echo "${line%%,*}"
            exec 3<&-
            return ;;
        esac
    done
    exec 3<&-
    echo 0
}
field() { # json phase field
    echo "$1" | sed -E "s/.*\"$2\":\{[^}]*\"$3\":([0-9.]+).*/\1/"
}
median() { # values...
    printf '%s\n' "$@" | sort -g |
        awk '{v[NR]=$1} END {m=int((NR+1)/2); print (NR%2) ? v[m] : (v[m]+v[m+1])/2}'
}

model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
rver=$(redis-server --version | sed -E 's/.*v=([^ ]+).*/\1/')
echo "# state_latency: $(date -u +%Y-%m-%dT%H:%MZ) cores=$(nproc) model=\"$model\"" \
    "rate=$rate/s duration=${dur}s runs=$runs redis=$rver"
echo "# command: $bin bench --rate $rate --duration $dur --warmup 1 --json" \
    "--state-redis redis://127.0.0.1:$port/0"
printf "%-4s %10s %10s %10s %10s %10s %10s %8s %8s\n" run local_p50 redis_p50 local_p99 redis_p99 \
    local_rps redis_rps d_p50 d_p99
lp50=() rp50=() lp99=() rp99=() lrps=() rrps=() dp50=() dp99=()
hz=$(getconf CLK_TCK)
for i in $(seq "$runs"); do
    t0=$(cpu_ticks) e0=$(evalsha_calls) s0=$(date +%s.%N)
    out=$("$bin" bench --rate "$rate" --duration "$dur" --warmup 1 --json \
        --state-redis "redis://127.0.0.1:$port/0")
    a=$(field "$out" router p50_us) b=$(field "$out" router_redis p50_us)
    c=$(field "$out" router p99_us) d=$(field "$out" router_redis p99_us)
    e=$(field "$out" router rps) f=$(field "$out" router_redis rps)
    er=$(field "$out" router errors) fr=$(field "$out" router_redis errors)
    [ "$er" = 0 ] && [ "$fr" = 0 ] || echo "# run $i: errors local $er, redis $fr" >&2
    lp50+=("$a") rp50+=("$b") lp99+=("$c") rp99+=("$d") lrps+=("$e") rrps+=("$f")
    dp50+=($(( b - a ))) dp99+=($(( d - c )))
    printf "%-4s %10s %10s %10s %10s %10s %10s %+8d %+8d\n" "$i" "$a" "$b" "$c" "$d" "$e" "$f" \
        $(( b - a )) $(( d - c ))
    t1=$(cpu_ticks) e1=$(evalsha_calls) s1=$(date +%s.%N)
    cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$hz" 'BEGIN {printf "%.2f", (b - a) / hz}')
    wall=$(awk -v a="$s0" -v b="$s1" 'BEGIN {printf "%.1f", b - a}')
    echo "#   run $i: redis-server used $cpu s of CPU and served $(( e1 - e0 )) EVALSHA in" \
        "$wall s (the redis phase is about $(( dur + 1 )) s of it)"
done
printf "%-4s %10s %10s %10s %10s %10s %10s %+8.0f %+8.0f\n" median "$(median "${lp50[@]}")" \
    "$(median "${rp50[@]}")" "$(median "${lp99[@]}")" "$(median "${rp99[@]}")" \
    "$(median "${lrps[@]}")" "$(median "${rrps[@]}")" "$(median "${dp50[@]}")" \
    "$(median "${dp99[@]}")"
echo "# latencies in us from the intended send time (open loop); d_ = redis - local"
