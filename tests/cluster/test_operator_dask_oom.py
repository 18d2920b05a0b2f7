"""A Dask worker pod killed for its memory, on the real test bed: the operator (a local process watching this
module's namespace) images a tiny MOUS applied with kubectl over Dask worker pods, from the chart's own Dask
controller and imaging account in that namespace.

With the test-only MOUSFLOW_TEST_WORKER_OOM=1.15 every chunk task first takes its worker container's working set
to 1.15 x the worker memory limit of the run's first imaging attempt, as a chunk larger than its estimate would:
the first attempt's workers are killed on the way (by the kernel at the container's limit, or by the nanny just
before it), again each time the nanny brings one back, until Dask gives the chunk up (KilledWorker). The stage
reports OutOfMemory, never the permanent ImagingFailed, and the launcher runs imaging again with workers of
oom_memory_factor (1.5) x the memory, which hold 1.15 x; the MOUS is Delivered. Calibration is not run again.

Where the same kill happens to a child of a stage pod (the exit-0 OOM): test_operator_retry.py."""

from __future__ import annotations

import json

import pytest
from harness import (
    DASK_IMAGING_ACCOUNT,
    apply_mous,
    install_chart_dask_objects,
    jobs_by_stage,
    release_dask_finalizers,
    stage_jobs,
    wait_for_phase,
)

from mousflow.errors import exit_code_of
from mousflow.storage.location import Location

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("host_s3")]
NAMESPACE_PREFIX = "daskoom"
FACTOR = 1.15
# one or two worker pods asking 100m each: the test bed is one shared 2-core node beside the imaging pod
OPERATOR_ENV = {"MOUSFLOW_DASK_SERVICE_ACCOUNT": DASK_IMAGING_ACCOUNT, "MOUSFLOW_DASK_MIN_WORKERS": "1",
                "MOUSFLOW_DASK_MAX_WORKERS": "2", "MOUSFLOW_DASK_WORKER_CPU": "100m",
                "MOUSFLOW_TEST_WORKER_OOM": str(FACTOR)}
NAME = "worker-oom"


@pytest.fixture(scope="module")
def operator_overrides(cluster, mous_namespace, runner_image):
    """The chart's Dask controller and imaging account in the module's namespace, before the operator starts
    (and their finalizers released after it stopped, before the namespace goes)."""
    install_chart_dask_objects(cluster, mous_namespace, runner_image)
    yield {}
    release_dask_finalizers(cluster, mous_namespace)


def _worker_limit(job: dict) -> int:
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    return int(env["MOUSFLOW_DASK_WORKER_MEMORY_LIMIT"])


def test_a_dask_worker_killed_for_its_memory_comes_back_with_larger_workers(cluster, mous_namespace, tiny_s3_mous,
                                                                            operator):
    ns = mous_namespace
    doc = apply_mous(cluster, ns, tiny_s3_mous, NAME, "d0a")
    status = wait_for_phase(cluster, operator, ns, NAME, ("Delivered", "Failed", "QA2Fail"), timeout=1200)
    assert status["phase"] == "Delivered", f"{json.dumps(status, indent=1)}\noperator log:\n{operator.log_tail()}"

    # one memory retry of imaging, for its workers: OutOfMemory from the workers Dask gave up on
    records = status["stages"]["imaging"].get("retries", [])
    assert [r["reason"] for r in records] == ["OutOfMemory"], records
    assert "every Dask worker that ran" in records[0]["message"], records
    assert status["stages"]["imaging"]["state"] == "Succeeded"
    uid = doc["spec"]["uid"]
    jobs = stage_jobs(cluster, ns, uid)
    assert len(jobs["calibration"]) == 1 and len(jobs["packaging"]) == 1, jobs_by_stage(cluster, ns, uid)
    first, second = sorted(jobs["imaging"], key=lambda j: j["metadata"]["creationTimestamp"])
    assert first["status"].get("failed") == 1 and second["status"].get("succeeded") == 1
    # the first imaging pod said OutOfMemory itself (its exit code), the kernel did not kill the stage process
    pods = json.loads(cluster.kubectl("get", "pods", "-n", ns, "-l", f"job-name={first['metadata']['name']}",
                                      "-o", "json"))["items"]
    term = pods[-1]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == exit_code_of("OutOfMemory"), term

    # the workers grew by the platform's factor, from below what the chunks took to above it
    marker = Location(doc["spec"]["output"]["uri"]).join("status", "imaging.test-worker-oom.json").read_json()
    small, large = _worker_limit(first), _worker_limit(second)
    assert marker["first_worker_limit_bytes"] == small
    assert records[0]["memoryLimit"] == f"{small // 2**20}Mi", records
    assert small < marker["target_bytes"] < large and large >= 1.45 * small, (small, marker, large)
    print(f"worker memory limit {small >> 20} MiB (killed at {marker['target_bytes'] >> 20} MiB) -> {large >> 20} MiB")

    # and no worker pod or DaskCluster is left behind
    cluster.wait_until("the Dask objects to go", lambda: not json.loads(cluster.kubectl(
        "get", "daskclusters,pods", "-n", ns, "-l", "dask.org/cluster-name", "-o", "json"))["items"], timeout=180)
