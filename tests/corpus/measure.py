"""Measuring a processed corpus case against its known sky: the continuum's point sources, the spectral line's
integrated flux and position, the QA2 verdict and the continuum's rms."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from astropy.wcs import WCS
from imported_sky import measure_sources

from mousflow.science.geometry import radec_to_lm
from mousflow.science.imaging import Beam, fit_point_source
from mousflow.stages.image_store import ImageStore, attrs_to_header
from mousflow.storage.location import Location

# Channels summed into the line's integrated-intensity map: the line's known centre (LSRK) +- 3 FWHM (the
# Gaussian is below 1e-10 of its peak there) + 15 MHz, more than the LSRK-TOPO shift at 100 GHz (< 30 km/s).
LINE_HALF_WIDTH_FWHM = 3.0
DOPPLER_ALLOWANCE_HZ = 15.0e6


def line_window_cube(run_root: Path, window_name: str) -> ImageStore:
    (path,) = [p for p in (run_root / "imaging").glob("cube_*.zarr") if p.name.startswith(f"cube_{window_name}")]
    return ImageStore(Location.of(path))


def measure_line(run_root: Path, window_name: str, line: dict) -> dict:
    """The line source's integrated flux (Jy Hz) and position from the line window's cube: the channels around
    the line summed into one integrated-intensity map (sum of channel images x channel width), and a point
    source fitted there at the known position with the channels' mean beam. A map, not channel-by-channel
    fits: a fit in a channel of the line's faint wings finds the brightest noise peak and biases the sum up."""
    store = line_window_cube(run_root, window_name)
    attrs = store.attrs
    header = attrs_to_header(attrs["header"])
    cube = store.read("image")
    n_chan = cube.shape[0]
    freq = header["CRVAL3"] + (np.arange(n_chan) + 1 - header["CRPIX3"]) * header["CDELT3"]
    width = abs(header["CDELT3"])
    half = LINE_HALF_WIDTH_FWHM * line["fwhm_hz"] + DOPPLER_ALLOWANCE_HZ
    chans = np.flatnonzero(np.abs(freq - line["centre_hz"]) <= half)
    moment0 = np.nansum(np.nan_to_num(cube[chans]), axis=0) * width
    beams = np.array([attrs["beams"][c] for c in chans])
    beam = Beam(*np.mean(beams, axis=0))
    cell = math.radians(abs(header["CDELT1"]))
    ra0, dec0 = math.radians(header["CRVAL1"]), math.radians(header["CRVAL2"])
    l, m = radec_to_lm(math.radians(line["ra_deg"]), math.radians(line["dec_deg"]), ra0, dec0)
    fit = fit_point_source(moment0, beam, cell, float(l), float(m))
    ra, dec = WCS(header).celestial.pixel_to_world_values(fit.x, fit.y)
    offset = math.hypot((ra - line["ra_deg"]) * math.cos(math.radians(dec)), dec - line["dec_deg"]) * 3600
    beam_arcsec = math.degrees(beam.bmaj_rad) * 3600
    return {"flux_ratio": fit.flux / line["integrated_jy_hz"], "offset_beams": offset / beam_arcsec,
            "channels": [int(chans[0]), int(chans[-1])],
            "centre_channel": int(np.argmin(np.abs(freq - line["centre_hz"]))),
            "pipeline_line_channels": attrs.get("line_channels", [])}


def figures(run_root: Path, truth: dict, line_window: str | None) -> dict:
    """Everything the corpus reports for one processed case."""
    qa2 = json.loads((run_root / "products" / "qa2.json").read_text())
    (goal,) = qa2["goals"]
    out = {"qa2": qa2["verdict"], "qa2_reasons": qa2["reasons"], "rms_ratio": goal["rms_ratio"],
           "beam_arcsec": goal["beam_arcsec"], "rms_jy": goal["rms_jy"],
           "sources": [{"name": n, "flux_ratio": r, "offset_beams": o} for n, r, o in measure_sources(run_root, truth)]}
    if line_window is not None:
        out["line"] = measure_line(run_root, line_window, truth["line"])
    return out
