"""Time-dependent complex gains per solution interval on (bandpass-corrected) calibrator data.

The bandpass is not divided out of the data: it is folded into the model, M_pq(t, nu) = B_p(nu) S(nu)
conj(B_q(nu)), which is the same least-squares problem but keeps the data's weights exactly 1/sigma^2 and
needs no copy of the data. Channels where the bandpass is flagged carry no weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mousflow.science.calibration.bandpass import BandpassTable
from mousflow.science.calibration.errors import CalibrationFailed
from mousflow.science.calibration.flagging import has_unflagged_sample
from mousflow.science.calibration.models import calibrator_model
from mousflow.science.calibration.stefcal import reduce_baselines, stefcal


@dataclass(frozen=True)
class GainTable:
    """Complex gains g_p(t) per solution interval.

    time_s: (n_sol,) centre of each interval (mean time of its integrations).
    gains: (n_sol, n_ant, n_corr) complex128, 1+0j where flagged. flags: (n_sol, n_ant, n_corr) bool.
    snr: (n_sol, n_ant, n_corr) |g| / formal error. reference_antenna: (n_sol, n_corr), -1 where unsolved.
    """

    time_s: np.ndarray
    gains: np.ndarray
    flags: np.ndarray
    snr: np.ndarray
    reference_antenna: np.ndarray

    def __post_init__(self):
        if self.gains.ndim != 3 or self.gains.shape != self.flags.shape or self.gains.shape != self.snr.shape:
            raise CalibrationFailed(f"GainTable: inconsistent shapes {self.gains.shape}, {self.flags.shape}, "
                                    f"{self.snr.shape}")
        if self.time_s.shape != self.gains.shape[:1]:
            raise CalibrationFailed(f"GainTable: {self.time_s.size} times for {self.gains.shape[0]} solutions")

    @property
    def n_ant(self) -> int:
        return self.gains.shape[1]

    def scaled(self, factor) -> GainTable:
        """The same table with every gain multiplied by `factor` (scalar or broadcastable to gains)."""
        return GainTable(self.time_s, np.where(self.flags, self.gains, self.gains * factor), self.flags, self.snr,
                         self.reference_antenna)


def solution_intervals(time_s: np.ndarray, solint: str | float = "int", scan_gap_s: float | None = None
                       ) -> tuple[np.ndarray, int]:
    """Assign each integration to a solution interval; returns (index per time, number of intervals).

    solint: "int" (one solution per integration), "scan" (contiguous runs of integrations: a gap longer than
    scan_gap_s, default 1.5 x the median spacing, starts a new scan), or a length in seconds (consecutive
    bins of that length, never straddling a scan boundary).
    """
    t = np.asarray(time_s, dtype=np.float64)
    if t.ndim != 1 or t.size == 0:
        raise CalibrationFailed("solution_intervals: need a non-empty 1-d array of times")
    if np.any(np.diff(t) <= 0):
        raise CalibrationFailed("solution_intervals: times must be strictly increasing")
    if solint == "int":
        return np.arange(t.size), t.size
    dt = np.diff(t)
    gap = scan_gap_s if scan_gap_s is not None else (1.5 * np.median(dt) if dt.size else 1.0)
    scan = np.concatenate([[0], np.cumsum(dt > gap)])
    if solint == "scan":
        return scan, int(scan[-1]) + 1
    try:
        length = float(solint)
    except (TypeError, ValueError):
        raise CalibrationFailed(f"solint must be 'int', 'scan' or seconds, got {solint!r}") from None
    if length <= 0:
        raise CalibrationFailed(f"solint must be positive, got {length}")
    index = np.empty(t.size, int)
    n = 0
    for s in range(int(scan[-1]) + 1):
        sel = np.flatnonzero(scan == s)
        b = np.floor((t[sel] - t[sel[0]]) / length).astype(int)
        _, local = np.unique(b, return_inverse=True)
        index[sel] = n + local
        n += int(local.max()) + 1
    return index, n


def bandpass_model(antenna1: np.ndarray, antenna2: np.ndarray, bandpass: BandpassTable | None, n_chan: int,
                   flux_jy=None) -> tuple[np.ndarray, np.ndarray | None]:
    """Model B_p S conj(B_q) (baseline, channel, corr) and the baseline-channel flags the bandpass implies."""
    model = calibrator_model(n_chan, flux_jy)
    if bandpass is None:
        return model, None
    if bandpass.bandpass.shape[1] != n_chan:
        raise CalibrationFailed(f"bandpass has {bandpass.bandpass.shape[1]} channels, data {n_chan}")
    b = np.where(bandpass.flags, 0, bandpass.bandpass)
    bb = b[antenna1] * np.conj(b[antenna2]) * model[None]
    bflag = bandpass.flags[antenna1] | bandpass.flags[antenna2]
    return bb, bflag


class GainSums:
    """solve_gains over blocks of integrations: StEFCal's sums per solution interval (reduce_baselines), added
    block by block in any order, then one solve. time_s: the integrations of all the blocks, in order; `add`
    takes each block with its range of them. One block of all the data is solve_gains itself."""

    def __init__(self, antenna1: np.ndarray, antenna2: np.ndarray, time_s: np.ndarray, n_chan: int, n_corr: int, *,
                 bandpass: BandpassTable | None = None, flux_jy=None, solint: str | float = "int",
                 scan_gap_s: float | None = None):
        self.a1, self.a2 = np.asarray(antenna1), np.asarray(antenna2)
        self.time_s = np.asarray(time_s, dtype=np.float64)
        # the model is 0 where the bandpass is flagged: those samples carry no weight (reduce_baselines)
        self.model, bflag = bandpass_model(self.a1, self.a2, bandpass, n_chan, flux_jy)
        self.bandpass_all_flagged = bflag is not None and bool(bflag.all())
        self.index, self.n_sol = solution_intervals(self.time_s, solint, scan_gap_s)
        self.x = np.zeros((self.n_sol, n_corr, self.a1.size), np.complex128)
        self.y = np.zeros((self.n_sol, n_corr, self.a1.size))
        self.usable = False

    def add(self, times: slice, vis: np.ndarray, flag: np.ndarray, weight: np.ndarray) -> None:
        """One block: the integrations time_s[times], (time, baseline, channel, corr)."""
        vis = np.asarray(vis)
        if vis.ndim != 4:
            raise CalibrationFailed(f"visibilities must be (time, baseline, channel, corr), got shape {vis.shape}")
        index = self.index[times]
        if index.size != vis.shape[0]:
            raise CalibrationFailed(f"a block of {vis.shape[0]} integrations given {index.size} times")
        flag = np.asarray(flag, bool)
        self.usable = self.usable or has_unflagged_sample(vis, flag)
        x, y, _ = reduce_baselines(vis, self.model, weight, flag, index, self.n_sol, per_channel=False)
        self.x += x
        self.y += y

    def solve(self, n_ant: int, *, phase_only: bool = False, reference_antenna=None, min_snr: float = 3.0,
              min_baselines: int = 4) -> GainTable:
        """The gain table from the sums of every block (see solve_gains)."""
        if not self.usable or self.bandpass_all_flagged:
            raise CalibrationFailed("solve_gains: the calibrator has no unflagged data")
        res = stefcal(self.x, self.y, self.a1, self.a2, n_ant, reference_antenna=reference_antenna,
                      min_snr=min_snr, min_baselines=min_baselines)
        if res.flags.all():
            raise CalibrationFailed("solve_gains: every gain solution is flagged (too few antennas or SNR too low)")
        gains = res.gains.transpose(0, 2, 1)  # (sol, ant, corr)
        if phase_only:
            gains = np.where(res.flags.transpose(0, 2, 1), gains, gains / np.maximum(np.abs(gains), 1e-30))
        counts = np.bincount(self.index, minlength=self.n_sol)
        centres = np.bincount(self.index, self.time_s, minlength=self.n_sol) / np.maximum(counts, 1)
        return GainTable(time_s=centres, gains=gains, flags=res.flags.transpose(0, 2, 1),
                         snr=res.snr.transpose(0, 2, 1), reference_antenna=res.reference_antenna)


def solve_gains(vis: np.ndarray, flag: np.ndarray, weight: np.ndarray, antenna1: np.ndarray, antenna2: np.ndarray,
                n_ant: int, time_s: np.ndarray, *, bandpass: BandpassTable | None = None, flux_jy=None,
                solint: str | float = "int", scan_gap_s: float | None = None, phase_only: bool = False,
                reference_antenna=None, min_snr: float = 3.0, min_baselines: int = 4) -> GainTable:
    """Solve g_p(t) per solution interval and correlation on a point-source calibrator (GainSums on the data as
    one block).

    vis, flag, weight: (time, baseline, channel, corr). flux_jy: the calibrator's model (None = 1 Jy at every
    frequency: the amplitudes then carry sqrt(S), which `fluxscale` removes). phase_only: keep only the phase
    of each solution (amplitude 1), e.g. to remove the atmosphere on the bandpass calibrator.
    Raises CalibrationFailed if the calibrator has no unflagged data or no solution could be made.
    """
    vis = np.asarray(vis)
    if vis.ndim != 4:
        raise CalibrationFailed(f"visibilities must be (time, baseline, channel, corr), got shape {vis.shape}")
    sums = GainSums(antenna1, antenna2, time_s, vis.shape[2], vis.shape[3], bandpass=bandpass, flux_jy=flux_jy,
                    solint=solint, scan_gap_s=scan_gap_s)
    sums.add(slice(None), vis, flag, weight)
    return sums.solve(n_ant, phase_only=phase_only, reference_antenna=reference_antenna, min_snr=min_snr,
                      min_baselines=min_baselines)
