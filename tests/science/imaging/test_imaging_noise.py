import numpy as np
import pytest

from mousflow.science.imaging import (
    briggs_weights,
    image_rms,
    make_dirty,
    natural_weights,
    plan_image,
    predicted_rms,
    robust_rms,
)


def test_predicted_rms_natural_is_radiometer_formula():
    w = np.full((100, 3), 4.0)
    assert predicted_rms(w, w) == pytest.approx(1 / np.sqrt(w.sum()))
    flag = np.zeros_like(w, dtype=bool)
    flag[:50] = True
    assert predicted_rms(w, w, flag) == pytest.approx(1 / np.sqrt(w[50:].sum()))
    per = predicted_rms(w, w, per_channel=True)
    np.testing.assert_allclose(per, 1 / np.sqrt(400.0))


def test_robust_rms_of_gaussian_samples():
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 2.5, 100_000)
    x[:500] = 1e3  # outliers (sources) barely matter
    assert robust_rms(x) == pytest.approx(2.5, rel=0.02)
    img = rng.normal(0.0, 1.0, (64, 64))
    exclude = np.zeros((64, 64), bool)
    exclude[:10] = True
    img[:10] = 50.0
    assert image_rms(img, exclude=exclude) == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("robust", [-2.0, 0.5, 2.0])
def test_noise_only_image_rms_matches_prediction(coverage_factory, complex_noise, robust):
    cov = coverage_factory(n_ant=12, n_time=30, n_chan=4)
    rng = np.random.default_rng(11)
    shape = (cov.uvw.shape[0], cov.freq.size)
    sigma = rng.uniform(0.5, 1.5, size=shape)  # unequal weights exercise the general formula
    vis = complex_noise(rng, shape, sigma)
    weight = 1.0 / sigma**2
    plan = plan_image(cov.uvw, cov.freq, cov.dish, weight=weight, robust=robust)
    npix = 2 * plan.npix  # a larger field: more independent beams for the rms estimate
    iw = briggs_weights(cov.uvw, cov.freq, weight, None, npix, plan.cell_rad, robust)
    img = make_dirty(vis, cov.uvw, cov.freq, iw, npix, plan.cell_rad)
    pred = predicted_rms(weight, iw)
    assert image_rms(img) == pytest.approx(pred, rel=0.1)
    assert np.std(img) == pytest.approx(pred, rel=0.1)
    # natural weighting is the most sensitive
    assert pred >= predicted_rms(weight, natural_weights(cov.uvw, cov.freq, weight)) * (1 - 1e-12)


def test_predicted_rms_summed_in_blocks_of_rows_is_the_formula(monkeypatch):
    """Summed a few rows at a time (PREDICTION_BLOCK_SAMPLES), with flags, zero and negative weights and float32
    imaging weights: the radiometer formula over the usable samples, whole and per channel."""
    from mousflow.science.imaging import noise

    monkeypatch.setattr(noise, "PREDICTION_BLOCK_SAMPLES", 7)
    rng = np.random.default_rng(11)
    w = rng.uniform(0.5, 2.0, (101, 4))
    w[3, 1] = 0.0
    w[7, 2] = -1.0
    iw = (w * rng.uniform(0.2, 1.0, w.shape)).astype(np.float32)
    flag = rng.random(w.shape) < 0.1
    ok = (w > 0) & (iw > 0) & ~flag
    x = np.where(ok, iw.astype(np.float64), 0.0)
    var = np.where(ok, x * x / np.where(ok, w, 1.0), 0.0)
    assert predicted_rms(w, iw, flag) == pytest.approx(np.sqrt(var.sum()) / x.sum(), rel=1e-12)
    np.testing.assert_allclose(predicted_rms(w, iw, flag, per_channel=True),
                               np.sqrt(var.sum(axis=0)) / x.sum(axis=0), rtol=1e-12)
