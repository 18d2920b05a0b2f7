"""Loading a manifest: text is text (never a path it happens to name), files are regular files of UTF-8 YAML
of bounded size, and every refusal is one line naming the problem."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mousflow.model import load_manifest, load_manifest_file
from mousflow.model.resource import MAX_MANIFEST_BYTES, ManifestError, ManifestMissing

VALID = Path(__file__).parent / "manifests" / "valid-minimal.yaml"


def test_text_naming_a_file_is_not_that_file(tmp_path):
    pointer = tmp_path / "pointer.yaml"
    pointer.write_text(f"{VALID}\n")
    with pytest.raises(ManifestError, match="must be a YAML mapping, this is a YAML str"):
        load_manifest(str(VALID))
    with pytest.raises(ManifestError, match=r"pointer.yaml: a MOUS manifest must be a YAML mapping"):
        load_manifest_file(pointer)
    assert load_manifest_file(VALID).spec.uid == "uid://A001/X1296/X133"


@pytest.mark.parametrize("content,words", [
    (b"", "this is empty"),
    (b"kind: MOUS\nspec: \xff\n", r"not UTF-8 text \(byte 0xff at offset 17\)"),
    (b"spec: [1, 2\n", "not YAML: .* \\(line 2, column 1\\)"),
    (b"a: &x [1, 2]\nb: *x\n", "YAML aliases"),
    (b"[" * 100_000, r"100,000 '\[' and '\{' \(flow collections\)"),
    (b"[" * 900 + b"]" * 900, "nested too deeply"),
    (b"#" * (MAX_MANIFEST_BYTES + 1), "at most 1,048,576"),
])
def test_files_that_are_not_manifests(tmp_path, content, words):
    path = tmp_path / "m.yaml"
    path.write_bytes(content)
    with pytest.raises(ManifestError, match=words) as info:
        load_manifest_file(path)
    assert "\n" not in str(info.value)


def test_what_is_not_a_file(tmp_path):
    with pytest.raises(ManifestMissing, match="no such manifest file"):
        load_manifest_file(tmp_path / "nope.yaml")
    with pytest.raises(ManifestError, match="a directory"):
        load_manifest_file(tmp_path)
    os.mkfifo(tmp_path / "pipe.yaml")
    with pytest.raises(ManifestError, match="not a regular file"):
        load_manifest_file(tmp_path / "pipe.yaml")  # refused by its type: opening it would block
