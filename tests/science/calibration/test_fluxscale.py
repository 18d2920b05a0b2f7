import numpy as np
import pytest

from mousflow.science.calibration import CalibrationFailed, GainTable, fit_spectral_index, fluxscale


def _table(times, gains, snr=50.0):
    gains = np.asarray(gains, np.complex128)
    return GainTable(np.asarray(times, float), gains, np.zeros(gains.shape, bool), np.full(gains.shape, snr),
                     np.zeros((gains.shape[0], gains.shape[2]), int))


def test_phase_calibrator_flux_from_gain_ratios():
    rng = np.random.default_rng(0)
    n_ant, s_phase = 9, 0.76
    g = rng.uniform(0.8, 1.2, (1, n_ant, 2)) * np.exp(1j * rng.uniform(-3, 3, (1, n_ant, 2)))
    flux = _table([100.0], g * (1 + 0.003 * rng.standard_normal(g.shape)))
    t = np.array([200.0, 400.0, 600.0])
    drift = 1 + 0.02 * (t[:, None, None] - 200) / 400 * rng.uniform(-1, 1, (1, n_ant, 1))
    phase = _table(t, g * drift * np.sqrt(s_phase))
    phase.gains[1, 3] *= 3  # a bad solution away from the flux scan does not matter...
    phase.gains[0, 6, 0] *= 1.5  # ...and one at the nearest time is clipped
    res = fluxscale(flux, phase)
    assert res.flux_jy == pytest.approx(s_phase, rel=0.005)
    assert 0 < res.flux_error_jy < 0.01 and res.n_antennas == n_ant
    assert np.isnan(res.ratios[0, 6, 0])
    expected = np.abs(g[0] * drift[0]) * np.sqrt(s_phase / res.flux_jy)
    expected[6, 0] *= 1.5
    np.testing.assert_allclose(np.abs(res.table.gains[0]), expected)


def test_fluxscale_needs_antennas():
    g = np.ones((1, 4, 2))
    flux, phase = _table([0.0], g), _table([10.0], g)
    phase.flags[:, 1:] = True
    with pytest.raises(CalibrationFailed, match="only 1 antennas"):
        fluxscale(flux, phase)


def test_spectral_index_fit():
    nu = np.array([97e9, 99e9, 109e9, 110.2e9])
    s = 0.8 * (nu / 100e9) ** -0.7
    fit = fit_spectral_index(nu, s, 0.01 * s, reference_hz=100e9)
    assert fit.flux_jy == pytest.approx(0.8) and fit.spectral_index == pytest.approx(-0.7)
    assert fit.at(120e9) == pytest.approx(0.8 * 1.2**-0.7)
    one = fit_spectral_index([97e9, 97e9], [1.0, 1.1], [0.1, 0.1])
    assert one.flux_jy == pytest.approx(1.05, rel=0.01) and one.spectral_index == 0
    with pytest.raises(CalibrationFailed):
        fit_spectral_index([1e9], [-1.0])
