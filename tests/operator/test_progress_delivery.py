"""Stage status from Jobs and stage reports; delivery with checksum verification (local storage)."""

import hashlib
import json

import pytest

from mousflow.model import Phase
from mousflow_operator.delivery import DeliveryError, deliver
from mousflow_operator.progress import stage_status
from mousflow_operator.runs import RunOutcome, flow_run_name, idempotency_key


def _job(attempt, active=0, succeeded=0, start="2025-01-01T00:00:00Z", end=None):
    return {"metadata": {"annotations": {"mousflow.io/attempt": str(attempt)}, "creationTimestamp": start},
            "spec": {"template": {"spec": {"containers": [{"resources": {
                "requests": {"cpu": "1000m", "memory": "700Mi"}, "limits": {"memory": "1050Mi"}}}]}}},
            "status": {"startTime": start, "completionTime": end, "active": active, "succeeded": succeeded}}


def test_stage_status_running_then_succeeded_with_resources():
    running = stage_status(None, [_job(1, active=1)], "s3://b/out/checkpoints/imaging.json")
    assert running.state == "Running" and running.progress_percent == 0 and running.checkpoint_uri is None
    assert running.resources.requested.memory == "700Mi" and running.resources.limits.memory == "1050Mi"
    report = {"stage": "imaging", "state": "Succeeded", "metrics": {"peak_memory_bytes": 123, "wall_seconds": 4.0}}
    done = stage_status(report, [_job(1, succeeded=1, end="2025-01-01T00:01:00Z")], "s3://b/cp/imaging.json")
    assert done.state == "Succeeded" and done.progress_percent == 100 and done.attempts == 1
    assert done.resources.used.peak_memory_bytes == 123 and done.checkpoint_uri == "s3://b/cp/imaging.json"
    assert str(done.finished_at.date()) == "2025-01-01"


def test_stage_status_follows_a_retried_runs_job_not_the_failed_runs():
    """A person's retry numbers its Jobs from attempt 1 again while the failed run's (attempts up to 21) stay
    for their TTL: the newest Job is the one running."""
    failed = _job(21, start="2025-01-01T00:00:00Z", end="2025-01-01T00:05:00Z")
    failed["status"]["failed"] = 1
    retried = _job(1, active=1, start="2025-01-01T02:00:00Z")
    st = stage_status(None, [failed, retried], "s3://b/cp/imaging.json")
    assert st.state == "Running" and str(st.started_at) == "2025-01-01 02:00:00+00:00" and st.attempts == 2


def test_job_names_carry_a_tag_of_the_run():
    """The retried run's Jobs never take the failed run's names (deterministic, so a restart finds them)."""
    from mousflow_operator.runs import run_tag

    tags = {run_tag("uid://A001/X1/X2", 1, token, 1) for token in ("", "t1", "t2")}
    assert len(tags) == 3 and run_tag("uid://A001/X1/X2", 1, "t1", 1) == run_tag("uid://A001/X1/X2", 1, "t1", 1)
    assert flow_run_name("uid://A001/X1/X2", 1, "t1", 1).endswith(run_tag("uid://A001/X1/X2", 1, "t1", 1))


def test_idempotency_key_is_deterministic_and_changes_with_retry_and_attempt():
    k = idempotency_key("uid://A001/X1/X2", 1, "", 1)
    assert k == idempotency_key("uid://A001/X1/X2", 1, "", 1)
    assert k != idempotency_key("uid://A001/X1/X2", 1, "t1", 1) != idempotency_key("uid://A001/X1/X2", 1, "", 2)
    assert flow_run_name("uid://A001/X1/X2", 1, "", 1).startswith("A001-X1-X2-a1-")
    assert not RunOutcome("failed", "InputMissing").retryable and RunOutcome("failed", "OOMKilled").retryable


