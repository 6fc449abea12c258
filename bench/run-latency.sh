#!/bin/bash
# The latency benchmark on the simulated cluster (cmd/cdsm-simcluster; needs root): the
# apps table and the recovery table (one rank lost; a node's two ranks lost) at 0, 50 and
# 200 us of added one-way delay between nodes, as ratios to the 0 us runs; counts the
# runs where the finalize watchdog fired (MPI_Finalize hang of UCX over TCP) and srun's
# exit statuses. CSV and JSON go to bench/results/. Options go to bench/latency_table.py
# (--delays, --reps, --apps, --recovery-apps, --node-apps, --args APP=ARGS, --timeout).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
[ "$(id -u)" -eq 0 ] || { echo "run-latency: needs root (network namespaces of the simulated cluster)" >&2; exit 1; }
"$root/config/install-deps.sh"
BUILD_DIR="${BUILD_DIR:-$root/build}" "$root/config/build.sh"
cd "$root"
exec python3 bench/latency_table.py --build "${BUILD_DIR:-$root/build}" -o "$root/bench/results" "$@"
