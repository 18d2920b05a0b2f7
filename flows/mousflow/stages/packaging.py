"""The packaging stage: FITS products, the QA2 verdict, stage scores, the weblog and the products manifest.

Writes under <output>/products/:

    member.<mous>.<field>_sci.cont.I.{pbcor,pb,image}.fits     continuum (MFS)
    member.<mous>.<field>_sci.<spw>.cube.I.{pbcor,pb}.fits      one cube per window (with a BEAMS table)
    qa2.json                                                    verdict, reasons, per-goal figures, scores
    weblog/index.html (+ PNG plots)                             what a reviewer reads in a browser
    manifest.json                                               every product with its size and sha256
"""

from __future__ import annotations

import io
import math

import numpy as np
from astropy.io import fits

from mousflow.errors import InputMissing
from mousflow.science.qa import assess_goal, qa2_verdict, score_colour
from mousflow.science.qa.scores import ratio_score
from mousflow.stages.context import StageContext
from mousflow.stages.image_store import ImageStore, attrs_to_header
from mousflow.stages.versioning import code_version
from mousflow.stages.weblog import write_weblog
from mousflow.storage.checkpoints import Validity, hash_inputs
from mousflow.storage.integrity import sha256_of_object
from mousflow.storage.location import Location

STAGE = "packaging"
PRODUCTS = "products"


def product_prefix(uid: str, field: str) -> str:
    return f"member.{uid.replace('://', '___').replace('/', '_')}.{field}_sci"


def checkpoint_validity(ctx: StageContext) -> tuple[str, Validity]:
    """(the hash of the stage's inputs, whether its checkpoint holds the work for them): what decides that the
    stage has nothing to do, here and before the flow would start it (stages.runner.skip_if_complete)."""
    spec = ctx.mous.spec
    imaging_cp = ctx.checkpoints.read("imaging")
    calibration_cp = ctx.checkpoints.read("calibration")
    if imaging_cp is None or calibration_cp is None:
        raise InputMissing("packaging needs the calibration and imaging checkpoints: run those stages first")
    goals = [g.to_wire() for g in spec.science_goals]
    inputs = hash_inputs(imaging_cp.outputs, calibration_cp.outputs, goals, spec.band, spec.uid)
    return inputs, ctx.checkpoints.validate(STAGE, inputs, code_version(STAGE))


