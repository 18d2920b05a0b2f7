"""The resource model (per stage, per imaging worker), the imaging Job's Dask settings and the history store that
refines the model from measured peaks (pure functions and a local history directory)."""

from __future__ import annotations

import pytest

from mousflow.pipeline.history import History, StageRecord, record_outcome, work_units
from mousflow.pipeline.kubernetes import JobSettings, build_stage_job_spec
from mousflow.pipeline.resources import (
    LIMIT_HEADROOM,
    SAFETY_MARGIN,
    JobDemand,
    ResourceRequest,
    estimate_image_pixels,
    estimate_stage_resources,
    model_peak_bytes,
)
from mousflow.stages.dask_kubernetes_cluster import cluster_name, cluster_spec, spec_from_env
from mousflow.storage.location import Location

MiB = 2**20
DEMAND = JobDemand(rows_per_window=50_000, correlations=2, max_channels=1000, total_channels=1000,
                   image_pixels=256, channel_chunk=16)


def test_request_is_the_model_times_the_stated_margin_and_the_limit_adds_headroom():
    for stage in ("calibration", "imaging", "imaging-worker", "packaging"):
        r = estimate_stage_resources(stage, DEMAND)
        model = model_peak_bytes(stage, DEMAND)
        assert model * SAFETY_MARGIN <= r.memory_bytes < model * SAFETY_MARGIN + MiB
        assert r.memory_limit_bytes == pytest.approx(r.memory_bytes * LIMIT_HEADROOM, abs=MiB)
    with pytest.raises(ValueError, match="unknown stage 'weblog'"):
        estimate_stage_resources("weblog", DEMAND)


def test_imaging_worker_memory_follows_its_chunk_not_the_cube():
    wide = JobDemand(**{**DEMAND.__dict__, "max_channels": 80_000, "total_channels": 80_000})
    assert model_peak_bytes("imaging-worker", wide) == model_peak_bytes("imaging-worker", DEMAND)
    bigger_chunk = JobDemand(**{**DEMAND.__dict__, "channel_chunk": 64})
    assert model_peak_bytes("imaging-worker", bigger_chunk) > model_peak_bytes("imaging-worker", DEMAND)
    # the stage process (continuum, line finding) does grow with the channels; local workers add to the pod
    assert model_peak_bytes("imaging", wide) > model_peak_bytes("imaging", DEMAND)
    assert model_peak_bytes("imaging", DEMAND, workers_in_pod=2) == \
        model_peak_bytes("imaging", DEMAND) + 2 * model_peak_bytes("imaging-worker", DEMAND)
    # each gridding thread of the stage holds a grid of its own (deterministic row blocks)
    from mousflow.pipeline.resources import GRIDDER_BYTES

    assert model_peak_bytes("imaging", DEMAND, threads=4) - model_peak_bytes("imaging", DEMAND) == \
        3 * GRIDDER_BYTES * DEMAND.image_pixels**2 * 2


def test_learned_factor_scales_the_request_but_never_below_half():
    base = estimate_stage_resources("calibration", DEMAND)
    assert estimate_stage_resources("calibration", DEMAND, learned_factor=2.0).memory_bytes == \
        pytest.approx(2 * base.memory_bytes, abs=2 * MiB)
    assert estimate_stage_resources("calibration", DEMAND, learned_factor=0.01).memory_bytes == \
        pytest.approx(0.5 * base.memory_bytes, abs=2 * MiB)


