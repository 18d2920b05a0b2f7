"""The continuum's windows joined into one (rows, channels) problem for the gridder."""

import numpy as np
import pytest
from calibrated_target import target_processing_set

from mousflow.stages.imaging import _join_windows


def _window(rng, n_rows, freq):
    vis = (rng.normal(size=(n_rows, freq.size)) + 1j * rng.normal(size=(n_rows, freq.size))).astype(np.complex64)
    return vis, rng.uniform(1, 2, size=vis.shape), rng.random(vis.shape) < 0.2, freq


def test_windows_of_the_same_rows_join_along_channels_in_frequency_order():
    rng = np.random.default_rng(2)
    uvw = rng.normal(size=(50, 3)) * 100
    a = _window(rng, 50, np.array([3.0, 1.0, 5.0]) * 1e9)  # channels in any order, the windows interleaved
    b = _window(rng, 50, np.array([2.0, 4.0]) * 1e9)
    lists = [[a[0], b[0]], [a[1], b[1]], [a[2], b[2]], [uvw, uvw.copy()], [a[3], b[3]]]
    vis, weight, flag, uvw_out, freq = _join_windows(*lists)
    np.testing.assert_array_equal(freq, np.array([1, 2, 3, 4, 5]) * 1e9)
    source = {3: (a, 0), 1: (a, 1), 5: (a, 2), 2: (b, 0), 4: (b, 1)}
    for c, f in enumerate(freq / 1e9):
        (win, k) = source[round(f)]
        np.testing.assert_array_equal(vis[:, c], win[0][:, k])
        np.testing.assert_array_equal(weight[:, c], win[1][:, k])
        np.testing.assert_array_equal(flag[:, c], win[2][:, k])
    assert vis.dtype == np.complex64 and uvw_out is uvw
    assert lists[0] == [] and lists[1] == [] and lists[2] == []  # each window's copy released once joined


def test_windows_of_different_rows_each_carry_only_their_own_channels():
    rng = np.random.default_rng(3)
    a = _window(rng, 30, np.array([1.0, 3.0]) * 1e9)
    b = _window(rng, 20, np.array([2.0]) * 1e9)
    uvw_a, uvw_b = rng.normal(size=(30, 3)), rng.normal(size=(20, 3))
    vis, weight, flag, uvw, freq = _join_windows([a[0], b[0]], [a[1], b[1]], [a[2], b[2]], [uvw_a, uvw_b],
                                                 [a[3], b[3]])
    np.testing.assert_array_equal(freq, np.array([1, 2, 3]) * 1e9)
    np.testing.assert_array_equal(uvw, np.concatenate([uvw_a, uvw_b]))
    np.testing.assert_array_equal(vis[:30][:, [0, 2]], a[0])
    np.testing.assert_array_equal(vis[30:][:, [1]], b[0])
    assert np.all(flag[:30, 1]) and np.all(weight[:30, 1] == 0) and np.all(flag[30:][:, [0, 2]])


@pytest.mark.parametrize(("factor", "scale", "piece_rows", "pieces"),
                         [(3, 1.0, 12, [12, 12, 12, 6]), (3, 0.25, 12, [12, 12, 12, 6]), (1, 1.0, 12, [12, 12, 12, 6]),
                          (3, 1.0, 5, [5, 5, 2, 5, 5, 2, 5, 5, 2, 5, 1])])
def test_continuum_channels_read_in_row_blocks_are_the_whole_window_averaged(tmp_path, monkeypatch, factor, scale,
                                                                             piece_rows, pieces):
    """Two execution blocks stored in chunks of 2 integrations, read a chunk at a time and handed over in
    pieces of `piece_rows` rows: the line-free runs averaged `factor` channels at a time (a remainder channel
    left as it is), weights scaled, give the bits the whole window loaded and averaged gives (its weights
    rounded to float32)."""
    from mousflow.stages import imaging, imaging_chunks
    from mousflow.storage import zarr_io
    from mousflow.storage.location import Location

    monkeypatch.setattr(zarr_io, "TARGET_CHUNK_BYTES", 2 * 6 * 11 * 2 * 8)  # 2 integrations a stored chunk
    monkeypatch.setattr(imaging_chunks, "ROW_PIECE_SAMPLES", piece_rows * 11)

    class Context:  # the part of StageContext _windows uses
        def path(self, *parts):
            return Location.of(tmp_path).join(*parts)

    rels = [target_processing_set(tmp_path, f"eb{k}", seed=k) for k in (1, 2)]
    (window,) = imaging._windows(Context(), rels)
    keep = np.ones(11, bool)
    keep[[4, 5]] = False  # a line: runs of 4 and 5 channels, each with a remainder when factor is 3
    vis, weight, flag = window.load()
    weight = weight * np.float32(scale)
    runs = [slice(0, 4), slice(6, 11)]
    parts = [imaging.average_channels(vis[:, r], weight[:, r], flag[:, r], window.freq_hz[r], factor) for r in runs]
    expected = [np.concatenate([p[k] for p in parts], axis=1 if k < 3 else 0) for k in range(4)]
    expected[1] = expected[1].astype(np.float32)  # the weights kept in single precision, as imaging weighs

    read = []
    original = imaging.WindowData.row_blocks

    def counted(self, budget):
        for block in original(self, budget):
            read.append(block[0].shape[0])
            yield block

    monkeypatch.setattr(imaging.WindowData, "row_blocks", counted)
    monkeypatch.setattr(imaging, "CONTINUUM_READ_BLOCK_BYTES", 1)  # one stored chunk a block
    got = imaging.continuum_channels(window, keep, factor, scale)
    assert read == pieces * 2  # 7 integrations of 6 baselines, 2 a chunk (12 rows), in each of the two blocks
    for e, g in zip(expected, got, strict=True):
        assert g.dtype == e.dtype
        np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("n,factor", [(11, 3), (128, 28), (480, 118), (7, 7)])
