#!/bin/bash
# A simulated cluster on this one machine, for tests that need several nodes: each node is
# a network + UTS + mount namespace with its own hostname (sim-nI), /etc/hosts, /sys and
# boot_id (so UCX treats the nodes as different machines and crosses them over TCP), and
# its own slurmd; slurmctld runs in a login namespace (sim-login). The nodes are wired to
# cdsm-netsim (tools/netsim.c), a user-space switch that can add a one-way delay and
# unplug a node. Needs root, iproute2, util-linux (nsenter, unshare), slurm-wlm and munge.
#
#   simcluster.sh up NODES [--delay US]   start it; prints: export SLURM_CONF=...
#   simcluster.sh down                    stop everything it started (idempotent)
#   simcluster.sh login CMD...            run CMD in the login namespace (srun, sbatch, sinfo)
#   simcluster.sh exec NODE CMD...        run CMD on a node (NODE: 3, n3 or sim-n3)
#   simcluster.sh kill-node NODE          kill -9 every process of a node (a node crash)
#   simcluster.sh cut NODE | heal NODE    unplug / replug a node's cable (nobody is told)
#   simcluster.sh delay US                one-way delay of the switch, microseconds
#   simcluster.sh stats                   the switch's counters
#   simcluster.sh pids NODE               the pids running on a node
#   simcluster.sh status                  sinfo of the simulated cluster
#
# State (configuration, logs, pid files) lives in $CDSM_SIM_DIR, default
# <repo>/build-sim/simcluster; the switch binary is $CDSM_NETSIM, default the one built in
# build-sim or build. The namespace names (cdsm-sim-*), tap names (cdsmsim*) and the subnet
# 10.213.0.0/24 are fixed, so one simulated cluster runs at a time on a machine.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
S="${CDSM_SIM_DIR:-$root/build-sim/simcluster}"
NS_PREFIX=cdsm-sim-
TAP_PREFIX=cdsmsim
SUBNET=10.213.0
PORT_CTLD=7817
PORT_D=7818
me=simcluster

die() { echo "$me: $*" >&2; exit 1; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, tap devices, mounts)"

# A node key is n1..nN or login; its namespace is cdsm-sim-<key>.
node_key() {
    local n="${1:-}"
    case "$n" in
        login|sim-login) echo login ;;
        sim-n[0-9]*) n="${n#sim-n}" ;;&
        n[0-9]*) n="${n#n}" ;;&
        *) [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] || die "bad node '$1' (want 3, n3 or sim-n3)"
           [ -f "$S/nnodes" ] || die "no simulated cluster is up in $S"
           [ "$n" -le "$(cat "$S/nnodes")" ] || die "no node $n: the cluster has $(cat "$S/nnodes") nodes"
           echo "n$n" ;;
    esac
}

# Run a command inside a node's namespaces (network, hostname, mounts), in the current
# folder (the mount namespaces are copies of the machine's, so the same paths exist).
enter() {
    local key="$1"; shift
    [ -e "/run/netns/$NS_PREFIX$key" ] && [ -e "$S/ns/$key.mnt" ] || die "node $key does not exist (is the cluster up? state in $S)"
    # Our own settings stay out: cdsm_init() rejects CDSM_* variables it does not know.
    nsenter --net="/run/netns/$NS_PREFIX$key" --uts="$S/ns/$key.uts" --mount="$S/ns/$key.mnt" --wd="$PWD" -- \
        env -u CDSM_SIM_DIR -u CDSM_NETSIM "$@"
}

netsim_bin() {
    local b
    for b in "${CDSM_NETSIM:-}" "$root/build-sim/tools/cdsm-netsim" "$root/build/tools/cdsm-netsim"; do
        [ -n "$b" ] && [ -x "$b" ] && { echo "$b"; return; }
    done
    die "cdsm-netsim not found: build the project (ninja -C build-sim) or set CDSM_NETSIM"
}

ctl() { "$(netsim_bin)" ctl "$S" "$@"; }

# Port of a node on the switch: login is port 0, node I is port I.
port_of() { local k; k="$(node_key "$1")"; [ "$k" = login ] && echo 0 || echo "${k#n}"; }

