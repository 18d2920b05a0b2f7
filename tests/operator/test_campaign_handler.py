"""The campaign handler's glue (mousflow_operator.campaign) against an in-memory MOUS store and a local output
prefix: MOUSs made within the throttle and never twice, retries asked for, the status patched, the report
written once every entry is finished."""

from __future__ import annotations

import copy
from pathlib import Path

import kopf
import pytest
import yaml

from mousflow_operator import campaign

MOUS = yaml.safe_load((Path(__file__).parents[1] / "model" / "manifests" / "valid-minimal.yaml").read_text())
SHARED = {k: v for k, v in MOUS["spec"].items() if k not in ("uid", "executionBlocks", "output")}
EB = MOUS["spec"]["executionBlocks"]


class Store:
    """The MOUSs of one namespace, as the API server would keep them (creation refuses an existing name)."""

    def __init__(self):
        self.items: dict[str, dict] = {}
        self.creates = 0
        self.patches: list[tuple[str, dict]] = []

    def owned(self, namespace, name, uid):
        return [copy.deepcopy(m) for m in self.items.values()]

    def create(self, namespace, doc):
        self.creates += 1
        if doc["metadata"]["name"] in self.items:
            return True, ""
        self.items[doc["metadata"]["name"]] = copy.deepcopy(doc)
        return True, ""

    def retry(self, namespace, r):
        self.patches.append((r.mous, r.annotations))
        self.items[r.mous]["metadata"]["annotations"].update(r.annotations)

    def set_phase(self, name, phase, reason="", stages=None):
        status = {"phase": phase, "conditions": [{"type": "Degraded", "status": "True" if reason else "False",
                                                  "reason": reason or "AsExpected", "message": reason,
                                                  "lastTransitionTime": "2026-12-03T10:00:00Z"}]}
        if stages:
            status["stages"] = stages
        self.items[name]["status"] = status


@pytest.fixture
def store(monkeypatch):
    s = Store()
    monkeypatch.setattr(campaign, "_owned_mouses", s.owned)
    monkeypatch.setattr(campaign, "_create", s.create)
    monkeypatch.setattr(campaign, "_retry", s.retry)
    events: list[tuple[str, str]] = []
    monkeypatch.setattr(kopf, "info", lambda body, reason, message: events.append((reason, message)))
    monkeypatch.setattr(kopf, "warn", lambda body, reason, message: events.append((reason, message)))
    s.events = events
    return s


def reconcile(body: dict) -> dict:
    patch = kopf.Patch()
    campaign.campaign_reconcile(body=body, spec=body["spec"], meta=body["metadata"], name=body["metadata"]["name"],
                                namespace="ns", uid=body["metadata"]["uid"], patch=patch, logger=None)
    status = dict(body.get("status") or {})
    for k, v in dict(patch.get("status", {})).items():
        if v is None:
            status.pop(k, None)
        else:
            status[k] = v
    body["status"] = status
    return status


def test_a_campaign_runs_to_its_report(store, tmp_path):
    inputs = [{"name": f"g{i}", "uid": f"uid://A001/X1/X{i + 1}", "executionBlocks": EB} for i in range(3)]
    inputs += [{"name": "dup", "uid": "uid://A001/X1/X1", "executionBlocks": EB},
               {"name": "nomanifest", "manifest": str(tmp_path / "nowhere" / "mous.yaml")}]
    body = {"metadata": {"name": "c1", "uid": "u-1", "generation": 1},
            "spec": {"inputs": inputs, "maxInFlight": 2,
                     "template": {"outputPrefix": str(tmp_path / "out"), "spec": SHARED}}}
    status = reconcile(body)
    assert sorted(store.items) == ["c1-g0", "c1-g1"] and status["inFlight"] == 2 and status["phase"] == "Running"
    assert status["counts"]["byOutcome"] == {"Skipped": 2}
    assert {i["name"]: i.get("reason") for i in status["items"] if i.get("reason")} == {
        "dup": "Duplicate", "nomanifest": "InputMissing"}
    # the same tick again (a restart): nothing new, nothing made twice
    reconcile(body)
    assert sorted(store.items) == ["c1-g0", "c1-g1"]
    # g0 delivered, g1 out of memory: g2 made, g1 retried with more memory
    store.set_phase("c1-g0", "Delivered", stages={"calibration": {"startedAt": "2026-12-03T10:00:00Z",
                                                                  "finishedAt": "2026-12-03T10:04:00Z"}})
    store.set_phase("c1-g1", "Failed", "OOMKilled")
    status = reconcile(body)
    assert "c1-g2" in store.items
    assert store.patches == [("c1-g1", {"mousflow.io/retry": "campaign-1",
                                        "mousflow.io/campaign-remediations": "OutOfMemory"})]
    assert ("RemediationRetryWithMoreMemory", "MOUS c1-g1: OutOfMemory -> RetryWithMoreMemory (campaign-1)") \
        in store.events
    reconcile(body)
    assert len(store.patches) == 1  # the retry is pending: not asked again
    store.items["c1-g1"]["metadata"]["annotations"]["mousflow.io/retry-handled"] = "campaign-1"
    store.set_phase("c1-g1", "Delivered")
    store.set_phase("c1-g2", "Failed", "CalibrationFailed")
    status = reconcile(body)
    assert status["phase"] == "Finished", status
    report = status["report"]
    assert report["delivered"] == 2 and report["successRate"] == round(2 / 3, 4)
    assert report["failuresByClass"] == {"CalibrationFailed": 1, "Duplicate": 1, "BadInput": 1}
    assert report["medianSecondsPerDataset"] == 240.0
    assert status["counts"]["remediationsByClass"] == {"OutOfMemory": 1}
    written = (tmp_path / "out" / "report" / "campaign-report.json")
    assert written.exists() and (tmp_path / "out" / "report" / "index.html").exists()
    assert report["jsonUri"].endswith("campaign-report.json")
    creates = store.creates
    reconcile(body)  # finished: nothing more is done
    assert store.creates == creates


def test_an_invalid_campaign_spec_is_a_degraded_condition(store, tmp_path):
    body = {"metadata": {"name": "c2", "uid": "u-2", "generation": 1},
            "spec": {"inputs": [{"manifest": "/a/mous.yaml"}], "maxInFlight": 0,
                     "template": {"outputPrefix": str(tmp_path)}}}
    status = reconcile(body)
    degraded = {c["type"]: c for c in status["conditions"]}["Degraded"]
    assert degraded["status"] == "True" and "maxInFlight" in degraded["message"] and store.items == {}
