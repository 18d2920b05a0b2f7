"""Multi-term multi-frequency synthesis (MT-MFS): a continuum sky model with a spectral term.

Why: a one-term continuum CLEAN models every component with one flux for the whole band. A source whose
flux changes across the band (its own spectral index, or the primary beam's, which narrows with frequency so
that an off-centre source looks steeper) then leaves a residual that no flat component removes and that does
not fall with more data: on ALMA's 15 % band 3 continuum a source of spectral index -1.5 leaves 11x the
thermal noise (`bench/continuum_spectral_floor.py`).

The model here is the Taylor series of Rau & Cornwell (2011, A&A 532, A71), the one behind CASA tclean's
`deconvolver='mtmfs'`:

    I(l, m, nu) = sum_k m_k(l, m) t^k,   t = (nu - nu0) / nu0,   k = 0 .. nterms-1,

so m_0 is the image at the reference frequency nu0 and, for a power law I0 (nu/nu0)^alpha, m_1 = alpha I0 to
first order. With imaging weights w per visibility, the k-th Taylor residual is the dirty image of the
visibilities weighted by w t^k, and the cross PSFs are the dirty images of 1 weighted by w t^k for
k = 0 .. 2 nterms - 2, all normalised by sum(w) so that the k = 0 ones are the usual residual and PSF. A
component of Taylor amplitudes a_j at one pixel adds sum_j a_j B_{j+k} (shifted) to the k-th residual, so
the amplitudes that best explain residuals R_k at a pixel solve H a = R with the Hessian
H[j, k] = B_{j+k}(0), the cross PSFs' values at their centre.

The minor cycle picks the pixel where that solution reduces chi^2 the most (a^T R, the paper's criterion),
adds gain x a to the models there and subtracts gain x sum_j a_j B_{j+k} from every R_k over the CLEAN mask.
The major cycle predicts V = sum_k t^k degrid(m_k) and recomputes every R_k from the original visibilities.
"""

from __future__ import annotations

import numpy as np

from mousflow.science.imaging.gridding import (
    DEFAULT_EPSILON,
    degrid_model,
    grid_blocks,
    make_dirty,
)

# Below this fractional bandwidth a spectral term is not worth its cost (the flat model's error scales with
# the bandwidth) and the Hessian's t^2 term (~ bandwidth^2 / 12) makes it ill-conditioned.
MIN_FRACTIONAL_BANDWIDTH = 0.01


def taylor_factors(freq_hz, freq_ref_hz: float, nterms: int) -> np.ndarray:
    """(nterms, n_chan): t^k with t = (nu - nu0) / nu0, for k = 0 .. nterms - 1."""
    t = (np.atleast_1d(np.asarray(freq_hz, dtype=np.float64)) - freq_ref_hz) / freq_ref_hz
    return t[None, :] ** np.arange(nterms)[:, None]


def taylor_dirty_images(vis, uvw_m, freq_hz, imaging_weight, npix: int, cell_rad: float, taylor: np.ndarray, *,
                        epsilon: float = DEFAULT_EPSILON, double: bool = True, nthreads: int = 1) -> np.ndarray:
    """(len(taylor), npix, npix): the dirty images of vis weighted by imaging_weight x t^k, each normalised by
    sum(imaging_weight) (the k = 0 one is `make_dirty`'s). vis None (visibilities of 1): the cross PSFs."""
    grid = {"epsilon": epsilon, "double": double, "nthreads": nthreads}
    out = np.empty((len(taylor), npix, npix))
    for k, factor in enumerate(taylor):
        # t^k multiplies the visibilities rather than the weights (ducc0 treats weight <= 0 as flagged), as each
        # block of rows is gridded: no weighted copy of the visibilities is made
        out[k] = make_dirty(vis, uvw_m, freq_hz, imaging_weight, npix, cell_rad,
                            channel_factor=None if k == 0 else factor, **grid)
    return out


def taylor_psfs(uvw_m, freq_hz, imaging_weight, npix: int, cell_rad: float, freq_ref_hz: float, nterms: int,
                **grid) -> np.ndarray:
    """(2 nterms - 1, npix, npix) cross PSFs B_k, k = 0 .. 2 nterms - 2; B_0 is the usual PSF (peak 1)."""
    taylor = taylor_factors(freq_hz, freq_ref_hz, 2 * nterms - 1)
    return taylor_dirty_images(None, uvw_m, freq_hz, imaging_weight, npix, cell_rad, taylor, **grid)


