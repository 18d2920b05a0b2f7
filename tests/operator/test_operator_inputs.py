"""The operator's input check: ok, missing (Failed InputMissing), invalid (Failed InvalidInput) or unreadable
(Degraded, checked again later), from the same checks `mousflow run` makes."""

from __future__ import annotations

import copy
import socket
from pathlib import Path

import pytest
import yaml

from mousflow.model import MOUSSpec
from mousflow_operator.inputs import check_execution_blocks


@pytest.fixture
def spec_doc(tiny_mous, tmp_path) -> dict:
    doc = yaml.safe_load(Path(tiny_mous.manifest.path).read_text())["spec"]
    doc["output"] = {"uri": str(tmp_path / "output")}
    doc.pop("delivery", None)
    return doc


def _check(doc: dict):
    return check_execution_blocks(MOUSSpec.model_validate(doc))


def test_states(spec_doc, tmp_path, monkeypatch):
    assert _check(spec_doc).state == "ok"
    missing = copy.deepcopy(spec_doc)
    missing["executionBlocks"][0]["uri"] = str(tmp_path / "gone.ps.zarr")
    assert (_check(missing).state, "gone.ps.zarr does not exist" in _check(missing).message) == ("missing", True)
    twice = copy.deepcopy(spec_doc)
    twice["executionBlocks"].append({**twice["executionBlocks"][0], "uid": "uid://A002/X1001a/X9"})
    assert (_check(twice).state, "hold the same data" in _check(twice).message) == ("invalid", True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MOUSFLOW_S3_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MOUSFLOW_S3_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    remote = copy.deepcopy(spec_doc)
    remote["executionBlocks"][0]["uri"] = "s3://mous-data/eb.ps.zarr"
    check = _check(remote)
    assert check.state == "unreadable" and "cannot reach the object store" in check.message
