import math

import numpy as np
import pytest

from mousflow.science.imaging import briggs_weights, fit_beam, good_size, make_psf, pb_radius_rad, plan_image
from mousflow.science.imaging.plan import RAD_TO_ARCSEC


def test_good_size_is_even_and_5_smooth():
    assert good_size(1) == 32
    assert good_size(121) == 128
    assert good_size(250) == 250
    assert good_size(251) == 256
    for n in range(32, 2000, 37):
        m = good_size(n)
        assert m >= n and m % 2 == 0
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        assert k == 1


def test_plan_follows_alma_heuristics(coverage, plan):
    beam = plan.expected_beam
    # cell = bmin / 5, rounded down to 3 significant figures in arcsec
    assert plan.cell_rad <= beam.bmin_rad / 5
    assert plan.cell_rad == pytest.approx(beam.bmin_rad / 5, rel=0.01)
    assert plan.cell_rad * RAD_TO_ARCSEC == pytest.approx(float(f"{plan.cell_arcsec:.3g}"), rel=1e-9)
    # the image covers the 0.2 level of the primary beam at the lowest frequency
    assert plan.fov_rad >= 2 * pb_radius_rad(coverage.freq.min(), coverage.dish, 0.2)
    assert plan.npix == good_size(plan.npix) and plan.npix % 2 == 0
    assert plan.fov_rad < 1.2 * 2 * pb_radius_rad(coverage.freq.min(), coverage.dish, 0.2)


def test_expected_beam_matches_the_psf_of_the_final_grid(coverage, plan):
    iw = briggs_weights(coverage.uvw, coverage.freq, None, None, plan.npix, plan.cell_rad, plan.robust)
    fit = fit_beam(make_psf(coverage.uvw, coverage.freq, iw, plan.npix, plan.cell_rad), plan.cell_rad)
    assert fit.bmaj_rad == pytest.approx(plan.expected_beam.bmaj_rad, rel=0.03)
    assert fit.bmin_rad == pytest.approx(plan.expected_beam.bmin_rad, rel=0.03)


def test_plan_scales_with_frequency(coverage):
    p1 = plan_image(coverage.uvw, coverage.freq, coverage.dish)
    p2 = plan_image(coverage.uvw, 2 * coverage.freq, coverage.dish)
    assert p2.cell_rad == pytest.approx(p1.cell_rad / 2, rel=0.02)
    assert abs(p2.npix - p1.npix) <= 0.1 * p1.npix


def test_flagged_rows_are_ignored(coverage):
    flag = np.zeros((coverage.uvw.shape[0], coverage.freq.size), dtype=bool)
    longest = np.hypot(coverage.uvw[:, 0], coverage.uvw[:, 1]) > 0.5 * np.hypot(coverage.uvw[:, 0],
                                                                               coverage.uvw[:, 1]).max()
    flag[longest] = True
    p = plan_image(coverage.uvw, coverage.freq, coverage.dish, flag=flag)
    full = plan_image(coverage.uvw, coverage.freq, coverage.dish)
    assert p.expected_beam.bmin_rad > 1.3 * full.expected_beam.bmin_rad
    with pytest.raises(ValueError):
        plan_image(coverage.uvw, coverage.freq, coverage.dish, flag=np.ones_like(flag))
    assert math.isfinite(p.cell_arcsec)
