"""The MOUS manifest of imported execution blocks, from their metadata and the importer's options.

What the data say (band, representative frequency, execution blocks, when observing ended) is filled in;
what only the proposal knows (the requested sensitivity and resolution, and a project code or band when the MS
does not carry one) comes from options, or is left as a placeholder string `FILL IN: ...` where a number or code
belongs. A placeholder fails validation by the pydantic model (`mousflow validate`, naming the field) and by
the CRD's schema (the API server rejects the string), so an unfinished manifest can never be processed.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from mousflow.ingest.metadata import ExecutionBlockSummary
from mousflow.model import CalibratorFlux, MOUSResource
from mousflow.model.resource import PLACEHOLDER_PREFIX, name_from_uid
from mousflow.model.spec import PROJECT_CODE_PATTERN, UID_PATTERN
from mousflow.storage.location import Location
from mousflow.telescope import band_for_frequency


@dataclass
class ImportOptions:
    """What the importer is told beyond the data; None means: derive it, or leave a placeholder."""

    name: str | None = None
    uid: str | None = None
    project_code: str | None = None
    band: int | None = None
    sensitivity_jy: float | None = None
    sensitivity_bandwidth_hz: float | None = None
    resolution_arcsec: tuple[float, float] | None = None
    calibrator_fluxes: list[CalibratorFlux] = field(default_factory=list)


def placeholder(what: str) -> str:
    return f"{PLACEHOLDER_PREFIX} {what}"


def execution_block_uid(summary: ExecutionBlockSummary, ms_path: str, index: int) -> tuple[str, bool]:
    """The MS's own execution-block UID when it has an ALMA one; otherwise a stable one made from the MS's
    name and start time (same MS, same UID). Returns (uid, synthesised)."""
    if re.match(UID_PATTERN, summary.execution_block_uid):
        return summary.execution_block_uid, False
    digest = hashlib.sha256(f"{ms_path.rstrip('/').split('/')[-1]}|{summary.start_unix_s:.3f}".encode()).hexdigest()
    return f"uid://A002/X{digest[:8]}/X{index + 1:x}", True


def choose_band(frequency_hz: float) -> int | None:
    """ALMA band of a sky frequency; where bands 2 and 3 overlap, band 3 (the receiver most data there has)."""
    bands = band_for_frequency(frequency_hz)
    return max(bands) if bands else None


def build_manifest(ebs: list[tuple[str, str, ExecutionBlockSummary]], out: Location, options: ImportOptions
                   ) -> tuple[dict, list[str]]:
    """(manifest document, the placeholders left in it). ebs: (uid, uri, summary) per execution block."""
    first = ebs[0][2]
    target_windows = [w for w in first.windows if w.name in first.target_windows] or first.windows
    rep_freq = float(sum(w.centre_hz for w in target_windows) / len(target_windows))
    bandwidth = options.sensitivity_bandwidth_hz or float(sum(w.bandwidth_hz for w in target_windows))
    left: list[str] = []

    def value(given, what: str, path: str):
        if given is not None:
            return given
        left.append(path)
        return placeholder(what)

    band = options.band if options.band is not None else choose_band(rep_freq)
    project = options.project_code or (first.project if re.match(PROJECT_CODE_PATTERN, first.project) else None)
    uid = options.uid or "uid://A001/X{}/X1".format(
        hashlib.sha256("|".join(u for u, _, _ in ebs).encode()).hexdigest()[:8])
    res = options.resolution_arcsec
    goal = {
        "name": "continuum sensitivity",
        "sensitivityJy": value(options.sensitivity_jy, "requested rms in Jy/beam, import-ms --sensitivity",
                               "spec.scienceGoals[0].sensitivityJy"),
        "sensitivityBandwidthHz": bandwidth,
        "resolution": {
            "minArcsec": value(res[0] if res else None, "smallest accepted beam in arcsec, import-ms --resolution",
                               "spec.scienceGoals[0].resolution.minArcsec"),
            "maxArcsec": value(res[1] if res else None, "largest accepted beam in arcsec, import-ms --resolution",
                               "spec.scienceGoals[0].resolution.maxArcsec"),
        },
        "representativeFrequencyHz": rep_freq,
    }
    end = max(s.end_unix_s for _, _, s in ebs)
    spec = {
        "uid": uid,
        "projectCode": value(project, "ALMA project code such as 2025.1.01234.S, import-ms --project-code",
                             "spec.projectCode"),
        "band": value(band, f"ALMA band of {rep_freq / 1e9:.3f} GHz, import-ms --band", "spec.band"),
        "executionBlocks": [{"uid": u, "uri": uri} for u, uri, _ in ebs],
        "scienceGoals": [goal],
        "recipe": "calibrate+image",
        "priority": 50,
        "fullyObservedAt": datetime.fromtimestamp(math.ceil(end), UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "output": {"uri": out.join("output").uri},
        "delivery": {"uri": out.join("delivered").uri},
    }
    if options.calibrator_fluxes:
        spec["calibratorFluxes"] = [f.to_wire() for f in options.calibrator_fluxes]
    doc = {
        "apiVersion": "mousflow.io/v1alpha1",
        "kind": "MOUS",
        "metadata": {"name": options.name or name_from_uid(uid),
                     "annotations": {"mousflow.io/imported-by": "mousflow import-ms"}},
        "spec": spec,
    }
    if not left:
        MOUSResource.model_validate(doc)  # a complete manifest is a valid one
    return doc, left


def describe(ebs: list[tuple[str, str, ExecutionBlockSummary]], left: list[str]) -> str:
    """The YAML comment block above the manifest: what the data hold, for the person completing it."""
    lines = ["Written by `mousflow import-ms` from the Measurement Sets' metadata."]
    if left:
        lines.append("Placeholders to fill in before this MOUS can be processed: " + ", ".join(left))
    for uid, uri, s in ebs:
        lines.append(f"execution block {uid}: {uri}")
        lines.append(f"  telescope {s.telescope or '?'}, {len(s.antennas)} antennas, dish diameters "
                     f"{', '.join(f'{d:g}' for d in sorted(set(s.dish_diameter_m)))} m, {s.n_partitions} partitions")
        for f in s.fields:
            lines.append(f"  field {f.name} ({f.ra_deg:.6f}, {f.dec_deg:.6f} deg): {', '.join(f.intents)}")
        for w in s.windows:
            lines.append(f"  window {w.name}: {w.n_chan} channels, {w.first_hz / 1e9:.6f}-{w.last_hz / 1e9:.6f} GHz, "
                         f"{' '.join(w.correlations)}" + (" (target)" if w.name in s.target_windows else ""))
    return "".join(f"# {line}\n" for line in lines)
