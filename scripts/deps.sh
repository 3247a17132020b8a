#!/usr/bin/env bash
# Installs the Debian 12 packages airouter needs to build, test, fuzz and
# benchmark. Idempotent: runs `apt-get update` once, then installs only the
# packages that are missing. This is the single place that installs things.
set -euo pipefail

PKGS=(
    build-essential cmake pkg-config git
    libcurl4-openssl-dev libck-dev libcjson-dev libjemalloc-dev
    libmicrohttpd-dev libcmocka-dev libhiredis-dev redis-server
    clang libclang-rt-14-dev
    curl valgrind haproxy
)

missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "deps: all ${#PKGS[@]} packages present"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "deps: done"
