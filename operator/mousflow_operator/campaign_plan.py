"""What a MOUSCampaign does next: pure functions of its spec, the manifests its inputs name, and the MOUSs it
has made (mousflow_operator.campaign gathers those facts and carries the decisions out).

* Entries: every input becomes one MOUS spec (the input's fields over the template's `spec`, then the
  campaign's own output, delivery, recipe and priority), or a problem reported for that entry alone:
  InvalidEntry (not exactly one form, or no valid MOUS spec), InputMissing (its manifest does not exist),
  InvalidInput (its manifest is not a MOUS manifest), Duplicate (the same name, input or MOUS UID as another
  entry: a UID names the stage Jobs and the outputs, so two MOUSs of one UID would collide).
* Names: a MOUS is named <campaign>-<entry name>, the entry name given or a hash of its input, so asking again
  (after an operator restart) names the same MOUS and the API server refuses a second one.
* Throttle: at most maxInFlight MOUSs created and not yet finished; new ones in the order of the list.
* Remediation by failure class, at most maxRemediations per MOUS, each a retry of the MOUS (the
  `mousflow.io/retry` annotation, so it resumes from its checkpoints): OutOfMemory (OOMKilled, OutOfMemory) ->
  RetryWithMoreMemory (the stage launcher starts a stage that ran out of memory before above the limit it was
  killed at: mousflow.pipeline.kubernetes); Interrupted -> Resume; Transient (Unavailable, Busy, storage that
  could not be read, a failed delivery) -> RetryAfterBackoff (backoffSeconds * 2**n after the failure);
  Error (nothing classified it) -> Resume. BadInput (InputMissing, InvalidInput, an invalid spec) is skipped and
  reported; CalibrationFailed, ImagingFailed and QA2Fail are final (the data or the science, not the
  platform: a retry would do the same), and so is Configuration (PodCannotStart: a Secret or image missing in the
  namespace; StoragePolicy), which a person fixes before retrying.
* Finished: every entry Delivered, NeedsReview (a MOUS waiting for a person's QA2 review), Failed or Skipped;
  then the final report.
"""

from __future__ import annotations

import copy
import hashlib
import html
import json
import statistics
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pydantic import ValidationError

from mousflow.model import MOUSSpec, check_spec_semantics
from mousflow.model.campaign import (
    CampaignInput,
    CampaignReport,
    EntryStatus,
    MOUSCampaignSpec,
    PhaseCounts,
)

LABEL_CAMPAIGN = "mousflow.io/campaign"
ANN_ENTRY = "mousflow.io/campaign-entry"
ANN_REMEDIATIONS = "mousflow.io/campaign-remediations"
"""Comma-separated failure classes of the remediations done on this MOUS (their number is the count)."""
A_RETRY, A_RETRY_HANDLED = "mousflow.io/retry", "mousflow.io/retry-handled"

REASON_CLASS = {
    "OOMKilled": "OutOfMemory", "OutOfMemory": "OutOfMemory",
    "Interrupted": "Interrupted", "Killed": "Interrupted",
    "Unavailable": "Transient", "Busy": "Transient", "InputUnreadable": "Transient", "DeliveryFailed": "Transient",
    "InputMissing": "BadInput", "InvalidInput": "BadInput", "InvalidSpec": "BadInput", "InvalidEntry": "BadInput",
    "Duplicate": "Duplicate",
    "CalibrationFailed": "CalibrationFailed", "ImagingFailed": "ImagingFailed", "QA2Fail": "QA2Fail",
    "MOUSDeleted": "Deleted",
    "PodCannotStart": "Configuration", "StoragePolicy": "Configuration", "AccessDenied": "Configuration",
}
REMEDIATION = {"OutOfMemory": "RetryWithMoreMemory", "Interrupted": "Resume", "Transient": "RetryAfterBackoff",
               "Error": "Resume"}
"""Failure class -> what is done about it; a class not here is final (BadInput and Duplicate: skipped)."""
SKIPPED_CLASSES = frozenset({"BadInput", "Duplicate"})
MAX_ITEMS_ALL = 1000
"""Up to this many inputs every entry is listed in status.items; above, only those with a reason (the size of
an object in etcd is limited)."""


def failure_class(reason: str) -> str:
    return REASON_CLASS.get(reason, "Error")


# ------------------------------------------------------------------------------------------------- entries
@dataclass(frozen=True)
class ManifestRead:
    """What reading an input's manifest gave: state "ok" (doc), "missing", "invalid" or "unreadable" (may
    come back: checked again)."""

    state: str
    doc: dict | None = None
    message: str = ""


