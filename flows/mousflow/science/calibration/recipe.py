"""One spectral window of one execution block, calibrated end to end from the kernels (no I/O).

Inputs are any objects with the attributes vis, flag, weight, antenna1, antenna2, time_s, frequency_hz and
antenna_names (mousflow.storage.partitions.PartitionArrays has them); nothing is modified in place.

Steps: flag each calibrator (invalid data, dead antennas, excess-power channels; what is found on any
calibrator is flagged on all of them and later on the target, where the antenna test is meaningless), solve
the bandpass on the bandpass calibrator, the gains on the flux calibrator against its trusted model and on
the phase calibrator against a unit model, transfer the flux scale, and score the phase calibrator after
calibration with per-scan gains interpolated onto its integrations (so the phase rms includes what the
atmosphere does within a scan, as on the target, not only thermal noise).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from mousflow.science.calibration.apply import apply_calibration
from mousflow.science.calibration.bandpass import BandpassTable, solve_bandpass
from mousflow.science.calibration.flagging import FlagReport, flag_antennas, flag_channels, flag_outliers
from mousflow.science.calibration.fluxscale import FluxScaleResult, fluxscale
from mousflow.science.calibration.gains import GainTable, solve_gains
from mousflow.science.calibration.interpolation import interpolate_gains
from mousflow.science.calibration.scores import (
    SubScore,
    fraction_flagged_score,
    gain_snr_score,
    phase_rms_score,
)
from mousflow.science.calibration.stefcal import choose_reference_antenna


class Visibilities(Protocol):
    vis: np.ndarray
    flag: np.ndarray
    weight: np.ndarray
    antenna1: np.ndarray
    antenna2: np.ndarray
    time_s: np.ndarray
    frequency_hz: np.ndarray
    antenna_names: list[str]


@dataclass
class WindowCalibration:
    bandpass: BandpassTable
    flux_table: GainTable  # on the flux calibrator, true units
    gains: GainTable  # on the phase calibrator, rescaled to true units: apply these to the target
    flux: FluxScaleResult
    bad_antennas: list[int]
    bad_channels: list[int]
    flag_reports: dict[str, FlagReport]
    reference_antenna: list[int]
    scores: dict[str, SubScore] = field(default_factory=dict)


def calibrate_window(bandpass_cal: Visibilities, flux_cal: Visibilities, phase_cal: Visibilities,
                     flux_model_jy: np.ndarray, *, solint: str | float = "int", scale_weights: bool = True,
                     min_snr: float = 3.0) -> WindowCalibration:
    """Calibrate one window. flux_model_jy: the flux calibrator's trusted model per channel (n_chan,)."""
    n_ant = len(bandpass_cal.antenna_names)
    a1, a2 = bandpass_cal.antenna1, bandpass_cal.antenna2
    cals = {"bandpass": bandpass_cal, "flux": flux_cal, "phase": phase_cal}
    reports, flags = {}, {}
    for role, c in cals.items():
        flags[role], reports[role] = flag_outliers(c.vis, c.flag, c.antenna1, c.antenna2, n_ant)
    bad_ants = sorted({a for r in reports.values() for a in r.antennas})
    bad_chans = sorted({ch for r in reports.values() for ch in r.channels})
    for role in cals:
        flags[role] = flag_channels(flag_antennas(flags[role], a1, a2, bad_ants), bad_chans)
    refant = choose_reference_antenna(flags["phase"], a1, a2, n_ant, exclude=bad_ants)
    bp = solve_bandpass(bandpass_cal.vis, flags["bandpass"], bandpass_cal.weight, a1, a2, n_ant,
                        reference_antenna=refant, min_snr=min_snr)
    gf = solve_gains(flux_cal.vis, flags["flux"], flux_cal.weight, a1, a2, n_ant, flux_cal.time_s, bandpass=bp,
                     flux_jy=flux_model_jy, solint=solint, reference_antenna=refant, min_snr=min_snr)
    gp = solve_gains(phase_cal.vis, flags["phase"], phase_cal.weight, a1, a2, n_ant, phase_cal.time_s,
                     bandpass=bp, solint=solint, reference_antenna=refant, min_snr=min_snr)
    fs = fluxscale(gf, gp)
    result = WindowCalibration(bp, gf, fs.table, fs, bad_ants, bad_chans, reports, refant)

    per_scan = fluxscale(gf, solve_gains(phase_cal.vis, flags["phase"], phase_cal.weight, a1, a2, n_ant,
                                         phase_cal.time_s, bandpass=bp, solint="scan", reference_antenna=refant,
                                         min_snr=min_snr)).table
    g, gflag = interpolate_gains(per_scan, phase_cal.time_s)
    v, f, w = apply_calibration(phase_cal.vis, flags["phase"], phase_cal.weight, a1, a2, g, gflag, bp,
                                scale_weights=scale_weights)
    result.scores = {"phase_rms": phase_rms_score(v, f, w), "gain_snr": gain_snr_score(fs.table)}
    return result


def apply_to_target(cal: WindowCalibration, target: Visibilities, *, scale_weights: bool = True,
                    max_extrapolation_s: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, FlagReport]:
    """Flag the target (invalid data, excess-power channels, plus the calibrators' bad antennas and channels)
    and apply the window's calibration. Returns (vis, flag, weight, report); the fraction-flagged sub-score
    of the result is added to cal.scores["fraction_flagged"]."""
    n_ant = len(target.antenna_names)
    flag, report = flag_outliers(target.vis, target.flag, target.antenna1, target.antenna2, n_ant, antennas=False)
    flag = flag_channels(flag_antennas(flag, target.antenna1, target.antenna2, cal.bad_antennas), cal.bad_channels)
    g, gflag = interpolate_gains(cal.gains, target.time_s, max_extrapolation_s=max_extrapolation_s)
    v, f, w = apply_calibration(target.vis, flag, target.weight, target.antenna1, target.antenna2, g, gflag,
                                cal.bandpass, scale_weights=scale_weights)
    cal.scores["fraction_flagged"] = fraction_flagged_score(f)
    return v, f, w, report
