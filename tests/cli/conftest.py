"""Fixtures of the bad-input table (the harness itself is bad_input_harness.py)."""

from __future__ import annotations

import contextlib

import pytest
from bad_input_harness import Workspace


@pytest.fixture
def workspace(tmp_path, tiny_mous, monkeypatch) -> Workspace:
    # Short storage timeouts: an unreachable endpoint must be reported, not waited for.
    for key, value in {"MOUSFLOW_S3_CONNECT_TIMEOUT": "2", "MOUSFLOW_S3_READ_TIMEOUT": "5",
                       "MOUSFLOW_S3_MAX_ATTEMPTS": "1", "MOUSFLOW_KUBE_TIMEOUT_SECONDS": "5",
                       "AWS_ACCESS_KEY_ID": "mousflow-test", "AWS_SECRET_ACCESS_KEY": "not-a-secret",
                       "MOUSFLOW_DASK": "inline"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with contextlib.suppress(ImportError):
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
    return Workspace(tmp_path, tiny_mous, monkeypatch)
