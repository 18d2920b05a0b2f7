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
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator

MiB = 2**20
SCHEDULER_MEMORY = {"requests": {"cpu": "50m", "memory": "256Mi"}, "limits": {"memory": "768Mi"}}


def cluster_name(pod_name: str) -> str:
    """A DNS-1123 name for the pod's cluster (its services add "-scheduler": stay well under 63 characters)."""
    return f"dask-{hashlib.sha256(pod_name.encode()).hexdigest()[:12]}"


def _restricted(container: dict) -> dict:
    container["securityContext"] = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}}
    container["volumeMounts"] = [{"name": "tmp", "mountPath": "/tmp"}]
    return container


def _pod(container: dict) -> dict:
    return {
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [_restricted(container)],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }


def cluster_spec(name: str, *, image: str, s3_secret: str | None, s3_endpoint: str | None,
                 s3_region: str | None = None, worker_memory_bytes: int, worker_memory_limit_bytes: int,
                 worker_cpu: str = "1",
                 worker_threads: int = 1, owner: dict | None = None, pull_policy: str = "IfNotPresent",
                 labels: dict | None = None) -> dict:
    """The DaskCluster resource (a pure function of its arguments)."""
    env = [{"name": "HOME", "value": "/tmp"}, {"name": "MPLCONFIGDIR", "value": "/tmp/matplotlib"},
           {"name": "OMP_NUM_THREADS", "value": str(worker_threads)}]
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
