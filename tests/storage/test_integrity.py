"""Content digests, and checksums recorded with a store and verified against it: every kind of damage is
named, and a named pipe is refused by its type without being opened (opening one blocks)."""

from __future__ import annotations

import os
import threading

import pytest

from mousflow.storage.integrity import (
    CHECKSUMS,
    DamagedData,
    content_digest,
    record_checksums,
    recorded_checksums,
    verify_checksums,
)
from mousflow.storage.location import Location


@pytest.fixture
def store(tmp_path) -> Location:
    root = Location.of(tmp_path / "set.zarr")
    root.join("zarr.json").write_text('{"node_type": "group"}')
    root.join("VISIBILITY", "c", "0", "0").write_bytes(b"\x01" * 64)
    root.join("VISIBILITY", "zarr.json").write_text("{}")
    record_checksums(root)
    return root


def test_recorded_checksums_verify_until_something_changes(store):
    assert set(verify_checksums(store)) == {"zarr.json", "VISIBILITY/c/0/0", "VISIBILITY/zarr.json"}
    assert CHECKSUMS not in recorded_checksums(store)


@pytest.mark.parametrize("damage,words", [
    (lambda p: p.write_bytes(os.urandom(64)), "VISIBILITY/c/0/0 does not match the checksum"),
    (lambda p: os.truncate(p, 10), "VISIBILITY/c/0/0 does not match the checksum"),
    (lambda p: p.unlink(), "VISIBILITY/c/0/0 is missing"),
    (lambda p: (p.parent / "1").write_bytes(b"x"), "VISIBILITY/c/0/1 was added after the data was written"),
])
def test_each_kind_of_damage_is_named(store, damage, words):
    from pathlib import Path

    damage(Path(store.join("VISIBILITY", "c", "0", "0").path))
    with pytest.raises(DamagedData, match=words) as info:
        verify_checksums(store, "execution block uid://A002/X1/X1", remedy="copy it again")
    assert str(info.value).startswith("execution block uid://A002/X1/X1: ") and str(info.value).endswith("again")


def test_unreadable_checksums_and_none_recorded(store, tmp_path):
    store.join(CHECKSUMS).write_text("[1, 2")
    with pytest.raises(DamagedData, match="recorded checksums are unreadable"):
        verify_checksums(store)
    store.join(CHECKSUMS).remove()
    assert verify_checksums(store) is None


def test_a_named_pipe_is_refused_without_being_opened(store):
    pipe = store.join("VISIBILITY", "c", "0", "1").path
    os.mkfifo(pipe)
    result = {}

    def verify():
        try:
            verify_checksums(store)
        except DamagedData as exc:
            result["error"] = str(exc)

    worker = threading.Thread(target=verify, daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "verification opened the named pipe and blocked"
    assert "is a named pipe, not a regular file" in result["error"]
    with pytest.raises(DamagedData, match="named pipe"):
        content_digest(Location.of(pipe))


def test_directory_digest_depends_on_content_and_names(store):
    a = content_digest(store)
    store.join("VISIBILITY", "c", "1").write_bytes(b"")
    assert content_digest(store) != a


def test_a_recorded_stores_digest_from_its_record_is_the_digest_of_its_bytes(store, monkeypatch):
    """A writer committing a store whose checksums it has just recorded takes them from the record, without
    reading the objects again, and gets the digest that reading them gives; a check reads them, and sees a
    change. A record that does not name every object is not used."""
    from mousflow.storage import integrity

    read = content_digest(store)
    monkeypatch.setattr(integrity, "sha256_of_object", lambda loc: pytest.fail(f"{loc.uri} read again"))
    assert content_digest(store, recorded=True) == read
    monkeypatch.undo()
    store.join("VISIBILITY", "c", "0", "0").write_bytes(b"\x02" * 64)
    assert content_digest(store) != read
    assert content_digest(store, recorded=True) == read  # the record is trusted: for its writer alone
    store.join("VISIBILITY", "c", "0", "1").write_bytes(b"\x01")  # an object the record does not name
    assert content_digest(store, recorded=True) == content_digest(store) != read


def test_checksums_recorded_on_several_threads_are_those_of_one(store):
    for k in range(6):
        store.join("FLAG", "c", str(k)).write_bytes(os.urandom(1000 + k))
    one = record_checksums(store)
    assert record_checksums(store, threads=3) == one and len(one) == 9
