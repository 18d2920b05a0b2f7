"""Shared uv coverage for the imaging tests: a compact 12-antenna ALMA-like array, ~1 h track at Dec -30.

The 12 pads closest to the array centre, shrunk by 0.4 (max baseline ~140 m) so the images stay small
(~128 pixels) at 100 GHz with a 12 m primary beam.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from mousflow.science.geometry import antenna_uvw_m, baseline_uvw_m
from mousflow.telescope import load_configuration

DISH = 12.0
DEC0 = math.radians(-30.0)
RA0 = math.radians(150.0)


@dataclass(frozen=True)
class Coverage:
    uvw: np.ndarray
    freq: np.ndarray
    dish: float = DISH
    ra0: float = RA0
    dec0: float = DEC0


def make_coverage(n_ant: int = 12, n_time: int = 30, n_chan: int = 4, f0: float = 100e9, df: float = 125e6,
                  shrink: float = 0.4, hours: float = 1.0) -> Coverage:
    cfg = load_configuration()
    enu = cfg.enu_m
    idx = np.argsort(np.hypot(enu[:, 0], enu[:, 1]))[:n_ant]
    enu = enu[idx] * shrink
    ha = np.linspace(-hours / 2, hours / 2, n_time) * math.pi / 12
    a1, a2 = np.triu_indices(n_ant, 1)
    uvw = baseline_uvw_m(antenna_uvw_m(enu, cfg.site.lat.rad, ha, DEC0), a1, a2).reshape(-1, 3)
    return Coverage(uvw=uvw, freq=f0 + df * np.arange(n_chan))


@pytest.fixture(scope="session")
def coverage() -> Coverage:
    return make_coverage()


@pytest.fixture(scope="session")
def coverage_factory():
    return make_coverage


@pytest.fixture(scope="session")
def plan(coverage):
    from mousflow.science.imaging import plan_image

    return plan_image(coverage.uvw, coverage.freq, coverage.dish)


@pytest.fixture
def complex_noise():
    def noise(rng, shape, sigma):
        return sigma * (rng.normal(size=shape) + 1j * rng.normal(size=shape))

    return noise
