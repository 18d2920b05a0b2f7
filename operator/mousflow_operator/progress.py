"""A stage's entry in status.stages, from its Jobs and the outcome it reported in storage (pure)."""

from __future__ import annotations

from mousflow.model import StageStatus
from mousflow.model.status import ResourceAmounts, ResourceUsage, StageResources, StageState


def _latest(jobs: list[dict]) -> dict | None:
    """The stage's newest Job: by creation (a retried run numbers its attempts from 1 again, while the failed
    run's Jobs stay for their TTL), then by attempt (Jobs created within the same second)."""
    def order(job: dict) -> tuple[str, int]:
        try:
            attempt = int(job["metadata"].get("annotations", {}).get("mousflow.io/attempt", 0))
        except ValueError:
            attempt = 0
        return str(job["metadata"].get("creationTimestamp") or ""), attempt
    return max(jobs, key=order) if jobs else None


def stage_status(report: dict | None, jobs: list[dict], checkpoint_uri: str | None,
                 progress: dict | None = None) -> StageStatus:
    """`report`: the stage's <output>/status/<stage>.json (None if absent); `jobs`: its Jobs (API form);
    `progress`: the running stage's latest <output>/status/<stage>.progress.json (chunk-level percent)."""
    job = _latest(jobs)
    st = StageStatus(attempts=len(jobs))
    if job is not None:
        js = job.get("status") or {}
        st.started_at = js.get("startTime") or job["metadata"].get("creationTimestamp")
        st.finished_at = js.get("completionTime")
        res = job["spec"]["template"]["spec"]["containers"][0].get("resources", {})
        st.resources = StageResources(requested=ResourceAmounts(**(res.get("requests") or {})),
                                      limits=ResourceAmounts(**(res.get("limits") or {})))
        if js.get("active"):
            st.state = StageState.RUNNING
            if progress is not None:
                st.progress_percent = min(100.0, max(0.0, float(progress.get("percent", 0.0))))
                st.message = str(progress.get("message", ""))[:4096]
        elif js.get("failed") and report is None:
            st.state, st.message = StageState.FAILED, "stage pod failed without reporting an outcome"
    if report is not None and (job is None or not (job.get("status") or {}).get("active")):
        st.state = StageState(report["state"])
        m = report.get("metrics") or {}
        st.message = (f"{report.get('reason')}: " if report.get("reason") else "") + report.get("message", "")
        usage = ResourceUsage(peak_memory_bytes=m.get("peak_memory_bytes"), cpu_seconds=m.get("cpu_seconds"),
                              wall_seconds=m.get("wall_seconds"))
        st.resources = (st.resources or StageResources()).model_copy(update={"used": usage})
        if st.finished_at is None and job is not None:
            st.finished_at = ((job.get("status") or {}).get("conditions") or [{}])[-1].get("lastTransitionTime")
    if st.state in (StageState.SUCCEEDED, StageState.SKIPPED):
        st.progress_percent = 100.0
        st.checkpoint_uri = checkpoint_uri
    # fields were assigned without validation: validate once (times from the API's strings into datetimes)
    return StageStatus.model_validate(st.model_dump(warnings=False))


def overall_progress(stages: dict[str, StageStatus], order: tuple[str, ...]) -> float:
    return round(sum(stages[s].progress_percent for s in order if s in stages) / len(order), 1)
