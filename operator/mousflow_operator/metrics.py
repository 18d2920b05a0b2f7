"""The operator's Prometheus metrics: MOUSs by phase, phase transitions, flow runs under way.

Served by prometheus_client's own HTTP server (a daemon thread) on MOUSFLOW_METRICS_PORT; the chart's metrics
Service and optional ServiceMonitor point at it. Phases are counted from what the reconcile timer last saw of
each MOUS in this process, so the figures describe what this operator is handling, not a cluster-wide census.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from mousflow.model import Phase


class OperatorMetrics(Collector):
    """Metrics of one operator process, in a registry of their own (no default process collectors twice)."""

    def __init__(self, active_runs: Callable[[], int] = lambda: 0):
        self.registry = CollectorRegistry(auto_describe=True)
        self._lock = threading.Lock()
        self._phases: dict[str, str] = {}
        self.active_runs = active_runs
        self.transitions = Counter("mousflow_phase_transitions", "MOUS phase transitions made by the operator",
                                   ["from_phase", "to_phase"], registry=self.registry)
        self.registry.register(self)

    def observe(self, key: str, phase: str) -> None:
        with self._lock:
            self._phases[key] = phase

    def forget(self, key: str) -> None:
        with self._lock:
            self._phases.pop(key, None)

    def transition(self, key: str, old: str, new: str) -> None:
        self.transitions.labels(from_phase=old, to_phase=new).inc()
        self.observe(key, new)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            counts = {p.value: 0 for p in Phase}
            for phase in self._phases.values():
                counts[phase] = counts.get(phase, 0) + 1
        by_phase = GaugeMetricFamily("mousflow_mous", "MOUSs handled by this operator, by phase", labels=["phase"])
        for phase, n in sorted(counts.items()):
            by_phase.add_metric([phase], n)
        yield by_phase
        yield GaugeMetricFamily("mousflow_flow_runs_active", "Flow runs this operator is executing now",
                                value=self.active_runs())

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)
