"""The observatory's processing KPI, as pure functions over what is known of each MOUS.

The KPI: at least 90 % of MOUSs delivered within their deadline (30 days after fullyObservedAt, 45 when the
MOUS needs manual work; the operator computes each MOUS's deadline and keeps it in status.deadline). The
operator's Prometheus gauges and `mousflow report` both come from these functions, so a dashboard and a
monthly report cannot disagree on what "within the deadline" or "overdue" means.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from mousflow.model import MOUSStatus

TARGET_FRACTION = 0.9
DEADLINE_DAYS = 30
MANUAL_DEADLINE_DAYS = 45
DAY_SECONDS = 86400.0
WINDOW_DAYS = 30
"""The rolling window of deliveries the within-deadline fraction is taken over."""
DELIVERED = "Delivered"
CLOSED = frozenset({DELIVERED, "QA2Fail"})
"""Phases after which nothing more is owed: delivered, or rejected by QA2 (the MOUS goes back to observing)."""
WAITING = frozenset({"FullyObserved", "ReadyForProcessing"})
"""Phases of a MOUS in the queue (not yet processing)."""
PREDICTED = WAITING | {"Processing"}
"""Phases whose predicted completion (of processing) is still ahead."""
DAYS_TO_DEADLINE_BOUNDS = (0, 7, 14, 30)
"""Queue depth is counted cumulatively below these bounds (days left; <= 0 is overdue), then +Inf."""


def parse_time(text: str) -> datetime:
    """An RFC 3339 time as Kubernetes writes it ("...Z")."""
    return datetime.fromisoformat(str(text).replace("Z", "+00:00"))


def deadline(fully_observed_at: datetime, manual_work: bool = False) -> datetime:
    """Delivery deadline: 30 days after the MOUS became Fully Observed, 45 when its recipe needs manual work."""
    return fully_observed_at + timedelta(days=MANUAL_DEADLINE_DAYS if manual_work else DEADLINE_DAYS)


@dataclass(frozen=True)
class MOUSFacts:
    """What the KPI needs of one MOUS: from its status (operator, `mousflow report`) or the history store."""

    key: str
    phase: str
    fully_observed_at: datetime
    deadline: datetime
    delivered_at: datetime | None = None
    predicted_completion: datetime | None = None

    @property
    def open(self) -> bool:
        return self.phase not in CLOSED

    @property
    def days_to_delivery(self) -> float | None:
        if self.delivered_at is None:
            return None
        return (self.delivered_at - self.fully_observed_at).total_seconds() / DAY_SECONDS

    @property
    def deadline_days(self) -> float:
        return (self.deadline - self.fully_observed_at).total_seconds() / DAY_SECONDS

    @property
    def delivered_in_time(self) -> bool | None:
        return None if self.delivered_at is None else self.delivered_at <= self.deadline

    def overdue(self, now: datetime) -> bool:
        """Owed and past its deadline (a Failed MOUS is still owed), or delivered after it."""
        if self.delivered_at is not None:
            return self.delivered_at > self.deadline
        return self.open and now > self.deadline

    def at_risk(self, now: datetime) -> bool:
        """Waiting or processing, not yet overdue, and predicted to finish processing after its deadline (once
        processed, the prediction is history: what remains is review and delivery)."""
        return (self.phase in PREDICTED and now <= self.deadline
                and self.predicted_completion is not None and self.predicted_completion > self.deadline)


def delivered_at(status: MOUSStatus) -> datetime | None:
    """When a Delivered MOUS was delivered: its Ready condition turned True then (the operator's conditions)."""
    if status.phase != DELIVERED:
        return None
    ready = next((c for c in status.conditions if c.type == "Ready" and c.status == "True"), None)
    return ready.last_transition_time if ready else None


def facts_from_status(key: str, fully_observed_at: datetime, status: MOUSStatus,
                      manual_work: bool = False) -> MOUSFacts:
    """A MOUS's KPI facts from its status (the deadline from the rule when the operator has not set it yet)."""
    return MOUSFacts(key, str(status.phase), fully_observed_at,
                     status.deadline or deadline(fully_observed_at, manual_work), delivered_at(status),
                     status.predicted_completion)


def delivered_within_deadline_fraction(facts: Iterable[MOUSFacts], now: datetime,
                                       window_days: float = WINDOW_DAYS) -> float | None:
    """Of the MOUSs delivered in the last `window_days`, the fraction delivered by their deadline (None: none)."""
    since = now - timedelta(days=window_days)
    recent = [f for f in facts if f.delivered_at is not None and since < f.delivered_at <= now]
    return sum(bool(f.delivered_in_time) for f in recent) / len(recent) if recent else None


def overdue_count(facts: Iterable[MOUSFacts], now: datetime) -> int:
    """MOUSs still owed whose deadline has passed."""
    return sum(1 for f in facts if f.delivered_at is None and f.overdue(now))


def at_risk_count(facts: Iterable[MOUSFacts], now: datetime) -> int:
    return sum(1 for f in facts if f.at_risk(now))


def queue_depth_by_days_to_deadline(facts: Iterable[MOUSFacts], now: datetime,
                                    bounds: tuple[int, ...] = DAYS_TO_DEADLINE_BOUNDS) -> dict[str, int]:
    """Waiting MOUSs with at most `le` days left to their deadline, cumulative like a histogram's buckets:
    {"0": overdue, "7": ..., "+Inf": all waiting}. A fixed, small label set."""
    left = [(f.deadline - now).total_seconds() / DAY_SECONDS for f in facts if f.phase in WAITING]
    out = {str(b): sum(1 for d in left if d <= b) for b in bounds}
    out["+Inf"] = len(left)
    return out


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


@dataclass(frozen=True)
class MonthRow:
    month: str
    """YYYY-MM"""
    delivered: int
    within_deadline_percent: float | None
    median_days: float | None
    p90_days: float | None
    overdue: int
    """MOUSs whose deadline fell in this month and passed before they were delivered (or are still owed)."""


def month_of(when: datetime) -> str:
    return f"{when.year:04d}-{when.month:02d}"


def monthly_table(facts: Iterable[MOUSFacts], now: datetime) -> list[MonthRow]:
    """The KPI per calendar month: deliveries by the month they were delivered in, overdue MOUSs by the month
    their deadline fell in."""
    facts = list(facts)
    delivered: dict[str, list[MOUSFacts]] = {}
    overdue: dict[str, int] = {}
    for f in facts:
        if f.delivered_at is not None:
            delivered.setdefault(month_of(f.delivered_at), []).append(f)
        if f.overdue(now):
            overdue[month_of(f.deadline)] = overdue.get(month_of(f.deadline), 0) + 1
    rows = []
    for month in sorted(set(delivered) | set(overdue)):
        done = delivered.get(month, [])
        days = [f.days_to_delivery for f in done]
        rows.append(MonthRow(month, len(done),
                             100.0 * sum(bool(f.delivered_in_time) for f in done) / len(done) if done else None,
                             percentile(days, 50), percentile(days, 90), overdue.get(month, 0)))
    return rows


def days_to_delivery_by_month(facts: Iterable[MOUSFacts]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for f in facts:
        if f.delivered_at is not None:
            out.setdefault(month_of(f.delivered_at), []).append(f.days_to_delivery)
    return dict(sorted(out.items()))
