"""The operator's configuration, from its environment (a Deployment's env, or the shell for `mousflow operator`).

Everything a stage pod needs that is not in the MOUS comes from here: the runner image, the Secret holding the
S3 credentials, the in-cluster S3 endpoint. A MOUS never supplies credentials or images.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


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
    runner_image: str = "mousflow-runner:dev"
    image_pull_policy: str = "IfNotPresent"
    s3_secret: str = "mousflow-s3"
    """Secret (in the MOUS's namespace) with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, for stage pods."""
    s3_endpoint_in_cluster: str | None = None
    auto_delivery: bool = False
    """Deliver a QA2 Pass without review when neither the MOUS nor its namespace says otherwise."""
    stage_threads: int = 1
    max_run_attempts: int = 3
    """Automatic runs of a MOUS's flow (the first and its retries) before it is Failed."""
    retry_backoff_seconds: float = 10.0
    """Wait before the n-th automatic retry: backoff * 2**(n-1)."""
    tick_seconds: float = 3.0
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

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> OperatorSettings:
        env = dict(os.environ if env is None else env)
        namespaces = tuple(n for n in (env.get("MOUSFLOW_NAMESPACES") or "").replace(",", " ").split() if n)
        return cls(
            namespaces=namespaces,
            max_processing=int(env.get("MOUSFLOW_MAX_PROCESSING", cls.max_processing)),
            runner_image=env.get("MOUSFLOW_RUNNER_IMAGE", cls.runner_image),
            image_pull_policy=env.get("MOUSFLOW_IMAGE_PULL_POLICY", cls.image_pull_policy),
            s3_secret=env.get("MOUSFLOW_S3_SECRET", cls.s3_secret),
            s3_endpoint_in_cluster=env.get("MOUSFLOW_S3_ENDPOINT_IN_CLUSTER") or None,
            auto_delivery=_bool(env.get("MOUSFLOW_AUTO_DELIVERY"), cls.auto_delivery),
            stage_threads=int(env.get("MOUSFLOW_STAGE_THREADS", cls.stage_threads)),
            max_run_attempts=int(env.get("MOUSFLOW_MAX_RUN_ATTEMPTS", cls.max_run_attempts)),
            retry_backoff_seconds=float(env.get("MOUSFLOW_RETRY_BACKOFF_SECONDS", cls.retry_backoff_seconds)),
            tick_seconds=float(env.get("MOUSFLOW_TICK_SECONDS", cls.tick_seconds)),
            admission_settle_seconds=float(env.get("MOUSFLOW_ADMISSION_SETTLE_SECONDS",
                                                   cls.admission_settle_seconds)),
            eta_refresh_seconds=float(env.get("MOUSFLOW_ETA_REFRESH_SECONDS", cls.eta_refresh_seconds)),
            liveness_endpoint=env.get("MOUSFLOW_LIVENESS_ENDPOINT") or None,
            metrics_port=int(env.get("MOUSFLOW_METRICS_PORT") or 0),
        )
