"""What is not a processing set is refused by its layout before anything under it is opened or hashed."""

from __future__ import annotations

import json
import os

import pytest

from mousflow.errors import InvalidInput
from mousflow.storage.location import Location
from mousflow.storage.processing_set_metadata import InvalidProcessingSet, ProcessingSetMissing, check_layout


def _group(path, kind="processing_set", **extra):
    path.mkdir(parents=True, exist_ok=True)
    (path / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group",
                                                "attributes": {"type": kind}, **extra}))
    return path


def test_a_processing_set_passes(tmp_path):
    check_layout(Location.of(_group(tmp_path / "ps.zarr")))


@pytest.mark.parametrize("make,error,words", [
    (lambda p: None, ProcessingSetMissing, "does not exist"),
    (lambda p: os.mkfifo(p), InvalidProcessingSet, "it is a named pipe"),
    (lambda p: p.write_text("x"), InvalidProcessingSet, "it is a regular file"),
    (lambda p: p.mkdir(), InvalidProcessingSet, "a directory without zarr.json"),
    (lambda p: (p.mkdir(), (p / "zarr.json").write_text("{nope")), InvalidProcessingSet, "not valid JSON"),
    (lambda p: (p.mkdir(), os.mkfifo(p / "zarr.json")), InvalidInput, "zarr.json is a named pipe"),
    (lambda p: _group(p, "visibility"), InvalidProcessingSet, "a Zarr group of type 'visibility'"),
])
def test_what_is_not_a_processing_set(tmp_path, make, error, words):
    path = tmp_path / "eb.ps.zarr"
    make(path)
    with pytest.raises(error, match=words):
        check_layout(Location.of(path))
