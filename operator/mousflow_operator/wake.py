"""Waking a MOUS's reconciliation when a fact about it arrives from elsewhere (a Job event, a flow report, a
freed processing slot, the end of a retry backoff).

A MOUS is reconciled by kopf on its own watch events, one event at a time per MOUS (kopf serialises the handlers
of one object), which keeps every decision about it in one place and every status patch in order. A fact that
arrives elsewhere therefore does not reconcile the MOUS itself (it would race the MOUS's own handler on a
status that may be one patch old): it touches the annotation mousflow.io/wake, one small merge patch, and the
MOUS's next watch event does the rest. Wakes of the same MOUS within one flush are coalesced, and a wake can
be set for later (`wake_at`: a retry's backoff, a settle time ending).

Cost: one API request per wake, a handful per stage (the Job created, running, finished; the flow's report)
and none while nothing happens; the slow resync timer (MOUSFLOW_RESYNC_SECONDS) covers a wake lost with a
crash.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable

WAKE_ANNOTATION = "mousflow.io/wake"
log = logging.getLogger(__name__)

PatchFn = Callable[[str, str, dict], None]
"""(namespace, name, merge patch of the MOUS)"""


class Waker:
    def __init__(self, patch: PatchFn, flush_seconds: float = 0.5):
        self.patch = patch
        self.flush_seconds = flush_seconds
        self.cond = threading.Condition()
        self.pending: set[str] = set()
        self.later: list[tuple[float, str]] = []
        self.sent = 0
        self.stopped = False
        self.thread = threading.Thread(target=self._run, name="mous-waker", daemon=True)

    def start(self) -> Waker:
        self.thread.start()
        return self

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify()

    def wake(self, key: str | None) -> None:
        """Reconcile MOUS `key` (namespace/name) soon."""
        if not key:
            return
        with self.cond:
            self.pending.add(key)
            self.cond.notify()

    def wake_at(self, key: str, when: float) -> None:
        """Reconcile MOUS `key` at time.time() `when` (or soon after)."""
        with self.cond:
            heapq.heappush(self.later, (when, key))
            self.cond.notify()

    def _due(self) -> set[str]:
        now = time.time()
        due = set()
        while self.later and self.later[0][0] <= now:
            due.add(heapq.heappop(self.later)[1])
        return due

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.stopped and not self.pending and not (self.later and self.later[0][0] <= time.time()):
                    timeout = max(0.05, self.later[0][0] - time.time()) if self.later else None
                    self.cond.wait(timeout)
                if self.stopped:
                    return
                keys, self.pending = self.pending | self._due(), set()
            for key in sorted(keys):
                namespace, _, name = key.partition("/")
                try:
                    self.patch(namespace, name, {"metadata": {"annotations": {WAKE_ANNOTATION: f"{time.time():.3f}"}}})
                    self.sent += 1
                except Exception as exc:  # gone (deleted) or the API away: the resync timer comes back to it
                    if getattr(exc, "status", None) != 404:
                        log.warning("could not wake MOUS %s: %s", key, exc)
            time.sleep(self.flush_seconds)  # coalesce what arrives meanwhile into the next flush
