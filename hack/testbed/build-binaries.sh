#!/usr/bin/env bash
# Build the pinned test-bed binaries from the Go module proxy into a cache outside the repository:
#   $MOUSFLOW_CACHE/bin/kubernetes-<v>/{kube-apiserver,kube-controller-manager,kube-scheduler,kubelet,kube-proxy,kubectl}
#   $MOUSFLOW_CACHE/bin/etcd-<v>/etcd   helm-<v>/helm   coredns-<v>/coredns   minio-<v>/minio
# A binary already in the cache is reused; a missing one is built. Prints the wall time of the run.
# Usage: hack/testbed/build-binaries.sh [component...]   (components: kubernetes etcd helm coredns minio)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/testbed/lib.sh
source "$HERE/lib.sh"

export GOFLAGS="${TESTBED_GOFLAGS:--p=2 -buildvcs=false -trimpath}"
export GOCACHE="${GOCACHE_TESTBED:-$MOUSFLOW_CACHE/go-build}"
export GOTOOLCHAIN=local
NICE=(nice -n "${TESTBED_NICE:-10}")
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

# build_one OUTPUT_DIR NAME CGO PACKAGE LDFLAGS [TAGS] — run from the current directory's module.
build_one() {
  local dir="$1" name="$2" cgo="$3" pkg="$4" ldflags="$5" tags="${6:-}"
  if [[ -x "$dir/$name" ]]; then log "cached: $dir/$name"; return 0; fi
  mkdir -p "$dir"
  log "building $name ($pkg)"
  local t0=$SECONDS
  CGO_ENABLED="$cgo" "${NICE[@]}" go build ${tags:+-tags "$tags"} -ldflags "$ldflags" -o "$dir/.$name.tmp" "$pkg"
  mv "$dir/.$name.tmp" "$dir/$name"
  log "built $name in $((SECONDS - t0)) s"
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

build_kubernetes() {
  local dir ldf
  dir="$(kube_bin_dir)"
  ldf="$(kube_ldflags)"
  (
    cd "$TESTBED_ROOT/gomod/kube"
    # Smallest first, so a broken toolchain shows up early.
    build_one "$dir" kubectl 0 k8s.io/kubernetes/cmd/kubectl "$ldf"
    build_one "$dir" kube-scheduler 0 k8s.io/kubernetes/cmd/kube-scheduler "$ldf"
    build_one "$dir" kube-proxy 0 k8s.io/kubernetes/cmd/kube-proxy "$ldf"
    build_one "$dir" kube-controller-manager 0 k8s.io/kubernetes/cmd/kube-controller-manager "$ldf"
    build_one "$dir" kube-apiserver 0 k8s.io/kubernetes/cmd/kube-apiserver "$ldf"
    # The kubelet is built with cgo, as upstream does.
    build_one "$dir" kubelet 1 k8s.io/kubernetes/cmd/kubelet "$ldf"
    # Small CRI client of this repository (hack/gomod/kube/cmd/testbed-cri) used by cluster-down.
    build_one "$dir" testbed-cri 0 ./cmd/testbed-cri "-s -w"
  )
}

build_etcd() {
  (cd "$TESTBED_ROOT/gomod/etcd" && build_one "$(etcd_bin_dir)" etcd 0 . "-s -w")
}

build_helm() {
  local minor="${KUBE_VERSION#v*.}"; minor="${minor%%.*}"
  go_install_one "$(helm_bin_dir)" helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" \
    "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
}

build_coredns() {
  go_install_one "$(coredns_bin_dir)" coredns "github.com/coredns/coredns@$COREDNS_VERSION" "-s -w"
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
  [[ ${#comps[@]} -gt 0 ]] || comps=(etcd kubernetes coredns helm minio)
  local t0=$SECONDS
  for c in "${comps[@]}"; do
    case "$c" in
      kubernetes|etcd|helm|coredns|minio) "build_$c" ;;
      *) die "unknown component: $c" ;;
    esac
  done
  log "binaries ready in $((SECONDS - t0)) s (cache: $MOUSFLOW_CACHE/bin)"
}

main "$@"
