"""The local Prefect server ends with the process that started it, however that one ends; the temporary
homes of servers whose owner is gone are removed by the next start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

import psutil

from mousflow.pipeline.local_server import HOME_PREFIX, OWNER_FILE, remove_orphaned_homes

PARENT = """
import subprocess, sys, time
from mousflow.pipeline.local_server import _die_with_parent
import os
parent = os.getpid()
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                         preexec_fn=lambda: _die_with_parent(parent), start_new_session=True)
print(child.pid, flush=True)
time.sleep(600)
"""


def test_a_child_started_to_die_with_its_parent_dies_when_the_parent_is_killed():
    """What local_prefect_server does for its server (a child in a session of its own, so killing the parent's
    process group does not reach it), shown with a sleeping child: the server itself takes ~a minute here."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    child = psutil.Process(int(parent.stdout.readline()))
    try:
        assert child.is_running()
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        gone, _ = psutil.wait_procs([child], timeout=30)
        assert gone, "the child outlived its SIGKILLed parent"
    finally:
        if child.is_running():
            child.kill()


def test_homes_of_servers_whose_owner_is_gone_are_removed():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    orphan = tempfile.mkdtemp(prefix=HOME_PREFIX)
    alive = tempfile.mkdtemp(prefix=HOME_PREFIX)
    unowned = tempfile.mkdtemp(prefix=HOME_PREFIX)
    try:
        with open(os.path.join(orphan, OWNER_FILE), "w") as fh:
            fh.write(str(gone.pid))
        with open(os.path.join(alive, OWNER_FILE), "w") as fh:
            fh.write(str(os.getpid()))
        time.sleep(0.1)
        remove_orphaned_homes()
        assert not os.path.exists(orphan)
        assert os.path.isdir(alive) and os.path.isdir(unowned)
    finally:
        for d in (orphan, alive, unowned):
            subprocess.run(["rm", "-rf", d])
