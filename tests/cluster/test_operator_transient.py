"""The object store away for a minute, on the real test bed: the operator (a local process) runs a tiny MOUS
applied with kubectl, and the test bed's MinIO is killed while calibration runs, then started again 60 s later.

What fails meanwhile (the calibration pod's reads or writes, the flow's own) fails as Unavailable, a transient
class of its own: the operator waits it out with a backoff (5 s doubling, at most 20 s here), shows the Waiting
condition and a WaitingOutUnavailable Event, and does not spend the run-retry budget on it. With
MOUSFLOW_MAX_RUN_ATTEMPTS=1 a single counted failure would leave the MOUS Failed; it is Delivered."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from harness import apply_mous, wait_for_phase

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("host_s3")]
NAMESPACE_PREFIX = "transient"
OPERATOR_ENV = {"MOUSFLOW_MAX_RUN_ATTEMPTS": "1", "MOUSFLOW_RETRY_BACKOFF_SECONDS": "5",
                "MOUSFLOW_TRANSIENT_MAX_DELAY_SECONDS": "20"}
NAME = "through-an-outage"
OUTAGE_SECONDS = 60
REPO = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("TESTBED_STATE", "/tmp/mousflow-cluster"))


@contextlib.contextmanager
def minio_killed(cluster):
    """The test bed's MinIO killed (SIGKILL, as a crash) for the duration, then started again by cluster-up.sh,
    which starts only what is not running."""
    pid_file = STATE / "pids" / "minio.pid"
    if not pid_file.is_file():
        pytest.fail(f"this test stops the local test bed's MinIO; no {pid_file} (another cluster?)")
    pid = int(pid_file.read_text())
    os.kill(pid, signal.SIGKILL)
    cluster.wait_until("MinIO gone", lambda: not Path(f"/proc/{pid}").exists(), timeout=30)
    try:
        yield
    finally:
        subprocess.run([str(REPO / "hack" / "testbed" / "cluster-up.sh")], check=True, capture_output=True,
                       timeout=300)


def _waiting(cluster, ns) -> dict | None:
    status = cluster.get("mous", NAME, ns).get("status") or {}
    return next((c for c in status.get("conditions", []) if c["type"] == "Waiting"), None)


def test_a_minute_without_the_object_store_is_waited_out_not_failed(cluster, mous_namespace, tiny_s3_mous,
                                                                     operator):
    ns = mous_namespace
    apply_mous(cluster, ns, tiny_s3_mous, NAME, "7a1")
    cluster.wait_until("calibration running", lambda: (cluster.get("mous", NAME, ns).get("status") or {}).get(
        "stages", {}).get("calibration", {}).get("state") == "Running", timeout=300)

    seen: list[dict] = []
    with minio_killed(cluster):
        deadline = time.monotonic() + OUTAGE_SECONDS
        while time.monotonic() < deadline:
            condition = _waiting(cluster, ns)
            if condition and condition["status"] == "True":
                seen.append(condition)
            time.sleep(2)

    status = wait_for_phase(cluster, operator, ns, NAME, ("Delivered", "Failed", "QA2Fail"), timeout=900)
    assert status["phase"] == "Delivered", f"{json.dumps(status, indent=1)}\noperator log:\n{operator.log_tail()}"
    assert status["qa2"]["verdict"] == "Pass"
    # the outage was waited out (the Waiting condition while it lasted, now over), not counted
    assert seen, f"no Waiting condition during the outage\noperator log:\n{operator.log_tail()}"
    assert {c["reason"] for c in seen} == {"Unavailable"}, seen
    assert any("cannot reach" in c["message"] or "object store" in c["message"] for c in seen), seen
    assert _waiting(cluster, ns)["status"] == "False"
    waited = json.loads(cluster.get("mous", NAME, ns)["metadata"]["annotations"]["mousflow.io/waiting"])
    assert waited["waits"] >= 1 and waited["streak"] == 0, waited
    events = json.loads(cluster.kubectl("get", "events", "-n", ns, "-o", "json", "--field-selector",
                                        f"involvedObject.name={NAME}"))["items"]
    assert any(e["reason"] == "WaitingOutUnavailable" and e["type"] == "Warning" for e in events)
    assert not any(e["reason"] == "RetryScheduled" for e in events)
    print(f"waited out {waited['waits']} failed attempt(s) in the outage; last: {seen[-1]['message'][:200]}")
