#!/bin/bash
# Install the Debian 12 packages cdsm builds and tests with (only what is missing); Slurm
# and munge are for the one-node Slurm the failure tests run under (config/slurm-up.sh);
# iproute2 and util-linux (ip netns, nsenter, unshare) for the simulated cluster (cmd/cdsm-simcluster);
# gnuplot-nox draws the benchmarks' plots.
set -euo pipefail
# Extra package names given as arguments are installed too.
PKGS=(build-essential pkg-config meson ninja-build mpich libmpich-dev libgtest-dev python3 m4 libhdf5-dev libhwloc-dev
      slurm-wlm munge iproute2 util-linux gnuplot-nox "$@")
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "cdsm: installing ${missing[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
