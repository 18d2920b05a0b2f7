"""The stage runner's test-only memory hook (MOUSFLOW_TEST_GROW_MEMORY), without a pod: the container's memory
figures stand in for the cgroup's."""

from __future__ import annotations

import time
from types import SimpleNamespace

from mousflow.stages import runner
from mousflow.storage.location import Location

MiB = 2**20


def _fake_container(monkeypatch, limit: int):
    """A container whose working set is what the hook has taken so far over 100 MiB."""
    taken = []

    def memory():
        return (100 * MiB + sum(taken), limit)

    import numpy as np  # the hook imports it itself: its allocations are counted, not made

    def ones(n, dtype):
        taken.append(n)
        return np.empty(1, dtype=dtype)

    monkeypatch.setattr(runner, "container_memory", memory)
    monkeypatch.setattr(np, "ones", ones)
    return taken


def test_the_grow_hook_grows_to_its_factor_of_the_limit_holds_it_and_runs_once_per_run_root(monkeypatch, tmp_path):
    taken = _fake_container(monkeypatch, limit=200 * MiB)
    ctx = SimpleNamespace(name="calibration", run_root=Location.of(tmp_path))
    monkeypatch.setenv(runner.TEST_GROW_MEMORY, "calibration:1.1:0.4")
    started = time.monotonic()
    assert runner._grow_once_if_asked(ctx, step_seconds=0) is not None
    assert time.monotonic() - started >= 0.4  # held before the stage's work
    assert 100 * MiB + sum(taken) >= 220 * MiB > 100 * MiB + sum(taken[:-1])  # stopped at 1.1 x the limit
    assert taken[0] == 32 * MiB and taken[-1] == 4 * MiB  # fast to 3/4 of the limit, then slowly
    assert runner._grow_once_if_asked(ctx, step_seconds=0) is None  # once per run root


def test_the_grow_hook_does_nothing_for_another_stage_or_without_a_hold(monkeypatch, tmp_path):
    _fake_container(monkeypatch, limit=200 * MiB)
    ctx = SimpleNamespace(name="imaging", run_root=Location.of(tmp_path))
    monkeypatch.setenv(runner.TEST_GROW_MEMORY, "calibration:1.1")
    assert runner._grow_once_if_asked(ctx, step_seconds=0) is None
    ctx = SimpleNamespace(name="calibration", run_root=Location.of(tmp_path))
    started = time.monotonic()
    assert runner._grow_once_if_asked(ctx, step_seconds=0) is not None
    assert time.monotonic() - started < 0.3