@dataclass(frozen=True)
class Entry:
    index: int
    name: str
    mous_name: str
    identity: str
    spec: dict | None = None
    """The MOUS spec (wire form) to create; None with a problem."""
    reason: str = ""
    """The problem: InvalidEntry, InputMissing, InvalidInput, Duplicate; Unreadable (not final)."""
    message: str = ""


def input_form(item: CampaignInput) -> str | None:
    forms = [f for f, present in (("manifest", item.manifest is not None), ("mous", item.mous is not None),
                                  ("executionBlocks", item.execution_blocks is not None)) if present]
    return forms[0] if len(forms) == 1 else None


def identity_of(item: CampaignInput) -> str:
    """What makes two inputs the same dataset before reading anything: the manifest's location, or the UID."""
    if item.manifest is not None:
        return f"manifest:{item.manifest.rstrip('/')}"
    uid = item.uid if item.execution_blocks is not None else (item.mous or {}).get("uid")
    if uid:
        return f"uid:{uid}"
    return "input:" + json.dumps(item.model_dump(mode="json", by_alias=True, exclude_none=True), sort_keys=True)


def entry_name(item: CampaignInput) -> str:
    return item.name or "e-" + hashlib.sha256(identity_of(item).encode()).hexdigest()[:10]


def mous_name(campaign: str, entry: str) -> str:
    return f"{campaign}-{entry}"


def output_uri(spec: MOUSCampaignSpec, name: str) -> str:
    return f"{spec.template.output_prefix.rstrip('/')}/mous/{name}"


def report_prefix(spec: MOUSCampaignSpec) -> str:
    return f"{spec.template.output_prefix.rstrip('/')}/report"


def _mous_spec(campaign: str, spec: MOUSCampaignSpec, item: CampaignInput, name: str,
               manifest: ManifestRead | None) -> tuple[dict | None, str, str]:
    """(MOUS spec, problem reason, message) of one input."""
    template = spec.template
    merged = copy.deepcopy(template.spec or {})
    if item.manifest is not None:
        assert manifest is not None
        if manifest.state == "missing":
            return None, "InputMissing", manifest.message or f"no manifest at {item.manifest}"
        if manifest.state == "unreadable":
            return None, "Unreadable", manifest.message
        doc = manifest.doc if manifest.state == "ok" else None
        if not isinstance(doc, dict) or not isinstance(doc.get("spec"), dict):
            return None, "InvalidInput", manifest.message or f"{item.manifest} is not a MOUS manifest"
        merged.update(copy.deepcopy(doc["spec"]))
    elif item.mous is not None:
        merged.update(copy.deepcopy(item.mous))
    else:
        merged.update(uid=item.uid, executionBlocks=[eb.to_wire() for eb in item.execution_blocks or []])
        if not item.uid:
            return None, "InvalidEntry", "an input with executionBlocks needs its MOUS's uid"
    mname = mous_name(campaign, name)
    merged["output"] = {"uri": output_uri(spec, mname)}
    delivery = {"automatic": template.automatic_delivery}
    if template.delivery_prefix:
        delivery["uri"] = f"{template.delivery_prefix.rstrip('/')}/{mname}"
    merged["delivery"] = delivery
    if template.recipe is not None:
        merged["recipe"] = template.recipe.value
    if template.priority is not None:
        merged["priority"] = template.priority
    try:
        model = MOUSSpec.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in exc.errors(include_url=False))
        reason = "InvalidInput" if item.manifest is not None else "InvalidEntry"
        return None, reason, f"not a valid MOUS spec: {problems}"[:1024]
    semantic = [str(p) for p in check_spec_semantics(model)]
    if semantic:
        return None, "InvalidInput", "; ".join(semantic)[:1024]
    return model.to_wire(), "", ""