def test_averaging_groups_every_channel_in_groups_no_wider_than_the_factor(n, factor):
    """A run of n channels averaged at most `factor` at a time: ceil(n / factor) groups of near-equal size, each
    channel in exactly one (none left over unaveraged), each group the weighted mean of its channels (flagged
    samples carry no weight) at the mean of their frequencies; a group with no weight is flagged."""
    from mousflow.stages import imaging

    rng = np.random.default_rng(n)
    vis = (rng.normal(size=(6, n)) + 1j * rng.normal(size=(6, n))).astype(np.complex64)
    weight = rng.uniform(0.5, 2.0, (6, n))
    flag = rng.random((6, n)) < 0.2
    flag[0] = True  # a row with no weight at all
    freq = 1e11 + 1e6 * np.arange(n)
    avg, wsum, gflag, gfreq = imaging.average_channels(vis, weight, flag, freq, factor)
    groups = -(-n // factor)
    assert avg.shape == (6, groups) and gfreq.shape == (groups,)
    # the groups, rebuilt from their frequencies: consecutive channels, sizes n // groups or one more
    start, members = 0, []
    for f in gfreq:
        for size in range(1, factor + 1):
            if start + size <= n and np.isclose(freq[start:start + size].mean(), f, rtol=0, atol=1.0):
                members.append(np.arange(start, start + size))
                start += size
                break
        else:
            raise AssertionError(f"no run of at most {factor} channels from {start} is centred at {f}")
    assert start == n and {len(m) for m in members} <= {n // groups, n // groups + 1}
    for g, m in enumerate(members):
        w = np.where(flag[:, m], 0.0, weight[:, m])
        np.testing.assert_allclose(wsum[:, g], w.sum(axis=1), rtol=1e-6)
        ok = w.sum(axis=1) > 0
        np.testing.assert_allclose(avg[ok, g], (w * vis[:, m]).sum(axis=1)[ok] / w.sum(axis=1)[ok], rtol=1e-5)
        np.testing.assert_array_equal(gflag[:, g], ~ok)
    assert all(a is b for a, b in zip(imaging.average_channels(vis, weight, flag, freq, 1), (vis, weight, flag, freq),
                                      strict=True))  # a factor of 1: the channels as they are


@pytest.mark.parametrize("channels", [None, slice(3, 9), slice(0, 11, 10)])
def test_a_window_loaded_a_block_at_a_time_is_its_partitions_read_whole(tmp_path, monkeypatch, channels):
    """A cube chunk's Stokes I (WindowData.load), filled a stored chunk of integrations at a time: the bits of
    each execution block's partition read whole and combined, the blocks stacked in execution-block order."""
    from mousflow.science.imaging import stokes_i
    from mousflow.stages import imaging, imaging_chunks
    from mousflow.storage import zarr_io
    from mousflow.storage.location import Location
    from mousflow.storage.partitions import load_partition, open_checked

    monkeypatch.setattr(zarr_io, "TARGET_CHUNK_BYTES", 2 * 6 * 11 * 2 * 8)  # 2 integrations a stored chunk

    class Context:  # the part of StageContext _windows uses
        def path(self, *parts):
            return Location.of(tmp_path).join(*parts)

    rels = [target_processing_set(tmp_path, f"eb{k}", seed=k) for k in (1, 2)]
    expected = []
    for rel in rels:
        p = load_partition(open_checked(Location.of(tmp_path / rel))["target"], "target")
        n = p.vis.shape[0] * p.vis.shape[1]
        hands = [a.reshape(n, -1, 2)[:, channels if channels is not None else slice(None)]
                 for a in (p.vis, p.weight, p.flag)]
        expected.append(stokes_i(*(h[..., k] for h in hands for k in (0, 1))))
    expected = [np.concatenate([e[k] for e in expected]) for k in range(3)]

    (window,) = imaging._windows(Context(), rels)
    reads = []
    original = imaging_chunks.StoredRows.read

    def counted(self, times, channels=None):
        reads.append(times)
        return original(self, times, channels)

    monkeypatch.setattr(imaging_chunks.StoredRows, "read", counted)
    monkeypatch.setattr(imaging_chunks, "LOAD_READ_BLOCK_BYTES", 1)  # one stored chunk a block
    got = window.load(channels)
    assert reads == [slice(0, 2), slice(2, 4), slice(4, 6), slice(6, 7)] * 2
    for g, e in zip(got, expected, strict=True):
        assert g.dtype == e.dtype and g.shape == e.shape
        np.testing.assert_array_equal(g, e)
