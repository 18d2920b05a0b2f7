"""Gains from the calibrator's solution times onto other times (the science target's integrations).

Linear in amplitude and in unwrapped phase between the two unflagged solutions that bracket a time; the
nearest unflagged solution before the first and after the last (phase referencing brackets every target
scan with calibrator scans, so this only matters at the very ends). Unwrapping is along the sequence of
unflagged solutions, so phase steps of more than 180 degrees between consecutive solutions are ambiguous:
solve often enough that the atmosphere cannot do that (ALMA's cycle is chosen for exactly this), and keep
one reference antenna (stefcal's preference list does).
"""

from __future__ import annotations

import numpy as np

from mousflow.science.calibration.errors import CalibrationFailed
from mousflow.science.calibration.gains import GainTable


def interpolate_gains(table: GainTable, time_s: np.ndarray, *, max_extrapolation_s: float | None = None,
                      max_gap_s: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Gains (n_time, n_ant, n_corr) complex128 and flags (same shape) at `time_s`.

    Flagged (gain 1+0j) where an antenna/correlation has no unflagged solution at all, where the nearest
    solution is more than max_extrapolation_s beyond the first/last one, or where the two bracketing
    solutions are more than max_gap_s apart (both None: no limit).
    """
    t = np.asarray(time_s, dtype=np.float64).ravel()
    n_sol, n_ant, n_corr = table.gains.shape
    if n_sol == 0:
        raise CalibrationFailed("interpolate_gains: the gain table is empty")
    if np.any(np.diff(table.time_s) <= 0):
        raise CalibrationFailed("interpolate_gains: gain table times must be strictly increasing")
    out = np.ones((t.size, n_ant, n_corr), np.complex128)
    flags = np.ones((t.size, n_ant, n_corr), bool)
    for a in range(n_ant):
        for c in range(n_corr):
            good = ~table.flags[:, a, c]
            if not good.any():
                continue
            ts = table.time_s[good]
            g = table.gains[good, a, c]
            amp = np.interp(t, ts, np.abs(g))
            phase = np.interp(t, ts, np.unwrap(np.angle(g)))
            out[:, a, c] = amp * np.exp(1j * phase)
            bad = np.zeros(t.size, bool)
            if max_extrapolation_s is not None:
                bad |= (t < ts[0] - max_extrapolation_s) | (t > ts[-1] + max_extrapolation_s)
            if max_gap_s is not None and ts.size > 1:
                right = np.clip(np.searchsorted(ts, t), 1, ts.size - 1)
                inside = (t > ts[0]) & (t < ts[-1])
                bad |= inside & (ts[right] - ts[right - 1] > max_gap_s)
            flags[:, a, c] = bad
    return np.where(flags, 1.0 + 0j, out), flags
