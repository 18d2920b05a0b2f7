"""The Prefect flow that processes one MOUS: calibration, imaging, packaging.

Each stage is a Prefect task that launches the stage's entry point (see launchers) and waits for its outcome.
A stage whose checkpoint is valid is not even launched (it is reported Skipped), and a stage skips the work
its checkpoints hold, so running the flow again after a failure or a kill resumes from the last completed
stage, and imaging from its last completed channel chunk.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import yaml
from prefect import flow, get_run_logger, task

from mousflow.model import load_manifest
from mousflow.pipeline import reports
from mousflow.pipeline.launchers import launch_unless_complete, make_launcher
from mousflow.stages import STAGE_ORDER
from mousflow.stages.context import StageOutcome
from mousflow.stages.inputs import check_inputs
from mousflow.storage.location import Location
from mousflow.storage.locks import OutputLock

MANIFEST_NAME = "mous.yaml"


@dataclass
class FlowResult:
    uid: str
    outcomes: list[StageOutcome] = field(default_factory=list)
    qa2: str | None = None
    weblog: str | None = None
    failed: StageOutcome | None = None

    @property
    def succeeded(self) -> bool:
        return self.failed is None


class StageFailed(RuntimeError):
    def __init__(self, outcome: StageOutcome):
        super().__init__(f"stage {outcome.stage} failed: {outcome.reason}: {outcome.message}")
        self.outcome = outcome


def publish_manifest(manifest_text: str) -> tuple[str, Location]:
    """Put the MOUS manifest where the stages read it: <output>/mous.yaml. Returns (its URI, the run root)."""
    mous = load_manifest(manifest_text)
    run_root = Location.of(mous.spec.output.uri)
    target = run_root.join(MANIFEST_NAME)
    text = yaml.safe_dump(mous.to_wire(), sort_keys=False)
    if not target.exists() or target.read_text() != text:
        target.write_text(text)
    return target.uri, run_root


@task(name="stage", task_run_name="{stage}")
def run_stage_task(stage: str, manifest_uri: str, run_root_uri: str, launcher_kind: str, threads: int,
                   job_config: dict | None = None, uid: str = "") -> dict:
    logger = get_run_logger()
    launcher = make_launcher(launcher_kind, threads, job_config)
    outcome = launch_unless_complete(launcher, stage, manifest_uri, Location(run_root_uri), logger.info)
    logger.info("stage %s: %s %s", stage, outcome.state, outcome.message)
    if uid:  # to the process running the flow (the operator), at once: see pipeline.reports
        reports.publish(uid, {"kind": "outcome", "stage": stage, "report": outcome.to_json()})
    if outcome.state == "Succeeded":
        _record_history(stage, manifest_uri, outcome, logger)
    if outcome.state == "Failed":
        raise StageFailed(outcome)
    return outcome.to_json()


def _record_history(stage: str, manifest_uri: str, outcome: StageOutcome, logger) -> None:
    """Measured peak and duration into the history store (MOUSFLOW_HISTORY), which refines the resource model.
    Never fails the stage: the history is advice."""
    from mousflow.pipeline.demand import demand_of
    from mousflow.pipeline.history import History, record_outcome

    history = History.from_env()
    if history is None:
        return
    try:
        mous = load_manifest(Location.of(manifest_uri).read_text())
        for rec in record_outcome(history, stage, mous.spec.uid, demand_of(mous), outcome.metrics,
                                  requested_bytes=int(outcome.metrics.get("requested_memory_bytes", 0))):
            logger.info("history: %s peak %.0f MiB (model %.0f MiB), %.1f s", rec.stage, rec.peak_bytes / 2**20,
                        rec.model_bytes / 2**20, rec.wall_seconds)
    except Exception as exc:  # the history is advice, never a reason to fail a MOUS
        logger.warning("could not record stage %s in the history: %s", stage, exc)


@flow(name="process-mous", flow_run_name="{uid}", log_prints=True)
def process_mous_flow(uid: str, manifest_text: str, launcher_kind: str = "local", threads: int = 1,
                      job_config: dict | None = None) -> dict:
    """`job_config`: the platform's settings of stage Jobs (pipeline.launchers.StageJobConfig as JSON), given by
    the operator; None: from the environment."""
    manifest_uri, run_root = publish_manifest(manifest_text)
    outcomes = []
    for stage in STAGE_ORDER:
        outcomes.append(run_stage_task(stage, manifest_uri, run_root.uri, launcher_kind, threads, job_config, uid))
    return {"uid": uid, "outcomes": outcomes}


def process_mous(manifest_text: str, launcher_kind: str = "local", threads: int = 1, *,
                 run_context: Callable[[], AbstractContextManager] = contextlib.nullcontext) -> FlowResult:
    """Run the flow for one MOUS and summarise it (QA2 verdict, weblog) without raising on stage failure.

    Before anything is started or written, the inputs are checked (stages.inputs; the calibration stage reads
    the data back against its checksums, so that is left to it) and the output location is locked: a bad
    input or a location in use by another run raises its classified error here. `run_context` is entered only
    then (e.g. the run's log file and a local Prefect server), so a refused run starts and writes nothing."""
    mous = load_manifest(manifest_text)
    check_inputs(mous.spec, verify=False)
    run_root = Location.of(mous.spec.output.uri)
    result = FlowResult(mous.spec.uid)
    with OutputLock(run_root, f"mousflow run of {mous.spec.uid}"), run_context():
        try:
            summary = process_mous_flow(mous.spec.uid, manifest_text, launcher_kind, threads)
            result.outcomes = [StageOutcome(**o) for o in summary["outcomes"]]
        except StageFailed as exc:
            result.failed = exc.outcome
    qa = run_root.join("products", "qa2.json")
    if result.succeeded and qa.exists():
        result.qa2 = qa.read_json()["verdict"]
        result.weblog = run_root.join("products", "weblog", "index.html").uri
    return result
