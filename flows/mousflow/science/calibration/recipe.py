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

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from mousflow.science.calibration import chunking
from mousflow.science.calibration.apply import BaselineBandpass, apply_calibration, baseline_bandpass
from mousflow.science.calibration.bandpass import BandpassSums, BandpassTable
from mousflow.science.calibration.errors import CalibrationFailed
from mousflow.science.calibration.flagging import (
    FlagReport,
    OutlierSearch,
    channel_log_amplitude,
    excess_power_channels,
    flag_known_bad,
)
from mousflow.science.calibration.fluxscale import FluxScaleResult, fluxscale
from mousflow.science.calibration.gains import GainSums, GainTable
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
    # the bandpass on each baseline layout it was applied to (antenna1, antenna2 bytes): made once per window
    _on_baselines: dict[tuple[bytes, bytes], BaselineBandpass] = field(default_factory=dict, repr=False,
                                                                       compare=False)

    def bandpass_on(self, antenna1: np.ndarray, antenna2: np.ndarray) -> BaselineBandpass:
        """baseline_bandpass of this window's bandpass for these baselines, made the first time it is asked
        for (two threads may both make it: the same arrays)."""
        key = (np.asarray(antenna1).tobytes(), np.asarray(antenna2).tobytes())
        found = self._on_baselines.get(key)
        if found is None:
            found = self._on_baselines[key] = baseline_bandpass(self.bandpass, antenna1, antenna2)
        return found


CalibratorReader = Callable[[str], Iterable[Visibilities]]
"""The data of one calibrator role ("bandpass", "flux" or "phase") as blocks of its integrations, in time
order and on the same baselines, read afresh each time the kernel asks for the role (one block or many)."""

FLAG_ORDER = ("phase", "flux", "bandpass")
SOLVE_ORDER = ("bandpass", "flux", "phase")


def calibrate_window(bandpass_cal: Visibilities, flux_cal: Visibilities, phase_cal: Visibilities,
                     flux_model_jy: np.ndarray, *, solint: str | float = "int", scale_weights: bool = True,
                     min_snr: float = 3.0) -> WindowCalibration:
    """Calibrate one window from its three calibrators in memory (calibrate_window_read on them, each one
    block). flux_model_jy: the flux calibrator's trusted model per channel (n_chan,)."""
    cals = {"bandpass": bandpass_cal, "flux": flux_cal, "phase": phase_cal}
    return calibrate_window_read(lambda role: [cals[role]], flux_model_jy, solint=solint,
                                 scale_weights=scale_weights, min_snr=min_snr)


