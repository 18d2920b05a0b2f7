"""Checks of a MOUS spec that the CRD schema cannot express (several fields at once, telescope knowledge).

A spec that fails them is accepted by the API server but must not be processed: the operator reports each
problem in a Degraded condition with a message a person can act on.
"""

from __future__ import annotations

import math
import posixpath
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from mousflow.model.spec import MOUSSpec
from mousflow.telescope import BANDS, band_for_frequency

# How far ahead of this machine's clock a fullyObservedAt may be: clocks of different machines differ a little,
# a date years ahead is a typing error (and would put the MOUS's deadline out of reach of the queue).
MAX_CLOCK_SKEW = timedelta(minutes=10)


@dataclass(frozen=True)
class SpecProblem:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def outside_band(frequency_hz: float, band_number: int) -> str | None:
    """Why `frequency_hz` contradicts the declared band, or None if the band's receivers cover it."""
    band = BANDS[band_number]
    if band.contains(frequency_hz):
        return None
    covering = band_for_frequency(frequency_hz)
    hint = f"; that frequency is in band {', '.join(map(str, covering))}" if covering else ""
    return (f"{frequency_hz / 1e9:.3f} GHz is outside band {band_number} "
            f"({band.low_hz / 1e9:.0f}-{band.high_hz / 1e9:.0f} GHz){hint}")


POINTING_TOLERANCE_ARCSEC = 1.0
"""Target fields whose phase centres are closer than this are one pointing (the same field observed again, in
another execution block or under another field ID)."""


