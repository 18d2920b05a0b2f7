"""One Prefect flow run per MOUS, executed in a worker thread of the operator or in a pod of its own; stages as
Kubernetes Jobs.

Mechanism (and why): the `process-mous` flow runs with the "kubernetes" stage launcher, so every stage runs in
its own Job sized from the MOUS's data, OOM kills are answered with more memory, and an existing Job is adopted
instead of duplicated (mousflow.pipeline.kubernetes). Where the flow itself executes is a setting
(MOUSFLOW_FLOW_RUNNER):

  * "thread" (the default): in a worker thread of the operator. The flow thread reports each stage's outcome
    and retries into the operator's memory as they happen (mousflow.pipeline.reports) and `on_finished`
    announces the run's end. Cheap for a handful of MOUSs; but Prefect's engine and the xarray opens that size
    each stage live in the operator's memory (550-640 MB with two flows, bench/control_plane.py).
  * "pod": in a Job of its own in the MOUS's namespace (flow_pod: the Job, the pod's entry point, why), with
    the namespace's credentials; the operator learns the run's end from the Job watch (`flow_job_event`) and
    the stages' outcomes from their Jobs and, once each has finished, their reports in storage (facts). Not a
    Prefect Kubernetes work pool: that needs a worker process beside the operator and sizes only the flow pod,
    while the operator already decides when each MOUS runs (its queue) and the stages size their own pods.

Idempotency: the flow run is created through the Prefect API with a deterministic idempotency key derived from
(MOUS uid, generation, retry token, automatic attempt), so asking again (after an operator restart, say)
returns the same flow run, which is then executed again in place: the stages skip what their checkpoints hold
and adopt their Jobs by deterministic name, so a restart starts neither a second flow run nor a second pod. The
Job names (stage Jobs and the flow Job) carry a tag of that key (run_tag), so a retried run's Jobs never take
the names of the failed run's.
"""

from __future__ import annotations

import hashlib
import json
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
    job: tuple[str, str] | None = None
    """Mode "pod": (namespace, name) of the run's flow Job."""

    def still_running(self) -> bool:
        """Whether the run may still launch stage Jobs: no outcome yet and not cancelled (mode "thread": its
        thread alive; mode "pod": its flow Job not seen to end)."""
        if self.outcome is not None or self.cancelled:
            return False
        return self.thread.is_alive() if self.thread is not None else self.job is not None


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
    """Mark the flow run Cancelled, through the Prefect REST API itself: the operator does not import Prefect's
    client for this one call when its flows run in pods (mousflow_operator.flow_pod)."""
    import httpx

    url = (os.environ.get("PREFECT_API_URL") or "").rstrip("/")
    if not url:
        return
    httpx.post(f"{url}/flow_runs/{flow_run_id}/set_state", timeout=30, json={
        "state": {"type": "CANCELLED", "name": "Cancelled", "message": "MOUS deleted"}, "force": True,
    }).raise_for_status()


def execute_flow_run(key: str, name: str, parameters: dict, output_uri: str,
                     on_flow_run: Callable[[str], None] = lambda flow_run_id: None) -> tuple[RunOutcome, str]:
    """Execute the `process-mous` flow run of this idempotency key (created if new, executed again in place if
    it exists and has not completed) and return its outcome and id; `on_flow_run(id)` once the id is known.
    The same in an operator thread and in a flow-run pod (flow_pod)."""
    from prefect.flow_engine import run_flow_sync

    from mousflow.pipeline.flow import process_mous_flow

    flow_run_id = ""
    try:
        flow_run = _get_or_create_flow_run(process_mous_flow, key, name, parameters)
        flow_run_id = str(flow_run.id)
        on_flow_run(flow_run_id)
        if flow_run.state is None or flow_run.state.type.value != "COMPLETED":
            run_flow_sync(process_mous_flow, flow_run=flow_run, parameters=parameters, return_type="state")
        return summarise_stages(output_uri), flow_run_id
    except Exception as exc:
        log.exception("flow run %s failed", name)
        return run_failure(exc), flow_run_id