def run(ctx: StageContext) -> str:
    spec = ctx.mous.spec
    version = code_version(STAGE)
    inputs, validity = checkpoint_validity(ctx)
    if validity:
        ctx.progress("packaging: valid checkpoint, nothing to do", 100.0)
        return "Skipped"
    ctx.progress(f"packaging: starting ({validity.reason})", 0.0)

    products = ctx.path(PRODUCTS)
    products.remove()  # this stage's own outputs: nothing stale from an earlier run may linger beside the new ones
    imaging = ctx.path("imaging", "summary.json").read_json()
    calibration = ctx.path("calibration", "summary.json").read_json()
    continuum = ImageStore(ctx.path("imaging", "continuum.zarr"))
    cont = continuum.attrs
    field = str(dict((k, v) for k, v, _ in cont["header"]).get("OBJECT", "target"))
    prefix = product_prefix(spec.uid, field)
    files: list[str] = []

    ctx.progress("packaging: FITS products", 10.0)
    for product, suffix in (("image_pbcor", "pbcor"), ("pb", "pb"), ("image", "image")):
        name = f"{prefix}.cont.I.{suffix}.fits"
        header = attrs_to_header(cont["header"])
        if product == "pb":
            for key in ("BMAJ", "BMIN", "BPA"):
                header.remove(key, ignore_missing=True)
            header["BUNIT"] = ""
        _write_fits(products.join(name), continuum.read(product), header)
        files.append(name)
    for spw in imaging["cubes"]:
        cube = ImageStore(ctx.path("imaging", f"cube_{spw}.zarr"))
        attrs = cube.attrs
        for product, suffix in (("image_pbcor", "pbcor"), ("pb", "pb")):
            name = f"{prefix}.{spw}.cube.I.{suffix}.fits"
            header = attrs_to_header(attrs["header"])
            beams = attrs["beams"] if product == "image_pbcor" else None
            if product == "pb":
                header["BUNIT"] = ""
            _write_fits(products.join(name), cube.read(product), header, beams=beams)
            files.append(name)

    ctx.progress("packaging: QA2", 50.0)
    bmaj, bmin, _bpa = cont["beam_rad"]
    assessments = [
        assess_goal(g.name, spec.band, math.degrees(bmaj) * 3600, math.degrees(bmin) * 3600, cont["rms_jy"],
                    cont["bandwidth_hz"], g.sensitivity_jy, g.sensitivity_bandwidth_hz,
                    g.resolution.min_arcsec, g.resolution.max_arcsec)
        for g in spec.science_goals
    ]
    qa2 = qa2_verdict(assessments)
    scores = stage_scores(calibration, imaging, qa2.score)
    # What the verdict rests on and a reviewer must know, e.g. a flux scale taken from the spec because no
    # flux calibrator was observed.
    qa_doc = {"mous": spec.uid, **qa2.to_json(), "notes": list(calibration.get("notes", [])),
              "stage_scores": {k: {"score": v, "colour": score_colour(v)} for k, v in scores.items()}}
    products.join("qa2.json").write_json(qa_doc)
    files.append("qa2.json")

    ctx.progress("packaging: weblog", 60.0)
    files += ["weblog/" + f for f in write_weblog(ctx, products.join("weblog"), qa_doc, calibration, imaging, prefix)]

    ctx.progress("packaging: manifest", 95.0)
    manifest = {
        "mous": spec.uid, "project": spec.project_code, "qa2": qa2.verdict,
        "products": [{"name": f, "bytes": products.join(f).fs.size(products.join(f).path),
                      "sha256": sha256_of_object(products.join(f))} for f in sorted(files)],
    }
    products.join("manifest.json").write_json(manifest)
    ctx.checkpoints.commit(STAGE, ctx.uid, inputs, version,
                           [f"{PRODUCTS}/{f}" for f in sorted(files)] + [f"{PRODUCTS}/manifest.json"],
                           metrics={"qa2": qa2.verdict, "scores": scores})
    ctx.metrics.update(qa2=qa2.verdict)
    ctx.progress(f"packaging: done, QA2 {qa2.verdict}", 100.0)
    return "Succeeded"


def stage_scores(calibration: dict, imaging: dict, qa2_score: float) -> dict[str, float]:
    """One score per stage in [0, 1]: calibration's weakest sub-score; imaging by how close the continuum's
    rms comes to the noise its weights predict (1 up to 1.2x, 0 at 2x) and whether CLEAN converged."""
    cal = min(calibration.get("scores", {}).values(), default=1.0)
    cont = imaging["continuum"]
    ratio = cont["rms_jy"] / cont["predicted_rms_jy"] if cont.get("predicted_rms_jy") else float("nan")
    img = ratio_score(ratio, 1.2, 2.0) * (1.0 if cont.get("converged") else 0.8)
    return {"calibration": float(cal), "imaging": float(img), "qa2": float(qa2_score)}


def _write_fits(loc: Location, data: np.ndarray, header: fits.Header, beams: list | None = None) -> None:
    """(n_chan, ny, nx) sky-oriented planes as a 4-axis (Stokes, freq, y, x) FITS image."""
    arr = np.asarray(data, dtype=np.float32)[None]
    hdus = [fits.PrimaryHDU(arr, header=header)]
    if beams is not None and any(b is not None for b in beams):
        valid = [b for b in beams if b is not None and all(np.isfinite(b))]
        fill = valid[0] if valid else [math.nan] * 3
        cols = np.array([b if (b is not None and all(np.isfinite(b))) else fill for b in beams], dtype=np.float64)
        hdus[0].header["CASAMBM"] = True
        hdus.append(fits.BinTableHDU.from_columns([
            fits.Column("BMAJ", "1E", unit="arcsec", array=np.degrees(cols[:, 0]) * 3600),
            fits.Column("BMIN", "1E", unit="arcsec", array=np.degrees(cols[:, 1]) * 3600),
            fits.Column("BPA", "1E", unit="deg", array=np.degrees(cols[:, 2])),
            fits.Column("CHAN", "1J", array=np.arange(len(beams), dtype=np.int32)),
            fits.Column("POL", "1J", array=np.zeros(len(beams), dtype=np.int32)),
        ], name="BEAMS"))
    buf = io.BytesIO()
    fits.HDUList(hdus).writeto(buf, output_verify="exception")
    loc.write_bytes(buf.getvalue())
