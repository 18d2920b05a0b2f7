"""Image orientation and pixel <-> direction-cosine mapping shared by every imaging kernel.

Every image array that a public function of this package takes or returns is in *sky orientation*:

    image[..., y, x]   with   l = -(x - npix / 2) * cell,   m = (y - npix / 2) * cell

i.e. axis -1 (x, FITS axis 1) runs towards the west (RA decreasing, so RA increases to the left when the
array is displayed with origin="lower"), axis -2 (y, FITS axis 2) runs towards the north, and the phase
centre is exactly on pixel (npix / 2, npix / 2) (0-based). This is the order astropy.io.fits expects for a
plane of an RA---SIN / DEC--SIN image with CDELT1 < 0 (see `wcs.image_wcs`). Images are square with an even
npix.

ducc0.wgridder uses a different layout: its array axis 0 is l (east), axis 1 is m, and its pixel
npix / 2 + a along axis 0 is at l = a * cell. Only `gridding` talks to ducc0; it converts with `to_sky` /
`to_ducc` and shifts ducc0's image centre by one pixel in l (center_x = cell) so that, after the flip, the
phase centre lands on x = npix / 2 and the FITS reference pixel is the same on both axes.
"""

from __future__ import annotations

import numpy as np


def to_sky(ducc_image: np.ndarray) -> np.ndarray:
    """ducc0 layout (..., l, m) -> sky orientation (..., y=m, x=-l). Returns a view."""
    return np.flip(np.swapaxes(ducc_image, -1, -2), axis=-1)


def to_ducc(sky_image: np.ndarray) -> np.ndarray:
    """Sky orientation (..., y, x) -> ducc0 layout (..., l, m). Returns a view (inverse of `to_sky`)."""
    return np.swapaxes(np.flip(sky_image, axis=-1), -1, -2)


def pixel_to_lm(x, y, npix: int, cell_rad: float):
    """Direction cosines (l east, m north) of (possibly fractional) pixel coordinates (x, y)."""
    c = npix // 2
    return -(np.asarray(x, dtype=np.float64) - c) * cell_rad, (np.asarray(y, dtype=np.float64) - c) * cell_rad


def lm_to_pixel(l, m, npix: int, cell_rad: float):
    """Fractional pixel coordinates (x, y) of direction cosines (l, m); inverse of `pixel_to_lm`."""
    c = npix // 2
    return c - np.asarray(l, dtype=np.float64) / cell_rad, c + np.asarray(m, dtype=np.float64) / cell_rad


def lm_grids(npix: int, cell_rad: float) -> tuple[np.ndarray, np.ndarray]:
    """(l, m) of every pixel, each (npix, npix) in sky orientation."""
    idx = np.arange(npix, dtype=np.float64)
    l, m = pixel_to_lm(idx[None, :], idx[:, None], npix, cell_rad)
    return np.broadcast_to(l, (npix, npix)), np.broadcast_to(m, (npix, npix))
