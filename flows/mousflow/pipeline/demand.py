"""The size of a MOUS's job, read from its execution blocks' metadata (no visibilities are loaded)."""

from __future__ import annotations

import numpy as np

from mousflow.model import MOUSResource
from mousflow.pipeline.resources import JobDemand, estimate_image_pixels
from mousflow.stages.calibration import CALIBRATOR_BLOCK_BYTES, VIS_ITEMSIZE
from mousflow.stages.imaging import continuum_channels_at_most
from mousflow.stages.intents import has_role
from mousflow.storage.location import Location
from mousflow.storage.partitions import PartitionInfo, open_checked, parallel_hand_indices, partition_infos

DEFAULT_CHANNEL_CHUNK = 16
UVW_TIME_SAMPLES = 48
"""Integrations of the target's uvw read to size the image. The 80th percentile of baseline lengths changes
slowly with the Earth's rotation, so this many integrations spread over the track give it to well within the
pixel count's rounding, while reading all of a 40-minute, 43-antenna execution block's uvw (2 million rows,
about 50 MB, three times that while it is measured) would cost each flow that much memory for each stage it
sizes, in the operator's process."""  # the imaging stage's default (stages.imaging.DEFAULT_CHANNEL_CHUNK)
ALMA_12M_DISH_M = 12.0
CALIBRATOR_ROLES = ("bandpass", "flux", "phase")


def sampled_times(n_time: int, samples: int = UVW_TIME_SAMPLES) -> np.ndarray:
    """At most `samples` time indices spread evenly over 0..n_time-1, the first and last included."""
    return np.unique(np.linspace(0, n_time - 1, min(n_time, samples)).round().astype(np.int64))


def calibrator_held_rows(parts: list[PartitionInfo]) -> int:
    """The rows of one calibrator of one window (its partitions `parts`) that the calibration stage holds at once:
    a block of its integrations (stages.calibration.CalibratorReader: CALIBRATOR_BLOCK_BYTES of visibilities of
    one partition, at least one integration), on the baselines of all its partitions (taken as the most of any
    one: a partition whose antennas are missing from another adds the few baselines they make). Partitions that
    overlap in time, which the reader joins where they overlap, are not modelled (a partitioning by antenna would
    make them; neither import-ms nor xradio's default partitioning does)."""
    n_baseline = max(p.n_baseline for p in parts)

    def block_rows(p: PartitionInfo) -> int:
        per_time = p.n_baseline * p.n_chan * len(parallel_hand_indices(p.correlations)) * VIS_ITEMSIZE
        return min(p.n_time, max(1, CALIBRATOR_BLOCK_BYTES // max(1, per_time)))

    return max(map(block_rows, parts)) * n_baseline


def demand_of(mous: MOUSResource) -> JobDemand:
    """Rows per window (all execution blocks and fields of the largest window; and the most of one calibrator's
    rows calibration holds at once, calibrator_held_rows), correlations, channels and the image size (from the
    target's uvw and frequencies: a few MB read, never the visibilities)."""
    rows: dict[str, int] = {}
    calibrator_parts: dict[tuple[int, str, str], list] = {}
    chans: dict[str, int] = {}
    target_freq: dict[str, np.ndarray] = {}
    correlations = 1
    freq_min, freq_max, l80 = np.inf, 0.0, []
    for k, eb in enumerate(mous.spec.execution_blocks):
        ps = open_checked(Location.of(eb.uri))
        for info in partition_infos(ps):
            rows[info.spw_name] = rows.get(info.spw_name, 0) + info.n_time * info.n_baseline
            for role in CALIBRATOR_ROLES:
                if has_role(info.intents, role):
                    calibrator_parts.setdefault((k, info.spw_name, role), []).append(info)
            chans[info.spw_name] = max(chans.get(info.spw_name, 0), info.n_chan)
            correlations = max(correlations, len(info.correlations))
            if "OBSERVE_TARGET" in " ".join(info.intents).upper() or not l80:
                node = ps[info.name]
                freq = np.asarray(node.frequency.values, dtype=np.float64)
                if has_role(info.intents, "target"):
                    target_freq.setdefault(info.spw_name, freq)
                freq_min, freq_max = min(freq_min, float(freq.min())), max(freq_max, float(freq.max()))
                uvw = np.asarray(node.UVW.isel(time=sampled_times(node.sizes["time"])).values).reshape(-1, 3)
                length = np.hypot(uvw[:, 0], uvw[:, 1])
                length = length[np.isfinite(length) & (length > 0)]
                if length.size:
                    l80.append(float(np.percentile(length, 80)))
    chunk = mous.spec.imaging.channel_chunk if mous.spec.imaging and mous.spec.imaging.channel_chunk else \
        DEFAULT_CHANNEL_CHUNK
    pixels = estimate_image_pixels(float(np.median(l80)), freq_min, freq_max, ALMA_12M_DISH_M) if l80 else 512
    continuum = sum(continuum_channels_at_most(f, pixels) for f in target_freq.values()) if target_freq else None
    return JobDemand(rows_per_window=max(rows.values(), default=0),
                     calibrator_rows_per_window=max(map(calibrator_held_rows, calibrator_parts.values()), default=0),
                     correlations=correlations,
                     max_channels=max(chans.values(), default=1), total_channels=sum(chans.values()),
                     image_pixels=pixels, channel_chunk=chunk, n_windows=len(chans), continuum_channels=continuum)
