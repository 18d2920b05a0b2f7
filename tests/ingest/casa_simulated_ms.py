"""Write a small ALMA Measurement Set (MSv2) with CASA's own simulator, for the import tests.

Run as a program (`python casa_simulated_ms.py SPEC.json`) in a process of its own: casatools carries its own
casacore, which must not share a process with the one arcae (xradio's reader) loads. The sky is CASA's: the
visibilities of the point sources are predicted by `simulator.predict` from a component list, so nothing of
mousflow takes part in making the data it is then tested on. Only the corruptions (per-antenna complex gains
drifting linearly in time, per-antenna bandpasses, thermal noise with matching weights) are applied here with
numpy, through CASA's table tool, as a correlator and the atmosphere would.

`python casa_simulated_ms.py --retag MS OLD NEW` rewrites the scan intents (STATE.OBS_MODE) of an existing MS,
replacing OLD with NEW (e.g. to make an MS without science target scans).

SPEC keys: out (path of the MS), seed, n_antennas, n_chan (per window, default 8), target_scan_s (default 300),
correlations ("XX YY", "RR LL", or all four), flux_calibrator (bool), sigma_jy (noise of one visibility's real
and imaginary part), drop_baseline_rows (bool: remove some rows of one baseline, which the MSv4 converter then
pads with NaN), mosaic_pointings (N > 1: the target observed at N pointings of a hexagonal mosaic, 25" apart,
each a field of its own named like the target, as ALMA names a mosaic's fields).

phase_scans (number of target scans, each bracketed by the phase calibrator; default 2), corrupt (default
true; false: the model visibilities only, no gains, bandpasses or noise), gains (default true; false: the same
noise as with them, but no gains or bandpasses, i.e. perfectly calibrated data), windows (a list of [name,
first channel's frequency in Hz] with n_chan channels of channel_width_hz each, default 31.25 MHz; or, as the
test corpus (tests/corpus) gives them, of {"name", "first_hz", "n_chan", "width_hz"}: windows with their own
channel counts; default two windows near 100 GHz, band 3).

Keys of the test corpus, all optional so the keys above keep their meaning:
array ("12m", default, or "7m": the ACA's 7 m dishes),
date ("YYYY/MM/DD" of the observation, default 2026/10/15: two execution blocks of one MOUS on two days),
line ({"name", "ra_offset_arcsec", "dec_offset_arcsec", "peak_jy", "centre_hz", "fwhm_hz"}: a source with a
Gaussian spectral line and no continuum, which CASA predicts from a tabular spectrum), dead_antenna (index of
an antenna that delivers noise only, its weights as nominal as the others'), bad_window (index of a window
whose data are noise bad_window_noise_factor times the nominal, with nominal weights: the correlator did not
know), target_sources (a list of [name, RA offset arcsec, Dec offset arcsec, flux Jy at 100 GHz, spectral
index] instead of TARGET_SOURCES). The known sky is printed as JSON on stdout.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import numpy as np

# CASA reads its measures (IERS tables, observatory positions) from the casadata package: no network access.
CASA_SITE_CONFIG = """
import casadata
measurespath = casadata.datapath
datapath = [casadata.datapath]
measures_auto_update = False
data_auto_update = False
nologfile = True
"""

TARGET = ("CDFS_field", 53.12275, -27.805)
BANDPASS = ("J0522-3627", 80.741603, -36.458569, 3.2, -0.5)
FLUX = ("J0423-0120", 65.815836, -1.342518, 1.25, -0.65)
PHASE = ("J0329-2357", 52.478442, -23.951997, 0.65, -0.6)
REFERENCE_HZ = 100.0e9
# (name, RA offset arcsec, Dec offset arcsec, flux Jy at REFERENCE_HZ, spectral index). Within 10" of the
# pointing centre (the 12 m primary beam's FWHM is ~60" at 100 GHz): CASA's predict applies no primary beam.
TARGET_SOURCES = [("src_A", 6.0, 4.0, 0.030, 0.0), ("src_B", -5.0, -7.0, 0.025, -0.7)]
SPWS = [("spw_100GHz", 99.9e9), ("spw_102GHz", 101.9e9)]
N_CHAN = 8
CHANNEL_WIDTH_HZ = 31.25e6
INTEGRATION_S = 10.0


def configure_casa(workdir: str) -> None:
    """CASA's site configuration in workdir, named for this process (measures from casadata)."""
    path = os.path.join(workdir, "casasiteconfig.py")
    with open(path, "w") as fh:
        fh.write(CASA_SITE_CONFIG)
    os.environ["CASASITECONFIG"] = path


