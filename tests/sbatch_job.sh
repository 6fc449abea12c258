#!/bin/bash
# A real batch job on the one-node Slurm (config/slurm-up.sh): config/slurm/app.sbatch runs
# an app through the launcher (cmd/cdsmrun); the job must end COMPLETED with exit code
# 0, and its answer must be the failure-free srun run's, verified. With KILL=R@S the
# launcher kills rank R's process S seconds into the job, and the report must show the
# rank recovered by a spare.
# Usage: sbatch_job.sh SOURCE_ROOT APP NTASKS SPARES [APP ARGS...]
set -u
root="$(readlink -f "$1")" app="$(readlink -f "$2")" ntasks="$3" spares="$4"
shift 4
eval "$("$root/config/slurm-up.sh")" || { echo "sbatch_job: the one-node Slurm did not start" >&2; exit 1; }
out="$(mktemp)" ref="$(mktemp)" ckdir="$(mktemp -d)"
job=""
trap 'rm -f "$out" "$ref"; rm -rf "$ckdir"; [ -n "$job" ] && scancel "$job" 2>/dev/null' EXIT
srun -O --mpi=pmi2 -n "$ntasks" "$app" "$@" > "$ref" 2>&1 || { echo "sbatch_job: failure-free run failed"; cat "$ref"; exit 1; }
want="$(sed -n 's/^answer: //p' "$ref")"
[ -n "$want" ] || { echo "sbatch_job: no answer in the failure-free run"; cat "$ref"; exit 1; }
opts=(-n "$ntasks" -s "$spares" --ckpt-dir "$ckdir")
[ -n "${KILL:-}" ] && opts+=(--kill "$KILL")
[ -n "${CKPT_EVERY:-}" ] && opts+=(--ckpt-every "$CKPT_EVERY")
sub="$(CDSMRUN_ROOT="$root" timeout 300 sbatch --wait -O -n $((ntasks + spares)) -J "cdsm-sbatch-$$" --chdir "$root" -o "$out" \
    "$root/config/slurm/app.sbatch" "${opts[@]}" "$app" "$@" 2>&1)"
rc=$?
job="$(echo "$sub" | sed -n 's/^Submitted batch job \([0-9]*\).*/\1/p')"
cat "$out"
echo "sbatch_job: $sub (sbatch exit status $rc)"
fail=0
[ -n "$job" ] || { echo "sbatch_job: FAIL: no job was submitted"; exit 1; }
info="$(scontrol show job "$job" 2>&1)"
state="$(echo "$info" | grep -o 'JobState=[A-Z_]*' | head -1)"
code="$(echo "$info" | grep -o ' ExitCode=[0-9:]*' | head -1)"
echo "sbatch_job: job $job: $state$code"
job=""  # ended: nothing to cancel
[ "$rc" -eq 0 ] || { echo "sbatch_job: FAIL: sbatch --wait exit status $rc"; fail=1; }
[ "$state" = JobState=COMPLETED ] || { echo "sbatch_job: FAIL: job state $state"; fail=1; }
[ "$code" = " ExitCode=0:0" ] || { echo "sbatch_job: FAIL: job exit code$code"; fail=1; }
got="$(sed -n 's/^answer: //p' "$out")"
[ "$got" = "$want" ] || { echo "sbatch_job: FAIL: answer '$got', failure-free '$want'"; fail=1; }
grep -q '^result: VERIFIED' "$out" || { echo "sbatch_job: FAIL: not verified"; fail=1; }
grep -q '^  result       ok (exit status 0)' "$out" || { echo "sbatch_job: FAIL: no good launcher report"; fail=1; }
if [ -n "${KILL:-}" ]; then
    grep -q "^  recovery     rank ${KILL%@*}: " "$out" || { echo "sbatch_job: FAIL: rank ${KILL%@*} was not recovered"; fail=1; }
fi
exit $fail
