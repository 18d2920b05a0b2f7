"""The lock of an output location: one run at a time writes there.

Two runs writing the same output location interleave their stages' outputs and checkpoints (one such pair
once ended with QA2 Pass and a whole spectral window missing). A run holds the lock of its output location,
`<output>/_MOUSFLOW_LOCK`, from before its first write to after its last; a second run finds it held and
refuses with Busy, naming the holder.

- Local disk: an exclusive `flock` on the lock file. The kernel releases it when the holder's process ends,
  however it ends (SIGKILL included), so no lock is ever left behind; the file keeps the holder's description.
- Object storage has no locks: the lock is an object holding its owner and an expiry, created only if absent
  (a conditional PUT, If-None-Match: *). The holder renews it every third of its lease (If-Match on its ETag)
  and deletes it at the end. A holder killed without deleting it leaves it until it expires; then the next
  run replaces it, again conditionally (If-Match on the expired lock's ETag), so two runs cannot both take it
  over. AWS S3 and MinIO support conditional writes. A store that answers them with NotImplemented gets a
  best-effort lock instead: checked, written, then read back to see whose it is; two runs starting in the same
  instant can then both proceed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass

from mousflow.errors import Busy, InvalidInput
from mousflow.storage.location import Location

LOCK_NAME = "_MOUSFLOW_LOCK"


def lease_seconds() -> float:
    """How long an object-storage lock stays valid without renewal (MOUSFLOW_LOCK_LEASE_SECONDS, default 600)."""
    return float(os.environ.get("MOUSFLOW_LOCK_LEASE_SECONDS", 600))


@dataclass(frozen=True)
class LockOwner:
    token: str
    purpose: str
    host: str
    pid: int
    acquired: float
    expires: float | None = None
    """Unix time after which an object-storage lock may be taken over; None for a local lock (held by a process)."""

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.acquired))
        return f"{self.purpose} (pid {self.pid} on {self.host}, since {since})"

    @classmethod
    def parse(cls, data: bytes) -> LockOwner | None:
        try:
            doc = json.loads(data)
            return cls(**{k: doc[k] for k in ("token", "purpose", "host", "pid", "acquired")},
                       expires=doc.get("expires"))
        except (ValueError, KeyError, TypeError):
            return None


class OutputLock:
    """`with OutputLock(run_root, "mousflow run of uid://..."):` holds the output location's lock or raises
    Busy. Not reentrant: a second lock of the same location is refused even within one process."""

    def __init__(self, root: Location, purpose: str):
        self.root = root
        self.location = root.join(LOCK_NAME)
        self.purpose = purpose
        self.owner: LockOwner | None = None
        self.conditional = True
        self._fd: int | None = None
        self._etag: str | None = None
        self._renewer: threading.Thread | None = None
        self._stop = threading.Event()

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *_exc) -> None:
        self.release()

    def _new_owner(self, expires: float | None) -> LockOwner:
        return LockOwner(uuid.uuid4().hex, self.purpose, socket.gethostname(), os.getpid(), time.time(), expires)

    def _busy(self, holder: LockOwner | None) -> Busy:
        who = holder.describe() if holder else "another run"
        return Busy(f"{self.root.uri} is in use by {who}: wait for it to finish, or give this run another "
                    f"output location")

    def acquire(self) -> None:
        if self.root.is_local:
            self._acquire_local()
        else:
            self._acquire_object()

    def release(self) -> None:
        if self.root.is_local:
            self._release_local()
        else:
            self._release_object()

    # --- local disk ------------------------------------------------------------------------------------------

    def _acquire_local(self) -> None:
        try:
            os.makedirs(self.root.path, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:  # a file where a directory must be
            raise InvalidInput(f"{self.root.uri} cannot be an output location: part of its path is a file "
                               f"({exc.strerror})") from None
        fd = os.open(self.location.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = LockOwner.parse(os.pread(fd, 65536, 0))
            os.close(fd)
            raise self._busy(holder) from None
        self.owner = self._new_owner(None)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(asdict(self.owner)).encode(), 0)
        self._fd = fd

    def _release_local(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing the only descriptor releases the flock
        self._fd = None
        self.owner = None

    # --- object storage --------------------------------------------------------------------------------------

    def _bucket_key(self) -> tuple[str, str]:
        bucket, _, key = self.location.path.partition("/")
        return bucket, key

    def _read_object(self) -> tuple[LockOwner | None, str | None]:
        """The current lock object's owner and ETag, (None, None) if there is none."""
        bucket, key = self._bucket_key()
        try:
            out = self.location.fs.call_s3("get_object", Bucket=bucket, Key=key)
        except FileNotFoundError:
            return None, None
        return LockOwner.parse(_read_body(self.location.fs, out)), out.get("ETag")

    def _put_object(self, owner: LockOwner, **condition) -> str:
        bucket, key = self._bucket_key()
        out = self.location.fs.call_s3("put_object", Bucket=bucket, Key=key,
                                       Body=json.dumps(asdict(owner)).encode(), **condition)
        self.location.fs.invalidate_cache(self.location.path)
        return out.get("ETag")

    def _acquire_object(self) -> None:
        holder, etag = self._read_object()
        if holder is not None and (holder.expires or 0) > time.time():
            raise self._busy(holder)
        owner = self._new_owner(time.time() + lease_seconds())
        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        try:
            self._etag = self._put_object(owner, **(condition if self.conditional else {}))
        except FileExistsError:  # created by another run since we looked
            raise self._busy(self._read_object()[0]) from None
        except OSError as exc:
            if _not_implemented(exc):
                self.conditional = False
                self._etag = self._put_object(owner)
            elif etag and _precondition_failed(exc):  # the expired lock was taken over by another run first
                raise self._busy(self._read_object()[0]) from None
            else:
                raise
        current, self._etag = self._read_object()
        if current is None or current.token != owner.token:  # only possible without conditional writes
            raise self._busy(current)
        self.owner = owner
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew, name="mousflow-lock-renewal", daemon=True)
        self._renewer.start()

    def _renew(self) -> None:
        while not self._stop.wait(lease_seconds() / 3):
            owner = LockOwner(**{**asdict(self.owner), "expires": time.time() + lease_seconds()})
            try:
                self._etag = self._put_object(owner, **({"IfMatch": self._etag} if self.conditional else {}))
                self.owner = owner
            except Exception as exc:  # keep the run going; the next renewal tries again before the lease ends
                print(f"mousflow: could not renew the lock {self.location.uri}: {exc}", flush=True)

    def _release_object(self) -> None:
        if self.owner is None:
            return
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        current, _ = self._read_object()
        if current is not None and current.token == self.owner.token:
            bucket, key = self._bucket_key()
            self.location.fs.call_s3("delete_object", Bucket=bucket, Key=key)
            self.location.fs.invalidate_cache(self.location.path)
        self.owner = None


def _read_body(fs, response: dict) -> bytes:
    """The body of an s3fs `get_object` response (an aiobotocore stream, read on s3fs's event loop)."""
    from fsspec.asyn import sync

    async def read():
        async with response["Body"] as stream:
            return await stream.read()

    return sync(fs.loop, read)


def _precondition_failed(exc: OSError) -> bool:
    return "PreconditionFailed" in str(exc.__cause__ or exc) or "412" in str(exc.__cause__ or "")


def _not_implemented(exc: OSError) -> bool:
    return "NotImplemented" in str(exc.__cause__ or exc) or "501" in str(exc.__cause__ or "")
