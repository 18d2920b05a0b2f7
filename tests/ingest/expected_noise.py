"""The continuum noise a Measurement Set should image to, computed by CASA, independently of mousflow.

Run as a program (`python expected_noise.py SPEC.json`) in a process of its own (casatools' casacore must not
share a process with arcae's, see casa_simulated_ms.py). Nothing of mousflow is imported: the tests compare
the pipeline's measured continuum rms with these figures, so they must not come from the pipeline's own
weighting or noise code.

The expectation is that of the *perfectly calibrated* data: every visibility of the target carries the noise
the simulator injected (sigma_jy, the rms of its real and of its imaginary part, in Jy once the gains are
divided out). A scratch copy of the MS gets WEIGHT = 1 / sigma_jy^2 on every row and correlation (what
calibration with exact gains would leave), keeping the MS's own flags, uvw and channels, and then:

- natural_jy: the radiometer equation, 1 / sqrt(sum of the Stokes I weights of the unflagged target
  visibility-channels), the Stokes I weight of a row being w_XX + w_YY (I = (XX + YY) / 2);
- briggs_jy: CASA's `imager.apparentsens` for Briggs weighting with the given robust, cell and image size:
  sqrt(sum W_i^2 / w_i) / sum W_i over the imaging weights W CASA computes (its own uv-grid density);
- briggs_over_natural: their ratio as CASA reports it.

SPEC keys: ms, field (the target's name), sigma_jy, robust, cell_arcsec, npix, workdir (for the copy);
optionally spw (a window's id) and channel (one of its channels): the noise of that one channel's image, as a
cube's plane (bench/compare_imagers.py). Windows may have different channel counts (the test corpus's do).
Prints one JSON object on stdout.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import numpy as np

# run as a program from tests/ingest: its sibling, the generator, holds how CASA is configured (no network)
from casa_simulated_ms import configure_casa


def _field_ids(tb, ms: str, name: str) -> list[int]:
    tb.open(os.path.join(ms, "FIELD"))
    names = list(tb.getcol("NAME"))
    tb.close()
    return [i for i, n in enumerate(names) if n == name]


def expected_noise(spec: dict) -> dict:
    workdir = spec["workdir"]
    os.makedirs(workdir, exist_ok=True)
    configure_casa(workdir)
    import casatools

    tb, im = casatools.table(), casatools.imager()
    sigma = float(spec["sigma_jy"])
    copy = os.path.join(workdir, "calibrated-weights.ms")
    shutil.rmtree(copy, ignore_errors=True)
    tb.open(spec["ms"])
    tb.copy(copy, deep=True, valuecopy=True).close()
    tb.close()

    fields = _field_ids(tb, copy, spec["field"])
    tb.open(copy, nomodify=False)
    if "WEIGHT_SPECTRUM" in tb.colnames():
        tb.removecols(["WEIGHT_SPECTRUM", "SIGMA_SPECTRUM"])
    weight = np.full(tb.getcol("WEIGHT").shape, 1.0 / sigma**2, dtype=np.float32)  # (corr, row)
    tb.putcol("WEIGHT", weight)
    tb.putcol("SIGMA", np.full(weight.shape, sigma, dtype=np.float32))
    tb.close()
    spw, channel = spec.get("spw"), spec.get("channel")
    tb.open(os.path.join(copy, "DATA_DESCRIPTION"))
    ddid_spw = tb.getcol("SPECTRAL_WINDOW_ID")
    tb.close()

    # Stokes I from XX and YY (or RR and LL): the first and the last correlation; a sample counts when both
    # hands are unflagged, and its weight is the sum of theirs. Window by window: their channel counts differ.
    sum_w, n_usable = 0.0, 0
    tb.open(copy)
    for ddid, spw_id in enumerate(ddid_spw):
        if spw is not None and spw_id != int(spw):
            continue
        sub = tb.query(f"DATA_DESC_ID=={ddid} && FIELD_ID IN {fields}")
        if sub.nrows() == 0:
            sub.close()
            continue
        flag = sub.getcol("FLAG") | sub.getcol("FLAG_ROW")[None, None, :]  # (corr, chan, row)
        if channel is not None:
            flag = flag[:, int(channel):int(channel) + 1]
        w = sub.getcol("WEIGHT")
        sub.close()
        usable = ~flag[0] & ~flag[-1]
        sum_w += float((usable * (w[0] + w[-1])[None, :]).sum())
        n_usable += int(usable.sum())
    tb.close()
    natural = 1.0 / np.sqrt(sum_w)

    im.open(copy)
    selection = "" if spw is None else f"{int(spw)}" + ("" if channel is None else f":{int(channel)}~{int(channel)}")
    im.selectvis(field=",".join(map(str, fields)), spw=selection)
    cell = f"{spec['cell_arcsec']}arcsec"
    im.defineimage(nx=int(spec["npix"]), ny=int(spec["npix"]), cellx=cell, celly=cell, stokes="I", mode="mfs",
                   phasecenter=fields[0], spw=[int(spw) if spw is not None else 0])
    im.weight(type="briggs", rmode="norm", robust=float(spec["robust"]))
    _, sensitivity, relative = im.apparentsens()
    im.close()
    shutil.rmtree(copy, ignore_errors=True)
    return {"natural_jy": float(natural), "briggs_jy": float(sensitivity), "briggs_over_natural": float(relative),
            "n_samples": n_usable}


if __name__ == "__main__":
    print(json.dumps(expected_noise(json.load(open(sys.argv[1])))))
