"""Multi-term MFS: Taylor cross PSFs, the multi-term minor cycle, and a two-term continuum that recovers a
steep-spectrum source's flux and spectral index and removes the flat model's residual floor."""

import math

import numpy as np
import pytest

from mousflow.science.imaging import image_mfs, natural_weights, plan_image, robust_rms
from mousflow.science.imaging.coords import pixel_to_lm
from mousflow.science.imaging.multiterm import hessian, multiterm_minor_cycle, taylor_factors, taylor_psfs
from mousflow.science.imaging.pipeline import continuum_nterms

SPEED_OF_LIGHT = 299792458.0


@pytest.fixture(scope="module")
def wide(coverage_factory):
    """93-108 GHz in 16 channels: a 15 % band, as an ALMA band 3 continuum's."""
    cov = coverage_factory(n_chan=16, f0=93e9, df=1e9)
    return cov, plan_image(cov.uvw, cov.freq, cov.dish)


def test_cross_psfs_peak_at_the_weighted_moments_of_t(wide):
    cov, plan = wide
    rng = np.random.default_rng(3)
    w = natural_weights(cov.uvw, cov.freq) * rng.uniform(0.5, 1.5, size=(cov.uvw.shape[0], cov.freq.size))
    ref = 100.1e9
    psfs = taylor_psfs(cov.uvw, cov.freq, w, 2 * plan.npix, plan.cell_rad, ref, 2)
    t = (cov.freq - ref) / ref
    h = hessian(psfs, 2)
    # at the centre every visibility adds w t^k exactly (no phase), so B_k(0) = sum(w t^k) / sum(w)
    for j in range(2):
        for k in range(2):
            expected = float(np.sum(w * t[None, :] ** (j + k)) / np.sum(w))
            assert h[j, k] == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert h[0, 0] == pytest.approx(1.0, abs=1e-6)


