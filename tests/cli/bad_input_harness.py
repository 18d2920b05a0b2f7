"""The bad-input table's harness (its fixtures are in conftest.py): a workspace with a copy of the session's
tiny MOUS, ways to damage it, and a runner that runs one `mousflow` command (in this process, or as a real
process) and reports what a user sees.

Layout of a workspace (one per row):

    in/   the inputs: execution blocks (copied on first use), manifests, other files a row makes
    out/  where runs write (output and delivery locations)

Every row hashes `in/` before and after its command: bad input must never change the inputs.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

from mousflow.storage.location import Location
from mousflow.storage.zarr_io import finalize_processing_set

REPO = Path(__file__).resolve().parents[2]
TARGET = "spw0_CDFS_field"


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    warnings: list[str] = field(default_factory=list)

    @property
    def error_lines(self) -> list[str]:
        """What the user sees on stderr: its non-empty lines, and the warnings Python would have printed."""
        return [line for line in self.stderr.splitlines() if line.strip()] + self.warnings


def tree_fingerprint(root: Path) -> dict[str, str]:
    """Relative path -> sha256 (regular files) or file type (anything else, never opened) under `root`."""
    found = {}
    if not root.exists():
        return found
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                found[rel] = "link:" + os.readlink(path)
            else:
                found[rel] = f"type:{stat.S_IFMT(st.st_mode):o}"
    return found


class Workspace:
    def __init__(self, root: Path, tiny_mous, monkeypatch: pytest.MonkeyPatch):
        self.root = root
        self.inp = root / "in"
        self.out = root / "out"
        self.inp.mkdir()
        self.out.mkdir()
        self._tiny = tiny_mous
        self._doc = yaml.safe_load(Path(tiny_mous.manifest.path).read_text())
        self.monkeypatch = monkeypatch
        self.subprocess = False
        self.timeout = 120.0

    # --- inputs ----------------------------------------------------------------------------------------------

    def eb(self, name: str = "eb.ps.zarr") -> Path:
        """A copy of the tiny MOUS's execution block under in/ (made on first use)."""
        path = self.inp / name
        if not path.exists():
            source = Path(self._doc["spec"]["executionBlocks"][0]["uri"])
            shutil.copytree(source, path)
        return path

    def doc(self) -> dict:
        """The tiny MOUS's manifest, reading the execution block copy and writing under out/."""
        doc = json.loads(json.dumps(self._doc))
        doc["spec"]["executionBlocks"][0]["uri"] = str(self.eb())
        doc["spec"]["output"] = {"uri": str(self.out / "output")}
        doc["spec"]["delivery"] = {"uri": str(self.out / "delivered")}
        return doc

    def manifest(self, edit: Callable[[dict], object] | None = None, name: str = "mous.yaml") -> str:
        """Write a manifest (the tiny one, changed by `edit`) under in/; its path."""
        doc = self.doc()
        if edit is not None:
            edit(doc)
        path = self.inp / name
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return str(path)

    def file(self, name: str, content: bytes | str) -> str:
        path = self.inp / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return str(path)

    def fifo(self, name: str) -> str:
        path = self.inp / name
        os.mkfifo(path)
        return str(path)

    def env(self, **values: str) -> None:
        for key, value in values.items():
            self.monkeypatch.setenv(key, value)

    # --- damage ----------------------------------------------------------------------------------------------

    def chunk(self, var: str, partition: str = TARGET) -> Path:
        """The first chunk file of `var` in a partition of the execution block copy."""
        node = next(p for p in self.eb().iterdir() if p.name.endswith(partition))
        return sorted((node / var / "c").rglob("*"), key=lambda p: (not p.is_file(), str(p)))[0]

    def random_bytes(self, path: Path) -> None:
        """Overwrite a file with random bytes of the same size (what a failing disk or a careless copy does)."""
        path.write_bytes(np.random.default_rng(7).bytes(path.stat().st_size))

    def rewrite(self, edit: Callable[[zarr.Group, str], None]) -> None:
        """Change the execution block consistently, as a writer would (arrays through zarr, then the metadata
        consolidated and the checksums recorded again): for data that is valid but bad."""
        group = zarr.open_group(str(self.eb()), mode="r+")
        for name in sorted(group.group_keys()):
            edit(group[name], name)
        finalize_processing_set(Location.of(str(self.eb())))

    def remove_partitions(self, keep: Callable[[str], bool]) -> None:
        for node in self.eb().iterdir():
            if node.is_dir() and not keep(node.name):
                shutil.rmtree(node)
        (self.eb() / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group",
                                                         "attributes": {"type": "processing_set"}}))
        finalize_processing_set(Location.of(str(self.eb())))


def run_mousflow(ws: Workspace, argv: list[str], capfd) -> Outcome:
    """Run `mousflow ARGV` as a user would and collect what they see. In this process by default (the
    imports are paid once); as a real process when the row asks for one (signals, named pipes: a hang would
    otherwise hang the test session)."""
    if ws.subprocess:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "flows"), str(REPO / "operator")])}
        try:
            proc = subprocess.run([sys.executable, "-m", "mousflow.cli", *argv], capture_output=True, text=True,
                                  env=env, timeout=ws.timeout, cwd=ws.root)
        except subprocess.TimeoutExpired:
            pytest.fail(f"mousflow {' '.join(argv)} did not end within {ws.timeout:.0f} s", pytrace=False)
        return Outcome(proc.returncode, proc.stdout, proc.stderr)
    from mousflow.cli import main

    capfd.readouterr()
    sigterm = signal.getsignal(signal.SIGTERM)  # `mousflow stage` installs its own handler
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        try:
            code = main(argv)
        except SystemExit as exc:  # --help, --version
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            signal.signal(signal.SIGTERM, sigterm)
    out, err = capfd.readouterr()
    # What Python would print for these on a terminal; DeprecationWarnings only show in __main__ itself.
    shown = [f"{w.category.__name__}: {w.message}" for w in caught
             if not issubclass(w.category, DeprecationWarning | PendingDeprecationWarning)]
    return Outcome(code, out, err, shown)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def full_disk(root: Path, size: str = "2m"):
    """A directory on a file system that fills up after `size`: a tmpfs when this process may mount one (root),
    otherwise this process's writes under it fail with ENOSPC (the two places mousflow writes files)."""
    mount = root / "full-disk"
    mount.mkdir()
    mounted = False
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                                 capture_output=True).returncode == 0
    if mounted:
        try:
            yield mount
        finally:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)
        return
    with pytest.MonkeyPatch.context() as mp:
        _fail_writes_under(mp, mount)
        yield mount


def _fail_writes_under(mp: pytest.MonkeyPatch, root: Path) -> None:
    from zarr.storage import LocalStore

    def enospc(path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    original_write, original_set = Location.write_bytes, LocalStore.set

    def write_bytes(self, data):
        if self.is_local and Path(self.path).is_relative_to(root):
            enospc(self.path)
        return original_write(self, data)

    async def store_set(self, key, value):
        if Path(self.root).is_relative_to(root):
            enospc(Path(self.root) / key)
        return await original_set(self, key, value)

    mp.setattr(Location, "write_bytes", write_bytes)
    mp.setattr(LocalStore, "set", store_set)
