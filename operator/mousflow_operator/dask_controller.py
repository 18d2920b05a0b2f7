"""The dask-kubernetes controller as the chart runs it: `kopf run --standalone -m mousflow_operator.dask_controller
--namespace NS ...` (or --all-namespaces), from the mousflow image, which has the pinned dask-kubernetes.

Importing dask-kubernetes' controller module registers its handlers with kopf. This module adds one setting:
kopf's scanning is off, because the controller serves four resources whose CRDs exist before it starts (the
chart's dask-kubernetes-crds subchart), in namespaces named exactly. kopf then neither lists nor watches
CustomResourceDefinitions and Namespaces cluster-wide, so a namespaced Role per watched namespace is all the
controller needs (the chart's dask-controller.yaml), as for the mousflow operator itself.
"""

from __future__ import annotations

import kopf
from dask_kubernetes.operator.controller import controller  # noqa: F401  (registers its handlers)


@kopf.on.startup()
def namespaced_rbac_suffices(settings: kopf.OperatorSettings, **_) -> None:
    settings.scanning.disabled = True