def resolve_entries(campaign: str, spec: MOUSCampaignSpec, manifests: Mapping[str, ManifestRead],
                    existing: frozenset[str] = frozenset()) -> list[Entry]:
    """Every input as an Entry, in the order of the list. `manifests`: what reading each manifest URI gave;
    `existing`: names of MOUSs already made, whose entries keep their claim on their UID whatever comes before
    them in the list (so a manifest read late never turns a running MOUS into a duplicate)."""
    entries: list[Entry] = []
    for index, item in enumerate(spec.inputs):
        name = entry_name(item)
        mname = mous_name(campaign, name)
        form = input_form(item)
        if form is None:
            entries.append(Entry(index, name, mname, identity_of(item), None, "InvalidEntry",
                                 "an input gives exactly one of manifest, mous, or uid with executionBlocks"))
            continue
        mous, reason, message = _mous_spec(campaign, spec, item, name, manifests.get(item.manifest or ""))
        entries.append(Entry(index, name, mname, identity_of(item), mous, reason, message))
    # duplicates: the same entry name, the same input, or the same MOUS UID as an entry before it (entries
    # whose MOUS exists claim first)
    order = sorted(entries, key=lambda e: (e.mous_name not in existing, e.index))
    seen_name: dict[str, Entry] = {}
    seen_identity: dict[str, Entry] = {}
    seen_uid: dict[str, Entry] = {}
    out: dict[int, Entry] = {}
    for e in order:
        uid = (e.spec or {}).get("uid")
        first = seen_name.get(e.name) or seen_identity.get(e.identity) or (seen_uid.get(uid) if uid else None)
        if first is not None:
            what = "name" if first.name == e.name else "input" if first.identity == e.identity else f"MOUS uid {uid}"
            out[e.index] = Entry(e.index, e.name, e.mous_name, e.identity, None, "Duplicate",
                                 f"the same {what} as entry {first.index} ({first.name}): not processed twice")
            continue
        seen_name.setdefault(e.name, e)
        seen_identity.setdefault(e.identity, e)
        if uid:
            seen_uid.setdefault(uid, e)
        out[e.index] = e
    return [out[i] for i in range(len(entries))]


def mous_document(campaign: str, campaign_uid: str, entry: Entry) -> dict:
    """The MOUS resource for an entry: owned by the campaign (deleting the campaign deletes its MOUSs, and
    their Jobs with them; products stay), labelled with it."""
    assert entry.spec is not None
    return {
        "apiVersion": "mousflow.io/v1alpha1", "kind": "MOUS",
        "metadata": {
            "name": entry.mous_name,
            "labels": {LABEL_CAMPAIGN: campaign},
            "annotations": {ANN_ENTRY: f"{entry.index}/{entry.name}"},
            "ownerReferences": [{"apiVersion": "mousflow.io/v1alpha1", "kind": "MOUSCampaign", "name": campaign,
                                 "uid": campaign_uid, "controller": True, "blockOwnerDeletion": False}],
        },
        "spec": entry.spec,
    }


# --------------------------------------------------------------------------------------------- MOUS views
def _time(value) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass(frozen=True)
class MousView:
    """The facts of one MOUS that the campaign decides from (mous_view reads them off the resource)."""

    name: str
    phase: str = "FullyObserved"
    degraded: bool = False
    reason: str = ""
    """The Degraded condition's reason when it is True (a Failed MOUS's failure reason)."""
    message: str = ""
    failed_at: datetime | None = None
    retry_pending: bool = False
    """A retry was asked for and the MOUS's operator has not taken it up yet."""
    remediations: tuple[str, ...] = ()
    seconds: float | None = None


def mous_view(obj: dict) -> MousView:
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    ann = meta.get("annotations") or {}
    degraded = {c.get("type"): c for c in status.get("conditions") or []}.get("Degraded") or {}
    starts = [t for t in (_time(s.get("startedAt")) for s in (status.get("stages") or {}).values()) if t]
    ends = [t for t in (_time(s.get("finishedAt")) for s in (status.get("stages") or {}).values()) if t]
    seconds = (max(ends) - min(starts)).total_seconds() if starts and ends and max(ends) >= min(starts) else None
    return MousView(
        name=meta.get("name", ""), phase=status.get("phase") or "FullyObserved",
        degraded=degraded.get("status") == "True", reason=degraded.get("reason", "") if degraded.get(
            "status") == "True" else "", message=str(degraded.get("message", ""))[:1024],
        failed_at=_time(degraded.get("lastTransitionTime")),
        retry_pending=bool(ann.get(A_RETRY)) and ann.get(A_RETRY) != ann.get(A_RETRY_HANDLED),
        remediations=tuple(c for c in (ann.get(ANN_REMEDIATIONS) or "").split(",") if c),
        seconds=seconds)


# --------------------------------------------------------------------------------------------- decisions
@dataclass(frozen=True)
class Retry:
    """Ask the MOUS for a retry: these annotations, in one patch (the count and the token move together)."""

    mous: str
    failure_class: str
    action: str
    annotations: dict[str, str]


