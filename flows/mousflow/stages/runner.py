"""Run one stage: load the MOUS, check the checkpoint, run, measure, report. The pods' and local entry point."""

from __future__ import annotations

import os
import sys
import time
import traceback
import warnings

from mousflow.errors import CalibrationFailed, ImagingFailed, InvalidInput, exit_code_of, first_line
from mousflow.model import load_manifest
from mousflow.stages.context import ProgressFn, StageContext, StageOutcome, print_progress
from mousflow.stages.imaging_scaleout import TEST_WORKER_OOM
from mousflow.stages.memory_watch import MemoryPublisher, container_memory, memory_location
from mousflow.stages.peak_memory import container_oom_kills, container_peak_memory_bytes, process_peak_memory_bytes
from mousflow.storage.location import Location, classify_failure

TEST_FAIL_STAGE = "MOUSFLOW_TEST_FAIL_STAGE"
"""TEST ONLY: the name of a stage that fails once per run root (see _fail_once_if_asked); ignored unless set."""
TEST_FAILURES = {"calibration": CalibrationFailed, "imaging": ImagingFailed, "packaging": InvalidInput}
TEST_GROW_MEMORY = "MOUSFLOW_TEST_GROW_MEMORY"
"""TEST ONLY: `<stage>:<factor>[:<hold seconds>]`: that stage first grows its memory slowly to factor x its
container's limit (and holds it that long before it goes on), once per run root (see _grow_once_if_asked);
ignored unless set."""
TEST_CHILD_OOM = "MOUSFLOW_TEST_CHILD_OOM"
"""TEST ONLY: the name of a stage whose child process is killed for memory once per run root while the stage
survives it (see _child_oom_once_if_asked); ignored unless set."""
TEST_VARIABLES = (TEST_FAIL_STAGE, TEST_GROW_MEMORY, TEST_CHILD_OOM, TEST_WORKER_OOM)
"""The test-only settings, passed from the operator's environment to stage pods as they are."""


def _stage_module(name: str):
    """The stage's module: its run(ctx) and its checkpoint_validity(ctx)."""
    if name == "calibration":
        from mousflow.stages import calibration as module
    elif name == "imaging":
        from mousflow.stages import imaging as module
    elif name == "packaging":
        from mousflow.stages import packaging as module
    else:
        raise ValueError(f"unknown stage {name!r}")
    return module


def status_location(run_root: Location, stage: str) -> Location:
    return run_root.join("status", f"{stage}.json")


def progress_location(run_root: Location, stage: str) -> Location:
    """Where a running stage publishes how far it is (the operator shows it in status while the pod runs)."""
    return run_root.join("status", f"{stage}.progress.json")


class ProgressPublisher:
    """Prints every progress line and writes the latest one to storage, at most every `interval` seconds.

    The stage's pod cannot patch the MOUS (it has no Kubernetes credentials, by design), so progress goes
    where its outputs go; the operator reads it on each reconciliation. Writes are throttled because every
    one is an S3 PUT; the first and the final (100 %) lines are always written.
    """

    def __init__(self, location: Location, interval: float = 2.0, echo: ProgressFn | None = None):
        self.location = location
        self.interval = interval
        self.echo = echo
        self._last_write = -float("inf")

    def __call__(self, message: str, percent: float | None) -> None:
        (self.echo or print_progress)(message, percent)
        now = time.monotonic()
        if percent is None or (now - self._last_write < self.interval and percent < 100.0):
            return
        try:
            self.location.write_json({"percent": round(float(percent), 1), "message": message,
                                      "time": time.time()})
            self._last_write = now
        except Exception as exc:  # progress is informative: never fail a stage over it
            print(f"mousflow: could not publish progress: {exc}", flush=True)


