"""Flow runs in pods of their own (MOUSFLOW_FLOW_RUNNER=pod): the Job's manifest, the outcome read back from it,
and the run manager creating, adopting, following and deleting it (against a stand-in for the Jobs API; the
test bed shows it for real in tests/cluster/test_operator_flow_pods.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from kubernetes.client.rest import ApiException

from mousflow.pipeline.kubernetes import JobSettings
from mousflow_operator import runs as runs_module
from mousflow_operator.flow_pod import (
    A_FLOW_RUN_ID,
    A_MOUS_KEY,
    A_RUN_KEY,
    FLOW_RUN_LABEL,
    FlowPodSettings,
    build_flow_run_job_spec,
    flow_job_outcome,
)
from mousflow_operator.runs import RunManager, idempotency_key
from mousflow_operator.settings import OperatorSettings

UID = "uid://A001/X1001/Xf10"


def _spec(**kw):
    settings = JobSettings(namespace="alma", image="runner:1", s3_secret="alma-s3", s3_endpoint="http://s3:9000",
                           owner=("m1", "owner-uid"))
    args = dict(uid=UID, mous_key="alma/m1", run_key="mousflow/k", run_tag="abcd1234", run_name="X-a1-abcd1234",
                parameters={"uid": UID, "manifest_text": "kind: MOUS\n"}, output_uri="s3://out/m1")
    return build_flow_run_job_spec(settings, FlowPodSettings(prefect_api_url="http://prefect:4200/api"),
                                   **{**args, **kw})


def test_the_flow_job_runs_the_run_as_the_namespaces_flow_runner_with_no_credential_in_it():
    spec = _spec(history="s3://hist/")
    pod = spec["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert spec["metadata"]["labels"][FLOW_RUN_LABEL] == spec["spec"]["template"]["metadata"]["labels"][
        FLOW_RUN_LABEL]
    assert "mousflow.io/mous" not in spec["metadata"]["labels"]  # not a stage Job
    assert spec["metadata"]["annotations"][A_MOUS_KEY] == "alma/m1"
    assert spec["metadata"]["ownerReferences"][0]["uid"] == "owner-uid"
    assert pod["serviceAccountName"] == "mousflow-flow-runner"
    assert spec["spec"]["podReplacementPolicy"] == "Failed" and spec["spec"]["backoffLimit"] == 3
    assert pod["securityContext"]["runAsNonRoot"] and container["securityContext"]["readOnlyRootFilesystem"]
    # the keys come from the namespace's Secret, by reference
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "alma-s3",
                                                                         "key": "AWS_SECRET_ACCESS_KEY"}
    assert env["PREFECT_API_URL"]["value"] == "http://prefect:4200/api"
    assert env["MOUSFLOW_HISTORY"]["value"] == "s3://hist/"
    run = json.loads(env["MOUSFLOW_FLOW_RUN"]["value"])
    assert run == {"key": "mousflow/k", "name": "X-a1-abcd1234", "output_uri": "s3://out/m1",
                   "job": spec["metadata"]["name"], "parameters": {"uid": UID, "manifest_text": "kind: MOUS\n"}}
    assert len(spec["metadata"]["name"]) <= 63
    assert _spec() == _spec()  # pure


def test_settings_choose_the_flow_runner_and_refuse_an_unknown_one():
    cfg = OperatorSettings.from_env({"MOUSFLOW_FLOW_RUNNER": "Pod", "PREFECT_API_URL": "http://p/api",
                                     "MOUSFLOW_FLOW_RUNNER_MEMORY": "3Gi"})
    assert cfg.flow_runner == "pod" and cfg.flow_pod.prefect_api_url == "http://p/api"
    assert cfg.flow_pod.memory == "3Gi"
    assert OperatorSettings.from_env({}).flow_runner == "thread"
    assert OperatorSettings.from_env({"MOUSFLOW_FLOW_RUNNER_PREFECT_API_URL": "http://in-cluster/api",
                                      "PREFECT_API_URL": "http://p/api"}).flow_pod.prefect_api_url == \
        "http://in-cluster/api"
    with pytest.raises(ValueError, match="thread or pod"):
        RunManager(mode="process")


def _job(name="j", complete=None, failed=0, annotations=None):
    conditions = [] if complete is None else [{"type": "Complete" if complete else "Failed", "status": "True"}]
    return {"metadata": {"name": name, "namespace": "alma", "annotations": annotations or {}},
            "status": {"conditions": conditions, "failed": failed}}


def _pod(message, created="2026-12-04T10:00:00Z"):
    return {"metadata": {"creationTimestamp": created},
            "status": {"containerStatuses": [{"state": {"terminated": {"message": message}}}]}}


def test_the_outcome_is_what_the_pod_wrote_and_a_job_that_lost_its_pods_is_interrupted():
    done = json.dumps({"state": "failed", "reason": "Unavailable", "message": "cannot reach S3", "flow_run_id": "f"})
    assert flow_job_outcome(_job(complete=True), [_pod("junk", "2026-12-04T09:00:00Z"), _pod(done)]) == \
        ("failed", "Unavailable", "cannot reach S3", "f")
    state, reason, message, _ = flow_job_outcome(_job(complete=True), [])
    assert (state, reason) == ("failed", "Error") and "no outcome" in message
    state, reason, message, _ = flow_job_outcome(_job("fj", complete=False, failed=4), [_pod("Killed\n")])
    assert (state, reason) == ("failed", "Interrupted") and "fj" in message and "4 time" in message


class _Batch:
    """The Jobs API as the run manager uses it."""

    def __init__(self):
        self.jobs: dict[str, dict] = {}
        self.deleted: list[str] = []
        self.fail_create: int | None = None
        self.api_client = None

    def create_namespaced_job(self, namespace, spec):
        if self.fail_create:
            raise ApiException(status=self.fail_create)
        name = spec["metadata"]["name"]
        if name in self.jobs:
            raise ApiException(status=409)
        self.jobs[name] = json.loads(json.dumps(spec))

    def read_namespaced_job_status(self, name, namespace):  # jobs/status: what the operator's Role allows
        return SimpleNamespace(to_dict=lambda: self.jobs[name])

    def delete_namespaced_job(self, name, namespace, body=None):
        self.deleted.append(name)
        self.jobs.pop(name, None)


@pytest.fixture
def manager(monkeypatch):
    finished: list[str] = []
    new_runs: list[str] = []
    manager = RunManager(mode="pod", flow_pod=FlowPodSettings(prefect_api_url="http://p/api"),
                         job_config={"image": "runner:1", "s3_secret": "alma-s3"}, on_finished=finished.append,
                         on_new_run=new_runs.append)
    manager.new_runs = new_runs
    manager._batch = _Batch()
    manager.pods = {}
    monkeypatch.setattr(RunManager, "_flow_pods", lambda self, ns, job: self.pods.get(job, []))
    manager.finished = finished
    return manager


def _ensure(manager, attempt=1):
    return manager.ensure("alma/m1", uid=UID, namespace="alma", manifest_text="kind: MOUS\n",
                          output_uri="s3://out/m1", generation=1, retry_token="", attempt=attempt,
                          owner=("m1", "owner-uid"))


def test_one_job_per_run_its_id_and_outcome_from_the_watch_and_a_new_attempt_a_new_job(manager):
    handle = _ensure(manager)
    assert list(manager._batch.jobs) == [handle.job[1]] and manager.active() == {"alma/m1"}
    assert _ensure(manager) is handle and len(manager._batch.jobs) == 1  # asked again: nothing new
    job = manager._batch.jobs[handle.job[1]]
    assert json.loads({e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}[
        "MOUSFLOW_FLOW_RUN"]["value"])["parameters"]["launcher_kind"].startswith("kubernetes?namespace=alma")
    # running, with its flow run's id on it: known, no end yet
    job["metadata"]["annotations"][A_FLOW_RUN_ID] = "run-1"
    assert not manager.flow_job_event(job) and handle.flow_run_id == "run-1" and handle.outcome is None
    # another run's Job (an earlier attempt) says nothing about this one
    stale = _job(complete=True, annotations={A_MOUS_KEY: "alma/m1", A_RUN_KEY: "mousflow/other"})
    assert not manager.flow_job_event(stale) and handle.outcome is None
    job["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    manager.pods[handle.job[1]] = [_pod(json.dumps({"state": "succeeded", "flow_run_id": "run-1"}))]
    assert manager.new_runs == [UID]  # the run began: what an earlier run reported is forgotten
    assert manager.flow_job_event(job)
    assert handle.outcome.state == "succeeded" and manager.finished == ["alma/m1"] and not manager.active()
    assert manager.new_runs == [UID, UID]  # ... and at its end, so its stages' final reports are read
    assert not manager.flow_job_event(job) and manager.finished == ["alma/m1"]  # heard once
    second = _ensure(manager, attempt=2)
    assert second is not handle and second.job[1] != handle.job[1] and len(manager._batch.jobs) == 2


def test_a_restarted_operator_adopts_the_runs_job_and_a_finished_one_gives_its_outcome_at_once(manager):
    handle = _ensure(manager)
    job = manager._batch.jobs[handle.job[1]]
    job["status"] = {"conditions": [{"type": "Failed", "status": "True"}], "failed": 4}
    restarted = RunManager(mode="pod", flow_pod=manager.flow_pod, job_config=manager.job_config,
                           on_finished=manager.finished.append)
    restarted._batch, restarted.pods = manager._batch, {}
    adopted = _ensure(restarted)
    assert adopted.job == handle.job and len(manager._batch.jobs) == 1
    assert adopted.outcome.reason == "Interrupted" and adopted.outcome.retryable
    assert manager.finished == ["alma/m1"]


def test_deleting_the_mous_deletes_its_flow_job_and_a_refused_create_is_asked_again(manager, monkeypatch):
    cancelled: list[str] = []
    monkeypatch.setattr(runs_module, "cancel_flow_run", cancelled.append)
    handle = _ensure(manager)
    handle.flow_run_id = "run-1"
    manager.forget("alma/m1", cancel=True)
    assert manager._batch.deleted == [handle.job[1]] and cancelled == ["run-1"]
    manager._batch.fail_create = 503
    with pytest.raises(ApiException):
        _ensure(manager)
    assert manager.get("alma/m1") is None  # the next reconcile creates it
    manager._batch.fail_create = None
    assert _ensure(manager).job is not None and idempotency_key(UID, 1, "", 1) == manager.get("alma/m1").key


def test_an_operator_whose_flows_run_in_pods_does_not_load_prefect():
    """Prefect's engine and client are about 70 MB of the operator's memory: with flows in pods nothing of the
    operator needs them (the flow run is cancelled through the REST API)."""
    import subprocess
    import sys

    code = ("import sys, mousflow_operator.handlers, mousflow_operator.__main__\n"
            "from mousflow_operator.runs import RunManager\n"
            "from mousflow_operator.settings import OperatorSettings\n"
            "cfg = OperatorSettings.from_env({'MOUSFLOW_FLOW_RUNNER': 'pod'})\n"
            "RunManager(mode=cfg.flow_runner, flow_pod=cfg.flow_pod)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'prefect'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout[:500]
