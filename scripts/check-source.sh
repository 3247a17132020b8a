#!/usr/bin/env bash
# check-source.sh - source rules a compiler does not enforce, in the spirit of
# curl's checksrc. Run from anywhere; it checks the tree it lives in.
#
#   alloc    raw malloc/calloc/realloc/free/strdup/strndup in core/, policy/,
#            providers/ or util/ outside util/alloc.c (STYLE.md 3.8): use
#            air__malloc and friends from util/alloc.h. Only the bare libc
#            names count (air__free, cJSON_free, curl_free, air_resp_free,
#            ops->free and the like do not); comments and string literals
#            are ignored; a line carrying the marker `air-alloc-ok` (in a
#            comment) is allowed.
#   layer    dependency direction (STYLE.md 3.1), a second check behind the
#            PRIVATE include dirs of the CMake object libraries:
#              util/      includes only util headers, airouter.h/airouter/...
#                         and system headers;
#              policy/    only its own headers, util headers,
#                         airouter.h/airouter/... and system headers; never
#                         <curl/...> or <pthread.h> (policy has no I/O and no
#                         threads);
#              providers/ never a header that lives in core/ or policy/
#                         (the list is computed from those directories),
#                         and never <curl/...> (no transport in adapters).
#   unsafe   sprintf, vsprintf, strcpy, strcat, gets anywhere in the
#            project's C code: use snprintf or the util/buf.h helpers.
#   shadow   a header in a directory that is on the include path (core/,
#            policy/, providers/, util/, mock/, tests/support/) named like a
#            standard C or POSIX header (limits.h, time.h, ...): the layers
#            are added with -I, which is searched before the system
#            directories for <...> too, so `#include <limits.h>` anywhere in
#            those targets would pick up the project's file instead.
#
# Prints `file:line: [rule] message` plus the offending line for each
# violation, and exits 1 when there is any (0 when clean, 2 on usage error).
# Options: -q  print only the violations (no summary line).
set -u

quiet=0
if [ "${1:-}" = "-q" ]; then
    quiet=1
    shift
