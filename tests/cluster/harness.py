"""Helpers of the cluster tests that drive MOUSs and the operator (imported by conftest and the test modules;
a module of its own because two conftest.py files cannot both be imported by name)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

CHART = Path(__file__).resolve().parents[2] / "helm" / "mousflow"
DASK_RELEASE = "imaging-dask"
"""The release name the chart's Dask objects are rendered with when a test applies them without the chart."""
DASK_IMAGING_ACCOUNT = "mousflow-imaging"
"""The chart's imaging service account (dask.serviceAccount's default)."""


def make_bucket(s3_env: dict[str, str], prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    code = ("import s3fs, os; s3fs.S3FileSystem(client_kwargs={'endpoint_url': os.environ['MOUSFLOW_S3_ENDPOINT']})"
            f".mkdir({name!r})")
    subprocess.run([sys.executable, "-c", code], env={**os.environ, **s3_env}, check=True, timeout=60)
    return name


def simulate_into(s3_env: dict[str, str], preset: str, out: str, timeout: float = 900) -> str:
    """`mousflow simulate --preset PRESET --out OUT` into the test bed's MinIO, as a user runs it; returns OUT."""
    proc = subprocess.run([sys.executable, "-m", "mousflow.cli", "simulate", "--preset", preset, "--out", out],
                          env={**os.environ, **s3_env}, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return out


def create_mous_namespace(cluster, s3_env: dict[str, str], prefix: str) -> str:
    """A namespace for MOUSs: the CRD established, the default service account there and the S3 Secret that
    stage pods read their credentials from."""
    from mousflow_operator.crd import all_crds_text

    cluster.kubectl("apply", "-f", "-", input=all_crds_text())
    for crd in ("mouses.mousflow.io", "mouscampaigns.mousflow.io"):
        cluster.wait_until(f"the CRD {crd} to be established", lambda crd=crd: "True" in cluster.kubectl(
            "get", "crd", crd, "-o", "jsonpath={.status.conditions[?(@.type=='Established')].status}"))
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    cluster.wait_until("the default service account", lambda: cluster.kubectl(
        "get", "serviceaccount", "default", "-n", name, check=False).strip(), timeout=60)
    cluster.kubectl("create", "secret", "generic", "mousflow-s3", "-n", name,
                    f"--from-literal=AWS_ACCESS_KEY_ID={s3_env['AWS_ACCESS_KEY_ID']}",
                    f"--from-literal=AWS_SECRET_ACCESS_KEY={s3_env['AWS_SECRET_ACCESS_KEY']}")
    return name


def apply_dask_crds(cluster) -> None:
    """The chart's copy of the dask-kubernetes CRDs (server-side: they are too big for kubectl's
    last-applied annotation; another test's `helm install` may have created them already)."""
    for crd in sorted((CHART / "charts" / "dask-kubernetes-crds" / "crds").glob("*.yaml")):
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))


def chart_dask_objects(cluster, namespace: str, runner_image: str) -> str:
    """The chart's Dask controller (Deployment, its account and Role) and imaging account (with its Role) for a
    release in `namespace` watching only that namespace, as `helm template` renders them."""
    repository, tag = runner_image.rsplit(":", 1)
    return cluster.helm("template", DASK_RELEASE, str(CHART), "-n", namespace,
                        "--show-only", "templates/dask-controller.yaml", "--show-only", "templates/dask-imaging.yaml",
                        "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
                        "--set", "image.pullPolicy=Never", "--set", "s3.existingSecret=mousflow-s3")


def install_chart_dask_objects(cluster, namespace: str, runner_image: str) -> str:
    """The chart's Dask controller running in `namespace` (watching it) and its imaging account there; the
    controller's Deployment name."""
    apply_dask_crds(cluster)
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=chart_dask_objects(cluster, namespace, runner_image))
    controller = f"{DASK_RELEASE}-mousflow-dask-controller"
    cluster.kubectl("rollout", "status", f"deployment/{controller}", "-n", namespace, "--timeout=180s", timeout=200)
    return controller


