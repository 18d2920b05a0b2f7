"""A temporary, local Prefect server for the embedded run and the tests (never Prefect Cloud).

Started as `prefect server start` on a free loopback port with its own PREFECT_HOME (SQLite database in a
temporary directory), and stopped again when the context exits.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator

STARTUP_TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def local_prefect_server() -> Iterator[str]:
    """Start a Prefect server, point this process (and its children) at it, yield its API URL."""
    home = tempfile.mkdtemp(prefix="mousflow-prefect-")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": home, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_UI_ENABLED": "false", "PREFECT_API_URL": url}
    prefect = os.path.join(os.path.dirname(sys.executable), "prefect")
    log = open(os.path.join(home, "server.log"), "w")
    proc = subprocess.Popen([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port),
                             "--no-ui", "--analytics-off"], stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    saved = {k: os.environ.get(k) for k in ("PREFECT_API_URL", "PREFECT_HOME")}
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                tail = open(os.path.join(home, "server.log")).read()[-2000:]
                raise RuntimeError(f"the local Prefect server did not start:\n{tail}")
            time.sleep(0.5)
        os.environ["PREFECT_API_URL"] = url
        os.environ["PREFECT_HOME"] = home
        # Prefect reads its settings when first imported; the environment alone does not reach a process that
        # has already imported it, and it would silently start an ephemeral server of its own instead.
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: url}):
            try:
                yield url
            finally:
                # Logs go to the API in batches from a background worker: send what is queued while the
                # server still listens, or the worker reports "Error logging to API" after it is gone.
                from prefect.logging.handlers import APILogWorker

                APILogWorker.drain_all(timeout=10)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        log.close()
        shutil.rmtree(home, ignore_errors=True)
