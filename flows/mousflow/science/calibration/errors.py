"""The one exception the calibration kernels raise for unusable input or a failed solve."""


class CalibrationFailed(ValueError):
    """Calibration cannot proceed: no unflagged data on a calibrator, too few antennas, a solver that did not
    converge, an inconsistent table... The message says which and where, so the flow can report it as is."""
