"""A temporary, local Prefect server for the embedded run and the tests (never Prefect Cloud).

Started as `prefect server start` on a free loopback port with its own PREFECT_HOME (SQLite database in a
temporary directory), and stopped again when the context exits. It also dies with the process that started
it when that one cannot stop it (SIGKILL, a crash): on Linux the kernel sends it SIGTERM when its parent
exits (PR_SET_PDEATHSIG, set between fork and exec), and the next server started removes the temporary
homes of servers whose owners are gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator

STARTUP_TIMEOUT_S = 120
HOME_PREFIX = "mousflow-prefect-"
OWNER_FILE = "owner.pid"
PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    """In the child, before exec: ask the kernel for SIGTERM when the parent exits, and exit now if it already
    has (it may have died between fork and this call). Elsewhere than Linux the server is only stopped by the
    context's exit."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:
        os._exit(1)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphaned_homes() -> None:
    """Remove the temporary homes of earlier servers whose owning process is gone (killed before it could)."""
    for home in glob.glob(os.path.join(tempfile.gettempdir(), HOME_PREFIX + "*")):
        try:
            with open(os.path.join(home, OWNER_FILE)) as fh:
                owner = int(fh.read().strip())
        except (OSError, ValueError):
            continue  # not ours to judge: no owner recorded (or being created right now)
        if not _pid_alive(owner):
            shutil.rmtree(home, ignore_errors=True)


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def start_server(home: str, port: int, log, host: str = "127.0.0.1") -> subprocess.Popen:
    """`prefect server start` on `host`:`port` (host: an address of this machine that pods of the test bed reach,
    for flow runs in pods) with its database in `home`, dying with the thread that calls
    this (the kernel's PR_SET_PDEATHSIG follows the thread that forked, not the process: start it from a thread
    that lives as long as the server should); returns once it answers /health. A server started again on the
    same home and port has the same flow runs."""
    url = f"http://{host}:{port}/api"
    env = {**os.environ, "PREFECT_HOME": home, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_UI_ENABLED": "false", "PREFECT_API_URL": url}
    prefect = os.path.join(os.path.dirname(sys.executable), "prefect")
    parent = os.getpid()
    proc = subprocess.Popen([prefect, "server", "start", "--host", host, "--port", str(port),
                             "--no-ui", "--analytics-off"], stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True, preexec_fn=lambda: _die_with_parent(parent))
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not _healthy(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            log.flush()
            tail = open(log.name).read()[-2000:]
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            raise RuntimeError(f"the local Prefect server did not start:\n{tail}")
        time.sleep(0.5)
    return proc


def stop_server(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Stop a server from start_server (SIGKILL: as a crash) and wait for it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def local_prefect_server(host: str = "127.0.0.1") -> Iterator[str]:
    """Start a Prefect server, point this process (and its children) at it, yield its API URL. `host`: the
    address it listens on (one the test bed's pods reach, for flow runs in pods)."""
    remove_orphaned_homes()
    home = tempfile.mkdtemp(prefix=HOME_PREFIX)
    with open(os.path.join(home, OWNER_FILE), "w") as fh:
        fh.write(str(os.getpid()))
    port = _free_port(host)
    url = f"http://{host}:{port}/api"
    log = open(os.path.join(home, "server.log"), "w")
    saved = {k: os.environ.get(k) for k in ("PREFECT_API_URL", "PREFECT_HOME")}
    proc = None
    try:
        proc = start_server(home, port, log, host=host)
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
        if proc is not None:
            stop_server(proc)
        log.close()
        shutil.rmtree(home, ignore_errors=True)
