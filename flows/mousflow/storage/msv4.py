"""Building and reading MSv4 datasets (the xradio schema) from plain arrays.

One MSv4 node holds one partition: a spectral window, one field and its scan intent, for one execution
block. A processing set is a DataTree whose children are such nodes; `xradio.schema.check.check_datatree`
accepts what `build_msv4_node` makes (tests/storage/test_msv4.py keeps that true).

UVW on disk follows what CASA writes and xradio's MSv2 converter copies: the stored UVW is position(antenna1)
- position(antenna2), the negative of the baseline vector the kernels use (mousflow.science.conventions), with
the visibilities unchanged. `build_msv4_node` negates on the way out and `partitions.load_partition` on the way
in, so imported Measurement Sets and the simulator's processing sets mean the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import xarray as xr

import mousflow
from mousflow.storage.stored_rows import stored_uvw

MSV4_SCHEMA_VERSION = "4.0.1"
FIELD_AND_SOURCE = "field_and_source_base_xds"


def _quantity(value, units: str) -> dict:
    return {"data": value, "dims": [], "attrs": {"type": "quantity", "units": units}}


@dataclass
class AntennaTable:
    names: list[str]
    stations: list[str]
    itrf_m: np.ndarray
    dish_diameter_m: np.ndarray
    telescope: str = "ALMA"
    receptors: tuple[str, str] = ("X", "Y")

    def to_xds(self) -> xr.Dataset:
        n = len(self.names)
        ds = xr.Dataset(
            data_vars={
                "ANTENNA_POSITION": (
                    ("antenna_name", "cartesian_pos_label"),
                    np.asarray(self.itrf_m, dtype=np.float64),
                    {"type": "location", "units": "m", "frame": "ITRS", "coordinate_system": "geocentric",
                     "origin_object_name": "earth"},
                ),
                "ANTENNA_DISH_DIAMETER": (
                    ("antenna_name",), np.asarray(self.dish_diameter_m, dtype=np.float64),
                    {"type": "quantity", "units": "m"},
                ),
            },
            coords={
                "antenna_name": ("antenna_name", list(self.names)),
                "station_name": ("antenna_name", list(self.stations)),
                "mount": ("antenna_name", ["ALT-AZ"] * n),
                "telescope_name": ("antenna_name", [self.telescope] * n),
                "receptor_label": ("receptor_label", ["pol_0", "pol_1"]),
                "polarization_type": (("antenna_name", "receptor_label"), [list(self.receptors)] * n),
                "cartesian_pos_label": ("cartesian_pos_label", ["x", "y", "z"]),
            },
            attrs={"type": "antenna", "overall_telescope_name": self.telescope, "relocatable_antennas": True},
        )
        return ds


@dataclass
class FieldInfo:
    field_name: str
    source_name: str
    ra_rad: float
    dec_rad: float

    def to_xds(self) -> xr.Dataset:
        return xr.Dataset(
            data_vars={
                "FIELD_PHASE_CENTER_DIRECTION": (
                    ("field_name", "sky_dir_label"), np.array([[self.ra_rad, self.dec_rad]]),
                    {"type": "sky_coord", "units": "rad", "frame": "icrs"},
                ),
                "SOURCE_DIRECTION": (
                    ("field_name", "sky_dir_label"), np.array([[self.ra_rad, self.dec_rad]]),
                    {"type": "sky_coord", "units": "rad", "frame": "icrs"},
                ),
            },
            coords={
                "field_name": ("field_name", [self.field_name]),
                "source_name": ("field_name", [self.source_name]),
                "sky_dir_label": ("sky_dir_label", ["ra", "dec"]),
            },
            attrs={"type": "field_and_source"},
        )


@dataclass
class Partition:
    """The arrays of one MSv4 partition, in memory.

    Shapes: vis/flag/weight (time, baseline, channel, correlation); uvw (time, baseline, 3) in metres with
    uvw = position(antenna2) - position(antenna1) (the kernels' convention; stored negated, as CASA does).
    """

    time_unix_s: np.ndarray
    integration_s: float
    scan_names: np.ndarray
    antenna1: np.ndarray
    antenna2: np.ndarray
    antennas: AntennaTable
    frequency_hz: np.ndarray
    channel_width_hz: float
    spw_name: str
    correlations: tuple[str, ...]
    field: FieldInfo
    intents: list[str]
    vis: np.ndarray
    flag: np.ndarray
    weight: np.ndarray
    uvw_m: np.ndarray
    execution_block_uid: str
    project_uid: str
    creation_date: str
    extra_attrs: dict = field(default_factory=dict)


def build_msv4_node(p: Partition) -> xr.DataTree:
    """Assemble one MSv4 DataTree node (with its antenna and field sub-datasets) from a Partition."""
    names = np.asarray(p.antennas.names)
    n_bl = len(p.antenna1)
    ds = xr.Dataset(
        data_vars={
            "VISIBILITY": (("time", "baseline_id", "frequency", "polarization"), p.vis, {"units": "Jy"}),
            "FLAG": (("time", "baseline_id", "frequency", "polarization"), p.flag),
            "WEIGHT": (("time", "baseline_id", "frequency", "polarization"), p.weight),
            "UVW": (("time", "baseline_id", "uvw_label"), stored_uvw(p.uvw_m),
                    {"type": "uvw", "frame": "icrs", "units": "m"}),
        },
        coords={
            "time": ("time", p.time_unix_s, {
                "type": "time", "units": "s", "scale": "utc", "format": "unix",
                "integration_time": _quantity(p.integration_s, "s"),
            }),
            "baseline_id": ("baseline_id", np.arange(n_bl, dtype=np.int64)),
            "baseline_antenna1_name": ("baseline_id", names[p.antenna1]),
            "baseline_antenna2_name": ("baseline_id", names[p.antenna2]),
            "frequency": ("frequency", p.frequency_hz, {
                "type": "spectral_coord", "units": "Hz", "observer": "TOPO",
                "spectral_window_name": p.spw_name,
                "spectral_window_intents": ["UNSPECIFIED"],
                "frequency_group_name": "",
                "reference_frequency": {"data": float(p.frequency_hz[0]), "dims": [],
                                        "attrs": {"type": "spectral_coord", "units": "Hz", "observer": "TOPO"}},
                "channel_width": _quantity(p.channel_width_hz, "Hz"),
            }),
            "polarization": ("polarization", list(p.correlations)),
            "field_name": ("time", np.full(len(p.time_unix_s), p.field.field_name)),
            "scan_name": ("time", p.scan_names, {"scan_intents": list(p.intents)}),
            "uvw_label": ("uvw_label", ["u", "v", "w"]),
        },
        attrs={
            "type": "visibility",
            "schema_version": MSV4_SCHEMA_VERSION,
            "creator": {"software_name": "mousflow", "version": mousflow.__version__},
            "creation_date": p.creation_date,
            "observation_info": {
                "observer": ["mousflow"],
                "release_date": p.creation_date,
                "project_UID": p.project_uid,
                "execution_block_UID": p.execution_block_uid,
                "session_reference_UID": "",
                "observing_log": "",
                "scheduling_block_UID": "",
                "intents": list(p.intents),
            },
            "processor_info": {"type": "CORRELATOR", "sub_type": "ALMA_CORRELATOR_MODE"},
            "data_groups": {"base": {
                "correlated_data": "VISIBILITY", "flag": "FLAG", "weight": "WEIGHT", "uvw": "UVW",
                "field_and_source": FIELD_AND_SOURCE, "description": "observed data",
                "date": p.creation_date,
            }},
            **p.extra_attrs,
        },
    )
    node = xr.DataTree(ds)
    node["antenna_xds"] = xr.DataTree(p.antennas.to_xds())
    node[FIELD_AND_SOURCE] = xr.DataTree(p.field.to_xds())
    return node


def build_processing_set(nodes: dict[str, xr.DataTree]) -> xr.DataTree:
    root = xr.DataTree(name="processing_set")
    root.attrs["type"] = "processing_set"
    for name, node in nodes.items():
        root[name] = node
    return root
