#!/bin/bash
# Install dependencies, build, and run every test (unit tests and multi-rank tests under
# mpiexec, each with a timeout). Extra arguments go to `meson test`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/config/install-deps.sh"
"$root/config/build.sh"
build="${BUILD_DIR:-$root/build}"
exec meson test -C "$build" --print-errorlogs "$@"
