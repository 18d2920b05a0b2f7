"""The test corpus's cases (issue 12), each at two sizes with the same structure.

A case is one MOUS: the execution blocks CASA's simulator makes (tests/ingest/casa_simulated_ms.py SPEC
dicts, less "out") and the science goals it is imported with. `reduced` is what `make test` runs (fewer
channels and minutes, the same antennas, execution blocks and windows, the line window still the longest);
`full` is the issue's size (`make corpus`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SIZES = ("reduced", "full")

# Band 3, four basebands as ALMA names them. Continuum windows: 2 GHz each; the line window narrower and
# finer, holding the line source. Window names carry '#' as real ALMA data's do.
CONTINUUM_FIRST_HZ = (97.0e9, 109.0e9, 111.0e9)
LINE_WINDOW_FIRST_HZ = {"reduced": 100.5e9, "full": 100.0e9}
CHANNELS = {"reduced": {"continuum": 16, "line": 48}, "full": {"continuum": 128, "line": 480}}
LINE_WINDOW_HZ = {"reduced": 0.75e9, "full": 1.875e9}
# Minutes on the target per execution block (two scans each): the "about 40 min" in full.
TARGET_MINUTES = {"reduced": 4, "full": 40}
# The line: no continuum, a Gaussian 60 MHz wide (~180 km/s, a galaxy's), centred in both sizes' line window
# with more than 4 FWHM plus the LSRK-TOPO shift (< 10 MHz) to either edge.
LINE = {"name": "line_C", "ra_offset_arcsec": -3.0, "dec_offset_arcsec": 8.0, "peak_jy": 0.04,
        "centre_hz": 100.9e9, "fwhm_hz": 60.0e6}
# The field's continuum sources, the same for every case: 40" apart, so that the 7 m array's 12" beam at
# 100 GHz separates them by more than three beams (the generator's default pair is 15" apart, one 7 m beam).
TARGET_SOURCES = [["src_A", 15.0, 10.0, 0.030, 0.0], ["src_B", -14.0, -18.0, 0.025, -0.7]]
SIGMA_JY = 0.05  # one visibility's noise (real and imaginary part): ALMA band 3, 10 s, ~15 MHz-ish


def window_name(baseband: int) -> str:
    return f"ALMA_RB_03#BB_{baseband}#SW-01#FULL_RES"


def windows(size: str) -> list[dict]:
    n = CHANNELS[size]
    out = [{"name": window_name(bb), "first_hz": f0, "n_chan": n["continuum"], "width_hz": 2.0e9 / n["continuum"]}
           for bb, f0 in zip((1, 3, 4), CONTINUUM_FIRST_HZ, strict=True)]
    out.insert(1, {"name": window_name(2), "first_hz": LINE_WINDOW_FIRST_HZ[size], "n_chan": n["line"],
                   "width_hz": LINE_WINDOW_HZ[size] / n["line"]})
    return out


@dataclass(frozen=True)
class Case:
    name: str
    size: str
    execution_blocks: list[dict]
    sensitivity_jy: float
    resolution_arcsec: tuple[float, float]
    expected_qa2: str | None  # None: the case is refused before processing
    refusal: str | None = None  # what its one error line must say

    @property
    def key(self) -> str:
        return f"{self.name}-{self.size}"

    @property
    def line_window(self) -> str | None:
        """The window holding the spectral line, if the case has one."""
        return window_name(2) if any("line" in eb for eb in self.execution_blocks) else None


def thermal_rms_jy(ebs: list[dict]) -> float:
    """The radiometer estimate of the continuum's Stokes I rms with natural weights: 1 / sqrt(2 sum N / sigma^2),
    N the number of target visibilities (baselines x integrations x channels of every window) of each of
    the two correlations in a block, sigma its visibilities' noise."""
    n = 0.0
    for eb in ebs:
        n_bl = eb["n_antennas"] * (eb["n_antennas"] - 1) / 2
        n_int = 2 * eb["target_scan_s"] / 10.0
        n += n_bl * n_int * sum(w["n_chan"] for w in eb["windows"]) / eb["sigma_jy"] ** 2
    return 1.0 / math.sqrt(2 * n)


