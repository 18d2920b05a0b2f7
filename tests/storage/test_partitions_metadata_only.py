"""load_partition(channels=NO_CHANNELS): a partition's metadata and uvw without reading a visibility chunk."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from mousflow.storage.location import Location
from mousflow.storage.partitions import NO_CHANNELS, load_partition, open_checked, partition_infos
from mousflow.storage.processing_set_metadata import InvalidProcessingSet


def test_no_channels_reads_the_metadata_and_uvw_and_no_data_chunk(tiny_mous, tmp_path):
    source = next((Path(tiny_mous.out.path) / "eb").glob("*.ps.zarr"))
    ps = open_checked(Location.of(str(source)))
    info = max(partition_infos(ps), key=lambda i: i.n_time)
    whole = load_partition(ps[info.name], info.name)

    damaged = tmp_path / source.name
    shutil.copytree(source, damaged)
    chunks = [f for name in ("VISIBILITY", "WEIGHT", "FLAG") for f in (damaged / info.name / name).rglob("*")
              if f.is_file() and f.name != "zarr.json"]
    assert chunks
    for f in chunks:  # every data chunk unreadable: reading any of them fails
        f.write_bytes(b"not a chunk")
    node = open_checked(Location.of(str(damaged)))[info.name]

    meta = load_partition(node, info.name, channels=NO_CHANNELS)
    assert meta.vis.shape == (*whole.vis.shape[:2], 0, whole.vis.shape[3]) and meta.frequency_hz.size == 0
    for name in ("uvw_m", "time_s", "antenna1", "antenna2", "dish_diameter_m"):
        np.testing.assert_array_equal(getattr(meta, name), getattr(whole, name), err_msg=name)
    for name in ("antenna_names", "correlations", "field_name", "phase_centre_rad", "spw_name", "intents"):
        assert getattr(meta, name) == getattr(whole, name), name
    with pytest.raises(InvalidProcessingSet, match="cannot be read"):
        load_partition(node, info.name, channels=slice(0, 1))
