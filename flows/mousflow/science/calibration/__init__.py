"""Calibration science kernels: flagging, bandpass, time-dependent gains (StEFCal), flux scale,
interpolation onto the target and application, and QA sub-scores.

Pure numpy/scipy, array in and array out: data are (time, baseline, channel, corr) with baselines p < q from
antenna1/antenna2, the measurement equation D_pq = g_p(t) B_p(nu) V_pq conj(g_q(t) B_q(nu)) per correlation
(see mousflow.science.conventions) and calibrators are point sources at the phase centre (V_pq = S(nu)).

Order of use per execution block and spectral window:
    flag = flag_outliers(...)          on each calibrator (antennas/channels found there: flag_antennas and
                                       flag_channels on the target)
    bp = solve_bandpass(...)           bandpass calibrator
    gf = solve_gains(..., flux_jy=S_F) flux calibrator, against its trusted model
    gp = solve_gains(...)              phase calibrator, unit model
    fs = fluxscale(gf, gp)             fs.flux_jy: phase calibrator's flux; fs.table: gains in true units
    g, gflag = interpolate_gains(fs.table, target_times)
    vis, flag, weight = apply_calibration(target..., g, gflag, bp)
calibrate_window / apply_to_target do exactly this for one window (see recipe.py; calibrate_window_read with
one block of integrations of one calibrator in memory at a time, through the kernels' blockwise forms:
OutlierSearch for flag_outliers, BandpassSums for solve_bandpass, GainSums for solve_gains); for a target too large for
memory, channel_log_amplitude over channel blocks, target_channel_flags, then apply_to_target_block over blocks
of integrations give the same result.
Across windows (and execution blocks) fit_spectral_index combines the phase calibrator's flux densities.
Every kernel raises CalibrationFailed for unusable input.
"""

from mousflow.science.calibration.apply import apply_calibration
from mousflow.science.calibration.bandpass import BandpassSums, BandpassTable, normalise_bandpass, solve_bandpass
from mousflow.science.calibration.errors import CalibrationFailed
from mousflow.science.calibration.flagging import (
    FlagReport,
    OutlierSearch,
    channel_log_amplitude,
    excess_power_channels,
    flag_antennas,
    flag_channels,
    flag_invalid,
    flag_outliers,
)
from mousflow.science.calibration.fluxscale import FluxScaleResult, SpectralFit, fit_spectral_index, fluxscale
from mousflow.science.calibration.gains import GainSums, GainTable, solution_intervals, solve_gains
from mousflow.science.calibration.interpolation import interpolate_gains
from mousflow.science.calibration.models import calibrator_model, power_law_flux
from mousflow.science.calibration.recipe import (
    WindowCalibration,
    apply_to_target,
    apply_to_target_block,
    calibrate_window,
    calibrate_window_read,
    target_channel_flags,
)
from mousflow.science.calibration.scores import (
    SubScore,
    fraction_flagged_score,
    fraction_flagged_score_of_counts,
    gain_snr_score,
    phase_rms_deg,
    phase_rms_score,
)
from mousflow.science.calibration.stefcal import (
    StefcalResult,
    choose_reference_antenna,
    choose_reference_antenna_of_counts,
    reduce_baselines,
    stefcal,
)

__all__ = [
    "BandpassSums",
    "BandpassTable",
    "CalibrationFailed",
    "FlagReport",
    "FluxScaleResult",
    "GainSums",
    "GainTable",
    "OutlierSearch",
    "SpectralFit",
    "StefcalResult",
    "SubScore",
    "WindowCalibration",
    "apply_calibration",
    "apply_to_target",
    "apply_to_target_block",
    "calibrate_window",
    "calibrate_window_read",
    "calibrator_model",
    "channel_log_amplitude",
    "choose_reference_antenna",
    "choose_reference_antenna_of_counts",
    "excess_power_channels",
    "fit_spectral_index",
    "flag_antennas",
    "flag_channels",
    "flag_invalid",
    "flag_outliers",
    "fluxscale",
    "fraction_flagged_score",
    "fraction_flagged_score_of_counts",
    "gain_snr_score",
    "interpolate_gains",
    "normalise_bandpass",
    "phase_rms_deg",
    "phase_rms_score",
    "power_law_flux",
    "reduce_baselines",
    "solution_intervals",
    "solve_bandpass",
    "solve_gains",
    "stefcal",
    "target_channel_flags",
]
