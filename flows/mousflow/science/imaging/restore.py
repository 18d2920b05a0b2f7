"""Restored image: CLEAN components convolved with the restoring beam, plus the residual."""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import fftconvolve

from mousflow.science.imaging.beam import Beam, gaussian_image


def convolve_with_beam(model: np.ndarray, beam: Beam, cell_rad: float) -> np.ndarray:
    """model (Jy/pixel) convolved with the peak-1 Gaussian beam: Jy/beam. Sky orientation; no wrap-around."""
    model = np.asarray(model, dtype=np.float64)
    if not np.any(model):
        return np.zeros_like(model)
    half = math.ceil(2.0 * beam.bmaj_rad / cell_rad)  # Gaussian < 1e-5 of its peak beyond 2 FWHM
    half = min(half, max(model.shape))
    kernel = gaussian_image(beam, (2 * half + 1, 2 * half + 1), cell_rad, centre=(half, half))
    return fftconvolve(model, kernel, mode="same")


def restore(model: np.ndarray, residual: np.ndarray, beam: Beam, cell_rad: float) -> np.ndarray:
    """Restored image in Jy/beam: model (Jy/pixel) * beam + residual (Jy/beam). Same shape as the inputs."""
    return convolve_with_beam(model, beam, cell_rad) + np.asarray(residual, dtype=np.float64)
