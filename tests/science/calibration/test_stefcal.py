import importlib

import numpy as np
import pytest

from mousflow.science.calibration import CalibrationFailed, reduce_baselines, stefcal


def _problem(n_ant=8, seed=0, batch=()):
    rng = np.random.default_rng(seed)
    a1, a2 = np.triu_indices(n_ant, 1)
    g = rng.uniform(0.7, 1.3, (*batch, n_ant)) * np.exp(1j * rng.uniform(-np.pi, np.pi, (*batch, n_ant)))
    w = 1e4  # noiseless data, weights of a high-SNR case (sigma = 0.01)
    x = w * g[..., a1] * np.conj(g[..., a2])  # model 1: X = w D, Y = w
    return g, x, np.full(x.shape, w), a1, a2


def test_noiseless_solution_is_exact_and_referenced(relative_phase):
    g, x, y, a1, a2 = _problem(batch=(3, 2))
    res = stefcal(x, y, a1, a2, 8, reference_antenna=2, tol=1e-12)
    assert res.gains.shape == (3, 2, 8) and res.converged.all() and not res.flags.any()
    assert np.all(res.reference_antenna == 2)
    np.testing.assert_allclose(np.angle(res.gains[..., 2]), 0, atol=1e-12)
    np.testing.assert_allclose(np.abs(res.gains), np.abs(g), rtol=1e-8)
    np.testing.assert_allclose(relative_phase(res.gains, g, 2, axis=-1), 0, atol=1e-6)
    assert res.iterations.max() < 100


def test_noise_matches_formal_snr(relative_phase):
    rng = np.random.default_rng(3)
    n_ant, n_trial, sigma, n_samp = 10, 400, 0.3, 8
    a1, a2 = np.triu_indices(n_ant, 1)
    g = np.exp(1j * rng.uniform(-np.pi, np.pi, (n_trial, n_ant)))
    noise = sigma * (rng.standard_normal((n_trial, n_samp, a1.size)) + 1j * rng.standard_normal((n_trial, n_samp,
                                                                                                  a1.size)))
    d = g[:, None, a1] * np.conj(g[:, None, a2]) + noise
    w = 1 / sigma**2
    res = stefcal(w * d.sum(axis=1), np.full((n_trial, a1.size), w * n_samp), a1, a2, n_ant, reference_antenna=0)
    err = np.radians(relative_phase(res.gains, g, 0, axis=-1)[:, 1:])
    predicted = 1 / res.snr[:, 1:]
    # the error of a referenced phase includes the reference antenna's: sqrt(2) x one antenna's
    ratio = np.std(err) / (np.sqrt(2) * np.median(predicted))
    assert 0.8 < ratio < 1.2, ratio


def test_antenna_without_data_is_flagged_and_others_unaffected():
    g, x, y, a1, a2 = _problem()
    dead = (a1 == 5) | (a2 == 5)
    y = np.where(dead, 0, y)
    x = np.where(dead, 0, x)
    res = stefcal(x, y, a1, a2, 8, reference_antenna=[5, 0])
    assert res.flags[5] and not res.flags[np.arange(8) != 5].any()
    assert res.gains[5] == 1 and res.reference_antenna == 0
    np.testing.assert_allclose(np.abs(res.gains[:5]), np.abs(g[:5]), rtol=1e-6)


def test_too_few_antennas_or_baselines():
    _g, x, y, a1, a2 = _problem(n_ant=3)
    assert not stefcal(x, y, a1, a2, 3, min_baselines=2).flags.any()
    assert stefcal(x, y, a1, a2, 3, min_baselines=4).flags.all()  # CASA-like minblperant=4 needs 5 antennas


def test_no_data_and_nonconvergence_raise():
    _g, x, y, a1, a2 = _problem()
    with pytest.raises(CalibrationFailed, match="no unflagged data"):
        stefcal(x, np.zeros_like(y), a1, a2, 8)
    with pytest.raises(CalibrationFailed, match="did not converge"):
        stefcal(x, y, a1, a2, 8, max_iter=2, strict=True)
    res = stefcal(x, y, a1, a2, 8, max_iter=2)
    assert not res.converged and res.flags.all()
    with pytest.raises(CalibrationFailed, match="shapes"):
        stefcal(x[:-1], y, a1, a2, 8)


def test_reduce_baselines_matches_explicit_sums():
    rng = np.random.default_rng(1)
    shape = (5, 3, 4, 2)
    vis = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    model = rng.uniform(0.5, 2, (4, 1))
    w = rng.uniform(1, 2, shape)
    flag = rng.random(shape) < 0.2
    vis[0, 0, 0, 0] = np.nan
    flag[0, 0, 0, 0] = True
    index = np.array([0, 0, 1, 1, -1])
    x, y, n = reduce_baselines(vis, model, w, flag, index, 2, per_channel=False)
    assert x.shape == (2, 2, 3) and np.isfinite(x).all()
    good = ~flag
    sel = (index == 1)
    expect = np.sum((w * model * vis * good)[sel], axis=(0, 2))  # (bl, corr)
    np.testing.assert_allclose(x[1], expect.T)
    np.testing.assert_allclose(y[1], np.sum((w * model**2 * good)[sel], axis=(0, 2)).T)
    np.testing.assert_allclose(n[1], good[sel].sum(axis=(0, 2)).T)
    xc, _, _ = reduce_baselines(vis, model, w, flag, index, 2, per_channel=True)
    assert xc.shape == (2, 4, 2, 3)
    np.testing.assert_allclose(xc.sum(axis=1), x)


def test_reduce_baselines_in_blocks_of_integrations_and_with_a_phasor(monkeypatch):
    """The sums are taken a block of integrations at a time (memory): the same sums as all at once, and a
    per-integration phasor multiplied in block by block is the full model it stands for."""
    # the module, not the function of the same name the package exports
    stefcal_module = importlib.import_module("mousflow.science.calibration.stefcal")

    rng = np.random.default_rng(7)
    shape = (11, 6, 5, 2)
    vis = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    model = rng.uniform(0.5, 2, (5, 1))
    phasor = np.exp(1j * rng.uniform(-np.pi, np.pi, (11, 6, 2)))
    w = rng.uniform(1, 2, shape).astype(np.float32)
    flag = rng.random(shape) < 0.2
    index = np.array([0, 0, 1, 1, -1, 2, 2, 2, 0, 1, 3])
    whole = [reduce_baselines(vis, model[None, None] * phasor[:, :, None, :], w, flag, index, 3, per_channel=pc)
             for pc in (False, True)]
    monkeypatch.setattr(stefcal_module, "REDUCE_BLOCK_SAMPLES", 2 * 6 * 5 * 2)  # two integrations a block
    for pc, expected in zip((False, True), whole, strict=True):
        blocked = reduce_baselines(vis, model, w, flag, index, 3, per_channel=pc, phasor=phasor)
        for got, want in zip(blocked, expected, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    # integrations of no solution (-1, or an interval past the last) count nowhere
    in_solution = (index >= 0) & (index < 3)
    assert whole[0][2].sum() == (~flag[in_solution]).sum()
