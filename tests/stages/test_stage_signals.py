"""The stage entry point stops at once on SIGTERM (as when its pod is deleted), reporting no outcome."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def test_sigterm_stops_a_running_stage_promptly(make_run):
    manifest = make_run()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mousflow.cli", "stage", "calibration", "--manifest",
                             str(manifest)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert proc.stdout is not None
    for line in proc.stdout:  # the first progress line: the stage is under way
        if "calibration:" in line:
            break
    proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    code = proc.wait(timeout=30)
    rest = proc.stdout.read()
    assert code == 128 + signal.SIGTERM, rest
    assert time.monotonic() - t0 < 10
    assert "stopped by signal SIGTERM" in rest
    # no outcome was reported: the launcher sees an interruption, not a result
    assert not (manifest.parent / "output" / "status" / "calibration.json").exists()
