#!/bin/bash
# Loss of a whole node on the simulated cluster (cmd/cdsm-simcluster): 3 nodes with 2
# working ranks each (block layout: ranks 2k, 2k+1 on node k+1) and 2 spares on a 4th
# node. After every rank is up and part of the run is done, node NODE fails:
#   MODE=kill  every process of the node is killed (kill -9: its ranks, slurmstepd, slurmd),
#              as a node crash; the survivors read the closed connections at once;
#   MODE=cut   its cable is unplugged in the switch (nobody is told): its ranks must fence
#              themselves (exit 76: they hear from less than half of the processes) and the
#              survivors must name both within the heartbeat bound; the cable is put back
#              once they have, and nothing from the cut-off ranks may reach anyone after.
# Both ranks of the node are replayed at the same time by the two spares. The answer must
# be bit-identical to the failure-free run on the same 3 nodes and verified; no survivor
# may fail; the run must end by itself and the cluster is torn down, also on failure.
#   sim_node_loss.sh SOURCE_ROOT STATE_DIR NETSIM MODE NODE APP [APP ARGS...]
# With CKPT_EVERY=N the app runs in resume mode's checkpoints (CDSM_CKPT_BARRIERS=N) into a
# temporary folder. With DELAY_US=D the switch adds D us one way. Exit 77 where the machine
# cannot host the cluster (not root, no network namespaces, no Slurm).
set -uo pipefail
root="$1" state="$2" netsim="$3" mode="$4" node="$5" app="$6"
shift 6
me=sim_node_loss
sim="$root/cmd/cdsm-simcluster"
. "$(dirname "$0")/simcluster_test.sh"
fail() { echo "$me: FAIL: $*"; failed=1; }
case "$mode" in kill|cut) ;; *) echo "$me: MODE must be kill or cut, not '$mode'"; exit 2 ;; esac
sim_require

export CDSM_SIM_DIR="$state" CDSM_NETSIM="$netsim"
ref="$(mktemp)" out="$(mktemp)" ckdir=""
spid=""
failed=0
cleanup() {
    [ -n "$spid" ] && kill "$spid" 2>/dev/null
    rm -f "$ref" "$out"
    [ -n "$ckdir" ] && rm -rf "$ckdir"
    sim_down_checked
}
trap cleanup EXIT
trap "exit 143" TERM INT  # (a timeout signal still tears the cluster down)

"$sim" up 4 ${DELAY_US:+--delay "$DELAY_US"} > /dev/null || { echo "$me: FAIL: the simulated cluster did not come up"; exit 1; }
layout=(-O --mpi=pmi2 --ntasks-per-node=2 -m block)
if [ -n "${CKPT_EVERY:-}" ]; then
    ckdir="$(mktemp -d)"
    export CDSM_CKPT_DIR="$ckdir" CDSM_CKPT_BARRIERS="$CKPT_EVERY"
fi

"$sim" login timeout 300 srun -N3 -n6 "${layout[@]}" -w sim-n1,sim-n2,sim-n3 -J cdsm-sim-ref "$app" "$@" > "$ref" 2>&1 \
    || { cat "$ref"; echo "$me: FAIL: the failure-free run on 3 nodes failed"; exit 1; }
want="$(sed -n 's/^answer: //p' "$ref")"
reftime="$(sed -n 's/^time: \([0-9.]*\) s/\1/p' "$ref")"
[ -n "$want" ] && [ -n "$reftime" ] || { cat "$ref"; echo "$me: FAIL: no answer in the failure-free run"; exit 1; }
echo "$me: failure-free on 3 nodes: answer $want in $reftime s"

# Victims: the node's two ranks (block layout, 2 per node).
v0=$(( (node - 1) * 2 )); v1=$((v0 + 1))
CDSM_SPARES=2 CDSM_LOG_LEVEL=info "$sim" login srun -N4 -n8 "${layout[@]}" -w sim-n1,sim-n2,sim-n3,sim-n4 --no-kill \
    -J cdsm-sim-loss "$app" "$@" > "$out" 2>&1 &
