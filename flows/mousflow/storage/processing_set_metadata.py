"""What checking an execution block needs from a processing set, read without xarray.

Checking an execution block (stages.inputs) needs each MSv4 partition's window, fields, intents, sizes and
correlations, its baselines' antenna names, its frequencies and its fields' phase centres: the root zarr.json's
consolidated metadata and a handful of small coordinate arrays, read here with zarr alone. Opening the set
with xarray (storage.partitions) gives the same values but loads xarray, pandas, dask and scipy,
about 165 MB, which the operator that checks a thousand MOUSs' inputs never needs otherwise (issue 16); the
stages, which read the data, open it with xarray as before.

The values are those of xradio's `get_partition_info` and field_and_source dataset (data group "base", or the
first one; field names sorted and unique; the scan intents of `observation_info`, else of `scan_name`);
tests/storage/test_processing_set_metadata.py and tests/ingest compare the two on simulated and converted
processing sets.
"""

from __future__ import annotations

import json
import os
import stat
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field

import numpy as np

from mousflow.errors import InputMissing, InvalidInput
from mousflow.storage.integrity import file_kind, require_regular_file
from mousflow.storage.location import Location

# A processing set's root zarr.json holds the consolidated metadata of every partition: megabytes for a large
# execution block, never gigabytes. Anything larger is not metadata and is not read.
MAX_ROOT_METADATA_BYTES = 256 * 2**20
# MSv4 node types that hold visibilities (xradio also knows "spectrum"; mousflow images visibilities only).
VISIBILITY_TYPES = ("visibility",)


class InvalidProcessingSet(InvalidInput):
    """A processing set that is unreadable or not MSv4."""


class ProcessingSetMissing(InputMissing):
    """No processing set where one should be."""


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
    field_names: list[str] = dataclass_field(default_factory=list)
    """Every field in the partition (one unless the processing set was partitioned without FIELD_ID)."""


@dataclass(frozen=True)
class PartitionMetadata:
    """One partition's description and the small arrays the input checks read."""

    info: PartitionInfo
    antenna1_names: np.ndarray
    antenna2_names: np.ndarray
    frequency_hz: np.ndarray
    field_centres: dict[str, tuple[float, float]]
    """Phase centre (RA, Dec) radians of each field of its field_and_source dataset, in that dataset's order."""
    dish_diameter_m: np.ndarray
    """Each antenna's dish diameter (its antenna_xds's ANTENNA_DISH_DIAMETER); empty where the dataset has none."""


