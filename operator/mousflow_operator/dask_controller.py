"""The dask-kubernetes controller as the chart runs it: `kopf run --standalone -m mousflow_operator.dask_controller
--namespace NS ...` (or --all-namespaces), from the mousflow image, which has the pinned dask-kubernetes.

Importing dask-kubernetes' controller module registers its handlers with kopf. This module adds two things:

- kopf's scanning is off, because the controller serves four resources whose CRDs exist before it starts (the
  chart's dask-kubernetes-crds subchart), in namespaces named exactly. kopf then neither lists nor watches
  CustomResourceDefinitions and Namespaces cluster-wide, so a namespaced Role per watched namespace is all the
  controller needs (the chart's dask-controller.yaml), as for the mousflow operator itself.
- a DaskCluster is not left Pending once its scheduler Service is there. In dask-kubernetes 2026.3 the handler
  that creates a cluster's scheduler, Service and worker group ends by setting the phase to Pending, while the
  handler of the new Service's status sets it to Running directly; when the Service's event is handled before
  the creating handler has finished (a ClusterIP Service has its status at once), Pending comes last and stays,
  and the imaging pod's KubeCluster waits for Running until it gives up. Seen on the test bed.
"""

from __future__ import annotations

import kopf
import kr8s
from dask_kubernetes.operator.controller import controller  # noqa: F401  (registers its handlers)
from kr8s.asyncio.objects import Service


@kopf.on.startup()
def namespaced_rbac_suffices(settings: kopf.OperatorSettings, **_) -> None:
    settings.scanning.disabled = True


def scheduler_reachable(service: dict) -> bool:
    """Whether clients can reach a scheduler Service: any but a LoadBalancer still without an address."""
    if service.get("spec", {}).get("type") != "LoadBalancer":
        return True
    return bool(service.get("status", {}).get("loadBalancer", {}).get("ingress"))


@kopf.timer("daskcluster.kubernetes.dask.org", interval=2.0, initial_delay=2.0,
            when=lambda status, **_: status.get("phase") == "Pending")
async def running_once_its_scheduler_service_is(name: str | None, namespace: str | None, patch: kopf.Patch,
                                                logger: kopf.Logger, **_) -> None:
    # a timer, not a handler of the phase's change: kopf can count the creating handler's own Pending as
    # already handled, and this must run whatever wrote the phase last
    try:
        service = await Service.get(f"{name}-scheduler", namespace=namespace)
    except kr8s.NotFoundError:
        return  # the Service's own status handler sets the phase when the Service comes
    if scheduler_reachable(service.raw):
        logger.info("scheduler service %s-scheduler is there: phase Running", name)
        patch.status["phase"] = "Running"
