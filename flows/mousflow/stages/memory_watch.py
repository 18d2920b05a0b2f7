"""A stage pod's memory while it runs, published for whoever may raise its limit in place.

The stage cannot resize its own pod (it has no Kubernetes credentials, by design), and nothing else can read
its memory without rights on the node (the kubelet's stats), so the stage reads its own container's cgroup
every few seconds and writes it next to its progress (`status/<stage>.memory.json`); the launcher following
the stage's Job reads it and raises the pod's memory limit through the `resize` subresource before the kernel
would kill the stage (pipeline.kubernetes). Outside a pod nothing is published.

The working set is what the kubelet and the OOM killer go by: usage minus the inactive page cache (which the
kernel reclaims before it kills).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from mousflow.storage.location import Location

CGROUP_ROOT = Path("/sys/fs/cgroup")
# (usage, limit, stat file, its inactive-file key) per cgroup version: v2's unified hierarchy, then v1's memory
# controller (the test bed's nodes are on v1)
CGROUP_MEMORY_FILES = (("memory.current", "memory.max", "memory.stat", "inactive_file"),
                       ("memory/memory.usage_in_bytes", "memory/memory.limit_in_bytes", "memory/memory.stat",
                        "total_inactive_file"))
NO_LIMIT = 1 << 62  # v1 reports "no limit" as a huge number, v2 as "max"


def memory_location(run_root: Location, stage: str) -> Location:
    return run_root.join("status", f"{stage}.memory.json")


def container_memory(cgroup_root: Path = CGROUP_ROOT) -> tuple[int, int | None] | None:
    """(working set, limit or None when unlimited) of this pod's container, in bytes; None outside a pod or
    where the cgroup cannot be read."""
    if not os.environ.get("KUBERNETES_SERVICE_HOST"):
        return None
    for usage_file, limit_file, stat_file, inactive_key in CGROUP_MEMORY_FILES:
        try:
            usage = int((cgroup_root / usage_file).read_text().strip())
            raw_limit = (cgroup_root / limit_file).read_text().strip()
            stat = dict(line.split() for line in (cgroup_root / stat_file).read_text().splitlines() if line)
        except (OSError, ValueError):
            continue
        limit = None if raw_limit == "max" or int(raw_limit) >= NO_LIMIT else int(raw_limit)
        return max(0, usage - int(stat.get(inactive_key, 0))), limit
    return None


class MemoryPublisher:
    """While in effect (a context manager), writes the container's working set and limit every `interval`
    seconds to `location`, from a daemon thread. A failed write is skipped: the figure is advisory, the
    out-of-memory retry stays the fallback."""

    def __init__(self, location: Location, interval: float = 2.0, read=container_memory):
        self.location = location
        self.interval = interval
        self.read = read
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> MemoryPublisher:
        if self.read() is not None:
            self._thread = threading.Thread(target=self._loop, name="memory-publisher", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.interval + 5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            got = self.read()
            if got is not None:
                try:
                    self.location.write_json({"workingSetBytes": got[0], "limitBytes": got[1], "time": time.time()})
                except Exception:
                    pass
            self._stop.wait(self.interval)
