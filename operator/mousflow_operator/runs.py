"""One Prefect flow run per MOUS, run by the operator itself in a worker thread; stages as Kubernetes Jobs.

Mechanism (and why): the operator runs the `process-mous` flow in-process, one worker thread per admitted MOUS,
with the "kubernetes" stage launcher, so every stage runs in its own Job sized from the MOUS's data, OOM kills
are answered with more memory, and an existing Job is adopted instead of duplicated (mousflow.pipeline
.kubernetes). A Prefect Kubernetes work pool would need a worker and a flow-run pod per MOUS on top of the stage
pods, and its per-run job variables would size only the flow-run pod, not each stage's; the flow run is the
bookkeeping, the pods are the work.

The flow thread reports each stage's outcome and retries into the operator's memory as they happen
(mousflow.pipeline.reports; the operator subscribes at start-up) and `on_finished` announces the run's end, so
the operator learns a run's progress without polling storage (handlers, facts).

Idempotency: the flow run is created through the Prefect API with a deterministic idempotency key derived from
(MOUS uid, generation, retry token, automatic attempt), so asking again (after an operator restart, say)
returns the same flow run, which this module then executes again in place: the stages skip what their
checkpoints hold and adopt their Jobs by deterministic name, so a restart starts neither a second flow run
nor a second pod. The Job names carry a tag of that key (run_tag), so a retried run's Jobs never take the
names of the failed run's.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mousflow.model import uid_digest
from mousflow.pipeline.launchers import kubernetes_launcher_kind
from mousflow.stages import STAGE_ORDER
from mousflow.stages.runner import status_location
from mousflow.storage.location import Location

log = logging.getLogger(__name__)
PERMANENT_REASONS = frozenset({"InputMissing", "InvalidInput", "CalibrationFailed", "ImagingFailed",
                               "PodCannotStart", "AccessDenied"})
"""Stage failures that another attempt cannot fix: no automatic retry (no retry storm). PodCannotStart and
AccessDenied are the namespace's configuration (a missing Secret, an image not there, S3 credentials not allowed
a location the MOUS names): a person fixes it and asks for a retry."""


def idempotency_key(uid: str, generation: int, retry_token: str, attempt: int) -> str:
    return f"mousflow/{uid}/g{generation}/r{retry_token or '-'}/a{attempt}"


def run_tag(uid: str, generation: int, retry_token: str, attempt: int) -> str:
    """A short tag of one run (its idempotency key): in the flow run's name and in its stage Jobs' names, so a
    retried run never takes the names of the failed run's Jobs, and a restarted operator finds its own."""
    return hashlib.sha256(idempotency_key(uid, generation, retry_token, attempt).encode()).hexdigest()[:8]


def flow_run_name(uid: str, generation: int, retry_token: str, attempt: int) -> str:
    return f"{uid.removeprefix('uid://').replace('/', '-')}-a{attempt}-{run_tag(uid, generation, retry_token, attempt)}"


def first_job_attempt(run_attempt: int) -> int:
    """Job attempt numbers of automatic run n start at 10(n-1)+1 (room for the launcher's OOM retries)."""
    return 10 * (run_attempt - 1) + 1


@dataclass
class RunOutcome:
    state: str
    """"succeeded" or "failed"."""
    reason: str = ""
    message: str = ""

    @property
    def retryable(self) -> bool:
        return self.state == "failed" and self.reason not in PERMANENT_REASONS


@dataclass
class RunHandle:
    key: str
    name: str
    thread: threading.Thread | None = None
    flow_run_id: str | None = None
    outcome: RunOutcome | None = None
    cancelled: bool = False
    finished_at: float | None = None


def run_failure(exc: BaseException) -> RunOutcome:
    """The outcome of a flow run that raised: Unavailable when the object store or the Prefect server could not
    be reached (the exception or one it came from: a transient failure the operator waits out), else Error."""
    import httpx

    from mousflow.errors import Unavailable, first_line
    from mousflow.storage.location import classify_failure

    seen: BaseException | None = exc
    for _ in range(8):  # the exception and what it came from, not for ever
        if seen is None:
            break
        if isinstance(seen, httpx.TransportError):
            url = os.environ.get("PREFECT_API_URL") or "the Prefect server"
            return RunOutcome("failed", "Unavailable", f"cannot reach {url}: {first_line(seen)}")
        classified = classify_failure(seen)
        if isinstance(classified, Unavailable):
            return RunOutcome("failed", "Unavailable", first_line(classified))
        seen = seen.__cause__ or seen.__context__
    return RunOutcome("failed", "Error", f"{type(exc).__name__}: {exc}")


def summarise_stages(output_uri: str) -> RunOutcome:
    """The run's outcome from what the stages reported in storage."""
    run_root = Location.of(output_uri)
    for stage in STAGE_ORDER:
        st = status_location(run_root, stage)
        if not st.exists():
            return RunOutcome("failed", "Error", f"stage {stage} reported no outcome")
        doc = st.read_json()
        if doc.get("state") not in ("Succeeded", "Skipped"):
            return RunOutcome("failed", doc.get("reason") or "Error", f"stage {stage}: {doc.get('message', '')}")
    return RunOutcome("succeeded")


def mous_tag(uid: str) -> str:
    """The tag every flow run of one MOUS carries (beside "mousflow"), to find them all."""
    return f"mous:{uid_digest(uid)}"


