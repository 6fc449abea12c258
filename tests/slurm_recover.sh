#!/bin/bash
# Online recovery under Slurm direct launch (srun --mpi=pmi2, the one-node Slurm of
# config/slurm-up.sh): an app runs on NTASKS working ranks plus SPARES spares; each
# victim rank is killed with kill -9 at a moment drawn from SEED within the failure-free
# run's time, one at a time (the next after the previous replacement is live). The final
# answer must be bit-identical to the failure-free run's, verified, every lost rank named,
# and no surviving task may exit with an error.
# With EXPECT_FAILURE="text" in the environment the run cannot recover (more victims than
# spares; a lock program, whose replay is not there yet): it must instead end by itself
# with a failing status and a message containing the text.
# With CONCURRENT=1 all victims are killed at once, so that the later deaths come during
# the first one's recovery (with EXPECT_FAILURE: a second failure during a recovery).
# With GAP=S each victim after the first is killed S seconds after the one before, without
# waiting for its replacement to be live: overlapping failures (the later loss lands while
# the earlier replacement replays or rebuilds the lock queues).
# With CKPT_EVERY=N the run with kills also checkpoints every N barriers (into a temporary
# folder): kills then land in checkpoint writes, and the script says which did.
# With SIGNAL=STOP the victims are frozen (kill -STOP) instead of killed: nothing closes
# their sockets, as with a lost node; the survivors must notice the missing heartbeats,
# fence the frozen process (kill it) and recover as from a death.
# With EXPECT_RESTORE=1 (a program in resume mode, cdsm_resume) a replacement must have
# restarted from its rank's checkpoint, not from the program's start.
# With KILL_AT=STEP:N (and CKPT_EVERY) the victim is not killed from outside: it kills
# itself the N-th time it reaches that step of a checkpoint (CDSM_KILL_AT; steps
# ckpt_snapshot, ckpt_write, ckpt_rename, ckpt_fsync, ckpt_commit, ckpt_collect).
# With INJECT=RANK:STEP:N (CDSM_KILL_AT as is) the victims are killed from outside and
# rank RANK also kills itself at that step: a second loss at a chosen moment.
# Usage: slurm_recover.sh SOURCE_ROOT APP_BINARY NTASKS SPARES VICTIMS SEED [APP ARGS...]
#   VICTIMS: comma-separated ranks, e.g. "1" or "0,2"
set -u
root="$1" app="$2" ntasks="$3" spares="$4" victims="$5" seed="$6"
shift 6
eval "$("$root/config/slurm-up.sh")" || { echo "slurm_recover: the one-node Slurm did not start" >&2; exit 1; }
. "$root/tests/stacks.sh"
ref="$(mktemp)" out="$(mktemp)"
ckdir=""
trap 'rm -f "$ref" "$out"; [ -n "$ckdir" ] && rm -rf "$ckdir"; [ -n "${spid:-}" ] && kill "$spid" 2>/dev/null' EXIT

# The failure-free run has its own bound (a hang there printed nothing but meson's
# timeout once in a full round): stacks and output, then fail.
srun -O --mpi=pmi2 -n "$ntasks" -J "cdsm-ref-$$" "$app" "$@" > "$ref" 2>&1 &
spid=$!
if ! timeout 100 tail --pid="$spid" -f /dev/null; then
    echo "slurm_recover: FAIL: the failure-free run did not end within 100 s"
    show_stacks "$app"
    echo "slurm_recover: its output so far:"
    cat "$ref"
    scancel -n "cdsm-ref-$$" 2>/dev/null
    exit 1
fi
wait "$spid" || { spid=""; echo "slurm_recover: failure-free run failed"; cat "$ref"; exit 1; }
spid=""
want="$(sed -n 's/^answer: //p' "$ref")"
reftime="$(sed -n 's/^time: \([0-9.]*\) s/\1/p' "$ref")"
[ -n "$want" ] && [ -n "$reftime" ] || { echo "slurm_recover: no answer in the failure-free run"; cat "$ref"; exit 1; }
echo "slurm_recover: failure-free answer $want in $reftime s"

# One run with the kills. scale shrinks the kill moments (a retry after a kill that came
# only when the run had ended: on a loaded machine the run can be faster than its reference).
appargs=("$@")
if [ -n "${CKPT_EVERY:-}" ]; then
    ckdir="$(mktemp -d)"
    export CDSM_CKPT_DIR="$ckdir" CDSM_CKPT_BARRIERS="$CKPT_EVERY"
