"""Predicted completion: how far the history's prediction of a MOUS's processing time is from the measured one.

For each preset a MOUS is simulated and its stages run as local processes through the stage entry point (as
bench/resources.py does, whose run_preset this reuses), each stage adding its record to a history store. Then,
leave-one-out, each preset's processing time is predicted from the *other* presets' records only
(History.predict_processing_seconds: the median seconds per unit of work per stage, times this MOUS's work,
summed over the stages; what the operator puts into status.predictedProcessingSeconds and, with the queue
ahead, status.predictedCompletion) and compared with the stages' measured wall times added up: the error is
|actual - predicted| / actual, as the operator's mousflow_eta_error_ratio histogram counts it.

Prints one line per preset and the median error over the presets.

Usage: python bench/eta.py [--preset tiny --preset marginal ...]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    from resources import run_preset

    from mousflow.pipeline.history import PROCESSING_STAGES, History
    from mousflow.storage.location import Location

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", action="append")
    a = p.parse_args()
    presets = a.preset or ["tiny", "small", "marginal"]
    if len(presets) < 2:
        raise SystemExit("eta: leave-one-out needs at least two presets")
    root = Path(tempfile.mkdtemp(prefix="mousflow-bench-eta-"))
    try:
        runs = {preset: run_preset(preset, root / "runs") for preset in presets}
        print(f"{'preset':<10}{'measured s':>11}{'predicted s':>12}{'error':>8}   (predicted from: others)")
        errors = []
        for preset, records in runs.items():
            others = root / f"without-{preset}"
            for q in presets:
                if q != preset:
                    shutil.copytree(root / "runs" / q, others, dirs_exist_ok=True)
            demand = records[0][1]
            actual = sum(rec.wall_seconds for _p, _d, rec, _m in records if rec.stage in PROCESSING_STAGES)
            predicted, missing = History(Location.of(others)).predict_processing_seconds(demand)
            if predicted is None or not actual:
                print(f"{preset:<10}{actual:>11.1f}{'-':>12}{'-':>8}   no history for {', '.join(missing)}")
                continue
            error = abs(actual - predicted) / actual
            errors.append(error)
            print(f"{preset:<10}{actual:>11.1f}{predicted:>12.1f}{100 * error:>7.0f}%")
        if errors:
            print(f"median |actual - predicted| / actual over {len(errors)} presets: "
                  f"{100 * statistics.median(errors):.0f} % (worst {100 * max(errors):.0f} %)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
