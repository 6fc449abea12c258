#!/bin/bash
# Install dependencies, build, and run every test (unit tests, multi-rank tests under
# mpiexec, failure tests under the one-node Slurm that they start; each with a timeout),
# then stop that Slurm. Extra arguments go to `meson test`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/config/install-deps.sh"
"$root/config/build.sh"
build="${BUILD_DIR:-$root/build}"
rc=0
meson test -C "$build" --print-errorlogs "$@" || rc=$?
LOCAL_SLURM_DIR="${LOCAL_SLURM_DIR:-$root/build/slurm}" "$root/config/slurm-down.sh"
exit $rc
