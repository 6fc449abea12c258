#!/usr/bin/env bash
# Run the cdsm microbenchmark on 2 MPI ranks and keep its results.
#
#   bench/run-microbench.sh [-o DIR] [microbench options...]
#
#   -o DIR   results folder (default: <repo>/bench/results); the run writes
#            DIR/microbench-<date>-<time>.csv (rows with a header line) and .txt (the
#            printed table). Every other argument goes to the program unchanged, e.g.
#            -r N (cheap repetitions), -m N (expensive ones), -w N, -c S; see -h.
#   -h       this help and the program's options.
#
# Environment:
#   BUILD_DIR   Meson build directory holding bench/microbench (default: <repo>/build).
#   CDSM_FAULT_AROUND, CDSM_PREFETCH  exported as 1 (off) unless set, CDSM_REFETCH as 0:
#               the rows time single faults and misses, which these library settings
#               would batch (or, the refetch after a barrier, take off the path).
#   CDSM_OWNERSHIP  exported as 0 unless set: the rows time the protocol that tracks every
#               page (write faults, twins, diffs); under first-touch ownership a fresh
#               page's first write takes no fault and a miss takes the directory's path,
#               so the program's own path checks fail.
#   CDSM_LOCKS  number of lock ids (library setting); exported as 65536 unless set, since
#               the uncontended-lock test uses a fresh lock per repetition.
#   MPIEXEC     launcher (default: mpiexec).
# Works from any current directory.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"

build="${BUILD_DIR:-$repo/build}"
outdir="$repo/bench/results"
mpiexec="${MPIEXEC:-mpiexec}"

usage() {
    sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"
}

args=()
want_help=0
while [ $# -gt 0 ]; do
    case "$1" in
    -o)
        if [ $# -lt 2 ] || [ -z "$2" ]; then
            echo "run-microbench.sh: -o needs a folder" >&2
            exit 2
        fi
        outdir="$2"
        shift 2
        ;;
    -o?*)
        outdir="${1#-o}"
        shift
        ;;
    -h | --help)
        want_help=1
        shift
        ;;
    *)
        args+=("$1")
        shift
        ;;
    esac
done

exe="$build/bench/microbench"
if [ ! -x "$exe" ]; then
    echo "run-microbench.sh: $exe not found; build first, e.g.:" >&2
    echo "  meson setup \"$build\" \"$repo\" && ninja -C \"$build\"" >&2
    echo "  (or point BUILD_DIR at an existing build directory)" >&2
    exit 2
fi

export CDSM_LOCKS="${CDSM_LOCKS:-65536}"
# Single operations are timed: write fault-around and miss readahead would batch the
# benchmark's sequential loops (their effect shows in bench/run-apps.sh).
export CDSM_FAULT_AROUND="${CDSM_FAULT_AROUND:-1}" CDSM_PREFETCH="${CDSM_PREFETCH:-1}" CDSM_REFETCH="${CDSM_REFETCH:-0}" CDSM_OWNERSHIP="${CDSM_OWNERSHIP:-0}"

if [ "$want_help" = 1 ]; then
    usage
    echo
    "$mpiexec" -n 2 "$exe" -h
    exit 0
fi

mkdir -p "$outdir"
outdir="$(cd "$outdir" && pwd)"
stamp="$(date +%Y%m%d-%H%M%S)"
base="$outdir/microbench-$stamp"
n=1
while [ -e "$base.csv" ] || [ -e "$base.txt" ]; do
    base="$outdir/microbench-$stamp-$n"
    n=$((n + 1))
done

echo "+ CDSM_LOCKS=$CDSM_LOCKS CDSM_FAULT_AROUND=$CDSM_FAULT_AROUND CDSM_PREFETCH=$CDSM_PREFETCH CDSM_REFETCH=$CDSM_REFETCH CDSM_OWNERSHIP=$CDSM_OWNERSHIP $mpiexec -n 2 $exe${args[*]:+ ${args[*]}} -o $base.csv"
set +e
"$mpiexec" -n 2 "$exe" ${args[@]+"${args[@]}"} -o "$base.csv" | tee "$base.txt"
rc=${PIPESTATUS[0]}
set -e
if [ -s "$base.csv" ]; then
    echo "results: $base.csv"
else
    rm -f "$base.csv"
fi
exit "$rc"
