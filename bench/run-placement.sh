#!/bin/bash
# The placement table: every app at 1 and 2 processes unbound, bound to cores, and bound
# with the service thread apart; prints times and ratios to the unbound run, writes CSV and
# JSON to bench/results/. Options go to bench/placement_table.py (--procs, --reps, --apps).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/config/install-deps.sh"
BUILD_DIR="${BUILD_DIR:-$root/build}" "$root/config/build.sh"
cd "$root/bench"
exec python3 placement_table.py --build "${BUILD_DIR:-$root/build}" -o "$root/bench/results" "$@"
