"""The weblog: one static HTML page with the QA table and plots a reviewer reads in a browser.

Plots: gain phases and amplitudes against time, bandpasses, the uv coverage, the continuum image with its
beam, and the spectrum at the line peak of each cube with a line. Everything is drawn with matplotlib's Agg
backend into PNG files next to index.html, so the weblog works from object storage or a local disk.

Names that come from the data (execution blocks, spectral windows, antennas) are never trusted in the page:
plot files get URL-safe names (`plot_file_name`), every URL is percent-encoded and every text HTML-escaped.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import math
import re
from urllib.parse import quote

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from astropy.wcs import WCS
from matplotlib.patches import Ellipse

from mousflow.science.qa import score_colour
from mousflow.stages.image_store import ImageStore, attrs_to_header
from mousflow.storage.location import Location
from mousflow.storage.partitions import NO_CHANNELS, load_partition, open_checked, partition_infos
from mousflow.storage.zarr_io import open_zarr_tree
from mousflow.telescope.alma import SPEED_OF_LIGHT

COLOUR_HEX = {"green": "#2e7d32", "blue": "#1565c0", "yellow": "#f9a825", "red": "#c62828"}


def plot_file_name(kind: str, *names: str) -> str:
    """The PNG file of plot `kind` for `names` (execution block, spectral window), safe in a URL and a store key.

    ALMA window names hold '#' (ALMA_RB_06#BB_1#SW-01#FULL_RES), which a browser takes for the start of a
    fragment: every character but letters, digits, '.', '_' and '-' becomes '-', and a short hash of the exact
    names keeps apart two windows whose names differ only in such characters.
    """
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", "_".join(names)).strip("-.")
    digest = hashlib.sha256(json.dumps([kind, *names]).encode()).hexdigest()[:8]
    return f"{kind}_{slug}_{digest}.png"


def _save(fig, loc: Location) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    loc.write_bytes(buf.getvalue())


def _open_tables(ctx, label: str) -> dict:
    loc = ctx.path("calibration", label, "caltables.zarr")
    if not loc.exists():
        return {}
    tree = open_zarr_tree(loc)
    return {name: node.to_dataset() for name, node in tree.children.items()}


def _gain_plots(ctx, out: Location, calibration: dict) -> list[tuple[str, str]]:
    figures = []
    for eb in calibration["execution_blocks"]:
        tables = _open_tables(ctx, eb["label"])
        for spw, ds in sorted(tables.items()):
            g = ds["GAIN"].values
            flags = ds["GAIN_FLAG"].values
            t = (ds["gain_time"].values - ds["gain_time"].values[0]) / 60.0
            fig, (a1, a2) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
            for ant in range(g.shape[1]):
                ok = ~flags[:, ant, 0]
                a1.plot(t[ok], np.degrees(np.angle(g[ok, ant, 0])), ".-", ms=3, lw=0.6)
                a2.plot(t[ok], np.abs(g[ok, ant, 0]), ".-", ms=3, lw=0.6)
            a1.set_ylabel("phase (deg)")
            a2.set_ylabel("amplitude")
            a2.set_xlabel("minutes since first solution")
            a1.set_title(f"{eb['label']} {spw}: gains (XX) on the phase calibrator, every antenna")
            name = plot_file_name("gains", eb["label"], spw)
            _save(fig, out.join(name))
            figures.append((name, f"Gains {eb['label']} {spw}"))
            b = ds["BANDPASS"].values
            bflag = ds["BANDPASS_FLAG"].values
            f = ds["frequency"].values / 1e9
            fig, (a1, a2) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
            for ant in range(b.shape[0]):
                amp = np.where(bflag[ant, :, 0], np.nan, np.abs(b[ant, :, 0]))
                ph = np.where(bflag[ant, :, 0], np.nan, np.degrees(np.angle(b[ant, :, 0])))
                a1.plot(f, amp, lw=0.7)
                a2.plot(f, ph, lw=0.7)
            a1.set_ylabel("amplitude")
            a2.set_ylabel("phase (deg)")
            a2.set_xlabel("frequency (GHz)")
            a1.set_title(f"{eb['label']} {spw}: bandpass (XX), every antenna")
            name = plot_file_name("bandpass", eb["label"], spw)
            _save(fig, out.join(name))
            figures.append((name, f"Bandpass {eb['label']} {spw}"))
    return figures


def _uv_plot(ctx, out: Location, calibration: dict) -> list[tuple[str, str]]:
    fig, ax = plt.subplots(figsize=(5, 5))
    for eb in calibration["execution_blocks"]:
        loc = ctx.path("calibration", eb["label"], "calibrated.ps.zarr")
        ps = open_checked(loc)
        info = partition_infos(ps)[0]
        p = load_partition(ps[info.name], info.name, channels=NO_CHANNELS)
        lam = SPEED_OF_LIGHT / float(ps[info.name].frequency.values[0])
        u, v = p.uvw_m[..., 0].ravel() / lam / 1e3, p.uvw_m[..., 1].ravel() / lam / 1e3
        ax.plot(np.r_[u, -u], np.r_[v, -v], ",", alpha=0.5, label=eb["label"])
    ax.set_xlabel("u (kλ)")
    ax.set_ylabel("v (kλ)")
    ax.set_aspect("equal")
    ax.set_title("uv coverage of the science target")
    ax.invert_xaxis()
    _save(fig, out.join("uv_coverage.png"))
    return [("uv_coverage.png", "uv coverage")]


def _image_plot(ctx, out: Location) -> list[tuple[str, str]]:
    store = ImageStore(ctx.path("imaging", "continuum.zarr"))
    attrs = store.attrs
    image = store.read("image_pbcor")[0]
    wcs = WCS(attrs_to_header(attrs["header"])).celestial
    fig = plt.figure(figsize=(6, 6))
    ax = fig.add_subplot(projection=wcs)
    finite = image[np.isfinite(image)]
    vmax = float(np.percentile(finite, 99.9)) if finite.size else 1.0
    vmin = -3 * float(attrs.get("rms_jy") or vmax / 100)
    ax.imshow(image * 1e3, origin="lower", cmap="inferno", vmin=vmin * 1e3, vmax=vmax * 1e3)
    bmaj, bmin, bpa = attrs["beam_rad"]
    cell = math.radians(attrs["cell_arcsec"] / 3600)
    n = image.shape[0]
    ax.add_patch(Ellipse((0.08 * n, 0.08 * n), bmin / cell, bmaj / cell, angle=math.degrees(bpa), fc="none",
                         ec="cyan", lw=1.5))
    ax.set_xlabel("RA")
    ax.set_ylabel("Dec")
    ax.set_title(f"continuum (PB-corrected), beam {math.degrees(bmaj) * 3600:.2f}\" x "
                 f"{math.degrees(bmin) * 3600:.2f}\"")
    _save(fig, out.join("continuum.png"))
    return [("continuum.png", "Continuum image")]


def _spectrum_plots(ctx, out: Location, imaging: dict) -> list[tuple[str, str]]:
    figures = []
    for spw, cube_info in imaging["cubes"].items():
        lines = cube_info.get("line_channels") or []
        if not lines:
            continue
        store = ImageStore(ctx.path("imaging", f"cube_{spw}.zarr"))
        cube = store.read("image_pbcor")
        # The line peak is found in the flat-noise cube (where noise is uniform) inside pb >= 0.5, as the
        # line's integral above each pixel's continuum; the plotted spectrum is the primary-beam-corrected one.
        flat = store.read("image")
        pb = np.nanmax(np.nan_to_num(store.read("pb")), axis=0)
        line_sum = np.nansum(flat[lines] - np.nanmedian(flat, axis=0), axis=0)
        line_sum[pb < 0.5] = -np.inf
        y, x = np.unravel_index(np.argmax(line_sum), line_sum.shape)
        header = attrs_to_header(store.attrs["header"])
        freqs = WCS(header).spectral.pixel_to_world_values(np.arange(cube.shape[0])) / 1e9
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.step(freqs, cube[:, y, x] * 1e3, where="mid", lw=0.8)
        ax.axvspan(freqs[lines[0]], freqs[lines[-1]], color="orange", alpha=0.2, label="line channels")
        ax.set_xlabel("frequency (GHz)")
        ax.set_ylabel("mJy/beam")
        ax.set_title(f"{spw}: spectrum at the line peak (pixel {x}, {y})")
        ax.legend()
        name = plot_file_name("spectrum", spw)
        _save(fig, out.join(name))
        figures.append((name, f"Spectrum {spw}"))
    return figures


def _qa_table(qa: dict) -> str:
    rows = []
    for g in qa["goals"]:
        lo, hi = g["resolution_range_arcsec"]
        rows.append(
            f"<tr><td>{html.escape(g['goal'])}</td><td>{g['beam_arcsec']:.3f}\"</td><td>{lo:.3f}-{hi:.3f}\"</td>"
            f"<td>{g['rms_at_goal_bandwidth_jy'] * 1e3:.4g}</td><td>{g['requested_sensitivity_jy'] * 1e3:.4g}</td>"
            f"<td>{g['rms_ratio']:.2f} (≤ {1 + g['rms_tolerance']:.2f})</td><td><b>{html.escape(g['verdict'])}</b></td>"
            "</tr>")
    return ("<table><tr><th>goal</th><th>beam</th><th>requested</th><th>rms (mJy/beam)</th>"
            "<th>requested rms</th><th>ratio</th><th>verdict</th></tr>" + "".join(rows) + "</table>")


def _scores_table(qa: dict) -> str:
    cells = []
    for stage, s in qa["stage_scores"].items():
        colour = s["colour"]
        cells.append(f"<tr><td>{html.escape(stage)}</td><td style='background:{COLOUR_HEX[colour]};color:white'>"
                     f"{s['score']:.2f} ({colour})</td></tr>")
    return "<table><tr><th>stage</th><th>score</th></tr>" + "".join(cells) + "</table>"


def _calibration_table(calibration: dict) -> str:
    rows = []
    for eb in calibration["execution_blocks"]:
        label = html.escape(eb["label"])
        for spw, w in eb["windows"].items():
            if not w.get("calibrated"):
                rows.append(f"<tr><td>{label}</td><td>{html.escape(spw)}</td><td colspan=5>not calibrated "
                            "(image-only)</td></tr>")
                continue
            sc = w["scores"]

            def cell(name, fmt, sc=sc):
                s = sc.get(name)
                if not s:
                    return "<td>-</td>"
                return (f"<td style='color:{COLOUR_HEX[score_colour(s['score'])]}'>"
                        f"{format(s['value'], fmt)}</td>")

            rows.append(f"<tr><td>{label}</td><td>{html.escape(spw)}</td><td>{w['phase_calibrator_flux_jy']:.4f} ± "
                        f"{w['phase_calibrator_flux_error_jy']:.4f} Jy</td>{cell('fraction_flagged', '.1%')}"
                        f"{cell('gain_snr', '.0f')}{cell('phase_rms', '.1f')}"
                        f"<td>{html.escape(', '.join(w['bad_antennas']) or '-')}</td></tr>")
    return ("<table><tr><th>execution block</th><th>window</th><th>phase calibrator flux</th><th>flagged</th>"
            "<th>gain SNR</th><th>phase rms (deg)</th><th>bad antennas</th></tr>" + "".join(rows) + "</table>")


def _figure(file_name: str, title: str) -> str:
    return (f'<figure><img src="{html.escape(quote(file_name))}" alt="{html.escape(title)}">'
            f"<figcaption>{html.escape(title)}</figcaption></figure>")


def write_weblog(ctx, out: Location, qa: dict, calibration: dict, imaging: dict, prefix: str) -> list[str]:
    figures = []
    figures += _gain_plots(ctx, out, calibration)
    figures += _uv_plot(ctx, out, calibration)
    figures += _image_plot(ctx, out)
    figures += _spectrum_plots(ctx, out, imaging)
    verdict = qa["verdict"]
    colour = {"Pass": "green", "SemiPass": "yellow", "Fail": "red"}[verdict]
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in qa["reasons"]) or "<li>all science goals met</li>"
    reasons += "".join(f"<li>note: {html.escape(n)}</li>" for n in qa.get("notes", []))
    cont = imaging["continuum"]
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mousflow weblog {html.escape(ctx.uid)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 1100px; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border: 1px solid #ccc; padding: 4px 8px; }}
.verdict {{ display: inline-block; padding: 6px 14px; color: white; background: {COLOUR_HEX[colour]};
  font-size: 1.3em; border-radius: 4px; }}
figure {{ display: inline-block; margin: 0.5em; vertical-align: top; }} img {{ max-width: 520px; }}
</style></head><body>
<h1>MOUS {html.escape(ctx.uid)}</h1>
<p>Project {html.escape(ctx.mous.spec.project_code)}, band {ctx.mous.spec.band},
{len(ctx.mous.spec.execution_blocks)} execution block(s). Products: <code>{html.escape(prefix)}.*</code></p>
<h2>QA2 <span class="verdict">{html.escape(verdict)}</span></h2>
<ul>{reasons}</ul>
{_qa_table(qa)}
<h2>Stage scores</h2>
{_scores_table(qa)}
<h2>Calibration</h2>
{_calibration_table(calibration)}
<h2>Imaging</h2>
<p>Continuum: {cont['n_channels']} line-free channels, {cont['bandwidth_hz'] / 1e9:.3f} GHz, rms
{cont['rms_jy'] * 1e3:.4g} mJy/beam (predicted from the weights {cont['predicted_rms_jy'] * 1e3:.4g}),
CLEAN {cont['n_components']} components in {cont['n_major']} major cycles ({html.escape(cont['stop_reason'])}),
{"a flat spectrum" if cont.get('nterms', 1) == 1 else f"{cont['nterms']} Taylor terms (spectral index)"} over
{cont.get('fractional_bandwidth', 0.0):.1%} fractional bandwidth,
image {cont['npix']} px of {cont['cell_arcsec']:.3f}".</p>
{"".join(f'<p><b>Warning:</b> {html.escape(w)}</p>' for w in cont.get('warnings', []))}
<p>Cubes: {html.escape(", ".join(f"{spw}: {c['n_chan']} channels, line channels {c['line_channels'] or 'none'}"
                                 for spw, c in imaging['cubes'].items()))}.</p>
{"".join(_figure(n, t) for n, t in figures)}
</body></html>
"""
    out.join("index.html").write_text(body)
    return ["index.html"] + [n for n, _ in figures]
