"""A namespace without the S3 Secret the stage pods read their credentials from, on the real test bed: the
calibration pod cannot start (the kubelet's CreateContainerConfigError), and instead of a pod waiting for ever
the MOUS is Failed with a Degraded condition that names the missing Secret, its Job gone, no retry storm. A
person creates the Secret and asks for a retry (`mousflow retry`): the stage pod then starts and the MOUS goes on.

The operator is a local process naming a Secret that is not in the namespace (MOUSFLOW_S3_SECRET, the chart's
s3.existingSecret) and giving a stuck pod 15 s (MOUSFLOW_POD_START_ERROR_SECONDS; the chart's default is 120)."""

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
NAMESPACE_PREFIX = "nosecret"
SECRET = "mousflow-s3-not-made-yet"
OPERATOR_ENV = {"MOUSFLOW_S3_SECRET": SECRET, "MOUSFLOW_POD_START_ERROR_SECONDS": "15"}
UID = "uid://A001/X1001/X5ec"
NAME = "no-secret"


def _stage_items(cluster, ns, kind: str) -> list[dict]:
    label = hashlib.sha256(UID.encode()).hexdigest()[:10]
    return json.loads(cluster.kubectl("get", kind, "-n", ns, "-l", f"mousflow.io/mous={label}",
                                      "-o", "json"))["items"]


def test_a_missing_s3_secret_fails_the_mous_naming_it_and_a_retry_after_the_fix_goes_on(
        cluster, mous_namespace, tiny_s3_mous, operator, s3_env):
    ns = mous_namespace
    doc = yaml.safe_load(Location(f"{tiny_s3_mous}/mous.yaml").read_text())
    doc["metadata"] = {"name": NAME}
    doc["spec"]["uid"] = UID
    doc["spec"]["output"]["uri"] = f"{tiny_s3_mous}/runs/{NAME}"
    doc["spec"]["delivery"] = {"uri": f"{tiny_s3_mous}/delivered/{NAME}", "automatic": False}
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(doc))

    status = wait_for_phase(cluster, operator, ns, NAME, ("Failed", "ReadyForReview", "Delivered"), timeout=300)
    assert status["phase"] == "Failed", json.dumps(status, indent=1)
    degraded = {c["type"]: c for c in status["conditions"]}["Degraded"]
    assert degraded["status"] == "True" and degraded["reason"] == "PodCannotStart", degraded
    assert f'secret "{SECRET}" not found' in degraded["message"], degraded
    assert status["stages"]["calibration"]["state"] == "Failed"
    time.sleep(8)  # several reconciliations later: still Failed, its Job gone, no second attempt
    assert cluster.get("mous", NAME, ns)["status"]["phase"] == "Failed"
    assert _stage_items(cluster, ns, "jobs") == []
    described = cluster.kubectl("describe", "mous", NAME, "-n", ns)
    assert SECRET in described

    # the fix, then a person's retry: the calibration pod starts this time
    cluster.kubectl("create", "secret", "generic", SECRET, "-n", ns,
                    f"--from-literal=AWS_ACCESS_KEY_ID={s3_env['AWS_ACCESS_KEY_ID']}",
                    f"--from-literal=AWS_SECRET_ACCESS_KEY={s3_env['AWS_SECRET_ACCESS_KEY']}")
    env = {**os.environ, "KUBECONFIG": cluster.kubeconfig}
    proc = subprocess.run([sys.executable, "-m", "mousflow.cli", "retry", NAME, "-n", ns, "--token", "fixed"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr

    def a_stage_pod_ran():
        return [p["metadata"]["name"] for p in _stage_items(cluster, ns, "pods")
                if (p.get("status") or {}).get("phase") in ("Running", "Succeeded")]

    cluster.wait_until("a stage pod of the retried run running", a_stage_pod_ran, timeout=240, interval=1)
    mous = cluster.get("mous", NAME, ns)
    assert mous["status"]["phase"] == "Processing", mous["status"]
    degraded = {c["type"]: c for c in mous["status"]["conditions"]}["Degraded"]
    assert degraded["status"] == "False", degraded
