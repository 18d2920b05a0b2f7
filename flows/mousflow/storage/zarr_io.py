"""Writing processing sets to Zarr (local or s3://) one partition at a time, and opening them again.

Partitions are written one by one so a large execution block never has to sit in memory whole; the root's
metadata is consolidated at the end, as xradio's `open_processing_set` expects, and then the checksum of every
object is recorded (storage.integrity) for readers to verify.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from contextlib import contextmanager

import numpy as np
import xarray as xr
import zarr
from zarr.codecs import BloscCodec
from zarr.errors import UnstableSpecificationWarning

from mousflow.storage.integrity import CHECKSUMS, record_checksums
from mousflow.storage.location import Location

# Channel-chunked on disk, so an imaging worker reads only its slab of a wide spectral window. Row data over
# frequency (visibilities, flags, weights) is stored in Zarr v3 shards of CHANNELS_PER_CHUNK channels and a block
# of integrations (the objects written and checksummed, what a stage writes as one piece) holding chunks of
# CHANNELS_PER_READ channels, each of which a reader fetches on its own by the shard's index: an imaging worker's
# cube chunk (16 channels by default) reads its 16 channels, where unsharded 256-channel chunks made it read all
# 256 (at full size 1.17 GB read per cube chunk for the 90 MB it uses). A block of integrations read over every
# channel reads whole shards' worth of chunks, as before.
CHANNELS_PER_CHUNK = 256
CHANNELS_PER_READ = 16
TARGET_CHUNK_BYTES = 16 * 2**20
FAST_CODEC = BloscCodec(cname="lz4", clevel=1, shuffle="bitshuffle")
# Thermal-noise-dominated visibilities do not compress: stored raw to save the CPU. Flags and weights are nearly
# constant: the fastest codec already shrinks them ~100-fold. Other variables keep the codecs they came with.
MSV4_COMPRESSORS = {"VISIBILITY": None, "FLAG": [FAST_CODEC], "WEIGHT": [FAST_CODEC]}
# The dimensions every row-data variable of an MSv4 dataset has (and only those have both).
ROW_DIMS = ("time", "baseline_id")
# Encoding keys describing how the store a dataset was read from is laid out; meaningless for the store it is
# written to, and a stale one makes xarray refuse the write (or, with safe_chunks off, corrupt it).
INHERITED_LAYOUT_KEYS = ("chunks", "preferred_chunks", "shards")


@contextmanager
def _quiet_zarr():
    """Silence zarr's notices about what Zarr v3 has not specified yet: fixed-width strings (antenna and field
    names) and consolidated metadata. xradio's own stores use both; they are not problems of ours."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UnstableSpecificationWarning)
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        yield


