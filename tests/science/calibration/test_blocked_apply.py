"""The target's calibration in blocks (channel blocks for its channel test, blocks of integrations for the
apply) gives, to the bit, what apply_to_target gives on the whole target."""

from dataclasses import replace

import numpy as np
import pytest

from mousflow.science.calibration import (
    apply_to_target,
    apply_to_target_block,
    calibrate_window,
    channel_log_amplitude,
    excess_power_channels,
    flag_outliers,
    fraction_flagged_score_of_counts,
    target_channel_flags,
)
from mousflow.telescope.calibrators import FLUX_MODELS

SPUR_CHANNEL, BAD_ANTENNA, BAD_CHANNEL = 4, 3, 9


@pytest.fixture(scope="module")
def window(tiny_mous):
    """spw1 of the tiny MOUS calibrated, with a bad antenna and a bad channel as if its calibrators had shown
    them, and a target with flagged samples, NaNs, exact zeros and a spur channel."""
    _, parts = tiny_mous
    fc = parts[("spw1", "flux")]
    cal = calibrate_window(parts[("spw1", "bandpass")], fc, parts[("spw1", "phase")],
                           FLUX_MODELS[fc.field_name].at(fc.frequency_hz))
    cal = replace(cal, bad_antennas=sorted({*cal.bad_antennas, BAD_ANTENNA}),
                  bad_channels=sorted({*cal.bad_channels, BAD_CHANNEL}), scores=dict(cal.scores))
    t = parts[("spw1", "target")]
    vis, flag = t.vis.copy(), t.flag.copy()
    vis[:, :, SPUR_CHANNEL] *= 30
    vis[3, 5, 2, 0] = np.nan
    vis[10, 7, 11, 1] = 0
    vis[20:23, 40, :, :] = np.inf
    flag[1:3, 7] = True
    flag[30, :, 20] = True
    return cal, replace(t, vis=vis, flag=flag)


def _time_block(target, times: slice):
    return replace(target, vis=target.vis[times], flag=target.flag[times], weight=target.weight[times],
                   uvw_m=target.uvw_m[times], time_s=target.time_s[times])


def test_channel_statistic_from_channel_blocks_is_the_whole_windows(window):
    _, target = window
    whole = channel_log_amplitude(target.vis, target.flag)
    for size in (1, 3, 7):
        parts = [channel_log_amplitude(target.vis[:, :, c:c + size], target.flag[:, :, c:c + size])
                 for c in range(0, whole.shape[0], size)]
        np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_channel_statistic_from_blocks_of_integrations_is_the_whole_windows(window):
    """The stage reads a large target in blocks of integrations, counts each apart (on threads, in any order)
    and merges the counts: the statistic is the whole window's to the bit."""
    from mousflow.science.calibration import amplitude_median

    _, target = window
    whole = channel_log_amplitude(target.vis, target.flag)
    n_time, _, n_chan, n_corr = target.vis.shape
    for size in (1, 4, 11):
        parts = [amplitude_median.count_per_channel(target.vis[t:t + size], target.flag[t:t + size])
                 for t in range(0, n_time, size)]
        merged = amplitude_median.AmplitudeCounts(n_chan * n_corr)
        for part in reversed(parts):
            merged.merge(part)
        np.testing.assert_array_equal(amplitude_median.log_median(merged, (n_chan, n_corr)), whole)


def test_channel_statistic_is_numpys_median_of_the_usable_amplitudes(window):
    """The statistic is numpy's median over time and baseline of the amplitudes that are not flagged, finite
    or zero, to 0.5 % (a quarter of the channel test's 2 % scatter floor); NaN for a channel without any."""
    _, target = window
    flag = target.flag.copy()
    flag[:, :, 13] = True  # a channel with no usable sample
    unusable = flag | ~np.isfinite(target.vis) | (target.vis == 0)
    with np.errstate(divide="ignore", invalid="ignore"), pytest.warns(RuntimeWarning, match="All-NaN"):
        expected = np.log(np.nanmedian(np.where(unusable, np.nan, np.abs(target.vis).astype(np.float64)),
                                       axis=(0, 1)))
    got = channel_log_amplitude(target.vis, flag)
    assert np.isnan(got[13]).all() and np.isfinite(np.delete(got, 13, axis=0)).all()
    np.testing.assert_allclose(np.delete(got, 13, axis=0), np.delete(expected, 13, axis=0), rtol=0, atol=5e-3)


def test_flag_outliers_channel_test_is_excess_power_channels_on_the_statistic(window):
    _, target = window
    n_ant = len(target.antenna_names)
    _, report = flag_outliers(target.vis, target.flag, target.antenna1, target.antenna2, n_ant, antennas=False)
    channels, excess, reasons = excess_power_channels(channel_log_amplitude(target.vis, target.flag))
    assert SPUR_CHANNEL in channels
    assert report.channels == channels
    assert report.reasons[-len(reasons):] == reasons
    np.testing.assert_array_equal(report.channel_excess, excess)


@pytest.mark.parametrize("in_place", [False, True], ids=["new arrays", "in place"])
@pytest.mark.parametrize("block_size", [1, 7, 16])
def test_apply_over_time_blocks_is_apply_to_target_to_the_bit(window, block_size, in_place):
    cal, target = window
    whole_cal = replace(cal, scores=dict(cal.scores))
    vis, flag, weight, report = apply_to_target(whole_cal, target)
    assert SPUR_CHANNEL in report.channels

    bad_channels, _ = target_channel_flags(cal, channel_log_amplitude(target.vis, target.flag))
    assert {SPUR_CHANNEL, BAD_CHANNEL} <= set(bad_channels)
    n_time = target.time_s.size
    blocks, read = [], []
    for t in range(0, n_time, block_size):
        block = _time_block(target, slice(t, t + block_size))
        if in_place:  # a block read for this alone, as the stage's: its own arrays
            block = replace(block, vis=block.vis.copy(), flag=block.flag.copy(), weight=block.weight.copy())
            read.append(block)
        blocks.append(apply_to_target_block(cal, block, bad_channels, in_place=in_place))
    assert len(blocks) == -(-n_time // block_size)
    # in place: the results are the block's own arrays (nothing of its size allocated again); else new ones
    if in_place:
        for b, r in zip(blocks, read, strict=True):
            assert b[0] is r.vis and b[1] is r.flag and b[2] is r.weight
    else:
        assert not np.shares_memory(blocks[0][0], target.vis) and not np.shares_memory(blocks[0][1], target.flag)
    for k, whole in enumerate((vis, flag, weight)):
        joined = np.concatenate([b[k] for b in blocks])
        assert joined.dtype == whole.dtype
        assert joined.tobytes() == whole.tobytes()
    assert flag[:, (target.antenna1 == BAD_ANTENNA) | (target.antenna2 == BAD_ANTENNA)].all()
    assert flag[:, :, [SPUR_CHANNEL, BAD_CHANNEL]].all() and flag[3, 5, 2, 0] and not flag.all()
    score = fraction_flagged_score_of_counts(sum(b[3] for b in blocks), flag.size)
    assert score == whole_cal.scores["fraction_flagged"]
    assert score.value == float(flag.mean())
