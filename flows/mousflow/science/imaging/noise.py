"""Image noise: the radiometer prediction for given imaging weights, and a robust measurement on an image."""

from __future__ import annotations

import math

import numpy as np

MAD_TO_SIGMA = 1.482602218505602


def predicted_rms(weight, imaging_weight, flag=None, *, per_channel: bool = False):
    """Thermal rms (Jy/beam) of a dirty image made with `imaging_weight` from data of weight 1/sigma^2.

    The dirty image is sum_i W_i Re(V_i e^{i phi_i}) / sum_i W_i, so its noise is
    sqrt(sum_i W_i^2 sigma_i^2) / sum_i W_i with sigma_i^2 = 1 / weight_i (the variance of the real part of
    a Stokes I visibility). Arrays are (n_row, n_chan); samples flagged or with non-positive weight or
    imaging weight are left out. per_channel=True gives one value per channel (cube planes), NaN for a
    channel with no data.
    """
    w = np.asarray(weight, dtype=np.float64)
    iw = np.broadcast_to(np.asarray(imaging_weight, dtype=np.float64), w.shape)
    ok = (w > 0) & (iw > 0)
    if flag is not None:
        ok &= ~np.broadcast_to(np.asarray(flag, dtype=bool), w.shape)
    iw = np.where(ok, iw, 0.0)
    var = np.where(ok, iw * iw / np.where(ok, w, 1.0), 0.0)
    axis = 0 if per_channel else None
    num = np.sqrt(var.sum(axis=axis))
    den = iw.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return out if per_channel else float(out)


def robust_rms(values) -> float:
    """1.4826 x the median absolute deviation from the median of the finite values (NaN if none)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan")
    return float(MAD_TO_SIGMA * np.median(np.abs(v - np.median(v))))


def image_rms(image, *, exclude=None, pb=None, pblimit: float = 0.2) -> float:
    """Robust rms of an image (a residual, or a flat-noise image) outside `exclude` (a bool mask of sources
    or the CLEAN mask) and, when a primary-beam pattern is given, inside pb >= pblimit."""
    image = np.asarray(image)
    sel = np.isfinite(image)
    if exclude is not None:
        sel &= ~np.asarray(exclude, dtype=bool)
    if pb is not None:
        sel &= np.asarray(pb) >= pblimit
    return robust_rms(image[sel])


# A window whose cube is noisier than its weights predict by more than this factor (median over its channels)
# has weights that do not describe its data (a receiver or correlator fault the weights did not see): the
# continuum scales its weights down to what its noise says. Below it, the measured and predicted noise agree
# within what calibration and deconvolution leave (1.0-1.3 measured), and nothing is changed.
WINDOW_NOISE_RATIO_LIMIT = 2.0


def median_noise_ratio(rms, predicted) -> float:
    """Median over channels of measured / predicted noise (NaN if no channel has both)."""
    with np.errstate(all="ignore"):
        ratio = np.asarray(rms, dtype=np.float64) / np.asarray(predicted, dtype=np.float64)
    ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
    return float(np.median(ratio)) if ratio.size else math.nan


def window_weight_scales(noise_ratio: dict[str, float], limit: float = WINDOW_NOISE_RATIO_LIMIT) -> dict[str, float]:
    """The factor each window's weights are multiplied by in the continuum: 1 / ratio^2 for a window whose
    cube's noise is `ratio` > limit times what its weights predict (weights are inverse variances), else 1."""
    return {spw: (1.0 / r**2 if np.isfinite(r) and r > limit else 1.0) for spw, r in noise_ratio.items()}
