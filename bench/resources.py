"""Right-sizing: the resource model's requests against the measured peaks, the history's refinement, and the
memory-hours reserved compared with a fixed 8 cores / 256 GiB per stage.

For each preset a MOUS is simulated and its stages run as local processes through the stage entry point (as
in a pod), imaging on a local Dask cluster of 2 workers. For each stage (and the imaging workers) it prints:

(a) the model's request (model x SAFETY_MARGIN, no history) and, "learned", the request with the factor the
    history store learned from the *other* presets' runs (leave-one-out: a preset never learns from itself),
    each divided by the measured peak resident memory (aim: <= 1.5); whether the peak stays under the limit
    (request x LIMIT_HEADROOM) or would have been OOM-killed, and then whether one retry with 1.5x memory (the
    launcher's default) fits; and the duration the history predicted against the measured one.
(d) memory-hours reserved (request x wall time; imaging's workers counted as worker pods for the time their
    chunks ran) against 256 GiB x wall time per stage, and core-hours against 8 cores.

Usage: python bench/resources.py [--preset tiny --preset small ...]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

GiB = 2**30
MiB = 2**20
FIXED_BYTES, FIXED_CORES = 256 * GiB, 8
OOM_FACTOR = 1.5


def run_preset(preset: str, history_root: Path) -> list:
    from mousflow.model import load_manifest
    from mousflow.pipeline.demand import demand_of
    from mousflow.pipeline.flow import publish_manifest
    from mousflow.pipeline.history import History, record_outcome
    from mousflow.pipeline.launchers import LocalProcessLauncher
    from mousflow.simulate import simulate_mous
    from mousflow.storage.location import Location

    work = Path(tempfile.mkdtemp(prefix=f"mousflow-bench-res-{preset}-"))
    try:
        sim = simulate_mous(preset, str(work / "mous"), seed=1)
        text = sim.manifest.read_text()
        manifest_uri, run_root = publish_manifest(text)
        mous = load_manifest(text)
        demand = demand_of(mous)
        history = History(Location.of(history_root / preset))
        launcher = LocalProcessLauncher(threads=1, env={"MOUSFLOW_DASK": "local", "MOUSFLOW_DASK_MAX_WORKERS": "2"})
        records = []
        for stage in ("calibration", "imaging", "packaging"):
            outcome = launcher.launch(stage, manifest_uri, run_root, lambda _l: None)
            if outcome.state != "Succeeded":
                raise SystemExit(f"{preset} {stage}: {outcome.state} {outcome.reason} {outcome.message}")
            records += [(preset, demand, r, outcome.metrics)
                        for r in record_outcome(history, stage, mous.spec.uid, demand, outcome.metrics)]
        return records
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    from mousflow.pipeline.history import History, work_units
    from mousflow.pipeline.resources import LIMIT_HEADROOM, JobDemand, estimate_stage_resources
    from mousflow.storage.location import Location

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", action="append")
    a = p.parse_args()
    presets = a.preset or ["tiny", "small", "marginal"]
    history_root = Path(tempfile.mkdtemp(prefix="mousflow-bench-history-"))
    try:
        runs = [rec for preset in presets for rec in run_preset(preset, history_root)]

        def learned(preset: str, stage: str) -> tuple[float, float | None, int]:
            """Leave-one-out: the factor and seconds-per-unit from the other presets' records."""
            others = [History(Location.of(history_root / q)) for q in presets if q != preset]
            recs = [r for h in others for r in h.records(stage)]
            factor = max((r.memory_ratio for r in recs), default=1.0)
            rates = sorted(r.wall_seconds / work_units(stage, JobDemand(**r.demand)) for r in recs)
            rate = rates[len(rates) // 2] if rates else None
            return factor, rate, len(recs)

        print("(a) requested / measured peak memory per stage (aim <= 1.5); OOM = peak above the limit")
        print(f"{'preset':<9}{'stage':<15}{'peak MiB':>9}{'model req':>10}{'ratio':>6}{'learned req':>12}{'ratio':>6}"
              f"{'OOM?':>6}{'retry ok':>9}{'wall s':>8}{'pred s':>8}{'err %':>7}")
        totals = {"reserved": 0.0, "fixed": 0.0, "core_h": 0.0, "fixed_core_h": 0.0}
        ratios_model, ratios_learned, errors, ooms, retries_failed = [], [], [], 0, 0
        for preset, demand, rec, metrics in runs:
            stage = rec.stage
            model_req = estimate_stage_resources(stage, demand)
            factor, rate, _n = learned(preset, stage)
            req = estimate_stage_resources(stage, demand, learned_factor=factor)
            limit = req.memory_limit_bytes
            oom = rec.peak_bytes > limit
            retry_ok = not oom or rec.peak_bytes <= replace(req, memory_limit_bytes=int(limit * OOM_FACTOR)) \
                .memory_limit_bytes
            ooms += oom
            retries_failed += not retry_ok
            pred = rate * work_units(stage, demand) if rate is not None else None
            err = 100.0 * (pred - rec.wall_seconds) / rec.wall_seconds if pred and rec.wall_seconds else None
            if err is not None:
                errors.append(abs(err))
            r_model, r_learned = model_req.memory_bytes / rec.peak_bytes, req.memory_bytes / rec.peak_bytes
            ratios_model.append(r_model)
            ratios_learned.append(r_learned)
            print(f"{preset:<9}{stage:<15}{rec.peak_bytes / MiB:>9.0f}{model_req.memory_bytes / MiB:>10.0f}"
                  f"{r_model:>6.2f}{req.memory_bytes / MiB:>12.0f}{r_learned:>6.2f}{'yes' if oom else 'no':>6}"
                  f"{'yes' if retry_ok else 'NO':>9}{rec.wall_seconds:>8.1f}"
                  f"{(f'{pred:.1f}' if pred else '-'):>8}{(f'{err:+.0f}' if err is not None else '-'):>7}")
            hours = rec.wall_seconds / 3600.0
            if stage == "imaging-worker":
                workers = int(metrics.get("workers_used", 1))
                totals["reserved"] += workers * req.memory_bytes * hours
                totals["core_h"] += workers * req.cpu * hours
            else:
                totals["reserved"] += req.memory_bytes * hours
                totals["core_h"] += req.cpu * hours
                totals["fixed"] += FIXED_BYTES * hours
                totals["fixed_core_h"] += FIXED_CORES * hours
        print(f"requested/peak: model {min(ratios_model):.2f}-{max(ratios_model):.2f}, learned "
              f"{min(ratios_learned):.2f}-{max(ratios_learned):.2f}; OOM kills at the learned request: {ooms}, "
              f"not fixed by one retry: {retries_failed}; duration prediction |error|: "
              + (f"median {sorted(errors)[len(errors) // 2]:.0f} %, max {max(errors):.0f} %" if errors else "-"))
        print(f"(d) reserved {totals['reserved'] / GiB:.4f} GiB-hours and {totals['core_h']:.4f} core-hours; a fixed "
              f"8 cores / 256 GiB per stage: {totals['fixed'] / GiB:.2f} GiB-hours, {totals['fixed_core_h']:.3f} "
              f"core-hours ({totals['fixed'] / totals['reserved']:.0f}x and "
              f"{totals['fixed_core_h'] / totals['core_h']:.1f}x more); limit headroom {LIMIT_HEADROOM}")
    finally:
        shutil.rmtree(history_root, ignore_errors=True)


if __name__ == "__main__":
    main()
