"""Instrumental and atmospheric corruptions: antenna gains drifting in time, bandpasses, bad data.

Gains: a slowly wandering atmospheric phase (a few sinusoids with periods of 30-90 minutes, scaled with
frequency as a non-dispersive troposphere does) plus a fixed instrumental phase per spectral window and
correlation; amplitudes of 0.8-1.2 with a few-percent drift. The drift is slow compared with ALMA's
phase-calibrator cycle, as it must be for phase referencing to work; what remains between calibrator scans
is part of the truth the tests measure against.
Bandpasses: per antenna, correlation and spectral window, a smooth ripple and a delay slope in phase, and
the roll-off of the outermost channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GainModel:
    """Parameters from which g_p(t) is evaluated for any time (so every scan sees one continuous gain)."""

    amplitude: np.ndarray  # (n_ant, n_corr)
    amp_drift: np.ndarray  # (n_ant, n_corr) fractional
    amp_period_s: np.ndarray  # (n_ant,)
    amp_phase0: np.ndarray  # (n_ant,)
    atm_amp_rad: np.ndarray  # (n_ant, 3) at reference frequency
    atm_period_s: np.ndarray  # (n_ant, 3)
    atm_phase0: np.ndarray  # (n_ant, 3)
    instrumental_phase: dict  # spw name -> (n_ant, n_corr) radians
    reference_hz: float
    t0_s: float

    def evaluate(self, times_s: np.ndarray, spw: str, freq_hz: float) -> np.ndarray:
        """Complex gains (n_time, n_ant, n_corr) for one spectral window at its centre frequency."""
        t = (np.asarray(times_s) - self.t0_s)[:, None, None]
        atm = np.sum(
            self.atm_amp_rad[None] * np.sin(2 * np.pi * t / self.atm_period_s[None] + self.atm_phase0[None]),
            axis=-1,
        )  # (n_time, n_ant)
        phase = atm[:, :, None] * (freq_hz / self.reference_hz) + self.instrumental_phase[spw][None]
        drift = np.sin(2 * np.pi * t[..., 0] / self.amp_period_s[None] + self.amp_phase0[None])  # (n_time, n_ant)
        amp = self.amplitude[None] * (1.0 + self.amp_drift[None] * drift[:, :, None])
        return amp * np.exp(1j * phase)


def make_gain_model(rng: np.random.Generator, n_ant: int, n_corr: int, spw_names: list[str], reference_hz: float,
                    t0_s: float, atmospheric_phase_deg: float = 30.0) -> GainModel:
    return GainModel(
        amplitude=rng.uniform(0.8, 1.2, (n_ant, n_corr)),
        amp_drift=rng.uniform(0.01, 0.04, (n_ant, n_corr)),
        amp_period_s=rng.uniform(2400.0, 5400.0, n_ant),
        amp_phase0=rng.uniform(0, 2 * np.pi, n_ant),
        atm_amp_rad=np.radians(atmospheric_phase_deg) * rng.uniform(0.3, 1.0, (n_ant, 3)) / np.sqrt(3),
        atm_period_s=rng.uniform(1800.0, 5400.0, (n_ant, 3)),
        atm_phase0=rng.uniform(0, 2 * np.pi, (n_ant, 3)),
        instrumental_phase={s: rng.uniform(-np.pi, np.pi, (n_ant, n_corr)) for s in spw_names},
        reference_hz=reference_hz,
        t0_s=t0_s,
    )


def make_bandpass(rng: np.random.Generator, n_ant: int, n_corr: int, freq_hz: np.ndarray,
                  edge_fraction: float = 0.03) -> np.ndarray:
    """Complex bandpass (n_ant, n_chan, n_corr), mean amplitude ~1 over the unattenuated channels."""
    n_chan = freq_hz.size
    x = (np.arange(n_chan) + 0.5) / n_chan  # 0..1 across the window
    k = rng.uniform(1.0, 4.0, (n_ant, 1, n_corr))
    ripple = 1.0 + rng.uniform(0.02, 0.08, (n_ant, 1, n_corr)) * np.cos(
        2 * np.pi * k * x[None, :, None] + rng.uniform(0, 2 * np.pi, (n_ant, 1, n_corr))
    )
    tilt = 1.0 + rng.uniform(-0.05, 0.05, (n_ant, 1, n_corr)) * (x[None, :, None] - 0.5)
    amp = ripple * tilt
    n_edge = round(edge_fraction * n_chan)
    if n_edge > 0:
        roll = np.ones(n_chan)
        ramp = np.linspace(0.35, 0.9, n_edge)
        roll[:n_edge] = ramp
        roll[-n_edge:] = ramp[::-1]
        amp = amp * roll[None, :, None]
    delay_s = rng.uniform(-0.3e-9, 0.3e-9, (n_ant, 1, n_corr))
    centre = freq_hz[n_chan // 2]
    phase = 2 * np.pi * delay_s * (freq_hz[None, :, None] - centre) + np.radians(
        rng.uniform(2.0, 6.0, (n_ant, 1, n_corr))
    ) * np.sin(2 * np.pi * rng.uniform(1.0, 3.0, (n_ant, 1, n_corr)) * x[None, :, None])
    return amp * np.exp(1j * phase)
