"""Shared pydantic configuration: camelCase on the wire (as Kubernetes resources are), snake_case in Python."""

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class CRModel(BaseModel):
    """Base for every part of the custom resource.

    extra="forbid" matches the API server's strict field validation (kubectl's default), which rejects
    unknown fields instead of pruning them silently.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def to_wire(self) -> dict:
        """The JSON-compatible form used in manifests and in the API (camelCase keys, unset optionals left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
