"""Medians of amplitude by counting: against numpy's median of the same samples, and the same counts whatever the
blocks and their order."""

import numpy as np
import pytest

from mousflow.science.calibration import chunking
from mousflow.science.calibration.amplitude_median import (
    AmplitudeCounts,
    count_per_baseline,
    count_per_baseline_and_channel,
    count_per_channel,
    log_median,
    usable_amplitude32,
)


def _noise(rng, shape, scale=1.0, dtype=np.complex64):
    return ((rng.normal(size=shape) + 1j * rng.normal(size=shape)) * scale).astype(dtype)


def _median_of(values) -> float:
    counts = AmplitudeCounts(1)
    amplitude, usable = usable_amplitude32(values, np.zeros(values.shape, bool))
    counts.add(amplitude, usable, np.zeros(values.shape, int))
    return float(counts.median()[0])


@pytest.mark.parametrize("n", [1, 2, 3, 10, 1000, 200_001])
def test_median_is_numpys_to_a_fraction_of_a_bin(n):
    """Noise-like amplitudes (Rayleigh) at scales over 12 decades: one sample lies within half a bin (1.6 %) of
    its value; a thousand within 0.5 %, large counts within 0.1 %."""
    rng = np.random.default_rng(n)
    bound = 0.016 if n < 100 else 5e-3 if n < 10_000 else 1e-3
    for scale in (1e-6, 0.37, 3.0, 2e5):
        values = _noise(rng, n, scale)
        truth = np.median(np.abs(values).astype(np.float64))
        assert abs(np.log(_median_of(values) / truth)) < bound, (n, scale)


def test_even_count_is_the_mean_of_the_two_middle_values():
    """Two samples in bins far apart: the mean of the two, not either (nor the geometric mean)."""
    got = _median_of(np.array([1.0, 100.0], np.complex64))
    assert abs(got - 50.5) / 50.5 < 0.02


def test_unusable_samples_are_not_counted_and_an_empty_group_is_nan():
    vis = np.array([[1, 2, 3, 0, np.nan, np.inf, 1000]], np.complex64)
    flag = np.zeros(vis.shape, bool)
    flag[0, 2] = True  # 3 flagged: the usable samples are 1, 2 and 1000
    counts = AmplitudeCounts(2)
    amplitude, usable = usable_amplitude32(vis, flag)
    counts.add(amplitude, usable, np.zeros(vis.shape, int))
    median = counts.median()
    assert abs(median[0] - 2.0) / 2.0 < 0.02
    assert np.isnan(median[1])
    assert counts.counts.sum() == 3


def test_blocks_in_any_order_give_the_whole_arrays_counts():
    """Blocks of integrations whose amplitudes cover different ranges (the range of bins grows either way),
    merged in shuffled order, give the whole array's counts and medians to the bit; complex128 data count as
    their float32 amplitudes."""
    rng = np.random.default_rng(7)
    vis = _noise(rng, (24, 15, 9, 2), dtype=np.complex128)
    vis[:6] *= 1e-3
    vis[18:] *= 1e4
    flag = rng.random(vis.shape) < 0.1
    whole = count_per_channel(vis, flag)
    blocks = [count_per_channel(vis[t:t + 5], flag[t:t + 5]) for t in range(0, 24, 5)]
    merged = AmplitudeCounts(9 * 2)
    for k in rng.permutation(len(blocks)):
        merged.merge(blocks[k])
    assert merged.first == whole.first
    np.testing.assert_array_equal(merged.counts, whole.counts)
    np.testing.assert_array_equal(log_median(merged, (9, 2)), log_median(whole, (9, 2)))


def test_per_channel_and_per_baseline_groups():
    """Each group's median is of its own samples: a channel (or a baseline) 10x brighter shows 10x, within a
    bin's fraction, and the others do not move."""
    rng = np.random.default_rng(3)
    vis = _noise(rng, (30, 21, 8, 2))
    vis[:, :, 5] *= 10
    vis[:, 4] *= 10
    flag = np.zeros(vis.shape, bool)
    per_channel = np.exp(log_median(count_per_channel(vis, flag), (8, 2)))
    per_baseline = np.exp(log_median(count_per_baseline(vis, flag), (21, 2)))
    amplitude = np.abs(vis).astype(np.float64)
    np.testing.assert_allclose(per_channel, np.median(amplitude, axis=(0, 1)), rtol=0.01)
    np.testing.assert_allclose(per_baseline, np.median(amplitude, axis=(0, 2)), rtol=0.01)
    assert per_channel[5].min() > 5 * np.delete(per_channel, 5, axis=0).max()
    assert per_baseline[4].min() > 5 * np.delete(per_baseline, 4, axis=0).max()


def test_counting_per_baseline_and_channel_at_once_gives_each_counts(monkeypatch):
    """The first pass of the flag statistics counts both groupings from one amplitude per sample: the same
    counts as counting each apart, in chunks smaller than an integration too."""
    monkeypatch.setattr(chunking, "SAMPLES_PER_CHUNK", 50)  # part of an integration's baselines per chunk
    rng = np.random.default_rng(4)
    vis = _noise(rng, (7, 21, 8, 2))
    flag = rng.random(vis.shape) < 0.1
    per_baseline, per_channel = AmplitudeCounts(21 * 2), AmplitudeCounts(8 * 2)
    count_per_baseline_and_channel(vis, flag, per_baseline, per_channel)
    for got, alone in ((per_baseline, count_per_baseline(vis, flag)), (per_channel, count_per_channel(vis, flag))):
        assert got.first == alone.first
        np.testing.assert_array_equal(got.counts, alone.counts)
