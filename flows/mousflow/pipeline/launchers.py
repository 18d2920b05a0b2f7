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
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Protocol

from mousflow.process_env import STAGE_PROCESS_ENV
from mousflow.stages.context import StageOutcome
from mousflow.stages.runner import TEST_VARIABLES, skip_if_complete, status_location
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
    retry thus starts no pod for a completed stage only for it to skip itself. A stage that already has a Job of
    this very run (the flow run executed again after an operator restart, a helm upgrade) is followed to its end
    first, and its report kept if it succeeded: its checkpoint may be valid before its Job has reported, and a
    Skipped in place of its report would lose what it measured (the launcher's job_of_this_run and follow, if it
    has them). A Job of an earlier run still running is waited for before anything else (the launcher's
    running_job_of_another_run), and what earlier runs' ended pods left behind is released (its
    release_earlier_runs)."""
    existing = getattr(launcher, "job_of_this_run", None)
    job = existing(stage, manifest_uri) if existing is not None else None
    if job is not None:
        on_line(f"stage {stage}: this run's Job {job} exists: following it")
        followed = launcher.follow(stage, job, run_root, on_line)
        if followed.state == "Succeeded":
            return followed
    elif (running := getattr(launcher, "running_job_of_another_run", lambda *_: None)(stage, manifest_uri)):
        # Two pods must never write the same outputs: an earlier run's pod that went on after its flow run ended
        # (an outage, a restart) is waited for; if it finished the stage, its checkpoint is valid below.
        on_line(f"stage {stage}: Job {running} of an earlier run still runs: waiting for it to end first")
        launcher.follow(stage, running, run_root, on_line)
    if (release := getattr(launcher, "release_earlier_runs", None)) is not None:
        release(stage, manifest_uri, on_line)
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
        env = {**os.environ, **STAGE_PROCESS_ENV, **(self.env or {}), "PYTHONUNBUFFERED": "1"}
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


@dataclass(frozen=True)
class StageJobConfig:
    """What the platform, never a MOUS, decides about stage Jobs: image, S3 Secret and endpoint, Dask worker pods,
    what to do after an out-of-memory kill. The operator's settings (mousflow_operator.settings.OperatorSettings)
    hold one and hand it to each flow run as a parameter (`to_json`): the flow running in the operator's thread
    takes these values, it does not read the environment again. `from_env` is the one place the variables are
    read, with the one set of defaults below (for `mousflow run` with Kubernetes stages, and for the operator)."""

    image: str = "mousflow-runner:dev"
    image_pull_policy: str = "IfNotPresent"
    s3_secret: str = "mousflow-s3"
    """Secret (in the MOUS's namespace) with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, for stage pods."""
    s3_endpoint: str | None = None
    """The S3 endpoint as pods reach it (MOUSFLOW_S3_ENDPOINT_IN_CLUSTER)."""
    s3_region: str | None = None
    dask_service_account: str | None = None
    dask_min_workers: int = 1
    dask_max_workers: int = 4
    dask_worker_cpu: str = "1"
    dask_unschedulable_seconds: float = 120.0
    oom_memory_factor: float = 1.5
    oom_max_retries: int = 3
    oom_memory_cap: str = "64Gi"
    interruption_retries: int = 2
    """A stage pod deleted, evicted or killed by a signal (not for memory) runs again this many times within
    the same flow run before the stage fails Interrupted (a node drained, a spot node reclaimed)."""
    resize_in_place: bool = True
    """Raise a running stage pod's memory limit through the pod's resize subresource when its working set
    reaches resize_threshold of it (by oom_memory_factor, up to oom_memory_cap); the OOM retry stays the
    fallback."""
    resize_threshold: float = 0.8
    pod_start_error_seconds: float = 120.0
    """A stage pod that cannot start this long (CreateContainerConfigError: the S3 Secret missing in the MOUS's
    namespace; an image that cannot be pulled) fails its stage with reason PodCannotStart, naming the problem."""
    api_outage_seconds: float = 300.0
    """The Kubernetes API server unreachable this long (restarting, upgraded) while a stage's Job is watched
    fails the flow run; shorter outages are waited out, the Job going on meanwhile."""
    default_namespace: str = "default"
    test_env: dict[str, str] = field(default_factory=dict)
    """TEST ONLY (stages.runner.TEST_VARIABLES that are set)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StageJobConfig:
        env = os.environ if env is None else env
        return cls(
            image=env.get("MOUSFLOW_RUNNER_IMAGE") or cls.image,
            image_pull_policy=env.get("MOUSFLOW_IMAGE_PULL_POLICY") or cls.image_pull_policy,
            s3_secret=env.get("MOUSFLOW_S3_SECRET") or cls.s3_secret,
            s3_endpoint=env.get("MOUSFLOW_S3_ENDPOINT_IN_CLUSTER") or None,
            s3_region=env.get("AWS_DEFAULT_REGION") or None,
            dask_service_account=env.get("MOUSFLOW_DASK_SERVICE_ACCOUNT") or None,
            dask_min_workers=int(env.get("MOUSFLOW_DASK_MIN_WORKERS") or cls.dask_min_workers),
            dask_max_workers=int(env.get("MOUSFLOW_DASK_MAX_WORKERS") or cls.dask_max_workers),
            dask_worker_cpu=env.get("MOUSFLOW_DASK_WORKER_CPU") or cls.dask_worker_cpu,
            dask_unschedulable_seconds=float(env.get("MOUSFLOW_DASK_UNSCHEDULABLE_SECONDS")
                                             or cls.dask_unschedulable_seconds),
            oom_memory_factor=float(env.get("MOUSFLOW_OOM_MEMORY_FACTOR") or cls.oom_memory_factor),
            oom_max_retries=int(env.get("MOUSFLOW_OOM_MAX_RETRIES") or cls.oom_max_retries),
            oom_memory_cap=env.get("MOUSFLOW_OOM_MEMORY_CAP") or cls.oom_memory_cap,
            interruption_retries=int(env.get("MOUSFLOW_INTERRUPTION_RETRIES") or cls.interruption_retries),
            resize_in_place=(env.get("MOUSFLOW_RESIZE_IN_PLACE") or "true").strip().lower() in ("1", "true", "yes"),
            resize_threshold=float(env.get("MOUSFLOW_RESIZE_THRESHOLD") or cls.resize_threshold),
            pod_start_error_seconds=float(env.get("MOUSFLOW_POD_START_ERROR_SECONDS")
                                          or cls.pod_start_error_seconds),
            api_outage_seconds=float(env.get("MOUSFLOW_API_OUTAGE_SECONDS") or cls.api_outage_seconds),
            default_namespace=env.get("MOUSFLOW_JOB_NAMESPACE") or cls.default_namespace,
            test_env={name: env[name] for name in TEST_VARIABLES if env.get(name)},
        )

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: Mapping | None) -> StageJobConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (doc or {}).items() if k in known})

    def job_settings(self, kind: str) -> JobSettings:
        """The Jobs' settings for the launcher kind string, which names only the namespace and the owning MOUS."""
        from mousflow.pipeline.kubernetes import JobSettings

        query = _kind_query(kind)
        return JobSettings(
            namespace=query.get("namespace") or self.default_namespace, image=self.image,
            s3_secret=self.s3_secret, s3_endpoint=self.s3_endpoint, s3_region=self.s3_region,
            image_pull_policy=self.image_pull_policy,
            owner=(query["owner_name"], query["owner_uid"]) if query.get("owner_uid") else None,
            dask_service_account=self.dask_service_account, dask_min_workers=self.dask_min_workers,
            dask_max_workers=self.dask_max_workers, dask_worker_cpu=self.dask_worker_cpu,
            dask_unschedulable_seconds=self.dask_unschedulable_seconds, test_env=dict(self.test_env))


def job_settings_from_env(kind: str, env: Mapping[str, str]) -> JobSettings:
    """The stage Jobs' settings from an environment (StageJobConfig.from_env) for the launcher kind `kind`."""
    return StageJobConfig.from_env(env).job_settings(kind)


def _kubernetes_launcher(kind: str, threads: int, config: StageJobConfig | None = None) -> StageLauncher:
    """Stage Jobs configured by `config` (the operator's, passed down with the flow run; from the environment
    when there is none), whose Job names start at the kind string's attempt number and carry its run tag.
    Resources come from the MOUS's data (`demand_of`), read when a stage is launched, refined by the history of
    measured peaks when MOUSFLOW_HISTORY names one (pipeline.history)."""
    from mousflow.model import load_manifest
    from mousflow.pipeline.demand import demand_of
    from mousflow.pipeline.history import History
    from mousflow.pipeline.kubernetes import KubernetesJobLauncher
    from mousflow.pipeline.resources import estimate_stage_resources, parse_memory

    query = _kind_query(kind)
    config = config or StageJobConfig.from_env()
    settings = config.job_settings(kind)

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

    # What to do after an out-of-memory kill: the platform's policy (config), not the MOUS's.
    return SizedJobLauncher(settings, resources=lambda s: None, threads=threads,
                            attempt=int(query.get("attempt", 1)), run=query.get("run", ""),
                            oom_memory_factor=config.oom_memory_factor, oom_max_retries=config.oom_max_retries,
                            memory_cap_bytes=parse_memory(config.oom_memory_cap),
                            interruption_retries=config.interruption_retries,
                            resize_in_place=config.resize_in_place, resize_threshold=config.resize_threshold,
                            pod_start_error_seconds=config.pod_start_error_seconds,
                            api_outage_seconds=config.api_outage_seconds)


def make_launcher(kind: str = "local", threads: int = 1, config: Mapping | None = None) -> StageLauncher:
    """A launcher from plain parameters (flow parameters must be JSON: the Prefect server records them);
    `config`: a StageJobConfig as JSON (the operator's), for Kubernetes stages."""
    if kind == "local":
        return LocalProcessLauncher(threads=threads)
    if kind == "kubernetes" or kind.startswith("kubernetes?"):
        return _kubernetes_launcher(kind, threads, StageJobConfig.from_json(config) if config else None)
    raise ValueError(f"unknown stage launcher {kind!r}; known: local, kubernetes?namespace=NS&attempt=N&run=TAG")
