"""Loading the Kubernetes client's configuration, once for everything that talks to a cluster (the stage Job
launcher, the operator, `mousflow review` and `retry`, the uninstall hook). A module of its own, importing
only the client: the uninstall hook and the CLI must not pull in Prefect or the science stack to load it.

In-cluster credentials when there are some (a pod's service account), else the kubeconfig: KUBECONFIG, named
explicitly because the client reads it only once, when it is imported, or ~/.kube/config.
"""

from __future__ import annotations

import functools
import os

from mousflow.errors import InvalidInput, first_line


def load_kube_config() -> None:
    """Make the found configuration the client's default; one InvalidInput naming it when it is unusable."""
    from kubernetes import config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        where = os.environ.get("KUBECONFIG") or "~/.kube/config"
        try:
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
        except Exception as exc:  # ConfigException, YAML and base64 errors, missing files: all mean "unusable"
            raise InvalidInput(f"cannot use the Kubernetes configuration {where}: {first_line(exc)}") from None


@functools.cache
def shared_api_client():
    """One API client (one connection pool, its TLS sessions) for a long-running process, made after the
    configuration is loaded. `client.CoreV1Api()` without one makes a new ApiClient, with a new pool and a TLS
    handshake, at every call: about 115 kB each that the allocator keeps (measured: 200 calls, +23 MB), which
    the operator paid per wake and per namespace read, a thousand times in a burst (issue 16)."""
    from kubernetes import client

    return client.ApiClient()
