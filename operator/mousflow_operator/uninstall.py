"""The chart's pre-delete hook: stop the operator (and the chart's Dask controller), then make sure none of their
finalizers is left behind, so that `helm uninstall` needs no step before it.

Without it, `helm uninstall` deletes the operator's Deployment and its Role at the same moment: the operator's
own clean-up on SIGTERM (handlers.mous_cleanup) can be refused, and every MOUS keeps a finalizer that nothing
removes any more (deleting it, or its namespace, would hang). The hook runs before anything is deleted:

1. scale each Deployment to zero replicas (its pod gets SIGTERM; the operator releases its finalizers itself);
2. wait until their pods are gone (at most --timeout seconds): only then can nothing put a finalizer back;
3. take the finalizer off whatever still has it: a MOUS of an operator that had crashed or was killed at the
   end of its grace period, and, with --dask, the DaskClusters and DaskAutoscalers of the Dask controller
   (kopf never releases its finalizer on exit).

Usage: python -m mousflow_operator.uninstall --namespace RELEASE_NS --deployment NAME [--deployment NAME ...]
       [--watch-namespaces a,b] (empty: all namespaces) [--dask] [--timeout 120]
Its permissions come from a ServiceAccount and Role(s) the chart creates for the hook alone and deletes after
it (templates/uninstall-hook.yaml).
"""

from __future__ import annotations

import argparse
import sys
import time

from mousflow.kube_config import load_kube_config
from mousflow_operator.finalizers import CAMPAIGN_RESOURCE, FINALIZER, KOPF_DEFAULT_FINALIZER, release_finalizers

DASK_RESOURCES = (("kubernetes.dask.org", "v1", "daskclusters"), ("kubernetes.dask.org", "v1", "daskautoscalers"))


def stop_deployments(namespace: str, names: list[str], timeout: float, poll: float = 2.0) -> list[str]:
    """Scale the Deployments to zero and wait for their pods to be gone; returns the pods still there at the
    timeout (a Deployment that does not exist is already stopped)."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    apps, core = client.AppsV1Api(), client.CoreV1Api()
    selectors = []
    for name in names:
        try:
            deployment = apps.read_namespaced_deployment(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                print(f"deployment {name}: not found")
                continue
            raise
        labels = deployment.spec.selector.match_labels or {}
        selectors.append(",".join(f"{k}={v}" for k, v in sorted(labels.items())))
        apps.patch_namespaced_deployment_scale(name, namespace, {"spec": {"replicas": 0}},
                                               _content_type="application/merge-patch+json")
        print(f"deployment {name}: scaled to 0")
    deadline = time.monotonic() + timeout
    while True:
        remaining = [p.metadata.name for selector in selectors
                     for p in core.list_namespaced_pod(namespace, label_selector=selector).items]
        if not remaining or time.monotonic() > deadline:
            return remaining
        time.sleep(poll)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mousflow_operator.uninstall", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--namespace", required=True, help="the release namespace (where the Deployments are)")
    parser.add_argument("--deployment", action="append", default=[], help="a Deployment to stop (repeatable)")
    parser.add_argument("--watch-namespaces", default="", help="comma-separated; empty: all namespaces")
    parser.add_argument("--dask", action="store_true", help="also release the Dask controller's finalizers")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for the pods to go (the operator's grace period is 60 s)")
    args = parser.parse_args(argv)
    from kubernetes.client.rest import ApiException

    load_kube_config()
    remaining = stop_deployments(args.namespace, args.deployment, args.timeout)
    if remaining:
        # released anyway: a pod past its grace period is being killed, and one on a lost node runs nothing
        print(f"still terminating after {args.timeout:.0f}s: {', '.join(remaining)}")
    namespaces = tuple(n for n in args.watch_namespaces.replace(",", " ").split() if n)
    print(f"finalizer {FINALIZER} taken off {release_finalizers(namespaces, FINALIZER)} MOUS(s)")
    try:  # a cluster whose MOUSCampaign CRD was never installed has no campaign to release
        released = release_finalizers(namespaces, FINALIZER, CAMPAIGN_RESOURCE)
        print(f"finalizer {FINALIZER} taken off {released} MOUSCampaign(s)")
    except ApiException as exc:
        if exc.status != 404:
            raise
    if args.dask:
        for resource in DASK_RESOURCES:
            released = release_finalizers(namespaces, KOPF_DEFAULT_FINALIZER, resource)
            print(f"finalizer {KOPF_DEFAULT_FINALIZER} taken off {released} {resource[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
