"""The chart's Grafana dashboard and PrometheusRule (off by default): rendered with `helm template`, every metric
their queries use is one the operator exports (its /metrics exposition, generated in-process and parsed with
prometheus_client's text parser), every alert has a `for`, a severity and a summary, and Prometheus's own promtool
accepts the rules and passes their unit tests (an alert fires on the series that should fire it, and only
then). A real Prometheus server scraping the installed operator: tests/cluster/test_helm_release.py."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from test_chart import CHART, by_kind, render

from mousflow.model import MOUSStatus
from mousflow_operator.metrics import OperatorMetrics

# from kube-state-metrics, not the operator: the operator's restarts
EXTERNAL = {"kube_pod_container_status_restarts_total"}
METRIC = re.compile(r"\b([a-z_][a-z0-9_]*_[a-z0-9_]+)\b(?!\s*\()")
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless"}
LABELS = {"le", "le_days", "stage", "reason", "verdict", "phase", "from_phase", "to_phase", "namespace", "pod",
          "container"}


def exported_names() -> set[str]:
    """Every sample name the operator's /metrics exposition has once each kind of event has been seen."""
    m = OperatorMetrics()
    now = datetime.now(UTC)
    stage = {"state": "Succeeded", "retries": [{"job": "j", "reason": "OOMKilled"}],
             "resources": {"requested": {"memory": "1Gi"}, "used": {"wallSeconds": 5.0, "peakMemoryBytes": 2**29}}}
    before = MOUSStatus.model_validate({"phase": "Processing", "deadline": now.isoformat()})
    after = MOUSStatus.model_validate({"phase": "ReadyForReview", "deadline": now.isoformat(), "qa2": {
        "verdict": "Fail"}, "predictedProcessingSeconds": 4.0, "stages": {"calibration": stage}})
    delivered = MOUSStatus.model_validate({"phase": "Delivered", "deadline": now.isoformat(), "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": now.isoformat()}]})
    m.record_changes("ns/a", now - timedelta(days=3), before, after)
    m.record_changes("ns/a", now - timedelta(days=3), after, delivered)
    m.transition("ns/a", "ReadyForReview", "Delivered")
    text = generate_latest(m.registry).decode()
    return {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (not functions, keywords, label names or strings)."""
    expr = re.sub(r'"[^"]*"', '""', expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    return {n for n in METRIC.findall(expr) if n not in PROMQL_WORDS | LABELS}


@pytest.fixture(scope="module")
def exported() -> set[str]:
    return exported_names()


def test_the_exposition_has_the_kpi_metrics(exported):
    for name in ("mousflow_delivery_duration_seconds_bucket", "mousflow_delivered_within_deadline_ratio",
                 "mousflow_mous_overdue", "mousflow_mous_at_risk", "mousflow_queue_depth",
                 "mousflow_stage_duration_seconds_bucket", "mousflow_stage_peak_memory_bytes_bucket",
                 "mousflow_stage_requested_memory_bytes_bucket", "mousflow_stage_memory_request_to_peak_ratio_sum",
                 "mousflow_stage_retries_total", "mousflow_qa2_verdicts_total", "mousflow_eta_error_ratio_bucket"):
        assert name in exported, name


def test_metric_names_are_found_in_promql():
    assert metric_names('histogram_quantile(0.9, sum by (le, stage) (increase(mousflow_x_bucket[1d]))) / 86400') \
        == {"mousflow_x_bucket"}
    assert metric_names('sum(increase(mousflow_y_total{reason="OOM_killed"}[1h])) > 3') == {"mousflow_y_total"}


def _dashboard_exprs(dashboard: dict) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_the_dashboard_file_uses_only_exported_metrics(exported):
    dashboard = json.loads((CHART / "dashboards" / "mousflow-kpi.json").read_text())
    used = set().union(*(metric_names(e) for e in _dashboard_exprs(dashboard)))
    assert used and used <= exported, used - exported


def test_monitoring_is_off_by_default(helm):
    docs = render(helm)
    assert not by_kind(docs, "PrometheusRule")
    assert not [d for d in by_kind(docs, "ConfigMap") if d["metadata"].get("labels", {}).get("grafana_dashboard")]


def test_dashboard_and_alerts_render_and_use_exported_metrics(helm, exported):
    docs = render(helm, "metrics.grafanaDashboard.enabled=true", "metrics.prometheusRule.enabled=true",
                  "metrics.grafanaDashboard.labels.team=alma")
    [cm] = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["labels"].get("grafana_dashboard") == "1"]
    assert cm["metadata"]["labels"]["team"] == "alma"
    [dashboard] = [json.loads(v) for v in cm["data"].values()]
    titles = " / ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("within deadline", "overdue", "at risk", "queue depth", "stage duration", "memory", "retries",
                  "qa2"):
        assert topic in titles, topic
    used = set().union(*(metric_names(e) for e in _dashboard_exprs(dashboard)))
    assert used <= exported, used - exported

    [rule] = by_kind(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {"MousflowMOUSAtRisk", "MousflowOperatorCrashLooping", "MousflowQA2FailureRateHigh",
            "MousflowOOMRetries"} <= set(alerts)
    for name, r in alerts.items():
        names = metric_names(r["expr"])
        assert names and names <= exported | EXTERNAL, (name, names - exported)
        assert re.fullmatch(r"\d+[smh]", r["for"]), name
        assert r["labels"]["severity"] in ("warning", "critical"), name
        assert r["annotations"]["summary"], name
    assert "kube_pod_container_status_restarts_total" in alerts["MousflowOperatorCrashLooping"]["expr"]
    assert 'namespace="mf-test"' in alerts["MousflowOperatorCrashLooping"]["expr"]
    assert 'reason="OOMKilled"' in alerts["MousflowOOMRetries"]["expr"]


def test_bad_thresholds_are_rejected(helm):
    proc = render(helm, "metrics.prometheusRule.enabled=true", "metrics.prometheusRule.qa2FailRatio=2",
                  expect_ok=False)
    assert proc.returncode != 0 and "qa2FailRatio" in proc.stderr


def _rule_groups(helm) -> dict:
    docs = render(helm, "metrics.prometheusRule.enabled=true")
    [rule] = by_kind(docs, "PrometheusRule")
    return {"groups": rule["spec"]["groups"]}


def test_promtool_accepts_the_rules_and_they_fire_when_they_should(helm, promtool, tmp_path):
    import subprocess

    import yaml

    groups = _rule_groups(helm)
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(groups))
    at_risk_description = next(r for g in groups["groups"] for r in g["rules"]
                               if r["alert"] == "MousflowMOUSAtRisk")["annotations"]["description"]
    proc = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout + proc.stderr
    # promtool's rule unit tests: series in, alerts out, evaluated by Prometheus's own engine
    oom = 'mousflow_stage_retries_total{reason="OOMKilled"}'
    fail, passed = 'mousflow_qa2_verdicts_total{verdict="Fail"}', 'mousflow_qa2_verdicts_total{verdict="Pass"}'
    restarts = 'kube_pod_container_status_restarts_total{namespace="mf-test",pod="rel-mousflow-operator-x",' \
               'container="operator"}'
    tests = {"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": [
        {"interval": "1m",
         "input_series": [
             # at risk from minute 2 on; 30 min `for`: pending at 20, firing from 32
             {"series": "mousflow_mous_at_risk", "values": "0 0 1x40"},
             # 1 OOM retry a minute (> 3 an hour); 1 QA2 Fail in 2 verdicts (> 0.2); the KPI met (no alert)
             {"series": oom, "values": "0+1x100"},
             {"series": fail, "values": "0+1x100"},
             {"series": passed, "values": "0+1x100"},
             {"series": "mousflow_delivered_within_deadline_ratio", "values": "1x100"},
             # the operator restarting every 2 minutes
             {"series": restarts, "values": "0+0.5x100"}],
         "alert_rule_test": [
             {"eval_time": "20m", "alertname": "MousflowMOUSAtRisk", "exp_alerts": []},
             {"eval_time": "35m", "alertname": "MousflowMOUSAtRisk",
              "exp_alerts": [{"exp_labels": {"severity": "warning"}, "exp_annotations": {
                  "summary": "1 MOUS(s) predicted to finish processing after their delivery deadline",
                  "description": at_risk_description}}]},
             {"eval_time": "40m", "alertname": "MousflowOOMRetries",
              "exp_alerts": [{"exp_labels": {"severity": "warning"}, "exp_annotations": {
                  "summary": "40 stage attempts OOM-killed in the last hour: the resource model underestimates"}}]},
             {"eval_time": "30m", "alertname": "MousflowQA2FailureRateHigh", "exp_alerts": []},
             {"eval_time": "90m", "alertname": "MousflowQA2FailureRateHigh",
              "exp_alerts": [{"exp_labels": {"severity": "warning"}, "exp_annotations": {
                  "summary": "50% of the QA2 verdicts of the last day were Fail"}}]},
             {"eval_time": "90m", "alertname": "MousflowDeliveryKPIBelowTarget", "exp_alerts": []},
             {"eval_time": "30m", "alertname": "MousflowOperatorCrashLooping",
              "exp_alerts": [{"exp_labels": {"severity": "critical", "namespace": "mf-test",
                                             "pod": "rel-mousflow-operator-x", "container": "operator"},
                             "exp_annotations": {
                                 "summary": "The mousflow operator restarted 7.5 times in 15 minutes"}}]}]}]}
    spec = tmp_path / "rules-test.yaml"
    spec.write_text(yaml.safe_dump(tests))
    proc = subprocess.run([promtool, "test", "rules", str(spec)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
