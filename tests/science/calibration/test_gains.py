import numpy as np
import pytest

from mousflow.science.calibration import (
    BandpassTable,
    CalibrationFailed,
    GainTable,
    normalise_bandpass,
    solution_intervals,
    solve_gains,
)


def test_solution_intervals():
    t = np.array([0, 10, 20, 100, 110, 120, 130, 300.0])
    idx, n = solution_intervals(t, "int")
    assert n == 8 and list(idx) == list(range(8))
    idx, n = solution_intervals(t, "scan")
    assert n == 3 and list(idx) == [0, 0, 0, 1, 1, 1, 1, 2]
    idx, n = solution_intervals(t, 20.0)
    assert list(idx) == [0, 0, 1, 2, 2, 3, 3, 4] and n == 5
    with pytest.raises(CalibrationFailed):
        solution_intervals(t, "often")
    with pytest.raises(CalibrationFailed):
        solution_intervals(t[::-1], "int")


def _true_bandpass_table(s):
    flags = np.zeros(s.bandpass.shape, bool)
    return BandpassTable(normalise_bandpass(s.bandpass, flags), flags, np.full(flags.shape, 100.0),
                         np.zeros(s.bandpass.shape[1:], int))


def test_gains_per_integration_against_a_model(synthetic, relative_phase):
    s = synthetic(seed=7, n_ant=9, n_time=5, n_chan=16, flux_jy=1.3, sigma=0.1, phase_rate_deg=10)
    bp = _true_bandpass_table(s)
    table = solve_gains(s.vis, s.flag, s.weight, s.antenna1, s.antenna2, s.n_ant, s.time_s, bandpass=bp,
                        flux_jy=1.3, reference_antenna=0)
    assert isinstance(table, GainTable) and table.gains.shape == (5, 9, 2) and not table.flags.any()
    np.testing.assert_allclose(table.time_s, s.time_s)
    # the bandpass normalisation moved per-antenna constants from B into g: compare the products g B
    solved = table.gains[:, :, None, :] * bp.bandpass[None]
    true = s.gains[:, :, None, :] * s.bandpass[None]
    err = relative_phase(solved, true, 0, axis=1)
    expected = np.degrees(np.sqrt(2) / np.median(table.snr))
    assert np.sqrt(np.mean(err**2)) < 2 * expected and np.abs(err).max() < 6 * expected
    np.testing.assert_allclose(np.abs(solved) / np.abs(true), 1, atol=8 * np.median(1 / table.snr))


def test_scan_solint_and_phase_only(synthetic):
    s = synthetic(seed=8, n_time=6, with_bandpass=False)
    table = solve_gains(s.vis, s.flag, s.weight, s.antenna1, s.antenna2, s.n_ant, s.time_s, solint="scan")
    assert table.gains.shape[0] == 1 and table.time_s[0] == pytest.approx(s.time_s.mean())
    ph = solve_gains(s.vis, s.flag, s.weight, s.antenna1, s.antenna2, s.n_ant, s.time_s, phase_only=True)
    np.testing.assert_allclose(np.abs(ph.gains), 1)


def test_flagged_antenna_and_bad_input(synthetic):
    s = synthetic(seed=9, n_time=3, with_bandpass=False)
    s.flag[:, (s.antenna1 == 4) | (s.antenna2 == 4)] = True
    table = solve_gains(s.vis, s.flag, s.weight, s.antenna1, s.antenna2, s.n_ant, s.time_s)
    assert table.flags[:, 4].all() and not table.flags[:, :4].any() and np.all(table.gains[:, 4] == 1)
    with pytest.raises(CalibrationFailed, match="no unflagged data"):
        solve_gains(s.vis, np.ones(s.vis.shape, bool), s.weight, s.antenna1, s.antenna2, s.n_ant, s.time_s)
    with pytest.raises(CalibrationFailed, match="channels"):
        solve_gains(s.vis, s.flag, s.weight, s.antenna1, s.antenna2, s.n_ant, s.time_s, flux_jy=np.ones(3))
