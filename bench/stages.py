"""Wall time and peak memory of each pipeline stage on a simulated MOUS.

Each stage runs in its own process through the stage entry point (as in a pod), so its peak resident memory
is its own. Usage: python bench/stages.py [--preset small] [--preset medium] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time


def bench(preset: str, threads: int) -> list[tuple[str, str, float, float]]:
    from mousflow.pipeline.launchers import LocalProcessLauncher
    from mousflow.simulate import simulate_mous
    from mousflow.storage.location import Location

    work = tempfile.mkdtemp(prefix=f"mousflow-bench-{preset}-")
    rows = []
    try:
        from mousflow.stages.peak_memory import process_peak_memory_bytes

        t0 = time.perf_counter()
        sim = simulate_mous(preset, os.path.join(work, "mous"), seed=1)
        # the simulator runs in this process: its peak is this process's peak so far (its own address space's,
        # not ru_maxrss, which Linux carries over from whatever started it)
        peak = process_peak_memory_bytes() / 2**30
        rows.append((preset, "simulate", time.perf_counter() - t0, peak))
        launcher = LocalProcessLauncher(threads=threads)
        from mousflow.model import load_manifest
        from mousflow.pipeline.flow import publish_manifest

        text = sim.manifest.read_text()
        manifest_uri, run_root = publish_manifest(text)
        assert load_manifest(text)
        for stage in ("calibration", "imaging", "packaging"):
            outcome = launcher.launch(stage, manifest_uri, run_root, lambda _line: None)
            if outcome.state != "Succeeded":
                raise SystemExit(f"{stage} {outcome.state}: {outcome.reason} {outcome.message}")
            m = outcome.metrics
            rows.append((preset, stage, m["wall_seconds"], m["peak_memory_bytes"] / 2**30))
        assert Location.of(run_root.uri).exists()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", action="append", help="small, medium, ... (repeatable; default small, medium)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(f"{'preset':<8} {'stage':<12} {'wall (s)':>9} {'peak RSS (GiB)':>15}")
    for preset in args.preset or ["small", "medium"]:
        for p, stage, wall, peak in bench(preset, args.threads):
            print(f"{p:<8} {stage:<12} {wall:9.1f} {peak:15.2f}", flush=True)


if __name__ == "__main__":
    main()