def visibility_chunks(shape: tuple[int, int, int, int], itemsize: int = 8) -> tuple[int, int, int, int]:
    n_t, n_bl, n_c, n_p = shape
    c = min(n_c, CHANNELS_PER_CHUNK)
    t = int(max(1, min(n_t, TARGET_CHUNK_BYTES // max(1, n_bl * c * n_p * itemsize))))
    return (t, n_bl, c, n_p)


def read_chunks(ds: xr.Dataset, chunks: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """The chunks read on their own inside the stored chunks (`storage_chunks`, the shards) of the variables
    that are sharded: row data over frequency whose stored chunk holds more than CHANNELS_PER_READ channels.
    A shard is a whole number of them, so its channels are rounded up to one (Zarr allows a chunk, or a shard,
    to reach past the array's end)."""
    inner = {}
    for name, shard in chunks.items():
        dims = ds.variables[name].dims
        if "frequency" not in dims or not set(ROW_DIMS) <= set(dims):
            continue
        axis = dims.index("frequency")
        if shard[axis] <= CHANNELS_PER_READ:
            continue
        inner[name] = (*shard[:axis], CHANNELS_PER_READ, *shard[axis + 1:])
    return inner


def storage_chunks(ds: xr.Dataset) -> dict[str, tuple[int, ...]]:
    """The Zarr chunks each variable of `ds` is written with: our layout, whatever chunks it was read with.

    Row data (every variable over time and baseline: visibilities, flags, weights, UVW, ...) is chunked like
    the visibilities along time and frequency, so one time range or one channel slab is a set of whole chunks
    in every such array. Everything else (coordinates, antenna and field tables, calibration tables) is one
    chunk, or slices along its first dimension of at most TARGET_CHUNK_BYTES when it is larger.
    """
    plan: dict[str, int] = {}
    if "VISIBILITY" in ds.data_vars and ds["VISIBILITY"].ndim == 4:
        vis = ds["VISIBILITY"]
        t, _, c, _ = visibility_chunks(vis.shape, vis.dtype.itemsize)
        plan = {"time": t, "frequency": c}
    chunks = {}
    for name, var in ds.variables.items():
        if var.ndim == 0:
            continue
        if plan and set(ROW_DIMS) <= set(var.dims):
            sizes = [min(plan.get(d, n), n) for d, n in var.sizes.items()]
        else:
            row_bytes = var.nbytes // max(1, var.shape[0])
            sizes = [min(var.shape[0], TARGET_CHUNK_BYTES // max(1, row_bytes)), *var.shape[1:]]
        chunks[name] = tuple(max(1, n) for n in sizes)  # Zarr has no zero-length chunk, even for an empty axis
    return chunks


def laid_out_for_storage(ds: xr.Dataset, compressors: dict[str, list | None] | None = None) -> xr.Dataset:
    """`ds` with every variable's encoding set to our chunks (and codecs) and its Dask chunks made to match.

    A dataset read from Zarr carries the chunking of the store it came from (encoding `chunks`,
    `preferred_chunks`), and its Dask chunks follow that store, or whatever a selection left of them. Neither
    says anything about the store we write: here the inherited layout is dropped, our chunks are set, and every
    lazy array is made a Dask array of exactly those chunks (each task then writes whole Zarr chunks, never one
    shared with another task), without reading it: writing streams it chunk by chunk.
    """
    chunks = storage_chunks(ds)
    inner = read_chunks(ds, chunks)
    compressors = compressors or {}
    variables = {}
    for name, var in ds.variables.items():
        encoding = {k: v for k, v in var.encoding.items() if k not in INHERITED_LAYOUT_KEYS}
        # Dask arrays, and arrays read lazily from a store (their encoding names the store's chunks), become
        # Dask arrays of our chunks (of our shards, where sharded: a shard is written whole by one task);
        # arrays made in memory are written as they are (wrapping them would only cost CPU and memory). An index
        # is always in memory.
        lazy = var.chunks is not None or "preferred_chunks" in var.encoding
        if name in chunks:
            stored = chunks[name]
            if name in inner:
                read = inner[name]
                stored = tuple(-(-s // r) * r for s, r in zip(stored, read, strict=True))
                encoding["chunks"], encoding["shards"] = read, stored
            else:
                encoding["chunks"] = stored
            if lazy and name not in ds.xindexes:
                var = var.chunk(dict(zip(var.dims, stored, strict=True)))
        if name in compressors:
            encoding["compressors"] = compressors[name]
        var = var.copy(deep=False)
        var.encoding = encoding
        variables[name] = var
    return xr.Dataset({n: variables[n] for n in ds.data_vars}, coords={n: variables[n] for n in ds.coords},
                      attrs=ds.attrs)


def write_processing_set_root(loc: Location) -> None:
    root = zarr.open_group(loc.zarr_store(), mode="w", zarr_format=3)
    root.attrs["type"] = "processing_set"


def write_processing_set_node(loc: Location, name: str, node: xr.DataTree) -> None:
    """Write one MSv4 node (and its sub-datasets) under the processing set at `loc`, in our chunks whatever the
    node's own (lazy arrays stay lazy)."""
    # As DataTree.to_zarr does: the node written as the root keeps the coordinates it inherits, its children
    # only their own.
    tree = xr.DataTree.from_dict({
        path: laid_out_for_storage(n.to_dataset(inherit=n is node), MSV4_COMPRESSORS)
        for path, n in node.subtree_with_keys
    })
    # write_empty_chunks: every chunk written as it comes. Zarr's default compares each chunk with the fill value
    # first, to leave out chunks that hold only that: a full pass over every byte written, for nothing in
    # visibilities (~9 % of the calibration stage's CPU at full size), and flags and weights compress to almost
    # nothing anyway.
    with _quiet_zarr():
        tree.to_zarr(loc.join(name).zarr_store(), mode="w", consolidated=False, zarr_format=3,
                     write_empty_chunks=True)


def flag_stored_channels(loc: Location, channels: Sequence[int]) -> int:
    """Flag `channels` of the MSv4 partition stored at `loc`: every sample's FLAG set and WEIGHT zeroed there, a
    stored time chunk at a time; nothing else rewritten. Returns the number of samples it flagged that were not
    flagged already. For flags found only once the partition is written (the calibration stage judges a
    target's channels on all of its integrations, which it writes as it reads)."""
    chosen = np.asarray(sorted(channels), dtype=np.int64)
    if chosen.size == 0:
        return 0
    group = zarr.open_group(loc.zarr_store(), mode="r+")
    newly = 0
    for name, value in (("FLAG", True), ("WEIGHT", 0)):
        array = group[name]  # (time, baseline_id, frequency, polarization)
        step = (array.shards or array.chunks)[0]  # whole stored objects (shards) of integrations at a time
        for start in range(0, array.shape[0], step):
            rows = slice(start, start + step)
            if name == "FLAG":
                newly += int(np.count_nonzero(~array.oindex[rows, :, chosen, :]))
            array.oindex[rows, :, chosen, :] = value
    return newly


def write_dataset_group(loc: Location, ds: xr.Dataset, group: str) -> None:
    """Write a plain xarray Dataset (e.g. a calibration table) as group `group` of the Zarr store at loc."""
    with _quiet_zarr():
        laid_out_for_storage(ds).to_zarr(loc.zarr_store(), group=group, mode="a" if loc.exists() else "w",
                                         consolidated=False, zarr_format=3)


def finalize_processing_set(loc: Location, *, threads: int = 1) -> None:
    """Consolidate the metadata and record the checksums (`threads` objects hashed at a time: a full-size
    execution block's 3.4 GB take ~1 s a thread from the page cache): the last writes of a processing set."""
    loc.join(CHECKSUMS).remove()  # not part of the Zarr hierarchy: recorded again below, after consolidation
    with _quiet_zarr():
        zarr.consolidate_metadata(loc.zarr_store())
    record_checksums(loc, threads=threads)


def open_zarr_tree(loc: Location) -> xr.DataTree:
    """Open any Zarr hierarchy written without consolidated metadata (e.g. calibration tables), anywhere."""
    return xr.open_datatree(loc.zarr_store(), engine="zarr", consolidated=False)


def open_processing_set(loc: Location) -> xr.DataTree:
    """Open a processing set lazily (dask-backed arrays), locally or on S3.

    This is what xradio's `open_processing_set` does for a whole set, without importing xradio: its import
    costs a stage process about 2 CPU seconds and 70 MB (its schema module reads its own source, and it loads
    dask.distributed), for nothing a stage uses. Only import-ms, which converts with xradio, needs it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        return xr.open_datatree(loc.zarr_store(), engine="zarr", chunks={})


__all__ = ["finalize_processing_set", "flag_stored_channels", "laid_out_for_storage", "open_processing_set",
           "open_zarr_tree", "storage_chunks", "visibility_chunks", "write_dataset_group", "write_processing_set_node",
           "write_processing_set_root"]
