"""Fixtures of the storage tests."""

from __future__ import annotations

import uuid

import pytest

from mousflow.storage.location import Location


@pytest.fixture(params=["local", "fsspec"])
def where(request, tmp_path):
    """A directory on the local disk, or one of fsspec's in-memory filesystem (the code path of s3://)."""
    if request.param == "local":
        yield Location.of(tmp_path)
        return
    loc = Location.of(f"memory://mousflow-test-{uuid.uuid4().hex[:8]}")
    yield loc
    loc.fs.rm(loc.path, recursive=True)