def release_dask_finalizers(cluster, namespace: str) -> None:
    """Before a namespace with the Dask controller goes: the controller takes kopf's finalizer off the Dask
    objects it is done with, but deleting the namespace takes the controller away too, and an object it had not
    finished with (seen: the DaskAutoscaler of a deleted stage Job's cluster, marked for deletion with its
    finalizer still on) would keep the namespace Terminating for ever. Take those finalizers off first, as the
    chart's uninstall hook does."""
    for kind in ("daskautoscalers", "daskclusters", "daskworkergroups", "daskjobs"):
        for name in cluster.kubectl("get", f"{kind}.kubernetes.dask.org", "-n", namespace, "-o", "name",
                                    check=False).split():
            cluster.kubectl("patch", name, "-n", namespace, "--type", "merge", "-p",
                            '{"metadata":{"finalizers":null}}', check=False)


class OperatorProcess:
    """The operator as a local process (`python -m mousflow_operator`) against the test bed: started, killed
    (SIGKILL, as a crash) or stopped (SIGTERM, as a Deployment's pod is) at will."""

    def __init__(self, cluster, env: dict[str, str], log_path: Path):
        self.cluster, self.env, self.log_path = cluster, env, log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> OperatorProcess:
        assert self.proc is None or self.proc.poll() is not None, "the operator is already running"
        with open(self.log_path, "a") as log:
            log.write(f"\n===== operator start {time.strftime('%H:%M:%S')}\n")
            log.flush()
            self.proc = subprocess.Popen([sys.executable, "-m", "mousflow_operator"], env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM and wait: kopf runs its cleanup handlers on the way out."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no operator log)"


def operator_env(cluster, s3_env: dict[str, str], prefect_api_url: str, namespace: str, runner_image: str,
                 **overrides: str) -> dict[str, str]:
    env = {**os.environ, **s3_env, "KUBECONFIG": cluster.kubeconfig, "PREFECT_API_URL": prefect_api_url,
           "MOUSFLOW_NAMESPACES": namespace, "MOUSFLOW_RUNNER_IMAGE": runner_image,
           "MOUSFLOW_IMAGE_PULL_POLICY": "Never", "MOUSFLOW_S3_SECRET": "mousflow-s3",
           "MOUSFLOW_S3_ENDPOINT_IN_CLUSTER": cluster.s3["S3_ENDPOINT_URL_IN_CLUSTER"],
           "MOUSFLOW_MAX_PROCESSING": "2", "PYTHONUNBUFFERED": "1"}
    env.update(overrides)
    return env


def namespace_report(cluster, namespace: str, *, log_selector: str | None = None) -> str:
    """What a person would look at when pods do not appear: the workload objects, the namespace's events
    (FailedCreate, evictions, scheduling) and the last log lines of the selected pods."""
    parts = [cluster.kubectl("get", "deployments,replicasets,jobs,pods", "-n", namespace, "-o", "wide",
                             check=False),
             cluster.kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False)]
    if log_selector:
        parts.append(cluster.kubectl("logs", "-n", namespace, "-l", log_selector, "--tail=40",
                                     "--all-containers", "--prefix", check=False))
    return "\n".join(p.strip() for p in parts if p.strip())



def wait_for_phase(cluster, operator: OperatorProcess, namespace: str, name: str, phases: tuple[str, ...],
                   timeout: float, until=lambda mous: True) -> dict:
    """Wait until MOUS `name` is in one of `phases` (and `until(mous)` holds); its status. A timeout fails with
    the operator's log, where the reason usually is."""
    def reached():
        mous = cluster.get("mous", name, namespace)
        return (mous.get("status") or {}).get("phase") in phases and until(mous) and mous["status"]
    try:
        return cluster.wait_until(f"MOUS {name} in phase {' or '.join(phases)}", reached, timeout=timeout, interval=3)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\noperator log:\n{operator.log_tail()}") from None


