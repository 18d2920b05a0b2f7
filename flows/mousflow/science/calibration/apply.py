"""Applying gains and bandpass: V_pq = D_pq / (J_p conj(J_q)), J = g(t) B(nu), per correlation.

Weights follow the data: sigma_V = sigma_D / |J_p J_q|, so w_V = w_D |J_p|^2 |J_q|^2 and the weights stay
1/sigma^2 in calibrated (Jy) units, which imaging and the sensitivity checks rely on. Data whose gain or
bandpass is flagged are flagged; flagged samples get weight 0 and non-finite samples are set to 0 so that
NaNs cannot leak into sums downstream.
"""

from __future__ import annotations

import numpy as np

from mousflow.science.calibration import chunking
from mousflow.science.calibration.bandpass import BandpassTable
from mousflow.science.calibration.errors import CalibrationFailed


def apply_calibration(vis: np.ndarray, flag: np.ndarray, weight: np.ndarray, antenna1: np.ndarray,
                      antenna2: np.ndarray, gains: np.ndarray, gain_flags: np.ndarray | None = None,
                      bandpass: BandpassTable | None = None, *, scale_weights: bool = True,
                      out: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return calibrated (vis complex64, flag bool, weight float32), all (time, baseline, channel, corr).

    gains: (n_time, n_ant, n_corr) at the data's times (see `interpolate_gains`); gain_flags the same shape.
    bandpass: optional BandpassTable (n_ant, n_chan, n_corr). The inputs are not modified, unless given as `out`.
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
    if bandpass is not None:
        if bandpass.bandpass.shape[1:] != (n_chan, n_corr):
            raise CalibrationFailed(f"bandpass {bandpass.bandpass.shape} does not fit data {vis.shape}")
        bb = bandpass.bandpass[a1] * np.conj(bandpass.bandpass[a2])  # (bl, chan, corr)
        bflag = bandpass.flags[a1] | bandpass.flags[a2]
    else:
        bb = np.ones((n_bl, n_chan, n_corr), np.complex128)
        bflag = np.zeros((n_bl, n_chan, n_corr), bool)
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
        gg = (gains[ts][:, b1] * np.conj(gains[ts][:, b2]))[:, :, None, :]  # (t, bl, 1, corr)
        gf = (gflag[ts][:, b1] | gflag[ts][:, b2])[:, :, None, :]
        j = gg * bb[bs][None]  # the chunk's one complex128 intermediate; the rest is done in it, in place
        d = vis[ts, bs]
        singular = j == 0
        f = np.asarray(flag[ts, bs], bool) | gf | bflag[bs][None] | singular
        f |= ~np.isfinite(d)
        out_flag[ts, bs] = f
        scale = np.abs(j) ** 2 if scale_weights else 1.0
        out_weight[ts, bs] = np.where(f, 0.0, np.asarray(weight[ts, bs]) * scale)
        del scale
        np.copyto(j, 1, where=singular)
        with np.errstate(all="ignore"):
            v = np.divide(d, j, out=j)
        np.copyto(v, 0, where=~np.isfinite(v))
        out_vis[ts, bs] = v
    return out_vis, out_flag, out_weight

