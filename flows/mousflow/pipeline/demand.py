"""The size of a MOUS's job, read from its execution blocks' metadata (no visibilities are loaded)."""

from __future__ import annotations

from mousflow.model import MOUSResource
from mousflow.pipeline.resources import JobDemand
from mousflow.storage.location import Location
from mousflow.storage.partitions import open_checked, partition_infos


def demand_of(mous: MOUSResource) -> JobDemand:
    """Rows per window (all execution blocks and fields of the largest window), correlations and channels."""
    rows: dict[str, int] = {}
    chans: dict[str, int] = {}
    correlations = 1
    for eb in mous.spec.execution_blocks:
        for info in partition_infos(open_checked(Location.of(eb.uri))):
            rows[info.spw_name] = rows.get(info.spw_name, 0) + info.n_time * info.n_baseline
            chans[info.spw_name] = max(chans.get(info.spw_name, 0), info.n_chan)
            correlations = max(correlations, len(info.correlations))
    chunk = mous.spec.imaging.channel_chunk if mous.spec.imaging and mous.spec.imaging.channel_chunk else 16
    return JobDemand(rows_per_window=max(rows.values(), default=0), correlations=correlations,
                     max_channels=max(chans.values(), default=1), total_channels=sum(chans.values()),
                     channel_chunk=chunk)
