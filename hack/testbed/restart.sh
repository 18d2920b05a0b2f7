#!/usr/bin/env bash
# Crash one component of the running test bed and start it again in place, with the flags cluster-up.sh gives
# it (the chaos suite's faults, and a person's way to try one):
#   hack/testbed/restart.sh kube-apiserver|kubelet|minio [restart|kill|start]
# kill: SIGKILL, as a crash, and wait until it is gone; start: start it if it is not running and wait until it
# is ready; restart (the default): both. cluster-up.sh would instead take a cluster without its API server
# down and build a new one.
# TESTBED_KUBELET_EVICTION_MEMORY=<quantity> starts the kubelet with that memory.available hard eviction
# threshold instead of 100Mi (the chaos suite raises it above what is available, for a node under memory
# pressure, then restarts the kubelet without it).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/testbed/cluster-up.sh
source "$HERE/cluster-up.sh" # the step functions; sourcing starts nothing
take_cluster_lock

component="${1:-}"
action="${2:-restart}"
case "$component" in
  kube-apiserver) start=start_apiserver ;;
  kubelet) start=start_kubelet ;;
  minio) start=start_minio ;;
  *) die "usage: $0 kube-apiserver|kubelet|minio [restart|kill|start]" ;;
esac
case "$action" in restart | kill | start) ;; *) die "unknown action '$action' (restart, kill or start)" ;; esac

if [[ "$action" != start ]] && pid_alive "$PIDS/$component.pid" "$component"; then
  pid="$(cat "$PIDS/$component.pid")"
  # The ports it listens on, to see them released: a SIGKILLed multi-threaded process's leader can be a zombie
  # while its other threads still exit holding its sockets, and a new API server started then fails with
  # "bind: address already in use" (seen once in the chaos suite).
  ports="$(ss -Hltnp 2>/dev/null | awk -v p="pid=$pid," 'index($0, p) {n = split($4, a, ":"); print a[n]}' | sort -u)"
  log "killing $component (pid $pid)"
  kill -9 "$pid"
  for _ in $(seq 100); do proc_running "$pid" || break; sleep 0.1; done
  ! proc_running "$pid" || die "$component (pid $pid) did not die"
  for port in $ports; do
    for _ in $(seq 300); do [[ -z "$(ss -Hltn "sport = :$port" 2>/dev/null)" ]] && break; sleep 0.1; done
    [[ -z "$(ss -Hltn "sport = :$port" 2>/dev/null)" ]] || die "$component's port $port is still in use 30 s after the kill"
  done
fi
if [[ "$action" != kill ]]; then
  "$start"
  log "$component running (pid $(cat "$PIDS/$component.pid"))"
fi
