"""The calibration stage: every execution block, every spectral window, calibrated and applied to the target.

Reads each execution block's processing set, finds its bandpass, flux and phase calibrators by scan intent,
calibrates each window with mousflow.science.calibration and writes, per execution block,

    calibration/<eb>/calibrated.ps.zarr   the science target's partitions, calibrated (MSv4)
    calibration/<eb>/caltables.zarr       bandpass and gain tables per window
    calibration/summary.json              flags, derived calibrator fluxes and sub-scores

then the checkpoint. A target partition is calibrated in blocks (write_calibrated_target), never whole in memory,
and read once.
The `image-only` recipe takes the target partitions as they are (already calibrated).
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import dask
import dask.array as da
import numpy as np
import xarray as xr

from mousflow.errors import CalibrationFailed, InvalidInput
from mousflow.model import Recipe
from mousflow.process_env import release_freed_memory
from mousflow.science.calibration import (
    WindowCalibration,
    amplitude_median,
    apply_to_target_block,
    calibrate_window_read,
    fraction_flagged_score_of_counts,
    target_channel_flags,
)
from mousflow.stages.context import StageContext
from mousflow.stages.inputs import CheckedBlock, check_inputs, verified_meanwhile
from mousflow.stages.intents import ROLES, has_role
from mousflow.stages.versioning import code_version
from mousflow.storage.checkpoints import Validity, hash_inputs
from mousflow.storage.location import Location
from mousflow.storage.partitions import (
    JointBaselines,
    PartitionArrays,
    PartitionInfo,
    concatenate_partitions,
    load_partition,
    parallel_hand_indices,
    partition_baselines,
    stored_chunk_length,
)
from mousflow.storage.stored_rows import read_blocks
from mousflow.storage.zarr_io import (
    finalize_processing_set,
    flag_stored_channels,
    visibility_chunks,
    write_dataset_group,
    write_processing_set_node,
    write_processing_set_root,
)
from mousflow.telescope.calibrators import FLUX_MODELS

STAGE = "calibration"
# A full-size ALMA window's target is GBs: it is calibrated in blocks, never whole. APPLY_BLOCK_BYTES: the most
# of its visibilities (complex64 bytes) one block of integrations holds while it is counted and calibrated; the
# block's flags and weights, the intermediates of counting and applying (bounded by chunking.SAMPLES_PER_CHUNK)
# and the Zarr writes come on top, once per thread. A block is whole stored time chunks where one fits, as
# import-ms writes them (16 MiB); a larger stored chunk (xradio's converter's default is 128 MiB) is read in
# blocks of the budget, and decompressed for each block it straddles. 16 MiB, one chunk of import-ms's: the
# target's blocks are the stage's peak, and on the full-size corpus block (two threads) the stage peaked at
# 0.72 GB with 64 MiB blocks, 462-472 MiB with 32 and 384-437 MiB with 16 (2026-12-07, three runs each way,
# alternating: 55.7-64.5 s against 55.9-56.6 s, this machine's spread is as wide).
APPLY_BLOCK_BYTES = 16 * 2**20
# The calibrators too are read in blocks of integrations (CalibratorReader), each at most this much of
# visibilities: held whole, a 480-channel window's phase calibrator was the stage's peak at full size, and an
# ALMA bandpass scan of 3840 channels would be GBs.
CALIBRATOR_BLOCK_BYTES = 32 * 2**20
VIS_ITEMSIZE = np.dtype(np.complex64).itemsize


def eb_label(uid: str) -> str:
    """Archive-style name of an execution block: uid://A002/X1/X2 -> uid___A002_X1_X2."""
    return uid.replace("://", "___").replace("/", "_")


def input_hash(ctx: StageContext, blocks: list[CheckedBlock]) -> str:
    spec = ctx.mous.spec
    fluxes = [f.to_wire() for f in spec.calibrator_fluxes or []]
    return hash_inputs([[b.uid, b.uri, b.digest] for b in blocks], spec.recipe.value, fluxes)


