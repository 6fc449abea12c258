# Shared by the `sim` suite's scripts (sourced, not run): $me names the test, $sim is
# cmd/cdsm-simcluster.

# Exit 77 (skipped) where the machine cannot host the simulated cluster (not root, no
# ip netns, no /dev/net/tun, no Slurm); exit 1 if one is already up (fixed names).
sim_require() {
    local c
    skip() { echo "$me: SKIP: $*"; exit 77; }
    [ "$(id -u)" -eq 0 ] || skip "needs root"
    for c in ip nsenter unshare slurmd slurmctld srun munge; do command -v "$c" >/dev/null || skip "$c is not installed"; done
    [ -e /dev/net/tun ] || skip "no /dev/net/tun"
    ip netns add cdsm-sim-probe$$ 2>/dev/null || skip "ip netns does not work here"
    ip netns del cdsm-sim-probe$$
    if ip netns list | grep -q '^cdsm-sim-'; then
        echo "$me: FAIL: a simulated cluster is already up (cdsm-sim-* namespaces exist): down it first"
        exit 1
    fi
}

# Tear the cluster down (its output only if the first try fails); exit 1 if a namespace
# is left.
sim_down_checked() {
    "$sim" down >/dev/null 2>&1 || "$sim" down
    if ip netns list | grep -q '^cdsm-sim-'; then
        echo "$me: FAIL: namespaces left after down: $(ip netns list | grep '^cdsm-sim-' | tr '\n' ' ')"
        exit 1
    fi
}
