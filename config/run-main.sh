#!/bin/bash
# The main job: install dependencies, build, and run red-black SOR on 4 ranks of the DSM,
# checked against the sequential answer, with its time and DSM statistics.
# Extra arguments go to the app (e.g. -n 2050 -i 100).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/config/install-deps.sh"
"$root/config/build.sh"
build="${BUILD_DIR:-$root/build}"
exec timeout 600 mpiexec -n "${NP:-4}" "$build/apps/sor" "$@"
