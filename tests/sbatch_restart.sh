#!/bin/bash
# Whole-job restart with real Slurm jobs: an app in resume mode runs as a batch job
# (config/slurm/app.sbatch) with checkpoints; once its first restart manifest is committed
# the job is cancelled with scancel; a second job restarts it from that manifest
# (cdsmrun --restart) and must end COMPLETED with the answer of an uninterrupted run.
# Bad input is refused with a clear message: a restart from a folder with no manifest,
# and one with another rank count.
# With STOP=kill (and -P) the first job is not cancelled: rank 1 kills itself with SIGKILL
# as it is about to release the output held at the first manifest (CDSM_KILL_AT), the job
# ends FAILED (no spares), and the restart must print what that rank never did.
# Usage: [STOP=scancel|kill] sbatch_restart.sh SOURCE_ROOT APP NTASKS [APP ARGS...]
set -u
stop="${STOP:-scancel}"
root="$(readlink -f "$1")" app="$(readlink -f "$2")" ntasks="$3"
shift 3
eval "$("$root/config/slurm-up.sh")" || { echo "sbatch_restart: the one-node Slurm did not start" >&2; exit 1; }
out1="$(mktemp)" out2="$(mktemp)" ref="$(mktemp)" ck="$(mktemp -d)" ck2="$(mktemp -d)"
job=""
trap 'rm -f "$out1" "$out2" "$ref"; rm -rf "$ck" "$ck2"; [ -n "$job" ] && scancel "$job" 2>/dev/null' EXIT
srun -O --mpi=pmi2 -n "$ntasks" "$app" "$@" > "$ref" 2>&1 || { echo "sbatch_restart: uninterrupted run failed"; cat "$ref"; exit 1; }
want="$(sed -n 's/^answer: //p' "$ref")"
echo "sbatch_restart: uninterrupted answer $want"
state() { scontrol show job "$1" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | head -1; }
fail=0
# 1. The job, cancelled once a manifest exists (or killed at its first release).
kill_at=""
[ "$stop" = kill ] && kill_at="1:output_release:1"
sub="$(CDSM_KILL_AT="$kill_at" CDSMRUN_ROOT="$root" sbatch -O -n "$ntasks" -J "cdsm-restart-$$" --chdir "$root" -o "$out1" \
    "$root/config/slurm/app.sbatch" -n "$ntasks" --ckpt-dir "$ck" --ckpt-every 20 "$app" "$@")"
job="$(echo "$sub" | sed -n 's/^Submitted batch job \([0-9]*\).*/\1/p')"
[ -n "$job" ] || { echo "sbatch_restart: FAIL: no job: $sub"; exit 1; }
for _ in $(seq 1200); do
    [ "$stop" = scancel ] && ls "$ck"/job-*/manifest >/dev/null 2>&1 && break
    case "$(state "$job")" in JobState=PENDING|JobState=RUNNING|JobState=CONFIGURING) ;; *) break ;; esac
    sleep 0.05
done
[ -n "$(ls "$ck"/job-*/manifest 2>/dev/null)" ] || { echo "sbatch_restart: FAIL: no manifest was committed"; cat "$out1"; exit 1; }
# No wait for the output before the manifest's barrier E to be released (at E + 3): a
# job stopped before that holds it in its checkpoint of E, and the restart emits what each
# rank's release mark says the stopped job had not.
[ "$stop" = scancel ] && scancel "$job"
for _ in $(seq 600); do
    case "$(state "$job")" in JobState=PENDING|JobState=RUNNING|JobState=COMPLETING|JobState=CONFIGURING) sleep 0.05 ;; *) break ;; esac
done
s1="$(state "$job")"
job=""
echo "sbatch_restart: first job after $stop: $s1; manifest: $(tr '\n' ' ' < "$ck"/job-*/manifest)"
want_state=JobState=CANCELLED
[ "$stop" = kill ] && want_state=JobState=FAILED
[ "$s1" = "$want_state" ] || { echo "sbatch_restart: FAIL: the first job ended $s1, not $want_state"; fail=1; }
grep -q '^answer: ' "$out1" && { echo "sbatch_restart: FAIL: the stopped job printed an answer (it ended first)"; fail=1; }
# 2. The restart.
sub="$(CDSMRUN_ROOT="$root" timeout 300 sbatch --wait -O -n "$ntasks" -J "cdsm-restart-$$" --chdir "$root" -o "$out2" \
    "$root/config/slurm/app.sbatch" -n "$ntasks" --ckpt-dir "$ck2" --ckpt-every 20 --restart "$ck" "$app" "$@" 2>&1)"
