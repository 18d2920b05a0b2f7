"""A window's calibrated target data, and one chunk of its cube imaged: what the imaging stage's Dask workers
run, in a module that imports only what that needs.

A worker unpickles a chunk task by importing the modules its function and arguments come from. The stage's own
module opens processing sets with xarray, which brings pandas and pyarrow (~0.13 GB resident, a third of a
full-size worker's peak); a chunk reads its blocks from the partitions' Zarr arrays directly
(`storage.stored_rows`), so a worker never imports them (tests/stages/test_imaging_chunks.py holds this).
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass, field

import numpy as np

from mousflow.errors import ImagingFailed
from mousflow.process_env import release_freed_memory
from mousflow.science.imaging.pipeline import CubeProducts, image_channels
from mousflow.science.imaging.plan import ImagingPlan
from mousflow.science.imaging.weighting import stokes_i
from mousflow.stages.image_store import CUBE_PRODUCTS, ImageStore
from mousflow.stages.peak_memory import process_peak_memory_bytes
from mousflow.storage.checkpoints import CheckpointStore
from mousflow.storage.location import Location
from mousflow.storage.stored_rows import StoredRows, read_blocks

# A cube chunk's channels are read a block of integrations at a time into the chunk's Stokes I; a block's hands
# and the double-precision temporaries of their Stokes I weights are ~3x this.
LOAD_READ_BLOCK_BYTES = 8 * 2**20

# WindowData.row_blocks hands a stored block's Stokes I over in pieces of at most this many samples (4 MiB of
# float64 weights): what the caller does with them row by row (averaging) then holds little beside the block.
ROW_PIECE_SAMPLES = 2**19

# Partitions opened by this process when it is a Dask worker: once per worker, not once per chunk.
_PROCESS_OPENED: dict[str, StoredRows] = {}


@dataclass
class WindowData:
    """A window's calibrated target data as Stokes I rows: all execution blocks and partitions stacked."""

    spw: str
    freq_hz: np.ndarray
    uvw_m: np.ndarray
    dish_diameter_m: float
    phase_centre_rad: tuple[float, float]
    field_name: str
    sources: list[tuple[Location, str]]
    _opened: dict = field(default_factory=dict, repr=False)

    def __getstate__(self):
        # What a Dask worker gets: the data's description and uvw, not this process's open arrays.
        return {**self.__dict__, "_opened": None}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._opened = _PROCESS_OPENED

    def _stored(self, loc: Location, name: str) -> StoredRows:
        # Opening a partition's arrays reads their metadata: once per stage (or worker), not once per chunk.
        part = loc.join(name)
        if part.uri not in self._opened:
            self._opened[part.uri] = StoredRows.open(part)
        return self._opened[part.uri]

    @property
    def channel_width_hz(self) -> float:
        return float(np.median(np.diff(self.freq_hz))) if self.freq_hz.size > 1 else 0.0

    def load(self, channels: slice | None = None):
        """Stokes I (vis, weight, flag), each (n_row, n_chan), for `channels` of this window.

        Filled a block of integrations at a time (LOAD_READ_BLOCK_BYTES of both hands, whole stored chunks, one
        after the other), so what is held besides the result is a block, not both hands of every row: a cube
        chunk of the full-size line window (16 channels, 216,720 rows) read whole held its two hands (90 MB)
        beside their Stokes I (59 MB)."""
        n_chan = self.freq_hz.size if channels is None else len(range(*channels.indices(self.freq_hz.size)))
        shape = (self.uvw_m.shape[0], n_chan)
        vis, weight, flag = np.empty(shape, np.complex64), np.empty(shape), np.empty(shape, dtype=bool)
        row = 0
        for block in self._blocks(LOAD_READ_BLOCK_BYTES, channels):
            n = block[0].shape[0] * block[0].shape[1]
            _stokes_i_rows(*block, out=(vis[row:row + n], weight[row:row + n], flag[row:row + n]))
            row += n
        if row != shape[0]:  # the partitions changed since their uvw were read
            raise ImagingFailed(f"window {self.spw}: read {row} rows of visibilities for {shape[0]} rows of uvw")
        return vis, weight, flag

    def row_blocks(self, budget_bytes: int):
        """Stokes I (vis, weight, flag) of all channels, a block of rows at a time, in the order load() stacks
        the rows: whole stored time chunks of one partition, about `budget_bytes` of its stored visibilities
        read at a time, handed over in pieces of at most ROW_PIECE_SAMPLES. For work done row by row (averaging
        channels): the window is never in memory whole, each stored chunk is read once (blocks of channels
        narrower than a stored chunk would read it again each), and the Stokes I of a piece and the caller's
        temporaries are a fraction of a stored chunk (at full size a 480-channel window's chunk is 3,612 rows,
        and its Stokes I and averaging, whole, had doubled what reading it held)."""
        for vis, flag, weight in self._blocks(budget_bytes):
            vis, flag, weight = (a.reshape(a.shape[0] * a.shape[1], *a.shape[2:]) for a in (vis, flag, weight))
            step = max(1, ROW_PIECE_SAMPLES // max(1, vis.shape[1]))
            for r in range(0, vis.shape[0], step):
                rows = slice(r, r + step)
                yield _stokes_i_rows(vis[rows], flag[rows], weight[rows])
            del vis, flag, weight  # the stored block, before the next is read

    def _blocks(self, budget_bytes: int, channels: slice | None = None):
        """Each partition's (vis, flag, weight) of `channels`, a block of whole stored time chunks at a time,
        each about `budget_bytes` of the stored visibilities it selects (at least one stored chunk)."""
        for loc, name in self.sources:
            stored = self._stored(loc, name)
            for times in read_blocks(stored.n_time, stored.bytes_per_integration(channels), budget_bytes,
                                     stored.time_chunk):
                yield stored.read(times, channels)


def _stokes_i_rows(vis, flag, weight, out=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A block's (time, baseline, channel, hand) arrays, or (row, channel, hand), as Stokes I rows (time x
    baseline, channel), into `out` if given (`stokes_i`); the block's arrays are the caller's to release (both
    hands, a window's largest)."""
    n = math.prod(vis.shape[:-2])
    return stokes_i(vis[..., 0].reshape(n, -1), vis[..., -1].reshape(n, -1),
                    weight[..., 0].reshape(n, -1), weight[..., -1].reshape(n, -1),
                    flag[..., 0].reshape(n, -1), flag[..., -1].reshape(n, -1), out=out)


@dataclass(frozen=True)
class CubeChunk:
    """One channel chunk of one window's cube: what a Dask task needs besides the window and the plan."""

    run_root_uri: str
    cube_uri: str
    key: str
    """Its checkpoint key, imaging/cube_<spw>/chunk-<c0>-<c1>."""
    spw: str
    c0: int
    c1: int
    input_hash: str
    code_version: str
    uid: str
    threads: int = 1


def image_window_channels(window: WindowData, plan: ImagingPlan, c0: int, c1: int, threads: int = 1) -> CubeProducts:
    """The cube planes of channels c0 to c1 - 1 of the window: the chunk's Stokes I read, then imaged."""
    vis, weight, flag = window.load(slice(c0, c1))
    release_freed_memory()  # the blocks read: their heap would stay resident beside the planes' work
    return image_channels(vis, window.uvw_m, window.freq_hz[c0:c1], weight, flag, plan, nthreads=threads)


def image_cube_chunk(task: CubeChunk, window: WindowData, plan: ImagingPlan) -> dict:
    """Image one chunk, write its slab of the cube, then its chunk checkpoint (last, so it exists only for
    complete work). Runs wherever the scale-out puts it: in this process, a local worker or a worker pod."""
    cube = image_window_channels(window, plan, task.c0, task.c1, task.threads)
    digests = ImageStore(Location.of(task.cube_uri)).write_slab(
        task.c0, {name: getattr(cube, name) for name in CUBE_PRODUCTS})
    metrics = {
        "rms": cube.image_rms.tolist(), "predicted_rms": cube.predicted_rms.tolist(),
        "peak": [float(np.nanmax(np.abs(im))) if np.isfinite(im).any() else math.nan for im in cube.image],
        "beams": [[b.bmaj_rad, b.bmin_rad, b.bpa_rad] for b in cube.beams],
    }
    CheckpointStore(Location.of(task.run_root_uri)).location(task.key).write_json({
        "stage": task.key, "mous_uid": task.uid, "input_hash": task.input_hash, "code_version": task.code_version,
        "outputs": digests, "metrics": metrics,
    })
    return {"metrics": metrics, "worker": f"{socket.gethostname()}:{os.getpid()}",
            "worker_peak_memory_bytes": process_peak_memory_bytes()}
