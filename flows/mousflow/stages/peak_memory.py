"""Peak memory as a stage or a Dask worker reports it: the process's own, and its pod container's."""

from __future__ import annotations

import os
import resource
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
# Where a container's peak memory is, by cgroup version: v2's unified hierarchy (memory.peak, Linux 5.19+),
# v1's memory controller (memory.max_usage_in_bytes; the test bed's nodes are still on v1).
CGROUP_PEAK_FILES = ("memory.peak", "memory/memory.max_usage_in_bytes")


def process_peak_memory_bytes() -> int:
    """Peak resident memory of this process so far: VmHWM, the high-water mark of its own address space.

    Not ru_maxrss: Linux carries a process's ru_maxrss over exec from the address space it forked from, so a
    stage or worker started by a large parent (a benchmark that simulated first, a stage process that spawned
    workers) would report its parent's peak. ru_maxrss (KiB) is the fallback where /proc is not there."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def container_peak_memory_bytes(cgroup_root: Path = CGROUP_ROOT) -> int | None:
    """The pod container's peak memory (every process in it, page cache included), what the kernel compares
    with the limit; None where it cannot be read. Only in a pod: elsewhere the cgroup is not the stage's own."""
    if not os.environ.get("KUBERNETES_SERVICE_HOST"):
        return None
    for rel in CGROUP_PEAK_FILES:
        try:
            return int((cgroup_root / rel).read_text().strip())
        except (OSError, ValueError):
            continue
    return None
