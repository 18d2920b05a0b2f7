"""A stage process hands freed arrays back to the kernel (stages.allocator): what glibc does without it, and with."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# In a fresh interpreter: free one 4 MiB array (glibc then raises its mmap threshold above 4 MiB), make 64 more,
# free all but the last (which sits on top of the heap, so nothing below it can be trimmed), print the RSS (MiB).
SCRIPT = """
import sys
import numpy as np
if sys.argv[1] == "on":
    from mousflow.stages.allocator import return_freed_memory_to_the_kernel
    assert return_freed_memory_to_the_kernel()
a = np.ones(4 << 20, np.uint8)
del a
arrays = [np.ones(4 << 20, np.uint8) for _ in range(64)]
last = arrays.pop()
del arrays
with open("/proc/self/statm") as f:
    print(int(f.read().split()[1]) * 4096 >> 20)
"""


def _resident_mib(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator and /proc: Linux only")
def test_freed_arrays_leave_the_process():
    kept_by_glibc, returned = _resident_mib("off"), _resident_mib("on")
    # 63 freed arrays of 4 MiB are 252 MiB: glibc keeps them in its heap; with the stage's setting they are gone
    assert kept_by_glibc > returned + 200, (kept_by_glibc, returned)


def test_a_users_own_setting_is_left_alone(monkeypatch):
    from mousflow.stages.allocator import return_freed_memory_to_the_kernel

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1048576")
    assert return_freed_memory_to_the_kernel() is False
