"""Content digests, and checksums recorded with a store and verified against it: every kind of damage is
named, and a named pipe is refused by its type without being opened (opening one blocks)."""

from __future__ import annotations

import hashlib
import json
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


def test_new_records_are_xxh3_128_digests(store):
    """The digest is XXH3-128 as its authors define it: the empty input's digest is their published test
    vector, and the record names the algorithm."""
    store.join("FLAG", "c", "0").write_bytes(b"")
    digests = record_checksums(store)
    assert json.loads(store.join(CHECKSUMS).read_bytes())["algorithm"] == "xxh3_128"
    assert digests["FLAG/c/0"] == "99aa06d3014798d86001c324468d497f"
    assert len(digests["VISIBILITY/c/0/0"]) == 32


def test_a_store_recorded_with_sha256_before_stays_verified_and_its_digest_the_same(store):
    """Stores written before the records moved to XXH3 (and the checkpoints holding their digests) stay valid:
    a sha256 record, made here with hashlib, is verified with sha256, still catches damage, and the store's
    digest read from its bytes equals the one from its record."""
    objects = {rel: hashlib.sha256(open(os.path.join(store.path, rel), "rb").read()).hexdigest()
               for rel in ("zarr.json", "VISIBILITY/c/0/0", "VISIBILITY/zarr.json")}
    store.join(CHECKSUMS).write_text(json.dumps({"algorithm": "sha256", "objects": objects}))
    assert verify_checksums(store) == objects
    before = content_digest(store)
    assert content_digest(store, recorded=True) == before
    store.join("VISIBILITY", "c", "0", "0").write_bytes(b"\x02" * 64)
    with pytest.raises(DamagedData, match="VISIBILITY/c/0/0 does not match"):
        verify_checksums(store)
    assert content_digest(store) != before


def test_a_record_of_an_unknown_algorithm_is_refused_and_a_damaged_one_changes_the_digest(store):
    digest = content_digest(store)
    doc = json.loads(store.join(CHECKSUMS).read_bytes())
    store.join(CHECKSUMS).write_text(json.dumps({**doc, "algorithm": "md4"}))
    with pytest.raises(DamagedData, match="recorded checksums are unreadable \\(algorithm 'md4'\\)"):
        verify_checksums(store)
    # a checkpoint's check of such a store sees a change (the work is redone) rather than failing
    assert content_digest(store) != digest


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
    monkeypatch.setattr(integrity, "digest_of_object", lambda loc, algorithm: pytest.fail(f"{loc.uri} read again"))
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
