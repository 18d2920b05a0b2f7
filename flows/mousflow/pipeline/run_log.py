"""Where the log records of a local run go: all of them to a file, the stages' own lines to the console.

Prefect logs through the root logger's console handler to stderr, tracebacks included: a stage that failed
for a plain reason (a damaged input) printed 80 lines there. A `mousflow run` prints one line on stderr when
it fails, so while the flow runs the console shows the lines the stages print (stdout) and every record, with
its traceback, goes to the log file the error line names. `verbose` keeps Prefect's console output as well.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator

import prefect  # noqa: F401  (configures Prefect's logging, which this module then redirects)

from mousflow.storage.location import Location

# The loggers whose own handlers write to the console (the others propagate to the root's).
_CONSOLE_LOGGERS = ("", "prefect._internal")
STAGE_LINES = "prefect.task_runs"


def run_log_path(output_uri: str, name: str) -> str:
    """<output>/logs/run-<time>.log for a local output, a file in the temporary directory otherwise."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    output = Location.of(output_uri)
    folder = os.path.join(output.path, "logs") if output.is_local else os.path.join(tempfile.gettempdir(),
                                                                                    "mousflow-logs")
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f"run-{name}-{stamp}.log" if not output.is_local else f"run-{stamp}.log")


class _StageLines(logging.Filter):
    """INFO records of the task-run loggers: what the stages print, and each stage's outcome."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.startswith(STAGE_LINES) and record.levelno == logging.INFO


@contextlib.contextmanager
def run_log(path: str, *, verbose: bool = False) -> Iterator[str]:
    file_handler = logging.FileHandler(path, encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    console = logging.StreamHandler(sys.stdout)
    console.addFilter(_StageLines())
    console.setFormatter(logging.Formatter("%(message)s"))
    saved = {name: list(logging.getLogger(name).handlers) for name in _CONSOLE_LOGGERS}
    root = logging.getLogger()
    saved_level = root.level
    for name in _CONSOLE_LOGGERS:
        logger = logging.getLogger(name)
        if not verbose:
            for handler in saved[name]:
                logger.removeHandler(handler)
        logger.addHandler(file_handler)
    if not verbose:
        root.addHandler(console)
    root.setLevel(logging.INFO)  # the file gets what the console did not show (records below WARNING included)
    try:
        yield path
    finally:
        for name in _CONSOLE_LOGGERS:
            logger = logging.getLogger(name)
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            for handler in saved[name]:
                logger.addHandler(handler)
        root.setLevel(saved_level)
        file_handler.close()
