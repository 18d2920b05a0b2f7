"""The operator's pure parts: the state machine, conditions, deadline and queue order."""

from datetime import UTC, datetime, timedelta

from mousflow.kpi import deadline
from mousflow.model import Phase
from mousflow.model.status import StageStatus
from mousflow_operator.lifecycle import Facts, conditions_for, next_transition
from mousflow_operator.queue import QueueEntry, admissible

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def test_deadline_is_30_days_or_45_with_manual_work():
    assert deadline(T0) == T0 + timedelta(days=30)
    assert deadline(T0, manual_work=True) == T0 + timedelta(days=45)


def test_happy_path_with_automatic_delivery():
    phase = Phase.FULLY_OBSERVED
    steps = [Facts(inputs="ok"), Facts(admitted=True), Facts(run="succeeded", qa2="Pass", auto_delivery=True),
             Facts(qa2="Pass", auto_delivery=True), Facts(delivered=True, delivery_message="3 products")]
    seen = []
    for facts in steps:
        t = next_transition(phase, facts)
        assert t is not None, (phase, facts)
        phase = t.phase
        seen.append(phase)
    assert seen == [Phase.READY_FOR_PROCESSING, Phase.PROCESSING, Phase.READY_FOR_REVIEW,
                    Phase.DELIVERY_IN_PROGRESS, Phase.DELIVERED]
    assert next_transition(Phase.DELIVERED, Facts(inputs="ok")) is None


def test_review_is_needed_without_automatic_delivery_or_without_a_pass():
    assert next_transition(Phase.READY_FOR_REVIEW, Facts(qa2="Pass")).phase == Phase.REVIEWING
    t = next_transition(Phase.READY_FOR_REVIEW, Facts(qa2="SemiPass", auto_delivery=True))
    assert t.phase == Phase.REVIEWING and "mousflow.io/review" in t.message
    assert next_transition(Phase.REVIEWING, Facts()) is None
    assert next_transition(Phase.REVIEWING, Facts(review="semipass")).phase == Phase.DELIVERY_IN_PROGRESS
    assert next_transition(Phase.REVIEWING, Facts(review="fail")).phase == Phase.QA2_FAIL


def test_missing_input_fails_with_its_reason_and_a_bad_spec_never_moves():
    t = next_transition(Phase.FULLY_OBSERVED, Facts(inputs="missing", inputs_message="s3://b/eb: no such set"))
    assert (t.phase, t.reason, t.message) == (Phase.FAILED, "InputMissing", "s3://b/eb: no such set")
    t = next_transition(Phase.FULLY_OBSERVED, Facts(inputs="invalid", inputs_message="eb: the same data as eb2"))
    assert (t.phase, t.reason, t.message) == (Phase.FAILED, "InvalidInput", "eb: the same data as eb2")
    assert next_transition(Phase.FULLY_OBSERVED, Facts(spec_problems=("band",), inputs="ok")) is None
    assert next_transition(Phase.READY_FOR_PROCESSING, Facts()) is None
    t = next_transition(Phase.PROCESSING, Facts(run="failed", run_reason="CalibrationFailed", run_message="x"))
    assert (t.phase, t.reason) == (Phase.FAILED, "CalibrationFailed")


def test_conditions_keep_their_transition_time_while_unchanged():
    c1 = conditions_for([], Phase.PROCESSING, "Admitted", "go", (), T0)
    by = {c.type: c for c in c1}
    assert (by["Ready"].status, by["Progressing"].status, by["Degraded"].status) == ("False", "True", "False")
    later = T0 + timedelta(minutes=5)
    c2 = {c.type: c for c in conditions_for(c1, Phase.DELIVERED, "Delivered", "done", (), later)}
    assert c2["Ready"].status == "True" and c2["Ready"].last_transition_time == later
    assert c2["Degraded"].last_transition_time == T0
    c3 = {c.type: c for c in conditions_for([], Phase.FULLY_OBSERVED, "", "", ("spec.band: wrong",), T0)}
    assert c3["Degraded"].status == "True" and c3["Degraded"].reason == "InvalidSpec"
    assert "spec.band: wrong" in c3["Degraded"].message and c3["Progressing"].status == "False"


def test_a_stage_note_becomes_a_condition_and_clears_when_the_stage_no_longer_carries_it():
    note = ("WorkersUnschedulable: the Dask worker pods could not be scheduled for 121 s: 0/1 nodes are "
            "available: 1 Insufficient cpu.; the cube chunks were imaged in the stage pod")
    imaging = StageStatus(state="Succeeded", message=f"checkpoint kept; {note}")
    plain = conditions_for([], Phase.PROCESSING, "Admitted", "go", (), T0, stages={"calibration": StageStatus()})
    assert "WorkersUnschedulable" not in {c.type for c in plain}  # never raised: not shown at all
    c1 = {c.type: c for c in conditions_for(plain, Phase.PROCESSING, "Admitted", "go", (), T0,
                                            stages={"imaging": imaging})}
    got = c1["WorkersUnschedulable"]
    assert (got.status, got.reason) == ("True", "WorkersUnschedulable")
    assert got.message == f"imaging: {note}"
    # the MOUS is not degraded by it: it went on, in a lesser way
    assert c1["Degraded"].status == "False" and c1["Progressing"].status == "True"
    later = T0 + timedelta(minutes=5)
    c2 = {c.type: c for c in conditions_for(list(c1.values()), Phase.PROCESSING, "Admitted", "go", (), later,
                                            stages={"imaging": StageStatus(state="Succeeded")})}
    assert (c2["WorkersUnschedulable"].status, c2["WorkersUnschedulable"].last_transition_time) == ("False", later)


def test_queue_admits_earliest_deadline_then_highest_priority():
    entries = [QueueEntry("ns/late", T0 + timedelta(days=3), 100), QueueEntry("ns/early-low", T0, 10),
               QueueEntry("ns/early-high", T0, 90), QueueEntry("ns/mid", T0 + timedelta(days=1), 50)]
    assert admissible(entries, processing=0, limit=3) == ["ns/early-high", "ns/early-low", "ns/mid"]
    assert admissible(entries, processing=2, limit=3) == ["ns/early-high"]
    assert admissible(entries, processing=5, limit=3) == []


def test_a_just_created_mous_with_an_earlier_deadline_keeps_its_place():
    waiting = [QueueEntry("ns/late", T0 + timedelta(days=3)), QueueEntry("ns/mid", T0 + timedelta(days=1))]
    arriving = [QueueEntry("ns/early", T0)]
    # one slot: it is kept for the early MOUS still being checked, nothing starts now
    assert admissible(waiting, processing=0, limit=1, arriving=arriving) == []
    # two slots: the early one's and the next in order
    assert admissible(waiting, processing=0, limit=2, arriving=arriving) == ["ns/mid"]
    # an arriving MOUS with a later deadline holds nothing back
    assert admissible(waiting, processing=0, limit=1, arriving=[QueueEntry("ns/later", T0 + timedelta(days=9))]) \
        == ["ns/mid"]
