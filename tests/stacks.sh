# Sourced by test scripts (not run). app_pids APP: the live processes whose executable is
# APP (never the script itself). show_stacks APP prints, for each, the stacks of its
# threads that are in the library, the apps or the PARMACS layer (what a hung test needs
# to say where it waits).
app_pids() {
    local app="$1" p
    for p in $(pgrep -f "$(basename "$app")" | grep -v "^$$\$"); do
        [ "$(readlink "/proc/$p/exe" 2>/dev/null)" = "$(readlink -f "$app")" ] && echo "$p"
    done
}

show_stacks() {
    local app="$1" p
    for p in $(app_pids "$app"); do
        echo "== pid $p: $(tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | grep -E '^(SLURM_PROCID|PMI_RANK)=' | tr '\n' ' ')"
        command -v gdb >/dev/null && timeout 30 gdb -p "$p" -batch -ex 'thread apply all bt' 2>/dev/null |
            grep -E '^Thread|^#[01] |^#.* at \.\./(lib|apps|splash|tests)/' | sed -E 's/^Thread ([0-9]+) .*"([a-z]+)".*/Thread \1 \2:/'
    done
}
