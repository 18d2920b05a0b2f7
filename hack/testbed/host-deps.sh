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

install_debian_packages "${PKGS[@]}"
