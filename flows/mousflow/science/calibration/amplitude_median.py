"""Medians of visibility amplitudes by counting, so that they can be built from blocks of data in any order.

The flagging tests judge medians of amplitude over most of a window's samples: per channel over all integrations
and baselines (the excess-power test), per baseline over all integrations and channels (the dead-antenna test).
A median by selection needs all of a group's samples in memory at once, and a full-size target window is GBs;
read in blocks of channels instead, each block re-read and decompressed the window's stored chunks, which span
all channels (a 480-channel window was read seven times for its statistic alone).

Here each group's usable amplitudes are counted into bins, and counts add: blocks of integrations, in any order
and on any number of threads, give the same integer counts as the whole window, hence the same medians to the bit.
The bins are the top bits of the float32 amplitude's bit pattern (sign, exponent, BIN_BITS of mantissa): 2**BIN_BITS
bins per octave, linear within the octave, over the whole float32 range with no range to choose. The median's
rank is placed linearly within its bin; its error is a small fraction of a bin (a bin is 2.2-3.1 % wide with
BIN_BITS = 5), far below what the tests resolve (the channel test's scatter floor is 2 %, the antenna test's 10 %).

Why not a library: numpy and scipy have no mergeable quantile; the sketches that are (t-digest, KLL) depend on
the order of the data, so blocked and whole would differ. Counts are exact and order-free.
"""

from __future__ import annotations

import numpy as np

from mousflow.science.calibration import chunking

BIN_BITS = 5
_SHIFT = 23 - BIN_BITS  # float32: 23 mantissa bits
_NONE = 2**40  # no bin: above any float32 pattern


def _edges(bins: np.ndarray) -> np.ndarray:
    """The lower edge (float64) of float32 bit-pattern bins."""
    return (np.asarray(bins, np.uint32) << np.uint32(_SHIFT)).view(np.float32).astype(np.float64)


