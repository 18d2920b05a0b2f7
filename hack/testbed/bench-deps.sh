#!/usr/bin/env bash
# Install what the benchmarks need beyond the venv: Debian's wsclean, the imager bench/compare_imagers.py runs
# beside mousflow and CASA. Idempotent: installs only what is missing; `make bench` and `make bench-quick` run it.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/testbed/lib.sh
source "$HERE/lib.sh"

install_debian_packages wsclean
