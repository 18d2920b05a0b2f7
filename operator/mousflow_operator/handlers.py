"""kopf handlers for MOUS resources: gather facts, ask `lifecycle` what to do, patch the status, post Events.

Every MOUS is reconciled by one timer (`mous_reconcile`): the facts it needs are in storage (stage reports,
checkpoints, products), in Kubernetes (Jobs, annotations) and in this process (flow runs), none of which
produce watch events on the MOUS itself. Handlers are synchronous: kopf runs them in its thread pool, and
they block on S3 and the Kubernetes API.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import kopf
import yaml

from mousflow.kpi import deadline, delivered_at, parse_time
from mousflow.model import GROUP, PLURAL, VERSION, MOUSResource, MOUSSpec, MOUSStatus, Phase, QA2Status
from mousflow.model.status import ProductsStatus, StageRetry
from mousflow.pipeline.history import DeliveryRecord, History
from mousflow.pipeline.kubernetes import MEMORY_REASONS, retries_location
from mousflow.stages import STAGE_ORDER
from mousflow.stages.runner import progress_location, status_location
from mousflow.storage.location import Location
from mousflow_operator import inputs, kpi_events, lifecycle
from mousflow_operator.delivery import deliver, products_location
from mousflow_operator.finalizers import FINALIZER, release_finalizers
from mousflow_operator.metrics import OperatorMetrics
from mousflow_operator.progress import overall_progress, stage_status
from mousflow_operator.queue import QueueEntry, admissible, predicted_completions
from mousflow_operator.runs import RunManager
from mousflow_operator.settings import OperatorSettings

RESOURCE = (GROUP, VERSION, PLURAL)
ANN = "mousflow.io/"
A_REVIEW, A_RETRY = ANN + "review", ANN + "retry"
A_RETRY_HANDLED, A_ATTEMPT, A_RETRY_AFTER = ANN + "retry-handled", ANN + "run-attempt", ANN + "retry-after"
A_MANUAL, A_AUTO_DELIVERY = ANN + "manual-work", ANN + "auto-delivery"
TICK_SECONDS = OperatorSettings.from_env().tick_seconds


@kopf.on.startup()
def mous_startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger, **_):
    from kubernetes import config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    memo.config = OperatorSettings.from_env()
    memo.runs = RunManager(threads=memo.config.stage_threads)
    memo.admission = threading.Lock()
    memo.own_predictions = {}
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
    settings.execution.max_workers = 32
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
    return hashlib.sha256(uid.encode()).hexdigest()[:10]


def _jobs(namespace: str, uid: str, owner: dict) -> dict[str, list[dict]]:
    """The MOUS's stage Jobs by stage (API form); each gets the MOUS as owner, so the garbage collector removes
    them with the MOUS even when the operator is not running."""
    from kubernetes import client

    batch = client.BatchV1Api()
    items = batch.list_namespaced_job(namespace, label_selector=f"mousflow.io/mous={_mous_label(uid)}").items
    out: dict[str, list[dict]] = {}
    for job in items:
        doc = client.ApiClient().sanitize_for_serialization(job)
        if not doc["metadata"].get("ownerReferences"):
            batch.patch_namespaced_job(doc["metadata"]["name"], namespace,
                                       {"metadata": {"ownerReferences": [owner]}})
        out.setdefault(doc["metadata"]["labels"].get("mousflow.io/stage", "?"), []).append(doc)
    return out


def _namespace_auto_delivery(namespace: str) -> bool | None:
    from kubernetes import client

    value = (client.CoreV1Api().read_namespace(namespace).metadata.annotations or {}).get(A_AUTO_DELIVERY)
    return None if value is None else value.lower() == "true"


@kopf.timer(*RESOURCE, interval=TICK_SECONDS, initial_delay=0)
def mous_reconcile(body, spec, meta, name, namespace, patch, memo: kopf.Memo, mous_queue: kopf.Index, logger,
                   **_):
    cfg: OperatorSettings = memo.config
    runs: RunManager = memo.runs
    key = f"{namespace}/{name}"
    annotations = dict(meta.get("annotations", {}))
    old = _status_model(dict(body.get("status") or {}))
    memo.metrics.observe(key, Phase(old.phase).value)
    new = old.model_copy(deep=True)
    phase = Phase(old.phase)
    now = datetime.now(UTC)
    mous_spec = MOUSSpec.model_validate(dict(spec))
    new.deadline = _deadline(spec, annotations)
    problems = inputs.spec_problems(mous_spec)
    degraded_reason = "InvalidSpec"
    facts: dict = {"spec_problems": problems}

    if problems:
        pass
    elif phase == Phase.FAILED:
        token = annotations.get(A_RETRY)
        if token and token != annotations.get(A_RETRY_HANDLED):
            patch.metadata.annotations[A_RETRY_HANDLED] = token
            patch.metadata.annotations[A_ATTEMPT] = "1"
            patch.metadata.annotations[A_RETRY_AFTER] = None
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
        facts.update(_processing(runs, key, mous_spec, namespace, body, meta, new, annotations, patch, cfg, logger))
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
            facts.update(delivered=False, delivery_message=f"delivery failed: {exc}")

    if not problems and (phase == Phase.READY_FOR_PROCESSING or facts.get("inputs") == "ok"):
        # waiting: predict its own processing time (kept once it starts, to measure the prediction's error)
        seconds, why = _own_prediction(memo, key, namespace, body, mous_spec, cfg)
        new.predicted_processing_seconds = seconds
        new.predicted_completion_reason = why
    if not problems and phase in (Phase.FULLY_OBSERVED, Phase.READY_FOR_PROCESSING, Phase.PROCESSING):
        new.predicted_completion = _predicted_completion(mous_queue, runs, key, new, now, cfg)

    transition = lifecycle.next_transition(phase, lifecycle.Facts(**facts))
    fully_observed_at = _fully_observed_at(spec)
    if transition is None:
        new.conditions = lifecycle.conditions_for(old.conditions, phase, _last_reason(old), old.message, problems,
                                                  now, degraded_reason)
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


def _processing(runs: RunManager, key, mous_spec: MOUSSpec, namespace, body, meta, new: MOUSStatus, annotations,
                patch, cfg: OperatorSettings, logger) -> dict:
    retry_after = float(annotations.get(A_RETRY_AFTER) or 0)
    handle = runs.get(key)
    if handle is None or handle.outcome is None:
        if time.time() >= retry_after:
            handle = _ensure_run(runs, key, mous_spec, namespace, body, new.observed_generation or
                                 int(meta.get("generation", 1)), annotations)
            new.flow_run_id = handle.flow_run_id or new.flow_run_id
    _observe_stages(mous_spec, namespace, body, new)
    if handle is None or handle.outcome is None:
        return {}
    outcome = handle.outcome
    if outcome.state == "succeeded":
        qa = products_location(mous_spec.output.uri).join("qa2.json").read_json()
        new.qa2 = QA2Status(verdict=qa["verdict"], reasons=[str(r) for r in qa.get("reasons", [])],
                            scores={k: float(v["score"]) for k, v in qa.get("stage_scores", {}).items()})
        products = products_location(mous_spec.output.uri)
        new.products = ProductsStatus(manifest_uri=products.join("manifest.json").uri,
                                      weblog_uri=products.join("weblog", "index.html").uri)
        new.stage = None
        return {"run": "succeeded", "qa2": qa["verdict"]}
    attempt = int(annotations.get(A_ATTEMPT, "1"))
    if outcome.retryable and attempt < cfg.max_run_attempts:
        delay = cfg.retry_backoff_seconds * 2 ** (attempt - 1)
        patch.metadata.annotations[A_ATTEMPT] = str(attempt + 1)
        patch.metadata.annotations[A_RETRY_AFTER] = f"{time.time() + delay:.0f}"
        runs.forget(key)
        new.message = f"attempt {attempt} failed ({outcome.reason}: {outcome.message}); retrying in {delay:.0f} s"
        kopf.warn(body, reason="RetryScheduled", message=new.message)
        return {}
    new.stage = None
    return {"run": "failed", "run_reason": outcome.reason, "run_message": outcome.message}


def _observe_stages(mous_spec: MOUSSpec, namespace, body, new: MOUSStatus) -> None:
    owner = {"apiVersion": body["apiVersion"], "kind": body["kind"], "name": body["metadata"]["name"],
             "uid": body["metadata"]["uid"], "controller": False, "blockOwnerDeletion": False}
    jobs = _jobs(namespace, mous_spec.uid, owner)
    run_root = Location.of(mous_spec.output.uri)
    for stage in STAGE_ORDER:
        report_loc = status_location(run_root, stage)
        report = report_loc.read_json() if report_loc.exists() else None
        cp = run_root.join("checkpoints", f"{stage}.json")
        progress_loc = progress_location(run_root, stage)
        progress = progress_loc.read_json() if report is None and progress_loc.exists() else None
        st = stage_status(report, jobs.get(stage, []), cp.uri, progress)
        retries_loc = retries_location(run_root, stage)
        if retries_loc.exists():
            st.retries = [StageRetry.model_validate(r) for r in retries_loc.read_json()]
            seen = len(new.stages[stage].retries) if stage in new.stages else 0
            for r in st.retries[seen:]:
                more = " with more memory" if r.reason in MEMORY_REASONS else ""
                kopf.warn(body, reason=f"Stage{r.reason}", message=f"stage {stage}: Job {r.job} (memory limit "
                          f"{r.memory_limit}): {r.message}; running it again{more}")
        if st.state.value != "Pending" or stage in new.stages:
            new.stages[stage] = st
        if st.state.value == "Running":
            new.stage = stage
    if new.stages:
        new.message = f"processing: {overall_progress(new.stages, STAGE_ORDER):.0f}% of the stages done"


def _transition(body, patch, new: MOUSStatus, old_phase: Phase, t: lifecycle.Transition, problems, now,
                degraded_reason) -> None:
    new.phase = t.phase
    new.message = t.message
    new.conditions = lifecycle.conditions_for(new.conditions, t.phase, t.reason, t.message, problems, now,
                                              degraded_reason)
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
    for k, v in after.items():
        if before.get(k) != v:
            patch.status[k] = v
    for k in before:
        if k not in after and k in _STATUS_KEYS:
            patch.status[k] = None


@kopf.on.event(*RESOURCE)
def mous_deleted(type, name, namespace, memo: kopf.Memo, logger, **_):
    """A deleted MOUS's flow run is cancelled here; its Jobs go with it (owner references). Products stay."""
    if type == "DELETED" and getattr(memo, "metrics", None) is not None:
        memo.metrics.forget(f"{namespace}/{name}")
    if type == "DELETED" and getattr(memo, "own_predictions", None) is not None:
        memo.own_predictions.pop(f"{namespace}/{name}", None)
    if type == "DELETED" and getattr(memo, "runs", None) is not None:
        handle = memo.runs.forget(f"{namespace}/{name}", cancel=True)
        if handle is not None:
            logger.info("cancelled flow run %s of deleted MOUS %s/%s", handle.name, namespace, name)


@kopf.on.cleanup()
def mous_cleanup(memo: kopf.Memo, logger, **_):
    """On the way out, take this operator's finalizer off every MOUS it watches.

    kopf puts a finalizer on each MOUS because of the reconcile timer; while the operator is away nothing
    would remove it, and a MOUS deleted meanwhile would hang in Terminating. Nothing of a MOUS needs the
    operator at deletion: its Jobs are owned by it (the garbage collector removes them) and its products stay.
    Cleanup runs after kopf's watchers have stopped, so the finalizers are not put back until the next start.
    """
    cfg: OperatorSettings | None = getattr(memo, "config", None)
    if cfg is None:
        return
    released = release_finalizers(cfg.namespaces, FINALIZER)
    logger.info("released the finalizer of %d MOUS(s) on shutdown", released)
