#!/usr/bin/env bash
# Build the pinned test-bed binaries from the Go module proxy into a cache outside the repository:
#   $MOUSFLOW_CACHE/bin/kubernetes-<v>/testbed-kube (+ symlinks kube-apiserver, kube-controller-manager,
#       kube-scheduler, kubelet, kube-proxy, kubectl), testbed-cri
#   $MOUSFLOW_CACHE/bin/etcd-<v>/etcd (symlink to testbed-kube)   helm-<v>/helm   coredns-<v>/coredns
#   $MOUSFLOW_CACHE/bin/minio-<v>/minio
# Binaries built from the current module sources are reused; others are built. Prints the wall time.
# Usage: hack/testbed/build-binaries.sh [component...]   (kubernetes, etcd, helm and coredns are one build
# of hack/gomod/testbed; minio is its own)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/testbed/lib.sh
source "$HERE/lib.sh"

export GOFLAGS="${TESTBED_GOFLAGS:--p=2 -buildvcs=false -trimpath}"
export GOCACHE="${GOCACHE_TESTBED:-$MOUSFLOW_CACHE/go-build}"
export GOTOOLCHAIN=local
NICE=(nice -n "${TESTBED_NICE:-10}")
take_build_lock
command -v go >/dev/null || die "go is needed to build the test-bed binaries (Go >= 1.26)"

build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

kube_ldflags() {
  local v="$KUBE_VERSION" major minor
  major="${v#v}"; major="${major%%.*}"
  minor="${v#v*.}"; minor="${minor%%.*}"
  local f="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    f+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    f+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
    f+=" -X $pkg.gitCommit=module-proxy-$v"
  done
  echo "$f"
}

# The test bed's own module (hack/gomod/testbed) builds everything but MinIO in ONE `go build` of several
# main packages: the shared dependencies compile once, the go command schedules all of it over the cores,
# and the Kubernetes servers, kubectl and etcd are one multi-call binary (cmd/testbed-kube), so the large
# Kubernetes tree is linked once, not seven times. All CGO_ENABLED=0: a cgo build of `net` would make every
# package above it compile a second time (upstream builds the kubelet with cgo; it does not need it here).
MODULE_DIR="$TESTBED_ROOT/gomod/testbed"
KUBE_PROGRAMS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

# A hash of the module's inputs: a binary built from other sources or versions is rebuilt.
module_hash() {
  (cd "$MODULE_DIR" && find go.mod go.sum tools.go cmd -type f | LC_ALL=C sort | xargs cat;
   echo "$KUBE_VERSION"; go version) | sha256sum | cut -c1-12
}

module_binaries_current() {
  local h="$1" d
  for d in "$(kube_bin_dir)" "$(etcd_bin_dir)" "$(helm_bin_dir)" "$(coredns_bin_dir)"; do
    [[ "$(cat "$d/.module-hash" 2>/dev/null)" == "$h" ]] || return 1
  done
}

build_module() {
  local h kdir out t0=$SECONDS
  h="$(module_hash)"
  if module_binaries_current "$h"; then log "cached: test bed module binaries ($h)"; return 0; fi
  kdir="$(kube_bin_dir)"
  out="$(mktemp -d "$MOUSFLOW_CACHE/bin/.module.XXXXXX")"
  log "building the test bed module (Kubernetes $KUBE_VERSION, etcd $ETCD_VERSION, Helm $HELM_VERSION, CoreDNS $COREDNS_VERSION)"
  local minor="${KUBE_VERSION#v*.}"; minor="${minor%%.*}"
  local ldf
  ldf="$(kube_ldflags) -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  ldf+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  ldf+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
  (cd "$MODULE_DIR" && CGO_ENABLED=0 "${NICE[@]}" go build -ldflags "$ldf" -o "$out/" \
    ./cmd/testbed-kube ./cmd/testbed-cri ./cmd/coredns helm.sh/helm/v3/cmd/helm)
  install_into "$kdir" "$h" "$out/testbed-kube" "$out/testbed-cri"
  for p in "${KUBE_PROGRAMS[@]}"; do ln -sfn testbed-kube "$kdir/$p"; done
  install_into "$(etcd_bin_dir)" "$h"
  ln -sfn "$kdir/testbed-kube" "$(etcd_bin_dir)/etcd"
  install_into "$(helm_bin_dir)" "$h" "$out/helm"
  install_into "$(coredns_bin_dir)" "$h" "$out/coredns"
  rm -rf "$out"
  log "built the test bed module in $((SECONDS - t0)) s"
}

# install_into DIR HASH FILE... — move FILEs into DIR (created) and record the module hash there.
install_into() {
  local dir="$1" h="$2"; shift 2
  mkdir -p "$dir"
  local f
  for f in "$@"; do mv -f "$f" "$dir/"; done
  echo "$h" >"$dir/.module-hash"
}

# go_install_one OUTPUT_DIR NAME MODULE_PATH@VERSION LDFLAGS [TAGS] — for modules without replace directives.
go_install_one() {
  local dir="$1" name="$2" target="$3" ldflags="$4" tags="${5:-}"
  if [[ -x "$dir/$name" ]]; then log "cached: $dir/$name"; return 0; fi
  mkdir -p "$dir"
  log "building $name ($target)"
  local t0=$SECONDS tmp
  tmp="$(mktemp -d "$dir/.gobin.XXXXXX")"
  GOBIN="$tmp" CGO_ENABLED=0 "${NICE[@]}" go install ${tags:+-tags "$tags"} -ldflags "$ldflags" "$target"
  mv "$tmp/$name" "$dir/$name"
  rmdir "$tmp"
  log "built $name in $((SECONDS - t0)) s"
}

build_minio() {
  # MinIO's own version variables: its release time (RFC 3339) and commit, from the pseudo-version.
  local ts="${MINIO_VERSION#v0.0.0-}" commit
  commit="${ts##*-}"; ts="${ts%%-*}"
  local rfc="${ts:0:4}-${ts:4:2}-${ts:6:2}T${ts:8:2}:${ts:10:2}:${ts:12:2}Z"
  local pkg=github.com/minio/minio/cmd
  go_install_one "$(minio_bin_dir)" minio "github.com/minio/minio@$MINIO_VERSION" \
    "-s -w -X $pkg.Version=$rfc -X $pkg.ReleaseTag=DEVELOPMENT.${rfc//:/-} -X $pkg.CommitID=$commit -X $pkg.ShortCommitID=$commit" kqueue
}

main() {
  local comps=("$@")
  [[ ${#comps[@]} -gt 0 ]] || comps=(kubernetes minio)
  local t0=$SECONDS
  mkdir -p "$MOUSFLOW_CACHE/bin"
  for c in "${comps[@]}"; do
    case "$c" in
      kubernetes|etcd|helm|coredns) build_module ;;
      minio) build_minio ;;
      *) die "unknown component: $c" ;;
    esac
  done
  log "binaries ready in $((SECONDS - t0)) s (cache: $MOUSFLOW_CACHE/bin)"
}

main "$@"
