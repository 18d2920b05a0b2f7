"""Image noise: the radiometer prediction for given imaging weights, and a robust measurement on an image."""

from __future__ import annotations

import math

import numpy as np

MAD_TO_SIGMA = 1.482602218505602


# Samples per block of rows when the predicted noise is summed: its float64 temporaries (~40 bytes a sample)
# stay at ~40 MB, where over the whole continuum they were 5x its visibilities (the imaging stage's peak).
PREDICTION_BLOCK_SAMPLES = 1 << 20


class PredictedNoise:
    """`predicted_rms` summed over blocks of samples as they come (`add`), for a caller that has each block's
    data weights and imaging weights together only once (the Briggs weighting overwriting the data weights
    with the imaging weights, `weighting.briggs_weights(out=...)`)."""

    def __init__(self, per_channel: bool = False, n_chan: int = 1):
        self.axis = 0 if per_channel else None
        self.per_channel = per_channel
        self.num = self.den = np.zeros(n_chan) if per_channel else 0.0

    def add(self, weight, imaging_weight, flag=None) -> None:
        """A block's samples (n_row, n_chan): weight = 1/sigma^2, their imaging weights, flags (or None)."""
        w = np.asarray(weight, dtype=np.float64)
        iw = np.asarray(np.broadcast_to(imaging_weight, w.shape), dtype=np.float64)
        ok = (w > 0) & (iw > 0)
        if flag is not None:
            ok &= ~np.broadcast_to(np.asarray(flag, dtype=bool), w.shape)
        iw = np.where(ok, iw, 0.0)
        self.num = self.num + np.where(ok, iw * iw / np.where(ok, w, 1.0), 0.0).sum(axis=self.axis)
        self.den = self.den + iw.sum(axis=self.axis)

    def rms(self):
        """The thermal rms (Jy/beam) of the samples added; NaN with none (per channel: for that channel)."""
        num, den = np.sqrt(self.num), np.asarray(self.den)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
        return out if self.per_channel else float(out)


def predicted_rms(weight, imaging_weight, flag=None, *, per_channel: bool = False):
    """Thermal rms (Jy/beam) of a dirty image made with `imaging_weight` from data of weight 1/sigma^2.

    The dirty image is sum_i W_i Re(V_i e^{i phi_i}) / sum_i W_i, so its noise is
    sqrt(sum_i W_i^2 sigma_i^2) / sum_i W_i with sigma_i^2 = 1 / weight_i (the variance of the real part of
    a Stokes I visibility). Arrays are (n_row, n_chan); samples flagged or with non-positive weight or
    imaging weight are left out. per_channel=True gives one value per channel (cube planes), NaN for a
    channel with no data. Summed in float64 a block of rows at a time (`PredictedNoise`).
    """
    weight = np.asarray(weight)
    imaging_weight = np.broadcast_to(np.asarray(imaging_weight), weight.shape)
    flag = None if flag is None else np.broadcast_to(np.asarray(flag, dtype=bool), weight.shape)
    noise = PredictedNoise(per_channel, weight.shape[1] if weight.ndim > 1 else 1)
    if weight.ndim == 0:
        noise.add(weight, imaging_weight, flag)
        return noise.rms()
    step = max(1, PREDICTION_BLOCK_SAMPLES // max(1, int(np.prod(weight.shape[1:], dtype=np.int64))))
    for start in range(0, weight.shape[0], step):
        rows = slice(start, start + step)
        noise.add(weight[rows], imaging_weight[rows], None if flag is None else flag[rows])
    return noise.rms()


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
