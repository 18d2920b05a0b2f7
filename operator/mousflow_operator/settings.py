"""The operator's configuration, from its environment (a Deployment's env, or the shell for `mousflow operator`).

Everything a stage pod needs that is not in the MOUS comes from here: the runner image, the Secret holding the
S3 credentials, the in-cluster S3 endpoint, the Dask and out-of-memory policy (`stage_jobs`, read by
mousflow.pipeline.launchers.StageJobConfig.from_env, the one reader of those variables and their defaults, and
handed down to each flow run: the launcher does not read the environment again). A MOUS never supplies
credentials or images. The one setting read elsewhere is MOUSFLOW_HISTORY (pipeline.history.History.from_env),
which stage launchers, flows and the operator share as the same store.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from mousflow.pipeline.launchers import StageJobConfig
from mousflow_operator.flow_pod import FlowPodSettings
from mousflow_operator.tenancy import StoragePolicy


def _bool(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class OperatorSettings:
    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty means all (cluster-wide)."""
    max_processing: int = 2
    """At most this many MOUSs in Processing at once."""
    stage_jobs: StageJobConfig = field(default_factory=StageJobConfig)
    """Everything about stage Jobs (image, S3 Secret and in-cluster endpoint, Dask worker pods, out-of-memory
    policy): handed to each flow run, whose launcher uses it as it is (it does not read the environment)."""
    flow_runner: str = "thread"
    """Where each MOUS's flow run executes: "thread" (a worker thread of the operator) or "pod" (a Job of its own
    in the MOUS's namespace, settings `flow_pod`); runs.py and flow_pod.py say why."""
    flow_pod: FlowPodSettings = field(default_factory=FlowPodSettings)
    history: str = ""
    """MOUSFLOW_HISTORY, handed to flow-run pods (pipeline.history)."""
    auto_delivery: bool = False
    """Deliver a QA2 Pass without review when neither the MOUS nor its namespace says otherwise."""
    stage_threads: int = 1
    max_run_attempts: int = 3
    """Automatic runs of a MOUS's flow (the first and its retries) before it is Failed."""
    retry_backoff_seconds: float = 10.0
    """Wait before the n-th automatic retry: backoff * 2**(n-1)."""
    transient_max_delay_seconds: float = 300.0
    """A transient failure (S3 or the Prefect server unreachable) is waited out with the retry backoff doubling
    up to this, not spent from max_run_attempts ..."""
    transient_give_up_seconds: float = 6 * 3600.0
    """... for at most this long in a row; after that it counts as an ordinary failure."""
    resync_seconds: float = 60.0
    """The safety net: every MOUS is reconciled at least this often (it is otherwise reconciled on events)."""
    progress_seconds: float = 10.0
    """How often a MOUS in Processing reads its running stage's progress from storage."""
    handler_threads: int = 8
    """Threads kopf runs the (synchronous) handlers in. Each thread keeps its own allocator arena and its own S3
    client (fsspec caches file systems per thread), so more threads cost memory: 32 took 783 MB in a burst of
    1,000 new MOUSs, where the handlers are short and mostly wait for the API server (bench/control_plane.py)."""
    api_connections: int = 32
    """Connections kopf may use at once for its requests to the API server, besides one per watch stream
    (api_session.py). Unbounded, a burst of 1,000 new MOUSs opened one TLS connection per MOUS (~230 MB)."""
    admission_settle_seconds: float = 120.0
    """A MOUS not yet checked (FullyObserved, not Degraded) keeps its place in the queue for at most this long
    after its creation: long enough for the input checks of many MOUSs applied at once."""
    eta_refresh_seconds: float = 600.0
    """How long a waiting MOUS's predicted processing time (history x its data's size) is reused before it is
    computed again: the history grows as stages finish, and computing it reads the MOUS's metadata."""
    liveness_endpoint: str | None = None
    """kopf's health endpoint, e.g. http://0.0.0.0:8080/healthz (answers once the operator has started)."""
    metrics_port: int = 0
    """Port of the Prometheus metrics endpoint (/metrics on every path); 0 serves none."""
    storage_policy: StoragePolicy = field(default_factory=StoragePolicy)
    """Which storage prefixes each namespace's MOUSs may read and write (tenancy.py); none: all."""
    test_phase_dwell_seconds: float = 0.0
    """Test-only (MOUSFLOW_TEST_PHASE_DWELL_SECONDS, not in the chart): the operator leaves every phase it has
    seen alone for this long before acting on it, so a chaos test can kill it in phases that otherwise last
    a fraction of a second (FullyObserved, ReadyForReview, DeliveryInProgress). 0: off."""

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> OperatorSettings:
        env = dict(os.environ if env is None else env)
        namespaces = tuple(n for n in (env.get("MOUSFLOW_NAMESPACES") or "").replace(",", " ").split() if n)
        return cls(
            namespaces=namespaces,
            max_processing=int(env.get("MOUSFLOW_MAX_PROCESSING", cls.max_processing)),
            stage_jobs=StageJobConfig.from_env(env),
            flow_runner=(env.get("MOUSFLOW_FLOW_RUNNER") or cls.flow_runner).strip().lower(),
            flow_pod=FlowPodSettings.from_env(env),
            history=env.get("MOUSFLOW_HISTORY", "").strip(),
            auto_delivery=_bool(env.get("MOUSFLOW_AUTO_DELIVERY"), cls.auto_delivery),
            stage_threads=int(env.get("MOUSFLOW_STAGE_THREADS", cls.stage_threads)),
            max_run_attempts=int(env.get("MOUSFLOW_MAX_RUN_ATTEMPTS", cls.max_run_attempts)),
            retry_backoff_seconds=float(env.get("MOUSFLOW_RETRY_BACKOFF_SECONDS", cls.retry_backoff_seconds)),
            transient_max_delay_seconds=float(env.get("MOUSFLOW_TRANSIENT_MAX_DELAY_SECONDS")
                                              or cls.transient_max_delay_seconds),
            transient_give_up_seconds=float(env.get("MOUSFLOW_TRANSIENT_GIVE_UP_SECONDS")
                                            or cls.transient_give_up_seconds),
            resync_seconds=float(env.get("MOUSFLOW_RESYNC_SECONDS") or cls.resync_seconds),
            progress_seconds=float(env.get("MOUSFLOW_PROGRESS_SECONDS") or cls.progress_seconds),
            handler_threads=int(env.get("MOUSFLOW_HANDLER_THREADS") or cls.handler_threads),
            api_connections=int(env.get("MOUSFLOW_API_CONNECTIONS") or cls.api_connections),
            admission_settle_seconds=float(env.get("MOUSFLOW_ADMISSION_SETTLE_SECONDS",
                                                   cls.admission_settle_seconds)),
            eta_refresh_seconds=float(env.get("MOUSFLOW_ETA_REFRESH_SECONDS", cls.eta_refresh_seconds)),
            liveness_endpoint=env.get("MOUSFLOW_LIVENESS_ENDPOINT") or None,
            metrics_port=int(env.get("MOUSFLOW_METRICS_PORT") or 0),
            storage_policy=StoragePolicy.from_json(env.get("MOUSFLOW_STORAGE_POLICY")),
            test_phase_dwell_seconds=float(env.get("MOUSFLOW_TEST_PHASE_DWELL_SECONDS") or 0),
        )