fi
if [ $# -ne 0 ]; then
    echo "usage: $0 [-q]" >&2
    exit 2
fi

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 2

# The project's C files: tracked or untracked-but-not-ignored when this is a
# git checkout (so build dirs and fuzz corpora are skipped), else a find.
list_c_files()
{
    if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git -C "$root" ls-files --cached --others --exclude-standard -- '*.c' '*.h' '*.def' '*.inc' |
            while IFS= read -r f; do [ -f "$f" ] && printf '%s\n' "$f"; done
    else
        find . \( -name 'build*' -o -name .git -o -name 'corpus-*' -o -name out \) -prune -o \
            -type f \( -name '*.c' -o -name '*.h' -o -name '*.def' -o -name '*.inc' \) -print | sed 's|^\./||'
    fi
}

files=$(list_c_files | LC_ALL=C sort -u)
if [ -z "$files" ]; then
    echo "check-source: no C files found under $root" >&2
    exit 2
fi

# Basenames of the includable files (headers, X-macro .def/.inc lists) of
# each layer, for the include rules.
headers_of()
{
    if [ -d "$1" ]; then
        find "$1" -maxdepth 1 -type f \( -name '*.h' -o -name '*.def' -o -name '*.inc' \) \
            -printf '%f\n' | LC_ALL=C sort -u | tr '\n' ' '
    fi
}
export AIR_CS_CORE_H AIR_CS_POLICY_H AIR_CS_PROVIDERS_H AIR_CS_UTIL_H AIR_CS_QUIET=$quiet
AIR_CS_CORE_H=$(headers_of core)
AIR_CS_POLICY_H=$(headers_of policy)
AIR_CS_PROVIDERS_H=$(headers_of providers)
AIR_CS_UTIL_H=$(headers_of util)

printf '%s\n' "$files" | perl -e '
use strict;
use warnings;

my %core = map { $_ => 1 } split " ", $ENV{AIR_CS_CORE_H};
my %policy = map { $_ => 1 } split " ", $ENV{AIR_CS_POLICY_H};
my %providers = map { $_ => 1 } split " ", $ENV{AIR_CS_PROVIDERS_H};
my %util = map { $_ => 1 } split " ", $ENV{AIR_CS_UTIL_H};

my $nviol = 0;
my $nfiles = 0;

# C11 and common POSIX/glibc header names a project header must not reuse.
my %system_h = map { $_ => 1 } qw(
    assert.h complex.h ctype.h errno.h fenv.h float.h inttypes.h iso646.h
    limits.h locale.h math.h setjmp.h signal.h stdalign.h stdarg.h stdatomic.h
    stdbool.h stddef.h stdint.h stdio.h stdlib.h stdnoreturn.h string.h
    tgmath.h threads.h time.h uchar.h wchar.h wctype.h
    aio.h alloca.h arpa.h dirent.h dlfcn.h endian.h fcntl.h fnmatch.h glob.h
    grp.h iconv.h langinfo.h libgen.h malloc.h memory.h netdb.h poll.h
    pthread.h pwd.h regex.h sched.h search.h semaphore.h spawn.h strings.h
    syslog.h termios.h ucontext.h unistd.h utime.h wordexp.h features.h
    cmocka.h curl.h cJSON.h microhttpd.h jemalloc.h
);
my $include_path_dirs = qr{^(core|policy|providers|util|mock|tests/support)/[^/]+$};

sub report {
    my ($file, $line, $rule, $msg, $text) = @_;
    $text =~ s/^\s+//;
    $text =~ s/\s+$//;
    print "$file:$line: [$rule] $msg\n    $text\n";
    $nviol++;
}

# Blank out comments and the contents of string and character literals,
# keeping every newline, so line numbers stay right.
sub strip {
    my ($s) = @_;
    $s =~ s{(/\*.*?\*/)|(//[^\n]*)|("(?:\\.|[^"\\\n])*")|(\x27(?:\\.|[^\x27\\\n])*\x27)}{
        my $m = $&;
        if (defined $3 || defined $4) {
            my $q = substr($m, 0, 1);
            my $inner = substr($m, 1, length($m) - 2);
            $inner =~ s/[^\n]/ /g;
            "$q$inner$q";
        } else {
            (my $b = $m) =~ s/[^\n]/ /g;
            $b;
        }
    }gse;
    return $s;
}

# Where a quoted include resolves, as a layer name; undef when unknown.
sub include_layer {
    my ($dir, $inc) = @_;
    return "public" if $inc eq "airouter.h" || $inc =~ m{^airouter/};
    return "core" if $inc =~ m{(^|/)core/};
    return "policy" if $inc =~ m{(^|/)policy/};
    return "providers" if $inc =~ m{(^|/)providers/};
    return "util" if $inc =~ m{(^|/)util/};
    (my $base = $inc) =~ s{.*/}{};
    # The including file s own directory comes first in the search path.
    return $dir if $dir eq "core" && $core{$base};
    return $dir if $dir eq "policy" && $policy{$base};
    return $dir if $dir eq "providers" && $providers{$base};
    return "util" if $util{$base};
    return "core" if $core{$base};
    return "policy" if $policy{$base};
    return "providers" if $providers{$base};
    return undef;
}

my $alloc_re = qr/(?<![A-Za-z0-9_.>])(malloc|calloc|realloc|free|strdup|strndup)\s*\(/;
my $unsafe_re = qr/(?<![A-Za-z0-9_.>])(sprintf|vsprintf|strcpy|strcat|gets)\s*\(/;

while (my $file = <STDIN>) {
    chomp $file;
    my $fh;
    if (!open($fh, "<", $file)) {
        print "$file: cannot read: $!\n";
        $nviol++;
        next;
    }
    local $/;
    my $orig = <$fh>;
    close $fh;
    $nfiles++;
    if ($file =~ $include_path_dirs && $file =~ m{([^/]+\.h)$} && $system_h{$1}) {
        print "$file:1: [shadow] header named like the system header <$1>; on the -I path it"
            . " replaces <$1> for every file of the target: rename it\n";
        $nviol++;
    }
    my @olines = split /\n/, $orig, -1;
    my @slines = split /\n/, strip($orig), -1;
    my ($dir) = $file =~ m{^([^/]+)/};
    $dir //= "";
    my $alloc_scope = ($dir =~ /^(core|policy|providers|util)$/ && $file ne "util/alloc.c");

    for my $i (0 .. $#slines) {
        my $s = $slines[$i];
        my $o = $olines[$i] // "";
        my $ln = $i + 1;

        if ($alloc_scope && $o !~ /air-alloc-ok/) {
            while ($s =~ /$alloc_re/g) {
                report($file, $ln, "alloc",
                       "raw $1() (use air__$1 from util/alloc.h, or mark the line"
                       . " air-alloc-ok)", $o);
            }
        }
        while ($s =~ /$unsafe_re/g) {
            my $fn = $1;
            my $alt = $fn =~ /printf/ ? "snprintf or air__buf_printf"
                    : $fn eq "gets" ? "fgets"
                    : "a bounded copy (snprintf, memcpy with a length, util/buf.h)";
            report($file, $ln, "unsafe", "$fn() is banned (use $alt)", $o);
        }

        next unless $dir =~ /^(util|policy|providers)$/;
        next unless $o =~ /^\s*#\s*include\s*([<"])([^>"]+)[>"]/;
        my ($kind, $inc) = ($1, $2);
        if ($kind eq "<") {
            if ($dir ne "util" && $inc =~ m{^curl/}) {
                report($file, $ln, "layer",
                       "$dir/ must not use libcurl (<$inc>): core owns the transport", $o);
            } elsif ($dir eq "policy" && $inc =~ m{^(pthread|threads)\.h$}) {
                report($file, $ln, "layer", "policy/ is single-threaded pure code (<$inc>)", $o);
            }
            next;
        }
        my $layer = include_layer($dir, $inc);
        if ($dir eq "providers") {
            if (defined $layer && ($layer eq "core" || $layer eq "policy")) {
                report($file, $ln, "layer",
                       "providers/ must not include $layer/ header \"$inc\"", $o);
            }
        } elsif ($dir eq "policy") {
            if (!defined $layer || $layer !~ /^(policy|util|public)$/) {
                my $what = defined $layer ? "$layer/ header" : "unknown header";
                report($file, $ln, "layer", "policy/ may include only policy/, util/ and"
                       . " public headers, not $what \"$inc\"", $o);
            }
        } elsif ($dir eq "util") {
            if (!defined $layer || $layer !~ /^(util|public)$/) {
                my $what = defined $layer ? "$layer/ header" : "unknown header";
                report($file, $ln, "layer",
                       "util/ may include only util/ and public headers, not $what \"$inc\"", $o);
            }
        }
    }
}
if ($nviol) {
    print "check-source: FAIL: $nviol violation(s) in $nfiles files\n";
} elsif (!$ENV{AIR_CS_QUIET}) {
    print "check-source: ok ($nfiles files)\n";
}
exit($nviol ? 1 : 0);
'
exit $?
