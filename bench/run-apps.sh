#!/bin/bash
# The apps table: every app sequential, pthreads and cdsm at 1, 2 and 4 processes; prints
# time, speedup, cdsm/pthreads ratio and DSM counters, writes CSV and a PNG plot to
# bench/results/. Options go to bench/apps_table.py (--procs, --reps, --apps, --args APP=ARGS).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/config/install-deps.sh" gnuplot-nox
BUILD_DIR="${BUILD_DIR:-$root/build}" "$root/config/build.sh"
cd "$root"
exec python3 bench/apps_table.py --build "${BUILD_DIR:-$root/build}" -o "$root/bench/results" "$@"