# The antenna configurations CASA ships (x, y, z, dish diameter, pad per line): a compact 12 m configuration
# and the 7 m array (ACA).
# Antennas are named as ALMA names them: DA41, DA42, ... (12 m), CM01, CM02, ... (7 m).
ARRAY_CONFIGS = {"12m": ("alma.cycle7.2.cfg", "DA", 41), "7m": ("aca.cycle7.cfg", "CM", 1)}


def _antennas(n: int, array: str = "12m"):
    import casadata

    cfg = os.path.join(casadata.datapath, "alma", "simmos", ARRAY_CONFIGS[array][0])
    rows = [ln.split() for ln in open(cfg) if ln.strip() and not ln.startswith("#")]
    xyz = np.array([[float(r[0]), float(r[1]), float(r[2])] for r in rows])
    radius = np.hypot(xyz[:, 0] - xyz[:, 0].mean(), xyz[:, 1] - xyz[:, 1].mean())
    order = np.argsort(radius)
    pick = np.sort(order[np.round(np.linspace(0, len(order) - 1, n)).astype(int)])
    return xyz[pick], [float(rows[i][3]) for i in pick], [rows[i][4] for i in pick]


def _mosaic(n: int) -> list[tuple]:
    """The target's pointings: its centre, then up to six around it on a hexagon of 25" (Nyquist-like spacing
    for a 12 m dish near 100 GHz), each a field of its own."""
    if n <= 1:
        return [TARGET]
    out = [(f"{TARGET[0]}_0", TARGET[1], TARGET[2])]
    for k in range(1, n):
        angle = np.radians(60.0 * (k - 1))
        dra, ddec = 25.0 * np.cos(angle), 25.0 * np.sin(angle)
        out.append((f"{TARGET[0]}_{k}", TARGET[1] + dra / 3600.0 / np.cos(np.radians(TARGET[2])),
                    TARGET[2] + ddec / 3600.0))
    return out


def _direction(me, ra_deg: float, dec_deg: float):
    return me.direction("J2000", f"{ra_deg}deg", f"{dec_deg}deg")


def _windows(spec: dict) -> list[dict]:
    n_chan = int(spec.get("n_chan", N_CHAN))
    width_hz = float(spec.get("channel_width_hz", CHANNEL_WIDTH_HZ))
    return [dict(w) if isinstance(w, dict) else {"name": w[0], "first_hz": float(w[1]), "n_chan": n_chan,
                                                  "width_hz": width_hz}
            for w in spec.get("windows", SPWS)]


def _line_spectrum(line: dict, windows: list[dict]) -> tuple[list[float], list[float]]:
    """The line's tabular spectrum (Hz, Jy): dense across the line (CASA interpolates linearly between the
    samples, 1/40 of the FWHM apart) and zero out to beyond every window, since CASA does not extrapolate."""
    lo = min(w["first_hz"] for w in windows) - 1e9
    hi = max(w["first_hz"] + w["n_chan"] * w["width_hz"] for w in windows) + 1e9
    c, fwhm = line["centre_hz"], line["fwhm_hz"]
    dense = c + np.linspace(-4 * fwhm, 4 * fwhm, 321)
    freqs = np.concatenate([[lo], dense, [hi]])
    flux = line["peak_jy"] * np.exp(-4 * np.log(2) * ((freqs - c) / fwhm) ** 2)
    flux[[0, -1]] = 0.0
    return freqs.tolist(), flux.tolist()


# Visibilities (rows x channels x correlations) corrupted at once; see main's corruption loop.
BLOCK_SAMPLES = 1 << 25