def _crash_superseded_runs(client, uid: str, key: str) -> None:
    """Mark Crashed the MOUS's flow runs of other attempts that never reached a final state: a run whose Prefect
    server was away when it failed (it could not record its end), or whose operator died and whose MOUS went
    on with another attempt. Only one run of a MOUS executes at a time (this operator's RunManager), so they
    are dead; left Running they would read as two runs of one MOUS at once."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.states import Crashed

    live = FlowRunFilter(tags=FlowRunFilterTags(all_=[mous_tag(uid)]), state=FlowRunFilterState(
        type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING, StateType.SCHEDULED])))
    for run in client.read_flow_runs(flow_run_filter=live, sort=FlowRunSort.ID_DESC, limit=50):
        if run.idempotency_key != key:
            client.set_flow_run_state(run.id, Crashed(message=f"superseded by the run {key}"), force=True)


def _get_or_create_flow_run(flow_obj, key: str, name: str, parameters: dict):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import FlowCreate, FlowRunCreate
    from prefect.client.schemas.objects import Flow, FlowRun
    from prefect.states import Pending, to_state_create

    with get_client(sync_client=True) as client:
        _crash_superseded_runs(client, parameters["uid"], key)
        flow_id = Flow.model_validate(client.request(
            "POST", "/flows/", json=FlowCreate(name=flow_obj.name).model_dump(mode="json")).json()).id
        body = FlowRunCreate(flow_id=flow_id, name=name, parameters=parameters, idempotency_key=key,
                             state=to_state_create(Pending()), tags=["mousflow", mous_tag(parameters["uid"])])
        # The server answers a repeated idempotency key with the flow run it created the first time.
        return FlowRun.model_validate(client.request(
            "POST", "/flow_runs/", json=body.model_dump(mode="json", exclude_unset=True)).json())


def cancel_flow_run(flow_run_id: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run_id, Cancelled(message="MOUS deleted"), force=True)


class RunManager:
    """The flow runs this operator process is executing, by MOUS (namespace/name)."""

    def __init__(self, threads: int = 1, job_config: dict | None = None,
                 on_finished: Callable[[str], None] = lambda key: None,
                 on_new_run: Callable[[str], None] = lambda uid: None):
        """`job_config`: the operator's settings of stage Jobs (launchers.StageJobConfig as JSON), handed to each
        flow run; `on_finished(mous key)` is called in the run's thread when a run ends (the operator wakes the
        MOUS), `on_new_run(uid)` when a run thread starts (the operator forgets the previous run's reports)."""
        self.threads = threads
        self.job_config = job_config
        self.on_finished = on_finished
        self.on_new_run = on_new_run
        self.lock = threading.Lock()
        self.handles: dict[str, RunHandle] = {}

    def get(self, mous_key: str) -> RunHandle | None:
        with self.lock:
            return self.handles.get(mous_key)

    def active(self) -> set[str]:
        with self.lock:
            return {k for k, h in self.handles.items() if h.outcome is None and not h.cancelled}

    def ensure(self, mous_key: str, *, uid: str, namespace: str, manifest_text: str, output_uri: str,
               generation: int, retry_token: str, attempt: int, owner: tuple[str, str] | None = None) -> RunHandle:
        """The run of this MOUS for (generation, retry token, attempt): the one already under way here, or a
        new worker thread executing the (possibly already existing) flow run of that key."""
        key = idempotency_key(uid, generation, retry_token, attempt)
        with self.lock:
            handle = self.handles.get(mous_key)
            if handle is not None and handle.key == key:
                return handle
            handle = RunHandle(key, flow_run_name(uid, generation, retry_token, attempt))
            self.handles[mous_key] = handle
        kind = kubernetes_launcher_kind(namespace, first_job_attempt(attempt), owner,
                                        run=run_tag(uid, generation, retry_token, attempt))
        parameters = {"uid": uid, "manifest_text": manifest_text, "launcher_kind": kind,
                      "threads": self.threads, "job_config": self.job_config}
        self.on_new_run(uid)
        handle.thread = threading.Thread(target=self._execute, args=(handle, parameters, output_uri, mous_key),
                                         name=f"flow-{handle.name}", daemon=True)
        handle.thread.start()
        return handle

    def forget(self, mous_key: str, cancel: bool = False) -> RunHandle | None:
        with self.lock:
            handle = self.handles.pop(mous_key, None)
        if handle is not None and cancel:
            handle.cancelled = True
            if handle.flow_run_id:
                try:
                    cancel_flow_run(handle.flow_run_id)
                except Exception as exc:  # the MOUS goes away regardless
                    log.warning("could not cancel flow run %s: %s", handle.flow_run_id, exc)
        return handle

    def _execute(self, handle: RunHandle, parameters: dict, output_uri: str, mous_key: str = "") -> None:
        from prefect.flow_engine import run_flow_sync

        from mousflow.pipeline.flow import process_mous_flow

        try:
            flow_run = _get_or_create_flow_run(process_mous_flow, handle.key, handle.name, parameters)
            handle.flow_run_id = str(flow_run.id)
            if flow_run.state is None or flow_run.state.type.value != "COMPLETED":
                run_flow_sync(process_mous_flow, flow_run=flow_run, parameters=parameters, return_type="state")
            outcome = summarise_stages(output_uri)
        except Exception as exc:
            log.exception("flow run %s failed", handle.name)
            outcome = run_failure(exc)
        handle.finished_at = time.monotonic()
        handle.outcome = outcome
        try:
            self.on_finished(mous_key)
        except Exception:  # the resync timer comes back to it
            log.exception("could not announce the end of flow run %s", handle.name)


@dataclass
class StageFacts:
    status: dict | None = None
    checkpoint_uri: str | None = None
    jobs: list[dict] = field(default_factory=list)
