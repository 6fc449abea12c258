#!/bin/bash
# Stop the one-node Slurm started by config/slurm-up.sh (by the PIDs in its pid files,
# never by process name). munge is left running (it is shared by the machine).
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${LOCAL_SLURM_DIR:-$root/build/slurm}"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
for d in slurmd slurmctld; do
    f="$dir/$d.pid"
    [ -f "$f" ] || continue
    pid="$(cat "$f")"
    if kill -0 "$pid" 2>/dev/null; then
        $SUDO kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$f"
done