# ---------------------------------------------------------------- MOUSs driven by an operator in the cluster
def pods_of(cluster, namespace: str, component: str) -> list[dict]:
    """The pods of one component of a chart release (app.kubernetes.io/component)."""
    return json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-l",
                                      f"app.kubernetes.io/component={component}", "-o", "json"))["items"]


def mous_phase(cluster, namespace: str, name: str) -> str:
    return (cluster.get("mous", name, namespace).get("status") or {}).get("phase", "")


def apply_mous(cluster, namespace: str, sim: str, name: str, uid_suffix: str, **spec: dict) -> dict:
    """Apply the simulated MOUS at `sim` as `name`, with an archive uid of its own (stage Job names derive from
    it), its outputs under sim/runs/name, automatic delivery to sim/delivered/name, and `spec` keys replaced."""
    import yaml

    from mousflow.storage.location import Location

    doc = yaml.safe_load(Location(f"{sim}/mous.yaml").read_text())
    doc["metadata"] = {"name": name}
    doc["spec"]["uid"] = re.sub(r"/X[0-9a-fA-F]+$", f"/X{uid_suffix}", doc["spec"]["uid"])
    doc["spec"]["output"]["uri"] = f"{sim}/runs/{name}"
    doc["spec"]["delivery"] = {"uri": f"{sim}/delivered/{name}", "automatic": True}
    doc["spec"].update(spec)
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))
    return doc


def wait_delivered(cluster, namespace: str, name: str, operator_deployment: str, timeout: float = 900) -> dict:
    """Wait for the MOUS to be Delivered (failing at once if it Failed); its status."""
    def operator_log() -> str:
        return cluster.kubectl("logs", "-n", namespace, f"deployment/{operator_deployment}", "--tail=40",
                               check=False)

    try:
        cluster.wait_until(f"MOUS {name} Delivered",
                           lambda: mous_phase(cluster, namespace, name) in ("Delivered", "Failed"),
                           timeout=timeout, interval=3)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\noperator log:\n{operator_log()}") from None
    status = cluster.get("mous", name, namespace)["status"]
    assert status["phase"] == "Delivered", (status, operator_log())
    return status


def assert_delivered_products(doc: dict) -> None:
    from mousflow.storage.location import Location

    delivered = Location(doc["spec"]["delivery"]["uri"])
    manifest = delivered.join("manifest.json").read_json()
    assert manifest["qa2"] == "Pass" and any(p["name"].endswith(".fits") for p in manifest["products"])
    assert all(delivered.join(p["name"]).exists() for p in manifest["products"])


def stage_jobs(cluster, namespace: str, uid: str) -> dict[str, list[dict]]:
    """The stage Jobs of the MOUS with archive uid `uid`, by stage, in the order of their names (attempts)."""
    out: dict[str, list[dict]] = {}
    for job in json.loads(cluster.kubectl("get", "jobs", "-n", namespace, "-o", "json"))["items"]:
        if job["metadata"].get("annotations", {}).get("mousflow.io/uid") == uid and \
                "mousflow.io/stage" in job["metadata"].get("labels", {}):  # not a flow-run Job
            out.setdefault(job["metadata"]["labels"]["mousflow.io/stage"], []).append(job)
    return {stage: sorted(jobs, key=lambda j: j["metadata"]["name"]) for stage, jobs in out.items()}


def jobs_by_stage(cluster, namespace: str, uid: str) -> dict[str, list[str]]:
    return {stage: [j["metadata"]["name"] for j in jobs] for stage, jobs in stage_jobs(cluster, namespace, uid).items()}


def assert_dask_rbac_was_enough(cluster, namespace: str, controller: str) -> None:
    """Least privilege, but enough: the chart's Dask controller never hit a refusal (kopf logs and retries)."""
    log = cluster.kubectl("logs", "-n", namespace, f"deployment/{controller}", "--tail=-1")
    for refusal in ("Forbidden", "forbidden", "Not enough permissions"):
        assert refusal not in log, [line for line in log.splitlines() if refusal in line][:5]
