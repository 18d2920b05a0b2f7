"""Cube imaging scaled out over Dask worker pods on the real test bed: the dask-kubernetes operator as the Helm
chart renders it (its CRDs from the chart's dask-kubernetes-crds subchart, its kopf controller from our runner
image, watching this test's namespace, and the imaging service account with its Role), an imaging stage Job that
starts its own DaskCluster (owned by the stage pod), workers sized per chunk reading and writing MinIO with
the stage Secret, and the cluster gone afterwards, also when the stage Job is deleted mid-run. The stage Jobs
are launched directly (no mousflow operator): tests/cluster/test_helm_install.py runs the whole chart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml
from harness import assert_dask_rbac_was_enough, namespace_report

from mousflow.pipeline.kubernetes import JobSettings, KubernetesJobLauncher, build_stage_job_spec
from mousflow.pipeline.resources import ResourceRequest
from mousflow.stages.image_store import ImageStore
from mousflow.stages.runner import run_stage
from mousflow.storage.location import Location

pytestmark = pytest.mark.cluster
MiB = 2**20
REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "mousflow"
RELEASE = "imaging-dask"


def apply_dask_crds(cluster) -> None:
    """The chart's copy of the dask-kubernetes CRDs (server-side: they are too big for kubectl's
    last-applied annotation; another test's `helm install` may have created them already)."""
    for crd in sorted((CHART / "charts" / "dask-kubernetes-crds" / "crds").glob("*.yaml")):
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))


def chart_dask_objects(cluster, namespace: str, runner_image: str) -> str:
    """The chart's Dask controller (Deployment, its account and Role) and imaging account (with its Role) for a
    release in `namespace` watching only that namespace, as `helm template` renders them."""
    repository, tag = runner_image.rsplit(":", 1)
    return cluster.helm("template", RELEASE, str(CHART), "-n", namespace,
                        "--show-only", "templates/dask-controller.yaml", "--show-only", "templates/dask-imaging.yaml",
                        "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
                        "--set", "image.pullPolicy=Never", "--set", "s3.existingSecret=mousflow-s3")


@pytest.fixture(scope="module")
def dask_namespace(cluster, runner_image, s3_env):
    """The chart's dask operator running, and a namespace whose imaging pods may start Dask clusters."""
    ns = f"dask-{uuid.uuid4().hex[:8]}"
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {
        "pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}}})
    apply_dask_crds(cluster)
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=chart_dask_objects(cluster, ns, runner_image))
    cluster.kubectl("rollout", "status", f"deployment/{RELEASE}-mousflow-dask-controller", "-n", ns,
                    "--timeout=180s", timeout=200)
    cluster.kubectl("create", "secret", "generic", "mousflow-s3", "-n", ns,
                    f"--from-literal=AWS_ACCESS_KEY_ID={s3_env['AWS_ACCESS_KEY_ID']}",
                    f"--from-literal=AWS_SECRET_ACCESS_KEY={s3_env['AWS_SECRET_ACCESS_KEY']}")
    cluster.wait_until("the default service account",
                       lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", ns, check=False).strip(),
                       timeout=60)
    yield ns
    cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture(scope="module")
