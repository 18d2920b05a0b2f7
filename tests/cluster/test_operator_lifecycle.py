"""The MOUS operator on the real test bed: a local operator process (kopf) and a local Prefect server, stage
pods as Jobs in the cluster, MinIO as the only storage. A tiny MOUS from apply to Delivered (every stage's
status, the conditions, an Event per transition, one owned Job per stage) is shown through the installed chart, the
way a user meets it: tests/cluster/test_helm_release.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from mousflow.storage.location import Location

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("host_s3")]
NAMESPACE_PREFIX = "op"


def _apply_mous(cluster, namespace, tiny_s3_mous, name, mutate=None) -> dict:
    doc = yaml.safe_load(Location(f"{tiny_s3_mous}/mous.yaml").read_text())
    doc["metadata"] = {"name": name}
    doc["spec"]["output"]["uri"] = f"{tiny_s3_mous}/runs/{name}"
    doc["spec"]["delivery"] = {"uri": f"{tiny_s3_mous}/delivered/{name}", "automatic": True}
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


def test_spec_with_problems_is_degraded_and_nothing_else_happens(cluster, mous_namespace, tiny_s3_mous, operator):
    name = "wrong-band"

    def wrong_band(doc):
        doc["spec"]["band"] = 9 if doc["spec"]["band"] != 9 else 3

    _apply_mous(cluster, mous_namespace, tiny_s3_mous, name, wrong_band)

    def degraded():
        status = cluster.get("mous", name, mous_namespace).get("status") or {}
        return {c["type"]: c for c in status.get("conditions", [])}.get("Degraded", {}).get("status") == "True" \
            and status
    status = cluster.wait_until("a Degraded condition", degraded, timeout=60)
    cond = {c["type"]: c for c in status["conditions"]}["Degraded"]
    assert cond["reason"] == "InvalidSpec" and "outside band" in cond["message"], cond
    assert status["phase"] == "FullyObserved" and not status.get("stages") and not status.get("flowRunId")
    assert any(e["reason"] == "InvalidSpec" for e in _events(cluster, mous_namespace, name))


def test_missing_execution_block_fails_once_with_a_clear_reason(cluster, mous_namespace, tiny_s3_mous, operator):
    name = "missing-eb"

    def missing(doc):
        doc["spec"]["uid"] = "uid://A001/X1001/X3e"  # Jobs are named after the uid: one of its own
        doc["spec"]["executionBlocks"][0]["uri"] = f"{tiny_s3_mous}/eb/does-not-exist.ps.zarr"

    _apply_mous(cluster, mous_namespace, tiny_s3_mous, name, missing)
    cluster.wait_until("phase Failed", lambda: _phase(cluster, mous_namespace, name) == "Failed", timeout=60)
    status = cluster.get("mous", name, mous_namespace)["status"]
    cond = {c["type"]: c for c in status["conditions"]}["Degraded"]
    assert cond["reason"] == "InputMissing" and "does-not-exist.ps.zarr" in cond["message"], cond
    import time

    time.sleep(8)  # several reconciliations later: still Failed, one Event, no retries
    assert _phase(cluster, mous_namespace, name) == "Failed"
    assert sum(e.get("count", 1) for e in _events(cluster, mous_namespace, name) if e["reason"] == "InputMissing") == 1


def test_retry_command_runs_a_failed_mous_again(cluster, mous_namespace, tiny_s3_mous, operator):
    """After the missing execution block has arrived, `mousflow retry` (= the retry annotation) starts it over."""
    name = "missing-eb"
    assert _phase(cluster, mous_namespace, name) == "Failed"
    eb = yaml.safe_load(Location(f"{tiny_s3_mous}/mous.yaml").read_text())["spec"]["executionBlocks"][0]["uri"]
    Location(eb).fs.copy(Location(eb).path, Location(f"{tiny_s3_mous}/eb/does-not-exist.ps.zarr").path, recursive=True)
    env = {**os.environ, "KUBECONFIG": cluster.kubeconfig}
    proc = subprocess.run([sys.executable, "-m", "mousflow.cli", "retry", name, "-n", mous_namespace,
                           "--token", "eb-arrived"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    cluster.wait_until("the retried MOUS to be processed", lambda: _phase(cluster, mous_namespace, name) in
                       ("ReadyForProcessing", "Processing"), timeout=60)
    mous = cluster.get("mous", name, mous_namespace)
    assert mous["metadata"]["annotations"]["mousflow.io/retry-handled"] == "eb-arrived"
    reasons = [e["reason"] for e in _events(cluster, mous_namespace, name)]
    assert "RetryRequested" in reasons and "InputsPresent" in reasons, reasons
    # a second request while it is not Failed is refused with a clear message, and changes nothing
    proc = subprocess.run([sys.executable, "-m", "mousflow.cli", "retry", name, "-n", mous_namespace], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 4 and "applies to Failed" in proc.stderr, proc.stderr
    cluster.kubectl("delete", "mous", name, "-n", mous_namespace, "--timeout=60s")


def test_a_mous_deleted_while_the_operator_is_away_is_not_stuck(cluster, mous_namespace, tiny_s3_mous, operator):
    """The operator takes its finalizer off on the way out (SIGTERM, as when its pod stops), so a MOUS deleted
    while no operator runs goes at once instead of hanging in Terminating."""
    name = "away"
    # a spec that stays put (Degraded), so nothing runs
    _apply_mous(cluster, mous_namespace, tiny_s3_mous, name, lambda doc: doc["spec"].update(band=9))
    cluster.wait_until("the operator's finalizer", lambda: "mousflow.io/finalizer" in (
        cluster.get("mous", name, mous_namespace)["metadata"].get("finalizers") or []), timeout=60)
    assert operator.stop() == 0, operator.log_tail()
    finalizers = cluster.get("mous", name, mous_namespace)["metadata"].get("finalizers") or []
    assert "mousflow.io/finalizer" not in finalizers
    cluster.kubectl("delete", "mous", name, "-n", mous_namespace, "--timeout=20s")
    assert cluster.kubectl("get", "mous", name, "-n", mous_namespace, "--ignore-not-found").strip() == ""
    operator.start()  # back for the module's teardown
