"""The whole pipeline on simulated MOUSs, orchestrated by a real (local, temporary) Prefect server.

Checks the science against the simulation's truth, the QA2 verdicts, the products, and that a run killed with
SIGKILL in the middle of imaging resumes without recomputing calibration or the finished channel chunks and
ends with the same products as an uninterrupted run.
"""

from __future__ import annotations

import glob
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from astropy.io import fits
from astropy.wcs import WCS

from mousflow.pipeline import process_mous
from mousflow.pipeline.local_server import local_prefect_server
from mousflow.science.geometry import radec_to_lm
from mousflow.science.imaging import Beam, fit_point_source
from mousflow.simulate import simulate_mous
from mousflow.storage.location import Location

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prefect_api():
    with local_prefect_server() as url:
        yield url


# Two threads for the stages: the resumed run's products must be bit-identical to the uninterrupted run's with
# threaded gridding too (science.imaging.gridding.row_blocks).
THREADS = 2


def _run(manifest: Path):
    return process_mous(manifest.read_text(), threads=THREADS)


# Cube chunks of the module's tiny runs: 16 // 8 + 32 // 8 = 6 over tiny's two windows, so a run killed after two
# chunks still has most of its cube to image.
CHANNEL_CHUNK = 8


def _with_chunks(doc: dict, chunk: int) -> dict:
    doc = json.loads(json.dumps(doc))
    doc["spec"]["imaging"] = {**(doc["spec"].get("imaging") or {}), "channelChunk": chunk}
    return doc


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, prefect_api):
    """The tiny MOUS through the whole flow, uninterrupted: the science tests check it, and the SIGKILL test
    compares its resumed run's products with these."""
    sim = simulate_mous("tiny", str(tmp_path_factory.mktemp("pipeline") / "tiny"), seed=1)
    manifest = Path(sim.manifest.path)
    manifest.write_text(yaml.safe_dump(_with_chunks(yaml.safe_load(manifest.read_text()), CHANNEL_CHUNK)))
    result = _run(manifest)
    return sim, result


def _products(sim) -> Path:
    return Path(sim.out.path) / "output" / "products"


def test_flow_succeeds_with_qa2_pass(tiny_run):
    _sim, result = tiny_run
    assert result.succeeded, result.failed
    assert [o.stage for o in result.outcomes] == ["calibration", "imaging", "packaging"]
    assert all(o.state == "Succeeded" for o in result.outcomes)
    assert result.qa2 == "Pass"
    weblog = Path(Location.of(result.weblog).path)
    html = weblog.read_text()
    assert "QA2" in html and "<img" in html
    for src in __import__("re").findall(r'src="([^"]+)"', html):
        assert (weblog.parent / src).stat().st_size > 1000