def calibrated(s3_env):
    """The tiny MOUS in a fresh MinIO bucket, calibrated on the host, with 4-channel chunks (12 chunks)."""
    env = {**os.environ, **s3_env}
    bucket = f"mousflow-dask-{uuid.uuid4().hex[:8]}"
    code = ("import s3fs, os; s3fs.S3FileSystem(client_kwargs={'endpoint_url': os.environ['MOUSFLOW_S3_ENDPOINT']})"
            f".mkdir({bucket!r})")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    sim = f"s3://{bucket}/tiny"
    proc = subprocess.run([sys.executable, "-m", "mousflow.cli", "simulate", "--preset", "tiny", "--out", sim],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    mp = pytest.MonkeyPatch()
    for k, v in s3_env.items():
        mp.setenv(k, v)
    doc = yaml.safe_load(Location(f"{sim}/mous.yaml").read_text())
    doc["spec"]["imaging"] = {"channelChunk": 4}
    runs = {}
    for name in ("pods", "deleted"):
        d = json.loads(json.dumps(doc))
        d["spec"]["output"]["uri"] = f"s3://{bucket}/{name}"
        loc = Location(f"s3://{bucket}/{name}/mous.yaml")
        if runs:  # calibrate once; the other run starts from a copy of its outputs and checkpoint
            loc.fs.copy(f"{bucket}/pods/", f"{bucket}/{name}/", recursive=True)
        loc.write_text(yaml.safe_dump(d, sort_keys=False))
        if not runs:
            outcome = run_stage("calibration", loc.uri)
            assert outcome.state == "Succeeded", outcome
        runs[name] = loc.uri
    yield bucket, runs
    mp.undo()


SIZES = {"imaging": ResourceRequest(cpu=0.2, memory_bytes=900 * MiB, memory_limit_bytes=1400 * MiB),
         "imaging-worker": ResourceRequest(cpu=0.1, memory_bytes=600 * MiB, memory_limit_bytes=900 * MiB)}


def _settings(cluster, namespace, runner_image) -> JobSettings:
    return JobSettings(namespace=namespace, image=runner_image, s3_secret="mousflow-s3",
                       s3_endpoint=cluster.s3["S3_ENDPOINT_URL_IN_CLUSTER"], image_pull_policy="Never",
                       dask_service_account="mousflow-imaging", dask_min_workers=2, dask_max_workers=2,
                       dask_worker_cpu="100m")


def test_imaging_scales_out_over_dask_worker_pods(cluster, dask_namespace, runner_image, calibrated, s3_env,
                                                   monkeypatch):
    monkeypatch.setenv("KUBECONFIG", cluster.kubeconfig)
    bucket, runs = calibrated
    settings = _settings(cluster, dask_namespace, runner_image)
    sizes = SIZES
    launcher = KubernetesJobLauncher(settings, sizes.__getitem__, threads=1, poll_seconds=1.0, timeout_seconds=600)

    seen: dict = {"owners": None, "workers": set()}
    done = threading.Event()

    def watch():  # what the operator made while the stage ran
        while not done.is_set():
            out = cluster.kubectl("get", "daskclusters,pods", "-n", dask_namespace, "-o", "json", check=False)
            for item in (json.loads(out)["items"] if out.strip() else []):
                if item["kind"] == "DaskCluster" and item["metadata"].get("ownerReferences"):
                    seen["owners"] = item["metadata"]["ownerReferences"]
                labels = item["metadata"].get("labels", {})
                if item["kind"] == "Pod" and labels.get("dask.org/component") == "worker":
                    seen["workers"].add(item["metadata"]["name"])
                    seen["worker_resources"] = item["spec"]["containers"][0]["resources"]
            done.wait(2.0)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    lines: list[str] = []
    try:
        outcome = launcher.launch("imaging", runs["pods"], Location(f"s3://{bucket}/pods"), lines.append)
    finally:
        done.set()
        watcher.join(10)
    print("\n".join(lines))  # the stage pod's log, shown if an assertion below fails
    assert outcome.state == "Succeeded", outcome
    m = outcome.metrics
    assert m["workers_used"] == 2 and m["chunks_computed"] == 12, m
    # the DaskCluster belonged to the stage pod; the workers were sized per chunk
    assert seen["owners"] and seen["owners"][0]["kind"] == "Pod", seen
    assert seen["owners"][0]["name"].startswith(outcome.metrics["job"])
    assert len(seen["workers"]) >= 2
    assert seen["worker_resources"]["limits"]["memory"] == "900Mi"
    # torn down after the stage: no DaskCluster and no worker pod left
    cluster.wait_until("the Dask cluster to be deleted", lambda: not json.loads(cluster.kubectl(
        "get", "daskclusters,pods", "-n", dask_namespace, "-l", "dask.org/cluster-name", "-o", "json"))["items"],
        timeout=120)

    # the cubes the worker pods wrote: every channel imaged, the simulated line found (that 1 and N workers
    # make the same cubes is shown on a local Dask cluster: tests/stages/test_imaging_scaleout.py)
    for k, v in s3_env.items():
        monkeypatch.setenv(k, v)
    summary = json.loads(Location(f"s3://{bucket}/pods/imaging/summary.json").read_text())
    assert summary["scaleout"]["mode"] == "kubernetes" and summary["scaleout"]["workers_used"] == 2
    assert summary["cubes"]["spw1"]["line_channels"], summary["cubes"]
    for spw in ("spw0", "spw1"):
        image = ImageStore(Location(f"s3://{bucket}/pods/imaging/cube_{spw}.zarr")).read("image")
        imaged = np.isfinite(image).any(axis=(1, 2))
        assert imaged.sum() >= 0.8 * imaged.size, (spw, imaged)  # a flagged channel (the spur) has no image
    assert_dask_rbac_was_enough(cluster, dask_namespace, f"{RELEASE}-mousflow-dask-controller")

def test_deleting_the_stage_job_deletes_its_dask_workers(cluster, dask_namespace, runner_image, calibrated):
    _bucket, runs = calibrated
    uid = yaml.safe_load(Location(runs["deleted"]).read_text())["spec"]["uid"]
    job = build_stage_job_spec(_settings(cluster, dask_namespace, runner_image), uid=uid, stage="imaging",
                               attempt=7, manifest_uri=runs["deleted"], resources=SIZES["imaging"], threads=1,
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
