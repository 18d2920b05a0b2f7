"""The calibration stage applies to each target partition in blocks, in bounded memory, and writes what the
whole partition calibrated at once gives, to the bit."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import xarray as xr
import yaml

from mousflow.science.calibration import amplitude_median, apply_to_target, calibrate_window
from mousflow.stages import calibration
from mousflow.stages.intents import has_role
from mousflow.stages.runner import run_stage
from mousflow.storage import zarr_io
from mousflow.storage.location import Location
from mousflow.storage.partitions import load_partition, open_checked, partition_infos
from mousflow.telescope.calibrators import FLUX_MODELS

# Small enough that tiny's target partitions (1.8 and 3.7 MB of visibilities) are split into several blocks
# of integrations, the stored time chunk being one or two integrations.
SMALL_BLOCK_BYTES = 400_000
SMALL_CHUNK_BYTES = 2**16


def _small_blocks(monkeypatch) -> None:
    monkeypatch.setattr(calibration, "APPLY_BLOCK_BYTES", SMALL_BLOCK_BYTES)
    monkeypatch.setattr(zarr_io, "TARGET_CHUNK_BYTES", SMALL_CHUNK_BYTES)


def _count_block_calls(monkeypatch) -> dict[str, list]:
    """Spy on the stage's reads, blocks counted and blocks applied: {"channels": [...], "times": [...],
    "counted": [...], "applied": [...]}."""
    calls: dict[str, list] = {"channels": [], "times": [], "counted": [], "applied": []}
    read, apply = calibration.load_partition, calibration.apply_to_target_block
    count = amplitude_median.count_per_channel

    def counting_read(node, name="", channels=None, field=None, times=None, **kw):
        for key, value in (("channels", channels), ("times", times)):
            if value is not None and field is None:  # the target's (a calibrator is read on its field)
                calls[key].append((name, value.start, value.stop))
        return read(node, name, channels=channels, field=field, times=times, **kw)

    def counting_apply(cal, block, bad_channels, **kw):
        calls["applied"].append(block.time_s[0])
        return apply(cal, block, bad_channels, **kw)

    def counting_count(vis, flag, counts=None):
        calls["counted"].append(vis.shape)
        return count(vis, flag, counts)

    # the stage's own counting only (the calibrators' flagging counts too, inside the science kernels)
    monkeypatch.setattr(calibration, "amplitude_median", SimpleNamespace(
        AmplitudeCounts=amplitude_median.AmplitudeCounts, log_median=amplitude_median.log_median,
        count_per_channel=counting_count))
    monkeypatch.setattr(calibration, "load_partition", counting_read)
    monkeypatch.setattr(calibration, "apply_to_target_block", counting_apply)
    return calls


def _target_partitions(output: Path) -> dict[str, xr.Dataset]:
    out = {}
    for ps_path in sorted(output.glob("calibration/*/calibrated.ps.zarr")):
        ps = open_checked(Location.of(str(ps_path)))
        for info in partition_infos(ps):
            out[f"{ps_path.parent.name}/{info.name}"] = ps[info.name].dataset[["VISIBILITY", "FLAG", "WEIGHT"]].load()
    return out


def test_stage_output_is_the_same_in_tiny_blocks_as_whole(make_run, tmp_path, monkeypatch):
    manifest = make_run()
    assert run_stage("calibration", str(manifest)).state == "Succeeded"
    whole = tmp_path / "whole"
    shutil.move(tmp_path / "output", whole)

    _small_blocks(monkeypatch)
    calls = _count_block_calls(monkeypatch)
    assert run_stage("calibration", str(manifest)).state == "Succeeded"
    blocked = tmp_path / "output"

    # really in blocks: each target partition read in several blocks of integrations, once (each block counted
    # for the channel statistic and applied as it is read; never in blocks of channels, which re-read every
    # stored chunk)
    names = {name for name, *_ in calls["times"]}
    assert names and not calls["channels"]
    for name in names:
        ranges = [(start, stop) for n, start, stop in calls["times"] if n == name]
        hits = np.zeros(max(stop for _, stop in ranges), int)
        for start, stop in ranges:
            hits[start:stop] += 1
        assert len(ranges) > 4 and (hits == 1).all(), (name, ranges)
    assert calls["applied"] and len(calls["counted"]) == len(calls["applied"]) == len(calls["times"])

    expected, got = _target_partitions(whole), _target_partitions(blocked)
    assert expected.keys() == got.keys() and len(got) >= 2
    for name in expected:
        for var in ("VISIBILITY", "FLAG", "WEIGHT"):
            a, b = expected[name][var], got[name][var]
            assert a.dtype == b.dtype and a.dims == b.dims
            assert a.values.tobytes() == b.values.tobytes(), (name, var)
        assert got[name]["FLAG"].values.any() and not got[name]["FLAG"].values.all()
    summary = [json.loads((d / "calibration" / "summary.json").read_text()) for d in (whole, blocked)]
    assert summary[0]["scores"] == summary[1]["scores"]
    assert ([w["scores"]["fraction_flagged"] for eb in summary[0]["execution_blocks"] for w in eb["windows"].values()]
            == [w["scores"]["fraction_flagged"] for eb in summary[1]["execution_blocks"]
                for w in eb["windows"].values()])


def _calibrator_reads(monkeypatch) -> dict[tuple[int, str], list[tuple[int, int]]]:
    """Spy on the stage's reads of calibrators (on their field): {(processing set, partition): [(start, stop)]}."""
    reads: dict[tuple[int, str], list[tuple[int, int]]] = {}
    read = calibration.load_partition

    def counting_read(node, name="", channels=None, field=None, times=None, **kw):
        if field is not None:
            block = read(node, name, channels=channels, field=field, times=times, **kw)
            times = times or slice(0, block.time_s.size)
            reads.setdefault((id(node.root), name), []).append((times.start, times.stop))
            return block
        return read(node, name, channels=channels, field=field, times=times, **kw)

    monkeypatch.setattr(calibration, "load_partition", counting_read)
    return reads


