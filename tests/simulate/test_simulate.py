"""`mousflow simulate`: MSv4 output that xradio accepts, realistic geometry and noise, determinism, bad input."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from mousflow.cli import main as cli_main
from mousflow.model import check_spec_semantics, load_manifest
from mousflow.simulate import PRESETS, simulate_mous
from mousflow.simulate.run import SimulationError, choose_antennas
from mousflow.storage.location import COMMIT_MARKER, Location
from mousflow.storage.partitions import load_partition, open_checked, partition_infos
from mousflow.telescope import load_configuration
from mousflow.telescope.alma import visibility_noise_jy


def _eb_locations(result):
    truth = json.loads(Path(result.truth.path).read_text())
    return truth, [Location.of(eb["uri"]) for eb in truth["execution_blocks"]]


def test_output_layout_and_commit_marker(tiny_mous):
    out = Path(tiny_mous.out.path)
    assert (out / COMMIT_MARKER).exists()
    assert (out / "mous.yaml").exists() and (out / "truth.json").exists()
    assert not list(out.parent.glob("*.partial-*")), "staging directory left behind"


def test_processing_sets_open_with_xradio_and_pass_its_schema_check(tiny_mous):
    import xradio.measurement_set  # noqa: F401  (registers the MSv4 schemas)
    from xradio.measurement_set import open_processing_set
    from xradio.schema.check import check_datatree

    _, ebs = _eb_locations(tiny_mous)
    for eb in ebs:
        ps = open_processing_set(eb.path)
        issues = check_datatree(ps)
        assert not issues, str(issues)
        summary = ps.xr_ps.summary()
        intents = {i for row in summary["scan_intents"] for i in row}
        assert intents == {"CALIBRATE_BANDPASS#ON_SOURCE", "CALIBRATE_FLUX#ON_SOURCE",
                           "CALIBRATE_PHASE#ON_SOURCE", "OBSERVE_TARGET#ON_SOURCE"}
        assert set(summary["spw_name"]) == {s.name for s in PRESETS["tiny"].spws}


def test_manifest_is_valid_and_consistent_with_truth(tiny_mous):
    resource = load_manifest(Path(tiny_mous.manifest.path))
    truth = json.loads(Path(tiny_mous.truth.path).read_text())
    assert check_spec_semantics(resource.spec) == []
    assert resource.spec.uid == truth["mous_uid"]
    assert [eb.uri for eb in resource.spec.execution_blocks] == [eb["uri"] for eb in truth["execution_blocks"]]
    goal = resource.spec.science_goals[0]
    beam = truth["expected"]["beam_arcsec"]
    assert goal.resolution.min_arcsec < beam < goal.resolution.max_arcsec
    assert goal.sensitivity_jy == pytest.approx(truth["expected"]["requested_sensitivity_jy"], rel=1e-3)
    assert goal.sensitivity_jy > truth["expected"]["continuum_rms_natural_jy"]


def test_uvw_never_exceeds_the_longest_baseline(tiny_mous):
    cfg = load_configuration().subset(choose_antennas(PRESETS["tiny"].n_antennas))
    longest = cfg.baseline_lengths_m().max()
    _, ebs = _eb_locations(tiny_mous)
    ps = open_checked(ebs[0])
    for info in partition_infos(ps):
        uvw = ps[info.name]["UVW"].values
        assert np.linalg.norm(uvw, axis=-1).max() <= longest + 1e-6
        # and Earth rotation really moves the baselines during a scan
        assert np.ptp(uvw[:, -1, 0]) > 0


def test_noise_matches_the_radiometer_equation(tiny_mous):
    """Baselines to the dead antenna carry pure thermal noise: its rms must be the radiometer value."""
    truth, ebs = _eb_locations(tiny_mous)
    dead = truth["execution_blocks"][0]["dead_antennas"]
    ps = open_checked(ebs[0])
    preset = PRESETS["tiny"]
    checked = 0
    for info in partition_infos(ps):
        p = load_partition(ps[info.name])
        spw = next(s for s in preset.spws if s.name == p.spw_name)
        sigma = visibility_noise_jy(preset.band, 12.0, spw.channel_width_hz, preset.integration_s)
        names = np.array(p.antenna_names)
        on_dead = np.isin(names[p.antenna1], dead) | np.isin(names[p.antenna2], dead)
        samples = p.vis[:, on_dead]
        keep = ~p.flag[:, on_dead] & (samples != 0)
        if spw.n_chan > 4:  # leave out the spur channel
            keep[:, :, truth["execution_blocks"][0]["spur_channels"][spw.name], :] = False
        values = samples[keep]
        measured = np.sqrt(0.5 * (values.real.var() + values.imag.var()))
        assert measured == pytest.approx(sigma, rel=0.05), p.name
        dead_weights = p.weight[:, on_dead][~p.flag[:, on_dead]]
        np.testing.assert_allclose(dead_weights, 1 / sigma**2, rtol=1e-6)
        checked += values.size
    assert checked > 10_000


def test_calibrator_data_follow_the_injected_gains(tiny_mous):
    """D_pq = g_p B_p S conj(g_q B_q) + noise on the bandpass calibrator, with the truth's g and B."""
    truth, ebs = _eb_locations(tiny_mous)
    eb = truth["execution_blocks"][0]
    ps = open_checked(ebs[0])
    info = next(i for i in partition_infos(ps) if "CALIBRATE_BANDPASS#ON_SOURCE" in i.intents and i.spw_name == "spw0")
    p = load_partition(ps[info.name])
    spw = eb["spws"]["spw0"]
    times = np.array(spw["gain_times_s"])
    idx = np.searchsorted(times, p.time_s)
    g = np.array(spw["gain_amplitude"])[idx] * np.exp(1j * np.radians(np.array(spw["gain_phase_deg"])[idx]))
    b = np.array(spw["bandpass_amplitude"]) * np.exp(1j * np.radians(np.array(spw["bandpass_phase_deg"])))
    cal = truth["calibrators"]["bandpass"]
    flux = cal["flux_jy_at_representative_frequency"] * (p.frequency_hz / truth["representative_frequency_hz"]) ** cal[
        "spectral_index"]
    names = np.array(p.antenna_names)
    good = ~(np.isin(names[p.antenna1], eb["dead_antennas"]) | np.isin(names[p.antenna2], eb["dead_antennas"]))
    model = (g[:, p.antenna1, None, :] * b[None, p.antenna1] * np.conj(g[:, p.antenna2, None, :] * b[None, p.antenna2])
             * flux[None, None, :, None])
    resid = (p.vis - model)[:, good]
    ok = ~p.flag[:, good] & (p.vis[:, good] != 0)
    ok[:, :, eb["spur_channels"]["spw0"], :] = False
    sigma = visibility_noise_jy(3, 12.0, 62.5e6, 10.0)
    # residual = gains x noise: rms within a few tens of percent of sigma (gain amplitudes are 0.8-1.2)
    assert np.sqrt(np.mean(np.abs(resid[ok]) ** 2) / 2) == pytest.approx(sigma, rel=0.3)
    assert np.abs(model).mean() > 10 * sigma


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes(tmp_path, tiny_mous):
    again = simulate_mous("tiny", str(tmp_path / "tiny"), seed=1)
    a, b = _tree_digest(Path(tiny_mous.out.path)), _tree_digest(Path(again.out.path))
    # The manifest, truth and marker name their own location; everything else must match byte for byte.
    for name in ("mous.yaml", "truth.json", COMMIT_MARKER):
        a.pop(name), b.pop(name)
    assert a == b
    other = simulate_mous("tiny", str(tmp_path / "tiny2"), seed=2)
    assert _tree_digest(Path(other.out.path)) != _tree_digest(Path(again.out.path))


