"""ALMA's QA2 assessment of imaging products against the proposal's science goals.

Rules (per science goal):
- resolution: the beam's geometric mean sqrt(bmaj * bmin) must lie in the requested range; up to 10 % outside
  it is a SemiPass (the data are useful but not as asked), further out a Fail;
- sensitivity: the image rms, scaled to the goal's bandwidth as noise scales (sqrt(bandwidth ratio)), may
  exceed the requested sensitivity by the band's tolerance (10 % for bands 1-6, 15 % for 7-8, 20 % for 9-10);
  up to twice that excess is a SemiPass, more is a Fail.
The MOUS verdict is the worst of its goals'. Every failed or semi-passed rule gives a reason in words.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from mousflow.science.qa.scores import ratio_score
from mousflow.telescope.alma import qa2_rms_tolerance

ORDER = {"Pass": 0, "SemiPass": 1, "Fail": 2}
RESOLUTION_SEMIPASS_MARGIN = 0.10


@dataclass
class GoalAssessment:
    goal: str
    verdict: str
    beam_arcsec: float
    resolution_range_arcsec: tuple[float, float]
    rms_jy: float
    rms_at_goal_bandwidth_jy: float
    requested_sensitivity_jy: float
    rms_tolerance: float
    reasons: list[str] = field(default_factory=list)

    @property
    def rms_ratio(self) -> float:
        return self.rms_at_goal_bandwidth_jy / self.requested_sensitivity_jy


@dataclass
class QA2Result:
    verdict: str
    reasons: list[str]
    goals: list[GoalAssessment]
    score: float

    def to_json(self) -> dict:
        d = asdict(self)
        for g, goal in zip(d["goals"], self.goals, strict=True):
            g["rms_ratio"] = goal.rms_ratio
        return d


def assess_goal(name: str, band: int, beam_major_arcsec: float, beam_minor_arcsec: float, rms_jy: float,
                image_bandwidth_hz: float, requested_sensitivity_jy: float, goal_bandwidth_hz: float,
                resolution_min_arcsec: float, resolution_max_arcsec: float) -> GoalAssessment:
    beam = math.sqrt(beam_major_arcsec * beam_minor_arcsec)
    rms_goal = rms_jy * math.sqrt(image_bandwidth_hz / goal_bandwidth_hz)
    tol = qa2_rms_tolerance(band)
    verdicts, reasons = ["Pass"], []

    lo, hi = resolution_min_arcsec, resolution_max_arcsec
    if not (lo <= beam <= hi):
        outside = (lo - beam) / lo if beam < lo else (beam - hi) / hi
        v = "SemiPass" if outside <= RESOLUTION_SEMIPASS_MARGIN else "Fail"
        verdicts.append(v)
        side = "finer" if beam < lo else "coarser"
        reasons.append(f"{name}: beam {beam:.3f}\" is {side} than the requested {lo:.3f}-{hi:.3f}\" "
                       f"({outside:.0%} outside)")
    ratio = rms_goal / requested_sensitivity_jy
    if ratio > 1 + tol:
        v = "SemiPass" if ratio <= 1 + 2 * tol else "Fail"
        verdicts.append(v)
        reasons.append(f"{name}: rms {rms_goal * 1e3:.4g} mJy/beam (at {goal_bandwidth_hz / 1e9:.3g} GHz bandwidth) "
                       f"is {ratio - 1:.0%} above the requested {requested_sensitivity_jy * 1e3:.4g} mJy/beam; "
                       f"band {band} allows {tol:.0%}")
    verdict = max(verdicts, key=ORDER.__getitem__)
    return GoalAssessment(name, verdict, beam, (lo, hi), rms_jy, rms_goal, requested_sensitivity_jy, tol, reasons)


def qa2_verdict(goals: list[GoalAssessment]) -> QA2Result:
    if not goals:
        return QA2Result("Fail", ["no science goal could be assessed"], [], 0.0)
    verdict = max((g.verdict for g in goals), key=ORDER.__getitem__)
    reasons = [r for g in goals for r in g.reasons]
    # Score: how comfortably the worst goal meets its sensitivity and resolution (1 = well inside).
    score = 1.0
    for g in goals:
        score = min(score, ratio_score(g.rms_ratio, 1 + g.rms_tolerance, 1 + 2 * g.rms_tolerance))
        lo, hi = g.resolution_range_arcsec
        if not (lo <= g.beam_arcsec <= hi):
            score = min(score, 0.5 if g.verdict != "Fail" else 0.0)
    if verdict == "Fail":
        score = min(score, 0.2)
    return QA2Result(verdict, reasons, goals, score)
