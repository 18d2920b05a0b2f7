"""Visibility weighting: Stokes I from the parallel hands, natural, uniform and Briggs (robust) weights.

Weights follow the project convention: w = 1 / sigma^2 with sigma the rms of the real (and of the imaginary)
part of a visibility. All arrays are (n_row, n_chan); flagged samples get imaging weight 0.

Briggs weighting (Briggs 1995, as in CASA): the natural weights are summed on a uv grid whose cell is the
image's Fourier cell, du = 1 / (npix * cell) wavelengths, each sample counted at (u, v) and at its Hermitian
twin (-u, -v). With W_k the gridded weight of a sample's cell,

    f^2 = (5 * 10^-R)^2 / (sum_k W_k^2 / sum_k W_k),      imaging weight = w / (1 + W_k f^2)

so R = -2 is close to uniform weighting (w / W_k, up to a constant) and R = +2 close to natural (w).
"""

from __future__ import annotations

import numpy as np

from mousflow.telescope.alma import SPEED_OF_LIGHT


def stokes_i(vis_a, vis_b, weight_a, weight_b, flag_a=None, flag_b=None):
    """Stokes I = (A + B) / 2 from the two parallel hands (XX, YY or RR, LL), each (n_row, n_chan).

    The weight of the mean is 4 / (1/w_a + 1/w_b) (2 w for equal weights). A sample is flagged when either
    hand is flagged or has a non-positive weight. Returns (vis, weight, flag); flagged samples have weight 0.
    """
    wa, wb = np.asarray(weight_a), np.asarray(weight_b)
    flag = wa <= 0
    flag |= wb <= 0
    if flag_a is not None:
        flag |= np.asarray(flag_a, dtype=bool)
    if flag_b is not None:
        flag |= np.asarray(flag_b, dtype=bool)
    # computed in float64 into two arrays of the output's size, not the five a one-line expression makes (a
    # window of the full 12 m case is 1.4 GB per float64 array)
    ok = ~flag
    w = np.zeros(flag.shape)
    np.divide(1.0, wa, out=w, where=ok, dtype=np.float64)
    inverse_b = np.zeros(flag.shape)
    np.divide(1.0, wb, out=inverse_b, where=ok, dtype=np.float64)
    w += inverse_b
    del inverse_b
    np.divide(4.0, w, out=w, where=ok)
    vis = np.add(vis_a, vis_b)
    vis *= 0.5
    return vis, w, flag


def _effective(weight, flag, shape):
    """The weights as a new float64 array, 0 where flagged or not positive (NaN included)."""
    if weight is None:
        w = np.ones(shape)
    else:
        w = np.array(np.broadcast_to(np.asarray(weight), shape), dtype=np.float64)
        w[~(w > 0)] = 0.0
    if flag is not None:
        w[np.broadcast_to(np.asarray(flag, dtype=bool), shape)] = 0.0
    return w


def natural_weights(uvw_m, freq_hz, weight=None, flag=None) -> np.ndarray:
    """Natural imaging weights: the visibility weights, 0 where flagged."""
    shape = (np.shape(uvw_m)[0], np.size(freq_hz))
    return _effective(weight, flag, shape)


# Samples per block when gridding weights: the index arithmetic holds ~50 bytes per sample in temporaries, so
# blocks keep it to ~13 MB whatever the data's size (all at once it was 13x the complex64 visibilities, the
# continuum imaging's peak).
DENSITY_BLOCK_SAMPLES = 1 << 18
# Cells of the largest uv plane gridded as a dense array (512 MB); beyond it the occupied cells are compressed.
DENSE_GRID_MAX_CELLS = 64_000_000


def _uv_keys(uvw_m, scale, lim: int, width: int, rows: slice) -> np.ndarray:
    """Flat uv-cell keys (iu + lim) * width + (iv + lim) of the rows' samples.

    A sample's Hermitian twin (-u, -v) has the key width^2 - 1 - key (width = 2 lim + 1), so a grid of the
    samples' keys, reversed, is the grid of their twins: the twins need no keys of their own."""
    iu = np.rint(uvw_m[rows, 0:1] * scale).astype(np.int64)
    key = np.rint(uvw_m[rows, 1:2] * scale).astype(np.int64)
    key += lim
    iu += lim
    iu *= width
    key += iu
    return key


