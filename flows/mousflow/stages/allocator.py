"""A stage process asks glibc's allocator to hand freed memory back to the kernel.

Why: a stage allocates and frees arrays of a few to tens of megabytes, in several threads, window after window.
glibc keeps what is freed in its arenas: it trims a heap only above M_TRIM_THRESHOLD (128 KiB to start with),
and every large block freed raises its mmap threshold (up to 32 MiB), so later arrays of that size come from
the heaps and stay there. A stage's resident memory then climbs with every window it works on, though the
arrays are gone, and its pod must be sized for memory nobody uses. A fixed trim threshold of 64 KiB, the value
Dask's nanny gives its workers (distributed's `nanny.pre-spawn-environ`, MALLOC_TRIM_THRESHOLD_), measured on
the corpus's reduced 12 m block (2026-12-05): calibration's peak 586 -> 393 MiB and imaging's 530 -> 395 MiB,
for about 3 % more CPU time (system time, the kernel giving pages back and again).

mallopt at run time does what the environment variable does at start (setting the trim threshold also fixes
the mmap threshold), for every way a stage starts (a pod, `mousflow run`'s local processes, `mousflow stage`).
A MALLOC_TRIM_THRESHOLD_ of the user's own is left as it is.
"""

from __future__ import annotations

import ctypes
import os

TRIM_THRESHOLD_BYTES = 64 * 1024
M_TRIM_THRESHOLD = -1  # glibc's malloc.h


def return_freed_memory_to_the_kernel() -> bool:
    """Set glibc's trim threshold for this process; False where it is not glibc (e.g. musl) or the user chose."""
    if "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False


__all__ = ["return_freed_memory_to_the_kernel"]
