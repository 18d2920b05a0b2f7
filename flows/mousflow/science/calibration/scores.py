"""Calibration sub-scores for QA2: a measured value and its mapping to [0, 1] (1 = good).

Thresholds (linear between the two ends, clipped):
- fraction flagged: 1 at <= 10 % (online flags, a dead antenna, edge and spur channels), 0 at >= 50 %
  (the sensitivity is then ~40 % worse than planned).
- gain SNR (median over unflagged solutions): 1 at >= 20 (phase noise <= 3 deg per solution), 0 at <= 3
  (CASA's default minimum SNR), linear in log(SNR).
- phase rms of the calibrated phase calibrator (deg): 1 at <= 15 deg (coherence exp(-sigma^2/2) >= 97 %),
  0 at >= 40 deg (coherence <= 78 %: imaged fluxes visibly low).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mousflow.science.calibration import chunking
from mousflow.science.calibration.errors import CalibrationFailed
from mousflow.science.calibration.gains import GainTable

FLAGGED_GOOD, FLAGGED_BAD = 0.10, 0.50
SNR_GOOD, SNR_BAD = 20.0, 3.0
PHASE_RMS_GOOD_DEG, PHASE_RMS_BAD_DEG = 15.0, 40.0


@dataclass(frozen=True)
class SubScore:
    name: str
    value: float
    score: float
    unit: str
    detail: str


def _ramp(value: float, good: float, bad: float) -> float:
    if not np.isfinite(value):
        return 0.0
    return float(np.clip((value - bad) / (good - bad), 0.0, 1.0))


def fraction_flagged_score(flag: np.ndarray) -> SubScore:
    """Fraction of flagged samples in a (any-shaped) flag array, e.g. the calibrated target's."""
    f = np.asarray(flag, bool)
    return fraction_flagged_score_of_counts(int(np.count_nonzero(f)), f.size)


def fraction_flagged_score_of_counts(n_flagged: int, n_samples: int) -> SubScore:
    """fraction_flagged_score from the counts alone, so data seen in blocks can be scored: n_flagged of
    n_samples flagged. (The quotient of the two exact counts is the value flag.mean() gives, to the bit.)"""
    if n_samples == 0:
        raise CalibrationFailed("fraction_flagged_score: empty flag array")
    value = n_flagged / n_samples
    return SubScore("fraction_flagged", value, _ramp(value, FLAGGED_GOOD, FLAGGED_BAD), "",
                    f"{100 * value:.1f} % flagged (1 at <= {100 * FLAGGED_GOOD:.0f} %, 0 at >= "
                    f"{100 * FLAGGED_BAD:.0f} %)")


def gain_snr_score(table: GainTable) -> SubScore:
    """Median SNR of the unflagged gain solutions; score 0 if none."""
    snr = table.snr[~table.flags]
    value = float(np.median(snr)) if snr.size else 0.0
    score = _ramp(np.log(max(value, 1e-9)), np.log(SNR_GOOD), np.log(SNR_BAD))
    return SubScore("gain_snr", value, score, "",
                    f"median gain SNR {value:.1f} over {snr.size} solutions (1 at >= {SNR_GOOD:g}, 0 at <= "
                    f"{SNR_BAD:g})")


def phase_rms_deg(vis: np.ndarray, flag: np.ndarray, weight: np.ndarray) -> tuple[float, float]:
    """(total, thermal) weighted rms phase in degrees of calibrated point-source data (expected phase 0),
    averaged over channels per (time, baseline, corr) first. `thermal` is the rms expected from the weights
    alone; sqrt(total^2 - thermal^2) is what the atmosphere and the calibration left."""
    return phase_rms_of_row_sums(*row_sums(vis, flag, weight))


def row_sums(vis: np.ndarray, flag: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The channel sums phase_rms_deg starts from, per (time, baseline, corr): sum w and sum w V over the
    usable samples. Each row's depends on that row alone, so blocks of rows give the whole array's."""
    vis, flag, weight = np.asarray(vis), np.asarray(flag, bool), np.asarray(weight)
    n_time, n_bl, n_chan, n_corr = vis.shape
    # a bounded chunk of rows at a time: over the whole array the float64 weights and complex128 products were
    # 24 bytes a sample, the calibration stage's peak at full size
    sw = np.empty((n_time, n_bl, n_corr))
    swv = np.empty((n_time, n_bl, n_corr), np.complex128)
    for ts, bs in chunking.sample_chunks(n_time, n_bl, n_chan * n_corr):
        v = vis[ts, bs]
        w = np.where(flag[ts, bs] | ~np.isfinite(v), 0.0, weight[ts, bs].astype(np.float64))
        sw[ts, bs] = w.sum(axis=2)
        swv[ts, bs] = (w * np.nan_to_num(v)).sum(axis=2)
    return sw, swv


def phase_rms_of_row_sums(sw: np.ndarray, swv: np.ndarray) -> tuple[float, float]:
    """phase_rms_deg from row_sums."""
    avg = np.where(sw > 0, swv / np.where(sw > 0, sw, 1), 0)
    ok = (sw > 0) & (np.abs(avg) > 0)
    if not ok.any():
        raise CalibrationFailed("phase_rms_deg: no unflagged data")
    phase = np.angle(avg[ok])
    # weight each averaged visibility by its SNR^2 (|V|^2 sum w), as a least-squares phase would
    snr2 = np.abs(avg[ok]) ** 2 * sw[ok]
    total = np.sqrt(np.sum(snr2 * phase**2) / np.sum(snr2))
    # The averaged noise has sigma^2 = 1/sum(w) per component, so the phase error (the component perpendicular
    # to V) has variance 1 / (|V|^2 sum w) = 1 / snr2; its snr2-weighted mean is n / sum(snr2).
    thermal = np.sqrt(phase.size / np.sum(snr2))
    return float(np.degrees(total)), float(np.degrees(thermal))


def phase_rms_score(vis: np.ndarray, flag: np.ndarray, weight: np.ndarray) -> SubScore:
    """Phase rms of the calibrated phase calibrator (see phase_rms_deg), scored on the total rms."""
    return phase_rms_score_of(*phase_rms_deg(vis, flag, weight))


def phase_rms_score_of(total: float, thermal: float) -> SubScore:
    """phase_rms_score from phase_rms_deg's (total, thermal)."""
    return SubScore("phase_rms", total, _ramp(total, PHASE_RMS_GOOD_DEG, PHASE_RMS_BAD_DEG), "deg",
                    f"phase rms {total:.1f} deg of which thermal {thermal:.1f} deg (1 at <= "
                    f"{PHASE_RMS_GOOD_DEG:g} deg, 0 at >= {PHASE_RMS_BAD_DEG:g} deg)")
