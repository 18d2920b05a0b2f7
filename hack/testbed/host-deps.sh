#!/usr/bin/env bash
# Install the Debian packages the local test bed needs (idempotent; installs only what is missing).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/testbed/lib.sh
source "$HERE/lib.sh"

PKGS=(
  containerd runc containernetworking-plugins  # container runtime + CNI bridge/host-local/loopback/portmap
  iptables conntrack ebtables ipset ethtool socat iproute2 kmod util-linux mount  # kubelet / kube-proxy needs
  buildah debootstrap  # daemonless image builds, local base image
  openssl ca-certificates curl  # certificates, health checks
  gcc libc6-dev  # the static pause binary
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  log "host packages present"
  exit 0
fi
require_root
log "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists when they are missing or older than a day.
if [[ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages' -mtime -1 2>/dev/null | head -1)" ]]; then
  apt-get update -qq
fi
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
log "host packages installed"
