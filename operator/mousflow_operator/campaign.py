"""kopf handlers for MOUSCampaign resources: gather facts, ask `campaign_plan` what to do, carry it out.

One timer per campaign (MOUSFLOW_CAMPAIGN_TICK_SECONDS, 10 s): one list of the campaign's MOUSs (by label), the
manifests its inputs name (each read once per operator process while it reads well; a few KB each), then the
plan's MOUSs created (deterministic names: a 409 means it exists, never a second one), its retries asked for
(the MOUS's own `mousflow.io/retry` annotation: the MOUS handlers resume it from its checkpoints) and the status
patched. When every entry is finished the final report is written as JSON and HTML under
<outputPrefix>/report/ through the storage layer; the operator reads and writes only small documents there,
never product bytes. The MOUS handlers (handlers.py) do all the processing; a campaign only makes MOUSs and
annotates them, so the MOUS status contract is unchanged.
"""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime

import kopf
import yaml
from pydantic import ValidationError

from mousflow.kube_config import shared_api_client
from mousflow.model import GROUP, PLURAL, VERSION
from mousflow.model.campaign import EntryStatus, MOUSCampaignSpec, MOUSCampaignStatus
from mousflow.model.status import Condition
from mousflow.storage.location import Location
from mousflow_operator import campaign_plan as cp
from mousflow_operator.finalizers import CAMPAIGN_RESOURCE, FINALIZER, release_finalizers
from mousflow_operator.lifecycle import ConditionSet
from mousflow_operator.settings import OperatorSettings
from mousflow_operator.status_patch import patch_changed_status

TICK_SECONDS = float(os.environ.get("MOUSFLOW_CAMPAIGN_TICK_SECONDS") or 10)
MAX_MANIFEST_BYTES = 1 << 20
_STATUS_KEYS = frozenset(f.alias or n for n, f in MOUSCampaignStatus.model_fields.items())

_manifests: dict[str, cp.ManifestRead] = {}
_manifests_lock = threading.Lock()


def read_manifest(uri: str) -> cp.ManifestRead:
    """What reading one input manifest gives: ok, missing, invalid, or unreadable (storage trouble: again later)."""
    from mousflow.errors import InputMissing, InvalidInput

    try:
        text = Location.of(uri).read_text()
    except (FileNotFoundError, InputMissing) as exc:
        return cp.ManifestRead("missing", None, f"no manifest at {uri}: {exc}"[:1024])
    except InvalidInput as exc:
        return cp.ManifestRead("invalid", None, f"{uri}: {exc}"[:1024])
    except Exception as exc:  # unreachable or refusing storage: it may come back
        return cp.ManifestRead("unreadable", None, f"cannot read {uri}: {type(exc).__name__}: {exc}"[:1024])
    if len(text) > MAX_MANIFEST_BYTES:
        return cp.ManifestRead("invalid", None, f"{uri}: {len(text)} bytes, not a MOUS manifest")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return cp.ManifestRead("invalid", None, f"{uri}: not YAML: {str(exc).splitlines()[0]}")
    if not isinstance(doc, dict) or not isinstance(doc.get("spec"), dict):
        return cp.ManifestRead("invalid", None, f"{uri} is not a MOUS manifest (no spec mapping)")
    return cp.ManifestRead("ok", doc)


def _manifest_reads(spec: MOUSCampaignSpec) -> dict[str, cp.ManifestRead]:
    out = {}
    for item in spec.inputs:
        if item.manifest is None or item.manifest in out:
            continue
        with _manifests_lock:
            known = _manifests.get(item.manifest)
        if known is None:
            known = read_manifest(item.manifest)
            if known.state != "unreadable":
                with _manifests_lock:
                    _manifests[item.manifest] = known
        out[item.manifest] = known
    return out


def _owned_mouses(namespace: str, name: str, uid: str) -> list[dict]:
    from kubernetes import client

    items = client.CustomObjectsApi(shared_api_client()).list_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, label_selector=f"{cp.LABEL_CAMPAIGN}={name}")["items"]
    return [m for m in items if any(o.get("uid") == uid for o in m["metadata"].get("ownerReferences") or [])]


