"""Automatic CLEAN mask, a simplified form of CASA's auto-multithresh.

Each major cycle, pixels of the residual above max(noise_threshold x rms, sidelobe_threshold x max PSF
sidelobe x peak residual) are taken as emission, plus the island of the brightest pixel down to half its
value (if above the noise threshold). Islands smaller than min_beam_fraction of a beam are dropped (noise
spikes), the rest are grown by `grow_beams` x the beam FWHM (so CLEAN reaches the wings of the emission) and
added to the mask of the previous cycles; finally every island is extended over the connected pixels above
low_noise_threshold x rms (the wings of extended emission). Only positive emission seeds the mask (negative
features in a residual are artefacts), and the mask stays inside pb >= pblimit when a primary-beam pattern
is given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from mousflow.science.imaging.beam import Beam


@dataclass(frozen=True)
class AutoMaskParams:
    noise_threshold: float = 4.25
    sidelobe_threshold: float = 1.25
    min_beam_fraction: float = 0.3
    grow_beams: float = 0.5
    low_noise_threshold: float | None = 2.0
    pblimit: float = 0.2


def disk_structure(radius_pix: float) -> np.ndarray:
    """A disk of `radius_pix` pixels, the structuring element that grows a mask by that radius."""
    r = max(int(np.ceil(radius_pix)), 1)
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    return (x * x + y * y) <= radius_pix * radius_pix + 1e-9


def auto_mask(residual: np.ndarray, rms: float, beam: Beam, cell_rad: float, *, psf_sidelobe: float = 0.0,
              pb: np.ndarray | None = None, prior: np.ndarray | None = None,
              params: AutoMaskParams | None = None) -> np.ndarray:
    """Boolean mask (same shape as residual, sky orientation) of the emission found in `residual`.

    rms is the noise of the residual (e.g. `noise.image_rms`); prior is the mask so far, which is kept.
    """
    params = params or AutoMaskParams()
    residual = np.asarray(residual, dtype=np.float64)
    valid = np.isfinite(residual)
    if pb is not None:
        valid &= np.asarray(pb) >= params.pblimit
    peak = float(np.max(np.abs(residual[valid]))) if np.any(valid) else 0.0
    res = np.where(valid, residual, 0.0)
    noise_thr = params.noise_threshold * rms
    # No cap below the peak on the sidelobe term: with the ~0.7 sidelobes of a small array a cap lets the
    # sidelobes of the brightest source into the mask, and CLEAN then moves flux there.
    thresh = max(noise_thr, params.sidelobe_threshold * psf_sidelobe * peak)
    seed = res > thresh
    top = np.unravel_index(np.argmax(res), res.shape)
    if res[top] > noise_thr:
        # The brightest pixel is emission whatever the sidelobe threshold says: seed its island down to
        # half its value, so that it survives the size cut (a Gaussian above a fraction t of its peak
        # covers ln(1/t) beams) and the mask is never empty while there is significant emission.
        tip, _ = ndimage.label(res > max(noise_thr, 0.5 * res[top]))
        seed |= tip == tip[top]
    labels, n = ndimage.label(seed)
    if n:
        sizes = np.bincount(labels.ravel())
        keep = sizes >= params.min_beam_fraction * beam.area_pixels(cell_rad)
        keep[0] = False
        if res[top] > noise_thr:
            keep[labels[top]] = True
        seed = keep[labels]
    if np.any(seed) and params.grow_beams > 0:
        seed = ndimage.binary_dilation(seed, structure=disk_structure(params.grow_beams * beam.bmaj_rad / cell_rad))
    mask = seed & valid
    if prior is not None:
        mask |= np.asarray(prior, dtype=bool)
    if params.low_noise_threshold is not None and np.any(mask):
        # extend every island over the connected emission above the low threshold (extended wings)
        mask = ndimage.binary_propagation(mask, mask=mask | (res > params.low_noise_threshold * rms))
    return mask
