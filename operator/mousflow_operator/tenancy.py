"""Which storage a namespace's MOUSs may name: the platform's policy, never the MOUS's.

The operator and the stage pods hold credentials that reach every bucket the platform gave them; without a
policy a MOUS in one namespace could name another namespace's output as its own and overwrite its products.
The policy (the chart's `tenancy.storagePolicy`, MOUSFLOW_STORAGE_POLICY as JSON) gives each namespace the
prefixes it may read and those it may write; a MOUS naming anything else is refused before anything is read or
written: it stays FullyObserved with a Degraded condition (reason StoragePolicy) naming the field, and no input
check, Job or delivery ever touches the location. The key "*" holds the rule of namespaces not listed. No
policy (the default) allows everything, as a single-tenant install wants.

    {"alma-a": {"read": ["s3://archive/"], "write": ["s3://products/alma-a/"]}, "*": {"read": [], "write": []}}

Write prefixes may also be read (a MOUS reads back its own output). Prefixes match whole path segments:
s3://products/alma-a/ allows s3://products/alma-a/x, not s3://products/alma-ab/x.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from mousflow.errors import InvalidInput
from mousflow.model import MOUSSpec
from mousflow.model.semantics import uri_fields

ANY_NAMESPACE = "*"


class PolicyError(InvalidInput):
    """A policy document that cannot be read: the operator refuses to start with it."""


@dataclass(frozen=True)
class Access:
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()


@dataclass(frozen=True)
class StoragePolicy:
    namespaces: Mapping[str, Access] = field(default_factory=dict)
    """Empty: no policy, everything allowed."""

    @classmethod
    def from_json(cls, text: str | None) -> StoragePolicy:
        if not text or not text.strip():
            return cls()
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PolicyError(f"MOUSFLOW_STORAGE_POLICY is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise PolicyError("MOUSFLOW_STORAGE_POLICY must map namespaces to {read: [...], write: [...]}")
        out = {}
        for namespace, rule in doc.items():
            if not isinstance(rule, dict) or set(rule) - {"read", "write"}:
                raise PolicyError(f"MOUSFLOW_STORAGE_POLICY[{namespace!r}] must be {{read: [...], write: [...]}}")
            lists = {k: rule.get(k) or [] for k in ("read", "write")}
            for k, prefixes in lists.items():
                if not isinstance(prefixes, list) or not all(isinstance(p, str) and "://" in p for p in prefixes):
                    raise PolicyError(f"MOUSFLOW_STORAGE_POLICY[{namespace!r}].{k} must be a list of URI prefixes "
                                      f"(s3://bucket/prefix/)")
            out[namespace] = Access(tuple(map(_normal, lists["read"])), tuple(map(_normal, lists["write"])))
        return cls(out)

    @property
    def enforced(self) -> bool:
        return bool(self.namespaces)

    def problems(self, namespace: str, spec: MOUSSpec) -> tuple[str, ...]:
        """One message per location of `spec` that `namespace` may not use; empty when all are allowed."""
        if not self.enforced:
            return ()
        access = self.namespaces.get(namespace) or self.namespaces.get(ANY_NAMESPACE) or Access()
        uris = uri_fields(spec)
        found = []
        for kind, allowed, named in (("read", access.read + access.write, uris.inputs),
                                     ("write", access.write, uris.outputs)):
            for where, uri in named:
                if not any(_under(uri, prefix) for prefix in allowed):
                    shown = ", ".join(allowed) or "nothing"
                    found.append(f"{where}: namespace {namespace} may not {kind} {uri} (the storage policy allows "
                                 f"it to {kind} {shown})")
        return tuple(found)


def _normal(prefix: str) -> str:
    return prefix.rstrip("/") + "/"


def _under(uri: str, prefix: str) -> bool:
    # `..` and other path tricks are refused by the spec's own checks (model.semantics.uri_problem) first
    return (uri.rstrip("/") + "/").startswith(prefix)
