#!/usr/bin/env bash
# Debian's Prometheus server and promtool, for the cluster test that scrapes the live operator and evaluates the
# chart's alerting rules and dashboard queries (tests/cluster/test_helm_release.py). The package is downloaded and
# unpacked into the cache, not installed: its maintainer scripts would start a system service on port 9090.
# Idempotent; prints the directory holding `prometheus` and `promtool`.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/testbed/lib.sh
source "$HERE/lib.sh"

version="$(apt-cache policy prometheus 2>/dev/null | awk '/Candidate:/ {print $2}')"
[[ -n "$version" && "$version" != "(none)" ]] || die "Debian has no prometheus package here (apt-get update?)"
dir="$MOUSFLOW_CACHE/bin/prometheus-${version//[^A-Za-z0-9.+-]/_}"
if [[ ! -x "$dir/prometheus" || ! -x "$dir/promtool" ]]; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  chmod 0755 "$work"  # apt hands the download to its own user
  (cd "$work" && flock -w 900 /var/lock/mousflow-apt.lock apt-get download -qq "prometheus=$version" >&2)
  dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
  mkdir -p "$dir"
  install -m 0755 "$work/root/usr/bin/prometheus" "$work/root/usr/bin/promtool" "$dir/"
  log "Prometheus $version unpacked into $dir" >&2
fi
echo "$dir"
