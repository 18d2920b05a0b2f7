import numpy as np
import pytest

from mousflow.science.calibration import CalibrationFailed, GainTable, interpolate_gains


def _table(times, gains, flags=None):
    gains = np.asarray(gains, np.complex128).reshape(len(times), 1, 1)
    flags = np.zeros(gains.shape, bool) if flags is None else np.asarray(flags).reshape(gains.shape)
    return GainTable(np.asarray(times, float), gains, flags, np.full(gains.shape, 10.0),
                     np.zeros((len(times), 1), int))


def test_linear_in_amplitude_and_unwrapped_phase_nearest_outside():
    table = _table([0, 10, 20], [1.0 * np.exp(1j * np.radians(170)), 2.0 * np.exp(1j * np.radians(-170)), 2.0])
    g, f = interpolate_gains(table, [-5, 0, 5, 10, 15, 25])
    assert not f.any()
    np.testing.assert_allclose(np.abs(g[:, 0, 0]), [1, 1, 1.5, 2, 2, 2])
    # 170 -> 190 (= -170) passes through 180, not through 0; then 190 -> 360 (= 0)
    np.testing.assert_allclose(np.exp(1j * np.angle(g[:, 0, 0])), np.exp(1j * np.radians([170, 170, 180, 190, 275, 0])),
                               atol=1e-12)


def test_flagged_solutions_are_skipped_and_limits_flag():
    table = _table([0, 10, 20, 100], [1, 5, 3, 3], flags=[False, True, False, False])
    g, f = interpolate_gains(table, [10, 60, 130], max_gap_s=50, max_extrapolation_s=20)
    assert g[0, 0, 0] == pytest.approx(2.0) and not f[0, 0, 0]
    assert f[1, 0, 0] and g[1, 0, 0] == 1  # inside an 80 s gap
    assert f[2, 0, 0]  # 30 s beyond the last solution
    none = _table([0, 10], [1, 1], flags=[True, True])
    g, f = interpolate_gains(none, [5])
    assert f.all() and g[0, 0, 0] == 1


def test_bad_tables_raise():
    with pytest.raises(CalibrationFailed):
        interpolate_gains(_table([10, 0], [1, 1]), [5])
