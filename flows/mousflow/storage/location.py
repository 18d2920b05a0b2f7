"""Locations in object storage or on a local disk, addressed the same way.

A `Location` is a URI (s3://bucket/prefix, file:///path or /path) plus the fsspec filesystem that serves it.
Anything written as a unit (a simulated MOUS, a stage's outputs) is only valid once its commit marker exists:
data first, marker last, so a reader never mistakes an interrupted write for a finished one.
"""

from __future__ import annotations

import errno
import json
import os
import posixpath
import shutil
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import fsspec

from mousflow.errors import AccessDenied, InputMissing, MousflowError, Unavailable, classify, first_line

COMMIT_MARKER = "_MOUSFLOW_COMMITTED"


class StorageError(InputMissing):
    """A location that cannot be read or written; the message says which and why."""


def s3_endpoint() -> str | None:
    return os.environ.get("MOUSFLOW_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL") or None


def s3_options_from_env() -> dict[str, Any]:
    """s3fs options from the environment (AWS_* credentials, MOUSFLOW_S3_ENDPOINT for MinIO and friends).

    botocore's defaults (60 s to connect, retried with backoff) make an unreachable endpoint look like a hang;
    MOUSFLOW_S3_CONNECT_TIMEOUT (s, default 10), MOUSFLOW_S3_READ_TIMEOUT (s, default 60) and
    MOUSFLOW_S3_MAX_ATTEMPTS (default 3) bound how long it takes to say so."""
    opts: dict[str, Any] = {"config_kwargs": {
        "connect_timeout": float(os.environ.get("MOUSFLOW_S3_CONNECT_TIMEOUT", 10)),
        "read_timeout": float(os.environ.get("MOUSFLOW_S3_READ_TIMEOUT", 60)),
        "retries": {"max_attempts": int(os.environ.get("MOUSFLOW_S3_MAX_ATTEMPTS", 3)), "mode": "standard"},
    }}
    endpoint = s3_endpoint()
    if endpoint:
        opts["client_kwargs"] = {"endpoint_url": endpoint}
    return opts


def _from_object_store(exc: BaseException) -> bool:
    """Whether an exception came from botocore (s3fs keeps botocore's error as the cause of its own)."""
    while exc is not None:
        if type(exc).__module__.startswith(("botocore", "aiobotocore")):
            return True
        exc = exc.__cause__
    return False


def classify_failure(exc: BaseException) -> MousflowError:
    """`mousflow.errors.classify`, knowing what the object store's errors mean: a connection that fails or
    times out makes the store Unavailable, credentials that are missing or refused (for this location, by a
    policy) AccessDenied (with the endpoint in the message)."""
    if isinstance(exc, MousflowError) or not _from_object_store(exc):
        return classify(exc)
    where = f"the object store at {s3_endpoint() or 'AWS S3'}"
    name = type(exc).__name__
    if isinstance(exc, PermissionError) or name in ("NoCredentialsError", "PartialCredentialsError"):
        text = "no credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)" if "Credentials" in name \
            else f"access refused ({str(exc).strip() or 'check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY'})"
        classified = AccessDenied(f"{where}: {text}")
    elif "Connect" in name or "Timeout" in name or isinstance(exc, ConnectionError | TimeoutError):
        classified = Unavailable(f"cannot reach {where}: {first_line(exc)}")
    else:
        return classify(exc)
    classified.__cause__ = exc
    return classified


