"""What a stage gets to work with: the MOUS, its run root in storage, checkpoints and a progress callback."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from mousflow.model import MOUSResource
from mousflow.storage.checkpoints import CheckpointStore
from mousflow.storage.location import Location

ProgressFn = Callable[[str, float | None], None]


def print_progress(message: str, percent: float | None) -> None:
    prefix = f"[{percent:5.1f}%] " if percent is not None else ""
    print(f"{prefix}{message}", flush=True)


@dataclass
class StageContext:
    name: str
    mous: MOUSResource
    run_root: Location
    threads: int = 1
    progress: ProgressFn = print_progress
    metrics: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    """What a person should know of a stage that succeeded (a fallback it took): its outcome's message."""

    @property
    def checkpoints(self) -> CheckpointStore:
        return CheckpointStore(self.run_root)

    @property
    def uid(self) -> str:
        return self.mous.spec.uid

    def path(self, *parts: str) -> Location:
        return self.run_root.join(*parts)


@dataclass
class StageOutcome:
    """What run_stage reports: Succeeded (work done), Skipped (valid checkpoint) or Failed (with a reason)."""

    stage: str
    state: str
    reason: str = ""
    message: str = ""
    metrics: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"stage": self.stage, "state": self.state, "reason": self.reason, "message": self.message,
                "metrics": self.metrics}
