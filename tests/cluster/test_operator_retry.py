"""A person's retry resumes at the stage that failed, on the real test bed: with the test-only
MOUSFLOW_TEST_FAIL_STAGE=imaging the imaging stage fails once with its classified reason (ImagingFailed), so the
MOUS is Failed with no automatic retry; `mousflow retry` then runs it again. Calibration is untouched (its
checkpoint is valid: no Job, no pod, reported Skipped), imaging runs in a Job of the new run's own name (the
failed run's Job, kept by its TTL, is neither followed nor taken), and the MOUS is Delivered.

In the same run, calibration grows in place: with the test-only MOUSFLOW_TEST_GROW_MEMORY=calibration:1.15 the
calibration pod first takes memory until its working set is 1.15 x its limit, at a stage's pace; the operator's
launcher sees the working set near the limit (the stage publishes it) and raises the pod's limit through the
`resize` subresource, so the stage goes on in its one pod instead of being OOM-killed and run again.

In the retried run, packaging loses a child process to the kernel's OOM killer while the stage process survives
(test-only MOUSFLOW_TEST_CHILD_OOM=packaging: a child takes twice the container's limit at once) and then fails
with the most permanent of classified reasons, InvalidInput; the kernel's kill, not the stage's word, decides:
packaging runs again with more memory and the MOUS is Delivered.

The operator (a process on this machine) decides that calibration is complete with the code it runs, the
stage pods with the runner image's: the session's conftest rebuilds that image from the same tree."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

import pytest
import yaml
from harness import wait_for_phase

from mousflow.storage.location import Location

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("host_s3")]
NAMESPACE_PREFIX = "retry"
OPERATOR_ENV = {"MOUSFLOW_TEST_FAIL_STAGE": "imaging", "MOUSFLOW_TEST_GROW_MEMORY": "calibration:1.15",
                "MOUSFLOW_TEST_CHILD_OOM": "packaging"}
UID = "uid://A001/X1001/X7e"
NAME = "retried"
TOKEN = "after-imaging-failed"


def _status(cluster, ns) -> dict:
    return cluster.get("mous", NAME, ns).get("status") or {}


def _stage_items(cluster, ns, kind: str, stage: str) -> list[dict]:
    label = hashlib.sha256(UID.encode()).hexdigest()[:10]
    out = cluster.kubectl("get", kind, "-n", ns, "-l", f"mousflow.io/mous={label},mousflow.io/stage={stage}",
                          "-o", "json")
    return json.loads(out)["items"]


def _names(items: list[dict]) -> set[str]:
    return {i["metadata"]["name"] for i in items}


def test_retry_after_a_stage_failure_resumes_at_that_stage(cluster, mous_namespace, tiny_s3_mous, operator):
    ns = mous_namespace
    doc = yaml.safe_load(Location(f"{tiny_s3_mous}/mous.yaml").read_text())
    doc["metadata"] = {"name": NAME}
    doc["spec"]["uid"] = UID  # Jobs are named after the uid: one of its own
    doc["spec"]["output"]["uri"] = f"{tiny_s3_mous}/runs/{NAME}"
    doc["spec"]["delivery"] = {"uri": f"{tiny_s3_mous}/delivered/{NAME}", "automatic": True}
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(doc))
    run_root = Location(doc["spec"]["output"]["uri"])

    def failing(what):
        return f"{what}\noperator log:\n{operator.log_tail()}"

    # 1. The run fails at imaging with its classified reason, once: no automatic retry.
    status = wait_for_phase(cluster, operator, ns, NAME, ("Failed", "Delivered"), timeout=900)
    assert status["phase"] == "Failed", failing(json.dumps(status, indent=1))
    degraded = {c["type"]: c for c in status["conditions"]}["Degraded"]
    assert degraded["reason"] == "ImagingFailed" and "test only" in degraded["message"], degraded
    assert status["stages"]["calibration"]["state"] == "Succeeded"
    assert status["stages"]["imaging"]["state"] == "Failed"
    time.sleep(10)  # several reconciliations (ticks of 2 s) later: still Failed, no second imaging Job
    assert _status(cluster, ns)["phase"] == "Failed"
    calibration_jobs = _names(_stage_items(cluster, ns, "jobs", "calibration"))
    failed_imaging_jobs = _names(_stage_items(cluster, ns, "jobs", "imaging"))
    assert len(calibration_jobs) == 1 and len(failed_imaging_jobs) == 1
    assert len(_stage_items(cluster, ns, "pods", "calibration")) == 1
    calibration_checkpoint = run_root.join("checkpoints", "calibration.json").read_text()

    # 2. A person asks for a retry; the failed run's Jobs are still there (their TTL is an hour).
    env = {**os.environ, "KUBECONFIG": cluster.kubeconfig}
    proc = subprocess.run([sys.executable, "-m", "mousflow.cli", "retry", NAME, "-n", ns, "--token", TOKEN],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    status = wait_for_phase(cluster, operator, ns, NAME, ("Delivered", "Failed", "QA2Fail"), timeout=900,
                            until=lambda m: m["metadata"]["annotations"].get("mousflow.io/retry-handled") == TOKEN)
    assert status["phase"] == "Delivered", failing(json.dumps(status, indent=1))
    assert status["qa2"]["verdict"] == "Pass"

    # calibration untouched: no new Job or pod, the same checkpoint, reported Skipped
    assert _names(_stage_items(cluster, ns, "jobs", "calibration")) == calibration_jobs
    assert len(_stage_items(cluster, ns, "pods", "calibration")) == 1
    assert run_root.join("checkpoints", "calibration.json").read_text() == calibration_checkpoint
    assert status["stages"]["calibration"]["state"] == "Skipped"
    assert run_root.join("status", "calibration.json").read_json()["state"] == "Skipped"
    # imaging: the failed run's Job left as it was, and one more of the retried run's own name, which succeeded
    imaging_jobs = {j["metadata"]["name"]: j for j in _stage_items(cluster, ns, "jobs", "imaging")}
    assert failed_imaging_jobs < set(imaging_jobs), imaging_jobs.keys()
    (new,) = [imaging_jobs[n] for n in set(imaging_jobs) - failed_imaging_jobs]
    (old,) = [imaging_jobs[n] for n in failed_imaging_jobs]
    assert new["metadata"]["annotations"]["mousflow.io/run"] != old["metadata"]["annotations"]["mousflow.io/run"]
    assert new["status"].get("succeeded") == 1 and old["status"].get("failed") == 1
    assert status["stages"]["imaging"]["state"] == "Succeeded"
    assert run_root.join("status", "imaging.json").read_json()["state"] == "Succeeded"
    assert len(_stage_items(cluster, ns, "jobs", "packaging")) == 2  # the child OOM kill's retry: below


def test_a_child_killed_for_memory_while_the_stage_survived_came_back_with_more_memory(cluster, mous_namespace,
                                                                                       operator):
    """The retried run's packaging (above): its first pod lost a child to the OOM killer and exited by itself,
    reporting InvalidInput; the launcher counted it an out-of-memory failure and ran packaging again with the
    oom factor more memory, which succeeded."""
    ns = mous_namespace
    status = _status(cluster, ns)
    assert status["phase"] == "Delivered", status
    records = status["stages"]["packaging"].get("retries", [])
    assert [r["reason"] for r in records] == ["OOMKilled"], records
    jobs = sorted(_stage_items(cluster, ns, "jobs", "packaging"), key=lambda j: j["metadata"]["creationTimestamp"])
    from mousflow.pipeline.resources import parse_memory

    first, second = (parse_memory(j["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"])
                     for j in jobs)
    assert second >= 1.4 * first, (first, second)
    assert jobs[0]["status"].get("failed") == 1 and jobs[1]["status"].get("succeeded") == 1
    pods = {p["metadata"]["labels"]["job-name"]: p for p in _stage_items(cluster, ns, "pods", "packaging")}
    term = pods[jobs[0]["metadata"]["name"]]["status"]["containerStatuses"][0]["state"]["terminated"]
    # the stage process itself was not the one killed: it exited with its own code (InvalidInput's), not 137
    from mousflow.errors import exit_code_of

    assert term["exitCode"] == exit_code_of("InvalidInput"), term
    print(f"the runtime reported the first packaging container as {term['reason']} (exit {term['exitCode']})")
    assert "the stage reported InvalidInput" in records[0]["message"], records


def test_a_stage_outgrowing_its_limit_was_grown_in_place_not_killed(cluster, mous_namespace, operator):
    """The first run's calibration (above): one Job, one pod never restarted or OOM-killed, whose memory limit
    was raised in place above its Job's, recorded in status and as an Event."""
    ns = mous_namespace
    status = _status(cluster, ns)
    records = status["stages"]["calibration"].get("retries", [])
    assert records and {r["reason"] for r in records} == {"ResizedInPlace"}, records
    assert "memory limit raised in place to" in records[0]["message"]
    (job,) = _stage_items(cluster, ns, "jobs", "calibration")
    (pod,) = _stage_items(cluster, ns, "pods", "calibration")
    from mousflow.pipeline.resources import parse_memory

    planned = parse_memory(job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"])
    raised = parse_memory(pod["spec"]["containers"][0]["resources"]["limits"]["memory"])
    applied = parse_memory(pod["status"]["containerStatuses"][0]["resources"]["limits"]["memory"])
    assert raised == applied > planned, (planned, raised, applied)
    state = pod["status"]["containerStatuses"][0]
    assert state["restartCount"] == 0 and state["state"]["terminated"]["reason"] == "Completed", state
    events = json.loads(cluster.kubectl("get", "events", "-n", ns, "-o", "json",
                                        "--field-selector", f"involvedObject.name={NAME}"))["items"]
    assert any(e["reason"] == "StageResizedInPlace" and e["type"] == "Normal" for e in events)
    assert not any(e["reason"] == "StageOOMKilled" and "stage calibration" in e["message"] for e in events)
