"""Reading MSv4 partitions of a processing set into plain numpy arrays for the science kernels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from mousflow.errors import InvalidInput
from mousflow.storage.location import Location
from mousflow.storage.msv4 import FIELD_AND_SOURCE
from mousflow.storage.zarr_io import open_processing_set


class InvalidProcessingSet(InvalidInput):
    """A processing set that is missing, unreadable or not MSv4."""


@dataclass
class PartitionInfo:
    name: str
    spw_name: str
    field_name: str
    intents: list[str]
    n_time: int
    n_baseline: int
    n_chan: int
    correlations: list[str]


def partition_infos(ps: xr.DataTree) -> list[PartitionInfo]:
    infos = []
    for name, node in sorted(ps.children.items()):
        if node.attrs.get("type") not in ("visibility",):
            continue
        p = node.xr_ms.get_partition_info()
        infos.append(PartitionInfo(
            name=name, spw_name=p["spectral_window_name"], field_name=p["field_name"][0],
            intents=list(p["scan_intents"]), n_time=node.sizes["time"], n_baseline=node.sizes["baseline_id"],
            n_chan=node.sizes["frequency"], correlations=[str(c) for c in node.polarization.values],
        ))
    return infos


def open_checked(loc: Location) -> xr.DataTree:
    """Open a processing set, raising InvalidProcessingSet with the reason if it is not usable."""
    if not loc.exists():
        raise InvalidProcessingSet(f"{loc.uri}: no such processing set")
    try:
        ps = open_processing_set(loc)
    except Exception as exc:  # zarr/xarray raise many types for a damaged store
        raise InvalidProcessingSet(f"{loc.uri}: not a readable Zarr processing set ({exc})") from exc
    if not any(n.attrs.get("type") == "visibility" for n in ps.children.values()):
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


def load_partition(node: xr.DataTree, name: str = "", channels: slice | None = None) -> PartitionArrays:
    """Read one partition (optionally a channel range) into memory; a damaged store raises InvalidProcessingSet."""
    try:
        return _load_partition(node, name, channels)
    except (KeyError, IndexError, AttributeError) as exc:
        raise InvalidProcessingSet(f"partition {name or node.name}: not a usable MSv4 dataset ({exc})") from exc
    except (ValueError, OSError, RuntimeError) as exc:
        raise InvalidProcessingSet(f"partition {name or node.name}: its data cannot be read, a chunk is missing "
                                   f"or corrupted ({type(exc).__name__}: {exc})") from exc


def _load_partition(node: xr.DataTree, name: str, channels: slice | None) -> PartitionArrays:
    ds = node.dataset
    if channels is not None:
        ds = ds.isel(frequency=channels)
    names = [str(a) for a in node["antenna_xds"].antenna_name.values]
    index = {a: i for i, a in enumerate(names)}
    a1 = np.array([index[str(a)] for a in ds.baseline_antenna1_name.values])
    a2 = np.array([index[str(a)] for a in ds.baseline_antenna2_name.values])
    fs = node[FIELD_AND_SOURCE].dataset if FIELD_AND_SOURCE in node.children else node.xr_ms.get_field_and_source_xds()
    centre = fs["FIELD_PHASE_CENTER_DIRECTION"].values[0]
    dish = node["antenna_xds"].dataset.get("ANTENNA_DISH_DIAMETER")
    p = node.xr_ms.get_partition_info()
    return PartitionArrays(
        name=name or node.name,
        vis=np.asarray(ds["VISIBILITY"].values),
        flag=np.asarray(ds["FLAG"].values) if "FLAG" in ds else np.zeros(ds["VISIBILITY"].shape, bool),
        weight=np.asarray(ds["WEIGHT"].values) if "WEIGHT" in ds else np.ones(ds["VISIBILITY"].shape, np.float32),
        uvw_m=np.asarray(ds["UVW"].values),
        time_s=np.asarray(ds.time.values, dtype=np.float64),
        frequency_hz=np.asarray(ds.frequency.values, dtype=np.float64),
        antenna1=a1,
        antenna2=a2,
        antenna_names=names,
        dish_diameter_m=np.asarray(dish.values) if dish is not None else np.full(len(names), np.nan),
        correlations=[str(c) for c in ds.polarization.values],
        field_name=str(fs.field_name.values[0]),
        phase_centre_rad=(float(centre[0]), float(centre[1])),
        spw_name=str(ds.frequency.attrs.get("spectral_window_name", "")),
        intents=list(p["scan_intents"]),
    )
