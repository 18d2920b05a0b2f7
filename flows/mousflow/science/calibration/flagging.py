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


class OutlierSearch:
    """flag_outliers over blocks of integrations, for a calibrator too large to hold: one or two passes over the
    same blocks, in any order and any split. First `add_for_antennas` for every block (invalid samples counted,
    the dead-antenna test's amplitudes counted per baseline, and per channel over every baseline), then
    `antennas()`. Where it found none (the usual case), those channel counts are the excess-power test's and the
    first pass was the only one; where it found some (`channel_pass_needed`), `add_for_channels` for every block
    again (counted per channel with the bad antennas' baselines left out). Then `report()`. Counts add
    (amplitude_median), so the report is, to the bit, flag_outliers' on the whole data; flag_known_bad(vis,
    flag, antenna1, antenna2, report.antennas, report.channels) is then its flag array. (A second pass every
    time read each calibrator of a full-size window once more: what the stage spent most of its calibrator
    reading on.)"""

    def __init__(self, antenna1: np.ndarray, antenna2: np.ndarray, n_ant: int, n_chan: int, n_corr: int, *,
                 antennas: bool = True, channels: bool = True, antenna_threshold: float = 5.0,
                 channel_threshold: float = CHANNEL_THRESHOLD, min_antenna_scatter: float = 0.1,
                 min_channel_scatter: float = MIN_CHANNEL_SCATTER, channel_window: int = CHANNEL_WINDOW,
                 protect_channels: Sequence[int] = ()):
        self.a1, self.a2, self.n_ant = np.asarray(antenna1), np.asarray(antenna2), n_ant
        self.n_chan, self.n_corr = n_chan, n_corr
        self.test_antennas, self.test_channels = antennas, channels
        self.antenna_threshold, self.min_antenna_scatter = antenna_threshold, min_antenna_scatter
        self.channel_args = (channel_threshold, min_channel_scatter, channel_window, protect_channels)
        # samples seen, flagged as read, newly flagged as invalid, flagged in all after flag_invalid
        self.n_samples = self.n_flagged = self.n_invalid = self.n_unusable = 0
        self.antenna_log_amplitude: np.ndarray | None = None
        self.per_baseline = amplitude_median.AmplitudeCounts(self.a1.size * n_corr)
        self.per_channel = amplitude_median.AmplitudeCounts(n_chan * n_corr)
        self.flagged_per_channel = np.zeros(n_chan, np.int64)  # after the antenna test
        # the first pass's per channel, every baseline counted: the channel test's when no antenna is bad
        self.per_channel_all = amplitude_median.AmplitudeCounts(n_chan * n_corr)
        self.invalid_per_channel = np.zeros(n_chan, np.int64)
        self._channel_pass = False
        self._antennas: list[int] | None = None
        self._reasons: list[str] = []

    def _check(self, vis: np.ndarray, flag: np.ndarray) -> np.ndarray:
        vis = np.asarray(vis)
        if vis.ndim != 4:
            raise CalibrationFailed(f"visibilities must be (time, baseline, channel, corr), got shape {vis.shape}")
        if vis.shape[1:] != (self.a1.size, self.n_chan, self.n_corr):
            raise CalibrationFailed(f"a block of shape {vis.shape} for {self.a1.size} baselines, {self.n_chan} "
                                    f"channels, {self.n_corr} correlations")
        return vis

    def add_for_antennas(self, vis: np.ndarray, flag: np.ndarray) -> np.ndarray:
        """The first pass over one block; returns its invalid samples' flags (flag_invalid), which a caller may
        count further."""
        vis = self._check(vis, flag)
        invalid = flag_invalid(vis, flag)
        n_flag, n_invalid = int(np.count_nonzero(flag)), int(np.count_nonzero(invalid))
        self.n_samples += vis.size
        self.n_flagged += n_flag
        self.n_invalid += n_invalid - n_flag
        self.n_unusable += n_invalid
        self.invalid_per_channel += np.count_nonzero(invalid, axis=(0, 1, 3))
        if self.test_antennas and self.test_channels:
            amplitude_median.count_per_baseline_and_channel(vis, invalid, self.per_baseline, self.per_channel_all)
        elif self.test_antennas:
            amplitude_median.count_per_baseline(vis, invalid, self.per_baseline)
        elif self.test_channels:
            amplitude_median.count_per_channel(vis, invalid, self.per_channel_all)
        return invalid

    def antennas(self) -> list[int]:
        """The antennas whose amplitudes stand out, once every block is in. Raises CalibrationFailed when no
        sample is usable."""
        if self._antennas is not None:
            return self._antennas
        if self.n_invalid:
            self._reasons.append(f"{self.n_invalid} samples NaN/inf or exactly zero")
        if self.n_unusable == self.n_samples:
            raise CalibrationFailed("no unflagged data (all samples flagged, NaN or zero)")
        found: list[int] = []
        if self.test_antennas:
            bl_stat = amplitude_median.log_median(self.per_baseline, (self.a1.size, self.n_corr))
            stat = np.full((self.n_ant, self.n_corr), np.nan)
            for ant in range(self.n_ant):
                rows = bl_stat[(self.a1 == ant) | (self.a2 == ant)]
                if rows.size:
                    stat[ant] = _nanmedian(rows, axis=0)
            self.antenna_log_amplitude = stat
            z = np.stack([_robust_z(stat[:, c], self.min_antenna_scatter) for c in range(stat.shape[1])], axis=1)
            for ant in np.flatnonzero(np.any(np.abs(z) > self.antenna_threshold, axis=1)):
                c = int(np.argmax(np.abs(z[ant])))
                ratio = float(np.exp(stat[ant, c] - np.nanmedian(stat[:, c])))
                found.append(int(ant))
                self._reasons.append(f"antenna {ant}: median amplitude {ratio:.3g} x the array's "
                                     f"(robust z = {z[ant, c]:+.1f}, correlation {c})")
        self._antennas = found
        return found

    @property
    def channel_pass_needed(self) -> bool:
        """Whether the channel test needs a second pass (add_for_channels over every block): only where the
        antenna test found antennas, whose baselines the channel counts must leave out."""
        return bool(self.antennas())

    def add_for_channels(self, vis: np.ndarray, flag: np.ndarray) -> None:
        """The second pass over one block (after antennas()), where channel_pass_needed."""
        vis = self._check(vis, flag)
        self._channel_pass = True
        out = flag_known_bad(vis, flag, self.a1, self.a2, self.antennas(), [])
        self.flagged_per_channel += np.count_nonzero(out, axis=(0, 1, 3))
        if self.test_channels:
            amplitude_median.count_per_channel(vis, out, self.per_channel)

    def report(self) -> FlagReport:
        """What flag_outliers reports on the whole data. Raises CalibrationFailed when nothing is left."""
        report = FlagReport(antennas=list(self.antennas()), reasons=list(self._reasons),
                            fraction_before=self.n_flagged / self.n_samples)
        report.antenna_log_amplitude = self.antenna_log_amplitude
        if self.channel_pass_needed and not self._channel_pass:
            raise RuntimeError("OutlierSearch.report: antennas were found, and the channel pass was not made")
        per_channel, flagged = ((self.per_channel, self.flagged_per_channel) if self._channel_pass else
                                (self.per_channel_all, self.invalid_per_channel))
        if self.test_channels:
            stat = amplitude_median.log_median(per_channel, (self.n_chan, self.n_corr))
            found, report.channel_excess, reasons = excess_power_channels(stat, *self.channel_args)
            report.channels += found
            report.reasons += reasons
        flagged = flagged.copy()
        flagged[report.channels] = self.n_samples // self.n_chan
        n_flagged = int(flagged.sum())
        report.fraction_after = n_flagged / self.n_samples
        if n_flagged == self.n_samples:
            raise CalibrationFailed("no unflagged data left after outlier flagging")
        return report


