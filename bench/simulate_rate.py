"""Simulation rate of `mousflow simulate` in visibility-channels per second (aim: >= 5 million/s on one core).

A visibility-channel is one baseline at one integration in one channel (each carries both correlations).
Usage: python bench/simulate_rate.py [--preset medium] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="medium")
    parser.add_argument("--threads", type=int, default=1, help="BLAS/numpy threads (the aim is per core)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    from mousflow.simulate import PRESETS, simulate_mous

    preset = PRESETS[args.preset]
    work = tempfile.mkdtemp(prefix="mousflow-bench-sim-")
    try:
        t0 = time.perf_counter()
        result = simulate_mous(args.preset, os.path.join(work, "mous"), seed=args.seed)
        wall = time.perf_counter() - t0
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(work) for f in fs)
        cpu = time.process_time()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"preset            {preset.name}: {preset.n_antennas} antennas, {preset.n_execution_blocks} EB, "
          f"{sum(s.n_chan for s in preset.spws)} channels")
    print(f"visibility-chans  {result.visibility_channels:,}")
    print(f"on disk           {size / 2**30:.2f} GiB")
    print(f"wall time         {wall:.1f} s (process CPU {cpu:.1f} s)")
    print(f"rate              {result.visibility_channels / wall / 1e6:.2f} M visibility-channels/s (aim >= 5)")


if __name__ == "__main__":
    main()
