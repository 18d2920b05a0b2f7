"""Cotton-Schwab CLEAN: Hogbom minor cycles on the image with the PSF, major cycles with ducc0.

Minor cycle: Hogbom on the masked pixels only (the "active set"), subtracting gain x peak x PSF at every
active pixel with a PSF twice the image size, so the subtraction is exact within the mask wherever the
component lies. Pixels outside the mask are not touched: the major cycle recomputes the whole residual.
Major cycle: the model (Jy/pixel) is degridded with w-correction, subtracted from the *original*
visibilities and the residual image regridded, so PSF approximations (the PSF's variation across the field,
gridding error) never accumulate.

The minor cycle stops at the cycle threshold (CASA's rule)
    max(threshold, clip(cycle_factor x max PSF sidelobe, 0.05, 0.8) x peak residual)
and CLEAN stops when the peak |residual| inside the mask is below `threshold`, when the mask is empty, after
`max_major` major cycles or `max_iter` components in total, or if the residual peak diverges.

Multi-term (nterms > 1, the continuum of a wide band): the minor cycle is `multiterm.multiterm_minor_cycle`
on the Taylor-term residuals with the cross PSFs, and the major cycle predicts the Taylor models' visibilities;
the mask, the thresholds and the noise follow the Taylor-0 residual, the sky at the reference frequency.

Deep pass (optional, `deep_threshold` with `deep_above`): once CLEAN has reached `threshold` in the whole
mask, it goes on down to `deep_threshold` only in a tight mask, the mask's pixels within one beam FWHM of
where the CLEAN model (convolved with the beam) exceeds `deep_above` Jy/beam, i.e. around truly bright
emission. What a bright source leaves un-CLEANed spreads sidelobes over the whole field in proportion to
its brightness, so it is worth removing; elsewhere in the automatic mask the residual below `threshold` is
mostly noise, and CLEANing it deeper models the noise and (with a small array's high PSF sidelobes) pushes
the rms of the whole field below the thermal. The automatic mask keeps being updated during the deep pass,
which has its own budget of `max_major` major cycles.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from mousflow.science.imaging.beam import Beam, fit_beam, max_sidelobe
from mousflow.science.imaging.gridding import DEFAULT_EPSILON, make_psf, needs_double_precision
from mousflow.science.imaging.mask import AutoMaskParams, auto_mask, disk_structure
from mousflow.science.imaging.multiterm import (
    multiterm_minor_cycle,
    subtract_model_visibilities,
    taylor_dirty_images,
    taylor_factors,
    taylor_psfs,
)
from mousflow.science.imaging.noise import image_rms
from mousflow.science.imaging.restore import convolve_with_beam

# radius, in beam FWHMs, of the deep pass's mask around bright emission
DEEP_RADIUS_BEAMS = 1.0


@dataclass
class MajorCycle:
    peak_before: float
    cycle_threshold: float
    n_components: int
    peak_after: float


@dataclass
class CleanResult:
    model: np.ndarray
    """(npix, npix) CLEAN components, Jy/pixel, sky orientation."""
    residual: np.ndarray
    """(npix, npix) residual image, Jy/beam, sky orientation."""
    mask: np.ndarray
    """(npix, npix) bool mask CLEAN was allowed to place components in."""
    psf: np.ndarray
    """(2 npix, 2 npix) PSF, peak 1 at (npix, npix)."""
    beam: Beam
    psf_sidelobe: float
    threshold: float
    n_components: int
    n_major: int
    peak_residual: float
    """Peak |residual| inside the mask at the end (0 if the mask is empty)."""
    converged: bool
    stop_reason: str
    cycles: list[MajorCycle] = field(default_factory=list)
    deep_mask: np.ndarray | None = None
    """(npix, npix) bool mask of the deep pass (None if there was none)."""
    deep_threshold: float | None = None
    taylor_models: np.ndarray | None = None
    """(nterms, npix, npix) Taylor-term models (Jy/pixel) of a multi-term CLEAN (`multiterm`); model is the
    first. None when nterms is 1."""
    taylor_residuals: np.ndarray | None = None
    """(nterms, npix, npix) Taylor-term residuals of a multi-term CLEAN; residual is the first."""
    freq_ref_hz: float | None = None
    """Reference frequency of the Taylor terms."""
    double_precision: bool = True
    """Whether the residuals were gridded and the model degridded in double precision."""


def hogbom_minor_cycle(residual: np.ndarray, psf2: np.ndarray, mask: np.ndarray, model: np.ndarray, *,
                       gain: float, cycle_threshold: float, max_components: int) -> tuple[int, float]:
    """Hogbom CLEAN restricted to `mask`, updating `model` in place; `residual` is not modified.

    psf2 is (2n, 2n) with its peak at (n, n) for an (n, n) image. Returns (components, final peak |residual|
    in the mask).
    """
    n = residual.shape[0]
    if psf2.shape != (2 * n, 2 * n):
        raise ValueError("the PSF must be twice the image size")
    active = np.flatnonzero(mask)
    if active.size == 0:
        return 0, 0.0
    r = residual.ravel()[active].astype(np.float64)
    ya, xa = np.divmod(active, n)
    base = ya * (2 * n) + xa  # flat index into psf2 up to a per-component offset
    centre = n * (2 * n) + n
    psf_flat = np.ascontiguousarray(psf2, dtype=np.float64).ravel()
    model_flat = model.reshape(-1)
    count = 0
    k = int(np.argmax(np.abs(r)))
    peak = float(r[k])
    while count < max_components and abs(peak) >= cycle_threshold:
        comp = gain * peak
        model_flat[active[k]] += comp
        r -= comp * psf_flat[base + (centre - base[k])]
        count += 1
        k = int(np.argmax(np.abs(r)))
        peak = float(r[k])
    return count, abs(peak)


def clean(vis, uvw_m, freq_hz, imaging_weight, npix: int, cell_rad: float, threshold: float, *,
          mask="auto", pb: np.ndarray | None = None, automask: AutoMaskParams | None = None,
          gain: float = 0.1, max_major: int = 10, max_iter: int = 100_000, cycle_factor: float = 1.0,
          min_psf_fraction: float = 0.05, max_psf_fraction: float = 0.8, psf: np.ndarray | None = None,
          beam: Beam | None = None, deep_threshold: float | None = None, deep_above: float | None = None,
          nterms: int = 1, freq_ref_hz: float | None = None, epsilon: float = DEFAULT_EPSILON,
          double: bool | None = None, overwrite_vis: bool = False, nthreads: int = 1) -> CleanResult:
    """CLEAN Stokes I visibilities (n_row, n_chan) to `threshold` (Jy/beam) on an npix x npix image.

    nterms > 1 models each component's spectrum as a Taylor series about freq_ref_hz (default: the
    imaging-weighted mean frequency) with the multi-term minor cycle of `multiterm`; thresholds, the mask
    and the noise then apply to the Taylor-0 residual (the image at freq_ref_hz).

    mask: "auto" (see `mask.auto_mask`, rebuilt and grown every major cycle), None (everywhere, inside
    pb >= automask.pblimit if pb is given) or a fixed bool array. pb is the primary-beam pattern used to
    restrict the mask and the noise estimate. psf (2 npix square) and beam may be given to skip computing
    them. deep_threshold and deep_above (Jy/beam): the deep pass of the module docstring.

    double: the gridding precision; None chooses single unless the dirty image's peak over the lowest
    threshold calls for double (`gridding.needs_double_precision`). The result says which was used.

    Each major cycle subtracts the visibilities of the components found since the last one from the residual
    visibilities, in place. overwrite_vis=True: those residual visibilities are vis itself (a writeable
    complex array the caller no longer needs), else a copy of vis made at the first major cycle: one array of
    the visibilities' size instead of two.
    """
    grid = {"epsilon": epsilon, "double": bool(double), "nthreads": nthreads}
    automask = automask or AutoMaskParams()
    vis = np.asarray(vis)
    freq = np.atleast_1d(np.asarray(freq_hz, dtype=np.float64))
    if nterms < 1:
        raise ValueError(f"nterms must be >= 1, got {nterms}")
    if freq_ref_hz is None:
        chan_w = np.sum(imaging_weight, axis=0, dtype=np.float64)
        freq_ref_hz = float(np.sum(chan_w * freq) / chan_w.sum()) if chan_w.sum() > 0 else float(freq.mean())
    # one term is the Taylor machinery with t^0 = 1: the same residual (make_dirty) and model prediction
    taylor = taylor_factors(freq, freq_ref_hz, nterms)

    def residual_images(v):
        return taylor_dirty_images(v, uvw_m, freq, imaging_weight, npix, cell_rad, taylor, **grid)

    residuals = residual_images(vis)
    if double is None and needs_double_precision(float(np.max(np.abs(residuals[0]))),
                                                 min(threshold, deep_threshold or threshold)):
        grid["double"] = True
        residuals = residual_images(vis)
    residual = residuals[0]
    if nterms > 1:
        psfs = taylor_psfs(uvw_m, freq, imaging_weight, 2 * npix, cell_rad, freq_ref_hz, nterms, **grid)
        psf = psfs[0]
    elif psf is None:
        psf = make_psf(uvw_m, freq, imaging_weight, 2 * npix, cell_rad, **grid)
    if beam is None:
        beam = fit_beam(psf, cell_rad, window=npix // 2)
    sidelobe = max_sidelobe(psf, beam, cell_rad)
    models = np.zeros((nterms, npix, npix))
    model = models[0]
    subtracted = np.zeros_like(models)  # the part of models already subtracted from residual_vis
    residual_vis = None
    inside = np.ones((npix, npix), dtype=bool) if pb is None else np.asarray(pb) >= automask.pblimit

    def noise(current_mask):
        return image_rms(residual, exclude=current_mask, pb=pb, pblimit=automask.pblimit)

    auto = isinstance(mask, str)
    if auto:
        if mask != "auto":
            raise ValueError(f"mask must be 'auto', None or a bool array, not {mask!r}")
        current = auto_mask(residual, noise(None), beam, cell_rad, psf_sidelobe=sidelobe, pb=pb, params=automask)
    elif mask is None:
        current = inside.copy()
    else:
        current = np.asarray(mask, dtype=bool) & inside

    cycles: list[MajorCycle] = []
    n_comp = 0

    def near_bright(current):
        """The mask's pixels within DEEP_RADIUS_BEAMS of the model's emission above deep_above."""
        bright = convolve_with_beam(model, beam, cell_rad) > (threshold if deep_above is None else deep_above)
        reach = disk_structure(DEEP_RADIUS_BEAMS * beam.bmaj_rad / cell_rad)
        return current & ndimage.binary_dilation(bright, structure=reach)

    def run(current, threshold, n_major, deep=False):
        """Major cycles until the peak |residual| in the CLEAN mask (current, or near_bright(current) if deep)
        is below threshold; returns (current, clean mask, converged, stop reason)."""
        nonlocal residuals, residual, n_comp, residual_vis
        best_peak = np.inf
        active = near_bright(current) if deep else current
        for _ in range(n_major):
            peak = float(np.max(np.abs(residual[active]))) if np.any(active) else 0.0
            if peak < threshold:
                return current, active, True, ("threshold" if np.any(active) else "empty mask")
            if n_comp >= max_iter:
                return current, active, False, "max_iter"
            if peak > 1.5 * best_peak:
                return current, active, False, "diverging"
            best_peak = min(best_peak, peak)
            frac = float(np.clip(cycle_factor * sidelobe, min_psf_fraction, max_psf_fraction))
            cycle_thr = max(threshold, frac * peak)
            # one term: plain Hogbom (the same choice as the multi-term criterion, which reduces to |r|, faster)
            if nterms == 1:
                n, _ = hogbom_minor_cycle(residual, psf, active, model, gain=gain, cycle_threshold=cycle_thr,
                                          max_components=max_iter - n_comp)
            else:
                n, _ = multiterm_minor_cycle(residuals, psfs, active, models, gain=gain,
                                             cycle_threshold=cycle_thr, max_components=max_iter - n_comp)
            if residual_vis is None:
                writeable = vis.flags.writeable and vis.dtype in (np.complex64, np.complex128)
                residual_vis = vis if overwrite_vis and writeable else np.array(
                    vis, dtype=np.result_type(vis.dtype, np.complex64))
            # the new components only (the visibilities of the difference, degridded a block of rows at a time)
            subtract_model_visibilities(residual_vis, models - subtracted, uvw_m, freq, cell_rad, taylor, **grid)
            subtracted[...] = models
            n_comp += n
            residuals = residual_images(residual_vis)
            residual = residuals[0]
            if auto:
                current = auto_mask(residual, noise(current), beam, cell_rad, psf_sidelobe=sidelobe, pb=pb,
                                    prior=current, params=automask)
            active = near_bright(current) if deep else current
            after = float(np.max(np.abs(residual[active]))) if np.any(active) else 0.0
            cycles.append(MajorCycle(peak, cycle_thr, n, after))
        peak = float(np.max(np.abs(residual[active]))) if np.any(active) else 0.0
        return current, active, peak < threshold, ("threshold" if peak < threshold else "max_major")

    current, _, converged, reason = run(current, threshold, max_major)
    deep = None
    if (deep_threshold is not None and deep_threshold < threshold and reason in ("threshold", "max_major")
            and np.any(model)):
        current, deep, deep_converged, deep_reason = run(current, deep_threshold, max_major, deep=True)
        if np.any(deep):
            converged, reason = deep_converged, deep_reason
    final_peak = float(np.max(np.abs(residual[current]))) if np.any(current) else 0.0
    return CleanResult(model=model, residual=residual, mask=current, psf=psf, beam=beam, psf_sidelobe=sidelobe,
                       threshold=threshold, n_components=n_comp, n_major=len(cycles), peak_residual=final_peak,
                       converged=converged, stop_reason=reason, cycles=cycles, deep_mask=deep,
                       deep_threshold=None if deep is None else deep_threshold,
                       taylor_models=models if nterms > 1 else None,
                       taylor_residuals=residuals if nterms > 1 else None,
                       freq_ref_hz=freq_ref_hz if nterms > 1 else None, double_precision=grid["double"])
