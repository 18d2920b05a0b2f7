"""Calibrator models: point sources at the phase centre, V_pq(nu) = S(nu), real."""

from __future__ import annotations

import numpy as np

from mousflow.science.calibration.errors import CalibrationFailed


def power_law_flux(frequency_hz, flux_jy: float, reference_hz: float, spectral_index: float) -> np.ndarray:
    """S(nu) = S0 (nu / nu0)^alpha for each frequency."""
    return flux_jy * (np.asarray(frequency_hz, dtype=np.float64) / reference_hz) ** spectral_index


def calibrator_model(n_chan: int, flux_jy=None) -> np.ndarray:
    """Point-source model at the phase centre as an array broadcastable to (time, baseline, channel, corr):
    flux_jy is None (unit model), a scalar, (n_chan,) or (n_chan, n_corr)."""
    if flux_jy is None:
        return np.ones((n_chan, 1))
    f = np.asarray(flux_jy, dtype=np.float64)
    if f.ndim == 0:
        return np.full((n_chan, 1), float(f))
    if f.shape[0] != n_chan or f.ndim > 2:
        raise CalibrationFailed(f"model flux shape {f.shape} does not match {n_chan} channels")
    return f.reshape(n_chan, -1)
