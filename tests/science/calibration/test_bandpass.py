import numpy as np
import pytest

from mousflow.science.calibration import BandpassTable, CalibrationFailed, normalise_bandpass, solve_bandpass


def test_bandpass_recovered_despite_drifting_phases(synthetic, relative_phase):
    # 30 deg/integration of atmospheric phase drift would decorrelate a scan average without the pre-solve
    s = synthetic(seed=5, n_ant=8, n_time=8, n_chan=24, flux_jy=2.0, sigma=0.05, phase_rate_deg=30.0)
    s.flag[:, :, 7] = True  # e.g. a spur flagged beforehand
    bp = solve_bandpass(s.vis, s.flag, s.weight, s.antenna1, s.antenna2, s.n_ant, reference_antenna=0)
    assert isinstance(bp, BandpassTable) and bp.bandpass.shape == (8, 24, 2)
    assert bp.flags[:, 7].all() and bp.flags.sum() == 8 * 2
    good = ~bp.flags
    np.testing.assert_allclose(np.abs(bp.bandpass)[good].reshape(8, 23, 2).mean(axis=1), 1.0, rtol=1e-6)
    truth = normalise_bandpass(s.bandpass, bp.flags)
    amp_err = np.abs(bp.bandpass) / np.abs(truth) - 1
    phase_err = relative_phase(bp.bandpass, truth, 0, axis=0)
    assert np.abs(amp_err[good]).max() < 0.02
    assert np.abs(phase_err[good]).max() < 1.0
    # expected precision: per channel SNR ~ 2 Jy sqrt(8 x 7) / 0.05 ~ 300 -> 0.2 deg
    assert np.sqrt(np.mean(phase_err[good] ** 2)) < 0.4


def test_no_data_raises(synthetic):
    s = synthetic(n_time=2)
    with pytest.raises(CalibrationFailed, match="no unflagged data"):
        solve_bandpass(s.vis, np.ones(s.vis.shape, bool), s.weight, s.antenna1, s.antenna2, s.n_ant)


def test_normalise_bandpass_convention():
    rng = np.random.default_rng(0)
    b = rng.uniform(0.5, 2, (3, 10, 2)) * np.exp(1j * rng.uniform(-1, 1, (3, 10, 2)))
    flags = np.zeros(b.shape, bool)
    flags[:, 2] = True
    n = normalise_bandpass(b, flags)
    assert np.all(n[flags] == 1)
    np.testing.assert_allclose(np.abs(n[:, ~flags[0, :, 0]]).mean(axis=1), 1)
    np.testing.assert_allclose(np.angle((n / np.abs(n))[:, ~flags[0, :, 0]].sum(axis=1)), 0, atol=1e-12)
