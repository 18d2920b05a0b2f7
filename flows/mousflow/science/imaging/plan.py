"""Image geometry from the data: cell size and image size by the ALMA pipeline's heuristics.

- cell = (minor axis of the synthesised beam) / 5, the beam being fitted to a quick PSF made with the
  weighting that will be used for the image (robust 0.5 by default) at the highest frequency's resolution;
  the cell is rounded down to 3 significant figures in arcsec.
- The image covers the primary beam down to pblimit (0.2) at the lowest frequency, with an even,
  FFT-friendly (2^a 3^b 5^c) number of pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mousflow.science.imaging.beam import Beam, fit_beam
from mousflow.science.imaging.coords import lm_to_pixel, pixel_to_lm
from mousflow.science.imaging.gridding import make_psf
from mousflow.science.imaging.primary_beam import DEFAULT_PBLIMIT, pb_radius_rad
from mousflow.science.imaging.weighting import briggs_weights, rows_with_weight
from mousflow.telescope.alma import SPEED_OF_LIGHT, primary_beam_fwhm_rad

RAD_TO_ARCSEC = 180.0 / math.pi * 3600.0


def good_size(n: int) -> int:
    """Smallest even m >= max(n, 32) whose prime factors are 2, 3 and 5 only."""
    m = max(math.ceil(n), 32)
    m += m % 2
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 2


def _round_down_sig(x: float, digits: int) -> float:
    e = math.floor(math.log10(x)) - digits + 1
    return math.floor(x / 10.0**e * (1 + 1e-12)) * 10.0**e


@dataclass(frozen=True)
class ImagingPlan:
    npix: int
    """Square image, even; the phase centre is on pixel (npix/2, npix/2)."""
    cell_rad: float
    robust: float
    dish_diameter_m: float
    pblimit: float
    freq_min_hz: float
    freq_max_hz: float
    expected_beam: Beam
    """Beam fitted to the quick PSF of all the channels given to `plan_image`."""

    @property
    def fov_rad(self) -> float:
        return self.npix * self.cell_rad

    @property
    def cell_arcsec(self) -> float:
        return self.cell_rad * RAD_TO_ARCSEC

    def pb_fwhm_rad(self, freq_hz: float) -> float:
        return primary_beam_fwhm_rad(freq_hz, self.dish_diameter_m)

    def pixel_to_lm(self, x, y):
        return pixel_to_lm(x, y, self.npix, self.cell_rad)

    def lm_to_pixel(self, l, m):
        return lm_to_pixel(l, m, self.npix, self.cell_rad)


def plan_image(uvw_m, freq_hz, dish_diameter_m: float, *, weight=None, flag=None, robust: float = 0.5,
               pblimit: float = DEFAULT_PBLIMIT, cells_per_beam: float = 5.0, quick_npix: int = 256,
               max_npix: int = 8192, nthreads: int = 1) -> ImagingPlan:
    """Cell and image size for the data uvw_m (n_row, 3) m, freq_hz (n_chan,), weight/flag (n_row, n_chan).

    Plan a cube with the channels of its window only (the beam and the primary beam depend on frequency);
    plan the continuum with all the channels that go into it.
    """
    uvw_m = np.asarray(uvw_m, dtype=np.float64)
    freq = np.atleast_1d(np.asarray(freq_hz, dtype=np.float64))
    rows = rows_with_weight(weight, flag, (uvw_m.shape[0], freq.size))
    if not np.any(rows):
        raise ValueError("no unflagged data to plan an image from")
    uvmax = float(np.max(np.hypot(uvw_m[rows, 0], uvw_m[rows, 1]))) * freq.max() / SPEED_OF_LIGHT
    if uvmax <= 0:
        raise ValueError("all baselines have zero projected length")
    side = 2.0 * pb_radius_rad(freq.min(), dish_diameter_m, pblimit)

    # quick PSF: ~6 pixels per finest fringe, the image's weighting (its uv cell is 1 / field of view)
    cell0 = 1.0 / (6.0 * uvmax)
    n_field = max(round(side / cell0), 1)
    # the rows with data only (a copy of the weights) where some have none
    def used(a):
        return a if a is None or rows.all() else np.broadcast_to(np.asarray(a), (rows.size, freq.size))[rows]

    uvw_used = uvw_m if rows.all() else uvw_m[rows]
    iw = briggs_weights(uvw_used, freq, used(weight), used(flag), n_field, side / n_field, robust)
    psf = make_psf(uvw_used, freq, iw, quick_npix, cell0, nthreads=nthreads)
    beam = fit_beam(psf, cell0, window=quick_npix // 4)

    cell = _round_down_sig(beam.bmin_rad / cells_per_beam * RAD_TO_ARCSEC, 3) / RAD_TO_ARCSEC
    npix = good_size(math.ceil(side / cell))
    if npix > max_npix:
        raise ValueError(f"image of {npix} pixels exceeds max_npix={max_npix}")
    return ImagingPlan(npix=npix, cell_rad=cell, robust=robust, dish_diameter_m=float(dish_diameter_m),
                       pblimit=pblimit, freq_min_hz=float(freq.min()), freq_max_hz=float(freq.max()),
                       expected_beam=beam)
