"""The MOUS state machine and its conditions: pure functions of the status and observed facts (the deadline
rule is mousflow.kpi.deadline, with the KPI it serves).

The handlers gather facts (spec checks, inputs in storage, queue admission, the flow run's outcome, the QA2
verdict, a reviewer's decision, the delivery) and ask `next_transition` what to do; they never decide here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from mousflow.model import Condition, Phase
from mousflow.model.status import ConditionStatus, StageStatus

TERMINAL = frozenset({Phase.DELIVERED, Phase.QA2_FAIL, Phase.FAILED})
PROGRESSING = frozenset({Phase.FULLY_OBSERVED, Phase.READY_FOR_PROCESSING, Phase.PROCESSING, Phase.READY_FOR_REVIEW,
                         Phase.DELIVERY_IN_PROGRESS})
REVIEW_DECISIONS = ("pass", "semipass", "fail")


@dataclass(frozen=True)
class Facts:
    """What the operator observed about one MOUS in one reconciliation."""

    spec_problems: tuple[str, ...] = ()
    inputs: str | None = None
    """None: not checked; "ok"; "missing" (an execution block absent); "invalid" (one there but unusable)."""
    inputs_message: str = ""
    admitted: bool = False
    run: str | None = None
    """None: no run or still running; "succeeded"; "failed" (and not to be retried automatically)."""
    run_reason: str = ""
    run_message: str = ""
    qa2: str | None = None
    auto_delivery: bool = False
    review: str | None = None
    """A reviewer's decision from the mousflow.io/review annotation: pass, semipass or fail."""
    delivered: bool | None = None
    delivery_message: str = ""
    waiting: str = ""
    """What a MOUS in Processing (before its next attempt) or DeliveryInProgress (before it copies again) is
    waiting out: a transient failure, the object store or the Prefect server away; "" if nothing."""


@dataclass(frozen=True)
class Transition:
    phase: Phase
    reason: str
    message: str
    warning: bool = False


def next_transition(phase: Phase, facts: Facts) -> Transition | None:
    """The next phase of a MOUS, or None to stay. A spec with problems never moves (it is Degraded instead)."""
    if phase in TERMINAL or facts.spec_problems:
        return None
    if phase == Phase.FULLY_OBSERVED:
        if facts.inputs == "ok":
            return Transition(Phase.READY_FOR_PROCESSING, "InputsPresent", "every execution block is present and valid")
        if facts.inputs == "missing":
            return Transition(Phase.FAILED, "InputMissing", facts.inputs_message, warning=True)
        if facts.inputs == "invalid":
            return Transition(Phase.FAILED, "InvalidInput", facts.inputs_message, warning=True)
    elif phase == Phase.READY_FOR_PROCESSING:
        if facts.admitted:
            return Transition(Phase.PROCESSING, "Admitted", "processing started")
    elif phase == Phase.PROCESSING:
        if facts.run == "succeeded":
            return Transition(Phase.READY_FOR_REVIEW, "ProcessingSucceeded",
                              f"products ready, automatic QA2 verdict {facts.qa2}")
        if facts.run == "failed":
            return Transition(Phase.FAILED, facts.run_reason or "ProcessingFailed", facts.run_message, warning=True)
    elif phase == Phase.READY_FOR_REVIEW:
        if facts.qa2 == "Pass" and facts.auto_delivery:
            return Transition(Phase.DELIVERY_IN_PROGRESS, "AutomaticDelivery",
                              "QA2 Pass and automatic delivery allowed")
        why = "automatic delivery not allowed" if facts.qa2 == "Pass" else f"QA2 {facts.qa2}"
        return Transition(Phase.REVIEWING, "AwaitingReview",
                          f"{why}: annotate mousflow.io/review=pass|semipass|fail to decide")
    elif phase == Phase.REVIEWING:
        if facts.review in ("pass", "semipass"):
            return Transition(Phase.DELIVERY_IN_PROGRESS, "Reviewed", f"reviewer decided {facts.review}")
        if facts.review == "fail":
            return Transition(Phase.QA2_FAIL, "Reviewed", "reviewer decided fail", warning=True)
    elif phase == Phase.DELIVERY_IN_PROGRESS:
        if facts.delivered is True:
            return Transition(Phase.DELIVERED, "Delivered", facts.delivery_message)
        if facts.delivered is False:
            return Transition(Phase.FAILED, "DeliveryFailed", facts.delivery_message, warning=True)
    return None


