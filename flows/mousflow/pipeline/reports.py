"""What a running flow tells the process it runs in, as it happens: stage outcomes and stage retries.

The operator runs each MOUS's flow in one of its own threads (mousflow_operator.runs), so the flow can hand its
facts to the operator's memory instead of the operator polling storage for them: `publish` calls every
subscriber in this process with (MOUS uid, event). With no subscriber (`mousflow run`, a stage pod) it does
nothing. The stage's own report in storage (<output>/status/<stage>.json) stays what it was, the record that
outlives the process; this is the fast path beside it.

Events (plain dicts, JSON-able):
  {"kind": "outcome", "stage": s, "report": {...the stage's status document: stage, state, reason, message,
   metrics...}}
  {"kind": "retries", "stage": s, "retries": [...the launcher's retry records of that stage...]}
A subscriber must be quick and must not raise (an exception is logged and ignored: reporting never fails a
stage).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

Subscriber = Callable[[str, dict], None]
log = logging.getLogger(__name__)
_lock = threading.Lock()
_subscribers: list[Subscriber] = []


def subscribe(fn: Subscriber) -> None:
    with _lock:
        if fn not in _subscribers:
            _subscribers.append(fn)


def unsubscribe(fn: Subscriber) -> None:
    with _lock:
        if fn in _subscribers:
            _subscribers.remove(fn)


def publish(uid: str, event: dict) -> None:
    with _lock:
        subscribers = list(_subscribers)
    for fn in subscribers:
        try:
            fn(uid, event)
        except Exception:  # a subscriber's trouble is never the stage's
            log.exception("a subscriber of flow reports failed on %s", event.get("kind"))
