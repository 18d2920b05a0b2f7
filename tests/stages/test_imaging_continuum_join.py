"""The continuum's windows joined into one (rows, channels) problem for the gridder."""

import numpy as np

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
