"""Stages as Kubernetes Jobs on the real test bed: the runner image, MinIO as the only storage, credentials
from a Secret, resources from the resource model, and out-of-memory kills answered with more memory."""

from __future__ import annotations

import json

import pytest
import yaml

from mousflow.pipeline.kubernetes import JobSettings, KubernetesJobLauncher, job_name
from mousflow.pipeline.resources import ResourceRequest
from mousflow.storage.location import Location

pytestmark = pytest.mark.cluster
MiB = 2**20


@pytest.fixture(scope="module")
def stage_namespace(cluster, namespace, s3_env):
    cluster.kubectl("create", "secret", "generic", "mousflow-s3", "-n", namespace,
                    f"--from-literal=AWS_ACCESS_KEY_ID={s3_env['AWS_ACCESS_KEY_ID']}",
                    f"--from-literal=AWS_SECRET_ACCESS_KEY={s3_env['AWS_SECRET_ACCESS_KEY']}")
    return namespace


@pytest.fixture(scope="module")
def s3_mous(tiny_s3_mous):
    return tiny_s3_mous


@pytest.fixture
def host_env(monkeypatch, cluster, s3_env):
    monkeypatch.setenv("KUBECONFIG", cluster.kubeconfig)
    for k, v in s3_env.items():
        monkeypatch.setenv(k, v)


def _manifest_with_output(sim_uri: str, output: str) -> str:
    """A copy of the simulated manifest whose outputs go to `output` (so each test starts from nothing)."""
    doc = yaml.safe_load(Location(f"{sim_uri}/mous.yaml").read_text())
    doc["spec"]["output"]["uri"] = output
    loc = Location(f"{output}/mous.yaml")
    loc.write_text(yaml.safe_dump(doc, sort_keys=False))
    return loc.uri


def _launcher(cluster, namespace, runner_image, resources, **kw):
    settings = JobSettings(namespace=namespace, image=runner_image, s3_secret="mousflow-s3",
                           s3_endpoint=cluster.s3["S3_ENDPOINT_URL_IN_CLUSTER"], image_pull_policy="Never")
    return KubernetesJobLauncher(settings, resources, threads=1, poll_seconds=1.0, timeout_seconds=900, **kw)


def test_calibration_runs_as_a_job_reading_and_writing_s3(cluster, stage_namespace, runner_image, s3_mous,
                                                           host_env):
    manifest = _manifest_with_output(s3_mous, f"{s3_mous}/run-job")
    request = ResourceRequest(cpu=1.0, memory_bytes=1024 * MiB, memory_limit_bytes=1536 * MiB)
    lines: list[str] = []
    outcome = _launcher(cluster, stage_namespace, runner_image, lambda _stage: request).launch(
        "calibration", manifest, Location(f"{s3_mous}/run-job"), lines.append)
    assert outcome.state == "Succeeded", (outcome, lines[-20:])
    assert any("calibration: done" in line for line in lines), lines[-20:]
    # the pod's own measurement of its peak memory, and the outputs with their checkpoint in S3
    assert 100 * MiB < outcome.metrics["peak_memory_bytes"] < request.memory_limit_bytes
    cp = json.loads(Location(f"{s3_mous}/run-job/checkpoints/calibration.json").read_text())
    assert any(k.endswith("calibrated.ps.zarr") for k in cp["outputs"])
    pod = json.loads(cluster.kubectl("get", "pods", "-n", stage_namespace, "-l",
                                     f"job-name={outcome.metrics['job']}", "-o", "json"))["items"][0]
    container = pod["spec"]["containers"][0]
    assert container["resources"]["limits"]["memory"] == "1536Mi"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True


def test_launching_twice_adopts_the_existing_job(cluster, stage_namespace, runner_image, s3_mous, host_env):
    manifest = _manifest_with_output(s3_mous, f"{s3_mous}/run-job")
    request = ResourceRequest(cpu=1.0, memory_bytes=1024 * MiB, memory_limit_bytes=1536 * MiB)
    lines: list[str] = []
    outcome = _launcher(cluster, stage_namespace, runner_image, lambda _stage: request).launch(
        "calibration", manifest, Location(f"{s3_mous}/run-job"), lines.append)
    assert any("exists already" in line for line in lines)
    assert outcome.state == "Succeeded"
    uid = yaml.safe_load(Location(manifest).read_text())["spec"]["uid"]
    jobs = json.loads(cluster.kubectl("get", "jobs", "-n", stage_namespace, "-o", "json"))["items"]
    assert [j["metadata"]["name"] for j in jobs].count(job_name(uid, "calibration", 1)) == 1


def test_oom_killed_stage_comes_back_with_more_memory(cluster, stage_namespace, runner_image, s3_mous, host_env):
    output = f"{s3_mous}/run-oom"
    manifest = _manifest_with_output(s3_mous, output)
    too_small = ResourceRequest(cpu=1.0, memory_bytes=160 * MiB, memory_limit_bytes=160 * MiB)
    lines: list[str] = []
    # the fallback itself: with in-place growth on, the launcher would first raise the limit of the running pod
    # (shown in test_operator_retry.py) and the kill would come, if at all, at the raised limit
    launcher = _launcher(cluster, stage_namespace, runner_image, lambda _stage: too_small, attempt=10,
                         oom_memory_factor=3.0, oom_max_retries=2, resize_in_place=False)
    outcome = launcher.launch("calibration", manifest, Location(output), lines.append)
    assert outcome.metrics["oom_killed_at_limits_bytes"][0] == 160 * MiB, lines[-10:]
    assert any("OOMKilled; retrying" in line for line in lines)
    assert outcome.state == "Succeeded", (outcome, lines[-20:])
    assert outcome.metrics["memory_limit_bytes"] > 160 * MiB
    uid = yaml.safe_load(Location(manifest).read_text())["spec"]["uid"]
    first = json.loads(cluster.kubectl("get", "pods", "-n", stage_namespace, "-l",
                                       f"job-name={job_name(uid, 'calibration', 10)}", "-o", "json"))["items"][0]
    term = first["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["reason"] == "OOMKilled"
    # the launcher's record, which the operator shows in status.stages.calibration.retries and as an Event
    (retry, *_) = Location(f"{output}/status/calibration.retries.json").read_json()
    assert retry == {"job": job_name(uid, "calibration", 10), "reason": "OOMKilled", "memoryLimit": "160Mi",
                     "message": retry["message"]} and "memory limit" in retry["message"]
