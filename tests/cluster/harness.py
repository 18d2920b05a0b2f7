"""Helpers of the cluster tests that drive MOUSs and the operator (imported by conftest and the test modules;
a module of its own because two conftest.py files cannot both be imported by name)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path


def make_bucket(s3_env: dict[str, str], prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    code = ("import s3fs, os; s3fs.S3FileSystem(client_kwargs={'endpoint_url': os.environ['MOUSFLOW_S3_ENDPOINT']})"
            f".mkdir({name!r})")
    subprocess.run([sys.executable, "-c", code], env={**os.environ, **s3_env}, check=True, timeout=60)
    return name


def create_mous_namespace(cluster, s3_env: dict[str, str], prefix: str) -> str:
    """A namespace for MOUSs: the CRD established, the default service account there and the S3 Secret that
    stage pods read their credentials from."""
    from mousflow_operator.crd import crd_text

    cluster.kubectl("apply", "-f", "-", input=crd_text())
    cluster.wait_until("the MOUS CRD to be established", lambda: "True" in cluster.kubectl(
        "get", "crd", "mouses.mousflow.io", "-o", "jsonpath={.status.conditions[?(@.type=='Established')].status}"))
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    cluster.wait_until("the default service account", lambda: cluster.kubectl(
        "get", "serviceaccount", "default", "-n", name, check=False).strip(), timeout=60)
    cluster.kubectl("create", "secret", "generic", "mousflow-s3", "-n", name,
                    f"--from-literal=AWS_ACCESS_KEY_ID={s3_env['AWS_ACCESS_KEY_ID']}",
                    f"--from-literal=AWS_SECRET_ACCESS_KEY={s3_env['AWS_SECRET_ACCESS_KEY']}")
    return name


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
           "MOUSFLOW_TICK_SECONDS": "2", "MOUSFLOW_MAX_PROCESSING": "2", "PYTHONUNBUFFERED": "1"}
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
