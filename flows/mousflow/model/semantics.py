"""Checks of a MOUS spec that the CRD schema cannot express (several fields at once, telescope knowledge).

A spec that fails them is accepted by the API server but must not be processed: the operator reports each
problem in a Degraded condition with a message a person can act on.
"""

from __future__ import annotations

from dataclasses import dataclass

from mousflow.model.spec import MOUSSpec
from mousflow.telescope import BANDS, band_for_frequency


@dataclass(frozen=True)
class SpecProblem:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def check_spec_semantics(spec: MOUSSpec) -> list[SpecProblem]:
    problems: list[SpecProblem] = []
    band = BANDS[spec.band]
    for i, goal in enumerate(spec.science_goals):
        where = f"spec.scienceGoals[{i}]"
        if goal.resolution.min_arcsec > goal.resolution.max_arcsec:
            problems.append(SpecProblem(
                f"{where}.resolution",
                f"range is inverted: minArcsec {goal.resolution.min_arcsec} > maxArcsec {goal.resolution.max_arcsec}",
            ))
        if not band.contains(goal.representative_frequency_hz):
            covering = band_for_frequency(goal.representative_frequency_hz)
            hint = f"; that frequency is in band {', '.join(map(str, covering))}" if covering else ""
            problems.append(SpecProblem(
                f"{where}.representativeFrequencyHz",
                f"{goal.representative_frequency_hz / 1e9:.3f} GHz is outside band {spec.band} "
                f"({band.low_hz / 1e9:.0f}-{band.high_hz / 1e9:.0f} GHz){hint}",
            ))
    uids = [eb.uid for eb in spec.execution_blocks]
    duplicates = sorted({u for u in uids if uids.count(u) > 1})
    if duplicates:
        problems.append(SpecProblem("spec.executionBlocks", f"execution block listed twice: {', '.join(duplicates)}"))
    return problems
