"""Cube imaging scaled out: channel chunks as Dask tasks on an adaptive cluster of workers.

The science stays in numpy kernels (mousflow.science.imaging); this module only decides where a chunk runs.
Each task images one channel chunk, writes its slab of the cube's Zarr and then its own chunk checkpoint
through the storage layer (see imaging.image_cube_chunk), so resuming at chunk granularity works whichever
worker did the chunk and whether or not the stage process survived.

Where the workers come from (MOUSFLOW_DASK):

- ``local`` (the default, the embedded demo): a distributed.LocalCluster of worker processes on this machine;
- ``kubernetes`` (a stage pod): a DaskCluster resource handled by the dask-kubernetes operator, workers from
  the runner image sized per chunk (see dask_kubernetes_cluster);
- ``inline``: no Dask at all, chunks one after the other in this process (for debugging).

If the Kubernetes scheduler cannot place a single worker pod (dask_kubernetes_cluster.wait_for_workers), the
chunks are imaged inline in the stage pod instead, and ChunkRun.fallback says why: a slower cube is better
than a MOUS failed for a capacity problem. Products do not depend on where chunks ran (same threads each).

The number of workers is adaptive between a minimum and a maximum set from the cube's size: never more
workers than chunks waiting, never more than MOUSFLOW_DASK_MAX_WORKERS (default: this machine's cores
locally, 4 on Kubernetes), at least MOUSFLOW_DASK_MIN_WORKERS (default 1). Every chunk is imaged with the
same number of threads (MOUSFLOW_DASK_WORKER_THREADS, default 1) whatever the number of workers, so the
products do not depend on how many workers made them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mousflow.errors import OutOfMemory

if TYPE_CHECKING:
    from mousflow.storage.location import Location

MODES = ("local", "kubernetes", "inline")
TEST_WORKER_OOM = "MOUSFLOW_TEST_WORKER_OOM"
"""TEST ONLY: <factor>: every chunk task first takes its worker pod's memory to factor x the worker limit of the
run's first imaging attempt (see with_test_worker_oom); ignored unless set, and outside worker pods."""


@dataclass(frozen=True)
class ScaleOutSettings:
    mode: str = "local"
    min_workers: int = 1
    max_workers: int | None = None
    """None: the default of the mode (cores of this machine locally, 4 on Kubernetes)."""
    worker_threads: int = 1
    test_worker_take_bytes: int = 0
    """TEST ONLY (with_test_worker_oom): the working set a chunk task first takes in its worker pod."""

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> ScaleOutSettings:
        env = os.environ if env is None else env
        mode = env.get("MOUSFLOW_DASK", "local").strip().lower() or "local"
        if mode not in MODES:
            raise ValueError(f"MOUSFLOW_DASK={mode!r} is not one of {', '.join(MODES)}")

        def _int(name: str, default: int | None) -> int | None:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            value = int(raw)
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
            return value

        return cls(mode=mode, min_workers=_int("MOUSFLOW_DASK_MIN_WORKERS", 1) or 1,
                   max_workers=_int("MOUSFLOW_DASK_MAX_WORKERS", None),
                   worker_threads=_int("MOUSFLOW_DASK_WORKER_THREADS", 1) or 1)


def with_test_worker_oom(settings: ScaleOutSettings, run_root: Location,
                         env: dict[str, str] | None = None) -> ScaleOutSettings:
    """TEST ONLY, for the cluster test of a Dask worker pod killed for its memory: with
    MOUSFLOW_TEST_WORKER_OOM=<factor> on worker pods (MOUSFLOW_DASK=kubernetes) every chunk task first takes its
    worker container's working set to factor x the worker memory limit of the run's first imaging attempt (kept
    in a marker beside the stage's status), as a chunk larger than its estimate would. Above 1 the first
    attempt's workers are killed for it until Dask gives the chunk up (KilledWorker, so OutOfMemory), and the
    launcher's next attempt with larger workers gets through; the same workers would be killed again. Without
    the variable (never set in an installation) the settings are returned as they are."""
    env = os.environ if env is None else env
    factor = env.get(TEST_WORKER_OOM, "").strip()
    if not factor or settings.mode != "kubernetes" or not env.get("MOUSFLOW_DASK_WORKER_MEMORY_LIMIT"):
        return settings
    marker = run_root.join("status", "imaging.test-worker-oom.json")
    if marker.exists():
        target = int(marker.read_json()["target_bytes"])
    else:
        limit = int(env["MOUSFLOW_DASK_WORKER_MEMORY_LIMIT"])
        target = int(float(factor) * limit)
        marker.write_json({"variable": TEST_WORKER_OOM, "first_worker_limit_bytes": limit, "target_bytes": target,
                           "time": time.time()})
    return dataclasses.replace(settings, test_worker_take_bytes=target)


