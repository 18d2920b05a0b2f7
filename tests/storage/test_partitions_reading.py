"""Reading a partition's arrays (storage.partitions.filled_from): the values of the stored chunks, in an array of
the reader's own, without holding the array twice."""

from __future__ import annotations

import tracemalloc

import dask
import dask.array
import numpy as np
import xarray as xr

from mousflow.storage.partitions import filled_from

SHAPE, CHUNKS = (64, 1024, 128), (4, 1024, 128)  # 64 MiB of float64 in 16 chunks of 4 MiB


def _lazy() -> xr.DataArray:
    return xr.DataArray(dask.array.random.default_rng(3).random(SHAPE, chunks=CHUNKS), dims=("t", "b", "c"))


def _peak_bytes(read) -> int:
    tracemalloc.start()
    try:
        result = read()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.shape == SHAPE
    return peak


def test_the_values_of_every_chunk_in_a_new_array():
    lazy = _lazy()
    got = filled_from(lazy)
    np.testing.assert_array_equal(got, lazy.values)
    assert got.flags.writeable and got.flags.c_contiguous
    in_memory = xr.DataArray(np.arange(6.0).reshape(2, 3), dims=("t", "b"))
    copy = filled_from(in_memory)
    copy[0, 0] = -1  # the caller's to change: the dataset's own array is not
    assert in_memory.values[0, 0] == 0


def test_chunk_by_chunk_the_array_is_held_once():
    size = np.prod(SHAPE) * 8
    with dask.config.set(scheduler="threads", num_workers=2):
        concatenated = _peak_bytes(lambda: _lazy().values)
        filled = _peak_bytes(lambda: filled_from(_lazy()))
    assert concatenated > 1.8 * size  # dask's compute: the chunks and their concatenation at once
    assert filled < 1.3 * size, (filled / size, concatenated / size)


def _read_in_a_worker() -> bool:
    """What a cube chunk does in a Dask worker's task, where dask's configured scheduler is the cluster's."""
    lazy = xr.DataArray(dask.array.arange(10**6, chunks=10**5).reshape(1000, 1000), dims=("t", "b"))
    return bool(np.array_equal(filled_from(lazy), np.arange(10**6).reshape(1000, 1000)))


def test_in_a_dask_workers_task_the_array_is_filled_here():
    """Not by the cluster's scheduler, whose tasks would fill copies of the array in other processes and leave
    this one as np.empty left it."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=40) as cluster, Client(cluster) as client:
        assert client.submit(_read_in_a_worker).result(timeout=120)
