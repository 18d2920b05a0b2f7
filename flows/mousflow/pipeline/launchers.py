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
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from mousflow.stages.context import StageOutcome
from mousflow.stages.runner import TEST_FAIL_STAGE, skip_if_complete, status_location
from mousflow.storage.location import Location

if TYPE_CHECKING:
    from mousflow.pipeline.kubernetes import JobSettings

LineFn = Callable[[str], None]


class StageLauncher(Protocol):
    def launch(self, stage: str, manifest_uri: str, run_root: Location, on_line: LineFn) -> StageOutcome: ...


def launch_unless_complete(launcher: StageLauncher, stage: str, manifest_uri: str, run_root: Location,
                           on_line: LineFn) -> StageOutcome:
    """The stage's outcome: Skipped, with nothing started, when its checkpoint is valid (decided and reported as
    the stage itself would: stages.runner.skip_if_complete); otherwise what the launcher reports. A whole-run
    retry thus starts no pod for a completed stage only for it to skip itself."""
    skipped = skip_if_complete(stage, manifest_uri)
    if skipped is not None:
        on_line(f"stage {stage}: valid checkpoint, nothing to do: not started")
        return skipped
    return launcher.launch(stage, manifest_uri, run_root, on_line)


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


def kubernetes_launcher_kind(namespace: str, attempt: int = 1, owner: tuple[str, str] | None = None,
                             run: str = "") -> str:
    """The launcher kind string of stage Jobs in `namespace` whose Job names start at `attempt` and carry the
    tag `run` (one run of the flow: see pipeline.kubernetes.job_name), owned by the MOUS `owner` = (name, uid)
    if given."""
    kind = f"kubernetes?namespace={namespace}&attempt={attempt}" + (f"&run={run}" if run else "")
    return kind + (f"&owner_name={owner[0]}&owner_uid={owner[1]}" if owner else "")


def _kind_query(kind: str) -> dict[str, str]:
    from urllib.parse import parse_qs, urlsplit

    return {k: v[-1] for k, v in parse_qs(urlsplit(kind).query).items()}


def job_settings_from_env(kind: str, env: Mapping[str, str]) -> JobSettings:
    """The stage Jobs' settings from the environment of the process running the flow (the operator): runner
    image, S3 Secret, in-cluster endpoint and region (MOUSFLOW_RUNNER_IMAGE, MOUSFLOW_S3_SECRET,
    MOUSFLOW_S3_ENDPOINT_IN_CLUSTER, AWS_DEFAULT_REGION, MOUSFLOW_IMAGE_PULL_POLICY; for Dask worker pods
    MOUSFLOW_DASK_SERVICE_ACCOUNT, MOUSFLOW_DASK_MIN_WORKERS, MOUSFLOW_DASK_MAX_WORKERS,
    MOUSFLOW_DASK_WORKER_CPU; for tests only
    MOUSFLOW_TEST_FAIL_STAGE); the kind string names only the namespace and the MOUS owning the Jobs."""
    from mousflow.pipeline.kubernetes import JobSettings

    query = _kind_query(kind)
    return JobSettings(
        namespace=query.get("namespace") or env.get("MOUSFLOW_JOB_NAMESPACE", "default"),
        image=env.get("MOUSFLOW_RUNNER_IMAGE", "mousflow-runner:dev"),
        s3_secret=env.get("MOUSFLOW_S3_SECRET", "mousflow-s3"),
        s3_endpoint=env.get("MOUSFLOW_S3_ENDPOINT_IN_CLUSTER") or None,
        s3_region=env.get("AWS_DEFAULT_REGION") or None,
        image_pull_policy=env.get("MOUSFLOW_IMAGE_PULL_POLICY", "IfNotPresent"),
        owner=(query["owner_name"], query["owner_uid"]) if query.get("owner_uid") else None,
        dask_service_account=env.get("MOUSFLOW_DASK_SERVICE_ACCOUNT") or None,
        dask_min_workers=int(env.get("MOUSFLOW_DASK_MIN_WORKERS", "1")),
        dask_max_workers=int(env.get("MOUSFLOW_DASK_MAX_WORKERS", "4")),
        dask_worker_cpu=env.get("MOUSFLOW_DASK_WORKER_CPU", "1"),
        test_fail_stage=env.get(TEST_FAIL_STAGE) or None,
    )


def _kubernetes_launcher(kind: str, threads: int) -> StageLauncher:
    """Stage Jobs configured from the environment of the process running the flow (job_settings_from_env),
    whose Job names start at the kind string's attempt number and carry its run tag. Resources come from the MOUS's data
    (`demand_of`), read when a stage is launched, refined by the history of measured peaks when
    MOUSFLOW_HISTORY names one (pipeline.history)."""
    from mousflow.model import load_manifest
    from mousflow.pipeline.demand import demand_of
    from mousflow.pipeline.history import History
    from mousflow.pipeline.kubernetes import KubernetesJobLauncher
    from mousflow.pipeline.resources import estimate_stage_resources, parse_memory

    query = _kind_query(kind)
    settings = job_settings_from_env(kind, os.environ)

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
                            attempt=int(query.get("attempt", 1)), run=query.get("run", ""),
                            oom_memory_factor=float(os.environ.get("MOUSFLOW_OOM_MEMORY_FACTOR", 1.5)),
                            oom_max_retries=int(os.environ.get("MOUSFLOW_OOM_MAX_RETRIES", 3)),
                            memory_cap_bytes=parse_memory(os.environ.get("MOUSFLOW_OOM_MEMORY_CAP", "64Gi")))


def make_launcher(kind: str = "local", threads: int = 1) -> StageLauncher:
    """A launcher from plain parameters (flow parameters must be JSON: the Prefect server records them)."""
    if kind == "local":
        return LocalProcessLauncher(threads=threads)
    if kind == "kubernetes" or kind.startswith("kubernetes?"):
        return _kubernetes_launcher(kind, threads)
    raise ValueError(f"unknown stage launcher {kind!r}; known: local, kubernetes?namespace=NS&attempt=N&run=TAG")
