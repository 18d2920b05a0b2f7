"""Imaging science kernels: weighting, ducc0 gridding, CLEAN, beams, primary beam, noise and WCS.

Pure numpy / scipy / ducc0 / astropy on in-memory arrays (no I/O). Every image is in the *sky orientation*
described in `coords`: array[..., y, x] with y towards the north and x towards the west (RA increasing to
the left), phase centre on pixel (npix/2, npix/2), matching `wcs.image_header` (CDELT1 < 0). Visibility
arrays are Stokes I, (n_row, n_chan), uvw in metres per row, frequencies in Hz, weights 1 / sigma^2.
"""

from mousflow.science.imaging.beam import Beam, fit_beam, gaussian_image, max_sidelobe
from mousflow.science.imaging.clean import CleanResult, clean, hogbom_minor_cycle
from mousflow.science.imaging.coords import lm_to_pixel, pixel_to_lm, to_ducc, to_sky
from mousflow.science.imaging.gridding import degrid_model, make_dirty, make_psf
from mousflow.science.imaging.mask import AutoMaskParams, auto_mask
from mousflow.science.imaging.measure import SourceFit, fit_point_source
from mousflow.science.imaging.noise import image_rms, predicted_rms, robust_rms
from mousflow.science.imaging.pipeline import CubeProducts, PlaneProducts, image_channels, image_mfs, image_plane
from mousflow.science.imaging.plan import ImagingPlan, good_size, plan_image
from mousflow.science.imaging.primary_beam import pb_correct, pb_radius_rad, primary_beam
from mousflow.science.imaging.restore import convolve_with_beam, restore
from mousflow.science.imaging.wcs import beams_table, celestial_wcs, image_header, image_wcs
from mousflow.science.imaging.weighting import briggs_weights, natural_weights, stokes_i, uniform_weights

__all__ = [
    "AutoMaskParams",
    "Beam",
    "CleanResult",
    "CubeProducts",
    "ImagingPlan",
    "PlaneProducts",
    "SourceFit",
    "auto_mask",
    "beams_table",
    "briggs_weights",
    "celestial_wcs",
    "clean",
    "convolve_with_beam",
    "degrid_model",
    "fit_beam",
    "fit_point_source",
    "gaussian_image",
    "good_size",
    "hogbom_minor_cycle",
    "image_channels",
    "image_header",
    "image_mfs",
    "image_plane",
    "image_rms",
    "image_wcs",
    "lm_to_pixel",
    "make_dirty",
    "make_psf",
    "max_sidelobe",
    "natural_weights",
    "pb_correct",
    "pb_radius_rad",
    "pixel_to_lm",
    "plan_image",
    "predicted_rms",
    "primary_beam",
    "restore",
    "robust_rms",
    "stokes_i",
    "to_ducc",
    "to_sky",
    "uniform_weights",
]
