"""Checks of a MOUS before processing: the spec's semantics, and its execution blocks in storage.

A spec problem leaves the MOUS where it is with a Degraded condition (a person must fix the spec); an
execution block that is absent or not a processing set ends the MOUS Failed with reason InputMissing, once,
without retries; storage that cannot be reached at all is a Degraded condition too (it may come back).
"""

from __future__ import annotations

from dataclasses import dataclass

from mousflow.model import MOUSSpec, check_spec_semantics
from mousflow.storage.location import Location
from mousflow.storage.partitions import InvalidProcessingSet, open_checked


def spec_problems(spec: MOUSSpec) -> tuple[str, ...]:
    return tuple(str(p) for p in check_spec_semantics(spec))


@dataclass(frozen=True)
class InputCheck:
    state: str
    """"ok", "missing" (Failed) or "unreadable" (Degraded, checked again later)."""
    message: str = ""


def check_execution_blocks(spec: MOUSSpec) -> InputCheck:
    missing, unreadable = [], []
    for eb in spec.execution_blocks:
        loc = Location.of(eb.uri)
        try:
            open_checked(loc)
        except InvalidProcessingSet as exc:
            missing.append(f"execution block {eb.uid}: {exc}")
        except (PermissionError, OSError) as exc:
            unreadable.append(f"execution block {eb.uid}: cannot read {eb.uri}: {exc}")
    if unreadable:
        return InputCheck("unreadable", "; ".join(unreadable))
    if missing:
        return InputCheck("missing", "; ".join(missing))
    return InputCheck("ok", f"{len(spec.execution_blocks)} execution blocks present and valid")
