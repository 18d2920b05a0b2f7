"""calibrate_window_read holds one block of one calibrator at a time and gives, to the bit when each
calibrator is one block, what the kernels give when the three calibrators are flagged and solved in memory in
the documented order (the package docstring): the flags for the solves built from invalid samples plus every
calibrator's finds, and the reference antenna chosen on counts kept from the first pass, are the same as
flag_outliers' flags with the finds propagated. Blocks of a few integrations give the same finds and the same
solutions but for the order of floating-point sums."""

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


@pytest.fixture(scope="module", params=["as simulated", "with a spur on the flux calibrator only",
                                        "with the dead antenna flagged as read"])
def window(request, tiny_mous):
    """spw1 of the tiny MOUS (a dead antenna and a spur channel on every calibrator); a variant where a second
    spur is on the flux calibrator alone: what one calibrator finds must reach the others' solves; and one
    whose dead antenna was flagged online, so that the antenna test finds nothing and each calibrator's flag
    statistics take one pass."""
    _, parts = tiny_mous
    cals = {role: parts[("spw1", role)] for role in ROLES}
    if request.param == "with a spur on the flux calibrator only":
        vis = cals["flux"].vis.copy()
        vis[:, :, 13] *= 40
        cals["flux"] = replace(cals["flux"], vis=vis)
    elif request.param == "with the dead antenna flagged as read":
        n_ant = len(cals["bandpass"].antenna_names)
        dead = sorted({a for c in cals.values()
                       for a in flag_outliers(c.vis, c.flag, c.antenna1, c.antenna2, n_ant)[1].antennas})
        assert dead
        cals = {role: replace(c, flag=flag_antennas(c.flag, c.antenna1, c.antenna2, dead)) for role, c in cals.items()}
    fc = cals["flux"]
    return cals, FLUX_MODELS[fc.field_name].at(fc.frequency_hz)


def _reader(cals: dict, integrations_per_block: int | None):
    """A reader handing over copies of each role's blocks, which checks that the kernel holds no block it was
    handed when it asks for the next; (read, the roles asked for)."""
    asked: list[str] = []
    handed: list[weakref.ref] = []

    def hand(c, times: slice):
        gc.collect()
        alive = [r for r in handed if r() is not None]
        assert not alive, f"asked for a block while holding {len(alive)} block(s) already handed over"
        block = replace(c, vis=c.vis[times].copy(), flag=c.flag[times].copy(), weight=c.weight[times].copy(),
                        time_s=c.time_s[times].copy())
        handed.append(weakref.ref(block))
        return block

    def read(role: str):
        asked.append(role)
        c = cals[role]
        step = integrations_per_block or c.time_s.size
        for t0 in range(0, c.time_s.size, step):
            yield hand(c, slice(t0, t0 + step))  # not bound here: the kernel's reference is the only one

    return read, asked


def _order_asked(any_bad_antenna: bool) -> list[str]:
    """The roles asked for: the flag statistics twice each where antennas are found (antennas, then the channels
    without them), else once; the solves; the phase calibrator's score."""
    return [*(r for r in FLAG_ORDER for _ in range(2 if any_bad_antenna else 1)), *SOLVE_ORDER, "phase"]


def test_one_calibrator_at_a_time_gives_the_in_memory_calibration_to_the_bit(window):
    cals, model = window
    read, asked = _reader(cals, None)
    got = calibrate_window_read(read, model)
    bad_ants, bad_chans, refant, bp, gf, gains = _in_memory(cals, model)
    assert got.bad_antennas == bad_ants and got.bad_channels == bad_chans and got.reference_antenna == refant
    assert bad_chans  # the finds' propagation is exercised (and the antennas' but where flagged as read)
    assert bool(bad_ants) == all(got.flag_reports[r].antennas for r in ROLES)
    assert asked == _order_asked(bool(bad_ants))
    assert list(got.flag_reports) == list(ROLES)
    np.testing.assert_array_equal(got.bandpass.bandpass, bp.bandpass)
    np.testing.assert_array_equal(got.bandpass.flags, bp.flags)
    np.testing.assert_array_equal(got.flux_table.gains, gf.gains)
    np.testing.assert_array_equal(got.gains.gains, gains.gains)
    np.testing.assert_array_equal(got.gains.flags, gains.flags)
    assert {"phase_rms", "gain_snr"} <= set(got.scores)


@pytest.mark.parametrize("integrations_per_block", [1, 2])
def test_blocks_of_integrations_give_the_whole_calibrators_calibration(window, integrations_per_block):
    cals, model = window
    assert all(c.time_s.size > integrations_per_block for c in cals.values())  # several blocks per role
    whole = calibrate_window_read(_reader(cals, None)[0], model)
    read, asked = _reader(cals, integrations_per_block)
    got = calibrate_window_read(read, model)
    assert asked == _order_asked(bool(whole.bad_antennas))
    assert (got.bad_antennas, got.bad_channels, got.reference_antenna) == \
        (whole.bad_antennas, whole.bad_channels, whole.reference_antenna)
    for role in ROLES:  # counts add: the flag statistics are the same to the bit
        a, b = got.flag_reports[role], whole.flag_reports[role]
        assert (a.antennas, a.channels, a.reasons, a.fraction_before, a.fraction_after) == \
            (b.antennas, b.channels, b.reasons, b.fraction_before, b.fraction_after)
        np.testing.assert_array_equal(a.channel_excess, b.channel_excess)
    np.testing.assert_array_equal(got.bandpass.flags, whole.bandpass.flags)
    np.testing.assert_allclose(got.bandpass.bandpass, whole.bandpass.bandpass, rtol=0, atol=1e-9)
    for table in ("flux_table", "gains"):
        np.testing.assert_array_equal(getattr(got, table).flags, getattr(whole, table).flags)
        np.testing.assert_allclose(getattr(got, table).gains, getattr(whole, table).gains, rtol=0, atol=1e-9)
    assert got.flux.flux_jy == pytest.approx(whole.flux.flux_jy, rel=1e-9)
    for name in ("phase_rms", "gain_snr"):
        assert got.scores[name].value == pytest.approx(whole.scores[name].value, rel=1e-9)


def test_a_spur_on_one_calibrator_is_flagged_in_every_solve(tiny_mous):
    _, parts = tiny_mous
    cals = {role: parts[("spw1", role)] for role in ROLES}
    vis = cals["flux"].vis.copy()
    vis[:, :, 13] *= 40
    cals["flux"] = replace(cals["flux"], vis=vis)
    fc = cals["flux"]
    got = calibrate_window_read(lambda role: [cals[role]], FLUX_MODELS[fc.field_name].at(fc.frequency_hz))
    assert 13 in got.bad_channels and 13 in got.flag_reports["flux"].channels
    assert 13 not in got.flag_reports["bandpass"].channels
    assert got.bandpass.flags[:, 13].all()  # the bandpass calibrator's channel 13 was not used
