"""The import's own error: bad input (not a Measurement Set, nothing to image, a failed conversion)."""

from mousflow.errors import InputMissing, InvalidInput


class ImportFailed(InvalidInput):
    """A Measurement Set that cannot become an execution block of a MOUS; the message says which and why."""


class MeasurementSetMissing(InputMissing):
    """No Measurement Set where one was named."""