def test_small_calibrators_are_read_once_larger_ones_at_most_twice(make_run, monkeypatch):
    """Each window's calibrators are read when the kernel asks (flag statistics, solves, the phase calibrator's
    score; science.calibration.calibrate_window_read, whose tests show it holds one block at a time). Calibrators
    of one block each that together fit a block are kept: each partition is read once. With a block the size of
    the largest calibrator, they no longer fit together: one is read again, none more than twice, and the
    bandpass calibrator once (flagged last, solved first)."""
    manifest = make_run()
    reads = _calibrator_reads(monkeypatch)
    assert run_stage("calibration", str(manifest)).state == "Succeeded"
    assert reads and all(len(ranges) == 1 for ranges in reads.values()), reads

    shutil.rmtree(manifest.parent / "output")
    reads.clear()
    eb = yaml.safe_load(manifest.read_text())["spec"]["executionBlocks"][0]["uri"]
    ps = open_checked(Location.of(eb))
    calibrators = [i for i in partition_infos(ps) if not has_role(i.intents, "target")]
    largest = max(i.n_time * i.n_baseline * i.n_chan * 2 * 8 for i in calibrators)  # two hands, complex64
    monkeypatch.setattr(calibration, "CALIBRATOR_BLOCK_BYTES", largest)
    assert run_stage("calibration", str(manifest)).state == "Succeeded"
    counts = {name: len(ranges) for (_, name), ranges in reads.items()}
    assert max(counts.values()) == 2 and sum(counts.values()) > len(counts), counts
    bandpass = [i.name for i in calibrators if has_role(i.intents, "bandpass")]
    assert bandpass and all(counts[name] == 1 for name in bandpass if name in counts), counts
    n_time = {i.name: i.n_time for i in calibrators}
    assert all(ranges == [(0, n_time[name])] * len(ranges) for (_, name), ranges in reads.items())  # one block