def run_stage(name: str, manifest_uri: str, *, threads: int = 1, progress: ProgressFn | None = None) -> StageOutcome:
    """Run stage `name` for the MOUS at `manifest_uri`; never raises for stage failures, it reports them."""
    started, cpu0 = time.perf_counter(), time.process_time()
    oom_kills_before = container_oom_kills()
    run_root = None
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warning_to_log
            ctx = _context(name, manifest_uri, threads=threads, progress=progress)
            run_root = ctx.run_root
            _fail_once_if_asked(ctx)
            _child_oom_once_if_asked(ctx)
            with MemoryPublisher(memory_location(run_root, name)):
                ballast = _grow_once_if_asked(ctx)
                state = _stage_module(name).run(ctx)
                del ballast
        outcome = StageOutcome(name, state, message="; ".join(ctx.notes), metrics=ctx.metrics)
    except Exception as exc:
        failure = classify_failure(exc)
        if failure.reason == "Error":  # nothing explains it: the traceback goes to the log (stdout), not stderr
            traceback.print_exc(file=sys.stdout)
        outcome = StageOutcome(name, "Failed", failure.reason, first_line(failure))
    outcome.metrics.update(
        wall_seconds=round(time.perf_counter() - started, 3),
        cpu_seconds=round(time.process_time() - cpu0, 3),
        # the peak resident memory of this process, the stage's own footprint (not its parent's: see there)
        peak_memory_bytes=process_peak_memory_bytes(),
    )
    cgroup_peak = container_peak_memory_bytes()
    if cgroup_peak is not None:
        outcome.metrics["cgroup_peak_memory_bytes"] = cgroup_peak
    oom_kills_after = container_oom_kills()
    if oom_kills_after is not None:
        # processes of this stage the kernel killed for memory (a child: the stage itself is alive to say so)
        outcome.metrics["oom_kills"] = oom_kills_after - (oom_kills_before or 0)
    if run_root is not None:
        _report(run_root, outcome)
    return outcome


