"""End to end on the simulated `tiny` MOUS, against the injected truth (truth.json)."""

import numpy as np
import pytest

from mousflow.science.calibration import apply_to_target, calibrate_window, fit_spectral_index, interpolate_gains
from mousflow.simulate import PRESETS
from mousflow.telescope.alma import visibility_noise_jy
from mousflow.telescope.calibrators import FLUX_MODELS

SPWS = ("spw0", "spw1")


@pytest.fixture(scope="module")
def calibrated(tiny_mous):
    truth, parts = tiny_mous
    out = {}
    for spw in SPWS:
        fc = parts[(spw, "flux")]
        cal = calibrate_window(parts[(spw, "bandpass")], fc, parts[(spw, "phase")],
                               FLUX_MODELS[fc.field_name].at(fc.frequency_hz))
        out[spw] = (cal, *apply_to_target(cal, parts[(spw, "target")]))
    return truth, parts, out


def _truth_tables(truth, spw):
    t = truth["execution_blocks"][0]["spws"][spw]
    g = np.array(t["gain_amplitude"]) * np.exp(1j * np.radians(t["gain_phase_deg"]))
    b = np.array(t["bandpass_amplitude"]) * np.exp(1j * np.radians(t["bandpass_phase_deg"]))
    return np.array(t["gain_times_s"]), g, b


def _jones_errors(g, gflag, bp, times, truth, spw, ref):
    """Phase (deg, relative to `ref`) and amplitude errors of J = g B against the truth, per (time, ant,
    chan, corr), where both are unflagged. Comparing products removes the g/B split's ambiguity."""
    tt, gt, bt = _truth_tables(truth, spw)
    gt = gt[np.searchsorted(tt, times)]
    j = g[:, :, None, :] * bp.bandpass[None]
    jt = gt[:, :, None, :] * bt[None]
    ok = ~gflag[:, :, None, :] & ~bp.flags[None]
    ok &= ok[:, [ref]]
    ok[:, ref] = False
    phase = np.angle(j * np.conj(j[:, [ref]]) * np.conj(jt * np.conj(jt[:, [ref]])), deg=True)
    amp = np.abs(j) / np.abs(jt) - 1
    return phase[ok], amp[ok]


def test_flagging_finds_the_dead_antenna_and_the_spurs(calibrated):
    truth, parts, out = calibrated
    eb = truth["execution_blocks"][0]
    dead = [truth["antennas"].index(a) for a in eb["dead_antennas"]]
    for spw in SPWS:
        cal, _, flag, _, target_report = out[spw]
        spur = eb["spur_channels"][spw]
        assert cal.bad_antennas == dead and cal.bad_channels == [spur]
        for role in ("bandpass", "flux", "phase"):
            assert cal.flag_reports[role].antennas == dead and cal.flag_reports[role].channels == [spur]
        assert target_report.channels == [spur]
        # nothing flagged beyond the online flags, zeroed rows, dead antenna and spur channel
        p = parts[(spw, "target")]
        expected = p.flag | (p.vis == 0) | ~np.isfinite(p.vis)
        expected[:, np.isin(p.antenna1, dead) | np.isin(p.antenna2, dead)] = True
        expected[:, :, spur] = True
        np.testing.assert_array_equal(flag, expected)


def test_bandpass_matches_truth(calibrated):
    truth, _, out = calibrated
    for spw in SPWS:
        cal = out[spw][0]
        bp, ref = cal.bandpass, cal.reference_antenna[0]
        _, _, bt = _truth_tables(truth, spw)
        ok = ~bp.flags & ~bp.flags[[ref]]
        ok[ref] = False
        rel = bp.bandpass * np.conj(bp.bandpass[[ref]]) * np.conj(bt * np.conj(bt[[ref]]))
        # per-antenna constants are the g/B split: remove each antenna's mean before comparing the shape
        rel /= np.exp(1j * np.angle(np.sum(np.where(ok, rel, 0), axis=1, keepdims=True)))
        phase = np.angle(rel[ok], deg=True)
        expected = np.degrees(np.sqrt(2) * np.median(1 / bp.snr[~bp.flags]))
        assert np.sqrt(np.mean(phase**2)) < max(1.5 * expected, 0.5), (spw, phase.std(), expected)
        assert np.abs(phase).max() < 6 * expected


