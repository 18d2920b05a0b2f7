"""Flow runs in pods of their own (MOUSFLOW_FLOW_RUNNER=pod, chart operator.flowRunner.mode=pod) on the real test
bed: the operator (a local process) creates one flow-run Job per run in the MOUS's namespace, running as the
chart's flow-runner account with the namespace's S3 Secret; that pod runs the Prefect flow, which creates and
follows the stage Jobs. The flow pod is killed while a stage runs and the operator is killed and started again:
the Job's next pod executes the same flow run, adopts the running stage Job instead of starting another, and
the MOUS is Delivered with QA2 Pass and the products of an ordinary run."""

from __future__ import annotations

import json
import time
from urllib.parse import urlsplit

import httpx
import pytest
from harness import CHART, apply_mous, stage_jobs, wait_for_phase

from mousflow.pipeline.local_server import local_prefect_server

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("host_s3")]
NAMESPACE_PREFIX = "flowpod"
RELEASE = "fp"


@pytest.fixture(scope="module")
def pod_visible_prefect(cluster):
    """A Prefect server on the test bed's node address, which pods reach (the session's listens on 127.0.0.1)."""
    with local_prefect_server(host=urlsplit(cluster.s3["S3_ENDPOINT_URL"]).hostname) as url:
        yield url


@pytest.fixture(scope="module")
def operator_overrides(cluster, mous_namespace, runner_image, pod_visible_prefect):
    """The chart's flow-runner account and Role in the module's namespace, as `helm template` renders them."""
    repository, tag = runner_image.rsplit(":", 1)
    objects = cluster.helm("template", RELEASE, str(CHART), "-n", mous_namespace,
                           "--show-only", "templates/flow-runner.yaml", "--set", "operator.flowRunner.mode=pod",
                           "--set", f"image.repository={repository}", "--set", f"image.tag={tag}")
    cluster.kubectl("apply", "-n", mous_namespace, "-f", "-", input=objects)
    return {"PREFECT_API_URL": pod_visible_prefect, "MOUSFLOW_FLOW_RUNNER": "pod",
            "MOUSFLOW_FLOW_RUNNER_CPU": "100m", "MOUSFLOW_FLOW_RUNNER_MEMORY": "512Mi"}


def _pods(cluster, ns, selector) -> list[dict]:
    return json.loads(cluster.kubectl("get", "pods", "-n", ns, "-l", selector, "-o", "json"))["items"]


def _rss_mb(pid: int) -> tuple[float, float]:
    """(resident, peak resident) of a process, MB."""
    fields = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status").read().splitlines() if ":" in line)
    return tuple(int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM"))


def test_the_flow_runs_in_its_own_pod_survives_losing_it_and_an_operator_restart(
        cluster, mous_namespace, tiny_s3_mous, operator, pod_visible_prefect):
    ns = mous_namespace
    doc = apply_mous(cluster, ns, tiny_s3_mous, "in-pods", "f10d")
    uid = doc["spec"]["uid"]

    def flow_pod_running_with_a_stage():
        pods = [p for p in _pods(cluster, ns, "mousflow.io/flow-run") if p["status"].get("phase") == "Running"]
        return pods and stage_jobs(cluster, ns, uid).get("calibration") and pods[0]

    flow_pod = cluster.wait_until("a flow pod running with a calibration Job", flow_pod_running_with_a_stage,
                                  timeout=300, interval=2)
    assert flow_pod["spec"]["serviceAccountName"] == "mousflow-flow-runner"
    cluster.kubectl("delete", "pod", flow_pod["metadata"]["name"], "-n", ns, "--grace-period=1", "--wait=false")
    time.sleep(5)
    operator.kill()
    operator.start()

    status = wait_for_phase(cluster, operator, ns, "in-pods", ("Delivered", "Failed"), timeout=900)
    assert status["phase"] == "Delivered" and status["qa2"]["verdict"] == "Pass", status
    rss, peak = _rss_mb(operator.proc.pid)

    flow_jobs = json.loads(cluster.kubectl("get", "jobs", "-n", ns, "-l", "mousflow.io/flow-run", "-o",
                                           "json"))["items"]
    assert len(flow_jobs) == 1, [j["metadata"]["name"] for j in flow_jobs]  # one run: no retry was needed
    job = flow_jobs[0]
    assert job["status"].get("succeeded") == 1 and job["status"].get("failed") == 1, job["status"]
    # the replacement pod executed the same Prefect flow run, and it completed
    runs = httpx.post(f"{pod_visible_prefect}/flow_runs/filter", json={"limit": 50}, timeout=30).json()
    ours = [r for r in runs if r.get("parameters", {}).get("uid") == uid]
    assert [r["state_type"] for r in ours] == ["COMPLETED"], ours
    assert status.get("flowRunId") == ours[0]["id"]
    # the stage running when the flow pod died was followed, not started again
    jobs = stage_jobs(cluster, ns, uid)
    assert {s: len(j) for s, j in jobs.items()} == {"calibration": 1, "imaging": 1, "packaging": 1}, \
        {s: [x["metadata"]["name"] for x in j] for s, j in jobs.items()}
    print(f"flow pods: operator resident {rss:.0f} MB (peak {peak:.0f} MB since its restart), flow Job "
          f"{job['metadata']['name']} {job['status']}")
