"""Flux scale: the phase calibrator's flux density from the flux calibrator's trusted model.

Gains solved on the flux calibrator against its model S_F(nu) are the true |g|; gains solved on the phase
calibrator against a *unit* model are |g| sqrt(S_P). Hence S_P = (|G_P| / |G_F|)^2 per antenna and
correlation (CASA's fluxscale). Gain amplitudes drift slowly (a few % per hour), so the phase calibrator's
amplitudes are first interpolated onto the flux calibrator's solution times (nearest in practice: the flux
scan precedes the first phase-calibrator scan) rather than averaged over the whole observation. The ratios
are combined with an iterative median/MAD clip (rejecting antennas with bad solutions), then a mean; the
error is the scatter of the kept ratios over sqrt(n_antennas) (ratios of one antenna are not independent).
Dividing the phase-calibrator gains by sqrt(S_P) gives gains on the flux calibrator's scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mousflow.science.calibration.errors import CalibrationFailed
from mousflow.science.calibration.gains import GainTable
from mousflow.science.calibration.interpolation import interpolate_gains


@dataclass(frozen=True)
class FluxScaleResult:
    """flux_jy: derived flux density of the phase calibrator (at the frequencies its gains were solved for,
    i.e. the window's centre); flux_error_jy its 1-sigma error; n_antennas used; ratios (n_flux_sol, n_ant,
    n_corr) = (|G_P|/|G_F|)^2, NaN where unused; table: the phase-calibrator gains rescaled to true units."""

    flux_jy: float
    flux_error_jy: float
    n_antennas: int
    ratios: np.ndarray
    table: GainTable


@dataclass(frozen=True)
class SpectralFit:
    """S(nu) = flux_jy (nu / reference_hz)^spectral_index, with 1-sigma errors."""

    flux_jy: float
    spectral_index: float
    flux_error_jy: float
    spectral_index_error: float
    reference_hz: float

    def at(self, frequency_hz):
        return self.flux_jy * (np.asarray(frequency_hz, dtype=np.float64) / self.reference_hz) ** self.spectral_index


def fluxscale(flux_table: GainTable, phase_table: GainTable, *, clip: float = 4.0, min_antennas: int = 3
              ) -> FluxScaleResult:
    """Derive the phase calibrator's flux density and rescale its gain table (see the module docstring).

    Raises CalibrationFailed if fewer than min_antennas antennas have usable solutions on both calibrators.
    """
    if flux_table.gains.shape[1:] != phase_table.gains.shape[1:]:
        raise CalibrationFailed(f"fluxscale: tables disagree on (antenna, corr): {flux_table.gains.shape[1:]} vs "
                                f"{phase_table.gains.shape[1:]}")
    gp, fp = interpolate_gains(phase_table, flux_table.time_s)
    good = ~fp & ~flux_table.flags & (np.abs(flux_table.gains) > 0)
    ratios = np.where(good, (np.abs(gp) / np.where(good, np.abs(flux_table.gains), 1)) ** 2, np.nan)
    keep = np.isfinite(ratios)
    for _ in range(10):
        vals = ratios[keep]
        if vals.size < 3:
            break
        med = np.median(vals)
        scale = 1.4826 * np.median(np.abs(vals - med))
        new = keep & (np.abs(ratios - med) <= clip * max(scale, 1e-6 * abs(med)))
        if np.array_equal(new, keep):
            break
        keep = new
    n_ant = int(np.any(keep, axis=(0, 2)).sum())
    if n_ant < min_antennas:
        raise CalibrationFailed(f"fluxscale: only {n_ant} antennas have usable solutions on both the flux and "
                                f"the phase calibrator (need {min_antennas})")
    vals = ratios[keep]
    flux = float(np.mean(vals))
    per_ant = np.array([np.mean(ratios[:, a][keep[:, a]]) for a in range(ratios.shape[1]) if keep[:, a].any()])
    err = float(np.std(per_ant, ddof=1) / np.sqrt(per_ant.size)) if per_ant.size > 1 else float("nan")
    if not flux > 0:
        raise CalibrationFailed(f"fluxscale: derived flux density {flux} is not positive")
    return FluxScaleResult(flux_jy=flux, flux_error_jy=err, n_antennas=n_ant, ratios=np.where(keep, ratios, np.nan),
                           table=phase_table.scaled(1.0 / np.sqrt(flux)))


def fit_spectral_index(frequency_hz, flux_jy, flux_error_jy=None, reference_hz: float | None = None) -> SpectralFit:
    """Weighted least-squares power law through flux densities at several frequencies (e.g. per spw, or
    per spw and execution block); one frequency gives the flux with spectral index 0 (and a NaN error)."""
    nu = np.asarray(frequency_hz, dtype=np.float64).ravel()
    s = np.asarray(flux_jy, dtype=np.float64).ravel()
    if nu.size == 0 or nu.size != s.size or np.any(s <= 0) or np.any(nu <= 0):
        raise CalibrationFailed("fit_spectral_index: need matching positive frequencies and flux densities")
    e = np.full(s.size, 1.0) if flux_error_jy is None else np.asarray(flux_error_jy, dtype=np.float64).ravel()
    e = np.where(np.isfinite(e) & (e > 0), e, np.nanmedian(np.where(e > 0, e, np.nan)) if np.any(e > 0) else 1.0)
    ref = float(reference_hz) if reference_hz is not None else float(np.exp(np.mean(np.log(nu))))
    x = np.log(nu / ref)
    ly = np.log(s)
    w = (s / e) ** 2  # error of log S is e / S
    if np.unique(nu).size < 2:
        mean = np.sum(w * ly) / np.sum(w)
        return SpectralFit(float(np.exp(mean)), 0.0, float(np.exp(mean) / np.sqrt(np.sum(w))), float("nan"), ref)
    a = np.stack([np.ones_like(x), x], axis=1)
    cov = np.linalg.inv(a.T @ (w[:, None] * a))
    p = cov @ (a.T @ (w * ly))
    return SpectralFit(float(np.exp(p[0])), float(p[1]), float(np.exp(p[0]) * np.sqrt(cov[0, 0])),
                       float(np.sqrt(cov[1, 1])), ref)
