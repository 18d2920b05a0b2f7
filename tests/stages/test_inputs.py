"""The input checks shared by validate, run, the operator and calibration (more cases in tests/cli's table)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from mousflow.errors import InvalidInput
from mousflow.model import load_manifest
from mousflow.stages.inputs import check_inputs, verified_meanwhile


def _spec(path: Path):
    return load_manifest(path.read_text()).spec


def test_a_good_mous_passes_and_is_verified(make_run):
    (block,) = check_inputs(_spec(make_run()), verify=True)
    assert block.verified and block.infos and len(block.digest) == 64


def test_verification_reads_the_data_the_quick_check_does_not(make_run, tmp_path):
    spec = _spec(make_run(copy_data=True))
    chunk = next((tmp_path / "eb").rglob("*CDFS_field/VISIBILITY/c/0/0/0/0"))
    chunk.write_bytes(np.random.default_rng(1).bytes(chunk.stat().st_size))
    (quick,) = check_inputs(spec, verify=False)  # what run and the operator check: the digest recorded
    assert not quick.verified
    with pytest.raises(InvalidInput, match="VISIBILITY/c/0/0/0/0 does not match the checksum"):
        check_inputs(spec, verify=True)


def test_verification_runs_beside_the_work_and_ends_it_on_damage(make_run, tmp_path, monkeypatch):
    """verified_meanwhile (calibration's reading of its inputs): the checksums are verified on a thread while the
    block runs (the verifier here waits for the work to have started: verifying first would fail), the block
    ends with DamagedData when data are damaged, also when the work failed first on them, and the work's own
    failure passes through on intact data."""
    import threading

    from mousflow.stages import inputs

    spec = _spec(make_run(copy_data=True))
    working = threading.Event()
    real = inputs.verify_checksums

    def verify(loc, what=""):
        if not working.wait(30):
            raise AssertionError("the verification ran before the work, not beside it")
        return real(loc, what)

    monkeypatch.setattr(inputs, "verify_checksums", verify)
    with verified_meanwhile(spec):
        working.set()
    with pytest.raises(ValueError, match="the work's own"), verified_meanwhile(spec):
        raise ValueError("the work's own failure")

    chunk = next((tmp_path / "eb").rglob("*CDFS_field/VISIBILITY/c/0/0/0/0"))
    chunk.write_bytes(np.random.default_rng(1).bytes(chunk.stat().st_size))
    with pytest.raises(InvalidInput, match="VISIBILITY/c/0/0/0/0 does not match the checksum"), \
            verified_meanwhile(spec):
        pass
    with pytest.raises(InvalidInput, match="VISIBILITY/c/0/0/0/0 does not match the checksum") as info, \
            verified_meanwhile(spec):
        raise ValueError("a chunk that does not decode")
    assert isinstance(info.value.__cause__, ValueError)


def test_the_same_data_twice_is_refused_by_its_recorded_digest(make_run, tmp_path):
    manifest = make_run(copy_data=True)
    doc = yaml.safe_load(manifest.read_text())
    first = Path(doc["spec"]["executionBlocks"][0]["uri"])
    shutil.copytree(first, tmp_path / "copy.ps.zarr")
    doc["spec"]["executionBlocks"].append({"uid": "uid://A002/X1001a/X7", "uri": str(tmp_path / "copy.ps.zarr")})
    manifest.write_text(yaml.safe_dump(doc))
    with pytest.raises(InvalidInput, match="uid://A002/X1001a/X1 and uid://A002/X1001a/X7 hold the same data"):
        check_inputs(_spec(manifest), verify=False)


def test_an_output_reached_through_a_link_is_still_the_input(make_run, tmp_path):
    manifest = make_run()
    doc = yaml.safe_load(manifest.read_text())
    os.symlink(doc["spec"]["executionBlocks"][0]["uri"], tmp_path / "link")
    doc["spec"]["output"]["uri"] = str(tmp_path / "link" / "output")
    manifest.write_text(yaml.safe_dump(doc))
    with pytest.raises(InvalidInput, match=r"spec.output.uri: .* is inside spec.executionBlocks"):
        check_inputs(_spec(manifest), verify=False)


def test_execution_blocks_at_different_pointings_are_refused():
    from mousflow.stages.inputs import pointing_across_blocks

    a, b = (1.0, -0.4), (1.0, -0.4 + np.radians(30 / 3600))
    assert pointing_across_blocks([("uid://A/X/1", [("T_0", a)]), ("uid://A/X/2", [("T_3", a)])]) is None
    why = pointing_across_blocks([("uid://A/X/1", [("T_0", a)]), ("uid://A/X/2", [("T_0", b)])])
    assert why.startswith("the execution blocks do not observe one pointing: the science target is observed at 2 "
                          "pointings up to 30.0 arcsec apart: T_0 of uid://A/X/1"), why