def test_products_manifest_checksums(tiny_run):
    import hashlib

    sim, _ = tiny_run
    manifest = json.loads((_products(sim) / "manifest.json").read_text())
    assert manifest["qa2"] == "Pass"
    names = {p["name"] for p in manifest["products"]}
    assert any(n.endswith("cont.I.pbcor.fits") for n in names)
    assert any(".spw1.cube.I.pbcor.fits" in n for n in names)
    for p in manifest["products"]:
        data = (_products(sim) / p["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == p["sha256"] and len(data) == p["bytes"]


def test_fits_products_have_a_correct_wcs_and_beam(tiny_run):
    sim, _ = tiny_run
    truth = json.loads(Path(sim.truth.path).read_text())
    cont = glob.glob(str(_products(sim) / "*cont.I.pbcor.fits"))[0]
    with fits.open(cont) as hdul:
        h = hdul[0].header
        assert hdul[0].data.ndim == 4
        for key in ("BMAJ", "BMIN", "BPA"):
            assert key in h
        w = WCS(h)
        ra, dec = w.celestial.pixel_to_world_values(h["CRPIX1"] - 1, h["CRPIX2"] - 1)
        assert ra == pytest.approx(truth["phase_centre_deg"][0], abs=1e-9)
        assert dec == pytest.approx(truth["phase_centre_deg"][1], abs=1e-9)
        assert h["CDELT1"] < 0 < h["CDELT2"]
        beam = math.sqrt(h["BMAJ"] * h["BMIN"]) * 3600
        assert beam == pytest.approx(truth["expected"]["beam_arcsec"], rel=0.3)
    cube = glob.glob(str(_products(sim) / "*.spw1.cube.I.pbcor.fits"))[0]
    with fits.open(cube) as hdul:
        assert hdul[0].data.shape[1] == 32
        assert len(hdul["BEAMS"].data) == 32


def test_point_source_fluxes_and_positions_match_the_truth(tiny_run):
    sim, _ = tiny_run
    truth = json.loads(Path(sim.truth.path).read_text())
    path = glob.glob(str(_products(sim) / "*cont.I.pbcor.fits"))[0]
    h = fits.getheader(path)
    image = np.nan_to_num(fits.getdata(path)[0, 0])
    beam = Beam(math.radians(h["BMAJ"]), math.radians(h["BMIN"]), math.radians(h["BPA"]))
    cell = math.radians(abs(h["CDELT1"]))
    ra0, dec0 = math.radians(h["CRVAL1"]), math.radians(h["CRVAL2"])
    wcs = WCS(h).celestial
    # Continuum point sources bright enough for a 5 % measurement (the line source's continuum is 10 sigma).
    checked = 0
    for c in truth["components"]:
        if c["major_rad"] > 0 or c["line"] is not None:
            continue
        l, m = radec_to_lm(math.radians(c["ra_deg"]), math.radians(c["dec_deg"]), ra0, dec0)
        fit = fit_point_source(image, beam, cell, float(l), float(m))
        true_flux = c["flux_jy"] * (h["CRVAL3"] / c["reference_hz"]) ** c["spectral_index"]
        assert fit.flux == pytest.approx(true_flux, rel=0.05), c["name"]
        ra, dec = wcs.pixel_to_world_values(fit.x, fit.y)
        offset = math.hypot((ra - c["ra_deg"]) * math.cos(math.radians(dec)), dec - c["dec_deg"]) * 3600
        assert offset < 0.1 * h["BMAJ"] * 3600, c["name"]
        checked += 1
    assert checked == 2


def test_image_rms_matches_the_radiometer_prediction(tiny_run):
    sim, _ = tiny_run
    summary = json.loads((Path(sim.out.path) / "output" / "imaging" / "summary.json").read_text())
    cont = summary["continuum"]
    # predicted_rms: the radiometer noise of the data (their weights) through the imaging weights
    assert cont["rms_jy"] == pytest.approx(cont["predicted_rms_jy"], rel=0.2)
    truth = json.loads(Path(sim.truth.path).read_text())
    expected = truth["expected"]
    # and that prediction is the simulation's radiometer noise, natural rms times the Briggs loss, within the
    # few percent that flagging (spur channel, dropouts) and the line-free channels of spw1 change it
    radiometer = expected["continuum_rms_natural_jy"] * expected["briggs_weighting_loss"]
    assert cont["predicted_rms_jy"] == pytest.approx(radiometer, rel=0.2)


def test_gain_phases_follow_the_injected_ones(tiny_run):
    """Solved phase-calibrator gains against the injected ones, per antenna relative to the reference antenna
    and to the first solution (constant offsets go into the bandpass, which is normalised separately)."""
    import xarray as xr

    sim, _ = tiny_run
    truth = json.loads(Path(sim.truth.path).read_text())
    eb = truth["execution_blocks"][0]
    summary = json.loads((Path(sim.out.path) / "output" / "calibration" / "summary.json").read_text())
    tables = Path(sim.out.path) / "output" / "calibration" / eb["label"] / "caltables.zarr"
    for spw in ("spw0", "spw1"):
        ds = xr.open_zarr(tables, group=spw, consolidated=False)
        g = ds["GAIN"].values[..., 0]
        flags = ds["GAIN_FLAG"].values[..., 0]
        t_solved = ds["gain_time"].values
        t_truth = np.array(eb["spws"][spw]["gain_times_s"])
        idx = np.searchsorted(t_truth, t_solved)
        assert np.allclose(t_truth[idx], t_solved, atol=6.0)  # per-integration solutions
        phase_truth = np.radians(np.array(eb["spws"][spw]["gain_phase_deg"])[idx][..., 0])
        names = list(ds["antenna_name"].values)
        ref = names.index(summary["execution_blocks"][0]["windows"][spw]["reference_antenna"][0])
        solved = np.angle(g * np.conj(g[:, [ref]]))
        injected = phase_truth - phase_truth[:, [ref]]
        diff = np.angle(np.exp(1j * ((solved - solved[0]) - (injected - injected[0]))))
        ok = ~flags & ~flags[[0]] & ~flags[:, [ref]]
        rms_deg = np.degrees(np.sqrt(np.mean(diff[ok] ** 2)))
        assert rms_deg < 5.0, f"{spw}: gain phase error {rms_deg:.1f} deg rms"
        cal = truth["calibrators"]["phase"]
        window = summary["execution_blocks"][0]["windows"][spw]
        true_flux = cal["flux_jy_at_representative_frequency"] * (
            window["phase_calibrator_frequency_hz"] / truth["representative_frequency_hz"]) ** cal["spectral_index"]
        assert window["phase_calibrator_flux_jy"] == pytest.approx(true_flux, rel=0.02)


def test_marginal_fails_qa2_on_rms(tmp_path, prefect_api):
    sim = simulate_mous("marginal", str(tmp_path / "marginal"), seed=1)
    result = _run(Path(sim.manifest.path))
    assert result.succeeded and result.qa2 == "Fail"
    qa = json.loads((_products(sim) / "qa2.json").read_text())
    assert len(qa["reasons"]) == 1 and "above the requested" in qa["reasons"][0]
    assert qa["goals"][0]["rms_ratio"] > 1.2
    assert qa["stage_scores"]["qa2"]["colour"] == "red"


def _chunk_checkpoints(run_root: Path) -> dict[str, tuple[bytes, float]]:
    return {str(p.relative_to(run_root)): (p.read_bytes(), p.stat().st_mtime)
            for p in sorted((run_root / "checkpoints" / "imaging").rglob("chunk-*.json"))}


def _sigkill_and_resume(doc: dict, run_root: Path, prefect_api: str, total_chunks: int) -> dict:
    """Run the flow on `doc` with its outputs in `run_root` as a process (`mousflow run`), SIGKILL it (and its stage
    and Dask worker processes) once imaging has finished two chunks, run it again: check that it resumed at the
    next chunk without recomputing calibration or the finished chunks; the products' manifest."""
    d = json.loads(json.dumps(doc))
    d["spec"]["output"]["uri"] = str(run_root)
    manifest = run_root.parent / f"{run_root.name}.yaml"
    manifest.write_text(yaml.safe_dump(d))
    cmd = [sys.executable, "-m", "mousflow.cli", "run", "--manifest", str(manifest), "--threads", str(THREADS)]
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while len(_chunk_checkpoints(run_root)) < 2:
        assert proc.poll() is None, "the run ended before imaging had finished two chunks"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_root / "checkpoints" / "imaging.json").exists(), "killed too late: imaging had finished"
    calibration_cp = (run_root / "checkpoints" / "calibration.json").read_bytes()
    done = _chunk_checkpoints(run_root)
    assert len(done) < total_chunks, "killed too late: every chunk had finished"

    subprocess.run(cmd, env=env, check=True, timeout=900, capture_output=True)
    status = {s: json.loads((run_root / "status" / f"{s}.json").read_text()) for s in ("calibration", "imaging")}
    assert status["calibration"]["state"] == "Skipped"
    assert (run_root / "checkpoints" / "calibration.json").read_bytes() == calibration_cp
    assert status["imaging"]["metrics"]["chunks_skipped"] == len(done)
    assert status["imaging"]["metrics"]["chunks_computed"] == total_chunks - len(done)
    after = _chunk_checkpoints(run_root)
    for key, (content, mtime) in done.items():
        assert after[key] == (content, mtime), f"{key} was recomputed"
    return json.loads((run_root / "products" / "manifest.json").read_text())


def _assert_same_products(ours: dict, theirs: dict) -> None:
    fits_products = {p["name"]: p["sha256"] for p in ours["products"] if p["name"].endswith(".fits")}
    assert fits_products
    assert fits_products == {p["name"]: p["sha256"] for p in theirs["products"] if p["name"].endswith(".fits")}
    assert ours["qa2"] == theirs["qa2"]


def test_sigkill_during_imaging_resumes_from_the_next_chunk(tiny_run, tmp_path, prefect_api):
    """The tiny MOUS in 8-channel chunks (6), killed after two; the uninterrupted run to compare with is the
    module's tiny_run (the same data and manifest but for the output)."""
    sim, reference = tiny_run
    assert reference.succeeded
    doc = yaml.safe_load(Path(sim.manifest.path).read_text())
    assert doc["spec"]["imaging"]["channelChunk"] == CHANNEL_CHUNK
    ours = _sigkill_and_resume(doc, tmp_path / "killed", prefect_api, 16 // CHANNEL_CHUNK + 32 // CHANNEL_CHUNK)
    _assert_same_products(ours, json.loads((_products(sim) / "manifest.json").read_text()))


@pytest.mark.full
def test_sigkill_during_imaging_resumes_from_the_next_chunk_full_size(tmp_path, prefect_api):
    """`make test-full`: the same in 4-channel chunks (12), on a MOUS simulated for it, against an uninterrupted
    run of its own."""
    sim = simulate_mous("tiny", str(tmp_path / "tiny"), seed=1)
    doc = _with_chunks(yaml.safe_load(Path(sim.manifest.path).read_text()), 4)
    ours = _sigkill_and_resume(doc, tmp_path / "killed", prefect_api, 16 // 4 + 32 // 4)
    reference = tmp_path / "reference.yaml"
    d = json.loads(json.dumps(doc))
    d["spec"]["output"]["uri"] = str(tmp_path / "reference")
    reference.write_text(yaml.safe_dump(d))
    assert _run(reference).succeeded
    _assert_same_products(ours, json.loads((tmp_path / "reference" / "products" / "manifest.json").read_text()))
