"""`mousflow report`: the KPI table and per-month histograms from synthetic MOUSs (as the API returns them, and
as the history's delivery records), the page's images exist, and bad input is one line with its classified exit code."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from mousflow.cli import main
from mousflow.pipeline.history import DeliveryRecord, History
from mousflow.report import facts_from_deliveries, facts_from_resources, write_report
from mousflow.storage.location import Location

NOW = datetime(2025, 6, 30, tzinfo=UTC)


def _mous(name, observed, phase=None, delivered=None, deadline=None, manual=False):
    status = {}
    if phase:
        status["phase"] = phase
    if deadline:
        status["deadline"] = deadline
    if delivered:
        status["conditions"] = [{"type": "Ready", "status": "True", "reason": "Delivered",
                                 "lastTransitionTime": delivered}]
    return {"metadata": {"name": name, "namespace": "alma",
                         "annotations": {"mousflow.io/manual-work": "true"} if manual else {}},
            "spec": {"fullyObservedAt": observed}, "status": status}


ITEMS = [
    _mous("fast", "2025-05-01T00:00:00Z", "Delivered", "2025-05-11T00:00:00Z", "2025-05-31T00:00:00Z"),
    _mous("late", "2025-04-01T00:00:00Z", "Delivered", "2025-05-16T00:00:00Z", "2025-05-01T00:00:00Z"),
    # no status.deadline yet (operator not run): the rule, with the manual-work annotation's 45 days
    _mous("manual", "2025-04-20T00:00:00Z", "Delivered", "2025-05-30T00:00:00Z", manual=True),
    _mous("owed", "2025-05-01T00:00:00Z", "Processing"),                        # deadline 2025-05-31, overdue
    _mous("new", "2025-06-25T00:00:00Z"),
    {"metadata": {"name": "broken"}, "spec": {}},
]


def test_facts_from_the_api_use_the_status_or_the_deadline_rule():
    facts = {f.key: f for f in facts_from_resources(ITEMS)}
    assert set(facts) == {"alma/fast", "alma/late", "alma/manual", "alma/owed", "alma/new"}
    assert facts["alma/manual"].deadline == datetime(2025, 6, 4, tzinfo=UTC)
    assert facts["alma/manual"].delivered_in_time and not facts["alma/late"].delivered_in_time
    assert facts["alma/owed"].overdue(NOW) and facts["alma/new"].delivered_at is None


def test_report_table_and_plots(tmp_path):
    page = write_report(facts_from_resources(ITEMS), tmp_path / "r", NOW, "namespace alma")
    text = page.read_text()
    rows = re.findall(r"<tr><td>([0-9-]+)</td><td>(\d+)</td><td class='(\w+)'>([^<]+)</td><td>([^<]+)</td>"
                      r"<td>([^<]+)</td><td>(\d+)</td></tr>", text)
    # May: 3 delivered (10, 45, 40 days), 2 within the deadline; owed's deadline passed in May
    assert rows == [("2025-05", "3", "miss", "66.7", "40.0", "44.0", "2")]
    images = re.findall(r"<img src='([^']+)'", text)
    assert images == ["days-to-delivery-2025-05.png"]
    for name in images:
        png = page.parent / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000


def test_report_from_the_history_store(tmp_path, capsys):
    history = History(Location.of(tmp_path / "h"))
    history.add_delivery(DeliveryRecord("uid://A001/X1/X1", "alma/a", "2025-01-01T00:00:00+00:00",
                                        "2025-01-31T00:00:00+00:00", "2025-01-21T00:00:00+00:00"))
    history.add_delivery(DeliveryRecord("uid://A001/X1/X2", "alma/b", "2025-01-10T00:00:00+00:00",
                                        "2025-02-09T00:00:00+00:00", "2025-02-03T00:00:00+00:00"))
    facts = facts_from_deliveries(history.deliveries())
    assert sorted(f.days_to_delivery for f in facts) == [20.0, 24.0]
    assert main(["report", "--history", str(tmp_path / "h"), "--out", str(tmp_path / "out")]) == 0
    assert "KPI report of 2 MOUSs" in capsys.readouterr().out
    text = (tmp_path / "out" / "index.html").read_text()
    for name in re.findall(r"<img src='([^']+)'", text):
        assert (tmp_path / "out" / name).is_file()
    assert len(re.findall(r"<img src=", text)) == 2   # January and February


def _one_line_error(stderr: str) -> str:
    assert "Traceback" not in stderr and stderr.count("\n") == 1, stderr
    return stderr


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    """In a process of its own: the Kubernetes client reads KUBECONFIG when it is first imported."""
    environ = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"} | env
    return subprocess.run([sys.executable, "-m", "mousflow.cli", *args], capture_output=True, text=True,
                          env=environ, timeout=120)


def test_bad_input_is_one_line_with_its_exit_code(tmp_path, capsys):
    assert main(["report", "--history", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 4   # InvalidInput
    assert "no MOUSs to report on" in _one_line_error(capsys.readouterr().err)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("""apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
users: [{name: u, user: {token: x}}]
""")
    proc = _cli("report", "-A", "--out", str(tmp_path / "o"), KUBECONFIG=str(kubeconfig))
    assert proc.returncode == 7   # Unavailable
    assert "cannot reach the Kubernetes API at https://127.0.0.1:1" in _one_line_error(proc.stderr)
    proc = _cli("report", "--out", str(tmp_path / "o"), KUBECONFIG=str(tmp_path / "none"))
    assert proc.returncode == 4 and "cannot use the Kubernetes configuration" in _one_line_error(proc.stderr)
    assert not Path(tmp_path / "o" / "index.html").exists()
