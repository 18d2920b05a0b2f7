"""Content digests of stored data, and checksums recorded when a Zarr store is written and verified when it is read.

Storage does not notice when an object changes underneath it: random bytes of the right size in place of an
uncompressed VISIBILITY chunk are valid complex numbers to zarr, and such a chunk once went through the whole
pipeline to a QA2 Pass and a cube entirely of NaN. So every processing set mousflow writes (`simulate`,
`import-ms`, the calibration stage) gets `mousflow-checksums.json` at its root when it is finalised: the
sha256 of every object under it. A reader verifies them before it uses any of the data and refuses, naming
the object, anything overwritten, truncated, removed or added since.

Walking a local tree opens regular files only: a named pipe, socket or device where data should be is
refused by its type, never opened (opening a named pipe blocks until someone writes to it).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import stat
from concurrent.futures import ThreadPoolExecutor

from mousflow.errors import InvalidInput
from mousflow.storage.location import Location

CHECKSUMS = "mousflow-checksums.json"
CHECKSUM_ALGORITHM = "sha256"
HASH_BLOCK = 8 * 2**20

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


def sha256_of_object(loc: Location) -> str:
    if loc.is_local:
        require_regular_file(loc.path)
    h = hashlib.sha256()
    with loc.fs.open(loc.path, "rb") as fh:
        while block := fh.read(HASH_BLOCK):
            h.update(block)
    return h.hexdigest()


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


def object_digests(loc: Location, *, etags: bool = False, threads: int = 1) -> dict[str, str]:
    """relative path -> digest of every object under a directory (or prefix). The digest is the sha256 of the
    content, or with `etags` in object storage the object's ETag: derived from the content by the store (the
    MD5 of a single-part upload, a hash of the parts' MD5s otherwise), it costs nothing to read and changes
    whenever the content does. threads: local objects hashed that many at a time (hashlib and reads release
    the GIL)."""
    if loc.is_local:
        objects = _local_objects(loc.path)
        with ThreadPoolExecutor(max(1, threads)) as pool:
            digests = pool.map(lambda rel: sha256_of_object(Location(posixpath.join(loc.path, rel))), objects)
            return dict(zip(objects, digests, strict=True))
    loc.fs.invalidate_cache(loc.path)
    digests = {}
    for name, info in sorted(loc.fs.find(loc.path, detail=True).items()):
        etag = info.get("ETag") or info.get("etag")
        digests[posixpath.relpath(name, loc.path)] = str(etag).strip('"') if etags and etag else \
            sha256_of_object(Location(f"{loc.protocol}://{name}"))
    return digests


def tree_digest(digests: dict[str, str]) -> str:
    """One digest for a tree from its objects' digests (sorted relative paths and their digests)."""
    return hashlib.sha256("".join(f"{rel}\0{d}\n" for rel, d in sorted(digests.items())).encode()).hexdigest()


def content_digest(loc: Location, *, recorded: bool = False) -> str:
    """sha256 of a file, or a digest of a directory tree: `tree_digest` of `object_digests` (ETags in S3), its
    CHECKSUMS record left out (derived from the rest).

    recorded: a local tree's objects' sha256 taken from its CHECKSUMS record, where it has one naming every
    object, not read again. For a writer that has just recorded them from the bytes on disk (a stage committing
    its checkpoint right after finalize_processing_set): the same digest, without hashing a full-size
    processing set a second time (2-3 s a GB). A check that the tree is unchanged leaves it False."""
    fs, path = loc.fs, loc.path
    if not loc.exists():
        raise FileNotFoundError(loc.uri)
    if not fs.isdir(path):
        return sha256_of_object(loc)
    if recorded and loc.is_local:
        known = recorded_checksums(loc)
        if known is not None and set(known) == set(_local_objects(path)) - {CHECKSUMS}:
            return tree_digest(known)
    return tree_digest({rel: d for rel, d in object_digests(loc, etags=True).items() if rel != CHECKSUMS})


# --- checksums recorded with a Zarr store -------------------------------------------------------------------


def record_checksums(loc: Location, *, threads: int = 1) -> dict[str, str]:
    """Write CHECKSUMS under `loc`: the sha256 of every object in it (local ones `threads` at a time). Call when
    everything else is written."""
    digests = {rel: d for rel, d in object_digests(loc, threads=threads).items() if rel != CHECKSUMS}
    loc.join(CHECKSUMS).write_json({"algorithm": CHECKSUM_ALGORITHM, "objects": digests}, indent=None)
    return digests


def recorded_checksums(loc: Location) -> dict[str, str] | None:
    """The checksums recorded with a store, or None if it has none (written by other software)."""
    doc_loc = loc.join(CHECKSUMS)
    if not doc_loc.exists():
        return None
    try:
        doc = json.loads(doc_loc.read_bytes())
        objects = doc["objects"]
        if doc.get("algorithm") != CHECKSUM_ALGORITHM or not isinstance(objects, dict):
            raise ValueError(f"algorithm {doc.get('algorithm')!r}")
    except (ValueError, KeyError, TypeError) as exc:
        raise DamagedData(f"{doc_loc.uri}: the recorded checksums are unreadable ({exc})") from None
    return {str(k): str(v) for k, v in objects.items()}


def verify_checksums(loc: Location, what: str = "",
                     remedy: str = "copy it again from its source") -> dict[str, str] | None:
    """Recompute the sha256 of every object under `loc` and compare with the recorded checksums; returns the
    digests (None when nothing was recorded). Raises DamagedData naming the first object that differs, what
    the data is (`what`) and what to do about it (`remedy`)."""
    recorded = recorded_checksums(loc)
    if recorded is None:
        return None
    actual = {rel: d for rel, d in object_digests(loc).items() if rel != CHECKSUMS}
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