rc=$?
job2="$(echo "$sub" | sed -n 's/^Submitted batch job \([0-9]*\).*/\1/p')"
grep -vE '^(cdsm\[[a-z0-9-]+\] |  )[a-z_]+ +[0-9]+|finished iteration' "$out2"
s2="$(state "$job2")"
echo "sbatch_restart: restarted job $job2: $s2 (sbatch exit status $rc)"
[ "$s2" = JobState=COMPLETED ] && [ "$rc" -eq 0 ] || { echo "sbatch_restart: FAIL: the restarted job did not complete"; fail=1; }
n="$(grep -c 'restored checkpoint .* of ' "$out2")"
[ "$n" -eq "$ntasks" ] || { echo "sbatch_restart: FAIL: $n ranks restored a checkpoint, not $ntasks"; fail=1; }
got="$(sed -n 's/^answer: //p' "$out2")"
[ "$got" = "$want" ] || { echo "sbatch_restart: FAIL: answer '$got', uninterrupted '$want'"; fail=1; }
grep -q '^result: VERIFIED' "$out2" || { echo "sbatch_restart: FAIL: not verified"; fail=1; }
# Committed output (-P): lines after the manifest were held in the cancelled job, and lines
# before it were either emitted there (the rank's release mark says so) or again by the
# restart, so that the two jobs together print every iteration of every rank exactly once.
if printf '%s\n' "$@" | grep -qx -- -P; then
    iters="$(printf '%s\n' "$@" | grep -A1 -x -- -i | tail -1)"
    for r in $(seq 0 $((ntasks - 1))); do
        n="$(cat "$out1" "$out2" | grep -c "^sor: rank $r finished iteration")"
        u="$(cat "$out1" "$out2" | grep "^sor: rank $r finished iteration" | sort -u | wc -l)"
        [ "$n" -eq "$iters" ] && [ "$u" -eq "$iters" ] ||
            { echo "sbatch_restart: FAIL: rank $r printed $n iteration lines ($u distinct) over both jobs, want $iters"; fail=1; }
    done
    echo "sbatch_restart: stopped job printed $(grep -c 'finished iteration' "$out1") committed lines, the restart $(grep -c 'finished iteration' "$out2")"
    # Killed before its first release, rank 1 emitted nothing: its restart must hold again.
    [ "$stop" = kill ] && ! grep -q 'rank 1: holds again .* the stopped job had not emitted' "$out2" &&
        { echo "sbatch_restart: FAIL: rank 1 of the restart did not hold its checkpoint's output again"; fail=1; }
fi
# 3. Bad input.
msg="$("$root/cmd/cdsmrun" -n "$ntasks" --restart "$ck2/nonexistent" "$app" "$@" 2>&1)"
echo "$msg" | grep -q "no restart manifest\|No such file" || { echo "sbatch_restart: FAIL: a restart with no manifest: $msg"; fail=1; }
msg="$("$root/cmd/cdsmrun" -n $((ntasks + 1)) --restart "$ck" "$app" "$@" 2>&1)"; rc=$?
echo "$msg" | grep -q "its manifest is of a job of $ntasks ranks, this one has $((ntasks + 1))" && [ "$rc" -ne 0 ] ||
    { echo "sbatch_restart: FAIL: a restart with another rank count: $msg"; fail=1; }
# Checkpoints of pages owned by first touch (no spares) restarted by a run that tracks every
# page (CDSM_OWNERSHIP=0), or that owns pages by their home (with a spare), are refused,
# naming both. A job on one host without spares has a node heap (unless CDSM_NODE_HEAP=0
# or the socket transport): its checkpoints are refused by any run without one.
node=1
{ [ "${CDSM_TRANSPORT:-}" = socket ] || [ "${CDSM_NODE_HEAP:-auto}" = 0 ]; } && node=0
if [ "$ntasks" -gt 1 ]; then
    want1="was written with pages owned (by first touch, or by their home with spares), and this run tracks every page"
    want2="written with pages owned by first touch (no spares), and this run owns them by their home (spares)"
    [ "$node" = 1 ] && want1="was written with a node heap, and this run has not one" want2="$want1"
    msg="$(CDSM_OWNERSHIP=0 "$root/cmd/cdsmrun" -n "$ntasks" --restart "$ck" "$app" "$@" 2>&1)"; rc=$?
    echo "$msg" | grep -q "$want1" &&
        [ "$rc" -ne 0 ] || { echo "sbatch_restart: FAIL: a restart with another page ownership: $msg"; fail=1; }
    msg="$("$root/cmd/cdsmrun" -n "$ntasks" -s 1 --restart "$ck" "$app" "$@" 2>&1)"; rc=$?
    echo "$msg" | grep -q "$want2" &&
        [ "$rc" -ne 0 ] || { echo "sbatch_restart: FAIL: a restart with spares of a run without: $msg"; fail=1; }
fi
# A checkpoint folder of another job: the restarted job's files under the first job's
# manifest (another job id) are refused, naming the file.
other="$(ls -d "$ck2"/job-* | head -1)"
cp "$(ls "$ck"/job-*/manifest | head -1)" "$other/manifest"
msg="$("$root/cmd/cdsmrun" -n "$ntasks" --restart "$other" "$app" "$@" 2>&1)"; rc=$?
echo "$msg" | grep -q "rank0.ckpt.*job" && [ "$rc" -ne 0 ] ||
    { echo "sbatch_restart: FAIL: a restart from another job's checkpoints: $(echo "$msg" | grep -i error | head -2)"; fail=1; }
echo "sbatch_restart: bad input refused: $(echo "$msg" | grep -m1 'error:')"
exit $fail
