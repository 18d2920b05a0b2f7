"""Cube imaging on Dask: wall time with 1 and 2 workers, and per-worker peak memory against the cube's channels.

(b) `--part walltime`: a preset (default tiny, 4-channel chunks) calibrated once, then the imaging stage run
    with MOUSFLOW_DASK_MAX_WORKERS=1 and =2 (local Dask cluster, worker processes); prints the stage's wall
    time and the cube part's time (all chunks), and checks that the two cubes agree.
(c) `--part memory`: two synthetic MOUSs made with the simulator (6 innermost antennas, a band-6 window of 1,000 and
    80,000 channels, ~100 rows per window, images of --npix pixels), each imaged by the same Dask
    chunk tasks the imaging stage runs (stages.imaging_chunks.image_cube_chunk: load one chunk from the MSv4 Zarr,
    grid, clean, write the slab and the checkpoint) for the same first --chunks chunks on 2 local workers;
    prints each worker's peak resident memory. The stage's other parts (line finding, continuum) run in the
    stage process, not in the workers, and are not part of this figure.
(d) `--part pod`: the same chunks of the 1,000-channel MOUS on one `dask worker` started as a worker pod starts
    it (stages.dask_kubernetes_cluster: the CLI, so a nanny process, multiprocessing's resource tracker and the
    worker process) beside a `dask scheduler`; prints each process's resident memory before the first chunk and
    at its peak, their sum (what the pod's memory limit holds; shared library pages counted in each), and the
    resource model's floor for a worker pod (pipeline.resources.WORKER_BASE_BYTES).

Usage: python bench/imaging_scaleout.py [--part walltime|memory|pod|all] [--preset tiny] [--chunks 32]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml

GiB = 2**30
MiB = 2**20


def _run(stage: str, manifest: Path, **env) -> dict:
    from mousflow.pipeline.launchers import LocalProcessLauncher
    from mousflow.stages.runner import status_location
    from mousflow.storage.location import Location

    run_root = Location.of(yaml.safe_load(manifest.read_text())["spec"]["output"]["uri"])
    outcome = LocalProcessLauncher(threads=1, env=env).launch(stage, str(manifest), run_root, lambda _l: None)
    if outcome.state not in ("Succeeded", "Skipped"):
        raise SystemExit(f"{stage}: {outcome.state} {outcome.reason} {outcome.message}")
    assert status_location(run_root, stage).exists()
    return outcome.metrics


def walltime(preset: str, chunk: int) -> None:
    from mousflow.simulate import simulate_mous
    from mousflow.stages.image_store import ImageStore
    from mousflow.storage.location import Location

    work = Path(tempfile.mkdtemp(prefix="mousflow-bench-scaleout-"))
    try:
        sim = simulate_mous(preset, str(work / "mous"), seed=1)
        doc = yaml.safe_load(Path(sim.manifest.path).read_text())
        doc["spec"]["imaging"] = {"channelChunk": chunk}
        doc["spec"]["output"] = {"uri": str(work / "calibrated")}
        base = work / "calibrated.yaml"
        base.write_text(yaml.safe_dump(doc))
        _run("calibration", base)
        rows = {}
        for workers in (1, 2):
            out = work / f"w{workers}"
            shutil.copytree(work / "calibrated", out)
            doc["spec"]["output"] = {"uri": str(out)}
            manifest = work / f"w{workers}.yaml"
            manifest.write_text(yaml.safe_dump(doc))
            m = _run("imaging", manifest, MOUSFLOW_DASK="local", MOUSFLOW_DASK_MIN_WORKERS=str(workers),
                     MOUSFLOW_DASK_MAX_WORKERS=str(workers))
            rows[workers] = m
        spw = sorted(p.name for p in (work / "w1" / "imaging").glob("cube_*.zarr"))[0]
        a = ImageStore(Location.of(work / "w1" / "imaging" / spw)).read("image")
        b = ImageStore(Location.of(work / "w2" / "imaging" / spw)).read("image")
        diff = float(np.nanmax(np.abs(a - b)) / np.nanmax(np.abs(a)))
        print(f"(b) cube imaging, preset {preset}, {rows[1]['chunks_computed']} chunks of {chunk} channels, "
              f"{os.cpu_count()} cores")
        print(f"{'workers':>8} {'stage wall (s)':>15} {'cube chunks (s)':>16} {'worker peak (MiB)':>18}")
        for workers, m in rows.items():
            print(f"{workers:>8} {m['wall_seconds']:>15.1f} {m['cube_seconds']:>16.1f} "
                  f"{m['worker_peak_memory_bytes'] / MiB:>18.0f}")
        print(f"speed-up of the cube part: {rows[1]['cube_seconds'] / rows[2]['cube_seconds']:.2f}x; "
              f"largest |1-worker - 2-worker| / peak in {spw}: {diff:.1e}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _many_channel_preset(n_chan: int):
    from mousflow.simulate.presets import Preset, SpectralWindowSetup

    # A 1.875 GHz band-6 window split into n_chan channels; 6 antennas and a 70-second track keep the rows few.
    return Preset(f"chan{n_chan}", f"bench: one window of {n_chan} channels, few rows", n_antennas=6,
                  n_execution_blocks=1, band=6,
                  spws=(SpectralWindowSetup("spw0", 230.5e9, n_chan, 1.875e9 / n_chan, line=True),),
                  integration_s=10.0, bandpass_scan_s=20, flux_scan_s=10, phase_scan_s=10, target_scan_s=20,
                  n_cycles=1)


def _target_only(ctx, eb: str, rel: str) -> str:
    """The target's partitions of an execution block as a processing set of their own, what the imaging stage
    reads (the calibration stage's output, uncalibrated here: the figure is memory, not the image), at `rel` in
    the MOUS's folder; returns `rel`."""
    from mousflow.stages.intents import has_role
    from mousflow.storage.partitions import open_checked, partition_infos
    from mousflow.storage.zarr_io import finalize_processing_set, write_processing_set_node, write_processing_set_root

    ps, out = open_checked(ctx.path(eb)), ctx.path(rel)
    write_processing_set_root(out)
    for info in partition_infos(ps):
        if has_role(info.intents, "target"):
            write_processing_set_node(out, info.name, ps[info.name])
    finalize_processing_set(out)
    return rel


def _bench_cube(work: Path, n_chan: int, n_chunks: int, chunk: int, npix: int):
    """A MOUS of one window of n_chan channels simulated under `work`, and the tasks of the first n_chunks cube
    chunks of `chunk` channels as the imaging stage makes them, on npix-pixel images: (tasks, shared, rows,
    npix, simulate seconds)."""
    from mousflow.model import load_manifest
    from mousflow.science.imaging import image_header
    from mousflow.simulate import run as sim_run
    from mousflow.simulate import simulate_mous
    from mousflow.simulate.presets import PRESETS
    from mousflow.stages.context import StageContext
    from mousflow.stages.image_store import CUBE_PRODUCTS, ImageStore, header_to_attrs
    from mousflow.stages.imaging import _load_or_make_plans, _windows
    from mousflow.stages.imaging_chunks import CubeChunk, image_cube_chunk
    from mousflow.stages.imaging_scaleout import SharedArg
    from mousflow.storage.location import Location
    from mousflow.telescope import load_configuration

    preset = _many_channel_preset(n_chan)
    PRESETS[preset.name] = preset
    # The innermost antennas (the simulator spreads its picks over the whole configuration): short
    # baselines, a large beam and so a small image, as the memory figure asks for.
    sim_run.choose_antennas = lambda n: np.sort(np.argsort(
        np.linalg.norm(load_configuration().enu_m[:, :2], axis=1), kind="stable")[:n])
    t0 = time.perf_counter()
    sim = simulate_mous(preset.name, str(work / "mous"), seed=1)
    t_sim = time.perf_counter() - t0
    mous = load_manifest(Path(sim.manifest.path).read_text())
    ctx = StageContext("imaging", mous, Location.of(work / "mous"), progress=lambda *_: None)
    ebs = sorted(str(p.relative_to(work / "mous")) for p in (work / "mous" / "eb").glob("*.ps.zarr"))
    windows = _windows(ctx, [_target_only(ctx, eb, f"targets/{k}.ps.zarr") for k, eb in enumerate(ebs)])
    plans = _load_or_make_plans(ctx, windows, 0.5, "bench")
    # Small images: the simulated field imaged on a fixed small grid (the plan's cell, npix pixels).
    w, plan = windows[0], replace(plans[windows[0].spw], npix=npix)
    store = ImageStore(Location.of(work / "cube.zarr"))
    header = image_header(plan.npix, plan.cell_rad, *w.phase_centre_rad, w.freq_hz, None,
                          channel_width_hz=w.channel_width_hz, object_name=w.field_name)
    store.create(CUBE_PRODUCTS, n_chan, plan.npix, chunk, {"header": header_to_attrs(header)})
    tasks = []
    for c0 in range(0, min(n_chan, n_chunks * chunk), chunk):
        t = CubeChunk(run_root_uri=ctx.run_root.uri, cube_uri=store.loc.uri, key=f"bench/chunk-{c0}",
                      spw=w.spw, c0=c0, c1=min(n_chan, c0 + chunk), input_hash="bench", code_version="bench",
                      uid=mous.spec.uid)
        tasks.append((c0, image_cube_chunk, (t, SharedArg("window"), SharedArg("plan"))))
    return tasks, {"window": w, "plan": plan}, w.uvw_m.shape[0], plan.npix, t_sim


def worker_memory(n_chunks: int, chunk: int, npix: int = 64,
                  channel_counts: tuple[int, ...] = (1000, 80_000)) -> None:
    from mousflow.stages.imaging_scaleout import ScaleOutSettings, run_chunks

    print(f"(c) per-worker peak memory, 2 local Dask workers, the first {n_chunks} chunks of {chunk} channels")
    print(f"{'channels':>9} {'rows':>6} {'npix':>5} {'worker peak (MiB)':>18} {'simulate (s)':>13} {'chunks (s)':>11}")
    peaks = {}
    for n_chan in channel_counts:
        work = Path(tempfile.mkdtemp(prefix=f"mousflow-bench-chan{n_chan}-"))
        try:
            tasks, shared, rows, npix_used, t_sim = _bench_cube(work, n_chan, n_chunks, chunk, npix)
            t0 = time.perf_counter()
            run = run_chunks(tasks, ScaleOutSettings(mode="local", min_workers=2, max_workers=2), lambda *_: None,
                             shared=shared)
            peaks[n_chan] = run.worker_peak_memory_bytes
            print(f"{n_chan:>9} {rows:>6} {npix_used:>5} {run.worker_peak_memory_bytes / MiB:>18.0f} "
                  f"{t_sim:>13.1f} {time.perf_counter() - t0:>11.1f}", flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    lo, hi = min(peaks.values()), max(peaks.values())
    print(f"largest / smallest worker peak: {hi / lo:.3f} (aim: within 1.20)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pod_memory(n_chunks: int, chunk: int, npix: int = 64, n_chan: int = 1000) -> None:
    """(d): the chunks on a `dask worker` CLI process tree, its processes' resident memory sampled every 20 ms."""
    import psutil
    from distributed import Client

    from mousflow.pipeline.resources import WORKER_BASE_BYTES
    from mousflow.process_env import STAGE_PROCESS_ENV

    work = Path(tempfile.mkdtemp(prefix="mousflow-bench-pod-"))
    port = _free_port()
    dask_cli = [str(Path(sys.executable).parent / "dask")]  # the venv's, as the runner image's PATH has it
    env = {**os.environ, **STAGE_PROCESS_ENV, "OMP_NUM_THREADS": "1"}
    procs = []
    try:
        tasks, shared, rows, npix_used, _ = _bench_cube(work, n_chan, n_chunks, chunk, npix)
        procs.append(subprocess.Popen([*dask_cli, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                       "--dashboard-address", ":0"], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        # the worker pod's arguments (stages.dask_kubernetes_cluster), less its memory limit: nothing here limits it
        procs.append(subprocess.Popen([*dask_cli, "worker", f"tcp://127.0.0.1:{port}", "--nthreads", "1",
                                       "--name", "bench", "--local-directory", str(work / "dask"),
                                       "--dashboard-address", ":0"], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        with Client(f"tcp://127.0.0.1:{port}", timeout=60) as client:
            client.wait_for_workers(1, timeout=60)
            nanny = psutil.Process(procs[1].pid)
            tree = [nanny, *nanny.children(recursive=True)]
            names = {nanny.pid: "nanny"}
            for p in tree[1:]:
                names[p.pid] = "resource tracker" if "resource_tracker" in " ".join(p.cmdline()) else "worker"
            before = {p.pid: p.memory_info().rss for p in tree}
            peak = dict(before)
            peak_sum = sum(before.values())
            done = threading.Event()

            def sample() -> None:
                nonlocal peak_sum
                while not done.wait(0.02):
                    now = {}
                    for p in tree:
                        try:
                            now[p.pid] = p.memory_info().rss
                        except psutil.Error:
                            continue
                        peak[p.pid] = max(peak[p.pid], now[p.pid])
                    peak_sum = max(peak_sum, sum(now.values()))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            scattered = {k: client.scatter(v) for k, v in shared.items()}
            t0 = time.perf_counter()
            for _c0, fn, (task, *_rest) in tasks:  # one chunk at a time, as a one-thread worker runs them
                client.submit(fn, task, scattered["window"], scattered["plan"], pure=False).result()
            seconds = time.perf_counter() - t0
            time.sleep(0.2)
            done.set()
            sampler.join()
        print(f"(d) a worker pod's processes (`dask worker` with its nanny), {len(tasks)} chunks of {chunk} of "
              f"{n_chan} channels, {rows} rows, {npix_used}-pixel images, {seconds:.1f} s")
        print(f"{'process':>17} {'before (MiB)':>13} {'peak (MiB)':>11}")
        for p in tree:
            print(f"{names[p.pid]:>17} {before[p.pid] / MiB:>13.0f} {peak[p.pid] / MiB:>11.0f}")
        print(f"{'all (sum)':>17} {sum(before.values()) / MiB:>13.0f} {peak_sum / MiB:>11.0f}   "
              f"model's worker floor (WORKER_BASE_BYTES): {WORKER_BASE_BYTES / MiB:.0f} MiB")
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("walltime", "memory", "pod", "all"), default="all")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--chunk", type=int, default=4, help="channels per chunk for the wall-time part")
    p.add_argument("--chunks", type=int, default=32, help="chunks per cube for the memory part")
    p.add_argument("--npix", type=int, default=64, help="image side for the memory part")
    a = p.parse_args()
    if a.part in ("walltime", "all"):
        walltime(a.preset, a.chunk)
    if a.part in ("memory", "all"):
        worker_memory(a.chunks, 16, a.npix)
    if a.part in ("pod", "all"):
        pod_memory(a.chunks, 16, a.npix)
    print(json.dumps({"cores": os.cpu_count()}))


if __name__ == "__main__":
    main()
