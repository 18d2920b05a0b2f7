"""The weblog as a reviewer sees it: every plot displayed in a real browser, also when the spectral windows
carry ALMA's names ('ALMA_RB_03#BB_1#SW-01#FULL_RES': a '#' starts a URL fragment), and no console error."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote

import pytest
from headless_chromium import HeadlessChromium, artifacts_dir, find_or_install_chromium

from mousflow.simulate import presets, simulate_mous
from mousflow.stages.runner import run_stage
from mousflow.stages.weblog import _figure, plot_file_name

ALMA_WINDOWS = ("ALMA_RB_03#BB_1#SW-01#FULL_RES", "ALMA_RB_03#BB_2#SW-01#FULL_RES")


def test_plot_file_names_are_url_safe_and_never_collide():
    names = [plot_file_name("gains", "uid___A002_X1_X1", spw) for spw in
             (*ALMA_WINDOWS, "ALMA_RB_03-BB_1-SW-01-FULL_RES", "ALMA_RB_03 BB_1/SW-01?FULL_RES")]
    assert len(set(names)) == len(names)  # the same slug, told apart by the hash of the exact name
    for name in names:
        assert re.fullmatch(r"gains_[A-Za-z0-9._-]+_[0-9a-f]{8}\.png", name), name
        assert quote(name) == name
    assert plot_file_name("gains", "eb", ALMA_WINDOWS[0]) != plot_file_name("bandpass", "eb", ALMA_WINDOWS[0])


def test_figure_urls_are_percent_encoded_and_text_escaped():
    html = _figure("a#b c.png", 'Gains <eb> "spw"')
    assert 'src="a%23b%20c.png"' in html
    assert "<eb>" not in html and "&lt;eb&gt;" in html and "&quot;spw&quot;" in html


@pytest.fixture(scope="module")
def chromium() -> str:
    try:
        return find_or_install_chromium()
    except RuntimeError as exc:  # a missing browser is a failure to report, never a reason to skip
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="module")
def alma_named_run(tmp_path_factory) -> Path:
    """The tiny MOUS with ALMA spectral-window names, calibrated, imaged and packaged: its products folder."""
    tiny = presets.PRESETS["tiny"]
    alma = replace(tiny, name="tiny-alma-windows",
                   spws=tuple(replace(s, name=n) for s, n in zip(tiny.spws, ALMA_WINDOWS, strict=True)))
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(presets.PRESETS, alma.name, alma)
        mp.setenv("MOUSFLOW_DASK", "inline")  # the weblog is under test here, not the scale-out
        sim = simulate_mous(alma.name, str(tmp_path_factory.mktemp("weblog") / "mous"), seed=1)
        for stage in ("calibration", "imaging", "packaging"):
            outcome = run_stage(stage, sim.manifest.path)
            assert outcome.state == "Succeeded", (stage, outcome.reason, outcome.message)
    return Path(sim.out.path) / "output" / "products"


@pytest.mark.slow
def test_every_plot_displays_in_a_browser(alma_named_run, chromium):
    index = alma_named_run / "weblog" / "index.html"
    with HeadlessChromium(chromium) as browser:
        report = browser.open(index.as_uri())
        shot = browser.screenshot(artifacts_dir("weblog") / "alma-window-names.png")
    print(f"weblog screenshot: {shot}")
    srcs = [img["src"] for img in report.images]
    # gains and bandpass for both windows, the uv coverage, the continuum and the line window's spectrum
    assert len(srcs) == 2 * len(ALMA_WINDOWS) + 3, srcs
    assert all(spw in index.read_text() for spw in ALMA_WINDOWS)  # named on the page as they are called
    not_shown = [img for img in report.images if not img["complete"] or img["naturalWidth"] == 0]
    assert not not_shown, not_shown
    assert not report.errors, report.errors
    assert shot.stat().st_size > 10_000
