"""Smoke tests proving the test cluster is real: real pods from locally built images, cluster DNS and
Services reaching a real S3 (MinIO), a CRD with a status subresource, the kernel's OOM killer seen in
pod status, and the Job controller replacing a deleted pod."""

from __future__ import annotations

import base64
import json
import os
import urllib.parse
import urllib.request
import uuid
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Cluster

pytestmark = pytest.mark.cluster


def _pod(name: str, image: str, code: str, *, memory_limit: str = "128Mi", restart: str = "Never") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "testbed-smoke"}},
        "spec": {
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    # Never pull: the image must come from the node's own image store.
                    "imagePullPolicy": "Never",
                    "command": ["python3", "-c", code],
                    "resources": {"requests": {"memory": "16Mi", "cpu": "10m"}, "limits": {"memory": memory_limit}},
                }
            ],
        },
    }


def _job(name: str, image: str, code: str, *, backoff: int = 0) -> dict:
    pod = _pod(name, image, code)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff,
            "ttlSecondsAfterFinished": 600,
            "template": {"metadata": {"labels": {"job-name": name}}, "spec": pod["spec"]},
        },
    }


def _terminated(cluster: Cluster, name: str, namespace: str) -> dict | None:
    pod = cluster.get("pod", name, namespace)
    for status in pod.get("status", {}).get("containerStatuses", []):
        term = status.get("state", {}).get("terminated")
        if term:
            return term
    return None


def test_job_from_local_image_runs_to_completion_and_logs_are_readable(
    cluster: Cluster, namespace: str, test_image: str
):
    marker = f"hello-from-{uuid.uuid4().hex[:6]}"
    code = f"import sys, platform; print('{marker}', platform.python_version(), sys.platform)"
    cluster.apply(_job("hello", test_image, code), namespace)
    cluster.wait_until(
        "job/hello to complete",
        lambda: any(
            c["type"] == "Complete" and c["status"] == "True"
            for c in cluster.get("job", "hello", namespace).get("status", {}).get("conditions", [])
        ),
        timeout=180,
    )
    logs = cluster.kubectl("logs", "-n", namespace, "job/hello")
    assert marker in logs
    assert "3.11" in logs
    job = cluster.get("job", "hello", namespace)
    assert job["status"]["succeeded"] == 1


def test_pod_reaches_minio_through_service_name(cluster: Cluster, namespace: str, test_image: str, presign_s3_url):
    secret = cluster.get("secret", "minio-credentials", "mousflow-system")
    creds = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    in_cluster = creds["S3_ENDPOINT_URL"]
    assert ".svc." in in_cluster, in_cluster
    host_endpoint = os.environ.get("S3_ENDPOINT_URL") or cluster.s3.get("S3_ENDPOINT_URL")
    assert host_endpoint, "no host-side S3 endpoint (set S3_ENDPOINT_URL for a cluster other than the local test bed)"

    # From the host: create a bucket and an object in the real S3.
    bucket, key = f"smoke-{uuid.uuid4().hex[:8]}", "greeting.txt"
    body = f"object written by the host at {uuid.uuid4()}".encode()
    ak, sk = creds["AWS_ACCESS_KEY_ID"], creds["AWS_SECRET_ACCESS_KEY"]
    for url, data in ((f"{host_endpoint}/{bucket}", b""), (f"{host_endpoint}/{bucket}/{key}", body)):
        req = urllib.request.Request(presign_s3_url("PUT", url, ak, sk), data=data, method="PUT")
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 200

    # From a pod: read it back through the Service's DNS name (the signature covers that host name).
    get_url = presign_s3_url("GET", f"{in_cluster}/{bucket}/{key}", ak, sk)
    code = (
        "import socket, urllib.request, sys\n"
        f"host = {urllib.parse.urlsplit(in_cluster).hostname!r}\n"
        "print('resolved', host, socket.gethostbyname(host))\n"
        f"print('BODY', urllib.request.urlopen({get_url!r}, timeout=20).read().decode())\n"
    )
    cluster.apply(_pod("s3-reader", test_image, code), namespace)
    term = cluster.wait_until(
        "pod/s3-reader to finish", lambda: _terminated(cluster, "s3-reader", namespace), timeout=120
    )
    logs = cluster.kubectl("logs", "-n", namespace, "s3-reader")
    assert term["exitCode"] == 0, logs
    assert f"BODY {body.decode()}" in logs
    svc_ip = cluster.get("service", "minio", "mousflow-system")["spec"]["clusterIP"]
    assert f"resolved {urllib.parse.urlsplit(in_cluster).hostname} {svc_ip}" in logs