def _products(tmp_path):
    products = tmp_path / "out" / "products"
    products.mkdir(parents=True)
    (products / "a.fits").write_bytes(b"fits-data")
    entries = [{"name": "a.fits", "bytes": 9, "sha256": hashlib.sha256(b"fits-data").hexdigest()}]
    (products / "manifest.json").write_text(json.dumps({"products": entries}))
    return products


def test_delivery_copies_and_verifies(tmp_path):
    _products(tmp_path)
    where, n = deliver(str(tmp_path / "out"), str(tmp_path / "delivered"))
    assert n == 1 and (tmp_path / "delivered" / "a.fits").read_bytes() == b"fits-data"
    assert (tmp_path / "delivered" / "manifest.json").exists() and where.endswith("delivered")


def test_delivery_refuses_a_product_that_does_not_match_its_checksum(tmp_path):
    products = _products(tmp_path)
    (products / "a.fits").write_bytes(b"corrupted")
    with pytest.raises(DeliveryError, match="differs from the manifest"):
        deliver(str(tmp_path / "out"), str(tmp_path / "delivered"))


def test_delivery_within_one_object_store_copies_there_and_never_holds_a_product(monkeypatch):
    """memory:// stands for S3 here: one filesystem, whose own copy the delivery uses (CopyObject on S3)."""
    import fsspec

    from mousflow.storage.location import Location

    fs = fsspec.filesystem("memory")
    data = bytes(range(256)) * 40_000  # 10 MB: more than one read block
    fs.pipe("/mous/out/products/cube.fits", data)
    entries = [{"name": "cube.fits", "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}]
    fs.pipe("/mous/out/products/manifest.json", json.dumps({"products": entries}).encode())
    copies = []
    monkeypatch.setattr(type(fs), "copy", lambda self, a, b, **kw: (copies.append((a, b)), self.cp_file(a, b)))

    def whole_object_read(self):
        raise AssertionError(f"{self.uri} read whole into memory")

    monkeypatch.setattr(Location, "read_bytes", whole_object_read)
    where, n = deliver("memory://mous/out", "memory://mous/delivered")
    assert (where, n) == ("memory://mous/delivered", 1)
    assert fs.cat("/mous/delivered/cube.fits") == data
    assert ("mous/out/products/cube.fits", "mous/delivered/cube.fits") in [(a.lstrip("/"), b.lstrip("/"))
                                                                          for a, b in copies]


def test_a_copy_between_stores_is_streamed_in_blocks(tmp_path):
    import fsspec

    from mousflow.storage.location import Location

    data = b"x" * (3 << 20) + b"end"
    fsspec.filesystem("memory").pipe("/stream/cube.fits", data)
    how = Location.of("memory://stream/cube.fits").copy_to(Location.of(tmp_path / "d" / "cube.fits"), 1 << 20)
    assert how == "streamed" and (tmp_path / "d" / "cube.fits").read_bytes() == data
    assert not list((tmp_path / "d").glob("*.tmp-*"))


def test_a_delivery_that_cannot_reach_the_store_waits_and_a_bad_product_fails_it(tmp_path):
    from botocore.exceptions import EndpointConnectionError

    from mousflow_operator.delivery import delivery_failure_facts
    from mousflow_operator.lifecycle import Facts, next_transition

    away = delivery_failure_facts(EndpointConnectionError(endpoint_url="http://10.99.0.1:9000/mous"))
    assert set(away) == {"waiting"} and "cannot reach" in away["waiting"]
    assert next_transition(Phase.DELIVERY_IN_PROGRESS, Facts(**away)) is None  # stays, the Waiting condition on
    products = _products(tmp_path)
    (products / "a.fits").write_bytes(b"corrupted")
    with pytest.raises(DeliveryError) as bad:
        deliver(str(tmp_path / "out"), str(tmp_path / "delivered"))
    facts = delivery_failure_facts(bad.value)
    assert facts["delivered"] is False and "differs from the manifest" in facts["delivery_message"]
    assert next_transition(Phase.DELIVERY_IN_PROGRESS, Facts(**facts)).phase == Phase.FAILED