def _corrupt_rows(sub, start: int, nrow: int, spec: dict, d: int, sigma: float, dead, bad_window, rng,
                  gains: tuple, bp_window: np.ndarray, rp: np.ndarray, rq: np.ndarray) -> None:
    """g_p(t) B_p(nu) V_pq conj(g_q(t) B_q(nu)) + noise for rows [start, start + nrow) of one window's table."""
    amp0, ph0, ph_rate, t0 = gains
    t_sub, a1, a2 = (sub.getcol(c, start, nrow) for c in ("TIME", "ANTENNA1", "ANTENNA2"))
    g = amp0[None] * np.exp(1j * (ph0[None] + ph_rate[None] * (t_sub - t0)[:, None, None]))  # (row, ant, 2)
    rows = np.arange(t_sub.size)
    gp, gq = g[rows, a1], g[rows, a2]  # (row, 2)
    bpp, bpq = bp_window[a1], bp_window[a2]  # (row, chan, 2)
    jones = (gp[:, None, rp] * bpp[..., rp]) * np.conj(gq[:, None, rq] * bpq[..., rq])  # (row, chan, corr)
    del bpp, bpq
    model = np.transpose(sub.getcol("DATA", start, nrow), (2, 1, 0))
    if dead is not None:  # its receivers deliver no sky signal, only noise
        model[(a1 == dead) | (a2 == dead)] = 0.0
    scale = sigma * (float(spec.get("bad_window_noise_factor", 30.0)) if d == bad_window else 1.0)
    noise = scale * (rng.standard_normal(model.shape) + 1j * rng.standard_normal(model.shape))
    if not spec.get("corrupt", True):
        jones, noise = np.ones_like(jones), np.zeros_like(noise)
    elif not spec.get("gains", True):  # perfectly calibrated: the same noise (same draws), no gains or bandpasses
        jones = np.ones_like(jones)
    corrupted = jones * (model + noise)
    del model, noise
    weight = 1.0 / (sigma**2 * np.mean(np.abs(jones) ** 2, axis=1))  # (row, corr): the nominal noise
    sub.putcol("DATA", np.transpose(corrupted, (2, 1, 0)).astype(np.complex64), start, nrow)
    sub.putcol("WEIGHT", weight.T.astype(np.float32), start, nrow)
    sub.putcol("SIGMA", (1.0 / np.sqrt(weight)).T.astype(np.float32), start, nrow)


