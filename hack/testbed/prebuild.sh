#!/usr/bin/env bash
# Build the test bed's binaries and images in the background, at low priority, so that `make test` can run
# its first tiers meanwhile: the pipeline tier runs its stages on one thread and leaves a core idle, and
# the image builds mostly wait on the network and the disk. The builds hold the build lock
# (lib.sh: take_build_lock), so cluster-up or a test that needs helm waits for them and then finds
# everything cached; if the background build failed, cluster-up builds again and shows the error. Each
# build takes the lock for itself, so a tier that needs helm waits for the Go build only, not the images.
#   hack/testbed/prebuild.sh start    start it (returns at once); log in $MOUSFLOW_CACHE/prebuild.log
#   hack/testbed/prebuild.sh run      the same in the foreground
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/testbed/lib.sh
source "$HERE/lib.sh"

run() {
  local t0=$SECONDS images=(pause base coredns minio)
  [[ "${TESTBED_RUNNER:-1}" == 1 && -f "$REPO_ROOT/pyproject.toml" ]] && images+=(runner)
  "$HERE/host-deps.sh"
  "$HERE/build-binaries.sh"
  "$HERE/images.sh" "${images[@]}"
  log "prebuild done in $((SECONDS - t0)) s"
}

case "${1:-start}" in
  run) run ;;
  start)
    mkdir -p "$MOUSFLOW_CACHE"
    # setsid: not in make's process group; 8>&- 9>&-: no lock descriptors of the caller are inherited.
    setsid nice -n "${TESTBED_NICE:-10}" "$0" run >"$MOUSFLOW_CACHE/prebuild.log" 2>&1 </dev/null 8>&- 9>&- &
    log "building the test bed's binaries and images in the background (log: $MOUSFLOW_CACHE/prebuild.log)"
    ;;
  *) die "usage: prebuild.sh [start|run]" ;;
esac
