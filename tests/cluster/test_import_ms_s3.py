"""`mousflow import-ms` straight to the test bed's MinIO: a committed MOUS the stages read from S3, and a
destination that cannot be written (no such bucket, wrong credentials) refused with one line, nothing left."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
import s3fs

pytestmark = pytest.mark.cluster

GOAL_ARGS = ["--sensitivity", "0.0004", "--resolution", "2", "8", "--project-code", "2026.1.00099.S",
             "--calibrator-flux", "J0423-0120", "1.25", "1e11", "-0.65"]


def _fs(env: dict) -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(key=env["AWS_ACCESS_KEY_ID"], secret=env["AWS_SECRET_ACCESS_KEY"],
                             client_kwargs={"endpoint_url": env["MOUSFLOW_S3_ENDPOINT"]})


def _mousflow(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mousflow.cli", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=600)


def test_import_to_s3_is_committed_and_calibrates_from_s3(s3_env, casa_ms):
    fs = _fs(s3_env)
    bucket = f"mousflow-ingest-{uuid.uuid4().hex[:8]}"
    fs.mkdir(bucket)
    out = f"s3://{bucket}/mous"
    proc = _mousflow(s3_env, "import-ms", casa_ms["ms"], "--out", out, *GOAL_ARGS)
    assert proc.returncode == 0, proc.stderr
    assert "uploading" in proc.stdout
    assert fs.exists(f"{bucket}/mous/_MOUSFLOW_COMMITTED")
    (eb,) = fs.ls(f"{bucket}/mous/eb")
    assert eb.endswith(".ps.zarr")
    assert f"uri: s3://{eb}" in fs.cat(f"{bucket}/mous/mous.yaml").decode()
    proc = _mousflow(s3_env, "stage", "calibration", "--manifest", f"{out}/mous.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert fs.exists(f"{bucket}/mous/output/calibration/summary.json")


@pytest.mark.parametrize("problem", ["missing bucket", "wrong credentials"])
def test_an_unwritable_s3_destination_is_refused(s3_env, casa_ms, problem):
    env = dict(s3_env)
    bucket = f"mousflow-ingest-{uuid.uuid4().hex[:8]}"
    if problem == "wrong credentials":
        _fs(s3_env).mkdir(bucket)
        env["AWS_SECRET_ACCESS_KEY"] = "not-the-secret"
    proc = _mousflow(env, "import-ms", casa_ms["ms"], "--out", f"s3://{bucket}/mous", *GOAL_ARGS)
    assert proc.returncode != 0
    (line,) = proc.stderr.strip().splitlines()
    reason = "InputMissing" if problem == "missing bucket" else "AccessDenied"
    assert line.startswith(f"mousflow: error: {reason}: cannot write to s3://{bucket}/mous"), line
    assert "converting" not in proc.stdout
    fs = _fs(s3_env)
    if problem == "missing bucket":
        assert not fs.exists(bucket)
    else:
        assert fs.ls(bucket, refresh=True) == []
