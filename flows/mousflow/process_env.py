"""Environment every mousflow process that holds visibilities starts with: a stage run as a local child
process or in a stage Job's pod, and the imaging stage's Dask workers (local ones inherit the stage's
environment; worker pods get it in their spec). A module of its own, below every layer, as pod_security.

MALLOC_ARENA_MAX=2: glibc gives every thread that allocates a heap arena of its own, up to 8 per core, and
memory freed in one arena serves no other. A stage's threads (the partition reader's, the gridder's) left
their arenas holding freed blocks: on the benchmark's execution block (bench/compare_imagers.py) the
calibration stage peaked at 534 MB with glibc's default and 463 MB with 2 arenas, the imaging stage at 398 MB
and 359 MB, for the same CPU time. It must be set before the process starts, hence the environment. (The
operator's Deployment sets the same in the chart.)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

STAGE_PROCESS_ENV: dict[str, str] = {"MALLOC_ARENA_MAX": "2"}

# Libraries installed for other commands that a stage process never uses, but that a library it does use would
# import on its own: pandas (under xarray) imports pyarrow whenever it is installed, to back its string dtype,
# and pyarrow is installed for import-ms's MSv2 reader (arcae). In a stage that is 26 MiB of resident memory
# for nothing (the calibration stage's imports: 160 MiB with it, 128 without), and pandas' strings then keep
# their pure-Python storage, which nothing in a stage depends on.
NOT_IMPORTED_IN_STAGES = ("pyarrow",)


def use_compute_threads(threads: int) -> None:
    """Size ducc0's thread pool (the gridder's degridding and FFTs) to `threads`, whatever the environment says.

    Why: ducc0 sizes its pool once, from OMP_NUM_THREADS, when a process first uses it, and caps every later
    `nthreads=` at that size. A local Dask cluster's nanny sets OMP_NUM_THREADS=1 in its parent's environment
    (distributed's pre-spawn-environ, for its workers), so an imaging stage whose first ducc0 call came after
    its chunks' cluster started (a resumed run: no cube left to plan) imaged its continuum on one thread where
    an uninterrupted run used two: half the speed, and products that differed in their last bits from the
    uninterrupted run's (ducc0's degridding rounds differently per thread count). Call it from the stage's main
    thread before any ducc0 work, never while another thread may be in ducc0."""
    import ducc0.misc

    threads = max(1, int(threads))
    if ducc0.misc.thread_pool_size() != threads:
        ducc0.misc.resize_thread_pool(threads)


def stage_process_env_vars() -> list[dict]:
    """STAGE_PROCESS_ENV as a container's `env` entries."""
    return [{"name": name, "value": value} for name, value in sorted(STAGE_PROCESS_ENV.items())]


def keep_unused_libraries_out() -> None:
    """Make the libraries of NOT_IMPORTED_IN_STAGES unimportable in this process (an ImportError, which every
    optional import expects), unless one is imported already. A stage process calls it first thing; not for
    a process that runs other commands too."""
    for name in NOT_IMPORTED_IN_STAGES:
        sys.modules.setdefault(name, None)


@functools.cache
def _libc_malloc_trim():
    """glibc's malloc_trim, or None where the C library is not glibc (musl, macOS)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> bool:
    """Give the memory this process has freed back to the system (glibc's malloc_trim(0)); False where the C
    library has no such call.

    Why: arrays of less than 32 MiB (flags, a block's weights, the temporaries of a solve) come from glibc's
    heap, and what is freed there stays in the process's resident memory, in holes too fragmented for glibc to
    return on its own; the next large array (a calibrator's visibilities, over glibc's 32 MiB mmap threshold) is
    mapped anew on top of it. On the full-size corpus block the calibration stage held ~270 MB of freed heap
    after one window's target pass when the next window's calibrators were read. A stage calls this where one
    large working set is done and the next is about to be read: a few calls per window, each a walk of the heap
    (milliseconds). Setting MALLOC_TRIM_THRESHOLD_ instead disables glibc's dynamic mmap threshold, and every
    allocation of more than 128 KiB then became a fresh mapping: three times the system time."""
    trim = _libc_malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
