"""The KPI (mousflow.kpi) and the operator's KPI metrics: gauges from the MOUSs' statuses, counters and histograms
observed once per event (mousflow_operator.kpi_events), read back from the exposition prometheus_client generates."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mousflow.kpi import (
    MOUSFacts,
    at_risk_count,
    delivered_within_deadline_fraction,
    monthly_table,
    overdue_count,
    queue_depth_by_days_to_deadline,
)
from mousflow.model import MOUSStatus
from mousflow_operator.metrics import OperatorMetrics

NOW = datetime(2025, 6, 30, tzinfo=UTC)
DAY = timedelta(days=1)


def _facts(key, phase, observed_days_ago, deadline_days=30, delivered_days_ago=None, predicted_in_days=None):
    observed = NOW - observed_days_ago * DAY
    return MOUSFacts(key, phase, observed, observed + deadline_days * DAY,
                     None if delivered_days_ago is None else NOW - delivered_days_ago * DAY,
                     None if predicted_in_days is None else NOW + predicted_in_days * DAY)


FLEET = [
    _facts("ns/on-time", "Delivered", 40, delivered_days_ago=20),         # 20 days: in time
    _facts("ns/late", "Delivered", 50, delivered_days_ago=5),             # 45 days: late
    _facts("ns/manual", "Delivered", 50, 45, delivered_days_ago=10),      # 40 days with a 45-day deadline
    _facts("ns/old", "Delivered", 200, delivered_days_ago=180),           # outside the 30-day window
    _facts("ns/overdue", "ReadyForProcessing", 35),
    _facts("ns/failed-overdue", "Failed", 31),
    _facts("ns/rejected", "QA2Fail", 60),                                 # not owed any more
    _facts("ns/at-risk", "ReadyForProcessing", 25, predicted_in_days=10),
    _facts("ns/fine", "FullyObserved", 2, predicted_in_days=1),
    _facts("ns/processing", "Processing", 20, predicted_in_days=20),      # at risk too
    _facts("ns/in-review", "Reviewing", 20, predicted_in_days=20),        # processed: not at risk any more
]


def test_kpi_from_facts():
    assert delivered_within_deadline_fraction(FLEET, NOW) == 2 / 3
    assert delivered_within_deadline_fraction(FLEET, NOW, window_days=7) == 0.0
    assert delivered_within_deadline_fraction([], NOW) is None
    assert overdue_count(FLEET, NOW) == 2
    assert at_risk_count(FLEET, NOW) == 2
    assert queue_depth_by_days_to_deadline(FLEET, NOW) == {"0": 1, "7": 2, "14": 2, "30": 3, "+Inf": 3}


def test_monthly_table_counts_deliveries_by_month_and_overdue_by_deadline_month():
    rows = {r.month: r for r in monthly_table(FLEET, NOW)}
    june = rows["2025-06"]
    assert (june.delivered, june.within_deadline_percent) == (3, 200 / 3)
    assert june.median_days == 40 and june.p90_days == 44
    assert june.overdue == 3        # late (deadline 2025-06-10), overdue, failed-overdue (deadlines in June)
    assert rows["2025-01"].delivered == 1 and rows["2025-01"].within_deadline_percent == 100


def _status(phase="Processing", **stages) -> MOUSStatus:
    return MOUSStatus.model_validate({"phase": phase, "deadline": "2025-07-01T00:00:00Z", "stages": stages})


def _stage(state, wall=None, peak=None, requested=None, retries=()):
    doc = {"state": state, "retries": [{"job": f"j{i}", "reason": r} for i, r in enumerate(retries)]}
    if wall is not None:
        doc["resources"] = {"requested": {"memory": requested}, "used": {"wallSeconds": wall,
                                                                         "peakMemoryBytes": peak}}
    return doc


def _families(m: OperatorMetrics) -> dict:
    return {f.name: f for f in text_string_to_metric_families(generate_latest(m.registry).decode())}


def _sample(families, name, **labels):
    for fam in families.values():
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise AssertionError(f"{name}{labels} not exported")


def test_stage_events_retries_verdicts_and_eta_error_are_observed_once():
    m = OperatorMetrics(clock=lambda: NOW)
    observed = NOW - 20 * DAY
    s0 = _status(calibration=_stage("Running", retries=("OOMKilled",)))
    s1 = _status(calibration=_stage("Succeeded", 100.0, 2**30, "1536Mi", ("OOMKilled", "Interrupted")),
                 imaging=_stage("Running"))
    m.record_changes("ns/a", observed, _status(), s0)
    m.record_changes("ns/a", observed, s0, s1)
    m.record_changes("ns/a", observed, s1, s1)  # the next tick: nothing new
    f = _families(m)
    assert _sample(f, "mousflow_stage_retries_total", reason="OOMKilled") == 1
    assert _sample(f, "mousflow_stage_retries_total", reason="Interrupted") == 1
    assert _sample(f, "mousflow_stage_duration_seconds_count", stage="calibration") == 1
    assert _sample(f, "mousflow_stage_duration_seconds_sum", stage="calibration") == 100.0
    assert _sample(f, "mousflow_stage_peak_memory_bytes_sum", stage="calibration") == 2**30
    assert _sample(f, "mousflow_stage_requested_memory_bytes_sum", stage="calibration") == 1.5 * 2**30
    assert _sample(f, "mousflow_stage_memory_request_to_peak_ratio_sum", stage="calibration") == 1.5

    done = MOUSStatus.model_validate({
        "phase": "ReadyForReview", "deadline": "2025-07-01T00:00:00Z", "predictedProcessingSeconds": 320.0,
        "qa2": {"verdict": "SemiPass"}, "stages": {
            "calibration": _stage("Succeeded", 100.0, 2**30, "1Gi"),
            "imaging": _stage("Succeeded", 250.0, 2**30, "1Gi"),
            "packaging": _stage("Skipped", 50.0)}})
    m.record_changes("ns/a", observed, s1, done)
    f = _families(m)
    assert _sample(f, "mousflow_qa2_verdicts_total", verdict="SemiPass") == 1
    assert _sample(f, "mousflow_eta_error_ratio_sum") == abs(400 - 320) / 400   # stages' wall times: 400 s
    assert _sample(f, "mousflow_stage_duration_seconds_count", stage="calibration") == 1   # not twice
    assert _sample(f, "mousflow_stage_duration_seconds_count", stage="imaging") == 1
    assert not [s for s in f["mousflow_stage_duration_seconds"].samples if s.labels.get("stage") == "packaging"]


def test_delivery_and_gauges():
    m = OperatorMetrics(clock=lambda: NOW)
    observed = NOW - 20 * DAY
    before = MOUSStatus.model_validate({"phase": "DeliveryInProgress", "deadline": "2025-07-10T00:00:00Z"})
    after = MOUSStatus.model_validate({"phase": "Delivered", "deadline": "2025-07-10T00:00:00Z", "conditions": [
        {"type": "Ready", "status": "True", "reason": "Delivered", "lastTransitionTime": NOW.isoformat()}]})
    m.record_changes("ns/a", observed, before, after)
    m.record_changes("ns/a", observed, after, after)
    late = MOUSStatus.model_validate({"phase": "ReadyForProcessing", "deadline": "2025-06-01T00:00:00Z"})
    m.record_changes("ns/b", NOW - 60 * DAY, late, late)
    risky = MOUSStatus.model_validate({"phase": "ReadyForProcessing", "deadline": "2025-07-05T00:00:00Z",
                                       "predictedCompletion": "2025-07-06T00:00:00Z"})
    m.record_changes("ns/c", NOW - 25 * DAY, risky, risky)
    f = _families(m)
    assert _sample(f, "mousflow_delivery_duration_seconds_count") == 1
    assert _sample(f, "mousflow_delivery_duration_seconds_sum") == 20 * 86400
    buckets = {float(s.labels["le"]): s.value for s in f["mousflow_delivery_duration_seconds"].samples
               if s.name.endswith("_bucket")}
    assert (buckets[14 * 86400], buckets[20 * 86400], buckets[60 * 86400]) == (0, 1, 1)
    assert _sample(f, "mousflow_delivered_within_deadline_ratio") == 1.0
    assert _sample(f, "mousflow_mous_overdue") == 1 and _sample(f, "mousflow_mous_at_risk") == 1
    assert _sample(f, "mousflow_queue_depth", le_days="0") == 1
    assert _sample(f, "mousflow_queue_depth", le_days="7") == 2
    assert _sample(f, "mousflow_mous", phase="Delivered") == 1
    m.forget("ns/a")
    assert math.isnan(_sample(_families(m), "mousflow_delivered_within_deadline_ratio"))


def test_no_metric_has_a_per_mous_label():
    m = OperatorMetrics(clock=lambda: NOW)
    s = _status(calibration=_stage("Succeeded", 1.0, 1, "1Mi", ("OOMKilled",)))
    m.record_changes("ns/a", NOW, _status(), s)
    allowed = {"phase", "from_phase", "to_phase", "stage", "reason", "verdict", "le", "le_days"}
    for fam in _families(m).values():
        for sample in fam.samples:
            assert set(sample.labels) <= allowed, (sample.name, sample.labels)


def test_a_stage_seen_succeeding_by_two_racing_reconciliations_counts_once():
    """An event's and a timer's reconciliation both computed from the same stale status (the first's patch not
    seen yet): both see calibration newly Succeeded; the duration histogram counts it once."""
    m = OperatorMetrics(clock=lambda: NOW)
    observed = NOW - 20 * DAY
    running = _status(calibration=_stage("Running"))
    done = _status(calibration=_stage("Succeeded", 100.0, 2**30, "1536Mi"))
    m.record_changes("ns/a", observed, running, done)
    m.record_changes("ns/a", observed, running, done)
    assert _sample(_families(m), "mousflow_stage_duration_seconds_count", stage="calibration") == 1
    m.record_changes("ns/b", observed, running, done)  # another MOUS's stage is its own
    assert _sample(_families(m), "mousflow_stage_duration_seconds_count", stage="calibration") == 2
