"""Every failure is classified: a reason, an exit code, one line."""

from __future__ import annotations

import errno

import pytest

from mousflow.errors import EXIT_CODES, InvalidInput, classify, describe_error, exit_code_of


@pytest.mark.parametrize("exc,reason,words", [
    (InvalidInput("bad band\nsecond line"), "InvalidInput", "bad band"),
    (FileNotFoundError(errno.ENOENT, "No such file", "/data/x.yaml"), "InputMissing", "/data/x.yaml"),
    (OSError(errno.ENOSPC, "No space left on device", "/data/out/c/0"), "Unavailable",
     "no space left on device writing /data/out/c/0"),
    (OSError(errno.EROFS, "Read-only file system"), "Unavailable", "read-only file system"),
    (PermissionError(errno.EACCES, "Permission denied", "/data"), "AccessDenied", "permission denied: /data"),
    (ConnectionRefusedError("refused"), "Unavailable", "refused"),
    (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), "InvalidInput", "not UTF-8"),
    (ValueError("not a number"), "InvalidInput", "not a number"),
    (KeyError("x"), "Error", "KeyError"),
])
def test_classification(exc, reason, words):
    failure = classify(exc)
    assert failure.reason == reason and words in describe_error(exc)
    assert describe_error(exc).startswith(f"{reason}: ") and "\n" not in describe_error(exc)
    assert exit_code_of(reason) == EXIT_CODES[reason]


def test_exit_codes_are_distinct():
    assert len(set(EXIT_CODES.values())) == len(EXIT_CODES) and exit_code_of("OOMKilled") == 1


def test_an_http_service_restarting_is_unavailable():
    """Seen in the chaos suite: imaging's dask-kubernetes (kr8s, over httpx) lost the API server while it
    restarted, and the stage failed with an unclassified Error that spent a run attempt."""
    import httpx

    assert classify(httpx.ReadError("")).reason == "Unavailable"
    assert classify(httpx.ConnectError("[Errno 111] Connection refused")).reason == "Unavailable"
    assert classify(httpx.HTTPStatusError("404", request=httpx.Request("GET", "http://x"),
                                          response=httpx.Response(404))).reason == "Error"
