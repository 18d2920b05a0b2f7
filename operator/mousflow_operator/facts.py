"""The facts about running MOUSs that arrive by themselves, kept in the operator's memory (no polling).

Why (measured with bench/control_plane.py, figures in the README): the old design reconciled every MOUS on a
3-second timer, listing its Jobs and reading up to a dozen objects from S3 (each stage's report, progress and
retry record) per tick. Those facts change a few times per stage, and each change is announced somewhere the
operator already is:

  * a stage Job's creation, start and end: the Kubernetes watch on Jobs labelled mousflow.io/mous
    (handlers.stage_job_event feeds `job_event`), instead of a Job list per MOUS per tick;
  * a stage's outcome and its retries: the flow runs in a thread of this process and publishes them
    (mousflow.pipeline.reports -> `flow_report`), instead of reading <output>/status/<stage>.json per tick;
  * a running stage's progress (imaging: per channel chunk): written by the pod to storage, so read from there,
    but only for a stage whose Job is active and only on the progress timer (MOUSFLOW_PROGRESS_SECONDS).

Storage stays the record that outlives this process: after a restart, a stage whose Job has finished but
whose outcome this process has not heard is read from storage once (`report`, `retries`), and the
restarted flow run publishes the rest again. Each arrival wakes the MOUS it belongs to (wake.Waker).

Everything here is guarded by one lock: the Job watch, the flow threads and kopf's handler threads all touch it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from mousflow.pipeline.kubernetes import LABEL_MOUS, LABEL_STAGE, retries_location
from mousflow.stages.runner import progress_location, status_location
from mousflow.storage.location import Location

_ABSENT = object()


def slim_job(body: dict) -> dict:
    """What status.stages needs of a Job (progress.stage_status reads these fields), API form: a Job's pod
    template is dropped, so a thousand MOUSs' Jobs cost little memory."""
    meta = body.get("metadata") or {}
    containers = (((body.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or [{}]
    return {"metadata": {k: meta.get(k) for k in ("name", "namespace", "uid", "labels", "annotations",
                                                  "creationTimestamp", "ownerReferences")},
            "spec": {"template": {"spec": {"containers": [{"resources": containers[0].get("resources") or {}}]}}},
            "status": dict(body.get("status") or {})}


def job_finished(job: dict) -> bool:
    st = job.get("status") or {}
    return bool(st.get("succeeded") or st.get("failed")) and not st.get("active")


def job_active(job: dict) -> bool:
    return bool((job.get("status") or {}).get("active"))


@dataclass
class _MOUSFacts:
    reports: dict[str, dict] = field(default_factory=dict)
    """stage -> the stage's report (status document) as the flow published it"""
    retries: dict[str, list] = field(default_factory=dict)
    stored: dict[tuple[str, str], object] = field(default_factory=dict)
    """(stage, what) -> what storage held when last read (_ABSENT: nothing), with the Job it was read for"""
    progress: dict[str, tuple[float, dict | None]] = field(default_factory=dict)


class FactStore:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.jobs: dict[str, dict[str, dict]] = {}
        """MOUS label (mousflow.io/mous) -> Job name -> slim Job"""
        self.by_uid: dict[str, _MOUSFacts] = {}
        self.keys: dict[str, str] = {}
        """MOUS uid -> namespace/name, and MOUS label -> namespace/name"""
        self.storage_reads = 0

    # ------------------------------------------------------------------------------------------ arrivals
    def bind(self, uid: str, label: str, key: str) -> None:
        with self.lock:
            self.keys[uid] = key
            self.keys[label] = key

    def key_of(self, uid_or_label: str) -> str | None:
        with self.lock:
            return self.keys.get(uid_or_label)

    def job_event(self, event_type: str | None, body: dict) -> bool:
        """A Job watch event; whether it changed anything status.stages shows (then its MOUS is woken)."""
        labels = (body.get("metadata") or {}).get("labels") or {}
        label, name = labels.get(LABEL_MOUS), (body.get("metadata") or {}).get("name")
        if not label or not name:
            return False
        with self.lock:
            jobs = self.jobs.setdefault(label, {})
            if event_type == "DELETED":
                return jobs.pop(name, None) is not None
            new = slim_job(body)
            old = jobs.get(name)
            jobs[name] = new
            return old is None or old["status"] != new["status"]

    def flow_report(self, uid: str, event: dict) -> None:
        with self.lock:
            facts = self.by_uid.setdefault(uid, _MOUSFacts())
            if event.get("kind") == "outcome":
                facts.reports[event["stage"]] = dict(event["report"])
            elif event.get("kind") == "retries":
                facts.retries[event["stage"]] = list(event["retries"])

    def new_run(self, uid: str) -> None:
        """A new run of the MOUS's flow starts in this process: what the previous one reported is no news of it."""
        with self.lock:
            self.by_uid.pop(uid, None)

    def forget(self, uid: str, label: str) -> None:
        with self.lock:
            self.by_uid.pop(uid, None)
            self.jobs.pop(label, None)
            for k in (uid, label):
                self.keys.pop(k, None)

    # ---------------------------------------------------------------------------------------- questions
    def jobs_of(self, label: str) -> dict[str, list[dict]]:
        """The MOUS's stage Jobs by stage."""
        out: dict[str, list[dict]] = {}
        with self.lock:
            for job in (self.jobs.get(label) or {}).values():
                out.setdefault(job["metadata"]["labels"].get(LABEL_STAGE, "?"), []).append(job)
        return out

    def report(self, uid: str, run_root: Location, stage: str, jobs: list[dict]) -> dict | None:
        """The stage's report: as the flow published it, else (after a restart) from storage, read once per
        finished Job of the stage; None while its Job runs or before it has one."""
        with self.lock:
            facts = self.by_uid.setdefault(uid, _MOUSFacts())
            if stage in facts.reports:
                return facts.reports[stage]
        finished = [j for j in jobs if job_finished(j)]
        if not finished or any(job_active(j) for j in jobs):
            return None
        return self._stored(uid, stage, "report", max(j["metadata"]["name"] for j in finished),
                            status_location(run_root, stage))

    def retries(self, uid: str, run_root: Location, stage: str, jobs: list[dict]) -> list | None:
        """The launcher's retry records of the stage: as published, else from storage once a stage has had a
        second Job (only then can there be any)."""
        with self.lock:
            facts = self.by_uid.setdefault(uid, _MOUSFacts())
            if stage in facts.retries:
                return facts.retries[stage]
        if len(jobs) < 2:
            return None
        return self._stored(uid, stage, "retries", str(len(jobs)), retries_location(run_root, stage))

    def progress(self, uid: str, run_root: Location, stage: str, refresh: bool) -> dict | None:
        """The running stage's last published progress; read from storage only when `refresh` (the progress
        timer), else the last one read."""
        with self.lock:
            facts = self.by_uid.setdefault(uid, _MOUSFacts())
            cached = facts.progress.get(stage)
        if not refresh:
            return cached[1] if cached else None
        loc = progress_location(run_root, stage)
        doc = self._read(loc)
        with self.lock:
            self.by_uid.setdefault(uid, _MOUSFacts()).progress[stage] = (time.monotonic(), doc)
        return doc

    def _stored(self, uid: str, stage: str, what: str, version: str, loc: Location):
        with self.lock:
            facts = self.by_uid.setdefault(uid, _MOUSFacts())
            hit = facts.stored.get((stage, what))
            if hit is not None and hit[0] == version:
                return None if hit[1] is _ABSENT else hit[1]
        doc = self._read(loc)
        with self.lock:
            self.by_uid.setdefault(uid, _MOUSFacts()).stored[(stage, what)] = (version,
                                                                               _ABSENT if doc is None else doc)
        return doc

    def _read(self, loc: Location):
        with self.lock:
            self.storage_reads += 1
        try:
            return loc.read_json()
        except FileNotFoundError:
            return None
        except Exception:  # unreadable just now: not cached as absent by the caller's next attempt either way
            return None