# The proposal asked for what its observing time was set to reach: the radiometer estimate with 60 % to
# spare: Briggs weighting (robust 0.5) costs ~20 % over natural, and the reduced 12 m case measured 1.5x the
# radiometer estimate in all (2026-12-04).
SENSITIVITY_MARGIN = 1.6


def _target_scan_s(size: str) -> float:
    return TARGET_MINUTES[size] * 60 / 2


# The resolution the proposals ask for: around the beams the two arrays give at 100 GHz (12 m, 43 antennas of
# the compact configuration: 2.4"; 7 m: 12").
RESOLUTION_12M_ARCSEC = (1.5, 4.0)
RESOLUTION_7M_ARCSEC = (8.0, 20.0)


def _twelve_metre_two_days(size: str) -> Case:
    common = {"target_sources": TARGET_SOURCES, "n_antennas": 43, "correlations": "XX YY",
              "flux_calibrator": True, "sigma_jy": SIGMA_JY, "windows": windows(size), "line": LINE,
              "target_scan_s": _target_scan_s(size)}
    ebs = [{**common, "seed": 11, "date": "2026/10/15"}, {**common, "seed": 12, "date": "2026/10/18"}]
    return Case("12m-two-ebs-four-windows", size, ebs, SENSITIVITY_MARGIN * thermal_rms_jy(ebs),
                RESOLUTION_12M_ARCSEC, "Pass")


def _aca(size: str) -> Case:
    # A 7 m dish collects (7/12)^2 of a 12 m dish's power: each visibility is that much noisier.
    eb = {"target_sources": TARGET_SOURCES, "n_antennas": 10, "array": "7m", "correlations": "XX YY",
          "flux_calibrator": True, "sigma_jy": SIGMA_JY * (12 / 7) ** 2, "windows": windows(size),
          "target_scan_s": _target_scan_s(size), "seed": 21, "date": "2026/10/20"}
    return Case("aca-7m", size, [eb], SENSITIVITY_MARGIN * thermal_rms_jy([eb]), RESOLUTION_7M_ARCSEC, "Pass")


def _mosaic(size: str) -> Case:
    eb = {"target_sources": TARGET_SOURCES, "n_antennas": 43, "correlations": "XX YY", "flux_calibrator": True,
          "sigma_jy": SIGMA_JY, "windows": windows(size), "target_scan_s": _target_scan_s(size), "seed": 31,
          "date": "2026/10/21", "mosaic_pointings": 7}
    return Case("mosaic-7-pointings", size, [eb], SENSITIVITY_MARGIN * thermal_rms_jy([eb]), RESOLUTION_12M_ARCSEC,
                None,
                refusal="the science target is observed at 7 pointings")


# The bad window of case (d): BB_4's data are noise 30x the nominal, with nominal weights.
BAD_WINDOW = 3


def _dead_antenna_bad_window(size: str) -> Case:
    eb = {"target_sources": TARGET_SOURCES, "n_antennas": 43, "correlations": "XX YY", "flux_calibrator": True,
          "sigma_jy": SIGMA_JY, "windows": windows(size), "target_scan_s": _target_scan_s(size), "seed": 41,
          "date": "2026/10/22", "dead_antenna": 5, "bad_window": BAD_WINDOW, "bad_window_noise_factor": 30.0}
    # The proposal asked for the sensitivity of a healthy block (the radiometer estimate of all its antennas
    # and windows, x SENSITIVITY_MARGIN). The dead antenna and the bad window, flagged and weighted by their
    # noise, cost sqrt(903 / 861) x sqrt(6.75 / 4.75 GHz) = 1.22 of the radiometer sensitivity, which the margin
    # covers: QA2's rules (band 3: Pass up to 10 % above the request) then say Pass. The bad window at full
    # weight makes the rms 9.4x the request (measured), a Fail: the verdict tells the two apart.
    return Case("dead-antenna-bad-window", size, [eb], SENSITIVITY_MARGIN * thermal_rms_jy([eb]),
                RESOLUTION_12M_ARCSEC, "Pass")


CASES = {"12m-two-ebs-four-windows": _twelve_metre_two_days, "aca-7m": _aca, "mosaic-7-pointings": _mosaic,
         "dead-antenna-bad-window": _dead_antenna_bad_window}


def case(name: str, size: str) -> Case:
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}: one of {SIZES}")
    return CASES[name](size)