# One namespace: network (persistent through ip netns), UTS and mount namespaces kept by
# bind mounts in $S/ns; inside, the hostname, a sysfs of this netns, our /etc/hosts and a
# boot_id of its own.
make_node() {
    local key="$1" host="$2" addr="$3" port="$4"
    local ns="$NS_PREFIX$key"
    echo "$ns" >> "$S/namespaces"          # before creating it, so down finds a half-made one
    ip netns add "$ns"
    ip link set "$TAP_PREFIX$port" netns "$ns"
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$addr/24" dev "$TAP_PREFIX$port"
    ip -n "$ns" link set "$TAP_PREFIX$port" up
    # No IPv6 chatter (router solicitations, DAD) through the switch.
    nsenter --net="/run/netns/$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 || true
    mkdir -p "$S/nodes/$host/spool"
    cat /proc/sys/kernel/random/uuid > "$S/nodes/$host/boot_id"
    touch "$S/ns/$key.uts" "$S/ns/$key.mnt"
    nsenter --net="/run/netns/$ns" -- unshare --uts="$S/ns/$key.uts" --mount="$S/ns/$key.mnt" --propagation private -- \
        sh -ec "hostname '$host'
                # slurmd insists on a cgroup mount: keep the machine's across the new /sys.
                mkdir -p '$S/ns/cg-$key'; mount --move /sys/fs/cgroup '$S/ns/cg-$key'
                umount -l /sys; mount -t sysfs sysfs /sys
                mount --move '$S/ns/cg-$key' /sys/fs/cgroup; rmdir '$S/ns/cg-$key'
                mount --bind '$S/hosts' /etc/hosts
                mount --bind '$S/nodes/$host/boot_id' /proc/sys/kernel/random/boot_id
                umount -l '$S/ns'" \
        || die "cannot set up the namespaces of $host"
}

start_munge() {
    munge -n >/dev/null 2>&1 && return 0
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
    [ -f /etc/munge/munge.key ] || mungekey --create 2>/dev/null || create-munge-key -f
    munged --force
    for _ in $(seq 50); do munge -n >/dev/null 2>&1 && return 0; sleep 0.1; done
    die "munged did not start"
}

cmd_up() {
    local n="${1:-}" delay=0
    [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 60 ] || die "usage: $0 up NODES [--delay US] (NODES 1..60)"
    shift
    while [ $# -gt 0 ]; do
        case "$1" in
            --delay) [[ "${2:-}" =~ ^[0-9]+$ ]] || die "--delay wants microseconds"; delay="$2"; shift 2 ;;
            *) die "unknown option '$1' (up NODES [--delay US])" ;;
        esac
    done
    command -v slurmd >/dev/null && command -v slurmctld >/dev/null || die "slurmd/slurmctld not installed (apt-get install slurm-wlm munge)"
    local netsim; netsim="$(netsim_bin)"
    alive "$S/netsim.pid" && die "a simulated cluster is already up in $S (run: $0 down)"
    local other; other="$(ip netns list | awk '{print $1}' | grep "^$NS_PREFIX" || true)"
    if [ -n "$other" ]; then
        [ -f "$S/namespaces" ] || die "namespaces $(echo $other) exist but not from $S: another simulated cluster is up (down it with its CDSM_SIM_DIR)"
        cmd_down                           # leftovers of a failed up in this folder
    fi
    mkdir -p "$S"
    S="$(cd "$S" && pwd)"
    rm -rf "$S/state" "$S/nodes" "$S/namespaces" "$S"/*.log
    mkdir -p "$S/state" "$S/nodes" "$S/ns"
    echo "$n" > "$S/nnodes"
    # The persistent mount namespace files need a private mount to live on.
    mountpoint -q "$S/ns" || { mount --bind "$S/ns" "$S/ns" && mount --make-private "$S/ns"; }

    { echo "127.0.0.1 localhost"; echo "$SUBNET.2 sim-login"
      for i in $(seq "$n"); do echo "$SUBNET.$((10 + i)) sim-n$i"; done; } > "$S/hosts"

    # CPUs must not exceed what slurmd detects, or the node goes to state "inval".
    local cpus mem nodes=""
    cpus="$(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p')"
    [ -n "$cpus" ] || die "slurmd -C did not report CPUs"
    mem=1000
    for i in $(seq "$n"); do
        nodes+="NodeName=sim-n$i NodeHostname=sim-n$i NodeAddr=$SUBNET.$((10 + i)) CPUs=$cpus RealMemory=$mem State=UNKNOWN"$'\n'
    done
    local nodelist="sim-n[1-$n]"; [ "$n" -eq 1 ] && nodelist=sim-n1
    awk -v nodes="${nodes%$'\n'}" '{ if ($0 == "@NODES@") print nodes; else print }' "$root/config/simcluster.conf.in" |
        sed -e "s|@DIR@|$S|g" -e "s|@PORT_CTLD@|$PORT_CTLD|g" -e "s|@PORT_D@|$PORT_D|g" -e "s|@NODELIST@|$nodelist|g" \
        > "$S/slurm.conf"

    start_munge
    "$netsim" -n "$((n + 1))" -s "$S" -d "$delay" -t "$TAP_PREFIX" -D 2>> "$S/netsim.log" \
        || die "cdsm-netsim did not start: $(tail -3 "$S/netsim.log")"
    make_node login sim-login "$SUBNET.2" 0
    for i in $(seq "$n"); do make_node "n$i" "sim-n$i" "$SUBNET.$((10 + i))" "$i"; done

    export SLURM_CONF="$S/slurm.conf"
    enter login slurmctld -c || die "slurmctld did not start: $(tail -5 "$S/slurmctld.log" 2>/dev/null)"
    for i in $(seq "$n"); do
        enter "n$i" slurmd -N "sim-n$i" || die "slurmd of sim-n$i did not start: $(tail -5 "$S/nodes/sim-n$i/slurmd.log" 2>/dev/null)"
    done

    local idle=0 states=""
    for _ in $(seq 300); do
        states="$(enter login sinfo -h -N -o '%N %t' 2>/dev/null || true)"
        idle="$(grep -c ' idle$' <<<"$states" || true)"
        [ "$idle" -eq "$n" ] && break
        sleep 0.2
    done
    if [ "$idle" -ne "$n" ]; then
        echo "$me: $idle of $n nodes idle after 60 s; sinfo says:" >&2
        echo "${states:-<nothing: slurmctld does not answer>}" >&2
        tail -n 5 "$S/slurmctld.log" "$S"/nodes/*/slurmd.log >&2 2>/dev/null || true
        exit 1
    fi
    echo "export SLURM_CONF=$S/slurm.conf"
}

