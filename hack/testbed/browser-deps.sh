#!/usr/bin/env bash
# Install the headless browser the weblog test drives (tests/stages/test_weblog_browser.py): Debian's chromium.
# Idempotent: installs only what is missing; `make test-pipeline` and the test itself run it.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/testbed/lib.sh
source "$HERE/lib.sh"

install_debian_packages chromium fonts-dejavu-core
