"""What stages really used: a history of measured peaks and durations that refines the resource model.

Each finished stage adds one record (one small JSON object, so concurrent flows never overwrite each other's)
under the history location (MOUSFLOW_HISTORY: a local path or s3:// prefix; unset, nothing is recorded):
``<history>/<stage>/<time>-<uid hash>-<stage>.json`` with the job's size (JobDemand), the model's
prediction, the request, the measured peak resident memory (the stage's own, and its Dask workers' largest)
and the wall/CPU time.

Refinement (History.memory_factor): the largest measured / modelled peak over the stage's last RECENT records.
The largest, not the mean: a request below one stage's peak is an OOM kill, one above it only idle memory.
Durations are predicted from the history as seconds per unit of work (rows x channels x correlations,
plus pixels^2 x channels for imaging), the median of the recent records (History.predict_seconds); a whole
MOUS's processing time is the sum over its stages (History.predict_processing_seconds), what the operator's
predicted completion (status.predictedCompletion) is made of.

Deliveries: the operator adds one record per delivered MOUS under ``<history>/deliveries/`` (when it became
Fully Observed, its deadline, when it was delivered), which `mousflow report --history` reads.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from mousflow.model.spec import uid_digest
from mousflow.pipeline.resources import JobDemand, model_peak_bytes
from mousflow.storage.location import Location

RECENT = 20
PROCESSING_STAGES = ("calibration", "imaging", "packaging")
"""The stages a MOUS's processing time is the sum of (every recipe runs all three; STAGE_ORDER of the stages)."""
DELIVERIES = "deliveries"


def work_units(stage: str, demand: JobDemand) -> float:
    """A stage's work in arbitrary units that its duration is proportional to."""
    vis = demand.rows_per_window * demand.total_channels * demand.correlations
    if stage in ("imaging", "imaging-worker"):
        return float(vis + demand.image_pixels**2 * demand.total_channels)
    if stage == "packaging":
        return float(demand.image_pixels**2 * demand.total_channels)
    return float(vis)


@dataclass
class StageRecord:
    stage: str
    uid: str
    demand: dict
    model_bytes: int
    """The model's peak (no margin, no learned factor), for learning the factor."""
    requested_bytes: int
    peak_bytes: int
    """Measured peak resident memory of the stage process (or, for imaging-worker, the largest worker)."""
    wall_seconds: float
    cpu_seconds: float = 0.0
    predicted_seconds: float | None = None
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def memory_ratio(self) -> float:
        return self.peak_bytes / self.model_bytes if self.model_bytes else 1.0


class History:
    """Records under one location, read back newest first."""

    def __init__(self, root: Location):
        self.root = root

    @classmethod
    def from_env(cls) -> History | None:
        uri = os.environ.get("MOUSFLOW_HISTORY", "").strip()
        return cls(Location.of(uri)) if uri else None

    def add(self, record: StageRecord) -> Location:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"{time.time() % 1:.6f}"[1:]
        uid = uid_digest(record.uid)
        loc = self.root.join(record.stage, f"{stamp}-{uid}-{record.stage}.json")
        loc.write_json(asdict(record))
        return loc

    def records(self, stage: str, limit: int = RECENT) -> list[StageRecord]:
        return self._read(stage, StageRecord, limit)

    def _read(self, folder_name: str, record_type: type, limit: int | None) -> list:
        """The newest `limit` (None: all) records of one folder, newest first."""
        folder = self.root.join(folder_name)
        if not folder.exists():
            return []
        names = sorted(p for p in folder.fs.ls(folder.path, detail=False) if p.endswith(".json"))
        out = []
        for name in reversed(names[-limit:] if limit else names):
            try:
                doc = json.loads(folder.fs.cat_file(name))
                out.append(record_type(**doc))
            except (ValueError, TypeError, KeyError):
                continue  # a damaged record is no record
        return out

    def memory_factor(self, stage: str) -> float:
        """Largest measured / modelled peak of the recent records (1.0 without history)."""
        ratios = [r.memory_ratio for r in self.records(stage) if r.peak_bytes > 0]
        return max(ratios) if ratios else 1.0

    def predict_seconds(self, stage: str, demand: JobDemand) -> float | None:
        rates = [r.wall_seconds / units for r in self.records(stage)
                 if (units := work_units(stage, JobDemand(**r.demand))) > 0 and r.wall_seconds > 0]
        return statistics.median(rates) * work_units(stage, demand) if rates else None

    def predict_processing_seconds(self, demand: JobDemand) -> tuple[float | None, list[str]]:
        """Predicted seconds of all a MOUS's stages, and the stages without history (then no prediction)."""
        predictions = {stage: self.predict_seconds(stage, demand) for stage in PROCESSING_STAGES}
        missing = [stage for stage, seconds in predictions.items() if seconds is None]
        return (None if missing else sum(predictions.values())), missing

    def add_delivery(self, record: DeliveryRecord) -> Location:
        uid = uid_digest(record.uid)
        loc = self.root.join(DELIVERIES, f"{record.delivered_at.replace(':', '')}-{uid}.json")
        loc.write_json(asdict(record))
        return loc

    def deliveries(self) -> list[DeliveryRecord]:
        return self._read(DELIVERIES, DeliveryRecord, None)


@dataclass
class DeliveryRecord:
    """One delivered MOUS (RFC 3339 times), for the KPI report."""

    uid: str
    key: str
    """namespace/name of the MOUS resource."""
    fully_observed_at: str
    deadline: str
    delivered_at: str


def record_outcome(history: History, stage: str, uid: str, demand: JobDemand, metrics: dict,
                   requested_bytes: int = 0) -> list[StageRecord]:
    """Add what a finished stage reported (its status metrics) to the history; returns the records added.

    The stage's record compares its own process's peak with the model of the stage process alone (its Dask
    workers, wherever they ran, get an imaging-worker record of their own)."""
    added = []
    if metrics.get("peak_memory_bytes") and metrics.get("state", "Succeeded") != "Skipped":
        predicted = history.predict_seconds(stage, demand)
        rec = StageRecord(stage, uid, asdict(demand), model_peak_bytes(stage, demand), requested_bytes,
                          int(metrics["peak_memory_bytes"]), float(metrics.get("wall_seconds", 0.0)),
                          float(metrics.get("cpu_seconds", 0.0)), predicted)
        history.add(rec)
        added.append(rec)
    if stage == "imaging" and metrics.get("worker_peak_memory_bytes"):
        rec = StageRecord("imaging-worker", uid, asdict(demand), model_peak_bytes("imaging-worker", demand), 0,
                          int(metrics["worker_peak_memory_bytes"]), float(metrics.get("cube_seconds", 0.0)))
        history.add(rec)
        added.append(rec)
    return added
