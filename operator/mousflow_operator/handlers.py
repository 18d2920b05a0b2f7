"""kopf handlers for MOUS resources: thin. Each gathers facts, asks `lifecycle` what to do (pure), and patches
the status and posts Events; nothing here decides.

Event-driven, not polled (why: bench/control_plane.py, figures in the README). A MOUS is reconciled
(`reconcile`) when something about it happens:

  * its own watch events (`mous_event`): created, edited, annotated by a person (review, retry), its status
    patched, and the initial listing when the operator starts;
  * a wake (wake.Waker touching the annotation mousflow.io/wake), sent when a fact arrives elsewhere: one of its
    stage Jobs changed (`stage_job_event`, a watch on Jobs labelled mousflow.io/mous), its flow run reported a
    stage outcome or retry or ended (flows in threads of this process: runs.RunManager, pipeline.reports; flows in
    pods of their own: their Job, `flow_job_event`),
    a processing slot it may take was freed (a MOUS left Processing, was deleted or turned Degraded), or a
    retry's backoff ended;
  * a slow timer (`mous_resync`, MOUSFLOW_RESYNC_SECONDS, 60 s) as the safety net for a lost wake and for what
    only time changes (the admission settle time, an input that was unreadable); it reads nothing from S3 for a
    MOUS whose facts are in memory;
  * a progress timer (`mous_progress`, MOUSFLOW_PROGRESS_SECONDS, 10 s), only on MOUSs in Processing: the one
    S3 read per running stage per interval, its progress document.

The facts of a running MOUS come from memory (facts.FactStore), not from S3 per tick; S3 is read once per
MOUS for its inputs (FullyObserved), once per finished stage the operator did not hear about (after a
restart), and for the QA2 verdict and delivery. Handler invocations of one MOUS from its events are serialised
by kopf; a timer may run beside them, so a reconciliation that finds the resourceVersion its own last patch
was computed from (the patch not yet seen back) does nothing (`_in_flight`).

Handlers are synchronous: kopf runs them in its thread pool, and they block on S3 and the Kubernetes API.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import kopf
import yaml

from mousflow.kpi import deadline, delivered_at, parse_time
from mousflow.kube_config import shared_api_client
from mousflow.model import GROUP, PLURAL, VERSION, MOUSResource, MOUSSpec, MOUSStatus, Phase, QA2Status, uid_digest
from mousflow.model.status import ProductsStatus, StageName, StageRetry
from mousflow.pipeline import reports
from mousflow.pipeline.history import DeliveryRecord, History
from mousflow.pipeline.kubernetes import LABEL_MOUS, MEMORY_REASONS, RESIZED
from mousflow.stages import STAGE_ORDER
from mousflow.storage.location import Location
from mousflow_operator import inputs, kpi_events, lifecycle
from mousflow_operator.cluster import load_cluster_config
from mousflow_operator.delivery import deliver, delivery_failure_facts, products_location
from mousflow_operator.facts import FactStore
from mousflow_operator.finalizers import FINALIZER, release_finalizers
from mousflow_operator.flow_pod import FLOW_RUN_LABEL
from mousflow_operator.metrics import OperatorMetrics
from mousflow_operator.progress import overall_progress, stage_status
from mousflow_operator.queue import QueueEntry, admissible, predicted_completions, settled_eta
from mousflow_operator.runs import RunManager
from mousflow_operator.settings import OperatorSettings
from mousflow_operator.status_patch import patch_changed_status
from mousflow_operator.wake import Waker

RESOURCE = (GROUP, VERSION, PLURAL)
ANN = "mousflow.io/"
A_REVIEW, A_RETRY = ANN + "review", ANN + "retry"
A_RETRY_HANDLED, A_ATTEMPT, A_RETRY_AFTER = ANN + "retry-handled", ANN + "run-attempt", ANN + "retry-after"
A_WAITING = ANN + "waiting"
"""JSON {waits, streak, since, message}: transient failures waited out (all, and in a row since `since`), and the
last one's message (lifecycle.run_retry)."""
A_MANUAL, A_AUTO_DELIVERY = ANN + "manual-work", ANN + "auto-delivery"
_SETTINGS = OperatorSettings.from_env()  # the timers' intervals are fixed when the handlers are registered
RESYNC_SECONDS, PROGRESS_SECONDS = _SETTINGS.resync_seconds, _SETTINGS.progress_seconds