def _warning_to_log(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning raised while a stage runs (numpy's overflow on garbage data, say) is a line of its log
    (stdout), not of stderr, which carries the stage's outcome alone."""
    print(f"warning: {category.__name__}: {message} ({os.path.basename(filename)}:{lineno})", flush=True)


def skip_if_complete(name: str, manifest_uri: str) -> StageOutcome | None:
    """Without running stage `name`: report it Skipped, in its status as the stage itself would, when its
    checkpoint is valid (the stage's own test, checkpoint_validity). The flow asks before it starts a stage, so
    a whole-run retry starts no pod for a stage that would only skip itself. None when the stage has work to
    do, or when that cannot be told from here: the stage, run, then reports what stands in its way."""
    try:
        ctx = _context(name, manifest_uri)
        _inputs, validity = _stage_module(name).checkpoint_validity(ctx)
    except Exception:  # a missing input, unreadable storage: the stage meets it again and reports it classified
        return None
    if not validity:
        return None
    outcome = StageOutcome(name, "Skipped", message="valid checkpoint, nothing to do: not started")
    _report(ctx.run_root, outcome)
    return outcome


def _fail_once_if_asked(ctx: StageContext) -> None:
    """TEST ONLY, for the cluster tests of a person's retry: with MOUSFLOW_TEST_FAIL_STAGE=<this stage> the stage
    fails, once per run root, with its classified failure (one that no automatic retry repeats), before doing
    anything; a marker beside its status makes the next run of it go on as usual. Without the variable (never
    set in an installation) nothing happens."""
    if os.environ.get(TEST_FAIL_STAGE, "").strip() != ctx.name:
        return
    marker = ctx.run_root.join("status", f"{ctx.name}.test-failure.json")
    if marker.exists():
        return
    marker.write_json({"stage": ctx.name, "variable": TEST_FAIL_STAGE, "time": time.time()})
    raise TEST_FAILURES[ctx.name](f"failure injected by {TEST_FAIL_STAGE}={ctx.name} (test only), once")


def _child_oom_once_if_asked(ctx: StageContext) -> None:
    """TEST ONLY, for the cluster test of a child killed for memory while the stage survives: with
    MOUSFLOW_TEST_CHILD_OOM=<this stage> the stage starts a child process that takes twice the container's limit
    at once (too fast for any in-place resize), so the kernel kills the child, the largest process in the
    container; the stage then fails with its classified failure, as a stage whose helper process (a Dask worker)
    died under it would. Once per run root (a marker beside its status), so the attempt run again goes through.
    Without the variable (never set in an installation), or outside a pod, nothing happens."""
    if os.environ.get(TEST_CHILD_OOM, "").strip() != ctx.name:
        return
    memory = container_memory()
    if memory is None or memory[1] is None:
        return
    marker = ctx.run_root.join("status", f"{ctx.name}.test-child-oom.json")
    if marker.exists():
        return
    marker.write_json({"stage": ctx.name, "variable": TEST_CHILD_OOM, "limit_bytes": memory[1], "time": time.time()})
    import subprocess

    take = 2 * memory[1]
    child = subprocess.run([sys.executable, "-c", f"import numpy; numpy.ones({take}, dtype=numpy.uint8)"],
                           check=False)
    print(f"test: the child taking {take >> 20} MiB ended with {child.returncode}", flush=True)
    raise TEST_FAILURES[ctx.name](f"a child process of the stage ended with {child.returncode} "
                                  f"(injected by {TEST_CHILD_OOM}={ctx.name}, test only)")


def _grow_once_if_asked(ctx: StageContext, step_seconds: float = 0.5):
    """TEST ONLY, for the cluster test of growing a stage pod in place: with MOUSFLOW_TEST_GROW_MEMORY=<this
    stage>:<factor> the stage first takes memory in steps (64 MiB/s up to 3/4 of its limit, then 8 MiB/s, the
    pace of a stage working through its data) until its working set is factor x the container's limit at the
    start, as a stage whose data outgrew its estimate would, and keeps it while it runs: with the limit raised
    in time it goes on, without it the kernel kills it. With `:<hold seconds>` after the factor it then waits
    that long before the stage's work (the chaos suite's kubelet needs a pod over its memory request for a
    while: a small stage's own work takes seconds). Once per run root (a marker beside its status), so the
    attempt run again after an out-of-memory kill goes through. Returns the memory held; without the variable
    (never set in an installation), or outside a pod, None."""
    stage, _, factor = os.environ.get(TEST_GROW_MEMORY, "").partition(":")
    factor, _, hold = factor.partition(":")
    start = container_memory()
    if stage.strip() != ctx.name or start is None or start[1] is None:
        return None
    marker = ctx.run_root.join("status", f"{ctx.name}.test-grow.json")
    if marker.exists():
        return None
    target = int(float(factor) * start[1])
    marker.write_json({"stage": ctx.name, "variable": TEST_GROW_MEMORY, "target_bytes": target, "time": time.time()})
    import numpy as np

    held = []
    while (now := container_memory()) is not None and now[0] < target:
        step = 32 << 20 if now[0] < 0.75 * start[1] else 4 << 20
        held.append(np.ones(step, dtype=np.uint8))  # ones, not zeros: every page is touched
        time.sleep(step_seconds)
    print(f"test: grew to {sum(a.nbytes for a in held) >> 20} MiB more (target {target >> 20} MiB)", flush=True)
    if hold:
        time.sleep(float(hold))
    return held


def _context(name: str, manifest_uri: str, *, threads: int = 1, progress: ProgressFn | None = None) -> StageContext:
    mous = load_manifest(Location.of(manifest_uri).read_text())
    run_root = Location.of(mous.spec.output.uri)
    ctx = StageContext(name, mous, run_root, threads=threads)
    ctx.progress = ProgressPublisher(progress_location(run_root, name), echo=progress)
    return ctx


def _report(run_root: Location, outcome: StageOutcome) -> None:
    try:
        status_location(run_root, outcome.stage).write_json(outcome.to_json())
    except Exception as exc:  # reporting must not mask the outcome
        print(f"mousflow: could not write stage status: {exc}", flush=True)


def exit_code(outcome: StageOutcome) -> int:
    if outcome.state in ("Succeeded", "Skipped"):
        return 0
    return exit_code_of(outcome.reason)
