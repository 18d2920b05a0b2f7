"""Writing processing sets to Zarr (local or s3://) one partition at a time, and opening them again.

Partitions are written one by one so a large execution block never has to sit in memory whole; the root's
metadata is consolidated at the end, as xradio's `open_processing_set` expects.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import xarray as xr
import zarr
from zarr.codecs import BloscCodec
from zarr.errors import UnstableSpecificationWarning

from mousflow.storage.location import Location

# Channel-chunked on disk, so an imaging worker reads only its slab of a wide spectral window.
CHANNELS_PER_CHUNK = 256
TARGET_CHUNK_BYTES = 16 * 2**20
FAST_CODEC = BloscCodec(cname="lz4", clevel=1, shuffle="bitshuffle")


@contextmanager
def _quiet_zarr():
    """Silence zarr's notices about what Zarr v3 has not specified yet: fixed-width strings (antenna and field
    names) and consolidated metadata. xradio's own stores use both; they are not problems of ours."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UnstableSpecificationWarning)
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        yield


def _zarr_target(loc: Location):
    if loc.is_local:
        return loc.path
    return zarr.storage.FsspecStore.from_url(loc.uri, storage_options=loc.storage_options())


def visibility_chunks(shape: tuple[int, int, int, int], itemsize: int = 8) -> tuple[int, int, int, int]:
    n_t, n_bl, n_c, n_p = shape
    c = min(n_c, CHANNELS_PER_CHUNK)
    t = int(max(1, min(n_t, TARGET_CHUNK_BYTES // max(1, n_bl * c * n_p * itemsize))))
    return (t, n_bl, c, n_p)


def write_processing_set_root(loc: Location) -> None:
    root = zarr.open_group(_zarr_target(loc), mode="w", zarr_format=3)
    root.attrs["type"] = "processing_set"


def write_processing_set_node(loc: Location, name: str, node: xr.DataTree) -> None:
    """Write one MSv4 node (and its sub-datasets) under the processing set at `loc`."""
    with _quiet_zarr():
        _write_node(loc, name, node)


def _write_node(loc: Location, name: str, node: xr.DataTree) -> None:
    ds = node.dataset
    chunks = visibility_chunks(ds["VISIBILITY"].shape)
    encoding = {"/": {}}
    for var in ("VISIBILITY", "FLAG", "WEIGHT"):
        if var in ds:
            encoding["/"][var] = {"chunks": chunks}
    if "UVW" in ds:
        encoding["/"]["UVW"] = {"chunks": (chunks[0], chunks[1], 3)}
    # Thermal-noise-dominated visibilities do not compress: store them raw and save the CPU. Flags and weights
    # are nearly constant: the fastest codec already shrinks them ~100-fold.
    encoding["/"].setdefault("VISIBILITY", {})["compressors"] = None
    for var in ("FLAG", "WEIGHT"):
        if var in encoding["/"]:
            encoding["/"][var]["compressors"] = [FAST_CODEC]
    node.to_zarr(_zarr_target(loc.join(name)), mode="w", encoding=encoding, consolidated=False, zarr_format=3)


def write_dataset_group(loc: Location, ds: xr.Dataset, group: str) -> None:
    """Write a plain xarray Dataset (e.g. a calibration table) as group `group` of the Zarr store at loc."""
    with _quiet_zarr():
        ds.to_zarr(_zarr_target(loc), group=group, mode="a" if loc.exists() else "w", consolidated=False,
                   zarr_format=3)


def finalize_processing_set(loc: Location) -> None:
    with _quiet_zarr():
        zarr.consolidate_metadata(_zarr_target(loc))


def open_zarr_tree(loc: Location) -> xr.DataTree:
    """Open any Zarr hierarchy written without consolidated metadata (e.g. calibration tables), anywhere."""
    return xr.open_datatree(_zarr_target(loc), engine="zarr", consolidated=False)


def open_processing_set(loc: Location) -> xr.DataTree:
    """Open a processing set lazily with xradio (dask-backed arrays)."""
    from xradio.measurement_set import open_processing_set as xradio_open

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        if loc.is_local:
            return xradio_open(loc.path)
        return xr.open_datatree(_zarr_target(loc), engine="zarr", chunks={})


__all__ = ["finalize_processing_set", "open_processing_set", "open_zarr_tree", "visibility_chunks",
           "write_processing_set_node",
           "write_processing_set_root"]
