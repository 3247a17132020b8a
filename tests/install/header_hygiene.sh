#!/usr/bin/env bash
# header_hygiene.sh SRC_DIR - the public headers compile on their own.
#
# Each public header is included, alone and then twice (include guard), by a
# one-line translation unit that sees only SRC_DIR/include (and cJSON's
# include dir for provider.h), and compiled with
# -Wall -Wextra -Wpedantic -Werror -fsyntax-only:
#   - as C11 with gcc, and with clang when it is installed;
#   - as C++11 with g++ (and clang++ when installed), so the extern "C"
#     wrapping and the X-macro enums also work for C++ hosts (libcbor's
#     cpp_linkage_test).
# The unit also expands the public macros (version, status and error-class
# lists), so a macro that is only broken when used is caught too.
#
# Prints one line per check and a summary; exits nonzero when any check
# failed (CTest: header/hygiene).
set -u

if [ $# -ne 1 ] || [ ! -f "$1/include/airouter.h" ]; then
    echo "usage: $0 SRC_DIR   (SRC_DIR/include/airouter.h must exist)" >&2
    exit 2
fi
src=$(cd "$1" && pwd)
inc="$src/include"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/air-hygiene.XXXXXX") || exit 2
trap 'rm -rf "$tmp"' EXIT

# cJSON's include dir (provider.h includes <cjson/cJSON.h>); empty when it is
# in the default search path or pkg-config does not know it.
cjson_cflags=$(pkg-config --cflags libcjson 2>/dev/null || true)

warn="-Wall -Wextra -Wpedantic -Werror"
cwarn="$warn -Wstrict-prototypes -Wmissing-prototypes -Wundef -Wshadow"
cxxwarn="$warn -Wundef -Wshadow"

# A translation unit that includes $1 (twice when $2 is "twice") and uses
# the public macros.
make_tu()
{
    local header=$1 twice=$2 out=$3
    {
        echo "#include <$header>"
        if [ "$twice" = twice ]; then
            echo "#include <$header>"
        fi
        cat <<'EOF'
#define HYG_NAME(name, num, str) str,
extern const char *const hyg_status[];
extern const char *const hyg_class[];
const char *const hyg_status[] = {AIR_STATUS_MAP(HYG_NAME)};
const char *const hyg_class[] = {AIR_ERRCLASS_MAP(HYG_NAME)};
#undef HYG_NAME
int hyg_use(void);
int
hyg_use(void)
{
    air_status_t st = AIR_E_BUSY;
    air_errclass_t cls = AIR_ERR_BUSY;
    int n = AIR_VERSION_NUM + (int)sizeof AIR_VERSION_STR;
    return n + (int)st + (int)cls + (hyg_status[AIR_E_BUSY][0] == 'q') +
           (hyg_class[AIR_ERR_BUSY][0] == 'b') + (AIR__STATUS_LAST > 0);
}
EOF
    } >"$out"
}

fails=0
checks=0

# run_check LABEL COMMAND... : run, print PASS/FAIL with the compiler output.
run_check()
{
    local label=$1
    shift
    checks=$((checks + 1))
    local log="$tmp/log"
    if "$@" >"$log" 2>&1; then
        echo "ok   - $label"
    else
        fails=$((fails + 1))
        echo "FAIL - $label"
        echo "       command: $*"
        sed 's/^/       | /' "$log"
    fi
}

c_compilers=(gcc)
command -v clang >/dev/null 2>&1 && c_compilers+=(clang)
cxx_compilers=(g++)
command -v clang++ >/dev/null 2>&1 && cxx_compilers+=(clang++)

for header in airouter.h airouter/provider.h; do
    extra=""
    if [ "$header" = airouter/provider.h ]; then
        extra=$cjson_cflags
    fi
    for twice in once twice; do
        tu="$tmp/tu-${header//\//_}-$twice"
        make_tu "$header" "$twice" "$tu.c"
        cp "$tu.c" "$tu.cpp"
        for cc in "${c_compilers[@]}"; do
            if ! command -v "$cc" >/dev/null 2>&1; then
                checks=$((checks + 1))
                fails=$((fails + 1))
                echo "FAIL - $cc not found"
                continue
            fi
            # shellcheck disable=SC2086
            run_check "$header ($twice) as C11 with $cc" \
                "$cc" -std=c11 $cwarn -fsyntax-only -I"$inc" $extra -x c "$tu.c"
        done
        for cxx in "${cxx_compilers[@]}"; do
            if ! command -v "$cxx" >/dev/null 2>&1; then
                checks=$((checks + 1))
                fails=$((fails + 1))
                echo "FAIL - $cxx not found"
                continue
            fi
            # shellcheck disable=SC2086
            run_check "$header ($twice) as C++11 with $cxx" \
                "$cxx" -std=c++11 $cxxwarn -fsyntax-only -I"$inc" $extra -x c++ "$tu.cpp"
        done
    done
done

if [ "$fails" -ne 0 ]; then
    echo "FAIL: header hygiene: $fails of $checks checks failed"
    exit 1
fi
echo "PASS: header hygiene: $checks checks"
exit 0
