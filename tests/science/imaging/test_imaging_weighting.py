import numpy as np
import pytest

from mousflow.science.imaging import (
    briggs_weights,
    fit_beam,
    make_psf,
    natural_weights,
    stokes_i,
    uniform_weights,
)
from mousflow.science.imaging.weighting import gridded_weight_density
from mousflow.telescope.alma import SPEED_OF_LIGHT


@pytest.fixture(scope="module")
def data(coverage):
    rng = np.random.default_rng(7)
    w = rng.uniform(0.5, 2.0, size=(coverage.uvw.shape[0], coverage.freq.size))
    return coverage.uvw, coverage.freq, w


def _normalised(x):
    return x / x.sum()


def test_robust_plus_two_is_nearly_natural(data, plan):
    uvw, freq, w = data
    b = _normalised(briggs_weights(uvw, freq, w, None, plan.npix, plan.cell_rad, 2.0))
    n = _normalised(natural_weights(uvw, freq, w))
    assert np.max(np.abs(b / n - 1)) < 0.1
    assert np.corrcoef(b.ravel(), n.ravel())[0, 1] > 0.999


def test_robust_minus_two_is_nearly_uniform(data, plan):
    uvw, freq, w = data
    b = _normalised(briggs_weights(uvw, freq, w, None, plan.npix, plan.cell_rad, -2.0))
    u = _normalised(uniform_weights(uvw, freq, w, None, plan.npix, plan.cell_rad))
    assert np.corrcoef(b.ravel(), u.ravel())[0, 1] > 0.999
    assert np.median(np.abs(b / u - 1)) < 0.02


def test_uniform_weights_flatten_the_uv_plane(data, plan):
    uvw, freq, w = data
    u = uniform_weights(uvw, freq, w, None, plan.npix, plan.cell_rad)
    # each occupied uv cell (both Hermitian halves) now carries total weight 1
    du = 1.0 / (plan.npix * plan.cell_rad)
    dens = gridded_weight_density(uvw, freq, u, du)
    np.testing.assert_allclose(dens, 1.0, rtol=1e-12)
    # and the cell is the image's Fourier cell: samples in one cell share a density
    iu = np.rint(uvw[:, :1] * freq / SPEED_OF_LIGHT / du)
    assert np.unique(iu).size > 20


def test_beam_shrinks_from_natural_to_uniform(data, plan):
    uvw, freq, w = data
    sizes = []
    for r in (2.0, 0.5, -2.0):
        iw = briggs_weights(uvw, freq, w, None, plan.npix, plan.cell_rad, r)
        b = fit_beam(make_psf(uvw, freq, iw, plan.npix, plan.cell_rad), plan.cell_rad)
        sizes.append(b.bmaj_rad * b.bmin_rad)
    assert sizes[0] > sizes[1] > sizes[2]


def test_flags_and_bad_weights_give_zero(data, plan):
    uvw, freq, w = data
    flag = np.zeros(w.shape, dtype=bool)
    flag[::3, 1] = True
    w2 = w.copy()
    w2[5, 0] = -1.0
    iw = briggs_weights(uvw, freq, w2, flag, plan.npix, plan.cell_rad, 0.5)
    assert np.all(iw[flag] == 0) and iw[5, 0] == 0
    assert np.all(iw[~flag & (w2 > 0)] > 0)


def test_per_channel_weighting_is_independent_of_other_channels(data, plan):
    uvw, freq, w = data
    full = briggs_weights(uvw, freq, w, None, plan.npix, plan.cell_rad, 0.5, per_channel=True)
    alone = briggs_weights(uvw, freq[2:3], w[:, 2:3], None, plan.npix, plan.cell_rad, 0.5)
    np.testing.assert_array_equal(full[:, 2:3], alone)


