"""`mousflow import-ms` on a Measurement Set made by CASA's simulator: what it writes, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest
import yaml
from imported_sky import GOAL_ARGS

from mousflow.ingest.manifest import ImportOptions, build_manifest
from mousflow.ingest.metadata import summarise
from mousflow.model import check_spec_semantics, load_manifest
from mousflow.model.resource import ManifestError
from mousflow.storage.location import COMMIT_MARKER, Location
from mousflow.storage.zarr_io import open_processing_set
from mousflow_operator.crd import openapi_schema


def _eb_path(out: Path) -> Path:
    (eb,) = sorted((out / "eb").glob("*.ps.zarr"))
    return eb


def test_import_writes_a_committed_mous_whose_processing_set_passes_xradios_schema_check(imported, casa_ms):
    from xradio.schema.check import check_datatree

    assert (imported / COMMIT_MARKER).is_file()
    assert not list(imported.parent.glob("*.partial-*")), "staging directory left behind"
    ps = open_processing_set(Location.of(_eb_path(imported)))
    issues = check_datatree(ps)
    assert not issues, str(issues)
    # One partition per field and window: 4 fields (bandpass, flux, phase calibrators and the target) x 2.
    assert len(ps.children) == 8


def test_manifest_holds_what_the_measurement_set_holds(imported, casa_ms):
    resource = load_manifest((imported / "mous.yaml").read_text())
    spec = resource.spec
    assert check_spec_semantics(spec) == []
    assert spec.band == 3  # 100-102 GHz
    assert spec.project_code == "2026.1.00099.S"
    assert [eb.uri for eb in spec.execution_blocks] == [str(_eb_path(imported))]
    goal = spec.science_goals[0]
    assert goal.sensitivity_jy == 0.0004 and (goal.resolution.min_arcsec, goal.resolution.max_arcsec) == (2, 8)
    assert goal.representative_frequency_hz == pytest.approx(101.009375e9)
    assert goal.sensitivity_bandwidth_hz == pytest.approx(2 * 8 * 31.25e6)
    assert [(f.field, f.flux_jy) for f in spec.calibrator_fluxes] == [("J0423-0120", 1.25)]
    summary = json.loads((imported / "import.json").read_text())["execution_blocks"][0]
    intents = {f["source"].rsplit("_", 1)[0]: f["intents"] for f in summary["fields"]}
    assert intents == {"CDFS_field": ["OBSERVE_TARGET#ON_SOURCE"], "J0522-3627": ["CALIBRATE_BANDPASS#ON_SOURCE"],
                       "J0423-0120": ["CALIBRATE_FLUX#ON_SOURCE"], "J0329-2357": ["CALIBRATE_PHASE#ON_SOURCE"]}
    assert len(summary["antennas"]) == casa_ms["n_antennas"]
    assert summary["dish_diameter_m"] == [casa_ms["dish_diameter_m"]] * casa_ms["n_antennas"]
    assert [(w["n_chan"], round(w["first_hz"] / 1e9, 3)) for w in summary["windows"]] == [(8, 99.9), (8, 101.9)]
    # and the comment block a person reads says the same
    text = (imported / "mous.yaml").read_text()
    assert "field CDFS_field_0 (53.122750, -27.805000 deg): OBSERVE_TARGET#ON_SOURCE" in text
    assert "dish diameters 12 m" in text


def test_unfilled_science_goals_are_placeholders_the_model_and_the_crd_reject(imported, tmp_path):
    ps = open_processing_set(Location.of(_eb_path(imported)))
    doc, left = build_manifest([("uid://A002/X1/X1", str(_eb_path(imported)), summarise(ps))],
                               Location.of(tmp_path), ImportOptions())
    assert left == ["spec.scienceGoals[0].sensitivityJy", "spec.scienceGoals[0].resolution.minArcsec",
                    "spec.scienceGoals[0].resolution.maxArcsec"]
    with pytest.raises(ManifestError) as err:
        load_manifest(yaml.safe_dump(doc))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("manifest not complete: fill in ")
    assert "spec.scienceGoals[0].sensitivityJy (requested rms in Jy/beam" in message
    assert "spec.scienceGoals[0].resolution.maxArcsec" in message
    crd = jsonschema.Draft4Validator(openapi_schema())
    errors = list(crd.iter_errors(doc))
    assert sorted(".".join(map(str, e.absolute_path)) for e in errors) == [
        "spec.scienceGoals.0.resolution.maxArcsec", "spec.scienceGoals.0.resolution.minArcsec",
        "spec.scienceGoals.0.sensitivityJy"]
    # filled in, the same document is valid for both
    goal = doc["spec"]["scienceGoals"][0]
    goal["sensitivityJy"], goal["resolution"] = 4e-4, {"minArcsec": 2.0, "maxArcsec": 8.0}
    load_manifest(yaml.safe_dump(doc))
    assert not list(crd.iter_errors(doc))


def _nothing_written(out: Path) -> None:
    assert not out.exists(), f"{out} was created"
    assert not list(out.parent.glob(f"{out.name}.partial-*")), "staging directory left behind"


@pytest.mark.parametrize("kind", ["file", "empty directory", "other CASA table", "missing"])
def test_a_path_that_is_not_a_measurement_set_is_refused(import_ms, tmp_path, kind):
    bad = tmp_path / "data.ms"
    if kind == "file":
        bad.write_text("not a table")
    elif kind == "empty directory":
        bad.mkdir()
    elif kind == "other CASA table":
        bad.mkdir()
        (bad / "table.dat").write_bytes(b"\0" * 16)
        (bad / "table.info").write_text("Type = Calibration\nSubType = G Jones\n")
    out = tmp_path / "mous"
    code, _, err = import_ms(str(bad), "--out", str(out))
    reason, expected_code = ("InputMissing", 3) if kind == "missing" else ("InvalidInput", 4)
    assert code == expected_code
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mousflow: error: {reason}: "), err
    assert str(bad) in lines[0]
    assert ("no such Measurement Set" if kind == "missing" else "not a Measurement Set") in lines[0]
    _nothing_written(out)


def test_a_measurement_set_without_target_scans_is_refused(import_ms, casa_ms, casa_ms_generator, tmp_path):
    ms = tmp_path / "calibrators-only.ms"
    shutil.copytree(casa_ms["ms"], ms)
    casa_ms_generator(tmp_path, "--retag", str(ms), "OBSERVE_TARGET", "CALIBRATE_PHASE")
    out = tmp_path / "mous"
    # The good execution block first: it is converted, then the second fails, and nothing may remain.
    code, stdout, err = import_ms(casa_ms["ms"], str(ms), "--out", str(out))
    assert code != 0
    assert "converting 2/2" in stdout
    (line,) = err.strip().splitlines()
    assert "no science target (no OBSERVE_TARGET scans" in line and str(ms) in line, line
    _nothing_written(out)



def test_a_mosaic_is_refused_by_import_with_its_pointings(import_ms, casa_mosaic_ms, tmp_path, monkeypatch):
    """From the Measurement Set's own tables, before any conversion."""
    import mousflow.ingest.run

    def no_conversion(*_args):
        raise AssertionError("a mosaic was converted before it was refused")

    monkeypatch.setattr(mousflow.ingest.run, "convert", no_conversion)
    out = tmp_path / "mous"
    code, _, err = import_ms(casa_mosaic_ms["ms"], "--out", str(out), *GOAL_ARGS)
    assert code == 4, err  # bad input
    (line,) = err.strip().splitlines()
    assert "the science target is observed at 3 pointings up to 25.0 arcsec apart" in line, line
    assert "mosaics are not imaged yet" in line and casa_mosaic_ms["ms"] in line, line
    _nothing_written(out)