def calibrate_window_read(read: CalibratorReader, flux_model_jy: np.ndarray, *, solint: str | float = "int",
                          scale_weights: bool = True, min_snr: float = 3.0) -> WindowCalibration:
    """Calibrate one window, holding one block of one calibrator at a time: `read(role)` gives the role's blocks
    of integrations, and the kernel asks for them (keeping none when it asks for the next) in passes: for each
    role in FLAG_ORDER once (the flag statistics: flagging.OutlierSearch; twice for a role on which it finds
    bad antennas), then in SOLVE_ORDER once each (the
    sums of the solves: BandpassSums, GainSums) and the phase calibrator once more (its score, calibrated with
    the solutions). The peak is then a block, not a calibrator: at full size a 480-channel window's phase
    calibrator held whole was the calibration stage's peak, and an ALMA bandpass scan of 3840 channels would be
    GBs. A reader that keeps its last block until asked again reads a calibrator that is one block once per role.

    The result is, to the bit, what flagging and solving the three in memory gives (and, blocks split anywhere,
    the same but for the order of floating-point sums): what flag_outliers finds on any calibrator is flagged on
    all of them; a calibrator's flags for the solves are its invalid samples plus every calibrator's bad
    antennas and channels (flag_outliers' own finds are among those), and the reference antenna is chosen on the
    phase calibrator's usable counts per baseline and channel, kept from the first pass. The module docstring
    gives the steps."""
    reports, layout, times = {}, {}, {}
    for role in FLAG_ORDER:
        search = None
        role_times = []
        for block in read(role):
            if search is None:
                layout[role] = (np.asarray(block.antenna1), np.asarray(block.antenna2), len(block.antenna_names))
                search = OutlierSearch(block.antenna1, block.antenna2, len(block.antenna_names),
                                       *np.shape(block.vis)[2:])
                if role == "phase":
                    phase_good = np.zeros(np.shape(block.vis)[1:3], np.int64)  # (baseline, channel)
            invalid = search.add_for_antennas(block.vis, block.flag)
            if role == "phase":
                phase_good += (~invalid).sum(axis=(0, 3))
            role_times.append(np.asarray(block.time_s, dtype=np.float64))
            del block, invalid
        if search is None:
            raise CalibrationFailed(f"the {role} calibrator has no integrations")
        if search.channel_pass_needed:  # antennas found: the channels are counted again without them
            for block in read(role):
                search.add_for_channels(block.vis, block.flag)
                del block
        reports[role] = search.report()
        times[role] = np.concatenate(role_times)
        del search
    reports = {role: reports[role] for role in SOLVE_ORDER}
    n_ant = layout["bandpass"][2]
    bad_ants = sorted({a for r in reports.values() for a in r.antennas})
    bad_chans = sorted({ch for r in reports.values() for ch in r.channels})
    a1, a2, _ = layout["phase"]
    phase_good[np.isin(a1, bad_ants) | np.isin(a2, bad_ants)] = 0
    phase_good[:, bad_chans] = 0
    refant = choose_reference_antenna_of_counts(phase_good.sum(axis=1), a1, a2, n_ant, exclude=bad_ants)
    del phase_good
    solver = dict(reference_antenna=refant, min_snr=min_snr)

    def flags_for_solves(cal: Visibilities) -> np.ndarray:
        return flag_known_bad(cal.vis, cal.flag, cal.antenna1, cal.antenna2, bad_ants, bad_chans)

    def blocks_with_times(role: str):
        """(the block's range of the role's integrations, the block), block by block."""
        t0 = 0
        for block in read(role):
            n = np.shape(block.vis)[0]
            yield slice(t0, t0 + n), block
            del block  # before the reader is asked for the next
            t0 += n

    a1, a2, _ = layout["bandpass"]
    bp_sums = None
    for block in read("bandpass"):
        if bp_sums is None:
            bp_sums = BandpassSums(a1, a2, n_ant, *np.shape(block.vis)[2:], **solver)
        bp_sums.add(block.vis, flags_for_solves(block), block.weight)
        del block
    bp = bp_sums.solve()
    del bp_sums

    a1, a2, _ = layout["flux"]
    n_chan, n_corr = bp.bandpass.shape[1:]
    sums = GainSums(a1, a2, times["flux"], n_chan, n_corr, bandpass=bp, flux_jy=flux_model_jy, solint=solint)
    for ts, block in blocks_with_times("flux"):
        sums.add(ts, block.vis, flags_for_solves(block), block.weight)
        del block
    gf = sums.solve(n_ant, **solver)

    a1, a2, _ = layout["phase"]
    sums, per_scan_sums = (GainSums(a1, a2, times["phase"], n_chan, n_corr, bandpass=bp, solint=s)
                           for s in (solint, "scan"))
    for ts, block in blocks_with_times("phase"):
        flag = flags_for_solves(block)
        sums.add(ts, block.vis, flag, block.weight)
        per_scan_sums.add(ts, block.vis, flag, block.weight)
        del block, flag
    gp = sums.solve(n_ant, **solver)
    fs = fluxscale(gf, gp)
    result = WindowCalibration(bp, gf, fs.table, fs, bad_ants, bad_chans, reports, refant)
    per_scan = fluxscale(gf, per_scan_sums.solve(n_ant, **solver)).table

    # the phase calibrator calibrated with per-scan gains interpolated onto its integrations, a chunk of rows at
    # a time, only the rows' channel sums kept: a calibrated copy of the whole phase calibrator on top of it was
    # the calibration stage's peak at full size
    n_time, n_bl = times["phase"].size, a1.size
    sw, swv = np.empty((n_time, n_bl, n_corr)), np.empty((n_time, n_bl, n_corr), np.complex128)
    on_baselines = baseline_bandpass(bp, a1, a2)
    for ts, block in blocks_with_times("phase"):
        flag = flags_for_solves(block)
        g, gflag = interpolate_gains(per_scan, block.time_s)
        for cs, bs in chunking.sample_chunks(flag.shape[0], n_bl, n_chan * n_corr):
            v, f, w = apply_calibration(block.vis[cs, bs], flag[cs, bs], block.weight[cs, bs], a1[bs], a2[bs],
                                        g[cs], gflag[cs], on_baselines.baselines(bs), scale_weights=scale_weights)
            rows = slice(ts.start + cs.start, ts.start + cs.stop)
            sw[rows, bs], swv[rows, bs] = row_sums(v, f, w)
        del block, flag
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
    held twice (the same bits). A channel's flag changes only its own FLAG and WEIGHT (0), never a calibrated
    visibility: calibrated with some of bad_channels and the rest flagged afterwards, the block has the same
    bits (what the calibration stage does with the target's own channels, known once all its blocks are read)."""
    writable = in_place and [np.asarray(a).dtype for a in (block.vis, block.flag, block.weight)] == \
        [np.complex64, np.bool_, np.float32] and all(np.asarray(a).flags.writeable
                                                      for a in (block.vis, block.flag, block.weight))
    flag = flag_known_bad(block.vis, block.flag, block.antenna1, block.antenna2, cal.bad_antennas, bad_channels,
                          in_place=writable)
    g, gflag = interpolate_gains(cal.gains, block.time_s, max_extrapolation_s=max_extrapolation_s)
    v, f, w = apply_calibration(block.vis, flag, block.weight, block.antenna1, block.antenna2, g, gflag,
                                cal.bandpass_on(block.antenna1, block.antenna2), scale_weights=scale_weights,
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
