"""How a stage is started: always through the `mousflow stage` entry point, in a local process or a pod.

The flow does not care where a stage runs; it gets back the StageOutcome the stage wrote to
<output>/status/<stage>.json. A stage that died without writing one (killed, out of memory) is reported as
Failed with the reason the launcher saw.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Protocol

from mousflow.stages.context import StageOutcome
from mousflow.stages.runner import status_location
from mousflow.storage.location import Location

LineFn = Callable[[str], None]


class StageLauncher(Protocol):
    def launch(self, stage: str, manifest_uri: str, run_root: Location, on_line: LineFn) -> StageOutcome: ...


class LocalProcessLauncher:
    """Runs `python -m mousflow.cli stage ...` as a child process, streaming its output line by line."""

    def __init__(self, threads: int = 1, env: dict[str, str] | None = None):
        self.threads = threads
        self.env = env

    def launch(self, stage: str, manifest_uri: str, run_root: Location, on_line: LineFn) -> StageOutcome:
        status = status_location(run_root, stage)
        status.remove()  # a stale status from an earlier run must not pass for this one's
        cmd = [sys.executable, "-m", "mousflow.cli", "stage", stage, "--manifest", manifest_uri,
               "--threads", str(self.threads)]
        env = {**os.environ, **(self.env or {}), "PYTHONUNBUFFERED": "1"}
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                on_line(line.rstrip("\n"))
            code = proc.wait()
        if status.exists():
            doc = status.read_json()
            return StageOutcome(doc["stage"], doc["state"], doc.get("reason", ""), doc.get("message", ""),
                                doc.get("metrics", {}))
        how = f"killed by signal {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        return StageOutcome(stage, "Failed", "Killed" if code < 0 else "Error", f"stage process {how} "
                            "without reporting an outcome")


def kubernetes_launcher_kind(namespace: str, attempt: int = 1, owner: tuple[str, str] | None = None) -> str:
    """The launcher kind string of stage Jobs in `namespace` whose Job names start at `attempt`, owned by the
    MOUS `owner` = (name, uid) if given."""
    kind = f"kubernetes?namespace={namespace}&attempt={attempt}"
    return kind + (f"&owner_name={owner[0]}&owner_uid={owner[1]}" if owner else "")


def _kubernetes_launcher(kind: str, threads: int) -> StageLauncher:
    """Stage Jobs configured from the environment of the process running the flow (the operator): runner image,
    S3 Secret and in-cluster endpoint (MOUSFLOW_RUNNER_IMAGE, MOUSFLOW_S3_SECRET, MOUSFLOW_S3_ENDPOINT_IN_CLUSTER,
    MOUSFLOW_IMAGE_PULL_POLICY; for Dask worker pods MOUSFLOW_DASK_SERVICE_ACCOUNT, MOUSFLOW_DASK_MIN_WORKERS,
    MOUSFLOW_DASK_MAX_WORKERS, MOUSFLOW_DASK_WORKER_CPU); the kind string names only the namespace and the
    first attempt number.
    Resources come from the MOUS's data (`demand_of`), read when a stage is launched, refined by the history
    of measured peaks when MOUSFLOW_HISTORY names one (pipeline.history)."""
    from urllib.parse import parse_qs, urlsplit

    from mousflow.model import load_manifest
    from mousflow.pipeline.demand import demand_of
    from mousflow.pipeline.history import History
    from mousflow.pipeline.kubernetes import JobSettings, KubernetesJobLauncher
    from mousflow.pipeline.resources import estimate_stage_resources, parse_memory

    query = {k: v[-1] for k, v in parse_qs(urlsplit(kind).query).items()}
    settings = JobSettings(
        namespace=query.get("namespace") or os.environ.get("MOUSFLOW_JOB_NAMESPACE", "default"),
        image=os.environ.get("MOUSFLOW_RUNNER_IMAGE", "mousflow-runner:dev"),
        s3_secret=os.environ.get("MOUSFLOW_S3_SECRET", "mousflow-s3"),
        s3_endpoint=os.environ.get("MOUSFLOW_S3_ENDPOINT_IN_CLUSTER") or None,
        image_pull_policy=os.environ.get("MOUSFLOW_IMAGE_PULL_POLICY", "IfNotPresent"),
        owner=(query["owner_name"], query["owner_uid"]) if query.get("owner_uid") else None,
        dask_service_account=os.environ.get("MOUSFLOW_DASK_SERVICE_ACCOUNT") or None,
        dask_min_workers=int(os.environ.get("MOUSFLOW_DASK_MIN_WORKERS", "1")),
        dask_max_workers=int(os.environ.get("MOUSFLOW_DASK_MAX_WORKERS", "4")),
        dask_worker_cpu=os.environ.get("MOUSFLOW_DASK_WORKER_CPU", "1"),
    )

    history = History.from_env()

    class SizedJobLauncher(KubernetesJobLauncher):
        def launch(self, stage, manifest_uri, run_root, on_line):
            demand = demand_of(load_manifest(Location.of(manifest_uri).read_text()))
            # Without Dask worker pods the imaging pod also holds its local workers (one per thread).
            in_pod = 0 if settings.dask_service_account else threads
            self.resources = lambda s: estimate_stage_resources(
                s, demand, threads, workers_in_pod=in_pod if s == "imaging" else 0,
                learned_factor=history.memory_factor(s) if history else 1.0)
            return super().launch(stage, manifest_uri, run_root, on_line)

    # What to do after an out-of-memory kill: the platform's policy, from the environment of the flow's process.
    return SizedJobLauncher(settings, resources=lambda s: None, threads=threads,
                            attempt=int(query.get("attempt", 1)),
                            oom_memory_factor=float(os.environ.get("MOUSFLOW_OOM_MEMORY_FACTOR", 1.5)),
                            oom_max_retries=int(os.environ.get("MOUSFLOW_OOM_MAX_RETRIES", 3)),
                            memory_cap_bytes=parse_memory(os.environ.get("MOUSFLOW_OOM_MEMORY_CAP", "64Gi")))


def make_launcher(kind: str = "local", threads: int = 1) -> StageLauncher:
    """A launcher from plain parameters (flow parameters must be JSON: the Prefect server records them)."""
    if kind == "local":
        return LocalProcessLauncher(threads=threads)
    if kind == "kubernetes" or kind.startswith("kubernetes?"):
        return _kubernetes_launcher(kind, threads)
    raise ValueError(f"unknown stage launcher {kind!r}; known: local, kubernetes?namespace=NS&attempt=N")