def test_imaging_memory_follows_the_continuum_as_the_stage_averages_it():
    """The full-size corpus block (2026-12-06): its windows' channels as the imaging stage's plans average them
    (factors 28, 118, 32 and 32 for 128, 480, 128 and 128 channels of 15.6, 3.9, 15.6 and 15.6 MHz at 97, 100,
    109 and 111 GHz, an image of 216 pixels) are reached from metadata alone, and the model of the stage's
    process is the continuum's measured peak (0.56 GB, `mousflow` in-process, VmHWM) within the stated margin:
    not its 22.7 GB of before, an unschedulable request on a 24 GiB node."""
    import numpy as np

    from mousflow.stages.imaging import continuum_channels_at_most

    windows = [(128, 15.625e6, 97e9, 28), (480, 3.90625e6, 100e9, 118), (128, 15.625e6, 109e9, 32),
               (128, 15.625e6, 111e9, 32)]
    channels = 0
    for n, width, first, stage_factor in windows:
        freq = first + width * np.arange(n)
        assert continuum_channels_at_most(freq, 216) == -(-n // stage_factor) + 2
        channels += continuum_channels_at_most(freq, 216)
    full = JobDemand(rows_per_window=254_646, correlations=2, max_channels=480, total_channels=864, image_pixels=216,
                     n_windows=4, continuum_channels=channels)
    measured = 0.56e9
    assert measured <= model_peak_bytes("imaging", full, threads=2) <= 1.3 * measured
    older = JobDemand(**{**full.__dict__, "continuum_channels": None})  # a history record from before
    assert model_peak_bytes("imaging", older) > 10 * model_peak_bytes("imaging", full)


def test_image_pixels_from_metadata_follow_the_imaging_heuristics():
    # 230 GHz, 12 m dishes, L80 = 300 m: beam ~0.51", field to pblimit 0.2 ~ 40": ~400 pixels of beam/5
    n = estimate_image_pixels(300.0, 229e9, 231e9, 12.0)
    assert 300 < n < 500 and n % 2 == 0
    assert estimate_image_pixels(1000.0, 229e9, 231e9, 12.0) > 3 * n  # longer baselines, finer cells


def test_history_learns_the_largest_measured_to_modelled_ratio(tmp_path):
    history = History(Location.of(tmp_path / "history"))
    assert history.memory_factor("calibration") == 1.0 and history.predict_seconds("calibration", DEMAND) is None
    model = model_peak_bytes("calibration", DEMAND)
    for ratio, seconds in ((0.8, 10.0), (1.1, 12.0), (0.9, 11.0)):
        record_outcome(history, "calibration", "uid://A001/X1/X1", DEMAND,
                       {"peak_memory_bytes": int(model * ratio), "wall_seconds": seconds, "cpu_seconds": 9.0},
                       requested_bytes=2 * model)
    assert history.memory_factor("calibration") == pytest.approx(1.1, rel=1e-6)
    recs = history.records("calibration")
    assert len(recs) == 3 and recs[0].wall_seconds == 11.0  # newest first
    # durations: the median rate times this job's work
    double = JobDemand(**{**DEMAND.__dict__, "rows_per_window": 100_000})
    assert history.predict_seconds("calibration", double) == pytest.approx(2 * 11.0)
    assert recs[0].predicted_seconds == pytest.approx(11.0)  # what the third run was predicted before it ran
    assert work_units("imaging", DEMAND) > work_units("calibration", DEMAND)


def test_imaging_outcome_records_the_stage_and_its_workers(tmp_path):
    history = History(Location.of(tmp_path / "h"))
    added = record_outcome(history, "imaging", "uid://x", DEMAND, {"peak_memory_bytes": 900 * MiB,
                                                                  "wall_seconds": 30.0,
                                                                  "worker_peak_memory_bytes": 400 * MiB,
                                                                  "cube_seconds": 20.0})
    assert [r.stage for r in added] == ["imaging", "imaging-worker"]
    assert history.records("imaging-worker")[0].peak_bytes == 400 * MiB
    # a damaged record is skipped, not fatal
    (tmp_path / "h" / "imaging" / "zzz-bad.json").write_text("{not json")
    assert len(history.records("imaging")) == 1
    assert isinstance(history.records("imaging")[0], StageRecord)


SETTINGS = JobSettings(namespace="alma", image="localhost/mousflow/runner:dev", s3_secret="s3-creds",
                       s3_endpoint="http://minio:9000", dask_service_account="mousflow-imaging", dask_max_workers=6)
REQUEST = ResourceRequest(cpu=1.0, memory_bytes=2 * 2**30, memory_limit_bytes=3 * 2**30)
WORKER = ResourceRequest(cpu=1.0, memory_bytes=700 * MiB, memory_limit_bytes=900 * MiB)


def _pod(stage: str, settings: JobSettings = SETTINGS, worker=WORKER) -> dict:
    return build_stage_job_spec(settings, uid="uid://A001/X1/X2", stage=stage, attempt=1, manifest_uri="s3://b/m",
                                resources=REQUEST, threads=2, worker_resources=worker)["spec"]["template"]["spec"]


def test_imaging_pod_starts_dask_workers_sized_per_chunk():
    pod = _pod("imaging")
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["MOUSFLOW_DASK"]["value"] == "kubernetes"
    assert env["MOUSFLOW_DASK_WORKER_MEMORY"]["value"] == str(700 * MiB)
    assert env["MOUSFLOW_DASK_WORKER_MEMORY_LIMIT"]["value"] == str(900 * MiB)
    assert env["MOUSFLOW_DASK_MAX_WORKERS"]["value"] == "6"
    assert env["MOUSFLOW_POD_UID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.uid"
    assert env["MOUSFLOW_S3_SECRET"]["value"] == "s3-creds"
    # only the imaging pod gets an API token, for its own Dask cluster
    assert pod["serviceAccountName"] == "mousflow-imaging" and pod["automountServiceAccountToken"] is True
    calib = _pod("calibration")
    assert calib["automountServiceAccountToken"] is False
    assert "MOUSFLOW_DASK" not in {e["name"] for e in calib["containers"][0]["env"]}
    # without worker pods, the imaging pod's local Dask cluster has one worker per thread it was given
    local = _pod("imaging", JobSettings(namespace="alma", image="i", s3_secret="s"), worker=None)
    env = {e["name"]: e.get("value") for e in local["containers"][0]["env"]}
    assert "MOUSFLOW_DASK" not in env and env["MOUSFLOW_DASK_MAX_WORKERS"] == "2"


def test_dask_cluster_is_owned_by_the_stage_pod_and_restricted():
    env = {"MOUSFLOW_DASK_IMAGE": "img:1", "MOUSFLOW_POD_NAME": "mousflow-abc-imaging-1-xyz",
           "MOUSFLOW_POD_UID": "1234", "MOUSFLOW_DASK_NAMESPACE": "alma", "MOUSFLOW_S3_SECRET": "s3-creds",
           "MOUSFLOW_S3_ENDPOINT": "http://minio:9000", "MOUSFLOW_DASK_WORKER_MEMORY": str(700 * MiB),
           "MOUSFLOW_DASK_WORKER_MEMORY_LIMIT": str(900 * MiB)}
    spec, ns = spec_from_env(1, env)
    assert ns == "alma" and spec["metadata"]["name"] == cluster_name("mousflow-abc-imaging-1-xyz")
    assert spec["metadata"]["ownerReferences"] == [{"apiVersion": "v1", "kind": "Pod",
                                                    "name": "mousflow-abc-imaging-1-xyz", "uid": "1234"}]
    worker = spec["spec"]["worker"]["spec"]
    c = worker["containers"][0]
    assert c["resources"] == {"requests": {"cpu": "1", "memory": "700Mi"}, "limits": {"memory": "900Mi"}}
    assert c["args"][:2] == ["dask", "worker"] and str(900 * MiB) in c["args"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert worker["securityContext"]["runAsNonRoot"] is True
    secret_env = {e["name"]: e for e in c["env"] if "valueFrom" in e}
    assert secret_env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "s3-creds"
    with pytest.raises(ValueError, match="MOUSFLOW_POD_NAME"):
        spec_from_env(1, {"MOUSFLOW_DASK_IMAGE": "img"})
    assert cluster_spec("x", image="i", s3_secret=None, s3_endpoint=None, worker_memory_bytes=MiB,
                        worker_memory_limit_bytes=MiB)["metadata"].get("ownerReferences") is None


def test_scheduler_liveness_tolerates_a_busy_node():
    """The kubelet must not kill a scheduler that is merely slow to answer on a loaded node (it lost the
    stage its cluster mid-cube): a liveness probe waits seconds per try and minutes in all."""
    spec = cluster_spec("x", image="i", s3_secret=None, s3_endpoint=None, worker_memory_bytes=MiB,
                        worker_memory_limit_bytes=MiB)
    probe = spec["spec"]["scheduler"]["spec"]["containers"][0]["livenessProbe"]
    assert probe["timeoutSeconds"] >= 10
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 120


def test_dask_worker_pods_get_the_stage_pods_region():
    from dataclasses import replace

    pod = _pod("imaging", replace(SETTINGS, s3_region="eu-west-1"))
    # what the stage pod's process sees: the values, with the downward API's fields filled in
    seen = {e["name"]: e.get("value", "filled-in") for e in pod["containers"][0]["env"]}
    spec, _ = spec_from_env(1, seen)
    worker_env = {e["name"]: e.get("value") for e in spec["spec"]["worker"]["spec"]["containers"][0]["env"]}
    assert worker_env["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert "AWS_DEFAULT_REGION" not in {e["name"] for e in cluster_spec(
        "x", image="i", s3_secret=None, s3_endpoint=None, worker_memory_bytes=MiB,
        worker_memory_limit_bytes=MiB)["spec"]["worker"]["spec"]["containers"][0]["env"]}


def test_a_jobs_image_size_is_read_from_a_sample_of_the_targets_integrations(tiny_mous):
    """Sizing reads only UVW_TIME_SAMPLES integrations of the target's uvw, and gets the image size that all of
    them give (computed here from the whole uvw)."""
    import numpy as np

    from mousflow.model import load_manifest
    from mousflow.pipeline.demand import UVW_TIME_SAMPLES, demand_of, sampled_times
    from mousflow.storage.partitions import open_checked, partition_infos

    assert sampled_times(5).tolist() == [0, 1, 2, 3, 4]
    picked = sampled_times(1000, 48)
    assert picked.size == 48 and picked[0] == 0 and picked[-1] == 999 and np.all(np.diff(picked) > 0)

    mous = load_manifest(tiny_mous.manifest.read_text())
    (eb,) = mous.spec.execution_blocks
    ps = open_checked(Location.of(eb.uri))
    lengths, freqs, calibrator_rows = [], [], {}
    for info in partition_infos(ps):
        for role in ("BANDPASS", "FLUX", "PHASE"):  # one calibrator at a time: rows per window and role
            if f"CALIBRATE_{role}" in " ".join(info.intents).upper():
                key = (info.spw_name, role)
                calibrator_rows[key] = calibrator_rows.get(key, 0) + info.n_time * info.n_baseline
                assert calibrator_rows[key] == info.n_time * info.n_baseline  # one partition: tiny fits a block
        if "OBSERVE_TARGET" in " ".join(info.intents).upper():
            node = ps[info.name]
            assert node.sizes["time"] > UVW_TIME_SAMPLES  # the sample is a real subset here
            uvw = np.asarray(node.UVW.values).reshape(-1, 3)
            length = np.hypot(uvw[:, 0], uvw[:, 1])
            lengths.append(float(np.percentile(length[np.isfinite(length) & (length > 0)], 80)))
            freqs += [float(node.frequency.min()), float(node.frequency.max())]
    assert lengths
    expected = estimate_image_pixels(float(np.median(lengths)), min(freqs), max(freqs), 12.0)
    demand = demand_of(mous)
    assert demand.image_pixels == expected
    assert 0 < demand.calibrator_rows_per_window == max(calibrator_rows.values()) < demand.rows_per_window


def test_stage_pods_dask_workers_and_local_stage_processes_start_with_the_stage_process_environment(monkeypatch,
                                                                                                   tmp_path):
    """glibc reads MALLOC_ARENA_MAX when a process starts: every process that holds visibilities gets it in its
    environment, whichever way it is started."""
    import subprocess

    from mousflow.pipeline import launchers
    from mousflow.process_env import STAGE_PROCESS_ENV

    assert STAGE_PROCESS_ENV == {"MALLOC_ARENA_MAX": "2"}
    pod_env = {e["name"]: e.get("value") for e in _pod("calibration", SETTINGS)["containers"][0]["env"]}
    worker_env = {e["name"]: e.get("value") for e in cluster_spec(
        "x", image="i", s3_secret=None, s3_endpoint=None, worker_memory_bytes=MiB,
        worker_memory_limit_bytes=MiB)["spec"]["worker"]["spec"]["containers"][0]["env"]}
    assert pod_env["MALLOC_ARENA_MAX"] == worker_env["MALLOC_ARENA_MAX"] == "2"

    seen = {}

    class Child:
        def __init__(self, cmd, env, **kw):
            seen.update(env)
            self.stdout = iter(())

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def wait(self):
            return 0

    monkeypatch.setattr(subprocess, "Popen", Child)
    launchers.LocalProcessLauncher().launch("calibration", "/nowhere/mous.yaml", Location.of(tmp_path),
                                            lambda line: None)
    assert seen["MALLOC_ARENA_MAX"] == "2"


def test_a_calibrator_is_held_a_block_of_integrations_at_a_time_in_one_partition_or_several():
    """pipeline.demand.calibrator_held_rows follows stages.calibration.CalibratorReader: a calibrator is held a
    block of CALIBRATOR_BLOCK_BYTES of visibilities of one of its partitions (at least one integration) at a
    time, whatever its length and however many partitions (scans) it is spread over, on the baselines of all."""
    from mousflow.pipeline.demand import calibrator_held_rows
    from mousflow.stages.calibration import CALIBRATOR_BLOCK_BYTES
    from mousflow.storage.partitions import PartitionInfo

    def part(n_time, n_chan=480, n_baseline=903, correlations=("XX", "XY", "YX", "YY")):
        return PartitionInfo(name="p", spw_name="spw", field_name="J0522-3627", n_time=n_time,
                             n_baseline=n_baseline, n_chan=n_chan, correlations=list(correlations), intents=[])

    per_time = 903 * 480 * 2 * 8  # the parallel hands' complex64 visibilities of one integration
    in_block = CALIBRATOR_BLOCK_BYTES // per_time
    assert in_block == 4
    assert calibrator_held_rows([part(18)]) == calibrator_held_rows([part(1800)]) == in_block * 903
    assert calibrator_held_rows([part(3)]) == 3 * 903  # shorter than a block: whole
    assert calibrator_held_rows([part(1, n_chan=80_000)]) == 903  # an integration larger than a block: one
    assert calibrator_held_rows([part(18), part(18)]) == in_block * 903  # a block of one scan at a time
    assert calibrator_held_rows([part(3), part(2)]) == 3 * 903  # scans shorter than a block: the longest
    assert calibrator_held_rows([part(3, n_baseline=861), part(3)]) == 3 * 903  # on the baselines of both
