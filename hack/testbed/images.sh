#!/usr/bin/env bash
# Build the test bed's container images without a registry or a Docker engine, with buildah:
#   pause   - the pod sandbox image (static binary compiled from containers/pause/pause.c)
#   base    - Debian bookworm + Python 3.11 made with debootstrap (stand-in for python:3.11-slim-bookworm)
#   coredns - the cluster DNS server built from the Go module proxy, on an empty image
#   runner  - containers/runner/Dockerfile (pip-installs this project) on top of `base`
#   minio   - the MinIO binary on an empty image, for the Helm chart's optional MinIO (minio.image)
# Each image is written as a docker-archive under $MOUSFLOW_CACHE/images/<name>-<input hash>.tar; an
# archive whose inputs did not change is reused. `images.sh import` loads them into containerd's
# k8s.io namespace (the only one the kubelet sees), skipping archives already imported.
# Usage: hack/testbed/images.sh [pause|base|coredns|minio|runner|import ...]   (default: pause base coredns minio)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/testbed/lib.sh
source "$HERE/lib.sh"

take_build_lock
IMAGES_DIR="$(images_dir)"
BUILDAH_ROOT="$MOUSFLOW_CACHE/buildah"
# Own storage for buildah, so nothing of the machine's /var/lib/containers is touched.
BUILDAH=(buildah --root "$BUILDAH_ROOT/storage" --runroot "$BUILDAH_ROOT/run" --storage-driver "${TESTBED_BUILDAH_DRIVER:-overlay}")
# chroot isolation: RUN steps need no cgroup manager or network namespace set-up.
export BUILDAH_ISOLATION=chroot
CONTAINERS="$REPO_ROOT/containers"
mkdir -p "$IMAGES_DIR"

