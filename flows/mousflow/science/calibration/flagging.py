"""Flagging obviously bad data before solving: invalid samples, dead antennas, spurious channels.

All tests are on amplitudes with robust statistics (median and MAD), so a minority of bad data cannot hide
itself by inflating the scatter it is compared with:

- flag_invalid: NaN/inf samples and exact zeros (dropped integrations the online system did not flag).
- flag_outliers, per antenna: the median log-amplitude of each baseline, then per antenna the median over
  its baselines. For a point-source calibrator |D_pq| = |g_p||g_q| S, so this is log|g_p| + const and a dead
  antenna (noise only, ~10x below the signal) stands out whatever the other gains are; one bad antenna moves
  the other antennas' medians by at most one baseline. Outliers are judged against the median over antennas
  with a MAD scale floored at `min_antenna_scatter` (natural log), so a well-behaved array (MAD ~ 0) does not
  flag antennas whose gains merely differ by 10-20 %.
  On the science target (noise- or structure-dominated amplitudes) this test is not meaningful: flag the
  antennas found on the calibrators there with `flag_antennas`.
- flag_outliers, per channel: the median amplitude of each channel over time and baselines, divided by a
  running median over channels (which follows the bandpass shape), judged against the MAD of that ratio.
  Only excess power is flagged (spurs, birdies, RFI): low channels are bandpass features such as the
  roll-off at the window edges, whose data are good, merely less sensitive. A strong genuine spectral line
  on the target would look like excess power too: run the channel test on calibrators, or keep line channels
  out of it with `protect_channels`, and propagate with `flag_channels`.

The medians of amplitude over many samples (per baseline, per channel) are taken by counting
(amplitude_median), to a small fraction of 3 % bins: the same for a target read in blocks as whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import median_filter

from mousflow.science.calibration import amplitude_median, chunking
from mousflow.science.calibration.errors import CalibrationFailed

MAD_TO_SIGMA = 1.4826
# The channel test's defaults: a spur is > 6 robust sigma above the running median of 5 channels, with the
# scatter of log amplitude taken as at least 2 % (a clean bandpass would otherwise have a MAD of ~0).
CHANNEL_THRESHOLD = 6.0
MIN_CHANNEL_SCATTER = 0.02
CHANNEL_WINDOW = 5


@dataclass
class FlagReport:
    """What flag_outliers flagged and why; fractions are of all (time, baseline, channel, corr) samples."""

    antennas: list[int] = field(default_factory=list)
    channels: list[int] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    fraction_before: float = 0.0
    fraction_after: float = 0.0
    antenna_log_amplitude: np.ndarray | None = None  # (n_ant, n_corr) statistic tested, NaN if no data
    channel_excess: np.ndarray | None = None  # (n_chan, n_corr) log(amplitude / running median)


def flag_invalid(vis: np.ndarray, flag: np.ndarray) -> np.ndarray:
    """Return flag | (vis not finite) | (vis exactly zero). Does not modify its inputs."""
    vis = np.asarray(vis)
    if vis.shape != np.shape(flag):
        raise CalibrationFailed(f"flag shape {np.shape(flag)} does not match visibilities {vis.shape}")
    return np.asarray(flag, bool) | ~np.isfinite(vis) | (vis == 0)


def has_unflagged_sample(vis: np.ndarray, flag: np.ndarray) -> bool:
    """Whether any sample is unflagged and finite, decided a chunk of samples at a time (no temporary of the
    data's size) and stopping at the first chunk that has one."""
    n_time, n_bl = vis.shape[:2]
    per_row = int(np.prod(vis.shape[2:], dtype=np.int64))
    return any(np.any(~flag[ts, bs] & np.isfinite(vis[ts, bs]))
               for ts, bs in chunking.sample_chunks(n_time, n_bl, per_row))


def flag_known_bad(vis: np.ndarray, flag: np.ndarray, antenna1: np.ndarray, antenna2: np.ndarray,
                   antennas: Sequence[int], channels: Sequence[int], *, in_place: bool = False) -> np.ndarray:
    """flag_channels(flag_antennas(flag_invalid(vis, flag), ...), channels) in one array: invalid samples and every
    baseline of `antennas` and every sample of `channels` flagged. A new array, or `flag` itself (bool) when
    in_place."""
    if in_place:
        out = flag
        out |= ~np.isfinite(vis)
        out |= vis == 0
    else:
        out = flag_invalid(vis, flag)
    out[:, np.isin(antenna1, antennas) | np.isin(antenna2, antennas)] = True
    out[:, :, list(channels)] = True
    return out


def flag_antennas(flag: np.ndarray, antenna1: np.ndarray, antenna2: np.ndarray,
                  antennas: Sequence[int]) -> np.ndarray:
    """Return a copy of flag (time, baseline, channel, corr) with every baseline of `antennas` flagged."""
    out = np.array(flag, bool, copy=True)
    bad = np.isin(antenna1, antennas) | np.isin(antenna2, antennas)
    out[:, bad] = True
    return out


def flag_channels(flag: np.ndarray, channels: Sequence[int]) -> np.ndarray:
    """Return a copy of flag (time, baseline, channel, corr) with `channels` flagged on all data."""
    out = np.array(flag, bool, copy=True)
    out[:, :, list(channels)] = True
    return out


def _nanmedian(a: np.ndarray, axis) -> np.ndarray:
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmedian(a, axis=axis)


def _robust_z(values: np.ndarray, min_scale: float) -> np.ndarray:
    ok = np.isfinite(values)
    if ok.sum() < 3:
        return np.zeros_like(values)
    centre = np.median(values[ok])
    scale = max(MAD_TO_SIGMA * np.median(np.abs(values[ok] - centre)), min_scale)
    return np.where(ok, (values - centre) / scale, 0.0)


def channel_log_amplitude(vis: np.ndarray, flag: np.ndarray) -> np.ndarray:
    """(n_chan, n_corr): the log of each channel's median amplitude over time and baseline of its usable
    samples (not flagged, finite, not zero); NaN for a channel with none. The statistic the channel test
    judges (excess_power_channels), on calibrators and target alike. The median is by counting
    (amplitude_median): blocks of integrations, counted apart and merged, give the same bits, so a target too
    large for memory is read once for it."""
    vis = np.asarray(vis)
    if vis.shape != np.shape(flag):
        raise CalibrationFailed(f"flag shape {np.shape(flag)} does not match visibilities {vis.shape}")
    return amplitude_median.log_median(amplitude_median.count_per_channel(vis, np.asarray(flag, bool)),
                                       vis.shape[2:])


def excess_power_channels(ch_stat: np.ndarray, threshold: float = CHANNEL_THRESHOLD,
                          min_scatter: float = MIN_CHANNEL_SCATTER, window: int = CHANNEL_WINDOW,
                          protect_channels: Sequence[int] = ()) -> tuple[list[int], np.ndarray | None, list[str]]:
    """The channel test of flag_outliers on its statistic (channel_log_amplitude): each channel against a
    running median over `window` channels, flagged where its robust z-score of excess amplitude exceeds
    `threshold` (never the `protect_channels`). Returns (channels, excess (n_chan, n_corr) or None when there
    are fewer than 3 channels to compare, one reason per channel)."""
    if ch_stat.shape[0] < 3:
        return [], None, []
    excess = np.full(ch_stat.shape, np.nan)
    for c in range(ch_stat.shape[1]):
        col = ch_stat[:, c]
        ok = np.isfinite(col)
        if ok.sum() < 3:
            continue
        filled = np.interp(np.arange(col.size), np.flatnonzero(ok), col[ok])
        trend = median_filter(filled, size=min(window, col.size), mode="mirror")
        excess[:, c] = np.where(ok, col - trend, np.nan)
    z = np.stack([_robust_z(excess[:, c], min_scatter) for c in range(excess.shape[1])], axis=1)
    z[list(protect_channels)] = 0.0
    channels, reasons = [], []
    for ch in np.flatnonzero(np.any(z > threshold, axis=1)):
        c = int(np.argmax(z[ch]))
        channels.append(int(ch))
        reasons.append(f"channel {ch}: amplitude {np.exp(excess[ch, c]):.3g} x its neighbours' "
                       f"(robust z = {z[ch, c]:+.1f}, correlation {c})")
    return channels, excess, reasons


def flag_outliers(vis: np.ndarray, flag: np.ndarray, antenna1: np.ndarray, antenna2: np.ndarray, n_ant: int, *,
                  antennas: bool = True, channels: bool = True, antenna_threshold: float = 5.0,
                  channel_threshold: float = CHANNEL_THRESHOLD, min_antenna_scatter: float = 0.1,
                  min_channel_scatter: float = MIN_CHANNEL_SCATTER, channel_window: int = CHANNEL_WINDOW,
                  protect_channels: Sequence[int] = ()) -> tuple[np.ndarray, FlagReport]:
    """Flag invalid data, then amplitude-outlier antennas and channels (see the module docstring).

    vis, flag: (time, baseline, channel, corr). Returns (new flag array, FlagReport).
    antenna_threshold: robust z-score (either sign) above which an antenna is flagged on all correlations.
    channel_threshold: robust z-score of excess amplitude above which a channel is flagged (all correlations).
    Raises CalibrationFailed if nothing is left unflagged.
    """
    vis = np.asarray(vis)
    if vis.ndim != 4:
        raise CalibrationFailed(f"visibilities must be (time, baseline, channel, corr), got shape {vis.shape}")
    a1, a2 = np.asarray(antenna1), np.asarray(antenna2)
    report = FlagReport(fraction_before=float(np.mean(flag)))
    out = flag_invalid(vis, flag)
    n_new = int(out.sum() - np.sum(flag))
    if n_new:
        report.reasons.append(f"{n_new} samples NaN/inf or exactly zero")
    if out.all():
        raise CalibrationFailed("no unflagged data (all samples flagged, NaN or zero)")
    if antennas:
        n_bl, n_corr = vis.shape[1], vis.shape[3]
        bl_stat = amplitude_median.log_median(amplitude_median.count_per_baseline(vis, out), (n_bl, n_corr))
        stat = np.full((n_ant, vis.shape[3]), np.nan)
        for ant in range(n_ant):
            rows = bl_stat[(a1 == ant) | (a2 == ant)]
            if rows.size:
                stat[ant] = _nanmedian(rows, axis=0)
        report.antenna_log_amplitude = stat
        z = np.stack([_robust_z(stat[:, c], min_antenna_scatter) for c in range(stat.shape[1])], axis=1)
        for ant in np.flatnonzero(np.any(np.abs(z) > antenna_threshold, axis=1)):
            c = int(np.argmax(np.abs(z[ant])))
            ratio = float(np.exp(stat[ant, c] - np.nanmedian(stat[:, c])))
            report.antennas.append(int(ant))
            report.reasons.append(f"antenna {ant}: median amplitude {ratio:.3g} x the array's "
                                  f"(robust z = {z[ant, c]:+.1f}, correlation {c})")
        if report.antennas:
            out = flag_antennas(out, a1, a2, report.antennas)

    if channels:
        found, report.channel_excess, reasons = excess_power_channels(
            channel_log_amplitude(vis, out), channel_threshold, min_channel_scatter, channel_window, protect_channels)
        report.channels += found
        report.reasons += reasons
        if report.channels:
            out = flag_channels(out, report.channels)

    report.fraction_after = float(np.mean(out))
    if out.all():
        raise CalibrationFailed("no unflagged data left after outlier flagging")
    return out, report
