"""What one reconciliation of a MOUS changed that the KPI metrics count (pure: old and new status in, facts out).

Counters and histograms are observed once, when the operator itself makes or sees the change (a stage that
has just finished, a retry not seen before, the run's QA2 verdict, the delivery), so an operator restart does
not count anything twice. Gauges come from the MOUSs' current statuses (mousflow.kpi).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from mousflow.kpi import MOUSFacts, facts_from_status
from mousflow.model import MOUSStatus, Phase
from mousflow.model.status import StageState
from mousflow.pipeline.resources import parse_memory


def mous_facts(key: str, fully_observed_at: datetime, status: MOUSStatus) -> MOUSFacts | None:
    """None until the operator has set the MOUS's deadline (it does on the first reconciliation)."""
    return None if status.deadline is None else facts_from_status(key, fully_observed_at, status)


@dataclass(frozen=True)
class FinishedStage:
    stage: str
    wall_seconds: float
    peak_memory_bytes: int | None
    requested_memory_bytes: int | None


def finished_stages(old: MOUSStatus, new: MOUSStatus) -> list[FinishedStage]:
    """Stages that succeeded since the last reconciliation, with what they measured (Skipped ones did no work)."""
    out = []
    for name, st in new.stages.items():
        was = old.stages.get(name)
        if st.state != StageState.SUCCEEDED or (was is not None and was.state == StageState.SUCCEEDED):
            continue
        used = st.resources.used if st.resources else None
        if used is None or used.wall_seconds is None:
            continue
        requested = st.resources.requested.memory if st.resources.requested else None
        out.append(FinishedStage(name, used.wall_seconds, used.peak_memory_bytes,
                                 parse_memory(requested) if requested else None))
    return out


def new_retry_reasons(old: MOUSStatus, new: MOUSStatus) -> list[str]:
    """Reasons of the stage retries (OOMKilled, Interrupted) in `new` that `old` did not list yet."""
    out = []
    for name, st in new.stages.items():
        seen = len(old.stages[name].retries) if name in old.stages else 0
        out += [r.reason for r in st.retries[seen:]]
    return out


def processing_seconds(status: MOUSStatus) -> float | None:
    """The measured processing time: the stages' wall times added up (None until every stage has one)."""
    walls = [s.resources.used.wall_seconds if s.resources and s.resources.used else None
             for s in status.stages.values()]
    return sum(walls) if walls and all(w is not None for w in walls) else None


def prediction_error(status: MOUSStatus) -> float | None:
    """|actual - predicted| / actual processing time of a finished MOUS (None without both)."""
    actual, predicted = processing_seconds(status), status.predicted_processing_seconds
    if not actual or predicted is None:
        return None
    return abs(actual - predicted) / actual


def run_finished(old: MOUSStatus, new: MOUSStatus) -> bool:
    """The flow run has just succeeded (Processing -> ReadyForReview): QA2 verdict and prediction error count."""
    return old.phase == Phase.PROCESSING and new.phase == Phase.READY_FOR_REVIEW


def just_delivered(old: MOUSStatus, new: MOUSStatus) -> bool:
    return old.phase != Phase.DELIVERED and new.phase == Phase.DELIVERED
