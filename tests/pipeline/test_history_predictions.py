"""The history's prediction of a whole MOUS's processing time (the ETA's input) and its delivery records."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from mousflow.pipeline.history import DeliveryRecord, History, StageRecord, work_units
from mousflow.pipeline.resources import JobDemand
from mousflow.storage.location import Location

SMALL = JobDemand(rows_per_window=1_000, correlations=2, max_channels=16, total_channels=32, image_pixels=64)
LARGE = JobDemand(rows_per_window=4_000, correlations=2, max_channels=16, total_channels=32, image_pixels=64)


def test_processing_time_is_the_sum_of_the_stages_and_scales_with_the_work(tmp_path):
    history = History(Location.of(tmp_path))
    assert history.predict_processing_seconds(SMALL) == (None, ["calibration", "imaging", "packaging"])
    for stage, seconds in (("calibration", 10.0), ("imaging", 40.0)):
        history.add(StageRecord(stage, "uid://A001/X1/X1", asdict(SMALL), 1, 1, 1, seconds))
    assert history.predict_processing_seconds(SMALL) == (None, ["packaging"])   # no ETA without every stage
    history.add(StageRecord("packaging", "uid://A001/X1/X1", asdict(SMALL), 1, 1, 1, 5.0))
    seconds, missing = history.predict_processing_seconds(SMALL)
    assert (seconds, missing) == (pytest.approx(55.0), [])
    larger, _ = history.predict_processing_seconds(LARGE)
    expected = sum(s * work_units(st, LARGE) / work_units(st, SMALL)
                   for st, s in (("calibration", 10.0), ("imaging", 40.0), ("packaging", 5.0)))
    assert larger == pytest.approx(expected) and larger > seconds


def test_deliveries_are_recorded_and_read_back(tmp_path):
    history = History(Location.of(tmp_path))
    assert history.deliveries() == []
    rec = DeliveryRecord("uid://A001/X1/X2", "alma/m1", "2025-01-01T00:00:00+00:00", "2025-01-31T00:00:00+00:00",
                         "2025-01-20T12:00:00+00:00")
    history.add_delivery(rec)
    (tmp_path / "deliveries" / "broken.json").write_text("{not json")
    assert history.deliveries() == [rec]
