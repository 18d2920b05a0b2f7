"""The analytic visibility predictor against ducc0's independent gridder, and basic physics."""

import numpy as np
import pytest
from ducc0.wgridder.experimental import dirty2vis

from mousflow.science.conventions import DUCC0_FLIP_W
from mousflow.science.simulation.sky import SkyComponent, SpectralLine, predict_visibilities
from mousflow.telescope.alma import SPEED_OF_LIGHT

RNG = np.random.default_rng(3)
UVW = np.column_stack([RNG.uniform(-400, 400, 300), RNG.uniform(-400, 400, 300), RNG.uniform(-50, 50, 300)])
FREQS = 100e9 + 15.625e6 * np.arange(16)


def test_unit_point_source_at_phase_centre_gives_its_flux_everywhere():
    vis = predict_visibilities([SkyComponent("p", 0.0, 0.0, 1.0, 100e9)], UVW, FREQS, None)
    np.testing.assert_allclose(vis, 1.0 + 0j, atol=1e-12)


def test_point_source_off_centre_matches_ducc0_dirty2vis():
    n, cell = 256, 2e-7
    img = np.zeros((n, n))
    ix, iy = 17, -9  # pixel offsets: axis 0 is l, axis 1 is m
    img[n // 2 + ix, n // 2 + iy] = 2.5
    ref = dirty2vis(uvw=UVW, freq=FREQS, dirty=img, pixsize_x=cell, pixsize_y=cell, epsilon=1e-10,
                    do_wgridding=True, divide_by_n=False, flip_w=DUCC0_FLIP_W)
    ours = predict_visibilities([SkyComponent("p", ix * cell, iy * cell, 2.5, 100e9)], UVW, FREQS, None)
    np.testing.assert_allclose(ours, ref, atol=1e-9)
    # ducc0's native w sign is the opposite one: without flip_w the w term's phase is reversed
    native = dirty2vis(uvw=UVW, freq=FREQS, dirty=img, pixsize_x=cell, pixsize_y=cell, epsilon=1e-10,
                       do_wgridding=True, divide_by_n=False)
    assert np.abs(native - ours).max() > 1e-6


def test_point_source_equals_direct_fourier_sum_with_w_term():
    l, m = 3.4e-6, -1.8e-6
    n = np.sqrt(1 - l * l - m * m)
    u, v, w = (UVW[:, i : i + 1] * FREQS[None] / SPEED_OF_LIGHT for i in range(3))
    direct = 2.5 * np.exp(-2j * np.pi * (u * l + v * m + w * (n - 1)))
    ours = predict_visibilities([SkyComponent("p", l, m, 2.5, 100e9)], UVW, FREQS, None)
    np.testing.assert_allclose(ours, direct, atol=1e-12)


def test_gaussian_matches_a_finely_sampled_image_through_ducc0():
    n, cell = 512, 2e-7
    fwhm_a, fwhm_b, pa = 1.0e-5, 6.0e-6, np.radians(30)
    comp = SkyComponent("g", 0.0, 0.0, 1.0, 100e9, major_rad=fwhm_a, minor_rad=fwhm_b, position_angle_rad=pa)
    l = (np.arange(n) - n // 2) * cell
    L, M = np.meshgrid(l, l, indexing="ij")
    # major axis at position angle pa east of north: along (sin pa, cos pa) in (l, m)
    a = L * np.sin(pa) + M * np.cos(pa)
    b = L * np.cos(pa) - M * np.sin(pa)
    s = 1 / np.sqrt(8 * np.log(2))
    img = np.exp(-0.5 * ((a / (fwhm_a * s)) ** 2 + (b / (fwhm_b * s)) ** 2))
    img /= img.sum()
    uvw = UVW * 0.3  # shorter baselines: the Gaussian is resolved but not to nothing
    uvw[:, 2] = 0
    ref = dirty2vis(uvw=uvw, freq=FREQS, dirty=img, pixsize_x=cell, pixsize_y=cell, epsilon=1e-10,
                    divide_by_n=False)
    ours = predict_visibilities([comp], uvw, FREQS, None)
    assert np.abs(ours).min() < 0.9  # resolved
    np.testing.assert_allclose(ours, ref, atol=2e-4)


def test_primary_beam_attenuates_by_half_at_half_power_radius():
    fwhm = 1.13 * SPEED_OF_LIGHT / 100e9 / 12.0
    comp = SkyComponent("p", fwhm / 2, 0.0, 1.0, 100e9)
    vis = predict_visibilities([comp], np.zeros((1, 3)), np.array([100e9]), 12.0)
    assert abs(vis[0, 0]) == pytest.approx(0.5, rel=1e-9)


def test_spectral_line_and_index():
    line = SpectralLine(centre_hz=FREQS[8], fwhm_hz=2 * 15.625e6, peak_jy=3.0)
    comp = SkyComponent("p", 0.0, 0.0, 1.0, FREQS[0], spectral_index=-1.0, line=line)
    spectrum = predict_visibilities([comp], np.zeros((1, 3)), FREQS, None)[0].real
    continuum = (FREQS / FREQS[0]) ** -1.0
    assert spectrum[8] - continuum[8] == pytest.approx(3.0)
    assert spectrum[0] == pytest.approx(1.0, abs=1e-6)


def test_uneven_channels_are_rejected():
    with pytest.raises(ValueError, match="evenly spaced"):
        predict_visibilities([SkyComponent("p", 1e-6, 0, 1, 1e11)], UVW, np.array([1e11, 1.1e11, 1.3e11]), None)
