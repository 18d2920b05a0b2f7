"""How much CPU and memory a stage needs, from the size of its job, before it runs.

The model counts the bytes a stage holds at once (its working set, which the stage code bounds) and adds the
interpreter and libraries:

- calibration reads each calibrator of a spectral window in blocks of integrations (all channels of their rows)
  and streams the target, a block per thread (stages.calibration), whatever the calibrators' and the target's
  length, and however many partitions (scans) a calibrator is spread over;
- an imaging *worker* (a Dask task, stages.imaging_scaleout) holds one channel chunk of visibilities plus that
  chunk's image planes and the gridder's grids: it depends on the chunk, never on the cube's total channels;
- the imaging *stage* process (the Dask client) reads every window for the continuum image and each cube at
  half resolution to find its line channels, so it grows with the window's channels; when its chunks run in
  worker processes inside the same pod (no Dask worker pods), those workers are added;
- packaging holds one cube in a few copies.

The request is that estimate (the model) times a *learned* factor (the largest measured / modelled peak of that
stage in the history store, pipeline.history, 1 without history) times SAFETY_MARGIN (1.2, the stated margin
over the expected peak); the limit is LIMIT_HEADROOM (1.25) times the request. CPU is requested, not limited
(throttling only slows a stage). The constants were fitted to the stages' measured peaks on the presets
(bench/resources.py prints model, request and measured peak side by side).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Interpreter and libraries, measured (VmHWM) on the presets: ~300 MiB for calibration (numpy, xarray, zarr,
# s3fs; 170 MiB at full size once the stage has imported what it uses, 2026-12-06: 250 MiB kept), ~400 MiB for
# imaging (ducc0, astropy and the Dask client) and packaging (matplotlib for the weblog). A worker pod runs
# `dask worker`: its nanny process, multiprocessing's resource tracker and the worker process, which imports
# only what a chunk needs (stages.imaging_chunks). Measured 2026-12-07 on a chunk of the reduced corpus block
# (resident, summed over the three): nanny 84 MiB, tracker 12, worker 153 (64 before its first chunk), 250 MiB
# in all; 280 kept for the worker's bookkeeping over many chunks. It was 370 while workers imported xarray,
# pandas, pyarrow and astropy (~0.13 GB). At full size the model is then 530 MiB against a worker process's
# measured 383 MiB plus the nanny's and tracker's 96.
BASE_BYTES = 400 * 2**20
CALIBRATION_BASE_BYTES = 250 * 2**20
WORKER_BASE_BYTES = 280 * 2**20
SAFETY_MARGIN = 1.2
LIMIT_HEADROOM = 1.25
# Bytes held per stored visibility sample (complex64 + float32 weight + bool flag = 13 B) times the copies a
# stage makes while working (raw, calibrated, Stokes I and model/residual).
BYTES_PER_SAMPLE = 13
# The continuum's two-term CLEAN (science.imaging.multiterm) adds one: the visibilities times t for the
# Taylor-1 residual.
# Calibration holds a block of one calibrator at a time (calibrator_rows_per_window: the rows of it held), with
# its flags for the solves, the chunks of the solves' sums and of the phase calibrator's score: 4.5 copies of
# the block's samples, the full-size corpus block's 480-channel window read in blocks of 4 integrations (3,612
# rows) having peaked at 4.4 over the interpreter on 2026-12-06 (the chunks' temporaries weigh most beside a
# block this small; a calibrator held whole had peaked at 1.6 copies of itself).
# An imaging worker holds one chunk's Stokes I (complex64 visibilities, double weights, flags: 17 B a row and
# channel, 0.65 of the chunk's 13 B stored samples) and a block being read into it: one copy. At full size
# (2026-12-06, 216,720 rows, 16 channels, 216-pixel planes) the stage's workers peaked at 0.43 GB, the model
# 0.53 GB (4.0 copies modelled 0.80 GB, from when a worker ran many chunks at once: imaging_scaleout).
WORKING_COPIES = {"calibration": 4.5, "imaging": 7.0, "imaging-worker": 1.0}
# The continuum holds its visibilities (complex64) and weights (float32, then the Briggs weights in their place)
# once each, Stokes I, every window's line-free channels averaged and joined (stages.imaging): 12 bytes a sample,
# 1.6 times that at its peak (joining the windows; the plan's quick PSF), measured at full size (2026-12-06:
# 42.7 million samples, 1.19 GB at the join of which 0.34 the interpreter).
CONTINUUM_BYTES_PER_SAMPLE = 12
CONTINUUM_COPIES = 1.6
# Calibration's target blocks, per thread: stages.calibration.APPLY_BLOCK_BYTES of visibilities, calibrated in
# the block's own arrays, with its flags and weights, the stored chunks decompressed, the chunks of applying and
# the Zarr writes: with 16 MiB blocks and two threads the full-size corpus block's 480-channel target pass
# peaked at 424 MiB (2026-12-07, 128 MiB of it the stage's imports), 5.5 blocks per thread over this model's
# base (3.9-4.3 with 32 MiB blocks, ~2.6 with 64: the fixed parts weigh more beside a smaller block).
CALIBRATION_BLOCK_VIS_BYTES = 16 * 2**20  # stages.calibration.APPLY_BLOCK_BYTES (a test holds them equal)
CALIBRATION_BLOCK_COPIES = 5.5
CALIBRATION_BLOCK_BYTES = int(CALIBRATION_BLOCK_COPIES * CALIBRATION_BLOCK_VIS_BYTES)
VIS_BYTES = 8  # complex64
# Per channel of a chunk a worker keeps its products (image, pbcor, residual, pb: float32) and the planes
# CLEAN works on (model, psf at twice the size, residual: float64); the gridder adds an oversampled
# complex128 grid (2x2 oversampling) while it runs.
WORKER_PLANE_BYTES = 4 * 4 + 8 * (1 + 4 + 1)
GRIDDER_BYTES = 16 * 4
# ... and a two-term continuum CLEAN a second model and residual and two more PSFs at twice the size (float64)
MULTITERM_PLANE_BYTES = 8 * (1 + 4 + 4 + 1)
STAGES = ("calibration", "imaging", "imaging-worker", "packaging")


@dataclass(frozen=True)
class JobDemand:
    """The size of a MOUS's job, read from its data's metadata."""

    rows_per_window: int
    """(time x baseline) rows of the largest window, all execution blocks and fields together."""
    correlations: int
    max_channels: int
    total_channels: int
    image_pixels: int = 512
    """Pixels on a side of the cube images (estimated from the longest baselines and the primary beam)."""
    channel_chunk: int = 16
    n_windows: int = 1
    calibrator_rows_per_window: int | None = None
    """The most rows of one calibrator (bandpass, flux or phase) of one window of one execution block that
    calibration holds at once: a block of its integrations (pipeline.demand.calibrator_held_rows). None (a
    history record from before it was kept) counts every row."""
    continuum_channels: int | None = None
    """The most channels the continuum image grids, every window's channels averaged as the imaging stage
    will (stages.imaging.continuum_channels_at_most). None (a history record from before it was kept): every
    channel of the largest window, in the older, coarser term."""


@dataclass(frozen=True)
class ResourceRequest:
    cpu: float
    memory_bytes: int
    memory_limit_bytes: int

    def kubernetes(self) -> dict:
        """requests/limits for a container spec: memory limited, CPU not (throttling only slows a stage)."""
        return {
            "requests": {"cpu": f"{int(self.cpu * 1000)}m", "memory": f"{self.memory_bytes // 2**20}Mi"},
            "limits": {"memory": f"{self.memory_limit_bytes // 2**20}Mi"},
        }

    def scaled(self, factor: float, cap_bytes: int | None = None) -> ResourceRequest:
        """More memory after an out-of-memory kill, up to a cap."""
        mem = int(self.memory_bytes * factor)
        lim = int(self.memory_limit_bytes * factor)
        if cap_bytes is not None:
            mem, lim = min(mem, cap_bytes), min(lim, cap_bytes)
        return ResourceRequest(self.cpu, mem, max(mem, lim))


def imaging_worker_bytes(demand: JobDemand) -> int:
    """Modelled peak of one imaging worker: one chunk's visibilities and planes (not the cube's channels)."""
    chunk = min(demand.channel_chunk, demand.max_channels)
    data = demand.rows_per_window * chunk * demand.correlations * BYTES_PER_SAMPLE * WORKING_COPIES["imaging-worker"]
    planes = demand.image_pixels**2 * (chunk * WORKER_PLANE_BYTES + GRIDDER_BYTES)
    return WORKER_BASE_BYTES + int(data + planes)


def model_peak_bytes(stage: str, demand: JobDemand, workers_in_pod: int = 0, threads: int = 1) -> int:
    """The model's peak resident memory of `stage` (no margin, no learned factor); `threads`: the stage's own
    gridding threads, each with a grid of its own (science.imaging.gridding.row_blocks)."""
    if stage == "calibration":
        rows = demand.rows_per_window if demand.calibrator_rows_per_window is None else \
            demand.calibrator_rows_per_window
        calibrators = rows * demand.max_channels * demand.correlations * BYTES_PER_SAMPLE * \
            WORKING_COPIES["calibration"]
        # a block is at most the largest window's visibilities (a small MOUS's target is one block)
        window = demand.rows_per_window * demand.max_channels * demand.correlations * VIS_BYTES
        block = int(CALIBRATION_BLOCK_COPIES * min(CALIBRATION_BLOCK_VIS_BYTES, window))
        # one after the other: the calibrators are released before the target's blocks are read
        return CALIBRATION_BASE_BYTES + max(int(calibrators), max(1, threads) * block)
    if stage == "imaging-worker":
        return imaging_worker_bytes(demand)
    if stage == "imaging":
        # the continuum: every window's channels as it averages them (rows of the largest window: an upper
        # bound), or in a record from before that was kept, one window's channels in several copies
        if demand.continuum_channels is not None:
            continuum = demand.rows_per_window * demand.continuum_channels * CONTINUUM_BYTES_PER_SAMPLE * \
                CONTINUUM_COPIES
        else:
            continuum = demand.rows_per_window * demand.max_channels * demand.correlations * BYTES_PER_SAMPLE * \
                WORKING_COPIES["imaging"]
        # line finding reads each cube at every second pixel (image and pb, float32)
        line_finding = demand.max_channels * (demand.image_pixels // 2) ** 2 * 4 * 2
        planes = demand.image_pixels**2 * (WORKER_PLANE_BYTES + MULTITERM_PLANE_BYTES
                                           + GRIDDER_BYTES * max(1, threads)) * 2
        workers = workers_in_pod * imaging_worker_bytes(demand)
        return BASE_BYTES + int(continuum + line_finding + planes + workers)
    if stage == "packaging":
        return BASE_BYTES + demand.image_pixels**2 * 4 * demand.max_channels * 3
    raise ValueError(f"unknown stage {stage!r}; known: {', '.join(STAGES)}")


def estimate_stage_resources(stage: str, demand: JobDemand, threads: int = 1, *, workers_in_pod: int = 0,
                             learned_factor: float = 1.0) -> ResourceRequest:
    """Requests and limits for one stage pod (or one imaging worker, stage "imaging-worker").

    learned_factor: measured / modelled peak from the history store (History.memory_factor); never below
    0.5, so one odd record cannot starve a stage.
    """
    peak = model_peak_bytes(stage, demand, workers_in_pod, threads) * max(0.5, learned_factor)
    memory = int(math.ceil(peak * SAFETY_MARGIN / 2**20) * 2**20)
    return ResourceRequest(cpu=float(max(1, threads)), memory_bytes=memory,
                           memory_limit_bytes=int(math.ceil(memory * LIMIT_HEADROOM / 2**20) * 2**20))


def estimate_image_pixels(baseline_l80_m: float, freq_min_hz: float, freq_max_hz: float,
                          dish_diameter_m: float, *, pblimit: float = 0.2, cells_per_beam: float = 5.0) -> int:
    """Pixels on a side of the images the imaging stage will make, from metadata only.

    The same heuristics as science.imaging.plan_image (cell = beam minor axis / 5, field to pblimit at the
    lowest frequency) with the beam taken as 0.574 lambda / L80 (L80: the 80th percentile of projected
    baseline lengths) instead of a fitted PSF: plan_image needs the data, this runs before the stage.
    """
    from mousflow.science.imaging.plan import good_size
    from mousflow.science.imaging.primary_beam import pb_radius_rad
    from mousflow.telescope.alma import SPEED_OF_LIGHT

    beam = 0.574 * SPEED_OF_LIGHT / freq_max_hz / max(baseline_l80_m, 1.0)
    side = 2.0 * pb_radius_rad(freq_min_hz, dish_diameter_m, pblimit)
    return good_size(math.ceil(side / (beam / cells_per_beam)))


_MEMORY_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
                 "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def parse_memory(quantity: str) -> int:
    """Bytes of a Kubernetes memory quantity ("512Mi", "64Gi", "1G", "1048576")."""
    text = str(quantity).strip()
    number = text.rstrip("KMGTi")
    unit = text[len(number):]
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if unit not in _MEMORY_UNITS or value <= 0:
        raise ValueError(f"not a memory quantity: {quantity!r} (examples: 512Mi, 64Gi)")
    return int(value * _MEMORY_UNITS[unit])
