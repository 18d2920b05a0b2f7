"""Dask worker pods the Kubernetes scheduler cannot place: the imaging stage stops waiting for them after a
grace period, says why in the scheduler's words, and images the chunks in its own pod instead."""

from __future__ import annotations

import contextlib

import pytest

from mousflow.stages import dask_kubernetes_cluster as kdc
from mousflow.stages import imaging_scaleout
from mousflow.stages.imaging_scaleout import ScaleOutSettings, run_chunks

INSUFFICIENT = "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available"


def _pod(phase="Pending", scheduled=None, reason="Unschedulable", since="2026-12-03T10:00:00Z"):
    conditions = [] if scheduled is None else [{"type": "PodScheduled", "status": scheduled, "reason": reason,
                                                "message": INSUFFICIENT, "lastTransitionTime": since}]
    return {"status": {"phase": phase, "conditions": conditions}}


T0 = 1796292000.0  # 2026-12-03T10:00:00Z


def test_unschedulable_only_when_no_worker_pod_is_scheduled():
    assert kdc.unschedulable_since([]) is None
    assert kdc.unschedulable_since([_pod()]) is None  # the scheduler has not said anything yet
    assert kdc.unschedulable_since([_pod(scheduled="False")]) == (T0, INSUFFICIENT)
    # one worker placed: the others may still fit later, the cluster works meanwhile
    assert kdc.unschedulable_since([_pod(scheduled="False"), _pod("Running", "True", reason="")]) is None
    earliest = kdc.unschedulable_since([_pod(scheduled="False", since="2026-12-03T10:01:00Z"),
                                        _pod(scheduled="False")])
    assert earliest == (T0, INSUFFICIENT)


class _Clock:
    def __init__(self, now: float):
        self.now = now
        self.sleeps = 0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds


def test_waiting_ends_after_the_grace_period_with_the_schedulers_reason():
    clock = _Clock(T0 + 5)
    with pytest.raises(kdc.WorkersUnschedulable, match=r"could not be scheduled for 120 s: 0/1 nodes .*cpu"):
        kdc.wait_for_workers(lambda: False, lambda: [_pod(scheduled="False")], unschedulable_seconds=120,
                             timeout_seconds=600, poll_seconds=5, clock=clock, sleep=clock.sleep)
    assert clock.now == T0 + 120


def test_a_worker_that_joins_ends_the_wait_and_a_scheduled_pod_is_not_given_up_on():
    clock = _Clock(T0)
    joined = iter([False, False, True])
    kdc.wait_for_workers(lambda: next(joined), lambda: [_pod("Pending", "True", reason="")],
                         unschedulable_seconds=1, timeout_seconds=600, poll_seconds=5, clock=clock,
                         sleep=clock.sleep)
    assert clock.sleeps == 2
    clock = _Clock(T0)
    with pytest.raises(kdc.WorkersUnschedulable, match=r"no Dask worker joined within 30 s \(worker pods: Pending\)"):
        kdc.wait_for_workers(lambda: False, lambda: [_pod("Pending", "True", reason="")],
                             unschedulable_seconds=1, timeout_seconds=30, poll_seconds=5, clock=clock,
                             sleep=clock.sleep)


def test_chunks_are_imaged_in_the_stage_pod_when_no_worker_can_be_scheduled(monkeypatch):
    @contextlib.contextmanager
    def unschedulable_client(settings, minimum, maximum):
        raise kdc.WorkersUnschedulable(f"the Dask worker pods could not be scheduled for 120 s: {INSUFFICIENT}")
        yield  # pragma: no cover

    monkeypatch.setattr(imaging_scaleout, "chunk_client", unschedulable_client)
    done = []
    # shared arguments are named with SharedArg, as the imaging stage does
    run = run_chunks([(("spw#0", c, c + 4), lambda c0, scale: {"value": c0 * scale},
                       (c, imaging_scaleout.SharedArg("scale"))) for c in range(0, 12, 4)],
                     ScaleOutSettings(mode="kubernetes"), lambda key, result: done.append((key, result["value"])),
                     shared={"scale": 10})
    assert done == [(("spw#0", 0, 4), 0), (("spw#0", 4, 8), 40), (("spw#0", 8, 12), 80)]
    assert run.fallback.startswith("the Dask worker pods could not be scheduled for 120 s: 0/1 nodes")
    assert run.fallback.endswith("the cube chunks were imaged in the stage pod")
    assert (run.workers_used, run.max_workers) == (1, 1)