@dataclass
class Plan:
    items: list[EntryStatus]
    create: list[Entry] = field(default_factory=list)
    retries: list[Retry] = field(default_factory=list)
    in_flight: int = 0
    finished: bool = False
    counts: PhaseCounts = field(default_factory=PhaseCounts)


def _entry_status(entry: Entry, view: MousView | None, was_made: bool, spec: MOUSCampaignSpec,
                  now: datetime) -> tuple[EntryStatus, Retry | None, bool]:
    """(its status, a retry to ask for, whether it is in flight) for one entry."""
    st = EntryStatus(index=entry.index, name=entry.name)
    if entry.reason == "Unreadable" and view is None:
        st.message = entry.message[:1024]
        return st, None, False
    if entry.reason and entry.reason != "Unreadable":  # (a duplicate may share the name of the MOUS it repeats)
        st.state, st.outcome, st.reason = "Skipped", "Skipped", entry.reason
        st.failure_class, st.message = failure_class(entry.reason), entry.message[:1024]
        return st, None, False
    if view is None:
        if was_made:  # made before and gone: someone deleted it; never made again (nothing processed twice)
            st.mous, st.state, st.outcome, st.reason = entry.mous_name, "Deleted", "Failed", "MOUSDeleted"
            st.failure_class, st.message = "Deleted", "its MOUS was deleted; not made again"
        return st, None, False
    st.mous, st.state, st.remediations, st.seconds = view.name, view.phase, len(view.remediations), view.seconds
    if view.phase == "Delivered":
        st.outcome = "Delivered"
        return st, None, False
    if view.phase == "Reviewing":
        st.outcome, st.message = "NeedsReview", "QA2 needs a person's review (mousflow review)"
        return st, None, False
    if view.phase == "QA2Fail":
        st.outcome, st.reason, st.failure_class = "Failed", "QA2Fail", "QA2Fail"
        return st, None, False
    if view.phase == "FullyObserved" and view.degraded and failure_class(view.reason) == "BadInput":
        st.outcome, st.reason, st.failure_class, st.message = "Skipped", view.reason, "BadInput", view.message
        return st, None, False
    if view.phase != "Failed":
        if view.degraded:  # e.g. storage unreadable while checking its inputs: the MOUS checks again
            st.reason, st.failure_class, st.message = view.reason, failure_class(view.reason), view.message
        return st, None, True
    # Failed
    cls = failure_class(view.reason)
    st.reason, st.failure_class, st.message = view.reason, cls, view.message
    if cls in SKIPPED_CLASSES:
        st.outcome = "Skipped"
        return st, None, False
    if view.retry_pending:
        st.message = f"{REMEDIATION.get(cls, 'retry')} asked for: {view.message}"[:1024]
        return st, None, True
    action = REMEDIATION.get(cls)
    done = len(view.remediations)
    if action is None or done >= spec.max_remediations:
        st.outcome = "Failed"
        if action is not None:
            st.message = f"{done} remediation(s) done, none left: {view.message}"[:1024]
        return st, None, False
    if action == "RetryAfterBackoff":
        due = (view.failed_at or now) + timedelta(seconds=spec.backoff_seconds * 2 ** done)
        if now < due:
            st.message = f"transient failure; retrying at {due.isoformat(timespec='seconds')}: {view.message}"[:1024]
            return st, None, True
    classes = ",".join((*view.remediations, cls))
    retry = Retry(view.name, cls, action, {A_RETRY: f"campaign-{done + 1}", ANN_REMEDIATIONS: classes})
    st.remediations = done + 1
    st.message = f"{action} ({done + 1}/{spec.max_remediations}) after {view.reason}: {view.message}"[:1024]
    return st, retry, True


