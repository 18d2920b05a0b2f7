"""The imaging stage: a cube per spectral window, in channel chunks, then the continuum (MFS) image.

Inputs are the calibrated target partitions the calibration checkpoint lists. For each window:

1. an ImagingPlan (cell = beam minor axis / 5, image covering the primary beam to pblimit) from its uv
   coverage, stored in imaging/plans.json so every chunk and every resumed run uses the same grid;
2. the cube, chunk by chunk: each chunk reads only its channels from Zarr, images them with
   mousflow.science.imaging.image_channels, writes its slab of imaging/cube_<spw>.zarr and then its chunk
   checkpoint, so an interrupted cube resumes at the next unfinished chunk;
3. line channels found from the cube (a channel whose brightest pixel stands out from the window's median by
   more than LINE_SIGMA times that channel's rms), so the continuum leaves them out.

Then the continuum: every line-free channel of every window, imaged together, written to continuum.zarr.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import numpy as np

from mousflow.errors import ImagingFailed, InputMissing
from mousflow.model.semantics import several_pointings
from mousflow.process_env import release_freed_memory, use_compute_threads
from mousflow.science.imaging import (
    Beam,
    ImagingPlan,
    image_header,
    image_mfs,
    image_rms,
    plan_image,
)
from mousflow.science.imaging.noise import median_noise_ratio, window_weight_scales
from mousflow.science.imaging.weighting import IMAGING_WEIGHT_DTYPE
from mousflow.stages.context import StageContext
from mousflow.stages.image_store import CUBE_PRODUCTS, PLANE_PRODUCTS, ImageStore, header_to_attrs
from mousflow.stages.imaging_chunks import CubeChunk, WindowData, image_cube_chunk
from mousflow.stages.imaging_scaleout import (
    ScaleOutSettings,
    SharedArg,
    run_chunks,
    with_test_worker_oom,
    worker_bounds,
)
from mousflow.stages.versioning import code_version
from mousflow.storage.checkpoints import CheckpointManifest, Validity, hash_inputs
from mousflow.storage.integrity import verify_checksums
from mousflow.storage.processing_set_metadata import read_metadata
from mousflow.storage.stored_rows import StoredRows

STAGE = "imaging"
DEFAULT_CHANNEL_CHUNK = 16
# The continuum reads a window a block of integrations at a time, each about this much of a partition's stored
# visibilities (both hands, as stored; the block's Stokes I and its averaging's intermediates, ~5x, come on
# top), whole stored chunks where one fits (a full-size 480-channel window's chunk is 16-32 MiB), one after the
# other: at 128 MiB read on Dask's threads the reading was the continuum's peak, 0.3 GB over the data gathered;
# at 32 MiB a 128-channel window still took two stored chunks a block (+180 MiB while it was read, at full size).
CONTINUUM_READ_BLOCK_BYTES = 8 * 2**20
LINE_SIGMA = 6.0
CONTINUUM_SYSTEMATIC = 0.1
MIN_LINE_CHANNELS = 2
# The sensitivity a proposal asks for is the one at the pointing centre: QA measures the residual's rms where
# the primary beam is at least half its peak (the whole field, to pblimit, is reported too).
QA_RMS_PBLIMIT = 0.5


def _windows(ctx: StageContext, calibrated: list[str]) -> list[WindowData]:
    """The target's windows, every execution block's rows of each stacked, from the partitions' metadata and
    uvw read straight from their Zarr arrays: no xarray (with pandas and pyarrow, 87 MiB of this process's
    memory, which the continuum's peak would carry)."""
    by_spw: dict[str, dict] = {}
    centres: list[tuple[str, tuple[float, float]]] = []
    opened: dict[str, StoredRows] = {}  # handed to the windows: each partition's arrays opened once
    for rel in calibrated:
        loc = ctx.path(rel)
        for meta in read_metadata(loc):
            info = meta.info
            if len(info.field_names) > 1:
                raise ImagingFailed(f"{info.name}: target fields {', '.join(info.field_names)} in one partition: "
                                    f"mosaics are not imaged yet")
            part = loc.join(info.name)
            rows = opened[part.uri] = StoredRows.open(part)
            field_name, centre = next(iter(meta.field_centres.items()))  # the field_and_source dataset's first
            centres.append((f"{field_name} of {rel}", centre))
            entry = by_spw.setdefault(info.spw_name, {"uvw": [], "sources": [], "freq": None,
                                                      "dishes": meta.dish_diameter_m, "field": (field_name, centre)})
            if entry["freq"] is None:
                entry["freq"] = meta.frequency_hz
            elif entry["freq"].shape != meta.frequency_hz.shape or not np.allclose(entry["freq"], meta.frequency_hz,
                                                                                   rtol=1e-9):
                raise ImagingFailed(f"window {info.spw_name} has different channels in different execution blocks")
            entry["uvw"].append(rows.uvw_m().reshape(-1, 3))
            entry["sources"].append((loc, info.name))
    mosaic = several_pointings(centres)  # the input checks refuse it first; never stack pointings
    if mosaic:
        raise ImagingFailed(mosaic)
    windows = []
    for spw, e in sorted(by_spw.items()):
        dish = float(np.nanmedian(e["dishes"])) if np.isfinite(e["dishes"]).any() else 12.0
        field_name, centre = e["field"]
        windows.append(WindowData(spw, e["freq"], np.concatenate(e["uvw"]), dish, centre, field_name,
                                  e["sources"], _opened=opened))
    return windows


def _plan_dict(plan: ImagingPlan) -> dict:
    d = asdict(plan)
    d["expected_beam"] = list(d["expected_beam"].values()) if isinstance(d["expected_beam"], dict) else d[
        "expected_beam"]
    return d


def _plan_from_dict(d: dict) -> ImagingPlan:
    d = dict(d)
    d["expected_beam"] = Beam(*d["expected_beam"])
    return ImagingPlan(**d)


def _calibration_checkpoint(ctx: StageContext) -> CheckpointManifest:
    upstream = ctx.checkpoints.read("calibration")
    if upstream is None:
        raise InputMissing("imaging needs the calibration checkpoint, which does not exist: run calibration first")
    return upstream


def _robust_and_chunk(ctx: StageContext) -> tuple[float, int]:
    spec = ctx.mous.spec
    robust = spec.imaging.robust if spec.imaging else 0.5
    chunk = (spec.imaging.channel_chunk if spec.imaging and spec.imaging.channel_chunk else None) or \
        DEFAULT_CHANNEL_CHUNK
    return robust, chunk


def checkpoint_validity(ctx: StageContext) -> tuple[str, Validity]:
    """(the hash of the stage's inputs, whether its checkpoint holds the work for them): what decides that the
    stage has nothing to do, here and before the flow would start it (stages.runner.skip_if_complete)."""
    inputs = hash_inputs(_calibration_checkpoint(ctx).outputs, *_robust_and_chunk(ctx))
    return inputs, ctx.checkpoints.validate(STAGE, inputs, code_version(STAGE))


def run(ctx: StageContext) -> str:
    version = code_version(STAGE)
    inputs, validity = checkpoint_validity(ctx)
    upstream = _calibration_checkpoint(ctx)
    robust, chunk = _robust_and_chunk(ctx)
    if validity:
        ctx.progress("imaging: valid checkpoint, nothing to do", 100.0)
        return "Skipped"
    ctx.progress(f"imaging: starting ({validity.reason})", 0.0)
    use_compute_threads(ctx.threads)

    calibrated = [rel for rel in upstream.outputs if rel.endswith("calibrated.ps.zarr")]
    for rel in calibrated:
        verify_checksums(ctx.path(rel), "calibrated data", remedy="run calibration again")
    windows = _windows(ctx, calibrated)
    plans = _load_or_make_plans(ctx, windows, robust, inputs)
    total_chunks = sum(math.ceil(w.freq_hz.size / chunk) for w in windows)
    done_chunks = 0
    summary = {"robust": robust, "channel_chunk": chunk, "cubes": {}, "chunks_computed": 0, "chunks_skipped": 0}
    outputs = ["imaging/plans.json"]
    line_free: dict[str, np.ndarray] = {}
    noise_ratio: dict[str, float] = {}
    scaleout = with_test_worker_oom(ScaleOutSettings.from_env(), ctx.run_root)
    pending: list = []
    shared: dict = {}
    cube_state: dict = {}

    def _chunk_done(spw: str, c0: int, c1: int, metrics: dict) -> None:
        nonlocal done_chunks
        per_chan = cube_state[spw][1]
        for name in ("rms", "predicted_rms", "peak"):
            per_chan[name][c0:c1] = metrics[name]
        per_chan["beams"][c0:c1] = metrics["beams"]
        done_chunks += 1
        ctx.progress(f"imaging: cube {spw} channels {c0}-{c1 - 1}", 90.0 * done_chunks / total_chunks)

    for w in windows:
        plan = plans[w.spw]
        store = ImageStore(ctx.path(STAGE, f"cube_{w.spw}.zarr"))
        n_chan = w.freq_hz.size
        header = image_header(plan.npix, plan.cell_rad, *w.phase_centre_rad, w.freq_hz, None,
                              channel_width_hz=w.channel_width_hz, object_name=w.field_name)
        if not store.exists() or store.attrs.get("input_hash") != inputs:
            store.create(CUBE_PRODUCTS, n_chan, plan.npix, chunk, {"input_hash": inputs, "spw": w.spw,
                                                                   "header": header_to_attrs(header)})
        per_chan = {"rms": np.full(n_chan, np.nan), "predicted_rms": np.full(n_chan, np.nan),
                    "peak": np.full(n_chan, np.nan), "beams": [None] * n_chan}
        cube_state[w.spw] = (store, per_chan)
        for c0 in range(0, n_chan, chunk):
            c1 = min(n_chan, c0 + chunk)
            key = f"{STAGE}/cube_{w.spw}/chunk-{c0:06d}-{c1:06d}"
            chunk_inputs = hash_inputs(inputs, w.spw, c0, c1)
            cp = ctx.checkpoints.read(key)
            if cp is not None and cp.input_hash == chunk_inputs and cp.code_version == version and \
                    store.slab_digests(c0, c1, CUBE_PRODUCTS) == cp.outputs:
                _chunk_done(w.spw, c0, c1, cp.metrics)
                summary["chunks_skipped"] += 1
            else:
                task = CubeChunk(run_root_uri=ctx.run_root.uri, cube_uri=store.loc.uri, key=key, spw=w.spw,
                                 c0=c0, c1=c1, input_hash=chunk_inputs, code_version=version, uid=ctx.uid,
                                 threads=scaleout.worker_threads)
                pending.append(((w.spw, c0, c1), image_cube_chunk, (task, SharedArg(f"window-{w.spw}"),
                                                                      SharedArg(f"plan-{w.spw}"))))
                shared[f"window-{w.spw}"] = w
                shared[f"plan-{w.spw}"] = plan

    if pending:
        ctx.progress(f"imaging: {len(pending)} cube chunks to image ({scaleout.mode} Dask, workers "
                     f"{'-'.join(map(str, worker_bounds(len(pending), scaleout)))})", None)
    run = run_chunks(pending, scaleout, lambda key, result: _chunk_done(*key, result["metrics"]), shared=shared)
    summary["chunks_computed"] = len(run.results)
    summary["scaleout"] = {"mode": scaleout.mode, "min_workers": run.min_workers, "max_workers": run.max_workers,
                           "workers_used": run.workers_used, "chunk_seconds": round(run.wall_seconds, 3),
                           "worker_peak_memory_bytes": run.worker_peak_memory_bytes, "fallback": run.fallback}
    if run.fallback:
        ctx.progress(f"imaging: {run.fallback}", None)
        ctx.notes.append(f"WorkersUnschedulable: {run.fallback}")
    ctx.metrics.update(worker_peak_memory_bytes=run.worker_peak_memory_bytes, workers_used=run.workers_used,
                       workers_max=run.max_workers, cube_seconds=round(run.wall_seconds, 3))

    for w in windows:
        plan = plans[w.spw]
        store, per_chan = cube_state[w.spw]
        n_chan = w.freq_hz.size
        if not np.isfinite(per_chan["rms"]).any():
            # A window without one finite plane has no usable data at all; left out silently, the continuum and
            # QA2 would be made of the other windows and could still pass.
            raise ImagingFailed(f"cube {w.spw}: every channel's image is NaN: the window has no usable data "
                                f"(entirely flagged, or corrupted)")
        lines = _line_channels(store, per_chan["rms"], plan.pblimit)
        noise_ratio[w.spw] = median_noise_ratio(per_chan["rms"], per_chan["predicted_rms"])
        line_free[w.spw] = ~lines & np.isfinite(per_chan["rms"])
        store.update_attrs(rms=_jsonable(per_chan["rms"]), predicted_rms=_jsonable(per_chan["predicted_rms"]),
                           peak=_jsonable(per_chan["peak"]), beams=per_chan["beams"],
                           line_channels=np.flatnonzero(lines).tolist())
        summary["cubes"][w.spw] = {"n_chan": int(n_chan), "npix": plan.npix, "cell_arcsec": _arcsec(plan.cell_rad),
                                   "line_channels": np.flatnonzero(lines).tolist(),
                                   "median_rms_jy": float(np.nanmedian(per_chan["rms"])),
                                   "noise_ratio": noise_ratio[w.spw]}
        outputs.append(f"{STAGE}/cube_{w.spw}.zarr")

    ctx.progress("imaging: continuum from line-free channels", 92.0)
    summary["continuum"] = _image_continuum(ctx, windows, line_free, robust, plans, noise_ratio)
    outputs.append(f"{STAGE}/continuum.zarr")
    ctx.path(STAGE, "summary.json").write_json(summary)
    outputs.append(f"{STAGE}/summary.json")
    ctx.checkpoints.commit(STAGE, ctx.uid, inputs, version, outputs,
                           metrics={k: summary[k] for k in ("chunks_computed", "chunks_skipped")})
    ctx.metrics.update(chunks_computed=summary["chunks_computed"], chunks_skipped=summary["chunks_skipped"])
    ctx.progress("imaging: done", 100.0)
    return "Succeeded"


def find_line_channels(cube: np.ndarray, rms: np.ndarray, valid: np.ndarray, nsigma: float = LINE_SIGMA) -> np.ndarray:
    """Channels with line emission, from a cube (n_chan, ny, nx) of flat-noise images.

    Each pixel's continuum is the median of its spectrum; a channel holds a line where some pixel (inside
    `valid`, the primary beam) stands above its continuum by more than nsigma of that channel's noise, in
    at least MIN_LINE_CHANNELS adjacent channels. Continuum sources, however bright, cancel in the
    difference. Each detected run is widened by half its
    width (at least one channel) on both sides: a line's wings fall below the threshold long before they
    reach zero and would otherwise leak into the continuum.
    """
    rms = np.asarray(rms, dtype=np.float64)
    good = np.isfinite(rms) & (rms > 0) & np.isfinite(cube).any(axis=(1, 2))
    lines = np.zeros(rms.size, dtype=bool)
    if good.sum() < 4:
        return lines
    sub = cube[good][:, valid]  # (n_good, n_valid_pixels)
    continuum = np.nanmedian(sub, axis=0)
    # Channel-to-channel calibration and deconvolution differences scale with the continuum under a pixel:
    # allow CONTINUUM_SYSTEMATIC of it beside the thermal noise, or a bright source fakes a line.
    noise = np.sqrt(rms[good][:, None] ** 2 + (CONTINUUM_SYSTEMATIC * continuum[None, :]) ** 2)
    significance = np.nanmax((sub - continuum) / noise, axis=1)
    lines[np.flatnonzero(good)[significance > nsigma]] = True
    # A line spans several channels (ALMA's channels are much narrower than its lines): a lone channel is not one.
    for run in _line_free_runs(lines):
        if run.stop - run.start < MIN_LINE_CHANNELS:
            lines[run] = False
    grown = lines.copy()
    for run in _line_free_runs(lines):  # here: runs of detected channels
        pad = max(1, (run.stop - run.start) // 2)
        grown[max(0, run.start - pad):run.stop + pad] = True
    return grown


def _line_channels(store: ImageStore, rms: np.ndarray, pblimit: float) -> np.ndarray:
    """Read the cube at every second pixel (a beam spans ~5) and find its line channels."""
    g = store.group("r")
    cube = np.asarray(g["image"][:, ::2, ::2], dtype=np.float32)
    pb = np.asarray(g["pb"][:, ::2, ::2], dtype=np.float32)
    valid = np.nanmax(np.nan_to_num(pb), axis=0) >= pblimit
    return find_line_channels(cube, rms, valid)


# Continuum channels are averaged as far as bandwidth smearing allows: the radial smearing of a source at
# the edge of the field, (channel width / frequency) x (field radius / beam), is kept below this fraction of
# a beam (a 1 % amplitude loss there), and the averaging never crosses a flagged or line channel.
MAX_SMEARING_BEAMS = 0.1


def continuum_averaging_factor(freq_hz: np.ndarray, plan: ImagingPlan) -> int:
    """How many adjacent channels one continuum channel may combine (1 = no averaging)."""
    return _averaging_factor(freq_hz, 0.5 * plan.fov_rad / plan.expected_beam.bmin_rad)


def _averaging_factor(freq_hz: np.ndarray, field_radius_beams: float) -> int:
    if freq_hz.size < 2:
        return 1
    width = float(np.median(np.abs(np.diff(freq_hz))))
    per_channel = width / float(freq_hz.min()) * field_radius_beams
    return max(1, int(MAX_SMEARING_BEAMS / per_channel)) if per_channel > 0 else 1


def continuum_channels_at_most(freq_hz: np.ndarray, image_pixels: int, cells_per_beam: float = 5.0) -> int:
    """About the most channels the continuum grids for a window of these frequencies, from metadata only, for
    the resource model: continuum_averaging_factor with the field's radius in beams taken as image_pixels /
    (2 cells_per_beam), plan_image's cell being the beam's minor axis / cells_per_beam, in groups as
    average_channels makes them, with two more for the runs lines would split the window into."""
    freq = np.asarray(freq_hz, dtype=np.float64)
    factor = _averaging_factor(freq, 0.5 * image_pixels / cells_per_beam)
    # a line splits a run in two, each in groups of its own: room for two
    return min(freq.size, -(-freq.size // factor) + 2)


def average_channels(vis, weight, flag, freq, factor: int):
    """Weighted average of adjacent channels in groups of at most `factor` (weights add, flagged samples carry
    no weight): a run of n channels in ceil(n / factor) groups of near-equal size (n // groups or one more).

    No group is wider than bandwidth smearing allows and no channel is left unaveraged: the remainder of a run
    had been left as it was, and at full size those remainders were most of what the continuum gridded (197
    channels for the 12 m block's 787 line-free ones, where equal groups make 22: the continuum's gridding and
    memory are proportional to them)."""
    n = freq.size
    groups = -(-n // max(1, factor))
    if groups >= n:
        return vis, weight, flag, freq
    starts = np.arange(groups) * n // groups
    w = np.where(flag, 0.0, weight)
    wsum = np.add.reduceat(w, starts, axis=1)
    total = np.add.reduceat(w * vis, starts, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        avg = np.where(wsum > 0, total / np.where(wsum > 0, wsum, 1), 0)
    f = np.add.reduceat(freq, starts) / np.diff(np.append(starts, n))
    return avg.astype(np.complex64), wsum.astype(np.float32), wsum <= 0, f


def _line_free_runs(keep: np.ndarray) -> list[slice]:
    """Contiguous runs of line-free channels (averaging must not cross a line or a gap)."""
    runs, start = [], None
    for i, k in enumerate(np.append(keep, False)):
        if k and start is None:
            start = i
        elif not k and start is not None:
            runs.append(slice(start, i))
            start = None
    return runs


def continuum_channels(w: WindowData, keep: np.ndarray, factor: int, weight_scale: float = 1.0):
    """A window's line-free channels (`keep`) for the continuum: (vis, weight, flag, freq), each run of
    line-free channels averaged `factor` channels at a time, weights scaled by `weight_scale`.

    Read a block of rows at a time (WindowData.row_blocks): averaging is per row, so this is, to the bit, the
    whole window loaded and averaged, without holding it. Whole, a full-size 480-channel window was 1.4 GB per
    float64 array and its averaging's float64 and complex128 intermediates twice that, the imaging stage's peak
    while the continuum's data were gathered."""
    runs = _line_free_runs(keep)
    out = None
    row = 0
    for vis, weight, flag in w.row_blocks(CONTINUUM_READ_BLOCK_BYTES):
        if weight_scale != 1.0:
            weight *= np.float32(weight_scale)
        parts = [average_channels(vis[:, r], weight[:, r], flag[:, r], w.freq_hz[r], factor) for r in runs]
        del vis, weight, flag
        if out is None:  # the averaged window, filled block by block: a concatenation would hold it twice
            n_rows, n_chan = w.uvw_m.shape[0], sum(p[3].size for p in parts)
            # weights in single precision, as stored and as imaging weighs them (IMAGING_WEIGHT_DTYPE)
            dtypes = (np.result_type(*[p[0] for p in parts]), IMAGING_WEIGHT_DTYPE, bool)
            out = (*(np.empty((n_rows, n_chan), dtypes[k]) for k in range(3)), np.concatenate([p[3] for p in parts]))
        n = parts[0][0].shape[0]
        c = 0
        for p in parts:
            for k in range(3):
                out[k][row:row + n, c:c + p[3].size] = p[k]
            c += p[3].size
        row += n
    if out is None or row != out[0].shape[0]:
        raise ImagingFailed(f"window {w.spw}: read {row} rows of the {w.uvw_m.shape[0]} its uvw has")
    return out


def _image_continuum(ctx: StageContext, windows: list[WindowData], line_free: dict[str, np.ndarray],
                     robust: float, plans: dict[str, ImagingPlan], noise_ratio: dict[str, float]) -> dict:
    vis_all, w_all, f_all, uvw_all, freq_all = [], [], [], [], []
    scales = window_weight_scales(noise_ratio)
    warnings = [f"window {spw}: its noise is {noise_ratio[spw]:.3g}x what its weights predict; its weights are "
                f"scaled by 1/{noise_ratio[spw]:.3g}^2 in the continuum" for spw, k in scales.items() if k != 1.0]
    for w in windows:
        keep = line_free[w.spw]
        if not keep.any():
            continue
        vis, weight, flag, freq = continuum_channels(w, keep, continuum_averaging_factor(w.freq_hz, plans[w.spw]),
                                                     scales.get(w.spw, 1.0))
        vis_all.append(vis)
        w_all.append(weight)
        f_all.append(flag)
        uvw_all.append(w.uvw_m)
        freq_all.append(freq)
        del vis, weight, flag
        release_freed_memory()  # the window's blocks read and averaged: their heap, before the next window's
    if not vis_all:
        raise ImagingFailed("no line-free channels with data for the continuum image")
    vis, weight, flag, uvw, freq = _join_windows(vis_all, w_all, f_all, uvw_all, freq_all)
    del vis_all, w_all, f_all, uvw_all  # the windows' own copies: only the joined arrays are imaged
    weight[flag] = 0.0  # the flags as zero weights (imaging's meaning of both): one array fewer
    del flag
    release_freed_memory()  # the blocks read and averaged: glibc would keep their heap until the process ends
    w0 = windows[0]
    plan = plan_image(uvw, freq, w0.dish_diameter_m, weight=weight, robust=robust, nthreads=ctx.threads)
    release_freed_memory()  # the quick PSF's blocks, gridded in their own threads (glibc's other arena)
    # vis becomes CLEAN's residual visibilities and weight the imaging weights: the continuum's visibilities are
    # held once and its weights once
    plane = image_mfs(vis, uvw, freq, weight, None, plan, overwrite_inputs=True, nthreads=ctx.threads)
    del vis, weight
    bandwidth = float(sum(w.channel_width_hz * line_free[w.spw].sum() for w in windows))
    header = image_header(plan.npix, plan.cell_rad, *w0.phase_centre_rad, plane.freq_hz, plane.beam,
                          channel_width_hz=bandwidth, object_name=w0.field_name)
    store = ImageStore(ctx.path(STAGE, "continuum.zarr"))
    info = {
        "beam_rad": [plane.beam.bmaj_rad, plane.beam.bmin_rad, plane.beam.bpa_rad],
        "freq_hz": plane.freq_hz, "bandwidth_hz": bandwidth,
        "n_channels": int(sum(int(line_free[w.spw].sum()) for w in windows)), "n_gridded_channels": int(freq.size),
        "rms_jy": image_rms(plane.residual, exclude=plane.mask, pb=plane.pb, pblimit=QA_RMS_PBLIMIT),
        "rms_field_jy": plane.image_rms, "predicted_rms_jy": plane.predicted_rms, "threshold_jy": plane.threshold,
        "n_components": plane.n_components, "n_major": plane.n_major, "converged": bool(plane.converged),
        "stop_reason": plane.stop_reason, "npix": plan.npix, "cell_arcsec": _arcsec(plan.cell_rad),
        "fractional_bandwidth": float((freq.max() - freq.min()) / plane.freq_hz), "nterms": plane.nterms,
        "double_precision": plane.double_precision, "warnings": warnings,
    }
    store.create(PLANE_PRODUCTS, 1, plan.npix, 1, {"header": header_to_attrs(header), **_jsonable_dict(info)})
    store.write_slab(0, {name: getattr(plane, name)[None].astype(np.float32) for name in PLANE_PRODUCTS})
    return _jsonable_dict(info)


def _join_windows(vis_list, w_list, f_list, uvw_list, freq_list):
    """One (rows, channels) problem for ducc0, which takes a single frequency axis per call.

    Windows observed with the same rows (the same integrations and baselines, as within an execution block)
    are joined along the channel axis, emptying the lists of visibilities, weights and flags as they are.
    Otherwise each window's rows carry only its own channels (the others flagged with weight 0), which costs
    memory but is always right.
    """
    if len(vis_list) == 1:
        return vis_list[0], w_list[0], f_list[0], uvw_list[0], freq_list[0]
    same_rows = all(u.shape == uvw_list[0].shape and np.allclose(u, uvw_list[0], atol=1e-3) for u in uvw_list)
    if same_rows:
        freq = np.concatenate(freq_list)
        order = np.argsort(freq, kind="stable")
        column = np.empty_like(order)
        column[order] = np.arange(order.size)  # where each window's channels go in frequency order

        def joined(parts):
            # written into one array, each window's part released once copied (the lists are consumed): a
            # concatenation reordered would hold two arrays of the joined size besides the parts
            out = np.empty((parts[0].shape[0], freq.size), dtype=np.result_type(*parts))
            c = 0
            while parts:
                part = parts.pop(0)
                out[:, column[c:c + part.shape[1]]] = part
                c += part.shape[1]
            return out

        return joined(vis_list), joined(w_list), joined(f_list), uvw_list[0], freq[order]
    freq = np.concatenate(freq_list)
    order = np.argsort(freq, kind="stable")
    n_rows = sum(v.shape[0] for v in vis_list)
    vis = np.zeros((n_rows, freq.size), dtype=np.complex64)
    weight = np.zeros((n_rows, freq.size), dtype=np.float32)
    flag = np.ones((n_rows, freq.size), dtype=bool)
    r = c = 0
    for v, w, f in zip(vis_list, w_list, f_list, strict=True):
        vis[r:r + v.shape[0], c:c + v.shape[1]] = v
        weight[r:r + v.shape[0], c:c + v.shape[1]] = w
        flag[r:r + v.shape[0], c:c + v.shape[1]] = f
        r += v.shape[0]
        c += v.shape[1]
    return vis[:, order], weight[:, order], flag[:, order], np.concatenate(uvw_list), freq[order]


def _load_or_make_plans(ctx: StageContext, windows: list[WindowData], robust: float, inputs: str):
    loc = ctx.path(STAGE, "plans.json")
    if loc.exists():
        doc = loc.read_json()
        if doc.get("input_hash") == inputs:
            return {spw: _plan_from_dict(p) for spw, p in doc["plans"].items()}
    plans = {}
    for w in windows:
        ends = slice(0, w.freq_hz.size, max(1, w.freq_hz.size - 1))
        _, weight, flag = w.load(ends)
        plans[w.spw] = plan_image(w.uvw_m, w.freq_hz[ends], w.dish_diameter_m, weight=weight, flag=flag,
                                  robust=robust, nthreads=ctx.threads)
    loc.write_json({"input_hash": inputs, "plans": {spw: _plan_dict(p) for spw, p in plans.items()}})
    return plans


def _arcsec(rad: float) -> float:
    return math.degrees(rad) * 3600.0


def _jsonable(a: np.ndarray) -> list:
    return [None if not np.isfinite(x) else float(x) for x in np.asarray(a, dtype=np.float64)]


def _jsonable_dict(d: dict) -> dict:
    return json.loads(json.dumps(d, default=float))
