import math

import numpy as np
import pytest
from scipy.signal import fftconvolve

from mousflow.science.imaging import Beam, convolve_with_beam, restore
from mousflow.science.imaging.beam import gaussian_image

CELL = math.radians(0.2 / 3600)
BEAM = Beam(math.radians(1.3 / 3600), math.radians(0.8 / 3600), math.radians(35.0))


@pytest.mark.parametrize("shape", [(64, 64), (61, 90), (20, 20)])
def test_convolution_is_scipys_linear_convolution(shape):
    """The same as scipy.signal.fftconvolve(mode="same") with the beam's kernel, on any image shape (one
    smaller than the kernel too): zero padding, no wrap-around, the kernel's centre on each component."""
    rng = np.random.default_rng(5)
    model = np.where(rng.uniform(size=shape) > 0.9, rng.normal(size=shape), 0.0)
    half = min(math.ceil(2.0 * BEAM.bmaj_rad / CELL), max(shape))
    kernel = gaussian_image(BEAM, (2 * half + 1, 2 * half + 1), CELL, centre=(half, half))
    np.testing.assert_allclose(convolve_with_beam(model, BEAM, CELL), fftconvolve(model, kernel, mode="same"),
                               atol=1e-12)


def test_a_component_restores_to_the_beam_with_its_flux():
    model = np.zeros((96, 96))
    model[40, 55] = 2.0
    residual = np.full((96, 96), 1e-3)
    out = restore(model, residual, BEAM, CELL)
    assert out[40, 55] == pytest.approx(2.0 + 1e-3)
    assert out.sum() - residual.sum() == pytest.approx(2.0 * BEAM.area_pixels(CELL), rel=1e-6)
    # the kernel stops 2 FWHM out, where the Gaussian is 2^-16 of its peak
    np.testing.assert_allclose(out - residual, 2.0 * gaussian_image(BEAM, (96, 96), CELL, centre=(55, 40)),
                               atol=2.0 * 2.0**-16)
    # near an edge: what falls beyond it is lost, nothing comes back on the other side
    edge = np.zeros((96, 96))
    edge[0, 0] = 1.0
    assert np.all(np.abs(convolve_with_beam(edge, BEAM, CELL)[60:, 60:]) < 1e-12)