class RunManager:
    """The flow runs of this operator's MOUSs, by MOUS (namespace/name): executed in worker threads of this
    process (mode "thread"), or each in a pod of its own that this manager creates and follows (mode "pod":
    flow_pod, why there)."""

    def __init__(self, threads: int = 1, job_config: dict | None = None,
                 on_finished: Callable[[str], None] = lambda key: None,
                 on_new_run: Callable[[str], None] = lambda uid: None,
                 mode: str = "thread", flow_pod=None, history: str = ""):
        """`job_config`: the operator's settings of stage Jobs (launchers.StageJobConfig as JSON), handed to each
        flow run; `on_finished(mous key)` is called when a run ends (the operator wakes the MOUS),
        `on_new_run(uid)` when a run starts (the operator forgets the previous run's reports). Mode "pod" takes
        `flow_pod` (flow_pod.FlowPodSettings) and `history` (MOUSFLOW_HISTORY, handed to the pods)."""
        if mode not in ("thread", "pod"):
            raise ValueError(f"flow runner {mode!r}: thread or pod")
        self.threads = threads
        self.job_config = job_config
        self.on_finished = on_finished
        self.on_new_run = on_new_run
        self.mode = mode
        self.flow_pod = flow_pod
        self.history = history
        self.lock = threading.Lock()
        self.handles: dict[str, RunHandle] = {}
        self.retired: dict[str, set[str]] = {}
        """By MOUS: the keys of runs whose outcome was taken (forget): never executed again by this process."""
        self._batch = None

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
        name = flow_run_name(uid, generation, retry_token, attempt)
        with self.lock:
            handle = self.handles.get(mous_key)
            if handle is not None and handle.key == key:
                return handle
            # One run of a MOUS at a time, whatever the order of the bodies kopf hands over: a body one patch old
            # names the attempt whose outcome was just taken (retired: executing its flow run again would repeat
            # a failed attempt), and a new attempt waits for an earlier run still under way here. Two runs alive
            # at once would both launch the stage whose Jobs they each found missing (the chaos suite once saw two
            # imaging Jobs of attempts 3 and 4 succeed). A handle not stored, without an outcome, starts nothing;
            # the earlier run's end wakes the MOUS (on_finished) and the next reconcile starts this one.
            if key in self.retired.get(mous_key, ()):
                return RunHandle(key, name)
            if handle is not None and handle.still_running():
                log.info("run %s waits for run %s of the same MOUS to end", name, handle.name)
                return RunHandle(key, name)
            handle = RunHandle(key, name)
            self.handles[mous_key] = handle
        kind = kubernetes_launcher_kind(namespace, first_job_attempt(attempt), owner,
                                        run=run_tag(uid, generation, retry_token, attempt))
        parameters = {"uid": uid, "manifest_text": manifest_text, "launcher_kind": kind,
                      "threads": self.threads, "job_config": self.job_config}
        self.on_new_run(uid)
        if self.mode == "pod":
            try:
                self._ensure_pod(handle, mous_key, uid, namespace, owner,
                                 run_tag(uid, generation, retry_token, attempt), parameters, output_uri)
            except Exception:  # no Job: the next reconcile asks again
                with self.lock:
                    if self.handles.get(mous_key) is handle:
                        del self.handles[mous_key]
                raise
            return handle
        handle.thread = threading.Thread(target=self._execute, args=(handle, parameters, output_uri, mous_key),
                                         name=f"flow-{handle.name}", daemon=True)
        handle.thread.start()
        return handle

    # ------------------------------------------------------------------------------- flow runs in pods
    @property
    def batch(self):
        if self._batch is None:
            from kubernetes import client

            from mousflow.kube_config import shared_api_client

            self._batch = client.BatchV1Api(shared_api_client())
        return self._batch

    def _ensure_pod(self, handle: RunHandle, mous_key: str, uid: str, namespace: str,
                    owner: tuple[str, str] | None, tag: str, parameters: dict, output_uri: str) -> None:
        """Create the run's flow Job, or adopt it (a restarted operator): a finished one gives its outcome now."""
        from kubernetes.client.rest import ApiException

        from mousflow.pipeline.kubernetes import JobSettings
        from mousflow.pipeline.launchers import StageJobConfig
        from mousflow_operator.flow_pod import build_flow_run_job_spec

        cfg = StageJobConfig.from_json(self.job_config)  # the one set of defaults
        settings = JobSettings(namespace=namespace, image=cfg.image, s3_secret=cfg.s3_secret,
                               s3_endpoint=cfg.s3_endpoint, s3_region=cfg.s3_region,
                               image_pull_policy=cfg.image_pull_policy, owner=owner)
        spec = build_flow_run_job_spec(settings, self.flow_pod, uid=uid, mous_key=mous_key, run_key=handle.key,
                                       run_tag=tag, run_name=handle.name, parameters=parameters,
                                       output_uri=output_uri, history=self.history)
        name = spec["metadata"]["name"]
        handle.job = (namespace, name)
        try:
            self.batch.create_namespaced_job(namespace, spec)
            log.info("created flow-run Job %s/%s for %s", namespace, name, handle.name)
        except ApiException as exc:
            if exc.status != 409:
                raise
            # jobs/status: the whole Job, and what the operator may read (its Role has no plain get on Jobs)
            self.flow_job_event(self.batch.read_namespaced_job_status(name, namespace).to_dict())

    def flow_job_event(self, job: dict) -> bool:
        """A flow-run Job seen (the operator's watch, or adopted): its flow run's id, and its outcome once it has
        finished, onto the handle of the run it belongs to. Whether the run has just ended (its MOUS is then
        woken through on_finished)."""
        from mousflow_operator.flow_pod import A_FLOW_RUN_ID, A_MOUS_KEY, A_RUN_KEY, flow_job_finished

        meta = job.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        mous_key = annotations.get(A_MOUS_KEY, "")
        with self.lock:
            handle = self.handles.get(mous_key)
            if handle is None or handle.key != annotations.get(A_RUN_KEY) or handle.outcome is not None:
                return False
            handle.flow_run_id = annotations.get(A_FLOW_RUN_ID) or handle.flow_run_id
        if not flow_job_finished(job):
            return False
        from mousflow_operator.flow_pod import flow_job_outcome

        pods = self._flow_pods(meta.get("namespace", ""), meta.get("name", ""))
        state, reason, message, flow_run_id = flow_job_outcome(job, pods)
        with self.lock:
            if handle.outcome is not None:
                return False
            handle.flow_run_id = flow_run_id or handle.flow_run_id
            handle.finished_at = time.monotonic()
            handle.outcome = RunOutcome(state, reason, message)
        # What the operator read of this run's stage reports may predate the flow pod's last word on them (the
        # launcher amends a stage's report after its Job ended: an out-of-memory kill): read them again, once.
        self.on_new_run(annotations.get("mousflow.io/uid", ""))
        try:
            self.on_finished(mous_key)
        except Exception:  # the resync timer comes back to it
            log.exception("could not announce the end of flow run %s", handle.name)
        return True

    def _flow_pods(self, namespace: str, job: str) -> list[dict]:
        """The Job's pods, API form (their termination messages hold the outcome)."""
        from kubernetes import client

        resp = client.CoreV1Api(self.batch.api_client).list_namespaced_pod(
            namespace, label_selector=f"job-name={job}", _preload_content=False)
        return json.loads(resp.data)["items"]

    def _delete_flow_job(self, namespace: str, name: str) -> None:
        from kubernetes.client import V1DeleteOptions
        from kubernetes.client.rest import ApiException

        try:
            self.batch.delete_namespaced_job(name, namespace, body=V1DeleteOptions(propagation_policy="Background"))
        except ApiException as exc:
            if exc.status != 404:
                log.warning("could not delete flow-run Job %s/%s: %s %s", namespace, name, exc.status, exc.reason)

    def forget(self, mous_key: str, cancel: bool = False) -> RunHandle | None:
        with self.lock:
            handle = self.handles.pop(mous_key, None)
            if handle is not None and not handle.still_running():
                self.retired.setdefault(mous_key, set()).add(handle.key)
            if cancel:  # the MOUS goes: nothing of it is kept
                self.retired.pop(mous_key, None)
        if handle is not None and cancel:
            handle.cancelled = True
            if self.mode == "pod" and handle.job:
                self._delete_flow_job(*handle.job)
            if handle.flow_run_id:
                try:
                    cancel_flow_run(handle.flow_run_id)
                except Exception as exc:  # the MOUS goes away regardless
                    log.warning("could not cancel flow run %s: %s", handle.flow_run_id, exc)
        return handle

    def _execute(self, handle: RunHandle, parameters: dict, output_uri: str, mous_key: str = "") -> None:
        def known(flow_run_id: str) -> None:
            handle.flow_run_id = flow_run_id

        outcome, _ = execute_flow_run(handle.key, handle.name, parameters, output_uri, on_flow_run=known)
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
