"""The one exception the calibration kernels raise for unusable input or a failed solve.

It is mousflow.errors.CalibrationFailed itself, so the stage and the operator classify it without translation.
"""

from mousflow.errors import CalibrationFailed

__all__ = ["CalibrationFailed"]