def _create(namespace: str, doc: dict) -> tuple[bool, str]:
    """(made or already there, why not)."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    try:
        api = client.CustomObjectsApi(shared_api_client())
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, doc)
    except ApiException as exc:
        if exc.status == 409:  # made before (a restart between creating it and recording it)
            return True, ""
        return False, f"HTTP {exc.status} {exc.reason}: {(exc.body or '')[:300]}"
    return True, ""


def _retry(namespace: str, retry: cp.Retry) -> None:
    from kubernetes import client

    client.CustomObjectsApi(shared_api_client()).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, retry.mous, {"metadata": {"annotations": retry.annotations}})


def _write_report(name: str, spec: MOUSCampaignSpec, plan: cp.Plan, started_at, now):
    report = cp.final_report(plan.items, spec, started_at, now)
    where = Location.of(cp.report_prefix(spec))
    json_loc, html_loc = where.join("campaign-report.json"), where.join("index.html")
    report.json_uri, report.html_uri = json_loc.uri, html_loc.uri
    json_loc.write_json(cp.report_document(name, report, plan.items, plan.counts))
    html_loc.write_text(cp.report_html(name, report, plan.items, plan.counts))
    return report


def _conditions(old: list[Condition], finished: bool, problem: str, reason: str, now) -> list[Condition]:
    cs = ConditionSet([c.model_copy() for c in old])
    cs.set("Ready", finished and not problem, "Finished" if finished else "Running",
           "every entry finished" if finished else "", now)
    cs.set("Progressing", not finished, "Running" if not finished else "Finished", "", now)
    cs.set("Degraded", bool(problem), reason if problem else "AsExpected", problem, now)
    return cs.items


def _patch_status(patch, before: dict, new: MOUSCampaignStatus) -> None:
    after = new.to_wire()
    after.setdefault("phase", new.phase)
    patch_changed_status(patch, before, after, _STATUS_KEYS)


@kopf.timer(*CAMPAIGN_RESOURCE, interval=TICK_SECONDS, initial_delay=1)
def campaign_reconcile(body, spec, meta, name, namespace, uid, patch, logger, **_):
    raw_status = dict(body.get("status") or {})
    old = MOUSCampaignStatus.from_stored(raw_status)
    new = old.model_copy(deep=True)
    now = datetime.now(UTC)
    generation = int(meta.get("generation", 1))
    if old.phase == "Finished" and old.report is not None and old.observed_generation == generation:
        return  # nothing left to do (a changed spec is a new generation)
    try:
        cspec = MOUSCampaignSpec.model_validate(dict(spec))
    except ValidationError as exc:
        problem = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False))
        new.conditions = _conditions(old.conditions, False, problem[:4096], "InvalidSpec", now)
        _patch_status(patch, raw_status, new)
        return
    if len(name) > 63:
        new.conditions = _conditions(old.conditions, False, "a campaign's name labels its MOUSs: at most 63 "
                                     "characters", "InvalidName", now)
        _patch_status(patch, raw_status, new)
        return

    views = {v.name: v for v in map(cp.mous_view, _owned_mouses(namespace, name, uid))}
    entries = cp.resolve_entries(name, cspec, _manifest_reads(cspec), existing=frozenset(views))
    made_before = frozenset(i.mous for i in old.items if i.mous and i.state != "Waiting") | frozenset(views)
    plan = cp.plan(entries, views, made_before, cspec, now)

    created = []
    for e in plan.create:
        ok, why = _create(namespace, cp.mous_document(name, uid, e))
        if ok:
            created.append(e.mous_name)
            continue
        item = EntryStatus(index=e.index, name=e.name, message=f"could not create MOUS {e.mous_name}: {why}"[:1024])
        if why.startswith("HTTP 422"):  # the API server refused the spec: bad input, not to be tried again
            item.state, item.outcome, item.reason, item.failure_class = "Skipped", "Skipped", "InvalidInput", "BadInput"
        plan.items[e.index] = item
        plan.in_flight -= 1
    if created:
        kopf.info(body, reason="MOUSCreated", message=f"created {len(created)} MOUS(s): {', '.join(created[:20])}"
                  + (" ..." if len(created) > 20 else ""))
    for r in plan.retries:
        try:
            _retry(namespace, r)
        except Exception as exc:  # asked again at the next tick (the plan is the same)
            logger.warning("could not ask MOUS %s for a retry: %s", r.mous, exc)
            continue
        kopf.warn(body, reason=f"Remediation{r.action}", message=f"MOUS {r.mous}: {r.failure_class} -> "
                  f"{r.action} ({r.annotations[cp.A_RETRY]})")
    before = {i.index: i for i in old.items}
    for item in plan.items:
        if item.outcome in ("Skipped", "Failed") and (before.get(item.index) is None or
                                                      before[item.index].outcome != item.outcome):
            kopf.warn(body, reason=f"Entry{item.outcome}", message=f"entry {item.index} ({item.name}): "
                      f"{item.reason}: {item.message}"[:1024])

    new.entries = len(plan.items)
    new.in_flight = plan.in_flight
    new.counts = plan.counts
    new.items = cp.listed_items(plan.items)
    new.started_at = old.started_at or (now if (views or created) else None)
    problem, reason = "", ""
    if plan.finished:
        new.phase = "Finished"
        if old.report is None or old.observed_generation != generation:
            try:
                new.report = _write_report(name, cspec, plan, new.started_at, now)
                kopf.info(body, reason="CampaignFinished", message=f"{new.report.delivered}/{new.report.entries} "
                          f"delivered (success rate {new.report.success_rate:.1%}); report {new.report.html_uri}")
            except Exception as exc:  # storage trouble: written at a later tick
                problem, reason = f"could not write the report: {type(exc).__name__}: {exc}"[:4096], "ReportUnwritable"
                new.report = None
        new.message = "finished" if new.report else "finished; report not written yet"
    else:
        new.phase = "Running" if (views or created) else "Pending"
        new.report = None
        oc = plan.counts.by_outcome
        new.message = (f"{sum(oc.values())}/{len(plan.items)} finished, {plan.in_flight} in flight "
                       f"(at most {cspec.max_in_flight})")
    if new.report is not None or not plan.finished:
        new.observed_generation = generation
    new.conditions = _conditions(old.conditions, plan.finished and new.report is not None, problem, reason, now)
    _patch_status(patch, raw_status, new)


@kopf.on.cleanup()
def campaign_cleanup(logger, **_):
    """On the way out, take the finalizer off every campaign (as handlers.mous_cleanup does for MOUSs): nothing
    of a campaign needs the operator at deletion, its MOUSs are owned by it."""
    try:
        released = release_finalizers(OperatorSettings.from_env().namespaces, FINALIZER, resource=CAMPAIGN_RESOURCE)
    except Exception as exc:  # e.g. a cluster without the MOUSCampaign CRD: there is nothing to release
        logger.warning("could not release the finalizers of campaigns: %s", exc)
        return
    logger.info("released the finalizer of %d campaign(s) on shutdown", released)
