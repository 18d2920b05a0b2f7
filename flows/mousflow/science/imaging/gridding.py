"""Thin wrappers around ducc0.wgridder: dirty image, PSF and model degridding, in sky orientation.

Conventions (checked numerically in the tests against mousflow.science.simulation.sky):

- The project's measurement equation is V = sum I(l, m) exp(-2 pi i (u l + v m + w (n - 1))) with the image
  in Jy per pixel and *no* 1/n factor, so both directions use divide_by_n=False (they are exact adjoints).
- ducc0's u and v signs agree with the project's, but its w sign is the opposite one: ducc0 evaluates
  exp(-2 pi i (u l + v m - w (n - 1))). Every call therefore passes flip_w=True. (Without it a source far
  from the phase centre, where w (n - 1) matters, is smeared and displaced.)
- w-correction (do_wgridding=True) is always on.
- Dirty images are normalised by the sum of the imaging weights, so the PSF peaks at exactly 1 and a point
  source of S Jy at a pixel centre gives S Jy/beam there.

Precision follows the `double` flag: float64/complex128 with epsilon 1e-7 by default, or float32/complex64
(epsilon must then be > 1e-5; 2e-5 is used if a smaller one is asked for). Single precision is about twice as
fast and its arrays half the size; `needs_double_precision` says when an image's dynamic range calls for double.
"""

from __future__ import annotations

import itertools

import numpy as np
from ducc0.wgridder.experimental import dirty2vis, vis2dirty

from mousflow.science.imaging.coords import to_ducc, to_sky

DEFAULT_EPSILON = 1e-7
_MIN_EPSILON_SINGLE = 2e-5
# The largest error of the residual image a CLEAN in single precision (epsilon 2e-5) reports, against the
# model's true residual (gridded in double precision), as a fraction of the dirty image's peak: measured at
# 5e-6 with 43 antennas over a 15 % band and a source near the edge (tests/science/imaging/test_imaging_clean.py
# holds this bound).
SINGLE_PRECISION_RESIDUAL_ERROR = 1e-5
# Single precision is used while that error stays below this fraction of the lowest CLEAN threshold: with the
# continuum's deep pass at 0.5 sigma, up to a dynamic range of 5,000.
PRECISION_ERROR_FRACTION_OF_THRESHOLD = 0.1
# Gridding and degridding take a block of rows at a time (`grid_blocks`): each block's visibilities and weights
# in the gridding precision are at most 16 MiB (complex128) where the whole continuum of a full-size block was
# GBs per array. Each gridding thread converts a block of its own and a multi-term degridding holds two terms'
# visibilities, so at 2^22 samples these conversions, 0.1-0.2 GB, were the full-size continuum's peak above its
# data (`bench/compare_imagers.py --size full`: 0.53 GiB, against tclean's 0.38). A block has at least 4 samples
# per image cell, so a call's FFT stays small beside its gridding. Why 4, not the 16 it was: a PSF is twice the
# image's size, and its blocks at 16 per cell (3.7 M samples at 480 pixels, with ducc0's own 30 MiB a call) were
# then the peak. Measured on 6.4 M samples, one thread, the best of three: 4 per cell costs 0-10 % more gridding
# CPU than 8 at 480-1024 pixels (the full-size continuum's CPU time did not change; its peak fell 20 MiB).
GRID_BLOCK_SAMPLES = 2**20
GRID_BLOCK_CELL_SAMPLES = 4


def needs_double_precision(peak: float, lowest_threshold: float) -> bool:
    """Whether an image whose peak |value| is `peak` (Jy/beam) must be gridded in double precision to be CLEANed
    down to `lowest_threshold` (Jy/beam): single precision's error would otherwise reach a tenth of it.

    Why not always double: it doubles the gridding time and the size of every visibility array, for an error
    far below the thermal noise in all but the brightest fields (WSClean grids in single precision always)."""
    return peak * SINGLE_PRECISION_RESIDUAL_ERROR > PRECISION_ERROR_FRACTION_OF_THRESHOLD * lowest_threshold


