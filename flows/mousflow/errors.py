"""The error classes stages raise, so callers (the CLI, the flow, the operator) can classify failures.

Each class has a stable `reason` that the operator puts into the MOUS status and an exit code the CLI ends
with; the message says what to fix. Every command prints one line for a failure, `mousflow: error: <reason>:
<message>`, and exits with its reason's code:

    1  Error              something unexpected (a bug, or a failure nothing classified)
    2  Usage              a bad command line (unknown command, missing or malformed argument)
    3  InputMissing       a manifest or execution block that does not exist
    4  InvalidInput       a manifest, option or data set that is there but wrong or damaged
    5  CalibrationFailed  calibration ran and could not succeed
    6  ImagingFailed      imaging ran and could not succeed
    7  Unavailable        storage or the Kubernetes API cannot be used now (unreachable, full, read-only)
    8  Busy               another run holds the output location
    9  OutOfMemory        the work did not fit in the memory it was given
   10  AccessDenied       the storage refused these credentials this location (missing, wrong, or not allowed)
"""

from __future__ import annotations

import errno


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


class Unavailable(MousflowError):
    """A service the command needs cannot be used now: an object store or Kubernetes API that cannot be
    reached or refuses the credentials, a disk that is full or read-only. Trying again later may work."""

    reason = "Unavailable"


class AccessDenied(MousflowError):
    """The storage refused the request: no credentials, credentials it does not know, or credentials not
    allowed this location (an S3 policy that keeps a namespace to its own prefix). Waiting does not fix it: a
    person gives the right credentials or the right location."""

    reason = "AccessDenied"


class Busy(MousflowError):
    """Another run holds the lock of the output location."""

    reason = "Busy"


EXIT_CODES = {"Error": 1, "Usage": 2, "InputMissing": 3, "InvalidInput": 4, "CalibrationFailed": 5,
              "ImagingFailed": 6, "Unavailable": 7, "Busy": 8,
              "OutOfMemory": 9, "AccessDenied": 10}

# OS errors that say the storage, not the input, is the problem.
_STORAGE_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                   errno.EROFS: "read-only file system", errno.EFBIG: "file too large for the file system"}


def exit_code_of(reason: str) -> int:
    return EXIT_CODES.get(reason, 1)


def classify(exc: BaseException) -> MousflowError:
    """The classified form of any exception a command ends with: MousflowErrors as they are; OS errors by what
    they mean (a missing file, a full disk, a refused connection); bad values as InvalidInput."""
    if isinstance(exc, MousflowError):
        return exc
    if isinstance(exc, FileNotFoundError):
        classified: MousflowError = InputMissing(f"no such file or directory: {exc.filename}" if exc.filename
                                                 else first_line(exc))
    elif isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS:
        where = f" writing {exc.filename}" if exc.filename else ""
        classified = Unavailable(f"{_STORAGE_ERRNOS[exc.errno]}{where}")
    elif isinstance(exc, PermissionError):
        classified = AccessDenied(f"permission denied{f': {exc.filename}' if exc.filename else ''}")
    elif isinstance(exc, ConnectionError | TimeoutError):
        classified = Unavailable(first_line(exc))
    elif _http_service_away(exc):
        classified = Unavailable(f"a service did not answer ({type(exc).__name__}: {first_line(exc)}): the "
                                 "Kubernetes API or the Prefect server restarting or unreachable")
    elif isinstance(exc, UnicodeDecodeError):
        classified = InvalidInput(f"not UTF-8 text ({exc.reason} at byte {exc.start})")
    elif isinstance(exc, ValueError):
        classified = InvalidInput(first_line(exc))
    else:
        return _Unclassified(f"{type(exc).__name__}: {first_line(exc)}")
    classified.__cause__ = exc
    return classified


def _http_service_away(exc: BaseException) -> bool:
    """An HTTP client's connection-level failure (httpx's TransportError: Prefect's client and kr8s, which
    dask-kubernetes uses for the Kubernetes API), or kr8s's server error for a 5xx answer (an API server
    restarting says "storage is (re)initializing"). Imported lazily: the CLI's light commands need neither."""
    try:
        import httpx
    except ImportError:  # pragma: no cover - a dependency of prefect
        return False
    if isinstance(exc, httpx.TransportError):
        return True
    status = getattr(getattr(exc, "response", None), "status_code", 0)
    return type(exc).__module__.startswith("kr8s") and isinstance(status, int) and status >= 500


class _Unclassified(MousflowError):
    """What `classify` makes of an exception nothing explains: reason Error, exit code 1."""


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def describe_error(exc: BaseException) -> str:
    """One line: the error's reason, then the first line of its message."""
    failure = classify(exc)
    return f"{failure.reason}: {first_line(failure)}"