def routine_success_not_posted(record: logging.LogRecord) -> bool:
    """kopf posts every INFO line of its per-object logger as a Kubernetes Event, "Handler 'mous_event'
    succeeded." included: one POST per reconciliation of every MOUS (the control plane's largest API cost at
    scale, and Events nobody reads). The line stays in the log; the Events a person reads are posted on purpose
    (kopf.info/warn, which do not pass through this filter)."""
    return record.levelno >= logging.WARNING or not record.getMessage().endswith(" succeeded.")


@kopf.on.startup()
def mous_startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger, **_):
    load_cluster_config()
    for poster in logging.getLogger("kopf.objects").handlers:
        if type(poster).__name__ == "K8sPoster":
            poster.addFilter(routine_success_not_posted)
    memo.config = OperatorSettings.from_env()
    memo.facts = FactStore()
    memo.waker = Waker(_wake_patch).start()
    memo.runs = RunManager(threads=memo.config.stage_threads, job_config=memo.config.stage_jobs.to_json(),
                           on_finished=memo.waker.wake, on_new_run=memo.facts.new_run,
                           mode=memo.config.flow_runner, flow_pod=memo.config.flow_pod, history=memo.config.history)
    memo.admission = threading.Lock()
    memo.own_predictions = {}
    memo.in_flight = {}
    memo.queue_seen = {}
    memo.locks = {}
    memo.owner_bodies = {}
    memo.phase_seen = {}

    def on_report(uid: str, event: dict) -> None:  # from a flow thread: into memory, then wake its MOUS
        memo.facts.flow_report(uid, event)
        memo.waker.wake(memo.facts.key_of(uid))

    memo.on_report = on_report
    reports.subscribe(on_report)
    memo.metrics = OperatorMetrics(active_runs=lambda: len(memo.runs.active()))
    if memo.config.metrics_port:
        memo.metrics.serve(memo.config.metrics_port)
        logger.info("Prometheus metrics on port %d", memo.config.metrics_port)
    # Least privilege: the operator serves one resource whose CRD exists before it starts (the chart's crds/),
    # in namespaces named exactly, so kopf need not list or watch CRDs and namespaces cluster-wide.
    settings.scanning.disabled = True
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="mousflow.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="mousflow.io", key="last-handled-configuration")
    settings.execution.max_workers = memo.config.handler_threads
    logger.info("mousflow operator: %s", memo.config)


def _fully_observed_at(spec: dict) -> datetime:
    return parse_time(spec["fullyObservedAt"])


def _deadline(spec: dict, annotations: dict) -> datetime:
    return deadline(_fully_observed_at(spec), manual_work=annotations.get(A_MANUAL) == "true")


@kopf.index(*RESOURCE)
def mous_queue(name, namespace, spec, status, meta, **_):
    """Every MOUS's phase and queue position, for admission (kopf keeps it current from the watch)."""
    degraded = any(c.get("type") == "Degraded" and c.get("status") == "True" for c in status.get("conditions", []))
    seconds = status.get("predictedProcessingSeconds")
    starts = [s["startedAt"] for s in (status.get("stages") or {}).values() if s.get("startedAt")]
    return {f"{namespace}/{name}": (status.get("phase", Phase.FULLY_OBSERVED.value), degraded,
                                    QueueEntry(f"{namespace}/{name}", _deadline(spec, meta.get("annotations", {})),
                                               int(spec.get("priority", 50)), str(meta.get("creationTimestamp")),
                                               None if seconds is None else float(seconds),
                                               parse_time(min(starts)) if starts else None))}


_STATUS_KEYS = frozenset(f.alias or n for n, f in MOUSStatus.model_fields.items())


def _status_model(raw: dict) -> MOUSStatus:
    return MOUSStatus.from_stored(raw)


def _mous_label(uid: str) -> str:
    return uid_digest(uid)


def _wake_patch(namespace: str, name: str, body: dict) -> None:
    from kubernetes import client

    api = client.CustomObjectsApi(shared_api_client())
    api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, body)


def _owner(body) -> dict:
    return {"apiVersion": body["apiVersion"], "kind": body["kind"], "name": body["metadata"]["name"],
            "uid": body["metadata"]["uid"], "controller": False, "blockOwnerDeletion": False}


def _namespace_auto_delivery(namespace: str) -> bool | None:
    from kubernetes import client

    namespace_doc = client.CoreV1Api(shared_api_client()).read_namespace(namespace)
    value = (namespace_doc.metadata.annotations or {}).get(A_AUTO_DELIVERY)
    return None if value is None else value.lower() == "true"


