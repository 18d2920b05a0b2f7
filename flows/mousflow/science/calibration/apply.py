"""Applying gains and bandpass: V_pq = D_pq / (J_p conj(J_q)), J = g(t) B(nu), per correlation.

Weights follow the data: sigma_V = sigma_D / |J_p J_q|, so w_V = w_D |J_p|^2 |J_q|^2 and the weights stay
1/sigma^2 in calibrated (Jy) units, which imaging and the sensitivity checks rely on. Data whose gain or
bandpass is flagged are flagged; flagged samples get weight 0 and non-finite samples are set to 0 so that
NaNs cannot leak into sums downstream.
"""

from __future__ import annotations

import numpy as np

from mousflow.science.calibration.bandpass import BandpassTable
from mousflow.science.calibration.errors import CalibrationFailed

ROWS_PER_CHUNK = 65536


def apply_calibration(vis: np.ndarray, flag: np.ndarray, weight: np.ndarray, antenna1: np.ndarray,
                      antenna2: np.ndarray, gains: np.ndarray, gain_flags: np.ndarray | None = None,
                      bandpass: BandpassTable | None = None, *, scale_weights: bool = True
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return calibrated (vis complex64, flag bool, weight float32), all (time, baseline, channel, corr).

    gains: (n_time, n_ant, n_corr) at the data's times (see `interpolate_gains`); gain_flags the same shape.
    bandpass: optional BandpassTable (n_ant, n_chan, n_corr). The inputs are not modified.
    scale_weights: False leaves the weights as they are (only zeroed where flagged), for data whose weights
    are already in calibrated units (as mousflow's simulator writes them: 1/sigma^2 of the Jy-level noise).
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
    out_vis = np.empty(vis.shape, np.complex64)
    out_flag = np.empty(vis.shape, bool)
    out_weight = np.empty(vis.shape, np.float32)
    step = max(1, ROWS_PER_CHUNK // max(1, n_bl))
    for t0 in range(0, n_time, step):
        ts = slice(t0, min(n_time, t0 + step))
        gg = (gains[ts][:, a1] * np.conj(gains[ts][:, a2]))[:, :, None, :]  # (t, bl, 1, corr)
        gf = (gflag[ts][:, a1] | gflag[ts][:, a2])[:, :, None, :]
        j = gg * bb[None]
        d = vis[ts]
        f = np.asarray(flag[ts], bool) | gf | bflag[None] | ~np.isfinite(d) | (j == 0)
        with np.errstate(all="ignore"):
            v = d / np.where(j == 0, 1, j)
        out_vis[ts] = np.where(np.isfinite(v), v, 0)
        out_flag[ts] = f
        scale = np.abs(j) ** 2 if scale_weights else 1.0
        out_weight[ts] = np.where(f, 0.0, np.asarray(weight[ts]) * scale)
    return out_vis, out_flag, out_weight
