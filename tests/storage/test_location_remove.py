"""Removing a local tree while writers are still finishing in it (Zarr's chunk tasks after a failed write)."""

import threading
import time

from mousflow.storage.location import Location


def _keep_writing(directory, until: float, started: threading.Event) -> int:
    made = 0
    while time.monotonic() < until:
        try:
            (directory / f"chunk-{made}").write_bytes(b"x")
            made += 1
        except OSError:  # the directory is being removed under us
            pass
        if made == 20:
            started.set()
    started.set()
    return made


def test_a_tree_still_written_into_is_removed_once_its_writers_end(tmp_path):
    tree = tmp_path / "partial" / "eb.ps.zarr"
    tree.mkdir(parents=True)
    started = threading.Event()
    writers = [threading.Thread(target=_keep_writing, args=(tree, time.monotonic() + 0.5, started))
               for _ in range(3)]
    for w in writers:
        w.start()
    started.wait()
    try:
        Location.of(str(tmp_path / "partial")).remove()
    finally:
        for w in writers:
            w.join()
    assert not (tmp_path / "partial").exists()


def test_removing_what_is_not_there_or_a_single_file_works(tmp_path):
    Location.of(str(tmp_path / "none")).remove()
    (tmp_path / "file.json").write_text("{}")
    Location.of(str(tmp_path / "file.json")).remove()
    assert not (tmp_path / "file.json").exists()
