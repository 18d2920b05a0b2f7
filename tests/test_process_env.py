"""The process's allocator: what a stage asks glibc to give back (process_env.release_freed_memory)."""

import platform

import numpy as np
import pytest

from mousflow import process_env


def _rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc_trim")
def test_freed_heap_memory_goes_back_to_the_system():
    # 64 KiB arrays come from glibc's heap (below its mmap threshold); every second one kept, so the freed half
    # is in holes between live blocks, which glibc does not return to the system by itself
    arrays = [np.ones(8192) for _ in range(4096)]  # 256 MiB
    del arrays[::2]
    before = _rss_bytes()
    assert process_env.release_freed_memory() is True
    after = _rss_bytes()
    assert before - after > 64 * 2**20, (before, after)
    assert sum(a.sum() for a in arrays) == 2048 * 8192  # what is live is untouched


def test_without_glibc_nothing_is_released(monkeypatch):
    monkeypatch.setattr(process_env, "_libc_malloc_trim", lambda: None)
    assert process_env.release_freed_memory() is False
