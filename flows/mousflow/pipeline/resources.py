"""How much CPU and memory a stage needs, from the size of its job, before it runs.

The model counts the bytes a stage holds at once (its working set, which the stage code bounds: calibration
holds one spectral window's partitions, imaging one channel chunk or the averaged continuum, packaging one
cube) and adds the interpreter and libraries. The request is that estimate times a safety margin; the limit
leaves further headroom. An imaging worker's memory depends on its chunk, not on the cube's total number of
channels. The factors are first estimates, to be refined from measured peaks (the stages report their peak
resident memory in their status).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Interpreter, numpy/xarray/zarr/ducc0/astropy/matplotlib imported: measured ~350-450 MiB resident.
BASE_BYTES = 450 * 2**20
SAFETY_MARGIN = 1.3
LIMIT_HEADROOM = 1.5
# Bytes held per stored visibility sample (complex64 + float32 weight + bool flag = 13 B) times the copies a
# stage makes while working (raw, calibrated, Stokes I and model/residual).
WORKING_COPIES = {"calibration": 6.0, "imaging": 5.0}
BYTES_PER_SAMPLE = 13


@dataclass(frozen=True)
class JobDemand:
    """The size of a MOUS's job, read from its data's metadata."""

    rows_per_window: int
    """(time x baseline) rows of the largest window, all execution blocks and fields together."""
    correlations: int
    max_channels: int
    total_channels: int
    image_pixels: int = 512
    channel_chunk: int = 16


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


def estimate_stage_resources(stage: str, demand: JobDemand, threads: int = 1) -> ResourceRequest:
    if stage == "calibration":
        working = demand.rows_per_window * demand.max_channels * demand.correlations * BYTES_PER_SAMPLE * \
            WORKING_COPIES["calibration"]
    elif stage == "imaging":
        chunk = min(demand.channel_chunk, demand.max_channels)
        data = demand.rows_per_window * chunk * demand.correlations * BYTES_PER_SAMPLE * WORKING_COPIES["imaging"]
        # per plane: image, residual, model, psf (2x size) and the gridder's oversampled grid, in float64
        images = demand.image_pixels**2 * 8 * (4 + 4 + 8)
        working = max(data, 0) + images * 2
    elif stage == "packaging":
        working = demand.image_pixels**2 * 4 * demand.max_channels * 3
    else:
        raise ValueError(f"unknown stage {stage!r}")
    memory = int((BASE_BYTES + working) * SAFETY_MARGIN)
    memory = int(math.ceil(memory / 2**20) * 2**20)
    return ResourceRequest(cpu=float(max(1, threads)), memory_bytes=memory,
                           memory_limit_bytes=int(memory * LIMIT_HEADROOM))


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