def main(spec: dict) -> dict:
    out = spec["out"]
    workdir = os.path.dirname(os.path.abspath(out))
    configure_casa(workdir)
    import casatools

    rng = np.random.default_rng(spec.get("seed", 1))
    me, sm, cl, tb = casatools.measures(), casatools.simulator(), casatools.componentlist(), casatools.table()
    array = spec.get("array", "12m")
    xyz, dish, pads = _antennas(spec.get("n_antennas", 10), array)
    n_ant = len(pads)
    _, prefix, first = ARRAY_CONFIGS[array]
    corr = spec.get("correlations", "XX YY")
    windows = _windows(spec)
    target_s = float(spec.get("target_scan_s", 300))
    feeds = "X Y" if corr.startswith("X") else "R L"

    sm.open(out)
    sm.setconfig(telescopename="ALMA", x=xyz[:, 0].tolist(), y=xyz[:, 1].tolist(), z=xyz[:, 2].tolist(),
                 dishdiameter=dish, mount=["ALT-AZ"] * n_ant,
                 antname=[f"{prefix}{first + i:02d}" for i in range(n_ant)], padname=pads,
                 coordsystem="local", referencelocation=me.observatory("ALMA"))
    for w in windows:
        sm.setspwindow(spwname=w["name"], freq=f"{w['first_hz']}Hz", deltafreq=f"{w['width_hz']}Hz",
                       freqresolution=f"{w['width_hz']}Hz", nchannels=int(w["n_chan"]), stokes=corr)
    sm.setfeed(mode=f"perfect {feeds}", pol=[""])
    sm.setauto(autocorrwt=0.0)
    pointings = _mosaic(int(spec.get("mosaic_pointings", 1)))
    fields = pointings + [BANDPASS, PHASE] + ([FLUX] if spec.get("flux_calibrator", True) else [])
    for f in fields:
        sm.setfield(sourcename=f[0], sourcedirection=_direction(me, f[1], f[2]))
    sm.setlimits(shadowlimit=0.001, elevationlimit="8.0deg")
    sm.settimes(integrationtime=f"{INTEGRATION_S}s", usehourangle=True,
                referencetime=me.epoch("UTC", f"{spec.get('date', '2026/10/15')}/00:00:00"))
    # An ALMA-like schedule: bandpass, flux, then the phase calibrator bracketing the target.
    schedule = [(BANDPASS, 120, "CALIBRATE_BANDPASS#ON_SOURCE")]
    if spec.get("flux_calibrator", True):
        schedule.append((FLUX, 120, "CALIBRATE_FLUX#ON_SOURCE"))
    on_target = [(p, target_s / len(pointings), "OBSERVE_TARGET#ON_SOURCE") for p in pointings]
    for _ in range(int(spec.get("phase_scans", 2))):
        schedule += [(PHASE, 60, "CALIBRATE_PHASE#ON_SOURCE"), *on_target]
    schedule.append((PHASE, 60, "CALIBRATE_PHASE#ON_SOURCE"))
    t = -1800.0
    for f, dur, intent in schedule:
        for w in windows:
            sm.observe(sourcename=f[0], spwname=w["name"], starttime=f"{t}s", stoptime=f"{t + dur}s",
                       state_obs_mode=intent, project="2026.1.00099.S")
        t += dur + 20.0

    # The sky, predicted by CASA field by field (a field's component list holds only its own sources).
    for k, f in enumerate(fields):
        path = os.path.join(workdir, f"{f[0]}.cl")
        if f in pointings:
            sources = []
            for name, dra, ddec, flux, alpha in spec.get("target_sources", TARGET_SOURCES):
                ra = f[1] + dra / 3600.0 / np.cos(np.radians(f[2]))
                dec = f[2] + ddec / 3600.0
                sources.append({"name": name, "ra_deg": ra, "dec_deg": dec, "flux_jy": flux, "alpha": alpha})
        else:
            sources = [{"name": f[0], "ra_deg": f[1], "dec_deg": f[2], "flux_jy": f[3], "alpha": f[4]}]
        for s in sources:
            cl.addcomponent(dir=f"J2000 {s['ra_deg']}deg {s['dec_deg']}deg", flux=s["flux_jy"], fluxunit="Jy",
                            freq=f"{REFERENCE_HZ}Hz", shape="point", spectrumtype="spectral index",
                            index=s["alpha"])
        line = spec.get("line")
        if line and f in pointings:
            ra = f[1] + line["ra_offset_arcsec"] / 3600.0 / np.cos(np.radians(f[2]))
            dec = f[2] + line["dec_offset_arcsec"] / 3600.0
            freqs, flux = _line_spectrum(line, windows)
            cl.addcomponent(dir=f"J2000 {ra}deg {dec}deg", flux=line["peak_jy"], fluxunit="Jy",
                            freq=f"{line['centre_hz']}Hz", shape="point")
            # LSRK (CASA cannot convert TOPO for a component): the line lands a few MHz off centre_hz in the
            # windows' TOPO frame, and by a little more or less on another day; its integral is the same.
            cl.setspectrum(which=cl.length() - 1, type="tabular", tabularfreqs=freqs, tabularflux=flux,
                           tabularframe="LSRK")
            line_source = {"name": line["name"], "ra_deg": ra, "dec_deg": dec, "peak_jy": line["peak_jy"],
                           "centre_hz": line["centre_hz"], "fwhm_hz": line["fwhm_hz"],
                           # the integral of a Gaussian: peak x FWHM x sqrt(pi / (4 ln 2))
                           "integrated_jy_hz": line["peak_jy"] * line["fwhm_hz"] * np.sqrt(np.pi / (4 * np.log(2)))}
        cl.rename(path)
        cl.close()
        sm.setdata(spwid=list(range(len(windows))), fieldid=[k])
        sm.predict(complist=path)
        if f in pointings:
            target_sources = sources
    sm.close()
    if len(pointings) > 1:  # ALMA gives every pointing of a mosaic the target's name
        tb.open(os.path.join(out, "FIELD"), nomodify=False)
        tb.putcol("NAME", [TARGET[0] if n.startswith(TARGET[0]) else n for n in tb.getcol("NAME")])
        tb.close()

    # Corruptions: g_p(t) B_p(nu) V_pq conj(g_q(t) B_q(nu)) + noise, weights 1 / (sigma |g_p g_q B_p B_q|)^2.
    sigma = float(spec.get("sigma_jy", 0.05))
    dead = spec.get("dead_antenna")
    bad_window = spec.get("bad_window")
    tb.open(out, nomodify=False)
    times = tb.getcol("TIME")
    t0, t1 = times.min(), times.max()
    amp0 = rng.uniform(0.8, 1.2, (n_ant, 2))
    ph0 = rng.uniform(-np.pi, np.pi, (n_ant, 2))
    ph_rate = rng.uniform(-0.6, 0.6, (n_ant, 2)) / (t1 - t0)  # up to ~35 deg over the observation
    bp = {}
    for d, w in enumerate(windows):
        nu = (np.arange(w["n_chan"]) - w["n_chan"] / 2) / w["n_chan"]
        bp[d] = ((1 + 0.05 * rng.standard_normal((n_ant, 1, 2)) * nu[None, :, None])
                 * np.exp(1j * 0.3 * rng.standard_normal((n_ant, 1, 2)) * nu[None, :, None]))
    # Receptors (p's, q's) of each correlation: XX YY -> (0, 0), (1, 1); XX XY YX YY -> all four pairs.
    hands = [(0, 0), (1, 1)] if len(corr.split()) == 2 else [(0, 0), (0, 1), (1, 0), (1, 1)]
    rp, rq = np.array([h[0] for h in hands]), np.array([h[1] for h in hands])
    # Window by window: their channel counts differ, so DATA is not one array. Within a window, blocks of
    # rows of at most BLOCK_SAMPLES visibilities: a full-size corpus window (254,646 rows x 480 channels x 2)
    # made whole needs ~25 GB of complex128 temporaries. A window that fits one block draws its noise exactly
    # as before blocks existed.
    for d in range(len(windows)):
        sub = tb.query(f"DATA_DESC_ID=={d}")
        n_rows = sub.nrows()
        block = max(1, BLOCK_SAMPLES // (windows[d]["n_chan"] * len(hands)))
        for start in range(0, n_rows, block):
            nrow = min(block, n_rows - start)
            _corrupt_rows(sub, start, nrow, spec, d, sigma, dead, bad_window, rng, (amp0, ph0, ph_rate, t0),
                          bp[d], rp, rq)
        sub.close()
    a1, a2 = tb.getcol("ANTENNA1"), tb.getcol("ANTENNA2")
    if spec.get("drop_baseline_rows", False):
        # The correlator lost baseline DA41-DA42 for part of the target scans: the MSv4 converter pads the
        # missing rows of its (time, baseline) grid with NaN. The MS's storage managers cannot remove rows in
        # place: a deep copy of the other rows replaces it.
        ids = tb.getcol("FIELD_ID")
        lost = set(np.flatnonzero((a1 == 0) & (a2 == 1) & (ids == 0))[::2].tolist())
        keep = [r for r in range(times.size) if r not in lost]
        ref = tb.selectrows(keep, name=out + ".selected")
        ref.copy(out + ".kept", deep=True, valuecopy=True)
        ref.close()
        tb.close()
        shutil.rmtree(out)
        shutil.rmtree(out + ".selected", ignore_errors=True)
        os.rename(out + ".kept", out)
    else:
        tb.close()
    for col in ("MODEL_DATA", "CORRECTED_DATA"):
        tb.open(out, nomodify=False)
        if col in tb.colnames():
            tb.removecols([col])
        tb.close()
    truth = {
        "target": {"name": TARGET[0], "ra_deg": TARGET[1], "dec_deg": TARGET[2]},
        "pointings": [{"ra_deg": p[1], "dec_deg": p[2]} for p in pointings],
        "sources": target_sources,
        "calibrators": {role: {"name": f[0], "flux_jy": f[3], "alpha": f[4], "reference_hz": REFERENCE_HZ}
                        for role, f in (("bandpass", BANDPASS), ("flux", FLUX), ("phase", PHASE))},
        "sigma_jy": sigma,
        "n_antennas": n_ant,
        "dish_diameter_m": dish[0],
        "windows": windows,
        "date": spec.get("date", "2026/10/15"),
    }
    if spec.get("line"):
        truth["line"] = line_source
    return truth


def retag(ms: str, old: str, new: str) -> None:
    configure_casa(os.path.dirname(os.path.abspath(ms)))
    import casatools

    tb = casatools.table()
    tb.open(os.path.join(ms, "STATE"), nomodify=False)
    tb.putcol("OBS_MODE", [m.replace(old, new) for m in tb.getcol("OBS_MODE")])
    tb.close()


if __name__ == "__main__":
    if sys.argv[1] == "--retag":
        retag(*sys.argv[2:5])
    else:
        print(json.dumps(main(json.load(open(sys.argv[1])))))