@kopf.on.event(*RESOURCE)
def mous_event(type, body, spec, meta, name, namespace, patch, memo: kopf.Memo, mous_queue: kopf.Index, logger,
               **_):
    """Every watch event of a MOUS (its initial listing too): reconcile it; when it was deleted, cancel its flow
    run (its Jobs go with it through owner references; products stay)."""
    key = f"{namespace}/{name}"
    if getattr(memo, "config", None) is None:
        return
    if type == "DELETED":
        _forget(memo, key, spec, logger)
        _wake_admissible(memo, mous_queue, key)
        return
    if meta.get("deletionTimestamp"):
        return
    _queue_changed(memo, mous_queue, key, body)
    reconcile(body, spec, meta, name, namespace, patch, memo, mous_queue, logger)


@kopf.timer(*RESOURCE, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
def mous_resync(body, spec, meta, name, namespace, patch, memo: kopf.Memo, mous_queue: kopf.Index, logger, **_):
    """The safety net: a wake lost with a crash, and what only time changes (the admission settle time, an input
    that could not be read, a retry's backoff)."""
    reconcile(body, spec, meta, name, namespace, patch, memo, mous_queue, logger)


def _processing_now(status, **_) -> bool:
    return (status or {}).get("phase") == Phase.PROCESSING.value


@kopf.timer(*RESOURCE, interval=PROGRESS_SECONDS, initial_delay=PROGRESS_SECONDS, when=_processing_now)
def mous_progress(body, spec, meta, name, namespace, patch, memo: kopf.Memo, mous_queue: kopf.Index, logger,
                  **_):
    """A running stage's progress (published by its pod in storage): the one periodic read, Processing only."""
    reconcile(body, spec, meta, name, namespace, patch, memo, mous_queue, logger, refresh_progress=True)


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_MOUS: kopf.PRESENT})
def stage_job_event(type, body, namespace, memo: kopf.Memo, logger, **_):
    """A stage Job created, started, finished or gone: into memory, and its MOUS woken if its status changed.
    A Job without an owner (made by an older operator) gets its MOUS as owner, so it goes with the MOUS."""
    facts: FactStore | None = getattr(memo, "facts", None)
    if facts is None:
        return
    doc = dict(body)
    if not facts.job_event(type, doc):
        return
    label = (doc["metadata"].get("labels") or {}).get(LABEL_MOUS, "")
    owners = [o for o in doc["metadata"].get("ownerReferences") or [] if o.get("kind") == "MOUS"]
    key = f"{namespace}/{owners[0]['name']}" if owners else facts.key_of(label)
    if not owners and key and type != "DELETED" and key in memo.owner_bodies:
        from kubernetes import client

        client.BatchV1Api(shared_api_client()).patch_namespaced_job(doc["metadata"]["name"], namespace,
                                                 {"metadata": {"ownerReferences": [memo.owner_bodies[key]]}})
    memo.waker.wake(key)


@kopf.on.event("batch", "v1", "jobs", labels={FLOW_RUN_LABEL: kopf.PRESENT})
def flow_job_event(type, body, memo: kopf.Memo, **_):
    """A flow-run Job (MOUSFLOW_FLOW_RUNNER=pod) changed: its run's id and, once it has finished, its outcome
    (RunManager.flow_job_event wakes the MOUS)."""
    runs: RunManager | None = getattr(memo, "runs", None)
    if runs is not None and runs.mode == "pod" and type != "DELETED":
        runs.flow_job_event(dict(body))


def _forget(memo: kopf.Memo, key: str, spec, logger) -> None:
    if getattr(memo, "metrics", None) is not None:
        memo.metrics.forget(key)
    memo.own_predictions.pop(key, None)
    memo.in_flight.pop(key, None)
    memo.queue_seen.pop(key, None)
    memo.owner_bodies.pop(key, None)
    memo.locks.pop(key, None)
    uid = (spec or {}).get("uid", "")
    if uid:
        memo.facts.forget(uid, _mous_label(uid))
    handle = memo.runs.forget(key, cancel=True)
    if handle is not None:
        logger.info("cancelled flow run %s of deleted MOUS %s", handle.name, key)


def _queue_changed(memo: kopf.Memo, mous_queue: kopf.Index, key: str, body) -> None:
    """When this MOUS's place in the queue changed as stored (its phase, or Degraded), the MOUSs that may now
    start are woken: the index already holds the change, so they see the freed slot."""
    status = body.get("status") or {}
    seen = (status.get("phase"), any(c.get("type") == "Degraded" and c.get("status") == "True"
                                     for c in status.get("conditions", [])))
    if memo.queue_seen.get(key) == seen:
        return
    first = key not in memo.queue_seen
    memo.queue_seen[key] = seen
    if not first or seen[0] not in (None, Phase.FULLY_OBSERVED.value):
        _wake_admissible(memo, mous_queue, key)


