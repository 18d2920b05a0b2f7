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

SPEC keys: ms (one path, or a list: several execution blocks imaged together), field (the target's name),
sigma_jy, robust, cell_arcsec, npix, workdir (for the copies); optionally spw (a window's id) and channel (one of
its channels): the noise of that one channel's image, as a cube's plane (bench/compare_imagers.py); or
exclude_channels, {window name: [channel, ...]}: channels left out of the continuum (a line's), in every MS.
Windows may have different channel counts (the test corpus's do). Prints one JSON object on stdout.
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


def _calibrated_copy(tb, ms: str, copy: str, sigma: float) -> None:
    """A deep copy of ms whose every row and correlation has WEIGHT 1 / sigma^2 (exact calibration)."""
    shutil.rmtree(copy, ignore_errors=True)
    tb.open(ms)
    tb.copy(copy, deep=True, valuecopy=True).close()
    tb.close()
    tb.open(copy, nomodify=False)
    # the per-channel weights go (WEIGHT holds them all), and the scratch columns: nothing here reads them
    tb.removecols([c for c in ("WEIGHT_SPECTRUM", "SIGMA_SPECTRUM", "MODEL_DATA", "CORRECTED_DATA")
                   if c in tb.colnames()])
    weight = np.full(tb.getcol("WEIGHT").shape, 1.0 / sigma**2, dtype=np.float32)  # (corr, row)
    tb.putcol("WEIGHT", weight)
    tb.putcol("SIGMA", np.full(weight.shape, sigma, dtype=np.float32))
    tb.close()


def _windows(tb, ms: str) -> tuple[list[str], list[int], np.ndarray]:
    """(names, channel counts) of the MS's windows, and each data description's window id."""
    tb.open(os.path.join(ms, "SPECTRAL_WINDOW"))
    names, n_chan = list(tb.getcol("NAME")), [int(n) for n in tb.getcol("NUM_CHAN")]
    tb.close()
    tb.open(os.path.join(ms, "DATA_DESCRIPTION"))
    ddid_spw = tb.getcol("SPECTRAL_WINDOW_ID")
    tb.close()
    return names, n_chan, ddid_spw


def _kept_channels(names: list[str], n_chan: list[int], exclude: dict, spw=None, channel=None) -> dict[int, np.ndarray]:
    """Each window's channels kept (True): all but the excluded ones (by window name), or, with spw (and
    channel), only that window's (channel)."""
    kept = {}
    for spw_id, (name, n) in enumerate(zip(names, n_chan, strict=True)):
        keep = np.full(n, spw is None or spw_id == int(spw))
        if spw is None:
            keep[[c for c in exclude.get(name, []) if 0 <= c < n]] = False
        elif channel is not None:
            keep[:] = False
            if spw_id == int(spw):
                keep[int(channel)] = True
        kept[spw_id] = keep
    return kept


def _append_rows(tb, source: str, target: str) -> None:
    """Appends source's main-table rows to target's, for MSs of one simulation set-up (the same fields, windows
    and data descriptions, checked). Why not ms.concatenate: it fails on these copies ('MODEL_DATA is unknown')."""
    for sub, cols in (("FIELD", ("NAME",)), ("SPECTRAL_WINDOW", ("NAME", "NUM_CHAN", "REF_FREQUENCY")),
                      ("DATA_DESCRIPTION", ("SPECTRAL_WINDOW_ID", "POLARIZATION_ID")), ("ANTENNA", ("NAME",))):
        values = []
        for ms in (source, target):
            tb.open(os.path.join(ms, sub))
            values.append([list(tb.getcol(c)) for c in cols])
            tb.close()
        if values[0] != values[1]:
            raise SystemExit(f"expected_noise: {source} and {target} differ in {sub}; cannot image them together")
    tb.open(target, nomodify=False)
    out_rows = tb.nrows()
    tb.close()
    tb.open(source)
    tb.copyrows(target, startrowout=-1)
    n = tb.nrows()
    tb.close()
    tb.open(target)
    assert tb.nrows() == out_rows + n
    tb.close()


def expected_noise(spec: dict) -> dict:
    workdir = spec["workdir"]
    os.makedirs(workdir, exist_ok=True)
    configure_casa(workdir)
    import casatools

    tb, im = casatools.table(), casatools.imager()
    sigma = float(spec["sigma_jy"])
    sources = [spec["ms"]] if isinstance(spec["ms"], str) else list(spec["ms"])
    copies = [os.path.join(workdir, f"calibrated-weights-{k}.ms") for k in range(len(sources))]
    spw, channel = spec.get("spw"), spec.get("channel")
    exclude = spec.get("exclude_channels") or {}

    # Stokes I from XX and YY (or RR and LL): the first and the last correlation; a sample counts when both
    # hands are unflagged, and its weight is the sum of theirs. Window by window: their channel counts differ.
    # apparentsens ignores channel selections with several ranges and every MS but the one opened: the channels
    # left out are flagged in the copies, and the copies' rows are appended to the first's.
    sum_w, n_usable = 0.0, 0
    fields = []
    for ms, copy in zip(sources, copies, strict=True):
        _calibrated_copy(tb, ms, copy, sigma)
        copy_fields = _field_ids(tb, copy, spec["field"])
        fields = fields or copy_fields
        names, n_chan, ddid_spw = _windows(tb, copy)
        kept = _kept_channels(names, n_chan, exclude, spw, channel)
        tb.open(copy, nomodify=False)
        for ddid, spw_id in enumerate(ddid_spw):
            if not kept[spw_id].all():
                sub = tb.query(f"DATA_DESC_ID=={ddid}")
                sub.putcol("FLAG", sub.getcol("FLAG") | ~kept[spw_id][None, :, None])
                sub.close()
            if not kept[spw_id].any():
                continue
            sub = tb.query(f"DATA_DESC_ID=={ddid} && FIELD_ID IN {copy_fields}")
            if sub.nrows() == 0:
                sub.close()
                continue
            flag = sub.getcol("FLAG") | sub.getcol("FLAG_ROW")[None, None, :]  # (corr, chan, row)
            w = sub.getcol("WEIGHT")
            sub.close()
            usable = ~flag[0] & ~flag[-1]
            sum_w += float((usable * (w[0] + w[-1])[None, :]).sum())
            n_usable += int(usable.sum())
        tb.close()
    natural = 1.0 / np.sqrt(sum_w)
    for copy in copies[1:]:
        _append_rows(tb, copy, copies[0])

    im.open(copies[0])
    selection = "" if spw is None else f"{int(spw)}" + ("" if channel is None else f":{int(channel)}~{int(channel)}")
    im.selectvis(field=",".join(map(str, fields)), spw=selection)
    cell = f"{spec['cell_arcsec']}arcsec"
    im.defineimage(nx=int(spec["npix"]), ny=int(spec["npix"]), cellx=cell, celly=cell, stokes="I", mode="mfs",
                   phasecenter=fields[0], spw=[int(spw) if spw is not None else 0])
    im.weight(type="briggs", rmode="norm", robust=float(spec["robust"]))
    _, sensitivity, relative = im.apparentsens()
    im.close()
    for copy in copies:
        shutil.rmtree(copy, ignore_errors=True)
    return {"natural_jy": float(natural), "briggs_jy": float(sensitivity), "briggs_over_natural": float(relative),
            "n_samples": n_usable}


if __name__ == "__main__":
    print(json.dumps(expected_noise(json.load(open(sys.argv[1])))))
