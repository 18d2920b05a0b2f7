"""The embedded end-to-end run: simulate a MOUS and process it locally (no cluster)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable

from mousflow.simulate import simulate_mous


def run_demo(workdir: str | None, preset: str, seed: int, progress: Callable[[str], None]) -> int:
    workdir = workdir or tempfile.mkdtemp(prefix="mousflow-demo-")
    progress(f"working in {workdir}")
    result = simulate_mous(preset, f"{workdir}/mous", seed=seed, force=True, progress=progress)
    progress(f"simulated {result.visibility_channels:,} visibility-channels in {result.seconds:.1f} s")
    print(f"MOUS manifest: {result.manifest.uri}")
    print("The processing stages (calibration, imaging, packaging) are not built yet: no QA2 verdict to report.")
    return 0
