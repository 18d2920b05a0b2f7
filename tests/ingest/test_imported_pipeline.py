"""Measurement Sets made by CASA's simulator, imported, then calibrated and imaged by the stage entry points:
the known sky must come back (fluxes within 5 %, positions within 0.1 beam)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from imported_sky import GOAL_ARGS, measure_sources, run_stages

from mousflow.storage.location import Location
from mousflow.storage.partitions import load_partition, open_checked, partition_infos

pytestmark = pytest.mark.slow


def _calibration(root) -> dict:
    return json.loads((root / "calibration" / "summary.json").read_text())


def _phase_calibrator_fluxes(summary: dict) -> list[tuple[float, float]]:
    return [(w["phase_calibrator_flux_jy"], w["phase_calibrator_frequency_hz"])
            for eb in summary["execution_blocks"] for w in eb["windows"].values()]


def test_imported_ms_calibrates_and_images_to_the_known_sky(imported, casa_ms):
    run_stages(imported / "mous.yaml", "calibration", "imaging")
    root = imported / "output"
    phase = casa_ms["calibrators"]["phase"]
    for flux, freq in _phase_calibrator_fluxes(_calibration(root)):
        assert flux == pytest.approx(phase["flux_jy"] * (freq / phase["reference_hz"]) ** phase["alpha"], rel=0.02)
    results = measure_sources(root, casa_ms)
    assert len(results) == 2
    for name, ratio, offset_beams in results:
        assert ratio == pytest.approx(1.0, abs=0.05), name
        assert offset_beams < 0.1, name


def test_circular_feeds_no_flux_calibrator_and_padded_baselines(import_ms, casa_ms_circular, tmp_path):
    """RR/LL (cross hands dropped), NaN-padded rows, and the flux scale from the spec's calibrator flux density
    because the execution block has no flux calibrator; QA2 says so."""
    truth = casa_ms_circular
    phase = truth["calibrators"]["phase"]
    out = tmp_path / "mous"
    code, _, err = import_ms(truth["ms"], "--out", str(out), *GOAL_ARGS, "--calibrator-flux", phase["name"],
                             str(phase["flux_jy"]), str(phase["reference_hz"]), str(phase["alpha"]))
    assert code == 0, err
    eb = Location.of(next((out / "eb").glob("*.ps.zarr")))
    ps = open_checked(eb)
    targets = [i for i in partition_infos(ps) if "OBSERVE_TARGET#ON_SOURCE" in i.intents]
    assert targets and all(i.correlations == ["RR", "RL", "LR", "LL"] for i in targets)
    padded = sum(int(np.isnan(ps[i.name]["VISIBILITY"].values).any(axis=(2, 3)).sum()) for i in targets)
    assert padded > 0, "the converter should have padded the missing rows with NaN"

    run_stages(out / "mous.yaml", "calibration", "imaging", "packaging")
    root = out / "output"
    summary = _calibration(root)
    assert all(w["flux_calibrator"].startswith(phase["name"]) and not w["flux_calibrator_observed"]
               for eb_ in summary["execution_blocks"] for w in eb_["windows"].values())
    calibrated = open_checked(Location.of(next((root / "calibration").glob("*/calibrated.ps.zarr"))))
    part = load_partition(calibrated[partition_infos(calibrated)[0].name])
    assert part.correlations == ["RR", "LL"]
    assert np.isfinite(part.vis).all()
    qa2 = json.loads((root / "products" / "qa2.json").read_text())
    assert any("no flux calibrator observed" in n and phase["name"] in n for n in qa2["notes"]), qa2["notes"]
    assert "no flux calibrator observed" in (root / "products" / "weblog" / "index.html").read_text()
    for name, ratio, offset_beams in measure_sources(root, truth):
        assert ratio == pytest.approx(1.0, abs=0.05), name
        assert offset_beams < 0.1, name
