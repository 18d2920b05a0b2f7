import numpy as np
import pytest

from mousflow.science.calibration import BandpassTable, CalibrationFailed, apply_calibration


def test_apply_inverts_the_measurement_equation_and_scales_weights(synthetic):
    s = synthetic(seed=11, n_ant=6, n_time=3, n_chan=8, sigma=0.0)
    s.weight[:] = 4.0
    s.vis[0, 2, 3, 1] = np.nan
    s.flag[0, 2, 3, 1] = True
    flags = np.zeros(s.bandpass.shape, bool)
    flags[2, 5, 0] = True
    bp = BandpassTable(s.bandpass, flags, np.ones(flags.shape), np.zeros((8, 2), int))
    gflag = np.zeros(s.gains.shape, bool)
    gflag[1, 4, 1] = True
    vis, flag, weight = apply_calibration(s.vis, s.flag, s.weight, s.antenna1, s.antenna2, s.gains, gflag, bp)
    assert vis.dtype == np.complex64 and weight.dtype == np.float32 and np.isfinite(vis).all()
    expected_flag = s.flag.copy()
    expected_flag[:, (s.antenna1 == 2) | (s.antenna2 == 2), 5, 0] = True
    expected_flag[1, (s.antenna1 == 4) | (s.antenna2 == 4), :, 1] = True
    np.testing.assert_array_equal(flag, expected_flag)
    np.testing.assert_allclose(vis[~flag], 1.0, rtol=1e-5)
    j = np.abs(s.gains[:, s.antenna1] * s.gains[:, s.antenna2])[:, :, None, :] \
        * np.abs(s.bandpass[s.antenna1] * s.bandpass[s.antenna2])[None]
    np.testing.assert_allclose(weight[~flag], (4 * j**2)[~flag], rtol=1e-5)
    assert np.all(weight[flag] == 0)


def test_calibrated_noise_matches_weights(synthetic):
    s = synthetic(seed=12, n_ant=6, n_time=20, n_chan=8, flux_jy=0.0, sigma=1.0)
    # raw weights of corrupted data: 1 / (sigma |J_p| |J_q|)^2
    j = np.abs(s.gains[:, s.antenna1] * s.gains[:, s.antenna2])[:, :, None, :] \
        * np.abs(s.bandpass[s.antenna1] * s.bandpass[s.antenna2])[None]
    raw_w = (1 / (s.sigma * j) ** 2).astype(np.float32)
    bp = BandpassTable(s.bandpass, np.zeros(s.bandpass.shape, bool), np.ones(s.bandpass.shape),
                       np.zeros((8, 2), int))
    vis, _flag, weight = apply_calibration(s.vis, s.flag, raw_w, s.antenna1, s.antenna2, s.gains, None, bp)
    np.testing.assert_allclose(weight, 1 / s.sigma**2, rtol=1e-5)
    assert np.std(vis.real) == pytest.approx(s.sigma, rel=0.05)


def test_shape_mismatch_raises(synthetic):
    s = synthetic(n_time=2)
    with pytest.raises(CalibrationFailed):
        apply_calibration(s.vis, s.flag, s.weight, s.antenna1, s.antenna2, s.gains[:1])


@pytest.mark.parametrize("samples", [1, 5 * 16, 3 * 15 * 16, 10**9])
def test_chunking_gives_the_same_bits(synthetic, monkeypatch, samples):
    """Chunks of part of an integration's baselines, of several baselines, of several integrations and one
    chunk for everything calibrate every sample alike, to the bit (n_chan x n_corr = 16 samples a row)."""
    from mousflow.science.calibration import chunking

    s = synthetic(seed=13, n_ant=6, n_time=7, n_chan=8, sigma=0.3)
    s.vis[2, 4, 1, 0] = np.nan
    s.vis[5, 1, 6, 1] = np.inf
    s.flag[3, 2] = True
    gains = s.gains.copy()
    gains[4, 2, 0] = 0  # a singular gain: its baselines flagged, not divided by
    flags = np.zeros(s.bandpass.shape, bool)
    flags[1, 3, 1] = True
    bp = BandpassTable(s.bandpass, flags, np.ones(flags.shape), np.zeros((8, 2), int))
    expected = apply_calibration(s.vis, s.flag, s.weight, s.antenna1, s.antenna2, gains, None, bp)
    monkeypatch.setattr(chunking, "SAMPLES_PER_CHUNK", samples)
    got = apply_calibration(s.vis, s.flag, s.weight, s.antenna1, s.antenna2, gains, None, bp)
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_array_equal(g, e)
    assert got[1][4, (s.antenna1 == 2) | (s.antenna2 == 2), :, 0].all()
    assert np.isfinite(got[0]).all() and np.all(got[2][got[1]] == 0)
