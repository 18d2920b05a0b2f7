"""Per-antenna complex gains from baseline data: StEFCal (Salvini & Wijnholds 2014, A&A 571, A97).

Problem: for one solution (one correlation, one solution interval, and for a bandpass one channel) find
g_p minimising

    chi^2 = sum_{p<q} sum_k w_pqk |D_pqk - g_p M_pqk conj(g_q)|^2

over all samples k (integrations, channels) of the solution, given model visibilities M (for a point-source
calibrator M = S(nu), possibly times a known bandpass B_p conj(B_q)).

Why StEFCal rather than Gauss-Newton/Levenberg-Marquardt (CASA gaincal's approach):
- Alternating direction: with the other antennas' gains held fixed, the problem for g_p is *linear*, and its
  least-squares solution is a ratio of two sums over baselines. One iteration updates every antenna at once
  and costs O(N^2) (a Hermitian matrix-vector product), with no Jacobian and no N x N linear solve.
- Averaging the new and previous iterates on every second iteration (the paper's key step) removes the
  oscillation of the plain alternating update and makes convergence robust from a trivial start (g = 1) even
  with arbitrary instrumental phases; it typically converges in 10-40 iterations.
- Because each update only needs sum_k w conj(M) D and sum_k w |M|^2 per baseline, the data are first reduced
  to two numbers per baseline and solution (exact for gains constant over the solution, not an approximation),
  so many solutions (integrations x correlations x channels) are solved together as one vectorised batch.

Noise: with weights w = 1/sigma^2 (sigma the rms of the real and of the imaginary part) the formal error of
each component of g_p is 1 / sqrt(sum_q |g_q|^2 sum_k w |M_pqk|^2); SNR = |g_p| / that error, so that the phase
error in radians is ~1/SNR.

Phase reference: the phase of all gains is free. After convergence the gains are rotated so the reference
antenna has zero phase (the first usable antenna of a preference list, per solution; the chosen antenna is
returned so a change of reference shows).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mousflow.science.calibration.errors import CalibrationFailed


@dataclass(frozen=True)
class StefcalResult:
    """Solutions for a batch of independent problems with leading shape `batch`.

    gains: (*batch, n_ant) complex128, 1+0j where flagged.
    flags: (*batch, n_ant) True where the solution is unusable (no/too few baselines, not converged, SNR low).
    snr: (*batch, n_ant) |g| / formal error per component (0 where unsolvable).
    converged: (*batch,) bool; iterations: (*batch,) int; reference_antenna: (*batch,) int (-1: no solution).
    """

    gains: np.ndarray
    flags: np.ndarray
    snr: np.ndarray
    converged: np.ndarray
    iterations: np.ndarray
    reference_antenna: np.ndarray


# The sums over integrations are taken a block of integrations at a time: the weighted products are complex128
# and float64 temporaries, several of them, each up to twice the size of the complex64 visibilities, and a whole
# calibrator scan of hundreds of channels reduced at once made gigabytes of them (the calibration stage's peak
# on a full-size execution block). This many samples (time x baseline x channel x correlation) per block, or
# one integration where that is more.
REDUCE_BLOCK_SAMPLES = 1 << 19


def reduce_baselines(vis: np.ndarray, model, weight: np.ndarray, flag: np.ndarray, time_index: np.ndarray,
                     n_interval: int, per_channel: bool, *, phasor: np.ndarray | None = None,
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reduce (time, baseline, channel, corr) data to the StEFCal sufficient statistics per solution.

    model: broadcastable to vis (e.g. (n_chan, 1) flux densities, or a full array with a bandpass folded in).
    phasor: (time, baseline, corr), multiplied into the model (e.g. per-integration phases solved first), so
    the product of the two is never held for the whole data at once.
    time_index: (n_time,) solution interval of each integration, -1 to leave an integration out.
    Returns X = sum w conj(M) D, Y = sum w |M|^2 and the number of samples that carry weight N, each shaped
    (n_interval, n_corr, n_baseline) or, with per_channel, (n_interval, n_chan, n_corr, n_baseline).
    Flagged and non-finite samples carry no weight, nor do those whose model is 0 (w |M|^2 = 0): a model
    zeroed where a bandpass or a pre-solve failed needs no flags of its own, and the solvers make no copy of
    the flags to carry them.
    """
    vis = np.asarray(vis)
    model = np.broadcast_to(np.asarray(model), vis.shape)
    weight = np.broadcast_to(np.asarray(weight), vis.shape)
    flag = np.broadcast_to(np.asarray(flag, bool), vis.shape)
    time_index = np.asarray(time_index)
    n_time, n_bl, n_chan, n_corr = vis.shape
    shape = (n_interval, n_chan, n_corr, n_bl) if per_channel else (n_interval, n_corr, n_bl)
    x, y, n = np.zeros(shape, np.complex128), np.zeros(shape), np.zeros(shape)
    per_time = n_bl * n_chan * n_corr
    step = max(1, REDUCE_BLOCK_SAMPLES // max(1, per_time))
    # an integration larger than the block (a 480-channel window of 43 antennas is 870,000 samples) is taken a
    # few baselines at a time: a baseline's sums do not depend on the others', so the bits are the same
    bl_step = n_bl if step > 1 or per_time <= REDUCE_BLOCK_SAMPLES else \
        max(1, REDUCE_BLOCK_SAMPLES // max(1, n_chan * n_corr))
    for t0 in range(0, n_time, step):
        t = slice(t0, min(n_time, t0 + step))
        index = time_index[t]
        ok = (index >= 0) & (index < n_interval)
        if not ok.any():
            continue
        onehot = np.zeros((n_interval, index.size))
        onehot[index[ok], np.nonzero(ok)[0]] = 1.0
        for b0 in range(0, n_bl, bl_step):
            b = slice(b0, min(n_bl, b0 + bl_step))
            m = model[t, b] if phasor is None else model[t, b] * phasor[t, b][:, :, None, :]
            xb, yb, nb = _weighted_products(vis[t, b], m, weight[t, b], flag[t, b])
            if per_channel:
                sig = "it,tbcp->icpb"
            else:
                xb, yb, nb = xb.sum(axis=2), yb.sum(axis=2), nb.sum(axis=2)
                sig = "it,tbp->ipb"
            x[..., b] += np.einsum(sig, onehot, xb)
            y[..., b] += np.einsum(sig, onehot, yb)
            n[..., b] += np.einsum(sig, onehot, nb)
    return x, y, n


def _weighted_products(vis, model, weight, flag) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """w conj(M) D, w |M|^2 and the count of usable samples, sample by sample (0 where unusable)."""
    good = ~flag & np.isfinite(vis) & (weight > 0) & np.isfinite(model) & (model != 0)
    w = np.where(good, weight, 0.0).astype(np.float64)
    d = np.where(good, vis, 0)
    m = np.where(good, model, 0)
    return w * np.conj(m) * d, w * np.abs(m) ** 2, good.astype(np.float64)


def stefcal(x: np.ndarray, y: np.ndarray, antenna1: np.ndarray, antenna2: np.ndarray, n_ant: int, *,
            reference_antenna: int | Sequence[int] | None = None, initial: np.ndarray | None = None,
            tol: float = 1e-7, max_iter: int = 200, min_baselines: int = 4, min_snr: float = 3.0,
            strict: bool = False) -> StefcalResult:
    """Solve a batch of gain problems from their reduced statistics (see `reduce_baselines`).

    x, y: (*batch, n_baseline) = sum w conj(M) D and sum w |M|^2 per baseline (antenna1 < antenna2 or not).
    reference_antenna: an antenna index or a preference list; None prefers the antennas with the most data.
    min_baselines: an antenna needs this many baselines with data to other usable antennas (CASA's
    minblperant); antennas below it are removed repeatedly until every remaining one qualifies.
    strict: raise CalibrationFailed if any solution with data fails to converge (otherwise it is flagged).
    Raises CalibrationFailed if no solution has any data at all.
    """
    x = np.asarray(x, dtype=np.complex128)
    y = np.asarray(y, dtype=np.float64)
    a1, a2 = np.asarray(antenna1), np.asarray(antenna2)
    if x.shape != y.shape or x.shape[-1] != a1.size or a1.shape != a2.shape:
        raise CalibrationFailed(f"stefcal: inconsistent shapes x{x.shape}, y{y.shape}, {a1.size} baselines")
    if np.any(a1 == a2):
        raise CalibrationFailed("stefcal: autocorrelations must be removed before solving")
    batch = x.shape[:-1]
    xb = x.reshape(-1, a1.size)
    yb = y.reshape(-1, a1.size)
    k = xb.shape[0]
    if not np.any(yb > 0):
        raise CalibrationFailed("stefcal: no unflagged data in any solution")

    xf = np.zeros((k, n_ant, n_ant), np.complex128)
    yf = np.zeros((k, n_ant, n_ant), np.float64)
    xf[:, a1, a2] = xb
    xf[:, a2, a1] = np.conj(xb)
    yf[:, a1, a2] = yb
    yf[:, a2, a1] = yb

    usable = np.ones((k, n_ant), bool)
    has = yf > 0
    while True:
        nbl = np.einsum("knm,km->kn", has.astype(np.int64), usable.astype(np.int64))
        new = usable & (nbl >= max(min_baselines, 1))
        if np.array_equal(new, usable):
            break
        usable = new
    enough = usable.sum(axis=1) >= 3  # fewer than 3 antennas: only products g_p conj(g_q) are determined
    usable &= enough[:, None]
    keep = (usable[:, :, None] & usable[:, None, :]).astype(np.float64)
    xf *= keep
    yf *= keep

    g = np.ones((k, n_ant), np.complex128) if initial is None else np.asarray(initial, np.complex128).reshape(k, n_ant)
    g = np.where(usable, g, 0)
    converged = ~enough  # nothing to do for unsolvable ones
    iterations = np.zeros(k, int)
    for it in range(1, max_iter + 1):
        num = np.einsum("knm,km->kn", xf, g)
        den = np.einsum("knm,km->kn", yf, np.abs(g) ** 2)
        g_new = np.where(usable, num / np.where(den > 0, den, 1.0), 0)
        if it % 2 == 0:
            g_new = 0.5 * (g_new + g)
        norm = np.linalg.norm(g_new, axis=1)
        step = np.linalg.norm(g_new - g, axis=1) / np.where(norm > 0, norm, 1.0)
        active = ~converged
        g = np.where(active[:, None], g_new, g)
        iterations[active] = it
        converged |= active & (step < tol)
        if converged.all():
            break
    if strict and not converged.all():
        bad = np.flatnonzero(~converged)
        raise CalibrationFailed(
            f"stefcal: {bad.size} of {k} solutions did not converge in {max_iter} iterations "
            f"(first: solution {np.unravel_index(bad[0], batch) if batch else ()})")

    # Formal error per component of g_p: 1 / sqrt(sum_q |g_q|^2 Y_pq), so SNR = |g_p| sqrt(that sum).
    info = np.einsum("knm,km->kn", yf, np.abs(g) ** 2)
    snr = np.where(usable, np.abs(g) * np.sqrt(np.maximum(info, 0.0)), 0.0)

    ref = _reference(usable, yf, reference_antenna)
    has_ref = ref >= 0
    gref = g[np.arange(k), np.maximum(ref, 0)]
    rot = np.where(has_ref & (np.abs(gref) > 0), np.conj(gref) / np.where(np.abs(gref) > 0, np.abs(gref), 1), 1)
    g = g * rot[:, None]

    flags = ~usable | ~converged[:, None] | (snr < min_snr)
    g = np.where(flags, 1.0 + 0j, g)
    return StefcalResult(
        gains=g.reshape(*batch, n_ant), flags=flags.reshape(*batch, n_ant), snr=snr.reshape(*batch, n_ant),
        converged=converged.reshape(batch), iterations=iterations.reshape(batch),
        reference_antenna=ref.reshape(batch),
    )


def _reference(usable: np.ndarray, yf: np.ndarray, preference) -> np.ndarray:
    n_ant = usable.shape[1]
    if preference is None:
        # One fixed order for the whole batch (antennas with the most data first) so that consecutive
        # solutions share their reference whenever possible.
        order = np.argsort(-yf.sum(axis=(0, 2)), kind="stable")
    else:
        pref = [int(preference)] if np.isscalar(preference) else [int(a) for a in preference]
        if any(a < 0 or a >= n_ant for a in pref):
            raise CalibrationFailed(f"reference antenna {pref} out of range for {n_ant} antennas")
        rest = [a for a in np.argsort(-yf.sum(axis=(0, 2)), kind="stable") if a not in pref]
        order = np.array(pref + rest)
    ok = usable[:, order]
    first = np.argmax(ok, axis=1)
    return np.where(ok.any(axis=1), order[first], -1)


def choose_reference_antenna(flag: np.ndarray, antenna1: np.ndarray, antenna2: np.ndarray, n_ant: int,
                             exclude: Sequence[int] = ()) -> list[int]:
    """Antennas ordered by their fraction of unflagged data (best first), as a reference preference list.

    flag: (time, baseline, channel, corr). Excluded antennas (e.g. flagged as dead) go last.
    """
    return choose_reference_antenna_of_counts((~np.asarray(flag, bool)).sum(axis=(0, 2, 3)), antenna1, antenna2,
                                              n_ant, exclude)


def choose_reference_antenna_of_counts(good_per_baseline: np.ndarray, antenna1: np.ndarray, antenna2: np.ndarray,
                                       n_ant: int, exclude: Sequence[int] = ()) -> list[int]:
    """choose_reference_antenna from each baseline's number of unflagged samples (n_baseline,): counts that
    add over blocks of data, so the data need not be held to choose."""
    good = np.asarray(good_per_baseline).astype(float)
    per_ant = np.bincount(antenna1, good, n_ant) + np.bincount(antenna2, good, n_ant)
    per_ant[list(exclude)] = -1
    return [int(a) for a in np.argsort(-per_ant, kind="stable")]