def test_calibrators_in_blocks_of_integrations_give_the_whole_calibrators_result(make_run, tmp_path, monkeypatch):
    """With blocks of a calibrator smaller than one integration's visibilities, every calibrator is read in
    blocks of one integration, each pass over it reading every integration once, and the stage gives what it
    gives with each calibrator whole: the same flags and finds, the solutions but for the order of sums."""
    manifest = make_run()
    assert run_stage("calibration", str(manifest)).state == "Succeeded"
    whole = tmp_path / "whole"
    shutil.move(tmp_path / "output", whole)

    monkeypatch.setattr(calibration, "CALIBRATOR_BLOCK_BYTES", 1)
    reads = _calibrator_reads(monkeypatch)
    assert run_stage("calibration", str(manifest)).state == "Succeeded"
    blocked = tmp_path / "output"
    assert reads
    for key, ranges in reads.items():
        assert all(stop - start == 1 for start, stop in ranges), (key, ranges)
        hits = np.bincount([start for start, _ in ranges])
        assert len(hits) > 1 and (hits == hits[0]).all() and hits[0] >= 3, (key, hits)  # whole passes

    summary = [json.loads((d / "calibration" / "summary.json").read_text()) for d in (whole, blocked)]
    for a, b in zip(*(s["execution_blocks"] for s in summary), strict=True):
        for spw, wa in a["windows"].items():
            wb = b["windows"][spw]
            assert (wa["bad_antennas"], wa["bad_channels"], wa["reference_antenna"]) == \
                (wb["bad_antennas"], wb["bad_channels"], wb["reference_antenna"])
            assert wb["phase_calibrator_flux_jy"] == pytest.approx(wa["phase_calibrator_flux_jy"], rel=1e-9)
            for name, score in wa["scores"].items():
                assert wb["scores"][name]["value"] == pytest.approx(score["value"], rel=1e-9), name
    expected, got = _target_partitions(whole), _target_partitions(blocked)
    assert expected.keys() == got.keys() and len(got) >= 2
    for name in expected:
        np.testing.assert_array_equal(got[name]["FLAG"].values, expected[name]["FLAG"].values)
        np.testing.assert_allclose(got[name]["VISIBILITY"].values, expected[name]["VISIBILITY"].values, rtol=1e-5)


def _traced_peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _longer_partition(node: xr.DataTree, repeats: int) -> xr.DataTree:
    """`node` observed `repeats` times in a row: its integrations repeated, later each time."""
    ds = node.to_dataset(inherit=False).load()
    span = float(ds.time[-1] - ds.time[0]) + float(ds.time[1] - ds.time[0])
    longer = xr.concat([ds.assign_coords(time=ds.time + k * span) for k in range(repeats)], dim="time",
                       data_vars="minimal", coords="minimal", compat="override")
    longer.time.attrs = ds.time.attrs
    out = node.copy()
    out.dataset = longer
    return out


def _tiny_spw1_target_and_calibration(tiny_mous):
    """(tiny's processing set, its spw1 target partition's info, spw1's calibration from its calibrators)."""
    eb = next((Path(tiny_mous.out.path) / "eb").glob("*.ps.zarr"))
    ps = open_checked(Location.of(str(eb)))
    infos = [i for i in partition_infos(ps) if i.spw_name == "spw1"]
    role = {"bandpass": "CALIBRATE_BANDPASS", "flux": "CALIBRATE_FLUX", "phase": "CALIBRATE_PHASE"}
    parts = {r: load_partition(ps[next(i.name for i in infos if i.intents[0].startswith(intent))])
             for r, intent in role.items()}
    cal = calibrate_window(parts["bandpass"], parts["flux"], parts["phase"],
                           FLUX_MODELS[parts["flux"].field_name].at(parts["flux"].frequency_hz))
    return ps, next(i for i in infos if i.intents[0].startswith("OBSERVE_TARGET")), cal


