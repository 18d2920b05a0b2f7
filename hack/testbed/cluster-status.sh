#!/usr/bin/env bash
# Show the local test bed: processes (from the recorded pids), node, system pods, S3 endpoint, memory.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/testbed/lib.sh
source "$HERE/lib.sh"
PIDS="$TESTBED_STATE/pids"
if [[ ! -d "$PIDS" ]]; then echo "no cluster (state directory $TESTBED_STATE absent)"; exit 1; fi
total=0
bad=0
printf '%-24s %-8s %-8s %s\n' COMPONENT PID STATE RSS_MiB
for f in "$PIDS"/*.pid; do
  name="$(basename "$f" .pid)"; pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    rss=$(awk '/^VmRSS/ {print int($2/1024)}' "/proc/$pid/status"); total=$((total + rss))
    printf '%-24s %-8s %-8s %s\n' "$name" "$pid" running "$rss"
  else
    printf '%-24s %-8s %-8s\n' "$name" "$pid" DEAD
    bad=1
  fi
done
echo "host processes RSS total: ${total} MiB"
KUBECTL=("$(kube_bin_dir)/kubectl" --kubeconfig "$TESTBED_KUBECONFIG")
"${KUBECTL[@]}" get --raw /readyz >/dev/null 2>&1 || { echo "API server not ready"; bad=1; }
"${KUBECTL[@]}" get nodes -o wide 2>&1
"${KUBECTL[@]}" get pods -A -o wide 2>&1
echo "KUBECONFIG=$TESTBED_KUBECONFIG"
[[ -f "$TESTBED_STATE/s3.env" ]] && grep '^S3_ENDPOINT' "$TESTBED_STATE/s3.env"
exit $bad