def test_crd_with_status_subresource_round_trips(cluster: Cluster, namespace: str):
    group, plural = "smoke.testbed.mousflow.local", "widgets"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
                                "status": {
                                    "type": "object",
                                    "properties": {"phase": {"type": "string"}, "observedSize": {"type": "integer"}},
                                },
                            },
                        }
                    },
                }
            ],
        },
    }
    cluster.apply(crd)
    try:
        cluster.wait_until(
            "the CRD to be established",
            lambda: any(
                c["type"] == "Established" and c["status"] == "True"
                for c in cluster.get("crd", f"{plural}.{group}").get("status", {}).get("conditions", [])
            ),
            timeout=60,
        )
        resource = f"{plural}.{group}"
        cr = {
            "apiVersion": f"{group}/v1",
            "kind": "Widget",
            "metadata": {"name": "w1"},
            "spec": {"size": 3},
            "status": {"phase": "ignored-on-create"},
        }
        cluster.wait_until(
            "the Widget to be created",
            lambda: cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(cr), check=False) or True,
            timeout=30,
        )
        got = cluster.wait_until("the Widget", lambda: cluster.get(resource, "w1", namespace), timeout=30)
        assert got["spec"] == {"size": 3}
        assert "status" not in got or got["status"] in ({}, None), "status must be ignored on the main resource"

        cluster.kubectl(
            "patch",
            resource,
            "w1",
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": {"phase": "Ready", "observedSize": 3}}),
        )
        # A spec change through the main resource leaves the status alone, and vice versa.
        cluster.kubectl(
            "patch",
            resource,
            "w1",
            "-n",
            namespace,
            "--type=merge",
            "-p",
            json.dumps({"spec": {"size": 5}, "status": {"phase": "Hacked"}}),
        )
        got = cluster.get(resource, "w1", namespace)
        assert got["spec"] == {"size": 5}
        assert got["status"] == {"phase": "Ready", "observedSize": 3}
        assert got["metadata"]["generation"] == 2
    finally:
        cluster.kubectl("delete", "crd", f"{plural}.{group}", "--wait=false", check=False)


def test_pod_over_memory_limit_is_oomkilled_and_status_shows_it(cluster: Cluster, namespace: str, test_image: str):
    # Allocate and touch 256 MiB under a 48 MiB limit: the memory cgroup's OOM killer ends it.
    code = "b = bytearray(256 * 1024 * 1024)\nfor i in range(0, len(b), 4096): b[i] = 1\nprint('survived')"
    cluster.apply(_pod("oom", test_image, code, memory_limit="48Mi"), namespace)
    pod = cluster.wait_until(
        "pod/oom to fail",
        lambda: (p := cluster.get("pod", "oom", namespace))["status"].get("phase") == "Failed" and p,
        timeout=120,
    )
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["reason"] == "OOMKilled", term
    assert term["exitCode"] == 137, term
    assert "survived" not in cluster.kubectl("logs", "-n", namespace, "oom")
    assert pod["spec"]["containers"][0]["resources"]["limits"]["memory"] == "48Mi"


def test_job_controller_replaces_a_deleted_running_pod(cluster: Cluster, namespace: str, test_image: str):
    cluster.apply(_job("sleeper", test_image, "import time; time.sleep(600)", backoff=3), namespace)

    def running_pods() -> list[dict]:
        pods = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-l", "job-name=sleeper", "-o", "json"))[
            "items"
        ]
        return [p for p in pods if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]

    first = cluster.wait_until("a running pod of job/sleeper", running_pods, timeout=120)[0]
    first_uid = first["metadata"]["uid"]
    cluster.kubectl("delete", "pod", first["metadata"]["name"], "-n", namespace, "--wait=false")
    second = cluster.wait_until(
        "a replacement pod of job/sleeper",
        lambda: [p for p in running_pods() if p["metadata"]["uid"] != first_uid],
        timeout=120,
    )[0]
    assert second["metadata"]["name"] != first["metadata"]["name"]
    owner = second["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "Job" and owner["name"] == "sleeper"
    cluster.kubectl("delete", "job", "sleeper", "-n", namespace, "--wait=false", check=False)


def test_runner_image_runs_the_project(cluster: Cluster, namespace: str, runner_image: str):
    """The image built from containers/runner/Dockerfile (no registry) runs the installed project."""
    code = (
        "import os, mousflow, mousflow_operator, kopf, prefect\n"
        "print('runner-ok', os.getuid(), mousflow.__name__, mousflow_operator.__name__, prefect.__version__)\n"
    )
    cluster.apply(_pod("runner", runner_image, code, memory_limit="512Mi"), namespace)
    pod = cluster.wait_until(
        "pod/runner to finish",
        lambda: (p := cluster.get("pod", "runner", namespace))["status"].get("phase") in ("Succeeded", "Failed") and p,
        timeout=180,
    )
    logs = cluster.kubectl("logs", "-n", namespace, "runner")
    assert pod["status"]["phase"] == "Succeeded", logs
    assert "runner-ok 10001 mousflow mousflow_operator" in logs


def test_helm_installs_a_chart_whose_hook_job_runs(cluster: Cluster, namespace: str, test_image: str, tmp_path):
    """Helm (built from the module proxy) renders against the real API server and waits for a Job."""
    chart = tmp_path / "smoke"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: smoke\nversion: 0.1.0\nkubeVersion: '>=1.30.0-0'\n")
    (chart / "values.yaml").write_text(f"image: {test_image}\nmessage: hello-from-helm\n")
    job = _job("helm-smoke", "IMAGE", "print('MESSAGE')")
    rendered = (
        json.dumps(job).replace('"IMAGE"', "{{ .Values.image | quote }}").replace("MESSAGE", "{{ .Values.message }}")
    )
    (chart / "templates" / "job.yaml").write_text(rendered + "\n")
    out = cluster.helm("install", "smoke", str(chart), "-n", namespace, "--wait", "--wait-for-jobs", "--timeout", "3m")
    assert "STATUS: deployed" in out
    assert "hello-from-helm" in cluster.kubectl("logs", "-n", namespace, "job/helm-smoke")
    assert cluster.helm("list", "-n", namespace, "-q").split() == ["smoke"]
    cluster.helm("uninstall", "smoke", "-n", namespace, "--wait")
