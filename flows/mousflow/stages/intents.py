"""ALMA scan intents: which role a field's scans play in calibrating and imaging an execution block."""

from __future__ import annotations

ROLES = {
    "bandpass": "CALIBRATE_BANDPASS",
    "flux": "CALIBRATE_FLUX",
    "phase": "CALIBRATE_PHASE",
    "target": "OBSERVE_TARGET",
}


def has_role(intents: list[str], role: str) -> bool:
    """ALMA intents may be combined ('CALIBRATE_BANDPASS#ON_SOURCE,CALIBRATE_FLUX#ON_SOURCE')."""
    prefix = ROLES[role]
    return any(part.strip().startswith(prefix) for intent in intents for part in intent.split(","))
