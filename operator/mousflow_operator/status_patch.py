"""The status patch of a custom resource, written once for the MOUS and the MOUSCampaign handlers."""

from __future__ import annotations

from collections.abc import Collection


def patch_changed_status(patch, before: dict, after: dict, known_keys: Collection[str]) -> None:
    """Merge-patch into kopf's `patch` the status fields of `after` that differ from the stored status
    (`before`), and null the known fields `after` no longer has: a merge patch sends only what changed."""
    for k, v in after.items():
        if before.get(k) != v:
            patch.status[k] = v
    for k in before:
        if k not in after and k in known_keys:
            patch.status[k] = None