def test_marginal_differs_from_tiny_only_in_noise_level(tmp_path, tiny_mous):
    marginal = simulate_mous("marginal", str(tmp_path / "marginal"), seed=1)
    t_tiny = json.loads(Path(tiny_mous.truth.path).read_text())
    t_marg = json.loads(Path(marginal.truth.path).read_text())
    assert t_marg["components"] == t_tiny["components"]
    assert t_marg["expected"]["requested_sensitivity_jy"] == t_tiny["expected"]["requested_sensitivity_jy"]
    ratio = t_marg["expected"]["continuum_rms_natural_jy"] / t_marg["expected"]["requested_sensitivity_jy"]
    assert ratio * 1.05 > 1.1 * 1.2, "marginal must be clearly worse than the requested sensitivity allows"


@pytest.mark.parametrize("argv,message", [
    (["--preset", "enormous", "--out", "{tmp}/x"], "unknown preset 'enormous'"),
    (["--preset", "tiny", "--out", "/nonexistent-root-dir/x/y"], "does not exist"),
    (["--preset", "tiny", "--out", "{tmp}/x", "--seed", "-3"], "argument --seed: a whole number from 0"),
])
def test_bad_input_gives_one_line_error_and_nonzero_exit(tmp_path, capsys, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert cli_main(["simulate", *argv]) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_refuses_to_overwrite_without_force(tiny_mous):
    with pytest.raises(SimulationError, match="already exists"):
        simulate_mous("tiny", tiny_mous.out.path, seed=1)


def test_unwritable_path_under_a_file(tmp_path, capsys):
    """A path that nobody, root included, can create: its parent is a regular file."""
    (tmp_path / "a-file").write_text("x")
    assert cli_main(["simulate", "--preset", "tiny", "--out", str(tmp_path / "a-file" / "x")]) != 0
    err = capsys.readouterr().err.strip()
    assert "cannot write" in err and len(err.splitlines()) == 1
    assert (tmp_path / "a-file").read_text() == "x"


def test_failure_midway_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    import mousflow.simulate.run as run

    calls = []

    def failing_write(loc, name, node):
        calls.append(name)
        if len(calls) == 3:
            raise OSError("disk full")
        return original(loc, name, node)

    original = run.write_processing_set_node
    monkeypatch.setattr(run, "write_processing_set_node", failing_write)
    with pytest.raises(OSError, match="disk full"):
        simulate_mous("tiny", str(tmp_path / "out"), seed=1)
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []


def test_killed_midway_leaves_nothing_at_the_output_path(tmp_path):
    """SIGKILL leaves no chance to clean up: the output path must still not exist (only a .partial sibling)."""
    script = f"""
import os, signal
import mousflow.simulate.run as run
original = run.write_processing_set_node
count = [0]
def write(loc, name, node):
    count[0] += 1
    if count[0] == 4:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(loc, name, node)
run.write_processing_set_node = write
run.simulate_mous("tiny", {str(tmp_path / 'out')!r}, seed=1)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "out").exists()
    partial = list(tmp_path.glob("out.partial-*"))
    assert partial and not (partial[0] / COMMIT_MARKER).exists()


def test_cli_simulate_prints_what_it_made(tmp_path, capsys):
    assert cli_main(["simulate", "--preset", "tiny", "--out", str(tmp_path / "m"), "--seed", "7"]) == 0
    out = capsys.readouterr().out
    assert "visibility-channels" in out and str(tmp_path / "m") in out
    doc = yaml.safe_load((tmp_path / "m" / "mous.yaml").read_text())
    assert doc["kind"] == "MOUS"