def _wake_admissible(memo: kopf.Memo, mous_queue: kopf.Index, but: str) -> None:
    cfg: OperatorSettings = memo.config
    now = datetime.now(UTC)
    with memo.admission:
        queue = _queue_state(mous_queue, memo.runs, now, cfg.admission_settle_seconds)
        if len(queue.processing) >= cfg.max_processing or not queue.waiting:
            return
        keys = admissible(queue.waiting, len(queue.processing), cfg.max_processing, queue.arriving, queue.running,
                          now)
    for k in keys:
        if k != but:
            memo.waker.wake(k)


def _in_flight(memo: kopf.Memo, key: str, body) -> bool:
    """Whether this MOUS's last patch was computed from the version in hand and has not been seen back yet (a
    timer running beside an event): then deciding again would decide the same thing twice."""
    rv = (body.get("metadata") or {}).get("resourceVersion")
    seen = memo.in_flight.get(key)
    return seen is not None and seen[0] == rv and time.monotonic() - seen[1] < 30


def reconcile(body, spec, meta, name, namespace, patch, memo: kopf.Memo, mous_queue: kopf.Index, logger,
              refresh_progress: bool = False) -> None:
    key = f"{namespace}/{name}"
    with memo.locks.setdefault(key, threading.Lock()):
        if _in_flight(memo, key, body):
            return
        _reconcile(body, spec, meta, name, namespace, patch, memo, mous_queue, logger, refresh_progress)
        if patch:
            memo.in_flight[key] = ((body.get("metadata") or {}).get("resourceVersion"), time.monotonic())


