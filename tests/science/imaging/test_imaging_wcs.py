import io
import math

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS

from mousflow.science.geometry import lm_to_radec
from mousflow.science.imaging import Beam, beams_table, celestial_wcs, image_header, image_wcs, pixel_to_lm

RA0, DEC0 = math.radians(150.0), math.radians(-30.0)
CELL = math.radians(0.3 / 3600)
NPIX = 128


def test_pixels_map_to_the_same_sky_as_the_geometry_module():
    w = celestial_wcs(NPIX, CELL, RA0, DEC0)
    assert w.wcs.cdelt[0] < 0 < w.wcs.cdelt[1]
    for x, y in [(64, 64), (10.3, 100.7), (120, 3)]:
        l, m = pixel_to_lm(x, y, NPIX, CELL)
        ra, dec = lm_to_radec(l, m, RA0, DEC0)
        sky = w.pixel_to_world(x, y)
        truth = SkyCoord(ra, dec, unit="rad")
        assert sky.separation(truth).rad < 1e-3 * CELL


def test_ra_increases_to_the_left_and_dec_upwards():
    w = celestial_wcs(NPIX, CELL, RA0, DEC0)
    c = w.pixel_to_world(64, 64)
    left = w.pixel_to_world(60, 64)
    up = w.pixel_to_world(64, 68)
    assert left.ra.deg > c.ra.deg and up.dec.deg > c.dec.deg


def test_header_round_trips_through_fits_with_beam_and_spectral_axis():
    freq = 230e9 + 0.5e6 * np.arange(5)
    beam = Beam(math.radians(1.2 / 3600), math.radians(0.8 / 3600), math.radians(-40))
    h = image_header(NPIX, CELL, RA0, DEC0, freq, beam, object_name="target", rest_freq_hz=230.538e9)
    data = np.zeros((1, freq.size, NPIX, NPIX), dtype=np.float32)
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(data, h), beams_table([beam] * freq.size)]).writeto(buf)
    buf.seek(0)
    with fits.open(buf) as hdul:
        hh = hdul[0].header
        assert hh["BMAJ"] == pytest.approx(1.2 / 3600) and hh["BMIN"] == pytest.approx(0.8 / 3600)
        assert hh["BPA"] == pytest.approx(-40.0)
        assert hh["BUNIT"] == "Jy/beam" and hh["CTYPE1"] == "RA---SIN" and hh["CTYPE4"] == "STOKES"
        w = WCS(hh)
        assert hdul["BEAMS"].data["BMAJ"][3] == pytest.approx(1.2, rel=1e-6)
    world = w.pixel_to_world(64, 64, 3, 0)
    assert world[1].to_value("Hz") == pytest.approx(freq[3])
    assert world[0].separation(SkyCoord(RA0, DEC0, unit="rad")).arcsec < 1e-6


def test_mfs_plane_needs_bandwidth_and_uneven_cube_is_refused():
    w = image_wcs(NPIX, CELL, RA0, DEC0, 100e9, channel_width_hz=2e9)
    assert w.wcs.cdelt[2] == 2e9
    with pytest.raises(ValueError):
        image_wcs(NPIX, CELL, RA0, DEC0, 100e9)
    with pytest.raises(ValueError):
        image_wcs(NPIX, CELL, RA0, DEC0, np.array([1e11, 1.1e11, 1.3e11]))
