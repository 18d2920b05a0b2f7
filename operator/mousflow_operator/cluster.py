"""Connecting to the Kubernetes API, for everything that talks to the cluster (the operator, `mousflow review`,
`mousflow retry`).

In-cluster credentials when there are some, else the kubeconfig (KUBECONFIG or ~/.kube/config). A
configuration that cannot be read is one InvalidInput error; an API server that does not answer, or refuses
the credentials, one Unavailable error, after at most `timeout_seconds()`; each names what and where. The
kubernetes client would print tracebacks, retry with a warning per attempt, or wait for the system's TCP
timeout.
"""

from __future__ import annotations

import os

from mousflow.errors import InvalidInput, Unavailable, first_line
from mousflow.kube_config import load_kube_config


def timeout_seconds() -> float:
    """Connect and read timeout of each API request made here (MOUSFLOW_KUBE_TIMEOUT_SECONDS, default 10)."""
    return float(os.environ.get("MOUSFLOW_KUBE_TIMEOUT_SECONDS", 10))


def load_cluster_config() -> str:
    """Load the client's configuration (made the default, without urllib3's retries); the API server's URL."""
    from kubernetes import client

    load_kube_config()
    cfg = client.Configuration.get_default_copy()
    cfg.retries = False  # one attempt: a retried connection logs a warning per attempt and only delays the answer
    client.Configuration.set_default(cfg)
    return cfg.host


def api_failure(exc: Exception, host: str, what: str) -> Exception:
    """The classified error for a failed API request: refused credentials and unreachable servers are
    Unavailable; a missing object is InvalidInput (the caller names it)."""
    from kubernetes.client.rest import ApiException

    if isinstance(exc, ApiException):
        if exc.status in (401, 403):
            return Unavailable(f"the Kubernetes API at {host} refused {what} (HTTP {exc.status} {exc.reason}): "
                               f"check the credentials in the Kubernetes configuration")
        if exc.status == 404:
            return InvalidInput(f"{what}: not found")
        return Unavailable(f"the Kubernetes API at {host} failed {what} (HTTP {exc.status} {exc.reason})")
    reason = getattr(exc, "reason", None) or exc  # urllib3 wraps the socket error it gave up on
    return Unavailable(f"cannot reach the Kubernetes API at {host}: {first_line(reason)}")


def check_cluster_reachable() -> str:
    """Load the configuration and ask the API server for its version; the server's URL."""
    from kubernetes import client

    host = load_cluster_config()
    try:
        client.VersionApi().get_code(_request_timeout=timeout_seconds())
    except Exception as exc:  # ApiException, urllib3's connection and TLS errors
        raise api_failure(exc, host, "a version request") from None
    return host