def check_layout(loc: Location) -> dict:
    """Check, opening nothing but its root metadata, that `loc` looks like a processing set: a directory (or
    prefix) whose zarr.json is a Zarr group of type processing_set; returns that zarr.json. Raises
    ProcessingSetMissing or InvalidProcessingSet. A local path is only stat-ed before that: a named pipe or a
    device is refused by its type, never opened."""
    meta = loc.join("zarr.json")
    if loc.is_local:
        try:
            st = os.stat(loc.path)
        except FileNotFoundError:
            raise ProcessingSetMissing(f"{loc.uri} does not exist") from None
        if not stat.S_ISDIR(st.st_mode):
            raise InvalidProcessingSet(f"{loc.uri}: not a processing set (it is {file_kind(st.st_mode)}; a "
                                       f"processing set is a Zarr directory)")
        try:
            size = require_regular_file(meta.path).st_size
        except FileNotFoundError:
            raise InvalidProcessingSet(f"{loc.uri}: not a processing set (a directory without zarr.json)") from None
    else:
        if not meta.exists():
            if loc.exists():
                raise InvalidProcessingSet(f"{loc.uri}: not a processing set (no zarr.json)")
            raise ProcessingSetMissing(f"{loc.uri} does not exist")
        size = meta.fs.size(meta.path)
    if size > MAX_ROOT_METADATA_BYTES:
        raise InvalidProcessingSet(f"{loc.uri}: zarr.json is {size / 2**20:.0f} MiB, too large to be metadata")
    try:
        doc = json.loads(meta.read_bytes())
    except ValueError as exc:
        raise InvalidProcessingSet(f"{loc.uri}: zarr.json is damaged, not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("node_type") != "group":
        raise InvalidProcessingSet(f"{loc.uri}: not a processing set (zarr.json is not a Zarr group's)")
    kind = (doc.get("attributes") or {}).get("type") if isinstance(doc.get("attributes"), dict) else None
    if kind != "processing_set":
        raise InvalidProcessingSet(f"{loc.uri}: not a processing set (a Zarr group of type {kind!r})")
    return doc


def read_metadata(loc: Location) -> list[PartitionMetadata]:
    """The visibility partitions of the processing set at `loc`, sorted by name, with what the input checks
    read. Raises ProcessingSetMissing, or InvalidProcessingSet with the reason when it is not a usable one."""
    check_layout(loc)
    try:
        parts = _read_partitions(loc)
    except (InvalidInput, InputMissing):
        raise
    except Exception as exc:  # zarr and the store raise many types for a damaged processing set
        raise InvalidProcessingSet(f"{loc.uri}: not a readable Zarr processing set ({type(exc).__name__}: "
                                   f"{exc})") from exc
    if not parts:
        raise InvalidProcessingSet(f"{loc.uri}: contains no MSv4 visibility datasets")
    return parts


def _read_partitions(loc: Location) -> list[PartitionMetadata]:
    import zarr
    from zarr.errors import UnstableSpecificationWarning

    with warnings.catch_warnings():  # fixed-width strings and consolidated metadata: see storage.zarr_io
        warnings.filterwarnings("ignore", category=UnstableSpecificationWarning)
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        root = zarr.open_group(loc.zarr_store(read_only=True), mode="r")
        return [_partition(name, node) for name, node in sorted(root.groups())
                if node.attrs.get("type") in VISIBILITY_TYPES]


def _strings(array) -> list[str]:
    return [str(s) for s in np.asarray(array[...]).ravel()]


def field_and_source_path(name: str, attrs: Mapping) -> str:
    """Where partition `name` (its attributes `attrs`) keeps its field_and_source dataset: that of data group
    "base", else of the first group, as xradio's `get_field_and_source_xds` picks it."""
    groups = attrs.get("data_groups") or {}
    group = "base" if "base" in groups else next(iter(groups), None)
    if group is None:
        raise InvalidProcessingSet(f"partition {name}: no data groups in its attributes, not an MSv4 dataset")
    return groups[group]["field_and_source"]


def scan_intents(attrs: Mapping, scan_name_attrs: Mapping) -> list[str]:
    """A partition's scan intents as xradio's `get_partition_info` gives them: those of its observation_info,
    else those of its scan_name coordinate."""
    intents = (attrs.get("observation_info") or {}).get("intents")
    if intents is None:
        intents = scan_name_attrs.get("scan_intents", ["UNSPECIFIED"])
    return list(intents)


def _partition(name: str, node) -> PartitionMetadata:
    attrs = node.attrs
    fs = node[field_and_source_path(name, attrs)]
    fs_field_names = _strings(fs["field_name"])
    fields = sorted(set(fs_field_names))
    intents = scan_intents(attrs, node["scan_name"].attrs)
    frequency = node["frequency"]
    centres = np.asarray(fs["FIELD_PHASE_CENTER_DIRECTION"][...], dtype=np.float64).reshape(len(fs_field_names), -1)
    field_centres: dict[str, tuple[float, float]] = {}
    for field_name, c in zip(fs_field_names, centres, strict=True):
        field_centres.setdefault(field_name, (float(c[0]), float(c[1])))
    info = PartitionInfo(
        name=name, spw_name=str(frequency.attrs["spectral_window_name"]), field_name=fields[0],
        intents=intents, n_time=int(node["time"].shape[0]), n_baseline=int(node["baseline_id"].shape[0]),
        n_chan=int(frequency.shape[0]), correlations=_strings(node["polarization"]), field_names=fields)
    return PartitionMetadata(
        info=info, antenna1_names=np.asarray(_strings(node["baseline_antenna1_name"])),
        antenna2_names=np.asarray(_strings(node["baseline_antenna2_name"])),
        frequency_hz=np.asarray(frequency[...], dtype=np.float64), field_centres=field_centres,
        dish_diameter_m=_dish_diameters(node))


def _dish_diameters(node) -> np.ndarray:
    antennas = node["antenna_xds"] if "antenna_xds" in node else None
    if antennas is None or "ANTENNA_DISH_DIAMETER" not in antennas:
        return np.empty(0)
    return np.asarray(antennas["ANTENNA_DISH_DIAMETER"][...], dtype=np.float64).ravel()
