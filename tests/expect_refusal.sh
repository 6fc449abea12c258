#!/bin/sh
# Runs a job that must fail cdsm_init, not hang (60 s bound), and checks that its output
# names the reason at least MIN times (once per process that must say it).
# Usage: expect_refusal.sh PATTERN MIN MPIEXEC ARGS...
pat="$1" min="$2"
shift 2
out=$(timeout 60 "$@" 2>&1)
rc=$?
echo "$out"
if [ $rc -eq 0 ] || [ $rc -eq 124 ]; then
    echo "expect_refusal: FAIL: exit status $rc (0: not refused; 124: hung)"
    exit 1
fi
n=$(echo "$out" | grep -c -- "$pat")
[ "$n" -ge "$min" ] || { echo "expect_refusal: FAIL: \"$pat\" said $n times, not $min"; exit 1; }
