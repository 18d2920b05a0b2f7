"""bench/compare_imagers.py's own logic, without CASA or WSClean: the table it prints and parses back, the aim
check, the measurement of a child process, the calibration figures on visibilities, and the FITS measurement
(tests/corpus/measure.py) on images laid out as each imager writes them."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "bench"), str(HERE / "corpus"), str(HERE / "ingest")]

import compare_imagers as ci  # noqa: E402
from measure import measure_fits_continuum, measure_fits_line, read_fits_image  # noqa: E402

from mousflow.science.imaging import Beam  # noqa: E402


def _run(wall, cpu, gib):
    return ci.Run(wall_s=wall, cpu_s=cpu, peak_bytes=int(gib * 2**30), returncode=0)


ROWS = [
    ci.Row("calibration", "mousflow", _run(40.0, 70.0, 1.5), 0.004, 1.001),
    ci.Row("calibration", "CASA gaincal+bandpass+applycal", _run(30.0, 29.0, 0.8), -0.010, 1.002),
    ci.Row("continuum image", "mousflow", _run(20.0, 38.0, 1.0), -0.02, 1.05),
    ci.Row("continuum image", "tclean", _run(60.0, 58.0, 1.2), 0.01, 1.10, flux_sigma=0.0013),
    ci.Row("continuum image", "WSClean", _run(10.0, 19.0, 0.3), -0.005, 1.08),
    ci.Row("cube (48 ch)", "mousflow", None, None, None, note="failed"),
    ci.Row("calibration 2", "mousflow", _run(1.0, 1.0, 0.1), 0.0012, 1.0, flux_sigma=0.0009),
    ci.Row("calibration 2", "CASA", _run(1.0, 1.0, 0.1), -0.0010, 1.0, flux_sigma=0.0009),
]


def test_the_table_prints_and_parses_back():
    text = ci.table(ROWS)
    lines = text.splitlines()
    assert lines[0] == "| " + " | ".join(ci.COLUMNS) + " |"
    rows = ci.parse_table("some preamble\n" + text + "\nafter")
    assert len(rows) == len(ROWS)
    first = rows[0]
    assert first["step"] == "calibration" and first["tool"] == "mousflow"
    assert first["wall s"] == "40.0" and first["peak GiB"] == "1.50" and first["CPU s"] == "70.0"
    assert first["cores"] == "1.75" and first["flux error %"] == "+0.40" and first["rms / expected"] == "1.001"
    assert rows[1]["flux error %"] == "-1.00"
    assert rows[3]["flux error %"] == "+1.00 ± 0.13"
    # a row without a run or figures prints dashes, and its note beside the tool
    failed = rows[5]
    assert failed["tool"] == "mousflow (failed)" and failed["wall s"] == "-" and failed["rms / expected"] == "-"


def test_the_aim_check_names_what_mousflow_misses():
    out = ci.aims(ROWS)
    text = "\n".join(out)
    # calibration: slower, more memory than CASA; its flux error is better, its rms too
    assert "calibration: mousflow's wall time is worse than CASA" in text
    assert "calibration: mousflow's peak memory" in text
    assert "calibration: mousflow's |flux error|" not in text
    # continuum: worse flux error and slower than WSClean; its rms is the best
    assert "continuum image: mousflow's |flux error| is worse than WSClean's (4.00x)" in text
    assert "continuum image: mousflow's rms ratio" not in text
    assert "continuum image: mousflow's CPU time (core-seconds) is 2.00x WSClean's: misses the per-core aim" in text
    # no mousflow figures, no comparison
    assert not [line for line in out if line.startswith("cube")]
    # a difference smaller than the figures' thermal uncertainty is said to be one
    assert ("calibration 2: mousflow's |flux error| is worse than CASA's (1.20x), by 0.02 %: less than the "
            "figures' thermal uncertainty (0.09 %)") in text


def test_spw_selection_joins_runs_of_channels():
    assert ci._spw_selection(1, [3, 4, 5, 9, 11, 12]) == "1:3~5;9~9;11~12"


def test_a_child_process_is_measured(tmp_path):
    code = ("import numpy as np, time; a = np.ones(64 * 2**20 // 8); t = time.process_time()\n"
            "while time.process_time() - t < 0.3: pass")
    run = ci.measured([sys.executable, "-c", code], cwd=tmp_path, log=tmp_path / "log")
    assert run.returncode == 0 and run.wall_s > 0.3
    assert run.cpu_s >= 0.3 and 0 < run.cores <= 1.5
    assert run.peak_bytes > 64 * 2**20


def test_a_failing_child_raises_with_its_log(tmp_path):
    with pytest.raises(RuntimeError, match="exited 3") as err:
        ci.measured([sys.executable, "-c", "print('what went wrong'); raise SystemExit(3)"], cwd=tmp_path,
                    log=tmp_path / "log")
    assert "what went wrong" in str(err.value)


TRUTH = {"target": {"name": "T", "ra_deg": 53.0, "dec_deg": -27.8}, "sigma_jy": 0.05,
         "sources": [{"name": "a", "ra_deg": 53.0 + 6 / 3600 / math.cos(math.radians(-27.8)),
                      "dec_deg": -27.8 + 4 / 3600, "flux_jy": 0.03, "alpha": 0.0},
                     {"name": "b", "ra_deg": 53.0 - 5 / 3600 / math.cos(math.radians(-27.8)),
                      "dec_deg": -27.8 - 7 / 3600, "flux_jy": 0.025, "alpha": -0.7}],
         "line": {"ra_deg": 53.0, "dec_deg": -27.8 + 10 / 3600, "centre_hz": 100.9e9, "fwhm_hz": 60e6,
                  "integrated_jy_hz": 0.04 * 60e6 * math.sqrt(math.pi / (4 * math.log(2)))}}


@pytest.mark.parametrize("sign", [-1.0, 1.0])
def test_calibration_quality_finds_the_flux_scale_and_the_noise_whatever_the_uvw_sign(sign):
    rng = np.random.default_rng(3)
    uvw = rng.uniform(-300, 300, (40000, 3))
    uvw[:, 2] *= 0.1
    freq = np.linspace(97e9, 99e9, 8)
    model = ci.point_source_model(uvw, freq, TRUTH["sources"], (53.0, -27.8), sign)
    per_part = TRUTH["sigma_jy"] / math.sqrt(2)  # Stokes I: the mean of two correlations
    noise = per_part * (rng.standard_normal(model.shape) + 1j * rng.standard_normal(model.shape))
    flag = np.zeros(model.shape, dtype=bool)
    flag[:100] = True
    vis = 1.02 * model + noise
    vis[:100] = 1e6  # flagged: ignored
    q = ci.calibration_quality([{"vis": vis, "flag": flag, "uvw_m": uvw, "freq_hz": freq}], TRUTH)
    assert q["flux_error"] == pytest.approx(0.02, abs=0.006)
    assert q["rms_ratio"] == pytest.approx(1.0, abs=0.02)
    assert abs(q["flux_error"] - 0.02) < 4 * q["flux_sigma"] and 0.0005 < q["flux_sigma"] < 0.005
    assert q["n_samples"] == flag.size - flag.sum()


def _header(npix, cell_deg, crpix, freq_axis_first: bool, n_chan=1, f0=100e9, df=1e6):
    """A FITS header as CASA (ra, dec, stokes, freq) or mousflow / WSClean (ra, dec, freq, stokes) write it."""
    h = fits.Header()
    h["CTYPE1"], h["CRVAL1"], h["CDELT1"], h["CRPIX1"], h["CUNIT1"] = "RA---SIN", 53.0, -cell_deg, crpix, "deg"
    h["CTYPE2"], h["CRVAL2"], h["CDELT2"], h["CRPIX2"], h["CUNIT2"] = "DEC--SIN", -27.8, cell_deg, crpix, "deg"
    freq = ("FREQ", f0, df, 1.0, "Hz")
    stokes = ("STOKES", 1.0, 1.0, 1.0, "")
    for k, (ctype, crval, cdelt, cp, unit) in zip((3, 4), (freq, stokes) if freq_axis_first else (stokes, freq),
                                                    strict=True):
        h[f"CTYPE{k}"], h[f"CRVAL{k}"], h[f"CDELT{k}"], h[f"CRPIX{k}"], h[f"CUNIT{k}"] = ctype, crval, cdelt, cp, unit
    return h


def _sky(npix, cell_rad, beam: Beam, h, sources):
    """Point sources restored with the beam, placed with the header's WCS."""
    from astropy.wcs import WCS

    from mousflow.science.imaging.beam import quadratic_form

    w = WCS(h).celestial
    yy, xx = np.mgrid[0:npix, 0:npix].astype(float)
    a, b, c = (q * cell_rad**2 for q in quadratic_form(beam))
    img = np.zeros((npix, npix))
    for ra, dec, flux in sources:
        x, y = w.world_to_pixel_values(ra, dec)
        dl, dm = -(xx - x), yy - y
        img += flux * np.exp(-(a * dl * dl + 2 * b * dl * dm + c * dm * dm))
    return img


