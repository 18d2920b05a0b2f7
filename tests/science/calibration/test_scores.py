import numpy as np
import pytest

from mousflow.science.calibration import GainTable, fraction_flagged_score, gain_snr_score, phase_rms_score
from mousflow.science.calibration.scores import phase_rms_deg


def test_fraction_flagged_thresholds():
    flag = np.zeros(100, bool)
    assert fraction_flagged_score(flag).score == 1
    flag[:30] = True
    s = fraction_flagged_score(flag)
    assert s.value == pytest.approx(0.3) and s.score == pytest.approx(0.5)
    assert fraction_flagged_score(np.ones(10, bool)).score == 0


def test_gain_snr_thresholds():
    def table(snr):
        shape = (2, 3, 2)
        return GainTable(np.arange(2.0), np.ones(shape, complex), np.zeros(shape, bool), np.full(shape, snr),
                         np.zeros((2, 2), int))

    assert gain_snr_score(table(100)).score == 1
    assert gain_snr_score(table(2)).score == 0
    assert 0 < gain_snr_score(table(8)).score < 1


def test_phase_rms_of_calibrated_point_source():
    rng = np.random.default_rng(0)
    shape = (50, 10, 4, 2)
    for rms_deg in (5.0, 30.0):
        phase = np.radians(rms_deg) * rng.standard_normal((*shape[:2], 1, 2))
        vis = np.broadcast_to(np.exp(1j * phase), shape).astype(np.complex64)
        s = phase_rms_score(vis, np.zeros(shape, bool), np.full(shape, 1e6, np.float32))
        assert s.value == pytest.approx(rms_deg, rel=0.1)
        assert s.score == (1.0 if rms_deg < 15 else pytest.approx((40 - s.value) / 25))


@pytest.mark.parametrize("samples", [1, 4 * 12, 3 * 10 * 12, 10**9])
def test_phase_rms_in_chunks_is_the_whole_array_formula(monkeypatch, samples):
    """phase_rms_deg sums each row's channels a chunk of rows at a time (part of an integration's baselines,
    several baselines, several integrations, everything): the same bits as the formula on the whole arrays."""
    from mousflow.science.calibration import chunking

    rng = np.random.default_rng(5)
    shape = (6, 10, 6, 2)
    vis = (1 + 0.3 * (rng.normal(size=shape) + 1j * rng.normal(size=shape))).astype(np.complex64)
    vis[1, 2, 3, 0] = np.nan
    flag = rng.random(shape) < 0.1
    flag[4, 7] = True  # a whole row flagged
    weight = rng.uniform(0.5, 2, shape).astype(np.float32)
    w = np.where(flag | ~np.isfinite(vis), 0.0, weight.astype(np.float64))
    sw = w.sum(axis=2)
    avg = np.where(sw > 0, (w * np.nan_to_num(vis)).sum(axis=2) / np.where(sw > 0, sw, 1), 0)
    ok = (sw > 0) & (np.abs(avg) > 0)
    snr2 = np.abs(avg[ok]) ** 2 * sw[ok]
    phase = np.angle(avg[ok])
    expected = (np.degrees(np.sqrt(np.sum(snr2 * phase**2) / np.sum(snr2))),
                np.degrees(np.sqrt(phase.size / np.sum(snr2))))
    monkeypatch.setattr(chunking, "SAMPLES_PER_CHUNK", samples)
    assert phase_rms_deg(vis, flag, weight) == expected