def plan(entries: list[Entry], views: Mapping[str, MousView], made_before: frozenset[str],
         spec: MOUSCampaignSpec, now: datetime) -> Plan:
    """The campaign's next step: each entry's status, the MOUSs to create (in list order, within the throttle),
    the retries to ask for, the counts, and whether everything is finished."""
    items: list[EntryStatus] = []
    retries: list[Retry] = []
    waiting: list[Entry] = []
    in_flight = 0
    for e in entries:
        view = views.get(e.mous_name)
        st, retry, flying = _entry_status(e, view, e.mous_name in made_before, spec, now)
        items.append(st)
        in_flight += flying
        if retry is not None:
            retries.append(retry)
        if view is None and st.outcome is None and e.spec is not None and not e.reason:
            waiting.append(e)
    create = waiting[:max(0, spec.max_in_flight - in_flight)]
    for e in create:
        items[e.index] = EntryStatus(index=e.index, name=e.name, mous=e.mous_name, state="FullyObserved")
    in_flight += len(create)
    counts = PhaseCounts(
        by_phase=dict(Counter(i.state for i in items)),
        by_outcome=dict(Counter(i.outcome for i in items if i.outcome)),
        by_failure_class=dict(Counter(i.failure_class for i in items if i.failure_class)),
        remediations_by_class=dict(Counter(c for v in views.values() for c in v.remediations)))
    finished = all(i.outcome for i in items)
    return Plan(items, create, retries, in_flight, finished, counts)


def listed_items(items: list[EntryStatus]) -> list[EntryStatus]:
    """What status.items holds: every entry, or for a long list only the ones with a reason."""
    return items if len(items) <= MAX_ITEMS_ALL else [i for i in items if i.reason]


# ---------------------------------------------------------------------------------------------- report
def final_report(items: list[EntryStatus], spec: MOUSCampaignSpec, started_at: datetime | None,
                 finished_at: datetime) -> CampaignReport:
    delivered = [i for i in items if i.outcome == "Delivered"]
    valid = [i for i in items if i.outcome != "Skipped"]
    times = [i.seconds for i in delivered if i.seconds is not None]
    deadline = spec.template.deadline
    return CampaignReport(
        finished_at=finished_at, entries=len(items), delivered=len(delivered),
        success_rate=round(len(delivered) / len(valid), 4) if valid else 0.0,
        median_seconds_per_dataset=round(statistics.median(times), 1) if times else None,
        mean_seconds_per_dataset=round(statistics.fmean(times), 1) if times else None,
        wall_seconds=round((finished_at - started_at).total_seconds(), 1) if started_at else None,
        failures_by_class=dict(Counter(i.failure_class for i in items
                                       if i.outcome in ("Failed", "Skipped") and i.failure_class)),
        deadline_met=None if deadline is None else finished_at <= deadline)


def report_document(campaign: str, report: CampaignReport, items: list[EntryStatus],
                    counts: PhaseCounts) -> dict:
    return {"campaign": campaign, **report.to_wire(), "outcomes": counts.by_outcome,
            "remediationsByClass": counts.remediations_by_class,
            "entries": [i.to_wire() for i in items]}


def report_html(campaign: str, report: CampaignReport, items: list[EntryStatus], counts: PhaseCounts) -> str:
    esc = html.escape

    def row(cells) -> str:
        return "<tr>" + "".join(f"<td>{esc('' if c is None else str(c))}</td>" for c in cells) + "</tr>"

    def table(head: list[str], rows: list) -> str:
        return ("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>" + "".join(rows)
                + "</table>")

    summary = [("entries", report.entries), ("delivered", report.delivered),
               ("success rate", f"{report.success_rate:.1%}"),
               ("median s per dataset", report.median_seconds_per_dataset),
               ("mean s per dataset", report.mean_seconds_per_dataset), ("wall s", report.wall_seconds),
               ("deadline met", report.deadline_met), ("finished", report.finished_at.isoformat())]
    return "\n".join([
        "<!DOCTYPE html>", "<html><head><meta charset='utf-8'>", f"<title>Campaign {esc(campaign)}</title>",
        "<style>body{font-family:sans-serif}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #999;padding:2px 6px;text-align:left}</style></head><body>",
        f"<h1>Campaign {esc(campaign)}</h1>",
        table(["figure", "value"], [row(r) for r in summary]),
        "<h2>Outcomes</h2>", table(["outcome", "entries"], [row(r) for r in sorted(counts.by_outcome.items())]),
        "<h2>Failures by class</h2>",
        table(["class", "entries"], [row(r) for r in sorted(report.failures_by_class.items())]),
        "<h2>Remediations by class</h2>",
        table(["class", "retries"], [row(r) for r in sorted(counts.remediations_by_class.items())]),
        "<h2>Entries</h2>",
        table(["#", "entry", "MOUS", "outcome", "reason", "class", "remediations", "seconds", "message"],
              [row((i.index, i.name, i.mous, i.outcome, i.reason, i.failure_class, i.remediations, i.seconds,
                    i.message)) for i in items]),
        "</body></html>", ""])
