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


def admissible(waiting: Iterable[QueueEntry], processing: int, limit: int) -> list[str]:
    """Keys of the waiting MOUSs that may start now, in order: the free slots go to the earliest deadlines,
    and among equal deadlines to the higher priority."""
    free = max(0, limit - processing)
    return [e.key for e in sorted(waiting, key=queue_order)[:free]]
