#!/bin/bash
# The recovery benchmark: for each app, kill rank 1 (and rank 0, the barrier manager) at
# 30% and 70% of the failure-free run and
# print detection, restore, replay and total recovery times, the failure-free time of the
# replayed work, the survivors' slowdown and a whole-job restart for comparison; CSV, JSON
# and a PNG plot go to bench/results/. Options go to bench/recovery_table.py.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/config/install-deps.sh" gnuplot-nox
BUILD_DIR="${BUILD_DIR:-$root/build}" "$root/config/build.sh"
eval "$("$root/config/slurm-up.sh")"
cd "$root"
exec python3 bench/recovery_table.py --build "${BUILD_DIR:-$root/build}" -o "$root/bench/results" "$@"
