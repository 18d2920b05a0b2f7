"""The operator's flow runs against a real (local) Prefect server: one flow run per idempotency key, and the runs
of a MOUS's earlier attempts that never recorded an end (their server was away when they failed) marked
Crashed when the next attempt starts, so Prefect never shows two runs of one MOUS at once."""

from __future__ import annotations

import pytest

from mousflow.pipeline.local_server import local_prefect_server
from mousflow_operator.runs import _get_or_create_flow_run, idempotency_key, mous_tag

pytestmark = pytest.mark.slow
UID = "uid://A001/X1001/Xf10"


class _Flow:
    name = "process-mous"


def test_a_new_attempt_crashes_the_earlier_attempts_run_left_running():
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    with local_prefect_server():
        first_key, second_key = idempotency_key(UID, 1, "", 1), idempotency_key(UID, 1, "", 2)
        other = idempotency_key("uid://A001/X1001/Xf11", 1, "", 1)
        params = {"uid": UID}
        first = _get_or_create_flow_run(_Flow, first_key, "a1", params)
        neighbour = _get_or_create_flow_run(_Flow, other, "b1", {"uid": "uid://A001/X1001/Xf11"})
        with get_client(sync_client=True) as client:
            for run in (first, neighbour):
                client.set_flow_run_state(run.id, Running(), force=True)  # then its server went away
        assert mous_tag(UID) in first.tags
        # the same attempt again (an operator restart) is the same run, and leaves it as it is
        again = _get_or_create_flow_run(_Flow, first_key, "a1", params)
        second = _get_or_create_flow_run(_Flow, second_key, "a2", params)
        assert again.id == first.id and second.id != first.id
        with get_client(sync_client=True) as client:
            assert client.read_flow_run(first.id).state.type.value == "CRASHED"
            assert "superseded" in client.read_flow_run(first.id).state.message
            assert client.read_flow_run(second.id).state.type.value == "PENDING"
            assert client.read_flow_run(neighbour.id).state.type.value == "RUNNING"  # another MOUS's: untouched


def test_a_deleted_mous_cancels_its_flow_run_through_the_rest_api(monkeypatch):
    from prefect.client.orchestration import get_client

    from mousflow_operator.runs import cancel_flow_run

    with local_prefect_server() as url:
        monkeypatch.setenv("PREFECT_API_URL", url)
        run = _get_or_create_flow_run(_Flow, idempotency_key(UID, 1, "", 1), "a1", {"uid": UID})
        cancel_flow_run(str(run.id))
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(run.id).state
        assert state.type.value == "CANCELLED" and state.message == "MOUS deleted"
