"""Applying gains and bandpass: V_pq = D_pq / (J_p conj(J_q)), J = g(t) B(nu), per correlation.

Weights follow the data: sigma_V = sigma_D / |J_p J_q|, so w_V = w_D |J_p|^2 |J_q|^2 and the weights stay
1/sigma^2 in calibrated (Jy) units, which imaging and the sensitivity checks rely on. Data whose gain or
bandpass is flagged are flagged; flagged samples get weight 0 and non-finite samples are set to 0 so that
NaNs cannot leak into sums downstream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mousflow.science.calibration import chunking
from mousflow.science.calibration.bandpass import BandpassTable
from mousflow.science.calibration.errors import CalibrationFailed


@dataclass(frozen=True)
class BaselineBandpass:
    """A bandpass as it applies to each baseline, B_p conj(B_q), ready to apply: its inverse (complex64), its
    power |B_p B_q|^2 (float32) and where it cannot be applied (either antenna's channel flagged, or zero), all
    (n_bl, n_chan, n_corr). Made once for a window's baselines (baseline_bandpass) and applied to every block of
    it: made again for each block, it cost a 480-channel window a fifth of what applying did."""

    inverse: np.ndarray
    power: np.ndarray
    bad: np.ndarray

    def baselines(self, rows: slice) -> BaselineBandpass:
        return BaselineBandpass(self.inverse[rows], self.power[rows], self.bad[rows])


def baseline_bandpass(bandpass: BandpassTable, antenna1: np.ndarray, antenna2: np.ndarray) -> BaselineBandpass:
    a1, a2 = np.asarray(antenna1), np.asarray(antenna2)
    bb = bandpass.bandpass[a1] * np.conj(bandpass.bandpass[a2])  # (bl, chan, corr), the bandpass's precision
    inverse, power = _inverse_and_power(bb)
    return BaselineBandpass(inverse, power, bandpass.flags[a1] | bandpass.flags[a2] | (bb == 0))


def apply_calibration(vis: np.ndarray, flag: np.ndarray, weight: np.ndarray, antenna1: np.ndarray,
                      antenna2: np.ndarray, gains: np.ndarray, gain_flags: np.ndarray | None = None,
                      bandpass: BandpassTable | BaselineBandpass | None = None, *, scale_weights: bool = True,
                      out: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return calibrated (vis complex64, flag bool, weight float32), all (time, baseline, channel, corr).

    gains: (n_time, n_ant, n_corr) at the data's times (see `interpolate_gains`); gain_flags the same shape.
    bandpass: optional BandpassTable (n_ant, n_chan, n_corr), or baseline_bandpass of it for these baselines
    (made once for many calls). The inputs are not modified, unless given as `out`.
    scale_weights: False leaves the weights as they are (only zeroed where flagged), for data whose weights
    are already in calibrated units (as mousflow's simulator writes them: 1/sigma^2 of the Jy-level noise).
    out: (vis complex64, flag bool, weight float32) of the data's shape to write the result into, returned; they
    may be the inputs themselves (calibrated in place, the same bits: each chunk of samples is read whole
    before it is written, and no chunk reads another's samples).
    """
    vis = np.asarray(vis)
    n_time, n_bl, n_chan, n_corr = vis.shape
    a1, a2 = np.asarray(antenna1), np.asarray(antenna2)
    gains = np.asarray(gains)
    if gains.shape[0] != n_time or gains.shape[2] != n_corr or max(a1.max(), a2.max()) >= gains.shape[1]:
        raise CalibrationFailed(f"gains {gains.shape} do not fit data {vis.shape} with antennas up to "
                                f"{max(a1.max(), a2.max())}")
    gflag = np.zeros(gains.shape, bool) if gain_flags is None else np.asarray(gain_flags, bool)
    # 1/J = 1/(g_p conj g_q) x 1/(B_p conj B_q): the bandpass's part inverted once for all integrations, the
    # gains' once per integration and baseline, and each sample multiplied by the two in single precision (the
    # precision it is stored in). Dividing every sample by J in double precision was a third of the stage's CPU.
    # A zero J is singular: its samples are flagged and kept as they are (divided by 1).
    if isinstance(bandpass, BandpassTable):
        if bandpass.bandpass.shape[1:] != (n_chan, n_corr):
            raise CalibrationFailed(f"bandpass {bandpass.bandpass.shape} does not fit data {vis.shape}")
        bandpass = baseline_bandpass(bandpass, a1, a2)
    elif bandpass is None:
        bandpass = BaselineBandpass(np.ones((n_bl, n_chan, n_corr), np.complex64),
                                    np.ones((n_bl, n_chan, n_corr), np.float32), np.zeros((n_bl, n_chan, n_corr), bool))
    elif bandpass.inverse.shape != (n_bl, n_chan, n_corr):
        raise CalibrationFailed(f"bandpass on baselines {bandpass.inverse.shape} does not fit data {vis.shape}")
    b_inverse, b_power, b_bad = bandpass.inverse, bandpass.power, bandpass.bad
    if out is None:
        out_vis, out_flag, out_weight = (np.empty(vis.shape, np.complex64), np.empty(vis.shape, bool),
                                         np.empty(vis.shape, np.float32))
    else:
        out_vis, out_flag, out_weight = out
        if [(a.shape, a.dtype) for a in out] != [(vis.shape, np.dtype(t)) for t in (np.complex64, bool, np.float32)]:
            raise CalibrationFailed(f"apply_calibration: out arrays {[(a.shape, a.dtype) for a in out]} do not "
                                    f"fit data {vis.shape} (complex64, bool, float32)")
    for ts, bs in chunking.sample_chunks(n_time, n_bl, n_chan * n_corr):
        b1, b2 = a1[bs], a2[bs]
        gg = gains[ts][:, b1] * np.conj(gains[ts][:, b2])  # (t, bl, corr)
        g_bad = (gflag[ts][:, b1] | gflag[ts][:, b2] | (gg == 0))[:, :, None, :]
        g_inverse, g_power = (a[:, :, None, :] for a in _inverse_and_power(gg))
        d = vis[ts, bs]
        f = np.asarray(flag[ts, bs], bool) | g_bad | b_bad[bs][None]
        invalid = ~np.isfinite(d)
        f |= invalid
        out_flag[ts, bs] = f
        w = np.asarray(weight[ts, bs], np.float32) * g_power * b_power[bs][None] if scale_weights else \
            np.array(weight[ts, bs], np.float32)
        np.copyto(w, 0, where=f)
        out_weight[ts, bs] = w
        del w
        with np.errstate(invalid="ignore", over="ignore"):  # a NaN or inf sample: zeroed just below
            v = d * g_inverse  # complex64, the chunk's one intermediate of its size but for the flags
            v *= b_inverse[bs][None]
        if invalid.any():  # the inverses are finite: only a sample that was not can make one that is not
            np.copyto(v, 0, where=invalid)
        out_vis[ts, bs] = v
    return out_vis, out_flag, out_weight


def _inverse_and_power(j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(1/j as complex64, |j|^2 as float32), computed in j's precision; 1 and 0 where j is 0 (singular)."""
    singular = j == 0
    with np.errstate(all="ignore"):
        inverse = 1 / np.where(singular, 1, j)
    return inverse.astype(np.complex64), np.where(singular, 0, np.abs(j) ** 2).astype(np.float32)
