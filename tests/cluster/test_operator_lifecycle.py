"""The MOUS operator on the real test bed: a local operator process (kopf) and a local Prefect server, stage
pods as Jobs in the cluster, MinIO as the only storage."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from harness import OperatorProcess, create_mous_namespace, operator_env

from mousflow.storage.location import Location

pytestmark = pytest.mark.cluster


@pytest.fixture(autouse=True)
def host_s3(monkeypatch, s3_env):
    """This process reads and writes MinIO too (manifests, delivered products)."""
    for k, v in s3_env.items():
        monkeypatch.setenv(k, v)


@pytest.fixture(scope="module")
def op_namespace(cluster, s3_env):
    name = create_mous_namespace(cluster, s3_env, "op")
    yield name
    cluster.kubectl("delete", "mous", "--all", "-n", name, "--wait=false", check=False)
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def sim(tiny_s3_mous):
    return tiny_s3_mous


@pytest.fixture(scope="module")
def operator_proc(cluster, op_namespace, s3_env, runner_image, prefect_api_url, tmp_path_factory):
    """The operator as a local process watching the test namespace, with the session's Prefect server."""
    env = operator_env(cluster, s3_env, prefect_api_url, op_namespace, runner_image)
    op = OperatorProcess(cluster, env, tmp_path_factory.mktemp("operator") / "operator.log").start()
    try:
        yield op
    finally:
        # while the operator still runs, so it removes its finalizers (the namespace can then go)
        cluster.kubectl("delete", "mous", "--all", "-n", op_namespace, "--timeout=60s", check=False)
        op.stop()


def _apply_mous(cluster, namespace, sim, name, mutate=None) -> dict:
    doc = yaml.safe_load(Location(f"{sim}/mous.yaml").read_text())
    doc["metadata"] = {"name": name}
    doc["spec"]["output"]["uri"] = f"{sim}/runs/{name}"
    doc["spec"]["delivery"] = {"uri": f"{sim}/delivered/{name}", "automatic": True}
    if mutate:
        mutate(doc)
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))
    return doc


def _phase(cluster, namespace, name) -> str:
    return (cluster.get("mous", name, namespace).get("status") or {}).get("phase", "")


def _events(cluster, namespace, name) -> list[dict]:
    out = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json",
                                     "--field-selector", f"involvedObject.name={name}"))
    return out["items"]


def _jobs(cluster, namespace) -> list[dict]:
    return json.loads(cluster.kubectl("get", "jobs", "-n", namespace, "-o", "json"))["items"]


def test_spec_with_problems_is_degraded_and_nothing_else_happens(cluster, op_namespace, sim, operator_proc):
    name = "wrong-band"

    def wrong_band(doc):
        doc["spec"]["band"] = 9 if doc["spec"]["band"] != 9 else 3

    _apply_mous(cluster, op_namespace, sim, name, wrong_band)

    def degraded():
        status = cluster.get("mous", name, op_namespace).get("status") or {}
        return {c["type"]: c for c in status.get("conditions", [])}.get("Degraded", {}).get("status") == "True" \
            and status
    status = cluster.wait_until("a Degraded condition", degraded, timeout=60)
    cond = {c["type"]: c for c in status["conditions"]}["Degraded"]
    assert cond["reason"] == "InvalidSpec" and "outside band" in cond["message"], cond
    assert status["phase"] == "FullyObserved" and not status.get("stages") and not status.get("flowRunId")
    assert any(e["reason"] == "InvalidSpec" for e in _events(cluster, op_namespace, name))


def test_missing_execution_block_fails_once_with_a_clear_reason(cluster, op_namespace, sim, operator_proc):
    name = "missing-eb"

    def missing(doc):
        doc["spec"]["uid"] = "uid://A001/X1001/X3e"  # Jobs are named after the uid: one of its own
        doc["spec"]["executionBlocks"][0]["uri"] = f"{sim}/eb/does-not-exist.ps.zarr"

    _apply_mous(cluster, op_namespace, sim, name, missing)
    cluster.wait_until("phase Failed", lambda: _phase(cluster, op_namespace, name) == "Failed", timeout=60)
    status = cluster.get("mous", name, op_namespace)["status"]
    cond = {c["type"]: c for c in status["conditions"]}["Degraded"]
    assert cond["reason"] == "InputMissing" and "does-not-exist.ps.zarr" in cond["message"], cond
    import time

    time.sleep(8)  # several reconciliations later: still Failed, one Event, no retries
    assert _phase(cluster, op_namespace, name) == "Failed"
    assert sum(e.get("count", 1) for e in _events(cluster, op_namespace, name) if e["reason"] == "InputMissing") == 1


