"""Processing a corpus case as a user would: `mousflow import-ms` of its Measurement Sets with its science
goals, then the MOUS processed. At full size by `mousflow run --manifest` (the Prefect flow with its stages as
local processes, a user's command); reduced, in `make test`'s pipeline tier, every stage through its entry
point (what `mousflow stage` and a pod run), which spares the tier a Prefect server's start per case."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from cache import generate
from cases import Case
from imported_sky import FLUX_CALIBRATOR_ARGS, run_stages

from mousflow.cli import main as mousflow_main

STAGES = ("calibration", "imaging", "packaging")


def import_args(c: Case, generated: dict, out: Path) -> list[str]:
    lo, hi = c.resolution_arcsec
    return ["import-ms", *[eb["ms"] for eb in generated["execution_blocks"]], "--out", str(out),
            "--sensitivity", repr(c.sensitivity_jy), "--resolution", repr(lo), repr(hi),
            "--project-code", "2026.1.00099.S", *FLUX_CALIBRATOR_ARGS]


def process(c: Case, workdir: Path) -> tuple[Path, dict, dict]:
    """Generate the case (or take it from the cache), import it and run every stage, each of which must
    succeed; returns (run root, generated, seconds per step)."""
    seconds = {}
    start = time.monotonic()
    generated = generate(c)
    seconds["generate_or_cache"] = time.monotonic() - start
    out = workdir / c.key
    start = time.monotonic()
    code = mousflow_main(import_args(c, generated, out))
    assert code == 0, f"import-ms of {c.key} exited {code}"
    seconds["import"] = time.monotonic() - start
    start = time.monotonic()
    if c.size == "full":
        run_with_the_cli(out / "mous.yaml")
    else:
        run_stages(out / "mous.yaml", *STAGES)
    seconds["stages"] = time.monotonic() - start
    return out / "output", generated, seconds


def run_with_the_cli(manifest: Path, threads: int = 2) -> None:
    """`mousflow run --manifest`, which must succeed; its one-line outcome and its last lines on failure."""
    mousflow = Path(sys.executable).parent / "mousflow"
    done = subprocess.run([str(mousflow), "run", "--manifest", str(manifest), "--threads", str(threads)],
                          capture_output=True, text=True)
    print(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "")
    assert done.returncode == 0, f"mousflow run exited {done.returncode}:\n{done.stderr[-3000:]}"


def report(c: Case, figures: dict, seconds: dict) -> None:
    """One line per case on stdout (shown with -s, as `make corpus` runs): the figures the README quotes."""
    print(f"\ncorpus {c.key}: " + json.dumps({**figures, "seconds": {k: round(v, 1) for k, v in seconds.items()}}))
