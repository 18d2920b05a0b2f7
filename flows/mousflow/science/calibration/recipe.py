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

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from mousflow.science.calibration import chunking
from mousflow.science.calibration.apply import apply_calibration
from mousflow.science.calibration.bandpass import BandpassTable, solve_bandpass
from mousflow.science.calibration.errors import CalibrationFailed
from mousflow.science.calibration.flagging import (
    FlagReport,
    channel_log_amplitude,
    excess_power_channels,
    flag_known_bad,
    flag_outliers,
)
from mousflow.science.calibration.fluxscale import FluxScaleResult, fluxscale
from mousflow.science.calibration.gains import GainTable, solve_gains
from mousflow.science.calibration.interpolation import interpolate_gains
from mousflow.science.calibration.scores import (
    SubScore,
    fraction_flagged_score_of_counts,
    gain_snr_score,
    phase_rms_of_row_sums,
    phase_rms_score_of,
    row_sums,
)
from mousflow.science.calibration.stefcal import choose_reference_antenna_of_counts


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


CalibratorReader = Callable[[str], Visibilities]
"""The data of one calibrator role ("bandpass", "flux" or "phase"), read when the kernel asks for it."""

FLAG_ORDER = ("phase", "flux", "bandpass")
SOLVE_ORDER = ("bandpass", "flux", "phase")


def calibrate_window(bandpass_cal: Visibilities, flux_cal: Visibilities, phase_cal: Visibilities,
                     flux_model_jy: np.ndarray, *, solint: str | float = "int", scale_weights: bool = True,
                     min_snr: float = 3.0) -> WindowCalibration:
    """Calibrate one window from its three calibrators in memory (calibrate_window_read on them).
    flux_model_jy: the flux calibrator's trusted model per channel (n_chan,)."""
    cals = {"bandpass": bandpass_cal, "flux": flux_cal, "phase": phase_cal}
    return calibrate_window_read(cals.__getitem__, flux_model_jy, solint=solint, scale_weights=scale_weights,
                                 min_snr=min_snr)


def calibrate_window_read(read: CalibratorReader, flux_model_jy: np.ndarray, *, solint: str | float = "int",
                          scale_weights: bool = True, min_snr: float = 3.0) -> WindowCalibration:
    """Calibrate one window, holding one calibrator at a time: `read(role)` is called for each role in
    FLAG_ORDER (the flag statistics), then in SOLVE_ORDER (the solves and the phase calibrator's score), and
    the kernel keeps no reference to one calibrator when it asks for the next. At full size a 480-channel
    window's three calibrators together were the calibration stage's peak memory; read twice, one at a time,
    the largest of them is. A reader that keeps its last answer until asked for another role reads the
    bandpass calibrator once (last to be flagged, first to be solved), and the flux calibrator once too when
    it is the same data.

    The result is, to the bit, what flagging and solving the three in memory gives: what flag_outliers finds on
    any calibrator is flagged on all of them; a calibrator's flags for the solves are its invalid samples plus
    every calibrator's bad antennas and channels (flag_outliers' own finds are among those), and the reference
    antenna is chosen on the phase calibrator's unflagged counts per baseline and channel, kept from the first
    pass. The module docstring gives the steps."""
    reports = {}
    for role in FLAG_ORDER:
        cal = read(role)
        n_ant = len(cal.antenna_names)
        flag, reports[role] = flag_outliers(cal.vis, cal.flag, cal.antenna1, cal.antenna2, n_ant)
        if role == "phase":
            phase_baselines = (cal.antenna1, cal.antenna2)
            phase_good = (~flag).sum(axis=(0, 3))  # (baseline, channel)
        del cal, flag
    reports = {role: reports[role] for role in SOLVE_ORDER}
    bad_ants = sorted({a for r in reports.values() for a in r.antennas})
    bad_chans = sorted({ch for r in reports.values() for ch in r.channels})
    a1, a2 = phase_baselines
    phase_good[np.isin(a1, bad_ants) | np.isin(a2, bad_ants)] = 0
    phase_good[:, bad_chans] = 0
    refant = choose_reference_antenna_of_counts(phase_good.sum(axis=1), a1, a2, n_ant, exclude=bad_ants)
    del phase_good

    def flags_for_solves(cal: Visibilities) -> np.ndarray:
        return flag_known_bad(cal.vis, cal.flag, cal.antenna1, cal.antenna2, bad_ants, bad_chans)

    cal = read("bandpass")
    bp = solve_bandpass(cal.vis, flags_for_solves(cal), cal.weight, cal.antenna1, cal.antenna2, n_ant,
                        reference_antenna=refant, min_snr=min_snr)
    del cal
    cal = read("flux")
    gf = solve_gains(cal.vis, flags_for_solves(cal), cal.weight, cal.antenna1, cal.antenna2, n_ant, cal.time_s,
                     bandpass=bp, flux_jy=flux_model_jy, solint=solint, reference_antenna=refant, min_snr=min_snr)
    del cal
    phase_cal = read("phase")
    flag = flags_for_solves(phase_cal)
    a1, a2 = phase_cal.antenna1, phase_cal.antenna2
    gp = solve_gains(phase_cal.vis, flag, phase_cal.weight, a1, a2, n_ant, phase_cal.time_s, bandpass=bp,
                     solint=solint, reference_antenna=refant, min_snr=min_snr)
    fs = fluxscale(gf, gp)
    result = WindowCalibration(bp, gf, fs.table, fs, bad_ants, bad_chans, reports, refant)

    per_scan = fluxscale(gf, solve_gains(phase_cal.vis, flag, phase_cal.weight, a1, a2, n_ant,
                                         phase_cal.time_s, bandpass=bp, solint="scan", reference_antenna=refant,
                                         min_snr=min_snr)).table
    g, gflag = interpolate_gains(per_scan, phase_cal.time_s)
    # calibrated a chunk of rows at a time, only the rows' channel sums kept: a calibrated copy of the whole
    # phase calibrator on top of it was the calibration stage's peak at full size
    n_time, n_bl, n_chan, n_corr = phase_cal.vis.shape
    sw, swv = np.empty((n_time, n_bl, n_corr)), np.empty((n_time, n_bl, n_corr), np.complex128)
    for ts, bs in chunking.sample_chunks(n_time, n_bl, n_chan * n_corr):
        v, f, w = apply_calibration(phase_cal.vis[ts, bs], flag[ts, bs], phase_cal.weight[ts, bs],
                                    a1[bs], a2[bs], g[ts], gflag[ts], bp, scale_weights=scale_weights)
        sw[ts, bs], swv[ts, bs] = row_sums(v, f, w)
    result.scores = {"phase_rms": phase_rms_score_of(*phase_rms_of_row_sums(sw, swv)),
                     "gain_snr": gain_snr_score(fs.table)}
    return result