def take_memory_then(target_bytes: int, fn: Callable[..., dict], *args: Any) -> dict:
    """TEST ONLY (with_test_worker_oom), run on a worker: take the container's working set to `target_bytes` in
    64 MiB steps of touched pages (the kernel or the nanny kills the worker on the way if its limit is lower),
    let it go, then run the chunk task."""
    import numpy as np

    from mousflow.stages.memory_watch import container_memory

    ballast = []
    while (now := container_memory()) is not None and now[0] < target_bytes:
        ballast.append(np.ones(min(64 << 20, target_bytes - now[0] + (1 << 20)), dtype=np.uint8))
    del ballast
    return fn(*args)


def in_worker_process(fn: Callable[..., dict], *args: Any) -> dict:
    """Run a chunk task with the Dask computations inside it (xarray's lazy reads of the stored visibilities) on a
    thread pool of this process. Inside a worker Dask's default scheduler is the cluster itself: each read would
    be submitted back to it, and the task would secede from the worker's thread pool to wait, so the worker starts
    the next chunk beside it. At full size one local worker ran 45 of the 54 chunks at once (0.87 GB where a chunk
    needs 0.35 GB, the second worker idle); a worker pod sized for one chunk would be killed for its memory."""
    import dask

    with dask.config.set(scheduler="threads"):
        return fn(*args)


def worker_bounds(n_chunks: int, settings: ScaleOutSettings) -> tuple[int, int]:
    """(minimum, maximum) workers for a cube of n_chunks chunks waiting to be imaged."""
    if settings.max_workers is not None:
        cap = settings.max_workers
    elif settings.mode == "kubernetes":
        cap = 4
    else:
        cap = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    maximum = max(1, min(n_chunks, cap))
    minimum = max(1, min(settings.min_workers, maximum))
    return minimum, maximum


class SharedArg(str):
    """A task argument naming an entry of run_chunks' `shared` (sent to the workers once, not per task)."""


@dataclass
class ChunkRun:
    """What running the chunks reports: each chunk's result and where it ran."""

    results: dict[Any, dict]
    workers_used: int
    max_workers: int
    min_workers: int
    worker_peak_memory_bytes: int
    wall_seconds: float
    fallback: str = ""
    """Why the chunks ran inline instead of on the mode's workers ("" when they did not)."""


@contextlib.contextmanager
def chunk_client(settings: ScaleOutSettings, minimum: int, maximum: int) -> Iterator[Any]:
    """A distributed Client on a fresh adaptive cluster, torn down on exit (also after an error)."""
    from distributed import Client, LocalCluster

    if settings.mode == "kubernetes":
        from mousflow.stages import dask_kubernetes_cluster as kdc

        unschedulable_seconds, timeout_seconds = kdc.first_worker_timeouts()
        with kdc.kubernetes_cluster(minimum, maximum, settings.worker_threads) as cluster, \
                Client(cluster) as client:
            kdc.wait_for_workers(lambda: bool(client.scheduler_info().get("workers")),
                                 lambda: kdc.list_worker_pods(cluster.name, cluster.namespace),
                                 unschedulable_seconds=unschedulable_seconds, timeout_seconds=timeout_seconds)
            yield client
        return
    # Worker processes (not threads): the gridder and CLEAN hold the GIL in places, and a process per worker is
    # what a pod per worker is on Kubernetes. No memory limit: the stage's own estimate sizes the machine.
    with LocalCluster(n_workers=minimum, threads_per_worker=settings.worker_threads, processes=True,
                      dashboard_address=None, memory_limit=0, silence_logs=40) as cluster:
        cluster.adapt(minimum=minimum, maximum=maximum, interval="500ms", wait_count=4)
        with Client(cluster) as client:
            yield client


