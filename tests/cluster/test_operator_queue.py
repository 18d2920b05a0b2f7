"""Twenty MOUSs applied at once: never more than the configured number in Processing, and the free places go
by deadline (fullyObservedAt + 30 days, 45 with manual work), then priority. A MOUS that has started is
deleted (which cancels its run and removes its pods), so the queue moves on without processing twenty
MOUSs on a two-core machine; the order it moves in is the one under test."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from mousflow.storage.location import Location

pytestmark = [pytest.mark.cluster, pytest.mark.exclusive, pytest.mark.usefixtures("host_s3")]
NAMESPACE_PREFIX = "queue"
LIMIT = 2
OPERATOR_ENV = {"MOUSFLOW_MAX_PROCESSING": str(LIMIT)}
BASE = datetime(2026, 10, 1, tzinfo=UTC)


def _queue(tiny_s3_mous: str) -> list[dict]:
    """20 MOUSs on the same data with shuffled deadlines; two share a deadline and differ in priority, and
    one with manual work gets 45 days instead of 30."""
    base = yaml.safe_load(Location(f"{tiny_s3_mous}/mous.yaml").read_text())
    days = list(range(20))
    random.Random(7).shuffle(days)
    docs = []
    for i, day in enumerate(days):
        doc = json.loads(json.dumps(base))
        name = f"q{i:02d}"
        doc["metadata"] = {"name": name}
        doc["spec"]["uid"] = f"uid://A001/X1001/X{0x100 + i:x}"
        doc["spec"]["fullyObservedAt"] = (BASE + timedelta(days=day)).strftime("%Y-%m-%dT%H:%M:%SZ")
        doc["spec"]["output"]["uri"] = f"{tiny_s3_mous}/queue/{name}"
        doc["spec"]["delivery"] = {"uri": f"{tiny_s3_mous}/queue-delivered/{name}", "automatic": False}
        docs.append(doc)
    # q-tie-hi and q-tie-lo: same deadline as each other, different priority
    docs[0]["spec"]["fullyObservedAt"] = docs[1]["spec"]["fullyObservedAt"]
    docs[0]["spec"]["priority"], docs[1]["spec"]["priority"] = 10, 90
    # the earliest observation, but with manual work: 45 days, so it moves back by 15
    earliest = min(docs, key=lambda d: d["spec"]["fullyObservedAt"])
    earliest["metadata"]["annotations"] = {"mousflow.io/manual-work": "true"}
    return docs


def _deadline(doc: dict) -> datetime:
    observed = datetime.fromisoformat(doc["spec"]["fullyObservedAt"].replace("Z", "+00:00"))
    manual = (doc["metadata"].get("annotations") or {}).get("mousflow.io/manual-work") == "true"
    return observed + timedelta(days=45 if manual else 30)


def test_twenty_mous_respect_the_limit_and_deadline_order(cluster, mous_namespace, tiny_s3_mous, operator):
    ns = mous_namespace
    docs = _queue(tiny_s3_mous)
    expected_order = [d["metadata"]["name"] for d in
                      sorted(docs, key=lambda d: (_deadline(d), -d["spec"].get("priority", 50)))]
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                      "items": docs}))
    most_at_once = 0

    def processing() -> set[str]:
        nonlocal most_at_once
        items = json.loads(cluster.kubectl("get", "mous", "-n", ns, "-o", "json"))["items"]
        now = {m["metadata"]["name"] for m in items if (m.get("status") or {}).get("phase") == "Processing"}
        most_at_once = max(most_at_once, len(now))
        return now

    started: list[str] = []
    remaining = list(expected_order)
    while remaining:
        want = min(LIMIT, len(remaining))
        try:
            now = cluster.wait_until(f"{want} MOUS(s) in Processing", lambda w=want: (p := processing()) and
                                     len(p) >= w and p, timeout=180, interval=0.5)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; started so far {started}\noperator log:\n{operator.log_tail()}") from None
        assert now == set(remaining[:want]), (f"in Processing {sorted(now)}, expected the earliest deadlines "
                                              f"{remaining[:want]} (started so far: {started})")
        started += sorted(now, key=remaining.index)
        cluster.kubectl("delete", "mous", *now, "-n", ns, "--timeout=90s")
        remaining = [n for n in remaining if n not in now]

    assert started == expected_order
    assert most_at_once <= LIMIT, most_at_once
    # the manual-work MOUS was observed first but, with 45 days, did not start first
    manual = next(d["metadata"]["name"] for d in docs if d["metadata"].get("annotations"))
    assert expected_order.index(manual) > 0
    assert expected_order.index("q01") < expected_order.index("q00")  # same deadline: priority 90 before 10
