#!/usr/bin/env bash
# Print shell exports for using the local test bed: eval "$(hack/testbed/env.sh)"
# Puts the cached kubectl, helm, etcd, coredns and minio on PATH and sets KUBECONFIG and the S3 variables.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/testbed/lib.sh
source "$HERE/lib.sh"
echo "export PATH=\"$(kube_bin_dir):$(helm_bin_dir):$(etcd_bin_dir):$(coredns_bin_dir):$(minio_bin_dir):\$PATH\""
echo "export KUBECONFIG=\"$TESTBED_KUBECONFIG\""
if [[ -f "$TESTBED_STATE/s3.env" ]]; then
  grep -E '^[A-Z0-9_]+=' "$TESTBED_STATE/s3.env" | sed 's/^/export /'
fi
