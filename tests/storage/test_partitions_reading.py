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
