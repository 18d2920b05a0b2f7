"""The "restricted" Pod Security Standard, written once for every pod mousflow makes: stage Jobs
(pipeline.kubernetes), flow-run Jobs (the operator's flow_pod) and the imaging stage's Dask scheduler and
workers (stages.dask_kubernetes_cluster). A module of its own, below every layer that builds pods, because
stages may not import the pipeline.

Non-root (a fixed uid/gid the runner image owns nothing as), RuntimeDefault seccomp, no privilege escalation,
all capabilities dropped, and a read-only root filesystem with an emptyDir at /tmp, the one place a stage,
Dask or matplotlib writes locally.
"""

from __future__ import annotations

RUN_AS_ID = 10001
TMP_VOLUME = "tmp"


def restricted_pod_security() -> dict:
    """The pod-level securityContext."""
    return {"runAsNonRoot": True, "runAsUser": RUN_AS_ID, "runAsGroup": RUN_AS_ID, "fsGroup": RUN_AS_ID,
            "seccompProfile": {"type": "RuntimeDefault"}}


def restricted_container_security() -> dict:
    """The container-level securityContext."""
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}


def tmp_volume() -> dict:
    """The pod's writable scratch volume (the root filesystem is read-only)."""
    return {"name": TMP_VOLUME, "emptyDir": {}}


def tmp_mount() -> dict:
    """The container's mount of tmp_volume() at /tmp."""
    return {"name": TMP_VOLUME, "mountPath": "/tmp"}
