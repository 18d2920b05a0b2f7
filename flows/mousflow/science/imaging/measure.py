"""Measuring a compact source in a restored image: a beam-shaped Gaussian fitted for flux and position.

The peak *pixel* of a restored image is a biased flux and position estimate: at 5 pixels per beam a source
half a pixel off a pixel centre in both axes reads up to ~5 % low and 0.07 beam off per axis. Fitting the
restoring beam's shape (amplitude and centre free) on the pixels around the peak removes both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from mousflow.science.imaging.beam import Beam, quadratic_form
from mousflow.science.imaging.coords import lm_to_pixel, pixel_to_lm


@dataclass(frozen=True)
class SourceFit:
    flux: float
    """Peak of the fitted beam-shaped Gaussian: a point source's flux density (in the image's units)."""
    l: float
    m: float
    x: float
    y: float


def fit_point_source(image: np.ndarray, beam: Beam, cell_rad: float, l_guess: float, m_guess: float, *,
                     search_beams: float = 1.0, fit_beams: float = 0.6) -> SourceFit:
    """Fit a beam-shaped Gaussian to the brightest pixel within search_beams x bmaj of (l_guess, m_guess),
    using the pixels within fit_beams x bmaj of it. image is (npix, npix) in sky orientation."""
    image = np.asarray(image, dtype=np.float64)
    npix = image.shape[-1]
    x0, y0 = lm_to_pixel(l_guess, m_guess, npix, cell_rad)
    yy, xx = np.mgrid[0:npix, 0:npix]
    r_search = search_beams * beam.bmaj_rad / cell_rad
    near = ((xx - x0) ** 2 + (yy - y0) ** 2 <= r_search**2) & np.isfinite(image)
    if not np.any(near):
        raise ValueError("no finite pixels near the guessed position")
    k = np.argmax(np.where(near, image, -np.inf))
    py, px = np.unravel_index(k, image.shape)
    r_fit = fit_beams * beam.bmaj_rad / cell_rad
    sel = ((xx - px) ** 2 + (yy - py) ** 2 <= r_fit**2) & np.isfinite(image)
    fx, fy, val = xx[sel].astype(float), yy[sel].astype(float), image[sel]
    a, b, c = (q * cell_rad**2 for q in quadratic_form(beam))  # per pixel^2, with l = -x, m = y

    def model(p):
        amp, cx, cy = p
        dl = -(fx - cx)
        dm = fy - cy
        return amp * np.exp(-(a * dl * dl + 2 * b * dl * dm + c * dm * dm))

    p = least_squares(lambda p: model(p) - val, [image[py, px], float(px), float(py)]).x
    l, m = pixel_to_lm(p[1], p[2], npix, cell_rad)
    return SourceFit(flux=float(p[0]), l=float(l), m=float(m), x=float(p[1]), y=float(p[2]))
