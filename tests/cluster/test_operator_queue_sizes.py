"""Least-slack-first admission on the real test bed, with MOUSs of different sizes: two tiny MOUSs (1 execution
block, 2 windows) and a small one (2 execution blocks, 4 windows) applied at once to an operator with one
processing slot, taken by a fourth MOUS while they are checked, and a history of stage durations. When the slot
frees, the tiny ones have the earlier deadlines, but both have time
to spare; the small one, started after them, would finish after its deadline, so it starts first. Earliest
deadline first (the order without predictions) would have started the tiny ones first.

The history holds one record per stage for the tiny MOUS's data (600 s each): the durations are the test's input,
the predictions and the admission order the operator's. Deadlines are set from those predictions, so the
scenario holds whatever the rates: tiny deadlines at now + 1.2 p and now + 2.2 p (p: a tiny MOUS's predicted
time; one slot, so in deadline order they end at p and 2 p), the small one's at now + B + 1.5 p (B: its
predicted time; in deadline order it would end at 2 p + B). Started MOUSs are deleted (as in
test_operator_queue), so nothing is processed for long."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from harness import simulate_into

from mousflow.model import load_manifest
from mousflow.pipeline.demand import demand_of
from mousflow.pipeline.history import PROCESSING_STAGES, History, StageRecord
from mousflow.pipeline.resources import model_peak_bytes
from mousflow.storage.location import Location

pytestmark = [pytest.mark.cluster, pytest.mark.exclusive, pytest.mark.usefixtures("host_s3")]
NAMESPACE_PREFIX = "queue-sizes"
STAGE_SECONDS = 600.0


@pytest.fixture(scope="module")
def small_s3_mous(s3_env, tiny_s3_mous) -> str:
    """The `small` preset (2 execution blocks, 4 windows) simulated into the session's bucket."""
    return simulate_into(s3_env, "small", f"{tiny_s3_mous.rsplit('/', 1)[0]}/small-{uuid.uuid4().hex[:6]}")


@pytest.fixture(scope="module")
def history_uri(s3_env, tiny_s3_mous) -> str:
    """One record per stage of the tiny MOUS's data, STAGE_SECONDS each."""
    uri = f"{tiny_s3_mous.rsplit('/', 1)[0]}/queue-history-{uuid.uuid4().hex[:6]}"
    with pytest.MonkeyPatch.context() as mp:
        for k, v in s3_env.items():
            mp.setenv(k, v)
        tiny = load_manifest(Location(f"{tiny_s3_mous}/mous.yaml").read_text())
        demand = demand_of(tiny)
        history = History(Location(uri))
        for stage in PROCESSING_STAGES:
            model = model_peak_bytes(stage, demand)
            history.add(StageRecord(stage, tiny.spec.uid, asdict(demand), model, model, model, STAGE_SECONDS))
    return uri


@pytest.fixture(scope="module")
def operator_overrides(history_uri) -> dict[str, str]:
    return {"MOUSFLOW_HISTORY": history_uri, "MOUSFLOW_MAX_PROCESSING": "1"}


def _doc(source: str, name: str, deadline: datetime) -> dict:
    doc = yaml.safe_load(Location(f"{source}/mous.yaml").read_text())
    doc["metadata"] = {"name": name}
    doc["spec"]["uid"] = f"uid://A001/X1002/X{uuid.uuid4().hex[:4]}"
    doc["spec"]["fullyObservedAt"] = (deadline - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    doc["spec"]["output"]["uri"] = f"{source}/queue-sizes/{name}"
    doc["spec"]["delivery"] = {"uri": f"{source}/queue-sizes-delivered/{name}", "automatic": False}
    return doc


def test_a_large_mous_that_would_miss_its_deadline_starts_before_small_ones_with_time_to_spare(
        cluster, mous_namespace, tiny_s3_mous, small_s3_mous, history_uri, operator):
    ns = mous_namespace
    history = History(Location(history_uri))
    p, _ = history.predict_processing_seconds(demand_of(load_manifest(Location(f"{tiny_s3_mous}/mous.yaml")
                                                                      .read_text())))
    big, _ = history.predict_processing_seconds(demand_of(load_manifest(Location(f"{small_s3_mous}/mous.yaml")
                                                                        .read_text())))
    assert p and big and big > p, (p, big)
    def statuses() -> dict[str, dict]:
        items = json.loads(cluster.kubectl("get", "mous", "-n", ns, "-o", "json"))["items"]
        return {m["metadata"]["name"]: m.get("status") or {} for m in items}

    # the slot taken first, so the three wait in the queue, checked and predicted, when it frees
    now = datetime.now(UTC)
    blocker = _doc(tiny_s3_mous, "ahead", now - timedelta(days=1))
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(blocker))
    cluster.wait_until("the first MOUS in Processing", lambda: statuses().get("ahead", {}).get("phase") ==
                       "Processing", timeout=240, interval=0.5)
    docs = [_doc(tiny_s3_mous, "tiny-1", now + timedelta(seconds=1.2 * p)),
            _doc(tiny_s3_mous, "tiny-2", now + timedelta(seconds=2.2 * p)),
            _doc(small_s3_mous, "small", now + timedelta(seconds=big + 1.5 * p))]
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                      "items": docs}))
    names = [d["metadata"]["name"] for d in docs]
    cluster.wait_until("the three checked and predicted", lambda: all(
        statuses().get(n, {}).get("predictedCompletionReason") == "Predicted" for n in names), timeout=300,
        interval=1)
    cluster.kubectl("delete", "mous", "ahead", "-n", ns, "--timeout=90s")

    started: list[str] = []
    remaining = ["tiny-1", "tiny-2", "small"]
    while remaining:
        try:
            now_processing = cluster.wait_until("a MOUS in Processing", lambda: [
                n for n, st in statuses().items() if st.get("phase") == "Processing"], timeout=240, interval=0.5)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; started so far {started}\n{operator.log_tail()}") from None
        assert len(now_processing) == 1, now_processing  # one slot
        name = now_processing[0]
        if not started:
            # what the operator predicted, with its reason, for every MOUS it had queued
            sts = statuses()
            brief = {n: {k: st.get(k) for k in ("phase", "predictedCompletionReason", "predictedProcessingSeconds",
                                                 "predictedCompletion", "deadline")} for n, st in sts.items()}
            assert name == "small", (name, brief, p, big, operator.log_tail())
            for n, seconds in (("small", big), ("tiny-1", p), ("tiny-2", p)):
                assert brief[n]["predictedCompletionReason"] == "Predicted", brief
                assert abs(brief[n]["predictedProcessingSeconds"] - seconds) <= 0.1 * seconds, (brief, p, big)
        started.append(name)
        cluster.kubectl("delete", "mous", name, "-n", ns, "--timeout=90s")
        remaining.remove(name)
    # least slack first: the small MOUS, at risk in deadline order, went before the tiny ones with time to spare;
    # then earliest deadline first
    assert started == ["small", "tiny-1", "tiny-2"], started
