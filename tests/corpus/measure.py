"""Measuring a processed corpus case against its known sky: the continuum's point sources, the spectral line's
integrated flux and position, the QA2 verdict and the continuum's rms."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from imported_sky import REFERENCE_HZ, measure_sources

from mousflow.science.geometry import radec_to_lm
from mousflow.science.imaging import Beam, fit_point_source
from mousflow.science.imaging.coords import pixel_to_lm
from mousflow.science.imaging.noise import robust_rms
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


# --- The same measurement for any imager's FITS (bench/compare_imagers.py: mousflow, CASA's tclean, WSClean) ---

# The rms is measured where the primary beam is above half its peak (as QA2 does), outside this many beams
# (major axis) of every known source.
SOURCE_EXCLUSION_BEAMS = 3.0


@dataclass
class FitsImage:
    """A FITS image or cube as (n_chan, ny, nx) sky-oriented planes, whichever imager wrote it: its channels'
    frequencies (Hz), one beam per channel (a BEAMS table, as CASA and mousflow write for cubes, else the header's
    BMAJ/BMIN/BPA) and its celestial WCS."""

    data: np.ndarray
    freq_hz: np.ndarray
    beams: list
    wcs: WCS
    cell_rad: float


def read_fits_image(paths) -> FitsImage:
    """One FITS file (mousflow's and CASA's images and cubes) or several single-channel files concatenated in
    frequency (WSClean's `-channels-out` writes one per channel). The Stokes axis may be before or after the
    spectral one (CASA: ra, dec, stokes, freq; mousflow and WSClean: ra, dec, freq, stokes)."""
    paths = [paths] if isinstance(paths, str | Path) else list(paths)
    planes, freqs, beams, wcs, cell = [], [], [], None, None
    for path in paths:
        with fits.open(path) as hdus:
            header = hdus[0].header
            data = np.asarray(hdus[0].data, dtype=np.float64)
            table = next((h for h in hdus[1:] if h.name == "BEAMS"), None)
            table = None if table is None else {k: np.asarray(table.data[k]) for k in ("BMAJ", "BMIN", "BPA")}
        with warnings.catch_warnings():  # astropy filling MJD-OBS and OBSGEO-* from CASA's and WSClean's cards
            warnings.simplefilter("ignore", FITSFixedWarning)
            w = WCS(header)
        spec = w.wcs.spec  # FITS axis index (0-based) of the spectral axis
        data = np.moveaxis(data, data.ndim - 1 - spec, 0)  # (n_chan, [stokes,] ny, nx)
        data = data.reshape(data.shape[0], data.shape[-2], data.shape[-1])  # one Stokes (I)
        n = data.shape[0]
        pix = np.zeros((n, w.naxis))
        pix[:, spec] = np.arange(n)
        freqs.append(w.all_pix2world(pix, 0)[:, spec])
        if table is not None:
            beams += [(math.radians(a / 3600), math.radians(b / 3600), math.radians(p))
                      for a, b, p in zip(table["BMAJ"], table["BMIN"], table["BPA"], strict=True)]
        else:
            beams += [(math.radians(header["BMAJ"]), math.radians(header["BMIN"]), math.radians(header["BPA"]))] * n
        planes.append(data)
        wcs, cell = w.celestial, math.radians(abs(header["CDELT1"]))
    return FitsImage(np.concatenate(planes), np.concatenate(freqs), beams, wcs, cell)


def _fit_at(plane: np.ndarray, beam: Beam, img: FitsImage, ra_deg: float, dec_deg: float) -> tuple[float, float]:
    """(flux, offset arcsec) of a point source fitted near (ra, dec): the guess is placed with the image's own WCS,
    so images whose reference pixel differs (CASA, WSClean, mousflow) are measured alike."""
    x, y = img.wcs.world_to_pixel_values(ra_deg, dec_deg)
    l, m = pixel_to_lm(float(x), float(y), plane.shape[-1], img.cell_rad)
    fit = fit_point_source(np.nan_to_num(plane), beam, img.cell_rad, float(l), float(m))
    ra, dec = img.wcs.pixel_to_world_values(fit.x, fit.y)
    offset = math.hypot((ra - ra_deg) * math.cos(math.radians(dec)), dec - dec_deg) * 3600
    return fit.flux, offset


def _noise_region(img: FitsImage, centre_deg: tuple[float, float], radius_arcsec: float,
                  avoid_deg: list[tuple[float, float]], beam: Beam) -> np.ndarray:
    ny, nx = img.data.shape[-2:]
    yy, xx = np.mgrid[0:ny, 0:nx]
    cell_arcsec = math.degrees(img.cell_rad) * 3600
    x0, y0 = img.wcs.world_to_pixel_values(*centre_deg)
    region = np.hypot(xx - x0, yy - y0) * cell_arcsec <= radius_arcsec
    r_avoid = SOURCE_EXCLUSION_BEAMS * math.degrees(beam.bmaj_rad) * 3600
    for ra, dec in avoid_deg:
        xs, ys = img.wcs.world_to_pixel_values(ra, dec)
        region &= np.hypot(xx - xs, yy - ys) * cell_arcsec > r_avoid
    return region


def half_power_radius_arcsec(freq_hz: float, dish_m: float) -> float:
    """Radius where an ALMA dish's primary beam is at half its peak (FWHM 1.13 lambda / D)."""
    return 0.5 * 1.13 * (299792458.0 / freq_hz) / dish_m * 180 / math.pi * 3600


def measure_fits_continuum(paths, truth: dict, radius_arcsec: float) -> dict:
    """Each known continuum source's flux / truth (at the image's frequency) and offset in beams, and the image's
    robust rms within radius_arcsec of the pointing centre, outside SOURCE_EXCLUSION_BEAMS of the sources."""
    img = read_fits_image(paths)
    plane, beam = img.data[0], Beam(*img.beams[0])
    beam_arcsec = math.degrees(beam.bmaj_rad) * 3600
    centre = (truth["target"]["ra_deg"], truth["target"]["dec_deg"])
    region = _noise_region(img, centre, radius_arcsec, [(s["ra_deg"], s["dec_deg"]) for s in truth["sources"]], beam)
    rms = robust_rms(plane[region])
    sources = []
    for s in truth["sources"]:
        flux, offset = _fit_at(plane, beam, img, s["ra_deg"], s["dec_deg"])
        true_flux = s["flux_jy"] * (img.freq_hz[0] / REFERENCE_HZ) ** s["alpha"]
        # flux_sigma: the image's noise over the source's peak, the thermal uncertainty of flux_ratio
        sources.append({"name": s["name"], "flux_ratio": flux / true_flux, "offset_beams": offset / beam_arcsec,
                        "flux_sigma": rms / true_flux})
    return {"sources": sources, "rms_jy": rms, "beam_arcsec": beam_arcsec, "freq_hz": float(img.freq_hz[0])}


def measure_fits_line(paths, truth: dict, radius_arcsec: float) -> dict:
    """The line's integrated flux / truth and offset in beams, from an integrated-intensity map of the cube's
    channels within the line (as measure_line does for mousflow's cube store), and the median over the other
    channels of each plane's robust rms (same region as measure_fits_continuum, the line's position avoided too)."""
    img = read_fits_image(paths)
    line = truth["line"]
    width = float(np.median(np.abs(np.diff(img.freq_hz))))
    half = LINE_HALF_WIDTH_FWHM * line["fwhm_hz"] + DOPPLER_ALLOWANCE_HZ
    in_line = np.abs(img.freq_hz - line["centre_hz"]) <= half
    chans = np.flatnonzero(in_line)
    moment0 = np.nansum(np.nan_to_num(img.data[chans]), axis=0) * width
    beam = Beam(*np.mean(np.array([img.beams[c] for c in chans]), axis=0))
    flux, offset = _fit_at(moment0, beam, img, line["ra_deg"], line["dec_deg"])
    centre = (truth["target"]["ra_deg"], truth["target"]["dec_deg"])
    avoid = [(s["ra_deg"], s["dec_deg"]) for s in truth["sources"]] + [(line["ra_deg"], line["dec_deg"])]
    region = _noise_region(img, centre, radius_arcsec, avoid, beam)
    rms = float(np.nanmedian([robust_rms(img.data[c][region]) for c in np.flatnonzero(~in_line)]))
    # the line-free channels' mean restoring beam (major, minor; arcsec): a lower rms with a larger beam is
    # another weighting, not a better image
    free_beam = np.degrees(np.mean(np.array([img.beams[c][:2] for c in np.flatnonzero(~in_line)]), axis=0)) * 3600
    # flux_sigma: the integrated-intensity map's noise (channels' noise added in quadrature) over the line's
    # integral, the thermal uncertainty of flux_ratio
    return {"flux_ratio": flux / line["integrated_jy_hz"],
            "offset_beams": offset / (math.degrees(beam.bmaj_rad) * 3600),
            "flux_sigma": rms * width * math.sqrt(chans.size) / line["integrated_jy_hz"],
            "channel_rms_jy": rms, "n_chan": int(img.data.shape[0]),
            "channel_beam_arcsec": [float(free_beam[0]), float(free_beam[1])]}
