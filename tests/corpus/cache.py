"""The corpus's Measurement Sets, made on demand by CASA's simulator and cached outside the repository.

Each case lives in `<cache>/<case>-<size>-<hash of its spec>/` (cache: $MOUSFLOW_CORPUS_CACHE, else
~/.cache/mousflow/corpus): a changed spec (or generator) gets a directory of its own, so a stale copy is never
used. A case is made in a staging directory and renamed into place, so an interrupted generation leaves
nothing that looks made.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from cases import Case

GENERATOR = Path(__file__).resolve().parent.parent / "ingest" / "casa_simulated_ms.py"


def cache_root() -> Path:
    return Path(os.environ.get("MOUSFLOW_CORPUS_CACHE") or Path.home() / ".cache" / "mousflow" / "corpus")


def spec_hash(c: Case) -> str:
    # The generator's source is part of the hash: a change to how the data are made makes new data.
    doc = json.dumps(c.execution_blocks, sort_keys=True).encode() + GENERATOR.read_bytes()
    return hashlib.sha256(doc).hexdigest()[:12]


def case_dir(c: Case) -> Path:
    return cache_root() / f"{c.key}-{spec_hash(c)}"


def generate(c: Case) -> dict:
    """The case's Measurement Sets and known sky ({"execution_blocks": [truth with "ms"], "seconds"}), made
    now if not cached."""
    final = case_dir(c)
    done = final / "corpus.json"
    if done.is_file():
        return json.loads(done.read_text())
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f".{final.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    start = time.monotonic()
    truths = []
    for k, spec in enumerate(c.execution_blocks):
        workdir = staging / f"eb{k + 1}"
        workdir.mkdir()
        full_spec = {**spec, "out": str(workdir / f"eb{k + 1}.ms")}
        (workdir / "spec.json").write_text(json.dumps(full_spec))
        # casatools in a process of its own: its casacore must not meet arcae's (xradio's reader) in one process.
        proc = subprocess.run([sys.executable, str(GENERATOR), str(workdir / "spec.json")], capture_output=True,
                              text=True, cwd=workdir, timeout=3 * 3600)
        if proc.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise RuntimeError(f"corpus case {c.key}, execution block {k + 1}: the generator failed:\n"
                               f"{proc.stderr[-3000:]}")
        truth = json.loads(proc.stdout.strip().splitlines()[-1])
        truth["ms"] = str(final / f"eb{k + 1}" / f"eb{k + 1}.ms")  # where it will be once renamed
        truths.append(truth)
    doc = {"case": c.key, "execution_blocks": truths, "seconds": round(time.monotonic() - start, 1)}
    (staging / "corpus.json").write_text(json.dumps(doc, indent=1))
    try:
        staging.rename(final)
    except OSError:  # another process made it first: use theirs
        shutil.rmtree(staging, ignore_errors=True)
    return json.loads(done.read_text())
