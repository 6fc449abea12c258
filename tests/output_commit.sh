#!/bin/bash
# Output commit through the launcher: sor -r prints a committed line per iteration and rank
# (cdsm_printf) and appends one to its own file (cdsm_fwrite) while rank 1 is killed; its
# outputs since the last restart manifest were produced and not yet released when it died
# (the replay redoes at least one iteration), and every line must still appear exactly
# once, on standard output and in each file.
# With KILL_AT=STEP:N rank 1 kills itself instead (CDSM_KILL_AT), e.g. output_release:2: about
# to release its held output at the second restart manifest; the replacement must release it.
# Usage: output_commit.sh SOURCE_ROOT SOR_BINARY ITERS
set -u
root="$(readlink -f "$1")" app="$(readlink -f "$2")" iters="$3"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
# A kill right after a checkpoint leaves no unreleased output to lose (the replay then
# covers one barrier): try again later in the run until the replay covers an iteration.
# The run's program time is about 0.45 s here (0.5 s before the speed work of 2026-12-04,
# when a CI round saw two kills replay one barrier and the later two fall after the end),
# so most tries fall inside it; the late ones are for slower machines.
for at in 0.2 0.25 0.3 0.35 0.4 0.47 0.61 0.83; do
    rm -rf "$dir/ck" "$dir"/out.rank*
    kill=(--kill "1@$at")
    [ -n "${KILL_AT:-}" ] && kill=()
    CDSM_KILL_AT="${KILL_AT:+1:$KILL_AT}" "$root/cmd/cdsmrun" -n 3 -s 1 --ckpt-dir "$dir/ck" --ckpt-every 10 \
        "${kill[@]}" --progress 0 "$app" -r -i "$iters" -P -O "$dir/out" > "$dir/run" 2>&1
    rc=$?
    b="$(sed -n 's/^  recovery     rank 1: .*replay of \([0-9]*\) barriers.*/\1/p' "$dir/run")"
    [ -n "${KILL_AT:-}" ] && break
    [ -n "$b" ] && [ "$b" -ge 2 ] && break
    echo "output_commit: kill at $at s: the replay covered '${b}' barrier(s); again later in the run"
done
grep -v "finished iteration" "$dir/run"
fail=0
[ "$rc" -eq 0 ] || { echo "output_commit: FAIL: launcher exit status $rc"; fail=1; }
for r in 0 1 2; do
    n="$(grep -c "^sor: rank $r finished iteration" "$dir/run")"
    u="$(grep "^sor: rank $r finished iteration" "$dir/run" | sort -u | wc -l)"
    [ "$n" -eq "$iters" ] && [ "$u" -eq "$iters" ] ||
        { echo "output_commit: FAIL: rank $r: $n lines on standard output ($u distinct), want $iters once each"; fail=1; }
    seq 1 "$iters" | sed 's/^/iteration /' | cmp -s - "$dir/out.rank$r" ||
        { echo "output_commit: FAIL: $dir/out.rank$r is not iterations 1..$iters once each:"; head -3 "$dir/out.rank$r"; fail=1; }
done
[ -n "$b" ] && [ "$b" -ge 2 ] ||
    { echo "output_commit: FAIL: rank 1 was not replayed past an output it had produced (replayed barriers: '$b')"; fail=1; }
# Held until its work could no longer be redone: nothing the lost process had released
# is produced again by the replay (the launcher would count it as a repeat). One window is
# documented (DESIGN section 7, "Output held at a restart manifest"): a process killed
# between emitting released output and sending its next barrier arrival makes its
# replacement hold that output again and emit it once more, and the launcher drops the
# repeats. Repeats are accepted only when the replacement says it held output again, and
# no more of them than that output has lines (each at least 33 bytes: "sor: rank 1
# finished iteration N").
repeats="$(sed -n "s/^  output       $((3 * iters)) committed outputs printed once (\([0-9]*\) repeats from replays dropped)$/\1/p" "$dir/run")"
held="$(sed -n 's/.*rank 1: holds again \([0-9]*\) bytes of committed output.*/\1/p' "$dir/run" | head -1)"
if [ -z "$repeats" ]; then
    echo "output_commit: FAIL: no report line with $((3 * iters)) committed outputs printed once"; fail=1
elif [ "$repeats" -gt 0 ] && { [ -z "$held" ] || [ $((repeats * 33)) -gt "$held" ]; }; then
    echo "output_commit: FAIL: the replay produced output the lost process had released already ($repeats repeats, ${held:-no} bytes held again)"; fail=1
elif [ "$repeats" -gt 0 ]; then
    echo "output_commit: $repeats repeats, all of them output the replacement held again ($held bytes): the kill fell between an emission and the next arrival"
fi
if [ -n "${KILL_AT:-}" ]; then
    grep -q "fault injection: rank 1 kills itself at step ${KILL_AT%%:*}$" "$dir/run" ||
        { echo "output_commit: FAIL: rank 1 did not kill itself at $KILL_AT"; fail=1; }
    grep -q "rank 1: holds again [0-9]* bytes of committed output" "$dir/run" ||
        { echo "output_commit: FAIL: the replacement did not take over the output its lost process held"; fail=1; }
fi
echo "output_commit: every line once on standard output and in each file; rank 1 replayed $b barriers"
exit $fail