TRANSIENT_REASONS = frozenset({"Unavailable"})
"""Run failures that say a service, not the MOUS, was away (S3 or the Prefect server unreachable): waited out
with a backoff, not spent from the run-retry budget."""


@dataclass(frozen=True)
class RunRetry:
    """What to do after a failed run: "wait" (a transient failure, waited out, not counted against the budget),
    "retry" (counted), or "fail"; the delay before the next attempt."""

    kind: str
    delay: float = 0.0


def run_retry(reason: str, retryable: bool, attempt: int, transient_waits: int, streak: int, waiting_for: float, *,
              max_attempts: int, backoff: float, max_wait_delay: float, give_up_after: float) -> RunRetry:
    """The next step after run `attempt` failed with `reason`.

    A transient failure is waited out: the delay doubles from `backoff` with each wait of the `streak` (waits
    in a row), up to `max_wait_delay`, for as long as the streak has lasted less than `give_up_after` seconds
    (`waiting_for`); after that it is an ordinary failure. Ordinary retryable failures are counted: at most
    `max_attempts` runs that did not end in a transient wait (attempt - transient_waits, all waits so far)."""
    if reason in TRANSIENT_REASONS and waiting_for < give_up_after:
        return RunRetry("wait", min(max_wait_delay, backoff * 2 ** streak))
    counted = attempt - transient_waits
    if retryable and counted < max_attempts:
        return RunRetry("retry", backoff * 2 ** (counted - 1))
    return RunRetry("fail")


@dataclass
class ConditionSet:
    """The three standard conditions a MOUS carries, from its phase and problems."""

    items: list[Condition] = field(default_factory=list)

    def set(self, type_: str, status: bool, reason: str, message: str, now: datetime) -> None:
        value = ConditionStatus.TRUE if status else ConditionStatus.FALSE
        for i, c in enumerate(self.items):
            if c.type == type_:
                when = c.last_transition_time if c.status == value and c.last_transition_time else now
                self.items[i] = Condition(type=type_, status=value, reason=reason, message=message[:4096],
                                          last_transition_time=when)
                return
        self.items.append(Condition(type=type_, status=value, reason=reason, message=message[:4096],
                                    last_transition_time=now))


STAGE_NOTE_CONDITIONS = ("WorkersUnschedulable",)
"""Notes a stage puts in its outcome message as `<Type>: why` when it went on in a lesser way than asked (the
imaging stage imaging its chunks itself because no node could take its Dask worker pods). Each becomes a MOUS
condition of that type, so `kubectl wait`/`describe` show it without reading every stage's message."""


def conditions_for(existing: list[Condition], phase: Phase, reason: str, message: str,
                   spec_problems: tuple[str, ...], now: datetime,
                   degraded_reason: str = "InvalidSpec",
                   stages: Mapping[str, StageStatus] | None = None, waiting: str = "") -> list[Condition]:
    """Ready, Progressing and Degraded for a MOUS in `phase`, and a STAGE_NOTE_CONDITIONS condition once a stage
    has noted one (False again when no stage's message carries it any more); Waiting while the MOUS waits out a
    transient failure (`waiting`: what it waits out; False again once it stops); lastTransitionTime moves only
    when a status does."""
    cs = ConditionSet([c.model_copy() for c in existing])
    if waiting:
        cs.set("Waiting", True, "Unavailable", waiting, now)
    elif any(c.type == "Waiting" and c.status == ConditionStatus.TRUE for c in cs.items):
        cs.set("Waiting", False, "AsExpected", "", now)
    for type_ in STAGE_NOTE_CONDITIONS:
        # the note runs to the end of the message: its own reason may hold "; " (the scheduler's, ours)
        notes = [f"{name}: {st.message[st.message.find(type_):]}" for name, st in (stages or {}).items()
                 if st.message.startswith(f"{type_}: ") or f"; {type_}: " in st.message]
        if notes:
            cs.set(type_, True, type_, "; ".join(notes), now)
        elif any(c.type == type_ for c in cs.items):
            cs.set(type_, False, "AsExpected", "", now)
    cs.set("Ready", phase == Phase.DELIVERED, reason or str(phase), message, now)
    progressing = phase in PROGRESSING and not spec_problems
    cs.set("Progressing", progressing, reason or str(phase), message, now)
    if spec_problems:
        cs.set("Degraded", True, degraded_reason, "; ".join(spec_problems), now)
    elif phase == Phase.FAILED:
        cs.set("Degraded", True, reason or "Failed", message, now)
    else:
        cs.set("Degraded", False, "AsExpected", "", now)
    return cs.items
