"""The whole MOUS custom resource (apiVersion, kind, metadata, spec, status) and manifest loading."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mousflow.errors import InvalidInput
from mousflow.model.base import CRModel
from mousflow.model.spec import MOUSSpec
from mousflow.model.status import MOUSStatus

GROUP = "mousflow.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "MOUS"
PLURAL = "mouses"

# What `mousflow import-ms` writes where only a person can give the value (e.g. the requested sensitivity).
PLACEHOLDER_PREFIX = "FILL IN:"

# DNS-1123 subdomain, as the API server requires of object names.
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"


class ObjectMeta(BaseModel):
    """The parts of Kubernetes object metadata a manifest may carry; the server adds the rest."""

    model_config = ConfigDict(extra="allow")

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class MOUSResource(CRModel):
    api_version: Annotated[Literal["mousflow.io/v1alpha1"], Field(alias="apiVersion")] = API_VERSION
    kind: Literal["MOUS"] = KIND
    metadata: ObjectMeta
    spec: MOUSSpec
    status: MOUSStatus | None = None


class ManifestError(InvalidInput):
    """A manifest that is not a valid MOUS; the message names the offending fields."""


def name_from_uid(uid: str) -> str:
    """A Kubernetes object name for a MOUS UID: uid://A001/X1296/X133 -> a001-x1296-x133."""
    return uid.removeprefix("uid://").replace("/", "-").lower()


def _placeholders(node, path: str = ""):
    """(path, text) of every placeholder string left in a manifest document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _placeholders(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _placeholders(value, f"{path}[{i}]")
    elif isinstance(node, str) and node.startswith(PLACEHOLDER_PREFIX):
        yield path, node


def load_manifest(path_or_text: str | Path) -> MOUSResource:
    """Read a MOUS manifest from a YAML file (or YAML text) and validate it."""
    text = Path(path_or_text).read_text() if isinstance(path_or_text, Path) else path_or_text
    if isinstance(path_or_text, str) and "\n" not in path_or_text and Path(path_or_text).exists():
        text = Path(path_or_text).read_text()
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ManifestError(f"not YAML: {exc}") from exc
    if not isinstance(document, dict):
        raise ManifestError("a MOUS manifest must be a YAML mapping")
    unfilled = list(_placeholders(document))
    if unfilled:
        raise ManifestError("manifest not complete: fill in " + "; ".join(
            f"{path} ({text.removeprefix(PLACEHOLDER_PREFIX).strip()})" for path, text in unfilled))
    try:
        return MOUSResource.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors(include_url=False)
        )
        raise ManifestError(f"invalid MOUS manifest: {problems}") from exc
