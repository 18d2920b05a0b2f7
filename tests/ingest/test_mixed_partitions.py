"""Any partitioning xradio's schema allows: a processing set whose calibrators are split by scan while its target
is one partition per window (both scans together), assembled from two conversions of the same CASA-made MS,
is calibrated and imaged to the same known sky."""

from __future__ import annotations

import json

import pytest
import yaml
from imported_sky import measure_sources, run_stages

from mousflow.ingest.manifest import ImportOptions, build_manifest
from mousflow.ingest.metadata import summarise
from mousflow.model import CalibratorFlux
from mousflow.stages.intents import has_role
from mousflow.storage.location import Location
from mousflow.storage.partitions import open_checked, partition_infos
from mousflow.storage.zarr_io import (
    finalize_processing_set,
    open_processing_set,
    write_processing_set_node,
    write_processing_set_root,
)

pytestmark = pytest.mark.slow


def _is_target(partition: dict) -> bool:
    return any("OBSERVE_TARGET" in mode for mode in partition["OBS_MODE"])


def test_mixed_partitions_calibrate_and_image_to_the_known_sky(casa_ms, tmp_path):
    from xradio.measurement_set import convert_msv2_to_processing_set
    from xradio.schema.check import check_datatree

    convert_msv2_to_processing_set(casa_ms["ms"], str(tmp_path / "by_scan.ps.zarr"),
                                   partition_scheme=["FIELD_ID", "SCAN_NUMBER"], with_pointing=False,
                                   partition_filter=lambda p: not _is_target(p))
    convert_msv2_to_processing_set(casa_ms["ms"], str(tmp_path / "target.ps.zarr"), partition_scheme=[],
                                   with_pointing=False, partition_filter=_is_target)
    mixed = Location.of(tmp_path / "eb" / "mixed.ps.zarr")
    write_processing_set_root(mixed)
    for prefix in ("by_scan", "target"):
        part = open_processing_set(Location.of(tmp_path / f"{prefix}.ps.zarr"))
        for name, node in part.children.items():
            write_processing_set_node(mixed, f"{prefix}_{name}", node.copy())  # lazy, in the converter's chunks
    finalize_processing_set(mixed)
    ps = open_checked(mixed)
    assert not check_datatree(ps)
    infos = partition_infos(ps)
    for spw in {i.spw_name for i in infos}:
        in_spw = [i for i in infos if i.spw_name == spw]
        assert len([i for i in in_spw if has_role(i.intents, "phase")]) == 3  # one partition per scan
        (target,) = [i for i in in_spw if has_role(i.intents, "target")]
        assert len(set(ps[target.name].scan_name.values)) == 2  # both target scans in one partition

    options = ImportOptions(sensitivity_jy=4e-4, resolution_arcsec=(2.0, 8.0), project_code="2026.1.00099.S",
                            calibrator_fluxes=[CalibratorFlux(field="J0423-0120", flux_jy=1.25, frequency_hz=1e11,
                                                              spectral_index=-0.65)])
    doc, left = build_manifest([("uid://A002/X77/X1", mixed.uri, summarise(ps))], Location.of(tmp_path), options)
    assert not left
    (tmp_path / "mous.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    run_stages(tmp_path / "mous.yaml", "calibration", "imaging")

    summary = json.loads((tmp_path / "output" / "calibration" / "summary.json").read_text())
    phase = casa_ms["calibrators"]["phase"]
    for w in summary["execution_blocks"][0]["windows"].values():
        expected = phase["flux_jy"] * (w["phase_calibrator_frequency_hz"] / phase["reference_hz"]) ** phase["alpha"]
        assert w["phase_calibrator_flux_jy"] == pytest.approx(expected, rel=0.02)
    for name, ratio, offset_beams in measure_sources(tmp_path / "output", casa_ms):
        assert ratio == pytest.approx(1.0, abs=0.05), name
        assert offset_beams < 0.1, name