def run_chunks(tasks: Sequence[tuple[Any, Callable[..., dict], tuple]], settings: ScaleOutSettings,
               on_done: Callable[[Any, dict], None], shared: dict[str, Any] | None = None) -> ChunkRun:
    """Run each (key, fn, args) task, calling on_done(key, result) as each finishes (in completion order).

    `shared` holds large read-only arguments (a window's uvw and sources) sent to the workers once: an arg
    that is a key of `shared` is replaced by its value. A task's result must be a dict; its
    "worker_peak_memory_bytes" (the worker process's peak so far) and "worker" entries are collected.

    Workers that die are replaced (their nanny, the autoscaler) and the chunks resume; the chunks are declared
    out of memory (OutOfMemory, which the launcher answers with larger workers) when one chunk killed every
    worker that ran it, or when workers died under the chunks in more than Dask's allowed-failures rounds in a
    row.
    """
    shared = shared or {}
    started = time.perf_counter()
    results: dict[Any, dict] = {}
    peaks: dict[str, int] = {}
    if not tasks:
        return ChunkRun(results, 0, 0, 0, 0, 0.0)
    minimum, maximum = worker_bounds(len(tasks), settings)

    def _record(key, result):
        results[key] = result
        w = str(result.get("worker", ""))
        peaks[w] = max(peaks.get(w, 0), int(result.get("worker_peak_memory_bytes", 0)))
        on_done(key, result)

    def _inline(fallback: str = "") -> ChunkRun:
        for key, fn, args in tasks:
            if key not in results:  # a chunk a worker finished before the fallback is not imaged again
                _record(key, fn(*[shared[a] if isinstance(a, SharedArg) else a for a in args]))
        return ChunkRun(results, 1, 1, 1, max(peaks.values(), default=0), time.perf_counter() - started, fallback)

    if settings.mode == "inline":
        return _inline()

    from concurrent.futures import CancelledError

    import dask
    from distributed import KilledWorker, as_completed
    from distributed.comm.core import CommClosedError

    from mousflow.stages.dask_kubernetes_cluster import WorkersUnschedulable

    allowed_losses = int(dask.config.get("distributed.scheduler.allowed-failures", 3))
    losses = 0
    try:
        with chunk_client(settings, minimum, maximum) as client:
            while pending := [t for t in tasks if t[0] not in results]:
                # Scattered data lives on one worker and cannot be recomputed: a worker that dies holding it
                # (killed for memory, its pod deleted or evicted) cancels every task that needs it, and one that
                # dies while the data is sent to it closes the scatter's connection. Each such loss starts a
                # round of its own: the data scattered again, the chunks not yet done submitted again (the done
                # ones have their checkpoints and results).
                scattered: dict[str, Any] = {}
                futures: dict[Any, Any] = {}
                try:
                    scattered = {name: client.scatter(value, broadcast=False, hash=False)
                                 for name, value in shared.items()}
                    for key, fn, args in pending:
                        resolved = [scattered[a] if isinstance(a, SharedArg) else a for a in args]
                        fn = functools.partial(in_worker_process, fn)
                        if settings.test_worker_take_bytes and settings.mode == "kubernetes":
                            fn = functools.partial(take_memory_then, settings.test_worker_take_bytes, fn)
                        # pure=False: a retried task must run again, not be taken from the scheduler's memory.
                        name = f"chunk-{_key_text(key)}" + (f"-r{losses}" if losses else "")
                        futures[client.submit(fn, *resolved, pure=False, retries=1, key=name)] = key
                    for fut in as_completed(futures):
                        _record(futures[fut], fut.result())
                except KilledWorker as exc:
                    # A worker dies under a chunk when the chunk does not fit in its memory: the kernel's OOM
                    # killer (local workers share the stage pod's limit) or the nanny at a worker pod's memory
                    # limit kills it, and the nanny or the autoscaler replaces it. The kernels do not otherwise
                    # kill their process.
                    raise OutOfMemory(f"{exc.task}: every Dask worker that ran it died ({exc.allowed_failures + 1} "
                                      "in a row), killed for its memory: the chunk needs more memory than a worker "
                                      "has") from exc
                except (CancelledError, CommClosedError) as exc:  # the scattered data was lost, or its sending
                    losses += 1
                    with contextlib.suppress(Exception):  # the scheduler may be the one that went
                        client.cancel(list(futures) + list(scattered.values()))
                    if losses > allowed_losses:
                        raise OutOfMemory(f"every Dask worker that ran the chunks died ({losses} times in a row, "
                                          f"{len(results)} of {len(tasks)} chunks done), killed for its memory: the "
                                          "chunks need more memory than a worker has") from exc
    except WorkersUnschedulable as exc:
        return _inline(f"{exc}; the cube chunks were imaged in the stage pod")
    return ChunkRun(results, len(peaks), maximum, minimum, max(peaks.values(), default=0),
                    time.perf_counter() - started)


def _key_text(key: Any) -> str:
    return "-".join(str(k) for k in key) if isinstance(key, tuple) else str(key)
