"""The error classes stages raise, so callers (the CLI, the flow, the operator) can classify failures.

Each class has a stable `reason` that the operator puts into the MOUS status; the message says what to fix.
"""

from __future__ import annotations


class MousflowError(Exception):
    reason = "Error"


class InputMissing(MousflowError):
    reason = "InputMissing"


class InvalidInput(MousflowError):
    reason = "InvalidInput"


class CalibrationFailed(MousflowError, ValueError):
    """Calibration cannot proceed: no unflagged data on a calibrator, too few antennas, a solver that did not
    converge, an inconsistent table. The message says which and where."""

    reason = "CalibrationFailed"


class ImagingFailed(MousflowError):
    reason = "ImagingFailed"


class OutOfMemory(MousflowError):
    """The work did not fit in the memory it was given: a Dask worker died running the same chunk every time it
    was tried. Not a fault of the data or the science: the launcher runs the stage again with more memory."""

    reason = "OutOfMemory"


def describe_error(exc: BaseException) -> str:
    """One line: the first line of the message, prefixed by the error's reason when it has one."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, FileNotFoundError) and exc.filename:
        text = f"no such file or directory: {exc.filename}"
    reason = getattr(exc, "reason", None)
    return f"{reason}: {text}" if reason and reason != "Error" else text
