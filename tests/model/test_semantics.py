"""Semantic checks of a spec the schema accepts: dates in the future, locations that climb or overlap."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml

from mousflow.model import MOUSSpec, check_spec_semantics
from mousflow.model.semantics import MAX_CLOCK_SKEW, location_overlaps

BASE = yaml.safe_load((Path(__file__).parent / "manifests" / "valid-minimal.yaml").read_text())["spec"]
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _problems(**changes) -> list[str]:
    spec = MOUSSpec.model_validate({**BASE, **changes})
    return [str(p) for p in check_spec_semantics(spec, now=NOW)]


def test_the_base_spec_has_no_problems():
    assert _problems() == []


def test_fully_observed_in_the_future_beyond_the_clock_skew():
    assert _problems(fullyObservedAt=(NOW + MAX_CLOCK_SKEW / 2).isoformat()) == []
    (problem,) = _problems(fullyObservedAt=(NOW + timedelta(days=1)).isoformat())
    assert problem.startswith("spec.fullyObservedAt: 2026-12-02T00:00:00+00:00 is in the future")


@pytest.mark.parametrize("uri,words", [
    ("/data/mous/../../etc", "contains '..'"),
    ("s3://alma-products/a/../b", "contains '..'"),
    ("/data/out\tput", "control characters"),
    ("s3://alma-raw/a001-x1296-x133/eb1.ps.zarr", "is the same location as spec.executionBlocks[0].uri"),
    ("s3://alma-raw/a001-x1296-x133/eb1.ps.zarr/out", "is inside spec.executionBlocks[0].uri"),
    ("s3://alma-raw/a001-x1296-x133", "contains spec.executionBlocks[0].uri"),
])
def test_output_locations_that_climb_hide_characters_or_overlap_an_input(uri, words):
    (problem,) = _problems(output={"uri": uri})
    assert problem.startswith("spec.output.uri: ") and words in problem


def test_overlap_is_by_path_segments_and_scheme():
    inputs = [("in", "/data/eb1.ps.zarr")]
    assert location_overlaps(inputs, [("out", "/data/eb1.ps.zarr-products")]) == []
    assert location_overlaps(inputs, [("out", "s3://data/eb1.ps.zarr")]) == []
    assert location_overlaps(inputs, [("out", "file:///data/eb1.ps.zarr/")])
    assert location_overlaps([("in", "/data//eb1.ps.zarr/.")], [("out", "/data/eb1.ps.zarr")])


def test_separation_agrees_with_astropy_at_every_scale():
    from astropy.coordinates import angular_separation

    from mousflow.model.semantics import separation_arcsec

    rng = np.random.default_rng(5)
    for scale_deg in (1e-4, 0.01, 1.0, 60.0, 179.0):
        for _ in range(20):
            ra1, dec1 = rng.uniform(0, 2 * np.pi), rng.uniform(-1.5, 1.5)
            step = np.radians(scale_deg) * rng.uniform(-1, 1, 2)
            ra2, dec2 = ra1 + step[0], float(np.clip(dec1 + step[1], -np.pi / 2, np.pi / 2))
            want = np.degrees(angular_separation(ra1, dec1, ra2, dec2)) * 3600
            got = separation_arcsec((ra1, dec1), (ra2, dec2))
            assert got == pytest.approx(float(want), rel=1e-9, abs=1e-6)


def test_one_pointing_under_any_names_and_a_mosaic_refused_with_its_pointings():
    from mousflow.model.semantics import several_pointings

    centre = (np.radians(53.12275), np.radians(-27.805))
    arcsec = np.radians(1 / 3600)
    # the same pointing in two execution blocks and under another field ID: one pointing
    assert several_pointings([("CDFS_field_0", centre), ("CDFS_field_7", (centre[0], centre[1] + 0.3 * arcsec))]) \
        is None
    assert several_pointings([]) is None
    around = np.radians(np.arange(0, 360, 60))
    ra, dec = centre
    hexagon = [("CDFS_field_0", centre)] + [
        (f"CDFS_field_{k}", (ra + 25 * arcsec * np.cos(a) / np.cos(dec), dec + 25 * arcsec * np.sin(a)))
        for k, a in enumerate(around, start=1)]
    why = several_pointings(hexagon)
    assert why.startswith("the science target is observed at 7 pointings up to 25.0 arcsec apart: CDFS_field_0 (RA "
                          "53.12275, Dec -27.80500 deg)"), why
    assert "and 3 more" in why and "mosaics are not imaged yet" in why and "one MOUS per pointing" in why

