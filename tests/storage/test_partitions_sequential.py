"""load_partition(sequential=True) reads the same arrays as on Dask's threads, one stored chunk after another."""

from pathlib import Path

import numpy as np

from mousflow.storage import partitions
from mousflow.storage.location import Location
from mousflow.storage.partitions import load_partition, open_checked, partition_infos


def test_a_sequential_read_gives_the_same_arrays_on_the_synchronous_scheduler(tiny_mous, monkeypatch):
    ps = open_checked(Location.of(str(next((Path(tiny_mous.out.path) / "eb").glob("*.ps.zarr")))))
    info = max(partition_infos(ps), key=lambda i: i.n_time)
    used = []
    store = partitions.dask.array.store

    def spying_store(*args, scheduler=None, **kw):
        used.append(scheduler)
        return store(*args, scheduler=scheduler, **kw)

    monkeypatch.setattr(partitions.dask.array, "store", spying_store)
    threaded = load_partition(ps[info.name], info.name, times=slice(1, 5))
    sequential = load_partition(ps[info.name], info.name, times=slice(1, 5), sequential=True)
    assert used[-3:] == ["synchronous"] * 3 and "synchronous" not in used[:-3]
    for name in ("vis", "flag", "weight", "uvw_m", "time_s"):
        np.testing.assert_array_equal(getattr(sequential, name), getattr(threaded, name))
