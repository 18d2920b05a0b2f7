"""A partition's row data read in blocks from its Zarr arrays without xarray (stored_rows.StoredRows): the same
values, flags and weights that load_partition gives for the same blocks, on a local disk and through fsspec."""

from __future__ import annotations

import dask
import numpy as np
import pytest
from msv4_samples import sample_partition

from mousflow.storage import zarr_io
from mousflow.storage.location import Location
from mousflow.storage.msv4 import build_msv4_node
from mousflow.storage.partitions import load_partition
from mousflow.storage.processing_set_metadata import InvalidProcessingSet
from mousflow.storage.stored_rows import StoredRows
from mousflow.storage.zarr_io import (
    finalize_processing_set,
    open_processing_set,
    write_processing_set_node,
    write_processing_set_root,
)

N_TIME, N_CHAN = 23, 40


def _stored(where: Location, monkeypatch, correlations) -> Location:
    """A partition stored in shards of 5 integrations x 16 channels, each holding chunks of 4 channels, with
    every kind of unusable sample: a NaN visibility, a NaN, an infinite and a negative weight, a NaN uvw row."""
    monkeypatch.setattr(zarr_io, "CHANNELS_PER_CHUNK", 16)
    monkeypatch.setattr(zarr_io, "CHANNELS_PER_READ", 4)
    monkeypatch.setattr(zarr_io, "TARGET_CHUNK_BYTES", 5 * 4 * 16 * len(correlations) * 8)
    p = sample_partition(correlations=correlations, times=tuple(10.0 * np.arange(N_TIME)), n_chan=N_CHAN)
    p.vis[3, 1, 7, 0] = np.nan
    p.weight[8, 2, 20, -1] = np.nan
    p.weight[9, 0, 33, 0] = np.inf
    p.weight[15, 3, 1, -1] = -1.0
    p.uvw_m[12, 2] = np.nan
    p.flag[20, :, 5:9, :] = True
    loc = where.join("ours.ps.zarr")
    write_processing_set_root(loc)
    write_processing_set_node(loc, "p", build_msv4_node(p))
    finalize_processing_set(loc)
    return loc


@pytest.mark.parametrize("correlations", [("XX", "YY"), ("XX", "XY", "YX", "YY"), ("RR", "LL")])
@pytest.mark.parametrize(("times", "channels"), [(slice(0, 23), None), (slice(0, 10), slice(4, 20)),
                                                 (slice(10, 15), slice(32, 40)), (slice(20, 23), slice(0, 40, 3))])
def test_a_block_read_from_zarr_is_the_block_load_partition_reads(where, monkeypatch, correlations, times, channels):
    loc = _stored(where, monkeypatch, correlations)
    stored = StoredRows.open(loc.join("p"))
    assert stored.vis.shards is not None and stored.time_chunk == 5 and stored.n_time == N_TIME
    with dask.config.set(scheduler="synchronous"):
        expected = load_partition(open_processing_set(loc)["p"], "p", channels=channels, times=times)
    vis, flag, weight = stored.read(times, channels)
    for got, want in ((vis, expected.vis), (flag, expected.flag), (weight, expected.weight)):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    assert np.isfinite(vis).all() and np.isfinite(weight).all() and (weight >= 0).all()


def test_every_kind_of_unusable_sample_is_flagged_and_zeroed(tmp_path, monkeypatch):
    """The truth here is the samples set bad above, not the other reader."""
    loc = _stored(Location.of(tmp_path), monkeypatch, ("XX", "YY"))
    vis, flag, weight = StoredRows.open(loc.join("p")).read(slice(0, N_TIME))
    for t, b, c, h in ((3, 1, 7, 0), (8, 2, 20, 1), (9, 0, 33, 0), (15, 3, 1, 1)):
        assert flag[t, b, c, h] and vis[t, b, c, h] == 0 and weight[t, b, c, h] == 0
    assert flag[12, 2].all() and (vis[12, 2] == 0).all() and (weight[12, 2] == 0).all()  # no uvw: the whole row
    assert flag[20, :, 5:9].all()
    bad = np.zeros(flag.shape, bool)
    bad[[3, 8, 9, 15], [1, 2, 0, 3], [7, 20, 33, 1], [0, 1, 0, 1]] = True
    bad[12, 2] = bad[20, :, 5:9] = True
    assert not flag[~bad].any() and (weight[~bad] == 2.0).all()  # nothing else touched


def test_a_partition_it_cannot_read_is_one_clear_error(tmp_path, monkeypatch):
    loc = _stored(Location.of(tmp_path), monkeypatch, ("XX", "YY"))
    with pytest.raises(InvalidProcessingSet, match="not a readable MSv4 partition"):
        StoredRows.open(loc.join("missing"))
    stored = StoredRows.open(loc.join("p"))
    shard = next((tmp_path / "ours.ps.zarr" / "p" / "VISIBILITY" / "c").rglob("*"))
    while shard.is_dir():
        shard = next(shard.iterdir())
    shard.write_bytes(b"not a shard")
    with pytest.raises(InvalidProcessingSet, match="cannot be read, a chunk is missing or corrupted"):
        stored.read(slice(0, N_TIME))
