"""Code versions for checkpoints: the package version plus a hash of the source files a stage runs.

Hashing the source (not only trusting a version number) means an edited kernel invalidates the checkpoints
it produced even in a development tree where nobody bumped the version.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

import mousflow

PACKAGE_ROOT = Path(mousflow.__file__).parent
COMMON_SOURCES = ("errors.py", "model", "telescope", "storage", "science/__init__.py", "science/conventions.py",
                  "science/geometry.py", "stages/context.py")
STAGE_SOURCES = {
    "calibration": ("science/calibration", "stages/calibration.py"),
    "imaging": ("science/imaging", "stages/imaging.py", "stages/imaging_chunks.py", "stages/image_store.py"),
    "packaging": ("science/qa", "stages/packaging.py", "stages/weblog.py", "stages/image_store.py"),
}


@cache
def code_version(stage: str) -> str:
    h = hashlib.sha256()
    for rel in (*COMMON_SOURCES, *STAGE_SOURCES[stage]):
        path = PACKAGE_ROOT / rel
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.exists() else []
        for f in files:
            h.update(str(f.relative_to(PACKAGE_ROOT)).encode())
            h.update(f.read_bytes())
    return f"{mousflow.__version__}+{h.hexdigest()[:12]}"
