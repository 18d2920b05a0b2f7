import math

import numpy as np
import pytest

from mousflow.science.imaging import Beam, fit_beam, gaussian_image, max_sidelobe
from mousflow.science.imaging.beam import quadratic_form

CELL = 1e-6


@pytest.mark.parametrize("pa_deg", [30.0, -60.0, 0.0, 89.0])
def test_fit_recovers_a_known_gaussian(pa_deg):
    truth = Beam(10 * CELL, 6 * CELL, math.radians(pa_deg))
    psf = gaussian_image(truth, (128, 128), CELL)
    fit = fit_beam(psf, CELL)
    assert fit.bmaj_rad == pytest.approx(truth.bmaj_rad, rel=1e-3)
    assert fit.bmin_rad == pytest.approx(truth.bmin_rad, rel=1e-3)
    assert math.degrees(fit.bpa_rad) == pytest.approx(pa_deg, abs=0.1)


def test_fit_of_a_noisy_gaussian_is_within_a_percent():
    truth = Beam(7.3 * CELL, 5.1 * CELL, math.radians(-25.0))
    rng = np.random.default_rng(0)
    psf = gaussian_image(truth, (96, 96), CELL) + rng.normal(0, 0.003, (96, 96))
    psf[48, 48] = 1.0
    fit = fit_beam(psf, CELL)
    assert fit.bmaj_rad == pytest.approx(truth.bmaj_rad, rel=0.01)
    assert fit.bmin_rad == pytest.approx(truth.bmin_rad, rel=0.01)
    assert math.degrees(fit.bpa_rad) == pytest.approx(-25.0, abs=1.0)


def test_position_angle_is_east_of_north_in_sky_orientation():
    # Build the image pixel by pixel, independently of the package: elongated towards the north-east,
    # i.e. towards +y (north) and -x (east, since x runs west).
    n, c = 64, 32
    y, x = np.mgrid[0:n, 0:n]
    east, north = -(x - c), (y - c)
    along = (east + north) / math.sqrt(2)
    across = (east - north) / math.sqrt(2)
    img = np.exp(-4 * math.log(2) * ((along / 12.0) ** 2 + (across / 5.0) ** 2))
    fit = fit_beam(img, CELL)
    assert math.degrees(fit.bpa_rad) == pytest.approx(45.0, abs=0.1)
    assert fit.bmaj_rad == pytest.approx(12 * CELL, rel=1e-3)
    # north-south elongation is PA 0; east-west is PA 90
    img = np.exp(-4 * math.log(2) * ((north / 12.0) ** 2 + (east / 5.0) ** 2))
    assert math.degrees(fit_beam(img, CELL).bpa_rad) == pytest.approx(0.0, abs=0.1)
    img = np.exp(-4 * math.log(2) * ((east / 12.0) ** 2 + (north / 5.0) ** 2))
    assert abs(math.degrees(fit_beam(img, CELL).bpa_rad)) == pytest.approx(90.0, abs=0.1)


def test_quadratic_form_and_header_cards():
    b = Beam(math.radians(1 / 3600), math.radians(0.5 / 3600), math.radians(20))
    a, bb, c = quadratic_form(b)
    assert a * c - bb * bb > 0
    cards = b.header_cards()
    assert cards["BMAJ"] == pytest.approx(1 / 3600) and cards["BPA"] == pytest.approx(20.0)
    assert b.area_sr == pytest.approx(math.pi * b.bmaj_rad * b.bmin_rad / (4 * math.log(2)))


def test_gaussian_has_unit_peak_and_expected_sum():
    b = Beam(8 * CELL, 5 * CELL, 0.3)
    g = gaussian_image(b, (128, 128), CELL)
    assert g[64, 64] == 1.0
    assert g.sum() == pytest.approx(b.area_pixels(CELL), rel=1e-6)


def test_max_sidelobe_of_a_gaussian_plus_ring():
    b = Beam(6 * CELL, 6 * CELL, 0.0)
    img = gaussian_image(b, (128, 128), CELL)
    y, x = np.mgrid[0:128, 0:128]
    r = np.hypot(x - 64, y - 64)
    img = img - 0.2 * np.exp(-0.5 * ((r - 12) / 1.5) ** 2)
    assert max_sidelobe(img, fit_beam(img, CELL), CELL) == pytest.approx(0.2, abs=0.01)
