"""The operator's input check: ok, missing (Failed InputMissing), invalid (Failed InvalidInput) or unreadable
(Degraded, checked again later), from the same checks `mousflow run` makes."""

from __future__ import annotations

import copy
import json
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


def test_the_operator_checks_inputs_without_loading_the_science_libraries(spec_doc, tmp_path):
    """xarray (with pandas, dask, scipy and xradio) and astropy are about 200 MB of the operator's memory at
    import (issue 16): the operator checks a MOUS's execution blocks from their metadata with zarr alone, and
    reads the bands without astropy. A check that passes and one that fails both load none of them."""
    import subprocess
    import sys

    bad = copy.deepcopy(spec_doc)
    bad["band"] = 7  # the tiny MOUS observes in band 3
    code = ("import json, sys\n"
            "import mousflow_operator.handlers, mousflow_operator.campaign\n"
            "from mousflow.model import MOUSSpec\n"
            "from mousflow_operator.inputs import check_execution_blocks\n"
            f"docs = json.loads({json.dumps(json.dumps([spec_doc, bad]))})\n"
            "print(json.dumps([check_execution_blocks(MOUSSpec.model_validate(d)).state for d in docs]))\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'xarray', 'pandas', 'dask', 'scipy',"
            " 'xradio', 'astropy', 'prefect'})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    states, loaded = map(json.loads, out.stdout.strip().splitlines()[-2:])
    assert states == ["ok", "invalid"], out.stdout
    assert loaded == [], out.stdout
