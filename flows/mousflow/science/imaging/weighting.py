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

from mousflow.science.imaging.noise import PredictedNoise
from mousflow.telescope.alma import SPEED_OF_LIGHT


def stokes_i(vis_a, vis_b, weight_a, weight_b, flag_a=None, flag_b=None, out=None):
    """Stokes I = (A + B) / 2 from the two parallel hands (XX, YY or RR, LL), each (n_row, n_chan).

    The weight of the mean is 4 / (1/w_a + 1/w_b) (2 w for equal weights). A sample is flagged when either
    hand is flagged or has a non-positive weight. Returns (vis, weight, flag); flagged samples have weight 0.
    out: (vis, weight, flag) arrays of the hands' shape to write the result into and return, for a caller that
    fills a larger array a block of rows at a time.
    """
    wa, wb = np.asarray(weight_a), np.asarray(weight_b)
    flag = np.less_equal(wa, 0, out=None if out is None else out[2])
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
    vis = np.add(vis_a, vis_b, out=None if out is None else out[0])
    vis *= 0.5
    if out is None:
        return vis, w, flag
    out[1][...] = w
    return out


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
# Imaging weights are kept in single precision, as the gridder takes them (`gridding`: float32 unless the image
# needs double): a float64 array of them was 8 bytes a sample held through CLEAN, beside 8 of visibilities.
IMAGING_WEIGHT_DTYPE = np.dtype(np.float32)


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


