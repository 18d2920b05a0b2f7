"""The CRD's OpenAPI schema and the pydantic model must accept and reject the same manifests.

Two checks: the field trees are identical (a field added to one and not the other fails here), and a set of
example manifests (one valid base plus mutations, each breaking or exercising one rule) gets the same verdict
from both. The CRD side is validated with jsonschema after applying the API server's strict field validation
(unknown fields rejected), which is what `kubectl apply` does by default.
"""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from pydantic import ValidationError

from mousflow.model import MOUSResource, MOUSSpec, MOUSStatus
from mousflow_operator.crd import crd_document, openapi_schema

MANIFESTS = Path(__file__).parent / "manifests"
BASE = yaml.safe_load((MANIFESTS / "valid-minimal.yaml").read_text())


def strict(schema: dict) -> dict:
    """Close every object that lists its properties, as strict server-side field validation does."""
    schema = copy.deepcopy(schema)

    def close(node):
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node and not node.get(
                "x-kubernetes-preserve-unknown-fields"
            ):
                node.setdefault("additionalProperties", False)
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(schema)
    return schema


CRD_VALIDATOR = jsonschema.Draft4Validator(strict(openapi_schema()), format_checker=jsonschema.FormatChecker())


def crd_accepts(doc: dict) -> bool:
    return not list(CRD_VALIDATOR.iter_errors(doc))


def model_accepts(doc: dict) -> bool:
    try:
        MOUSResource.model_validate(doc)
    except ValidationError:
        return False
    return True


def mutate(path: str, value=None, *, delete: bool = False):
    return mutated(BASE, path, value, delete=delete)


def mutated(base: dict, path: str, value=None, *, delete: bool = False) -> dict:
    """A copy of `base` with the value at the dotted `path` (list indices as numbers) set, or deleted."""
    doc = copy.deepcopy(base)
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    node = doc
    for key in keys[:-1]:
        node = node[key]
    if delete:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return doc


FULL = mutate("spec.delivery", {"uri": "s3://alma-delivery/x133", "automatic": True})
FULL["spec"].update(
    recipe="image-only",
    priority=90,
    imaging={"robust": -0.5, "channelChunk": 64},
    calibratorFluxes=[{"field": "J0423-0120", "fluxJy": 1.2, "frequencyHz": 1.0e11, "spectralIndex": -0.7}],
)
FULL["status"] = {
    "phase": "Processing",
    "stage": "imaging",
    "stages": {
        "calibration": {"state": "Succeeded", "progressPercent": 100, "attempts": 1,
                        "startedAt": "2026-11-02T00:00:00Z", "finishedAt": "2026-11-02T00:10:00Z",
                        "checkpointUri": "s3://b/x/checkpoints/calibration.json",
                        "resources": {"requested": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "3Gi"},
                                      "used": {"peakMemoryBytes": 1234, "cpuSeconds": 5.5, "wallSeconds": 7.0}}},
    },
    "qa2": {"verdict": "Pass", "reasons": [], "scores": {"calibration": 0.95}},
    "products": {"manifestUri": "s3://b/x/products/manifest.json"},
    "conditions": [{"type": "Progressing", "status": "True", "reason": "Imaging", "message": "chunk 3/8",
                    "lastTransitionTime": "2026-11-02T00:10:00Z"}],
    "flowRunId": "0f0e",
    "deadline": "2026-12-01T03:00:00Z",
    "observedGeneration": 2,
}