def same_field(name: str, field: str) -> bool:
    """Whether a processing set's field `field` is the one a person or a catalogue calls `name`: xradio's MSv2
    converter appends the MSv2 FIELD_ID to field names ('J0423-0120' becomes 'J0423-0120_3')."""
    if field == name:
        return True
    stem, _, suffix = field.rpartition("_")
    return stem == name and suffix.isdigit()


def spec_flux(ctx: StageContext, field: str):
    return next((f for f in ctx.mous.spec.calibrator_fluxes or [] if same_field(f.field, field)), None)


def flux_model_jy(ctx: StageContext, field: str, freqs: np.ndarray) -> tuple[np.ndarray, str]:
    """The flux calibrator's model per channel: from the MOUS spec if it gives one, else the catalogue."""
    f = spec_flux(ctx, field)
    if f is not None:
        return f.flux_jy * (freqs / f.frequency_hz) ** f.spectral_index, "spec"
    for name, model in FLUX_MODELS.items():
        if same_field(name, field):
            return model.at(freqs), "catalogue"
    raise InvalidInput(f"no flux model for flux calibrator {field}: add it to spec.calibratorFluxes")


@dataclass(frozen=True)
class CalibratorSource:
    """Where one calibrator role's data are in a window: the field with the most integrations for the role, and
    the partitions holding it (one partition per intent, per field, per scan, or several fields in one)."""

    field: str
    partitions: tuple[str, ...]


def _role_source(in_spw: list[PartitionInfo], role: str) -> CalibratorSource | None:
    found = [i for i in in_spw if has_role(i.intents, role)]
    if not found:
        return None
    counts: dict[str, int] = {}
    for i in found:
        for f in i.field_names or [i.field_name]:
            counts[f] = counts.get(f, 0) + i.n_time
    field = max(counts, key=lambda f: counts[f])
    return CalibratorSource(field, tuple(i.name for i in found if field in (i.field_names or
                                                                                  [i.field_name])))


