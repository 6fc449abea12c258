#!/bin/bash
# The node heap's micro-benchmark (bench/nodebench.c) on 2 ranks of this host, with
# CDSM_NODE_HEAP=1: prints its table and writes bench/results/nodebench-STAMP.{txt,csv}.
# Usage: bench/run-nodebench.sh [-b BUILD_DIR] [-o OUTDIR]   (MPIEXEC: the launcher)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD_DIR:-$repo/build}" outdir="$repo/bench/results"
while getopts "b:o:h" opt; do
    case "$opt" in
    b) build="$OPTARG" ;;
    o) outdir="$OPTARG" ;;
    *) sed -n '2,5p' "$0"; exit 2 ;;
    esac
done
exe="$build/bench/nodebench"
[ -x "$exe" ] || { echo "run-nodebench.sh: $exe not found; build first (ninja -C $build)" >&2; exit 2; }
mkdir -p "$outdir"
base="$outdir/nodebench-$(date +%Y%m%d-%H%M%S)"
echo "+ CDSM_NODE_HEAP=1 ${MPIEXEC:-mpiexec} -n 2 $exe -o $base.csv"
CDSM_NODE_HEAP=1 "${MPIEXEC:-mpiexec}" -n 2 "$exe" -o "$base.csv" | tee "$base.txt"
