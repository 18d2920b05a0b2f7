"""Dask worker pods on the real test bed, at the level of one imaging stage Job (no mousflow operator): the
dask-kubernetes operator as the Helm chart renders it (its CRDs from the chart's dask-kubernetes-crds subchart,
its kopf controller from our runner image, watching this test's namespace, and the imaging service account with
its Role), an imaging stage Job that starts its own DaskCluster (owned by the stage pod), and the DaskCluster with
its scheduler and workers gone when the stage Job is deleted mid-run; workers no node can take leave the cube to
the stage pod.

A whole cube imaged over worker pods (workers sized per chunk, the DaskCluster owned by the stage pod and gone
afterwards, the cubes they wrote) is shown once, on the chart's own install with the operator driving it:
tests/cluster/test_helm_release.py."""

from __future__ import annotations

import dataclasses
import json
import uuid

import pytest
import yaml
from harness import (
    DASK_RELEASE,
    assert_dask_rbac_was_enough,
    install_chart_dask_objects,
    namespace_report,
    release_dask_finalizers,
)

from mousflow.pipeline.kubernetes import JobSettings, KubernetesJobLauncher, build_stage_job_spec
from mousflow.pipeline.resources import ResourceRequest
from mousflow.stages.runner import run_stage
from mousflow.storage.location import Location

pytestmark = pytest.mark.cluster
MiB = 2**20