@dataclass(frozen=True)
class Location:
    uri: str

    def __post_init__(self):
        if not self.uri:
            raise StorageError("empty location")

    @classmethod
    def of(cls, uri: str | os.PathLike) -> Location:
        uri = os.fspath(uri)
        if "://" not in uri:
            uri = os.path.abspath(uri)
        return cls(uri.rstrip("/") or "/")

    @property
    def protocol(self) -> str:
        return self.uri.split("://", 1)[0] if "://" in self.uri else "file"

    @property
    def is_local(self) -> bool:
        return self.protocol == "file"

    @property
    def path(self) -> str:
        """The filesystem path (no protocol) fsspec's filesystem expects."""
        if self.uri.startswith("file://"):
            return self.uri[len("file://"):]
        if "://" in self.uri:
            return self.uri.split("://", 1)[1]
        return self.uri

    @cached_property
    def fs(self) -> fsspec.AbstractFileSystem:
        if self.protocol == "s3":
            return fsspec.filesystem("s3", **s3_options_from_env())
        return fsspec.filesystem(self.protocol)

    def storage_options(self) -> dict[str, Any]:
        return s3_options_from_env() if self.protocol == "s3" else {}

    def zarr_store(self, *, read_only: bool = False):
        """What zarr (and xarray's zarr engine) open for this location: a local path, or an fsspec store for
        s3:// (zarr imported here: a reader of plain files needs none of it)."""
        if self.is_local:
            return self.path
        import zarr.storage

        return zarr.storage.FsspecStore.from_url(self.uri, storage_options=self.storage_options(),
                                                 read_only=read_only)

    def join(self, *parts: str) -> Location:
        return Location(posixpath.join(self.uri, *parts))

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    def exists(self) -> bool:
        if not self.is_local:
            # s3fs answers from its cached listing of the parent when it has one: an object another process
            # (a stage pod) wrote after this process listed the folder would stay invisible.
            self.fs.invalidate_cache(self.path)
        return self.fs.exists(self.path)

    def read_text(self) -> str:
        try:
            with self.fs.open(self.path, "r") as fh:
                return fh.read()
        except FileNotFoundError as exc:
            raise StorageError(f"{self.uri} does not exist") from exc

    def read_bytes(self) -> bytes:
        try:
            with self.fs.open(self.path, "rb") as fh:
                return fh.read()
        except FileNotFoundError as exc:
            raise StorageError(f"{self.uri} does not exist") from exc

    def write_bytes(self, data: bytes) -> None:
        """Write a whole object; on a local disk through a temporary name and a rename, so it is atomic."""
        if self.is_local:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            tmp = f"{self.path}.tmp-{os.getpid()}"
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        else:
            with self.fs.open(self.path, "wb") as fh:
                fh.write(data)

    def copy_to(self, dst: Location, block_bytes: int = 4 << 20) -> str:
        """Copy this object to `dst` without holding it in memory: inside one filesystem by the filesystem's own
        copy (S3 CopyObject: the bytes stay in the object store), between filesystems in blocks (at most
        `block_bytes` in memory); on a local disk through a temporary name and a rename, as write_bytes. Returns
        "server-side" or "streamed"."""
        if self.protocol == dst.protocol and not self.is_local:
            dst.fs.copy(self.path, dst.path)
            return "server-side"
        if dst.is_local:
            os.makedirs(os.path.dirname(dst.path), exist_ok=True)
            tmp = f"{dst.path}.tmp-{os.getpid()}"
            with self.fs.open(self.path, "rb") as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, block_bytes)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, dst.path)
        else:
            with self.fs.open(self.path, "rb") as src, dst.fs.open(dst.path, "wb") as out:
                shutil.copyfileobj(src, out, block_bytes)
        return "streamed"

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode())

    def write_json(self, obj: Any, indent: int | None = 2) -> None:
        self.write_text(json.dumps(obj, indent=indent, sort_keys=True) + "\n")

    def read_json(self) -> Any:
        return json.loads(self.read_text())

    def is_empty(self) -> bool:
        if not self.exists():
            return True
        return not self.fs.ls(self.path)

    def remove(self) -> None:
        if not self.exists():
            return
        if self.is_local:
            remove_local_tree(self.path)
        else:
            self.fs.rm(self.path, recursive=True)

    # --- commit protocol -------------------------------------------------------------------------------------

    @property
    def marker(self) -> Location:
        return self.join(COMMIT_MARKER)

    def is_committed(self) -> bool:
        return self.marker.exists()

    def commit(self, summary: dict[str, Any]) -> None:
        """Mark everything under this location as complete. Call only after all data is written."""
        self.marker.write_json(summary)

    def check_writable(self) -> None:
        """Fail early, with the reason, if nothing can be written here (missing bucket, read-only directory).

        A local location need not exist yet (it is made by renaming a staging directory into place): what must
        exist and be writable is its parent directory."""
        if self.is_local:
            parent = os.path.dirname(self.path) or "/"
            if not os.path.isdir(parent):
                reason = "is not a directory" if os.path.exists(parent) else "does not exist"
                raise StorageError(f"cannot write to {self.uri}: {parent} {reason}")
            if not os.access(parent, os.W_OK):
                raise StorageError(f"cannot write to {self.uri}: permission denied")
            return
        probe = self.join(f".mousflow-write-probe-{os.getpid()}")
        try:
            probe.write_bytes(b"")
            probe.fs.rm(probe.path)
        except FileNotFoundError as exc:
            raise StorageError(f"cannot write to {self.uri}: bucket or directory does not exist") from exc
        except Exception as exc:  # refused credentials, unreachable endpoint, ...: say which
            failure = classify_failure(exc)
            raise type(failure)(f"cannot write to {self.uri}: {failure}") from exc


def remove_local_tree(path: str, *, patience_s: float = 5.0) -> None:
    """Remove a local file or directory tree, waiting out writers that are still finishing.

    Zarr writes a node's chunks as concurrent tasks on its own event-loop thread; when one fails (a full disk),
    the caller gets that error at once while the others are still creating files. A plain `rmtree` then meets a
    directory that filled again behind it ("Directory not empty") and its error would hide the one that
    stopped the work. Those writers end within moments, so the removal is tried again for up to `patience_s`."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.ENOTEMPTY or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
