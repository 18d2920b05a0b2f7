"""WSClean's Briggs weights beside CASA's (mousflow's): what thermal noise each weighting gives a cube channel.

`compare_imagers.py` compares every tool's cube rms with CASA's `apparentsens`, the thermal noise of CASA's
Briggs weighting, which mousflow's reproduces (tests/science/imaging/test_imaging_weighting.py). WSClean's cube
came out 1-2 % quieter than mousflow's and tclean's. This asks whether its weighting is simply a different one:
WSClean images the line window of a `compare_imagers.py --keep` work directory once more with
`-store-imaging-weights` (on a split of that window: WSClean stores them only for an MS it reads without
reordering), and for every line-free channel the thermal noise of a Stokes I image,
sqrt(sum W^2 var) / sum W over the visibilities (`noise.predicted_rms`), is worked out with WSClean's stored
imaging weights W and with mousflow's Briggs weights, same robust, image size and cell. Prints the two
expectations per channel, their ratio, and how alike the two sets of weights are (the correlation over the
visibilities).

Usage: python bench/wsclean_weights.py [--work /tmp/imgbench]   (after compare_imagers.py --work ... --keep)
Needs the `casa` extra and Debian's `wsclean`, as compare_imagers.py.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "ingest"))
sys.path.insert(0, str(REPO / "bench"))


def line_window(work: Path) -> tuple[int, dict, list[int]]:
    """The line window's index in the MS, mousflow's imaging plan for it, and its line channels."""
    summary = json.loads((work / "mousflow" / "output" / "imaging" / "summary.json").read_text())
    plans = json.loads((work / "mousflow" / "output" / "imaging" / "plans.json").read_text())["plans"]
    # mousflow names a window <ALMA name>_<index in the MS>; the line window is the one with a line
    (name,) = [n for n, c in summary["cubes"].items() if c["line_channels"]]
    return int(name.rsplit("_", 1)[1]), plans[name], list(summary["cubes"][name]["line_channels"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/imgbench", help="a compare_imagers.py --keep work directory")
    args = ap.parse_args(argv)
    work = Path(args.work)
    if shutil.which("wsclean") is None:
        raise SystemExit("wsclean_weights: wsclean is not on PATH (Debian: apt-get install wsclean)")
    ms = sorted((work / "casa").glob("eb*.ms"))
    if not ms or not (work / "mousflow" / "output" / "imaging" / "plans.json").exists():
        raise SystemExit(f"wsclean_weights: {work} is not a compare_imagers.py --keep work directory")
    spw, plan, line_channels = line_window(work)
    out = work / "wsclean-weights"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()

    from casa_simulated_ms import configure_casa

    configure_casa(str(out))
    from casatasks import split
    from casatools import table
    from compare_imagers import TARGET_FIELD_ID, THREADS

    from mousflow.science.imaging.noise import predicted_rms
    from mousflow.science.imaging.weighting import briggs_weights, stokes_i

    line_ms = out / "line.ms"
    split(vis=str(ms[0]), outputvis=str(line_ms), spw=str(spw), field=str(TARGET_FIELD_ID), datacolumn="corrected")
    npix, cell = int(plan["npix"]), float(plan["cell_rad"])
    tb = table()
    tb.open(str(line_ms / "SPECTRAL_WINDOW"))
    freq = np.asarray(tb.getcell("CHAN_FREQ", 0), dtype=np.float64)
    tb.close()
    subprocess.run(["wsclean", "-j", str(THREADS), "-use-wgridder", "-weight", "briggs", str(plan["robust"]),
                    "-pol", "I", "-niter", "0", "-no-update-model-required", "-no-reorder", "-store-imaging-weights",
                    "-no-mf-weighting", "-name", str(out / "w"), "-size", str(npix), str(npix), "-scale",
                    f"{math.degrees(cell) * 3600:.6f}asec", "-channels-out", str(freq.size), str(line_ms)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=out)

    tb.open(str(line_ms))
    rows = tb.query("ANTENNA1 != ANTENNA2")
    uvw = rows.getcol("UVW").T
    weight = rows.getcol("WEIGHT")  # (correlation, row): the simulated MS has no WEIGHT_SPECTRUM
    flags = rows.getcol("FLAG")  # (correlation, channel, row)
    stored = rows.getcol("IMAGING_WEIGHT_SPECTRUM")  # (correlation, channel, row), WSClean's
    tb.close()
    n_chan = freq.size
    wa = np.repeat(weight[0][:, None], n_chan, axis=1)
    wb = np.repeat(weight[-1][:, None], n_chan, axis=1)
    _, w, flag = stokes_i(np.zeros(wa.shape), np.zeros(wb.shape), wa, wb, flags[0].T, flags[-1].T)

    def thermal(imaging_weight, k):
        return float(predicted_rms(w[:, k:k + 1], imaging_weight[:, None], flag[:, k:k + 1]))

    print(f"line window {spw} of {ms[0].name}: {n_chan} channels, {uvw.shape[0]} rows, image {npix} x {npix} of "
          f"{math.degrees(cell) * 3600:.3f}\", Briggs {plan['robust']}")
    print("| channel | mousflow (CASA) uJy | WSClean uJy | WSClean / mousflow | weights' correlation |")
    print("|---|---|---|---|---|")
    ratios = []
    for k in range(n_chan):
        if k in line_channels or not np.any(w[:, k] > 0):
            continue
        mine = briggs_weights(uvw, freq[k:k + 1], w[:, k:k + 1], flag[:, k:k + 1], npix, cell, plan["robust"])[:, 0]
        theirs = np.where(w[:, k] > 0, stored[0, k, :], 0.0)
        e_m, e_w = thermal(mine, k), thermal(theirs, k)
        ratios.append(e_w / e_m)
        print(f"| {k} | {e_m * 1e6:.2f} | {e_w * 1e6:.2f} | {e_w / e_m:.4f} | "
              f"{np.corrcoef(mine, theirs)[0, 1]:.3f} |")
    print(f"median WSClean / mousflow thermal noise over {len(ratios)} line-free channels: {np.median(ratios):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
