"""A stage's code version hashes the sources it runs: its module and every mousflow module it imports."""

from __future__ import annotations

import shutil

from mousflow.stages.versioning import PACKAGE_ROOT, sources_hash, stage_sources


def _relative(stage: str, root=PACKAGE_ROOT) -> set[str]:
    return {str(p.relative_to(root)) for p in stage_sources(stage, root)}


def test_each_stage_hashes_the_modules_it_imports_and_not_the_other_stages_kernels():
    calibration, imaging, packaging = (_relative(s) for s in ("calibration", "imaging", "packaging"))
    # what a hand-kept list had missed: the input checks, and the reader of the imaging workers
    assert {"stages/calibration.py", "stages/inputs.py", "science/calibration/stefcal.py",
            "storage/partitions.py", "errors.py", "__init__.py"} <= calibration
    assert {"stages/imaging.py", "stages/imaging_chunks.py", "storage/stored_rows.py",
            "science/imaging/gridding.py", "science/imaging/clean.py"} <= imaging
    assert {"stages/packaging.py", "stages/weblog.py", "science/qa/qa2.py"} <= packaging
    assert not any(f.startswith("science/imaging") for f in calibration)
    assert not any(f.startswith("science/calibration") for f in imaging | packaging)
    assert not any(f.startswith(("operator", "flows/", "pipeline/")) for f in calibration | imaging | packaging)


def test_an_edited_kernel_changes_its_stages_version_only(tmp_path):
    root = tmp_path / "mousflow"
    shutil.copytree(PACKAGE_ROOT, root, ignore=shutil.ignore_patterns("__pycache__"))
    before = {s: sources_hash(stage_sources(s, root), root) for s in ("calibration", "imaging", "packaging")}
    gains = root / "science" / "calibration" / "gains.py"
    gains.write_text(gains.read_text() + "\n# edited\n")
    after = {s: sources_hash(stage_sources(s, root), root) for s in before}
    assert after["calibration"] != before["calibration"]
    assert after["imaging"] == before["imaging"] and after["packaging"] == before["packaging"]


def test_relative_and_function_level_imports_are_followed(tmp_path):
    """A module imported inside a function (as the stages import heavy ones where they are needed), by a
    relative import, or as a name of its package (`from mousflow.science import kernel`) is hashed too."""
    root = tmp_path / "mousflow"
    for rel, text in {
        "__init__.py": "",
        "stages/__init__.py": "",
        "stages/calibration.py": "def run():\n    from ..science import kernel\n    from . import helper\n",
        "stages/helper.py": "import numpy\nfrom mousflow.science.deep import core\n",
        "science/__init__.py": "",
        "science/kernel.py": "",
        "science/deep/__init__.py": "",
        "science/deep/core.py": "",
        "science/unused.py": "",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    assert _relative("calibration", root) == {
        "__init__.py", "stages/__init__.py", "stages/calibration.py", "stages/helper.py", "science/__init__.py",
        "science/kernel.py", "science/deep/__init__.py", "science/deep/core.py"}
