"""The peak resident memory of the current process, as a stage or a Dask worker reports it."""

from __future__ import annotations

import resource


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
