"""The whole MOUS custom resource (apiVersion, kind, metadata, spec, status) and manifest loading."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mousflow.errors import InputMissing, InvalidInput
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

# A manifest is a page of YAML; anything much larger is not one (and would only cost memory to parse).
MAX_MANIFEST_BYTES = 2**20

# PyYAML's scanner looks ahead over every open flow collection ('[', '{') at each token: 100,000 of them kept
# it busy for hours. A manifest has a few dozen.
MAX_FLOW_BRACKETS = 1000

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


class ManifestMissing(InputMissing):
    """No manifest file where one was named."""


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


def read_manifest_file(path: str | Path) -> str:
    """The text of a manifest file: a regular file (a named pipe or a device is refused, never opened) of at most
    MAX_MANIFEST_BYTES of UTF-8."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise ManifestMissing(f"{path}: no such manifest file") from None
    except PermissionError:
        raise ManifestError(f"{path}: cannot read the manifest: permission denied") from None
    if stat.S_ISDIR(st.st_mode):
        raise ManifestError(f"{path}: a directory, not a manifest file")
    if not stat.S_ISREG(st.st_mode):
        raise ManifestError(f"{path}: not a regular file (a pipe or a device cannot be a manifest)")
    if st.st_size > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{path}: {st.st_size:,} bytes; a MOUS manifest is at most {MAX_MANIFEST_BYTES:,}")
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_MANIFEST_BYTES + 1)
    except PermissionError:
        raise ManifestError(f"{path}: cannot read the manifest: permission denied") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None


def load_manifest_file(path: str | Path) -> MOUSResource:
    """Read and validate the manifest in the file at `path`; errors name the file."""
    text = read_manifest_file(path)
    try:
        return load_manifest(text)
    except ManifestError as exc:
        raise ManifestError(f"{path}: {exc}") from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: what is wrong and where (the library's message spans several lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else problem


def load_manifest(path_or_text: str | Path) -> MOUSResource:
    """Validate a MOUS manifest: YAML text, or the file at a Path. A str is always the text itself, never a
    path (text that happens to name a file is not that file's content)."""
    text = read_manifest_file(path_or_text) if isinstance(path_or_text, Path) else path_or_text
    if len(text.encode("utf-8", "surrogatepass")) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{len(text):,} characters; a MOUS manifest is at most {MAX_MANIFEST_BYTES:,} bytes")
    brackets = text.count("[") + text.count("{")
    if brackets > MAX_FLOW_BRACKETS:
        raise ManifestError(f"not a MOUS manifest: {brackets:,} '[' and '{{' (flow collections), at most "
                            f"{MAX_FLOW_BRACKETS:,}")
    try:
        # Aliases let a few lines expand into an exponentially large document (the "billion laughs"); a
        # Kubernetes manifest never needs them.
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=yaml.SafeLoader)):
            raise ManifestError("YAML aliases (*name) are not allowed in a MOUS manifest")
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ManifestError(f"not YAML: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise ManifestError("not a MOUS manifest: nested too deeply") from None
    if not isinstance(document, dict):
        kind = "empty" if document is None else f"a YAML {type(document).__name__}"
        raise ManifestError(f"a MOUS manifest must be a YAML mapping, this is {kind}")
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
