"""Manifests that run the dask-kubernetes operator (its CRDs and kopf controller) from mousflow's runner image.

dask-kubernetes ships its CRDs inside its Python package, and its controller is a kopf app
(dask_kubernetes.operator.controller), so the runner image, which has the pinned dask-kubernetes installed,
runs it: no other image or registry is needed. The CRDs are read from the installed package at render time,
so they always match the pinned version.

Printed as one YAML stream (the Helm chart can include the same objects):

- the four CRDs (daskclusters, daskworkergroups, daskjobs, daskautoscalers .kubernetes.dask.org);
- ServiceAccount, ClusterRole and ClusterRoleBinding of the controller (the rules of the upstream chart);
- the controller Deployment (restricted pod security profile, watching all namespaces);
- ClusterRole ``mousflow-dask-client``: what an imaging stage pod needs to start, adapt and delete its own
  Dask cluster. Bind it in each processing namespace to the stage service account (``--client-namespace``
  prints that ServiceAccount ``mousflow-imaging`` and its RoleBinding).

Usage: python hack/dask-operator/manifests.py --image IMAGE [--namespace mousflow-dask-operator]
       [--client-namespace NS ...] [--pull-policy IfNotPresent] | kubectl apply -f -
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import yaml

CONTROLLER = "dask-kubernetes-operator"
CLIENT_ROLE = "mousflow-dask-client"
CLIENT_SERVICE_ACCOUNT = "mousflow-imaging"


def crds() -> list[dict]:
    import dask_kubernetes

    root = pathlib.Path(dask_kubernetes.__file__).parent / "operator" / "deployment" / "helm" / \
        "dask-kubernetes-operator" / "crds"
    return [yaml.safe_load(p.read_text()) for p in sorted(root.glob("*.yaml"))]


def controller(namespace: str, image: str, pull_policy: str) -> list[dict]:
    labels = {"app.kubernetes.io/name": CONTROLLER, "app.kubernetes.io/part-of": "mousflow"}
    rules = [
        {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"], "verbs": ["list", "watch", "patch", "get"]},
        {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["list", "watch"]},
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
        {"apiGroups": ["kubernetes.dask.org"],
         "resources": ["daskclusters", "daskworkergroups", "daskjobs", "daskjobs/status", "daskautoscalers",
                       "daskworkergroups/scale", "daskclusters/status", "daskworkergroups/status",
                       "daskautoscalers/status"],
         "verbs": ["get", "list", "watch", "patch", "create", "delete"]},
        {"apiGroups": [""], "resources": ["pods", "pods/status"], "verbs": ["*"]},
        {"apiGroups": [""], "resources": ["services", "services/status"], "verbs": ["*"]},
        {"apiGroups": ["apps"], "resources": ["deployments", "deployments/status"], "verbs": ["*"]},
        {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["*"]},
    ]
    pod = {
        "serviceAccountName": CONTROLLER,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "controller",
            "image": image,
            "imagePullPolicy": pull_policy,
            "command": ["kopf", "run", "-m", "dask_kubernetes.operator.controller", "--all-namespaces",
                        "--liveness=http://0.0.0.0:8080/healthz"],
            "env": [{"name": "HOME", "value": "/tmp"}],
            "resources": {"requests": {"cpu": "50m", "memory": "192Mi"}, "limits": {"memory": "512Mi"}},
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "timeoutSeconds": 5,
                              "initialDelaySeconds": 20},
            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]}},
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        }],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": CONTROLLER, "namespace": namespace}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": f"{CONTROLLER}-mousflow"}, "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": f"{CONTROLLER}-mousflow"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": f"{CONTROLLER}-mousflow"},
         "subjects": [{"kind": "ServiceAccount", "name": CONTROLLER, "namespace": namespace}]},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": CONTROLLER, "namespace": namespace, "labels": labels},
         "spec": {"replicas": 1, "strategy": {"type": "Recreate"}, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels}, "spec": pod}}},
    ]


def client_role() -> dict:
    """What the imaging stage's KubeCluster does: create/patch/delete its DaskCluster and DaskAutoscaler, wait
    for the scheduler pod and service, read the scheduler's log if it fails to start."""
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": CLIENT_ROLE},
            "rules": [
                {"apiGroups": ["kubernetes.dask.org"],
                 "resources": ["daskclusters", "daskworkergroups", "daskautoscalers", "daskworkergroups/scale"],
                 "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
                {"apiGroups": [""], "resources": ["pods", "pods/log", "services", "endpoints"],
                 "verbs": ["get", "list", "watch"]},
            ]}


def client_binding(namespace: str) -> list[dict]:
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": CLIENT_SERVICE_ACCOUNT,
                                                                   "namespace": namespace}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": CLIENT_SERVICE_ACCOUNT, "namespace": namespace},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": CLIENT_ROLE},
         "subjects": [{"kind": "ServiceAccount", "name": CLIENT_SERVICE_ACCOUNT, "namespace": namespace}]},
    ]


def render(image: str, namespace: str = "mousflow-dask-operator", pull_policy: str = "IfNotPresent",
           client_namespaces: tuple[str, ...] = ()) -> list[dict]:
    docs = crds() + controller(namespace, image, pull_policy) + [client_role()]
    for ns in client_namespaces:
        docs += client_binding(ns)
    return docs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", required=True, help="the mousflow runner image")
    p.add_argument("--namespace", default="mousflow-dask-operator")
    p.add_argument("--pull-policy", default="IfNotPresent")
    p.add_argument("--client-namespace", action="append", default=[],
                   help="a namespace whose imaging stages start Dask clusters (repeatable)")
    a = p.parse_args()
    yaml.safe_dump_all(render(a.image, a.namespace, a.pull_policy, tuple(a.client_namespace)), sys.stdout,
                       sort_keys=False)


if __name__ == "__main__":
    main()
