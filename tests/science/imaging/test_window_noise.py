"""A window whose data are far noisier than its weights say must not enter the continuum at full weight
(issue 12 corpus: a bad window with nominal weights made the continuum's rms 9x the request)."""

from __future__ import annotations

import math

import pytest

from mousflow.science.imaging.noise import WINDOW_NOISE_RATIO_LIMIT, median_noise_ratio, window_weight_scales


def test_a_window_noisier_than_its_weights_predict_is_weighted_by_its_noise():
    scales = window_weight_scales({"good": 1.05, "rough": 1.3, "bad": 30.0})
    assert scales["good"] == 1.0 and scales["rough"] == 1.0  # within what calibration and CLEAN leave
    assert scales["bad"] == pytest.approx(1 / 900)  # inverse variance: its weights match its noise


def test_the_limit_is_exclusive_and_unknown_ratios_change_nothing():
    assert window_weight_scales({"w": WINDOW_NOISE_RATIO_LIMIT})["w"] == 1.0
    assert window_weight_scales({"w": math.nan})["w"] == 1.0


def test_median_ratio_ignores_channels_without_a_measurement():
    assert median_noise_ratio([2.0, math.nan, 6.0, 4.0], [1.0, 1.0, 2.0, 0.0]) == pytest.approx(2.5)
    assert math.isnan(median_noise_ratio([math.nan], [1.0]))