EXAMPLES = {
    # accepted
    "minimal": (BASE, True),
    "all optional fields and a status": (FULL, True),
    "band 10": (mutate("spec.band", 10), True),
    "file URI": (mutate("spec.executionBlocks.0.uri", "file:///data/eb1.ps.zarr"), True),
    "absolute path URI": (mutate("spec.output.uri", "/srv/products/x133"), True),
    "inverted resolution (a semantic, not a schema, error)": (
        mutate("spec.scienceGoals.0.resolution", {"minArcsec": 2.0, "maxArcsec": 1.0}), True),
    "frequency outside the band (semantic)": (mutate("spec.scienceGoals.0.representativeFrequencyHz", 6.5e11), True),
    # rejected
    "band 0": (mutate("spec.band", 0), False),
    "band 11": (mutate("spec.band", 11), False),
    "band as text": (mutate("spec.band", "three"), False),
    "bad uid": (mutate("spec.uid", "A001/X1296/X133"), False),
    "bad project code": (mutate("spec.projectCode", "2026.1.42.S"), False),
    "no execution blocks": (mutate("spec.executionBlocks", []), False),
    "execution block without uri": (mutate("spec.executionBlocks.0.uri", delete=True), False),
    "relative data uri": (mutate("spec.executionBlocks.0.uri", "data/eb1.ps.zarr"), False),
    "http data uri": (mutate("spec.executionBlocks.0.uri", "http://example.org/eb1"), False),
    "zero sensitivity": (mutate("spec.scienceGoals.0.sensitivityJy", 0), False),
    "negative sensitivity": (mutate("spec.scienceGoals.0.sensitivityJy", -1e-3), False),
    "no science goals": (mutate("spec.scienceGoals", []), False),
    "resolution zero": (mutate("spec.scienceGoals.0.resolution.minArcsec", 0), False),
    "frequency below ALMA": (mutate("spec.scienceGoals.0.representativeFrequencyHz", 1e9), False),
    "unknown recipe": (mutate("spec.recipe", "image-everything"), False),
    "priority 101": (mutate("spec.priority", 101), False),
    "robust 3": (mutate("spec.imaging", {"robust": 3}), False),
    "chunk 0": (mutate("spec.imaging", {"channelChunk": 0}), False),
    "unknown spec field": (mutate("spec.colour", "blue"), False),
    "unknown nested field": (mutate("spec.output.bucket", "x"), False),
    "missing output": (mutate("spec.output", delete=True), False),
    "missing fullyObservedAt": (mutate("spec.fullyObservedAt", delete=True), False),
    "fullyObservedAt not a date": (mutate("spec.fullyObservedAt", "last tuesday"), False),
    "unknown phase": (mutate("status", {"phase": "Cooking"}), False),
    "QA2 score above 1": (mutate("status", {"qa2": {"verdict": "Pass", "scores": {"imaging": 1.5}}}), False),
    "condition status not a tri-state": (mutate("status", {"conditions": [{"type": "Ready", "status": "Yes"}]}), False),
}


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_crd_and_model_agree(name):
    doc, expected = EXAMPLES[name]
    assert crd_accepts(doc) is expected, f"CRD schema verdict on {name!r}"
    assert model_accepts(doc) is expected, f"pydantic verdict on {name!r}"


def _crd_tree(schema: dict) -> dict:
    """Field name tree of a CRD schema node ('*' stands for map values)."""
    if schema.get("type") == "array":
        return _crd_tree(schema["items"])
    if "properties" in schema:
        return {k: _crd_tree(v) for k, v in schema["properties"].items()}
    if isinstance(schema.get("additionalProperties"), dict):
        return {"*": _crd_tree(schema["additionalProperties"])}
    return {}


def _model_tree(schema: dict, defs: dict) -> dict:
    """The same tree from a pydantic JSON schema (refs resolved, Optional unwrapped)."""
    if "$ref" in schema:
        return _model_tree(defs[schema["$ref"].split("/")[-1]], defs)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            trees = [_model_tree(s, defs) for s in schema[key] if s.get("type") != "null"]
            return next((t for t in trees if t), {})
    if schema.get("type") == "array":
        return _model_tree(schema["items"], defs)
    if "properties" in schema:
        return {k: _model_tree(v, defs) for k, v in schema["properties"].items()}
    if isinstance(schema.get("additionalProperties"), dict):
        return {"*": _model_tree(schema["additionalProperties"], defs)}
    return {}


@pytest.mark.parametrize("part,model", [("spec", MOUSSpec), ("status", MOUSStatus)])
def test_field_trees_match(part, model):
    js = model.model_json_schema(by_alias=True)
    assert _model_tree(js, js.get("$defs", {})) == _crd_tree(openapi_schema()["properties"][part])


def test_required_fields_match():
    js = MOUSSpec.model_json_schema(by_alias=True)
    assert sorted(js["required"]) == sorted(openapi_schema()["properties"]["spec"]["required"])


def test_crd_identity():
    crd = crd_document()
    assert crd["spec"]["group"] == "mousflow.io"
    assert crd["spec"]["names"]["kind"] == "MOUS"
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if c.get("priority", 0) == 0]
    assert columns == ["Phase", "Stage", "QA2", "Age", "ETA"]


def test_future_timestamps_are_not_date_columns():
    # kubectl prints a `date` column as the time elapsed since it: `<invalid>` for every future ETA
    version = crd_document()["spec"]["versions"][0]
    types = {c["name"]: c["type"] for c in version["additionalPrinterColumns"]}
    assert types["ETA"] == types["Deadline"] == "string"
    assert types["Age"] == "date"