class AmplitudeCounts:
    """Counts of usable amplitudes per group (n_groups,) in bit-pattern bins, over a range of bins that grows
    to what the data need (a window's amplitudes span a few octaves, not the float32 range)."""

    def __init__(self, n_groups: int):
        self.n_groups = n_groups
        self.first = 0  # bin of counts[:, 0]
        self.counts = np.zeros((n_groups, 0), np.int64)

    def add(self, amplitude: np.ndarray, usable: np.ndarray, group: np.ndarray) -> None:
        """Count amplitude[usable] (float32, > 0 and finite where usable) into group[usable] (ints < n_groups,
        broadcast to amplitude's shape; usable has amplitude's shape)."""
        bins = (amplitude.view(np.uint32) >> np.uint32(_SHIFT)).astype(np.int64)
        # the range over usable samples only, without copying them out (flagged ones may be 0, inf or NaN)
        lo = int(np.minimum.reduce(bins, axis=None, where=usable, initial=_NONE))
        if lo == _NONE:
            return
        hi = int(np.maximum.reduce(bins, axis=None, where=usable, initial=-1)) + 1
        self._cover(lo, hi)
        width = hi - lo
        index = bins + (np.asarray(group, np.int64) * width - lo)
        np.copyto(index, self.n_groups * width, where=~usable)  # one bin past the end, dropped
        found = np.bincount(index.ravel(), minlength=self.n_groups * width + 1)[:-1]
        self.counts[:, lo - self.first:hi - self.first] += found.reshape(self.n_groups, width)

    def merge(self, other: AmplitudeCounts) -> AmplitudeCounts:
        """Add other's counts into these (the same groups); returns self."""
        if other.counts.shape[1]:
            lo, hi = other.first, other.first + other.counts.shape[1]
            self._cover(lo, hi)
            self.counts[:, lo - self.first:hi - self.first] += other.counts
        return self

    def _cover(self, lo: int, hi: int) -> None:
        if self.counts.shape[1] == 0:
            self.first, self.counts = lo, np.zeros((self.n_groups, hi - lo), np.int64)
            return
        first, last = min(lo, self.first), max(hi, self.first + self.counts.shape[1])
        if (first, last) != (self.first, self.first + self.counts.shape[1]):
            grown = np.zeros((self.n_groups, last - first), np.int64)
            grown[:, self.first - first:self.first - first + self.counts.shape[1]] = self.counts
            self.first, self.counts = first, grown

    def median(self) -> np.ndarray:
        """(n_groups,) float64: each group's median amplitude (the mean of the two middle ranks for an even
        count), NaN for a group with no usable sample."""
        n = self.counts.sum(axis=1)
        out = np.full(self.n_groups, np.nan)
        has = n > 0
        if not has.any():
            return out
        counts, n = self.counts[has], n[has]
        cumulative = np.cumsum(counts, axis=1)
        halves = [self._at_rank(counts, cumulative, rank) for rank in ((n - 1) // 2, n // 2)]
        out[has] = 0.5 * (halves[0] + halves[1])
        return out

    def _at_rank(self, counts: np.ndarray, cumulative: np.ndarray, rank: np.ndarray) -> np.ndarray:
        """The value of 0-based `rank` per row: its bin, and within the bin its place among the bin's samples
        spread evenly over the bin's width."""
        k = np.argmax(cumulative > rank[:, None], axis=1)
        rows = np.arange(k.size)
        in_bin = counts[rows, k]
        below = cumulative[rows, k] - in_bin
        lower, upper = _edges(self.first + k), _edges(self.first + k + 1)
        return lower + (upper - lower) * (rank - below + 0.5) / in_bin


def usable_amplitude32(vis: np.ndarray, flag: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(|vis| as float32, usable): usable where not flagged, finite and not exactly zero."""
    amplitude = np.abs(vis)
    if amplitude.dtype != np.float32:
        amplitude = amplitude.astype(np.float32)
    with np.errstate(invalid="ignore"):
        usable = ~np.asarray(flag, bool) & np.isfinite(amplitude) & (amplitude > 0)
    return amplitude, usable


def count_per_channel(vis: np.ndarray, flag: np.ndarray, counts: AmplitudeCounts | None = None) -> AmplitudeCounts:
    """Add (time, baseline, channel, corr) data's usable amplitudes to counts per (channel, corr), a bounded
    number of samples at a time (chunking.sample_chunks)."""
    n_chan, n_corr = vis.shape[2:]
    counts = counts or AmplitudeCounts(n_chan * n_corr)
    _count(vis, flag, per_channel=counts)
    return counts


def count_per_baseline(vis: np.ndarray, flag: np.ndarray, counts: AmplitudeCounts | None = None) -> AmplitudeCounts:
    """As count_per_channel, per (baseline, corr)."""
    n_bl, n_corr = vis.shape[1], vis.shape[3]
    counts = counts or AmplitudeCounts(n_bl * n_corr)
    _count(vis, flag, per_baseline=counts)
    return counts


def count_per_baseline_and_channel(vis: np.ndarray, flag: np.ndarray, per_baseline: AmplitudeCounts,
                                   per_channel: AmplitudeCounts) -> None:
    """count_per_baseline and count_per_channel of the same data at once, each chunk's amplitudes computed once
    for both (the first pass of flagging.OutlierSearch)."""
    _count(vis, flag, per_baseline=per_baseline, per_channel=per_channel)


def _count(vis: np.ndarray, flag: np.ndarray, *, per_baseline: AmplitudeCounts | None = None,
           per_channel: AmplitudeCounts | None = None) -> None:
    """The usable amplitudes added to either grouping's counts or both, a chunk of samples at a time."""
    n_time, n_bl, n_chan, n_corr = vis.shape
    by_baseline = np.arange(n_bl * n_corr).reshape(n_bl, 1, n_corr)
    by_channel = np.arange(n_chan * n_corr).reshape(n_chan, n_corr)
    for ts, bs in chunking.sample_chunks(n_time, n_bl, n_chan * n_corr):
        amplitude, usable = usable_amplitude32(vis[ts, bs], flag[ts, bs])
        if per_baseline is not None:
            per_baseline.add(amplitude, usable, by_baseline[bs])
        if per_channel is not None:
            per_channel.add(amplitude, usable, by_channel)


def log_median(counts: AmplitudeCounts, shape: tuple[int, int]) -> np.ndarray:
    """log of counts.median() reshaped (e.g. (n_chan, n_corr)); NaN where a group has no usable sample."""
    return np.log(counts.median()).reshape(shape)