def _dtypes(double: bool):
    return (np.float64, np.complex128) if double else (np.float32, np.complex64)


def _epsilon(epsilon: float, double: bool) -> float:
    return epsilon if double else max(epsilon, _MIN_EPSILON_SINGLE)


def _check_npix(npix: int) -> int:
    npix = int(npix)
    if npix < 32 or npix % 2:
        raise ValueError(f"npix must be even and >= 32 (ducc0), got {npix}")
    return npix


def grid_weighted(vis, uvw_m, freq_hz, imaging_weight, npix: int, cell_rad: float, *, channel_factor=None,
                  epsilon: float = DEFAULT_EPSILON, double: bool = True, nthreads: int = 1) -> np.ndarray:
    """Unnormalised weighted adjoint: sum_i W_i Re(V_i exp(+2 pi i (u l + v m + w (n - 1)))), sky orientation.

    channel_factor (n_chan,), optional: the visibilities multiplied by it as they are gridded (a Taylor term's
    t^k). vis may be any array of the right shape, or None for visibilities of 1 (a PSF's: the weights are then
    gridded as the visibilities, with no weights beside them, 8 bytes a sample fewer in double). It is
    converted to the gridding precision a block of rows at a time (`grid_blocks`), so no array of the
    visibilities' size in that precision (16 bytes a sample in double) is ever made."""
    npix = _check_npix(npix)
    fdt, cdt = _dtypes(double)
    uvw = np.ascontiguousarray(uvw_m, dtype=np.float64)
    freq = np.ascontiguousarray(np.atleast_1d(freq_hz), dtype=np.float64)
    weight = np.asarray(imaging_weight)
    if weight.shape != (uvw.shape[0], freq.size):
        raise ValueError(f"imaging weights {weight.shape} do not match (n_row, n_chan) = {(uvw.shape[0], freq.size)}")
    factor = None if channel_factor is None else np.asarray(channel_factor)[None, :]

    def adjoint(rows: slice) -> np.ndarray:
        img = None
        for block in grid_blocks(rows, freq.size, npix):
            used = weight[block] > 0
            # flagged samples masked: ducc0 then neither grids them nor counts them when it picks its kernel
            mask = None if np.all(used) else used.view(np.uint8)
            del used
            if vis is None:  # W_i x 1: the weights are the visibilities
                wgt = None
                v = (np.ascontiguousarray(weight[block], dtype=cdt) if factor is None
                     else np.multiply(weight[block], factor, dtype=cdt))
            else:
                wgt = np.ascontiguousarray(weight[block], dtype=fdt)
                v = (np.ascontiguousarray(vis[block], dtype=cdt) if factor is None
                     else np.multiply(vis[block], factor, dtype=cdt))
            part = vis2dirty(uvw=uvw[block], freq=freq, vis=v, wgt=wgt, mask=mask, npix_x=npix, npix_y=npix,
                             pixsize_x=cell_rad, pixsize_y=cell_rad, center_x=cell_rad, center_y=0.0,
                             epsilon=_epsilon(epsilon, double), do_wgridding=True, flip_w=True, divide_by_n=False,
                             nthreads=1)
            del v, wgt, mask
            if img is None:
                img = part
            else:
                img += part
        return img

    blocks = row_blocks(uvw.shape[0], nthreads)
    if len(blocks) == 1:
        img = adjoint(blocks[0])
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=len(blocks), thread_name_prefix="gridder") as pool:
            parts = list(pool.map(adjoint, blocks))  # in block order, whichever thread finished first
        img = parts[0]
        for part in parts[1:]:
            img += part
    return np.ascontiguousarray(to_sky(img))


