"""Content digests of stored data, and checksums recorded when a Zarr store is written and verified when it is read.

Storage does not notice when an object changes underneath it: random bytes of the right size in place of an
uncompressed VISIBILITY chunk are valid complex numbers to zarr, and such a chunk once went through the whole
pipeline to a QA2 Pass and a cube entirely of NaN. So every processing set mousflow writes (`simulate`,
`import-ms`, the calibration stage) gets `mousflow-checksums.json` at its root when it is finalised: a digest
of every object under it. A reader verifies them before it uses any of the data and refuses, naming the
object, anything overwritten, truncated, removed or added since.

Which digest: the records guard against damage (a truncated upload, a chunk overwritten, a disk's error), not
against an attacker who could rewrite the record too, so they need a digest that no accidental change keeps,
not a cryptographic one. New records use XXH3-128 (the `xxhash` package: 128 bits, ~23 GB/s a core here
against sha256's 1.4 with SHA-NI): verifying the full-size corpus block's 3.4 GB takes 1.3 CPU s instead of
4.7, ~4 of the calibration stage's ~75 CPU s with its output recorded too. A record names its algorithm, and one made
with sha256 before is verified with sha256, so stores and checkpoints written before stay valid. Delivered
products keep sha256 (`sha256_of_object`): that is what an archive and its users check with `sha256sum`.

Walking a local tree opens regular files only: a named pipe, socket or device where data should be is
refused by its type, never opened (opening a named pipe blocks until someone writes to it).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import stat
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import xxhash

from mousflow.errors import InvalidInput
from mousflow.storage.location import Location

CHECKSUMS = "mousflow-checksums.json"
CHECKSUM_ALGORITHM = "xxh3_128"
"""The digest of new records; a record names its own, any of DIGESTS."""
UNRECORDED_ALGORITHM = "sha256"
"""The digest of single files and of trees without a record (content_digest): as before XXH3 came in, so the
digests checkpoints hold of such outputs stay the same."""
DIGESTS: dict[str, Callable[[], object]] = {"sha256": hashlib.sha256, "xxh3_128": xxhash.xxh3_128}
HASH_BLOCK = 8 * 2**20

_thread_buffers = threading.local()

_SPECIAL_KINDS = {stat.S_IFIFO: "a named pipe", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
                  stat.S_IFBLK: "a block device", stat.S_IFDIR: "a directory"}


class DamagedData(InvalidInput):
    """Stored data that is not what was written: an object changed, missing or added since its checksums were
    recorded, or something that cannot be data at all (a named pipe, a device)."""


def file_kind(mode: int) -> str:
    """What a stat mode says a path is, in words ("a named pipe")."""
    return _SPECIAL_KINDS.get(stat.S_IFMT(mode), "a regular file" if stat.S_ISREG(mode) else "a special file")


def require_regular_file(path: str) -> os.stat_result:
    """stat (never open) a local path and refuse anything but a regular file."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise DamagedData(f"{path} is {file_kind(st.st_mode)}, not a regular file: it cannot hold data")
    return st


def _read_buffer() -> memoryview:
    """This thread's one reusable block to read objects into. `read()` allocated a fresh 8 MiB for every
    block, which the kernel then faulted in page by page: with XXH3 that took longer than the digest
    (a full-size execution block's 3.4 GB from the page cache: 1.9-2.3 s a core, 0.9 s with one buffer)."""
    view = getattr(_thread_buffers, "view", None)
    if view is None:
        view = _thread_buffers.view = memoryview(bytearray(HASH_BLOCK))
    return view


def digest_of_object(loc: Location, algorithm: str) -> str:
    """Hex digest of one object's content with one of DIGESTS, read in blocks (hashlib and xxhash release the
    GIL on them)."""
    if loc.is_local:
        require_regular_file(loc.path)
    h, block = DIGESTS[algorithm](), _read_buffer()
    with loc.fs.open(loc.path, "rb") as fh:
        while n := fh.readinto(block):
            h.update(block[:n])
    return h.hexdigest()


def sha256_of_object(loc: Location) -> str:
    """The sha256 of one object: a delivered product's, as its manifest states it."""
    return digest_of_object(loc, "sha256")


