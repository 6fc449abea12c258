#!/bin/bash
# A rank killed with kill -9 in the middle of a run under Slurm direct launch
# (srun --mpi=pmi2, the one-node Slurm of config/slurm-up.sh): with no spare to take its
# place, the survivors must name the lost rank, the job must end by itself (no hang in
# MPI) and its exit status must say that the answer is not valid.
# With KILL_AT=STEP:N the victim kills itself instead (CDSM_KILL_AT=VICTIM:STEP:N, e.g.
# lock_held:40: it dies holding a lock), and EXPECT is a pattern a survivor must print
# (e.g. the lock acquire that failed because its holder was lost).
# Usage: [KILL_AT=STEP:N [EXPECT=PATTERN]] slurm_kill.sh SOURCE_ROOT APP_BINARY NTASKS VICTIM
#        [APP ARGS...] (a long run)
set -u
root="$1" app="$2" ntasks="$3" victim="$4"
shift 4
eval "$("$root/config/slurm-up.sh")" || { echo "slurm_kill: the one-node Slurm did not start" >&2; exit 1; }
out="$(mktemp)"
trap 'rm -f "$out"; [ -n "${spid:-}" ] && kill "$spid" 2>/dev/null' EXIT
if [ -n "${KILL_AT:-}" ]; then
    t0=$(date +%s.%N)
    CDSM_KILL_AT="$victim:$KILL_AT" srun -O --mpi=pmi2 -n "$ntasks" -J cdsm-kill-test "$app" "$@" > "$out" 2>&1
    rc=$?
    t1=$(date +%s.%N)
    cat "$out"
    echo "slurm_kill: srun exit status $rc, $(awk "BEGIN { printf \"%.3f\", $t1 - $t0 }") s in all"
    fail=0
    grep -q "fault injection: rank $victim kills itself at step ${KILL_AT%%:*}" "$out" ||
        { echo "slurm_kill: FAIL: rank $victim never reached ${KILL_AT%%:*}"; fail=1; }
    [ "$rc" -ne 0 ] || { echo "slurm_kill: FAIL: the job reported success after losing a rank"; fail=1; }
    grep -q "rank $victim lost" "$out" || { echo "slurm_kill: FAIL: no survivor named rank $victim as lost"; fail=1; }
    grep -q 'result: VERIFIED' "$out" && { echo "slurm_kill: FAIL: an answer was reported as verified"; fail=1; }
    [ -z "${EXPECT:-}" ] || grep -q -- "$EXPECT" "$out" || { echo "slurm_kill: FAIL: no survivor said: $EXPECT"; fail=1; }
    exit $fail
fi
# Each rank logs "initialised: rank R of N, pid P" (info level, stderr, unbuffered).
CDSM_LOG_LEVEL=info srun -O --mpi=pmi2 -n "$ntasks" -J cdsm-kill-test "$app" "$@" > "$out" 2>&1 &
spid=$!
pid=""
for _ in $(seq 600); do
    pid="$(sed -n "s/^cdsm\[$victim\] info: initialised: rank $victim of [0-9]*, pid \([0-9]*\),.*/\1/p" "$out")"
    [ -n "$pid" ] && [ "$(grep -c 'info: initialised' "$out")" -eq "$ntasks" ] && break
    pid=""
    kill -0 "$spid" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$pid" ]; then echo "slurm_kill: task $victim never started"; cat "$out"; exit 1; fi
t0=$(date +%s.%N)
kill -9 "$pid"
wait "$spid"
rc=$?
t1=$(date +%s.%N)
spid=""
cat "$out"
echo "slurm_kill: srun exit status $rc, $(awk "BEGIN { printf \"%.3f\", $t1 - $t0 }") s after the kill"
fail=0
[ "$rc" -ne 0 ] || { echo "slurm_kill: FAIL: the job reported success after losing a rank"; fail=1; }
grep -q "rank $victim lost" "$out" || { echo "slurm_kill: FAIL: no survivor named rank $victim as lost"; fail=1; }
grep -q 'result: VERIFIED' "$out" && { echo "slurm_kill: FAIL: an answer was reported as verified"; fail=1; }
exit $fail
