"""The campaign's decisions (mousflow_operator.campaign_plan): entries, duplicates, names, throttle,
remediation by failure class, counts and the final report. Pure: no cluster, no storage."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from mousflow.model.campaign import MOUSCampaignSpec
from mousflow_operator.campaign_plan import (
    A_RETRY,
    ANN_REMEDIATIONS,
    LABEL_CAMPAIGN,
    ManifestRead,
    MousView,
    failure_class,
    final_report,
    mous_document,
    mous_view,
    plan,
    report_document,
    report_html,
    resolve_entries,
)

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
MOUS = yaml.safe_load((Path(__file__).parents[1] / "model" / "manifests" / "valid-minimal.yaml").read_text())
EB = MOUS["spec"]["executionBlocks"][0]
SHARED = {k: v for k, v in MOUS["spec"].items() if k not in ("uid", "executionBlocks", "output")}


def campaign(inputs: list[dict], **extra) -> MOUSCampaignSpec:
    return MOUSCampaignSpec.model_validate({
        "inputs": inputs, "template": {"outputPrefix": "s3://campaigns/c1", "deliveryPrefix": "s3://delivered/c1",
                                       "spec": SHARED, "recipe": "calibrate+image"}, **extra})


def eb_input(n: int, **kw) -> dict:
    return {"uid": f"uid://A001/X1/X{n:x}", "executionBlocks": [EB], **kw}


def manifest_doc(uid: str) -> dict:
    doc = copy.deepcopy(MOUS)
    doc["spec"]["uid"] = uid
    return doc


def test_each_form_of_input_becomes_a_mous_spec_with_the_campaigns_output_and_delivery():
    spec = campaign([eb_input(1), {"manifest": "s3://archive/m2/mous.yaml"},
                     {"mous": {**SHARED, "uid": "uid://A001/X1/X3", "executionBlocks": [EB], "band": 3}}])
    entries = resolve_entries("c1", spec, {"s3://archive/m2/mous.yaml": ManifestRead("ok",
                                                                                     manifest_doc("uid://A001/X1/X2"))})
    assert [e.reason for e in entries] == ["", "", ""]
    assert [e.spec["uid"] for e in entries] == ["uid://A001/X1/X1", "uid://A001/X1/X2", "uid://A001/X1/X3"]
    for e in entries:
        assert e.mous_name.startswith("c1-e-")
        assert e.spec["output"]["uri"] == f"s3://campaigns/c1/mous/{e.mous_name}"
        assert e.spec["delivery"] == {"uri": f"s3://delivered/c1/{e.mous_name}", "automatic": True}
        assert e.spec["recipe"] == "calibrate+image"
    doc = mous_document("c1", "uid-123", entries[0])
    assert doc["metadata"]["labels"] == {LABEL_CAMPAIGN: "c1"}
    assert doc["metadata"]["ownerReferences"][0]["uid"] == "uid-123"
    assert doc["metadata"]["ownerReferences"][0]["kind"] == "MOUSCampaign"


def test_names_are_deterministic_whatever_the_order_or_the_run():
    a = resolve_entries("c1", campaign([eb_input(1), eb_input(2, name="second")]), {})
    b = resolve_entries("c1", campaign([eb_input(2, name="second"), eb_input(1)]), {})
    assert {e.mous_name for e in a} == {e.mous_name for e in b}
    assert "c1-second" in {e.mous_name for e in a}


def test_bad_entries_are_reported_each_and_the_rest_goes_on():
    spec = campaign([
        eb_input(1),
        {"manifest": "s3://archive/gone/mous.yaml"},                # missing manifest
        {"manifest": "s3://archive/junk/mous.yaml"},                # not a MOUS manifest
        {},                                                         # no form
        {"manifest": "s3://archive/x/mous.yaml", "uid": "uid://A001/X1/X9", "executionBlocks": [EB]},  # two
        eb_input(1),                                                # the same uid as entry 0
        {"executionBlocks": [EB]},                                  # no uid
        {"mous": {"uid": "uid://A001/X1/X5"}},                      # an incomplete spec
        {"manifest": "s3://archive/gone/mous.yaml"},                # the same manifest as entry 1
        {"manifest": "s3://archive/flaky/mous.yaml"},               # unreadable for now
        eb_input(7),
    ])
    manifests = {"s3://archive/gone/mous.yaml": ManifestRead("missing", None, "no such object"),
                 "s3://archive/junk/mous.yaml": ManifestRead("invalid", None, "not YAML"),
                 "s3://archive/flaky/mous.yaml": ManifestRead("unreadable", None, "connection refused")}
    entries = resolve_entries("c1", spec, manifests)
    assert [e.reason for e in entries] == ["", "InputMissing", "InvalidInput", "InvalidEntry", "InvalidEntry",
                                           "Duplicate", "InvalidEntry", "InvalidEntry", "Duplicate", "Unreadable",
                                           ""]
    assert "entry 0" in entries[5].message and "entry 1" in entries[8].message
    p = plan(entries, {}, frozenset(), spec, NOW)
    # every problem but the unreadable manifest is final and skipped; the two good entries are created
    assert [e.index for e in p.create] == [0, 10]
    assert p.counts.by_outcome == {"Skipped": 8}
    assert p.counts.by_failure_class == {"BadInput": 6, "Duplicate": 2}
    assert p.items[9].outcome is None and p.items[9].state == "Waiting" and "connection refused" in p.items[9].message
    assert not p.finished


def test_a_mous_that_exists_keeps_its_uid_when_an_earlier_entry_turns_out_to_share_it():
    spec = campaign([{"manifest": "s3://archive/late/mous.yaml"}, eb_input(4)])
    first = resolve_entries("c1", spec, {"s3://archive/late/mous.yaml": ManifestRead("unreadable")})
    made = frozenset({first[1].mous_name})
    later = resolve_entries("c1", spec, {"s3://archive/late/mous.yaml": ManifestRead(
        "ok", manifest_doc("uid://A001/X1/X4"))}, existing=made)
    assert later[0].reason == "Duplicate" and later[1].reason == ""


def test_the_throttle_keeps_at_most_max_in_flight_unfinished():
    spec = campaign([eb_input(n) for n in range(1, 8)], maxInFlight=3)
    entries = resolve_entries("c1", spec, {})
    p = plan(entries, {}, frozenset(), spec, NOW)
    assert [e.index for e in p.create] == [0, 1, 2] and p.in_flight == 3
    views = {entries[0].mous_name: MousView(entries[0].mous_name, "Delivered"),
             entries[1].mous_name: MousView(entries[1].mous_name, "Processing"),
             entries[2].mous_name: MousView(entries[2].mous_name, "Failed", True, "CalibrationFailed")}
    p = plan(entries, views, frozenset(views), spec, NOW)
    assert [e.index for e in p.create] == [3, 4] and p.in_flight == 3
    assert p.counts.by_outcome == {"Delivered": 1, "Failed": 1}
    assert p.counts.by_failure_class == {"CalibrationFailed": 1}


def test_a_restart_creates_nothing_already_made_and_never_remakes_a_deleted_one():
    spec = campaign([eb_input(1), eb_input(2)], maxInFlight=5)
    entries = resolve_entries("c1", spec, {})
    names = [e.mous_name for e in entries]
    p = plan(entries, {names[0]: MousView(names[0], "Processing")}, frozenset({names[0]}), spec, NOW)
    assert [e.index for e in p.create] == [1]
    # the first was made (status says so) and is gone: reported, not made again
    p = plan(entries, {names[1]: MousView(names[1], "Processing")}, frozenset(names), spec, NOW)
    assert p.create == [] and p.items[0].outcome == "Failed" and p.items[0].reason == "MOUSDeleted"


def failed(name: str, reason: str, remediations: tuple[str, ...] = (), failed_at=NOW, pending=False) -> MousView:
    return MousView(name, "Failed", True, reason, "it failed", failed_at, pending, remediations)


def test_each_failure_class_gets_its_remediation_within_the_bound():
    spec = campaign([eb_input(n) for n in range(1, 9)], maxInFlight=8, maxRemediations=2, backoffSeconds=60)
    entries = resolve_entries("c1", spec, {})
    n = [e.mous_name for e in entries]
    views = {n[0]: failed(n[0], "OOMKilled"), n[1]: failed(n[1], "OutOfMemory", ("OutOfMemory",)),
             n[2]: failed(n[2], "Interrupted"),
             n[3]: failed(n[3], "Unavailable", failed_at=NOW - timedelta(seconds=61)),
             n[4]: failed(n[4], "Unavailable", ("Transient",), failed_at=NOW - timedelta(seconds=61)),
             n[5]: failed(n[5], "InputMissing"), n[6]: failed(n[6], "ImagingFailed"),
             n[7]: failed(n[7], "OOMKilled", ("OutOfMemory", "OutOfMemory"))}
    p = plan(entries, views, frozenset(views), spec, NOW)
    retries = {r.mous: r for r in p.retries}
    assert retries[n[0]].action == "RetryWithMoreMemory"
    assert retries[n[0]].annotations == {A_RETRY: "campaign-1", ANN_REMEDIATIONS: "OutOfMemory"}
    assert retries[n[1]].annotations == {A_RETRY: "campaign-2", ANN_REMEDIATIONS: "OutOfMemory,OutOfMemory"}
    assert retries[n[2]].action == "Resume"
    assert retries[n[3]].action == "RetryAfterBackoff"
    assert n[4] not in retries  # the second transient retry waits 120 s after the failure
    assert "retrying at" in p.items[4].message and p.items[4].outcome is None
    assert p.items[5].outcome == "Skipped" and p.items[5].failure_class == "BadInput"
    assert p.items[6].outcome == "Failed" and n[6] not in retries
    assert p.items[7].outcome == "Failed" and "none left" in p.items[7].message and n[7] not in retries
    assert p.in_flight == 5 and not p.finished
    assert p.counts.remediations_by_class == {"OutOfMemory": 3, "Transient": 1}


def test_a_retry_already_asked_for_is_not_asked_again():
    spec = campaign([eb_input(1)])
    (e,) = resolve_entries("c1", spec, {})
    p = plan([e], {e.mous_name: failed(e.mous_name, "OOMKilled", ("OutOfMemory",), pending=True)},
             frozenset({e.mous_name}), spec, NOW)
    assert p.retries == [] and p.in_flight == 1 and p.items[0].outcome is None


def test_classes_of_reasons():
    assert failure_class("OOMKilled") == failure_class("OutOfMemory") == "OutOfMemory"
    assert failure_class("Unavailable") == failure_class("Busy") == "Transient"
    assert failure_class("InputMissing") == failure_class("InvalidInput") == "BadInput"
    assert failure_class("CalibrationFailed") == "CalibrationFailed"
    assert failure_class("Error") == failure_class("SomethingNew") == "Error"


def test_a_mous_with_an_invalid_spec_is_skipped_as_bad_input_and_review_ends_the_campaigns_part():
    spec = campaign([eb_input(1), eb_input(2)])
    entries = resolve_entries("c1", spec, {})
    n = [e.mous_name for e in entries]
    views = {n[0]: MousView(n[0], "FullyObserved", True, "InvalidSpec", "band 3 vs frequency"),
             n[1]: MousView(n[1], "Reviewing")}
    p = plan(entries, views, frozenset(n), spec, NOW)
    assert p.items[0].outcome == "Skipped" and p.items[0].failure_class == "BadInput"
    assert p.items[1].outcome == "NeedsReview" and p.finished


def test_mous_view_reads_the_resource():
    obj = {"metadata": {"name": "c1-x", "annotations": {A_RETRY: "campaign-1", "mousflow.io/retry-handled": "x",
                                                        ANN_REMEDIATIONS: "OutOfMemory"}},
           "status": {"phase": "Failed",
                      "conditions": [{"type": "Degraded", "status": "True", "reason": "OOMKilled", "message": "m",
                                      "lastTransitionTime": "2026-12-03T11:00:00Z"}],
                      "stages": {"calibration": {"startedAt": "2026-12-03T10:00:00Z",
                                                 "finishedAt": "2026-12-03T10:01:00Z"},
                                 "imaging": {"startedAt": "2026-12-03T10:01:00Z",
                                             "finishedAt": "2026-12-03T10:05:30Z"}}}}
    v = mous_view(obj)
    assert (v.phase, v.reason, v.retry_pending, v.remediations, v.seconds) == (
        "Failed", "OOMKilled", True, ("OutOfMemory",), 330.0)
    assert v.failed_at == datetime(2026, 12, 3, 11, tzinfo=UTC)
    assert mous_view({"metadata": {"name": "y"}}).phase == "FullyObserved"


def test_the_final_report_has_success_rate_time_per_dataset_and_failures_by_class():
    spec = MOUSCampaignSpec.model_validate({
        "inputs": [eb_input(n) for n in range(1, 6)] + [eb_input(1)],
        "template": {"outputPrefix": "s3://camp/p", "spec": SHARED, "deadline": "2026-12-31T00:00:00Z"},
        "maxInFlight": 10})
    entries = resolve_entries("c1", spec, {})
    n = [e.mous_name for e in entries]
    views = {n[0]: MousView(n[0], "Delivered", seconds=100.0), n[1]: MousView(n[1], "Delivered", seconds=300.0),
             n[2]: MousView(n[2], "Delivered", seconds=200.0, remediations=("OutOfMemory",)),
             n[3]: failed(n[3], "CalibrationFailed"), n[4]: failed(n[4], "InputMissing")}
    p = plan(entries, views, frozenset(views), spec, NOW)
    assert p.finished and p.create == []
    report = final_report(p.items, spec, NOW - timedelta(hours=1), NOW)
    assert report.entries == 6 and report.delivered == 3
    assert report.success_rate == 0.75  # the missing input and the duplicate are not datasets to deliver
    assert report.median_seconds_per_dataset == 200.0 and report.mean_seconds_per_dataset == 200.0
    assert report.failures_by_class == {"CalibrationFailed": 1, "BadInput": 1, "Duplicate": 1}
    assert report.wall_seconds == 3600.0 and report.deadline_met is True
    doc = report_document("c1", report, p.items, p.counts)
    assert doc["successRate"] == 0.75 and len(doc["entries"]) == 6
    assert doc["remediationsByClass"] == {"OutOfMemory": 1}
    page = report_html("c<1>", report, p.items, p.counts)
    assert "Campaign c&lt;1&gt;" in page and "75.0%" in page and "CalibrationFailed" in page