class _CellWeights:
    """The summed weight W_k of every uv cell k (both Hermitian halves counted), gridded a block of rows at a
    time from effective weights that are themselves made a block at a time (`weights_of(rows)`, float64, 0
    where a sample carries no weight): nothing of the data's size is held, whatever the data's size.

    The cells are a dense plane while it has at most DENSE_GRID_MAX_CELLS cells, else the occupied cells only,
    sorted: their set holds each cell's twin, so in either form the grid reversed is the grid of the twins."""

    def __init__(self, uvw_m, freq, n_row: int, weights_of, uv_cell: float):
        self.uvw = uvw_m
        self.scale = freq[None, :] / SPEED_OF_LIGHT / uv_cell
        self.weights_of = weights_of
        step = max(1, DENSITY_BLOCK_SAMPLES // max(1, freq.size))
        self.blocks = [slice(r, min(r + step, n_row)) for r in range(0, n_row, step)]
        # the largest cell index of any sample with weight (a row's extreme is at its highest frequency)
        extreme = -1.0
        for rows in self.blocks:
            used = np.any(weights_of(rows) > 0, axis=1)
            if used.any():
                extreme = max(extreme, float(np.abs(self.uvw[rows][used, :2]).max()))
        self.empty = extreme < 0
        if self.empty:
            return
        self.lim = int(np.rint(extreme * self.scale.max())) + 1
        self.width = 2 * self.lim + 1
        self.cells = None  # dense: a sample's cell is its key
        if self.width * self.width > DENSE_GRID_MAX_CELLS:  # a sparse, huge uv plane: the occupied cells
            top = self.width * self.width - 1
            occupied = [np.unique(k) for rows in self.blocks for k in [self._keys(rows)[weights_of(rows) > 0]]]
            keys = np.unique(np.concatenate(occupied)) if occupied else np.zeros(0, np.int64)
            self.cells = np.union1d(keys, top - keys)
        self.grid = np.zeros(self.width * self.width if self.cells is None else self.cells.size)
        for rows in self.blocks:
            w = weights_of(rows)
            s = w > 0
            self.grid += np.bincount(self._cell(self._keys(rows)[s]), weights=w[s], minlength=self.grid.size)
        self.grid += self.grid[::-1].copy()  # the twins (see _uv_keys)

    def _keys(self, rows: slice) -> np.ndarray:
        return _uv_keys(self.uvw, self.scale, self.lim, self.width, rows)

    def _cell(self, keys: np.ndarray) -> np.ndarray:
        return keys if self.cells is None else np.searchsorted(self.cells, keys)

    def density_blocks(self):
        """(rows, w, W) for each block of rows: its effective weights and each sample's cell's summed weight (0
        where w is 0)."""
        for rows in self.blocks:
            w = self.weights_of(rows)
            s = w > 0
            density = np.zeros_like(w)
            density[s] = self.grid[self._cell(self._keys(rows)[s])]
            yield rows, w, density


def _weights_of(weight, flag, shape):
    """rows -> that block's effective weights (`_effective`), from the full arrays without copying them."""
    weight = None if weight is None else np.broadcast_to(np.asarray(weight), shape)
    flag = None if flag is None else np.broadcast_to(np.asarray(flag, dtype=bool), shape)

    def weights_of(rows: slice) -> np.ndarray:
        n = len(range(*rows.indices(shape[0])))
        return _effective(None if weight is None else weight[rows], None if flag is None else flag[rows],
                          (n, shape[1]))

    return weights_of


def rows_with_weight(weight, flag, shape) -> np.ndarray:
    """(n_row,) bool: the rows with at least one sample of positive weight, not flagged (found a block at a
    time)."""
    weights_of = _weights_of(weight, flag, shape)
    step = max(1, DENSITY_BLOCK_SAMPLES // max(1, shape[1]))
    used = np.zeros(shape[0], dtype=bool)
    for start in range(0, shape[0], step):
        rows = slice(start, min(start + step, shape[0]))
        used[rows] = np.any(weights_of(rows) > 0, axis=1)
    return used


def gridded_weight_density(uvw_m, freq_hz, w, uv_cell: float) -> np.ndarray:
    """For each sample (n_row, n_chan), the summed weight W_k of its uv cell (both Hermitian halves counted)."""
    freq = np.atleast_1d(np.asarray(freq_hz, dtype=np.float64))
    uvw_m = np.asarray(uvw_m, dtype=np.float64)
    shape = (uvw_m.shape[0], freq.size)
    density = np.zeros(shape)
    cells = _CellWeights(uvw_m, freq, shape[0], _weights_of(w, None, shape), uv_cell)
    if not cells.empty:
        for rows, _, block in cells.density_blocks():
            density[rows] = block
    return density


def briggs_weights(uvw_m, freq_hz, weight, flag, npix: int, cell_rad: float, robust: float = 0.5, *,
                   per_channel: bool = False, out: np.ndarray | None = None,
                   noise: PredictedNoise | None = None) -> np.ndarray:
    """Briggs imaging weights (n_row, n_chan), IMAGING_WEIGHT_DTYPE, for an image of npix x npix pixels of
    cell_rad.

    per_channel=False grids all channels together (the MFS continuum image); per_channel=True weights every
    channel on its own (cube planes, so that a channel's weights do not depend on which other channels are
    imaged with it). Computed a block of rows at a time in float64 (`_CellWeights`), into `out` if given (an
    IMAGING_WEIGHT_DTYPE array of the data's shape; it may be `weight` itself, each block read before it is
    overwritten) or a new array: nothing else of the data's size is made. noise: each block's weights and
    imaging weights are added to it (the image's thermal noise, for a caller whose data weights are `out`).
    """
    uvw_m = np.asarray(uvw_m, dtype=np.float64)
    freq = np.atleast_1d(np.asarray(freq_hz, dtype=np.float64))
    shape = (uvw_m.shape[0], freq.size)
    if out is None:
        out = np.zeros(shape, IMAGING_WEIGHT_DTYPE)
    elif out.shape != shape or out.dtype != IMAGING_WEIGHT_DTYPE:
        raise ValueError(f"out must be {IMAGING_WEIGHT_DTYPE.name} {shape}, not {out.dtype} {out.shape}")
    if per_channel:
        weight = None if weight is None else np.broadcast_to(np.asarray(weight), shape)
        flag = None if flag is None else np.broadcast_to(np.asarray(flag, dtype=bool), shape)
        for k in range(freq.size):
            column = slice(k, k + 1)
            out[:, column] = briggs_weights(uvw_m, freq[column], None if weight is None else weight[:, column],
                                            None if flag is None else flag[:, column], npix, cell_rad, robust,
                                            noise=noise)
        return out
    cells = _CellWeights(uvw_m, freq, shape[0], _weights_of(weight, flag, shape), 1.0 / (npix * cell_rad))
    if cells.empty:
        out[...] = 0
        return out
    # sum_k W_k^2 / sum_k W_k over the cells: every sample's weight is in its cell and its twin's, so this is
    # sum_i w_i W_k(i) / sum_i w_i over the samples, without a pass over them
    f2 = (5.0 * 10.0 ** (-robust)) ** 2 / (float(np.sum(cells.grid**2)) / float(np.sum(cells.grid)))
    for rows, w, density in cells.density_blocks():
        # w / (1 + W_k f^2), in the density's array
        density *= f2
        density += 1.0
        imaging = np.divide(w, density, out=density).astype(IMAGING_WEIGHT_DTYPE)
        if noise is not None:
            noise.add(w, imaging)
        out[rows] = imaging
    return out


def uniform_weights(uvw_m, freq_hz, weight, flag, npix: int, cell_rad: float) -> np.ndarray:
    """Uniform imaging weights w / W_k (n_row, n_chan), float64 (a reference for Briggs weighting's limit; the
    imaging recipe does not use them)."""
    uvw_m = np.asarray(uvw_m, dtype=np.float64)
    freq = np.atleast_1d(np.asarray(freq_hz, dtype=np.float64))
    shape = (uvw_m.shape[0], freq.size)
    out = np.zeros(shape)
    cells = _CellWeights(uvw_m, freq, shape[0], _weights_of(weight, flag, shape), 1.0 / (npix * cell_rad))
    if cells.empty:
        return out
    for rows, w, density in cells.density_blocks():
        s = w > 0
        block = np.zeros_like(w)
        block[s] = w[s] / density[s]
        out[rows] = block
    return out
