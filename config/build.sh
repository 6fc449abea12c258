#!/bin/bash
# Configure (once) and build cdsm into $BUILD_DIR (default: <repo>/build).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD_DIR:-$root/build}"
if [ ! -f "$build/build.ninja" ]; then
    meson setup "$build" "$root" >/dev/null
fi
ninja -C "$build" >/dev/null
