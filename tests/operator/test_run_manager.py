"""RunManager (thread mode) runs one flow run of a MOUS at a time, whatever order the bodies come in: a new
attempt waits for an earlier run still under way, and an attempt whose outcome was taken is never executed
again by the same process (a body one patch old names it). Flow runs are stood in for by threads that block
until the test lets them end, and that record which runs were executing together."""

from __future__ import annotations

import threading

import pytest

from mousflow_operator import runs as runs_module
from mousflow_operator.runs import RunManager, RunOutcome, idempotency_key

UID = "uid://A001/X1001/Xf20"
MOUS = "alma/m1"


class _FlowRuns:
    """execute_flow_run's stand-in: each run blocks until released; which ran, and the most at once."""

    def __init__(self):
        self.lock = threading.Lock()
        self.release: dict[str, threading.Event] = {}
        self.started: list[str] = []
        self.live: set[str] = set()
        self.most_at_once = 0

    def __call__(self, key, name, parameters, output_uri, on_flow_run=lambda _id: None):
        with self.lock:
            gate = self.release.setdefault(key, threading.Event())
            self.started.append(key)
            self.live.add(key)
            self.most_at_once = max(self.most_at_once, len(self.live))
        on_flow_run(f"id-{name}")
        gate.wait(10)
        with self.lock:
            self.live.discard(key)
        return RunOutcome("failed", "Error", "stage imaging failed"), f"id-{name}"

    def end(self, key: str) -> None:
        with self.lock:
            self.release.setdefault(key, threading.Event()).set()


@pytest.fixture
def manager(monkeypatch):
    flows = _FlowRuns()
    monkeypatch.setattr(runs_module, "execute_flow_run", flows)
    woken: list[str] = []
    manager = RunManager(on_finished=woken.append)
    manager.flows, manager.woken = flows, woken
    yield manager
    for key in list(flows.release):
        flows.end(key)


def _ensure(manager, attempt=1, generation=1):
    return manager.ensure(MOUS, uid=UID, namespace="alma", manifest_text="kind: MOUS\n", output_uri="s3://o/m1",
                          generation=generation, retry_token="", attempt=attempt)


def _wait_for(handle):
    assert handle.thread is not None
    handle.thread.join(10)
    assert not handle.thread.is_alive()


def test_a_new_attempt_waits_for_the_earlier_run_still_under_way(manager):
    first = _ensure(manager, attempt=1)
    # a body naming attempt 2 while attempt 1's thread still runs (kopf handed over a newer body than the run's)
    waiting = _ensure(manager, attempt=2)
    assert waiting is not first and waiting.thread is None and waiting.outcome is None
    assert manager.get(MOUS) is first and manager.flows.started == [first.key]
    manager.flows.end(first.key)
    _wait_for(first)
    assert manager.woken == [MOUS]  # its end wakes the MOUS, whose next reconcile starts attempt 2
    second = _ensure(manager, attempt=2)
    assert second.thread is not None and manager.get(MOUS) is second
    manager.flows.end(second.key)
    _wait_for(second)
    assert manager.flows.started == [first.key, second.key] and manager.flows.most_at_once == 1
    assert second.key == idempotency_key(UID, 1, "", 2)


def test_an_attempt_whose_outcome_was_taken_is_not_executed_again(manager):
    first = _ensure(manager, attempt=1)
    manager.flows.end(first.key)
    _wait_for(first)
    assert _ensure(manager, attempt=1) is first  # its outcome is there to take
    assert manager.forget(MOUS) is first
    # a body one patch old (attempt 1 still in its annotations) starts nothing
    stale = _ensure(manager, attempt=1)
    assert stale.thread is None and stale.outcome is None and manager.get(MOUS) is None
    assert manager.flows.started == [first.key]
    # the fresh body's attempt 2 runs
    second = _ensure(manager, attempt=2)
    assert second.thread is not None and manager.flows.started == [first.key, second.key]


def test_a_new_generation_during_a_run_waits_for_it_and_never_takes_its_outcome(manager):
    old = _ensure(manager, generation=1)
    new = _ensure(manager, generation=2)
    assert new.thread is None and manager.get(MOUS) is old
    manager.flows.end(old.key)
    _wait_for(old)
    started = _ensure(manager, generation=2)
    assert started is not old and started.outcome is None and started.thread is not None
    assert manager.flows.most_at_once == 1


def test_a_deleted_mous_leaves_nothing_behind(manager):
    first = _ensure(manager)
    manager.flows.end(first.key)
    _wait_for(first)
    manager.forget(MOUS)
    manager.forget(MOUS, cancel=True)
    # a MOUS of the same name and uid created again starts from its first attempt
    again = _ensure(manager)
    assert again.thread is not None and manager.flows.started == [first.key, first.key]
