"""Bandpass B_p(nu) per antenna and correlation, solved on the bandpass calibrator.

Standard practice (CASA's gaincal + bandpass, as in the ALMA pipeline's hifa_bandpass):
1. A short-interval (per-integration) phase-only pre-solve on channel-averaged data over the central channels
   (away from the roll-off, where a residual delay decorrelates least) removes the atmospheric phase that
   wanders during the scan; otherwise averaging over the scan would decorrelate the bandpass solution.
   Phase-only here means the phase of an amplitude+phase StEFCal solution.
2. Per channel, one StEFCal solution over the whole scan with those phases folded into the model
   (M_pq(t, nu) = S(nu) exp(i(phi_p(t) - phi_q(t)))), the data untouched.
3. Normalisation per antenna and correlation over unflagged channels: mean amplitude 1 and the phase of the
   mean phasor 0. Only B_p conj(B_q) enters the measurement equation, so the removed per-antenna constants
   are absorbed by the time-dependent gains solved afterwards.

Channels with too little data or SNR below min_snr are flagged (so a flagged spur channel stays flagged when
the bandpass is applied to the target).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mousflow.science.calibration.errors import CalibrationFailed
from mousflow.science.calibration.flagging import has_unflagged_sample
from mousflow.science.calibration.models import calibrator_model
from mousflow.science.calibration.stefcal import reduce_baselines, stefcal


@dataclass(frozen=True)
class BandpassTable:
    """bandpass: (n_ant, n_chan, n_corr) complex128, 1+0j where flagged; flags, snr the same shape.
    reference_antenna: (n_chan, n_corr) used by the solver (-1: channel unsolved)."""

    bandpass: np.ndarray
    flags: np.ndarray
    snr: np.ndarray
    reference_antenna: np.ndarray

    def __post_init__(self):
        if self.bandpass.ndim != 3 or self.bandpass.shape != self.flags.shape:
            raise CalibrationFailed(f"BandpassTable: inconsistent shapes {self.bandpass.shape}, {self.flags.shape}")


def normalise_bandpass(bandpass: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """Per antenna and correlation: mean amplitude 1 and mean phase 0 over the unflagged channels."""
    good = ~flags & (np.abs(bandpass) > 0)
    n = good.sum(axis=1, keepdims=True)
    amp = np.where(good, np.abs(bandpass), 0).sum(axis=1, keepdims=True) / np.maximum(n, 1)
    phasor = np.where(good, bandpass / np.where(good, np.abs(bandpass), 1), 0).sum(axis=1, keepdims=True)
    rot = np.where(np.abs(phasor) > 0, np.conj(phasor) / np.where(np.abs(phasor) > 0, np.abs(phasor), 1), 1)
    out = bandpass * rot / np.where(amp > 0, amp, 1)
    return np.where(flags, 1.0 + 0j, out)


def central_channels(n_chan: int, fraction: float = 0.5) -> slice:
    """The central `fraction` of a window's channels (at least one)."""
    width = max(1, round(n_chan * fraction))
    start = (n_chan - width) // 2
    return slice(start, start + width)


def solve_bandpass(vis: np.ndarray, flag: np.ndarray, weight: np.ndarray, antenna1: np.ndarray,
                   antenna2: np.ndarray, n_ant: int, *, flux_jy=None, presolve_fraction: float = 0.5,
                   reference_antenna=None, min_snr: float = 3.0, min_baselines: int = 4) -> BandpassTable:
    """Solve the bandpass on a point-source calibrator scan (see the module docstring).

    vis, flag, weight: (time, baseline, channel, corr). flux_jy: the calibrator's spectrum (scalar, (n_chan,)
    or (n_chan, n_corr)); None assumes a flat spectrum, whose slope error then ends up in the bandpass (for a
    quasar with alpha = -0.7 across a 2 GHz window at 100 GHz, +-0.7 % at the edges).
    Raises CalibrationFailed if the calibrator has no unflagged data or no channel could be solved.
    """
    vis = np.asarray(vis)
    if vis.ndim != 4:
        raise CalibrationFailed(f"visibilities must be (time, baseline, channel, corr), got shape {vis.shape}")
    n_time, n_chan = vis.shape[0], vis.shape[2]
    a1, a2 = np.asarray(antenna1), np.asarray(antenna2)
    flag = np.asarray(flag, bool)
    if not has_unflagged_sample(vis, flag):
        raise CalibrationFailed("solve_bandpass: the bandpass calibrator has no unflagged data")
    model = calibrator_model(n_chan, flux_jy)

    # 1. per-integration phases from the central channels
    sel = central_channels(n_chan, presolve_fraction)
    x, y, _ = reduce_baselines(vis[:, :, sel], model[sel], weight[:, :, sel], flag[:, :, sel],
                               np.arange(n_time), n_time, per_channel=False)  # (time, corr, bl)
    pre = stefcal(x, y, a1, a2, n_ant, reference_antenna=reference_antenna, min_snr=min_snr,
                  min_baselines=min_baselines)
    if pre.flags.all():
        raise CalibrationFailed("solve_bandpass: the phase pre-solve failed for every integration")
    phasor = np.where(pre.flags, 0, pre.gains / np.maximum(np.abs(pre.gains), 1e-30))  # (time, corr, ant)
    phasor = phasor.transpose(0, 2, 1)  # (time, ant, corr)
    # (time, bl, corr); 0 where the pre-solve failed, so that those samples carry no weight (reduce_baselines)
    rot = phasor[:, a1] * np.conj(phasor[:, a2])

    # 2. per channel over the whole scan, with the phases in the model
    x, y, _ = reduce_baselines(vis, model, weight, flag, np.zeros(n_time, int), 1, per_channel=True, phasor=rot)
    res = stefcal(x[0], y[0], a1, a2, n_ant, reference_antenna=reference_antenna, min_snr=min_snr,
                  min_baselines=min_baselines)  # (chan, corr, ant)
    flags = res.flags.transpose(2, 0, 1)
    if flags.all():
        raise CalibrationFailed("solve_bandpass: every bandpass solution is flagged")
    bp = normalise_bandpass(res.gains.transpose(2, 0, 1), flags)
    return BandpassTable(bandpass=bp, flags=flags, snr=res.snr.transpose(2, 0, 1),
                         reference_antenna=res.reference_antenna)
