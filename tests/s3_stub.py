"""A minimal S3 endpoint on a loopback port, for tests without an object store: the object operations s3fs uses
(GET, HEAD, PUT with If-None-Match / If-Match, DELETE, ListObjectsV2) on an in-memory dict, or, with
`refuse_credentials`, a 403 InvalidAccessKeyId for every request (what a store says to wrong credentials)."""

from __future__ import annotations

import hashlib
import threading
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape


class StubS3:
    def __init__(self, *, refuse_credentials: bool = False, conditional_writes: bool = True):
        self.objects: dict[tuple[str, str], bytes] = {}
        self.buckets: set[str] = set()
        self.refuse_credentials = refuse_credentials
        self.conditional_writes = conditional_writes
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # answers "Expect: 100-continue", which botocore sends before a body

            def log_message(self, *_args):  # quiet
                pass

            def do_GET(self):
                stub._handle(self, "GET")

            def do_HEAD(self):
                stub._handle(self, "HEAD")

            def do_PUT(self):
                stub._handle(self, "PUT")

            def do_DELETE(self):
                stub._handle(self, "DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> StubS3:
        self.thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- requests ------------------------------------------------------------------------------------------

    def _handle(self, req: BaseHTTPRequestHandler, method: str) -> None:
        body = req.rfile.read(int(req.headers.get("Content-Length") or 0)) if method == "PUT" else b""
        if "aws-chunked" in (req.headers.get("Content-Encoding") or ""):
            body = _decode_aws_chunked(body)
        if self.refuse_credentials:
            return _error(req, 403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist.")
        parts = urlsplit(req.path)
        bucket, _, key = unquote(parts.path).lstrip("/").partition("/")
        query = parse_qs(parts.query)
        with self.lock:
            if not key:
                return self._bucket(req, method, bucket, query)
            if bucket not in self.buckets:
                return _error(req, 404, "NoSuchBucket", "The specified bucket does not exist.")
            current = self.objects.get((bucket, key))
            if method in ("GET", "HEAD"):
                if current is None:
                    return _error(req, 404, "NoSuchKey", "The specified key does not exist.", head=method == "HEAD")
                return _send(req, 200, current if method == "GET" else b"", etag=_etag(current),
                             length=len(current))
            if method == "DELETE":
                self.objects.pop((bucket, key), None)
                return _send(req, 204, b"")
            if_none, if_match = req.headers.get("If-None-Match"), req.headers.get("If-Match")
            if (if_none or if_match) and not self.conditional_writes:
                return _error(req, 501, "NotImplemented", "Conditional writes are not implemented.")
            if if_none == "*" and current is not None:
                return _error(req, 412, "PreconditionFailed", "At least one of the preconditions failed.",
                              condition="If-None-Match")
            if if_match and (current is None or _etag(current) != if_match):
                return _error(req, 412 if current is not None else 404,
                              "PreconditionFailed" if current is not None else "NoSuchKey",
                              "At least one of the preconditions failed.", condition="If-Match")
            self.objects[(bucket, key)] = body
            return _send(req, 200, b"", etag=_etag(body))

    def _bucket(self, req, method: str, bucket: str, query: dict) -> None:
        if method == "PUT":
            self.buckets.add(bucket)
            return _send(req, 200, b"")
        if bucket not in self.buckets:
            return _error(req, 404, "NoSuchBucket", "The specified bucket does not exist.", head=method == "HEAD")
        if method == "HEAD":
            return _send(req, 200, b"")
        prefix = query.get("prefix", [""])[0]
        delimiter = query.get("delimiter", [""])[0]
        keys, common = [], set()
        for (b, k), data in sorted(self.objects.items()):
            if b != bucket or not k.startswith(prefix):
                continue
            rest = k[len(prefix):]
            if delimiter and delimiter in rest:
                common.add(prefix + rest.split(delimiter, 1)[0] + delimiter)
            else:
                keys.append((k, data))
        xml = "".join(f"<Contents><Key>{escape(k)}</Key><Size>{len(d)}</Size><ETag>{_etag(d)}</ETag>"
                      f"<LastModified>2026-01-01T00:00:00.000Z</LastModified><StorageClass>STANDARD</StorageClass>"
                      f"</Contents>" for k, d in keys)
        xml += "".join(f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>" for p in sorted(common))
        doc = (f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>{bucket}</Name>'
               f"<Prefix>{escape(prefix)}</Prefix><KeyCount>{len(keys) + len(common)}</KeyCount>"
               f"<MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>{xml}</ListBucketResult>")
        return _send(req, 200, doc.encode(), content_type="application/xml")


def _etag(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


def _send(req, status: int, body: bytes, *, etag: str | None = None, length: int | None = None,
          content_type: str = "application/octet-stream") -> None:
    req.send_response(status)
    req.send_header("Content-Type", content_type)
    req.send_header("Content-Length", str(len(body) if length is None else length))
    req.send_header("Last-Modified", formatdate(usegmt=True))
    if etag:
        req.send_header("ETag", etag)
    req.end_headers()
    if body and req.command != "HEAD":
        req.wfile.write(body)


def _error(req, status: int, code: str, message: str, *, head: bool = False, condition: str = "") -> None:
    extra = f"<Condition>{condition}</Condition>" if condition else ""
    body = b"" if head else (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                             f"<Message>{escape(message)}</Message>{extra}</Error>").encode()
    _send(req, status, body, content_type="application/xml")


def _decode_aws_chunked(body: bytes) -> bytes:
    """botocore sends some bodies as aws-chunked: '<hex size>[;...]\\r\\n<data>\\r\\n' ... '0\\r\\n<trailers>'."""
    out, pos = bytearray(), 0
    while True:
        end = body.index(b"\r\n", pos)
        size = int(body[pos:end].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += body[end + 2:end + 2 + size]
        pos = end + 2 + size + 2
