"""The storage policy (mousflow_operator.tenancy): which locations a namespace's MOUSs may name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mousflow.model import load_manifest
from mousflow_operator.settings import OperatorSettings
from mousflow_operator.tenancy import PolicyError, StoragePolicy

MINIMAL = Path(__file__).resolve().parents[1] / "model" / "manifests" / "valid-minimal.yaml"
POLICY = {"alma-a": {"read": ["s3://archive/"], "write": ["s3://products/alma-a/"]},
          "*": {"read": ["s3://archive/public/"], "write": []}}


def _spec(inputs: list[str], output: str, delivery: str | None = None):
    doc = yaml.safe_load(MINIMAL.read_text())
    doc["spec"]["executionBlocks"] = [{**doc["spec"]["executionBlocks"][0], "uid": f"uid://A002/X1/X{i + 1}",
                                       "uri": uri} for i, uri in enumerate(inputs)]
    doc["spec"]["output"]["uri"] = output
    doc["spec"].pop("delivery", None)
    if delivery:
        doc["spec"]["delivery"] = {"uri": delivery}
    return load_manifest(yaml.safe_dump(doc)).spec


def test_a_namespace_uses_its_own_prefixes_only():
    policy = StoragePolicy.from_json(json.dumps(POLICY))
    ok = _spec(["s3://archive/2026/eb1.ps.zarr"], "s3://products/alma-a/run1", "s3://products/alma-a/delivered")
    assert policy.problems("alma-a", ok) == ()
    # its output written back is readable: the write prefixes are readable too
    assert policy.problems("alma-a", _spec(["s3://products/alma-a/old/eb.ps.zarr"], "s3://products/alma-a/r")) == ()
    into_b = _spec(["s3://archive/eb.ps.zarr"], "s3://products/alma-b/run1")
    (why,) = policy.problems("alma-a", into_b)
    assert why == ("spec.output.uri: namespace alma-a may not write s3://products/alma-b/run1 (the storage policy "
                   "allows it to write s3://products/alma-a/)")
    # a prefix matches whole path segments: alma-ab is not alma-a
    assert policy.problems("alma-a", _spec(["s3://archive/eb.ps.zarr"], "s3://products/alma-ab/run1"))
    # reading another tenant's data is refused as well, and a delivery outside the prefixes too
    found = policy.problems("alma-a", _spec(["s3://products/alma-b/eb.ps.zarr"], "s3://products/alma-a/r",
                                            "s3://elsewhere/d"))
    assert [p.split(":")[0] for p in found] == ["spec.executionBlocks[0].uri", "spec.delivery.uri"]
    assert "may not read s3://products/alma-b/eb.ps.zarr" in found[0]


def test_unlisted_namespaces_take_the_star_rule_and_no_policy_allows_everything():
    policy = StoragePolicy.from_json(json.dumps(POLICY))
    spec = _spec(["s3://archive/public/eb.ps.zarr"], "s3://products/alma-a/run1")
    (why,) = policy.problems("other", spec)
    assert why.endswith("may not write s3://products/alma-a/run1 (the storage policy allows it to write nothing)")
    strict = StoragePolicy.from_json(json.dumps({"alma-a": POLICY["alma-a"]}))
    assert len(strict.problems("other", spec)) == 2  # no "*": nothing at all
    for none in (None, "", "  "):
        assert StoragePolicy.from_json(none).problems("any", spec) == ()


@pytest.mark.parametrize("text, words", [
    ("{not json", "is not JSON"),
    ("[1]", "must map namespaces"),
    (json.dumps({"a": {"read": "s3://x/"}}), "MOUSFLOW_STORAGE_POLICY['a'].read must be a list of URI prefixes"),
    (json.dumps({"a": {"write": ["/local/path"]}}), ".write must be a list of URI prefixes"),
    (json.dumps({"a": {"delete": []}}), "must be {read: [...], write: [...]}"),
])
def test_an_unreadable_policy_stops_the_operator_with_one_line(text, words):
    with pytest.raises(PolicyError) as err:
        OperatorSettings.from_env({"MOUSFLOW_STORAGE_POLICY": text})
    assert words in str(err.value) and "\n" not in str(err.value)