def _reconcile(body, spec, meta, name, namespace, patch, memo: kopf.Memo, mous_queue: kopf.Index, logger,
               refresh_progress: bool) -> None:
    cfg: OperatorSettings = memo.config
    runs: RunManager = memo.runs
    key = f"{namespace}/{name}"
    annotations = dict(meta.get("annotations", {}))
    old = _status_model(dict(body.get("status") or {}))
    memo.metrics.observe(key, Phase(old.phase).value)
    new = old.model_copy(deep=True)
    phase = Phase(old.phase)
    if cfg.test_phase_dwell_seconds and _dwelling(memo, key, phase, cfg.test_phase_dwell_seconds):
        return
    now = datetime.now(UTC)
    mous_spec = MOUSSpec.model_validate(dict(spec))
    memo.facts.bind(mous_spec.uid, _mous_label(mous_spec.uid), key)
    memo.owner_bodies[key] = _owner(body)
    new.deadline = _deadline(spec, annotations)
    problems = inputs.spec_problems(mous_spec)
    degraded_reason = "InvalidSpec"
    refused = cfg.storage_policy.problems(namespace, mous_spec)
    if refused:  # before any check reads an input or any Job writes: the locations are not this namespace's
        problems, degraded_reason = problems + refused, "StoragePolicy"
    facts: dict = {"spec_problems": problems}

    if problems:
        pass
    elif phase == Phase.FAILED:
        token = annotations.get(A_RETRY)
        if token and token != annotations.get(A_RETRY_HANDLED):
            patch.metadata.annotations[A_RETRY_HANDLED] = token
            patch.metadata.annotations[A_ATTEMPT] = "1"
            patch.metadata.annotations[A_RETRY_AFTER] = None
            patch.metadata.annotations[A_WAITING] = None
            _transition(body, patch, new, phase, lifecycle.Transition(
                Phase.FULLY_OBSERVED, "RetryRequested", f"retry {token} requested"), problems, now, degraded_reason)
            memo.metrics.transition(key, phase.value, Phase.FULLY_OBSERVED.value)
            return
    elif phase == Phase.FULLY_OBSERVED:
        check = inputs.check_execution_blocks(mous_spec)
        if check.state == "unreadable":
            problems, degraded_reason = (check.message,), "InputUnreadable"
            facts["spec_problems"] = problems
        else:
            facts.update(inputs=check.state, inputs_message=check.message)
    elif phase == Phase.READY_FOR_PROCESSING:
        with memo.admission:
            queue = _queue_state(mous_queue, runs, now, cfg.admission_settle_seconds)
            if key in admissible(queue.waiting, len(queue.processing), cfg.max_processing, queue.arriving,
                                 queue.running, now):
                facts["admitted"] = True
                new.observed_generation = int(meta.get("generation", 1))
                _ensure_run(runs, key, mous_spec, namespace, body, new.observed_generation, annotations)
    elif phase == Phase.PROCESSING:
        facts.update(_processing(memo, key, mous_spec, namespace, body, meta, new, annotations, patch,
                                 refresh_progress))
    elif phase == Phase.READY_FOR_REVIEW:
        auto = mous_spec.delivery.automatic if mous_spec.delivery else None
        if auto is None:
            auto = _namespace_auto_delivery(namespace)
        facts.update(qa2=old.qa2.verdict if old.qa2 else None,
                     auto_delivery=cfg.auto_delivery if auto is None else auto)
    elif phase == Phase.REVIEWING:
        decision = (annotations.get(A_REVIEW) or "").strip().lower()
        facts["review"] = decision if decision in lifecycle.REVIEW_DECISIONS else None
    elif phase == Phase.DELIVERY_IN_PROGRESS:
        try:
            where, n = deliver(mous_spec.output.uri, mous_spec.delivery.uri if mous_spec.delivery else None)
            facts.update(delivered=True, delivery_message=f"{n} products delivered to {where}, checksums verified")
            new.products = (new.products or ProductsStatus()).model_copy(update={"delivered_uri": where})
        except Exception as exc:
            facts.update(delivery_failure_facts(exc))
            if "waiting" in facts:  # the store away: delivery is tried again later
                memo.waker.wake_at(key, time.time() + min(cfg.transient_max_delay_seconds,
                                                          max(cfg.retry_backoff_seconds, 1.0)))

    if not problems and (phase == Phase.READY_FOR_PROCESSING or facts.get("inputs") == "ok"):
        # waiting: predict its own processing time (kept once it starts, to measure the prediction's error)
        seconds, why = _own_prediction(memo, key, namespace, body, mous_spec, cfg)
        new.predicted_processing_seconds = seconds
        new.predicted_completion_reason = why
    if not problems and phase in (Phase.FULLY_OBSERVED, Phase.READY_FOR_PROCESSING, Phase.PROCESSING):
        new.predicted_completion = settled_eta(old.predicted_completion,
                                               _predicted_completion(mous_queue, runs, key, new, now, cfg), now)

    transition = lifecycle.next_transition(phase, lifecycle.Facts(**facts))
    fully_observed_at = _fully_observed_at(spec)
    if transition is None:
        new.conditions = lifecycle.conditions_for(old.conditions, phase, _last_reason(old), old.message, problems,
                                                  now, degraded_reason, new.stages, waiting=facts.get("waiting", ""))
        _post_degraded(body, old, new)
        _patch_status(patch, dict(body.get("status") or {}), new)
        memo.metrics.record_changes(key, fully_observed_at, old, new)
        return
    if transition.phase not in (Phase.PROCESSING,):
        runs.forget(key)
    _transition(body, patch, new, phase, transition, problems, now, degraded_reason)
    memo.metrics.transition(key, phase.value, transition.phase.value)
    memo.metrics.record_changes(key, fully_observed_at, old, new)
    if kpi_events.just_delivered(old, new):
        _record_delivery(key, mous_spec, fully_observed_at, new, logger)


def _dwelling(memo: kopf.Memo, key: str, phase: Phase, dwell: float) -> bool:
    """Test-only (settings.test_phase_dwell_seconds): whether MOUS `key` entered `phase` (as this process saw
    it) less than `dwell` seconds ago; if so it is woken again when the dwell is over."""
    if phase in lifecycle.TERMINAL:
        return False
    seen_phase, since = memo.phase_seen.get(key, (None, 0.0))
    if seen_phase != phase:
        memo.phase_seen[key] = (phase, since := time.time())
    if time.time() - since >= dwell:
        return False
    memo.waker.wake_at(key, since + dwell)
    return True


@dataclass(frozen=True)
class _QueueState:
    """The queue as the index shows it, with the predictions the statuses hold."""

    waiting: list[QueueEntry]
    """ReadyForProcessing, not processing"""
    arriving: list[QueueEntry]
    """FullyObserved, not Degraded, created less than the settle time ago (keep their place in admission)"""
    checking: list[QueueEntry]
    """FullyObserved, not Degraded (all of them: they are ahead of a later deadline in the predictions)"""
    running: list[QueueEntry]
    processing: set[str]


