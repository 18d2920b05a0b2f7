"""Reading MSv4 partitions of a processing set into plain numpy arrays for the science kernels."""

from __future__ import annotations

from dataclasses import dataclass, replace

import dask.array
import numpy as np
import xarray as xr

from mousflow.storage.location import Location
from mousflow.storage.msv4 import FIELD_AND_SOURCE

# the checks of a processing set's metadata, which need no xarray, live in processing_set_metadata
from mousflow.storage.processing_set_metadata import (
    VISIBILITY_TYPES,
    InvalidProcessingSet,
    PartitionInfo,
    check_layout,
    field_and_source_path,
    scan_intents,
)
from mousflow.storage.stored_rows import parallel_hand_indices, per_sample_weight, stored_uvw, zero_unusable
from mousflow.storage.zarr_io import open_processing_set

# Dask's schedulers whose tasks run in this process (dask.base.named_schedulers, less "processes")
IN_PROCESS_SCHEDULERS = ("threads", "threading", "sync", "synchronous", "single-threaded")
# `load_partition(..., channels=NO_CHANNELS)`: a partition's metadata and uvw, and no visibility, weight or flag
# chunk read. One channel reads every stored chunk that holds it: at full size, 3 GB of the four target
# partitions read to learn their uvw (25 MB read this way, and 0.17 GB less resident memory).
NO_CHANNELS = slice(0, 0)


def partition_infos(ps: xr.DataTree) -> list[PartitionInfo]:
    infos = []
    for name, node in sorted(ps.children.items()):
        if node.attrs.get("type") not in VISIBILITY_TYPES:
            continue
        fs = node[field_and_source_path(name, node.attrs)]
        fields = sorted({str(f) for f in np.asarray(fs.field_name.values).ravel()})
        infos.append(PartitionInfo(
            name=name, spw_name=str(node.frequency.attrs["spectral_window_name"]), field_name=fields[0],
            intents=scan_intents(node.attrs, node.scan_name.attrs), n_time=node.sizes["time"],
            n_baseline=node.sizes["baseline_id"],
            n_chan=node.sizes["frequency"], correlations=[str(c) for c in node.polarization.values],
            field_names=fields,
        ))
    return infos


def open_checked(loc: Location) -> xr.DataTree:
    """Open a processing set, raising InvalidProcessingSet (or ProcessingSetMissing) with the reason if it is
    not usable."""
    check_layout(loc)
    try:
        ps = open_processing_set(loc)
    except Exception as exc:  # zarr/xarray raise many types for a damaged store
        raise InvalidProcessingSet(f"{loc.uri}: not a readable Zarr processing set ({exc})") from exc
    if not any(n.attrs.get("type") in VISIBILITY_TYPES for n in ps.children.values()):
        raise InvalidProcessingSet(f"{loc.uri}: contains no MSv4 visibility datasets")
    return ps


@dataclass
class PartitionArrays:
    """One partition in memory: (time, baseline, channel, correlation) arrays plus the metadata kernels need."""

    name: str
    vis: np.ndarray
    flag: np.ndarray
    weight: np.ndarray
    uvw_m: np.ndarray
    time_s: np.ndarray
    frequency_hz: np.ndarray
    antenna1: np.ndarray
    antenna2: np.ndarray
    antenna_names: list[str]
    dish_diameter_m: np.ndarray
    correlations: list[str]
    field_name: str
    phase_centre_rad: tuple[float, float]
    spw_name: str
    intents: list[str]


def load_partition(node: xr.DataTree, name: str = "", channels: slice | None = None,
                   field: str | None = None, times: slice | None = None, *,
                   sequential: bool = False) -> PartitionArrays:
    """Read one partition (optionally a channel range, optionally a range of integrations, optionally only the
    integrations on one `field`) into memory, parallel hands only; a damaged store raises InvalidProcessingSet.
    A lazily opened store is read only where the ranges select: a window too large for memory can be read in
    blocks of channels or of integrations.

    Whatever the processing set's origin, what comes out is what the kernels assume: the two parallel hands
    (XX, YY or RR, LL; cross hands dropped), uvw in the kernels' sign convention, and every sample that cannot
    be used (NaN or infinite visibility, weight or uvw, as the MSv4 converter pads missing baselines) flagged
    with its values zeroed, so no NaN reaches a sum.

    sequential: the stored chunks are read and decompressed one after the other, not on Dask's threads: for a
    caller that reads several blocks at once on threads of its own, where each block's reader would otherwise
    hold a decompressed chunk (and its compressed bytes) per core besides the block (a 480-channel block of four
    integrations of 45 MB peaked at 113 MB read on threads, 72 MB read in sequence).
    """
    try:
        return _load_partition(node, name, channels, field, times, "synchronous" if sequential else None)
    except (KeyError, IndexError, AttributeError) as exc:
        raise InvalidProcessingSet(f"partition {name or node.name}: not a usable MSv4 dataset ({exc})") from exc
    except (ValueError, OSError, RuntimeError) as exc:
        raise InvalidProcessingSet(f"partition {name or node.name}: its data cannot be read, a chunk is missing "
                                   f"or corrupted ({type(exc).__name__}: {exc})") from exc


