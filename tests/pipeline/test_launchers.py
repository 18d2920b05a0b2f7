"""Before a stage is launched: a completed stage (valid checkpoint) starts nothing and is reported Skipped."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from mousflow.pipeline.launchers import launch_unless_complete
from mousflow.stages.context import StageOutcome
from mousflow.stages.runner import run_stage
from mousflow.storage.location import Location


class RecordingLauncher:
    """Starts nothing: records which stages it was asked to start."""

    def __init__(self):
        self.launched: list[str] = []

    def launch(self, stage, manifest_uri, run_root, on_line) -> StageOutcome:
        self.launched.append(stage)
        return StageOutcome(stage, "Succeeded")


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, tiny_mous) -> tuple[Path, Path]:
    """The tiny MOUS with calibration run (its checkpoint valid), imaging and packaging not."""
    root = tmp_path_factory.mktemp("calibrated")
    doc = yaml.safe_load(Path(tiny_mous.manifest.path).read_text())
    doc["spec"]["output"] = {"uri": str(root / "output")}
    manifest = root / "mous.yaml"
    manifest.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert run_stage("calibration", str(manifest)).state == "Succeeded"
    return manifest, root / "output"


def test_a_completed_stage_starts_nothing_and_is_reported_skipped(calibrated):
    manifest, output = calibrated
    launcher, lines = RecordingLauncher(), []
    for stage in ("calibration", "imaging"):
        launch_unless_complete(launcher, stage, str(manifest), Location.of(str(output)), lines.append)
    assert launcher.launched == ["imaging"]
    status = json.loads((output / "status" / "calibration.json").read_text())
    assert status["state"] == "Skipped" and "not started" in status["message"]
    assert any("calibration: valid checkpoint" in line for line in lines)


def test_a_stage_whose_checkpoint_no_longer_holds_is_launched(calibrated, tmp_path):
    """The stage's own test decides: an output changed since its checkpoint means work to do."""
    manifest, output = calibrated
    changed = tmp_path / "output"
    shutil.copytree(output, changed)
    doc = yaml.safe_load(manifest.read_text())
    doc["spec"]["output"] = {"uri": str(changed)}
    copy = tmp_path / "mous.yaml"
    copy.write_text(yaml.safe_dump(doc, sort_keys=False))
    (changed / "calibration" / "summary.json").write_text("{}")
    launcher = RecordingLauncher()
    launch_unless_complete(launcher, "calibration", str(copy), Location.of(str(changed)), lambda _line: None)
    # a stage that cannot tell (imaging without a calibration checkpoint) is launched, to report why itself
    (changed / "checkpoints" / "calibration.json").unlink()
    launch_unless_complete(launcher, "imaging", str(copy), Location.of(str(changed)), lambda _line: None)
    assert launcher.launched == ["calibration", "imaging"]
