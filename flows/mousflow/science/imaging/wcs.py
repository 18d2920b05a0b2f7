"""astropy WCS and FITS header for images in this package's sky orientation.

A plane (npix, npix) from this package maps to FITS axes 1 (RA---SIN, x, CDELT1 = -cell < 0) and
2 (DEC--SIN, y, CDELT2 = +cell), reference pixel CRPIX1 = CRPIX2 = npix/2 + 1 (1-based) at the phase centre.
The full header has 4 axes in FITS order RA, DEC, FREQ, STOKES, so the numpy array written to FITS is
(n_stokes=1, n_chan, npix, npix): `cube[None]` for a (n_chan, npix, npix) cube, `plane[None, None]` for an
MFS plane. SIN with no PV terms is the orthographic projection of `mousflow.science.geometry.radec_to_lm`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from mousflow.science.imaging.beam import Beam

if TYPE_CHECKING:
    from astropy.io import fits
    from astropy.wcs import WCS

# astropy is imported where a WCS or a FITS header is made, not with this package: an imaging worker imaging cube
# chunks makes neither, and astropy.wcs with astropy.io.fits is ~25 MB of its resident memory.

STOKES_CODES = {"I": 1, "Q": 2, "U": 3, "V": 4}


def _spectral_axis(freq_hz, channel_width_hz):
    freq = np.atleast_1d(np.asarray(freq_hz, dtype=np.float64))
    if freq.size == 1:
        if channel_width_hz is None:
            raise ValueError("a single plane needs channel_width_hz (its bandwidth)")
        return float(freq[0]), float(channel_width_hz)
    step = np.diff(freq)
    if not np.allclose(step, step[0], rtol=1e-6, atol=1e-3):
        raise ValueError("cube channels must be evenly spaced for a linear FREQ axis")
    return float(freq[0]), float(step.mean())


def image_wcs(npix: int, cell_rad: float, ra0_rad: float, dec0_rad: float, freq_hz, *,
              channel_width_hz: float | None = None, stokes: str = "I", specsys: str = "TOPOCENT") -> WCS:
    """4-axis WCS (RA---SIN, DEC--SIN, FREQ, STOKES) of an image centred on (ra0, dec0).

    freq_hz: the channel centres of a cube (evenly spaced) or one frequency for an MFS plane, in which case
    channel_width_hz is its bandwidth.
    """
    from astropy.wcs import WCS

    f0, df = _spectral_axis(freq_hz, channel_width_hz)
    w = WCS(naxis=4)
    w.wcs.ctype = ["RA---SIN", "DEC--SIN", "FREQ", "STOKES"]
    w.wcs.cunit = ["deg", "deg", "Hz", ""]
    w.wcs.crpix = [npix // 2 + 1, npix // 2 + 1, 1, 1]
    w.wcs.crval = [math.degrees(ra0_rad) % 360.0, math.degrees(dec0_rad), f0, STOKES_CODES[stokes]]
    w.wcs.cdelt = [-math.degrees(cell_rad), math.degrees(cell_rad), df, 1]
    w.wcs.radesys = "ICRS"
    w.wcs.equinox = 2000.0
    w.wcs.specsys = specsys
    w.wcs.set()
    return w


def celestial_wcs(npix: int, cell_rad: float, ra0_rad: float, dec0_rad: float) -> WCS:
    """2-axis (RA---SIN, DEC--SIN) WCS of one plane."""
    return image_wcs(npix, cell_rad, ra0_rad, dec0_rad, 1e11, channel_width_hz=1.0).celestial


def image_header(npix: int, cell_rad: float, ra0_rad: float, dec0_rad: float, freq_hz, beam: Beam | None, *,
                 channel_width_hz: float | None = None, stokes: str = "I", specsys: str = "TOPOCENT",
                 bunit: str = "Jy/beam", object_name: str | None = None, rest_freq_hz: float | None = None,
                 extra: dict | None = None) -> fits.Header:
    """FITS header of an image: the WCS, BUNIT, and BMAJ/BMIN/BPA in degrees (omitted if beam is None, e.g.
    for a model in Jy/pixel or a primary-beam image)."""
    h = image_wcs(npix, cell_rad, ra0_rad, dec0_rad, freq_hz, channel_width_hz=channel_width_hz, stokes=stokes,
                  specsys=specsys).to_header()
    h["BUNIT"] = bunit
    h["BTYPE"] = "Intensity"
    if beam is not None:
        for k, v in beam.header_cards().items():
            h[k] = v
    if object_name is not None:
        h["OBJECT"] = object_name
    if rest_freq_hz is not None:
        h["RESTFRQ"] = float(rest_freq_hz)
    for k, v in (extra or {}).items():
        h[k] = v
    return h


def beams_table(beams: list[Beam]) -> fits.BinTableHDU:
    """CASA-style BEAMS extension for a cube with one beam per channel (BMAJ/BMIN arcsec, BPA deg).

    Put it after the primary HDU and set CASAMBM = True in the primary header.
    """
    from astropy.io import fits

    bmaj = np.array([math.degrees(b.bmaj_rad) * 3600 for b in beams], dtype=np.float32)
    bmin = np.array([math.degrees(b.bmin_rad) * 3600 for b in beams], dtype=np.float32)
    bpa = np.array([math.degrees(b.bpa_rad) for b in beams], dtype=np.float32)
    cols = [
        fits.Column("BMAJ", "1E", unit="arcsec", array=bmaj),
        fits.Column("BMIN", "1E", unit="arcsec", array=bmin),
        fits.Column("BPA", "1E", unit="deg", array=bpa),
        fits.Column("CHAN", "1J", array=np.arange(len(beams), dtype=np.int32)),
        fits.Column("POL", "1J", array=np.zeros(len(beams), dtype=np.int32)),
    ]
    hdu = fits.BinTableHDU.from_columns(cols, name="BEAMS")
    hdu.header["NCHAN"] = len(beams)
    hdu.header["NPOL"] = 1
    return hdu
