"""The MOUSCampaign CRD and its pydantic model accept and reject the same manifests and have the same fields
(the same two checks as tests/model/test_crd_parity.py for the MOUS)."""

from __future__ import annotations

import copy

import jsonschema
import pytest
from pydantic import ValidationError
from test_crd_parity import _crd_tree, _model_tree, mutated, strict

from mousflow.model.campaign import MOUSCampaignResource, MOUSCampaignSpec, MOUSCampaignStatus
from mousflow_operator.crd import CAMPAIGN_CRD_FILE, crd_document, openapi_schema

SCHEMA = openapi_schema(file=CAMPAIGN_CRD_FILE)
VALIDATOR = jsonschema.Draft4Validator(strict(SCHEMA), format_checker=jsonschema.FormatChecker())
EB = {"uid": "uid://A002/Xabc/X1", "uri": "s3://alma-raw/eb1.ps.zarr"}
BASE = {
    "apiVersion": "mousflow.io/v1alpha1", "kind": "MOUSCampaign", "metadata": {"name": "reimage"},
    "spec": {"inputs": [{"manifest": "s3://archive/x133/mous.yaml"}],
             "template": {"outputPrefix": "s3://campaigns/reimage"}},
}


def mutate(path: str, value=None, *, delete: bool = False) -> dict:
    return mutated(BASE, path, value, delete=delete)


FULL = copy.deepcopy(BASE)
FULL["spec"].update(
    inputs=[{"name": "x133", "manifest": "s3://archive/x133/mous.yaml"},
            {"mous": {"uid": "uid://A001/X1/X2", "band": 3, "anything": {"goes": [1]}}},
            {"uid": "uid://A001/X1/X3", "executionBlocks": [EB]}],
    template={"outputPrefix": "s3://campaigns/reimage", "deliveryPrefix": "/srv/delivered",
              "automaticDelivery": False, "recipe": "image-only", "priority": 10,
              "deadline": "2027-01-01T00:00:00Z", "spec": {"projectCode": "2019.1.00001.S", "band": 6}},
    maxInFlight=20, maxRemediations=3, backoffSeconds=30.5)
FULL["status"] = {
    "phase": "Finished", "entries": 3, "inFlight": 0, "startedAt": "2026-12-01T00:00:00Z",
    "counts": {"byPhase": {"Delivered": 2, "Skipped": 1}, "byOutcome": {"Delivered": 2, "Skipped": 1},
               "byFailureClass": {"BadInput": 1}, "remediationsByClass": {"OutOfMemory": 1}},
    "items": [{"index": 0, "name": "x133", "mous": "reimage-x133", "state": "Delivered", "outcome": "Delivered",
               "remediations": 1, "seconds": 250.5},
              {"index": 2, "name": "e-1234", "state": "Skipped", "outcome": "Skipped", "reason": "Duplicate",
               "failureClass": "Duplicate", "message": "same as entry 1"}],
    "report": {"finishedAt": "2026-12-01T01:00:00Z", "entries": 3, "delivered": 2, "successRate": 1.0,
               "medianSecondsPerDataset": 250.5, "meanSecondsPerDataset": 250.5, "wallSeconds": 3600,
               "failuresByClass": {}, "deadlineMet": True, "jsonUri": "s3://c/r.json", "htmlUri": "s3://c/r.html"},
    "conditions": [{"type": "Ready", "status": "True", "reason": "Finished", "message": "",
                    "lastTransitionTime": "2026-12-01T01:00:00Z"}],
    "message": "done", "observedGeneration": 1,
}

EXAMPLES = {
    "minimal": (BASE, True),
    "every field": (FULL, True),
    "an input with none of its forms (the operator reports it per entry)": (mutate("spec.inputs", [{}]), True),
    "no inputs": (mutate("spec.inputs", []), False),
    "no template": (mutate("spec.template", delete=True), False),
    "template without output prefix": (mutate("spec.template", {"recipe": "image-only"}), False),
    "relative output prefix": (mutate("spec.template.outputPrefix", "campaigns/x"), False),
    "http manifest": (mutate("spec.inputs", [{"manifest": "http://example.org/mous.yaml"}]), False),
    "bad uid": (mutate("spec.inputs", [{"uid": "A001/X1/X2", "executionBlocks": [EB]}]), False),
    "empty execution blocks": (mutate("spec.inputs", [{"uid": "uid://A001/X1/X2", "executionBlocks": []}]), False),
    "entry name not a DNS label": (mutate("spec.inputs", [{"name": "X_1", "manifest": "/a/mous.yaml"}]), False),
    "maxInFlight 0": (mutate("spec.maxInFlight", 0), False),
    "maxRemediations 11": (mutate("spec.maxRemediations", 11), False),
    "negative backoff": (mutate("spec.backoffSeconds", -1), False),
    "unknown recipe": (mutate("spec.template.recipe", "image-everything"), False),
    "unknown spec field": (mutate("spec.colour", "blue"), False),
    "unknown input field": (mutate("spec.inputs", [{"manifest": "/a/mous.yaml", "colour": "blue"}]), False),
    "unknown campaign phase": (mutate("status", {"phase": "Cooking"}), False),
    "success rate above 1": (mutate("status", {"report": {"finishedAt": "2026-12-01T00:00:00Z", "entries": 1,
                                                          "delivered": 1, "successRate": 1.5}}), False),
    "negative count": (mutate("status", {"counts": {"byPhase": {"Delivered": -1}}}), False),
}


def crd_accepts(doc: dict) -> bool:
    return not list(VALIDATOR.iter_errors(doc))


def model_accepts(doc: dict) -> bool:
    try:
        MOUSCampaignResource.model_validate(doc)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_campaign_crd_and_model_agree(name):
    doc, expected = EXAMPLES[name]
    assert crd_accepts(doc) is expected, f"CRD schema verdict on {name!r}"
    assert model_accepts(doc) is expected, f"pydantic verdict on {name!r}"


@pytest.mark.parametrize("part,model", [("spec", MOUSCampaignSpec), ("status", MOUSCampaignStatus)])
def test_campaign_field_trees_match(part, model):
    js = model.model_json_schema(by_alias=True)
    assert _model_tree(js, js.get("$defs", {})) == _crd_tree(SCHEMA["properties"][part])


def test_campaign_required_fields_match():
    js = MOUSCampaignSpec.model_json_schema(by_alias=True)
    assert sorted(js["required"]) == sorted(SCHEMA["properties"]["spec"]["required"])


def test_campaign_crd_identity():
    crd = crd_document(CAMPAIGN_CRD_FILE)
    assert crd["spec"]["group"] == "mousflow.io" and crd["spec"]["names"]["kind"] == "MOUSCampaign"
    assert crd["spec"]["names"]["plural"] == "mouscampaigns"
    assert crd["spec"]["versions"][0]["subresources"] == {"status": {}}
