"""Storage: one small layer over fsspec for locations (local paths or s3://), commit markers, MSv4 Zarr I/O."""

from mousflow.storage.location import (
    COMMIT_MARKER,
    Location,
    StorageError,
)

__all__ = ["COMMIT_MARKER", "Location", "StorageError"]