def test_a_mosaic_processing_set_is_refused_by_every_input_check(casa_mosaic_ms, imported, tmp_path, capsys):
    """One converted without import-ms (xradio's converter alone): validate (and so run, the operator and the
    calibration stage, which share its checks) refuses it before anything is processed."""
    from mousflow.cli import main as mousflow_main
    from mousflow.ingest.measurement_set import convert

    ps = tmp_path / "mosaic.ps.zarr"
    convert(casa_mosaic_ms["ms"], str(ps))
    doc = yaml.safe_load((imported / "mous.yaml").read_text())
    doc["spec"]["executionBlocks"][0]["uri"] = str(ps)
    doc["spec"]["output"]["uri"] = str(tmp_path / "out")
    (tmp_path / "mous.yaml").write_text(yaml.safe_dump(doc))
    capsys.readouterr()
    code = mousflow_main(["validate", str(tmp_path / "mous.yaml")])
    err = capsys.readouterr().err
    assert code == 4, err
    (line,) = err.strip().splitlines()
    assert "observed at 3 pointings up to 25.0 arcsec apart" in line and "mosaics are not imaged yet" in line, line


def test_an_unwritable_destination_is_refused_before_any_conversion(import_ms, casa_ms, tmp_path):
    out = tmp_path / "no" / "such" / "dir" / "mous"
    code, stdout, err = import_ms(casa_ms["ms"], "--out", str(out))
    assert code != 0
    (line,) = err.strip().splitlines()
    assert "cannot write to" in line and "does not exist" in line, line
    assert "converting" not in stdout
    assert not (tmp_path / "no").exists()


def test_an_existing_output_is_not_overwritten_without_force(import_ms, imported):
    before = sorted(p.name for p in imported.iterdir())
    code, _, err = import_ms(str(Path(json.loads((imported / "import.json").read_text())["execution_blocks"][0][
        "measurement_set"])), "--out", str(imported))
    assert code != 0 and "already exists" in err
    assert sorted(p.name for p in imported.iterdir()) == before


def test_the_metadata_the_input_checks_read_without_xarray_is_xradios(imported, metadata_agrees_with_xradio):
    """The operator checks execution blocks from metadata read with zarr alone: on the converter's own output
    (calibrators and target in partitions of their own, CASA's field and window names) it is what xradio reads."""
    metadata_agrees_with_xradio(Location.of(_eb_path(imported)))