@pytest.fixture(scope="module")
def dask_namespace(cluster, runner_image, s3_env):
    """The chart's dask operator running, and a namespace whose imaging pods may start Dask clusters."""
    ns = f"dask-{uuid.uuid4().hex[:8]}"
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {
        "pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}}})
    install_chart_dask_objects(cluster, ns, runner_image)
    cluster.kubectl("create", "secret", "generic", "mousflow-s3", "-n", ns,
                    f"--from-literal=AWS_ACCESS_KEY_ID={s3_env['AWS_ACCESS_KEY_ID']}",
                    f"--from-literal=AWS_SECRET_ACCESS_KEY={s3_env['AWS_SECRET_ACCESS_KEY']}")
    cluster.wait_until("the default service account",
                       lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", ns, check=False).strip(),
                       timeout=60)
    yield ns
    release_dask_finalizers(cluster, ns)
    cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture(scope="module")
def calibrated(s3_env, tiny_s3_mous) -> dict[str, str]:
    """The session's tiny MOUS (in MinIO) calibrated on the host into a run of this module's own, with 4-channel
    chunks (12), and a copy of that run made at once (before any test images into the first): the manifests of
    the runs ("deleted", "unschedulable") whose imaging the tests start as Jobs."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in s3_env.items():
            mp.setenv(k, v)
        doc = yaml.safe_load(Location(f"{tiny_s3_mous}/mous.yaml").read_text())
        doc["spec"]["imaging"] = {"channelChunk": 4}
        runs: dict[str, str] = {}
        for name in ("deleted", "unschedulable"):
            first = runs.get("deleted")
            root = Location(f"{tiny_s3_mous}/runs/dask-{name}-{uuid.uuid4().hex[:8]}")
            doc["spec"]["output"]["uri"] = root.uri
            loc = root.join("mous.yaml")
            if first:  # calibrated once: the copy starts from the first run's outputs and checkpoint
                root.fs.copy(first.rsplit("/", 1)[0].split("://", 1)[1] + "/", root.path + "/", recursive=True)
            loc.write_text(yaml.safe_dump(doc, sort_keys=False))
            if not first:
                outcome = run_stage("calibration", loc.uri)
                assert outcome.state == "Succeeded", outcome
            runs[name] = loc.uri
        return runs


SIZES = {"imaging": ResourceRequest(cpu=0.2, memory_bytes=900 * MiB, memory_limit_bytes=1400 * MiB),
         "imaging-worker": ResourceRequest(cpu=0.1, memory_bytes=600 * MiB, memory_limit_bytes=900 * MiB)}


def _settings(cluster, namespace, runner_image) -> JobSettings:
    return JobSettings(namespace=namespace, image=runner_image, s3_secret="mousflow-s3",
                       s3_endpoint=cluster.s3["S3_ENDPOINT_URL_IN_CLUSTER"], image_pull_policy="Never",
                       dask_service_account="mousflow-imaging", dask_min_workers=2, dask_max_workers=2,
                       dask_worker_cpu="100m")


def test_deleting_the_stage_job_deletes_its_dask_workers(cluster, dask_namespace, runner_image, calibrated,
                                                        host_s3):
    manifest = calibrated["deleted"]
    uid = yaml.safe_load(Location(manifest).read_text())["spec"]["uid"]
    job = build_stage_job_spec(_settings(cluster, dask_namespace, runner_image), uid=uid, stage="imaging",
                               attempt=7, manifest_uri=manifest, resources=SIZES["imaging"], threads=1,
                               worker_resources=SIZES["imaging-worker"])
    cluster.apply(job, namespace=dask_namespace)

    def workers():
        # a stage pod that failed tears its Dask cluster down at once: say so, with its log, not "no workers"
        status = cluster.get("job", job["metadata"]["name"], dask_namespace).get("status", {})
        if status.get("failed"):
            pytest.fail("the imaging stage failed before its workers started:\n"
                        + namespace_report(cluster, dask_namespace, log_selector="job-name"))
        return json.loads(cluster.kubectl("get", "pods", "-n", dask_namespace, "-l", "dask.org/component=worker",
                                          "-o", "json"))["items"]

    try:
        cluster.wait_until("Dask worker pods of the stage", workers, timeout=240)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{namespace_report(cluster, dask_namespace, log_selector='job-name')}") from None
    cluster.kubectl("delete", "job", job["metadata"]["name"], "-n", dask_namespace, "--cascade=background")
    cluster.wait_until("the workers and the DaskCluster to go with the Job", lambda: not json.loads(cluster.kubectl(
        "get", "daskclusters,pods", "-n", dask_namespace, "-l", "dask.org/cluster-name", "-o", "json"))["items"]
        and not json.loads(cluster.kubectl("get", "daskclusters", "-n", dask_namespace, "-o", "json"))["items"],
        timeout=180)
    # the cluster's autoscaler goes with it (owned by the DaskCluster): gone, or being deleted
    autoscalers = json.loads(cluster.kubectl("get", "daskautoscalers", "-n", dask_namespace, "-o", "json"))["items"]
    assert all(a["metadata"].get("deletionTimestamp") for a in autoscalers), autoscalers
    assert_dask_rbac_was_enough(cluster, dask_namespace, f"{DASK_RELEASE}-mousflow-dask-controller")


def test_worker_pods_no_node_can_take_leave_the_cube_to_the_stage_pod(cluster, dask_namespace, runner_image,
                                                                      calibrated, monkeypatch, host_s3):
    """Workers asking for more CPU than the node has stay Pending (Unschedulable): the stage stops waiting for
    them after its grace period, images the chunks itself, says why in its outcome (the MOUS's
    status.stages.imaging.message), and its Dask cluster is deleted."""
    monkeypatch.setenv("KUBECONFIG", cluster.kubeconfig)
    manifest = calibrated["unschedulable"]
    run_root = Location(manifest.rsplit("/", 1)[0])
    settings = dataclasses.replace(_settings(cluster, dask_namespace, runner_image), dask_worker_cpu="64",
                                   dask_unschedulable_seconds=15)
    launcher = KubernetesJobLauncher(settings, SIZES.__getitem__, threads=1, poll_seconds=1.0, timeout_seconds=600)
    lines: list[str] = []
    outcome = launcher.launch("imaging", manifest, run_root, lines.append)
    print("\n".join(lines))
    assert outcome.state == "Succeeded", outcome
    assert outcome.message.startswith("WorkersUnschedulable: the Dask worker pods could not be scheduled"), outcome
    assert "Insufficient cpu" in outcome.message, outcome.message
    assert outcome.metrics["chunks_computed"] == 12 and outcome.metrics["workers_used"] == 1, outcome.metrics
    summary = json.loads(run_root.join("imaging", "summary.json").read_text())
    assert "imaged in the stage pod" in summary["scaleout"]["fallback"]
    assert summary["cubes"]["spw1"]["line_channels"], summary["cubes"]
    cluster.wait_until("the Dask cluster to be deleted", lambda: not json.loads(cluster.kubectl(
        "get", "daskclusters,pods", "-n", dask_namespace, "-l", "dask.org/cluster-name", "-o", "json"))["items"],
        timeout=120)
