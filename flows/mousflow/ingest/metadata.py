"""What a converted execution block holds, read from its processing set: fields and their intents, spectral
windows, antennas and dish diameters, time range, and the observatory's identifiers when the MS carried them."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import xarray as xr

from mousflow.storage.msv4 import FIELD_AND_SOURCE
from mousflow.storage.partitions import partition_infos

TARGET_INTENT = "OBSERVE_TARGET"


@dataclass
class FieldSummary:
    name: str
    source: str
    ra_deg: float
    dec_deg: float
    intents: list[str] = field(default_factory=list)

    @property
    def is_target(self) -> bool:
        return any(p.strip().startswith(TARGET_INTENT) for i in self.intents for p in i.split(","))


@dataclass
class WindowSummary:
    name: str
    n_chan: int
    first_hz: float
    last_hz: float
    channel_width_hz: float
    correlations: list[str]

    @property
    def centre_hz(self) -> float:
        return 0.5 * (self.first_hz + self.last_hz)

    @property
    def bandwidth_hz(self) -> float:
        return self.n_chan * abs(self.channel_width_hz)


@dataclass
class ExecutionBlockSummary:
    fields: list[FieldSummary]
    windows: list[WindowSummary]
    antennas: list[str]
    dish_diameter_m: list[float]
    telescope: str
    start_unix_s: float
    end_unix_s: float
    execution_block_uid: str
    project: str
    n_partitions: int
    target_windows: list[str] = field(default_factory=list)

    @property
    def targets(self) -> list[FieldSummary]:
        return [f for f in self.fields if f.is_target]

    def to_json(self) -> dict:
        return asdict(self)


def summarise(ps: xr.DataTree) -> ExecutionBlockSummary:
    """Summarise one execution block's processing set (any partitioning)."""
    infos = partition_infos(ps)
    fields: dict[str, FieldSummary] = {}
    windows: dict[str, WindowSummary] = {}
    target_windows: set[str] = set()
    start, end = math.inf, -math.inf
    antennas, dishes, telescope, obs = [], [], "", {}
    for info in infos:
        node = ps[info.name]
        fs = node[FIELD_AND_SOURCE].dataset if FIELD_AND_SOURCE in node.children else \
            node.xr_ms.get_field_and_source_xds()
        names = [str(f) for f in fs.field_name.values]
        sources = [str(s) for s in fs.source_name.values] if "source_name" in fs.coords else names
        centres = np.degrees(np.asarray(fs["FIELD_PHASE_CENTER_DIRECTION"].values, dtype=np.float64))
        for k, name in enumerate(names):
            f = fields.setdefault(name, FieldSummary(name, sources[k], float(centres[k][0]), float(centres[k][1])))
            f.intents = sorted(set(f.intents) | set(info.intents))
            if f.is_target:
                target_windows.add(info.spw_name)
        freq = np.asarray(node.frequency.values, dtype=np.float64)
        width = node.frequency.attrs.get("channel_width", {}).get("data")
        width = float(width) if width is not None else float(np.median(np.diff(freq))) if freq.size > 1 else 0.0
        windows.setdefault(info.spw_name, WindowSummary(info.spw_name, int(freq.size), float(freq[0]),
                                                        float(freq[-1]), width, info.correlations))
        t = np.asarray(node.time.values, dtype=np.float64)
        start, end = min(start, float(t.min())), max(end, float(t.max()))
        if not antennas:
            ant = node["antenna_xds"].dataset
            antennas = [str(a) for a in ant.antenna_name.values]
            dishes = [float(d) for d in ant["ANTENNA_DISH_DIAMETER"].values] if "ANTENNA_DISH_DIAMETER" in ant \
                else [math.nan] * len(antennas)
            telescope = str(ant.attrs.get("overall_telescope_name", ""))
            obs = dict(node.attrs.get("observation_info", {}))
    return ExecutionBlockSummary(
        fields=list(fields.values()), windows=sorted(windows.values(), key=lambda w: w.name), antennas=antennas,
        dish_diameter_m=dishes, telescope=telescope, start_unix_s=start, end_unix_s=end,
        execution_block_uid=str(obs.get("execution_block_UID", "") or ""), project=str(obs.get("project_UID", "")
                                                                                       or ""),
        n_partitions=len(infos), target_windows=sorted(target_windows),
    )
