"""The calibration stage reads a calibrator spread over several partitions (a processing set partitioned by
scan) a block at a time, on the baselines of all of them, and the blocks are the calibrator joined whole."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from mousflow.stages import calibration
from mousflow.stages.calibration import CalibratorReader, CalibratorSource
from mousflow.storage.msv4 import build_msv4_node
from mousflow.storage.partitions import concatenate_partitions, load_partition

sys.path.insert(0, str(Path(__file__).parent.parent / "storage"))
from msv4_samples import sample_partition

FIELD = "J0329-2357_2"


def _scan(times, pairs=((0, 1), (0, 2), (1, 2), (2, 3)), scale=1.0):
    p = sample_partition(correlations=("XX", "YY"), times=times, pairs=pairs, n_chan=5)
    p.vis = (p.vis * scale).astype(np.complex64)
    p.flag[..., 1, :] = scale > 2  # something that differs from scan to scan
    return build_msv4_node(p)


def _read(ps: dict, partitions: tuple[str, ...]) -> list:
    reader = CalibratorReader(ps, {"phase": CalibratorSource(FIELD, partitions)})
    return list(reader("phase"))


def _assert_same(got, expected):
    for name in ("vis", "flag", "weight", "uvw_m", "time_s", "antenna1", "antenna2"):
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name), err_msg=name)
    assert got.antenna_names == expected.antenna_names


@pytest.mark.parametrize("block_bytes", [1, 2**20])
def test_a_calibrator_in_scan_partitions_is_read_in_blocks_on_the_union_of_their_baselines(monkeypatch,
                                                                                           block_bytes):
    """Three scans, the second without antenna DA44 (its baselines flagged there), given out of time order: in
    blocks of one integration (or of a scan, each scan being smaller than a block) in time order, every block on
    the same baselines, and together what joining the scans whole gives."""
    monkeypatch.setattr(calibration, "CALIBRATOR_BLOCK_BYTES", block_bytes)
    ps = {"scan3": _scan((1200.0, 1210.0), scale=3.0),
          "scan1": _scan((0.0, 10.0, 20.0)),
          "scan2": _scan((600.0,), pairs=((0, 1), (0, 2), (1, 2)), scale=2.0)}
    names = ("scan3", "scan1", "scan2")
    blocks = _read(ps, names)

    assert len(blocks) == (6 if block_bytes == 1 else 3)
    assert all(b.time_s.size == 1 for b in blocks) or block_bytes > 1
    for b in blocks:  # the kernel's sums need one layout
        assert list(zip(b.antenna1, b.antenna2, strict=True)) == [(0, 1), (0, 2), (1, 2), (2, 3)]
    whole = concatenate_partitions([load_partition(ps[n], n, field=FIELD) for n in names])
    _assert_same(concatenate_partitions(blocks), whole)
    assert [float(t) for b in blocks for t in b.time_s] == [0.0, 10.0, 20.0, 600.0, 1200.0, 1210.0]
    (scan2,) = [b for b in blocks if b.time_s[0] == 600.0]
    assert scan2.flag[:, 3].all() and (scan2.weight[:, 3] == 0).all()  # DA43-DA44, absent from scan 2


def test_a_calibrator_in_one_partition_is_not_copied_to_be_put_on_its_own_baselines(monkeypatch):
    """The usual case: blocks of a partition on its own baselines in time order are what load_partition reads,
    as they are (no copy of the block to join it with nothing)."""
    monkeypatch.setattr(calibration, "CALIBRATOR_BLOCK_BYTES", 1)
    ps = {"scan1": _scan((0.0, 10.0, 20.0))}
    reads = []
    read = calibration.load_partition

    def spy(*args, **kwargs):
        reads.append(read(*args, **kwargs))
        return reads[-1]

    monkeypatch.setattr(calibration, "load_partition", spy)
    blocks = _read(ps, ("scan1",))
    assert len(blocks) == 3 and all(b is r for b, r in zip(blocks, reads, strict=True))


@pytest.mark.parametrize(("block_bytes", "expected"), [
    (2**20, [[0.0, 10.0, 20.0, 20.0], [600.0]]),  # a's block spans 0-20 s, b's 10-20 s: one
    (1, [[0.0], [10.0], [20.0, 20.0], [600.0]]),  # blocks of one integration: only 20 s is in both
])
def test_partitions_that_overlap_in_time_are_read_together_where_they_overlap(monkeypatch, block_bytes, expected):
    """Two partitions of one field observed at once on different baselines (as partitioning by antenna would
    give) and a third later: blocks of the first two that overlap in time are read as one, joined in time
    order, and all the blocks together are the three joined whole."""
    monkeypatch.setattr(calibration, "CALIBRATOR_BLOCK_BYTES", block_bytes)
    ps = {"a": _scan((0.0, 20.0), pairs=((0, 1), (0, 2))),
          "b": _scan((10.0, 20.0), pairs=((1, 2), (2, 3)), scale=2.0),
          "c": _scan((600.0,), scale=3.0)}
    names = ("a", "b", "c")
    blocks = _read(ps, names)
    assert [b.time_s.tolist() for b in blocks] == expected
    whole = concatenate_partitions([load_partition(ps[n], n, field=FIELD) for n in names])
    _assert_same(concatenate_partitions(blocks), whole)
