"""The operator's Prometheus endpoint: MOUSs by phase, transitions, active flow runs, served over HTTP."""

import socket
import urllib.request

from prometheus_client import generate_latest

from mousflow_operator.metrics import OperatorMetrics
from mousflow_operator.settings import OperatorSettings


def _value(text: str, sample: str) -> float:
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{sample} not in\n{text}")


def test_phases_transitions_and_active_runs_are_counted():
    active = {"n": 1}
    m = OperatorMetrics(active_runs=lambda: active["n"])
    m.observe("ns/a", "FullyObserved")
    m.observe("ns/b", "FullyObserved")
    m.transition("ns/a", "FullyObserved", "ReadyForProcessing")
    text = generate_latest(m.registry).decode()
    assert _value(text, 'mousflow_mous{phase="FullyObserved"}') == 1
    assert _value(text, 'mousflow_mous{phase="ReadyForProcessing"}') == 1
    assert _value(text, 'mousflow_mous{phase="Delivered"}') == 0
    assert _value(text, 'mousflow_phase_transitions_total{from_phase="FullyObserved",'
                        'to_phase="ReadyForProcessing"}') == 1
    assert _value(text, "mousflow_flow_runs_active") == 1
    m.forget("ns/b")
    active["n"] = 0
    text = generate_latest(m.registry).decode()
    assert _value(text, 'mousflow_mous{phase="FullyObserved"}') == 0
    assert _value(text, "mousflow_flow_runs_active") == 0


def test_metrics_are_served_over_http():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    m = OperatorMetrics()
    m.observe("ns/a", "Processing")
    m.serve(port, addr="127.0.0.1")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    assert _value(text, 'mousflow_mous{phase="Processing"}') == 1


def test_health_and_metrics_settings_come_from_the_environment():
    s = OperatorSettings.from_env({"MOUSFLOW_LIVENESS_ENDPOINT": "http://0.0.0.0:8080/healthz",
                                   "MOUSFLOW_METRICS_PORT": "9090"})
    assert (s.liveness_endpoint, s.metrics_port) == ("http://0.0.0.0:8080/healthz", 9090)
    assert (OperatorSettings.from_env({}).liveness_endpoint, OperatorSettings.from_env({}).metrics_port) == (None, 0)
