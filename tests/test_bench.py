"""`make bench` runs every benchmark under bench/: none is left out, and each one parses its arguments."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(p.stem for p in BENCH.glob("*.py") if p.stem != "run_all")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("quick", [False, True])
def test_run_all_lists_every_benchmark(quick):
    proc = _run(str(BENCH / "run_all.py"), "--list", *(["--quick"] if quick else []))
    assert proc.returncode == 0, proc.stderr
    listed = {line.split()[0].removesuffix(".py").rsplit("/", 1)[-1] for line in proc.stdout.splitlines()}
    assert listed == set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_benchmark_arguments_parse(script):
    """The arguments run_all passes are ones the benchmark accepts (argparse rejects unknown ones at once)."""
    sys.path.insert(0, str(BENCH))
    try:
        import run_all
    finally:
        sys.path.pop(0)
    for quick in (False, True):
        for name, cmd in run_all.commands(quick, [script]):
            assert name == script
            proc = _run(*cmd[1:2], "--help")
            assert proc.returncode == 0, proc.stderr
            options = {tok for tok in cmd[2:] if tok.startswith("--")}
            assert all(opt in proc.stdout for opt in options), (script, options, proc.stdout)


def test_unknown_benchmark_is_refused_with_one_line():
    proc = _run(str(BENCH / "run_all.py"), "--only", "nope", "--list")
    assert proc.returncode != 0
    assert proc.stderr.strip().count("\n") == 0 and "no benchmark named nope" in proc.stderr
