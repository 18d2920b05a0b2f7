"""The imaging stage pod's own Dask cluster on Kubernetes: a DaskCluster resource for the dask-kubernetes operator.

The stage pod (see pipeline.kubernetes.build_stage_job_spec) gets its settings as environment variables:

- MOUSFLOW_DASK_IMAGE: the runner image (scheduler and workers run `dask scheduler` / `dask worker` from it);
- MOUSFLOW_DASK_NAMESPACE, MOUSFLOW_POD_NAME, MOUSFLOW_POD_UID (downward API): where the cluster goes and
  who owns it. The DaskCluster has an owner reference to the stage pod, so deleting the stage Job (or the
  MOUS that owns the Job) deletes the pod, its DaskCluster and, through the operator's own owner references,
  the scheduler and every worker. A normal end or an error tears the cluster down at once (shutdown_on_close);
  the owner reference covers a stage pod that was killed.
- MOUSFLOW_DASK_WORKER_MEMORY / MOUSFLOW_DASK_WORKER_MEMORY_LIMIT (bytes) and MOUSFLOW_DASK_WORKER_CPU: each
  worker's requests and limit, computed from one channel chunk (pipeline.resources), not the whole cube;
- MOUSFLOW_S3_SECRET, MOUSFLOW_S3_ENDPOINT and AWS_DEFAULT_REGION: workers read and write S3 with the same
  Secret, endpoint and region as stage pods.

Worker and scheduler pods meet the restricted Pod Security profile like the stage pods.

A cluster whose worker pods the Kubernetes scheduler cannot place (no node has the CPU or memory a worker
asks for) would otherwise leave the stage waiting until Dask's own timeout ("No valid workers found"), and
the MOUS would fail for a capacity problem that is not its own. `wait_for_workers` watches the worker pods'
PodScheduled condition while it waits for the first worker, and gives up with WorkersUnschedulable, saying
the scheduler's reason, once they have been unschedulable for MOUSFLOW_DASK_UNSCHEDULABLE_SECONDS (default
120: long enough for a cluster autoscaler to add a node); the caller then images in the stage pod.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime

from mousflow.pod_security import restricted_container_security, restricted_pod_security, tmp_mount, tmp_volume
from mousflow.process_env import stage_process_env_vars

MiB = 2**20
SCHEDULER_MEMORY = {"requests": {"cpu": "50m", "memory": "256Mi"}, "limits": {"memory": "768Mi"}}


def cluster_name(pod_name: str) -> str:
    """A DNS-1123 name for the pod's cluster (its services add "-scheduler": stay well under 63 characters)."""
    return f"dask-{hashlib.sha256(pod_name.encode()).hexdigest()[:12]}"


def _pod(container: dict) -> dict:
    """A restricted pod of one container (the scheduler or a worker)."""
    return {
        "automountServiceAccountToken": False,
        "securityContext": restricted_pod_security(),
        "containers": [{**container, "securityContext": restricted_container_security(),
                        "volumeMounts": [tmp_mount()]}],
        "volumes": [tmp_volume()],
    }