def gridded_weight_density(uvw_m, freq_hz, w, uv_cell: float) -> np.ndarray:
    """For each sample (n_row, n_chan), the summed weight W_k of its uv cell (both Hermitian halves counted)."""
    freq = np.atleast_1d(np.asarray(freq_hz, dtype=np.float64))
    uvw_m = np.asarray(uvw_m, dtype=np.float64)
    scale = freq[None, :] / SPEED_OF_LIGHT / uv_cell
    sel = w > 0
    if not np.any(sel):
        return np.zeros_like(w)
    used_rows = np.any(sel, axis=1)
    # the largest cell index of any sample with weight (a row's extreme is at its highest frequency)
    lim = int(np.rint(np.abs(uvw_m[used_rows, :2]).max() * scale.max())) + 1
    width = 2 * lim + 1
    density = np.zeros_like(w)
    step = max(1, DENSITY_BLOCK_SAMPLES // max(1, freq.size))
    blocks = [slice(r, min(r + step, w.shape[0])) for r in range(0, w.shape[0], step)]
    if width * width <= DENSE_GRID_MAX_CELLS:
        grid = np.zeros(width * width)
        for rows in blocks:
            s = sel[rows]
            grid += np.bincount(_uv_keys(uvw_m, scale, lim, width, rows)[s], weights=w[rows][s],
                                minlength=width * width)
        grid += grid[::-1].copy()  # the twins (see _uv_keys)
        for rows in blocks:
            key = _uv_keys(uvw_m, scale, lim, width, rows)
            s = sel[rows]
            block = density[rows]
            block[s] = grid[key[s]]
            density[rows] = block
    else:  # a sparse, huge uv plane: compress the key range first (all at once)
        key = _uv_keys(uvw_m, scale, lim, width, slice(None))
        twin = width * width - 1 - key
        flat_w = w[sel]
        uniq, inv = np.unique(np.concatenate([key[sel], twin[sel]]), return_inverse=True)
        grid = np.bincount(inv, weights=np.concatenate([flat_w, flat_w]), minlength=uniq.size)
        density[sel] = grid[inv[: flat_w.size]]
    return density


def briggs_weights(uvw_m, freq_hz, weight, flag, npix: int, cell_rad: float, robust: float = 0.5, *,
                   per_channel: bool = False) -> np.ndarray:
    """Briggs imaging weights (n_row, n_chan) for an image of npix x npix pixels of cell_rad.

    per_channel=False grids all channels together (the MFS continuum image); per_channel=True weights every
    channel on its own (cube planes, so that a channel's weights do not depend on which other channels are
    imaged with it).
    """
    uvw_m = np.asarray(uvw_m, dtype=np.float64)
    freq = np.atleast_1d(np.asarray(freq_hz, dtype=np.float64))
    w = _effective(weight, flag, (uvw_m.shape[0], freq.size))
    uv_cell = 1.0 / (npix * cell_rad)
    if per_channel:
        out = np.zeros_like(w)
        for k in range(freq.size):
            out[:, k : k + 1] = briggs_weights(uvw_m, freq[k : k + 1], w[:, k : k + 1], None, npix, cell_rad, robust)
        return out
    if not np.any(w > 0):
        return w
    density = gridded_weight_density(uvw_m, freq, w, uv_cell)
    # sum over cells of W_k^2 equals sum over gridded samples of w_i W_k (each sample twice); unused samples
    # have w = 0 and W_k = 0. einsum, not a dot product: BLAS's threads would spin on the cores for a while
    # after it, and slowed the gridding that follows by half (the benchmark's cube: 10 -> 15 CPU s)
    sum_wk2 = 2.0 * np.einsum("ij,ij->", w, density)
    sum_wk = 2.0 * np.sum(w)
    f2 = (5.0 * 10.0 ** (-robust)) ** 2 / (sum_wk2 / sum_wk)
    # w / (1 + W_k f^2), in the density's array: one array of the weights' size, not four
    density *= f2
    density += 1.0
    return np.divide(w, density, out=density)


def uniform_weights(uvw_m, freq_hz, weight, flag, npix: int, cell_rad: float) -> np.ndarray:
    """Uniform imaging weights w / W_k (n_row, n_chan)."""
    uvw_m = np.asarray(uvw_m, dtype=np.float64)
    freq = np.atleast_1d(np.asarray(freq_hz, dtype=np.float64))
    w = _effective(weight, flag, (uvw_m.shape[0], freq.size))
    density = gridded_weight_density(uvw_m, freq, w, 1.0 / (npix * cell_rad))
    out = np.zeros_like(w)
    sel = w > 0
    out[sel] = w[sel] / density[sel]
    return out
