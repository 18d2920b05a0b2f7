"""Simulate one MOUS: execution blocks as MSv4 processing sets, its manifest (mous.yaml) and truth.json.

Layout written under the output location:

    mous.yaml                 a valid MOUS manifest pointing at the execution blocks below
    truth.json                injected gains, bandpasses, sky components, expected beam and rms
    eb/<label>.ps.zarr        one MSv4 processing set per execution block
    _MOUSFLOW_COMMITTED       written last; without it the output is incomplete

On a local disk everything is written under a temporary sibling directory that is renamed into place at the
end, so an interrupted run leaves nothing at the requested path; in object storage (no rename) the commit
marker is what readers check.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import yaml

import mousflow
from mousflow.errors import InvalidInput
from mousflow.model import MOUSResource
from mousflow.model.resource import name_from_uid
from mousflow.science.geometry import (
    antenna_uvw_m,
    baseline_uvw_m,
    elevation_rad,
    lm_to_radec,
    local_sidereal_time_rad,
)
from mousflow.science.simulation.corruptions import make_bandpass, make_gain_model
from mousflow.science.simulation.sky import SkyComponent, SpectralLine, predict_visibilities
from mousflow.simulate.presets import PRESETS, Preset, SpectralWindowSetup
from mousflow.simulate.schedule import Scan, build_schedule
from mousflow.storage.location import Location
from mousflow.storage.msv4 import AntennaTable, FieldInfo, Partition, build_msv4_node
from mousflow.storage.zarr_io import finalize_processing_set, write_processing_set_node, write_processing_set_root
from mousflow.telescope import load_configuration, primary_beam_fwhm_rad
from mousflow.telescope.alma import SPEED_OF_LIGHT, visibility_noise_jy
from mousflow.telescope.calibrators import (
    BANDPASS_CALIBRATOR,
    FLUX_CALIBRATOR,
    FLUX_MODELS,
    PHASE_CALIBRATOR,
)

TARGET_NAME = "CDFS_field"
TARGET_RA_DEG = 53.122750
TARGET_DEC_DEG = -27.805000
CORRELATIONS = ("XX", "YY")
# Observing starts on this date (UTC), at the LST that puts the target one hour east of the meridian.
OBSERVING_DATE = datetime(2026, 10, 15, tzinfo=UTC)
# Resolution-to-baseline factor of ALMA's Technical Handbook for robust 0.5: theta = 0.574 lambda / L80.
L80_BEAM_FACTOR = 0.574
# Requested sensitivity relative to the rms a robust-0.5 image reaches with the planned Tsys (radiometer
# noise through the Briggs weights of this uv coverage): the margin covers flagged data and the
# dynamic-range floor that residual gain errors put under bright sources (~10 % for the small arrays).
REQUESTED_SENSITIVITY_MARGIN = 1.15
ROBUST = 0.5
ROWS_PER_BLOCK = 8192

ProgressFn = Callable[[str], None]


class SimulationError(InvalidInput):
    """Bad simulation input (unknown preset, unusable output location)."""


@dataclass(frozen=True)
class SimulationResult:
    out: Location
    manifest: Location
    truth: Location
    execution_blocks: list[str]
    visibility_channels: int
    seconds: float

    @property
    def rate_per_s(self) -> float:
        return self.visibility_channels / self.seconds if self.seconds > 0 else float("nan")


def choose_antennas(n: int) -> np.ndarray:
    """n antennas of the 43-antenna configuration spread evenly in distance from the centre (short and long
    baselines both present), always the same ones for the same n."""
    cfg = load_configuration()
    radius = np.linalg.norm(cfg.enu_m[:, :2], axis=1)
    order = np.argsort(radius, kind="stable")
    picks = np.unique(np.round(np.linspace(0, len(order) - 1, n)).astype(int))
    return np.sort(order[picks])


def _observation_start(target_ra_rad: float, longitude_rad: float) -> float:
    """Unix time on OBSERVING_DATE when the target's hour angle is -1 h."""
    t0 = OBSERVING_DATE.timestamp()
    lst0 = local_sidereal_time_rad(np.array([t0]), longitude_rad)[0]
    ha0 = lst0 - target_ra_rad
    wanted = -np.pi / 12
    sidereal_rate = 2 * np.pi / 86164.0905
    return t0 + float(np.mod(wanted - ha0, 2 * np.pi) / sidereal_rate)


