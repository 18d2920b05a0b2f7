"""The processing-set metadata the input checks read with zarr alone (storage.processing_set_metadata) is what
xradio's reader gives for the same store: partition descriptions, antenna names, frequencies, phase centres.
The converter's output (CASA-made Measurement Sets) is compared in tests/ingest/test_import_ms.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from msv4_samples import sample_partition

from mousflow.storage.location import Location
from mousflow.storage.msv4 import FieldInfo, build_msv4_node
from mousflow.storage.processing_set_metadata import InvalidProcessingSet, read_metadata
from mousflow.storage.zarr_io import finalize_processing_set, write_processing_set_node, write_processing_set_root


def _write(loc: Location, partitions: dict) -> None:
    write_processing_set_root(loc)
    for name, p in partitions.items():
        write_processing_set_node(loc, name, build_msv4_node(p))
    finalize_processing_set(loc)


def test_windows_fields_and_correlations_as_xradio_reads_them(tmp_path, metadata_agrees_with_xradio):
    """Two windows (one named with `#` as ALMA names them), two fields, linear and circular feeds, 300
    channels (more than one chunk on disk)."""
    loc = Location.of(str(tmp_path / "eb.ps.zarr"))
    target = FieldInfo("NGC253", "NGC253", 0.2, -0.44)
    parts = {
        "eb_spw0_target": sample_partition(n_chan=300),
        "eb_spw0_cal": sample_partition(correlations=("RR", "LL")),
    }
    parts["eb_spw0_target"].field = target
    parts["eb_spw0_target"].intents = ["OBSERVE_TARGET#ON_SOURCE"]
    parts["eb_spw0_target"].spw_name = "X1234#ALMA_RB_06#BB_1#SW-01#FULL_RES"
    _write(loc, parts)
    metadata_agrees_with_xradio(loc)
    meta = {m.info.name: m for m in read_metadata(loc)}
    assert meta["eb_spw0_target"].info.spw_name == "X1234#ALMA_RB_06#BB_1#SW-01#FULL_RES"
    assert meta["eb_spw0_target"].info.n_chan == 300 and meta["eb_spw0_target"].frequency_hz.size == 300
    assert meta["eb_spw0_target"].field_centres == {"NGC253": (0.2, -0.44)}
    assert meta["eb_spw0_cal"].info.correlations == ["RR", "LL"]


def test_a_simulated_execution_block_as_xradio_reads_it(tiny_mous, metadata_agrees_with_xradio):
    metadata_agrees_with_xradio(tiny_mous.out.join("eb", f"{tiny_mous.execution_blocks[0]}.ps.zarr"))


@pytest.mark.parametrize("damage", ["no consolidated arrays", "no visibility partitions"])
def test_a_damaged_processing_set_is_invalid_with_the_reason(tmp_path, damage):
    loc = Location.of(str(tmp_path / "eb.ps.zarr"))
    _write(loc, {"eb_spw0": sample_partition()})
    if damage == "no consolidated arrays":
        shutil.rmtree(tmp_path / "eb.ps.zarr" / "eb_spw0" / "frequency")
        doc = json.loads((tmp_path / "eb.ps.zarr" / "zarr.json").read_text())
        doc["consolidated_metadata"]["metadata"].pop("eb_spw0/frequency")
        (tmp_path / "eb.ps.zarr" / "zarr.json").write_text(json.dumps(doc))
        words = "not a readable Zarr processing set"
    else:
        doc = json.loads((tmp_path / "eb.ps.zarr" / "zarr.json").read_text())
        doc["consolidated_metadata"]["metadata"]["eb_spw0"]["attributes"]["type"] = "spectrum"
        (tmp_path / "eb.ps.zarr" / "zarr.json").write_text(json.dumps(doc))
        words = "contains no MSv4 visibility datasets"
    with pytest.raises(InvalidProcessingSet, match=words):
        read_metadata(loc)


def test_a_stage_reads_partitions_without_importing_xradio(tiny_mous):
    """The stages open a processing set and load its partitions with xarray alone: importing xradio would cost
    every stage process about 2 CPU seconds and 70 MB. Run in a fresh interpreter, as a stage pod starts."""
    ps = tiny_mous.out.join("eb", f"{tiny_mous.execution_blocks[0]}.ps.zarr").path
    script = f"""
import sys
import mousflow.stages.calibration, mousflow.stages.imaging, mousflow.stages.packaging
from mousflow.storage.location import Location
from mousflow.storage.partitions import load_partition, open_checked, partition_infos
ps = open_checked(Location.of({str(ps)!r}))
infos = partition_infos(ps)
part = load_partition(ps[infos[0].name], infos[0].name)
assert part.vis.size and part.intents == infos[0].intents, (part.intents, infos[0].intents)
print(sorted(m for m in sys.modules if m.split(".")[0] == "xradio"))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"
