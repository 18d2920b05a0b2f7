"""The chart's pre-delete hook (`python -m mousflow_operator.uninstall`) runs in a locked-down pod: read-only root
filesystem, no Prefect home. It must load with the Kubernetes client alone (found when loading the kube config
from the flows' package pulled Prefect in and the hook's Job failed, so `helm uninstall` did)."""

from __future__ import annotations

import subprocess
import sys


def test_the_uninstall_hook_loads_without_prefect_or_the_science_stack():
    code = ("import sys, mousflow_operator.uninstall; "
            "print(sorted(m for m in ('prefect', 'xarray', 'zarr', 'kopf') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
