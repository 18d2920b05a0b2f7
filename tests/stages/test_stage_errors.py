"""Bad input makes a stage fail with a classified reason and a clear message, and nothing written is lost."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from mousflow.stages.runner import exit_code, run_stage
from mousflow.storage.location import Location
from mousflow.storage.zarr_io import finalize_processing_set


def _status(manifest: Path, stage: str) -> dict:
    out = yaml.safe_load(manifest.read_text())["spec"]["output"]["uri"]
    return json.loads((Path(out) / "status" / f"{stage}.json").read_text())


def test_missing_execution_block(make_run, tmp_path):
    eb = [{"uid": "uid://A002/X99/X1", "uri": str(tmp_path / "nowhere.ps.zarr")}]
    manifest = make_run(executionBlocks=eb)
    outcome = run_stage("calibration", str(manifest))
    assert (outcome.state, outcome.reason) == ("Failed", "InputMissing")
    assert "nowhere.ps.zarr does not exist" in outcome.message
    assert exit_code(outcome) == 3
    assert _status(manifest, "calibration")["reason"] == "InputMissing"


def test_execution_block_that_is_not_msv4(make_run, tmp_path):
    bogus = tmp_path / "bogus.ps.zarr"
    bogus.mkdir()
    (bogus / "README").write_text("not a processing set")
    manifest = make_run(executionBlocks=[{"uid": "uid://A002/X99/X1", "uri": str(bogus)}])
    outcome = run_stage("calibration", str(manifest))
    assert (outcome.state, outcome.reason) == ("Failed", "InvalidInput")
    assert "bogus.ps.zarr" in outcome.message


def test_corrupted_chunk_is_invalid_input(make_run, tmp_path):
    manifest = make_run(copy_data=True)
    chunks = sorted((tmp_path / "eb").rglob("VISIBILITY/c/*/*/*/*"))
    assert chunks, "expected chunk files"
    for c in chunks:
        c.write_bytes(b"garbage")
    outcome = run_stage("calibration", str(manifest))
    assert (outcome.state, outcome.reason) == ("Failed", "InvalidInput")
    assert "VISIBILITY/c/0/0/0/0 does not match the checksum recorded when it was written" in outcome.message
    # Without recorded checksums (data written by other software) the chunk is found when it is read.
    next((tmp_path / "eb").iterdir()).joinpath("mousflow-checksums.json").unlink()
    outcome = run_stage("calibration", str(manifest))
    assert (outcome.state, outcome.reason) == ("Failed", "InvalidInput")
    assert "a chunk is missing or corrupted" in outcome.message


def test_no_calibrator_scans(make_run, tmp_path):
    manifest = make_run(copy_data=True)
    ps = next((tmp_path / "eb").iterdir())
    for node in ps.iterdir():
        if node.is_dir() and "CDFS_field" not in node.name:
            shutil.rmtree(node)
    (ps / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group",
                                              "attributes": {"type": "processing_set"}}))
    finalize_processing_set(Location.of(ps))
    outcome = run_stage("calibration", str(manifest))
    assert (outcome.state, outcome.reason) == ("Failed", "InvalidInput")
    assert "no CALIBRATE_BANDPASS scans" in outcome.message


def test_nonpositive_sensitivity_is_rejected(make_run):
    manifest = make_run()
    doc = yaml.safe_load(manifest.read_text())
    doc["spec"]["scienceGoals"][0]["sensitivityJy"] = 0
    manifest.write_text(yaml.safe_dump(doc))
    outcome = run_stage("calibration", str(manifest))
    assert (outcome.state, outcome.reason) == ("Failed", "InvalidInput")
    assert "sensitivityJy" in outcome.message


def test_a_failure_leaves_written_checkpoints_intact(make_run, tmp_path):
    manifest = make_run()
    assert run_stage("calibration", str(manifest)).state == "Succeeded"
    checkpoint = tmp_path / "output" / "checkpoints" / "calibration.json"
    before = checkpoint.read_bytes()
    doc = yaml.safe_load(manifest.read_text())
    doc["spec"]["executionBlocks"][0]["uri"] = str(tmp_path / "gone.ps.zarr")
    manifest.write_text(yaml.safe_dump(doc))
    assert run_stage("calibration", str(manifest)).reason == "InputMissing"
    assert checkpoint.read_bytes() == before


def test_imaging_without_calibration_checkpoint(make_run):
    outcome = run_stage("imaging", str(make_run()))
    assert (outcome.state, outcome.reason) == ("Failed", "InputMissing")
    assert "run calibration first" in outcome.message


def test_the_test_only_failure_fails_the_named_stage_once(make_run, monkeypatch):
    """MOUSFLOW_TEST_FAIL_STAGE (test only) makes that stage fail once with its classified failure, so the
    cluster tests can show a person's retry resuming there; other stages, and the next run, go on as usual."""
    manifest = make_run()
    monkeypatch.setenv("MOUSFLOW_TEST_FAIL_STAGE", "packaging")
    assert run_stage("imaging", str(manifest)).reason == "InputMissing"  # not the named stage: as usual
    first = run_stage("packaging", str(manifest))
    assert (first.state, first.reason) == ("Failed", "InvalidInput") and "test only" in first.message
    assert _status(manifest, "packaging")["reason"] == "InvalidInput"
    assert run_stage("packaging", str(manifest)).reason == "InputMissing"  # once: now it runs, and finds no input
    monkeypatch.setenv("MOUSFLOW_TEST_FAIL_STAGE", "")
    assert run_stage("packaging", str(make_run())).reason == "InputMissing"