def target_channel_flags(cal: WindowCalibration, channel_stat: np.ndarray) -> tuple[list[int], FlagReport]:
    """The channels to flag on the target: its own excess-power channels, judged on channel_stat (its
    channel_log_amplitude, (n_chan, n_corr), which channel blocks can build), and the calibrators' bad channels.
    Returns (sorted channels, the report of the target's own channel test). Raises CalibrationFailed, as
    flag_outliers does, when the target has no usable sample or its excess channels are all it has."""
    usable = np.isfinite(channel_stat).any(axis=1)  # a channel with an unflagged sample (its amplitude is > 0)
    if not usable.any():
        raise CalibrationFailed("no unflagged data (all samples flagged, NaN or zero)")
    found, excess, reasons = excess_power_channels(channel_stat)
    left = usable.copy()
    left[found] = False
    if not left.any():
        raise CalibrationFailed("no unflagged data left after outlier flagging")
    report = FlagReport(channels=found, reasons=reasons, channel_excess=excess)
    return sorted(set(found) | set(cal.bad_channels)), report


def apply_to_target_block(cal: WindowCalibration, block: Visibilities, bad_channels: Sequence[int], *,
                          scale_weights: bool = True, max_extrapolation_s: float | None = None,
                          in_place: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Flag and calibrate some of the target's integrations (all its baselines and channels): invalid samples,
    the calibrators' bad antennas and `bad_channels` (from target_channel_flags) flagged, the gains
    interpolated at the block's times and applied with the bandpass. Every step is per integration, so blocks
    of integrations give, to the bit, what the whole target gives. Returns (vis complex64, flag, weight
    float32, number of flagged samples). in_place: the result is written into the block's own vis, flag and
    weight (when they are complex64, bool and float32), which are returned: a block read for this alone is not
    held twice (the same bits)."""
    writable = in_place and [np.asarray(a).dtype for a in (block.vis, block.flag, block.weight)] == \
        [np.complex64, np.bool_, np.float32] and all(np.asarray(a).flags.writeable
                                                      for a in (block.vis, block.flag, block.weight))
    flag = flag_known_bad(block.vis, block.flag, block.antenna1, block.antenna2, cal.bad_antennas, bad_channels,
                          in_place=writable)
    g, gflag = interpolate_gains(cal.gains, block.time_s, max_extrapolation_s=max_extrapolation_s)
    v, f, w = apply_calibration(block.vis, flag, block.weight, block.antenna1, block.antenna2, g, gflag,
                                cal.bandpass, scale_weights=scale_weights,
                                out=(block.vis, flag, block.weight) if writable else None)
    return v, f, w, int(np.count_nonzero(f))


def apply_to_target(cal: WindowCalibration, target: Visibilities, *, scale_weights: bool = True,
                    max_extrapolation_s: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, FlagReport]:
    """Flag the target (invalid data, excess-power channels, plus the calibrators' bad antennas and channels)
    and apply the window's calibration, all of it in memory: target_channel_flags and apply_to_target_block
    on the whole target. Returns (vis, flag, weight, report of the target's channel test, with the fractions
    flagged as read and after calibration); the fraction-flagged sub-score of the result is added to
    cal.scores["fraction_flagged"]."""
    bad_channels, report = target_channel_flags(cal, channel_log_amplitude(target.vis, target.flag))
    v, f, w, n_flagged = apply_to_target_block(cal, target, bad_channels, scale_weights=scale_weights,
                                               max_extrapolation_s=max_extrapolation_s)
    report.fraction_before, report.fraction_after = float(np.mean(target.flag)), n_flagged / f.size
    cal.scores["fraction_flagged"] = fraction_flagged_score_of_counts(n_flagged, f.size)
    return v, f, w, report
