"""Restored image: CLEAN components convolved with the restoring beam, plus the residual."""

from __future__ import annotations

import math

import numpy as np
import scipy.fft

from mousflow.science.imaging.beam import Beam, gaussian_image


def convolve_with_beam(model: np.ndarray, beam: Beam, cell_rad: float) -> np.ndarray:
    """model (Jy/pixel) convolved with the peak-1 Gaussian beam: Jy/beam. Sky orientation; no wrap-around."""
    model = np.asarray(model, dtype=np.float64)
    if not np.any(model):
        return np.zeros_like(model)
    half = math.ceil(2.0 * beam.bmaj_rad / cell_rad)  # Gaussian < 1e-5 of its peak beyond 2 FWHM
    half = min(half, max(model.shape))
    kernel = gaussian_image(beam, (2 * half + 1, 2 * half + 1), cell_rad, centre=(half, half))
    return _convolve_same(model, kernel)


def _convolve_same(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Linear (zero-padded) convolution of image with an odd-sized kernel, cropped to the image, by real FFTs:
    what scipy.signal.fftconvolve(mode="same") computes (the tests compare the two). Why not that function:
    importing scipy.signal takes half a second and pulls in scipy.stats, in every imaging process and worker."""
    full = [n + k - 1 for n, k in zip(image.shape, kernel.shape, strict=True)]
    fast = [scipy.fft.next_fast_len(n, real=True) for n in full]
    product = scipy.fft.rfft2(image, fast) * scipy.fft.rfft2(kernel, fast)
    out = scipy.fft.irfft2(product, fast)
    (ky, kx) = ((k - 1) // 2 for k in kernel.shape)
    return np.ascontiguousarray(out[ky : ky + image.shape[0], kx : kx + image.shape[1]])


def restore(model: np.ndarray, residual: np.ndarray, beam: Beam, cell_rad: float) -> np.ndarray:
    """Restored image in Jy/beam: model (Jy/pixel) * beam + residual (Jy/beam). Same shape as the inputs."""
    return convolve_with_beam(model, beam, cell_rad) + np.asarray(residual, dtype=np.float64)