def test_retry_command_runs_a_failed_mous_again(cluster, op_namespace, sim, operator_proc):
    """After the missing execution block has arrived, `mousflow retry` (= the retry annotation) starts it over."""
    name = "missing-eb"
    assert _phase(cluster, op_namespace, name) == "Failed"
    eb = yaml.safe_load(Location(f"{sim}/mous.yaml").read_text())["spec"]["executionBlocks"][0]["uri"]
    Location(eb).fs.copy(Location(eb).path, Location(f"{sim}/eb/does-not-exist.ps.zarr").path, recursive=True)
    env = {**os.environ, "KUBECONFIG": cluster.kubeconfig}
    proc = subprocess.run([sys.executable, "-m", "mousflow.cli", "retry", name, "-n", op_namespace,
                           "--token", "eb-arrived"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    cluster.wait_until("the retried MOUS to be processed", lambda: _phase(cluster, op_namespace, name) in
                       ("ReadyForProcessing", "Processing"), timeout=60)
    mous = cluster.get("mous", name, op_namespace)
    assert mous["metadata"]["annotations"]["mousflow.io/retry-handled"] == "eb-arrived"
    reasons = [e["reason"] for e in _events(cluster, op_namespace, name)]
    assert "RetryRequested" in reasons and "InputsPresent" in reasons, reasons
    # a second request while it is not Failed is refused with a clear message, and changes nothing
    proc = subprocess.run([sys.executable, "-m", "mousflow.cli", "retry", name, "-n", op_namespace], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "applies to Failed" in proc.stderr, proc.stderr
    cluster.kubectl("delete", "mous", name, "-n", op_namespace, "--timeout=60s")


def test_tiny_mous_goes_from_apply_to_delivered(cluster, op_namespace, sim, operator_proc):
    name = "tiny-delivered"
    doc = _apply_mous(cluster, op_namespace, sim, name)
    cluster.wait_until("phase Processing", lambda: _phase(cluster, op_namespace, name) in
                       ("Processing", "ReadyForReview", "DeliveryInProgress", "Delivered"), timeout=120)
    try:
        cluster.wait_until("phase Delivered", lambda: _phase(cluster, op_namespace, name) in ("Delivered", "Failed"),
                           timeout=900, interval=3)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\noperator log:\n{operator_proc.log_tail()}") from None
    mous = cluster.get("mous", name, op_namespace)
    status = mous["status"]
    assert status["phase"] == "Delivered", (status, operator_proc.log_tail())
    assert status["qa2"]["verdict"] == "Pass"
    for stage in ("calibration", "imaging", "packaging"):
        st = status["stages"][stage]
        assert st["state"] == "Succeeded", st
        assert st["startedAt"] and st["finishedAt"] and st["progressPercent"] == 100
        assert st["checkpointUri"].endswith(f"checkpoints/{stage}.json")
        assert st["resources"]["requested"]["memory"].endswith("Mi")
        assert st["resources"]["used"]["peakMemoryBytes"] > 50 * 2**20
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "True" and conditions["Degraded"]["status"] == "False"
    # products copied to the delivery location and matching the manifest
    delivered = Location(doc["spec"]["delivery"]["uri"])
    manifest = delivered.join("manifest.json").read_json()
    assert manifest["qa2"] == "Pass" and any(p["name"].endswith(".fits") for p in manifest["products"])
    assert all(delivered.join(p["name"]).exists() for p in manifest["products"])
    assert status["products"]["deliveredUri"] == delivered.uri
    # an Event per transition, and the phase in `kubectl get mous`
    reasons = [e["reason"] for e in _events(cluster, op_namespace, name)]
    for reason in ("InputsPresent", "Admitted", "ProcessingSucceeded", "AutomaticDelivery", "Delivered"):
        assert reason in reasons, reasons
    row = cluster.kubectl("get", "mous", name, "-n", op_namespace).splitlines()[1].split()
    assert row[1] == "Delivered" and "Pass" in row, row
    # one Job per stage (each sized from the MOUS's data, owned by the MOUS)
    jobs = [j for j in _jobs(cluster, op_namespace)
            if j["metadata"]["annotations"]["mousflow.io/uid"] == doc["spec"]["uid"]]
    assert sorted(j["metadata"]["labels"]["mousflow.io/stage"] for j in jobs) == ["calibration", "imaging",
                                                                                  "packaging"]
    assert all(j["metadata"]["ownerReferences"][0]["name"] == name for j in jobs)


def test_a_mous_deleted_while_the_operator_is_away_is_not_stuck(cluster, op_namespace, sim, operator_proc):
    """The operator takes its finalizer off on the way out (SIGTERM, as when its pod stops), so a MOUS deleted
    while no operator runs goes at once instead of hanging in Terminating."""
    name = "away"
    _apply_mous(cluster, op_namespace, sim, name, lambda doc: doc["spec"].update(band=9))  # stays put: Degraded
    cluster.wait_until("the operator's finalizer", lambda: "mousflow.io/finalizer" in (
        cluster.get("mous", name, op_namespace)["metadata"].get("finalizers") or []), timeout=60)
    assert operator_proc.stop() == 0, operator_proc.log_tail()
    assert "mousflow.io/finalizer" not in (cluster.get("mous", name, op_namespace)["metadata"].get("finalizers") or [])
    cluster.kubectl("delete", "mous", name, "-n", op_namespace, "--timeout=20s")
    assert cluster.kubectl("get", "mous", name, "-n", op_namespace, "--ignore-not-found").strip() == ""
    operator_proc.start()  # back for the module's teardown