def _queue_state(mous_queue: kopf.Index, runs: RunManager, now: datetime, settle_seconds: float) -> _QueueState:
    # a kopf index maps each key to a store of values: here one (phase, degraded, QueueEntry) per MOUS
    entries = [(k, p, d, e) for k, store in mous_queue.items() for (p, d, e) in store]
    processing = {k for k, p, _d, _e in entries if p == Phase.PROCESSING.value} | runs.active()
    waiting = [e for k, p, _d, e in entries if p == Phase.READY_FOR_PROCESSING.value and k not in processing]
    checking = [e for k, p, d, e in entries if p == Phase.FULLY_OBSERVED.value and not d]
    # not yet checked (neither ready nor Degraded): keeps its place in admission, for a while at most
    arriving = [e for e in checking if _age_seconds(e.created, now) < settle_seconds]
    running = [e for k, _p, _d, e in entries if k in processing]
    return _QueueState(waiting, arriving, checking, running, processing)


def _own_prediction(memo: kopf.Memo, key: str, namespace: str, body, mous_spec: MOUSSpec,
                    cfg: OperatorSettings) -> tuple[float | None, str]:
    """This MOUS's processing time from the history (History.predict_processing_seconds), and the reason
    (Predicted, NoHistory, PredictionFailed); reused for cfg.eta_refresh_seconds (it reads the MOUS's
    metadata from storage)."""
    cached = memo.own_predictions.get(key)
    if cached is not None and time.monotonic() - cached[0] < cfg.eta_refresh_seconds:
        return cached[1], cached[2]
    history = History.from_env()
    if history is None:
        result = (None, "NoHistory")
    else:
        from mousflow.pipeline.demand import demand_of

        try:
            resource = MOUSResource.model_validate({"metadata": {"name": body["metadata"]["name"],
                                                                 "namespace": namespace}, "spec": dict(body["spec"])})
            seconds, _missing_stages = history.predict_processing_seconds(demand_of(resource))
            result = (seconds, "Predicted") if seconds is not None else (None, "NoHistory")
        except Exception:  # a prediction is advice: unreadable metadata or history never stops a MOUS
            result = (None, "PredictionFailed")
    memo.own_predictions[key] = (time.monotonic(), *result)
    return result


def _predicted_completion(mous_queue: kopf.Index, runs: RunManager, key: str, new: MOUSStatus, now: datetime,
                          cfg: OperatorSettings) -> datetime | None:
    """When this MOUS is predicted to finish processing, the queue ahead of it and the slots included."""
    if new.predicted_processing_seconds is None:
        return None
    queue = _queue_state(mous_queue, runs, now, cfg.admission_settle_seconds)
    running = list(queue.running)
    queued = [*queue.waiting, *queue.checking]
    for entries in (running, queued):
        for i, e in enumerate(entries):
            if e.key == key:  # the index shows the status as stored: use this tick's prediction
                entries[i] = replace(e, seconds=new.predicted_processing_seconds)
    return predicted_completions(queued, running, cfg.max_processing, now).get(key)


def _record_delivery(key: str, mous_spec: MOUSSpec, fully_observed_at: datetime, new: MOUSStatus, logger) -> None:
    """A delivered MOUS into the history store (MOUSFLOW_HISTORY), for `mousflow report --history`."""
    history = History.from_env()
    delivered = delivered_at(new)
    if history is None or delivered is None or new.deadline is None:
        return
    try:
        history.add_delivery(DeliveryRecord(mous_spec.uid, key, fully_observed_at.isoformat(),
                                            new.deadline.isoformat(), delivered.isoformat()))
    except Exception as exc:  # the history is advice, never a reason to fail a delivery
        logger.warning("could not record the delivery of %s in the history: %s", key, exc)


def _age_seconds(created: str, now: datetime) -> float:
    try:
        return (now - datetime.fromisoformat(created.replace("Z", "+00:00"))).total_seconds()
    except ValueError:
        return float("inf")


def _last_reason(status: MOUSStatus) -> str:
    for c in status.conditions:
        if c.type == "Progressing":
            return c.reason
    return ""


def _ensure_run(runs: RunManager, key, mous_spec: MOUSSpec, namespace, body, generation, annotations):
    manifest = MOUSResource.model_validate({"metadata": {"name": body["metadata"]["name"], "namespace": namespace},
                                            "spec": dict(body["spec"])})
    return runs.ensure(key, uid=mous_spec.uid, namespace=namespace,
                       manifest_text=yaml.safe_dump(manifest.to_wire(), sort_keys=False),
                       output_uri=mous_spec.output.uri, generation=generation,
                       retry_token=annotations.get(A_RETRY_HANDLED, ""),
                       attempt=int(annotations.get(A_ATTEMPT, "1")),
                       owner=(body["metadata"]["name"], body["metadata"]["uid"]))


