#!/bin/bash
# The main job: install dependencies, build, start the one-node Slurm, and run red-black
# SOR on NP working ranks (default 4) plus one spare under srun --mpi=pmi2, in resume mode
# (sor -r: a checkpoint every 20 iterations, into a temporary folder); in the middle of the
# run rank 1's process is killed with kill -9, the spare restores its last checkpoint and
# replays the rest from the survivors' logs, and the report shows detection, restore,
# replay and recovery times next to the failure-free run, and whether the answer is
# bit-identical and verified (the exit status is 0 only then). Extra arguments go to the
# app (e.g. -n 2050 -i 100); VICTIM and AT (fraction of the run) change the kill;
# RESUME=0 replays from the program's start instead (no checkpoints).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/config/install-deps.sh"
"$root/config/build.sh"
build="${BUILD_DIR:-$root/build}"
eval "$("$root/config/slurm-up.sh")"
[ $# -gt 0 ] || set -- -i 200   # about 2 s of SOR on this 2-core machine
extra=()
if [ "${RESUME:-1}" = 1 ]; then
    ckdir="$(mktemp -d /tmp/cdsm-main-ckpt-XXXXXX)"
    trap 'rm -rf "$ckdir"' EXIT
    extra=(--env "CDSM_CKPT_DIR=$ckdir" --env CDSM_CKPT_BARRIERS=20)
    set -- -r "$@"
fi
timeout 900 python3 "$root/bench/recover_run.py" "$build/apps/sor" --np "${NP:-4}" --spares 1 \
    --victim "${VICTIM:-1}" --at "${AT:-0.5}" --show-output "${extra[@]}" -- "$@"