def grid_blocks(rows: slice, n_chan: int, npix: int) -> list[slice]:
    """`rows` split into consecutive blocks of at most GRID_BLOCK_SAMPLES samples, or of GRID_BLOCK_CELL_SAMPLES
    per image cell where that is more: one ducc0 call each, the visibilities converted to the gridding
    precision a block at a time. The floor per cell keeps each call's FFT of the (oversampled) grid small beside
    its gridding, for large images."""
    samples = max(GRID_BLOCK_SAMPLES, GRID_BLOCK_CELL_SAMPLES * npix * npix)
    step = max(1, samples // max(1, n_chan))
    return [slice(a, min(rows.stop, a + step)) for a in range(rows.start, rows.stop, step)]


def row_blocks(n_rows: int, nthreads: int) -> list[slice]:
    """The rows split into at most `nthreads` fixed contiguous blocks, each gridded by one thread.

    Why not ducc0's own threads: its adjoint gridder adds the threads' contributions into one shared grid in the
    order they finish, so two identical calls with nthreads > 1 differ in the last bits (1e-12 relative; the
    beam fitted to the PSF then differs as well, and products cannot be compared by checksum after a resumed
    run). One thread per block is deterministic, ducc0 releases the GIL so the blocks run in parallel, and
    the block images are summed in block order: the same bits for the same inputs and thread count, at the
    cost of one grid per thread instead of one shared (pipeline.resources counts it). Degridding writes each
    visibility from one thread only and keeps ducc0's threads."""
    n = max(1, min(int(nthreads), n_rows))
    edges = [n_rows * k // n for k in range(n + 1)]
    return [slice(a, b) for a, b in itertools.pairwise(edges)]


def make_dirty(vis, uvw_m, freq_hz, imaging_weight, npix: int, cell_rad: float, *, channel_factor=None,
               epsilon: float = DEFAULT_EPSILON, double: bool = True, nthreads: int = 1) -> np.ndarray:
    """Dirty image (npix, npix) in Jy/beam, sky orientation, normalised by the sum of the imaging weights.

    vis and imaging_weight are (n_row, n_chan) (Stokes I); flagged samples must carry weight 0. All channels
    are gridded together at their own frequencies (multi-frequency synthesis); pass one channel for a plane
    of a cube. channel_factor (n_chan,): the visibilities multiplied by it as they are gridded.
    """
    wsum = float(np.sum(imaging_weight, dtype=np.float64))
    if wsum <= 0:
        raise ValueError("all imaging weights are zero")
    return grid_weighted(vis, uvw_m, freq_hz, imaging_weight, npix, cell_rad, channel_factor=channel_factor,
                         epsilon=epsilon, double=double, nthreads=nthreads) / wsum


def make_psf(uvw_m, freq_hz, imaging_weight, npix: int, cell_rad: float, *, epsilon: float = DEFAULT_EPSILON,
             double: bool = True, nthreads: int = 1) -> np.ndarray:
    """Point-spread function (npix, npix), sky orientation, peak 1 (to the gridding accuracy) at pixel (npix/2, npix/2).

    For CLEAN pass npix = 2 * image npix so that a component anywhere in the image can be subtracted over the
    whole image.
    """
    return make_dirty(None, uvw_m, freq_hz, imaging_weight, npix, cell_rad, epsilon=epsilon, double=double,
                      nthreads=nthreads)


def degrid_model(model, uvw_m, freq_hz, cell_rad: float, *, epsilon: float = DEFAULT_EPSILON, double: bool = True,
                 nthreads: int = 1) -> np.ndarray:
    """Model visibilities (n_row, n_chan) of a model image (npix, npix) in Jy/pixel, sky orientation.

    The same model is used at every frequency (a flat spectrum across the channels passed).
    """
    fdt, _ = _dtypes(double)
    model = np.asarray(model)
    _check_npix(model.shape[-1])
    if model.shape[0] != model.shape[1]:
        raise ValueError("model must be square")
    img = np.ascontiguousarray(to_ducc(model), dtype=fdt)
    uvw = np.ascontiguousarray(uvw_m, dtype=np.float64)
    freq = np.ascontiguousarray(np.atleast_1d(freq_hz), dtype=np.float64)
    return dirty2vis(uvw=uvw, freq=freq, dirty=img, pixsize_x=cell_rad, pixsize_y=cell_rad, center_x=cell_rad,
                     center_y=0.0, epsilon=_epsilon(epsilon, double), do_wgridding=True, flip_w=True,
                     divide_by_n=False, nthreads=nthreads)
