#!/bin/bash
# Runs one multi-rank test under mpiexec with a bound of its own, below meson's timeout:
# a run that hangs prints each process's stacks (which wait, where) and is then killed,
# instead of ending as a bare meson timeout that says nothing.
# Usage: mpi_guard.sh LIMIT_S MPIEXEC ARGS... (the test binary: the last argument that
# is an executable file's path)
set -u
limit="$1" mpiexec="$2"
shift 2
app=""
for a in "$@"; do
    [[ "$a" == */* && -f "$a" && -x "$a" ]] && app="$a"
done
[ -n "$app" ] || { echo "mpi_guard: no test binary among: $*" >&2; exit 2; }
. "$(dirname "$0")/stacks.sh"
"$mpiexec" "$@" &
pid=$!
if ! timeout "$limit" tail --pid="$pid" -f /dev/null; then
    echo "mpi_guard: FAIL: $(basename "$app") did not end within $limit s; its processes' stacks:"
    show_stacks "$app"
    kill "$pid" 2>/dev/null
    timeout 5 tail --pid="$pid" -f /dev/null # (a grace for mpiexec to end its processes)
    for p in $(app_pids "$app"); do kill -9 "$p"; done # (what mpiexec left)
    exit 1
fi
wait "$pid"
