#!/bin/bash
# Configure (once) and build cdsm into $CDSM_BUILD (default: <repo>/build).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${CDSM_BUILD:-$root/build}"
if [ ! -f "$build/build.ninja" ]; then
    meson setup "$build" "$root" >/dev/null
fi
ninja -C "$build" >/dev/null
