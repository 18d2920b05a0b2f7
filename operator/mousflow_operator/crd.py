"""Access to the MOUS CustomResourceDefinition shipped with the operator."""

from __future__ import annotations

from functools import cache
from importlib import resources

import yaml

CRD_FILE = "mous.mousflow.io.yaml"


def crd_text() -> str:
    return resources.files("mousflow_operator").joinpath("crds", CRD_FILE).read_text()


@cache
def crd_document() -> dict:
    return yaml.safe_load(crd_text())


def openapi_schema(version: str = "v1alpha1") -> dict:
    """The openAPIV3Schema of one served version."""
    for v in crd_document()["spec"]["versions"]:
        if v["name"] == version:
            return v["schema"]["openAPIV3Schema"]
    raise KeyError(f"CRD serves no version {version!r}")
