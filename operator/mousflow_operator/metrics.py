"""The operator's Prometheus metrics: MOUSs by phase, phase transitions, flow runs under way, and the KPI.

Served by prometheus_client's own HTTP server (a daemon thread) on MOUSFLOW_METRICS_PORT; the chart's metrics
Service and optional ServiceMonitor point at it. Gauges are computed at scrape time from what the
reconciliation last saw of each MOUS in this process (mousflow.kpi), so they describe what this operator is handling,
not a cluster-wide census. Counters and histograms are observed once per event the operator sees
(mousflow_operator.kpi_events): a stage finishing, a retry, a QA2 verdict, a delivery. No label names a MOUS.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from mousflow import kpi
from mousflow.model import MOUSStatus, Phase
from mousflow.pipeline.kubernetes import RESIZED
from mousflow_operator import kpi_events

DAY = kpi.DAY_SECONDS
DELIVERY_BUCKETS_DAYS = (1, 2, 5, 7, 10, 14, 20, 25, 30, 35, 40, 45, 50, 60)
STAGE_SECONDS_BUCKETS = (10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400)
MEMORY_BYTES_BUCKETS = tuple(2.0**k for k in range(27, 39))  # 128 MiB .. 256 GiB, doubling
REQUEST_TO_PEAK_BUCKETS = (0.5, 0.8, 1.0, 1.2, 1.5, 2.0, 3.0, 5.0, 10.0)
ETA_ERROR_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)


class OperatorMetrics(Collector):
    """Metrics of one operator process, in a registry of their own (no default process collectors twice)."""

    def __init__(self, active_runs: Callable[[], int] = lambda: 0,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.registry = CollectorRegistry(auto_describe=True)
        self._lock = threading.Lock()
        self._phases: dict[str, str] = {}
        self._facts: dict[str, kpi.MOUSFacts] = {}
        self._stages_seen: dict[str, set[tuple[str, str]]] = {}
        """Per MOUS, the (stage, finishedAt) already observed: two reconciliations racing on one stale status
        (an event's and a timer's) both see the stage newly succeeded, and it must count once."""
        self.active_runs = active_runs
        self.clock = clock
        r = self.registry
        self.transitions = Counter("mousflow_phase_transitions", "MOUS phase transitions made by the operator",
                                   ["from_phase", "to_phase"], registry=r)
        self.delivery = Histogram("mousflow_delivery_duration_seconds",
                                  "Time from fullyObservedAt to Delivered, per delivered MOUS",
                                  buckets=[d * DAY for d in DELIVERY_BUCKETS_DAYS], registry=r)
        self.stage_duration = Histogram("mousflow_stage_duration_seconds", "Wall time of a succeeded stage",
                                        ["stage"], buckets=STAGE_SECONDS_BUCKETS, registry=r)
        self.stage_peak = Histogram("mousflow_stage_peak_memory_bytes", "Measured peak resident memory of a stage",
                                    ["stage"], buckets=MEMORY_BYTES_BUCKETS, registry=r)
        self.stage_requested = Histogram("mousflow_stage_requested_memory_bytes",
                                         "Memory requested for a stage's pod (its last attempt)", ["stage"],
                                         buckets=MEMORY_BYTES_BUCKETS, registry=r)
        self.request_to_peak = Histogram("mousflow_stage_memory_request_to_peak_ratio",
                                         "Requested memory / measured peak of a stage (above 1: headroom)",
                                         ["stage"], buckets=REQUEST_TO_PEAK_BUCKETS, registry=r)
        self.retries = Counter("mousflow_stage_retries", "Stage attempts run again, by reason (OOMKilled, "
                               "Interrupted)", ["reason"], registry=r)
        self.resizes = Counter("mousflow_stage_resizes_in_place", "Running stage pods whose memory limit was raised "
                               "in place (the resize subresource) instead of an out-of-memory kill", registry=r)
        self.qa2 = Counter("mousflow_qa2_verdicts", "QA2 verdicts of finished flow runs", ["verdict"], registry=r)
        self.eta_error = Histogram("mousflow_eta_error_ratio", "|actual - predicted| / actual processing time of "
                                   "a finished MOUS (prediction made before it started)",
                                   buckets=ETA_ERROR_BUCKETS, registry=r)
        self.registry.register(self)

    def observe(self, key: str, phase: str, facts: kpi.MOUSFacts | None = None) -> None:
        with self._lock:
            self._phases[key] = phase
            if facts is not None:
                self._facts[key] = facts

    def forget(self, key: str) -> None:
        with self._lock:
            self._phases.pop(key, None)
            self._facts.pop(key, None)
            self._stages_seen.pop(key, None)

    def transition(self, key: str, old: str, new: str) -> None:
        self.transitions.labels(from_phase=old, to_phase=new).inc()
        self.observe(key, new)

    def record_changes(self, key: str, fully_observed_at: datetime, old: MOUSStatus, new: MOUSStatus) -> None:
        """Observe what one reconciliation changed (old -> new status) and keep the MOUS's KPI facts."""
        for st in kpi_events.finished_stages(old, new):
            finished = new.stages[st.stage].finished_at
            with self._lock:
                seen = self._stages_seen.setdefault(key, set())
                if (st.stage, str(finished)) in seen:
                    continue
                seen.add((st.stage, str(finished)))
            self.stage_duration.labels(stage=st.stage).observe(st.wall_seconds)
            if st.peak_memory_bytes:
                self.stage_peak.labels(stage=st.stage).observe(st.peak_memory_bytes)
            if st.requested_memory_bytes:
                self.stage_requested.labels(stage=st.stage).observe(st.requested_memory_bytes)
            if st.peak_memory_bytes and st.requested_memory_bytes:
                self.request_to_peak.labels(stage=st.stage).observe(st.requested_memory_bytes / st.peak_memory_bytes)
        for reason in kpi_events.new_retry_reasons(old, new):
            if reason == RESIZED:
                self.resizes.inc()
            else:
                self.retries.labels(reason=reason).inc()
        if kpi_events.run_finished(old, new):
            if new.qa2 is not None:
                self.qa2.labels(verdict=new.qa2.verdict.value).inc()
            error = kpi_events.prediction_error(new)
            if error is not None:
                self.eta_error.observe(error)
        facts = kpi_events.mous_facts(key, fully_observed_at, new)
        if kpi_events.just_delivered(old, new) and facts is not None and facts.delivered_at is not None:
            self.delivery.observe((facts.delivered_at - fully_observed_at).total_seconds())
        self.observe(key, Phase(new.phase).value, facts)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            counts = {p.value: 0 for p in Phase}
            for phase in self._phases.values():
                counts[phase] = counts.get(phase, 0) + 1
            facts = list(self._facts.values())
        now = self.clock()
        by_phase = GaugeMetricFamily("mousflow_mous", "MOUSs handled by this operator, by phase", labels=["phase"])
        for phase, n in sorted(counts.items()):
            by_phase.add_metric([phase], n)
        yield by_phase
        yield GaugeMetricFamily("mousflow_flow_runs_active", "Flow runs this operator is executing now",
                                value=self.active_runs())
        fraction = kpi.delivered_within_deadline_fraction(facts, now)
        yield GaugeMetricFamily("mousflow_delivered_within_deadline_ratio",
                                f"Of the MOUSs delivered in the last {kpi.WINDOW_DAYS} days, the fraction delivered "
                                f"by their deadline (KPI: >= {kpi.TARGET_FRACTION}; NaN: no deliveries)",
                                value=math.nan if fraction is None else fraction)
        yield GaugeMetricFamily("mousflow_mous_overdue", "MOUSs still owed whose deadline has passed",
                                value=kpi.overdue_count(facts, now))
        yield GaugeMetricFamily("mousflow_mous_at_risk", "MOUSs owed, not overdue, whose predicted completion is "
                                "after their deadline", value=kpi.at_risk_count(facts, now))
        depth = GaugeMetricFamily("mousflow_queue_depth", "Waiting MOUSs (FullyObserved, ReadyForProcessing) with "
                                  "at most le_days days left to their deadline (cumulative)", labels=["le_days"])
        for le, n in kpi.queue_depth_by_days_to_deadline(facts, now).items():
            depth.add_metric([le], n)
        yield depth

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)
