"""A local run's log records: everything to the log file (tracebacks included), only the stages' lines to
the console, nothing to stderr; --verbose keeps Prefect's own console output too."""

from __future__ import annotations

import logging

import pytest

from mousflow.pipeline.run_log import run_log


@pytest.fixture(autouse=True)
def _no_api_handlers(monkeypatch):
    """Outside a flow run Prefect's API handler has nowhere to send records (and warns so)."""
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        monkeypatch.setattr(logging.getLogger(name), "handlers", [])


def _emit():
    logging.getLogger("prefect.task_runs").info("[ 50.0%] calibration: spw0")
    try:
        raise ValueError("the stage failed")
    except ValueError:
        logging.getLogger("prefect.flow_runs").error("Finished in state Failed", exc_info=True)
    logging.getLogger("some.library").warning("a library's warning")


def test_records_go_to_the_file_and_stage_lines_to_stdout(tmp_path, capfd):
    path = tmp_path / "run.log"
    with run_log(str(path)):
        _emit()
    out, err = capfd.readouterr()
    assert out.strip() == "[ 50.0%] calibration: spw0"
    assert err == ""
    text = path.read_text()
    assert "calibration: spw0" in text and "Traceback" in text and "a library's warning" in text


def test_handlers_are_restored_and_verbose_keeps_the_console(tmp_path, capfd):
    before = list(logging.getLogger().handlers)
    with run_log(str(tmp_path / "run.log"), verbose=True):
        _emit()
    assert logging.getLogger().handlers == before
    _out, err = capfd.readouterr()
    assert "Traceback" in err