def _local_objects(root: str) -> list[str]:
    """Relative paths of the files under a local directory; refuses special files and directory links."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            if os.path.islink(os.path.join(dirpath, name)):
                raise DamagedData(f"{os.path.join(dirpath, name)}: a link to a directory inside stored data")
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                require_regular_file(path)
            except FileNotFoundError:
                raise DamagedData(f"{path}: a link to nothing inside stored data") from None
            found.append(os.path.relpath(path, root).replace(os.sep, "/"))
    return sorted(found)


def object_digests(loc: Location, algorithm: str, *, etags: bool = False, threads: int = 1) -> dict[str, str]:
    """relative path -> digest of every object under a directory (or prefix). The digest is that of the
    content with `algorithm`, or with `etags` in object storage the object's ETag: derived from the content by
    the store (the MD5 of a single-part upload, a hash of the parts' MD5s otherwise), it costs nothing to read
    and changes whenever the content does. threads: local objects hashed that many at a time (the digests and
    reads release the GIL)."""
    if loc.is_local:
        objects = _local_objects(loc.path)
        with ThreadPoolExecutor(max(1, threads)) as pool:
            digests = pool.map(lambda rel: digest_of_object(Location(posixpath.join(loc.path, rel)), algorithm),
                               objects)
            return dict(zip(objects, digests, strict=True))
    loc.fs.invalidate_cache(loc.path)
    digests = {}
    for name, info in sorted(loc.fs.find(loc.path, detail=True).items()):
        etag = info.get("ETag") or info.get("etag")
        digests[posixpath.relpath(name, loc.path)] = str(etag).strip('"') if etags and etag else \
            digest_of_object(Location(f"{loc.protocol}://{name}"), algorithm)
    return digests


def tree_digest(digests: dict[str, str]) -> str:
    """One digest for a tree from its objects' digests (sorted relative paths and their digests)."""
    return hashlib.sha256("".join(f"{rel}\0{d}\n" for rel, d in sorted(digests.items())).encode()).hexdigest()


def content_digest(loc: Location, *, recorded: bool = False) -> str:
    """sha256 of a file, or a digest of a directory tree: `tree_digest` of `object_digests` (ETags in S3; a
    local tree's objects with the algorithm of its CHECKSUMS record, sha256 without one), the record itself
    left out (derived from the rest).

    recorded: a local tree's objects' digests taken from its CHECKSUMS record, where it has one naming every
    object, not read again. For a writer that has just recorded them from the bytes on disk (a stage committing
    its checkpoint right after finalize_processing_set): the same digest, without hashing a full-size
    processing set a second time. A check that the tree is unchanged leaves it False."""
    fs, path = loc.fs, loc.path
    if not loc.exists():
        raise FileNotFoundError(loc.uri)
    if not fs.isdir(path):
        return sha256_of_object(loc)
    try:
        record = _read_record(loc) if loc.is_local else None
    except DamagedData:
        record = None  # digested as a tree without one: differs from any digest made with it, so work is redone
    if recorded and record is not None and set(record.objects) == set(_local_objects(path)) - {CHECKSUMS}:
        return tree_digest(record.objects)
    algorithm = record.algorithm if record is not None else UNRECORDED_ALGORITHM
    return tree_digest({rel: d for rel, d in object_digests(loc, algorithm, etags=True).items() if rel != CHECKSUMS})


# --- checksums recorded with a Zarr store -------------------------------------------------------------------


def record_checksums(loc: Location, *, threads: int = 1) -> dict[str, str]:
    """Write CHECKSUMS under `loc`: the CHECKSUM_ALGORITHM digest of every object in it (local ones `threads` at
    a time). Call when everything else is written."""
    digests = {rel: d for rel, d in object_digests(loc, CHECKSUM_ALGORITHM, threads=threads).items()
               if rel != CHECKSUMS}
    loc.join(CHECKSUMS).write_json({"algorithm": CHECKSUM_ALGORITHM, "objects": digests}, indent=None)
    return digests


class _Record(NamedTuple):
    """A store's CHECKSUMS: the digest algorithm and relative path -> digest."""

    algorithm: str
    objects: dict[str, str]


def _read_record(loc: Location) -> _Record | None:
    """The checksums recorded with a store, or None if it has none."""
    doc_loc = loc.join(CHECKSUMS)
    if not doc_loc.exists():
        return None
    try:
        doc = json.loads(doc_loc.read_bytes())
        objects = doc["objects"]
        if doc.get("algorithm") not in DIGESTS or not isinstance(objects, dict):
            raise ValueError(f"algorithm {doc.get('algorithm')!r}")
    except (ValueError, KeyError, TypeError) as exc:
        raise DamagedData(f"{doc_loc.uri}: the recorded checksums are unreadable ({exc})") from None
    return _Record(doc["algorithm"], {str(k): str(v) for k, v in objects.items()})


def recorded_checksums(loc: Location) -> dict[str, str] | None:
    """The checksums recorded with a store, or None if it has none (written by other software)."""
    record = _read_record(loc)
    return None if record is None else record.objects


def verify_checksums(loc: Location, what: str = "",
                     remedy: str = "copy it again from its source") -> dict[str, str] | None:
    """Recompute the digest of every object under `loc` with the algorithm its record names and compare with the
    recorded checksums; returns the digests (None when nothing was recorded). Raises DamagedData naming the
    first object that differs, what the data is (`what`) and what to do about it (`remedy`)."""
    record = _read_record(loc)
    if record is None:
        return None
    algorithm, recorded = record
    actual = {rel: d for rel, d in object_digests(loc, algorithm).items() if rel != CHECKSUMS}
    label = f"{what}: " if what else ""
    for rel in sorted(recorded.keys() | actual.keys()):
        if rel not in actual:
            problem = "is missing"
        elif rel not in recorded:
            problem = "was added after the data was written"
        elif actual[rel] != recorded[rel]:
            problem = "does not match the checksum recorded when it was written"
        else:
            continue
        raise DamagedData(f"{label}{loc.uri}: {rel} {problem}: the data is damaged; {remedy}")
    return actual
