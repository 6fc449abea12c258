#!/bin/bash
# How often this machine's MPI leaves a receiver deaf or dead after a sender on its host is
# killed mid-send (bench/mpi_kill_probe.c), under the one-node Slurm of config/slurm-up.sh.
# Prints a table (one row per MPI setting) and writes CSV to bench/results/.
#   bench/run-mpi-kill-probe.sh [TRIALS]      (default 20 per setting)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD_DIR:-$root/build}"
trials="${1:-20}"
probe="$build/bench/mpi_kill_probe"
[ -x "$probe" ] || { echo "run-mpi-kill-probe: $probe not built (run config/build.sh)" >&2; exit 1; }
eval "$("$root/config/slurm-up.sh")"
mkdir -p "$root/bench/results"
csv="$root/bench/results/mpi-kill-probe-$(date +%Y%m%d-%H%M%S).csv"
echo "setting,trials,ok,stuck,aborted" > "$csv"
printf '%-28s %6s %6s %6s %8s\n' setting trials ok stuck aborted
for setting in "default" "MPIR_CVAR_NOLOCAL=1"; do
    ok=0 stuck=0 aborted=0
    for s in $(seq 1 "$trials"); do
        if [ "$setting" = default ]; then envs=(); else envs=("$setting"); fi
        out="$(env "${envs[@]}" timeout 60 srun -O --mpi=pmi2 -n 3 -J cdsm-kill-probe "$probe" "$s" 100000 2>&1 || true)"
        if grep -q '^OK' <<<"$out"; then ok=$((ok + 1))
        elif grep -q '^STUCK' <<<"$out"; then stuck=$((stuck + 1))
        else aborted=$((aborted + 1)); fi
    done
    printf '%-28s %6d %6d %6d %8d\n' "$setting" "$trials" "$ok" "$stuck" "$aborted"
    echo "$setting,$trials,$ok,$stuck,$aborted" >> "$csv"
done
echo "written: $csv"
