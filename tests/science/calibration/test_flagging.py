import numpy as np
import pytest

from mousflow.science.calibration import CalibrationFailed, flag_antennas, flag_channels, flag_invalid, flag_outliers


def test_flag_invalid_catches_nan_and_zeros_only():
    vis = np.ones((2, 3, 4, 2), np.complex64)
    vis[0, 1] = 0  # a dropped row, unflagged
    vis[1, 2, 3, 0] = np.nan
    flag = np.zeros(vis.shape, bool)
    out = flag_invalid(vis, flag)
    assert out[0, 1].all() and out[1, 2, 3, 0] and out.sum() == 8 + 1
    assert not flag.any()  # input untouched
    with pytest.raises(CalibrationFailed):
        flag_invalid(vis, flag[0])


def test_dead_antenna_and_spur_channel_are_found(synthetic):
    s = synthetic(seed=2, n_ant=10, n_time=4, n_chan=16, flux_jy=0.8, sigma=0.09)
    rng = np.random.default_rng(0)
    dead = (s.antenna1 == 3) | (s.antenna2 == 3)
    s.vis[:, dead] = (s.sigma * (rng.standard_normal(s.vis[:, dead].shape)
                                 + 1j * rng.standard_normal(s.vis[:, dead].shape))).astype(np.complex64)
    s.vis[:, :, 9] += 25 * s.sigma * (1 + 1j)
    s.vis[1, 4] = 0
    s.vis[2, 5] = np.nan
    s.flag[2, 5] = True
    flag, report = flag_outliers(s.vis, s.flag, s.antenna1, s.antenna2, s.n_ant)
    assert report.antennas == [3] and report.channels == [9]
    expected = s.flag.copy()
    expected[1, 4] = True
    expected[:, dead] = True
    expected[:, :, 9] = True
    np.testing.assert_array_equal(flag, expected)  # nothing else
    assert any("antenna 3" in r for r in report.reasons) and any("channel 9" in r for r in report.reasons)
    assert report.fraction_after > report.fraction_before


def test_clean_data_with_bandpass_shape_and_gain_spread_is_left_alone(synthetic):
    for seed in range(5):
        s = synthetic(seed=seed, n_ant=10, n_time=4, n_chan=32, flux_jy=0.8, sigma=0.09)
        s.vis[:, :, [0, -1]] *= 0.35**2  # the roll-off of the edge channels (both antennas) is not excess power
        flag, report = flag_outliers(s.vis, s.flag, s.antenna1, s.antenna2, s.n_ant)
        assert not flag.any() and report.antennas == [] and report.channels == []


def test_noise_only_target_spur_found_without_antenna_test(synthetic):
    s = synthetic(seed=4, n_ant=10, n_time=20, n_chan=32, flux_jy=0.0, sigma=0.3)
    s.vis[:, :, 13] += 25 * s.sigma * (1 + 1j)
    flag, report = flag_outliers(s.vis, s.flag, s.antenna1, s.antenna2, s.n_ant, antennas=False)
    assert report.channels == [13] and flag[:, :, 13].all() and flag.sum() == flag[:, :, 13].size
    _, report = flag_outliers(s.vis, s.flag, s.antenna1, s.antenna2, s.n_ant, antennas=False, protect_channels=[13])
    assert report.channels == []


def test_propagation_helpers_and_all_flagged():
    flag = np.zeros((2, 3, 4, 2), bool)
    a1, a2 = np.array([0, 0, 1]), np.array([1, 2, 2])
    out = flag_antennas(flag, a1, a2, [2])
    assert out[:, 1:].all() and not out[:, 0].any() and not flag.any()
    assert flag_channels(flag, [1])[:, :, 1].all() and flag_channels(flag, [1]).sum() == 12
    with pytest.raises(CalibrationFailed, match="no unflagged data"):
        flag_outliers(np.zeros((2, 3, 4, 2), np.complex64), flag, a1, a2, 3)
