#!/bin/bash
# Heartbeats under load (not in CI): for MINUTES (default 5), runs a job with a spare over
# and over through the launcher (cmd/cdsmrun: sor -r on 4 ranks + 1 spare, no kill) while
# LOAD busy loops (default 2 per core, normal priority) keep every core taken, so that the
# job's processes are oversubscribed; counts false alarms (a process named lost by missed
# heartbeats, or fenced, when nothing was killed) and failed runs. Prints a table and
# writes CSV to bench/results/.
#   bench/run-heartbeat-soak.sh [MINUTES] [LOAD]
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
minutes="${1:-5}" cores="$(nproc)"
load="${2:-$((2 * cores))}"
BUILD_DIR="${BUILD_DIR:-$root/build}" "$root/config/build.sh" || exit 1
eval "$("$root/config/slurm-up.sh")" || { echo "heartbeat-soak: the one-node Slurm did not start" >&2; exit 1; }
burners=()
log="$(mktemp)"
trap 'kill "${burners[@]}" 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq "$load"); do
    sh -c 'while :; do :; done' &
    burners+=($!)
done
mkdir -p "$root/bench/results"
csv="$root/bench/results/heartbeat-soak-$(date +%Y%m%d-%H%M%S).csv"
echo "run,seconds,exit,false_alarms,fenced,verified" > "$csv"
end=$(( $(date +%s) + 60 * minutes ))
runs=0 alarms=0 fails=0 times=()
while [ "$(date +%s)" -lt "$end" ]; do
    t0=$(date +%s.%N)
    timeout 600 "$root/cmd/cdsmrun" -n 4 -s 1 "${BUILD_DIR:-$root/build}/apps/sor" -r -i 200 > "$log" 2>&1
    rc=$?
    t=$(echo "$(date +%s.%N) - $t0" | bc)
    a=$(grep -c "declared lost: no heartbeat" "$log")
    f=$(grep -c "cut off: it heard no heartbeat" "$log")
    v=$(grep -c '^result: VERIFIED' "$log")
    runs=$((runs + 1))
    alarms=$((alarms + a + f))
    [ "$rc" -eq 0 ] && [ "$v" -ge 1 ] || fails=$((fails + 1))
    times+=("$t")
    echo "$runs,$t,$rc,$a,$f,$v" >> "$csv"
    [ "$a" -gt 0 ] || [ "$f" -gt 0 ] && grep -E "declared lost|cut off" "$log" | head -3
done
median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}')
printf '%-8s %-6s %-6s %-7s %-7s %-10s\n' minutes load runs alarms failed median_s
printf '%-8s %-6s %-6s %-7s %-7s %-10s\n' "$minutes" "$load" "$runs" "$alarms" "$fails" "$median"
echo "csv: $csv"
[ "$alarms" -eq 0 ] && [ "$fails" -eq 0 ]
