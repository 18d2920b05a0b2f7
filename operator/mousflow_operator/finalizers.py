"""Taking a controller's finalizer off the objects it watches, for when that controller is going away.

kopf puts a finalizer on every object that has a timer (the operator's resync timer on each MOUS; the Dask
controller's timers on each DaskCluster and DaskAutoscaler); while the controller is away nothing would remove
it, and an object deleted meanwhile would hang in Terminating. Used by the operator on its way out and by the
chart's pre-delete hook (mousflow_operator.uninstall).
"""

from __future__ import annotations

from mousflow.model import GROUP, PLURAL, VERSION

FINALIZER = "mousflow.io/finalizer"
"""The operator's finalizer on each MOUS."""
KOPF_DEFAULT_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"
"""kopf's finalizer, which the dask-kubernetes controller keeps (it sets no finalizer of its own)."""
MOUS_RESOURCE = (GROUP, VERSION, PLURAL)
CAMPAIGN_RESOURCE = (GROUP, VERSION, "mouscampaigns")


def release_finalizers(namespaces: tuple[str, ...], finalizer: str,
                       resource: tuple[str, str, str] = MOUS_RESOURCE) -> int:
    """Remove `finalizer` from every object of `resource` (group, version, plural) in `namespaces` (empty: all
    namespaces); returns how many carried it."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    group, version, plural = resource
    api = client.CustomObjectsApi()
    if namespaces:
        items = [m for ns in namespaces for m in api.list_namespaced_custom_object(group, version, ns, plural)["items"]]
    else:
        items = api.list_cluster_custom_object(group, version, plural)["items"]
    released = 0
    for obj in items:
        current = obj["metadata"].get("finalizers") or []
        if finalizer not in current:
            continue
        # test-and-replace: a concurrent change to the list makes this patch fail rather than drop others' entries
        ops = [{"op": "test", "path": "/metadata/finalizers", "value": current},
               {"op": "replace", "path": "/metadata/finalizers", "value": [f for f in current if f != finalizer]}]
        try:
            # the client would send a list as a merge patch (its first JSON content type): say it is a JSON patch
            api.patch_namespaced_custom_object(group, version, obj["metadata"]["namespace"], plural,
                                               obj["metadata"]["name"], ops,
                                               _content_type="application/json-patch+json")
            released += 1
        except ApiException as exc:
            if exc.status not in (404, 409, 422):
                raise
    return released
