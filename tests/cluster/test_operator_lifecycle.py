"""The MOUS operator on the real test bed: a local operator process (kopf) and a local Prefect server, stage
pods as Jobs in the cluster, MinIO as the only storage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest
import yaml

from mousflow.pipeline.local_server import local_prefect_server
from mousflow.storage.location import Location
from mousflow_operator.crd import crd_text

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def s3_env(cluster):
    s3 = cluster.s3
    if not s3.get("S3_ENDPOINT_URL"):
        pytest.fail("the test bed did not publish its S3 endpoint (s3.env)")
    return {"MOUSFLOW_S3_ENDPOINT": s3["S3_ENDPOINT_URL"], "AWS_ACCESS_KEY_ID": s3["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": s3["AWS_SECRET_ACCESS_KEY"],
            "AWS_DEFAULT_REGION": s3.get("AWS_DEFAULT_REGION", "us-east-1")}


@pytest.fixture(autouse=True)
def host_s3(monkeypatch, s3_env):
    """This process reads and writes MinIO too (manifests, delivered products)."""
    for k, v in s3_env.items():
        monkeypatch.setenv(k, v)


@pytest.fixture(scope="module")
def op_namespace(cluster, s3_env):
    cluster.kubectl("apply", "-f", "-", input=crd_text())
    cluster.wait_until("the MOUS CRD to be established", lambda: "True" in cluster.kubectl(
        "get", "crd", "mouses.mousflow.io", "-o", "jsonpath={.status.conditions[?(@.type=='Established')].status}"))
    name = f"op-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    cluster.wait_until("the default service account", lambda: cluster.kubectl(
        "get", "serviceaccount", "default", "-n", name, check=False).strip(), timeout=60)
    cluster.kubectl("create", "secret", "generic", "mousflow-s3", "-n", name,
                    f"--from-literal=AWS_ACCESS_KEY_ID={s3_env['AWS_ACCESS_KEY_ID']}",
                    f"--from-literal=AWS_SECRET_ACCESS_KEY={s3_env['AWS_SECRET_ACCESS_KEY']}")
    yield name
    cluster.kubectl("delete", "mous", "--all", "-n", name, "--wait=false", check=False)
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def sim(s3_env):
    """A tiny MOUS simulated straight into a fresh bucket of the test bed's MinIO."""
    env = {**os.environ, **s3_env}
    bucket = f"mousflow-op-{uuid.uuid4().hex[:8]}"
    code = ("import s3fs, os; s3fs.S3FileSystem(client_kwargs={'endpoint_url': os.environ['MOUSFLOW_S3_ENDPOINT']})"
            f".mkdir({bucket!r})")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    out = f"s3://{bucket}/tiny"
    proc = subprocess.run([sys.executable, "-m", "mousflow.cli", "simulate", "--preset", "tiny", "--out", out],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def operator_proc(cluster, op_namespace, s3_env, runner_image, tmp_path_factory):
    """The operator as a local process watching the test namespace, with its own local Prefect server."""
    log_path = tmp_path_factory.mktemp("operator") / "operator.log"
    with local_prefect_server() as url:
        env = {**os.environ, **s3_env, "KUBECONFIG": cluster.kubeconfig, "PREFECT_API_URL": url,
               "MOUSFLOW_NAMESPACES": op_namespace, "MOUSFLOW_RUNNER_IMAGE": runner_image,
               "MOUSFLOW_IMAGE_PULL_POLICY": "Never", "MOUSFLOW_S3_SECRET": "mousflow-s3",
               "MOUSFLOW_S3_ENDPOINT_IN_CLUSTER": cluster.s3["S3_ENDPOINT_URL_IN_CLUSTER"],
               "MOUSFLOW_TICK_SECONDS": "2", "MOUSFLOW_MAX_PROCESSING": "2", "PYTHONUNBUFFERED": "1"}
        with open(log_path, "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "mousflow_operator"], env=env, stdout=log,
                                    stderr=subprocess.STDOUT)
        proc.log_path = log_path
        try:
            yield proc
        finally:
            # while the operator still runs, so it removes its finalizers (the namespace can then go)
            cluster.kubectl("delete", "mous", "--all", "-n", op_namespace, "--timeout=60s", check=False)
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _log_tail(proc, n=40) -> str:
    return "\n".join(open(proc.log_path).read().splitlines()[-n:])


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


def test_tiny_mous_goes_from_apply_to_delivered(cluster, op_namespace, sim, operator_proc):
    name = "tiny-delivered"
    doc = _apply_mous(cluster, op_namespace, sim, name)
    cluster.wait_until("phase Processing", lambda: _phase(cluster, op_namespace, name) in
                       ("Processing", "ReadyForReview", "DeliveryInProgress", "Delivered"), timeout=120)
    try:
        cluster.wait_until("phase Delivered", lambda: _phase(cluster, op_namespace, name) in ("Delivered", "Failed"),
                           timeout=900, interval=3)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\noperator log:\n{_log_tail(operator_proc)}") from None
    mous = cluster.get("mous", name, op_namespace)
    status = mous["status"]
    assert status["phase"] == "Delivered", (status, _log_tail(operator_proc))
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


