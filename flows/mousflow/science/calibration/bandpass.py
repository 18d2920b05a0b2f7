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


class BandpassSums:
    """solve_bandpass over blocks of integrations: each block's phases pre-solved per integration (step 1 of the
    module docstring needs no other integration), its sums per channel with those phases in the model added
    (step 2), then one solve per channel. Blocks in any order and any split give the whole scan's sums; one
    block of all the data is solve_bandpass itself."""

    def __init__(self, antenna1: np.ndarray, antenna2: np.ndarray, n_ant: int, n_chan: int, n_corr: int, *,
                 flux_jy=None, presolve_fraction: float = 0.5, reference_antenna=None, min_snr: float = 3.0,
                 min_baselines: int = 4):
        self.a1, self.a2, self.n_ant, self.n_chan = np.asarray(antenna1), np.asarray(antenna2), n_ant, n_chan
        self.model = calibrator_model(n_chan, flux_jy)
        self.central = central_channels(n_chan, presolve_fraction)
        self.solver = dict(reference_antenna=reference_antenna, min_snr=min_snr, min_baselines=min_baselines)
        self.x = np.zeros((1, n_chan, n_corr, self.a1.size), np.complex128)
        self.y = np.zeros((1, n_chan, n_corr, self.a1.size))
        self.usable = self.presolved = False

    def add(self, vis: np.ndarray, flag: np.ndarray, weight: np.ndarray) -> None:
        """One block of integrations, (time, baseline, channel, corr)."""
        vis = np.asarray(vis)
        if vis.ndim != 4:
            raise CalibrationFailed(f"visibilities must be (time, baseline, channel, corr), got shape {vis.shape}")
        flag = np.asarray(flag, bool)
        if not has_unflagged_sample(vis, flag):
            return
        self.usable = True
        n_time, sel = vis.shape[0], self.central
        # 1. per-integration phases from the central channels
        x, y, _ = reduce_baselines(vis[:, :, sel], self.model[sel], weight[:, :, sel], flag[:, :, sel],
                                   np.arange(n_time), n_time, per_channel=False)  # (time, corr, bl)
        if not np.any(y > 0):
            return  # nothing in the central channels: no phase, so the block carries no weight
        pre = stefcal(x, y, self.a1, self.a2, self.n_ant, **self.solver)
        if pre.flags.all():
            return
        self.presolved = True
        phasor = np.where(pre.flags, 0, pre.gains / np.maximum(np.abs(pre.gains), 1e-30))  # (time, corr, ant)
        phasor = phasor.transpose(0, 2, 1)  # (time, ant, corr)
        # (time, bl, corr); 0 where the pre-solve failed, so that those samples carry no weight (reduce_baselines)
        rot = phasor[:, self.a1] * np.conj(phasor[:, self.a2])
        # 2. per channel over the whole scan, with the phases in the model
        x, y, _ = reduce_baselines(vis, self.model, weight, flag, np.zeros(n_time, int), 1, per_channel=True,
                                   phasor=rot)
        self.x += x
        self.y += y

    def solve(self) -> BandpassTable:
        """The bandpass from the sums of every block (see solve_bandpass)."""
        if not self.usable:
            raise CalibrationFailed("solve_bandpass: the bandpass calibrator has no unflagged data")
        if not self.presolved:
            raise CalibrationFailed("solve_bandpass: the phase pre-solve failed for every integration")
        res = stefcal(self.x[0], self.y[0], self.a1, self.a2, self.n_ant, **self.solver)  # (chan, corr, ant)
        flags = res.flags.transpose(2, 0, 1)
        if flags.all():
            raise CalibrationFailed("solve_bandpass: every bandpass solution is flagged")
        bp = normalise_bandpass(res.gains.transpose(2, 0, 1), flags)
        return BandpassTable(bandpass=bp, flags=flags, snr=res.snr.transpose(2, 0, 1),
                             reference_antenna=res.reference_antenna)


def solve_bandpass(vis: np.ndarray, flag: np.ndarray, weight: np.ndarray, antenna1: np.ndarray,
                   antenna2: np.ndarray, n_ant: int, *, flux_jy=None, presolve_fraction: float = 0.5,
                   reference_antenna=None, min_snr: float = 3.0, min_baselines: int = 4) -> BandpassTable:
    """Solve the bandpass on a point-source calibrator scan (see the module docstring): BandpassSums on the data
    as one block.

    vis, flag, weight: (time, baseline, channel, corr). flux_jy: the calibrator's spectrum (scalar, (n_chan,)
    or (n_chan, n_corr)); None assumes a flat spectrum, whose slope error then ends up in the bandpass (for a
    quasar with alpha = -0.7 across a 2 GHz window at 100 GHz, +-0.7 % at the edges).
    Raises CalibrationFailed if the calibrator has no unflagged data or no channel could be solved.
    """
    vis = np.asarray(vis)
    if vis.ndim != 4:
        raise CalibrationFailed(f"visibilities must be (time, baseline, channel, corr), got shape {vis.shape}")
    sums = BandpassSums(antenna1, antenna2, n_ant, vis.shape[2], vis.shape[3], flux_jy=flux_jy,
                        presolve_fraction=presolve_fraction, reference_antenna=reference_antenna, min_snr=min_snr,
                        min_baselines=min_baselines)
    sums.add(vis, flag, weight)
    return sums.solve()