# Stop by pid file, politely first.
stop_pid() {
    local f="$1" pid
    [ -f "$f" ] || return 0
    pid="$(cat "$f")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
}

# kill -9 every process in a network namespace, until none is left (tasks may fork).
kill_ns() {
    local ns="$1" pids
    for _ in $(seq 50); do
        pids="$(ip netns pids "$ns" 2>/dev/null || true)"
        [ -z "$pids" ] && return 0
        kill -9 $pids 2>/dev/null || true
        sleep 0.1
    done
    echo "$me: processes $pids in $ns survive kill -9" >&2
}

cmd_down() {
    [ -d "$S" ] || return 0
    local ns f pids=""
    # The daemons get SIGTERM together and 2 s (slurmd takes seconds to stop on its own);
    # then everything left in the namespaces gets kill -9.
    for f in "$S"/nodes/*/slurmd.pid "$S/slurmctld.pid"; do
        [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && pids+=" $(cat "$f")"
        rm -f "$f"
    done
    if [ -n "$pids" ]; then
        kill $pids 2>/dev/null || true
        for _ in $(seq 20); do
            local left=""
            for f in $pids; do kill -0 "$f" 2>/dev/null && left+=" $f"; done
            [ -z "$left" ] && break
            sleep 0.1
        done
    fi
    if [ -f "$S/namespaces" ]; then
        while read -r ns; do
            [ -e "/run/netns/$ns" ] && kill_ns "$ns"
        done < "$S/namespaces"
    fi
    stop_pid "$S/netsim.pid"               # its taps go with it
    for f in "$S"/ns/*.uts "$S"/ns/*.mnt; do
        [ -e "$f" ] || continue
        mountpoint -q "$f" && umount "$f"
        rm -f "$f"
    done
    [ -d "$S/ns" ] && mountpoint -q "$S/ns" && umount "$S/ns"
    if [ -f "$S/namespaces" ]; then
        while read -r ns; do
            [ -e "/run/netns/$ns" ] && { ip netns del "$ns" || echo "$me: cannot delete namespace $ns" >&2; }
        done < "$S/namespaces"
        rm -f "$S/namespaces"
    fi
    # Taps of a switch that died without cleaning up (never moved, so in this namespace).
    for f in /sys/class/net/"$TAP_PREFIX"*; do
        [ -e "$f" ] && ip link del "$(basename "$f")" 2>/dev/null || true
    done
    rm -f "$S/nnodes" "$S/netsim.sock"
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
    up) cmd_up "$@" ;;
    down) cmd_down ;;
    login) [ $# -gt 0 ] || die "usage: $0 login CMD..."
           SLURM_CONF="$S/slurm.conf" enter login "$@" ;;
    exec) [ $# -gt 1 ] || die "usage: $0 exec NODE CMD..."
          key="$(node_key "$1")"; shift
          SLURM_CONF="$S/slurm.conf" enter "$key" "$@" ;;
    kill-node) [ $# -eq 1 ] || die "usage: $0 kill-node NODE"
               key="$(node_key "$1")"; kill_ns "$NS_PREFIX$key" ;;
    cut|heal) [ $# -eq 1 ] || die "usage: $0 $cmd NODE"
              ctl "$cmd" "$(port_of "$1")" ;;
    delay) [ $# -eq 1 ] || die "usage: $0 delay US"
           ctl delay "$1" ;;
    stats) ctl stats ;;
    pids) [ $# -eq 1 ] || die "usage: $0 pids NODE"
          key="$(node_key "$1")"; ip netns pids "$NS_PREFIX$key" ;;
    status) SLURM_CONF="$S/slurm.conf" enter login sinfo -N ;;
    *) sed -n '/^#   simcluster.sh/s/^#   //p' "$0" >&2; [ -z "$cmd" ] || die "unknown command '$cmd'"; exit 2 ;;
esac