def test_stokes_i_from_parallel_hands():
    xx = np.array([[1 + 1j, 2.0, 3.0]])
    yy = np.array([[3 - 1j, 2.0, 5.0]])
    wxx = np.array([[2.0, 1.0, 1.0]])
    wyy = np.array([[2.0, 3.0, 1.0]])
    vis, w, flag = stokes_i(xx, yy, wxx, wyy, None, np.array([[False, False, True]]))
    np.testing.assert_allclose(vis[0, :2], [2.0, 2.0])
    # var(I) = (1/wxx + 1/wyy) / 4
    np.testing.assert_allclose(w[0], [4.0, 4.0 / (1 + 1 / 3), 0.0])
    np.testing.assert_array_equal(flag[0], [False, False, True])


@pytest.mark.parametrize("block_samples,dense_cells", [(7, 64_000_000), (1 << 20, 64_000_000), (1 << 20, 0)])
def test_gridded_density_is_each_cells_summed_weight_whatever_the_row_blocks(data, plan, monkeypatch, block_samples,
                                                                            dense_cells):
    """The density, gridded in row blocks (a few samples each, or all at once) on a dense uv plane or over the
    occupied cells only, against a dictionary of uv cells filled sample by sample, each sample also counted at
    its Hermitian twin."""
    from mousflow.science.imaging import weighting

    monkeypatch.setattr(weighting, "DENSITY_BLOCK_SAMPLES", block_samples)
    monkeypatch.setattr(weighting, "DENSE_GRID_MAX_CELLS", dense_cells)
    uvw, freq, w = data
    rng = np.random.default_rng(5)
    w = w * rng.uniform(0.5, 1.5, size=w.shape)
    w[rng.random(w.shape) < 0.2] = 0.0
    du = 1.0 / (plan.npix * plan.cell_rad)
    density = weighting.gridded_weight_density(uvw, freq, w, du)
    cells: dict[tuple[int, int], float] = {}
    lam = SPEED_OF_LIGHT / freq
    for r in range(uvw.shape[0]):
        for k in range(freq.size):
            if w[r, k] > 0:
                iu, iv = round(uvw[r, 0] / lam[k] / du), round(uvw[r, 1] / lam[k] / du)
                for cell in ((iu, iv), (-iu, -iv)):
                    cells[cell] = cells.get(cell, 0.0) + w[r, k]
    for r in range(0, uvw.shape[0], 37):
        for k in range(freq.size):
            expected = 0.0 if w[r, k] <= 0 else cells[(round(uvw[r, 0] / lam[k] / du), round(uvw[r, 1] / lam[k] / du))]
            assert density[r, k] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("block_samples,dense_cells", [(7, 64_000_000), (1 << 20, 64_000_000), (5, 0)])
def test_briggs_weights_are_the_formula_over_the_uv_cells(data, plan, monkeypatch, block_samples, dense_cells):
    """Briggs (1995) as CASA: w / (1 + W_k f^2), f^2 = (5 10^-R)^2 / (sum_k W_k^2 / sum_k W_k) over the uv
    cells k (both Hermitian halves), from a dictionary of cells filled sample by sample; the same whatever the
    row blocks and whether the uv plane is dense or its occupied cells only; in single precision (the
    formula's float64 value rounded: 6e-8 of it)."""
    from mousflow.science.imaging import weighting

    monkeypatch.setattr(weighting, "DENSITY_BLOCK_SAMPLES", block_samples)
    monkeypatch.setattr(weighting, "DENSE_GRID_MAX_CELLS", dense_cells)
    uvw, freq, w = data
    du = 1.0 / (plan.npix * plan.cell_rad)
    lam = SPEED_OF_LIGHT / freq
    keys = [[(round(uvw[r, 0] / lam[k] / du), round(uvw[r, 1] / lam[k] / du)) for k in range(freq.size)]
            for r in range(uvw.shape[0])]
    cells: dict[tuple[int, int], float] = {}
    for r, row in enumerate(keys):
        for k, (iu, iv) in enumerate(row):
            for cell in ((iu, iv), (-iu, -iv)):
                cells[cell] = cells.get(cell, 0.0) + w[r, k]
    density = np.array([[cells[c] for c in row] for row in keys])
    total = np.array(list(cells.values()))
    for robust in (-1.0, 0.5):
        f2 = (5.0 * 10.0**-robust) ** 2 / (np.sum(total**2) / np.sum(total))
        got = briggs_weights(uvw, freq, w, None, plan.npix, plan.cell_rad, robust)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, w / (1.0 + density * f2), rtol=7e-8)


