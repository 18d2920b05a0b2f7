"""Tenancy on the real test bed: with a storage policy, a MOUS applied with kubectl in one namespace that names
another tenant's prefix (as its output or its delivery) is refused before anything reads or writes there, and
that tenant's data is untouched; a MOUS within its own prefixes goes on. The operator is a local process with
MOUSFLOW_STORAGE_POLICY (the chart's tenancy.storagePolicy) and admits nothing (MOUSFLOW_MAX_PROCESSING=0): the
decision is made before admission, so no stage has to run."""

from __future__ import annotations

import json

import pytest
import yaml

from mousflow.storage.location import Location

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("host_s3")]
NAMESPACE_PREFIX = "tenant-a"


@pytest.fixture(scope="module")
def prefixes(tiny_s3_mous, s3_env) -> dict:
    """Tenant A's own prefix, tenant B's (holding B's delivered product), and the shared archive (the inputs)."""
    b = f"{tiny_s3_mous}/tenant-b"
    with pytest.MonkeyPatch.context() as mp:  # module scope: before the tests' own host_s3
        for k, v in s3_env.items():
            mp.setenv(k, v)
        Location.of(f"{b}/delivered/cube.fits").write_bytes(b"tenant B's product")
    return {"archive": f"{tiny_s3_mous}/eb/", "a": f"{tiny_s3_mous}/tenant-a/", "b": f"{b}/"}


@pytest.fixture(scope="module")
def operator_overrides(mous_namespace, prefixes) -> dict[str, str]:
    policy = {mous_namespace: {"read": [prefixes["archive"]], "write": [prefixes["a"]]},
              "*": {"read": [], "write": []}}
    return {"MOUSFLOW_STORAGE_POLICY": json.dumps(policy), "MOUSFLOW_MAX_PROCESSING": "0"}


def _apply(cluster, namespace, tiny_s3_mous, name, output, delivery=None) -> None:
    doc = yaml.safe_load(Location(f"{tiny_s3_mous}/mous.yaml").read_text())
    doc["metadata"] = {"name": name}
    doc["spec"]["output"]["uri"] = output
    doc["spec"]["delivery"] = {"uri": delivery or f"{output}-delivered", "automatic": True}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))


def _status(cluster, namespace, name) -> dict:
    return cluster.get("mous", name, namespace).get("status") or {}


def _objects(prefix: str) -> dict[str, str]:
    loc = Location.of(prefix)
    loc.fs.invalidate_cache()
    return {p: loc.fs.info(p).get("ETag", "") for p in loc.fs.find(loc.path)}


def test_a_mous_naming_another_tenants_prefix_is_refused_and_that_tenant_is_untouched(
        cluster, mous_namespace, tiny_s3_mous, operator, prefixes):
    assert yaml.safe_load(Location(f"{tiny_s3_mous}/mous.yaml").read_text())["spec"]["executionBlocks"][0][
        "uri"].startswith(prefixes["archive"])
    before = _objects(prefixes["b"])
    assert before, "tenant B's product was not written"
    _apply(cluster, mous_namespace, tiny_s3_mous, "into-b", output=f"{prefixes['b']}runs/x")
    _apply(cluster, mous_namespace, tiny_s3_mous, "deliver-to-b", output=f"{prefixes['a']}runs/y",
           delivery=f"{prefixes['b']}delivered")
    _apply(cluster, mous_namespace, tiny_s3_mous, "own", output=f"{prefixes['a']}runs/own")

    def degraded(name):
        cond = {c["type"]: c for c in _status(cluster, mous_namespace, name).get("conditions", [])}.get("Degraded")
        return cond if cond and cond["status"] == "True" else None

    for name, field in (("into-b", "spec.output.uri"), ("deliver-to-b", "spec.delivery.uri")):
        cond = cluster.wait_until(f"{name} refused by the storage policy", lambda n=name: degraded(n), timeout=90)
        assert cond["reason"] == "StoragePolicy", cond
        assert cond["message"].startswith(f"{field}: namespace {mous_namespace} may not write {prefixes['b']}"), cond
        status = _status(cluster, mous_namespace, name)
        assert status["phase"] == "FullyObserved" and not status.get("flowRunId") and not status.get("stages")
    # the MOUS within its own prefixes is checked and queued (nothing is admitted in this module)
    try:
        cluster.wait_until("the MOUS within its prefixes queued",
                           lambda: _status(cluster, mous_namespace, "own").get("phase") == "ReadyForProcessing",
                           timeout=120)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {json.dumps(_status(cluster, mous_namespace, 'own'))[:3000]}\n"
                             f"{operator.log_tail()}") from None
    assert degraded("own") is None
    assert not json.loads(cluster.kubectl("get", "jobs", "-n", mous_namespace, "-o", "json"))["items"]
    assert _objects(prefixes["b"]) == before  # nothing added, nothing rewritten
    events = json.loads(cluster.kubectl("get", "events", "-n", mous_namespace, "-o", "json"))["items"]
    assert any(e["reason"] == "StoragePolicy" and e["involvedObject"]["name"] == "into-b" for e in events)