@pytest.mark.slow  # about a minute: 60 blocks of 0.5 MB, each read and written under tracemalloc
def test_streamed_target_peak_memory_is_blocks_not_the_partition(tiny_mous, tmp_path, monkeypatch):
    """Python-allocated peak (numpy's buffers included) of calibrating a target partition of 30 MB of
    visibilities (tiny's spw1 target observed 8 times over), in blocks of 0.5 MB, stored in chunks of as much: a
    block's worth (applying takes ~10 times its visibilities) and Dask's bookkeeping, under half the
    partition. Reading it whole, as the stage did before applying to it, takes more than the partition."""
    ps, target, cal = _tiny_spw1_target_and_calibration(tiny_mous)

    def streamed(ps, target, where: str):
        out = Location.of(str(tmp_path / where))
        zarr_io.write_processing_set_root(out)
        calibration.write_calibrated_target(out, ps[target.name], target, cal)

    streamed(ps, target, "warm-up")  # imports and first-use caches are not what is measured
    monkeypatch.setattr(calibration, "APPLY_BLOCK_BYTES", 2**19)
    monkeypatch.setattr(zarr_io, "TARGET_CHUNK_BYTES", 2**19)
    longer = Location.of(str(tmp_path / "longer.ps.zarr"))
    zarr_io.write_processing_set_root(longer)
    zarr_io.write_processing_set_node(longer, target.name, _longer_partition(ps[target.name], 8))
    zarr_io.finalize_processing_set(longer)
    ps = open_checked(longer)
    (target,) = partition_infos(ps)
    vis_bytes = target.n_time * target.n_baseline * target.n_chan * 2 * 8
    assert vis_bytes > 50 * calibration.APPLY_BLOCK_BYTES

    peak_streamed = _traced_peak(lambda: streamed(ps, target, "measured"))
    peak_whole_read = _traced_peak(lambda: load_partition(ps[target.name], target.name))
    print(f"partition {vis_bytes / 1e6:.1f} MB of vis: peak streamed {peak_streamed / 1e6:.2f} MB, "
          f"reading it whole {peak_whole_read / 1e6:.2f} MB")
    assert peak_whole_read > vis_bytes  # the old stage read the partition whole before applying to it
    assert peak_streamed < vis_bytes / 2


def _with_excess_power(node: xr.DataTree, channel: int, factor: float) -> xr.DataTree:
    """`node` with one channel's visibilities `factor` times stronger (interference on the target alone)."""
    ds = node.to_dataset(inherit=False).load()
    vis = ds["VISIBILITY"].values.copy()
    vis[:, :, channel] *= factor
    ds["VISIBILITY"] = (ds["VISIBILITY"].dims, vis, ds["VISIBILITY"].attrs)
    out = node.copy()
    out.dataset = ds
    return out


def test_a_channel_found_on_the_target_alone_is_flagged_in_the_store_as_whole_apply_flags_it(tiny_mous, tmp_path,
                                                                                             monkeypatch):
    """The target's own excess-power channels are judged on all its integrations, so they are known only once
    every block is written: they are then flagged in the store. The partition written in blocks is, to the bit,
    what apply_to_target on the whole partition in memory gives (that channel flagged, its weights zero), and so
    is the fraction-flagged score."""
    ps, target, cal = _tiny_spw1_target_and_calibration(tiny_mous)
    hot = next(c for c in range(target.n_chan // 2, target.n_chan) if c not in cal.bad_channels)

    source = Location.of(str(tmp_path / "hot.ps.zarr"))
    zarr_io.write_processing_set_root(source)
    zarr_io.write_processing_set_node(source, target.name, _with_excess_power(ps[target.name], hot, 5.0))
    zarr_io.finalize_processing_set(source)
    ps = open_checked(source)
    (target,) = partition_infos(ps)

    whole_cal = dataclasses.replace(cal, scores=dict(cal.scores))
    vis, flag, weight, report = apply_to_target(whole_cal, load_partition(ps[target.name], target.name))
    assert hot in report.channels  # and not among the calibrators' (chosen so)
    assert flag[:, :, hot].all() and (weight[:, :, hot] == 0).all()

    _small_blocks(monkeypatch)
    out = Location.of(str(tmp_path / "calibrated.ps.zarr"))
    zarr_io.write_processing_set_root(out)
    calibration.write_calibrated_target(out, ps[target.name], target, cal, threads=2)
    zarr_io.finalize_processing_set(out)
    got = open_checked(out)[target.name].dataset
    assert got["VISIBILITY"].values.tobytes() == vis.tobytes()
    assert got["FLAG"].values.tobytes() == flag.tobytes()
    assert got["WEIGHT"].values.tobytes() == weight.tobytes()
    assert cal.scores["fraction_flagged"] == whole_cal.scores["fraction_flagged"]
