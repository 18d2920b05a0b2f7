"""The MOUS status: where the MOUS is in the data-processing lifecycle, written by the operator."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import AwareDatetime, Field

from mousflow.model.base import CRModel


class Phase(StrEnum):
    """Data-processing states of a MOUS (ALMA's names, without spaces)."""

    FULLY_OBSERVED = "FullyObserved"
    READY_FOR_PROCESSING = "ReadyForProcessing"
    PROCESSING = "Processing"
    READY_FOR_REVIEW = "ReadyForReview"
    REVIEWING = "Reviewing"
    DELIVERY_IN_PROGRESS = "DeliveryInProgress"
    DELIVERED = "Delivered"
    QA2_FAIL = "QA2Fail"
    SEMI_PASS = "SemiPass"
    FAILED = "Failed"


class StageName(StrEnum):
    CALIBRATION = "calibration"
    IMAGING = "imaging"
    PACKAGING = "packaging"


class StageState(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    SKIPPED = "Skipped"
    """Skipped because a valid checkpoint already held its outputs."""
    FAILED = "Failed"


class QA2Verdict(StrEnum):
    PASS = "Pass"
    SEMI_PASS = "SemiPass"
    FAIL = "Fail"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(CRModel):
    """A standard Kubernetes condition (Ready, Progressing, Degraded)."""

    type: Annotated[str, Field(min_length=1, max_length=64)]
    status: ConditionStatus
    reason: Annotated[str, Field(max_length=128)] = ""
    message: Annotated[str, Field(max_length=4096)] = ""
    last_transition_time: AwareDatetime | None = None


class ResourceAmounts(CRModel):
    """Kubernetes quantities as strings, e.g. cpu "1500m", memory "3Gi"."""

    cpu: str | None = None
    memory: str | None = None


class ResourceUsage(CRModel):
    peak_memory_bytes: Annotated[int | None, Field(ge=0)] = None
    cpu_seconds: Annotated[float | None, Field(ge=0)] = None
    wall_seconds: Annotated[float | None, Field(ge=0)] = None


class StageResources(CRModel):
    requested: ResourceAmounts | None = None
    limits: ResourceAmounts | None = None
    used: ResourceUsage | None = None


class StageRetry(CRModel):
    """A memory event or a retry of a stage attempt (the launcher's record): an attempt that ended without an
    outcome and was run again, or a running pod whose memory limit was raised in place."""

    job: str
    reason: str
    """OOMKilled (run again with more memory), Interrupted (pod deleted, evicted or killed: run again) or
    ResizedInPlace (its memory limit raised while it ran: the attempt went on)."""
    message: Annotated[str, Field(max_length=1024)] = ""
    memory_limit: str | None = None
    """The memory limit the attempt had, e.g. "512Mi"."""


class StageStatus(CRModel):
    state: StageState = StageState.PENDING
    started_at: AwareDatetime | None = None
    finished_at: AwareDatetime | None = None
    checkpoint_uri: str | None = None
    progress_percent: Annotated[float, Field(ge=0, le=100)] = 0.0
    attempts: Annotated[int, Field(ge=0)] = 0
    retries: list[StageRetry] = []
    resources: StageResources | None = None
    message: Annotated[str, Field(max_length=4096)] = ""


class QA2Status(CRModel):
    verdict: QA2Verdict
    reasons: list[str] = []
    scores: dict[str, Annotated[float, Field(ge=0, le=1)]] = {}


class ProductsStatus(CRModel):
    manifest_uri: str | None = None
    weblog_uri: str | None = None
    delivered_uri: str | None = None


class MOUSStatus(CRModel):
    phase: Phase = Phase.FULLY_OBSERVED
    stage: StageName | None = None
    stages: dict[str, StageStatus] = {}
    qa2: QA2Status | None = None
    products: ProductsStatus | None = None
    conditions: list[Condition] = []
    flow_run_id: str | None = None
    deadline: AwareDatetime | None = None
    predicted_completion: AwareDatetime | None = None
    """When processing is predicted to end (queue ahead included; review and delivery not), from the history
    of measured stage durations. Absent with predicted_completion_reason saying why."""
    predicted_completion_reason: Annotated[str, Field(max_length=128)] = ""
    """Predicted (from the history), or why there is no prediction: NoHistory (a stage has no measured
    duration to predict from, or no history store is configured)."""
    predicted_processing_seconds: Annotated[float | None, Field(ge=0)] = None
    """The MOUS's own processing time as predicted before it started (kept, to measure the prediction's error)."""
    message: Annotated[str, Field(max_length=4096)] = ""
    observed_generation: Annotated[int | None, Field(ge=0)] = None

    @classmethod
    def from_stored(cls, raw: dict) -> MOUSStatus:
        """The status as stored on a MOUS resource, without the keys this model does not know (kopf's own)."""
        known = {f.alias or n for n, f in cls.model_fields.items()}
        return cls.model_validate({k: v for k, v in raw.items() if k in known})
