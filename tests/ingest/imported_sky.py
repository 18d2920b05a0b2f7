"""Helpers of the import tests: the options they import with, running stages, measuring the known sky."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from astropy.wcs import WCS

from mousflow.science.geometry import radec_to_lm
from mousflow.science.imaging import Beam, fit_point_source
from mousflow.stages.image_store import ImageStore, attrs_to_header
from mousflow.stages.runner import run_stage
from mousflow.storage.location import Location

REFERENCE_HZ = 100.0e9  # the frequency casa_simulated_ms.py's fluxes are given at
# The flux calibrator's flux density as the observatory's catalogue would give it (the value CASA's simulator
# was told, see casa_simulated_ms.py): the flux scale then has to come out right through the whole chain.
FLUX_CALIBRATOR_ARGS = ["--calibrator-flux", "J0423-0120", "1.25", "1e11", "-0.65"]
GOAL_ARGS = ["--sensitivity", "0.0004", "--resolution", "2", "8", "--project-code", "2026.1.00099.S"]


def measure_sources(run_root: Path, truth: dict) -> list[tuple[str, float, float]]:
    """(name, measured / true flux, position offset in beams) of each known point source in the continuum.

    The continuum's flat-noise `image` is measured, not the primary-beam-corrected one: CASA's simulator
    predicts the sky without a primary beam (the sources sit within 10" of the pointing centre anyway), so the
    apparent fluxes are the true ones.
    """
    store = ImageStore(Location.of(run_root / "imaging" / "continuum.zarr"))
    header = attrs_to_header(store.attrs["header"])
    image = np.nan_to_num(store.read("image")[0])
    beam = Beam(*store.attrs["beam_rad"])
    cell = math.radians(abs(header["CDELT1"]))
    ra0, dec0 = math.radians(header["CRVAL1"]), math.radians(header["CRVAL2"])
    wcs = WCS(header).celestial
    beam_arcsec = math.degrees(beam.bmaj_rad) * 3600
    results = []
    for s in truth["sources"]:
        l, m = radec_to_lm(math.radians(s["ra_deg"]), math.radians(s["dec_deg"]), ra0, dec0)
        fit = fit_point_source(image, beam, cell, float(l), float(m))
        true_flux = s["flux_jy"] * (header["CRVAL3"] / REFERENCE_HZ) ** s["alpha"]
        ra, dec = wcs.pixel_to_world_values(fit.x, fit.y)
        offset = math.hypot((ra - s["ra_deg"]) * math.cos(math.radians(dec)), dec - s["dec_deg"]) * 3600
        results.append((s["name"], fit.flux / true_flux, offset / beam_arcsec))
    return results


def run_stages(manifest: Path, *stages: str) -> None:
    """Run stages through their entry point (what `mousflow stage` and a pod run); each must succeed."""
    for stage in stages:
        outcome = run_stage(stage, str(manifest))
        assert outcome.state == "Succeeded", (stage, outcome.reason, outcome.message)
