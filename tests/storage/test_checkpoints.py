"""Checkpoint manifests: valid only for the same inputs, the same code and untouched outputs."""

import json

from mousflow.storage.checkpoints import CheckpointStore, hash_inputs
from mousflow.storage.integrity import content_digest
from mousflow.storage.location import Location


def _run_root(tmp_path):
    root = Location.of(tmp_path / "run")
    root.join("stage", "out.bin").write_bytes(b"result")
    root.join("stage", "table.zarr", "c", "0").write_bytes(b"chunk0")
    root.join("stage", "table.zarr", "zarr.json").write_text("{}")
    return root


def test_valid_after_commit_and_reasons_when_not(tmp_path):
    root = _run_root(tmp_path)
    store = CheckpointStore(root)
    assert store.validate("stage", "in", "v1").reason == "no checkpoint"
    store.commit("stage", "uid://A001/X1/X1", "in", "v1", ["stage/out.bin", "stage/table.zarr"])
    assert store.validate("stage", "in", "v1")
    assert store.validate("stage", "other-inputs", "v1").reason == "inputs changed"
    assert store.validate("stage", "in", "v2").reason.startswith("code changed")
    root.join("stage", "table.zarr", "c", "0").write_bytes(b"chunk0-modified")
    assert store.validate("stage", "in", "v1").reason == "output stage/table.zarr changed"
    root.join("stage", "out.bin").remove()
    assert not store.validate("stage", "in", "v1")


def test_damaged_checkpoint_counts_as_none(tmp_path):
    root = _run_root(tmp_path)
    store = CheckpointStore(root)
    store.location("stage").write_text("{not json")
    assert store.read("stage") is None
    assert store.validate("stage", "in", "v1").reason == "no checkpoint"


def test_manifest_records_checksums_of_outputs(tmp_path):
    root = _run_root(tmp_path)
    cp = CheckpointStore(root).commit("stage", "uid://A001/X1/X1", "in", "v1", ["stage/out.bin"], {"n": 3})
    doc = json.loads(root.join("checkpoints", "stage.json").read_text())
    assert doc["outputs"] == {"stage/out.bin": content_digest(root.join("stage", "out.bin"))} == cp.outputs
    assert doc["metrics"] == {"n": 3}


def test_hash_inputs_is_order_independent_for_mappings_only():
    assert hash_inputs({"a": 1, "b": 2}) == hash_inputs({"b": 2, "a": 1})
    assert hash_inputs([1, 2]) != hash_inputs([2, 1])


def test_a_processing_set_is_committed_from_its_recorded_checksums_and_checked_from_its_bytes(tmp_path, monkeypatch):
    """A stage commits right after recording its processing set's checksums: the commit takes them from the
    record (not hashing GBs again); validation reads the objects, so a changed chunk invalidates."""
    from mousflow.storage import integrity

    root = _run_root(tmp_path)
    integrity.record_checksums(root.join("stage", "table.zarr"))
    store = CheckpointStore(root)
    hashed = []
    original = integrity.digest_of_object
    monkeypatch.setattr(integrity, "digest_of_object",
                        lambda loc, algorithm: hashed.append(loc.path) or original(loc, algorithm))
    store.commit("stage", "uid://A001/X1/X1", "in", "v1", ["stage/table.zarr"])
    assert hashed == []
    assert store.validate("stage", "in", "v1") and hashed  # read to check
    root.join("stage", "table.zarr", "c", "0").write_bytes(b"chunk0-modified")
    assert store.validate("stage", "in", "v1").reason == "output stage/table.zarr changed"
