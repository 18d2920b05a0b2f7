"""The output location's lock: a second holder is refused with Busy, naming the first; a holder killed with
SIGKILL leaves no lock behind (local); in object storage the lock is created and taken over conditionally,
renewed while held, and best effort on a store without conditional writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from s3_stub import StubS3

from mousflow.errors import Busy
from mousflow.storage.location import Location
from mousflow.storage.locks import LOCK_NAME, OutputLock


def test_a_second_local_lock_is_refused_naming_the_holder(tmp_path):
    root = Location.of(tmp_path / "output")
    with OutputLock(root, "mousflow run of uid://A001/X1/X1"):
        with pytest.raises(Busy, match=r"in use by mousflow run of uid://A001/X1/X1 \(pid \d+ on "):
            OutputLock(root, "a second run").acquire()
    with OutputLock(root, "a second run") as lock:
        assert lock.owner.purpose == "a second run"


def test_a_killed_holder_leaves_no_lock(tmp_path):
    root = tmp_path / "output"
    holder = subprocess.Popen([sys.executable, "-c", f"""
import time
from mousflow.storage.location import Location
from mousflow.storage.locks import OutputLock
OutputLock(Location.of({str(root)!r}), "holder").acquire()
print("held", flush=True)
time.sleep(600)
"""], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(Busy, match="in use by holder"):
            OutputLock(Location.of(root), "second").acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        with OutputLock(Location.of(root), "after the kill"):
            pass
    finally:
        holder.kill()
        holder.wait()


@pytest.fixture
def s3(monkeypatch):
    with StubS3() as stub:
        stub.buckets.add("runs")
        monkeypatch.setenv("MOUSFLOW_S3_ENDPOINT", stub.url)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
        monkeypatch.setenv("MOUSFLOW_S3_MAX_ATTEMPTS", "1")
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        yield stub


def _lock_doc(stub: StubS3) -> dict:
    return json.loads(stub.objects[("runs", f"mous/{LOCK_NAME}")])


def test_object_lock_is_exclusive_and_released(s3):
    root = Location("s3://runs/mous")
    with OutputLock(root, "first"):
        assert _lock_doc(s3)["purpose"] == "first" and _lock_doc(s3)["expires"] > time.time()
        with pytest.raises(Busy, match="in use by first"):
            OutputLock(root, "second").acquire()
    assert ("runs", f"mous/{LOCK_NAME}") not in s3.objects


def test_an_expired_object_lock_is_taken_over(s3):
    root = Location("s3://runs/mous")
    crashed = OutputLock(root, "crashed run")
    crashed.acquire()
    crashed._stop.set()  # it stops renewing, as a killed holder does
    doc = _lock_doc(s3)
    s3.objects[("runs", f"mous/{LOCK_NAME}")] = json.dumps({**doc, "expires": time.time() - 1}).encode()
    with OutputLock(root, "next run") as lock:
        assert _lock_doc(s3)["token"] == lock.owner.token


def test_the_holder_renews_its_lease(s3, monkeypatch):
    monkeypatch.setenv("MOUSFLOW_LOCK_LEASE_SECONDS", "0.9")
    with OutputLock(Location("s3://runs/mous"), "long run"):
        first = _lock_doc(s3)["expires"]
        deadline = time.monotonic() + 20
        while _lock_doc(s3)["expires"] == first:
            assert time.monotonic() < deadline, "the lock was never renewed"
            time.sleep(0.1)


def test_best_effort_without_conditional_writes(s3):
    s3.conditional_writes = False
    root = Location("s3://runs/mous")
    with OutputLock(root, "first") as lock:
        assert not lock.conditional
        with pytest.raises(Busy, match="in use by first"):
            OutputLock(root, "second").acquire()
