"""Writing processing sets and tables whatever the Dask chunks and the encoding the data arrives with: on disk
always in our chunks, every value intact, nothing loaded whole, on a local disk and through fsspec."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import xarray as xr
import zarr
from dask.callbacks import Callback
from msv4_samples import NAMES, sample_partition

from mousflow.storage import zarr_io
from mousflow.storage.location import Location
from mousflow.storage.msv4 import build_msv4_node
from mousflow.storage.zarr_io import (
    finalize_processing_set,
    open_processing_set,
    open_zarr_tree,
    storage_chunks,
    write_dataset_group,
    write_processing_set_node,
    write_processing_set_root,
)

N_TIME, N_CHAN = 23, 5
# Ours (see the fixture): 5 integrations x 2 channels with 2 correlations (2 x 2 with 4). A producer's: 7 x 3.
# Neither divides the other, so some of our chunks straddle two of theirs.
OURS = {"time": 5, "frequency": 2}
THEIRS = {"time": 7, "frequency": 3}
ROW_DATA = ("VISIBILITY", "FLAG", "WEIGHT", "UVW")


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """Our chunking policy scaled down so a small partition (4 baselines, 2 correlations) has several chunks."""
    monkeypatch.setattr(zarr_io, "TARGET_CHUNK_BYTES", OURS["time"] * 4 * OURS["frequency"] * 2 * 8)
    monkeypatch.setattr(zarr_io, "CHANNELS_PER_CHUNK", OURS["frequency"])


def _source_partition(correlations=("XX", "YY")):
    return sample_partition(correlations=correlations, times=tuple(10.0 * np.arange(N_TIME)), n_chan=N_CHAN)


def _their_store(where: Location, correlations=("XX", "YY")) -> xr.DataTree:
    """The partition as another producer (xradio's MSv2 converter) writes it, in chunks of its own, opened
    again as the stages open it: Dask chunks and encoding (`chunks`, `preferred_chunks`) from that store."""
    node = build_msv4_node(_source_partition(correlations))
    node.dataset = node.to_dataset().chunk(THEIRS)
    loc = where.join("theirs.ps.zarr")
    write_processing_set_root(loc)
    with zarr_io._quiet_zarr():
        node.to_zarr(loc.join("p").zarr_store(), mode="w", consolidated=False, zarr_format=3)
    finalize_processing_set(loc)
    ps = open_processing_set(loc)
    assert ps["p"]["UVW"].encoding["chunks"] == (THEIRS["time"], 4, 3)
    assert ps["p"]["VISIBILITY"].chunks[0][0] == THEIRS["time"]
    return ps["p"]


def _write_and_reopen(where: Location, node: xr.DataTree) -> tuple[xr.DataTree, zarr.Group]:
    loc = where.join("ours.ps.zarr")
    write_processing_set_root(loc)
    write_processing_set_node(loc, "p", node)
    finalize_processing_set(loc)
    return open_processing_set(loc)["p"], zarr.open_group(loc.join("p").zarr_store(), mode="r")


def _assert_our_chunks(group: zarr.Group, n_time: int = N_TIME, n_corr: int = 2) -> None:
    # 5 integrations of 2 correlations (2 of 4) fill the byte budget of a chunk
    t, c = min(OURS["time"] * 2 // n_corr, n_time), OURS["frequency"]
    for var in ("VISIBILITY", "FLAG", "WEIGHT"):
        assert group[var].chunks == (t, 4, c, n_corr), var
    assert group["UVW"].chunks == (t, 4, 3)
    assert group["time"].chunks == (n_time,)  # a coordinate: one chunk


def test_dask_chunks_straddling_ours_are_written_in_ours(where):
    source = build_msv4_node(_source_partition())
    lazy = source.copy()
    lazy.dataset = lazy.to_dataset().chunk(THEIRS)
    got, group = _write_and_reopen(where, lazy)
    _assert_our_chunks(group)
    xr.testing.assert_identical(got.to_dataset()[list(ROW_DATA)].compute(),
                                source.to_dataset()[list(ROW_DATA)])


@pytest.mark.parametrize("change", ["copied as it is", "calibrated", "a time range"])
def test_a_store_of_other_chunks_is_rewritten_in_ours(where, change):
    """What the stages write from a converted execution block: the whole node (the image-only recipe), the
    node with new visibilities, flags and weights in memory and the parallel hands only (calibration), or a
    time range, which leaves irregular Dask chunks."""
    node = _their_store(where, ("XX", "XY", "YX", "YY")).copy()
    expected = node.to_dataset().compute()
    n_time, n_corr = N_TIME, 4
    if change == "calibrated":
        ds = node.to_dataset(inherit=False).isel(polarization=[0, 3])
        shape = ds["VISIBILITY"].shape
        rng = np.random.default_rng(5)
        ds["VISIBILITY"] = (ds["VISIBILITY"].dims, (rng.standard_normal(shape) + 0j).astype(np.complex64))
        ds["FLAG"] = (ds["FLAG"].dims, np.zeros(shape, bool))
        ds["WEIGHT"] = (ds["WEIGHT"].dims, np.ones(shape, np.float32))
        node.dataset = ds
        expected = ds.compute()
        n_corr = 2
    elif change == "a time range":
        node.dataset = node.to_dataset(inherit=False).isel(time=slice(2, None))
        assert len(set(node["VISIBILITY"].chunks[0][:-1])) > 1  # irregular, as Zarr cannot store them
        expected = node.to_dataset().compute()
        n_time = N_TIME - 2
    got, group = _write_and_reopen(where, node)
    _assert_our_chunks(group, n_time, n_corr)
    xr.testing.assert_identical(got.to_dataset().compute(), expected)
    assert group["antenna_xds"]["ANTENNA_POSITION"].chunks == (4, 3)


def test_writing_streams_chunk_by_chunk(tmp_path):
    """No task of the write holds more than one of their chunks or one of ours: the partition is never
    loaded whole (with an execution block of 100 GB this is what keeps a stage in its memory)."""
    node = _their_store(Location.of(tmp_path)).copy()

    class LargestResult(Callback):
        largest = 0

        def _posttask(self, key, result, dsk, state, worker_id):
            if isinstance(result, np.ndarray):
                LargestResult.largest = max(LargestResult.largest, result.nbytes)

    with LargestResult(), dask.config.set(scheduler="threads"):
        _write_and_reopen(Location.of(tmp_path), node)
    whole = N_TIME * 4 * N_CHAN * 2 * 8
    one_chunk = 8 * 4 * 2 * max(THEIRS["time"] * THEIRS["frequency"], OURS["time"] * OURS["frequency"])
    assert 0 < LargestResult.largest <= one_chunk < whole


@pytest.mark.parametrize("dask_chunks", [700, None], ids=["dask", "lazily indexed"])
def test_a_table_opened_lazily_is_rewritten_in_our_chunks(where, dask_chunks):
    """A calibration table with inherited chunks, and Dask chunks of its own or none (opened without Dask),
    written to another store."""
    n_time = 2000
    table = xr.Dataset({"GAIN": (("gain_time", "antenna_name"), np.ones((n_time, 4), np.complex64))},
                       coords={"gain_time": np.arange(n_time, dtype=float), "antenna_name": NAMES})
    write_dataset_group(where.join("a.zarr"), table.chunk({"gain_time": 300}), "spw0")
    opened = open_zarr_tree(where.join("a.zarr"))["spw0"].to_dataset()
    if dask_chunks:
        opened = opened.chunk({"gain_time": dask_chunks})
    write_dataset_group(where.join("b.zarr"), opened, "spw0")
    group = zarr.open_group(where.join("b.zarr").zarr_store(), mode="r")["spw0"]
    rows = zarr_io.TARGET_CHUNK_BYTES // (4 * 8)
    assert group["GAIN"].chunks == (rows, 4) and rows < n_time  # larger than one chunk: split by rows
    xr.testing.assert_identical(open_zarr_tree(where.join("b.zarr"))["spw0"].to_dataset().compute(), table)


def test_row_data_share_the_visibilities_chunks_and_the_rest_is_whole():
    ds = build_msv4_node(_source_partition()).to_dataset()
    chunks = storage_chunks(ds)
    assert chunks["VISIBILITY"] == chunks["FLAG"] == chunks["WEIGHT"] == (OURS["time"], 4, OURS["frequency"], 2)
    assert chunks["UVW"] == (OURS["time"], 4, 3)
    assert chunks["time"] == (N_TIME,) and chunks["frequency"] == (N_CHAN,)
    assert chunks["baseline_antenna1_name"] == (4,)


def test_flagging_stored_channels_sets_their_flags_and_zeroes_their_weights_and_touches_nothing_else(where):
    """Channels flagged after a partition is written (the calibration stage's target channels, judged on all its
    integrations): in every stored chunk of time, FLAG set and WEIGHT zero in those channels only."""
    node = build_msv4_node(_source_partition())
    loc = where.join("ours.ps.zarr")
    write_processing_set_root(loc)
    write_processing_set_node(loc, "p", node)
    before = open_processing_set(loc)["p"].to_dataset().compute()
    assert not before["FLAG"].values[:, :, [1, 4]].all() and (before["WEIGHT"].values[:, :, [1, 4]] > 0).any()

    unflagged = int(np.count_nonzero(~before["FLAG"].values[:, :, [1, 4]]))
    assert zarr_io.flag_stored_channels(loc.join("p"), [4, 1]) == unflagged
    assert zarr_io.flag_stored_channels(loc.join("p"), []) == 0
    finalize_processing_set(loc)
    after = open_processing_set(loc)["p"].to_dataset().compute()
    assert after["FLAG"].values[:, :, [1, 4]].all() and (after["WEIGHT"].values[:, :, [1, 4]] == 0).all()
    others = [0, 2, 3]
    for var in ("FLAG", "WEIGHT"):
        np.testing.assert_array_equal(after[var].values[:, :, others], before[var].values[:, :, others])
    xr.testing.assert_identical(after.drop_vars(["FLAG", "WEIGHT"]), before.drop_vars(["FLAG", "WEIGHT"]))


def test_row_data_over_frequency_is_sharded_into_chunks_read_on_their_own(where, monkeypatch):
    """Visibilities, flags and weights are stored in shards of CHANNELS_PER_CHUNK channels holding chunks of
    CHANNELS_PER_READ channels (a shard reaching past the last channel where its channels are not a whole number
    of chunks); row data without channels (UVW) and windows narrower than a read chunk are not sharded. The
    values are those written, and flagging stored channels rewrites only what it should."""
    monkeypatch.setattr(zarr_io, "CHANNELS_PER_CHUNK", 3)
    monkeypatch.setattr(zarr_io, "CHANNELS_PER_READ", 2)
    source = build_msv4_node(_source_partition())
    lazy = source.copy()
    lazy.dataset = lazy.to_dataset().chunk(THEIRS)
    got, group = _write_and_reopen(where, lazy)
    t = group["UVW"].chunks[0]
    for var in ("VISIBILITY", "FLAG", "WEIGHT"):
        assert group[var].shards == (t, 4, 4, 2), var  # 3 channels rounded up to two chunks of 2
        assert group[var].chunks == (t, 4, 2, 2), var
    assert group["UVW"].shards is None
    xr.testing.assert_identical(got.to_dataset()[list(ROW_DATA)].compute(), source.to_dataset()[list(ROW_DATA)])

    loc = where.join("ours.ps.zarr")
    before = open_processing_set(loc)["p"].to_dataset().compute()
    assert zarr_io.flag_stored_channels(loc.join("p"), [1, 4]) == int(np.count_nonzero(~before["FLAG"].values[
        :, :, [1, 4]]))
    after = open_processing_set(loc)["p"].to_dataset().compute()
    assert after["FLAG"].values[:, :, [1, 4]].all() and (after["WEIGHT"].values[:, :, [1, 4]] == 0).all()
    for var in ("FLAG", "WEIGHT"):
        np.testing.assert_array_equal(after[var].values[:, :, [0, 2, 3]], before[var].values[:, :, [0, 2, 3]])

    monkeypatch.setattr(zarr_io, "CHANNELS_PER_READ", 3)  # a stored chunk no wider than a read chunk
    _, group = _write_and_reopen(where, lazy)
    assert group["VISIBILITY"].shards is None and group["VISIBILITY"].chunks[2] == 3


def _bytes_read() -> int:
    with open("/proc/self/io") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("rchar"))


def test_a_slab_of_channels_reads_only_its_own_chunks_of_a_wide_window(tmp_path, monkeypatch):
    """Found at full size: a 16-channel cube chunk read every 256-channel stored chunk it fell in, 16 times the
    data it used. Read from a local store (bytes counted by the kernel), 8 of 64 channels read about an eighth of
    what all 64 do, where the store's chunks hold all 64."""
    from mousflow.storage.partitions import load_partition

    monkeypatch.setattr(zarr_io, "TARGET_CHUNK_BYTES", 16 * 2**20)
    monkeypatch.setattr(zarr_io, "CHANNELS_PER_CHUNK", 64)
    monkeypatch.setattr(zarr_io, "CHANNELS_PER_READ", 8)
    node = build_msv4_node(sample_partition(times=tuple(10.0 * np.arange(400)), n_chan=64))
    got, group = _write_and_reopen(Location.of(tmp_path), node)
    assert group["VISIBILITY"].shards[2] == 64 and group["VISIBILITY"].chunks[2] == 8
    with dask.config.set(scheduler="synchronous"):
        start = _bytes_read()
        every = load_partition(got, "p")
        all_channels = _bytes_read() - start
        start = _bytes_read()
        slab = load_partition(got, "p", channels=slice(8, 16))
        eight = _bytes_read() - start
    np.testing.assert_array_equal(slab.vis, every.vis[:, :, 8:16])
    visibilities = every.vis.nbytes
    assert all_channels > visibilities
    assert eight < all_channels / 6, (eight, all_channels)