def _processing(memo: kopf.Memo, key, mous_spec: MOUSSpec, namespace, body, meta, new: MOUSStatus, annotations,
                patch, refresh_progress: bool) -> dict:
    cfg: OperatorSettings = memo.config
    runs: RunManager = memo.runs
    retry_after = float(annotations.get(A_RETRY_AFTER) or 0)
    waiting = _waiting(annotations)
    handle = None
    if time.time() >= retry_after:
        # the run of this body's (generation, retry, attempt), never another's: an earlier run's outcome is not
        # this attempt's (RunManager.ensure)
        handle = _ensure_run(runs, key, mous_spec, namespace, body, new.observed_generation or
                             int(meta.get("generation", 1)), annotations)
        new.flow_run_id = handle.flow_run_id or new.flow_run_id
    else:
        memo.waker.wake_at(key, retry_after)
    _observe_stages(memo.facts, mous_spec, body, new, refresh_progress)
    if handle is None or handle.outcome is None:
        return {"waiting": waiting.get("message", "")} if time.time() < retry_after and waiting.get("streak") \
            else {}
    outcome = handle.outcome
    if outcome.state == "succeeded":
        _end_waiting_streak(patch, waiting)  # a run that got through
        qa = products_location(mous_spec.output.uri).join("qa2.json").read_json()
        new.qa2 = QA2Status(verdict=qa["verdict"], reasons=[str(r) for r in qa.get("reasons", [])],
                            scores={k: float(v["score"]) for k, v in qa.get("stage_scores", {}).items()})
        products = products_location(mous_spec.output.uri)
        new.products = ProductsStatus(manifest_uri=products.join("manifest.json").uri,
                                      weblog_uri=products.join("weblog", "index.html").uri)
        new.stage = None
        return {"run": "succeeded", "qa2": qa["verdict"]}
    attempt = int(annotations.get(A_ATTEMPT, "1"))
    now = time.time()
    step = lifecycle.run_retry(outcome.reason, outcome.retryable, attempt, waiting.get("waits", 0),
                               waiting.get("streak", 0), now - waiting.get("since", now),
                               max_attempts=cfg.max_run_attempts, backoff=cfg.retry_backoff_seconds,
                               max_wait_delay=cfg.transient_max_delay_seconds,
                               give_up_after=cfg.transient_give_up_seconds)
    if step.kind == "fail":
        new.stage = None
        return {"run": "failed", "run_reason": outcome.reason, "run_message": outcome.message}
    patch.metadata.annotations[A_ATTEMPT] = str(attempt + 1)
    patch.metadata.annotations[A_RETRY_AFTER] = f"{now + step.delay:.0f}"
    runs.forget(key)
    memo.waker.wake_at(key, now + step.delay + 1)
    if step.kind == "wait":
        # S3 or the Prefect server away: waited out, not counted against the run attempts
        waited = {"waits": waiting.get("waits", 0) + 1, "streak": waiting.get("streak", 0) + 1,
                  "since": waiting.get("since", now), "message": f"{outcome.reason}: {outcome.message}"[:1024]}
        patch.metadata.annotations[A_WAITING] = json.dumps(waited)
        new.message = (f"attempt {attempt} failed on a service that could not be used ({waited['message']}); "
                       f"waiting it out: attempt {attempt + 1} in {step.delay:.0f} s, not counted against the "
                       f"{cfg.max_run_attempts} run attempts")
        kopf.warn(body, reason="WaitingOutUnavailable", message=new.message)
        return {"waiting": waited["message"]}
    _end_waiting_streak(patch, waiting)  # a counted failure
    new.message = f"attempt {attempt} failed ({outcome.reason}: {outcome.message}); retrying in {step.delay:.0f} s"
    kopf.warn(body, reason="RetryScheduled", message=new.message)
    return {}


def _end_waiting_streak(patch, waiting: dict) -> None:
    """A run ended in something other than a transient failure: the waits in a row are over (the count of all
    waits stays: it keeps them out of the run attempts)."""
    if waiting.get("streak"):
        patch.metadata.annotations[A_WAITING] = json.dumps({"waits": waiting.get("waits", 0), "streak": 0})


