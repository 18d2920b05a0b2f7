# shellcheck shell=bash
# shellcheck disable=SC2034  # settings used by the scripts that source this file
# Shared settings and helpers for the local test bed (sourced, not run).
TESTBED_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"   # hack/testbed
TESTBED_ROOT="$(cd "$TESTBED_DIR/.." && pwd)"                  # hack
REPO_ROOT="$(cd "$TESTBED_ROOT/.." && pwd)"
# shellcheck source=hack/testbed/versions.env
source "$TESTBED_DIR/versions.env"
# Several work trees can share one test bed: each may build its own runner image under its own name
# (e.g. MOUSFLOW_RUNNER_IMAGE=localhost/mousflow/runner-helm:dev); the archive is named after the image.
RUNNER_IMAGE="${MOUSFLOW_RUNNER_IMAGE:-$RUNNER_IMAGE}"
RUNNER_ARCHIVE_NAME="${RUNNER_IMAGE##*/}"
RUNNER_ARCHIVE_NAME="${RUNNER_ARCHIVE_NAME%%:*}"

MOUSFLOW_CACHE="${MOUSFLOW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mousflow}"
# Everything of one running cluster: certs, etcd data, logs, pids, kubeconfig.
TESTBED_STATE="${TESTBED_STATE:-/tmp/mousflow-cluster}"
TESTBED_KUBECONFIG="$TESTBED_STATE/kubeconfig"
NODE_NAME="${TESTBED_NODE_NAME:-mousflow-node}"

# Addresses. Everything listens on loopback or lives in the cluster's own ranges on this machine.
API_PORT="${TESTBED_API_PORT:-6443}"
ETCD_CLIENT_PORT="${TESTBED_ETCD_PORT:-2379}"
KUBERNETES_SERVICE_IP="10.96.0.1"
DNS_SERVICE_IP="10.96.0.10"
ETCD_PEER_PORT="${TESTBED_ETCD_PEER_PORT:-2380}"
MINIO_PORT="${TESTBED_MINIO_PORT:-9000}"
SERVICE_CIDR="10.96.0.0/16"
POD_CIDR="10.244.0.0/16"
NODE_POD_CIDR="10.244.0.0/24"   # the controller manager gives the only node the first /24
POD_GATEWAY="10.244.0.1"
CLUSTER_DOMAIN="cluster.local"
CNI_BRIDGE="mousflow0"
CNI_BIN_DIR="${TESTBED_CNI_BIN_DIR:-/usr/lib/cni}"   # Debian's containernetworking-plugins
# The node's address lives on an interface of its own (mousflow-node): reachable from the host and, through
# the bridge gateway, from pods; nothing listens on the machine's real network interfaces.
NODE_IFACE="mousflow-node"
NODE_IP="${TESTBED_NODE_IP:-10.99.0.1}"
KUBELET_ROOT="$TESTBED_STATE/kubelet"
# Test-only credentials of the local MinIO (the test bed is a throw-away, loopback-only cluster).
MINIO_ROOT_USER="mousflow"
MINIO_ROOT_PASSWORD="mousflow-testbed-secret"

kube_bin_dir()    { echo "$MOUSFLOW_CACHE/bin/kubernetes-$KUBE_VERSION"; }
etcd_bin_dir()    { echo "$MOUSFLOW_CACHE/bin/etcd-$ETCD_VERSION"; }
helm_bin_dir()    { echo "$MOUSFLOW_CACHE/bin/helm-$HELM_VERSION"; }
coredns_bin_dir() { echo "$MOUSFLOW_CACHE/bin/coredns-$COREDNS_VERSION"; }
minio_bin_dir()   { echo "$MOUSFLOW_CACHE/bin/minio-$MINIO_VERSION"; }
images_dir()      { echo "$MOUSFLOW_CACHE/images"; }

log() { printf '[testbed %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# The containerd we start ourselves (PID 1 is not systemd): own socket, root and state directories,
# so that it never collides with a containerd someone else runs on the machine.
CONTAINERD_ROOT="${TESTBED_CONTAINERD_ROOT:-/var/lib/mousflow-containerd}"
CONTAINERD_RUN="$TESTBED_STATE/containerd"
CONTAINERD_SOCK="$CONTAINERD_RUN/containerd.sock"
ctr_k8s() { ctr --address "$CONTAINERD_SOCK" -n k8s.io "$@"; }

# Is process $1 running (a zombie waiting to be reaped is not)?
proc_running() { kill -0 "$1" 2>/dev/null && [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]]; }

# Is the process recorded in pid file $1 alive and still the program we started (name $2)?
pid_alive() {
  local f="$1" name="${2:-}" pid
  [[ -f "$f" ]] || return 1
  pid="$(cat "$f")"
  [[ -n "$pid" ]] && proc_running "$pid" || return 1
  if [[ -n "$name" ]]; then
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "${name:0:15}" ]] || return 1
  fi
}

# Serialise cluster-up/cluster-down (several people or pytest sessions may call them at once). The lock
# lives beside the state directory, which cluster-down deletes. Children inherit TESTBED_LOCKED.
take_cluster_lock() {
  [[ "${TESTBED_LOCKED:-0}" == 1 ]] && return 0
  exec 9>"${TESTBED_STATE%/}.lock"
  if ! flock -n 9; then
    log "waiting for another cluster-up/cluster-down on $TESTBED_STATE to finish"
    flock -w "${TESTBED_LOCK_TIMEOUT:-1800}" 9 || die "timed out waiting for the lock ${TESTBED_STATE%/}.lock"
  fi
  export TESTBED_LOCKED=1
}

# Serialise the builds of binaries and images (make test starts them in the background while the first
# test tiers run; a tier that needs helm, or cluster-up, then waits here and finds them built). Children
# inherit MOUSFLOW_BUILD_LOCKED, so a build that calls another build does not wait for itself.
take_build_lock() {
  [[ "${MOUSFLOW_BUILD_LOCKED:-0}" == 1 ]] && return 0
  mkdir -p "$MOUSFLOW_CACHE"
  exec 8>"$MOUSFLOW_CACHE/build.lock"
  if ! flock -n 8; then
    log "waiting for another build of the test bed's binaries or images to finish"
    flock -w "${TESTBED_LOCK_TIMEOUT:-3600}" 8 || die "timed out waiting for the lock $MOUSFLOW_CACHE/build.lock"
  fi
  export MOUSFLOW_BUILD_LOCKED=1
}

require_root() { [[ $EUID -eq 0 ]] || die "the test bed runs a kubelet and containerd and needs root"; }

# Install those of the given Debian packages that are missing (idempotent: nothing to do, no root needed).
install_debian_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    log "Debian packages present: $*"
    return 0
  fi
  [[ $EUID -eq 0 ]] || die "installing the Debian packages ${missing[*]} needs root"
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Refresh the package lists when they are missing or older than a day (lz4-compressed or not).
  # make test installs the test bed's packages in the background while the browser's are installed in the
  # foreground: one apt at a time (our lock first, then apt's own, waited for rather than failed on).
  local apt=(flock -w 900 /var/lock/mousflow-apt.lock apt-get -o DPkg::Lock::Timeout=600)
  if [[ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mtime -1 2>/dev/null | head -1)" ]]; then
    "${apt[@]}" update -qq
  fi
  "${apt[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  log "Debian packages installed"
}
