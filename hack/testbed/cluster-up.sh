#!/usr/bin/env bash
# Bring up a real single-node Kubernetes cluster from local processes (no Docker, no registry):
#   containerd (Debian) + runc + CNI bridge/host-local, etcd, kube-apiserver, kube-controller-manager,
#   kube-scheduler, kubelet, kube-proxy, CoreDNS (in-cluster Deployment) and MinIO (host process reached
#   from pods through the Service mousflow-system/minio).
# State (certs, etcd data, logs, pids, kubeconfig) lives in $TESTBED_STATE (default /tmp/mousflow-cluster);
# binaries and images are cached in $MOUSFLOW_CACHE (default ~/.cache/mousflow).
# Idempotent: when the cluster is already up and healthy this only prints its status.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/testbed/lib.sh
source "$HERE/lib.sh"
# shellcheck source=hack/testbed/pki.sh
source "$HERE/pki.sh"
require_root
[[ "${BASH_SOURCE[0]}" == "$0" ]] && take_cluster_lock

T_START=$SECONDS
KBIN="$(kube_bin_dir)"
LOGS="$TESTBED_STATE/logs"
PIDS="$TESTBED_STATE/pids"
KUBECTL=("$KBIN/kubectl" --kubeconfig "$TESTBED_KUBECONFIG")

# ---------------------------------------------------------------------------------------------- helpers
# start_proc NAME COMMAND... — start a long-running component in its own session, log and pid file
# under the state directory. The recorded pid is the component itself (setsid execs it).
start_proc() {
  local name="$1"; shift
  if pid_alive "$PIDS/$name.pid" "$(basename "$1")"; then
    log "$name already running (pid $(cat "$PIDS/$name.pid"))"; return 0
  fi
  log "starting $name"
  # 9>&-: the component must not inherit the cluster lock (it would hold it for its whole life).
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null 9>&- &
  echo $! >"$PIDS/$name.pid"
}

# fail_with NAME MESSAGE — stop with the tail of a component's log.
fail_with() {
  log "ERROR: $2"
  if [[ -f "$LOGS/$1.log" ]]; then
    echo "----- last lines of $LOGS/$1.log -----" >&2
    tail -n 30 "$LOGS/$1.log" >&2
  fi
  exit 1
}

# wait_for NAME SECONDS COMMAND... — poll COMMAND until it succeeds; the component must stay alive.
wait_for() {
  local name="$1" secs="$2"; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [[ -f "$PIDS/$name.pid" ]] && ! pid_alive "$PIDS/$name.pid"; then
      fail_with "$name" "$name exited"
    fi
    ((SECONDS < deadline)) || fail_with "$name" "$name not ready after ${secs}s"
    sleep 0.5
  done
}

port_free() { ! ss -Hltn "sport = :$1" | grep -q .; }

api_ready() {
  curl -sf --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "https://$NODE_IP:$API_PORT/readyz" | grep -q ok
}