def separation_arcsec(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance between two (RA, Dec) in radians (Vincenty's formula: exact at every distance; a few
    lines of math rather than astropy.coordinates, whose import the operator's input check would carry)."""
    (ra1, d1), (ra2, d2) = a, b
    dra = ra2 - ra1
    num = math.hypot(math.cos(d2) * math.sin(dra),
                     math.cos(d1) * math.sin(d2) - math.sin(d1) * math.cos(d2) * math.cos(dra))
    den = math.sin(d1) * math.sin(d2) + math.cos(d1) * math.cos(d2) * math.cos(dra)
    return math.degrees(math.atan2(num, den)) * 3600.0


def several_pointings(fields: list[tuple[str, tuple[float, float]]]) -> str | None:
    """Why target fields (name, (RA, Dec) radians) at more than one pointing cannot make one MOUS's images, or
    None when they are one pointing. mousflow images one phase centre: a mosaic (or several science targets)
    would be gridded as if every pointing were at the first one's centre, so it is refused rather than imaged
    wrongly."""
    pointings: list[tuple[tuple[float, float], list[str]]] = []
    for name, centre in fields:
        for where, names in pointings:
            if separation_arcsec(where, centre) < POINTING_TOLERANCE_ARCSEC:
                names.append(name)
                break
        else:
            pointings.append((centre, [name]))
    if len(pointings) < 2:
        return None
    first = pointings[0][0]
    widest = max(separation_arcsec(first, c) for c, _ in pointings)
    shown = ", ".join(f"{'/'.join(sorted(set(names)))} (RA {math.degrees(c[0]) % 360:.5f}, Dec "
                      f"{math.degrees(c[1]):+.5f} deg)" for c, names in pointings[:4])
    more = f" and {len(pointings) - 4} more" if len(pointings) > 4 else ""
    return (f"the science target is observed at {len(pointings)} pointings up to {widest:.1f} arcsec apart: "
            f"{shown}{more}. This is a mosaic (or several targets), and mosaics are not imaged yet: each "
            f"pointing would be imaged at the first one's phase centre. Make one MOUS per pointing")


def check_spec_semantics(spec: MOUSSpec, now: datetime | None = None) -> list[SpecProblem]:
    problems: list[SpecProblem] = []
    for i, goal in enumerate(spec.science_goals):
        where = f"spec.scienceGoals[{i}]"
        if goal.resolution.min_arcsec > goal.resolution.max_arcsec:
            problems.append(SpecProblem(
                f"{where}.resolution",
                f"range is inverted: minArcsec {goal.resolution.min_arcsec} > maxArcsec {goal.resolution.max_arcsec}",
            ))
        mismatch = outside_band(goal.representative_frequency_hz, spec.band)
        if mismatch:
            problems.append(SpecProblem(f"{where}.representativeFrequencyHz", mismatch))
    uids = [eb.uid for eb in spec.execution_blocks]
    duplicates = sorted({u for u in uids if uids.count(u) > 1})
    if duplicates:
        problems.append(SpecProblem("spec.executionBlocks", f"execution block listed twice: {', '.join(duplicates)}"))
    now = now or datetime.now(UTC)
    if spec.fully_observed_at > now + MAX_CLOCK_SKEW:
        problems.append(SpecProblem("spec.fullyObservedAt", f"{spec.fully_observed_at.isoformat()} is in the future "
                                    f"(now {now.isoformat(timespec='seconds')}): a MOUS is fully observed only "
                                    f"once its last execution block has ended"))
    uris = uri_fields(spec)
    malformed = [SpecProblem(field, problem) for field, uri in [*uris.inputs, *uris.outputs]
                 if (problem := uri_problem(uri))]
    return problems + (malformed or location_overlaps(uris.inputs, uris.outputs))


@dataclass(frozen=True)
class UriFields:
    inputs: list[tuple[str, str]]
    """(field, URI) of what the run reads: the execution blocks."""
    outputs: list[tuple[str, str]]
    """(field, URI) of where it writes: the output and the delivery locations."""


def uri_fields(spec: MOUSSpec) -> UriFields:
    inputs = [(f"spec.executionBlocks[{i}].uri", eb.uri) for i, eb in enumerate(spec.execution_blocks)]
    outputs = [("spec.output.uri", spec.output.uri)]
    if spec.delivery and spec.delivery.uri:
        outputs.append(("spec.delivery.uri", spec.delivery.uri))
    return UriFields(inputs, outputs)


def uri_problem(uri: str) -> str | None:
    """What is wrong with a location the schema's pattern accepts: `..` segments (a path that climbs out of
    where it seems to point) and control characters."""
    if any(ord(c) < 32 or ord(c) == 127 for c in uri):
        return "contains control characters"
    if ".." in _path_of(uri).split("/"):
        return f"{uri!r} contains '..': give the location without climbing out of a directory"
    return None


def _path_of(uri: str) -> str:
    return uri.split("://", 1)[1] if "://" in uri else uri


def _location_key(uri: str) -> tuple[str, tuple[str, ...]]:
    """(scheme, path segments) of a URI the schema accepts: /x and file:///x are the same place."""
    scheme = uri.split("://", 1)[0] if "://" in uri else "file"
    path = posixpath.normpath("/" + _path_of(uri).lstrip("/"))
    return scheme, tuple(p for p in path.split("/") if p)


def location_overlaps(inputs: list[tuple[str, str]], outputs: list[tuple[str, str]]) -> list[SpecProblem]:
    """Output locations that are, are inside or contain an input location: a run would write into its own
    inputs (or, for a location containing them, beside them under names it owns, e.g. mous.yaml)."""
    problems = []
    for out_field, out_uri in outputs:
        (o_scheme, o), in_use = _location_key(out_uri), []
        for in_field, in_uri in inputs:
            i_scheme, i = _location_key(in_uri)
            if o_scheme != i_scheme:
                continue
            if o == i:
                in_use.append(f"is the same location as {in_field} ({in_uri})")
            elif o[:len(i)] == i:
                in_use.append(f"is inside {in_field} ({in_uri})")
            elif i[:len(o)] == o:
                in_use.append(f"contains {in_field} ({in_uri})")
        if in_use:
            problems.append(SpecProblem(out_field, f"{out_uri} {in_use[0]}: the run would write into its input; "
                                                   f"choose a location apart from the execution blocks"))
    return problems