fi
killed=()
attempt() {
    local scale="$1"
    local inject="${INJECT:-}"
    [ -n "${KILL_AT:-}" ] && inject="$victims:$KILL_AT"
    CDSM_KILL_AT="$inject" CDSM_SPARES="$spares" CDSM_LOG_LEVEL=info srun -O --mpi=pmi2 -n $((ntasks + spares)) \
        -J "cdsm-recover-$$" "$app" "${appargs[@]}" > "$out" 2>&1 &
    spid=$!
    # pid of the process that holds rank r now (its last "initialised" line).
    holder() { sed -n "s/^cdsm\[$1\] info: initialised: rank $1 of [0-9]*, pid \([0-9]*\),.*/\1/p" "$out" | tail -1; }
    RANDOM=$seed
    k=0
    for v in ${victims//,/ }; do
        [ -n "${KILL_AT:-}" ] && break # the victim kills itself
        # Wait until every rank is up (and, after a kill, until the replacement is live).
        if [ -n "${GAP:-}" ] && [ "$k" -gt 0 ]; then
            sleep "$GAP"
            pid="$(holder "$v")"
            echo "slurm_recover: kill -9 rank $v (pid $pid) ${GAP} s after the previous kill"
            kill -9 "$pid"
            killed+=("$v:$pid")
            k=$((k + 1))
            continue
        fi
        for _ in $(seq 600); do
            up=$(grep -c "info: initialised: rank" "$out")
            live=$(grep -c "the rank is live again" "$out")
            [ "$up" -ge $((ntasks + k)) ] && [ "$live" -ge "$k" ] && break
            kill -0 "$spid" 2>/dev/null || break
            sleep 0.05
        done
        # Restart from a checkpoint expected: wait until the victim has committed two (the
        # first then certainly ended its collection), however slow the machine is today.
        if [ "${EXPECT_RESTORE:-0}" = 1 ] && [ -n "$ckdir" ]; then
            for _ in $(seq 1200); do
                find "$ckdir" -name "rank$v.ckpt*.h5" ! -name "rank$v.ckpt1.h5" | grep -q . && break
                kill -0 "$spid" 2>/dev/null || break
                sleep 0.05
            done
        fi
        # A moment within the failure-free run's time (the start-up is already behind us),
        # within its share of it when there are several victims, so that all of them die.
        nv=$(echo "$victims" | tr ',' ' ' | wc -w)
        delay=$(awk -v r=$RANDOM -v t="$reftime" -v nv="$nv" -v s="$scale" 'BEGIN { printf "%.3f", (r % 1000) / 1000.0 * t * 0.6 / nv * s }')
        sleep "$delay"
        pid="$(holder "$v")"
        if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
            echo "slurm_recover: rank $v has no live process to kill (the run ended after ${delay} s?)"
            break
        fi
        if [ "${CONCURRENT:-0}" = 1 ]; then
            # Every victim at once: the later deaths are seen within the first's recovery.
            pids=()
            for w in ${victims//,/ }; do
                pids+=("$(holder "$w")")
                killed+=("$w:${pids[-1]}")
                k=$((k + 1))
            done
            echo "slurm_recover: kill -9 ranks $victims (pids ${pids[*]}) at once, ${delay} s into the run"
            kill -9 "${pids[@]}"
            break
        fi
        echo "slurm_recover: kill -${SIGNAL:-9} rank $v (pid $pid) ${delay} s into the run"
        kill -"${SIGNAL:-9}" "$pid"
        killed+=("$v:$pid")
        k=$((k + 1))
    done
    # A hung recovery must not end as a bare meson timeout: after a deadline well past any
    # recovery, show what each remaining process is doing and what the run printed.
    limit=$(awk -v t="$reftime" 'BEGIN { l = 30 * t; if (l < 90) l = 90; printf "%d", l }')
    if ! timeout "$limit" tail --pid="$spid" -f /dev/null; then
        echo "slurm_recover: FAIL: the run did not end within $limit s"
        # Backtraces first, the run's own output last: a CI log keeps only its tail.
        show_stacks "$app"
        echo "slurm_recover: the run's output so far:"
        cat "$out"
        scancel -n "cdsm-recover-$$" 2>/dev/null
        kill "$spid" 2>/dev/null
        exit 1
    fi
    wait "$spid"
    rc=$?
    spid=""
    if [ -n "${KILL_AT:-}" ] && grep -qE "fault injection: rank $victims kills itself at step ${KILL_AT%%:*}\$" "$out"; then
        killed+=("$victims:injected")
        k=1
    fi
}
for scale in 1 0.5 0.25; do
    attempt "$scale"
    # No kill landed in the run (it ended first, with status 0): try again, earlier.
    if [ "$rc" -eq 0 ] && ! grep -q " lost " "$out" && [ -z "${EXPECT_FAILURE:-}" ] && [ -z "${KILL_AT:-}" ]; then
        echo "slurm_recover: the run ended before the kill took effect; again with the kill moments x $scale / 2"
        continue
    fi
    break
done
grep -vE '^(cdsm\[[a-z0-9-]+\] |  )[a-z_]+ +[0-9]+' "$out"
if [ -n "$ckdir" ]; then
    echo "slurm_recover: checkpoint files written: $(find "$ckdir" -name 'rank*.h5' | wc -l)"
    for vp in "${killed[@]}"; do
        part="$(find "$ckdir" -name ".rank${vp%%:*}.ckpt*.h5.tmp${vp##*:}" | head -1)"
        [ -n "$part" ] && echo "slurm_recover: rank ${vp%%:*} died in the middle of a checkpoint write ($(basename "$part"), $(stat -c %s "$part") bytes)"
    done
fi
echo "slurm_recover: srun exit status $rc"
fail=0
if [ -n "${INJECT:-}" ] && ! grep -q "fault injection: rank ${INJECT%%:*} kills itself at step $(echo "$INJECT" | cut -d: -f2)\$" "$out"; then
    echo "slurm_recover: FAIL: the injected second loss ($INJECT) never happened"; fail=1
fi
if [ -n "${EXPECT_FAILURE:-}" ]; then
    grep -qF "$EXPECT_FAILURE" "$out" || { echo "slurm_recover: FAIL: no message '$EXPECT_FAILURE'"; fail=1; }
    grep -q '^result: VERIFIED' "$out" && { echo "slurm_recover: FAIL: a run that lost a rank for good verified"; fail=1; }
    [ "$rc" -ne 0 ] || { echo "slurm_recover: FAIL: exit status 0 after losing a rank for good"; fail=1; }
    exit $fail
fi
got="$(sed -n 's/^answer: //p' "$out")"
[ "$got" = "$want" ] || { echo "slurm_recover: FAIL: answer '$got', failure-free '$want'"; fail=1; }
# srun ends with the killed task's status; rank 0 says that the job's work is complete.
if [ "$k" -gt 0 ] && ! grep -q "job complete: every rank finished after [1-9][0-9]* process loss" "$out"; then
    echo "slurm_recover: FAIL: rank 0 did not say the job completed after the loss"; fail=1
fi
grep -q '^result: VERIFIED' "$out" || { echo "slurm_recover: FAIL: the answer was not verified"; fail=1; }
for v in ${victims//,/ }; do
    if grep -q "rank $v lost" "$out"; then :; elif [ "$k" -gt 0 ]; then
        echo "slurm_recover: FAIL: rank $v was not named as lost"; fail=1
    fi
done
if grep -E 'Exited with exit code|error: .*task [0-9]+: (Segmentation|Aborted)' "$out"; then
    echo "slurm_recover: FAIL: a surviving task failed"; fail=1
fi
[ "$k" -gt 0 ] || { echo "slurm_recover: FAIL: nothing was killed"; fail=1; }
if [ "${SIGNAL:-9}" = STOP ]; then
    grep -q "no heartbeat for" "$out" || { echo "slurm_recover: FAIL: the frozen process was not declared lost by heartbeat"; fail=1; }
    for vp in "${killed[@]}"; do
        ! kill -0 "${vp##*:}" 2>/dev/null || { echo "slurm_recover: FAIL: frozen pid ${vp##*:} still exists (not fenced)"; kill -9 "${vp##*:}"; fail=1; }
    done
fi
if [ "${EXPECT_RESTORE:-0}" = 1 ] && ! grep -q "restored checkpoint" "$out"; then
    echo "slurm_recover: FAIL: no replacement restarted from a checkpoint"; fail=1
fi
exit $fail