def _waiting(annotations: dict) -> dict:
    """The A_WAITING record ({} when there is none or it cannot be read: nothing is being waited out)."""
    try:
        doc = json.loads(annotations.get(A_WAITING) or "{}")
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _observe_stages(store: FactStore, mous_spec: MOUSSpec, body, new: MOUSStatus, refresh_progress: bool) -> None:
    """status.stages from the facts in memory (Jobs from the watch, outcomes from the flow), storage only where
    facts.FactStore says (progress on the progress timer; a finished stage not heard of, once)."""
    jobs = store.jobs_of(_mous_label(mous_spec.uid))
    run_root = Location.of(mous_spec.output.uri)
    for stage in STAGE_ORDER:
        stage_jobs = jobs.get(stage, [])
        report = store.report(mous_spec.uid, run_root, stage, stage_jobs)
        if report is None and not stage_jobs and stage in new.stages:
            continue  # nothing heard of it in this process yet (a restart): the status keeps what it had
        running = any((j.get("status") or {}).get("active") for j in stage_jobs)
        progress = store.progress(mous_spec.uid, run_root, stage, refresh_progress) if running and report is None \
            else None
        cp = run_root.join("checkpoints", f"{stage}.json")
        st = stage_status(report, stage_jobs, cp.uri, progress)
        retries = store.retries(mous_spec.uid, run_root, stage, stage_jobs)
        if retries:
            st.retries = [StageRetry.model_validate(r) for r in retries]
            seen = len(new.stages[stage].retries) if stage in new.stages else 0
            for r in st.retries[seen:]:
                if r.reason == RESIZED:  # the pod went on, with a higher limit
                    kopf.info(body, reason=f"Stage{r.reason}", message=f"stage {stage}: Job {r.job}: {r.message}")
                    continue
                more = " with more memory" if r.reason in MEMORY_REASONS else ""
                kopf.warn(body, reason=f"Stage{r.reason}", message=f"stage {stage}: Job {r.job} (memory limit "
                          f"{r.memory_limit}): {r.message}; running it again{more}")
        elif stage in new.stages and new.stages[stage].retries and stage_jobs:
            st.retries = new.stages[stage].retries
        if st.state.value != "Pending" or stage in new.stages:
            new.stages[stage] = st
        if st.state.value == "Running":
            new.stage = StageName(stage)
    if new.stages:
        new.message = f"processing: {overall_progress(new.stages, STAGE_ORDER):.0f}% of the stages done"


def _transition(body, patch, new: MOUSStatus, old_phase: Phase, t: lifecycle.Transition, problems, now,
                degraded_reason) -> None:
    new.phase = t.phase
    new.message = t.message
    new.conditions = lifecycle.conditions_for(new.conditions, t.phase, t.reason, t.message, problems, now,
                                              degraded_reason, new.stages)
    _patch_status(patch, dict(body.get("status") or {}), new)
    (kopf.warn if t.warning else kopf.info)(body, reason=t.reason, message=f"{old_phase} -> {t.phase}: {t.message}")


def _post_degraded(body, old: MOUSStatus, new: MOUSStatus) -> None:
    was = {c.type: c for c in old.conditions}.get("Degraded")
    now = {c.type: c for c in new.conditions}.get("Degraded")
    if now and now.status == "True" and (was is None or was.status != "True" or was.message != now.message):
        kopf.warn(body, reason=now.reason, message=now.message)


def _patch_status(patch, before: dict, new: MOUSStatus) -> None:
    """Merge-patch the fields that differ from the stored status (`before`, as stored), nulling removed ones."""
    after = new.to_wire()
    after.setdefault("phase", new.phase.value)
    patch_changed_status(patch, before, after, _STATUS_KEYS)


@kopf.on.cleanup()
def mous_cleanup(memo: kopf.Memo, logger, **_):
    """On the way out, take this operator's finalizer off every MOUS it watches.

    kopf puts a finalizer on each MOUS because of its timers (resync, progress); while the operator is away nothing
    would remove it, and a MOUS deleted meanwhile would hang in Terminating. Nothing of a MOUS needs the
    operator at deletion: its Jobs are owned by it (the garbage collector removes them) and its products stay.
    Cleanup runs after kopf's watchers have stopped, so the finalizers are not put back until the next start.
    """
    cfg: OperatorSettings | None = getattr(memo, "config", None)
    if cfg is None:
        return
    memo.waker.stop()
    reports.unsubscribe(memo.on_report)
    released = release_finalizers(cfg.namespaces, FINALIZER)
    logger.info("released the finalizer of %d MOUS(s) on shutdown", released)
