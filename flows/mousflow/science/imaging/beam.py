"""Restoring beam: an elliptical Gaussian fitted to the main lobe of the PSF.

Angles: bmaj/bmin are FWHM in radians, bpa is the position angle of the major axis east of north (from +m
towards +l), in radians, normalised to (-pi/2, pi/2] as CASA does. Images are in sky orientation
(see `coords`): x runs west (l = -dx * cell), y north (m = dy * cell).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.optimize import least_squares

FOUR_LN2 = 4.0 * math.log(2.0)


@dataclass(frozen=True)
class Beam:
    bmaj_rad: float
    bmin_rad: float
    bpa_rad: float

    @property
    def area_sr(self) -> float:
        """Solid angle of the Gaussian (peak 1): pi bmaj bmin / (4 ln 2)."""
        return math.pi * self.bmaj_rad * self.bmin_rad / FOUR_LN2

    def area_pixels(self, cell_rad: float) -> float:
        return self.area_sr / cell_rad**2

    def header_cards(self) -> dict[str, float]:
        """BMAJ, BMIN, BPA in degrees, as FITS headers carry them."""
        return {"BMAJ": math.degrees(self.bmaj_rad), "BMIN": math.degrees(self.bmin_rad),
                "BPA": math.degrees(self.bpa_rad)}

    def scaled(self, factor: float) -> Beam:
        """The beam with both axes multiplied by factor (e.g. freq_ref / freq for another channel)."""
        return Beam(self.bmaj_rad * factor, self.bmin_rad * factor, self.bpa_rad)


def _normalise_pa(pa: float) -> float:
    pa = math.fmod(pa, math.pi)
    if pa <= -math.pi / 2:
        pa += math.pi
    elif pa > math.pi / 2:
        pa -= math.pi
    return pa


def quadratic_form(beam: Beam) -> tuple[float, float, float]:
    """(A, B, C) with G(l, m) = exp(-(A l^2 + 2 B l m + C m^2))."""
    ka = FOUR_LN2 / beam.bmaj_rad**2
    kb = FOUR_LN2 / beam.bmin_rad**2
    s, c = math.sin(beam.bpa_rad), math.cos(beam.bpa_rad)
    # major-axis unit vector (l, m) = (s, c); minor (c, -s)
    a = ka * s * s + kb * c * c
    b = ka * s * c - kb * c * s
    cc = ka * c * c + kb * s * s
    return a, b, cc


def beam_from_quadratic(a: float, b: float, c: float) -> Beam:
    vals, vecs = np.linalg.eigh(np.array([[a, b], [b, c]]))
    if vals[0] <= 0:
        raise ValueError("quadratic form is not positive definite: no Gaussian main lobe")
    major = vecs[:, 0]  # smallest curvature = widest axis
    bmaj = 2.0 * math.sqrt(math.log(2.0) / vals[0])
    bmin = 2.0 * math.sqrt(math.log(2.0) / vals[1])
    pa = math.atan2(major[0], major[1])
    return Beam(bmaj, bmin, _normalise_pa(pa))


def gaussian_image(beam: Beam, shape: tuple[int, int], cell_rad: float, centre: tuple[float, float] | None = None,
                   ) -> np.ndarray:
    """Gaussian of peak 1 on a (ny, nx) sky-orientation grid, centred on pixel centre=(x, y) (default n/2)."""
    ny, nx = shape
    cx, cy = (nx // 2, ny // 2) if centre is None else centre
    l = -(np.arange(nx) - cx)[None, :] * cell_rad
    m = (np.arange(ny) - cy)[:, None] * cell_rad
    a, b, c = quadratic_form(beam)
    return np.exp(-(a * l * l + 2 * b * l * m + c * m * m))


def main_lobe_mask(psf: np.ndarray, level: float) -> np.ndarray:
    """Pixels of the connected region of psf > level that contains the peak."""
    peak = np.unravel_index(np.argmax(psf), psf.shape)
    labels, _ = ndimage.label(psf > level * psf[peak])
    return labels == labels[peak]


def fit_beam(psf: np.ndarray, cell_rad: float, *, cutoff: float = 0.35, window: int | None = None) -> Beam:
    """Least-squares elliptical Gaussian (peak fixed at 1 on the PSF peak) fitted to the main lobe.

    The main lobe is the connected region above `cutoff` of the peak around the peak pixel. A linear fit of
    log(psf) gives the starting point; a nonlinear fit of the values themselves refines it. `window`
    restricts the search to that many pixels around the peak (default: the whole array).
    """
    psf = np.asarray(psf, dtype=np.float64)
    py, px = np.unravel_index(np.argmax(psf), psf.shape)
    if window is not None:
        y0, x0 = max(py - window, 0), max(px - window, 0)
        psf = psf[y0 : py + window + 1, x0 : px + window + 1]
        py, px = py - y0, px - x0
    psf = psf / psf[py, px]
    lobe = main_lobe_mask(psf, cutoff)
    yy, xx = np.nonzero(lobe)
    if yy.size < 5:
        raise ValueError("PSF main lobe has fewer than 5 pixels above the cutoff: the cell is too coarse")
    l = -(xx - px) * cell_rad
    m = (yy - py) * cell_rad
    val = psf[yy, xx]
    scale = 1.0 / cell_rad**2  # fit in pixel units for conditioning
    design = np.stack([l * l, 2 * l * m, m * m], axis=1) * scale
    sw = val  # weight log residuals by the value (approximates an unweighted fit of the values)
    coef, *_ = np.linalg.lstsq(design * sw[:, None], -np.log(val) * sw, rcond=None)

    def resid(p):
        return np.exp(-(design @ p)) - val

    try:
        coef = least_squares(resid, coef, method="lm").x
    except ValueError:  # too few points for lm: keep the linear fit
        pass
    return beam_from_quadratic(*(coef * scale))


def max_sidelobe(psf: np.ndarray, beam: Beam, cell_rad: float) -> float:
    """Largest |psf| / peak outside the main lobe (the region around the peak down to the first zero, at most
    out to where the fitted Gaussian falls to 1 %)."""
    psf = np.asarray(psf, dtype=np.float64)
    py, px = np.unravel_index(np.argmax(psf), psf.shape)
    psf = psf / psf[py, px]
    g = gaussian_image(beam, psf.shape, cell_rad, centre=(px, py))
    lobe = main_lobe_mask(psf, 0.0) & (g > 0.01)
    outside = np.abs(psf[~lobe])
    return float(outside.max()) if outside.size else 0.0
