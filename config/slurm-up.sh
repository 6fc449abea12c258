#!/bin/bash
# Start a one-node Slurm on this machine (munge, slurmctld, slurmd; Debian packages
# slurm-wlm and munge, installed by config/install-deps.sh), with its configuration and
# state in a scratch folder: $LOCAL_SLURM_DIR, default <repo>/build/slurm. Prints the line
# to use it: export SLURM_CONF=<folder>/slurm.conf. Idempotent: a Slurm already started
# from that folder is reused. Needs root (or sudo). Stop it with config/slurm-down.sh.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${LOCAL_SLURM_DIR:-$root/build/slurm}"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
mkdir -p "$dir/state" "$dir/spool"
dir="$(cd "$dir" && pwd)"
conf="$dir/slurm.conf"
export SLURM_CONF="$conf"

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# munge: one daemon per machine; its key comes with the package.
if ! $SUDO sh -c 'munge -n >/dev/null 2>&1'; then
    $SUDO mkdir -p /run/munge /var/log/munge /var/lib/munge
    $SUDO chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
    [ -f /etc/munge/munge.key ] || $SUDO mungekey --create 2>/dev/null || $SUDO create-munge-key -f
    $SUDO munged --force
    for _ in $(seq 50); do $SUDO sh -c 'munge -n >/dev/null 2>&1' && break; sleep 0.1; done
fi

if alive "$dir/slurmctld.pid" && alive "$dir/slurmd.pid"; then
    echo "export SLURM_CONF=$conf"
    exit 0
fi
# CPUs must not exceed what slurmd detects, or the node goes to state "inval".
cpus="$(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p')"
mem="$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')"
[ -n "$cpus" ] || { echo "slurm-up: slurmd -C did not report CPUs" >&2; exit 1; }
[ -n "$mem" ] && [ "$mem" -gt 1000 ] && mem=$((mem - 500)) || mem=1000
sed -e "s|@DIR@|$dir|g" -e "s|@CPUS@|$cpus|g" -e "s|@MEM@|$mem|g" \
    -e "s|@CTLD_PORT@|${LOCAL_SLURM_CTLD_PORT:-6917}|g" -e "s|@D_PORT@|${LOCAL_SLURM_D_PORT:-6918}|g" \
    "$root/config/slurm.conf.in" > "$conf"
alive "$dir/slurmctld.pid" || $SUDO env SLURM_CONF="$conf" slurmctld -c
alive "$dir/slurmd.pid" || $SUDO env SLURM_CONF="$conf" slurmd -N localhost
for _ in $(seq 150); do
    state="$(sinfo -h -N -o %t 2>/dev/null | head -1 || true)"
    case "$state" in idle|mix|alloc) echo "export SLURM_CONF=$conf"; exit 0 ;; esac
    sleep 0.2
done
echo "slurm-up: the node did not become idle within 30 s (state '${state:-none}'); logs in $dir" >&2
tail -5 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 || true
exit 1
