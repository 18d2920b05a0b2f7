"""The pinned helm binary for the chart tests (fast tier: `helm lint` and `helm template` need no cluster).

Found as the cluster tier finds it (the test bed's cache, then PATH); on a fresh machine it is built once with
hack/testbed/build-binaries.sh helm (Go and the Go module proxy: the test bed's one Go build, several minutes;
under `make test` it is already under way in the background and this waits for it), the same binary the
cluster tier uses later. These tests run last in their session (tests/conftest.py), so nothing waits with them.
Kept in the fast tier because rendering the chart takes seconds and is where most chart mistakes show; only
the first run on a fresh machine pays for the build.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TESTBED = REPO / "hack" / "testbed"
CHART = REPO / "helm" / "mousflow"


def _helm_version() -> str:
    for line in (TESTBED / "versions.env").read_text().splitlines():
        if line.startswith("HELM_VERSION="):
            return line.split("=", 1)[1].strip()
    raise AssertionError("HELM_VERSION missing from hack/testbed/versions.env")


def find_or_build_helm() -> str:
    import os

    cache = Path(os.environ.get("MOUSFLOW_CACHE", Path.home() / ".cache" / "mousflow"))
    cached = cache / "bin" / f"helm-{_helm_version()}" / "helm"
    if cached.is_file():
        return str(cached)
    found = shutil.which("helm")
    if found:
        return found
    proc = subprocess.run([str(TESTBED / "build-binaries.sh"), "helm"], capture_output=True, text=True)
    if proc.returncode != 0 or not cached.is_file():
        pytest.fail(f"no helm binary and building it failed (hack/testbed/build-binaries.sh helm):\n"
                    f"{proc.stderr[-2000:]}", pytrace=False)
    return str(cached)


@pytest.fixture(scope="session")
def helm() -> str:
    return find_or_build_helm()


def find_or_fetch_prometheus() -> Path:
    """The directory with Debian's `prometheus` and `promtool` (hack/testbed/prometheus.sh: downloaded and
    unpacked into the test bed's cache once, a few seconds)."""
    proc = subprocess.run([str(TESTBED / "prometheus.sh")], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"no Prometheus (hack/testbed/prometheus.sh):\n{proc.stderr[-2000:]}", pytrace=False)
    return Path(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def promtool() -> str:
    return str(find_or_fetch_prometheus() / "promtool")
