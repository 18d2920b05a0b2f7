"""The embedded end-to-end run: simulate a MOUS and process it locally, with no cluster.

A temporary local Prefect server orchestrates; the stages run as local processes through the same entry
point the pods use; a local directory is the object store.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable

from mousflow.pipeline import process_mous
from mousflow.pipeline.local_server import local_prefect_server
from mousflow.simulate import simulate_mous


def run_demo(workdir: str | None, preset: str, seed: int, progress: Callable[[str], None]) -> int:
    from mousflow.cli import report_result

    started = time.perf_counter()
    workdir = workdir or tempfile.mkdtemp(prefix="mousflow-demo-")
    progress(f"working in {workdir}")
    sim = simulate_mous(preset, f"{workdir}/mous", seed=seed, force=True, progress=progress)
    progress(f"simulated a {preset} MOUS: {len(sim.execution_blocks)} execution blocks, "
             f"{sim.visibility_channels:,} visibility-channels in {sim.seconds:.1f} s")
    progress("starting a temporary local Prefect server")
    with local_prefect_server() as url:
        progress(f"Prefect API at {url}; processing {sim.manifest.uri}")
        result = process_mous(sim.manifest.read_text(), threads=2)
    code = report_result(result)
    progress(f"demo finished in {time.perf_counter() - started:.0f} s")
    return code
