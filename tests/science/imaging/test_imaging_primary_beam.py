import numpy as np
import pytest

from mousflow.science.imaging import lm_to_pixel, pb_correct, pb_radius_rad, primary_beam
from mousflow.science.simulation.sky import primary_beam_gain
from mousflow.telescope.alma import primary_beam_fwhm_rad


def test_pattern_matches_the_simulator_at_pixel_centres():
    npix, cell, f, d = 128, 0.5 / 206265, 100e9, 12.0
    pb = primary_beam(npix, cell, f, d)
    assert pb[64, 64] == 1.0
    for dx, dy in [(10, 0), (-7, 23), (40, -31)]:
        l, m = -dx * cell, dy * cell
        assert pb[64 + dy, 64 + dx] == pytest.approx(float(primary_beam_gain(l, m, np.array([f]), d)[0]))


def test_mfs_pattern_is_the_weighted_mean_over_channels():
    npix, cell, d = 64, 1.0 / 206265, 12.0
    f = np.array([90e9, 110e9])
    pb = primary_beam(npix, cell, f, d, channel_weight=[1.0, 3.0])
    expect = (primary_beam(npix, cell, f[0], d) + 3 * primary_beam(npix, cell, f[1], d)) / 4
    np.testing.assert_allclose(pb, expect)


def test_half_power_at_half_fwhm_and_pblimit_radius():
    f, d = 230e9, 12.0
    fwhm = primary_beam_fwhm_rad(f, d)
    npix = 256
    cell = fwhm / 100
    pb = primary_beam(npix, cell, f, d)
    x, y = lm_to_pixel(0.0, fwhm / 2, npix, cell)
    assert pb[int(y), int(x)] == pytest.approx(0.5, rel=1e-9)
    r = pb_radius_rad(f, d, 0.2)
    x, y = lm_to_pixel(r, 0.0, npix, cell)
    assert np.interp(x, [np.floor(x), np.ceil(x)], pb[128, [int(np.floor(x)), int(np.ceil(x))]]) == pytest.approx(
        0.2, rel=1e-3)


def test_pb_correct_restores_flux_and_blanks_outside_limit():
    pb = np.array([[1.0, 0.5], [0.25, 0.1]])
    img = np.array([[2.0, 1.0], [0.5, 0.3]])
    out = pb_correct(img, pb, 0.2)
    np.testing.assert_allclose(out[~np.isnan(out)], [2.0, 2.0, 2.0])
    assert np.isnan(out[1, 1])
    cube = pb_correct(np.stack([img, 2 * img]), pb)
    assert cube.shape == (2, 2, 2) and cube[1, 0, 1] == 4.0
