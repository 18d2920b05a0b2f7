"""Access to the CustomResourceDefinitions shipped with the operator: the MOUS and the MOUSCampaign."""

from __future__ import annotations

from functools import cache
from importlib import resources

import yaml

CRD_FILE = "mous.mousflow.io.yaml"
CAMPAIGN_CRD_FILE = "mouscampaign.mousflow.io.yaml"
CRD_FILES = (CRD_FILE, CAMPAIGN_CRD_FILE)


def crd_text(file: str = CRD_FILE) -> str:
    return resources.files("mousflow_operator").joinpath("crds", file).read_text()


def all_crds_text() -> str:
    """Every CRD of the operator as one multi-document YAML stream (`mousflow crd | kubectl apply -f -`)."""
    return "---\n".join(crd_text(f) for f in CRD_FILES)


@cache
def crd_document(file: str = CRD_FILE) -> dict:
    return yaml.safe_load(crd_text(file))


def openapi_schema(version: str = "v1alpha1", file: str = CRD_FILE) -> dict:
    """The openAPIV3Schema of one served version."""
    for v in crd_document(file)["spec"]["versions"]:
        if v["name"] == version:
            return v["schema"]["openAPIV3Schema"]
    raise KeyError(f"CRD serves no version {version!r}")
