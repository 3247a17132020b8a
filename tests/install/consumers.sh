#!/usr/bin/env bash
# consumers.sh SRC_DIR BUILD_DIR - install the built library into a fresh
# prefix and build a tiny host against the INSTALLED copy only, two ways:
#
#   (a) cc host.c $(pkg-config --cflags --libs airouter)
#   (b) a CMake project using find_package(airouter) and airouter::airouter
#
# then run both hosts (tests/install/consumer/host.c makes a router, checks
# the version, strerror, builds and frees a request, and checks a bad config
# is refused with AIR_E_CONFIG). Also checks what the install lays down: the
# headers, the libraries, the package files, that airouter.pc names the
# prefix it was installed to (`cmake --install --prefix` relocation), and
# that the shared library exports exactly the AIR_API functions of
# airouter.h (none missing, no internal air__ symbol).
#
# Builds with a sanitizer (AIR_SANITIZE) or libFuzzer instrumentation in
# BUILD_DIR compile the hosts with the same -fsanitize flags, so the
# instrumented library can be loaded.
#
# Prints one line per check and a final PASS/FAIL line (CTest:
# install/consumers). The temporary prefix is always removed.
set -u

if [ $# -ne 2 ] || [ ! -f "$1/include/airouter.h" ] || [ ! -f "$2/CMakeCache.txt" ]; then
    echo "usage: $0 SRC_DIR BUILD_DIR   (a configured and built airouter build dir)" >&2
    exit 2
fi
src=$(cd "$1" && pwd)
bld=$(cd "$2" && pwd)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/air-consumers.XXXXXX") || exit 2
trap 'rm -rf "$tmp"' EXIT
prefix="$tmp/prefix"

fails=0
checks=0
pass()
{
    checks=$((checks + 1))
    echo "ok   - $1"
}
fail()
{
    checks=$((checks + 1))
    fails=$((fails + 1))
    echo "FAIL - $1"
}
# Print a log file indented, for a failed step.
show()
{
    sed 's/^/       | /' "$1" | tail -n 60
}
finish()
{
    if [ "$fails" -ne 0 ]; then
        echo "FAIL: install/consumers: $fails of $checks checks failed"
        exit 1
    fi
    echo "PASS: install/consumers: $checks checks"
    exit 0
}

cache_get()
{
    sed -n "s/^$1:[A-Z]*=//p" "$bld/CMakeCache.txt" | head -n 1
}

# ------------------------------------------------------------------ install
log="$tmp/install.log"
if cmake --install "$bld" --prefix "$prefix" >"$log" 2>&1; then
    pass "cmake --install into a fresh prefix"
else
    # A target the install needs was not built (the `airouter` program is
    # optional in a test-only build): build the libraries, and the program
    # if this build dir has one, then try again.
    echo "note: first install failed; building the install targets and retrying"
    cmake --build "$bld" --target airouter_shared airouter_static >"$tmp/build.log" 2>&1 ||
        { show "$tmp/build.log"; }
    if [ "$(cache_get AIR_BUILD_TOOLS)" = ON ]; then
        cmake --build "$bld" --target airouter >>"$tmp/build.log" 2>&1 || show "$tmp/build.log"
    fi
    rm -rf "$prefix"
    if cmake --install "$bld" --prefix "$prefix" >"$log" 2>&1; then
        pass "cmake --install into a fresh prefix (after building the install targets)"
    else
        fail "cmake --install $bld --prefix $prefix"
        show "$log"
        finish
    fi
fi

# GNUInstallDirs may pick lib, lib64 or lib/<multiarch>: find what was laid down.
pc=$(find "$prefix" -name airouter.pc -path '*/pkgconfig/*' | head -n 1)
cfg=$(find "$prefix" -name airouterConfig.cmake | head -n 1)
so=$(find "$prefix" -name 'libairouter.so' | head -n 1)
# have WHAT PATH: PATH (relative to the prefix) was found.
have()
{
    if [ -n "$2" ]; then
        pass "$1 installed (${2#"$prefix"/})"
    else
        fail "$1 installed"
    fi
}
have airouter.pc "$pc"
have airouterConfig.cmake "$cfg"
have libairouter.so "$so"
if [ -n "$(find "$prefix" -name 'libairouter.a' | head -n 1)" ]; then
    pass "libairouter.a installed"
else
    fail "libairouter.a installed"
fi
for h in airouter.h airouter/export.h airouter/provider.h; do
    if [ -f "$prefix/include/$h" ]; then
        pass "include/$h installed"
    else
        fail "include/$h installed"
    fi
done
if [ -z "$pc" ] || [ -z "$cfg" ] || [ -z "$so" ]; then
    finish
fi
libdir=$(dirname "$so")

# ------------------------------------------------------------------ exported symbols
# Every AIR_API function of airouter.h is exported, and nothing else.
declared="$tmp/declared"
exported="$tmp/exported"
tr '\n' ' ' <"$prefix/include/airouter.h" | grep -o 'AIR_API[^;(]*(' |
    sed 's/($//; s/.*[^A-Za-z0-9_]//' | sort -u >"$declared"
nm -D --defined-only "$so" | awk '$2 ~ /^[TtWi]$/ {print $3}' | sed 's/@.*//' |
    sort -u >"$exported"
missing=$(comm -23 "$declared" "$exported")
extra=$(comm -13 "$declared" "$exported")
if [ ! -s "$declared" ]; then
    fail "found no AIR_API declarations in airouter.h (parser broken?)"
elif [ -z "$missing" ]; then
    pass "all $(wc -l <"$declared") AIR_API functions of airouter.h are exported"
else
    fail "AIR_API functions not exported by libairouter.so: $(tr '\n' ' ' <<<"$missing")"
fi
if [ -z "$extra" ]; then
    pass "libairouter.so exports no function outside airouter.h"
else
    fail "libairouter.so exports functions not in airouter.h: $(tr '\n' ' ' <<<"$extra")"
fi

# ------------------------------------------------------------------ flags
cc=$(cache_get CMAKE_C_COMPILER)
[ -n "$cc" ] || cc=cc
san_flags=""
sanitize=$(cache_get AIR_SANITIZE)
if [ -n "$sanitize" ]; then
    san_flags="-fsanitize=$sanitize -fno-omit-frame-pointer"
fi
if [ "$(cache_get AIR_FUZZ)" = ON ]; then
    san_flags="-fsanitize=address,undefined"
fi
run_env=(env "LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")

# The hosts are built from a copy, away from the source tree, so only the
# installed headers can be found.
cp -r "$src/tests/install/consumer" "$tmp/consumer"

# Run a built host; check it loads the installed library and passes.
run_host()
{
    local label=$1 exe=$2 out="$tmp/run-$1.log"
    local loaded
    loaded=$("${run_env[@]}" ldd "$exe" 2>/dev/null | awk '/libairouter/ {print $3}')
    case "$loaded" in
    "$libdir"/*) pass "$label host loads the installed libairouter ($loaded)" ;;
    *) fail "$label host loads the installed libairouter (ldd says: '${loaded:-not linked}')" ;;
    esac
    if "${run_env[@]}" "$exe" >"$out" 2>&1 && grep -q '^host: ok$' "$out"; then
        pass "$label host runs: $(grep '^host: libairouter' "$out")"
    else
        fail "$label host runs"
        show "$out"
    fi
}

# ------------------------------------------------------------------ (a) pkg-config
pcdir=$(dirname "$pc")
pc_prefix=$(PKG_CONFIG_PATH="$pcdir" pkg-config --dont-define-prefix --variable=prefix \
    airouter 2>/dev/null)
# Compare canonical paths: a relocatable .pc says ${pcfiledir}/../.. .
pc_prefix_real=$(cd "$pc_prefix" 2>/dev/null && pwd -P)
if [ -n "$pc_prefix_real" ] && [ "$pc_prefix_real" = "$(cd "$prefix" && pwd -P)" ]; then
    pass "airouter.pc names the install prefix"
else
    # The .pc was written at configure time with CMAKE_INSTALL_PREFIX, so
    # `cmake --install --prefix` leaves it pointing elsewhere. Keep testing
    # with the prefix overridden, but count it as a failure.
    fail "airouter.pc names the install prefix (prefix=$pc_prefix, installed to $prefix)"
fi
if ! pkgflags=$(PKG_CONFIG_PATH="$pcdir" pkg-config --define-variable=prefix="$prefix" \
    --cflags --libs airouter 2>"$tmp/pkg.log"); then
    fail "pkg-config --cflags --libs airouter"
    show "$tmp/pkg.log"
else
    pass "pkg-config --cflags --libs airouter: $pkgflags"
    log="$tmp/cc.log"
    # shellcheck disable=SC2086
    if (cd "$tmp/consumer" && "$cc" -std=c11 -Wall -Wextra -Wpedantic -Werror $san_flags \
        host.c $pkgflags -o "$tmp/host-pkgconfig") >"$log" 2>&1; then
        pass "pkg-config host compiles and links"
        run_host pkg-config "$tmp/host-pkgconfig"
    else
        fail "pkg-config host compiles and links ($cc host.c $pkgflags)"
        show "$log"
    fi
fi

# ------------------------------------------------------------------ (b) find_package
log="$tmp/cmake.log"
if cmake -S "$tmp/consumer" -B "$tmp/consumer-build" -DCMAKE_PREFIX_PATH="$prefix" \
    -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=Debug \
    -DCMAKE_C_FLAGS="$san_flags" -DCMAKE_EXE_LINKER_FLAGS="$san_flags" \
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF >"$log" 2>&1 &&
    cmake --build "$tmp/consumer-build" >>"$log" 2>&1; then
    pass "find_package(airouter) host configures, compiles and links"
    run_host find_package "$tmp/consumer-build/host"
else
    fail "find_package(airouter) host configures, compiles and links"
    show "$log"
fi

finish
