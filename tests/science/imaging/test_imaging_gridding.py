import numpy as np
import pytest

from mousflow.science.imaging import (
    degrid_model,
    lm_to_pixel,
    make_dirty,
    make_psf,
    natural_weights,
    pixel_to_lm,
    plan_image,
    to_ducc,
    to_sky,
)
from mousflow.science.imaging.gridding import grid_weighted
from mousflow.science.simulation.sky import SkyComponent, predict_visibilities


def test_orientation_helpers_roundtrip():
    a = np.arange(64 * 64, dtype=float).reshape(64, 64)
    np.testing.assert_array_equal(to_ducc(to_sky(a)), a)
    # ducc0 (l index, m index) = (n/2 - 1 + dx... ): sky x runs west, y north
    s = to_sky(a)
    assert s[40, 10] == a[64 - 1 - 10, 40]
    x, y = lm_to_pixel(*pixel_to_lm(12.25, 50.5, 64, 1e-6), 64, 1e-6)
    assert (x, y) == pytest.approx((12.25, 50.5))
    l, m = pixel_to_lm(32 - 3, 32 + 5, 64, 1e-6)  # 3 pixels west... of x decreasing = east
    assert (l, m) == pytest.approx((3e-6, 5e-6))


@pytest.mark.parametrize("dx,dy", [(7, 11), (-13, 4), (0, 0)])
def test_point_source_lands_on_its_pixel_with_its_flux(coverage, plan, dx, dy):
    cell, npix = plan.cell_rad, plan.npix
    l, m = -dx * cell, dy * cell  # on a pixel centre: x = npix/2 + dx, y = npix/2 + dy
    vis = predict_visibilities([SkyComponent("p", l, m, 1.0, 1e11)], coverage.uvw, coverage.freq, None)
    w = natural_weights(coverage.uvw, coverage.freq)
    img = make_dirty(vis, coverage.uvw, coverage.freq, w, npix, cell)
    y, x = np.unravel_index(np.argmax(img), img.shape)
    assert (x, y) == (npix // 2 + dx, npix // 2 + dy)
    assert img[y, x] == pytest.approx(1.0, abs=1e-6)


def test_w_term_sign_matches_project_convention():
    # A wide field where w (n - 1) is several radians: the wrong w sign smears the source to a few % of its peak.
    rng = np.random.default_rng(3)
    uvw = rng.normal(size=(3000, 3)) * np.array([300.0, 300.0, 300.0])
    freq = np.array([1e11])
    cell, npix = 2e-3, 64
    l, m = 3 * -cell, 5 * cell  # x = npix/2 + 3, y = npix/2 + 5
    vis = predict_visibilities([SkyComponent("p", l, m, 1.0, 1e11)], uvw, freq, None)
    img = make_dirty(vis, uvw, freq, np.ones((3000, 1)), npix, cell)
    assert img[npix // 2 + 5, npix // 2 + 3] == pytest.approx(1.0, abs=1e-6)
    model = np.zeros((npix, npix))
    model[npix // 2 + 5, npix // 2 + 3] = 1.0
    np.testing.assert_allclose(degrid_model(model, uvw, freq, cell), vis, atol=1e-6)


def test_degrid_matches_analytic_visibilities(coverage, plan):
    cell, npix = plan.cell_rad, plan.npix
    model = np.zeros((npix, npix))
    comps = []
    for (dx, dy, s) in [(5, -9, 1.0), (-20, 17, 0.3)]:
        model[npix // 2 + dy, npix // 2 + dx] = s
        comps.append(SkyComponent("p", -dx * cell, dy * cell, s, 1e11))
    vis = degrid_model(model, coverage.uvw, coverage.freq, cell)
    truth = predict_visibilities(comps, coverage.uvw, coverage.freq, None)
    assert np.max(np.abs(vis - truth)) < 1e-5


def test_gridding_and_degridding_are_adjoint(coverage, plan):
    rng = np.random.default_rng(1)
    n_row, n_chan = coverage.uvw.shape[0], coverage.freq.size
    vis = rng.normal(size=(n_row, n_chan)) + 1j * rng.normal(size=(n_row, n_chan))
    w = rng.uniform(0.5, 2.0, size=(n_row, n_chan))
    img = rng.normal(size=(plan.npix, plan.npix))
    lhs = np.sum(img * grid_weighted(vis, coverage.uvw, coverage.freq, w, plan.npix, plan.cell_rad))
    rhs = np.sum((w * vis * np.conj(degrid_model(img, coverage.uvw, coverage.freq, plan.cell_rad))).real)
    assert lhs == pytest.approx(rhs, rel=1e-6)


def test_psf_peak_and_symmetry(coverage, plan):
    w = natural_weights(coverage.uvw, coverage.freq)
    psf = make_psf(coverage.uvw, coverage.freq, w, 2 * plan.npix, plan.cell_rad)
    n = plan.npix
    assert psf[n, n] == pytest.approx(1.0, abs=1e-6)
    assert np.argmax(psf) == n * 2 * n + n
    # point-symmetric about its centre, up to the w-term (small near the centre)
    core = psf[n - 20 : n + 21, n - 20 : n + 21]
    np.testing.assert_allclose(core, core[::-1, ::-1], atol=1e-4)


# single precision's error (ducc0 epsilon 2e-5) in a dirty image and in a model's visibilities, as a fraction
# of the image's peak or the model's flux (measured 2.3e-6 and 7.6e-6)
SINGLE_PRECISION_ERROR = 2e-5


def test_single_precision_error_is_a_small_fraction_of_the_peak(coverage_factory):
    """For sources across the field (off pixel centres, near the edge) over a 15 % band, both ways: the dirty
    image against double precision at 1e-7 (itself checked against the analytic sky above) and the model's
    visibilities against the analytic ones."""
    cov = coverage_factory(n_ant=43, n_time=20, n_chan=16, df=1e9, shrink=0.3)
    plan = plan_image(cov.uvw, cov.freq, cov.dish)
    npix, cell = plan.npix, plan.cell_rad
    rng = np.random.default_rng(11)
    spots = rng.uniform(-0.45, 0.45, size=(6, 2)) * npix
    fluxes = [1.0, 0.5, 0.3, 0.2, 0.1, 0.05]
    comps = [SkyComponent("p", -dx * cell, dy * cell, s, 1e11) for (dx, dy), s in zip(spots, fluxes, strict=True)]
    vis = predict_visibilities(comps, cov.uvw, cov.freq, None)
    w = natural_weights(cov.uvw, cov.freq)
    d64 = make_dirty(vis, cov.uvw, cov.freq, w, npix, cell)
    d32 = make_dirty(vis, cov.uvw, cov.freq, w, npix, cell, double=False)
    peak = np.max(np.abs(d64))
    assert np.max(np.abs(d64 - d32)) < SINGLE_PRECISION_ERROR * peak

    model = np.zeros((npix, npix))
    on_pixels = []
    for c in comps:
        x, y = (round(v) for v in lm_to_pixel(c.l, c.m, npix, cell))
        model[y, x] += c.flux_jy
        on_pixels.append(SkyComponent("p", *pixel_to_lm(x, y, npix, cell), c.flux_jy, 1e11))
    truth = predict_visibilities(on_pixels, cov.uvw, cov.freq, None)
    v32 = degrid_model(model, cov.uvw, cov.freq, cell, double=False)
    assert v32.dtype == np.complex64
    assert np.max(np.abs(v32 - truth)) < SINGLE_PRECISION_ERROR * model.sum()


def test_threaded_gridding_gives_the_same_bits_every_time(coverage_factory):
    """ducc0's own threads accumulate into one grid in the order they finish (two identical calls then differ
    in the last bits); the row blocks, one thread each, summed in block order, do not. Against the one-thread
    image they differ only by the summation's rounding."""
    from mousflow.science.imaging.gridding import row_blocks

    cov = coverage_factory(n_ant=43, n_time=60, n_chan=8)  # 54,180 rows: a few ms per block
    w = natural_weights(cov.uvw, cov.freq)
    w[::5, 2] = 0  # flagged samples: the mask is split with the rows
    npix, cell = 256, 5e-7
    single = make_psf(cov.uvw, cov.freq, w, npix, cell, nthreads=1)
    for threads in (2, 3):
        images = [make_psf(cov.uvw, cov.freq, w, npix, cell, nthreads=threads) for _ in range(4)]
        assert all(np.array_equal(images[0], im) for im in images[1:]), threads
        np.testing.assert_allclose(images[0], single, rtol=0, atol=1e-12)
    assert row_blocks(10, 3) == [slice(0, 3), slice(3, 6), slice(6, 10)]
    assert row_blocks(2, 8) == [slice(0, 1), slice(1, 2)]  # never an empty block
    assert row_blocks(0, 4) == [slice(0, 0)]


@pytest.mark.parametrize("double", [True, False])
def test_gridding_in_blocks_of_rows_is_gridding_all_at_once(coverage, plan, monkeypatch, double):
    """Blocks of 37 rows (GRID_BLOCK_SAMPLES small, converted to the precision a block at a time, a Taylor
    factor applied as they are gridded, flagged samples masked) give the one-call image to the gridding
    accuracy, and a PSF from broadcast ones the PSF."""
    from mousflow.science.imaging import gridding

    rng = np.random.default_rng(4)
    n_row, n_chan = coverage.uvw.shape[0], coverage.freq.size
    vis = (rng.normal(size=(n_row, n_chan)) + 1j * rng.normal(size=(n_row, n_chan))).astype(np.complex64)
    w = rng.uniform(0.5, 2.0, size=(n_row, n_chan))
    w[rng.random(w.shape) < 0.1] = 0  # flagged
    factor = np.linspace(0.9, 1.1, n_chan)
    args = (coverage.uvw, coverage.freq, w, plan.npix, plan.cell_rad)
    whole = make_dirty(np.asarray(vis, np.complex128) * factor, *args, double=double, nthreads=2)
    psf_whole = make_psf(*args, double=double)
    assert len(gridding.grid_blocks(slice(0, n_row), n_chan, plan.npix)) == 1
    monkeypatch.setattr(gridding, "GRID_BLOCK_SAMPLES", 37 * n_chan)
    monkeypatch.setattr(gridding, "GRID_BLOCK_CELL_SAMPLES", 0)
    assert len(gridding.grid_blocks(slice(0, n_row), n_chan, plan.npix)) == -(-n_row // 37) > 10
    blocked = make_dirty(vis, *args, channel_factor=factor, double=double, nthreads=2)
    # ducc0 picks its kernel and oversampling by the number of visibilities a call has: blocks differ from one
    # call at its accuracy (epsilon 1e-7 in double, 2e-5 in single), not beyond
    tolerance = 1e-6 if double else 2e-4
    np.testing.assert_allclose(blocked, whole, atol=tolerance * np.max(np.abs(whole)))
    np.testing.assert_allclose(make_psf(*args, double=double), psf_whole, atol=tolerance)


@pytest.mark.parametrize("double", [True, False])
def test_a_psf_grids_its_weights_as_the_visibilities_what_ones_weighted_give(coverage, plan, double):
    """A PSF (vis None: the weights gridded as the visibilities, no weights or mask beside them) and a Taylor
    cross PSF (a channel factor) equal ones gridded with those weights, flagged samples (weight 0) masked in
    both: the PSF to the bit, the cross PSF to the rounding of its products."""
    rng = np.random.default_rng(8)
    n_row, n_chan = coverage.uvw.shape[0], coverage.freq.size
    w = rng.uniform(0.5, 2.0, size=(n_row, n_chan)).astype(np.float32)
    w[rng.random(w.shape) < 0.1] = 0  # flagged
    factor = np.linspace(-0.05, 0.05, n_chan)
    ones = np.ones((n_row, n_chan), np.complex64)
    for channel_factor in (None, factor):
        args = (coverage.uvw, coverage.freq, w, 2 * plan.npix, plan.cell_rad)
        psf = grid_weighted(None, *args, channel_factor=channel_factor, double=double, nthreads=2)
        reference = grid_weighted(ones, *args, channel_factor=channel_factor, double=double, nthreads=2)
        if channel_factor is None:  # W x 1 is W: the same sums
            np.testing.assert_array_equal(psf, reference)
        else:  # W t rounded once against 1 t then times W: the last bits of the products
            np.testing.assert_allclose(psf, reference, rtol=0,
                                       atol=(1e-12 if double else 1e-6) * np.max(np.abs(reference)))
    peak = make_psf(coverage.uvw, coverage.freq, w, 2 * plan.npix, plan.cell_rad, double=double)
    assert peak[plan.npix, plan.npix] == pytest.approx(1.0, abs=1e-6 if double else 1e-4)


def test_model_visibilities_subtracted_in_blocks_are_the_data_less_the_true_model(coverage, plan, monkeypatch):
    """vis - the two Taylor terms' visibilities, degridded a block of rows at a time in double and subtracted in
    place in complex64: the analytic visibilities of the model's components subtracted, to 1e-5 of the
    model's."""
    from mousflow.science.imaging import gridding
    from mousflow.science.imaging.multiterm import subtract_model_visibilities, taylor_factors

    monkeypatch.setattr(gridding, "GRID_BLOCK_SAMPLES", 50 * coverage.freq.size)
    monkeypatch.setattr(gridding, "GRID_BLOCK_CELL_SAMPLES", 0)
    cell, npix = plan.cell_rad, plan.npix
    f0 = float(np.mean(coverage.freq))
    models = np.zeros((2, npix, npix))
    models[0, npix // 2 - 9, npix // 2 + 5] = 2.0  # 2 Jy, spectral index -0.7: t^1 term -1.4
    models[1, npix // 2 - 9, npix // 2 + 5] = -1.4
    taylor = taylor_factors(coverage.freq, f0, 2)
    rng = np.random.default_rng(6)
    shape = (coverage.uvw.shape[0], coverage.freq.size)
    data = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)
    point = predict_visibilities([SkyComponent("p", -5 * cell, -9 * cell, 1.0, f0)], coverage.uvw, coverage.freq,
                                 None)
    truth = data - point * (2.0 - 1.4 * taylor[1])[None, :]
    got = data.copy()
    subtract_model_visibilities(got, models, coverage.uvw, coverage.freq, cell, taylor, epsilon=1e-7, double=True,
                                nthreads=2)
    assert got.dtype == np.complex64
    assert np.max(np.abs(got - truth)) < 1e-5 * 2.0
