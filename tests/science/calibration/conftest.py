"""Shared fixtures: synthetic point-source data built straight from the measurement equation, and one
simulated `tiny` MOUS (loaded once per session) for the truth-based tests."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest


@dataclass
class Synthetic:
    vis: np.ndarray  # (time, baseline, channel, corr) complex64
    flag: np.ndarray
    weight: np.ndarray
    antenna1: np.ndarray
    antenna2: np.ndarray
    n_ant: int
    time_s: np.ndarray
    gains: np.ndarray  # (time, ant, corr) complex128
    bandpass: np.ndarray  # (ant, chan, corr)
    flux_jy: np.ndarray  # (chan,)
    sigma: float


def random_gains(rng, n_time, n_ant, n_corr, phase_rate_deg=0.0):
    amp = rng.uniform(0.8, 1.2, (1, n_ant, n_corr))
    phase0 = rng.uniform(-np.pi, np.pi, (1, n_ant, n_corr))
    rate = np.radians(phase_rate_deg) * rng.uniform(-1, 1, (1, n_ant, 1))
    t = np.arange(n_time)[:, None, None]
    return amp * np.exp(1j * (phase0 + rate * t))


def random_bandpass(rng, n_ant, n_chan, n_corr):
    x = np.linspace(0, 1, n_chan)[None, :, None]
    amp = 1 + rng.uniform(0.02, 0.1, (n_ant, 1, n_corr)) * np.cos(2 * np.pi * rng.uniform(1, 3) * x
                                                                  + rng.uniform(0, 6, (n_ant, 1, n_corr)))
    phase = rng.uniform(-1.0, 1.0, (n_ant, 1, n_corr)) * (x - 0.5) + np.radians(5) * np.sin(6 * x)
    return amp * np.exp(1j * phase)


def make_synthetic(seed=0, n_ant=8, n_time=6, n_chan=16, n_corr=2, flux_jy=1.0, sigma=0.05, phase_rate_deg=0.0,
                   with_bandpass=True, dt_s=10.0):
    rng = np.random.default_rng(seed)
    a1, a2 = np.triu_indices(n_ant, 1)
    g = random_gains(rng, n_time, n_ant, n_corr, phase_rate_deg)
    b = random_bandpass(rng, n_ant, n_chan, n_corr) if with_bandpass else np.ones((n_ant, n_chan, n_corr))
    s = np.full(n_chan, float(flux_jy))
    gg = g[:, a1] * np.conj(g[:, a2])  # (t, bl, corr)
    bb = b[a1] * np.conj(b[a2])  # (bl, chan, corr)
    noise = sigma * (rng.standard_normal((n_time, a1.size, n_chan, n_corr))
                     + 1j * rng.standard_normal((n_time, a1.size, n_chan, n_corr)))
    vis = (gg[:, :, None, :] * bb[None] * (s[None, None, :, None] + noise)).astype(np.complex64)
    weight = np.full(vis.shape, 1 / sigma**2 if sigma else 1.0, np.float32)
    return Synthetic(vis=vis, flag=np.zeros(vis.shape, bool), weight=weight,
                     antenna1=a1, antenna2=a2, n_ant=n_ant, time_s=1e9 + dt_s * np.arange(n_time), gains=g,
                     bandpass=b, flux_jy=s, sigma=sigma)


@pytest.fixture
def synthetic():
    """Factory: synthetic(seed=..., n_ant=..., ...) -> Synthetic."""
    return make_synthetic


def relative_phase_deg(solved, true, ref, axis=-2):
    """Phase of solved/true after referencing both to antenna `ref` along `axis`, in degrees, (-180, 180]."""
    s = solved * np.conj(np.take(solved, [ref], axis=axis))
    t = true * np.conj(np.take(true, [ref], axis=axis))
    return np.angle(s * np.conj(t), deg=True)


@pytest.fixture
def relative_phase():
    return relative_phase_deg


@pytest.fixture(scope="session")
def tiny_mous(tmp_path_factory):
    """The `tiny` preset simulated once: (truth dict, {(spw, role): PartitionArrays})."""
    import warnings

    from mousflow.simulate import simulate_mous
    from mousflow.storage.location import Location
    from mousflow.storage.partitions import load_partition, open_checked, partition_infos

    out = tmp_path_factory.mktemp("calibration") / "tiny"
    simulate_mous("tiny", str(out), seed=1, force=True)
    truth = json.loads((out / "truth.json").read_text())
    eb = truth["execution_blocks"][0]
    roles = {"CALIBRATE_BANDPASS": "bandpass", "CALIBRATE_FLUX": "flux", "CALIBRATE_PHASE": "phase",
             "OBSERVE_TARGET": "target"}
    parts = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ps = open_checked(Location.of(str(out / "eb" / f"{eb['label']}.ps.zarr")))
        for info in partition_infos(ps):
            p = load_partition(ps[info.name])
            parts[(p.spw_name, roles[info.intents[0].split("#")[0]])] = p
    return truth, parts