def stored_chunk_length(node: xr.DataTree, dim: str) -> int:
    """The length along `dim` ("time" or "frequency") of a stored chunk of the partition's visibilities (the
    whole axis if they are not chunked)."""
    vis = node.dataset["VISIBILITY"]
    axis = vis.dims.index(dim)
    return int(vis.chunks[axis][0]) if vis.chunks else int(vis.shape[axis])


def _load_partition(node: xr.DataTree, name: str, channels: slice | None, field: str | None,
                    times: slice | None, scheduler: str | None) -> PartitionArrays:
    ds = node.dataset
    if channels is not None:
        ds = ds.isel(frequency=channels)
    if times is not None:
        ds = ds.isel(time=times)
    fields_in_time = np.asarray(ds.field_name.values).astype(str) if "field_name" in ds.coords else None
    if field is not None and fields_in_time is not None and fields_in_time.ndim == 1:
        on_field = fields_in_time == field
        if not on_field.any():
            raise KeyError(f"field {field} is not in this partition")
        if not on_field.all():
            ds = ds.isel(time=np.flatnonzero(on_field))
    all_corr = [str(c) for c in ds.polarization.values]
    hands = parallel_hand_indices(all_corr)
    if hands != list(range(len(all_corr))):
        ds = ds.isel(polarization=hands)
    names, a1, a2 = partition_baselines(node)
    fs = (node[FIELD_AND_SOURCE] if FIELD_AND_SOURCE in node.children
          else node[field_and_source_path(name or node.name, node.attrs)]).dataset
    fs_fields = [str(f) for f in fs.field_name.values]
    field_name = field if field is not None and field in fs_fields else fs_fields[0]
    centre = fs["FIELD_PHASE_CENTER_DIRECTION"].values[fs_fields.index(field_name)]
    dish = node["antenna_xds"].dataset.get("ANTENNA_DISH_DIAMETER")

    # the arrays read here are this function's own (filled_from), so the unusable samples are zeroed in place
    vis = filled_from(ds["VISIBILITY"], scheduler)
    flag = filled_from(ds["FLAG"], scheduler).astype(bool, copy=False) if "FLAG" in ds else np.zeros(vis.shape, bool)
    weight = per_sample_weight(filled_from(ds["WEIGHT"], scheduler) if "WEIGHT" in ds else None, vis.shape)
    flag, weight, uvw = zero_unusable(vis, flag, weight, stored_uvw(ds["UVW"].values))
    return PartitionArrays(
        name=name or node.name,
        vis=vis,
        flag=flag,
        weight=np.ascontiguousarray(weight),
        uvw_m=uvw,
        time_s=np.asarray(ds.time.values, dtype=np.float64),
        frequency_hz=np.asarray(ds.frequency.values, dtype=np.float64),
        antenna1=a1,
        antenna2=a2,
        antenna_names=names,
        dish_diameter_m=np.asarray(dish.values) if dish is not None else np.full(len(names), np.nan),
        correlations=[str(c) for c in ds.polarization.values],
        field_name=field_name,
        phase_centre_rad=(float(centre[0]), float(centre[1])),
        spw_name=str(ds.frequency.attrs.get("spectral_window_name", "")),
        intents=scan_intents(node.attrs, node.scan_name.attrs),
    )


def filled_from(array: xr.DataArray, scheduler: str | None = None) -> np.ndarray:
    """A new numpy array holding `array`'s values, filled a stored chunk at a time (on `scheduler`, one of
    IN_PROCESS_SCHEDULERS, or the one _in_process_scheduler gives).

    Why not `.values`: computing a Dask-backed array holds every chunk and the array they are concatenated into
    at once, twice the array, where storing chunk by chunk into one array allocated first holds it once (plus a
    chunk per thread). A numpy-backed array is copied, so the caller may change the result."""
    data = array.data
    if not isinstance(data, dask.array.Array):
        return np.array(array.values, copy=True)
    out = np.empty(data.shape, data.dtype)
    # disjoint regions of one array: no lock needed
    dask.array.store(data, out, lock=False, scheduler=scheduler or _in_process_scheduler())
    return out


def _in_process_scheduler() -> str:
    """The Dask scheduler that fills an array of this process: the one configured if it runs here (threads, or
    synchronous in tests), else threads. Never the distributed one, which a Dask worker's tasks have configured
    (the imaging stage's cube chunks): its tasks would fill copies of the array in other processes."""
    configured = dask.config.get("scheduler", None)
    return configured if configured in IN_PROCESS_SCHEDULERS else "threads"


