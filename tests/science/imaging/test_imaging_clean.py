import numpy as np
import pytest

from mousflow.science.imaging import (
    briggs_weights,
    clean,
    fit_beam,
    hogbom_minor_cycle,
    make_psf,
    natural_weights,
    plan_image,
    primary_beam,
)
from mousflow.science.imaging.gridding import (
    SINGLE_PRECISION_RESIDUAL_ERROR,
    degrid_model,
    make_dirty,
    needs_double_precision,
)
from mousflow.science.simulation.sky import SkyComponent, predict_visibilities


@pytest.fixture(scope="module")
def psf2(coverage, plan):
    w = natural_weights(coverage.uvw, coverage.freq)
    return make_psf(coverage.uvw, coverage.freq, w, 2 * plan.npix, plan.cell_rad)


def test_hogbom_recovers_components_of_a_psf_sum(plan, psf2):
    n = plan.npix
    truth = {(n // 2 + 9, n // 2 - 4): 1.0, (n // 2 - 20, n // 2 + 13): -0.4, (n // 2 + 1, n // 2 + 30): 0.25}
    img = np.zeros((n, n))
    for (y, x), s in truth.items():
        img += s * psf2[n - y : 2 * n - y, n - x : 2 * n - x]
    model = np.zeros((n, n))
    count, peak = hogbom_minor_cycle(img, psf2, np.ones((n, n), bool), model, gain=0.2, cycle_threshold=1e-4,
                                     max_components=5000)
    assert peak < 1e-4 and count < 5000
    for (y, x), s in truth.items():
        assert model[y, x] == pytest.approx(s, abs=2e-3)
    assert np.sum(np.abs(model)) == pytest.approx(1.65, abs=5e-3)


def test_hogbom_only_places_components_in_the_mask(plan, psf2):
    n = plan.npix
    img = psf2[n // 2 : n // 2 + n, n // 2 : n // 2 + n].copy()
    mask = np.zeros((n, n), bool)
    mask[n // 2 - 2 : n // 2 + 3, n // 2 - 2 : n // 2 + 3] = True
    model = np.zeros((n, n))
    hogbom_minor_cycle(img, psf2, mask, model, gain=0.1, cycle_threshold=1e-3, max_components=10_000)
    assert np.all(model[~mask] == 0)
    assert model[n // 2, n // 2] == pytest.approx(1.0, abs=2e-3)


def test_cotton_schwab_cleans_noise_free_sources_to_threshold(coverage, plan):
    n, cell = plan.npix, plan.cell_rad
    comps = [SkyComponent("a", -9 * cell, 14 * cell, 1.0, 1e11), SkyComponent("b", 23 * cell, -17 * cell, 0.3, 1e11)]
    vis = predict_visibilities(comps, coverage.uvw, coverage.freq, None)
    iw = briggs_weights(coverage.uvw, coverage.freq, None, None, n, cell, 0.5)
    res = clean(vis, coverage.uvw, coverage.freq, iw, n, cell, 1e-3, mask=None, max_major=20)
    assert res.converged and res.stop_reason == "threshold"
    assert res.peak_residual < 1e-3
    assert np.max(np.abs(res.residual)) < 2e-3
    assert res.model[n // 2 + 14, n // 2 + 9] == pytest.approx(1.0, abs=0.01)
    assert res.model[n // 2 - 17, n // 2 - 23] == pytest.approx(0.3, abs=0.01)
    assert res.model.sum() == pytest.approx(1.3, abs=0.01)
    assert res.n_major >= 2 and res.n_components == sum(c.n_components for c in res.cycles)
    # the beam it fitted is the PSF's
    assert res.beam.bmaj_rad == pytest.approx(fit_beam(res.psf, cell, window=n // 2).bmaj_rad)


@pytest.mark.parametrize("nterms", [1, 2])
def test_clean_may_overwrite_the_visibilities_with_their_residual(coverage, plan, nterms):
    """overwrite_vis=True (the continuum's memory: one array of the visibilities' size, not two): the same
    CLEAN to the bit, and vis then holds the residual visibilities, the data less the final model's (each
    major cycle subtracted only its new components)."""
    n, cell = plan.npix, plan.cell_rad
    comps = [SkyComponent("a", -9 * cell, 14 * cell, 1.0, 1e11, spectral_index=-0.8),
             SkyComponent("b", 23 * cell, -17 * cell, 0.3, 1e11)]
    data = predict_visibilities(comps, coverage.uvw, coverage.freq, None).astype(np.complex64)
    iw = briggs_weights(coverage.uvw, coverage.freq, None, None, n, cell, 0.5)
    kept = data.copy()
    a = clean(kept, coverage.uvw, coverage.freq, iw, n, cell, 1e-3, mask=None, max_major=20, nterms=nterms)
    np.testing.assert_array_equal(kept, data)  # not asked to: left as given
    over = data.copy()
    b = clean(over, coverage.uvw, coverage.freq, iw, n, cell, 1e-3, mask=None, max_major=20, nterms=nterms,
              overwrite_vis=True)
    assert a.n_major == b.n_major >= 2
    np.testing.assert_array_equal(a.model, b.model)
    np.testing.assert_array_equal(a.residual, b.residual)
    models = b.taylor_models if nterms > 1 else b.model[None]
    t = (coverage.freq - b.freq_ref_hz) / b.freq_ref_hz if nterms > 1 else 0.0
    model_vis = sum(degrid_model(m, coverage.uvw, coverage.freq, cell) * t**k for k, m in enumerate(models))
    np.testing.assert_allclose(over, data - model_vis, atol=1e-5 * np.max(np.abs(data)))


@pytest.mark.parametrize("threshold", [1e-4, 1e-6])
def test_a_single_precision_residual_is_the_models_true_residual(coverage_factory, threshold):
    """What bounds single precision's use (SINGLE_PRECISION_RESIDUAL_ERROR): CLEANed in single precision to a
    dynamic range of up to 1e6, the residual CLEAN reports is the one its model truly leaves, as gridded in
    double precision, within that fraction of the peak. 43 antennas over a 15 % band, sources across the
    field."""
    cov = coverage_factory(n_ant=43, n_time=20, n_chan=16, df=1e9, shrink=0.3)
    plan = plan_image(cov.uvw, cov.freq, cov.dish)
    n, cell = plan.npix, plan.cell_rad
    comps = [SkyComponent("a", -9 * cell, 14 * cell, 1.0, 1e11), SkyComponent("b", 23 * cell, -17 * cell, 0.3, 1e11),
             SkyComponent("c", -0.4 * n * cell, -0.35 * n * cell, 0.1, 1e11)]
    vis = predict_visibilities(comps, cov.uvw, cov.freq, None)
    iw = briggs_weights(cov.uvw, cov.freq, None, None, n, cell, 0.5)
    res = clean(vis, cov.uvw, cov.freq, iw, n, cell, threshold, mask=None, max_major=20, double=False)
    assert res.converged and not res.double_precision
    true_residual = make_dirty(vis - degrid_model(res.model, cov.uvw, cov.freq, cell), cov.uvw, cov.freq, iw, n,
                               cell)
    assert np.max(np.abs(true_residual - res.residual)) < SINGLE_PRECISION_RESIDUAL_ERROR * 1.0


def test_clean_grids_in_double_precision_only_for_a_high_dynamic_range(coverage, plan):
    n, cell = plan.npix, plan.cell_rad
    vis = predict_visibilities([SkyComponent("a", -9 * cell, 14 * cell, 1.0, 1e11)], coverage.uvw, coverage.freq,
                               None)
    iw = briggs_weights(coverage.uvw, coverage.freq, None, None, n, cell, 0.5)
    for threshold, deep, double in [(1e-3, None, False), (1e-3, 1e-6, True), (1e-6, None, True)]:
        assert needs_double_precision(1.0, min(threshold, deep or threshold)) is double
        res = clean(vis, coverage.uvw, coverage.freq, iw, n, cell, threshold, mask=None, max_major=20,
                    deep_threshold=deep, deep_above=0.5)
        assert res.double_precision is double
        assert res.converged and res.model.sum() == pytest.approx(1.0, abs=2 * (deep or threshold))
    assert clean(vis, coverage.uvw, coverage.freq, iw, n, cell, 1e-3, mask=None, double=True).double_precision


def test_auto_mask_finds_the_sources_and_nothing_in_pure_noise(coverage, plan, complex_noise):
    n, cell = plan.npix, plan.cell_rad
    rng = np.random.default_rng(5)
    shape = (coverage.uvw.shape[0], coverage.freq.size)
    noise = complex_noise(rng, shape, 1.0)
    iw = briggs_weights(coverage.uvw, coverage.freq, None, None, n, cell, 0.5)
    pb = primary_beam(n, cell, coverage.freq, coverage.dish)
    rms = np.sqrt(np.sum(iw**2)) / iw.sum()
    res = clean(noise, coverage.uvw, coverage.freq, iw, n, cell, 2 * rms, pb=pb)
    assert res.stop_reason == "empty mask" and res.n_components == 0 and not res.mask.any()

    comp = SkyComponent("a", 12 * cell, 7 * cell, 50 * rms, 1e11)
    vis = predict_visibilities([comp], coverage.uvw, coverage.freq, None) + noise
    res = clean(vis, coverage.uvw, coverage.freq, iw, n, cell, 2 * rms, pb=pb)
    y, x = n // 2 + 7, n // 2 - 12
    assert res.mask[y, x]
    assert res.mask.sum() < 0.03 * n * n
    near = res.model[y - 2 : y + 3, x - 2 : x + 3].sum()
    assert near == pytest.approx(50 * rms, rel=0.05)


def test_deep_pass_cleans_deeper_only_around_bright_emission(coverage, plan):
    n, cell = plan.npix, plan.cell_rad
    comps = [SkyComponent("bright", -9 * cell, 14 * cell, 1.0, 1e11),
             SkyComponent("faint", 33 * cell, -27 * cell, 0.05, 1e11)]
    vis = predict_visibilities(comps, coverage.uvw, coverage.freq, None)
    iw = briggs_weights(coverage.uvw, coverage.freq, None, None, n, cell, 0.5)
    args = (vis, coverage.uvw, coverage.freq, iw, n, cell, 0.02)
    bright, faint = (n // 2 + 14, n // 2 + 9), (n // 2 - 27, n // 2 - 33)
    shallow = clean(*args, mask=None, max_major=20)
    assert shallow.deep_mask is None and shallow.deep_threshold is None
    res = clean(*args, mask=None, max_major=20, deep_threshold=1e-3, deep_above=0.5)
    assert res.converged and res.deep_threshold == 1e-3
    deep = res.deep_mask
    assert deep[bright] and not deep[faint] and np.all(res.mask[deep])
    # within a beam FWHM of the bright source's emission above deep_above (its half-power core here)
    y, x = np.nonzero(deep)
    assert np.max(np.hypot(y - bright[0], x - bright[1])) <= 1.5 * res.beam.bmaj_rad / cell + 1
    assert np.max(np.abs(res.residual[deep])) < 1e-3 < np.max(np.abs(shallow.residual[deep]))
    assert res.model[deep].sum() == pytest.approx(1.0, abs=5e-3)
    # the faint source is CLEANed to the shallow threshold, not deeper
    assert 1e-3 < abs(res.residual[faint]) < 0.02
    # nothing above deep_above: no deep pass, the same result as without one
    none = clean(*args, mask=None, max_major=20, deep_threshold=1e-3, deep_above=2.0)
    assert not np.any(none.deep_mask) and none.n_components == shallow.n_components
    np.testing.assert_array_equal(none.residual, shallow.residual)