@pytest.mark.parametrize("layout", ["mousflow", "casa", "wsclean"])
def test_a_continuum_image_is_measured_alike_whatever_wrote_it(layout, tmp_path):
    npix, cell_deg = 128, 0.4 / 3600
    beam = Beam(math.radians(2.4 / 3600), math.radians(2.0 / 3600), math.radians(30.0))
    crpix = {"mousflow": npix // 2 + 1, "casa": npix // 2 + 1, "wsclean": npix // 2}[layout]
    h = _header(npix, cell_deg, crpix, freq_axis_first=layout != "casa")
    h["BMAJ"], h["BMIN"], h["BPA"] = 2.4 / 3600, 2.0 / 3600, 30.0
    img = _sky(npix, math.radians(cell_deg), beam, h,
               [(s["ra_deg"], s["dec_deg"], s["flux_jy"] * (100e9 / 1e11) ** s["alpha"]) for s in TRUTH["sources"]])
    noise = 1e-4 * np.random.default_rng(1).standard_normal(img.shape)
    path = tmp_path / "cont.fits"
    fits.PrimaryHDU((img + noise)[None, None].astype(np.float32), header=h).writeto(path)
    m = measure_fits_continuum(path, TRUTH, radius_arcsec=20.0)
    for s in m["sources"]:
        assert s["flux_ratio"] == pytest.approx(1.0, abs=0.02), s
        assert s["offset_beams"] < 0.05, s
        true_flux = {"a": 0.03, "b": 0.025}[s["name"]]  # the image is at the sources' reference frequency
        assert s["flux_sigma"] == pytest.approx(1e-4 / true_flux, rel=0.2), s
    assert m["rms_jy"] == pytest.approx(1e-4, rel=0.15)


@pytest.mark.parametrize("layout", ["one file with a BEAMS table", "one file per channel"])
def test_a_cube_is_measured_alike_whatever_wrote_it(layout, tmp_path):
    npix, cell_deg, n_chan, f0, df = 96, 0.5 / 3600, 40, 100.6e9, 15.625e6
    beam = Beam(math.radians(2.4 / 3600), math.radians(2.0 / 3600), 0.0)
    line = TRUTH["line"]
    freq = f0 + df * np.arange(n_chan)
    peak = 0.04 * np.exp(-4 * math.log(2) * ((freq - line["centre_hz"]) / line["fwhm_hz"]) ** 2)
    h = _header(npix, cell_deg, npix // 2 + 1, True, n_chan, f0, df)
    unit = _sky(npix, math.radians(cell_deg), beam, h, [(line["ra_deg"], line["dec_deg"], 1.0)])
    rng = np.random.default_rng(2)
    cube = peak[:, None, None] * unit[None] + 1e-3 * rng.standard_normal((n_chan, npix, npix))
    if layout.startswith("one file with"):
        table = fits.BinTableHDU.from_columns([
            fits.Column("BMAJ", "1E", array=np.full(n_chan, 2.4)),
            fits.Column("BMIN", "1E", array=np.full(n_chan, 2.0)),
            fits.Column("BPA", "1E", array=np.zeros(n_chan))], name="BEAMS")
        paths = tmp_path / "cube.fits"
        fits.HDUList([fits.PrimaryHDU(cube[None].astype(np.float32), header=h), table]).writeto(paths)
    else:
        paths = []
        for k in range(n_chan):
            hk = _header(npix, cell_deg, npix // 2 + 1, True, 1, freq[k], df)
            hk["BMAJ"], hk["BMIN"], hk["BPA"] = 2.4 / 3600, 2.0 / 3600, 0.0
            paths.append(tmp_path / f"cube-{k:04d}-image.fits")
            fits.PrimaryHDU(cube[k][None, None].astype(np.float32), header=hk).writeto(paths[-1])
    img = read_fits_image(paths)
    assert img.data.shape == (n_chan, npix, npix)
    np.testing.assert_allclose(img.freq_hz, freq)
    m = measure_fits_line(paths, TRUTH, radius_arcsec=20.0)
    assert m["flux_ratio"] == pytest.approx(1.0, abs=0.03)
    assert m["offset_beams"] < 0.05
    assert m["channel_rms_jy"] == pytest.approx(1e-3, rel=0.1)
    assert m["n_chan"] == n_chan


def test_a_child_is_not_charged_with_its_parents_memory(tmp_path):
    """Linux carries a parent's high-water mark into a child's ru_maxrss across fork/vfork and exec: a small
    child of a large parent is measured at its own size."""
    ballast = np.ones(400 * 2**20 // 8)  # this process's RSS (and high-water mark) up by 400 MiB
    run = ci.measured([sys.executable, "-c", "import time; time.sleep(0.5)"], cwd=tmp_path, log=tmp_path / "log")
    assert ballast.sum() > 0
    assert 0 < run.peak_bytes < 100 * 2**20