def test_gain_phases_and_amplitudes_on_the_phase_calibrator(calibrated):
    truth, _parts, out = calibrated
    for spw in SPWS:
        cal = out[spw][0]
        t = cal.gains
        phase, amp = _jones_errors(t.gains, t.flags, cal.bandpass, t.time_s, truth, spw, cal.reference_antenna[0])
        print(f"{spw}: phase-calibrator gain phase error rms {np.sqrt(np.mean(phase**2)):.2f} deg, "
              f"max {np.abs(phase).max():.2f} deg; amplitude error rms {100 * np.sqrt(np.mean(amp**2)):.2f} %")
        assert np.sqrt(np.mean(phase**2)) < 3.0 and np.abs(phase).max() < 12.0
        assert abs(np.mean(amp)) < 0.01 and np.sqrt(np.mean(amp**2)) < 0.05


def test_flux_scale_within_two_percent(calibrated):
    truth, parts, out = calibrated
    c = truth["calibrators"]["phase"]
    nu0 = truth["representative_frequency_hz"]
    freqs, fluxes, errors = [], [], []
    for spw in SPWS:
        fs = out[spw][0].flux
        centre = float(np.mean(parts[(spw, "phase")].frequency_hz))
        true = c["flux_jy_at_representative_frequency"] * (centre / nu0) ** c["spectral_index"]
        print(f"{spw}: phase calibrator {fs.flux_jy:.4f} +- {fs.flux_error_jy:.4f} Jy, truth {true:.4f} Jy "
              f"({100 * (fs.flux_jy / true - 1):+.2f} %)")
        assert fs.flux_jy == pytest.approx(true, rel=0.02)
        assert abs(fs.flux_jy - true) < 5 * fs.flux_error_jy + 0.005 * true
        freqs.append(centre)
        fluxes.append(fs.flux_jy)
        errors.append(fs.flux_error_jy)
    fit = fit_spectral_index(freqs, fluxes, errors, reference_hz=nu0)
    assert fit.flux_jy == pytest.approx(c["flux_jy_at_representative_frequency"], rel=0.02)
    assert fit.spectral_index == pytest.approx(c["spectral_index"], abs=0.2)


def test_gains_interpolated_onto_the_target(calibrated):
    truth, parts, out = calibrated
    for spw in SPWS:
        cal = out[spw][0]
        times = parts[(spw, "target")].time_s
        g, gflag = interpolate_gains(cal.gains, times)
        phase, amp = _jones_errors(g, gflag, cal.bandpass, times, truth, spw, cal.reference_antenna[0])
        print(f"{spw}: target gain phase error rms {np.sqrt(np.mean(phase**2)):.2f} deg, max "
              f"{np.abs(phase).max():.2f}; amplitude rms {100 * np.sqrt(np.mean(amp**2)):.2f} %")
        assert np.sqrt(np.mean(phase**2)) < 3.0 and np.abs(phase).max() < 10.0
        assert np.sqrt(np.mean(amp**2)) < 0.04


def test_calibrated_target_noise_is_the_radiometer_value_and_scores(calibrated):
    _truth, _parts, out = calibrated
    for spw in SPWS:
        cal, vis, flag, weight, _ = out[spw]
        setup = next(w for w in PRESETS["tiny"].spws if w.name == spw)
        sigma = visibility_noise_jy(3, 12.0, setup.channel_width_hz, PRESETS["tiny"].integration_s)
        # raw weights describe the corrupted data; calibrated ones must be 1/sigma^2 of the Jy-level noise
        assert np.median(weight[~flag]) == pytest.approx(1 / sigma**2, rel=0.05)
        # the target's sky is not negligible per visibility on short baselines: difference consecutive
        # integrations (the sky and the gains barely change in 10 s) to see the noise alone
        ok = ~flag[1:] & ~flag[:-1]
        noise = (vis[1:] - vis[:-1])[ok] / np.sqrt(2)
        print(f"{spw}: calibrated target noise {np.std(noise.real):.4f} / {np.std(noise.imag):.4f} Jy, "
              f"radiometer {sigma:.4f} Jy")
        assert np.std(noise.real) == pytest.approx(sigma, rel=0.03)
        assert np.std(noise.imag) == pytest.approx(sigma, rel=0.03)
        assert np.all(weight[flag] == 0) and np.isfinite(vis).all()
        assert cal.scores["phase_rms"].value < 10 and cal.scores["phase_rms"].score == 1
        assert cal.scores["gain_snr"].value > 20 and cal.scores["gain_snr"].score == 1
        assert 0.15 < cal.scores["fraction_flagged"].value < 0.30  # a dead antenna of 10 is 20 % of baselines