def test_stokes_i_is_the_textbook_formula_to_the_bit():
    """The in-place computation against the one-line formula, on float32 weights with zeros, negatives and
    flags: the same bits, float64 weights, complex64 visibilities."""
    rng = np.random.default_rng(4)
    shape = (300, 7)
    wa, wb = (rng.uniform(-0.2, 3.0, size=shape).astype(np.float32) for _ in range(2))
    wa[5, :] = 0.0
    fa, fb = rng.random(shape) < 0.1, rng.random(shape) < 0.1
    va, vb = ((rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64) for _ in range(2))
    vis, w, flag = stokes_i(va, vb, wa, wb, fa, fb)
    a, b = wa.astype(np.float64), wb.astype(np.float64)
    expected_flag = (a <= 0) | (b <= 0) | fa | fb
    with np.errstate(divide="ignore", invalid="ignore"):
        expected_w = np.where(expected_flag, 0.0, 4.0 / (1.0 / a + 1.0 / b))
    np.testing.assert_array_equal(flag, expected_flag)
    np.testing.assert_array_equal(w, expected_w)
    np.testing.assert_array_equal(vis, 0.5 * (va + vb))
    assert w.dtype == np.float64 and vis.dtype == np.complex64
    # into rows of larger arrays (a window filled a block of rows at a time): the same bits, in those rows
    out = (np.zeros((400, 7), np.complex64), np.zeros((400, 7)), np.zeros((400, 7), bool))
    into = (out[0][50:350], out[1][50:350], out[2][50:350])
    got = stokes_i(va, vb, wa, wb, fa, fb, out=into)
    assert all(g is o for g, o in zip(got, into, strict=True))
    for whole, expected in zip(out, (vis, w, flag), strict=True):
        np.testing.assert_array_equal(whole[50:350], expected)
        assert not whole[:50].any() and not whole[350:].any()


@pytest.mark.parametrize("per_channel", [False, True])
def test_briggs_weights_may_overwrite_the_data_weights_and_sum_their_noise(data, plan, monkeypatch, per_channel):
    """out=weight (the continuum's weights held once): the same imaging weights, written over the data weights a
    block of rows at a time, each block read before it is overwritten; noise= sums the thermal noise of the data
    weights with the imaging weights as they are made, which is predicted_rms of the two arrays."""
    from mousflow.science.imaging import weighting
    from mousflow.science.imaging.noise import PredictedNoise, predicted_rms

    monkeypatch.setattr(weighting, "DENSITY_BLOCK_SAMPLES", 3 * data[1].size)
    uvw, freq, w = data
    weight = w.astype(np.float32)
    flag = np.random.default_rng(3).random(w.shape) < 0.1
    args = (plan.npix, plan.cell_rad, 0.5)
    expected = briggs_weights(uvw, freq, weight, flag, *args, per_channel=per_channel)
    buffer = weight.copy()
    noise = PredictedNoise()
    got = briggs_weights(uvw, freq, buffer, flag, *args, per_channel=per_channel, out=buffer, noise=noise)
    assert got is buffer
    np.testing.assert_array_equal(buffer, expected)
    assert noise.rms() == pytest.approx(predicted_rms(weight, expected, flag), rel=1e-12)
    with pytest.raises(ValueError, match="out must be float32"):
        briggs_weights(uvw, freq, weight, flag, *args, out=w.copy())
