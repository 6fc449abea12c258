#!/bin/bash
# Install into a temporary folder (meson install --destdir) and use what was installed as
# an outside user would: pkg-config finds cdsm, mpicc builds a small program against the
# installed headers and library, mpiexec runs it on 2 ranks (each rank reads the value the
# other wrote), the commands answer --help, their man pages, the docs and the apps are
# where the install layout puts them. The temporary folder is removed on exit.
#   install_test.sh MESON BUILD_DIR MPIEXEC APP...
set -uo pipefail
meson="$1" build="$(readlink -f "$2")" mpiexec="$3"
shift 3
me=install_test
tmp="$(mktemp -d /tmp/cdsm-install-XXXXXX)"
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "$me: FAIL: $*"; fails=$((fails + 1)); }
need() { [ -e "$1" ] || fail "$2 not installed: no $1"; }

# The configured install folders (absolute; libdir, bindir... are relative to the prefix).
opts="$("$meson" introspect --buildoptions "$build")" || { echo "$me: FAIL: meson introspect"; exit 1; }
dir() {
    python3 -c 'import json, os, sys
o = {x["name"]: x["value"] for x in json.load(sys.stdin)}
print(os.path.join(o["prefix"], o[sys.argv[1]]))' "$1" <<< "$opts"
}
prefix="$(dir prefix)" bindir="$tmp$(dir bindir)" libdir="$tmp$(dir libdir)" mandir="$tmp$(dir mandir)"
libexec="$tmp$(dir libexecdir)/cdsm" docdir="$tmp$(dir datadir)/doc/cdsm" incdir="$tmp$(dir includedir)"
"$meson" install -C "$build" --no-rebuild --quiet --destdir "$tmp" > "$tmp/install.log" 2>&1 \
    || { cat "$tmp/install.log"; echo "$me: FAIL: meson install"; exit 1; }

# pkg-config: the installed .pc, with the temporary folder as its sysroot.
export PKG_CONFIG_PATH="$libdir/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$tmp"
need "$libdir/pkgconfig/cdsm.pc" "the pkg-config file"
version="$("$meson" introspect --projectinfo "$build" | python3 -c 'import json, sys; print(json.load(sys.stdin)["version"])')"
got="$(pkg-config --modversion cdsm 2>&1)"
[ "$got" = "$version" ] || fail "pkg-config --modversion cdsm: '$got', want '$version'"
flags="$(pkg-config --cflags --libs cdsm 2>&1)" || fail "pkg-config --cflags --libs cdsm: $flags"
case " $flags " in *" -I$incdir "*) ;; *) fail "pkg-config --cflags lacks -I$incdir: $flags" ;; esac
case " $flags " in *" -L$libdir "*) ;; *) fail "pkg-config --libs lacks -L$libdir: $flags" ;; esac
case " $flags " in *" -lcdsm "*) ;; *) fail "pkg-config --libs lacks -lcdsm: $flags" ;; esac
need "$incdir/cdsm.h" "cdsm.h"
need "$incdir/cdsm/status.h" "cdsm/status.h"

# An outside program: rank r writes slot r of a shared array, and after the barrier
# checks the slot of the other rank.
cat > "$tmp/ext.c" <<'EOF'
#include <cdsm.h>
#include <stdio.h>
int main(int argc, char **argv)
{
    int rc = cdsm_init(&argc, &argv);
    if (rc) { fprintf(stderr, "cdsm_init: %s: %s\n", cdsm_strerror(rc), cdsm_last_error()); return 1; }
    int me = cdsm_rank(), n = cdsm_nranks();
    long *slot;
    if ((rc = cdsm_alloc(4096 * sizeof *slot, (void **)&slot))) { fprintf(stderr, "cdsm_alloc: %s\n", cdsm_strerror(rc)); return 1; }
    slot[me * 512] = 1000 + me;   /* different pages: each rank's write travels as a diff */
    if ((rc = cdsm_barrier())) { fprintf(stderr, "cdsm_barrier: %s\n", cdsm_strerror(rc)); return 1; }
    int other = (me + 1) % n;
    long got = slot[other * 512];
    printf("rank %d read %ld from rank %d\n", me, got, other);
    int ok = got == 1000 + other;
    if ((rc = cdsm_finalize())) { fprintf(stderr, "cdsm_finalize: %s\n", cdsm_strerror(rc)); return 1; }
    return ok ? 0 : 3;
}
EOF
# shellcheck disable=SC2086  # the flags are words
if mpicc -o "$tmp/ext" "$tmp/ext.c" $flags > "$tmp/cc.log" 2>&1; then
    lib="$(LD_LIBRARY_PATH="$libdir" ldd "$tmp/ext" | grep libcdsm)"
    case "$lib" in *" => $libdir/libcdsm.so"*) ;; *) fail "the program does not use the installed libcdsm.so: '$lib'" ;; esac
    out="$(cd "$tmp" && LD_LIBRARY_PATH="$libdir" timeout 60 "$mpiexec" -n 2 ./ext 2>&1)"; rc=$?
    [ $rc -eq 0 ] || fail "mpiexec -n 2 of the outside program: exit status $rc: $out"
    for r in 0 1; do
        echo "$out" | grep -q "^rank $r read $((1000 + 1 - r)) from rank $((1 - r))$" \
            || fail "rank $r did not read the other rank's value: $out"
    done
else
    fail "mpicc with \$(pkg-config --cflags --libs cdsm): $(cat "$tmp/cc.log")"
fi

# The commands, their man pages, the docs, the apps.
for c in cdsmrun cdsm-ckpt-info; do
    if [ -x "$bindir/$c" ]; then
        help="$(LD_LIBRARY_PATH="$libdir" "$bindir/$c" --help 2>&1)"; rc=$?
        [ $rc -eq 0 ] || fail "$c --help: exit status $rc: $help"
        echo "$help" | grep -qi "^usage: .*$c" || fail "$c --help prints no usage line: $help"
        echo "$help" | grep -qi "exit status" || fail "$c --help does not give the exit statuses"
    else
        fail "$c not installed in $bindir"
    fi
    need "$mandir/man1/$c.1" "the man page of $c"
done
for d in README.md CONFIG.md CHECKPOINT_FORMAT.md; do need "$docdir/$d" "$d"; done
[ $# -gt 0 ] || fail "no app names given"
for a in "$@"; do
    for v in "" -seq -pthreads; do
        [ -x "$libexec/$a$v" ] || fail "app $a$v not installed in $libexec"
    done
done
[ -x "$libexec/smoke" ] || fail "app smoke not installed in $libexec"
[ -z "$(ls "$bindir" | grep -vx 'cdsmrun\|cdsm-ckpt-info')" ] || fail "unexpected programs in $bindir: $(ls "$bindir")"

[ $fails -eq 0 ] || { echo "$me: $fails failure(s)"; exit 1; }
echo "$me: OK (prefix $prefix)"
