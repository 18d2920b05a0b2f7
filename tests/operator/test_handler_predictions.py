"""The handlers' glue for predictions, without a cluster: the queue index carries each MOUS's prediction, a
waiting MOUS's own prediction comes from the history (or says why not), and its completion from the queue."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from mousflow.pipeline.history import History, StageRecord
from mousflow.pipeline.resources import JobDemand
from mousflow.storage.location import Location
from mousflow_operator import handlers
from mousflow_operator.settings import OperatorSettings

NOW = datetime(2025, 3, 1, tzinfo=UTC)
DEMAND = JobDemand(rows_per_window=1000, correlations=2, max_channels=16, total_channels=32, image_pixels=64)
SPEC = {"fullyObservedAt": "2025-02-20T00:00:00Z", "priority": 50}


def _index_entry(name, phase, seconds=None, started=None):
    status = {"phase": phase}
    if seconds is not None:
        status["predictedProcessingSeconds"] = seconds
    if started:
        status["stages"] = {"calibration": {"startedAt": started}}
    return handlers.mous_queue(name=name, namespace="ns", spec=SPEC, status=status,
                               meta={"creationTimestamp": "2025-02-28T00:00:00Z", "annotations": {}})


def test_the_queue_index_carries_predictions_and_start_times():
    [(phase, degraded, entry)] = _index_entry("a", "Processing", 600.0, "2025-03-01T00:00:00Z").values()
    assert (phase, degraded, entry.seconds, entry.started) == ("Processing", False, 600.0, NOW)
    assert entry.deadline == datetime(2025, 3, 22, tzinfo=UTC)


def test_completion_of_a_waiting_mous_counts_the_one_processing():
    index = {}
    for doc in (_index_entry("run", "Processing", 3600.0, (NOW - timedelta(minutes=30)).isoformat()),
                _index_entry("me", "ReadyForProcessing", 100.0)):
        index.update({k: [v] for k, v in doc.items()})
    runs = SimpleNamespace(active=lambda: set())
    cfg = OperatorSettings(max_processing=1)
    new = handlers.MOUSStatus(predicted_processing_seconds=600.0)   # this tick's prediction, not the index's
    eta = handlers._predicted_completion(index, runs, "ns/me", new, NOW, cfg)
    assert eta == NOW + timedelta(minutes=30 + 10)
    assert handlers._predicted_completion(index, runs, "ns/me", handlers.MOUSStatus(), NOW, cfg) is None


@pytest.fixture
def memo():
    return SimpleNamespace(own_predictions={})


def _body():
    return {"metadata": {"name": "me"}, "spec": {
        "uid": "uid://A001/X1/X1", "projectCode": "2025.1.00001.S", "band": 6, "fullyObservedAt": NOW.isoformat(),
        "executionBlocks": [{"uid": "uid://A001/X1/X2", "uri": "/nonexistent/eb.ps.zarr"}],
        "scienceGoals": [{"name": "g", "sensitivityJy": 1e-3, "sensitivityBandwidthHz": 1e9,
                          "resolution": {"minArcsec": 0.5, "maxArcsec": 2}, "representativeFrequencyHz": 230e9}],
        "output": {"uri": "/tmp/out"}}}


def test_own_prediction_from_the_history_or_why_not(memo, monkeypatch, tmp_path):
    cfg = OperatorSettings()
    monkeypatch.delenv("MOUSFLOW_HISTORY", raising=False)
    assert handlers._own_prediction(memo, "ns/me", "ns", _body(), None, cfg) == (None, "NoHistory")

    memo.own_predictions.clear()
    monkeypatch.setenv("MOUSFLOW_HISTORY", str(tmp_path / "h"))
    assert handlers._own_prediction(memo, "ns/me", "ns", _body(), None, cfg) == (None, "PredictionFailed")

    history = History(Location.of(tmp_path / "h"))
    for stage, seconds in (("calibration", 10.0), ("imaging", 30.0), ("packaging", 5.0)):
        history.add(StageRecord(stage, "uid://A001/X1/X9", asdict(DEMAND), 1, 1, 1, seconds))
    monkeypatch.setattr("mousflow.pipeline.demand.demand_of", lambda _mous: DEMAND)
    # reused until the refresh time has passed
    assert handlers._own_prediction(memo, "ns/me", "ns", _body(), None, cfg) == (None, "PredictionFailed")
    memo.own_predictions.clear()
    assert handlers._own_prediction(memo, "ns/me", "ns", _body(), None, cfg) == (pytest.approx(45.0), "Predicted")
