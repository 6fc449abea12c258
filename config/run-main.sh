#!/bin/bash
# The main job: install dependencies, build, start the one-node Slurm, and run red-black
# SOR on NP working ranks (default 4) plus one spare under srun --mpi=pmi2; in the middle
# of the run rank 1's process is killed with kill -9, the spare replays it, and the report
# shows detection, replay and recovery times next to the failure-free run, and whether the
# answer is bit-identical and verified (the exit status is 0 only then). Extra arguments
# go to the app (e.g. -n 2050 -i 100); VICTIM and AT (fraction of the run) change the kill.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/config/install-deps.sh"
"$root/config/build.sh"
build="${BUILD_DIR:-$root/build}"
eval "$("$root/config/slurm-up.sh")"
[ $# -gt 0 ] || set -- -i 200   # about 2 s of SOR on this 2-core machine
exec timeout 900 python3 "$root/bench/recover_run.py" "$build/apps/sor" --np "${NP:-4}" --spares 1 \
    --victim "${VICTIM:-1}" --at "${AT:-0.5}" --show-output -- "$@"
