"""Code versions for checkpoints: the package version plus a hash of the source files a stage runs.

Hashing the source (not only trusting a version number) means an edited kernel invalidates the checkpoints
it produced even in a development tree where nobody bumped the version. The files are the stage module and
every mousflow module it imports, directly or through others (read from their `import` statements, those
inside functions included): a list kept by hand missed modules a stage came to import (the input checks, the
stored-rows reader of the imaging workers).
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

import mousflow

PACKAGE_ROOT = Path(mousflow.__file__).parent
STAGE_MODULES = {stage: f"mousflow.stages.{stage}" for stage in ("calibration", "imaging", "packaging")}


def module_file(module: str, root: Path = PACKAGE_ROOT) -> Path | None:
    """The source file of a mousflow module under `root` (a package's __init__.py); None outside mousflow."""
    top, *rest = module.split(".")
    if top != "mousflow":
        return None
    base = root.joinpath(*rest)
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(path: Path, module: str) -> set[str]:
    """The modules `path` (module `module`) imports, and the packages holding them (whose __init__ runs
    first); `from package import name` counts package.name too, as name may be a submodule."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    with_parents = set()
    for name in found:
        parts = name.split(".")
        with_parents.update(".".join(parts[:k]) for k in range(1, len(parts) + 1))
    return with_parents


def stage_sources(stage: str, root: Path = PACKAGE_ROOT) -> list[Path]:
    """The source files of `stage`'s module and of every mousflow module it imports, transitively, sorted."""
    seen: dict[str, Path] = {}
    pending = [STAGE_MODULES[stage], "mousflow"]
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        path = module_file(module, root)
        if path is None:
            continue
        seen[module] = path
        pending.extend(_imported_modules(path, module) - seen.keys())
    return sorted(set(seen.values()))


def sources_hash(files: list[Path], root: Path = PACKAGE_ROOT) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


@cache
def code_version(stage: str) -> str:
    return f"{mousflow.__version__}+{sources_hash(stage_sources(stage))}"
