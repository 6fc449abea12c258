#!/bin/bash
# App test: the cdsm build on NP ranks must verify its own answer and print the same
# "answer:" line as the sequential build, on the app's small test input (-T).
#   app_check.sh SEQ_EXE CDSM_EXE NP [extra args...]
set -uo pipefail
seq_exe=$1 cdsm_exe=$2 np=$3
shift 3
seq_out=$("$seq_exe" -T "$@" 2>&1)
seq_rc=$?
if [ $seq_rc -ne 0 ]; then
    echo "sequential build failed (exit $seq_rc):"; echo "$seq_out"; exit 1
fi
dsm_out=$(timeout 150 mpiexec -n "$np" "$cdsm_exe" -T "$@" 2>&1)
dsm_rc=$?
if [ $dsm_rc -ne 0 ]; then
    echo "cdsm build on $np ranks failed (exit $dsm_rc):"; echo "$dsm_out"; exit 1
fi
want=$(grep -m1 '^ *answer:' <<<"$seq_out")
got=$(grep -m1 '^ *answer:' <<<"$dsm_out")
if [ -z "$want" ] || [ "$want" != "$got" ]; then
    echo "answers differ: sequential '$want', cdsm on $np ranks '$got'"
    echo "$dsm_out"
    exit 1
fi
grep -q '^ *result: VERIFIED' <<<"$dsm_out" || { echo "cdsm run did not verify:"; echo "$dsm_out"; exit 1; }
echo "$got (sequential and $np ranks agree)"