def _field_runs(node: xr.DataTree, field: str) -> list[slice]:
    """The runs of consecutive integrations of a partition on `field` (all of them where the partition has no
    field per integration): what blocks of one field's integrations are read from."""
    ds = node.dataset
    n_time = ds.sizes["time"]
    if "field_name" not in ds.coords or np.ndim(ds.field_name) != 1:
        return [slice(0, n_time)]
    on = np.asarray(ds.field_name.values).astype(str) == field
    edges = np.flatnonzero(np.diff(np.concatenate([[False], on, [False]]).astype(np.int8)))
    return [slice(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _hands_vis_bytes_per_time(ds: xr.Dataset, n_baseline: int) -> int:
    """The bytes of one integration's visibilities on n_baseline baselines as load_partition reads them: its
    parallel hands only, complex64."""
    return n_baseline * ds.sizes["frequency"] * \
        len(parallel_hand_indices([str(c) for c in ds.polarization.values])) * VIS_ITEMSIZE


@dataclass(frozen=True)
class _Piece:
    """A range of one partition's integrations on a calibrator's field, and the times it spans."""

    partition: int  # its place in CalibratorSource.partitions
    times: slice
    first_s: float
    last_s: float


class CalibratorReader:
    """The calibrators of one window read when the calibration kernel asks for a role
    (science.calibration.calibrate_window_read): the role's field's integrations in blocks of at most
    CALIBRATOR_BLOCK_BYTES of visibilities (whole stored time chunks where one fits), in time order, so that the
    stage holds a block of a calibrator, not a calibrator. A role spread over several partitions (partitioned by
    scan) is read the same way, each block put on the union of their baselines (a baseline a partition lacks is
    flagged there); partitions that overlap in time are read together where they overlap. Roles that are one
    block each are kept while together they are at most a block (CALIBRATOR_BLOCK_BYTES of visibilities; the
    largest kept dropped first; a block alone whatever its size), so the kernel's passes read each once where
    the calibrators are small: read again on every pass, they cost the reduced corpus block a tenth of its
    calibration time. `seen` keeps what the tables and the summary need of each role read (antenna names,
    frequencies, field), not its data."""

    def __init__(self, ps, sources: dict[str, CalibratorSource]):
        self.ps = ps
        self.sources = sources
        self.seen: dict[str, PartitionArrays] = {}
        self._kept_blocks: dict[tuple, PartitionArrays] = {}
        self._plans: dict[str, tuple[JointBaselines, list[list[_Piece]]]] = {}

    def __call__(self, role: str) -> Iterator[PartitionArrays]:
        source = self.sources[role]
        baselines, blocks = self.plan(role)
        if len(blocks) == 1:
            yield self._kept(role, lambda: self._read(source, baselines, blocks[0]))
            return
        self.release()
        for pieces in blocks:
            block = self._read(source, baselines, pieces)
            self._see(role, block)
            yield block
            del block  # before the next is read

    def plan(self, role: str) -> tuple[JointBaselines, list[list[_Piece]]]:
        """(the baselines every block of the role is put on, its blocks in time order, each the pieces of
        partitions read for it). A block is one piece (blocks_of) unless pieces of several partitions overlap in
        time, which are then one block."""
        if role not in self._plans:
            source = self.sources[role]
            nodes = [self.ps[name] for name in source.partitions]
            baselines = JointBaselines.of(map(partition_baselines, nodes))
            pieces = []
            for k, node in enumerate(nodes):
                time_s = np.asarray(node.dataset.time.values, dtype=np.float64)
                pieces += [_Piece(k, times, float(time_s[times.start]), float(time_s[times.stop - 1]))
                           for times in self.blocks_of(node, source.field)]
            blocks: list[list[_Piece]] = []
            for piece in sorted(pieces, key=lambda p: p.first_s):
                if blocks and piece.first_s <= max(p.last_s for p in blocks[-1]):
                    blocks[-1].append(piece)
                else:
                    blocks.append([piece])
            self._plans[role] = baselines, blocks
        return self._plans[role]

    def _read(self, source: CalibratorSource, baselines: JointBaselines, pieces: list[_Piece]) -> PartitionArrays:
        # in the order of the partitions, then of time: integrations at the same time are then in the order of
        # the role read whole (concatenate_partitions of its partitions)
        pieces = sorted(pieces, key=lambda p: (p.partition, p.times.start))
        names = [source.partitions[p.partition] for p in pieces]
        return concatenate_partitions([load_partition(self.ps[name], name, field=source.field, times=p.times)
                                       for name, p in zip(names, pieces, strict=True)], baselines)

    @staticmethod
    def blocks_of(node: xr.DataTree, field: str) -> list[slice]:
        """The blocks of integrations one partition of a calibrator is read in: within each run of integrations
        on its field, CALIBRATOR_BLOCK_BYTES of visibilities, whole stored chunks where one fits."""
        per_time = _hands_vis_bytes_per_time(node.dataset, node.dataset.sizes["baseline_id"])
        return [slice(run.start + b.start, run.start + b.stop) for run in _field_runs(node, field)
                for b in _stored_chunk_blocks(node, run.stop - run.start, per_time, CALIBRATOR_BLOCK_BYTES)]

    def _kept(self, role: str, load) -> PartitionArrays:
        """The role's one block: kept from an earlier pass, or read, the kept ones it would take over the budget
        dropped before it is."""
        source = self.sources[role]
        key = (source.field, source.partitions)
        data = self._kept_blocks.get(key)
        if data is None:
            vis_bytes = self.block_vis_bytes(role)
            kept = sum(b.vis.nbytes for b in self._kept_blocks.values())
            for other in sorted(self._kept_blocks, key=lambda k: -self._kept_blocks[k].vis.nbytes):
                if kept + vis_bytes <= CALIBRATOR_BLOCK_BYTES:
                    break
                kept -= self._kept_blocks.pop(other).vis.nbytes
                release_freed_memory()
            data = load()
            # alone, a block is kept whatever its size (an integration may be more than the budget): the kernel
            # holds it while it works on it, and it is dropped before any other is read
            if not self._kept_blocks or kept + data.vis.nbytes <= CALIBRATOR_BLOCK_BYTES:
                self._kept_blocks[key] = data
        self._see(role, data)
        return data

    def block_vis_bytes(self, role: str) -> int:
        """The visibilities of the role's largest block, as it will be read (its parallel hands, on the joint
        baselines), from the plan: nothing read."""
        source = self.sources[role]
        baselines, blocks = self.plan(role)
        per_time = _hands_vis_bytes_per_time(self.ps[source.partitions[0]].dataset, len(baselines.pairs))
        return max(sum(p.times.stop - p.times.start for p in pieces) for pieces in blocks) * per_time

    def _see(self, role: str, data: PartitionArrays) -> None:
        if role not in self.seen:
            self.seen[role] = dataclasses.replace(data, vis=None, flag=None, weight=None, uvw_m=None)

    def frequency_hz(self, role: str) -> np.ndarray:
        """The role's channel frequencies, from the stored coordinate (its data not read)."""
        name = self.sources[role].partitions[0]
        return np.asarray(self.ps[name].dataset.frequency.values, dtype=np.float64)

    def release(self) -> None:
        self._kept_blocks.clear()
        release_freed_memory()


def _choose_flux_role(ctx: StageContext, sources: dict[str, CalibratorSource | None], eb_uid: str, spw: str
                      ) -> tuple[CalibratorSource, str | None]:
    """The data the flux scale comes from: the flux calibrator if the execution block observed one, else (no
    CALIBRATE_FLUX scans) a calibrator whose flux density spec.calibratorFluxes gives, the phase calibrator
    first (its gains then need no transfer). Returns (source, note or None)."""
    if sources["flux"] is not None:
        return sources["flux"], None
    for role in ("phase", "bandpass"):
        s = sources[role]
        if s is not None and spec_flux(ctx, s.field) is not None:
            note = (f"{eb_uid} {spw}: no flux calibrator observed; flux scale from spec.calibratorFluxes for the "
                    f"{role} calibrator {s.field}")
            return s, note
    named = ", ".join(s.field for s in sources.values() if s is not None)
    raise InvalidInput(f"execution block {eb_uid}, {spw}: no CALIBRATE_FLUX scans, and spec.calibratorFluxes gives "
                       f"no flux density for its calibrators ({named}): add one to set the flux scale")


def checkpoint_validity(ctx: StageContext, blocks: list[CheckedBlock] | None = None) -> tuple[str, Validity]:
    """(the hash of the stage's inputs, whether its checkpoint holds the work for them): what decides that the
    stage has nothing to do, here and before the flow would start it (stages.runner.skip_if_complete). Without
    `blocks` the inputs are checked but not read back against their checksums: a skipped stage reads nothing."""
    if blocks is None:
        blocks = check_inputs(ctx.mous.spec, verify=False)
    inputs = input_hash(ctx, blocks)
    return inputs, ctx.checkpoints.validate(STAGE, inputs, code_version(STAGE))


def run(ctx: StageContext) -> str:
    spec = ctx.mous.spec
    version = code_version(STAGE)
    # Every byte of every execution block is read back against its recorded checksums while the stage works,
    # and before it commits anything
    with verified_meanwhile(spec):
        blocks = check_inputs(spec, verify=False)
        inputs, validity = checkpoint_validity(ctx, blocks)
        if not validity:
            ctx.progress(f"calibration: starting ({validity.reason})", 0.0)
            summary, outputs = _calibrate(ctx, blocks)
    if validity:
        ctx.progress("calibration: valid checkpoint, nothing to do", 100.0)
        return "Skipped"
    # the summary once the data were found intact: what a run reads as the calibration's result
    ctx.path(STAGE, "summary.json").write_json(summary)
    outputs.append(f"{STAGE}/summary.json")
    ctx.checkpoints.commit(STAGE, ctx.uid, inputs, version, outputs, metrics={"scores": summary["scores"]})
    ctx.progress("calibration: done", 100.0)
    return "Succeeded"


def _calibrate(ctx: StageContext, blocks: list[CheckedBlock]) -> tuple[dict, list[str]]:
    """Every window of every execution block calibrated and written; returns the summary and the outputs."""
    spec = ctx.mous.spec
    outputs, summary = [], {"execution_blocks": [], "recipe": spec.recipe.value}
    n_eb = len(spec.execution_blocks)
    for k, (eb, block) in enumerate(zip(spec.execution_blocks, blocks, strict=True)):
        label = eb_label(eb.uid)
        ps, infos = block.ps, block.infos
        out_ps = ctx.path(STAGE, label, "calibrated.ps.zarr")
        out_tables = ctx.path(STAGE, label, "caltables.zarr")
        write_processing_set_root(out_ps)
        eb_summary = {"uid": eb.uid, "label": label, "windows": {}}
        # the widest window first, while the process holds least: its calibrator is the stage's largest array,
        # and after a window's target pass the heap is never quite as small again (full-size corpus block: 0.51
        # GB this way, 0.56-0.58 GB in name order)
        widths = {}
        for i in infos:
            widths[i.spw_name] = max(widths.get(i.spw_name, 0), i.n_chan)
        spws = sorted(widths, key=lambda s: (-widths[s], s))
        for j, spw in enumerate(spws):
            ctx.progress(f"calibration: {label} {spw}", 100.0 * (k + j / len(spws)) / n_eb)
            in_spw = [i for i in infos if i.spw_name == spw]
            targets = [i for i in in_spw if has_role(i.intents, "target")]
            if not targets:
                raise InvalidInput(f"execution block {eb.uid}, {spw}: no science target (OBSERVE_TARGET) scans")
            if spec.recipe == Recipe.IMAGE_ONLY:
                for t in targets:
                    write_processing_set_node(out_ps, t.name, ps[t.name].copy())
                eb_summary["windows"][spw] = {"calibrated": False}
                continue
            sources = {role: _role_source(in_spw, role) for role in ("bandpass", "flux", "phase")}
            for role in ("bandpass", "phase"):
                if sources[role] is None:
                    raise InvalidInput(f"execution block {eb.uid}, {spw}: no {ROLES[role]} scans to calibrate with")
            sources["flux"], flux_note = _choose_flux_role(ctx, sources, eb.uid, spw)
            reader = CalibratorReader(ps, sources)
            model, model_source = flux_model_jy(ctx, sources["flux"].field, reader.frequency_hz("flux"))
            if flux_note:
                summary.setdefault("notes", []).append(flux_note)

            try:
                cal = calibrate_window_read(reader, model)
                # the calibrators go before the target's pass, whose blocks would otherwise come on top of the
                # last one read
                reader.release()
                for t in targets:
                    write_calibrated_target(out_ps, ps[t.name], t, cal, threads=ctx.threads)
            except CalibrationFailed as exc:
                raise CalibrationFailed(f"execution block {eb.uid}, {spw}: {exc}") from exc
            antenna_names = reader.seen["bandpass"].antenna_names
            bandpass_freq_hz = reader.seen["bandpass"].frequency_hz
            flux_field, phase_field = reader.seen["flux"].field_name, reader.seen["phase"].field_name
            phase_freq_hz = float(np.mean(reader.seen["phase"].frequency_hz))
            _write_tables(out_tables, spw, cal, antenna_names, bandpass_freq_hz)
            eb_summary["windows"][spw] = {
                "calibrated": True,
                "flux_model": model_source,
                "flux_calibrator": flux_field,
                "flux_calibrator_observed": flux_note is None,
                "phase_calibrator": phase_field,
                "phase_calibrator_flux_jy": cal.flux.flux_jy,
                "phase_calibrator_flux_error_jy": cal.flux.flux_error_jy,
                "phase_calibrator_frequency_hz": phase_freq_hz,
                "bad_antennas": [antenna_names[a] for a in cal.bad_antennas],
                "bad_channels": list(map(int, cal.bad_channels)),
                "reference_antenna": [antenna_names[a] for a in cal.reference_antenna if a >= 0],
                "scores": {name: {"value": s.value, "score": s.score, "unit": s.unit, "detail": s.detail}
                           for name, s in cal.scores.items()},
            }
            # this window's solutions go now, not once the next window's calibrators are loaded, and what the
            # target's blocks left in the heap goes back to the system before they are
            del cal
            release_freed_memory()
        finalize_processing_set(out_ps, threads=ctx.threads)
        outputs += [f"{STAGE}/{label}/calibrated.ps.zarr"]
        if out_tables.exists():
            outputs += [f"{STAGE}/{label}/caltables.zarr"]
        summary["execution_blocks"].append(eb_summary)

    summary["scores"] = _stage_scores(summary)
    return summary, outputs


def _stage_scores(summary: dict) -> dict[str, float]:
    """The calibration stage's sub-scores: the worst window of each kind (QA looks for the weakest link)."""
    scores: dict[str, float] = {}
    for eb in summary["execution_blocks"]:
        for window in eb["windows"].values():
            for name, s in window.get("scores", {}).items():
                scores[name] = min(scores.get(name, 1.0), float(s["score"]))
    return scores


def _vis_shape(info: PartitionInfo) -> tuple[int, int, int, int]:
    """The shape of a target partition as load_partition reads it and the calibrated one is stored: parallel
    hands only."""
    return info.n_time, info.n_baseline, info.n_chan, len(parallel_hand_indices(info.correlations))


def _stored_chunk_blocks(node: xr.DataTree, n_time: int, per_time: int, budget: int) -> list[slice]:
    """Blocks of n_time integrations of `node` (per_time bytes of visibilities each) to read one at a time: whole
    stored time chunks, as many as fit `budget`, so that no chunk is decompressed twice; where one stored chunk
    is more than the budget, as many integrations as fit it."""
    stored = stored_chunk_length(node, "time")
    return read_blocks(n_time, per_time, budget, stored if stored * per_time <= budget else 1)


def write_calibrated_target(out_ps: Location, node: xr.DataTree, info: PartitionInfo, cal: WindowCalibration, *,
                            threads: int = 1) -> None:
    """Calibrate one target partition and write it as partition info.name of out_ps, in bounded memory, to the
    bit what apply_to_target on the whole partition gives; sets cal.scores["fraction_flagged"] as it does.

    One read of the partition: the calibrated VISIBILITY, FLAG and WEIGHT as lazy Dask arrays, one task per
    block of integrations (read; count the block's amplitudes per channel; flag, apply), computed as the
    partition is written, `threads` blocks in memory at once. The target's own excess-power channels are
    judged on the whole observation (the blocks' counts merged: amplitude_median), so they are known only once
    every block is written: those the calibrators did not find already are then flagged in the store
    (zarr_io.flag_stored_channels: FLAG set, WEIGHT zeroed), which is all that flagging them while applying
    would have changed (the visibilities do not depend on the flags). A second read of the partition for its
    channel statistic first cost the full-size corpus block about a tenth of the stage's time. A block is a
    whole number of the chunks written, so no Zarr chunk is written by two, and of the chunks read where that
    fits APPLY_BLOCK_BYTES (import-ms writes chunks that do), so none is read twice.
    """
    shape = _vis_shape(info)
    n_time, n_bl, n_chan, n_corr = shape
    per_time = n_bl * n_chan * n_corr * VIS_ITEMSIZE
    written = visibility_chunks(shape, VIS_ITEMSIZE)[0]
    # Whole chunks written (no Zarr chunk written by two tasks) and, where a block of both layouts fits the
    # budget, whole chunks read: a stored chunk straddling two blocks is decompressed for each.
    both = math.lcm(written, stored_chunk_length(node, "time"))
    blocks = read_blocks(n_time, per_time, APPLY_BLOCK_BYTES, unit=both if both * per_time <= APPLY_BLOCK_BYTES
                         else written)
    # the raw amplitudes counted per (channel, correlation) and the samples flagged once calibrated, each
    # block's added as its task ends (under the lock: `threads` tasks at once)
    counts = amplitude_median.AmplitudeCounts(n_chan * n_corr)
    flagged = [0]
    done: list[int] = []
    lock = threading.Lock()

    def calibrate_block(k: int, times: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        block = load_partition(node, info.name, times=times, sequential=True)  # `threads` blocks at once already
        counted = amplitude_median.count_per_channel(block.vis, block.flag)  # before it is calibrated in place
        # calibrated in the block's own arrays: read for this alone, they are not held twice
        vis, flag, weight, n_flagged = apply_to_target_block(cal, block, cal.bad_channels, in_place=True)
        with lock:
            counts.merge(counted)
            flagged[0] += n_flagged
            done.append(k)
        return vis, flag, weight

    pieces: dict[str, list] = {"vis": [], "flag": [], "weight": []}
    for k, times in enumerate(blocks):
        task = dask.delayed(calibrate_block, nout=3, pure=False)(k, times)
        block_shape = (times.stop - times.start, *shape[1:])
        for name, part, dtype in zip(pieces, task, (np.complex64, np.bool_, np.float32), strict=True):
            pieces[name].append(da.from_delayed(part, block_shape, dtype=dtype))
    vis, flag, weight = (da.concatenate(p, axis=0) for p in pieces.values())
    # to_zarr computes all three variables in one graph: each block task runs once, `threads` at a time
    with dask.config.set(scheduler="threads", num_workers=max(1, threads)):
        write_processing_set_node(out_ps, info.name, _calibrated_node(node, vis, flag, weight))
    if sorted(done) != list(range(len(blocks))):
        raise RuntimeError(f"partition {info.name}: calibrated blocks {sorted(done)} of {len(blocks)}")

    bad_channels, _ = target_channel_flags(cal, amplitude_median.log_median(counts, (n_chan, n_corr)))
    found_here = sorted(set(bad_channels) - set(cal.bad_channels))
    flagged[0] += flag_stored_channels(out_ps.join(info.name), found_here)
    cal.scores["fraction_flagged"] = fraction_flagged_score_of_counts(flagged[0], int(np.prod(shape)))


def _calibrated_node(node: xr.DataTree, vis, flag, weight) -> xr.DataTree:
    """The partition `node` with its VISIBILITY, FLAG and WEIGHT replaced (numpy or Dask arrays, parallel hands
    only) and its data group described as calibrated."""
    out = node.copy()
    ds = out.to_dataset(inherit=False)
    # load_partition kept the parallel hands only: so does the calibrated partition.
    hands = parallel_hand_indices([str(c) for c in ds.polarization.values])
    if len(hands) != ds.sizes["polarization"]:
        ds = ds.isel(polarization=hands)
    ds["VISIBILITY"] = (ds["VISIBILITY"].dims, vis.astype(np.complex64), ds["VISIBILITY"].attrs)
    ds["FLAG"] = (ds["FLAG"].dims, flag, ds["FLAG"].attrs)
    ds["WEIGHT"] = (ds["WEIGHT"].dims, weight.astype(np.float32), ds["WEIGHT"].attrs)
    groups = dict(ds.attrs["data_groups"])
    groups["base"] = {**groups["base"], "description": "calibrated by mousflow"}
    ds.attrs["data_groups"] = groups
    out.dataset = ds
    return out


def _write_tables(loc: Location, spw: str, cal, antennas: list[str], freqs: np.ndarray) -> None:
    bp, g = cal.bandpass, cal.gains
    ds = xr.Dataset(
        {
            "BANDPASS": (("antenna_name", "frequency", "polarization"), bp.bandpass.astype(np.complex64)),
            "BANDPASS_FLAG": (("antenna_name", "frequency", "polarization"), bp.flags),
            "GAIN": (("gain_time", "antenna_name", "polarization"), g.gains.astype(np.complex64)),
            "GAIN_FLAG": (("gain_time", "antenna_name", "polarization"), g.flags),
            "GAIN_SNR": (("gain_time", "antenna_name", "polarization"), g.snr.astype(np.float32)),
        },
        coords={"antenna_name": antennas, "frequency": freqs, "gain_time": g.time_s},
        attrs={"type": "extension:gains.mousflow", "spectral_window_name": spw,
               "phase_calibrator_flux_jy": cal.flux.flux_jy},
    )
    write_dataset_group(loc, ds, spw)