def partition_baselines(node: xr.DataTree) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(the partition's antenna names, each baseline's two antennas as indices into them): its metadata, no
    data read."""
    names = [str(a) for a in node["antenna_xds"].antenna_name.values]
    index = {a: i for i, a in enumerate(names)}
    ds = node.dataset
    return (names, np.array([index[str(a)] for a in ds.baseline_antenna1_name.values]),
            np.array([index[str(a)] for a in ds.baseline_antenna2_name.values]))


@dataclass(frozen=True)
class JointBaselines:
    """The baselines several partitions are joined on: every antenna of any of them (matched by name, in order
    of first appearance) and every baseline of any of them, sorted."""

    antenna_names: list[str]
    pairs: list[tuple[int, int]]

    @classmethod
    def of(cls, layouts) -> JointBaselines:
        """From (antenna names, antenna1, antenna2) of each partition (partition_baselines, or a
        PartitionArrays' own)."""
        layouts = list(layouts)
        names = list(dict.fromkeys(a for n, _, _ in layouts for a in n))
        index = {a: i for i, a in enumerate(names)}
        pairs = sorted({(index[n[i]], index[n[j]]) for n, a1, a2 in layouts for i, j in zip(a1, a2, strict=True)})
        return cls(names, pairs)

    def columns(self, part: PartitionArrays) -> np.ndarray | None:
        """Where each of `part`'s baselines is among the joint ones; None where they are the same, in order."""
        index = {a: i for i, a in enumerate(self.antenna_names)}
        column = {pair: k for k, pair in enumerate(self.pairs)}
        cols = np.array([column[(index[part.antenna_names[i]], index[part.antenna_names[j]])]
                         for i, j in zip(part.antenna1, part.antenna2, strict=True)], dtype=np.int64)
        same = part.antenna_names == self.antenna_names and np.array_equal(cols, np.arange(len(self.pairs)))
        return None if same else cols


def concatenate_partitions(parts: list[PartitionArrays], baselines: JointBaselines | None = None
                           ) -> PartitionArrays:
    """One partition from several of the same window and field (e.g. a calibrator's scans, partitioned by
    scan): integrations joined in time order (ties in the order of `parts`) on `baselines` (default: the union
    of theirs, JointBaselines.of); a baseline missing from a part is flagged there. A single part already on
    those baselines in time order is returned as it is, not copied."""
    if not parts:
        raise ValueError("concatenate_partitions: nothing to concatenate")
    if baselines is None:
        if len(parts) == 1:
            return parts[0]
        baselines = JointBaselines.of((p.antenna_names, p.antenna1, p.antenna2) for p in parts)
    first = parts[0]
    for p in parts[1:]:
        if p.frequency_hz.shape != first.frequency_hz.shape or not np.allclose(p.frequency_hz, first.frequency_hz):
            raise InvalidProcessingSet(f"partitions {first.name} and {p.name} of window {first.spw_name} have "
                                       f"different channels")
        if p.correlations != first.correlations:
            raise InvalidProcessingSet(f"partitions {first.name} and {p.name} have different correlations")
    columns = [baselines.columns(p) for p in parts]
    time_s = np.concatenate([p.time_s for p in parts])
    in_order = bool(np.all(np.diff(time_s) >= 0))
    if len(parts) == 1 and columns[0] is None and in_order:
        return first
    names, pairs = baselines.antenna_names, baselines.pairs
    index = {a: i for i, a in enumerate(names)}
    n_bl, (n_c, n_p) = len(pairs), first.vis.shape[2:]
    n_t = time_s.size
    vis = np.zeros((n_t, n_bl, n_c, n_p), dtype=first.vis.dtype)
    flag = np.ones((n_t, n_bl, n_c, n_p), dtype=bool)
    weight = np.zeros((n_t, n_bl, n_c, n_p), dtype=np.float32)
    uvw = np.zeros((n_t, n_bl, 3))
    dish = np.full(len(names), np.nan)
    t0 = 0
    for p, cols in zip(parts, columns, strict=True):
        rows = slice(t0, t0 + p.time_s.size)
        cols = slice(None) if cols is None else cols
        vis[rows, cols], flag[rows, cols], weight[rows, cols], uvw[rows, cols] = p.vis, p.flag, p.weight, p.uvw_m
        for a, d in zip(p.antenna_names, p.dish_diameter_m, strict=True):
            dish[index[a]] = d
        t0 += p.time_s.size
    if not in_order:
        order = np.argsort(time_s, kind="stable")
        vis, flag, weight, uvw, time_s = vis[order], flag[order], weight[order], uvw[order], time_s[order]
    return replace(
        first, name="+".join(p.name for p in parts), vis=vis, flag=flag, weight=weight, uvw_m=uvw, time_s=time_s,
        antenna1=np.array([a for a, _ in pairs]), antenna2=np.array([b for _, b in pairs]), antenna_names=names,
        dish_diameter_m=dish, intents=list(dict.fromkeys(i for p in parts for i in p.intents)),
    )
