"""The event-driven operator's parts without a cluster: facts from Job events and flow reports kept in memory
(storage read once, only when nothing was heard), wakes coalesced, input verdicts kept per execution block,
and the stage-Job settings taken from the operator's settings, not the environment again."""

from __future__ import annotations

import threading
import time
import warnings
from pathlib import Path

import yaml

from mousflow.model import load_manifest
from mousflow.model.status import MOUSStatus, StageName
from mousflow.pipeline import reports
from mousflow.pipeline.launchers import StageJobConfig, job_settings_from_env
from mousflow.storage.location import Location
from mousflow_operator import inputs
from mousflow_operator.facts import FactStore
from mousflow_operator.settings import OperatorSettings
from mousflow_operator.wake import WAKE_ANNOTATION, Waker

LABEL = "abcdef0123"


def _job(name: str, stage: str, **status) -> dict:
    return {"metadata": {"name": name, "labels": {"mousflow.io/mous": LABEL, "mousflow.io/stage": stage},
                         "annotations": {"mousflow.io/attempt": "1"}, "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"template": {"spec": {"containers": [{"resources": {"requests": {"memory": "1Gi"}}}]}}},
            "status": status}


def test_job_events_are_kept_slim_and_only_changes_wake(tmp_path):
    store = FactStore()
    assert store.job_event("ADDED", _job("j1", "calibration")) is True
    assert store.job_event("MODIFIED", _job("j1", "calibration")) is False  # nothing status shows changed
    assert store.job_event("MODIFIED", _job("j1", "calibration", active=1)) is True
    [job] = store.jobs_of(LABEL)["calibration"]
    assert job["spec"]["template"]["spec"]["containers"][0] == {"resources": {"requests": {"memory": "1Gi"}}}
    assert store.job_event("DELETED", _job("j1", "calibration")) is True and store.jobs_of(LABEL) == {}


def test_a_stage_report_comes_from_the_flow_and_from_storage_only_once(tmp_path):
    store, root = FactStore(), Location.of(tmp_path)
    running = [_job("j1", "calibration", active=1)]
    finished = [_job("j1", "calibration", succeeded=1)]
    assert store.report("uid", root, "calibration", running) is None and store.storage_reads == 0
    # after a restart: the Job finished, nothing heard: read from storage, once per finished Job
    root.join("status", "calibration.json").write_json({"stage": "calibration", "state": "Succeeded"})
    assert store.report("uid", root, "calibration", finished)["state"] == "Succeeded"
    assert store.report("uid", root, "calibration", finished)["state"] == "Succeeded"
    assert store.storage_reads == 1
    # what the flow publishes wins, without reading anything
    store.flow_report("uid", {"kind": "outcome", "stage": "calibration", "report": {"state": "Skipped"}})
    assert store.report("uid", root, "calibration", finished) == {"state": "Skipped"}
    assert store.storage_reads == 1
    store.new_run("uid")  # a new run: the old run's reports are no news of it
    assert store.report("uid", root, "calibration", running) is None


def test_progress_is_read_only_when_asked(tmp_path):
    store, root = FactStore(), Location.of(tmp_path)
    root.join("status", "imaging.progress.json").write_json({"percent": 40})
    assert store.progress("uid", root, "imaging", refresh=False) is None and store.storage_reads == 0
    assert store.progress("uid", root, "imaging", refresh=True) == {"percent": 40}
    assert store.progress("uid", root, "imaging", refresh=False) == {"percent": 40} and store.storage_reads == 1


def test_flow_reports_reach_subscribers_and_a_failing_one_harms_nobody():
    got = []

    def bad(uid, event):
        raise RuntimeError("boom")

    def good(uid, event):
        got.append((uid, event["kind"]))

    reports.subscribe(bad)
    reports.subscribe(good)
    try:
        reports.publish("u1", {"kind": "outcome", "stage": "imaging", "report": {}})
    finally:
        reports.unsubscribe(bad)
        reports.unsubscribe(good)
    reports.publish("u2", {"kind": "outcome"})
    assert got == [("u1", "outcome")]


def test_wakes_are_coalesced_and_can_be_set_for_later():
    sent, done = [], threading.Event()

    def patch(namespace, name, body):
        sent.append((namespace, name, body["metadata"]["annotations"][WAKE_ANNOTATION]))
        if len(sent) >= 2:
            done.set()

    waker = Waker(patch, flush_seconds=0.05)
    for _ in range(5):
        waker.wake("ns/a")
    waker.wake_at("ns/b", time.time() + 0.3)
    waker.wake(None)
    waker.start()
    assert done.wait(5)
    waker.stop()
    assert [(ns, n) for ns, n, _ in sent] == [("ns", "a"), ("ns", "b")]


def test_an_execution_block_is_checked_once_for_many_mous(monkeypatch):
    from types import SimpleNamespace

    checked = []

    def check_block(spec, index, verify, open_data):
        checked.append(spec.execution_blocks[index].uri)
        return SimpleNamespace(digest=f"d-{spec.execution_blocks[index].uri}", target_fields=[("T", (1.0, -0.5))])

    monkeypatch.setattr(inputs, "check_execution_block", check_block)
    monkeypatch.setattr(inputs, "check_spec", lambda spec: None)
    monkeypatch.setattr(inputs, "_fingerprint", lambda uri: "123/etag")
    eb = SimpleNamespace(uid="uid://A/X/1", uri="s3://b/eb.ps.zarr")
    spec = SimpleNamespace(execution_blocks=[eb], band=6, recipe="calibrate+image")
    checker = inputs.InputChecker()
    assert [checker.check(spec).state for _ in range(100)] == ["ok"] * 100
    assert checked == ["s3://b/eb.ps.zarr"] and checker.full_checks == 1
    # the same data listed twice is refused, as check_inputs refuses it
    twice = SimpleNamespace(execution_blocks=[eb, eb], band=6, recipe="calibrate+image")
    assert checker.check(twice).state == "invalid"
    # rewritten in place: a new fingerprint, checked again
    monkeypatch.setattr(inputs, "_fingerprint", lambda uri: "124/etag2")
    assert checker.check(spec).state == "ok" and checker.full_checks == 2


def test_stage_job_settings_have_one_source():
    env = {"MOUSFLOW_RUNNER_IMAGE": "img:1", "MOUSFLOW_S3_SECRET": "sec", "MOUSFLOW_OOM_MEMORY_FACTOR": "2",
           "MOUSFLOW_DASK_MAX_WORKERS": "3", "AWS_DEFAULT_REGION": "eu-west-1",
           "MOUSFLOW_DASK_UNSCHEDULABLE_SECONDS": "30"}
    cfg = OperatorSettings.from_env(env)
    assert cfg.stage_jobs == StageJobConfig.from_env(env)
    # what the operator hands to a flow run is what the launcher uses, whatever the flow's environment says
    passed = StageJobConfig.from_json(cfg.stage_jobs.to_json())
    assert passed == cfg.stage_jobs and passed.oom_memory_factor == 2.0
    kind = "kubernetes?namespace=alma&attempt=1&owner_name=m&owner_uid=u"
    js = passed.job_settings(kind)
    assert (js.namespace, js.image, js.s3_secret, js.dask_max_workers, js.s3_region, js.owner,
            js.dask_unschedulable_seconds) == ("alma", "img:1", "sec", 3, "eu-west-1", ("m", "u"), 30.0)
    assert job_settings_from_env(kind, env) == js
    # the defaults are the same wherever they are read
    assert OperatorSettings.from_env({}).stage_jobs == StageJobConfig()


def test_routine_handler_success_lines_are_logged_but_not_posted_as_events():
    import logging

    from mousflow_operator.handlers import routine_success_not_posted

    def record(level, msg):
        return logging.LogRecord("kopf.objects", level, __file__, 1, msg, None, None)

    assert not routine_success_not_posted(record(logging.INFO, "Handler 'mous_event' succeeded."))
    assert not routine_success_not_posted(record(logging.INFO, "Timer 'mous_resync' succeeded."))
    assert routine_success_not_posted(record(logging.INFO, "mousflow operator: settings"))
    assert routine_success_not_posted(record(logging.ERROR, "Handler 'mous_event' failed with an exception."))


def test_the_test_only_phase_dwell_holds_each_phase_then_lets_it_go(monkeypatch):
    """MOUSFLOW_TEST_PHASE_DWELL_SECONDS (the chaos suite): a phase seen for the first time is left alone for the
    dwell and woken when it is over; a terminal phase never is."""
    from types import SimpleNamespace

    from mousflow.model import Phase
    from mousflow_operator import handlers

    woken: list[tuple[str, float]] = []
    memo = SimpleNamespace(phase_seen={}, waker=SimpleNamespace(wake_at=lambda k, t: woken.append((k, t))))
    clock = [1000.0]
    monkeypatch.setattr(handlers.time, "time", lambda: clock[0])
    assert handlers._dwelling(memo, "ns/a", Phase.FULLY_OBSERVED, 4.0) is True
    assert woken == [("ns/a", 1004.0)]
    clock[0] = 1003.0
    assert handlers._dwelling(memo, "ns/a", Phase.FULLY_OBSERVED, 4.0) is True
    clock[0] = 1004.0
    assert handlers._dwelling(memo, "ns/a", Phase.FULLY_OBSERVED, 4.0) is False
    assert handlers._dwelling(memo, "ns/a", Phase.READY_FOR_PROCESSING, 4.0) is True  # a new phase: held again
    assert handlers._dwelling(memo, "ns/a", Phase.DELIVERED, 4.0) is False
    assert OperatorSettings.from_env({"MOUSFLOW_TEST_PHASE_DWELL_SECONDS": "4"}).test_phase_dwell_seconds == 4.0
    assert OperatorSettings.from_env({}).test_phase_dwell_seconds == 0.0


def test_the_running_stage_is_kept_as_its_name_type_so_the_status_serialises_cleanly(tmp_path):
    """status.stage is a StageName: a plain str there made pydantic warn on every status patch (seen in the
    chaos suite's operator log)."""
    from mousflow_operator.handlers import _mous_label, _observe_stages

    doc = yaml.safe_load((Path(__file__).resolve().parents[1] / "model" / "manifests" /
                          "valid-minimal.yaml").read_text())
    doc["spec"]["output"]["uri"] = str(tmp_path / "run")
    spec = load_manifest(yaml.safe_dump(doc)).spec
    store = FactStore()
    job = _job("j1", "calibration", active=1)
    job["metadata"]["labels"]["mousflow.io/mous"] = _mous_label(spec.uid)
    store.job_event("ADDED", job)
    new = MOUSStatus()
    _observe_stages(store, spec, {"metadata": {"name": "m", "namespace": "ns"}}, new, refresh_progress=False)
    assert new.stage is StageName("calibration")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert new.model_dump(mode="json", by_alias=True)["stage"] == "calibration"
