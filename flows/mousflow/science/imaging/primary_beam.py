"""Primary-beam pattern and correction (ALMA: Gaussian, FWHM 1.13 lambda / D; pblimit 0.2 by default)."""

from __future__ import annotations

import numpy as np

from mousflow.science.imaging.coords import lm_grids
from mousflow.telescope.alma import primary_beam_fwhm_rad

DEFAULT_PBLIMIT = 0.2


def primary_beam(npix: int, cell_rad: float, freq_hz, dish_diameter_m: float, channel_weight=None) -> np.ndarray:
    """Power pattern (npix, npix), sky orientation, 1 at the phase centre.

    With several frequencies the pattern is their average weighted by `channel_weight` (the summed imaging
    weight of each channel; equal weights if None): that is the effective beam of an MFS image, in which a
    flat-spectrum source of S Jy appears with S x this pattern.
    """
    freq = np.atleast_1d(np.asarray(freq_hz, dtype=np.float64))
    cw = np.ones(freq.size) if channel_weight is None else np.asarray(channel_weight, dtype=np.float64)
    if cw.shape != freq.shape or cw.sum() <= 0:
        raise ValueError("channel_weight must be one non-negative value per frequency, not all zero")
    l, m = lm_grids(npix, cell_rad)
    r2 = l * l + m * m
    out = np.zeros((npix, npix))
    for f, c in zip(freq, cw, strict=True):
        if c > 0:
            fwhm = primary_beam_fwhm_rad(f, dish_diameter_m)
            out += c * np.exp(-4.0 * np.log(2.0) * r2 / fwhm**2)
    return out / cw.sum()


def pb_radius_rad(freq_hz: float, dish_diameter_m: float, level: float = DEFAULT_PBLIMIT) -> float:
    """Radius at which the Gaussian primary beam falls to `level`."""
    fwhm = primary_beam_fwhm_rad(freq_hz, dish_diameter_m)
    return 0.5 * fwhm * float(np.sqrt(np.log(1.0 / level) / np.log(2.0)))


def pb_correct(image, pb, pblimit: float = DEFAULT_PBLIMIT) -> np.ndarray:
    """image / pb where pb >= pblimit, NaN elsewhere. `image` may have leading axes (planes) over pb's."""
    image = np.asarray(image, dtype=np.float64)
    pb = np.asarray(pb, dtype=np.float64)
    good = pb >= pblimit
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(good, image / np.where(good, pb, 1.0), np.nan)
