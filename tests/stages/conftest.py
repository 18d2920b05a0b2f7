"""Helpers to run stages on a copy of the session's tiny MOUS with its own output location."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml


@pytest.fixture
def make_run(tmp_path, tiny_mous):
    """make_run(**spec_overrides) -> manifest path: the tiny MOUS (data copied) with output under tmp_path."""

    def make(copy_data: bool = False, **overrides) -> Path:
        doc = yaml.safe_load(Path(tiny_mous.manifest.path).read_text())
        if copy_data:
            src = Path(tiny_mous.out.path) / "eb"
            shutil.copytree(src, tmp_path / "eb")
            for eb in doc["spec"]["executionBlocks"]:
                eb["uri"] = str(tmp_path / "eb" / Path(eb["uri"]).name)
        doc["spec"]["output"] = {"uri": str(tmp_path / "output")}
        for key, value in overrides.items():
            doc["spec"][key] = value
        path = tmp_path / "mous.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    return make