def flag_outliers(vis: np.ndarray, flag: np.ndarray, antenna1: np.ndarray, antenna2: np.ndarray, n_ant: int, *,
                  antennas: bool = True, channels: bool = True, antenna_threshold: float = 5.0,
                  channel_threshold: float = CHANNEL_THRESHOLD, min_antenna_scatter: float = 0.1,
                  min_channel_scatter: float = MIN_CHANNEL_SCATTER, channel_window: int = CHANNEL_WINDOW,
                  protect_channels: Sequence[int] = ()) -> tuple[np.ndarray, FlagReport]:
    """Flag invalid data, then amplitude-outlier antennas and channels (see the module docstring): an
    OutlierSearch over the data as one block.

    vis, flag: (time, baseline, channel, corr). Returns (new flag array, FlagReport).
    antenna_threshold: robust z-score (either sign) above which an antenna is flagged on all correlations.
    channel_threshold: robust z-score of excess amplitude above which a channel is flagged (all correlations).
    Raises CalibrationFailed if nothing is left unflagged.
    """
    vis = np.asarray(vis)
    if vis.ndim != 4:
        raise CalibrationFailed(f"visibilities must be (time, baseline, channel, corr), got shape {vis.shape}")
    search = OutlierSearch(antenna1, antenna2, n_ant, vis.shape[2], vis.shape[3], antennas=antennas,
                           channels=channels, antenna_threshold=antenna_threshold,
                           channel_threshold=channel_threshold, min_antenna_scatter=min_antenna_scatter,
                           min_channel_scatter=min_channel_scatter, channel_window=channel_window,
                           protect_channels=protect_channels)
    search.add_for_antennas(vis, flag)
    if search.channel_pass_needed:
        search.add_for_channels(vis, flag)
    report = search.report()
    return flag_known_bad(vis, flag, search.a1, search.a2, report.antennas, report.channels), report