def hessian(psfs: np.ndarray, nterms: int) -> np.ndarray:
    """(nterms, nterms) H[j, k] = B_{j+k} at the PSFs' centre (pixel (n/2, n/2) of an n x n PSF)."""
    c = psfs.shape[-1] // 2
    peaks = psfs[:, c, c]
    return np.array([[peaks[j + k] for k in range(nterms)] for j in range(nterms)])


def degrid_taylor_models(models: np.ndarray, uvw_m, freq_hz, cell_rad: float, taylor: np.ndarray,
                         **grid) -> np.ndarray:
    """Model visibilities (n_row, n_chan) of the Taylor models (nterms, npix, npix): sum_k t^k degrid(m_k)."""
    vis = None
    for k, model in enumerate(models):
        if not np.any(model):
            continue
        term = degrid_model(model, uvw_m, freq_hz, cell_rad, **grid)
        if k:
            term *= taylor[k][None, :]
        if vis is None:
            vis = term
        else:
            vis += term
    if vis is None:
        vis = np.zeros((np.shape(uvw_m)[0], np.size(freq_hz)), dtype=np.complex128 if grid.get("double", True)
                       else np.complex64)
    return vis


def subtract_model_visibilities(vis: np.ndarray, models: np.ndarray, uvw_m, freq_hz, cell_rad: float,
                                taylor: np.ndarray, **grid) -> None:
    """vis -= the Taylor models' visibilities (`degrid_taylor_models`), in place, a block of rows at a time
    (`gridding.grid_blocks`): each block's model visibilities in the gridding precision, subtracted there and
    only then rounded to vis's precision (complex64 stays complex64). Rounding the residual costs ~1e-7 of its
    own size (the thermal noise, once CLEAN is under way), not of the model's: in double the subtraction near
    a bright source keeps its accuracy, without model and residual arrays of 16 bytes a sample."""
    uvw = np.asarray(uvw_m)
    npix = models.shape[-1]
    for rows in grid_blocks(slice(0, vis.shape[0]), vis.shape[1], npix):
        model_vis = degrid_taylor_models(models, uvw[rows], freq_hz, cell_rad, taylor, **grid)
        np.subtract(vis[rows], model_vis, out=model_vis)
        vis[rows] = model_vis
        del model_vis


def multiterm_minor_cycle(residuals: np.ndarray, psfs: np.ndarray, mask: np.ndarray, models: np.ndarray, *,
                          gain: float, cycle_threshold: float, max_components: int) -> tuple[int, float]:
    """Multi-term Hogbom CLEAN restricted to `mask`, updating `models` (nterms, n, n) in place; `residuals`
    (nterms, n, n) are not modified. psfs are the 2 nterms - 1 cross PSFs, (2n, 2n) each with their centre at
    (n, n). Runs until the peak |Taylor-0 residual| in the mask is below cycle_threshold or after
    max_components components. Returns (components, final peak |Taylor-0 residual| in the mask)."""
    nterms, n = residuals.shape[0], residuals.shape[-1]
    if psfs.shape != (2 * nterms - 1, 2 * n, 2 * n):
        raise ValueError(f"need {2 * nterms - 1} cross PSFs twice the image size, got {psfs.shape}")
    h_inv = np.linalg.inv(hessian(psfs, nterms))
    active = np.flatnonzero(mask)
    if active.size == 0:
        return 0, 0.0
    r = residuals.reshape(nterms, -1)[:, active].astype(np.float64)
    ya, xa = np.divmod(active, n)
    base = ya * (2 * n) + xa  # flat index into a (2n, 2n) PSF up to a per-component offset
    centre = n * (2 * n) + n
    flat_psfs = np.ascontiguousarray(psfs, dtype=np.float64).reshape(psfs.shape[0], -1)
    flat_models = models.reshape(nterms, -1)
    count = 0
    peak = float(np.max(np.abs(r[0])))
    while count < max_components and peak >= cycle_threshold:
        amplitudes = h_inv @ r  # (nterms, n_active): each pixel's best Taylor amplitudes
        k = int(np.argmax(np.sum(amplitudes * r, axis=0)))  # the largest chi^2 reduction
        comp = gain * amplitudes[:, k]
        flat_models[:, active[k]] += comp
        idx = base + (centre - base[k])
        shifted = flat_psfs[:, idx]  # (2 nterms - 1, n_active): the cross PSFs centred on the component
        for j in range(nterms):
            r[j] -= comp @ shifted[j:j + nterms]
        count += 1
        peak = float(np.max(np.abs(r[0])))
    return count, peak