cluster_healthy() {
  pid_alive "$PIDS/kube-apiserver.pid" kube-apiserver && pid_alive "$PIDS/kubelet.pid" kubelet &&
    api_ready && [[ "$("${KUBECTL[@]}" get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

# render TEMPLATE — substitute @VAR@ placeholders with the values of shell variables.
render() {
  local s
  s="$(cat "$1")"
  for v in NODE_IP NODE_NAME DNS_SERVICE_IP CLUSTER_DOMAIN COREDNS_IMAGE MINIO_PORT MINIO_ROOT_USER MINIO_ROOT_PASSWORD; do
    s="${s//@$v@/${!v}}"
  done
  printf '%s\n' "$s"
}

# ---------------------------------------------------------------------------------------------- steps
host_setup() {
  "$HERE/host-deps.sh"
  modprobe br_netfilter 2>/dev/null || true
  modprobe overlay 2>/dev/null || true
  # Remember the values we change so cluster-down can put them back.
  if [[ ! -f "$TESTBED_STATE/sysctl.orig" ]]; then
    {
      echo "net.ipv4.ip_forward=$(sysctl -n net.ipv4.ip_forward)"
      [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] &&
        echo "net.bridge.bridge-nf-call-iptables=$(sysctl -n net.bridge.bridge-nf-call-iptables)"
    } >"$TESTBED_STATE/sysctl.orig"
  fi
  sysctl -qw net.ipv4.ip_forward=1
  [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] && sysctl -qw net.bridge.bridge-nf-call-iptables=1
  # The node's address lives on an interface of its own, so the API server is reachable from pods
  # (through the bridge gateway) and from the host without listening on the machine's real interface.
  # A port-less bridge rather than a dummy device: this machine's kernel has no dummy driver.
  if ! ip link show "$NODE_IFACE" >/dev/null 2>&1; then
    ip link add "$NODE_IFACE" type dummy 2>/dev/null || ip link add "$NODE_IFACE" type bridge
  fi
  ip addr replace "$NODE_IP/32" dev "$NODE_IFACE"
  ip link set "$NODE_IFACE" up
  # Pods talk to each other, to Services and to the node, never beyond this machine: packets from the pod
  # range that would be forwarded anywhere but the pod bridge are dropped (there is no masquerading
  # either, so nothing from a pod could ever get an answer from outside).
  iptables -w -N MOUSFLOW-TESTBED 2>/dev/null || iptables -w -F MOUSFLOW-TESTBED
  iptables -w -A MOUSFLOW-TESTBED -s "$POD_CIDR" ! -o "$CNI_BRIDGE" -j DROP
  iptables -w -C FORWARD -j MOUSFLOW-TESTBED 2>/dev/null || iptables -w -I FORWARD 1 -j MOUSFLOW-TESTBED
}

check_ports() {
  local p
  for p in "$ETCD_CLIENT_PORT" "$API_PORT" 10250 10257 10259 "$MINIO_PORT"; do
    port_free "$p" || die "port $p is in use: another cluster or service is running (see 'ss -ltnp sport = :$p')"
  done
}

write_containerd_config() {
  mkdir -p "$CONTAINERD_RUN" "$CONTAINERD_ROOT" "$TESTBED_STATE/cni/net.d" "$TESTBED_STATE/cni/ipam"
  cat >"$CONTAINERD_RUN/config.toml" <<EOF
# containerd for the mousflow test bed (written by hack/testbed/cluster-up.sh).
version = 2
root = "$CONTAINERD_ROOT"
state = "$CONTAINERD_RUN/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "$CONTAINERD_SOCK"

[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"

[debug]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  # The locally built pause image (imported before the kubelet starts; never pulled).
  sandbox_image = "$PAUSE_IMAGE"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_unprivileged_ports = false
  # This machine withholds CAP_SYS_RESOURCE even from root, so lowering a process's oom_score_adj
  # (the kubelet asks -998 for sandboxes) fails inside runc init ("can't get final child's PID from
  # pipe: EOF"). Clamp requested values to containerd's own instead, as for rootless containerd.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # PID 1 is not systemd: cgroupfs, as the kubelet's cgroupDriver.
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$TESTBED_STATE/cni/net.d"
    max_conf_num = 1
EOF
  # Pod network: one Linux bridge with host-local addresses from the node's pod CIDR. No masquerading:
  # pods talk to each other, to Services and to the node, and to nothing outside this machine.
  cat >"$TESTBED_STATE/cni/net.d/10-mousflow.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "mousflow",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$CNI_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$TESTBED_STATE/cni/ipam",
        "ranges": [[{"subnet": "$NODE_POD_CIDR", "gateway": "$POD_GATEWAY"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
}

start_containerd() {
  write_containerd_config
  start_proc containerd containerd --config "$CONTAINERD_RUN/config.toml"
  wait_for containerd 30 ctr --address "$CONTAINERD_SOCK" version
}

start_etcd() {
  mkdir -p "$TESTBED_STATE/etcd"
  chmod 700 "$TESTBED_STATE/etcd"
  # --unsafe-no-fsync: the data is thrown away at cluster-down; skipping fsync keeps the API fast on
  # a shared disk.
  start_proc etcd "$(etcd_bin_dir)/etcd" --name mousflow --data-dir "$TESTBED_STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "mousflow=http://127.0.0.1:$ETCD_PEER_PORT" --listen-metrics-urls "" \
    --unsafe-no-fsync --log-level warn
  wait_for etcd 60 curl -sf "http://127.0.0.1:$ETCD_CLIENT_PORT/health"
}

start_apiserver() {
  start_proc kube-apiserver "$KBIN/kube-apiserver" \
    --advertise-address="$NODE_IP" --bind-address="$NODE_IP" --secure-port="$API_PORT" \
    --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --authorization-mode=Node,RBAC --anonymous-auth=false \
    --client-ca-file="$PKI/ca.crt" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$PKI/ca.crt" --kubelet-preferred-address-types=InternalIP \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-account-issuer="https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
    --enable-admission-plugins=NodeRestriction \
    --allow-privileged=true --profiling=false --v=1 ${TESTBED_APISERVER_FLAGS:-}
  wait_for kube-apiserver 120 api_ready
}

start_controllers() {
  local kc="$TESTBED_STATE/controller-manager.kubeconfig"
  start_proc kube-controller-manager "$KBIN/kube-controller-manager" \
    --kubeconfig="$kc" --authentication-kubeconfig="$kc" --authorization-kubeconfig="$kc" \
    --bind-address=127.0.0.1 --leader-elect=false \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --use-service-account-credentials=true \
    --allocate-node-cidrs=true --cluster-cidr="$POD_CIDR" --node-cidr-mask-size=24 \
    --service-cluster-ip-range="$SERVICE_CIDR" --profiling=false --v=1
  local skc="$TESTBED_STATE/scheduler.kubeconfig"
  cat >"$TESTBED_STATE/scheduler.yaml" <<EOF
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: $skc
leaderElection:
  leaderElect: false
EOF
  start_proc kube-scheduler "$KBIN/kube-scheduler" --config="$TESTBED_STATE/scheduler.yaml" \
    --authentication-kubeconfig="$skc" --authorization-kubeconfig="$skc" --bind-address=127.0.0.1 --v=1
  wait_for kube-controller-manager 60 curl -skf https://127.0.0.1:10257/healthz
  wait_for kube-scheduler 60 curl -skf https://127.0.0.1:10259/healthz
}

start_kubelet() {
  mkdir -p "$KUBELET_ROOT" "$TESTBED_STATE/manifests"
  cat >"$TESTBED_STATE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: $PKI/ca.crt
authorization:
  mode: Webhook
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
# This machine: cgroup v1, PID 1 is not systemd, containerd 1.6 (cannot report its cgroup driver).
cgroupDriver: cgroupfs
cgroupsPerQOS: true
failCgroupV1: false
failSwapOn: true
clusterDNS: [$DNS_SERVICE_IP]
clusterDomain: $CLUSTER_DOMAIN
resolvConf: /etc/resolv.conf
staticPodPath: $TESTBED_STATE/manifests
rotateCertificates: false
serializeImagePulls: false
# Locally imported images cannot be pulled again: never garbage-collect them for disk usage.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: ${TESTBED_KUBELET_EVICTION_MEMORY:-100Mi}
  nodefs.available: 2%
  nodefs.inodesFree: 2%
  imagefs.available: 2%
maxPods: 110
EOF
  start_proc kubelet "$KBIN/kubelet" --config="$TESTBED_STATE/kubelet.yaml" \
    --kubeconfig="$TESTBED_STATE/kubelet.kubeconfig" --root-dir="$KUBELET_ROOT" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" \
    --pod-infra-container-image="$PAUSE_IMAGE" --v=1
  wait_for kubelet 60 curl -sf http://127.0.0.1:10248/healthz
}

start_kube_proxy() {
  cat >"$TESTBED_STATE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $TESTBED_STATE/kube-proxy.kubeconfig
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$NODE_IP/32"]
iptables:
  localhostNodePorts: false
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
  start_proc kube-proxy "$KBIN/kube-proxy" --config="$TESTBED_STATE/kube-proxy.yaml" --v=1
  wait_for kube-proxy 60 curl -sf http://127.0.0.1:10256/healthz
}

start_minio() {
  mkdir -p "$TESTBED_STATE/minio/data"
  MINIO_ROOT_USER="$MINIO_ROOT_USER" MINIO_ROOT_PASSWORD="$MINIO_ROOT_PASSWORD" \
    MINIO_BROWSER=off MINIO_UPDATE=off MINIO_CI_CD=1 \
    start_proc minio "$(minio_bin_dir)/minio" server "$TESTBED_STATE/minio/data" \
    --address "$NODE_IP:$MINIO_PORT" --console-address "127.0.0.1:0" --quiet
  wait_for minio 60 curl -sf "http://$NODE_IP:$MINIO_PORT/minio/health/live"
  cat >"$TESTBED_STATE/s3.env" <<EOF
# S3 (MinIO) of the local test bed. From the host: S3_ENDPOINT_URL; from pods:
# http://minio.mousflow-system.svc.$CLUSTER_DOMAIN:$MINIO_PORT (credentials in Secret mousflow-system/minio-credentials).
S3_ENDPOINT_URL=http://$NODE_IP:$MINIO_PORT
S3_ENDPOINT_URL_IN_CLUSTER=http://minio.mousflow-system.svc.$CLUSTER_DOMAIN:$MINIO_PORT
AWS_ACCESS_KEY_ID=$MINIO_ROOT_USER
AWS_SECRET_ACCESS_KEY=$MINIO_ROOT_PASSWORD
AWS_DEFAULT_REGION=us-east-1
EOF
}

wait_node_ready() {
  local deadline=$((SECONDS + 120)) st=""
  while ((SECONDS < deadline)); do
    st="$("${KUBECTL[@]}" get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)"
    [[ "$st" == True ]] && { log "node $NODE_NAME is Ready"; return 0; }
    pid_alive "$PIDS/kubelet.pid" kubelet || fail_with kubelet "kubelet exited"
    sleep 1
  done
  "${KUBECTL[@]}" describe node "$NODE_NAME" >&2 || true
  fail_with kubelet "node $NODE_NAME not Ready after 120 s"
}

apply_addons() {
  log "applying cluster add-ons (CoreDNS, MinIO Service)"
  local f
  for f in "$HERE"/manifests/*.yaml; do
    render "$f" | "${KUBECTL[@]}" apply -f - >/dev/null
  done
  if ! "${KUBECTL[@]}" -n kube-system rollout status deployment/coredns --timeout=120s >/dev/null; then
    "${KUBECTL[@]}" -n kube-system get pods -o wide >&2 || true
    "${KUBECTL[@]}" -n kube-system describe pods -l k8s-app=kube-dns >&2 || true
    fail_with kubelet "CoreDNS did not become ready"
  fi
}

on_exit() {
  local rc="$1"
  ((rc != 0)) || return 0
  [[ "${TESTBED_KEEP_ON_FAILURE:-0}" == 1 ]] && { log "cluster-up failed; leaving it as it is (TESTBED_KEEP_ON_FAILURE=1)"; return 0; }
  ls "$PIDS"/*.pid >/dev/null 2>&1 || return 0
  log "cluster-up failed: stopping what it started (logs will be in $MOUSFLOW_CACHE/last-cluster-logs)"
  "$HERE/cluster-down.sh" >&2 || true
}

main() {
  mkdir -p "$TESTBED_STATE" "$LOGS" "$PIDS"
  if [[ -f "$TESTBED_KUBECONFIG" ]] && cluster_healthy; then
    # MinIO gone from a running cluster (crashed, or killed by the object-store outage test): start it again.
    pid_alive "$PIDS/minio.pid" minio || start_minio
    # Keep the project's image current on a running cluster too.
    if [[ "${TESTBED_RUNNER:-1}" == 1 && -f "$REPO_ROOT/pyproject.toml" ]]; then
      "$HERE/images.sh" runner import
    fi
    log "cluster already up; kubeconfig: $TESTBED_KUBECONFIG"
    exit 0
  fi
  if [[ -f "$PIDS/kube-apiserver.pid" ]] || [[ -f "$PIDS/containerd.pid" ]]; then
    log "a previous cluster in $TESTBED_STATE is not healthy: stopping it first"
    "$HERE/cluster-down.sh"
    mkdir -p "$TESTBED_STATE" "$LOGS" "$PIDS"
  fi
  check_ports
  # On failure, stop whatever this run started (the logs stay in $MOUSFLOW_CACHE/last-cluster-logs);
  # TESTBED_KEEP_ON_FAILURE=1 leaves it running for debugging.
  trap 'on_exit $?' EXIT
  "$HERE/build-binaries.sh"
  local images=(pause base coredns minio)
  # The project's runner image too (skip with TESTBED_RUNNER=0); rebuilt only when the source changed.
  if [[ "${TESTBED_RUNNER:-1}" == 1 && -f "$REPO_ROOT/pyproject.toml" ]]; then images+=(runner); fi
  "$HERE/images.sh" "${images[@]}"
  local t_bins=$SECONDS
  host_setup
  make_pki
  start_containerd
  # Pod sandboxes left by a cluster that was killed rather than stopped belong to an etcd that is gone.
  "$KBIN/testbed-cri" -endpoint "unix://$CONTAINERD_SOCK" clean >/dev/null || log "could not remove stale sandboxes"
  "$HERE/images.sh" import
  start_etcd
  start_apiserver
  start_controllers
  start_kubelet
  start_kube_proxy
  start_minio
  wait_node_ready
  apply_addons
  log "cluster up in $((SECONDS - T_START)) s (processes started in $((SECONDS - t_bins)) s)"
  log "kubeconfig: $TESTBED_KUBECONFIG   S3: $(grep ^S3_ENDPOINT_URL= "$TESTBED_STATE/s3.env" | cut -d= -f2)"
}

# Run unless sourced (sourcing gives the step functions, for debugging one step at a time).
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then main "$@"; fi