@dataclass
class _ExecutionBlockPlan:
    index: int
    uid: str
    label: str
    start_s: float
    scans: list[Scan]


def _plan_execution_blocks(preset: Preset, mous_index: int) -> list[_ExecutionBlockPlan]:
    cfg = load_configuration()
    start = _observation_start(math.radians(TARGET_RA_DEG), cfg.site.lon.rad)
    plans = []
    for k in range(preset.n_execution_blocks):
        scans = build_schedule(preset, start)
        uid = f"uid://A002/X{mous_index:x}a/X{k + 1:x}"
        plans.append(_ExecutionBlockPlan(k, uid, f"uid___A002_X{mous_index:x}a_X{k + 1:x}", start, scans))
        last = scans[-1]
        start = last.start_s + last.n_integrations * last.integration_s + 600.0
    return plans


def _scan_uvw(enu, lat, lon, scan_times, ra, dec, a1, a2):
    ha = local_sidereal_time_rad(scan_times, lon) - ra
    ant_uvw = antenna_uvw_m(enu, lat, ha, dec)
    return baseline_uvw_m(ant_uvw, a1, a2), ha


def simulate_mous(preset_name: str, out: str, seed: int = 1, *, force: bool = False,
                  progress: ProgressFn | None = None) -> SimulationResult:
    """Simulate a MOUS with `preset_name` into `out` (a local path or s3:// URI)."""
    say = progress or (lambda _msg: None)
    if preset_name not in PRESETS:
        raise SimulationError(f"unknown preset {preset_name!r}; choose one of: {', '.join(PRESETS)}")
    if seed < 0:
        raise SimulationError(f"seed must be a non-negative integer, got {seed}")
    preset = PRESETS[preset_name]
    final = Location.of(out)
    if final.exists() and not final.is_empty():
        if not force:
            raise SimulationError(f"{final.uri} already exists and is not empty (use --force to replace it)")
    started = time.perf_counter()

    final.check_writable()
    if final.is_local:
        staging = Location.of(f"{final.path}.partial-{os.getpid()}-{int(time.time())}")
        staging.remove()
    else:
        if force:
            final.remove()
        staging = final

    try:
        truth, n_vischan, eb_labels = _simulate_into(preset, seed, staging, final, say)
        staging.join("truth.json").write_json(truth, indent=None)  # large arrays: compact is 10x faster
        manifest = _manifest(preset, truth, final)
        staging.join("mous.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
        if final.is_local:
            if final.exists():
                shutil.rmtree(final.path)
            os.replace(staging.path, final.path)
        final.commit({"kind": "simulated-mous", "preset": preset.name, "seed": seed,
                      "mousflow": mousflow.__version__, "executionBlocks": eb_labels})
    except BaseException as exc:
        if final.is_local:
            try:
                staging.remove()
            except OSError as cleanup:  # the error that stopped the simulation is the one to report
                exc.add_note(f"the partial output {staging.path} could not be removed: {cleanup}")
        raise
    elapsed = time.perf_counter() - started
    return SimulationResult(final, final.join("mous.yaml"), final.join("truth.json"), eb_labels, n_vischan, elapsed)


def _simulate_into(preset: Preset, seed: int, staging: Location, final: Location, say: ProgressFn):
    seeds = np.random.SeedSequence(seed)
    rng_setup, rng_sky, *rng_ebs = (np.random.default_rng(s) for s in seeds.spawn(2 + preset.n_execution_blocks))
    cfg_all = load_configuration()
    ant_idx = choose_antennas(preset.n_antennas)
    cfg = cfg_all.subset(ant_idx)
    lat, lon = cfg.site.lat.rad, cfg.site.lon.rad
    n_ant = cfg.n_antennas
    a1, a2 = np.triu_indices(n_ant, k=1)
    names = [f"DA{41 + int(i):02d}" for i in ant_idx]
    dish = float(cfg.dish_diameter_m[0])
    antennas = AntennaTable(names, list(cfg.pad_names), cfg.itrf_m(), cfg.dish_diameter_m)
    ra0, dec0 = math.radians(TARGET_RA_DEG), math.radians(TARGET_DEC_DEG)
    mous_index = 0x1000 + seed % 0x1000
    plans = _plan_execution_blocks(preset, mous_index)
    dead = sorted(rng_setup.choice(n_ant, size=preset.n_dead_antennas, replace=False).tolist())
    cont_spws = [s for s in preset.spws if not s.line] or list(preset.spws)
    rep_freq = float(np.mean([s.centre_hz for s in cont_spws]))
    good_bl = ~(np.isin(a1, dead) | np.isin(a2, dead))

    # --- expected beam and noise, from the target scans' geometry (needed to size the sky model) ---------
    target_uv = []
    n_target_int = 0
    for plan in plans:
        for scan in plan.scans:
            if scan.role == "target":
                uvw, _ = _scan_uvw(cfg.enu_m, lat, lon, scan.times_s, ra0, dec0, a1, a2)
                target_uv.append(uvw[:, good_bl].reshape(-1, 3))
                n_target_int += scan.n_integrations
    uv_len = np.concatenate([np.hypot(u[:, 0], u[:, 1]) for u in target_uv])
    l80 = float(np.percentile(uv_len, 80))
    beam_rad = L80_BEAM_FACTOR * (SPEED_OF_LIGHT / rep_freq) / l80
    n_good_bl = int(good_bl.sum())

    def natural_rms(spws: list[SpectralWindowSetup], tsys_factor: float) -> float:
        # Stokes I from two correlations: each (row, channel) contributes 2 / sigma^2 of weight.
        inv = sum(
            s.n_chan * 2.0 / visibility_noise_jy(preset.band, dish, s.channel_width_hz, preset.integration_s,
                                                 tsys_factor) ** 2
            for s in spws
        )
        return 1.0 / math.sqrt(inv * n_target_int * n_good_bl)

    cont_rms = natural_rms(cont_spws, preset.tsys_factor)
    planned_cont_rms = natural_rms(cont_spws, 1.0)
    weighting_loss = briggs_weighting_loss(np.concatenate(target_uv), np.array([s.centre_hz for s in cont_spws]),
                                           dish)
    chan_rms = {s.name: natural_rms([s], preset.tsys_factor) * math.sqrt(s.n_chan) for s in preset.spws}
    planned_chan_rms = {s.name: natural_rms([s], 1.0) * math.sqrt(s.n_chan) for s in preset.spws}

    # --- the science target's sky, scaled to the expected noise so the tests have known SNRs -------------
    pb_fwhm = primary_beam_fwhm_rad(rep_freq, dish)
    line_spw = next((s for s in preset.spws if s.line), preset.spws[-1])
    line_centre = line_spw.centre_hz + 5.3 * line_spw.channel_width_hz
    # Fluxes in units of the planned continuum rms (so `marginal` has the same sky as `tiny`). The point
    # sources are bright enough (100-150 sigma) for their flux to be measurable to ~1 %: the 5 % accuracy the
    # tests ask for is then a test of the pipeline, not of the noise.
    sky_flux = planned_cont_rms
    jitter = rng_sky.uniform(-0.03, 0.03, (4, 2))
    components = [
        SkyComponent("src_A", (0.22 + jitter[0, 0]) * pb_fwhm, (0.14 + jitter[0, 1]) * pb_fwhm,
                     150 * sky_flux, rep_freq, spectral_index=0.0),
        SkyComponent("src_B", (-0.26 + jitter[1, 0]) * pb_fwhm, (0.09 + jitter[1, 1]) * pb_fwhm,
                     100 * sky_flux, rep_freq, spectral_index=-0.8),
        SkyComponent("src_C_extended", (0.04 + jitter[2, 0]) * pb_fwhm, (-0.24 + jitter[2, 1]) * pb_fwhm,
                     250 * sky_flux, rep_freq, spectral_index=-0.5, major_rad=2.5 * beam_rad,
                     minor_rad=1.5 * beam_rad, position_angle_rad=math.radians(30.0)),
        SkyComponent("src_line", (-0.08 + jitter[3, 0]) * pb_fwhm, (-0.11 + jitter[3, 1]) * pb_fwhm,
                     10 * sky_flux, rep_freq, spectral_index=0.0,
                     line=SpectralLine(line_centre, 8 * line_spw.channel_width_hz,
                                       15 * planned_chan_rms[line_spw.name])),
    ]

    calibrator_flux = {
        "bandpass": (BANDPASS_CALIBRATOR, float(rng_sky.uniform(2.0, 4.0)), float(rng_sky.uniform(-0.8, -0.4))),
        "phase": (PHASE_CALIBRATOR, float(rng_sky.uniform(0.5, 1.0)), float(rng_sky.uniform(-0.8, -0.4))),
    }
    flux_model = FLUX_MODELS[FLUX_CALIBRATOR.name]
    calibrator_flux["flux"] = (FLUX_CALIBRATOR, float(flux_model.at(rep_freq)), flux_model.spectral_index)

    # --- execution blocks -------------------------------------------------------------------------------
    truth_ebs = []
    total_vischan = 0
    creation = plans[0].start_s
    creation_date = datetime.fromtimestamp(creation, UTC).strftime("%Y-%m-%dT%H:%M:%S.000")
    for plan, rng in zip(plans, rng_ebs, strict=True):
        say(f"simulating execution block {plan.index + 1}/{len(plans)} ({plan.uid})")
        eb_loc = staging.join("eb", f"{plan.label}.ps.zarr")
        write_processing_set_root(eb_loc)
        gains = make_gain_model(rng, n_ant, len(CORRELATIONS), [s.name for s in preset.spws], rep_freq,
                                plan.start_s, preset.atmospheric_phase_deg)
        bandpasses = {s.name: make_bandpass(rng, n_ant, len(CORRELATIONS), _freqs(s)) for s in preset.spws}
        spur = {s.name: int(rng.integers(s.n_chan // 4, 3 * s.n_chan // 4)) for s in preset.spws}
        eb_truth = {"uid": plan.uid, "label": plan.label, "dead_antennas": [names[i] for i in dead],
                    "spur_channels": spur, "zeroed_rows": 0, "preflagged_rows": 0, "spws": {}, "scans": []}
        all_times = np.concatenate([s.times_s for s in plan.scans])
        for spw in preset.spws:
            g = gains.evaluate(all_times, spw.name, spw.centre_hz)
            eb_truth["spws"][spw.name] = {
                "frequency_hz": _freqs(spw).tolist(),
                "gain_times_s": all_times.tolist(),
                "gain_amplitude": np.round(np.abs(g), 6).tolist(),
                "gain_phase_deg": np.round(np.degrees(np.angle(g)), 4).tolist(),
                "bandpass_amplitude": np.round(np.abs(bandpasses[spw.name]), 6).tolist(),
                "bandpass_phase_deg": np.round(np.degrees(np.angle(bandpasses[spw.name])), 4).tolist(),
            }
        for role in ("bandpass", "flux", "phase", "target"):
            scans = [s for s in plan.scans if s.role == role]
            if role == "target":
                field = FieldInfo(TARGET_NAME, TARGET_NAME, ra0, dec0)
                comps, pb_dish = components, dish
            else:
                cal, flux, alpha = calibrator_flux[role]
                field = FieldInfo(cal.name, cal.name, math.radians(cal.ra_deg), math.radians(cal.dec_deg))
                comps = [SkyComponent(cal.name, 0.0, 0.0, flux, rep_freq, spectral_index=alpha)]
                pb_dish = None
            for spw in preset.spws:
                part, n_zero, n_pre = _simulate_partition(
                    preset, plan, scans, spw, field, comps, pb_dish, antennas, cfg.enu_m, lat, lon, a1, a2, dead,
                    gains, bandpasses[spw.name], spur[spw.name], rng, dish, creation_date,
                )
                write_processing_set_node(eb_loc, f"{plan.label}_{spw.name}_{field.field_name}", build_msv4_node(part))
                eb_truth["zeroed_rows"] += n_zero
                eb_truth["preflagged_rows"] += n_pre
                total_vischan += part.vis.shape[0] * part.vis.shape[1] * part.vis.shape[2]
        finalize_processing_set(eb_loc)
        for s in plan.scans:
            eb_truth["scans"].append({"number": s.number, "role": s.role, "intent": s.intent,
                                      "start_s": s.start_s, "n_integrations": s.n_integrations})
        eb_truth["uri"] = final.join("eb", f"{plan.label}.ps.zarr").uri
        truth_ebs.append(eb_truth)

    truth = {
        "mousflow": mousflow.__version__,
        "preset": preset.name,
        "seed": seed,
        "mous_uid": f"uid://A001/X{mous_index:x}/X{seed % 0xfff + 1:x}",
        "band": preset.band,
        "antennas": names,
        "dish_diameter_m": dish,
        "correlations": list(CORRELATIONS),
        "phase_centre_deg": [TARGET_RA_DEG, TARGET_DEC_DEG],
        "representative_frequency_hz": rep_freq,
        "continuum_spws": [s.name for s in cont_spws],
        "line_spw": line_spw.name,
        "tsys_factor": preset.tsys_factor,
        "expected": {
            "beam_arcsec": math.degrees(beam_rad) * 3600.0,
            "l80_m": l80,
            "continuum_rms_natural_jy": cont_rms,
            "planned_continuum_rms_natural_jy": planned_cont_rms,
            "channel_rms_natural_jy": chan_rms,
            "continuum_bandwidth_hz": float(sum(s.n_chan * s.channel_width_hz for s in cont_spws)),
            "briggs_weighting_loss": weighting_loss,
            "requested_sensitivity_jy": planned_cont_rms * weighting_loss * REQUESTED_SENSITIVITY_MARGIN,
        },
        "calibrators": {
            role: {"field": cal.name, "flux_jy_at_representative_frequency": flux, "spectral_index": alpha,
                   "trusted_model": cal.name in FLUX_MODELS}
            for role, (cal, flux, alpha) in calibrator_flux.items()
        },
        "components": [_component_truth(c, ra0, dec0) for c in components],
        "execution_blocks": truth_ebs,
    }
    return truth, total_vischan, [p.label for p in plans]


def briggs_weighting_loss(uvw_m: np.ndarray, freq_hz: np.ndarray, dish_diameter_m: float) -> float:
    """rms of a robust-0.5 image over that of a naturally weighted one, for equal-weight visibilities at
    these uv points: the same weighting code and image plan the pipeline's imaging uses."""
    from mousflow.science.imaging import briggs_weights, plan_image, predicted_rms

    ones = np.ones((uvw_m.shape[0], freq_hz.size))
    plan = plan_image(uvw_m, freq_hz, dish_diameter_m, robust=ROBUST)
    iw = briggs_weights(uvw_m, freq_hz, ones, None, plan.npix, plan.cell_rad, ROBUST)
    return float(predicted_rms(ones, iw) / predicted_rms(ones, ones))


def _freqs(spw: SpectralWindowSetup) -> np.ndarray:
    return spw.centre_hz + (np.arange(spw.n_chan) - spw.n_chan / 2 + 0.5) * spw.channel_width_hz


def _component_truth(c: SkyComponent, ra0: float, dec0: float) -> dict:
    ra, dec = lm_to_radec(c.l, c.m, ra0, dec0)
    d = c.to_dict()
    d.update(ra_deg=float(np.degrees(ra)), dec_deg=float(np.degrees(dec)),
             major_arcsec=math.degrees(c.major_rad) * 3600, minor_arcsec=math.degrees(c.minor_rad) * 3600,
             position_angle_deg=math.degrees(c.position_angle_rad))
    return d


def _simulate_partition(preset, plan, scans, spw, field: FieldInfo, comps, pb_dish, antennas, enu, lat, lon, a1, a2,
                        dead, gains, bandpass, spur_channel, rng, dish, creation_date):
    freqs = _freqs(spw)
    times = np.concatenate([s.times_s for s in scans])
    scan_names = np.concatenate([np.full(s.n_integrations, str(s.number)) for s in scans])
    n_t, n_bl, n_c, n_p = times.size, a1.size, freqs.size, len(CORRELATIONS)
    uvw, ha = _scan_uvw(enu, lat, lon, times, field.ra_rad, field.dec_rad, a1, a2)
    if np.any(elevation_rad(lat, ha, field.dec_rad) < np.radians(15)):
        raise SimulationError(f"field {field.field_name} is below 15 deg elevation during the schedule")
    sigma = visibility_noise_jy(preset.band, dish, spw.channel_width_hz, preset.integration_s, preset.tsys_factor)
    # The model is accumulated in double precision; everything after it in single, like the stored data.
    g = gains.evaluate(times, spw.name, spw.centre_hz).astype(np.complex64)  # (n_t, n_ant, n_p)
    bb = (bandpass[a1] * np.conj(bandpass[a2])).astype(np.complex64)  # (n_bl, n_c, n_p)
    dead_bl = np.isin(a1, dead) | np.isin(a2, dead)
    vis = np.empty((n_t, n_bl, n_c, n_p), dtype=np.complex64)
    weight = np.empty((n_t, n_bl, n_c, n_p), dtype=np.float32)
    t_block = max(1, ROWS_PER_BLOCK // n_bl)
    for t0 in range(0, n_t, t_block):
        ts = slice(t0, min(n_t, t0 + t_block))
        nt = ts.stop - ts.start
        model = predict_visibilities(comps, uvw[ts].reshape(-1, 3), freqs, pb_dish).astype(np.complex64)
        model = model.reshape(nt, n_bl, n_c, 1)
        noise = rng.standard_normal((nt, n_bl, n_c, n_p, 2), dtype=np.float32).view(np.complex64)[..., 0]
        noise *= np.float32(sigma)
        gg = (g[ts][:, a1] * np.conj(g[ts][:, a2]))[:, :, None, :]  # (nt, n_bl, 1, n_p)
        # Thermal noise is added in calibrated units (Jy) before the gains: calibration then leaves exactly
        # the radiometer-equation noise, which is what the sensitivity tests compare with.
        jj = gg * bb[None]
        block = jj * (model + noise)
        # Raw weights describe the raw data: its noise is sigma |J_p J_q|, so calibration (which divides by
        # J_p conj(J_q) and scales the weights by |J_p J_q|^2) ends with 1 / sigma^2 in Jy.
        w = np.float32(1.0 / sigma**2) / (jj.real**2 + jj.imag**2)
        # A dead antenna correlates noise only.
        block[:, dead_bl] = noise[:, dead_bl]
        w[:, dead_bl] = np.float32(1.0 / sigma**2)
        vis[ts] = block
        weight[ts] = w
    # A correlator spur in one channel of every baseline.
    vis[:, :, spur_channel, :] += np.complex64(25 * sigma * (1 + 1j))
    flag = np.zeros(vis.shape, dtype=bool)
    rows = n_t * n_bl
    zero_rows = rng.choice(rows, size=max(1, rows // 500), replace=False)
    vis.reshape(rows, n_c, n_p)[zero_rows] = 0  # dropped integrations the online system did not flag
    pre_rows = rng.choice(rows, size=max(1, rows // 400), replace=False)
    vis.reshape(rows, n_c, n_p)[pre_rows] = np.nan  # flagged online (e.g. shadowing), padded with NaN
    flag.reshape(rows, n_c, n_p)[pre_rows] = True
    return Partition(
        time_unix_s=times, integration_s=preset.integration_s, scan_names=scan_names, antenna1=a1, antenna2=a2,
        antennas=antennas, frequency_hz=freqs, channel_width_hz=spw.channel_width_hz, spw_name=spw.name,
        correlations=CORRELATIONS, field=field, intents=[scans[0].intent], vis=vis, flag=flag, weight=weight,
        uvw_m=uvw, execution_block_uid=plan.uid, project_uid="2026.1.00042.S", creation_date=creation_date,
    ), len(zero_rows), len(pre_rows)


def _manifest(preset: Preset, truth: dict, final: Location) -> dict:
    expected = truth["expected"]
    beam = expected["beam_arcsec"]
    last = truth["execution_blocks"][-1]["scans"][-1]
    end = last["start_s"] + last["n_integrations"] * preset.integration_s
    doc = {
        "apiVersion": "mousflow.io/v1alpha1",
        "kind": "MOUS",
        "metadata": {"name": name_from_uid(truth["mous_uid"]),
                     "labels": {"mousflow.io/preset": preset.name}},
        "spec": {
            "uid": truth["mous_uid"],
            "projectCode": "2026.1.00042.S",
            "band": preset.band,
            "executionBlocks": [{"uid": eb["uid"], "uri": eb["uri"]} for eb in truth["execution_blocks"]],
            "scienceGoals": [{
                "name": "continuum sensitivity",
                "sensitivityJy": float(f"{expected['requested_sensitivity_jy']:.4g}"),
                "sensitivityBandwidthHz": expected["continuum_bandwidth_hz"],
                "resolution": {"minArcsec": round(0.7 * beam, 4), "maxArcsec": round(1.4 * beam, 4)},
                "representativeFrequencyHz": truth["representative_frequency_hz"],
            }],
            "recipe": "calibrate+image",
            "priority": 50,
            "fullyObservedAt": datetime.fromtimestamp(end, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "output": {"uri": final.join("output").uri},
            "delivery": {"uri": final.join("delivered").uri},
        },
    }
    MOUSResource.model_validate(doc)  # the simulator never writes a manifest the CRD would reject
    return doc
