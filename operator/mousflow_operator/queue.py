"""Which waiting MOUSs may start processing: at most N at once, earliest deadline first, then priority (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class QueueEntry:
    key: str
    """namespace/name"""
    deadline: datetime
    priority: int = 50
    created: str = ""
    """creationTimestamp, the last tie-breaker (then the key), so the order is total and stable."""


def queue_order(entry: QueueEntry) -> tuple:
    return (entry.deadline, -entry.priority, entry.created, entry.key)


def admissible(waiting: Iterable[QueueEntry], processing: int, limit: int,
               arriving: Iterable[QueueEntry] = ()) -> list[str]:
    """Keys of the waiting MOUSs that may start now, in order: the free slots go to the earliest deadlines,
    and among equal deadlines to the higher priority.

    `arriving` are MOUSs just created whose inputs are still being checked: they keep their place in the order
    (a slot they would get stays free for them) but are not admitted yet. Without this, of many MOUSs applied
    at once the first one checked would start first, whatever its deadline.
    """
    free = max(0, limit - processing)
    waiting_keys = {e.key for e in waiting}
    first = sorted([*waiting, *arriving], key=queue_order)[:free]
    return [e.key for e in first if e.key in waiting_keys]
