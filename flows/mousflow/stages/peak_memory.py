"""Peak memory as a stage or a Dask worker reports it: the process's own, and its pod container's; and how many
processes the kernel killed in the container for its memory."""

from __future__ import annotations

import os
import resource
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
# Where a container's peak memory is, by cgroup version: v2's unified hierarchy (memory.peak, Linux 5.19+),
# v1's memory controller (memory.max_usage_in_bytes; the test bed's nodes are still on v1).
CGROUP_PEAK_FILES = ("memory.peak", "memory/memory.max_usage_in_bytes")
# Where the kernel counts the container's out-of-memory kills (an `oom_kill N` line), by cgroup version: v2's
# memory.events, v1's memory.oom_control (Linux 4.13+).
CGROUP_OOM_KILL_FILES = ("memory.events", "memory/memory.oom_control")


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


def container_oom_kills(cgroup_root: Path = CGROUP_ROOT) -> int | None:
    """How many processes the kernel has killed in the pod's container for exceeding its memory limit; None where
    it cannot be read, and outside a pod (the cgroup is not the stage's own there).

    A stage reports it because the kubelet's word on it depends on the runtime: a child killed while the stage
    process survives (a Dask worker, a helper process) leaves a container that exits on its own, and only some
    runtimes then say OOMKilled. The counter is the kernel's, whatever the runtime."""
    if not os.environ.get("KUBERNETES_SERVICE_HOST"):
        return None
    for rel in CGROUP_OOM_KILL_FILES:
        try:
            lines = (cgroup_root / rel).read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
    return None
