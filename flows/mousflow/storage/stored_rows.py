"""A partition's row data (visibilities, flags, weights) read in blocks of integrations and channels straight
from its Zarr arrays, without xarray.

For a process that only reads blocks of a partition another process has opened and checked: an imaging
worker's cube chunk. Importing xarray brings pandas and pyarrow, ~0.13 GB of a worker's ~0.4 GB at full size,
for nothing a chunk needs; opening the partition as an xarray tree also reads all of its metadata. What comes
out is what `partitions.load_partition` gives for the same block (the parallel hands, every unusable sample
flagged and zeroed: `zero_unusable`, shared by both).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zarr

from mousflow.storage.location import Location
from mousflow.storage.processing_set_metadata import InvalidProcessingSet

# MSv4's row data: (time, baseline_id, frequency, polarization); a weight may lack frequency (one per row).
ROW_DATA_DIMS = ("time", "baseline_id", "frequency", "polarization")
# The parallel hands a kernel works on, by feed basis, in the order they are returned.
PARALLEL_HANDS = (("XX", "YY"), ("RR", "LL"))


def read_blocks(n: int, bytes_per_item: int, budget: int, unit: int = 1) -> list[slice]:
    """Consecutive ranges covering n items (integrations or channels) to read a block at a time: each a whole
    number of `unit` items (a stored chunk's, so no chunk is read twice; but the last) and at most `budget` bytes
    of them (at least one unit, however large)."""
    step = max(1, budget // max(1, bytes_per_item * unit)) * unit
    return [slice(start, min(n, start + step)) for start in range(0, n, step)]


def parallel_hand_indices(correlations: list[str]) -> list[int]:
    """Indices of the parallel hands among `correlations` (both of a pair, or the one there is)."""
    for pair in PARALLEL_HANDS:
        found = [correlations.index(c) for c in pair if c in correlations]
        if found:
            return found
    raise InvalidProcessingSet(f"no parallel-hand correlations (XX/YY or RR/LL) among {correlations}")


def per_sample_weight(weight: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """A weight for each sample of `shape` (time, baseline, channel, hand) from what the store holds: none (all
    1), one per (time, baseline, hand) as MSv2's WEIGHT column has it (repeated over the channels), or one per
    sample. Broadcast where repeated: a read-only view, which zero_unusable copies if it must change it."""
    if weight is None:
        return np.broadcast_to(np.float32(1), shape)
    if weight.ndim == 3:
        return np.broadcast_to(weight[:, :, None, :], shape)
    return weight


def stored_uvw(uvw_m: np.ndarray) -> np.ndarray:
    """UVW as stored in an MSv4 (and MSv2) dataset from the kernels' uvw, and back: the sign flips both ways."""
    return -np.asarray(uvw_m)


def zero_unusable(vis: np.ndarray, flag: np.ndarray, weight: np.ndarray,
                  uvw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flag every sample that cannot be used (NaN or infinite visibility, weight or uvw, as the MSv4 converter
    pads missing baselines; a negative weight) and zero its values, so no NaN reaches a sum. `vis` and `flag`
    (time, baseline, channel, hand) are changed in place; the weight is too where it is writeable (else, a
    weight broadcast from one per row, a new array is made). Returns (flag, weight, uvw)."""
    bad_row = ~np.isfinite(uvw).all(axis=-1)
    unusable = ~np.isfinite(vis) | ~np.isfinite(weight) | (weight < 0) | bad_row[:, :, None, None]
    if unusable.any():
        flag |= unusable
        vis[unusable] = 0
        if weight.flags.writeable:
            weight[unusable] = 0
        else:
            weight = np.where(unusable, 0, weight).astype(np.float32, copy=False)
        uvw = np.where(bad_row[..., None], 0.0, uvw)
    return flag, weight, uvw


@dataclass
class StoredRows:
    """A partition's row data as its Zarr arrays, opened once per process (the group's metadata only)."""

    uri: str
    vis: zarr.Array
    flag: zarr.Array | None
    weight: zarr.Array | None
    uvw: zarr.Array
    hands: list[int]

    @classmethod
    def open(cls, loc: Location) -> StoredRows:
        """The partition stored at `loc` (a processing set's child group)."""
        try:
            group = zarr.open_group(loc.zarr_store(read_only=True), mode="r")
            arrays = {name: group[name] for name in ("VISIBILITY", "UVW", "polarization")}
            for name in ("FLAG", "WEIGHT"):
                arrays[name] = group[name] if name in group else None
            correlations = [str(c) for c in np.asarray(arrays["polarization"][:]).ravel()]
        except (KeyError, ValueError, OSError) as exc:
            raise InvalidProcessingSet(f"{loc.uri}: not a readable MSv4 partition ({type(exc).__name__}: "
                                       f"{exc})") from exc
        dims = tuple(arrays["VISIBILITY"].metadata.dimension_names or ())
        if dims != ROW_DATA_DIMS:
            raise InvalidProcessingSet(f"{loc.uri}: VISIBILITY has dimensions {dims}, not {ROW_DATA_DIMS}")
        return cls(loc.uri, arrays["VISIBILITY"], arrays["FLAG"], arrays["WEIGHT"], arrays["UVW"],
                   parallel_hand_indices(correlations))

    @property
    def n_time(self) -> int:
        return int(self.vis.shape[0])

    @property
    def time_chunk(self) -> int:
        """Integrations in a stored object of the visibilities (a shard, where sharded): a block of whole ones
        reads each once."""
        return int((self.vis.shards or self.vis.chunks)[0])

    def bytes_per_integration(self, channels: slice | None = None) -> int:
        """The stored visibilities of one integration over `channels` (all correlations, as stored)."""
        _, n_bl, n_chan, n_corr = self.vis.shape
        if channels is not None:
            n_chan = len(range(*channels.indices(n_chan)))
        return n_bl * n_chan * n_corr * self.vis.dtype.itemsize

    def read(self, times: slice, channels: slice | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(vis, flag, weight), each (time, baseline, channel, hand), of integrations `times` and `channels`: the
        parallel hands only, every unusable sample flagged and zeroed (`zero_unusable`)."""
        chans = channels if channels is not None else slice(None)
        try:
            vis = self._hands(self.vis, times, chans)
            flag = (self._hands(self.flag, times, chans).astype(bool, copy=False) if self.flag is not None
                    else np.zeros(vis.shape, bool))
            if self.weight is None:
                stored = None
            elif self.weight.ndim == 3:  # one per (time, baseline, correlation), as MSv2's WEIGHT column
                stored = self.weight.oindex[times, :, self.hands]
            else:
                stored = self._hands(self.weight, times, chans)
            weight = per_sample_weight(stored, vis.shape)
            uvw = np.asarray(self.uvw[times])
        except (ValueError, OSError, RuntimeError) as exc:
            raise InvalidProcessingSet(f"{self.uri}: its data cannot be read, a chunk is missing or corrupted "
                                       f"({type(exc).__name__}: {exc})") from exc
        flag, weight, _ = zero_unusable(vis, flag, weight, uvw)
        return vis, flag, np.ascontiguousarray(weight)

    def uvw_m(self) -> np.ndarray:
        """Every integration's (time, baseline, 3) uvw in the kernels' sign convention (`stored_uvw`), those that
        are not finite (a baseline the converter padded) zeroed, as `read` flags their samples."""
        try:
            uvw = stored_uvw(np.asarray(self.uvw[...], dtype=np.float64))
        except (ValueError, OSError, RuntimeError) as exc:
            raise InvalidProcessingSet(f"{self.uri}: its uvw cannot be read ({type(exc).__name__}: {exc})") from exc
        uvw[~np.isfinite(uvw).all(axis=-1)] = 0.0
        return uvw

    def _hands(self, array: zarr.Array, times: slice, chans: slice) -> np.ndarray:
        if self.hands == list(range(array.shape[-1])):
            return np.asarray(array[times, :, chans, :])
        return np.asarray(array.oindex[times, :, chans, self.hands])


__all__ = ["StoredRows", "parallel_hand_indices", "read_blocks", "stored_uvw", "zero_unusable"]
