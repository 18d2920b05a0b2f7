"""calibrate_window_read holds one calibrator at a time and gives, to the bit, what the kernels give when the
three calibrators are flagged and solved in memory in the documented order (the package docstring): the flags
for the solves built from invalid samples plus every calibrator's finds, and the reference antenna chosen on
counts kept from the first pass, are the same as flag_outliers' flags with the finds propagated."""

import gc
import weakref
from dataclasses import replace

import numpy as np
import pytest

from mousflow.science.calibration import (
    calibrate_window_read,
    choose_reference_antenna,
    flag_antennas,
    flag_channels,
    flag_outliers,
    fluxscale,
    solve_bandpass,
    solve_gains,
)
from mousflow.science.calibration.recipe import FLAG_ORDER, SOLVE_ORDER
from mousflow.telescope.calibrators import FLUX_MODELS

ROLES = ("bandpass", "flux", "phase")


def _in_memory(cals: dict, model: np.ndarray):
    """The documented order of use, every calibrator held: (bad antennas, bad channels, reference antenna,
    bandpass, flux calibrator's gains, gains in true units)."""
    n_ant = len(cals["bandpass"].antenna_names)
    flags, reports = {}, {}
    for role in ROLES:
        c = cals[role]
        flags[role], reports[role] = flag_outliers(c.vis, c.flag, c.antenna1, c.antenna2, n_ant)
    bad_ants = sorted({a for r in reports.values() for a in r.antennas})
    bad_chans = sorted({ch for r in reports.values() for ch in r.channels})
    for role in ROLES:
        c = cals[role]
        flags[role] = flag_channels(flag_antennas(flags[role], c.antenna1, c.antenna2, bad_ants), bad_chans)
    p = cals["phase"]
    refant = choose_reference_antenna(flags["phase"], p.antenna1, p.antenna2, n_ant, exclude=bad_ants)
    b = cals["bandpass"]
    bp = solve_bandpass(b.vis, flags["bandpass"], b.weight, b.antenna1, b.antenna2, n_ant, reference_antenna=refant)
    f = cals["flux"]
    gf = solve_gains(f.vis, flags["flux"], f.weight, f.antenna1, f.antenna2, n_ant, f.time_s, bandpass=bp,
                     flux_jy=model, reference_antenna=refant)
    gp = solve_gains(p.vis, flags["phase"], p.weight, p.antenna1, p.antenna2, n_ant, p.time_s, bandpass=bp,
                     reference_antenna=refant)
    return bad_ants, bad_chans, refant, bp, gf, fluxscale(gf, gp).table


@pytest.fixture(scope="module", params=["as simulated", "with a spur on the flux calibrator only"])
def window(request, tiny_mous):
    """spw1 of the tiny MOUS (a dead antenna and a spur channel on every calibrator), and a variant where a
    second spur is on the flux calibrator alone: what one calibrator finds must reach the others' solves."""
    _, parts = tiny_mous
    cals = {role: parts[("spw1", role)] for role in ROLES}
    if request.param != "as simulated":
        vis = cals["flux"].vis.copy()
        vis[:, :, 13] *= 40
        cals["flux"] = replace(cals["flux"], vis=vis)
    fc = cals["flux"]
    return cals, FLUX_MODELS[fc.field_name].at(fc.frequency_hz)


def test_one_calibrator_at_a_time_gives_the_in_memory_calibration_to_the_bit(window):
    cals, model = window
    asked: list[str] = []
    handed: list[weakref.ref] = []

    def read(role: str):
        gc.collect()
        alive = [r for r in handed if r() is not None]
        assert not alive, f"asked for {role} while holding {len(alive)} calibrator(s) already handed over"
        asked.append(role)
        c = cals[role]
        copy = replace(c, vis=c.vis.copy(), flag=c.flag.copy(), weight=c.weight.copy())
        handed.append(weakref.ref(copy))
        return copy

    got = calibrate_window_read(read, model)
    assert asked == [*FLAG_ORDER, *SOLVE_ORDER]
    bad_ants, bad_chans, refant, bp, gf, gains = _in_memory(cals, model)
    assert got.bad_antennas == bad_ants and got.bad_channels == bad_chans and got.reference_antenna == refant
    assert bad_ants and bad_chans  # the finds' propagation is exercised
    assert list(got.flag_reports) == list(ROLES)
    np.testing.assert_array_equal(got.bandpass.bandpass, bp.bandpass)
    np.testing.assert_array_equal(got.bandpass.flags, bp.flags)
    np.testing.assert_array_equal(got.flux_table.gains, gf.gains)
    np.testing.assert_array_equal(got.gains.gains, gains.gains)
    np.testing.assert_array_equal(got.gains.flags, gains.flags)
    assert {"phase_rms", "gain_snr"} <= set(got.scores)


def test_a_spur_on_one_calibrator_is_flagged_in_every_solve(tiny_mous):
    _, parts = tiny_mous
    cals = {role: parts[("spw1", role)] for role in ROLES}
    vis = cals["flux"].vis.copy()
    vis[:, :, 13] *= 40
    cals["flux"] = replace(cals["flux"], vis=vis)
    fc = cals["flux"]
    got = calibrate_window_read(cals.__getitem__, FLUX_MODELS[fc.field_name].at(fc.frequency_hz))
    assert 13 in got.bad_channels and 13 in got.flag_reports["flux"].channels
    assert 13 not in got.flag_reports["bandpass"].channels
    assert got.bandpass.flags[:, 13].all()  # the bandpass calibrator's channel 13 was not used
