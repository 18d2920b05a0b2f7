#!/usr/bin/env bash
# Stop the local test-bed cluster: exactly the processes cluster-up.sh started (by the pids it recorded),
# after removing every pod sandbox through the CRI (which also runs CNI DEL); then remove the network
# pieces it made (bridge, dummy node interface, kube-proxy rules, cgroups), restore the sysctls it changed,
# keep the logs in $MOUSFLOW_CACHE/last-cluster-logs and delete the state directory.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/testbed/lib.sh
source "$HERE/lib.sh"
require_root
[[ "${BASH_SOURCE[0]}" == "$0" ]] && take_cluster_lock

PIDS="$TESTBED_STATE/pids"
KBIN="$(kube_bin_dir)"

# stop_proc NAME [SECONDS] — TERM the recorded pid (if it is still that program), then KILL after a grace time.
stop_proc() {
  local name="$1" grace="${2:-20}" f="$PIDS/$1.pid" pid comm
  [[ -f "$f" ]] || return 0
  pid="$(cat "$f")"
  comm="$(cat "/proc/$pid/comm" 2>/dev/null || true)"
  local want="$name"
  [[ "$name" == containerd ]] && want=containerd
  if [[ -z "$comm" ]]; then rm -f "$f"; return 0; fi
  if [[ "$comm" != "${want:0:15}" ]]; then
    log "pid $pid of $name is now '$comm': not ours, leaving it alone"; rm -f "$f"; return 0
  fi
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + grace))
  while proc_running "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
  if proc_running "$pid"; then
    log "$name did not stop in ${grace}s: KILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  rm -f "$f"
}

remove_pods() {
  pid_alive "$PIDS/containerd.pid" containerd || return 0
  [[ -S "$CONTAINERD_SOCK" ]] || return 0
  local cri="$KBIN/testbed-cri"
  if [[ -x "$cri" ]]; then
    log "removing pod sandboxes through the CRI"
    "$cri" -endpoint "unix://$CONTAINERD_SOCK" -timeout 90s clean >/dev/null || log "some pod sandboxes could not be removed"
  fi
  # Anything left (e.g. testbed-cri missing): kill the tasks through containerd itself.
  local c
  for c in $(ctr_k8s tasks ls -q 2>/dev/null); do
    ctr_k8s tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true
  done
  sleep 1
  for c in $(ctr_k8s tasks ls -q 2>/dev/null); do
    ctr_k8s tasks delete -f "$c" >/dev/null 2>&1 || true
  done
}

cleanup_network() {
  if [[ -x "$KBIN/kube-proxy" ]]; then
    "$KBIN/kube-proxy" --cleanup --v=0 >/dev/null 2>&1 || true
  fi
  # The kubelet's own chains (KUBE-FIREWALL, KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT) are not removed by
  # kube-proxy --cleanup: drop the jumps into KUBE-* chains from built-in chains, then the KUBE-* chains.
  local ipt table line chain
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    for table in filter nat mangle raw; do
      { "$ipt-save" -t "$table" 2>/dev/null | grep -E '^-A [A-Z]+ .*-j KUBE-' | grep -vE '^-A KUBE-' || true; } |
        while read -r line; do
          eval "$ipt -w -t $table -D ${line#-A }" 2>/dev/null || true
        done
      for chain in $("$ipt-save" -t "$table" 2>/dev/null | sed -n 's/^:\(KUBE-[^ ]*\) .*/\1/p'); do
        "$ipt" -w -t "$table" -F "$chain" 2>/dev/null || true
      done
      for chain in $("$ipt-save" -t "$table" 2>/dev/null | sed -n 's/^:\(KUBE-[^ ]*\) .*/\1/p'); do
        "$ipt" -w -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
  done
  iptables -w -D FORWARD -j MOUSFLOW-TESTBED 2>/dev/null || true
  iptables -w -F MOUSFLOW-TESTBED 2>/dev/null || true
  iptables -w -X MOUSFLOW-TESTBED 2>/dev/null || true
  # Network namespaces of pods whose sandboxes were not removed (containerd killed with the pods
  # running): only those holding an address of this cluster's pod range.
  local ns addrs prefix="${NODE_POD_CIDR%.*}."
  for ns in $(ip netns list 2>/dev/null | awk '$1 ~ /^cni-/ {print $1}'); do
    addrs="$(ip -n "$ns" -4 -o addr show 2>/dev/null || true)"
    if grep -qF " $prefix" <<<"$addrs"; then
      ip netns delete "$ns" 2>/dev/null || true
    fi
  done
  ip link show "$CNI_BRIDGE" >/dev/null 2>&1 && ip link delete "$CNI_BRIDGE" || true
  ip link show "$NODE_IFACE" >/dev/null 2>&1 && ip link delete "$NODE_IFACE" || true
  if [[ -f "$TESTBED_STATE/sysctl.orig" ]]; then
    while IFS= read -r kv; do [[ -n "$kv" ]] && sysctl -qw "$kv" || true; done <"$TESTBED_STATE/sysctl.orig"
  fi
}

# Unmount whatever is still mounted below our directories (volumes, rootfs, shm), deepest first.
unmount_below() {
  local dir="$1" m
  [[ -d "$dir" ]] || return 0
  awk -v d="$dir" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
}

# Container processes that outlived their shim (containerd killed rather than stopped) are still in the
# kubelet's pod cgroups: those pids are exactly the pods' processes, so end them by id.
kill_orphan_pod_processes() {
  local pids
  pids="$(cat /sys/fs/cgroup/*/kubepods/cgroup.procs /sys/fs/cgroup/*/kubepods/*/cgroup.procs \
    /sys/fs/cgroup/*/kubepods/*/*/cgroup.procs /sys/fs/cgroup/*/kubepods/*/*/*/cgroup.procs 2>/dev/null | sort -un || true)"
  [[ -n "$pids" ]] || return 0
  log "killing $(wc -w <<<"$pids") leftover pod process(es): $(tr '\n' ' ' <<<"$pids")"
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null || true
  sleep 1
}

# The kubelet's pod cgroups (cgroupfs driver, cgroup v1): empty directories once every pod is gone.
remove_cgroups() {
  local ctl
  for ctl in /sys/fs/cgroup/*/kubepods; do
    [[ -d "$ctl" ]] || continue
    find "$ctl" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
}

main() {
  if [[ ! -d "$TESTBED_STATE" ]]; then log "no cluster state in $TESTBED_STATE: nothing to stop"; return 0; fi
  stop_proc kube-proxy
  stop_proc kubelet
  remove_pods
  stop_proc minio
  stop_proc kube-scheduler
  stop_proc kube-controller-manager
  stop_proc kube-apiserver
  stop_proc etcd
  stop_proc containerd 30
  kill_orphan_pod_processes
  cleanup_network
  unmount_below "$TESTBED_STATE"
  remove_cgroups
  if [[ -d "$TESTBED_STATE/logs" ]]; then
    rm -rf "$MOUSFLOW_CACHE/last-cluster-logs"
    mkdir -p "$MOUSFLOW_CACHE"
    cp -r "$TESTBED_STATE/logs" "$MOUSFLOW_CACHE/last-cluster-logs"
  fi
  if [[ "${KEEP_STATE:-0}" != 1 ]]; then
    rm -rf --one-file-system "$TESTBED_STATE"
  fi
  log "cluster down (logs kept in $MOUSFLOW_CACHE/last-cluster-logs)"
}

main "$@"
