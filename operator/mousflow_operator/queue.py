"""Which waiting MOUSs may start processing, and when each is predicted to finish (pure).

At most N MOUSs process at once. Without predictions the free slots go to the earliest deadline, then the
higher priority. With predictions (QueueEntry.seconds, from the history of stage durations) the queue is
played forward in that order, and a MOUS that would then finish after its deadline goes first, least slack
first (slack = deadline - now - its own processing time): a large MOUS that needs its time is not starved by
small ones with earlier deadlines that have time to spare. Earliest deadline first stays the tie-break and the
order of everything not at risk.
"""

from __future__ import annotations

import heapq
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


@dataclass(frozen=True)
class QueueEntry:
    key: str
    """namespace/name"""
    deadline: datetime
    priority: int = 50
    created: str = ""
    """creationTimestamp, the last tie-breaker (then the key), so the order is total and stable."""
    seconds: float | None = None
    """Predicted processing time (status.predictedProcessingSeconds); None: no prediction."""
    started: datetime | None = None
    """When processing started (a MOUS in Processing), for the time it still needs."""


def queue_order(entry: QueueEntry) -> tuple:
    return (entry.deadline, -entry.priority, entry.created, entry.key)


def _fallback_seconds(entries: Iterable[QueueEntry]) -> float:
    """What a MOUS without a prediction is assumed to take when it is ahead of others: the median of the
    predictions there are (0 without any: then the queue ahead is not counted at all)."""
    known = [e.seconds for e in entries if e.seconds is not None]
    return statistics.median(known) if known else 0.0


def play_forward(order: list[QueueEntry], running: Iterable[QueueEntry], slots: int,
                 now: datetime) -> dict[str, datetime | None]:
    """Predicted completion of each MOUS in `order` (and of the running ones) if the queue starts them in that
    order as slots free up. None for a MOUS without a prediction of its own."""
    running = list(running)
    fallback = _fallback_seconds([*order, *running])
    free_at: list[float] = []  # seconds from now at which each running MOUS ends
    out: dict[str, datetime | None] = {}
    for e in running:
        own = e.seconds if e.seconds is not None else fallback
        elapsed = (now - e.started).total_seconds() if e.started else 0.0
        remaining = max(0.0, own - elapsed)
        free_at.append(remaining)
        out[e.key] = now + timedelta(seconds=remaining) if e.seconds is not None else None
    # with k MOUSs running in n slots, the queue's slots free when the last n of them end (k >= n)
    n = max(slots, 1)
    free_at = sorted(free_at)[-n:] if len(free_at) >= n else [0.0] * (n - len(free_at)) + free_at
    heapq.heapify(free_at)
    for e in order:
        start = heapq.heappop(free_at)
        end = start + (e.seconds if e.seconds is not None else fallback)
        heapq.heappush(free_at, end)
        out[e.key] = now + timedelta(seconds=end) if e.seconds is not None else None
    return out


def admission_order(queued: Iterable[QueueEntry], running: Iterable[QueueEntry], slots: int,
                    now: datetime) -> list[QueueEntry]:
    """The queue in the order it is admitted: least slack first among the MOUSs that would miss their deadline
    in earliest-deadline order, then the others in earliest-deadline order."""
    edf = sorted(queued, key=queue_order)
    finish = play_forward(edf, running, slots, now)

    def key(e: QueueEntry) -> tuple:
        at_risk = finish.get(e.key) is not None and finish[e.key] > e.deadline
        slack = (e.deadline - now).total_seconds() - e.seconds if at_risk else 0.0
        return (0 if at_risk else 1, slack, *queue_order(e))

    return sorted(edf, key=key)


def predicted_completions(queued: Iterable[QueueEntry], running: Iterable[QueueEntry], slots: int,
                          now: datetime) -> dict[str, datetime | None]:
    """When each queued and running MOUS is predicted to finish processing, in the order they are admitted."""
    running = list(running)
    return play_forward(admission_order(queued, running, slots, now), running, slots, now)


def admissible(waiting: Iterable[QueueEntry], processing: int, limit: int,
               arriving: Iterable[QueueEntry] = (), running: Iterable[QueueEntry] = (),
               now: datetime | None = None) -> list[str]:
    """Keys of the waiting MOUSs that may start now, in order (admission_order; earliest deadline, then
    priority, when there are no predictions).

    `arriving` are MOUSs just created whose inputs are still being checked: they keep their place in the order
    (a slot they would get stays free for them) but are not admitted yet. Without this, of many MOUSs applied
    at once the first one checked would start first, whatever its deadline. `running`: the MOUSs processing
    now, with their predictions (for the slack of the others); `now` defaults to the earliest deadline, which
    matters only with predictions.
    """
    waiting, arriving = list(waiting), list(arriving)
    free = max(0, limit - processing)
    waiting_keys = {e.key for e in waiting}
    queued = [*waiting, *arriving]
    first = admission_order(queued, running, limit, now or datetime.now(UTC))[:free]
    return [e.key for e in first if e.key in waiting_keys]


ETA_TOLERANCE = 0.1
ETA_TOLERANCE_FLOOR = timedelta(minutes=10)


def settled_eta(stored: datetime | None, fresh: datetime | None, now: datetime) -> datetime | None:
    """The predicted completion to store: the stored one unless the fresh one moved by more than a tenth of the
    time left (10 minutes at least). Every queued MOUS's prediction moves a little whenever a MOUS ahead of it
    does; storing each move would patch every queued MOUS's status about once a minute (N requests a minute for
    a number nobody reads to the second)."""
    if stored is None or fresh is None:
        return fresh
    if abs(fresh - stored) <= max(ETA_TOLERANCE_FLOOR, (max(fresh, now) - now) * ETA_TOLERANCE):
        return stored
    return fresh