def test_multiterm_minor_cycle_recovers_taylor_amplitudes_of_a_psf_sum(wide):
    cov, plan = wide
    n = plan.npix
    w = natural_weights(cov.uvw, cov.freq)
    ref = float(np.mean(cov.freq))
    psfs = taylor_psfs(cov.uvw, cov.freq, w, 2 * n, plan.cell_rad, ref, 2)
    truth = {(n // 2 + 9, n // 2 - 4): (1.0, -1.2), (n // 2 - 20, n // 2 + 13): (0.4, 0.8)}
    residuals = np.zeros((2, n, n))
    for (y, x), amps in truth.items():
        for k in range(2):
            for j, a in enumerate(amps):
                residuals[k] += a * psfs[j + k][n - y : 2 * n - y, n - x : 2 * n - x]
    models = np.zeros((2, n, n))
    count, peak = multiterm_minor_cycle(residuals, psfs, np.ones((n, n), bool), models, gain=0.2,
                                        cycle_threshold=1e-4, max_components=20000)
    assert peak < 1e-4 and count < 20000
    for (y, x), (a0, a1) in truth.items():
        assert models[0, y, x] == pytest.approx(a0, abs=3e-3)
        assert models[1, y, x] == pytest.approx(a1, abs=0.05)


def test_multiterm_minor_cycle_needs_all_cross_psfs(wide):
    _, plan = wide
    n = plan.npix
    with pytest.raises(ValueError, match="3 cross PSFs"):
        multiterm_minor_cycle(np.zeros((2, n, n)), np.zeros((2, 2 * n, 2 * n)), np.ones((n, n), bool),
                              np.zeros((2, n, n)), gain=0.1, cycle_threshold=0.0, max_components=1)


def test_taylor_factors():
    t = taylor_factors([90e9, 100e9, 110e9], 100e9, 3)
    np.testing.assert_allclose(t, [[1, 1, 1], [-0.1, 0, 0.1], [0.01, 0, 0.01]])


def test_continuum_nterms_follows_the_fractional_bandwidth_of_the_channels_with_data():
    freq = np.linspace(100e9, 115e9, 16)
    assert continuum_nterms(freq) == 2
    assert continuum_nterms(freq[:1]) == 1
    assert continuum_nterms(np.linspace(230e9, 231e9, 64)) == 1  # 0.4 %
    only_the_first = np.zeros(16)
    only_the_first[0] = 3.0
    assert continuum_nterms(freq, only_the_first) == 1
    assert continuum_nterms(freq, np.zeros(16)) == 1


@pytest.fixture(scope="module")
def steep_source(wide):
    """A 20 mJy source of spectral index -1.5 at a pixel centre off the phase centre, thermal noise ~2 uJy:
    visibilities from the measurement equation, with no primary beam (the truth is the power law itself)."""
    cov, plan = wide
    n = plan.npix
    y, x = n // 2 + 7, n // 2 - 11
    l, m = pixel_to_lm(x, y, n, plan.cell_rad)
    nn = math.sqrt(1 - l * l - m * m)
    uvw = cov.uvw
    phase = -2j * math.pi * (uvw[:, :1] * l + uvw[:, 1:2] * m + uvw[:, 2:3] * (nn - 1)) * cov.freq / SPEED_OF_LIGHT
    alpha, s0, f0 = -1.5, 0.02, 100e9
    sigma = 2.5e-4
    rng = np.random.default_rng(11)
    vis = s0 * (cov.freq / f0) ** alpha * np.exp(phase)
    vis = vis + sigma * (rng.normal(size=vis.shape) + 1j * rng.normal(size=vis.shape))
    weight = np.full(vis.shape, 1 / (2 * sigma**2))
    return (y, x), (alpha, s0, f0), vis, weight


def test_two_term_continuum_recovers_flux_and_spectral_index_and_reaches_the_thermal_noise(wide, steep_source):
    cov, plan = wide
    (y, x), (alpha, s0, f0), vis, weight = steep_source
    two = image_mfs(vis, cov.uvw, cov.freq, weight, None, plan)  # a 15 % band: two terms by itself
    one = image_mfs(vis, cov.uvw, cov.freq, weight, None, plan, nterms=1)
    assert two.nterms == 2 and one.nterms == 1
    truth = s0 * (two.freq_hz / f0) ** alpha
    near = (slice(y - 2, y + 3), slice(x - 2, x + 3))  # the components stay on the source's pixel and next to it
    assert float(np.sum(two.model[near])) == pytest.approx(truth, rel=0.01)
    assert float(np.sum(two.model)) == pytest.approx(truth, rel=0.01)
    assert two.image[y, x] == pytest.approx(truth, rel=0.01)
    # the flat model leaves a floor several times the thermal noise; two terms take it away
    rms_two, rms_one = robust_rms(two.residual), robust_rms(one.residual)
    assert rms_one > 3 * two.predicted_rms
    assert rms_two < 1.1 * two.predicted_rms


def test_the_continuum_takes_one_term_when_flags_leave_a_narrow_band(wide, steep_source):
    cov, plan = wide
    _, _, vis, weight = steep_source
    flag = np.ones(vis.shape, dtype=bool)
    flag[:, 5] = False
    plane = image_mfs(vis, cov.uvw, cov.freq, weight, flag, plan)
    assert plane.nterms == 1
    assert plane.freq_hz == pytest.approx(cov.freq[5])


def test_two_term_clean_models_the_spectral_index(wide, steep_source):
    from mousflow.science.imaging import briggs_weights, clean

    cov, plan = wide
    (y, x), (alpha, s0, f0), vis, weight = steep_source
    iw = briggs_weights(cov.uvw, cov.freq, weight, None, plan.npix, plan.cell_rad, plan.robust)
    ref = f0  # the power law's own reference: m0 is then s0
    cr = clean(vis, cov.uvw, cov.freq, iw, plan.npix, plan.cell_rad, 2e-5, nterms=2, freq_ref_hz=ref)
    assert cr.taylor_models.shape == (2, plan.npix, plan.npix) and cr.freq_ref_hz == ref
    near = (slice(y - 2, y + 3), slice(x - 2, x + 3))
    m0, m1 = (float(np.sum(m[near])) for m in cr.taylor_models)
    assert m0 == pytest.approx(s0, rel=0.01)
    # a first-order Taylor fit of a power law over +-7.5 % in frequency: m1 / m0 = alpha to within its curvature
    assert m1 / m0 == pytest.approx(alpha, abs=0.1)
