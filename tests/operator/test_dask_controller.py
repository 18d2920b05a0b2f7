"""The dask-kubernetes controller as the chart runs it (mousflow_operator.dask_controller): upstream's handlers plus
ours, registered with kopf's default registry by importing the module (what `kopf run -m` does)."""

from __future__ import annotations

import kopf

from mousflow_operator import dask_controller


def test_the_module_registers_upstreams_handlers_and_ours():
    registry = kopf.get_default_registry()
    changing = {h.id for h in registry._changing.get_all_handlers()}
    assert any(name.startswith("daskcluster_create_components") for name in changing), changing
    timers = {h.id for h in registry._spawning.get_all_handlers()}
    assert "running_once_its_scheduler_service_is" in timers, timers
    assert "namespaced_rbac_suffices" in {h.id for h in registry._activities.get_all_handlers()}


def test_a_scheduler_service_is_reachable_unless_a_load_balancer_without_an_address():
    assert dask_controller.scheduler_reachable({"spec": {"type": "ClusterIP"}, "status": {"loadBalancer": {}}})
    assert dask_controller.scheduler_reachable({"spec": {"type": "NodePort"}})
    assert not dask_controller.scheduler_reachable({"spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {}}})
    assert dask_controller.scheduler_reachable({"spec": {"type": "LoadBalancer"},
                                                "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}})