ensure_tools() {
  local missing=()
  command -v buildah >/dev/null || missing+=(buildah)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v gcc >/dev/null || missing+=(gcc libc6-dev)
  if [[ ${#missing[@]} -gt 0 ]]; then
    "$HERE/host-deps.sh"
  fi
}

# hash_inputs FILE... -> short sha256 over names and contents
hash_inputs() {
  local f
  for f in "$@"; do
    printf '%s\n' "${f#"$REPO_ROOT"/}"
    cat "$f"
  done | sha256sum | cut -c1-12
}

archive_path() { echo "$IMAGES_DIR/$1-$2.tar"; }

# write_archive IMAGE_REF ARCHIVE — buildah image -> docker-archive carrying the image's name.
write_archive() {
  local ref="$1" out="$2"
  rm -f "$out.tmp"
  "${BUILDAH[@]}" push --quiet "$ref" "docker-archive:$out.tmp:$ref" >/dev/null
  mv "$out.tmp" "$out"
  # Record the archive as the current one for this image name (used by `import`), drop older ones.
  ln -sfn "$(basename "$out")" "$IMAGES_DIR/${3}.current.tar"
  local old
  for old in "$IMAGES_DIR/$3"-????????????.tar; do
    [[ -e "$old" && "$old" != "$out" ]] && rm -f "$old"
  done
  return 0
}

build_pause() {
  local h out ctx
  h="$(hash_inputs "$CONTAINERS/pause/pause.c" "$CONTAINERS/pause/Containerfile")"
  out="$(archive_path pause "$h")"
  if [[ -f "$out" ]]; then log "cached image: $PAUSE_IMAGE ($out)"; ln -sfn "$(basename "$out")" "$IMAGES_DIR/pause.current.tar"; return; fi
  log "building $PAUSE_IMAGE"
  ctx="$(mktemp -d)"
  gcc -static -Os -s -o "$ctx/pause" "$CONTAINERS/pause/pause.c"
  cp "$CONTAINERS/pause/Containerfile" "$ctx/"
  "${BUILDAH[@]}" bud --quiet --pull=false --layers=false -t "$PAUSE_IMAGE" -f "$ctx/Containerfile" "$ctx" >/dev/null
  rm -rf "$ctx"
  write_archive "$PAUSE_IMAGE" "$out" pause
  log "built $PAUSE_IMAGE"
}

# The debootstrap root file system, made once per suite and reused.
base_rootfs_tar() {
  local tar="$IMAGES_DIR/rootfs-$BASE_SUITE-python3.tar"
  if [[ -f "$tar" ]]; then echo "$tar"; return; fi
  local dir="$IMAGES_DIR/.rootfs-$BASE_SUITE"
  rm -rf "$dir"
  log "debootstrap $BASE_SUITE (minbase + python3) into $dir"
  local t0=$SECONDS
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip-whl,ca-certificates,netbase,tzdata \
    "$BASE_SUITE" "$dir" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$IMAGES_DIR/debootstrap.log" 2>&1 \
    || { tail -20 "$IMAGES_DIR/debootstrap.log" >&2; die "debootstrap failed"; }
  # A virtual environment on PATH gives `python` and `pip` as in the official image, where pip installs
  # into /usr/local; Debian's own python3 refuses pip installs into the system (PEP 668).
  chroot "$dir" /usr/bin/python3 -m venv /opt/python
  chroot "$dir" /opt/python/bin/python -m pip --version >/dev/null
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* "$dir"/usr/share/doc/* \
    "$dir"/usr/share/man/* "$dir"/usr/share/info/* "$dir"/var/log/*.log
  tar -C "$dir" --numeric-owner -cf "$tar.tmp" .
  mv "$tar.tmp" "$tar"
  rm -rf "$dir"
  log "base root file system ready in $((SECONDS - t0)) s: $tar"
  echo "$tar"
}

build_base() {
  local rootfs h out ctx
  rootfs="$(base_rootfs_tar)"
  h="$(hash_inputs "$CONTAINERS/base/Containerfile" | cut -c1-6)$(basename "$rootfs" | sha256sum | cut -c1-6)"
  out="$(archive_path python-base "$h")"
  if [[ -f "$out" ]] && "${BUILDAH[@]}" inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
    log "cached image: $BASE_IMAGE ($out)"; ln -sfn "$(basename "$out")" "$IMAGES_DIR/python-base.current.tar"; return
  fi
  log "building $BASE_IMAGE"
  ctx="$(mktemp -d)"
  ln "$rootfs" "$ctx/rootfs.tar" 2>/dev/null || cp "$rootfs" "$ctx/rootfs.tar"
  cp "$CONTAINERS/base/Containerfile" "$ctx/"
  "${BUILDAH[@]}" bud --quiet --pull=false --layers=false -t "$BASE_IMAGE" -f "$ctx/Containerfile" "$ctx" >/dev/null
  rm -rf "$ctx"
  write_archive "$BASE_IMAGE" "$out" python-base
  log "built $BASE_IMAGE"
}

# build_binary_image NAME BIN_DIR IMAGE VERSION: a static binary from the cache (built if missing) on the
# empty image containers/NAME/Containerfile describes.
build_binary_image() {
  local name="$1" bin="$2/$1" image="$3" version="$4" h out ctx
  [[ -x "$bin" ]] || "$HERE/build-binaries.sh" "$name"
  h="$(hash_inputs "$CONTAINERS/$name/Containerfile" | cut -c1-6)$(echo "$version" | sha256sum | cut -c1-6)"
  out="$(archive_path "$name" "$h")"
  if [[ -f "$out" ]]; then log "cached image: $image ($out)"; ln -sfn "$(basename "$out")" "$IMAGES_DIR/$name.current.tar"; return; fi
  log "building $image"
  ctx="$(mktemp -d)"
  cp "$bin" "$ctx/$name"
  cp "$CONTAINERS/$name/Containerfile" "$ctx/"
  "${BUILDAH[@]}" bud --quiet --pull=false --layers=false -t "$image" -f "$ctx/Containerfile" "$ctx" >/dev/null
  rm -rf "$ctx"
  write_archive "$image" "$out" "$name"
  log "built $image"
}

build_coredns() { build_binary_image coredns "$(coredns_bin_dir)" "$COREDNS_IMAGE" "$COREDNS_VERSION"; }
build_minio() { build_binary_image minio "$(minio_bin_dir)" "$MINIO_IMAGE" "$MINIO_VERSION"; }

# The runner image pip-installs this repository, so its inputs are the repository's tracked files.
build_runner() {
  [[ -f "$REPO_ROOT/pyproject.toml" ]] || die "no pyproject.toml in $REPO_ROOT: nothing for the runner image to install"
  build_base
  local files h out
  mapfile -t files < <(cd "$REPO_ROOT" && git ls-files -co --exclude-standard -- pyproject.toml requirements flows operator containers/runner README.md 2>/dev/null | sed "s|^|$REPO_ROOT/|" | while read -r f; do [[ -f "$f" ]] && echo "$f"; done)
  h="$({ hash_inputs "${files[@]}"; readlink "$IMAGES_DIR/python-base.current.tar"; } | sha256sum | cut -c1-12)"
  out="$(archive_path "$RUNNER_ARCHIVE_NAME" "$h")"
  if [[ -f "$out" ]]; then log "cached image: $RUNNER_IMAGE ($out)"; ln -sfn "$(basename "$out")" "$IMAGES_DIR/$RUNNER_ARCHIVE_NAME.current.tar"; return; fi
  log "building $RUNNER_IMAGE from containers/runner/Dockerfile (BASE_IMAGE=$BASE_IMAGE)"
  local t0=$SECONDS
  # pip in the build trusts what the host trusts (this may include a proxy's CA): the host bundle is
  # mounted for the RUN steps only and PIP_CERT points at it; nothing of it stays in the image.
  local tls=()
  local bundle="${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}"
  if [[ -f "$bundle" ]]; then
    tls=(--volume "$bundle:/run/host-ca-bundle.crt:ro" --build-arg PIP_CERT=/run/host-ca-bundle.crt)
  fi
  # --layers: the dependency layer is reused while only the project's source changes.
  "${BUILDAH[@]}" bud --quiet --pull=false --layers=true --build-arg "BASE_IMAGE=$BASE_IMAGE" "${tls[@]}" \
    -t "$RUNNER_IMAGE" -f "$CONTAINERS/runner/Dockerfile" "$REPO_ROOT" >"$IMAGES_DIR/runner-build.log" 2>&1 \
    || { tail -30 "$IMAGES_DIR/runner-build.log" >&2; die "runner image build failed (log: $IMAGES_DIR/runner-build.log)"; }
  write_archive "$RUNNER_IMAGE" "$out" "$RUNNER_ARCHIVE_NAME"
  # The image this build untagged (every source change makes one, 1.5 GB each: 61 GB seen after a day) goes;
  # the dependency layer the next build reuses is an intermediate image, not listed as dangling.
  "${BUILDAH[@]}" images --filter dangling=true --quiet 2>/dev/null | while read -r id; do
    "${BUILDAH[@]}" rmi "$id" >/dev/null 2>&1 || true
  done
  log "built $RUNNER_IMAGE in $((SECONDS - t0)) s"
}

# Import every current archive into containerd's k8s.io namespace unless that archive was imported
# already (a marker per image records the archive's file name).
import_all() {
  [[ -S "$CONTAINERD_SOCK" ]] || die "containerd is not running at $CONTAINERD_SOCK (make cluster-up starts it)"
  local marker_dir="$MOUSFLOW_CACHE/containerd-imported" link name archive present
  mkdir -p "$marker_dir"
  present="$(ctr_k8s images ls -q)"
  for link in "$IMAGES_DIR"/*.current.tar; do
    [[ -e "$link" ]] || continue
    name="$(basename "$link" .current.tar)"
    archive="$(readlink -f "$link")"
    if [[ "$(cat "$marker_dir/$name" 2>/dev/null)" == "$(basename "$archive")" ]] && grep -q "mousflow/$name:" <<<"$present"; then
      continue
    fi
    log "importing $(basename "$archive") into containerd (namespace k8s.io)"
    import_with_retry "$archive"
    basename "$archive" >"$marker_dir/$name"
  done
  prune_stale
}

# containerd's garbage collector can remove a parent snapshot while an import is unpacking onto it
# ("failed to prepare extraction snapshot ... parent snapshot ... does not exist", containerd#3787):
# the import is idempotent, so a few tries a moment apart get past the race.
import_with_retry() {
  local archive="$1" try
  for try in 1 2 3; do
    if ctr_k8s images import "$archive" >/dev/null; then
      return 0
    fi
    if ((try < 3)); then
      log "import of $(basename "$archive") failed (try $try of 3); retrying"
      sleep $((try * 3))
    fi
  done
  die "could not import $(basename "$archive") into containerd after 3 tries"
}

# An image replaced under the same name leaves its old content behind through the CRI's by-ID reference
# ("sha256:<id>"); drop such references that no named image points at, so containerd can collect it.
prune_stale() {
  local listing stale
  listing="$(ctr_k8s images ls)"
  stale="$(awk 'NR > 1 { if ($1 ~ /^sha256:/) id[$1] = $3; else named[$3] = 1 }
                END { for (r in id) if (!(id[r] in named)) print r }' <<<"$listing")"
  if [[ -n "$stale" ]]; then
    log "removing $(wc -l <<<"$stale") stale image reference(s) from containerd"
    # shellcheck disable=SC2086
    ctr_k8s images rm $stale >/dev/null
  fi
}

main() {
  local targets=("$@")
  [[ ${#targets[@]} -gt 0 ]] || targets=(pause base coredns minio)
  ensure_tools
  for t in "${targets[@]}"; do
    case "$t" in
      pause) build_pause ;;
      base) build_base ;;
      coredns) build_coredns ;;
      minio) build_minio ;;
      runner) build_runner ;;
      import) import_all ;;
      *) die "unknown image target: $t" ;;
    esac
  done
}

main "$@"
