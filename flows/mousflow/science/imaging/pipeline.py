"""The imaging recipe on arrays: an MFS continuum plane, or any set of cube channels imaged independently.

Inputs are Stokes I (see `weighting.stokes_i`): vis (n_row, n_chan) complex, weight (n_row, n_chan) = 1 /
sigma^2, flag (n_row, n_chan) bool or None, uvw_m (n_row, 3) and freq_hz (n_chan,). For every plane:
Briggs weights -> PSF (2 npix) and restoring beam fitted to its main lobe -> Cotton-Schwab CLEAN with an
automatic mask to nsigma x the predicted rms (CUBE_NSIGMA for cube planes, CONTINUUM_NSIGMA for the continuum)
-> restore -> primary-beam correction.

All images are in sky orientation (`coords`): (npix, npix) for a plane, (n_chan, npix, npix) for cube
products; `wcs.image_header` describes them. A cube channel's result depends only on that channel's data
(per-channel weighting, PSF, beam, mask and threshold), so channel chunks can be imaged separately and
concatenated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mousflow.science.imaging.beam import Beam
from mousflow.science.imaging.clean import clean
from mousflow.science.imaging.gridding import DEFAULT_EPSILON
from mousflow.science.imaging.mask import AutoMaskParams
from mousflow.science.imaging.multiterm import MIN_FRACTIONAL_BANDWIDTH
from mousflow.science.imaging.noise import PredictedNoise, image_rms
from mousflow.science.imaging.plan import ImagingPlan
from mousflow.science.imaging.primary_beam import pb_correct, primary_beam
from mousflow.science.imaging.restore import restore
from mousflow.science.imaging.weighting import IMAGING_WEIGHT_DTYPE, briggs_weights

NAN_BEAM = Beam(math.nan, math.nan, math.nan)
# CLEAN depth, in units of the predicted rms, inside the automatic mask (which only holds significant emission).
# Every plane is CLEANed to CONTINUUM_NSIGMA = CUBE_NSIGMA = 2 sigma in the whole mask. The continuum then goes on
# to CONTINUUM_DEEP_NSIGMA, but only within a beam of emission brighter than CONTINUUM_BRIGHT_NSIGMA (the CLEAN
# model convolved with the beam; `clean.clean`'s deep pass). Why: the flux a bright source leaves un-CLEANed at
# 2 sigma (plus the error of representing an off-pixel point source with pixel components) has sidelobes over
# the whole field, which add to the thermal noise in proportion to its brightness. On a CASA-simulated
# 43-antenna band 6 execution block (sources at ~2000-4000 sigma) 2 sigma left the continuum rms 1.34x CASA's
# apparentsens; 0.5 sigma in the whole mask 1.07x, the deep pass 1.09x. But 0.5 sigma in the whole mask also
# models the noise in it, and a small array's noise has few degrees of freedom and high PSF sidelobes, so
# CLEANing it in even a small mask (~36 beams) lowers the noise over the whole field: the 16-antenna `tiny`
# MOUS (brightest source ~110 sigma) came out at 0.75x its radiometer rms (0.97x at 2 sigma, and still 0.93x
# and 0.91x with a deep pass around emission above 100 and 50 sigma). Hence 200 sigma: a source that bright
# leaves an excess worth removing, and a deep pass confined to a beam around it models little noise. Deeper
# than 0.5 sigma there models the noise too (16 antennas, sources at ~2000 sigma: residual 1.04x the noise
# imaged alone at 0.5, 0.98x at 0.35, 0.95x at 0.25; test_imaging_pipeline).
CUBE_NSIGMA = 2.0
# The cube products' precision (`image_channels`): the cube is stored in it; a plane's values are made in double.
CUBE_DTYPE = np.float32
CONTINUUM_NSIGMA = 2.0
CONTINUUM_DEEP_NSIGMA = 0.5
CONTINUUM_BRIGHT_NSIGMA = 200.0


@dataclass
class PlaneProducts:
    image: np.ndarray
    """Restored image, Jy/beam, flat noise (not PB-corrected)."""
    image_pbcor: np.ndarray
    """Restored image / pb, NaN where pb < pblimit."""
    residual: np.ndarray
    model: np.ndarray
    """CLEAN components, Jy/pixel."""
    psf: np.ndarray
    """PSF (npix, npix), peak 1 at (npix/2, npix/2)."""
    pb: np.ndarray
    mask: np.ndarray
    beam: Beam
    """Restoring beam (fitted to this plane's PSF unless one was imposed)."""
    psf_beam: Beam
    freq_hz: float
    """Imaging-weighted mean frequency of the plane."""
    bandwidth_hz: float
    predicted_rms: float
    image_rms: float
    """Robust rms of the residual outside the mask, inside pb >= pblimit."""
    threshold: float
    n_components: int
    n_major: int
    converged: bool
    stop_reason: str
    nterms: int = 1
    """Taylor terms of the CLEAN model (1: flat spectrum; 2: with a spectral index, `multiterm`)."""
    double_precision: bool = False
    """Whether CLEAN gridded in double precision (`clean.clean`'s choice, by the dynamic range)."""


@dataclass
class CubeProducts:
    """Planes stacked along axis 0 (n_chan, npix, npix), CUBE_DTYPE; per-channel values as (n_chan,) arrays."""

    image: np.ndarray
    image_pbcor: np.ndarray
    residual: np.ndarray
    model: np.ndarray
    psf: np.ndarray
    pb: np.ndarray
    mask: np.ndarray
    beams: list[Beam]
    channels: np.ndarray
    """Indices of the planes in the freq_hz array given to `image_channels`."""
    freq_hz: np.ndarray
    predicted_rms: np.ndarray
    image_rms: np.ndarray
    threshold: np.ndarray
    n_components: np.ndarray
    converged: np.ndarray


def _empty_plane(npix: int, freq: float, width: float, pb: np.ndarray) -> PlaneProducts:
    nan = np.full((npix, npix), np.nan)
    return PlaneProducts(nan, nan.copy(), nan.copy(), np.zeros((npix, npix)), nan.copy(), pb,
                         np.zeros((npix, npix), dtype=bool), NAN_BEAM, NAN_BEAM, freq, width, math.nan, math.nan,
                         math.nan, 0, 0, False, "no data")


def image_plane(vis, uvw_m, freq_hz, weight, flag, plan: ImagingPlan, *, per_channel_weighting: bool = False,
                restoring_beam: Beam | None = None, threshold: float | None = None, nsigma: float = CUBE_NSIGMA,
                deep_nsigma: float | None = None, bright_nsigma: float = CONTINUUM_BRIGHT_NSIGMA,
                mask="auto", automask: AutoMaskParams | None = None, gain: float = 0.1, max_major: int = 10,
                max_iter: int = 100_000, nterms: int | None = 1, epsilon: float = DEFAULT_EPSILON,
                double: bool | None = None, overwrite_inputs: bool = False,
                nthreads: int = 1) -> PlaneProducts:
    """Image all the given channels together into one plane (MFS when n_chan > 1).

    nterms > 1: a multi-term CLEAN (`multiterm`) about the imaging-weighted mean frequency, the plane's
    frequency; the image is the Taylor-0 term (the sky at that frequency). None: `continuum_nterms` of the
    channels the imaging weights (flags applied) leave with data.

    CLEAN goes to nsigma x the predicted rms in the mask (or to `threshold`, Jy/beam), then, if deep_nsigma is
    given, to deep_nsigma x the rms within a beam of the emission above bright_nsigma x the rms (`clean.clean`).
    overwrite_inputs=True, for a caller that has no further use for vis and weight and would rather not hold
    arrays of their size beside them: vis becomes CLEAN's residual visibilities (`clean.clean`) and weight, if
    it is a writeable IMAGING_WEIGHT_DTYPE array, the imaging weights.
    """
    freq = np.atleast_1d(np.asarray(freq_hz, dtype=np.float64))
    npix, cell = plan.npix, plan.cell_rad
    n_samples = (np.shape(uvw_m)[0], freq.size)
    reuse = (overwrite_inputs and isinstance(weight, np.ndarray) and weight.dtype == IMAGING_WEIGHT_DTYPE
             and weight.shape == n_samples and weight.flags.writeable)
    noise = PredictedNoise()  # summed as the imaging weights are made: `weight` may be overwritten by them
    iw = briggs_weights(uvw_m, freq, weight, flag, npix, cell, plan.robust, per_channel=per_channel_weighting,
                        out=weight if reuse else None, noise=noise)
    chan_w = iw.sum(axis=0, dtype=np.float64)
    width = float(freq.max() - freq.min()) if freq.size > 1 else 0.0
    if chan_w.sum() <= 0:
        return _empty_plane(npix, float(freq.mean()), width, primary_beam(npix, cell, freq, plan.dish_diameter_m))
    fmean = float(np.sum(chan_w * freq) / chan_w.sum())
    if nterms is None:
        nterms = continuum_nterms(freq, chan_w)
    pb = primary_beam(npix, cell, freq, plan.dish_diameter_m, channel_weight=chan_w)
    rms = noise.rms()
    thr = nsigma * rms if threshold is None else threshold
    params = automask or AutoMaskParams(pblimit=plan.pblimit)
    deep = {} if deep_nsigma is None else {"deep_threshold": deep_nsigma * rms, "deep_above": bright_nsigma * rms}
    cr = clean(vis, uvw_m, freq, iw, npix, cell, thr, mask=mask, pb=pb, automask=params, gain=gain, **deep,
               max_major=max_major, max_iter=max_iter, nterms=nterms, freq_ref_hz=fmean, epsilon=epsilon,
               double=double, overwrite_vis=overwrite_inputs, nthreads=nthreads)
    beam = restoring_beam or cr.beam
    restored = restore(cr.model, cr.residual, beam, cell)
    psf = cr.psf[npix // 2 : npix // 2 + npix, npix // 2 : npix // 2 + npix].copy()
    return PlaneProducts(
        image=restored, image_pbcor=pb_correct(restored, pb, plan.pblimit), residual=cr.residual, model=cr.model,
        psf=psf, pb=pb, mask=cr.mask, beam=beam, psf_beam=cr.beam, freq_hz=fmean, bandwidth_hz=width,
        predicted_rms=rms, image_rms=image_rms(cr.residual, exclude=cr.mask, pb=pb, pblimit=plan.pblimit),
        threshold=thr, n_components=cr.n_components, n_major=cr.n_major, converged=cr.converged,
        stop_reason=cr.stop_reason, nterms=nterms, double_precision=cr.double_precision)


def continuum_nterms(freq_hz, channel_weight=None) -> int:
    """Taylor terms for a continuum over these channels: 2 (a spectral index, as the ALMA pipeline's
    `mtmfs` continuum) once the channels with weight (channel_weight > 0: the imaging weights summed over
    rows, flags applied; None: every channel) span MIN_FRACTIONAL_BANDWIDTH, else 1."""
    freq = np.atleast_1d(np.asarray(freq_hz, dtype=np.float64))
    used = np.ones(freq.size, dtype=bool) if channel_weight is None else np.asarray(channel_weight) > 0
    if not used.any():
        return 1
    f = freq[used]
    return 2 if (f.max() - f.min()) / f.mean() >= MIN_FRACTIONAL_BANDWIDTH else 1


def image_mfs(vis, uvw_m, freq_hz, weight, flag, plan: ImagingPlan, *, nsigma: float = CONTINUUM_NSIGMA,
              deep_nsigma: float | None = CONTINUUM_DEEP_NSIGMA, nterms: int | None = None,
              **kwargs) -> PlaneProducts:
    """Continuum (MFS) plane from all the channels given, CLEANed to CONTINUUM_NSIGMA x the predicted rms in
    the mask and to CONTINUUM_DEEP_NSIGMA around bright emission; select line-free channels with `flag`.
    nterms None: `continuum_nterms` of the channels with imaging weight."""
    return image_plane(vis, uvw_m, freq_hz, weight, flag, plan, per_channel_weighting=False, nsigma=nsigma,
                       deep_nsigma=deep_nsigma, nterms=nterms, **kwargs)


def image_channels(vis, uvw_m, freq_hz, weight, flag, plan: ImagingPlan, channels=None, **kwargs) -> CubeProducts:
    """Cube planes for `channels` (a slice, index array or None for all) of (n_row, n_chan) data.

    Each channel is imaged on its own (its own weights, PSF, beam, mask and threshold); pass
    restoring_beam= to restore every plane with one common beam instead of its own. The planes come out in
    single precision (CUBE_DTYPE, as a cube is stored), each written into the cube as it is made: a chunk's
    planes are held once, not as a list of double-precision planes and then their stack (at full size a 16-channel
    chunk's products were 73 MB that way, 19 MB now).
    """
    freq = np.atleast_1d(np.asarray(freq_hz, dtype=np.float64))
    idx = np.arange(freq.size)[channels] if channels is not None else np.arange(freq.size)
    idx = np.atleast_1d(idx)
    vis = np.asarray(vis)
    shape = (idx.size, plan.npix, plan.npix)
    images = {name: np.empty(shape, CUBE_DTYPE)
              for name in ("image", "image_pbcor", "residual", "model", "psf", "pb")}
    mask = np.empty(shape, dtype=bool)
    scalars = {name: np.empty(idx.size) for name in ("predicted_rms", "image_rms", "threshold")}
    n_components, converged, beams = np.empty(idx.size, dtype=int), np.empty(idx.size, dtype=bool), []
    for i, k in enumerate(idx):
        sl = slice(int(k), int(k) + 1)
        plane = image_plane(vis[:, sl], uvw_m, freq[sl], None if weight is None else np.asarray(weight)[:, sl],
                            None if flag is None else np.asarray(flag)[:, sl], plan, per_channel_weighting=True,
                            **kwargs)
        for name, cube in images.items():
            cube[i] = getattr(plane, name)
        mask[i] = plane.mask
        for name, values in scalars.items():
            values[i] = getattr(plane, name)
        n_components[i], converged[i] = plane.n_components, plane.converged
        beams.append(plane.beam)
        del plane  # the next plane's arrays take its place rather than join it
    return CubeProducts(**images, mask=mask, beams=beams, channels=idx, freq_hz=freq[idx], **scalars,
                        n_components=n_components, converged=converged)
