"""A run that failed because S3 or the Prefect server could not be reached is waited out with a backoff, shown
as the Waiting condition, and not spent from the run-retry budget (lifecycle.run_retry, runs.run_failure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from mousflow.model import Phase
from mousflow_operator.lifecycle import conditions_for, run_retry
from mousflow_operator.runs import run_failure

POLICY = {"max_attempts": 3, "backoff": 10.0, "max_wait_delay": 300.0, "give_up_after": 3600.0}
T0 = datetime(2026, 12, 4, tzinfo=UTC)


def test_transient_failures_are_waited_out_with_a_capped_backoff_and_not_counted():
    # the waits of a streak: 10, 20, 40, ... capped at 300 s
    assert [run_retry("Unavailable", True, a, a - 1, a - 1, 60.0, **POLICY).delay for a in range(1, 8)] == \
        [10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0]
    assert {run_retry("Unavailable", True, a, a - 1, a - 1, 60.0, **POLICY).kind for a in range(1, 20)} == {"wait"}
    # attempt 6 after 4 waits: the 2nd counted attempt, so another counted retry, the backoff of the 2nd
    step = run_retry("Error", True, 6, 4, 0, 0.0, **POLICY)
    assert (step.kind, step.delay) == ("retry", 20.0)
    # the 3rd counted attempt failing ends it, however many waits came before
    assert run_retry("Error", True, 7, 4, 0, 0.0, **POLICY).kind == "fail"
    assert run_retry("Error", True, 3, 0, 0, 0.0, **POLICY).kind == "fail"
    # a failure no retry can fix is never waited out or retried
    assert run_retry("InvalidInput", False, 1, 0, 0, 0.0, **POLICY).kind == "fail"


def test_a_service_away_longer_than_the_give_up_time_counts_as_a_failure():
    assert run_retry("Unavailable", True, 9, 8, 8, 3599.0, **POLICY).kind == "wait"
    step = run_retry("Unavailable", True, 9, 8, 8, 3601.0, **POLICY)
    assert step.kind == "retry"  # counted: attempt 9 - 8 waits = the first counted one
    assert run_retry("Unavailable", True, 11, 8, 0, 7200.0, **POLICY).kind == "fail"


def test_the_waiting_condition_is_true_while_waiting_and_false_after():
    waiting = {c.type: c for c in conditions_for([], Phase.PROCESSING, "Admitted", "go", (), T0,
                                                  waiting="Unavailable: cannot reach the object store")}
    assert waiting["Waiting"].status == "True" and waiting["Waiting"].reason == "Unavailable"
    assert "object store" in waiting["Waiting"].message
    assert waiting["Degraded"].status == "False" and waiting["Progressing"].status == "True"
    later = T0 + timedelta(minutes=2)
    after = {c.type: c for c in conditions_for(list(waiting.values()), Phase.PROCESSING, "Admitted", "go", (),
                                                later)}
    assert after["Waiting"].status == "False" and after["Waiting"].last_transition_time == later
    # a MOUS that never waited carries no Waiting condition at all
    assert "Waiting" not in {c.type for c in conditions_for([], Phase.PROCESSING, "Admitted", "go", (), T0)}


def test_a_flow_run_that_could_not_reach_s3_or_prefect_is_unavailable(monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://prefect:4200/api")
    prefect = run_failure(httpx.ConnectError("[Errno 111] Connection refused"))
    assert (prefect.reason, prefect.retryable) == ("Unavailable", True)
    assert "cannot reach http://prefect:4200/api" in prefect.message
    try:  # what a flow sees: its own error raised from the connection's
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except OSError as exc:
            raise RuntimeError("could not write the stage status") from exc
    except RuntimeError as exc:
        wrapped = run_failure(exc)
    assert wrapped.reason == "Unavailable" and "Connection refused" in wrapped.message
    assert run_failure(KeyError("stages")).reason == "Error"
