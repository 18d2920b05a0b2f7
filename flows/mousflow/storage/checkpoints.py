"""Checkpoint manifests: what a finished stage (or imaging chunk) read, which code made it, and what it wrote.

A stage writes all its outputs first and its checkpoint manifest last (one object, written atomically), so a
checkpoint exists only for complete work. A later run skips the stage when the checkpoint is valid:

- the hash of the stage's inputs is the same (inputs are hashed by content, so a re-simulated execution block
  with the same name still invalidates everything downstream),
- the code version is the same (the version plus a hash of the source files the stage runs), and
- every output recorded in it still exists with the recorded checksum.

Downstream stages hash their upstream checkpoint's output checksums into their own input hash, so a change
propagates: a recomputed calibration that produced different data invalidates imaging, one that produced
identical data does not.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from mousflow.storage.integrity import content_digest
from mousflow.storage.location import Location

CHECKPOINT_DIR = "checkpoints"


def hash_inputs(*parts: Any) -> str:
    """A stable hash of JSON-serialisable input descriptions (sorted keys, no whitespace)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


@dataclass
class CheckpointManifest:
    stage: str
    mous_uid: str
    input_hash: str
    code_version: str
    outputs: dict[str, str]
    """Output path relative to the run root -> content digest."""
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict) -> CheckpointManifest:
        return cls(**{k: doc[k] for k in ("stage", "mous_uid", "input_hash", "code_version", "outputs")},
                   created=doc.get("created", ""), metrics=doc.get("metrics", {}))


@dataclass(frozen=True)
class Validity:
    valid: bool
    reason: str

    def __bool__(self) -> bool:
        return self.valid


class CheckpointStore:
    """Checkpoints of one MOUS run, under <run root>/checkpoints/."""

    def __init__(self, run_root: Location):
        self.root = run_root

    def location(self, key: str) -> Location:
        return self.root.join(CHECKPOINT_DIR, f"{key}.json")

    def read(self, key: str) -> CheckpointManifest | None:
        loc = self.location(key)
        if not loc.exists():
            return None
        try:
            return CheckpointManifest.from_json(loc.read_json())
        except (ValueError, KeyError, TypeError):
            return None  # a damaged checkpoint is no checkpoint: the work is redone

    def validate(self, key: str, input_hash: str, code_version: str, *, verify_outputs: bool = True) -> Validity:
        cp = self.read(key)
        if cp is None:
            return Validity(False, "no checkpoint")
        if cp.input_hash != input_hash:
            return Validity(False, "inputs changed")
        if cp.code_version != code_version:
            return Validity(False, f"code changed ({cp.code_version} -> {code_version})")
        if verify_outputs:
            for rel, digest in cp.outputs.items():
                loc = self.root.join(rel)
                try:
                    if content_digest(loc) != digest:
                        return Validity(False, f"output {rel} changed")
                except FileNotFoundError:
                    return Validity(False, f"output {rel} is missing")
        return Validity(True, "valid")

    def commit(self, key: str, mous_uid: str, input_hash: str, code_version: str, outputs: list[str],
               metrics: dict[str, Any] | None = None) -> CheckpointManifest:
        """Record finished work. Digests the outputs (already written; a processing set's from the checksums
        its writer has just recorded) and writes the manifest last."""
        cp = CheckpointManifest(
            stage=key, mous_uid=mous_uid, input_hash=input_hash, code_version=code_version,
            outputs={rel: content_digest(self.root.join(rel), recorded=True) for rel in outputs},
            metrics=metrics or {},
        )
        self.location(key).write_json(cp.to_json())
        return cp

    def invalidate(self, key: str) -> None:
        self.location(key).remove()