spid=$!
for _ in $(seq 600); do
    [ "$(grep -c 'info: initialised: rank' "$out")" -ge 6 ] && break
    kill -0 "$spid" 2>/dev/null || break
    sleep 0.05
done
delay=$(awk -v t="$reftime" 'BEGIN { printf "%.3f", t * 0.4 }')
sleep "$delay"
t_fail=$(date +%s.%N)
if [ "$mode" = kill ]; then
    echo "$me: node $node crashes (kill -9 of its $("$sim" pids "$node" | wc -w) processes) ${delay} s into the run"
    "$sim" kill-node "$node"
else
    echo "$me: node $node's cable cut ${delay} s into the run"
    "$sim" cut "$node"
    # Put it back once the survivors have named both ranks (or after 10 s): the cut-off
    # ranks have fenced themselves by then, so nothing of theirs may arrive any more.
    for _ in $(seq 200); do
        grep -q "rank $v0 lost" "$out" && grep -q "rank $v1 lost" "$out" && break
        sleep 0.05
    done
    "$sim" heal "$node"
    echo "$me: node $node's cable back"
fi
limit=$(awk -v t="$reftime" 'BEGIN { l = 20 * t; if (l < 120) l = 120; if (l > 220) l = 220; printf "%d", l }')
if ! timeout "$limit" tail --pid="$spid" -f /dev/null; then
    cat "$out"
    echo "$me: FAIL: the run did not end within $limit s"
    "$sim" login scancel -n cdsm-sim-loss
    exit 1
fi
wait "$spid"; rc=$?; spid=""
grep -vE '^(cdsm\[[a-z0-9-]+\] |  )[a-z_]+ +[0-9]+' "$out"
echo "$me: srun exit status $rc"

got="$(sed -n 's/^answer: //p' "$out")"
[ "$got" = "$want" ] || fail "answer '$got', failure-free '$want'"
grep -q '^result: VERIFIED' "$out" || fail "the answer was not verified"
for v in $v0 $v1; do
    at="$(sed -n "s/.*rank $v lost ([^)]*) at \([0-9.]*\).*/\1/p" "$out" | sort -n | head -1)"
    [ -n "$at" ] || { fail "rank $v was not named as lost"; continue; }
    ms=$(awk -v a="$at" -v b="$t_fail" 'BEGIN { printf "%.0f", (a - b) * 1000 }')
    echo "$me: rank $v named lost $ms ms after the failure"
    # Bound: a crash is seen at once (closed connections); a cut within the heartbeat
    # timeout (2 s) plus one heartbeat period and scheduling slack.
    bound=$([ "$mode" = kill ] && echo 1000 || echo 3000)
    [ "$ms" -le "$bound" ] || fail "rank $v named $ms ms after the failure (bound $bound ms)"
    grep -q "rank $v: replay of .* the rank is live again" "$out" || fail "rank $v's replacement never went live"
done
grep -q "is replayed at the same time" "$out" || fail "the two ranks were not replayed at the same time"
if [ "$mode" = cut ]; then
    for v in $v0 $v1; do
        grep -q "rank $v cut off: .* fences itself" "$out" || fail "rank $v did not fence itself when cut off"
    done
    grep -q "no heartbeat for" "$out" || fail "the survivors did not name the cut-off ranks by missed heartbeats"
fi
# No survivor may fail (the node's own tasks died or fenced themselves).
bad="$(grep -E 'error: .*task [0-9]+: (Segmentation|Aborted)|cdsm\[[0-9]+\] error: .*(diverged|malformed|cannot replay)' "$out")"
[ -z "$bad" ] || fail "a survivor or replacement failed: $bad"
[ "$failed" = 0 ] && echo "$me: OK"
exit $failed
