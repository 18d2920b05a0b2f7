"""The operator survives what happens to real clusters: the operator itself killed mid-run, a stage pod deleted
mid-stage. A tiny MOUS (channel chunks of 2, so imaging has many chunks) runs on the test bed with a local
operator process and the session's Prefect server; the checks are the ones the operator issue asks for: no
second flow run, no second pod for a stage that was running, imaging resumed at the next chunk, calibration
never recomputed; then a reviewer's decision through `mousflow review` delivers it."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import httpx
import pytest
import yaml
from harness import wait_for_phase

from mousflow.storage.location import Location

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("host_s3")]
NAMESPACE_PREFIX = "resil"
UID = "uid://A001/X1001/X5e"
NAME = "resilient"


def _status(cluster, ns) -> dict:
    return cluster.get("mous", NAME, ns).get("status") or {}


def _jobs(cluster, ns, stage) -> list[dict]:
    label = hashlib.sha256(UID.encode()).hexdigest()[:10]
    out = cluster.kubectl("get", "jobs", "-n", ns, "-l", f"mousflow.io/mous={label},mousflow.io/stage={stage}",
                          "-o", "json")
    return json.loads(out)["items"]


def _pods(cluster, ns, stage) -> list[dict]:
    label = hashlib.sha256(UID.encode()).hexdigest()[:10]
    out = cluster.kubectl("get", "pods", "-n", ns, "-l", f"mousflow.io/mous={label},mousflow.io/stage={stage}",
                          "-o", "json")
    return json.loads(out)["items"]


def _flow_runs(prefect_api_url: str) -> list[dict]:
    """The MOUS's flow runs recorded by the Prefect server (the session's server is shared: filter by uid)."""
    resp = httpx.post(f"{prefect_api_url}/flow_runs/filter", json={"limit": 200}, timeout=30)
    resp.raise_for_status()
    return [r for r in resp.json() if r.get("parameters", {}).get("uid") == UID]


def test_operator_kill_and_pod_deletion_resume_without_duplicates(cluster, mous_namespace, tiny_s3_mous, operator,
                                                                  prefect_api_url):
    ns, sim = mous_namespace, tiny_s3_mous
    doc = yaml.safe_load(Location(f"{sim}/mous.yaml").read_text())
    doc["metadata"] = {"name": NAME}
    doc["spec"]["uid"] = UID
    doc["spec"]["output"]["uri"] = f"{sim}/runs/{NAME}"
    doc["spec"]["delivery"] = {"uri": f"{sim}/delivered/{NAME}", "automatic": False}
    doc["spec"]["imaging"] = {**(doc["spec"].get("imaging") or {}), "channelChunk": 2}
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(doc))
    run_root = Location(doc["spec"]["output"]["uri"])

    def failing(what):
        return f"{what}\noperator log:\n{operator.log_tail()}"

    # 1. Kill the operator (SIGKILL: no clean-up) while calibration runs in its pod, then start it again.
    try:
        cluster.wait_until("calibration running", lambda: _status(cluster, ns).get("stages", {}).get(
            "calibration", {}).get("state") == "Running", timeout=240)
    except AssertionError as exc:
        raise AssertionError(failing(str(exc))) from None
    assert len(_flow_runs(prefect_api_url)) == 1
    operator.kill()
    operator.start()

    # 2. Imaging reports chunk-level progress in the MOUS's status while its pod runs; delete that pod mid-cube.
    def imaging_midway():
        st = _status(cluster, ns).get("stages", {}).get("imaging", {})
        return st.get("state") == "Running" and 5 <= st.get("progressPercent", 0) <= 75 and st

    try:
        imaging = cluster.wait_until("imaging part-way through its cube", imaging_midway, timeout=600, interval=0.5)
    except AssertionError as exc:
        raise AssertionError(failing(str(exc))) from None
    assert "channels" in imaging["message"], imaging
    calibration_checkpoint = run_root.join("checkpoints", "calibration.json").read_text()
    calibration_report = run_root.join("status", "calibration.json").read_text()
    (pod,) = [p for p in _pods(cluster, ns, "imaging") if p["status"].get("phase") == "Running"]
    cluster.kubectl("delete", "pod", pod["metadata"]["name"], "-n", ns, "--wait=false")

    # 3. The run goes on to review (automatic delivery is off), and a reviewer's decision delivers it.
    status = wait_for_phase(cluster, operator, ns, NAME, ("Reviewing", "Failed"), timeout=900)
    assert status["phase"] == "Reviewing", failing(json.dumps(status, indent=1))
    assert status["qa2"]["verdict"] == "Pass"

    # no second flow run, one calibration pod (adopted after the restart, never recomputed)
    runs = _flow_runs(prefect_api_url)
    assert len(runs) == 1, [r["name"] for r in runs]
    assert len(_jobs(cluster, ns, "calibration")) == 1
    assert len(_pods(cluster, ns, "calibration")) == 1
    assert run_root.join("checkpoints", "calibration.json").read_text() == calibration_checkpoint
    assert run_root.join("status", "calibration.json").read_text() == calibration_report
    # imaging: the deleted pod's Job and one more, which resumed at the next unfinished chunk
    assert len(_jobs(cluster, ns, "imaging")) == 2
    assert status["stages"]["imaging"]["attempts"] == 2
    report = run_root.join("status", "imaging.json").read_json()
    assert report["state"] == "Succeeded"
    assert report["metrics"]["chunks_skipped"] >= 1, report["metrics"]
    assert report["metrics"]["chunks_computed"] >= 1, report["metrics"]
    assert len(_jobs(cluster, ns, "packaging")) == 1

    env = {**os.environ, "KUBECONFIG": cluster.kubeconfig}
    proc = subprocess.run([sys.executable, "-m", "mousflow.cli", "review", NAME, "pass", "-n", ns], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    cluster.wait_until("phase Delivered", lambda: _status(cluster, ns).get("phase") == "Delivered", timeout=120)
    delivered = Location(doc["spec"]["delivery"]["uri"])
    assert delivered.join("manifest.json").read_json()["qa2"] == "Pass"
    # a decision on a MOUS that is no longer in review is refused, and changes nothing
    proc = subprocess.run([sys.executable, "-m", "mousflow.cli", "review", NAME, "fail", "-n", ns], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 4 and "is Delivered" in proc.stderr, proc.stderr
    assert _status(cluster, ns)["phase"] == "Delivered"
