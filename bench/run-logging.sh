#!/bin/bash
# The logging and checkpoint benchmark: every app with logging off, logging on, logging
# plus checkpoints at the default policy, and logging plus a checkpoint every 10 barriers;
# prints overheads, log and piggyback bytes, checkpoint sizes and times; writes CSV and
# JSON to bench/results/. Options go to bench/logging_table.py (--np, --reps, --apps, --args).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/config/install-deps.sh"
BUILD_DIR="${BUILD_DIR:-$root/build}" "$root/config/build.sh"
cd "$root"
exec python3 bench/logging_table.py --build "${BUILD_DIR:-$root/build}" -o "$root/bench/results" "$@"