def cluster_spec(name: str, *, image: str, s3_secret: str | None, s3_endpoint: str | None,
                 s3_region: str | None = None, worker_memory_bytes: int, worker_memory_limit_bytes: int,
                 worker_cpu: str = "1",
                 worker_threads: int = 1, owner: dict | None = None, pull_policy: str = "IfNotPresent",
                 labels: dict | None = None) -> dict:
    """The DaskCluster resource (a pure function of its arguments)."""
    env = [{"name": "HOME", "value": "/tmp"}, {"name": "MPLCONFIGDIR", "value": "/tmp/matplotlib"},
           {"name": "OMP_NUM_THREADS", "value": str(worker_threads)}, *stage_process_env_vars()]
    if s3_secret:
        env += [{"name": key, "valueFrom": {"secretKeyRef": {"name": s3_secret, "key": key}}}
                for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")]
    if s3_endpoint:
        env.append({"name": "MOUSFLOW_S3_ENDPOINT", "value": s3_endpoint})
    if s3_region:
        env.append({"name": "AWS_DEFAULT_REGION", "value": s3_region})
    worker = {
        "name": "worker", "image": image, "imagePullPolicy": pull_policy,
        # The worker's own memory manager pauses and spills before the kernel's limit is reached.
        "args": ["dask", "worker", "--name", "$(DASK_WORKER_NAME)", "--nthreads", str(worker_threads),
                 "--memory-limit", str(worker_memory_limit_bytes), "--local-directory", "/tmp/dask",
                 "--dashboard", "--dashboard-address", "8788"],
        "env": env,
        "resources": {"requests": {"cpu": worker_cpu, "memory": f"{worker_memory_bytes // MiB}Mi"},
                      "limits": {"memory": f"{worker_memory_limit_bytes // MiB}Mi"}},
        "ports": [{"name": "http-dashboard", "containerPort": 8788, "protocol": "TCP"}],
    }
    scheduler = {
        "name": "scheduler", "image": image, "imagePullPolicy": pull_policy,
        "args": ["dask", "scheduler", "--host", "0.0.0.0"],
        "env": env[:2],
        "resources": SCHEDULER_MEMORY,
        "ports": [{"name": "tcp-comm", "containerPort": 8786, "protocol": "TCP"},
                  {"name": "http-dashboard", "containerPort": 8787, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"port": "http-dashboard", "path": "/health"}, "periodSeconds": 1,
                           "timeoutSeconds": 30},
        # Liveness only for a scheduler that is really hung: it shares a small node with the imaging pod and
        # its workers, and under that CPU load a busy event loop can take seconds to answer. With the default
        # 1 s timeout the kubelet killed a healthy scheduler, and the stage lost its cluster mid-cube.
        "livenessProbe": {"httpGet": {"port": "http-dashboard", "path": "/health"}, "initialDelaySeconds": 30,
                          "periodSeconds": 20, "timeoutSeconds": 15, "failureThreshold": 6},
    }
    metadata: dict = {"name": name, "labels": {"app.kubernetes.io/name": "mousflow",
                                               "app.kubernetes.io/component": "imaging-dask", **(labels or {})}}
    if owner:
        metadata["ownerReferences"] = [owner]
    return {
        "apiVersion": "kubernetes.dask.org/v1",
        "kind": "DaskCluster",
        "metadata": metadata,
        "spec": {
            "idleTimeout": 0,
            "worker": {"replicas": 0, "spec": _pod(worker)},
            "scheduler": {
                "spec": _pod(scheduler),
                "service": {"type": "ClusterIP",
                            "selector": {"dask.org/cluster-name": name, "dask.org/component": "scheduler"},
                            "ports": [{"name": "tcp-comm", "protocol": "TCP", "port": 8786,
                                       "targetPort": "tcp-comm"},
                                      {"name": "http-dashboard", "protocol": "TCP", "port": 8787,
                                       "targetPort": "http-dashboard"}]},
            },
        },
    }


def spec_from_env(worker_threads: int, env: dict[str, str] | None = None) -> tuple[dict, str]:
    """(DaskCluster spec, namespace) from the stage pod's environment."""
    env = os.environ if env is None else env
    try:
        image = env["MOUSFLOW_DASK_IMAGE"]
        pod_name = env["MOUSFLOW_POD_NAME"]
    except KeyError as exc:
        raise ValueError(f"MOUSFLOW_DASK=kubernetes needs {exc.args[0]} in the stage pod's environment") from None
    namespace = env.get("MOUSFLOW_DASK_NAMESPACE") or "default"
    memory = int(env.get("MOUSFLOW_DASK_WORKER_MEMORY") or 1024 * MiB)
    limit = int(env.get("MOUSFLOW_DASK_WORKER_MEMORY_LIMIT") or memory * 3 // 2)
    owner = None
    if env.get("MOUSFLOW_POD_UID"):
        owner = {"apiVersion": "v1", "kind": "Pod", "name": pod_name, "uid": env["MOUSFLOW_POD_UID"]}
    spec = cluster_spec(cluster_name(pod_name), image=image, s3_secret=env.get("MOUSFLOW_S3_SECRET"),
                        s3_endpoint=env.get("MOUSFLOW_S3_ENDPOINT"), s3_region=env.get("AWS_DEFAULT_REGION"),
                        worker_memory_bytes=memory,
                        worker_memory_limit_bytes=limit, worker_cpu=env.get("MOUSFLOW_DASK_WORKER_CPU") or "1",
                        worker_threads=worker_threads, owner=owner,
                        pull_policy=env.get("MOUSFLOW_IMAGE_PULL_POLICY") or "IfNotPresent",
                        labels={"mousflow.io/stage-pod": pod_name[:63]})
    return spec, namespace


class WorkersUnschedulable(Exception):
    """No Dask worker pod could be placed on a node (the Kubernetes scheduler's reason in the message)."""


def unschedulable_since(pods: list[dict]) -> tuple[float, str] | None:
    """(since when, as a Unix time, the scheduler's message) if no worker pod is scheduled and at least one is
    marked Unschedulable; None while one is scheduled or the scheduler has not said (a pure function of the
    pods in API form)."""
    found: list[tuple[float, str]] = []
    for pod in pods:
        conditions = {c.get("type"): c for c in (pod.get("status") or {}).get("conditions") or []}
        scheduled = conditions.get("PodScheduled") or {}
        if scheduled.get("status") == "True":
            return None
        if scheduled.get("reason") == "Unschedulable":
            stamp = scheduled.get("lastTransitionTime")
            since = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else time.time()
            found.append((since, str(scheduled.get("message") or "unschedulable")))
    return min(found) if found else None


def list_worker_pods(name: str, namespace: str) -> list[dict]:
    """The cluster's worker pods in API form, through kr8s (the client dask-kubernetes itself uses, with the
    stage pod's service account, which may list pods)."""
    import kr8s

    pods = kr8s.get("pods", namespace=namespace,
                    label_selector={"dask.org/cluster-name": name, "dask.org/component": "worker"})
    return [pod.raw for pod in pods]


def wait_for_workers(has_worker: Callable[[], bool], worker_pods: Callable[[], list[dict]], *,
                     unschedulable_seconds: float, timeout_seconds: float, poll_seconds: float = 3.0,
                     clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
    """Return once `has_worker()`; raise WorkersUnschedulable when the worker pods have been unschedulable for
    `unschedulable_seconds`, or when no worker came within `timeout_seconds` (naming what the pods wait for)."""
    started = clock()
    while not has_worker():
        pods = worker_pods()
        stuck = unschedulable_since(pods)
        now = clock()
        if stuck is not None and now - stuck[0] >= unschedulable_seconds:
            raise WorkersUnschedulable(f"the Dask worker pods could not be scheduled for {now - stuck[0]:.0f} s: "
                                       f"{stuck[1]}")
        if now - started >= timeout_seconds:
            phases = sorted({(p.get("status") or {}).get("phase", "?") for p in pods}) or ["none created"]
            raise WorkersUnschedulable(f"no Dask worker joined within {timeout_seconds:.0f} s (worker pods: "
                                       f"{', '.join(phases)})")
        sleep(poll_seconds)


@contextlib.contextmanager
def kubernetes_cluster(minimum: int, maximum: int, worker_threads: int) -> Iterator:
    """A KubeCluster adapting between minimum and maximum workers; deleted on exit, error or not."""
    from dask_kubernetes.operator import KubeCluster

    spec, namespace = spec_from_env(worker_threads)
    timeout = int(os.environ.get("MOUSFLOW_DASK_START_TIMEOUT", "300"))
    cluster = KubeCluster(custom_cluster_spec=spec, namespace=namespace, shutdown_on_close=True,
                          resource_timeout=timeout, quiet=True)
    try:
        cluster.adapt(minimum=minimum, maximum=maximum)
        yield cluster
    finally:
        cluster.close()


def first_worker_timeouts(env: dict[str, str] | None = None) -> tuple[float, float]:
    """(unschedulable_seconds, timeout_seconds) for wait_for_workers, from the stage pod's environment."""
    env = os.environ if env is None else env
    return (float(env.get("MOUSFLOW_DASK_UNSCHEDULABLE_SECONDS") or 120),
            float(env.get("MOUSFLOW_DASK_START_TIMEOUT") or 300))
