"""helm/mousflow on the real test bed: `helm install` into a namespace that enforces the restricted Pod Security
profile, a tiny MOUS from apply to Delivered, `helm upgrade` with a MOUS in flight, `helm uninstall` keeping the
delivered data. The test bed's MinIO serves as the external S3 (s3.existingSecret + s3.endpoint); Prefect's
SQLite lives on a PersistentVolumeClaim bound to a hostPath volume made here (the test bed has no provisioner).
The tests run in file order and share one release."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from harness import apply_mous, assert_delivered_products, jobs_by_stage, pods_of, wait_delivered

from mousflow.storage.location import Location
from mousflow_operator.crd import crd_text

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("host_s3")]
CHART = Path(__file__).resolve().parents[2] / "helm" / "mousflow"
RELEASE = "mf"
OPERATOR = f"{RELEASE}-mousflow-operator"
SUFFIX = uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def sim(tiny_s3_mous):
    """The session's tiny MOUS in the test bed's MinIO (simulated from the host); runs and deliveries of this
    module go under names of its own (helm-*)."""
    return tiny_s3_mous


def _set_args(runner_image: str, storage_class: str, s3_in_cluster: str) -> list[str]:
    repository, tag = runner_image.rsplit(":", 1)
    sets = {"image.repository": repository, "image.tag": tag, "image.pullPolicy": "Never",
            "s3.existingSecret": "helm-s3", "s3.endpoint": s3_in_cluster,
            "prefect.database.sqlite.persistence.storageClassName": storage_class,
            "operator.autoDelivery": "true", "operator.tickSeconds": "2",
            # the test bed is one 2-core node: a worker requesting a whole core is never scheduled next to the
            # imaging pod, which then ends with "No valid workers found" (make testbed-chart sets the same)
            "dask.workerCpu": "100m"}
    return [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]


@pytest.fixture(scope="module")
def release(cluster, s3_env, runner_image):
    """The chart installed (helm --wait) in a fresh namespace labelled pod-security enforce=restricted."""
    ns = f"helm-{SUFFIX}"
    storage_class = f"mousflow-helm-{SUFFIX}"
    host_dir = Path(f"/tmp/mousflow-helm-pv-{SUFFIX}")
    cluster.kubectl("apply", "-f", "-", input=crd_text())  # other tests may have installed it first
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {
        "pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}}})
    cluster.kubectl("create", "secret", "generic", "helm-s3", "-n", ns,
                    f"--from-literal=AWS_ACCESS_KEY_ID={s3_env['AWS_ACCESS_KEY_ID']}",
                    f"--from-literal=AWS_SECRET_ACCESS_KEY={s3_env['AWS_SECRET_ACCESS_KEY']}")
    # a static volume for Prefect's SQLite, owned by the image's user (the pods never run as root)
    host_dir.mkdir(mode=0o770)
    os.chown(host_dir, 10001, 10001)
    cluster.apply({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": storage_class},
                   "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                            "persistentVolumeReclaimPolicy": "Retain", "storageClassName": storage_class,
                            "hostPath": {"path": str(host_dir), "type": "Directory"}}})
    args = _set_args(runner_image, storage_class, cluster.s3["S3_ENDPOINT_URL_IN_CLUSTER"])
    info = {"ns": ns, "args": args, "installed": True}
    try:
        cluster.helm("install", RELEASE, str(CHART), "-n", ns, *args, "--wait", "--timeout", "5m", timeout=330)
        yield info
    finally:
        # the operator removes its finalizers while it runs; after an uninstall nothing would, so drop them
        for name in cluster.kubectl("get", "mous", "-n", ns, "-o", "name", check=False).split():
            cluster.kubectl("patch", name, "-n", ns, "--type", "merge", "-p", '{"metadata":{"finalizers":null}}',
                            check=False)
        if info["installed"]:
            try:
                cluster.helm("uninstall", RELEASE, "-n", ns, "--wait", "--timeout", "2m", timeout=150)
            except AssertionError as exc:  # the namespace goes anyway
                print(exc)
        cluster.kubectl("delete", "namespace", ns, "--wait=true", "--timeout=120s", check=False, timeout=150)
        cluster.kubectl("delete", "pv", storage_class, "--wait=false", check=False)
        shutil.rmtree(host_dir, ignore_errors=True)


def test_install_runs_locked_down_and_healthy(cluster, release):
    ns = release["ns"]
    labels = cluster.get("namespace", ns)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    for component in ("operator", "prefect-server"):
        pods = pods_of(cluster, ns, component)
        assert len(pods) == 1, component
        spec, st = pods[0]["spec"], pods[0]["status"]
        assert all(c["ready"] for c in st["containerStatuses"]), (component, st)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert not pods_of(cluster, ns, "minio")  # the external S3 Secret turned the chart's MinIO off
    # Prefect's SQLite on the claim bound to our volume
    pvc = cluster.get("pvc", f"{RELEASE}-mousflow-prefect", ns)
    assert pvc["status"]["phase"] == "Bound"
    # the operator's Prometheus endpoint behind the metrics Service, and kopf's health endpoint
    metrics = cluster.kubectl("get", "--raw",
                              f"/api/v1/namespaces/{ns}/services/{RELEASE}-mousflow-metrics:metrics/proxy/metrics")
    assert "mousflow_flow_runs_active 0.0" in metrics and 'mousflow_mous{phase="Delivered"}' in metrics
    operator_pod = pods_of(cluster, ns, "operator")[0]["metadata"]["name"]
    health = cluster.kubectl("get", "--raw", f"/api/v1/namespaces/{ns}/pods/{operator_pod}:8080/proxy/healthz")
    assert json.loads(health) == {}
    # the operator's service account can do what it needs and nothing cluster-wide
    sa = f"system:serviceaccount:{ns}:{RELEASE}-mousflow-operator"

    def can(*args):
        return cluster.kubectl("auth", "can-i", "--as", sa, *args, check=False).strip()
    assert can("create", "jobs.batch", "-n", ns) == "yes"
    assert can("patch", "mouses.mousflow.io", "--subresource=status", "-n", ns) == "yes"
    assert can("get", "secrets", "-n", ns) == "no"
    assert can("delete", "jobs.batch", "-n", ns) == "no"
    assert can("list", "mouses.mousflow.io", "-n", "default") == "no"
    # a namespace object is addressed inside itself: a real request shows the Role reaches this one only
    # (`auth can-i` cannot express that)
    assert cluster.kubectl("get", "namespace", ns, "--as", sa, "-o", "name").strip() == f"namespace/{ns}"
    with pytest.raises(AssertionError, match="forbidden"):
        cluster.kubectl("get", "namespace", "default", "--as", sa)


def test_tiny_mous_goes_from_apply_to_delivered(cluster, release, sim):
    ns = release["ns"]
    doc = apply_mous(cluster, ns, sim, "helm-a", "a1")
    status = wait_delivered(cluster, ns, "helm-a", OPERATOR)
    assert status["qa2"]["verdict"] == "Pass"
    assert all(status["stages"][s]["state"] == "Succeeded" for s in ("calibration", "imaging", "packaging"))
    assert_delivered_products(doc)
    # the stage pods ran under the restricted profile (the namespace admits nothing else), from the chart's image
    assert sorted(jobs_by_stage(cluster, ns, doc["spec"]["uid"])) == ["calibration", "imaging", "packaging"]
    # the flow run was recorded by the chart's Prefect server
    assert status.get("flowRunId")
    metrics = cluster.kubectl("get", "--raw",
                              f"/api/v1/namespaces/{ns}/services/{RELEASE}-mousflow-metrics:metrics/proxy/metrics")
    assert 'mousflow_mous{phase="Delivered"} 1.0' in metrics, metrics
    _assert_rbac_was_enough(cluster, ns)


def _assert_rbac_was_enough(cluster, ns) -> None:
    """Least privilege, but enough: the operator never hit a refusal (kopf logs these and carries on)."""
    log = cluster.kubectl("logs", "-n", ns, f"deployment/{RELEASE}-mousflow-operator", "--tail=-1")
    for refusal in ("Forbidden", "forbidden", "Not enough permissions", "Failed to post an event"):
        assert refusal not in log, [line for line in log.splitlines() if refusal in line][:5]


def test_upgrade_with_a_mous_in_flight_lets_it_finish(cluster, release, sim):
    ns = release["ns"]
    doc = apply_mous(cluster, ns, sim, "helm-b", "b2")
    uid = doc["spec"]["uid"]
    cluster.wait_until("the calibration Job of helm-b", lambda: "calibration" in jobs_by_stage(cluster, ns, uid),
                       timeout=180)
    old_pod = pods_of(cluster, ns, "operator")[0]["metadata"]["uid"]
    before = cluster.get("mous", "helm-b", ns)["status"]
    assert before["phase"] == "Processing", before
    assert (before.get("stages", {}).get("packaging") or {}).get("state") != "Succeeded"
    # a changed operator setting rolls the operator (Recreate: the old pod goes before the new one starts)
    cluster.helm("upgrade", RELEASE, str(CHART), "-n", ns, *release["args"], "--set", "operator.maxProcessing=3",
                 "--wait", "--timeout", "5m", timeout=330)
    new_pods = pods_of(cluster, ns, "operator")
    assert [p["metadata"]["uid"] for p in new_pods] != [old_pod]
    env = {e["name"]: e.get("value") for e in new_pods[0]["spec"]["containers"][0]["env"]}
    assert env["MOUSFLOW_MAX_PROCESSING"] == "3"
    status = wait_delivered(cluster, ns, "helm-b", OPERATOR)
    assert status["qa2"]["verdict"] == "Pass"
    assert_delivered_products(doc)
    # the new operator adopted the running work: still one Job per stage, none started twice
    assert {s: len(j) for s, j in jobs_by_stage(cluster, ns, uid).items()} == \
        {"calibration": 1, "imaging": 1, "packaging": 1}
    _assert_rbac_was_enough(cluster, ns)


def test_uninstall_leaves_delivered_data_in_place(cluster, release, sim):
    ns = release["ns"]
    # as the README says, nothing before it: the chart's pre-delete hook stops the operator while its Role exists
    cluster.helm("uninstall", RELEASE, "-n", ns, "--wait", "--timeout", "4m", timeout=270)
    release["installed"] = False
    cluster.wait_until("the operator and Prefect pods to go", lambda: not pods_of(cluster, ns, "operator")
                       and not pods_of(cluster, ns, "prefect-server"), timeout=120)
    for name in ("helm-a", "helm-b"):
        assert_delivered_products({"spec": {"delivery": {"uri": f"{sim}/delivered/{name}"}}})
        mous = cluster.get("mous", name, ns)
        assert mous["status"]["phase"] == "Delivered"  # the CRD (crds/) and the MOUSs stay
        # the stopped operator (or the hook) took its finalizer off: the MOUS can still be deleted without it
        assert "mousflow.io/finalizer" not in (mous["metadata"].get("finalizers") or [])
    assert Location(f"{sim}/runs/helm-a/products/manifest.json").exists()
    # Prefect's flow-run history is kept too (helm.sh/resource-policy: keep)
    assert cluster.get("pvc", f"{RELEASE}-mousflow-prefect", ns)["status"]["phase"] == "Bound"
    assert cluster.get("crd", "mouses.mousflow.io")


@pytest.fixture(scope="module")
def minio_image(cluster) -> str:
    """The test bed's MinIO image (containers/minio), built and imported if this cluster predates it."""
    repo_root = Path(__file__).resolve().parents[2]
    if os.geteuid() == 0:
        proc = subprocess.run([str(repo_root / "hack" / "testbed" / "images.sh"), "minio", "import"],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
    for line in (repo_root / "hack" / "testbed" / "versions.env").read_text().splitlines():
        if line.startswith("MINIO_IMAGE="):
            return line.split("=", 1)[1]
    raise AssertionError("MINIO_IMAGE missing from hack/testbed/versions.env")


def test_the_charts_own_minio_with_generated_credentials(cluster, runner_image, minio_image):
    """The default S3 path: the chart's MinIO (restricted pod), a generated key kept across upgrades, buckets
    made by the post-install hook, and the operator wired to it."""
    ns = f"helm-minio-{SUFFIX}"
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {
        "pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}}})
    repository, tag = runner_image.rsplit(":", 1)
    minio_repository, minio_tag = minio_image.rsplit(":", 1)
    args = ["--set", f"image.repository={repository}", "--set", f"image.tag={tag}", "--set", "image.pullPolicy=Never",
            "--set", f"minio.image.repository={minio_repository}", "--set", f"minio.image.tag={minio_tag}",
            "--set", "minio.image.pullPolicy=Never", "--set", "minio.persistence.enabled=false",
            "--set", "minio.buckets={mousflow,alma-products}",
            "--set", "prefect.database.sqlite.persistence.enabled=false", "--set", "prefect.ui=false"]
    try:
        # --wait, and the post-install hook (bucket creation) must succeed for install to return
        cluster.helm("install", "mm", str(CHART), "-n", ns, *args, "--wait", "--timeout", "5m", timeout=330)
        secret = cluster.get("secret", "mm-mousflow-s3", ns)["data"]
        assert len(secret["AWS_SECRET_ACCESS_KEY"]) > 40  # 32 random characters, base64
        minio = pods_of(cluster, ns, "minio")
        assert len(minio) == 1 and minio[0]["status"]["containerStatuses"][0]["ready"]
        code = ("import os, s3fs; fs = s3fs.S3FileSystem(client_kwargs={'endpoint_url': "
                "os.environ['MOUSFLOW_S3_ENDPOINT']}); fs.pipe('mousflow/probe', b'ok'); "
                "print(sorted(b.rstrip('/') for b in fs.ls('')), fs.cat('mousflow/probe').decode())")
        out = cluster.kubectl("exec", "-n", ns, "deploy/mm-mousflow-operator", "--", "python", "-c", code)
        assert out.strip() == "['alma-products', 'mousflow'] ok", out
        cluster.helm("upgrade", "mm", str(CHART), "-n", ns, *args, "--wait", "--timeout", "5m", timeout=330)
        assert cluster.get("secret", "mm-mousflow-s3", ns)["data"] == secret  # the generated key survives
    finally:
        try:
            cluster.helm("uninstall", "mm", "-n", ns, "--wait", "--timeout", "2m", timeout=150)
        except AssertionError as exc:
            print(exc)
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
