"""Import rate of `mousflow import-ms`: a Measurement Set made by CASA's simulator, converted to MSv4 (xradio,
arcae backend) with its manifest, in visibility-channels per second, and the importer's peak memory.

A visibility-channel is one baseline at one integration in one channel (each carries all its correlations).
Needs the `casa` extra (casatools, casadata) for making the MS; the MS itself is made in its own process and
not timed. Usage: python bench/import_ms.py [--antennas 43] [--channels 128] [--target-minutes 20]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GENERATOR = Path(__file__).resolve().parents[1] / "tests" / "ingest" / "casa_simulated_ms.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--antennas", type=int, default=43)
    parser.add_argument("--channels", type=int, default=128, help="per window (two windows)")
    parser.add_argument("--target-minutes", type=float, default=20.0, help="per target scan (two scans)")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="mousflow-bench-import-")
    try:
        ms = os.path.join(work, "bench.ms")
        spec = os.path.join(work, "spec.json")
        with open(spec, "w") as fh:
            json.dump({"out": ms, "n_antennas": args.antennas, "n_chan": args.channels,
                       "target_scan_s": args.target_minutes * 60}, fh)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(GENERATOR), spec], cwd=work, check=True, capture_output=True)
        made = time.perf_counter() - t0
        ms_bytes = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(ms) for f in fs)

        from mousflow.ingest import import_measurement_sets
        from mousflow.stages.peak_memory import process_peak_memory_bytes
        from mousflow.storage.partitions import open_checked, partition_infos

        t0 = time.perf_counter()
        result = import_measurement_sets([ms], os.path.join(work, "mous"))
        wall = time.perf_counter() - t0
        ps = open_checked(result.out.join("eb", os.listdir(os.path.join(work, "mous", "eb"))[0]))
        vischan = sum(i.n_time * i.n_baseline * i.n_chan for i in partition_infos(ps))
        out_bytes = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(os.path.join(work, "mous"))
                        for f in fs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"measurement set   {args.antennas} antennas, 2 x {args.channels} channels, "
          f"{ms_bytes / 2**20:.0f} MiB (made by CASA in {made:.0f} s, not timed)")
    print(f"visibility-chans  {vischan:,}")
    print(f"import            {wall:.1f} s wall, {vischan / wall / 1e6:.2f} M visibility-channels/s")
    print(f"processing set    {out_bytes / 2**20:.0f} MiB")
    print(f"peak RSS          {process_peak_memory_bytes() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
