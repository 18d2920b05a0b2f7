"""Fixtures of the import tests: CASA-made Measurement Sets imported with `mousflow import-ms`."""

from __future__ import annotations

import pytest
from imported_sky import FLUX_CALIBRATOR_ARGS, GOAL_ARGS

from mousflow.cli import main as mousflow_main


@pytest.fixture
def import_ms(capsys):
    """import_ms(*args) runs `mousflow import-ms ARGS` in-process: (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = mousflow_main(["import-ms", *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(scope="session")
def imported(casa_ms, tmp_path_factory):
    """casa_ms imported (one execution block) with its science goals and the flux calibrator's flux."""
    out = tmp_path_factory.mktemp("imported") / "mous"
    code = mousflow_main(["import-ms", casa_ms["ms"], "--out", str(out), *GOAL_ARGS, *FLUX_CALIBRATOR_ARGS])
    assert code == 0
    return out
